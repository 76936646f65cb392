//! Registration, tokens, `whoami` and device listing (the rules: `crate::accounts`).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use kith_proto::*;

use crate::accounts;
use crate::error::ApiResult;
use crate::extract::{AuthedDevice, Body, DevicePath, UserPath};
use crate::state::AppState;

/// Register an account with its first device.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered; the token is shown once", body = RegisterResponse),
        (status = 200, description = "The same registration, with the token the client chose, posted again (its answer was lost): it is registered already", body = RegisterResponse),
        (status = 400, description = "invalid_username, invalid_key_package, too_many_key_packages, malformed_json, bad_base64", body = ErrorBody),
        (status = 409, description = "username_taken", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody),
        (status = 429, description = "rate_limited: too many registrations from this address", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(req): Body<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let done = accounts::register(&state, peer.ip(), req).await?;
    // A repeat of the client's own registration (its answer was lost) is `200`.
    let status = if done.new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(done.answer)))
}

/// Replaces the calling device's token: for a token that may have leaked (a copied profile
/// folder, a lost backup). The old token is refused from the next request on. The request is
/// signed by the device's credential key, so a stolen token alone cannot lock its device out.
#[utoipa::path(post, path = "/v1/me/token", tag = "accounts", security(("bearer" = [])),
    request_body = RotateTokenRequest,
    responses(
        (status = 200, description = "The new token, shown once", body = RotateTokenResponse),
        (status = 400, description = "malformed_json", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the signature is not the device's", body = ErrorBody),
    ))]
pub async fn rotate_token(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<RotateTokenRequest>,
) -> ApiResult<Json<RotateTokenResponse>> {
    Ok(Json(accounts::rotate_token(&state, &me, req).await?))
}

/// Gives an account from before account keys its key, once (the same key again is `200`).
#[utoipa::path(put, path = "/v1/me/account-key", tag = "accounts", security(("bearer" = [])),
    request_body = SetAccountKey,
    responses(
        (status = 200, description = "The account's key", body = SetAccountKey),
        (status = 400, description = "bad_request: not an Ed25519 public key", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the account holds another key", body = ErrorBody),
    ))]
pub async fn set_account_key(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<SetAccountKey>,
) -> ApiResult<Json<SetAccountKey>> {
    Ok(Json(accounts::set_account_key(&state, &me, req).await?))
}

/// The caller's own account's devices: names and when each was last seen are shown to the
/// account alone (the public device list holds keys and ids only).
#[utoipa::path(get, path = "/v1/me/devices", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, body = MyDevices),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn my_devices(
    State(state): State<AppState>,
    me: AuthedDevice,
) -> ApiResult<Json<MyDevices>> {
    Ok(Json(accounts::my_devices(&state, &me).await?))
}

/// Removes another device of the caller's account: its token is refused at once, on every
/// node, and its push connections close.
#[utoipa::path(delete, path = "/v1/me/devices/{device_id}", tag = "accounts",
    security(("bearer" = [])),
    params(("device_id" = u64, Path)),
    responses(
        (status = 200, description = "The account's devices left", body = MyDevices),
        (status = 400, description = "bad_request: the calling device itself; unknown_device: not a device of this account", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn remove_device(
    State(state): State<AppState>,
    me: AuthedDevice,
    DevicePath(device): DevicePath,
) -> ApiResult<Json<MyDevices>> {
    Ok(Json(accounts::remove_device(&state, &me, device).await?))
}

/// Names one of the caller's own account's devices (`null` removes the name).
#[utoipa::path(put, path = "/v1/me/devices/{device_id}/name", tag = "accounts",
    security(("bearer" = [])),
    params(("device_id" = u64, Path)),
    request_body = RenameDevice,
    responses(
        (status = 200, description = "The account's devices, renamed", body = MyDevices),
        (status = 400, description = "bad_request: a name of 1 to 64 characters", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 400, description = "unknown_device: not a device of this account", body = ErrorBody),
    ))]
