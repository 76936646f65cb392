//! Who may change a group, and how big it may grow.
//!
//! - Adding members, removing someone else and changing the group context (the admin list) need
//!   the committer to be an admin in the group's current, signed context.
//! - Anyone may commit an update of their own leaf, or commit other members' proposals to leave.
//! - A 1:1 conversation has no admins, so nobody can add or remove anyone.
//! - An admin list entry for someone who is no longer a member has no effect (they cannot
//!   commit); clients drop an admin from the list before removing them.
//! - The group may never exceed `max_group_size` member devices.
//! - A member's leaf stays its account's: a commit's new path leaf and every update name the
//!   member whose leaf they replace.
//! - Proposals the server does not understand the consequences of (PSK, ReInit, external
//!   init, custom) are refused.

use kith_proto::{ErrorCode, GroupType};
use openmls::prelude::*;

use crate::error::{ApiError, ApiResult};
use crate::groups::state::{Tracked, meta_of};

fn not_admin(what: &str) -> ApiError {
    ApiError::new(ErrorCode::NotAdmin, format!("only group admins can {what}"))
}

/// Checks a staged commit by `committer` against the group's current state.
pub fn check_commit(
    tracked: &Tracked,
    committer: &str,
    staged: &StagedCommit,
    max_group_size: usize,
) -> ApiResult<()> {
    let meta = tracked.meta();
    let is_admin = meta.as_ref().is_some_and(|m| m.is_admin(committer));

    let adds = staged.add_proposals().count();
    if adds > 0 && !is_admin {
        return Err(not_admin("add members"));
    }
    let mut removes = 0;
    for rm in staged.remove_proposals() {
        removes += 1;
        let removed = rm.remove_proposal().removed();
        let leaving = matches!(rm.sender(), Sender::Member(s) if *s == removed);
        if !leaving && !is_admin {
            return Err(not_admin("remove other members"));
        }
    }
    for queued in staged.queued_proposals() {
        match queued.proposal() {
            Proposal::Add(_) | Proposal::Remove(_) | Proposal::Update(_) => {}
            Proposal::GroupContextExtensions(ext) => {
                if !is_admin {
                    return Err(not_admin("change the group's admins"));
                }
                let Some(new) = meta_of(ext.extensions()) else {
                    return Err(ApiError::new(
                        ErrorCode::InvalidMessage,
                        "the new group context lacks a valid Kith extension",
                    ));
                };
                if Some(new.kind) != meta.as_ref().map(|m| m.kind) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidMessage,
                        "a conversation's type cannot change",
                    ));
                }
                if new.kind == GroupType::Group && new.admins.is_empty() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidMessage,
                        "a group keeps at least one admin",
                    ));
                }
                if new.kind == GroupType::Story
                    && Some(&new.admins) != meta.as_ref().map(|m| &m.admins)
                {
                    return Err(ApiError::new(
                        ErrorCode::InvalidMessage,
                        "a story channel's owner is its only admin, for good",
                    ));
                }
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidMessage,
                    "this server accepts add, remove, update and group-context proposals only",
                ));
            }
        }
    }
    // A member's leaf stays its own account's: the committer's new path leaf, and every
    // update, name the member whose leaf they replace (else a member could hand its seat — and
    // every opt-in and audience rule checked at adds — to another account without an add).
    if let Some(leaf) = staged.update_path_leaf_node()
        && crate::groups::state::identity(leaf.credential()).as_deref() != Some(committer)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            "a commit's new leaf names another account than its sender",
        ));
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
                return Err(ApiError::new(
                    ErrorCode::InvalidMessage,
                    "an update names another account than the member it replaces",
                ));
            }
        }
    }
    let current = tracked.group.members().count();
    let after = (current + adds).saturating_sub(removes);
    if after > max_group_size && adds > 0 {
        return Err(ApiError::new(
            ErrorCode::GroupFull,
            format!(
                "the group would have {after} members; this server allows at most {max_group_size}"
            ),
        ));
    }
    Ok(())
}
