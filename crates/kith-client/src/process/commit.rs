//! A commit, checked against the group's rules and merged, with its settings opened; and a
//! proposal (someone leaving), stored for the next commit. Each says what happened in lines
//! every member sees alike.

use std::collections::BTreeSet;

use kith_proto::*;
use openmls::prelude::*;

use super::{Lines, Processing, Received, Skip};
use crate::client::{Client, now_millis};
use crate::error::{ClientError, Refusal};
use crate::events::SystemEvent;
use crate::local::ConversationKind;
use crate::mls::{self, Provider};

impl Client {
    /// Checks and merges a commit of `group`.
    pub(super) fn apply_commit(
        &self,
        provider: &Provider<'_>,
        group: &mut MlsGroup,
        r: &Received<'_>,
        staged: StagedCommit,
    ) -> Processing<Lines> {
        let entry = r.entry;
        let sender = &r.sender;
        let aad = &r.aad;
        let mut lines = Vec::new();
        let mut lasting = None;
        let before = mls::meta_of(group);
        let stale = self.stale_leaves(group, before.as_ref(), sender, &staged)?;
        crate::rules::check_commit(group, before.as_ref(), sender, &staged, &stale)?;
        // New settings are opened with the key of the epoch the commit was made in,
        // before it is merged, and checked against the digest of the new context.
        let digest_after = mls::meta_of_context(staged.group_context()).and_then(|m| m.settings);
        let opened =
            (digest_after.as_deref() != crate::settings::digest_of(before.as_ref())).then(|| {
                digest_after.as_deref().and_then(|d| crate::settings::open(provider, group, aad, d))
            });
        // A device removed since the commit was made counts: it was registered then (the
        // server checked), and a member who takes the commit in late must not drop it.
        self.check_member_keys(&crate::rules::new_leaves(&staged), true)?;
        let mut added = BTreeSet::new();
        for add in staged.add_proposals() {
            if let Some(u) =
                mls::identity(add.add_proposal().key_package().leaf_node().credential())
            {
                added.insert(u);
            }
        }
        // The opt-in rule, as if the server did not keep it: a person stays in a group
        // that a business joins only if they wrote to it; never in a story channel.
        if self.me()?.kind == AccountKind::Person {
            let kind = before.as_ref().map(|m| m.kind);
            for user in &added {
                if self.local.account_is_business(user)? != Some(true) {
                    continue;
                }
                if kind == Some(GroupType::Story) || !self.local.has_open_direct(user)? {
                    return Err(Skip::from(ClientError::refused(
                        Refusal::GroupRules,
                        format!("{user}, a business you have not written to, added"),
                    )));
                }
            }
        }
        // A member's own new device is said as such (the line every member sees when someone
        // links one), not as adding them; an account that started again after its recovery
        // likewise, once for its old leaves going and its new device coming.
        if added.remove(sender.as_str()) {
            lines.push(SystemEvent::DeviceAdded { who: sender.clone() });
        }
        let mut recovered = BTreeSet::new();
        for index in &stale {
            if let Some(who) = group.member(*index).and_then(mls::identity)
                && recovered.insert(who.clone())
            {
                added.remove(&who);
                lines.push(SystemEvent::Recovered { by: sender.clone(), who });
            }
        }
        let members_before: BTreeSet<String> =
            group.members().filter_map(|m| mls::identity(&m.credential)).collect();
        let more_devices: Vec<String> =
            added.iter().filter(|u| members_before.contains(*u)).cloned().collect();
        for who in more_devices {
            added.remove(&who);
            lines.push(SystemEvent::DeviceAdded { who });
        }
        if !added.is_empty() {
            lines.push(SystemEvent::Added { by: sender.clone(), who: added.into_iter().collect() });
        }
        let mut removed_me = false;
        for rm in staged.remove_proposals() {
            let removed = rm.remove_proposal().removed();
            let leaving = matches!(rm.sender(), Sender::Member(s) if *s == removed);
            let who = group.member(removed).and_then(mls::identity).unwrap_or_default();
            if leaving {
                continue;
            }
            removed_me |= removed == group.own_leaf_index();
            if stale.contains(&removed) {
                continue;
            }
            let line = if who == *sender {
                SystemEvent::DeviceRemoved { who }
            } else {
                SystemEvent::Removed { by: sender.clone(), who }
            };
            // An account's devices go together: one line for them.
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        // Out by this commit: removed (and who did it is said), or a leave completed.
        let out = staged.self_removed();
        group.merge_staged_commit(provider, staged).map_err(ClientError::mls)?;
        let epoch = group.epoch().as_u64();
        let id = &entry.conversation_id;
        let held = self.settings_of(id)?;
        match opened {
            Some(Some((settings, record))) => {
                if settings.name != held.name
                    && let Some(name) = &settings.name
                {
                    lines.push(SystemEvent::Named { by: sender.clone(), name: name.clone() });
                }
                if settings.timer != held.timer {
                    // The line saying so stays, even though the messages after it
                    // disappear.
                    lasting = Some(lines.len());
                    lines.push(SystemEvent::Timer { by: sender.clone(), seconds: settings.timer });
                }
                self.local.set_settings(id, epoch, &settings, Some(&record))?;
            }
            // Settings that do not open, or do not match: the committer broke the
            // protocol. Every member is in the same position; the next commit of one
            // who may set them seals them again.
            Some(None) => {
                tracing::warn!("a commit's settings do not match its group context");
                lines.push(SystemEvent::SettingsUnreadable { by: sender.clone() });
                self.local.set_settings(id, epoch, &held, None)?;
            }
            None => self.local.note_epoch_timer(id, epoch, held.timer)?,
        }
        let after = mls::meta_of(group);
        if let (Some(b), Some(a)) = (&before, &after) {
            for admin in a.admins.iter().filter(|x| !b.is_admin(x)) {
                lines.push(SystemEvent::Promoted { by: sender.clone(), who: admin.clone() });
            }
        }
        if removed_me
            && *sender == self.me()?.username
            && self.local.conversation(id)?.is_some_and(|c| c.kind == ConversationKind::Direct)
        {
            // Another device of this account deleted the chat: so does this one.
            self.local.delete_messages(id)?;
            self.local.set_left(id, now_millis())?;
            if let Some(peer) = self.local.conversation(id)?.and_then(|c| c.peer) {
                self.local.remove_contact(&peer)?;
                self.local.delete_stories_of(&peer)?;
            }
        } else if removed_me {
            self.local.set_removed_by(id, now_millis(), sender)?;
        } else if out {
            self.local.set_left(id, now_millis())?;
        }
        Ok(Lines { lines, lasting })
    }

    /// Stores a proposal of `group` for the next commit (only a member's own leave is one).
    pub(super) fn store_proposal(
        &self,
        provider: &Provider<'_>,
        group: &mut MlsGroup,
        r: &Received<'_>,
        proposal: QueuedProposal,
    ) -> Processing<Vec<SystemEvent>> {
        let entry = r.entry;
        let sender = &r.sender;
        let sender_leaf = r.sender_leaf;
        let mut lines = Vec::new();
        crate::rules::check_proposal(&proposal)?;
        if let Proposal::Remove(rm) = proposal.proposal()
            && Some(rm.removed()) == sender_leaf
        {
            // A 1:1 conversation the other side left is over: the next message opens a
            // new one. Until then they are no contact (they deleted the chat), and the
            // story channel's upkeep lets them go.
            let direct = self
                .local
                .conversation(&entry.conversation_id)?
                .is_some_and(|c| c.kind == ConversationKind::Direct);
            let who = sender.clone();
            lines.push(if direct {
                SystemEvent::DeletedChat { who }
            } else {
                SystemEvent::Left { who }
            });
            if direct {
                let id = &entry.conversation_id;
                self.local.set_removed_by(id, now_millis(), sender)?;
                let open = self.local.directs_with(sender)?;
                if open.iter().all(|c| c.left) {
                    self.local.remove_contact(sender)?;
                }
            }
        }
        group.store_pending_proposal(provider.storage(), proposal).map_err(ClientError::mls)?;
        Ok(lines)
    }
}
