//! A commit (with its Welcome when it adds) or a request to leave: validated against the
//! server's copy of the group, one change per epoch. The steps, in order:
//!
//! 1. [`parse`]: an MLS PublicMessage handshake of this conversation — nothing of the group is
//!    loaded for anything else;
//! 2. membership ([`crate::delivery::member_route`]) and the change rate
//!    ([`crate::delivery::check_rate`]); a repeat from a device that has just left is answered
//!    as done ([`repeat_of_leaver`]);
//! 3. under the conversation's lock: a repeat of what this device posted before is answered as
//!    done; [`check_epoch`]: for the group's current epoch;
//! 4. [`verify`]: it verifies against the group, from a member, signed with the poster's own
//!    key;
//! 5. a commit goes through [`commit`] (the change rule in [`super::policy`], pending leaves
//!    included, the story audience, the opt-in rule, its Welcome); a proposal may only be the
//!    poster's own leave ([`leave`]);
//! 6. [`crate::delivery::require_room`]: a change that does not shape the group waits for room
//!    in every member's queue;
//! 7. [`store`]: saved with the new member list and queued, under the store's epoch check.

use std::collections::BTreeSet;

use kith_proto::{
    AccountKind, ConversationId, EntryKind, GroupType, HandshakeResponse, PendingLeave,
};
use kith_store::{AppliedHandshake, GroupUpdate, NewMessage, StoreError};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sha2::Digest as _;

use super::state::{Leaf, Tracked, applied_by};
use super::{GroupError, GroupResult, Outcome, policy};
use crate::delivery::{self, DeliveryError, Fanout, Post, entries};
use crate::extract::AuthedDevice;
use crate::mls;
use crate::state::AppState;

/// Where a validated handshake goes and what it changes.
struct Change {
    tracked: Tracked,
    members: Vec<u64>,
    messages: Vec<NewMessage>,
    /// Devices the change added, and their accounts (for the safety signals).
    added: u32,
    added_accounts: Vec<String>,
    /// A change that does not shape the group — a member's key update, a 1:1's settings — held
    /// to the queue cap (anyone in a conversation could otherwise flood the others' queues).
    own_update: bool,
}

/// What a handshake's checks need besides the group.
struct Posted<'a> {
    me: &'a AuthedDevice,
    committer: String,
    handshake: NewMessage,
    welcome: Option<Vec<u8>>,
}

/// Validates and applies the handshake `message` (with `welcome`) posted by `me` to `id`.
pub async fn apply(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    message: Vec<u8>,
    welcome: Option<Vec<u8>>,
) -> GroupResult<Outcome<HandshakeResponse>> {
    let protocol = parse(id, &message)?;
    let digest: [u8; 32] = sha2::Sha256::digest(&message).into();
    let route = match delivery::member_route(state, me, id.as_bytes()).await {
        Ok(route) => route,
        Err(DeliveryError::NotAMember) => return repeat_of_leaver(state, me, id, &digest).await,
        Err(e) => return Err(e.into()),
    };
    let story = route.poster.is_some();
    delivery::check_rate(state, me, id.as_bytes(), Post::Change { story }).await?;
    let _guard = state.locks.lock(id.as_bytes()).await;
    let stored =
        state.store.group_state(id.as_bytes()).await?.ok_or(StoreError::UnknownConversation)?;
    let mut tracked = Tracked::load(id.as_bytes(), &stored.state)?;
    // Posted again by a client whose answer was lost: it was applied, and is not again. Looked
    // at before membership: a repeat of a request to leave that waited for the lock while the
    // first was applied comes from a device no longer in delivery.
    if let Some(done) = applied_by(state, id, me.device_id, &digest, Some(&tracked)).await? {
        return Ok(repeated(state, done));
    }
    let members_before =
        state.store.conversation_route(id.as_bytes()).await?.map(|r| r.members).unwrap_or_default();
    if !members_before.contains(&me.device_id) {
        return Err(DeliveryError::NotAMember.into());
    }
    check_epoch(&tracked, protocol.epoch().as_u64())?;
    let (processed, sender) = verify(&mut tracked, me, protocol)?;
    let now = state.now();
    let posted = Posted {
        me,
        committer: sender.username,
        handshake: NewMessage {
            conversation: id.as_bytes().to_vec(),
            sender_device: me.device_id,
            kind: EntryKind::Message,
            data: message,
            recipients: members_before.iter().copied().filter(|d| *d != me.device_id).collect(),
            now,
            expires_at: None,
            withheld: vec![],
            client_id: None,
        },
        welcome,
    };
    let aad = processed.aad().to_vec();
    let change = match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            commit(state, tracked, *staged, &aad, posted).await?
        }
        ProcessedMessageContent::ProposalMessage(proposal) => {
            leave(state, tracked, sender.index, *proposal, posted).await?
        }
        _ => return Err(GroupError::NotCommitOrProposal),
    };
    // The queue cap, for what a member could flood others with: its own key updates.
    if change.own_update {
        let staying: Vec<u64> =
            change.members.iter().copied().filter(|d| *d != me.device_id).collect();
        delivery::require_room(state, me, &staying).await?;
    }
    let expected = (stored.epoch, stored.revision);
    Ok(Outcome::Done(store(state, me, id, change, digest, expected, now).await?))
}

