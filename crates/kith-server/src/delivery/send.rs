//! An application message's way in: the delivery rules in order, then the store, then the
//! queues and push connections of the devices that get it.
//!
//! 1. [`super::member_route`]: only members post; in a story channel only its owner;
//! 2. [`current_route`]: only for the group's current epoch (members keep a few past epochs'
//!    secrets only, so an older message might not be readable);
//! 3. [`super::check_rate`] (first of all, a repeat's look included) and
//!    [`super::check_volume`]: the sender's budgets;
//! 4. a 1:1 the other side left reaches nobody and says so (`conversation_ended`);
//! 5. [`super::Fanout`]: blocks, the story audience, full queues;
//! 6. stored durably, then pushed; the devices left out for a full queue are told they missed
//!    it on their return.
//!
//! A message carries the id its device chose for it ([`SendMessage::client_id`]): posted again
//! — its answer was lost, or it waited in the device's outbox — it is answered with the first
//! and stored no more. A repeat says so, and is looked for before every rule above (after the
//! rate), so it is answered as delivered even after the group moved on or the device left;
//! a repeat that does not say so is caught by the store, which stores a device's id once.

use std::sync::Arc;

use kith_proto::{CLIENT_ID_LEN, ConversationId, SendMessage, SendResponse};
use kith_store::{DeviceId, NewMessage, Route, StoredEntry};

use super::{DeliveryError, Fanout, Outcome, Post, entries};
use crate::extract::AuthedDevice;
use crate::mls::{self, Framing};
use crate::state::AppState;

/// Sends the MLS application message of `req` to every other member device of `id`.
pub async fn send(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    req: SendMessage,
) -> Result<Outcome<SendResponse>, DeliveryError> {
    let client_id = match req.client_id {
        Some(c) if c.0.len() != CLIENT_ID_LEN => return Err(DeliveryError::ClientId),
        other => other.map(|c| c.0),
    };
    // Every post is held to the rate, a repeat too, before anything else is looked at.
    super::check_rate(state, me, id.as_bytes(), Post::Message).await?;
    if req.repeat
        && let Some(client_id) = &client_id
        && let Some((message_id, at)) = state.store.sent_before(me.device_id, client_id).await?
    {
        return Ok(Outcome::Repeated(repeated(message_id, at)));
    }
    let data = req.message.0;
    let route = super::member_route(state, me, id.as_bytes()).await?;
    if route.poster.as_ref().is_some_and(|p| *p != me.username) {
        return Err(DeliveryError::StoryOwnerOnly);
    }
    let framing = mls::check_application_message(&data, id.as_bytes())?;
    let route = current_route(state, me, id, route, framing.epoch).await?;
    super::check_volume(state, me, data.len()).await?;
    let members: Vec<DeviceId> =
        route.members.iter().copied().filter(|d| *d != me.device_id).collect();
    // A 1:1 the other side left reaches nobody: say so, so the sender opens a new one, rather
    // than answer "accepted" for a message that goes nowhere. (A block does not end it: the
    // blocker stays a member.)
    if route.direct && members.is_empty() {
        return Err(DeliveryError::Ended);
    }
    let mut fanout = if route.poster.is_some() {
        Fanout::to_story_audience(state, &me.username, members.clone()).await?
    } else {
        Fanout::to_members(state, &me.username, members.clone()).await?
    };
    fanout.leave_out_full_queues(state, me, &members).await?;
    let not_delivered = not_delivered(state, &fanout, &members).await?;
    let message = Stored { data, client_id, framing };
    match store_and_push(state, me, id, &route, message, &fanout).await? {
        Accepted::Now { message_id, at } => Ok(Outcome::Done(SendResponse {
            message_id,
            server_time: at,
            recipients: fanout.told,
            skipped: fanout.skipped,
            not_delivered,
            repeated: false,
        })),
        Accepted::Before { message_id, at } => Ok(Outcome::Repeated(repeated(message_id, at))),
    }
}

/// The answer to a repeat: the first message's id and acceptance time.
fn repeated(message_id: u64, at: u64) -> SendResponse {
    SendResponse {
        message_id,
        server_time: at,
        recipients: 0,
        skipped: 0,
        not_delivered: Vec::new(),
        repeated: true,
    }
}

/// What is stored of a message: its bytes, the id its device chose, and its framing.
struct Stored {
    data: Vec<u8>,
    client_id: Option<Vec<u8>>,
    framing: Framing,
}

