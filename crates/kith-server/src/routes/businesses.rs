//! Businesses: the public directory. (The opt-in rule is the `businesses` service's.)

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kith_proto::*;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::AuthedDevice;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SearchParams {
    /// Part of a business's username, display name or description (1–64 characters).
    pub q: String,
}

/// Search the business directory: verified businesses first.
#[utoipa::path(get, path = "/v1/businesses", tag = "businesses", security(("bearer" = [])),
    params(SearchParams),
    responses(
        (status = 200, body = BusinessSearch),
        (status = 400, description = "bad_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn search(
    State(state): State<AppState>,
    _me: AuthedDevice,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> ApiResult<Json<BusinessSearch>> {
    let Query(params) = params.map_err(|e| {
        ApiError::new(ErrorCode::BadRequest, format!("bad query: {}", e.body_text()))
    })?;
    let q = params.q.trim();
    if q.is_empty() || q.chars().count() > 64 {
        return Err(ApiError::new(ErrorCode::BadRequest, "a search has 1 to 64 characters"));
    }
    let found = state.store.search_businesses(q, 50).await?;
    Ok(Json(BusinessSearch {
        businesses: found
            .into_iter()
            .map(|b| BusinessEntry {
                display_name: b.display_name.unwrap_or_else(|| b.username.clone()),
                description: b.description.unwrap_or_default(),
                username: b.username,
                verified: b.verified,
            })
            .collect(),
    }))
}
