//! A verified report of one message (message franking): the checks, one function each, and
//! its record.
//!
//! - [`check_reporter`]: only a member of the conversation — a recipient — reports, never its
//!   own message, with a reason of at most 500 characters;
//! - [`check_commitment`]: the reported body is what the sender committed to;
//! - [`check_tag`]: this server delivered that commitment from that sender's device to the
//!   reporter's, in that group, epoch and time, within retention;
//! - [`check_signature`]: the sender's registered device signed this body for this group.
//!
//! Every failed check gets the same answer (`invalid_report`): a forger learns nothing about
//! which part failed. A verified report reveals that message and nothing else; it counts
//! toward the sender's reputation (`super::record_signal`).

use kith_proto::payload::{Franked, Payload};
use kith_proto::{ConversationId, ReportRequest};
use kith_store::{NewReport, StoreError};
use openmls::prelude::*;

use super::SignalKind;
use super::franking::Delivered;
use crate::extract::AuthedDevice;
use crate::state::AppState;

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `invalid_report`, whatever part failed.
    #[error("the report does not verify")]
    DoesNotVerify,
    /// `not_a_member`.
    #[error("only a recipient of a message can report it")]
    NotRecipient,
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, ReportError>;

/// A report recorded: its id, and whether it is new (a repeat by the same account records
/// nothing; the first report and its reason stand).
#[derive(Debug)]
pub struct Recorded {
    pub report_id: u64,
    pub new: bool,
}

/// Verifies `req` by `me`, of a message in `id` (as `req` names it), and records it.
pub async fn report(
    state: &AppState,
    me: &AuthedDevice,
    id: ConversationId,
    req: ReportRequest,
) -> Result<Recorded> {
    check_reporter(state, me, &id, &req).await?;
    let sender_key = sender_key(state, &req).await?;
    let (core, fk, sig) = (&req.core.0, &req.fk.0, &req.sig.0);
    if fk.len() != 32 || sig.len() != 64 {
        return Err(ReportError::DoesNotVerify);
    }
    let commitment = check_commitment(state, fk, core)?;
    check_tag(state, me, &id, &req, &commitment)?;
    check_signature(state, &id, core, &sender_key, sig)?;
    let payload = Payload::decode(core).ok_or(ReportError::DoesNotVerify)?;
    let (report_id, new) = state
        .store
        .add_report(NewReport {
            reporter: me.username.clone(),
            sender: req.sender.to_string(),
            sender_device: req.sender_device,
            conversation: id.as_bytes().to_vec(),
            message_time: req.server_time,
            text: payload.body.readable_text(),
            reason: req.reason,
            tag: req.frank.tag.0,
            now: state.now(),
        })
        .await?;
    if new {
        state.metrics.reports.inc();
        tracing::info!(report_id, "verified report recorded");
        super::record_signal(state, &me.username, &req.sender, SignalKind::Report, true).await?;
    }
    Ok(Recorded { report_id, new })
}

/// Only a member of the conversation reports, never its own message, with a short reason.
async fn check_reporter(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    req: &ReportRequest,
) -> Result<()> {
    let route = state
        .store
        .conversation_route(id.as_bytes())
        .await?
        .ok_or(StoreError::UnknownConversation)?;
    if !route.members.contains(&me.device_id) {
        return Err(ReportError::NotRecipient);
    }
    if req.sender.as_str() == me.username
        || req.reason.as_ref().is_some_and(|r| r.chars().count() > 500)
    {
        return Err(ReportError::DoesNotVerify);
    }
    Ok(())
}

/// The sender's device, as registered: its key must have signed the body.
async fn sender_key(state: &AppState, req: &ReportRequest) -> Result<Vec<u8>> {
    state
        .store
        .account_devices(&req.sender)
        .await?
        .and_then(|a| a.devices.into_iter().find(|d| d.device_id == req.sender_device))
        .map(|d| d.credential_key)
        .ok_or(ReportError::DoesNotVerify)
}

/// The commitment: the body is what was committed to under that key.
fn check_commitment(state: &AppState, fk: &[u8], core: &[u8]) -> Result<Vec<u8>> {
    state.franking.commitment(fk, core).ok_or(ReportError::DoesNotVerify)
}

/// The tag: this server delivered that commitment from that sender's device to this device,
/// in that group, epoch and time.
fn check_tag(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    req: &ReportRequest,
    commitment: &[u8],
) -> Result<()> {
    let delivered = Delivered {
        commitment,
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
    if tag_ok { Ok(()) } else { Err(ReportError::DoesNotVerify) }
}

/// The signature: the sender's device signed this body for this group.
fn check_signature(
    state: &AppState,
    id: &ConversationId,
    core: &[u8],
    sender_key: &[u8],
    sig: &[u8],
) -> Result<()> {
    let crypto = state.franking.crypto();
    let hash = crypto.hash(HashType::Sha2_256, core).map_err(|_| ReportError::DoesNotVerify)?;
    crypto
        .verify_signature(
            SignatureScheme::ED25519,
            &Franked::signed_bytes(id.as_bytes(), &hash),
            sender_key,
            sig,
        )
        .map_err(|_| ReportError::DoesNotVerify)
}
