//! A new conversation: the creator's GroupInfo, tree and Welcome, checked one rule at a time.
//!
//! - [`super::state::Tracked::bootstrap`]: the GroupInfo and tree verify, for this id and
//!   Kith's ciphersuite, with a valid Kith extension;
//! - [`super::policy::check_size`]: at most `max_group_size` member devices;
//! - [`check_members`]: every leaf a registered device of the account it names, the creator
//!   among them, and someone else;
//! - [`check_shape`]: a 1:1 has two accounts and no admins; a group or story channel starts
//!   with its creator as its only admin;
//! - [`check_businesses`]: a business never brings a person in, and a group holds a business
//!   only with people who opted in (`crate::businesses`);
//! - [`super::check_story_audience`]: a story channel reaches only its owner's contacts;
//! - [`count_new_conversation`]: the hourly limits on new conversations (`crate::safety`);
//! - a repeat of a creation this device made (same Welcome) is answered as done
//!   ([`created_before`]); the Welcome is withheld from accounts that block the creator.

use std::collections::BTreeSet;

use kith_proto::{AccountKind, ConversationId, CreateConversation, GroupMeta, GroupType};
use kith_store::{AppliedHandshake, NewConversation, StoreError};
use openmls_rust_crypto::OpenMlsRustCrypto;
use sha2::Digest as _;

use super::state::Tracked;
use super::{GroupError, GroupResult, MemberDevice, Outcome, policy};
use crate::delivery::{self, Fanout, Post, entries};
use crate::extract::AuthedDevice;
use crate::mls;
use crate::safety;
use crate::state::AppState;

/// A conversation created: the Welcome's message id (0 for a repeat) and the server's time.
#[derive(Debug)]
pub struct Created {
    pub message_id: u64,
    pub server_time: u64,
}

/// Creates the conversation `id` that `req` describes, or answers a repeat of its creation.
pub async fn create(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    req: CreateConversation,
) -> GroupResult<Outcome<Created>> {
    mls::check_welcome(&req.welcome.0)?;
    // Posted again by a creator whose answer was lost: it was created, and is not again. Only
    // a member is looked at here (the route is cached); anyone else learns that the id is taken
    // only where they did before, after the checks and limits below.
    let digest: [u8; 32] = sha2::Sha256::digest(&req.welcome.0).into();
    let route = state.fanout.route(&*state.store, id.as_bytes()).await?;
    // Cheap checks before the costly one (verifying a GroupInfo and a tree of up to a
    // megabyte): the change rate is counted for every attempt, valid or not.
    delivery::check_rate(state, me, id.as_bytes(), Post::Change { story: false }).await?;
    if route.is_some_and(|r| r.members.contains(&me.device_id)) {
        return created_before(state, me, id, &digest).await;
    }
    let crypto = OpenMlsRustCrypto::default();
    let tracked =
        Tracked::bootstrap(&crypto, id.as_bytes(), &req.group_info.0, &req.ratchet_tree.0)?;
    let meta = tracked.meta().ok_or(GroupError::LacksExtension)?;
    let leaves = tracked.leaves();
    policy::check_size(leaves.len(), state.config.max_group_size)?;
    let members = super::resolve_devices(&*state.store, &leaves).await?;
    let nodes: Vec<_> =
        tracked.group.members().filter_map(|m| tracked.group.leaf(m.index)).collect();
    super::check_certificates(&*state.store, &nodes).await?;
    check_members(me, &members)?;
    let accounts: BTreeSet<String> = members.iter().map(|m| m.username.clone()).collect();
    check_businesses(state, me, meta.kind, &accounts).await?;
    check_shape(me, &meta, &accounts)?;
    if meta.kind == GroupType::Story {
        let audience: Vec<String> = accounts.iter().cloned().collect();
        super::check_story_audience(state, &me.username, &audience).await?;
    }
    let now = state.now();
    if let Err(limited) = count_new_conversation(state, me, meta.kind, now).await {
        // A repeat that came while the first was being created, which counted toward the limit.
        return created_before(state, me, id, &digest).await.map_err(|_| limited);
    }
    let stored = store(state, me, id, &tracked, &members, req.welcome.0, meta.kind, now).await;
    let (message_id, recipients, invited) = match stored {
        Ok(done) => done,
        Err(e) => {
            if meta.kind != GroupType::Story {
                state.safety.release_new_conversation(
                    &me.username,
                    meta.kind == GroupType::Direct,
                    now,
                );
            }
            // A repeat that arrived while the first was being created.
            if matches!(e, GroupError::Store(StoreError::ConversationExists)) {
                return created_before(state, me, id, &digest).await;
            }
            return Err(e);
        }
    };
    let others: Vec<String> = accounts.into_iter().filter(|a| *a != me.username).collect();
    state.safety.note_new_conversation(
        &me.username,
        id.as_bytes(),
        meta.kind,
        &others,
        invited,
        now,
    );
    entries::accepted(state, &recipients);
    Ok(Outcome::Done(Created { message_id, server_time: now }))
}

