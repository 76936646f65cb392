//! Blocking: the server holds it for every kind of conversation (see `delivery`), invisibly.

use axum::Json;
use axum::extract::{Path, State};
use kith_proto::*;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthedDevice, Body};
use crate::routes::accounts::username_checked;
use crate::safety::{self, SignalKind};
use crate::state::AppState;

async fn list(state: &AppState, me: &AuthedDevice) -> ApiResult<Json<BlockList>> {
    Ok(Json(BlockList { blocked: state.store.blocked_by(&me.username).await? }))
}

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
    username_checked(&req.username)?;
    if req.username == me.username {
        return Err(ApiError::new(ErrorCode::BadRequest, "you cannot block yourself"));
    }
    state.store.block(&me.username, &req.username, state.now()).await?;
    state.routes.forget_blocking(&req.username);
    safety::record_signal(&state, &me.username, &req.username, SignalKind::Block, false).await?;
    list(&state, &me).await
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
    Path(username): Path<String>,
) -> ApiResult<Json<BlockList>> {
    username_checked(&username)?;
    state.store.unblock(&me.username, &username).await?;
    state.routes.forget_blocking(&username);
    // A lifted block no longer counts against the account.
    state.store.withdraw_signal(&username, &me.username, SignalKind::Block).await?;
    // Invitations withheld during the block arrive now (what it sent meanwhile does not).
    let released = state.store.release_withheld(&me.username, &username).await?;
    if !released.is_empty() {
        crate::routes::conversations::accepted(&state, &released);
    }
    list(&state, &me).await
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
    list(&state, &me).await
}
