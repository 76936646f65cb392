//! Businesses: the public directory (`crate::businesses`, with the opt-in rule).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kith_proto::*;
use serde::Deserialize;

use crate::error::ApiResult;
use crate::extract::{AuthedDevice, RequestError};
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
    let Query(params) = params.map_err(|e| RequestError::BadQuery(e.body_text()))?;
    let businesses = crate::businesses::search(&state, &params.q).await?;
    Ok(Json(BusinessSearch { businesses }))
}