/// Every leaf is a registered device (checked by `resolve_devices`); the creator's device is
/// among them, with someone else's.
fn check_members(me: &AuthedDevice, members: &[MemberDevice]) -> GroupResult<()> {
    if !members.iter().any(|m| m.device_id == me.device_id) {
        return Err(GroupError::CreatorOutside);
    }
    if members.len() < 2 {
        return Err(GroupError::Alone);
    }
    Ok(())
}

/// A 1:1 has exactly two accounts and no admins; a new group or story channel has its creator
/// as its only admin.
fn check_shape(
    me: &AuthedDevice,
    meta: &GroupMeta,
    accounts: &BTreeSet<String>,
) -> GroupResult<()> {
    match meta.kind {
        GroupType::Direct if accounts.len() != 2 || !meta.admins.is_empty() => {
            Err(GroupError::DirectShape)
        }
        GroupType::Group | GroupType::Story if meta.admins != [me.username.clone()] => {
            Err(GroupError::FirstAdmin)
        }
        _ => Ok(()),
    }
}

/// The opt-in rule at creation: a business never brings a person in; whoever creates it, a
/// group holds a business only with people who opted in, and a story channel never does.
async fn check_businesses(
    state: &AppState,
    me: &AuthedDevice,
    kind: GroupType,
    accounts: &BTreeSet<String>,
) -> GroupResult<()> {
    if me.kind == AccountKind::Business {
        for other in accounts.iter().filter(|a| **a != me.username) {
            crate::businesses::refuse_person(state, other).await?;
        }
    }
    crate::businesses::check_members(state, kind, accounts, accounts).await?;
    Ok(())
}

/// The hourly limits on new conversations: counted from here on, given back if the
/// conversation is not created.
async fn count_new_conversation(
    state: &AppState,
    me: &AuthedDevice,
    kind: GroupType,
    now: u64,
) -> GroupResult<()> {
    let created =
        state.store.account_info(&me.username).await?.map(|a| a.created_at).unwrap_or(now);
    let verdict = state.safety.check_new_conversation(&me.username, kind, created, now);
    Ok(safety::enforce(state, &me.username, verdict).await?)
}

/// Stores the conversation with its Welcome: the Welcome's message id, the devices it goes to,
/// and how many the creator is told it went to. It is withheld from members whose account
/// blocks the creator, until the block is lifted; the creator is not told.
#[allow(clippy::too_many_arguments)]
async fn store(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    tracked: &Tracked,
    members: &[MemberDevice],
    welcome: Vec<u8>,
    kind: GroupType,
    now: u64,
) -> GroupResult<(u64, Vec<u64>, u32)> {
    let device_ids: Vec<u64> = members.iter().map(|m| m.device_id).collect();
    let others: Vec<u64> = device_ids.iter().copied().filter(|d| *d != me.device_id).collect();
    let fanout = Fanout::to_members(state, &me.username, others.clone()).await?;
    let withheld: Vec<u64> =
        others.into_iter().filter(|d| !fanout.recipients.contains(d)).collect();
    // Remembered with the conversation, so the creator's repeat is answered as created.
    let applied = AppliedHandshake {
        device: me.device_id,
        digest: sha2::Sha256::digest(&welcome).to_vec(),
        epoch: tracked.epoch(),
        members: u32::try_from(members.len()).unwrap_or(u32::MAX),
    };
    let message_id = state
        .store
        .create_conversation(NewConversation {
            conversation: id.as_bytes().to_vec(),
            creator_device: me.device_id,
            members: device_ids,
            welcome,
            epoch: tracked.epoch(),
            group_state: tracked.save()?,
            now,
            // In a story channel only its owner posts.
            poster: (kind == GroupType::Story).then(|| me.username.clone()),
            direct: kind == GroupType::Direct,
            withheld,
            applied: Some(applied),
        })
        .await?;
    Ok((message_id, fanout.recipients, fanout.told))
}

/// The answer to a creation this device posted before with the same Welcome, which the server
/// carried out: nothing created or sent again. Anything else for an existing id is
/// `409 conversation_exists`.
async fn created_before(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    digest: &[u8; 32],
) -> GroupResult<Outcome<Created>> {
    if super::state::applied_by(state, id, me.device_id, digest, None).await?.is_none() {
        return Err(StoreError::ConversationExists.into());
    }
    Ok(Outcome::Repeated(Created { message_id: 0, server_time: state.now() }))
}
