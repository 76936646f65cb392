//! Businesses: the public directory, and the opt-in rule. A business may answer in a 1:1
//! conversation a person opened with it, and nothing more: it cannot start a conversation with
//! a person, add a person to a group, or claim a person's KeyPackages unless that person has an
//! open 1:1 conversation with it.

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

fn not_opted_in(person: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotOptedIn,
        format!("a business can write to {person} only in a conversation {person} opened with it"),
    )
}

async fn is_person(state: &AppState, username: &str) -> ApiResult<bool> {
    Ok(state.store.account_info(username).await?.is_some_and(|i| i.kind == AccountKind::Person))
}

/// A business may claim a person's KeyPackages only while the person has an open 1:1
/// conversation with it.
pub async fn require_opt_in(state: &AppState, business: &str, other: &str) -> ApiResult<()> {
    if !is_person(state, other).await?
        || state.store.share_direct_conversation(other, business).await?
    {
        return Ok(());
    }
    Err(not_opted_in(other))
}

/// A business never brings a person into a conversation (a new one, or a group by commit).
pub async fn refuse_person(state: &AppState, other: &str) -> ApiResult<()> {
    if is_person(state, other).await? { Err(not_opted_in(other)) } else { Ok(()) }
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
