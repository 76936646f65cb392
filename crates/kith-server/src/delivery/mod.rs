//! The delivery rules, one function each. Every path that puts something in other devices'
//! queues — application messages, commits, leave proposals, new conversations and the
//! Welcomes they carry — goes through these, so a rule cannot hold on one door and be
//! forgotten on another:
//!
//! - [`member_route`]: only members post (their membership comes from the validated group
//!   state; see [`crate::groups`]);
//! - [`check_rate`]: the sender's per-account rates (one for messages, one for changes to
//!   conversations) and, for a change, its rate of changes to that conversation;
//! - [`check_volume`]: the sender's disk quota, bytes of messages stored per hour;
//! - [`Fanout::to_members`]: blocks — the devices of every account that blocks the sender get
//!   none of its messages and none of its invitations, in any kind of conversation, while the
//!   sender is told the same as if there were no block; and a story does not reach the
//!   accounts its owner blocks ([`Fanout::to_story_audience`]);
//! - [`Fanout::leave_out_full_queues`] and [`require_room`]: the per-device queue cap —
//!   application messages skip full devices, a member's own key updates wait until every
//!   member can take them (a device that missed a commit could no longer read its group).
//!
//! Beside the rules: [`send`], the application message's way through them into the store and
//! the queues; [`entries`], what a stored entry looks like on the wire and what is counted and
//! woken once one is durable.

pub mod entries;
pub mod send;

use kith_store::{DeviceId, StoreError};

use crate::extract::AuthedDevice;
use crate::mls::FramingError;
use crate::safety::{self, Action, Refusal};
use crate::state::AppState;

/// What a request that may be a repeat got: carried out now, or before (its answer was lost,
/// or it waited in the device's outbox, and the client posted it again; nothing is done twice).
#[derive(Debug)]
pub enum Outcome<T> {
    Done(T),
    Repeated(T),
}

/// Why a post was refused by a delivery rule.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("this device is not in that conversation")]
    NotAMember,
    #[error("only its owner posts to a story channel")]
    StoryOwnerOnly,
    #[error("the other side left this conversation; open a new one")]
    Ended,
    #[error("the group has moved on to epoch {current}; fetch what you missed and try again")]
    Stale { current: u64 },
    #[error(
        "the recipient's devices already hold {max} undelivered messages, the most this server \
         keeps; try again when they have caught up"
    )]
    QueueFull { max: u64 },
    #[error("a client message id is 16 bytes")]
    ClientId,
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error(transparent)]
    Limited(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type ApiResult<T> = Result<T, DeliveryError>;

/// The membership rule for posting: the conversation's route, if the device is one of its
/// members (`unknown_conversation`, `not_a_member` otherwise).
pub async fn member_route(
    state: &AppState,
    me: &AuthedDevice,
    conversation: &[u8],
) -> ApiResult<kith_store::Route> {
    let route = state
        .fanout
        .route(&*state.store, conversation)
        .await?
        .ok_or(StoreError::UnknownConversation)?;
    if !route.members.contains(&me.device_id) {
        return Err(DeliveryError::NotAMember);
    }
    Ok(route)
}

/// What is being posted, for the rate rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Post {
    /// An application message.
    Message,
    /// A commit or proposal changing a conversation; `story` for a story channel's audience.
    Change { story: bool },
}

/// The rate rule: a budget per account for its messages, another for its changes to
/// conversations, and for changes a budget per conversation (and member) too.
pub async fn check_rate(
    state: &AppState,
    me: &AuthedDevice,
    conversation: &[u8],
    post: Post,
) -> ApiResult<()> {
    let now = state.now();
    match post {
        Post::Message => {
            let verdict = state.safety.check_send(&me.username, now);
            Ok(safety::enforce(state, &me.username, verdict).await?)
        }
        Post::Change { story } => {
            let mut verdict = state.safety.check_account_change(&me.username, now);
            if verdict == Action::Allow {
                verdict = state.safety.check_change(&me.username, conversation, story, now);
            }
            if verdict != Action::Allow {
                state.metrics.change_rate_refusals.inc();
            }
            Ok(safety::enforce(state, &me.username, verdict).await?)
        }
    }
}

/// The sender's disk quota: bytes of messages it may have stored per hour.
pub async fn check_volume(state: &AppState, me: &AuthedDevice, bytes: usize) -> ApiResult<()> {
    let verdict = state.safety.check_volume(&me.username, bytes as u64, state.now());
    Ok(safety::enforce(state, &me.username, verdict).await?)
}

