//! A device's queue: fetch and acknowledge.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kith_proto::*;
use kith_store::StoredEntry;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthedDevice, Body};
use crate::safety::franking::Franking;
use crate::state::AppState;

/// Entries one fetch returns at most.
pub const MAX_FETCH: u32 = 500;
/// Sequence numbers one ack may carry.
pub const MAX_ACK: usize = 5000;
/// Most missed counts a page carries, and an ack takes back (the rest come with the next).
pub const MAX_MISSED: usize = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FetchParams {
    /// Only entries after this sequence number (default 0: everything).
    pub after: Option<u64>,
    /// At most this many entries (default and maximum 500).
    pub limit: Option<u32>,
}

/// The wire form of a stored entry for `recipient`, with the franking tag of an application
/// message.
pub fn to_wire(e: StoredEntry, franking: &Franking, recipient: u64) -> QueueEntry {
    let frank = franking.tag(&e, recipient);
    QueueEntry { frank, ..to_wire_untagged(e) }
}

/// The wire form without a franking tag (added per recipient on delivery).
pub fn to_wire_untagged(e: StoredEntry) -> QueueEntry {
    QueueEntry {
        frank: None,
        seq: e.seq,
        message_id: e.message_id,
        conversation_id: ConversationId::from_bytes(&e.conversation)
            .map(|c| c.to_hex())
            .unwrap_or_default(),
        kind: e.kind,
        sender: e.sender,
        sender_device: e.sender_device,
        sender_kind: e.sender_kind,
        sender_verified: e.sender_verified,
        data: B64(e.data),
        server_time: e.created_at,
        expires_at: e.expires_at,
    }
}

/// The calling device's waiting entries, oldest first.
#[utoipa::path(get, path = "/v1/queue", tag = "queue", security(("bearer" = [])),
    params(FetchParams),
    responses(
        (status = 200, body = FetchResponse),
        (status = 400, description = "bad_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    me: AuthedDevice,
    params: Result<Query<FetchParams>, QueryRejection>,
) -> ApiResult<Json<FetchResponse>> {
    let Query(params) = params.map_err(|e| {
        ApiError::new(ErrorCode::BadRequest, format!("bad query: {}", e.body_text()))
    })?;
    let limit = params.limit.unwrap_or(MAX_FETCH).clamp(1, MAX_FETCH);
    let mut entries =
        state.store.fetch(me.device_id, params.after.unwrap_or(0), limit + 1, state.now()).await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    state.metrics.entries_delivered.inc_by(entries.len() as u64);
    let entries = entries.into_iter().map(|e| to_wire(e, &state.franking, me.device_id)).collect();
    let missed = state
        .store
        .missed(me.device_id, MAX_MISSED as u32)
        .await?
        .into_iter()
        .filter_map(|(c, count)| {
            ConversationId::from_bytes(&c)
                .map(|c| Missed { conversation_id: c.to_hex(), count })
                .ok()
        })
        .collect();
    Ok(Json(FetchResponse { entries, more, missed }))
}

/// Acknowledge entries the device has stored durably; they are deleted. Idempotent.
#[utoipa::path(post, path = "/v1/queue/ack", tag = "queue", security(("bearer" = [])),
    request_body = AckRequest,
    responses(
        (status = 200, body = AckResponse),
        (status = 400, description = "malformed_json, bad_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn ack(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<AckRequest>,
) -> ApiResult<Json<AckResponse>> {
    // The whole request is checked before anything is removed.
    if req.missed.len() > MAX_MISSED {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("at most {MAX_MISSED} missed counts per ack"),
        ));
    }
    let mut told = Vec::with_capacity(req.missed.len());
    for m in &req.missed {
        let c = ConversationId::parse(&m.conversation_id)
            .map_err(|e| ApiError::new(ErrorCode::InvalidConversationId, e.to_string()))?;
        told.push((c.as_bytes().to_vec(), m.count));
    }
    let removed = ack_seqs(&state, me.device_id, &req.seqs).await?;
    if !told.is_empty() {
        state.store.forget_missed(me.device_id, &told).await?;
    }
    Ok(Json(AckResponse { removed }))
}

pub async fn ack_seqs(state: &AppState, device: u64, seqs: &[u64]) -> ApiResult<u64> {
    if seqs.len() > MAX_ACK {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("at most {MAX_ACK} sequence numbers per ack"),
        ));
    }
    let removed = state.store.ack(device, seqs).await?;
    state.queues.removed(device, removed);
    state.metrics.entries_acked.inc_by(removed);
    Ok(removed)
}
