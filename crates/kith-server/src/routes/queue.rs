//! A device's queue: fetch and acknowledge.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kith_proto::*;
use serde::Deserialize;

use crate::delivery::entries::{self, MAX_FETCH, MAX_MISSED, to_wire};
use crate::error::ApiResult;
use crate::extract::{AuthedDevice, Body, RequestError, conversation_id};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FetchParams {
    /// Only entries after this sequence number (default 0: everything).
    pub after: Option<u64>,
    /// At most this many entries (default and maximum 500).
    pub limit: Option<u32>,
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
    let Query(params) = params.map_err(|e| RequestError::BadQuery(e.body_text()))?;
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
    let mut told = Vec::with_capacity(req.missed.len().min(MAX_MISSED + 1));
    for m in req.missed.iter().take(MAX_MISSED + 1) {
        told.push((conversation_id(&m.conversation_id)?.as_bytes().to_vec(), m.count));
    }
    let removed = entries::ack(&state, me.device_id, &req.seqs, &told).await?;
    Ok(Json(AckResponse { removed }))
}
