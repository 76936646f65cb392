//! Verified reports of one message (message franking).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kith_proto::payload::{Franked, Payload};
use kith_proto::*;
use kith_store::NewReport;
use openmls::prelude::*;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthedDevice, Body};
use crate::routes::conversations::conversation_id;
use crate::safety::franking::Delivered;
use crate::safety::{self, SignalKind};
use crate::state::AppState;

/// Every failed check gets the same answer: a forger learns nothing about which part failed.
fn refused() -> ApiError {
    ApiError::new(ErrorCode::InvalidReport, "the report does not verify")
}

/// Report one received message to this server's admins. Only that message is revealed.
#[utoipa::path(post, path = "/v1/reports", tag = "safety", security(("bearer" = [])),
    request_body = ReportRequest,
    responses(
        (status = 201, description = "Recorded", body = ReportResponse),
        (status = 200, description = "Reported by this account already: nothing new recorded (`repeated`)", body = ReportResponse),
        (status = 400, description = "invalid_report: the tag, commitment or signature does not verify", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "not_a_member: only a recipient can report a message", body = ErrorBody),
        (status = 404, description = "unknown_conversation", body = ErrorBody),
    ))]
pub async fn report(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<ReportRequest>,
) -> ApiResult<(StatusCode, Json<ReportResponse>)> {
    let id = conversation_id(&req.conversation_id)?;
    let route = state
        .store
        .conversation_route(id.as_bytes())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownConversation, "no such conversation"))?;
    if !route.members.contains(&me.device_id) {
        return Err(ApiError::new(
            ErrorCode::NotAMember,
            "only a recipient of a message can report it",
        ));
    }
    if req.sender == me.username || req.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(refused());
    }
    // The sender's device, as registered: its key must have signed the body.
    let sender_key = state
        .store
        .account_devices(&req.sender)
        .await?
        .and_then(|a| a.devices.into_iter().find(|d| d.device_id == req.sender_device))
        .map(|d| d.credential_key)
        .ok_or_else(refused)?;
    let (core, fk, sig) = (&req.core.0, &req.fk.0, &req.sig.0);
    if fk.len() != 32 || sig.len() != 64 {
        return Err(refused());
    }
    // 1. The commitment: the body is what was committed to under that key.
    let c = state.franking.commitment(fk, core).ok_or_else(refused)?;
    // 2. The tag: this server delivered that commitment from that sender's device to this
    //    device, in that group, epoch and time.
    let delivered = Delivered {
        commitment: &c,
        group: id.as_bytes(),
        epoch: req.frank.epoch,
        time: req.server_time,
        sender_device: req.sender_device,
        recipient_device: me.device_id,
    };
    let tag_ok = state.franking.verify(
        req.frank.key_id,
        &delivered,
        &req.frank.tag.0,
        state.now(),
        state.config.retention_millis(),
    );
    if !tag_ok {
        return Err(refused());
    }
    // 3. The signature: the sender's device signed this body for this group.
    let crypto = state.franking.crypto();
    let hash = crypto.hash(HashType::Sha2_256, core).map_err(|_| refused())?;
    crypto
        .verify_signature(
            SignatureScheme::ED25519,
            &Franked::signed_bytes(id.as_bytes(), &hash),
            &sender_key,
            sig,
        )
        .map_err(|_| refused())?;
    let payload = Payload::decode(core).ok_or_else(refused)?;
    let (report_id, new) = state
        .store
        .add_report(NewReport {
            reporter: me.username.clone(),
            sender: req.sender.clone(),
            sender_device: req.sender_device,
            conversation: id.as_bytes().to_vec(),
            message_time: req.server_time,
            text: payload.body.readable_text(),
            reason: req.reason,
            tag: req.frank.tag.0,
            now: state.now(),
        })
        .await?;
    if !new {
        // Said, not silently dropped: the first report and its reason stand.
        return Ok((StatusCode::OK, Json(ReportResponse { report_id, repeated: true })));
    }
    state.metrics.reports.inc();
    tracing::info!(report_id, "verified report recorded");
    safety::record_signal(&state, &me.username, &req.sender, SignalKind::Report, true).await?;
    Ok((StatusCode::CREATED, Json(ReportResponse { report_id, repeated: false })))
}
