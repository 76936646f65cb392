//! Who may change a group, and how big it may grow.
//!
//! - The change rule, shared with every client ([`kith_proto::group::check_change`]), judged
//!   against the group's current, signed context: adding, removing someone else, choosing the
//!   admins and changing a group's settings need an admin (a 1:1's settings either person);
//!   admins are always members, and the commit that leaves none names the heir.
//! - A commit that changes the settings digest carries the sealed settings in its
//!   authenticated data (the server checks their shape only; it cannot open them); any other
//!   commit carries none.
//! - The group may never exceed `max_group_size` member devices.
//! - A member's leaf stays its account's: a commit's new path leaf and every update name the
//!   member whose leaf they replace.
//! - Proposals the server does not understand the consequences of (PSK, ReInit, external
//!   init, custom) are refused.

use std::collections::BTreeSet;

use kith_proto::GroupMeta;
use kith_proto::group::{Change, check_change};
use kith_proto::settings::Sealed;
use openmls::prelude::*;

use crate::groups::state::{Tracked, meta_of};
use crate::groups::{GroupError, GroupResult};

/// The member accounts a staged commit leaves: today's, less the leaves it removes, with the
/// ones it adds.
pub fn members_after(tracked: &Tracked, staged: &StagedCommit) -> BTreeSet<String> {
    let removed: BTreeSet<u32> =
        staged.remove_proposals().map(|rm| rm.remove_proposal().removed().u32()).collect();
    let mut members: BTreeSet<String> = tracked
        .leaves()
        .into_iter()
        .filter(|l| !removed.contains(&l.index))
        .map(|l| l.username)
        .collect();
    members.extend(staged.add_proposals().filter_map(|a| {
        crate::groups::state::identity(a.add_proposal().key_package().leaf_node().credential())
    }));
    members
}

/// Checks a staged commit by `committer`, with authenticated data `aad`, against the group's
/// current state.
pub fn check_commit(
    tracked: &Tracked,
    committer: &str,
    staged: &StagedCommit,
    aad: &[u8],
    max_group_size: usize,
    stale: &BTreeSet<u32>,
) -> GroupResult<()> {
    let before: GroupMeta = tracked.meta().ok_or(GroupError::LacksExtension)?;
    let mut after = before.clone();
    for queued in staged.queued_proposals() {
        match queued.proposal() {
            Proposal::Add(_) | Proposal::Remove(_) | Proposal::Update(_) => {}
            Proposal::GroupContextExtensions(ext) => {
                after = meta_of(ext.extensions()).ok_or(GroupError::NewContextLacksExtension)?;
            }
            _ => return Err(GroupError::Proposal),
        }
    }
    let adds = staged.add_proposals().count();
    // A member adds and removes its own account's devices as it likes; a leaf left over from
    // before its account's recovery anyone removes, and puts that account's devices now in its
    // place in the same commit (but in a story channel, where only the owner adds anyone).
    // Anything else needs an admin.
    let replaced: BTreeSet<String> = if before.kind == kith_proto::GroupType::Story {
        BTreeSet::new()
    } else {
        stale
            .iter()
            .filter_map(|i| tracked.leaf(LeafNodeIndex::new(*i)))
            .map(|l| l.username)
            .collect()
    };
    let adds_others = staged.add_proposals().any(|a| {
        let added =
            crate::groups::state::identity(a.add_proposal().key_package().leaf_node().credential());
        added.as_deref() != Some(committer) && !added.is_some_and(|a| replaced.contains(&a))
    });
    let mut removes = 0;
    let mut removes_others = false;
    for rm in staged.remove_proposals() {
        removes += 1;
        let removed = rm.remove_proposal().removed();
        let own_leave = matches!(rm.sender(), Sender::Member(s) if *s == removed);
        let own_device = tracked.leaf(removed).is_some_and(|l| l.username == committer);
        removes_others |= !own_leave && !own_device && !stale.contains(&removed.u32());
    }
    let members = members_after(tracked, staged);
    let change = Change {
        before: &before,
        after: &after,
        committer,
        adds: adds_others,
        removes_others,
        members_after: &members,
    };
    check_change(&change)?;
    // The settings travel sealed beside the digest that changes, and only then.
    let sealed = Sealed::decode(aad).is_some();
    if after.settings != before.settings && !sealed {
        return Err(GroupError::SettingsUnsealed);
    }
    if after.settings == before.settings && !aad.is_empty() {
        return Err(GroupError::UnexpectedData);
    }
    // A member's leaf stays its own account's: the committer's new path leaf, and every
    // update, name the member whose leaf they replace (else a member could hand its seat — and
    // every opt-in and audience rule checked at adds — to another account without an add).
    if let Some(leaf) = staged.update_path_leaf_node()
        && crate::groups::state::identity(leaf.credential()).as_deref() != Some(committer)
    {
        return Err(GroupError::PathLeafOfOther);
    }
    if staged.update_proposals().next().is_some() {
        let leaves = tracked.leaves();
        for update in staged.update_proposals() {
            let owner = match update.sender() {
                Sender::Member(by) => leaves.iter().find(|l| l.index == by.u32()),
                _ => None,
            };
            let named =
                crate::groups::state::identity(update.update_proposal().leaf_node().credential());
            if owner.map(|l| Some(&l.username)) != Some(named.as_ref()) {
                return Err(GroupError::UpdateOfOther);
            }
        }
    }
    let current = tracked.group.members().count();
    let devices = (current + adds).saturating_sub(removes);
    if adds > 0 {
        check_size(devices, max_group_size)?;
    }
    Ok(())
}

/// The size limit: a group holds at most `max` member devices (checked where it grows: at
/// creation and at each commit that adds).
pub fn check_size(members: usize, max: usize) -> GroupResult<()> {
    if members > max { Err(GroupError::Full { members, max }) } else { Ok(()) }
}
