//! Queue entries: their wire form, what is counted and woken once one is durable, and their
//! acknowledgement (by `POST /v1/queue/ack` and by a push connection's `ack` frame alike).

use kith_proto::{B64, ConversationId, QueueEntry};
use kith_store::{DeviceId, StoreError, StoredEntry};

use crate::safety::franking::Franking;
use crate::state::AppState;

/// Entries one fetch returns at most.
pub const MAX_FETCH: u32 = 500;
/// Sequence numbers one ack may carry.
pub const MAX_ACK: usize = 5000;
/// Most missed counts a page carries, and an ack takes back (the rest come with the next).
pub const MAX_MISSED: usize = 100;

/// Why an acknowledgement was refused (`bad_request`); nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("at most {MAX_ACK} sequence numbers per ack")]
    TooManySeqs,
    #[error("at most {MAX_MISSED} missed counts per ack")]
    TooManyMissed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The wire form of a stored entry for `recipient`, with the franking tag of an application
/// message.
pub fn to_wire(e: StoredEntry, franking: &Franking, recipient: DeviceId) -> QueueEntry {
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

/// After a message is durable: count it.
pub fn count_accepted(state: &AppState, recipients: &[DeviceId]) {
    state.metrics.messages_accepted.inc();
    state.metrics.queue_entries_created.inc_by(recipients.len() as u64);
    state.queues.added(recipients);
}

/// After a message only the store has in full (a Welcome, a commit, invitations released by
/// an unblock) is durable: count it and have its connected recipients read their queue.
pub fn accepted(state: &AppState, recipients: &[DeviceId]) {
    count_accepted(state, recipients);
    state.hub.notify(recipients);
}

/// Removes the device's acknowledged entries; the number removed.
pub async fn ack_seqs(state: &AppState, device: DeviceId, seqs: &[u64]) -> Result<u64, AckError> {
    if seqs.len() > MAX_ACK {
        return Err(AckError::TooManySeqs);
    }
    let removed = state.store.ack(device, seqs).await?;
    state.queues.removed(device, removed);
    state.metrics.entries_acked.inc_by(removed);
    Ok(removed)
}

/// An acknowledgement with the missed counts the device was told: the whole request is
/// checked before anything is removed.
pub async fn ack(
    state: &AppState,
    device: DeviceId,
    seqs: &[u64],
    told: &[(Vec<u8>, u64)],
) -> Result<u64, AckError> {
    if told.len() > MAX_MISSED {
        return Err(AckError::TooManyMissed);
    }
    // `ack_seqs` checks the sequence numbers before it removes any.
    let removed = ack_seqs(state, device, seqs).await?;
    if !told.is_empty() {
        state.store.forget_missed(device, told).await?;
    }
    Ok(removed)
}
