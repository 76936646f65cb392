//! KeyPackage upload and claim (the rules: `crate::accounts`).

use axum::Json;
use axum::extract::State;
use kith_proto::*;

use crate::accounts;
use crate::error::ApiResult;
use crate::extract::{AuthedDevice, Body, UserPath};
use crate::state::AppState;

/// Upload more one-time KeyPackages (and optionally a new last-resort one) for this device.
#[utoipa::path(post, path = "/v1/key-packages", tag = "key-packages", security(("bearer" = [])),
    request_body = UploadKeyPackages,
    responses(
        (status = 200, body = UploadKeyPackagesResponse),
        (status = 400, description = "invalid_key_package, too_many_key_packages", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 429, description = "rate_limited: too many unusable KeyPackages uploaded (see docs/safety.md)", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<UploadKeyPackages>,
) -> ApiResult<Json<UploadKeyPackagesResponse>> {
    let remaining = accounts::upload_key_packages(&state, &me, req).await?;
    Ok(Json(UploadKeyPackagesResponse { key_packages_remaining: remaining }))
}

/// Claim one KeyPackage for each device of an account, to add them to a conversation.
#[utoipa::path(post, path = "/v1/accounts/{username}/key-packages/claim", tag = "key-packages",
    security(("bearer" = [])),
    params(("username" = String, Path, pattern = "^[a-z0-9_.]{3,32}$")),
    responses(
        (status = 200, body = ClaimResponse),
        (status = 400, description = "invalid_username", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "unknown_user", body = ErrorBody),
        (status = 409, description = "no_key_packages", body = ErrorBody),
        (status = 429, description = "rate_limited: KeyPackages claimed too often (see docs/safety.md)", body = ErrorBody),
    ))]
pub async fn claim(
    State(state): State<AppState>,
    me: AuthedDevice,
    UserPath(username): UserPath,
) -> ApiResult<Json<ClaimResponse>> {
    Ok(Json(accounts::claim_key_packages(&state, &me, &username).await?))
}
