//! Creating conversations and sending application messages into them (the rules:
//! `crate::groups::creation` and `crate::delivery::send`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kith_proto::*;

use crate::error::ApiResult;
use crate::extract::{AuthedDevice, Body, ConversationPath};
use crate::groups::{Outcome, creation};
use crate::state::AppState;

/// Register a new conversation (an MLS group) and deliver its Welcome to the other members.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    request_body = CreateConversation,
    responses(
        (status = 201, body = CreateConversationResponse),
        (status = 200, description = "The same Welcome this device posted before, for a conversation it created then: nothing is created or sent again (a client whose answer was lost posts again); `message_id` is 0", body = CreateConversationResponse),
        (status = 400, description = "invalid_conversation_id, invalid_message", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 409, description = "conversation_exists, group_full", body = ErrorBody),
        (status = 429, description = "rate_limited: too many new conversations (see docs/safety.md)", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<CreateConversation>,
) -> ApiResult<(StatusCode, Json<CreateConversationResponse>)> {
    let started = std::time::Instant::now();
    let id = req.conversation_id.clone();
    let (status, created) = match creation::create(&state, &me, &id, req).await? {
        Outcome::Done(c) => (StatusCode::CREATED, c),
        Outcome::Repeated(c) => (StatusCode::OK, c),
    };
    state.metrics.create_seconds.observe(started.elapsed().as_secs_f64());
    let answer = CreateConversationResponse {
        conversation_id: id.to_hex(),
        message_id: created.message_id,
        server_time: created.server_time,
    };
    Ok((status, Json(answer)))
}

/// Send an MLS application message to every other member device of the conversation.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id, lowercase hex", pattern = "^([0-9a-f]{2}){16,32}$")),
    request_body = SendMessage,
    responses(
        (status = 202, description = "Stored durably and queued", body = SendResponse),
        (status = 200, description = "Stored before under the same `client_id` (the device posted it again): nothing is stored or sent again; the first's `message_id` and `server_time`, `repeated`", body = SendResponse),
        (status = 400, description = "invalid_conversation_id, invalid_message, bad_request (a `client_id` that is not 16 bytes)", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "not_a_member", body = ErrorBody),
        (status = 404, description = "unknown_conversation", body = ErrorBody),
        (status = 409, description = "stale_epoch: the message is not for the group's current epoch; conversation_ended: the other side of this 1:1 left it", body = ErrorBody),
        (status = 429, description = "rate_limited, or queue_full: every device of the other members holds `max_queued_per_device` undelivered messages", body = ErrorBody),
    ))]
pub async fn send(
    State(state): State<AppState>,
    me: AuthedDevice,
    ConversationPath(id): ConversationPath,
    Body(req): Body<SendMessage>,
) -> ApiResult<(StatusCode, Json<SendResponse>)> {
    let started = std::time::Instant::now();
    match crate::delivery::send::send(&state, &me, &id, req).await? {
        Outcome::Done(sent) => {
            state.metrics.send_seconds.observe(started.elapsed().as_secs_f64());
            Ok((StatusCode::ACCEPTED, Json(sent)))
        }
        // Posted before under the same client id: nothing stored or sent again.
        Outcome::Repeated(first) => Ok((StatusCode::OK, Json(first))),
    }
}
