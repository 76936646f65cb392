//! The group's rules, applied by this client to what others send, as if the server were
//! hostile (it validates the same rules; see the server's `groups::policy`):
//!
//! - handshakes arrive only as MLS `PublicMessage`s (an encrypted commit is one the server
//!   could not check);
//! - adding members, removing someone else and changing the group context (its admins) need
//!   the committer to be an admin — for a story channel, its owner, its only admin — in the
//!   context before the commit; a 1:1 conversation admits neither;
//! - a conversation's type never changes, and a group keeps at least one admin;
//! - proposals other than a member's own leave are not accepted on their own.

use kith_proto::{GroupMeta, GroupType};
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

/// Whether `committer` may make `staged` in a group whose context was `before`.
pub fn check_commit(
    before: Option<&GroupMeta>,
    committer: &str,
    staged: &StagedCommit,
) -> ClientResult<()> {
    let before = before.ok_or_else(|| refused("a group without the Kith extension"))?;
    let is_admin = before.kind != GroupType::Direct && before.is_admin(committer);
    if staged.add_proposals().next().is_some() && !is_admin {
        return Err(refused("members added by someone who is not an admin"));
    }
    for rm in staged.remove_proposals() {
        let leaving =
            matches!(rm.sender(), Sender::Member(s) if *s == rm.remove_proposal().removed());
        if !leaving && !is_admin {
            return Err(refused("a member removed by someone who is not an admin"));
        }
    }
    for queued in staged.queued_proposals() {
        match queued.proposal() {
            Proposal::Add(_) | Proposal::Remove(_) | Proposal::Update(_) => {}
            Proposal::GroupContextExtensions(_) => {
                if !is_admin {
                    return Err(refused("the group's admins changed by someone who is not one"));
                }
            }
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
    if after.kind != before.kind {
        return Err(refused("a conversation's type cannot change"));
    }
    if after != *before && !is_admin {
        return Err(refused("the group's admins changed by someone who is not one"));
    }
    match after.kind {
        GroupType::Group if after.admins.is_empty() => Err(refused("a group without any admin")),
        GroupType::Story if after.admins != before.admins => {
            Err(refused("a story channel's owner cannot change"))
        }
        GroupType::Direct if !after.admins.is_empty() => {
            Err(refused("admins in a 1:1 conversation"))
        }
        _ => Ok(()),
    }
}

/// The members a commit brings in or whose keys it changes, as (username, signature key).
pub fn new_keys(staged: &StagedCommit, committer: &str) -> Vec<(String, Vec<u8>)> {
    let mut keys = Vec::new();
    for add in staged.add_proposals() {
        let leaf = add.add_proposal().key_package().leaf_node();
        keys.push((
            mls::identity(leaf.credential()).unwrap_or_default(),
            leaf.signature_key().as_slice().to_vec(),
        ));
    }
    for update in staged.update_proposals() {
        let leaf = update.update_proposal().leaf_node();
        keys.push((
            mls::identity(leaf.credential()).unwrap_or_default(),
            leaf.signature_key().as_slice().to_vec(),
        ));
    }
    if let Some(leaf) = staged.update_path_leaf_node() {
        let who = mls::identity(leaf.credential()).unwrap_or_else(|| committer.to_string());
        keys.push((who, leaf.signature_key().as_slice().to_vec()));
    }
    keys
}

/// A proposal on its own may only be a member's request to leave.
pub fn check_proposal(proposal: &QueuedProposal) -> ClientResult<()> {
    match (proposal.proposal(), proposal.sender()) {
        (Proposal::Remove(rm), Sender::Member(by)) if rm.removed() == *by => Ok(()),
        _ => Err(refused("a proposal other than a member's own leave")),
    }
}