pub async fn rename_device(
    State(state): State<AppState>,
    me: AuthedDevice,
    DevicePath(device): DevicePath,
    Body(req): Body<RenameDevice>,
) -> ApiResult<Json<MyDevices>> {
    Ok(Json(accounts::rename_device(&state, &me, device, req).await?))
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, body = WhoAmI),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn whoami(State(state): State<AppState>, me: AuthedDevice) -> ApiResult<Json<WhoAmI>> {
    let remaining = state.store.key_packages_remaining(me.device_id).await?;
    Ok(Json(WhoAmI {
        username: me.username,
        kind: me.kind,
        device_id: me.device_id,
        key_packages_remaining: remaining,
        limits: ServerLimits {
            max_group_size: u32::try_from(state.config.max_group_size).unwrap_or(u32::MAX),
            max_body_bytes: state.config.max_body_bytes as u64,
            story_ttl_seconds: state.config.story_ttl_seconds,
        },
    }))
}

/// An account's devices and their credential keys.
#[utoipa::path(get, path = "/v1/accounts/{username}/devices", tag = "accounts", security(("bearer" = [])),
    params(("username" = String, Path, pattern = "^[a-z0-9_.]{3,32}$")),
    responses(
        (status = 200, body = DeviceList),
        (status = 400, description = "invalid_username", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "unknown_user", body = ErrorBody),
    ))]
pub async fn devices(
    State(state): State<AppState>,
    _me: AuthedDevice,
    UserPath(username): UserPath,
) -> ApiResult<Json<DeviceList>> {
    Ok(Json(accounts::devices(&state, &username).await?))
}

/// Give the caller's account its recovery key: once, for an account without one; after that
/// only with a key change the current recovery key signed.
#[utoipa::path(put, path = "/v1/me/recovery-key", tag = "accounts", security(("bearer" = [])),
    request_body = SetRecoveryKey,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "bad_request: not a key, or a change that does not decode or names other keys", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "wrong_recovery_code: the account has a recovery key and the change is not signed by it", body = ErrorBody),
    ))]
pub async fn set_recovery_key(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<SetRecoveryKey>,
) -> ApiResult<StatusCode> {
    crate::recovery::set_recovery_key(&state, &me, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Take an account back with its recovery code: every device is removed and its token refused
/// at once, the new device is made, and the account's keys change as the recovery key signed.
#[utoipa::path(post, path = "/v1/accounts/{username}/recover", tag = "accounts",
    params(("username" = String, Path, pattern = "^[a-z0-9_.]{3,32}$")),
    request_body = RecoverAccount,
    responses(
        (status = 201, description = "Recovered: the new device's id", body = Recovered),
        (status = 400, description = "bad_request, invalid_username, invalid_key_package (a credential key that is not one, or is taken)", body = ErrorBody),
        (status = 403, description = "wrong_recovery_code", body = ErrorBody),
        (status = 404, description = "unknown_user", body = ErrorBody),
        (status = 429, description = "rate_limited: too many attempts from this address", body = ErrorBody),
    ))]
pub async fn recover(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UserPath(username): UserPath,
    Body(req): Body<RecoverAccount>,
) -> ApiResult<(StatusCode, Json<Recovered>)> {
    let done = crate::recovery::recover(&state, peer.ip(), &username, req).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// A note for the caller's account's other devices, sealed by the device (at most 4 KiB): the
/// server queues it for each of them and cannot read it (a chat read on one device is read on
/// all).
#[utoipa::path(post, path = "/v1/me/notes", tag = "accounts", security(("bearer" = [])),
    request_body = PostNote,
    responses(
        (status = 204, description = "Queued for the account's other devices"),
        (status = 400, description = "bad_request: empty, or over 4 KiB", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn post_note(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<PostNote>,
) -> ApiResult<StatusCode> {
    if req.data.0.is_empty() || req.data.0.len() > MAX_NOTE_BYTES {
        return Err(crate::error::ApiError::said(
            ErrorCode::BadRequest,
            &"a note is 1 byte to 4 KiB",
        ));
    }
    let own: Vec<u64> = state
        .store
        .account_devices(&me.username)
        .await?
        .map(|a| {
            a.devices.into_iter().map(|d| d.device_id).filter(|d| *d != me.device_id).collect()
        })
        .unwrap_or_default();
    let from = (me.username.as_str(), me.device_id, me.kind);
    crate::recovery::notify(&state, from, vec![0; 16], own, &Notice::Note(req.data)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The largest note one device posts for the others.
const MAX_NOTE_BYTES: usize = 4096;
