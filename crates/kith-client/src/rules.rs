//! The group's rules, applied by this client to what others send, as if the server were
//! hostile (it validates the same rules; see the server's `groups::policy`):
//!
//! - handshakes arrive only as MLS `PublicMessage`s (an encrypted commit is one the server
//!   could not check);
//! - the change rule shared with the server ([`kith_proto::group::check_change`]): adding,
//!   removing someone else, choosing the admins and changing a group's settings need an admin
//!   in the context the commit was made in; admins are always members; a conversation's type
//!   never changes;
//! - proposals other than a member's own leave are not accepted on their own.

use std::collections::BTreeSet;

use kith_proto::GroupMeta;
use kith_proto::group::{Change, check_change};
use openmls::prelude::*;

use crate::error::{ClientError, ClientResult, Refusal};
use crate::mls;

fn refused(why: &str) -> ClientError {
    ClientError::refused(Refusal::GroupRules, why)
}

/// A handshake must travel in the clear.
pub fn check_wire_format(message: &ProtocolMessage) -> ClientResult<()> {
    if message.is_handshake_message() && message.wire_format() != WireFormat::PublicMessage {
        return Err(refused("a commit or proposal that was not sent in the clear"));
    }
    Ok(())
}

/// Whether `committer` may make `staged` in `group`, whose context is `before` — the change
/// rule the server applies too ([`kith_proto::group::check_change`]), so a commit one accepts
/// the other does.
pub fn check_commit(
    group: &MlsGroup,
    before: Option<&GroupMeta>,
    committer: &str,
    staged: &StagedCommit,
    stale: &BTreeSet<LeafNodeIndex>,
) -> ClientResult<()> {
    let before = before.ok_or_else(|| refused("a group without the Kith extension"))?;
    for queued in staged.queued_proposals() {
        match queued.proposal() {
            Proposal::Add(_) | Proposal::Remove(_) | Proposal::Update(_) => {}
            Proposal::GroupContextExtensions(_) => {}
            _ => return Err(refused("a kind of proposal Kith does not use")),
        }
    }
    // A member's leaf stays its account's: the committer's new path leaf names the committer
    // (standalone updates are never accepted, so committed ones cannot occur).
    if let Some(leaf) = staged.update_path_leaf_node()
        && mls::identity(leaf.credential()).as_deref() != Some(committer)
    {
        return Err(refused("a commit whose new leaf names another account than its sender"));
    }
    if staged.update_proposals().next().is_some() {
        return Err(refused("an update proposal (Kith clients never send one)"));
    }
    let after = mls::meta_of_context(staged.group_context())
        .ok_or_else(|| refused("a commit that drops the Kith extension"))?;
    let removed: BTreeSet<LeafNodeIndex> =
        staged.remove_proposals().map(|rm| rm.remove_proposal().removed()).collect();
    // A member adds and removes its own account's devices as it likes (a linked device, a
    // device removed from any other); a leaf left over from before its account's recovery
    // (`stale`) anyone removes, putting that account's devices now in its place in the same
    // commit. Anything else needs an admin.
    let removes_others = staged.remove_proposals().any(|rm| {
        let removed = rm.remove_proposal().removed();
        let own_leave = matches!(rm.sender(), Sender::Member(s) if *s == removed);
        let own_device =
            group.member(removed).and_then(mls::identity).as_deref() == Some(committer);
        !own_leave && !own_device && !stale.contains(&removed)
    });
    // Devices of an account whose stale leaves this commit removes, in their place (never in
    // a story channel: only its owner adds anyone there).
    let replaced: BTreeSet<String> = if before.kind == kith_proto::GroupType::Story {
        BTreeSet::new()
    } else {
        stale.iter().filter_map(|i| group.member(*i)).filter_map(mls::identity).collect()
    };
    let adds_others = staged.add_proposals().any(|a| {
        let added = mls::identity(a.add_proposal().key_package().leaf_node().credential());
        added.as_deref() != Some(committer) && !added.is_some_and(|a| replaced.contains(&a))
    });
    let mut members_after: BTreeSet<String> = group
        .members()
        .filter(|m| !removed.contains(&m.index))
        .filter_map(|m| mls::identity(&m.credential))
        .collect();
    members_after.extend(
        staged
            .add_proposals()
            .filter_map(|a| mls::identity(a.add_proposal().key_package().leaf_node().credential())),
    );
    let change = Change {
        before,
        after: &after,
        committer,
        adds: adds_others,
        removes_others,
        members_after: &members_after,
    };
    check_change(&change).map_err(|why| refused(&why.to_string()))
}

/// The leaves a commit brings in or changes: what the member check looks at.
pub fn new_leaves(staged: &StagedCommit) -> Vec<LeafNode> {
    staged
        .add_proposals()
        .map(|a| a.add_proposal().key_package().leaf_node().clone())
        .chain(staged.update_proposals().map(|u| u.update_proposal().leaf_node().clone()))
        .chain(staged.update_path_leaf_node().cloned())
        .collect()
}

/// A proposal on its own may only be a member's request to leave.
pub fn check_proposal(proposal: &QueuedProposal) -> ClientResult<()> {
    match (proposal.proposal(), proposal.sender()) {
        (Proposal::Remove(rm), Sender::Member(by)) if rm.removed() == *by => Ok(()),
        _ => Err(refused("a proposal other than a member's own leave")),
    }
}
