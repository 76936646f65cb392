//! Commits and leave proposals (the rules: `crate::groups::handshake`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kith_proto::*;

use crate::error::ApiResult;
use crate::extract::{AuthedDevice, Body, ConversationPath};
use crate::groups::{Outcome, handshake as rules};
use crate::state::AppState;

/// Submit a commit (with its Welcome when it adds members) or a proposal to leave.
#[utoipa::path(post, path = "/v1/conversations/{id}/handshake", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id, lowercase hex", pattern = "^([0-9a-f]{2}){16,32}$")),
    request_body = HandshakeRequest,
    responses(
        (status = 202, description = "Validated, stored and queued", body = HandshakeResponse),
        (status = 200, description = "The same bytes this device posted before, applied then: nothing is stored or sent again (a client whose answer was lost posts again); `message_id` is 0", body = HandshakeResponse),
        (status = 400, description = "invalid_message, invalid_conversation_id", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "not_a_member, not_admin, forbidden", body = ErrorBody),
        (status = 404, description = "unknown_conversation", body = ErrorBody),
        (status = 409, description = "stale_epoch, group_full", body = ErrorBody),
    ))]
pub async fn handshake(
    State(state): State<AppState>,
    me: AuthedDevice,
    ConversationPath(id): ConversationPath,
    Body(req): Body<HandshakeRequest>,
) -> ApiResult<(StatusCode, Json<HandshakeResponse>)> {
    let started = std::time::Instant::now();
    let welcome = req.welcome.map(B64::into_inner);
    let answer = match rules::apply(&state, &me, &id, req.message.0, welcome).await? {
        Outcome::Done(done) => (StatusCode::ACCEPTED, Json(done)),
        // The same bytes this device posted before, applied then: nothing stored or sent again.
        Outcome::Repeated(done) => return Ok((StatusCode::OK, Json(done))),
    };
    state.metrics.handshake_seconds.observe(started.elapsed().as_secs_f64());
    Ok(answer)
}

/// The members whose request to leave the next commit must include. A client that did not see
/// a request (one its members' clients could not read, say) learns here what to complete.
#[utoipa::path(get, path = "/v1/conversations/{id}/pending-leaves", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id, lowercase hex", pattern = "^([0-9a-f]{2}){16,32}$")),
    responses(
        (status = 200, body = PendingLeaves),
        (status = 400, description = "invalid_conversation_id", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "not_a_member", body = ErrorBody),
        (status = 404, description = "unknown_conversation", body = ErrorBody),
    ))]
pub async fn pending_leaves(
    State(state): State<AppState>,
    me: AuthedDevice,
    ConversationPath(id): ConversationPath,
) -> ApiResult<Json<PendingLeaves>> {
    Ok(Json(PendingLeaves { leaves: rules::pending_leaves(&state, &me, &id).await? }))
}