/// The members whose request to leave the next commit must include, for a member (one that
/// asked to leave is out of delivery but may still ask).
pub async fn pending_leaves(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
) -> GroupResult<Vec<PendingLeave>> {
    let stored =
        state.store.group_state(id.as_bytes()).await?.ok_or(StoreError::UnknownConversation)?;
    let tracked = Tracked::load(id.as_bytes(), &stored.state)?;
    if !tracked.leaves().into_iter().any(|l| l.signature_key == me.credential_key) {
        return Err(DeliveryError::NotAMember.into());
    }
    Ok(super::pending_leaves(&tracked)?
        .into_iter()
        .filter_map(|leaf| {
            let found = tracked.leaf(LeafNodeIndex::new(leaf))?;
            Some(PendingLeave { leaf, username: found.username })
        })
        .collect())
}

/// The handshake rule of form: an MLS PublicMessage carrying a commit or a proposal, of this
/// conversation.
fn parse(id: &ConversationId, bytes: &[u8]) -> GroupResult<ProtocolMessage> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| GroupError::NotMls)?;
    if message.wire_format() != WireFormat::PublicMessage {
        return Err(GroupError::NotPublic);
    }
    let protocol = message.try_into_protocol_message().map_err(|_| GroupError::NotProtocol)?;
    if protocol.group_id().as_slice() != id.as_bytes() {
        return Err(GroupError::OtherConversation);
    }
    if !protocol.is_handshake_message() {
        return Err(GroupError::NotHandshake);
    }
    Ok(protocol)
}

/// A request to leave takes the device out of delivery at once: its repeat comes from a device
/// that is no longer listed, and is answered as done; anything else from it is `not_a_member`.
async fn repeat_of_leaver(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    digest: &[u8; 32],
) -> GroupResult<Outcome<HandshakeResponse>> {
    // Held to the change limit like any handshake: the look costs a group's load.
    delivery::check_rate(state, me, id.as_bytes(), Post::Change { story: false }).await?;
    match applied_by(state, id, me.device_id, digest, None).await? {
        Some(done) => Ok(repeated(state, done)),
        None => Err(DeliveryError::NotAMember.into()),
    }
}

/// The answer to a handshake this device posted before and the server applied (see
/// [`Applied`]): nothing stored or sent again, `message_id` 0.
fn repeated(state: &AppState, done: AppliedHandshake) -> Outcome<HandshakeResponse> {
    Outcome::Repeated(HandshakeResponse {
        message_id: 0,
        epoch: done.epoch,
        server_time: state.now(),
        members: done.members,
    })
}

/// One change per epoch: for an older epoch the poster catches up (`stale_epoch`); a later one
/// no member could have made.
fn check_epoch(tracked: &Tracked, epoch: u64) -> GroupResult<()> {
    if epoch < tracked.epoch() {
        return Err(DeliveryError::Stale { current: tracked.epoch() }.into());
    }
    if epoch > tracked.epoch() {
        return Err(GroupError::FutureEpoch);
    }
    Ok(())
}

/// The handshake verifies against the group, comes from a member, and is signed with the
/// poster's own key (a device cannot speak for another member).
fn verify(
    tracked: &mut Tracked,
    me: &AuthedDevice,
    protocol: ProtocolMessage,
) -> GroupResult<(ProcessedMessage, Leaf)> {
    let crypto = OpenMlsRustCrypto::default();
    let processed = tracked.group.process_message(crypto.crypto(), protocol).map_err(|e| {
        // OpenMLS's own words stay in the log: clients get the stable code and a fixed text.
        tracing::debug!(error = %e, "a handshake does not verify");
        GroupError::DoesNotVerify
    })?;
    let Sender::Member(sender_leaf) = *processed.sender() else {
        return Err(GroupError::NotFromMember);
    };
    let sender = tracked.leaf(sender_leaf).ok_or(GroupError::UnknownSender)?;
    if sender.signature_key != me.credential_key {
        return Err(GroupError::SignedByOther);
    }
    Ok((processed, sender))
}

