//! Creating conversations and sending messages into them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kith_proto::*;
use kith_store::{NewConversation, NewMessage};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthedDevice, Body};
use crate::mls;
use crate::state::AppState;

fn conversation_id(text: &str) -> ApiResult<ConversationId> {
    ConversationId::parse(text)
        .map_err(|e| ApiError::new(ErrorCode::InvalidConversationId, e.to_string()))
}

/// After a message is durable: count it and wake its connected recipients.
fn accepted(state: &AppState, recipients: &[u64]) {
    state.metrics.messages_accepted.inc();
    state.metrics.queue_entries_created.inc_by(recipients.len() as u64);
    state.hub.notify(recipients);
}

/// Most devices one Welcome may add.
const MAX_WELCOME_MEMBERS: usize = 1024;

/// Register a new conversation (an MLS group) and deliver its Welcome to the added devices.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    request_body = CreateConversation,
    responses(
        (status = 201, body = CreateConversationResponse),
        (status = 400, description = "invalid_conversation_id, invalid_message, unknown_device", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 409, description = "conversation_exists", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<CreateConversation>,
) -> ApiResult<(StatusCode, Json<CreateConversationResponse>)> {
    let id = conversation_id(&req.conversation_id)?;
    if req.members.is_empty() || req.members.len() > MAX_WELCOME_MEMBERS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("a new conversation adds 1 to {MAX_WELCOME_MEMBERS} devices"),
        ));
    }
    mls::check_welcome(&req.welcome.0)?;
    let now = state.now();
    let recipients: Vec<u64> = req.members.iter().copied().filter(|d| *d != me.device_id).collect();
    let message_id = state
        .store
        .create_conversation(NewConversation {
            conversation: id.as_bytes().to_vec(),
            creator_device: me.device_id,
            members: req.members,
            welcome: req.welcome.0,
            now,
        })
        .await?;
    accepted(&state, &recipients);
    Ok((
        StatusCode::CREATED,
        Json(CreateConversationResponse {
            conversation_id: id.to_hex(),
            message_id,
            server_time: now,
        }),
    ))
}

/// Send an MLS message to every other member device of the conversation.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id, lowercase hex")),
    request_body = SendMessage,
    responses(
        (status = 202, description = "Stored durably and queued", body = SendResponse),
        (status = 400, description = "invalid_conversation_id, invalid_message", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "not_a_member", body = ErrorBody),
        (status = 404, description = "unknown_conversation", body = ErrorBody),
    ))]
pub async fn send(
    State(state): State<AppState>,
    me: AuthedDevice,
    Path(id): Path<String>,
    Body(req): Body<SendMessage>,
) -> ApiResult<(StatusCode, Json<SendResponse>)> {
    let id = conversation_id(&id)?;
    let members = state
        .store
        .conversation_members(id.as_bytes())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownConversation, "no such conversation"))?;
    if !members.contains(&me.device_id) {
        return Err(ApiError::new(
            ErrorCode::NotAMember,
            "this device is not in that conversation",
        ));
    }
    mls::check_message(&req.message.0, id.as_bytes())?;
    let recipients: Vec<u64> = members.into_iter().filter(|d| *d != me.device_id).collect();
    let now = state.now();
    let message_id = state
        .store
        .enqueue(NewMessage {
            conversation: id.as_bytes().to_vec(),
            sender_device: me.device_id,
            kind: EntryKind::Message,
            data: req.message.0,
            recipients: recipients.clone(),
            now,
        })
        .await?;
    accepted(&state, &recipients);
    Ok((
        StatusCode::ACCEPTED,
        Json(SendResponse {
            message_id,
            server_time: now,
            recipients: u32::try_from(recipients.len()).unwrap_or(u32::MAX),
        }),
    ))
}