/// When the message was accepted: now, or before (its device had posted it already).
enum Accepted {
    Now { message_id: u64, at: u64 },
    Before { message_id: u64, at: u64 },
}

/// The route, if the message is for the group's current epoch: a message from an epoch the
/// group has left may be one its members can no longer decrypt, so the sender catches up and
/// encrypts again instead (`stale_epoch`).
async fn current_route(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    route: Route,
    epoch: u64,
) -> Result<Route, DeliveryError> {
    if epoch == route.epoch {
        return Ok(route);
    }
    // The cached route may be a moment old; ask the store before refusing.
    state.fanout.forget_route(id.as_bytes());
    match state.fanout.route(&*state.store, id.as_bytes()).await? {
        Some(r) if r.epoch == epoch && r.members.contains(&me.device_id) => Ok(r),
        fresh => Err(DeliveryError::Stale { current: fresh.map_or(route.epoch, |r| r.epoch) }),
    }
}

/// The accounts the sender is told it did not reach: those whose every member device's queue
/// is full (blocking accounts too: a block stays invisible). An account one of whose devices
/// got it was reached; its full devices are told they missed it.
async fn not_delivered(
    state: &AppState,
    fanout: &Fanout,
    members: &[DeviceId],
) -> Result<Vec<String>, DeliveryError> {
    let mut accounts = Vec::new();
    for d in &fanout.full_members {
        if let Some(auth) = state.store.device_auth(*d).await?
            && !accounts.contains(&auth.username)
        {
            accounts.push(auth.username);
        }
    }
    if accounts.is_empty() {
        return Ok(accounts);
    }
    for d in members.iter().filter(|d| !fanout.full_members.contains(d)) {
        if let Some(auth) = state.store.device_auth(*d).await? {
            accounts.retain(|a| *a != auth.username);
        }
    }
    Ok(accounts)
}

/// Stores the message for `fanout`'s recipients and pushes it to those connected.
async fn store_and_push(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    route: &Route,
    stored: Stored,
    fanout: &Fanout,
) -> Result<Accepted, DeliveryError> {
    let now = state.now();
    // A story is deleted at its expiry, delivered or not.
    let expires_at = route.poster.as_ref().map(|_| now + state.config.story_ttl_seconds * 1000);
    let message = NewMessage {
        conversation: id.as_bytes().to_vec(),
        sender_device: me.device_id,
        kind: kith_proto::EntryKind::Message,
        data: stored.data,
        recipients: fanout.recipients.clone(),
        now,
        expires_at,
        withheld: vec![],
        client_id: stored.client_id,
    };
    // The store takes its own copy; ours becomes the entry pushed to connected recipients.
    let queued = state.store.enqueue(message.clone()).await?;
    let message_id = queued.message_id;
    if let Some(at) = queued.repeat_of {
        return Ok(Accepted::Before { message_id, at });
    }
    if !fanout.full.is_empty() {
        // Stored: a failure to count it costs the skipped devices the word, not the send.
        if let Err(e) = state.store.note_missed(&fanout.full, id.as_bytes()).await {
            tracing::warn!(error = %e, "cannot count a message as missed");
        }
    }
    // Parsed once, on the way in: tagging its deliveries reads what the check read.
    state.franking.remember(message_id, stored.framing.committed);
    // The message is durable already: a failure here costs a reputation signal, not the send.
    if let Err(e) = state.fanout.note_spoke(&*state.store, id.as_bytes(), &me.username).await {
        tracing::warn!(error = %e, "cannot record who posted in a conversation");
    }
    if route.direct {
        state.safety.note_send(&me.username, id.as_bytes(), now);
    }
    entries::count_accepted(state, &message.recipients);
    let entry = StoredEntry {
        seq: 0,
        message_id,
        conversation: message.conversation,
        kind: message.kind,
        sender: me.username.clone(),
        sender_device: me.device_id,
        sender_kind: me.kind,
        sender_verified: me.verified,
        data: message.data,
        created_at: now,
        expires_at,
    };
    // Its franking tag is made per recipient, as each connection delivers it.
    let entry = Arc::new(entries::to_wire_untagged(entry));
    state.hub.push(&message.recipients, &queued.seqs, &entry);
    Ok(Accepted::Now { message_id, at: now })
}
