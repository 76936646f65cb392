//! Groups: the server follows every conversation's public MLS state and validates each change.
//!
//! - [`state`]: [`Tracked`](state::Tracked), one conversation's `PublicGroup`, loaded from and
//!   saved to the store as a blob; bootstrapped from the creator's GroupInfo and ratchet tree;
//! - [`policy`]: who may do what — admins add and remove, anyone updates or leaves — and the
//!   size limit, checked on the staged commit before it is merged;
//! - [`locks`]: one lock per conversation, so commits to one group are validated one at a time
//!   (the store's epoch check keeps several `kithd` nodes honest as well);
//! - [`creation`]: a new conversation's rules, one function each;
//! - [`handshake`]: a commit's or a leave proposal's way through the rules, one step each;
//! - [`error`]: why a creation or a change was refused, each sentence once.
//!
//! The fan-out list of a conversation is always derived from the validated tree: each leaf's
//! signature key names a registered device, whose account must match the leaf's credential.
//! Every leaf a creation or a commit brings in or changes carries its device's certificate,
//! signed by its account's key ([`check_certificates`]).

pub mod creation;
pub mod error;
pub mod handshake;
pub mod locks;
pub mod policy;
pub mod state;

use std::collections::BTreeMap;

use kith_store::{DeviceId, Store};

pub use crate::delivery::Outcome;
pub use error::{GroupError, GroupResult};

/// A leaf of the tree and the device it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDevice {
    pub leaf: u32,
    pub username: String,
    pub device_id: DeviceId,
}

/// Maps each leaf (username, signature key) to its registered device; every leaf must resolve.
/// A leaf of a device removed from its account resolves to nothing (it gets nothing more, and
/// a member's next commit takes it out); new or changed leaves are never such
/// ([`check_certificates`] finds no such device).
pub async fn resolve_devices(
    store: &dyn Store,
    leaves: &[state::Leaf],
) -> GroupResult<Vec<MemberDevice>> {
    let keys: Vec<Vec<u8>> = leaves.iter().map(|l| l.signature_key.clone()).collect();
    let owners: BTreeMap<Vec<u8>, (DeviceId, String, bool)> = store
        .devices_by_credential_keys(&keys)
        .await?
        .into_iter()
        .map(|o| (o.credential_key, (o.device_id, o.username, o.removed)))
        .collect();
    let mut out = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        match owners.get(&leaf.signature_key) {
            Some((_, username, true)) if *username == leaf.username => {}
            Some((device_id, username, false)) if *username == leaf.username => {
                out.push(MemberDevice {
                    leaf: leaf.index,
                    username: leaf.username.clone(),
                    device_id: *device_id,
                });
            }
            _ => return Err(GroupError::Unregistered(leaf.username.clone())),
        }
    }
    Ok(out)
}

/// Each of `leaves` (new in the tree, or changed) carries the certificate of the device the
/// server registered its signature key for, signed by its account's key — or none, for an
/// account from before account keys (`kith_proto::keypackage::leaf_certificate`). A device
/// key the account key never signed cannot enter a group, whoever commits it.
pub async fn check_certificates(
    store: &dyn Store,
    leaves: &[&openmls::prelude::LeafNode],
) -> GroupResult<()> {
    let mut accounts: BTreeMap<String, Option<kith_store::AccountDevices>> = BTreeMap::new();
    for leaf in leaves {
        let username = state::identity(leaf.credential()).unwrap_or_default();
        if !accounts.contains_key(&username) {
            let found = store.account_devices(&username).await?;
            accounts.insert(username.clone(), found);
        }
        let unregistered = || GroupError::Unregistered(username.clone());
        let account = accounts.get(&username).and_then(Option::as_ref).ok_or_else(unregistered)?;
        let device = account
            .devices
            .iter()
            .find(|d| d.credential_key == leaf.signature_key().as_slice())
            .ok_or_else(unregistered)?;
        let owner = kith_proto::keypackage::Owner {
            account: &username,
            account_key: account.account_key.as_deref(),
            device: Some(device.device_id),
        };
        kith_proto::keypackage::leaf_certificate(leaf, &owner)
            .map_err(|e| GroupError::Certificate(username.clone(), e))?;
    }
    Ok(())
}

/// The leaves `staged` removes that are left over from before their account's key changed
/// ([`kith_proto::keypackage::is_stale`], judged on the account's key now): any member may
/// remove those.
pub async fn stale_leaves(
    store: &dyn Store,
    tracked: &state::Tracked,
    staged: &openmls::prelude::StagedCommit,
) -> GroupResult<std::collections::BTreeSet<u32>> {
    let mut stale = std::collections::BTreeSet::new();
    let mut keys: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for rm in staged.remove_proposals() {
        let index = rm.remove_proposal().removed();
        let Some(leaf) = tracked.group.leaf(index) else { continue };
        let username = state::identity(leaf.credential()).unwrap_or_default();
        if !keys.contains_key(&username) {
            let key = store.account_devices(&username).await?.and_then(|a| a.account_key);
            keys.insert(username.clone(), key);
        }
        if let Some(Some(key)) = keys.get(&username)
            && kith_proto::keypackage::is_stale(leaf, &username, key)
        {
            stale.insert(index.u32());
        }
    }
    Ok(stale)
}

/// The leaves with a pending proposal to leave (by themselves), from the group's validated
/// proposal store.
pub fn pending_leaves(tracked: &state::Tracked) -> GroupResult<Vec<u32>> {
    use openmls::prelude::{Proposal, Sender};
    let mut leaves = Vec::new();
    let queued = tracked
        .group
        .queued_proposals(&tracked.storage)
        .map_err(|_| GroupError::Internal("cannot read a group's pending proposals"))?;
    for (_, queued) in queued {
        if let (Proposal::Remove(rm), Sender::Member(by)) = (queued.proposal(), queued.sender())
            && rm.removed() == *by
        {
            leaves.push(by.u32());
        }
    }
    Ok(leaves)
}

/// Who a conversation's messages go to, from its validated group state alone: every leaf of
/// the tree but those that asked to leave.
pub async fn delivery_members(
    store: &dyn Store,
    tracked: &state::Tracked,
) -> GroupResult<Vec<DeviceId>> {
    let leaving = pending_leaves(tracked)?;
    let leaves: Vec<state::Leaf> =
        tracked.leaves().into_iter().filter(|l| !leaving.contains(&l.index)).collect();
    Ok(resolve_devices(store, &leaves).await?.into_iter().map(|m| m.device_id).collect())
}

/// The story audience rule: a story channel reaches only accounts its owner has a 1:1
/// conversation with (clients further accept a channel only from their own contacts).
pub async fn check_story_audience(
    state: &crate::state::AppState,
    owner: &str,
    added: &[String],
) -> GroupResult<()> {
    for account in added.iter().filter(|a| a.as_str() != owner) {
        if !state.store.share_direct_conversation(owner, account).await? {
            return Err(GroupError::StoryAudience);
        }
    }
    Ok(())
}
