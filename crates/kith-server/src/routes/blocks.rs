//! Blocking (the rules: `crate::safety::blocks`).

use axum::Json;
use axum::extract::State;
use kith_proto::*;

use crate::error::ApiResult;
use crate::extract::{AuthedDevice, Body, UserPath};
use crate::safety::blocks;
use crate::state::AppState;

/// Block an account: its 1:1 messages stop reaching you and it can no longer claim your
/// KeyPackages. It is not told.
#[utoipa::path(post, path = "/v1/blocks", tag = "safety", security(("bearer" = [])),
    request_body = BlockRequest,
    responses(
        (status = 200, description = "The accounts you now block", body = BlockList),
        (status = 400, description = "invalid_username", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "unknown_user", body = ErrorBody),
    ))]
pub async fn block(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<BlockRequest>,
) -> ApiResult<Json<BlockList>> {
    let blocked = blocks::block(&state, &me.username, &req.username).await?;
    tell_own_devices(&state, &me).await;
    Ok(Json(BlockList { blocked }))
}

/// The account's other devices read its block list again (a block holds on every device).
async fn tell_own_devices(state: &AppState, me: &AuthedDevice) {
    let own = match state.store.account_devices(&me.username).await {
        Ok(Some(a)) => a.devices.into_iter().map(|d| d.device_id).filter(|d| *d != me.device_id),
        _ => return,
    };
    let from = (me.username.as_str(), me.device_id, me.kind);
    let notice = Notice::BlocksChanged;
    if let Err(e) = crate::recovery::notify(state, from, vec![0; 16], own.collect(), &notice).await
    {
        tracing::warn!(error = %e, "cannot tell the other devices of a block");
    }
}

/// Lift a block.
#[utoipa::path(delete, path = "/v1/blocks/{username}", tag = "safety", security(("bearer" = [])),
    params(("username" = String, Path, pattern = "^[a-z0-9_.]{3,32}$")),
    responses(
        (status = 200, description = "The accounts you still block", body = BlockList),
        (status = 400, description = "invalid_username", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn unblock(
    State(state): State<AppState>,
    me: AuthedDevice,
    UserPath(username): UserPath,
) -> ApiResult<Json<BlockList>> {
    let blocked = blocks::unblock(&state, &me.username, &username).await?;
    tell_own_devices(&state, &me).await;
    Ok(Json(BlockList { blocked }))
}

/// The accounts you block.
#[utoipa::path(get, path = "/v1/blocks", tag = "safety", security(("bearer" = [])),
    responses(
        (status = 200, body = BlockList),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn blocked(
    State(state): State<AppState>,
    me: AuthedDevice,
) -> ApiResult<Json<BlockList>> {
    Ok(Json(BlockList { blocked: state.store.blocked_by(&me.username).await? }))
}