/// Who gets a post, and what the sender is told about it.
#[derive(Debug)]
pub struct Fanout {
    /// The devices that get it.
    pub recipients: Vec<DeviceId>,
    /// What the sender is told: the devices it went to as far as the sender may know (those
    /// left out because their account blocks the sender are counted, so a block stays
    /// invisible).
    pub told: u32,
    /// Devices left out because their queue is full (the sender is told).
    pub skipped: u32,
    /// Which of the devices that would have got it those are: each is told it missed one (a
    /// device of an account that blocks the sender is not one: it would not have got it).
    pub full: Vec<DeviceId>,
    /// Every other member device whose queue is full, blocking ones included: the accounts the
    /// sender is told it did not reach, so what it is told does not depend on a block (as
    /// `skipped` does not).
    pub full_members: Vec<DeviceId>,
}

impl Fanout {
    /// The block rule, for whatever `sender` posts to `devices` (its own device left out
    /// already): the devices of accounts that block the sender are removed.
    pub async fn to_members(
        state: &AppState,
        sender: &str,
        devices: Vec<DeviceId>,
    ) -> ApiResult<Self> {
        let told = u32::try_from(devices.len()).unwrap_or(u32::MAX);
        let mut fanout = Fanout {
            recipients: devices,
            told,
            skipped: 0,
            full: Vec::new(),
            full_members: Vec::new(),
        };
        let blocking = state.fanout.blocking(&*state.store, sender).await?;
        if !blocking.is_empty() {
            fanout.recipients.retain(|d| !blocking.contains(d));
        }
        Ok(fanout)
    }

    /// The same for a story: besides, the devices of accounts the *sender* blocks get none of
    /// its stories. (Its client leaves them in the channel: removing them would tell them.)
    pub async fn to_story_audience(
        state: &AppState,
        sender: &str,
        devices: Vec<DeviceId>,
    ) -> ApiResult<Self> {
        let mut fanout = Self::to_members(state, sender, devices).await?;
        for blocked in state.store.blocked_by(sender).await? {
            if let Some(account) = state.store.account_devices(&blocked).await? {
                let theirs: Vec<DeviceId> = account.devices.iter().map(|d| d.device_id).collect();
                fanout.recipients.retain(|d| !theirs.contains(d));
            }
        }
        Ok(fanout)
    }

    /// The queue cap for application messages: devices whose queue is full are left out (and
    /// counted in `skipped`). If that leaves none of the other members' devices, the post is
    /// refused with `queue_full`: the sender learns it did not get through, instead of it
    /// reaching only its own devices. Full devices are looked for among every member device,
    /// blocking ones included, so the answer does not depend on a block.
    pub async fn leave_out_full_queues(
        &mut self,
        state: &AppState,
        me: &AuthedDevice,
        members: &[DeviceId],
    ) -> ApiResult<()> {
        let full = state.queues.full(&*state.store, members).await?;
        if full.is_empty() {
            return Ok(());
        }
        let own = own_devices(state, me).await?;
        let others = members.iter().filter(|d| !own.contains(d)).count();
        let others_full = full.iter().filter(|d| !own.contains(d)).count();
        if others > 0 && others_full == others {
            state.metrics.queue_full_refusals.inc();
            return Err(queue_full(state));
        }
        self.full = self.recipients.iter().copied().filter(|d| full.contains(d)).collect();
        self.full_members = full.iter().copied().filter(|d| !own.contains(d)).collect();
        self.recipients.retain(|d| !full.contains(d));
        state.metrics.queue_full_skips.inc_by(full.len() as u64);
        self.skipped = u32::try_from(full.len()).unwrap_or(u32::MAX);
        self.told = self.told.saturating_sub(self.skipped);
        Ok(())
    }
}

/// The queue cap for a member's own key updates: refused with `queue_full` while any of
/// `devices` (the members that stay, other than the sender's own) holds
/// `max_queued_per_device` entries. Changes cannot skip a device the way messages do (one that
/// missed a commit could not read its group any more), so they wait instead — and a member
/// cannot fill the others' queues with commits. Changes that shape the group (an admin's adds,
/// removes and admin changes, leaves, new conversations) are not held back: they are few and
/// rate-limited, and one that removes a flooding member must get through.
pub async fn require_room(
    state: &AppState,
    me: &AuthedDevice,
    devices: &[DeviceId],
) -> ApiResult<()> {
    let full = state.queues.full(&*state.store, devices).await?;
    if full.is_empty() {
        return Ok(());
    }
    let own = own_devices(state, me).await?;
    if full.iter().any(|d| !own.contains(d)) {
        state.metrics.queue_full_refusals.inc();
        return Err(queue_full(state));
    }
    Ok(())
}

async fn own_devices(state: &AppState, me: &AuthedDevice) -> ApiResult<Vec<DeviceId>> {
    Ok(state
        .store
        .account_devices(&me.username)
        .await?
        .map(|a| a.devices.into_iter().map(|d| d.device_id).collect())
        .unwrap_or_default())
}

fn queue_full(state: &AppState) -> DeliveryError {
    DeliveryError::QueueFull { max: state.queues.max() }
}