/// A proposal on its own may only be the sender's request to leave. The leaver gets nothing
/// more from now on, before anyone commits its removal: the next commit must include it.
async fn leave(
    state: &AppState,
    mut tracked: Tracked,
    sender: u32,
    proposal: QueuedProposal,
    posted: Posted<'_>,
) -> GroupResult<Change> {
    let Proposal::Remove(remove) = proposal.proposal() else {
        return Err(GroupError::OnlyLeaveAlone);
    };
    if remove.removed().u32() != sender {
        return Err(GroupError::OnlyLeaveAlone);
    }
    tracked
        .group
        .add_proposal(&tracked.storage, proposal)
        .map_err(|_| GroupError::Internal("cannot keep a request to leave"))?;
    let members = super::delivery_members(&*state.store, &tracked).await?;
    Ok(Change {
        tracked,
        members,
        messages: vec![posted.handshake],
        added: 0,
        added_accounts: Vec::new(),
        own_update: false,
    })
}

/// A commit: the change rule, the pending leaves it must include, the story audience and the
/// opt-in rule for what it adds, and its Welcome; merged into the server's copy.
async fn commit(
    state: &AppState,
    mut tracked: Tracked,
    staged: StagedCommit,
    aad: &[u8],
    posted: Posted<'_>,
) -> GroupResult<Change> {
    let committer = posted.committer.as_str();
    let stale = super::stale_leaves(&*state.store, &tracked, &staged).await?;
    let max = state.config.max_group_size;
    policy::check_commit(&tracked, committer, &staged, aad, max, &stale)?;
    check_leaves_included(&tracked, &staged)?;
    let changed: Vec<LeafNode> = staged
        .add_proposals()
        .map(|a| a.add_proposal().key_package().leaf_node().clone())
        .chain(staged.update_proposals().map(|u| u.update_proposal().leaf_node().clone()))
        .chain(staged.update_path_leaf_node().cloned())
        .collect();
    super::check_certificates(&*state.store, &changed.iter().collect::<Vec<_>>()).await?;
    let added_accounts: Vec<String> = staged
        .add_proposals()
        .filter_map(|a| {
            super::state::identity(a.add_proposal().key_package().leaf_node().credential())
        })
        .collect();
    if tracked.meta().is_some_and(|m| m.kind == GroupType::Story) {
        super::check_story_audience(state, committer, &added_accounts).await?;
    }
    if posted.me.kind == AccountKind::Business {
        for added in &added_accounts {
            crate::businesses::refuse_person(state, added).await?;
        }
    }
    let adds = staged.add_proposals().next().is_some();
    let own_update = is_own_update(&tracked, committer, &staged);
    let keys_before: BTreeSet<Vec<u8>> =
        tracked.leaves().into_iter().map(|l| l.signature_key).collect();
    tracked
        .group
        .merge_commit(&tracked.storage, staged)
        .map_err(|_| GroupError::Internal("cannot merge a validated commit"))?;
    let leaves = tracked.leaves();
    let devices = super::resolve_devices(&*state.store, &leaves).await?;
    if adds && let Some(kind) = tracked.meta().map(|m| m.kind) {
        // Whoever adds: a business only with people who opted in, and never in stories.
        let members: BTreeSet<String> = devices.iter().map(|d| d.username.clone()).collect();
        let added: BTreeSet<String> = added_accounts.iter().cloned().collect();
        crate::businesses::check_members(state, kind, &members, &added).await?;
    }
    let joined: Vec<u64> = leaves
        .iter()
        .zip(&devices)
        .filter(|(leaf, _)| !keys_before.contains(&leaf.signature_key))
        .map(|(_, d)| d.device_id)
        .collect();
    let added = u32::try_from(joined.len()).unwrap_or(u32::MAX);
    let mut messages = vec![posted.handshake];
    if let Some(welcome) =
        welcome_for(state, committer, adds, posted.welcome, joined, &messages[0]).await?
    {
        messages.push(welcome);
    }
    let members = devices.iter().map(|d| d.device_id).collect();
    Ok(Change { tracked, members, messages, added, added_accounts, own_update })
}

/// A member's request to leave is never lost to a commit that raced it: a commit that leaves
/// out a pending leave is stale, and its author catches up (getting the proposal) and commits
/// again.
fn check_leaves_included(tracked: &Tracked, staged: &StagedCommit) -> GroupResult<()> {
    let removed: BTreeSet<u32> =
        staged.remove_proposals().map(|rm| rm.remove_proposal().removed().u32()).collect();
    if super::pending_leaves(tracked)?.iter().any(|leaf| !removed.contains(leaf)) {
        return Err(GroupError::LeaveLeftOut);
    }
    Ok(())
}

/// What shapes a group and must get through even to a full queue: an admin's adds, removes
/// and changes of the group's context (its admins, its settings), and completed leaves (with
/// the heir they name). Everything else — key updates, either person's change of a 1:1's
/// settings — waits for room, so nobody, a stranger in a 1:1 included, can fill another's
/// queue with commits.
fn is_own_update(tracked: &Tracked, committer: &str, staged: &StagedCommit) -> bool {
    let by_admin =
        tracked.meta().is_some_and(|m| m.kind != GroupType::Direct && m.is_admin(committer));
    let context_change = staged
        .queued_proposals()
        .any(|p| matches!(p.proposal(), Proposal::GroupContextExtensions(_)));
    staged.add_proposals().next().is_none()
        && staged.remove_proposals().next().is_none()
        && !(by_admin && context_change)
}

/// A commit that adds comes with its Welcome, and only such a commit: the Welcome goes to the
/// devices that joined, withheld from accounts that block the committer until they lift the
/// block (the committer is not told).
async fn welcome_for(
    state: &AppState,
    committer: &str,
    adds: bool,
    welcome: Option<Vec<u8>>,
    joined: Vec<u64>,
    handshake: &NewMessage,
) -> GroupResult<Option<NewMessage>> {
    match (adds, welcome) {
        (true, Some(data)) => {
            mls::check_welcome(&data)?;
            let invited = Fanout::to_members(state, committer, joined.clone()).await?.recipients;
            let withheld = joined.into_iter().filter(|d| !invited.contains(d)).collect();
            // Made beside the commit, not from a copy of it: its bytes are the Welcome's own.
            Ok(Some(NewMessage {
                conversation: handshake.conversation.clone(),
                sender_device: handshake.sender_device,
                kind: EntryKind::Welcome,
                data,
                recipients: invited,
                now: handshake.now,
                expires_at: handshake.expires_at,
                withheld,
                client_id: None,
            }))
        }
        (true, None) => Err(GroupError::WelcomeMissing),
        (false, Some(_)) => Err(GroupError::WelcomeUnexpected),
        (false, None) => Ok(None),
    }
}

/// Saves the change under the store's epoch check and queues what it sends; the answer.
async fn store(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    change: Change,
    digest: [u8; 32],
    expected: (u64, u64),
    now: u64,
) -> GroupResult<HandshakeResponse> {
    let epoch = change.tracked.epoch();
    let members = u32::try_from(change.members.len()).unwrap_or(u32::MAX);
    let recipients: Vec<Vec<u64>> = change.messages.iter().map(|m| m.recipients.clone()).collect();
    let ids = state
        .store
        .update_group(GroupUpdate {
            conversation: id.as_bytes().to_vec(),
            expected_epoch: expected.0,
            expected_revision: expected.1,
            epoch,
            state: change.tracked.save()?,
            members: change.members,
            messages: change.messages,
            applied: Some(AppliedHandshake {
                device: me.device_id,
                digest: digest.to_vec(),
                epoch,
                members,
            }),
        })
        .await
        .map_err(|e| match e {
            StoreError::StaleEpoch => DeliveryError::Stale { current: epoch }.into(),
            other => GroupError::from(other),
        })?;
    // Members changed: the next send must see the new list.
    state.fanout.forget_route(id.as_bytes());
    for r in &recipients {
        entries::accepted(state, r);
    }
    if change.added > 0 {
        state.safety.note_used(&me.username, &change.added_accounts, change.added, now);
    }
    Ok(HandshakeResponse {
        message_id: ids.first().copied().unwrap_or_default(),
        epoch,
        server_time: now,
        members,
    })
}
