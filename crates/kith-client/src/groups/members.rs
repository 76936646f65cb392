//! Changing who is in a group and how it is set: add, remove, promote, rename, a timer, fresh
//! keys. Each is a [`Plan`] that `commit` turns into one commit.

use kith_proto::*;
use openmls::prelude::*;

use super::staying_members;
use super::{Plan, one_member_may_cause};
use crate::client::Client;
use crate::error::{ClientError, ClientResult, Refusal};
use crate::events::SystemEvent;
use crate::mls::{self};
use kith_proto::payload::valid_group_name;
use kith_proto::settings::Settings;

impl Client {
    /// Adds users (all their devices) to a group. Admins only.
    pub async fn group_add(&mut self, group: &str, users: &[String]) -> ClientResult<()> {
        let id = self.resolve_group(group)?;
        // Another admin may have added them already, or they may have left (adding back
        // someone who left completes their leave first).
        self.catch_up_in(&id).await?;
        self.add_members_to(&id, users).await
    }

    pub(crate) async fn add_members_to(&mut self, id: &str, users: &[String]) -> ClientResult<()> {
        let id = id.to_string();
        let (mut members, _, _) = self.current(&id)?;
        if users.iter().any(|u| members.contains(u)) {
            // Perhaps they left and this device has not completed it yet: catch up first, so
            // adding back someone who left works.
            self.catch_up_in(&id).await?;
            members = self.current(&id)?.0;
        }
        let (_, meta, devices) = self.current(&id)?;
        self.require_admin(&meta, "add members")?;
        for u in users {
            validate_username(u)
                .map_err(|e| ClientError::refused(Refusal::BadUsername, format!("{u:?}: {e}")))?;
            if members.contains(u) {
                return Err(ClientError::refused(
                    Refusal::AlreadyDone,
                    format!("{u} is already in the group"),
                ));
            }
        }
        self.check_new_members(users).await?;
        let mut claims = self.claim_each(users).await?;
        if claims.claimed.is_empty()
            && let Some((_, first)) = claims.refused.drain(..).next()
        {
            return Err(first);
        }
        self.add_claimed(&id, &claims.users(), devices, meta, claims.key_packages()).await?;
        // Those who could not be added are said in the group's history.
        for p in claims.problems(&id) {
            self.note(&id, SystemEvent::Problem { text: p.to_string() })?;
        }
        Ok(())
    }

    /// Adds what `claims` got in one commit (the story channel's audience); when that fails for
    /// a reason one member can cause ([`one_member_may_cause`]), adds each user alone with the
    /// KeyPackages already claimed, so one contact keeps no one else out; who still cannot be
    /// added is reported and backed off (not claimed again for a day). Returns whether anyone
    /// was added.
    pub(crate) async fn add_each_if_need_be(
        &mut self,
        id: &str,
        claims: crate::claims::Claims,
        report: &mut crate::report::SyncReport,
    ) -> ClientResult<bool> {
        if claims.claimed.is_empty() {
            return Ok(false);
        }
        let (_, meta, devices) = self.current(id)?;
        let all = claims.key_packages();
        let err = match self.add_claimed(id, &claims.users(), devices, meta, all).await {
            Ok(()) => return Ok(true),
            Err(e) if one_member_may_cause(&e) => e,
            Err(e) => return Err(e),
        };
        tracing::info!(error = %err, "a batch of additions failed; adding one by one");
        let mut added = false;
        let mut refused_audience = false;
        for (user, kps) in claims.claimed {
            let (_, meta, devices) = self.current(id)?;
            match self.add_claimed(id, std::slice::from_ref(&user), devices, meta, kps).await {
                Ok(()) => added = true,
                Err(e) if !one_member_may_cause(&e) => return Err(e),
                Err(e) => {
                    refused_audience |= e.code() == Some(ErrorCode::Forbidden);
                    self.back_off_add(&user)?;
                    report.problems.push(crate::report::Problem {
                        kind: crate::report::ProblemKind::NotAdded,
                        conversation: id.to_string(),
                        user: Some(user),
                        detail: e.to_string(),
                    });
                }
            }
        }
        // Refused as no longer in a conversation with this account: most likely they deleted
        // the chat and this device has not heard yet. Catching up ends the contact here too.
        if refused_audience {
            self.sync_inner().await?;
        }
        Ok(added)
    }

    /// Commits the addition of `users`, whose KeyPackages were `claimed`, to a conversation of
    /// `devices` devices.
    pub(crate) async fn add_claimed(
        &mut self,
        id: &str,
        users: &[String],
        devices: usize,
        meta: GroupMeta,
        claimed: Vec<crate::claims::Claimed>,
    ) -> ClientResult<()> {
        let id = id.to_string();
        if self.local_checks {
            self.check_size(devices + claimed.len()).await?;
        }
        let kps: Vec<KeyPackage> = claimed.into_iter().map(|c| c.key_package).collect();
        // The new members learn the group's settings from the Welcome itself. Planned again
        // after every catch-up: someone another admin added meanwhile is not added twice.
        self.commit_change(&id, |group, _| {
            let staying = staying_members(group);
            let adds: Vec<KeyPackage> = kps
                .iter()
                .filter(|kp| {
                    mls::identity(kp.leaf_node().credential()).is_none_or(|u| !staying.contains(&u))
                })
                .cloned()
                .collect();
            if adds.is_empty() {
                let (who, are) = match users {
                    [one] => (one.clone(), "is"),
                    more => (more.join(", "), "are"),
                };
                return Err(ClientError::refused(
                    Refusal::AlreadyDone,
                    format!("{who} {are} already in the group"),
                ));
            }
            Ok(Some(Plan { adds, ..Plan::default() }))
        })
        .await?;
        let me = self.me()?.username.clone();
        if meta.kind == GroupType::Group {
            self.note(&id, SystemEvent::Added { by: me.clone(), who: users.to_vec() })?;
        }
        Ok(())
    }

    /// Removes a user (all their devices) from a group. Admins only.
    pub async fn group_remove(&mut self, group: &str, user: &str) -> ClientResult<()> {
        let id = self.resolve_group(group)?;
        // Another admin may have removed them already.
        self.catch_up_in(&id).await?;
        self.remove_member_from(&id, user).await
    }

    pub(crate) async fn remove_member_from(&mut self, id: &str, user: &str) -> ClientResult<()> {
        let id = id.to_string();
        let (members, meta, _) = self.current(&id)?;
        self.require_admin(&meta, "remove members")?;
        let me = self.me()?.username.clone();
        if user == me {
            return Err(ClientError::refused(
                Refusal::Yourself,
                "to leave a group, use `group leave`",
            ));
        }
        if !members.iter().any(|m| m == user) {
            return Err(ClientError::refused(
                Refusal::NotMember,
                format!("{user} is not in the group"),
            ));
        }
        // One commit removes them and, if they were an admin, leaves them out of the admins.
        self.commit_change(&id, |group, _| {
            let removes: Vec<LeafNodeIndex> = group
                .members()
                .filter(|m| mls::identity(&m.credential).as_deref() == Some(user))
                .map(|m| m.index)
                .collect();
            if removes.is_empty() {
                return Ok(None);
            }
            Ok(Some(Plan { removes, ..Plan::default() }))
        })
        .await?;
        if meta.kind == GroupType::Group {
            self.note(&id, SystemEvent::Removed { by: me.clone(), who: user.to_string() })?;
        }
        Ok(())
    }

    /// Makes a member an admin. Admins only.
    pub async fn group_promote(&mut self, group: &str, user: &str) -> ClientResult<()> {
        let id = self.resolve_group(group)?;
        // They may have left, or been made an admin already.
        self.catch_up_in(&id).await?;
        let (members, meta, _) = self.current(&id)?;
        self.require_admin(&meta, "promote members")?;
        if !members.iter().any(|m| m == user) {
            return Err(ClientError::refused(
                Refusal::NotMember,
                format!("{user} is not in the group"),
            ));
        }
        if meta.is_admin(user) {
            return Err(ClientError::refused(
                Refusal::AlreadyDone,
                format!("{user} is already an admin"),
            ));
        }
        self.change_admins(&id, |_, admins| {
            if !admins.iter().any(|a| a == user) {
                admins.push(user.to_string());
            }
        })
        .await?;
        // Only a member who stays is made one (see `change_admins`): one who left meanwhile
        // is not.
        if !self.current(&id)?.1.is_admin(user) {
            return Err(ClientError::refused(
                Refusal::NotMember,
                format!("{user} has left the group"),
            ));
        }
        let me = self.me()?.username.clone();
        self.note(&id, SystemEvent::Promoted { by: me.clone(), who: user.to_string() })
    }

    /// Changes the admins with `change`, applied to the list as the group holds it when the
    /// commit is built — so again after every catch-up, and a promotion another admin made
    /// meanwhile is kept. (An admin is a member who stays: see [`Plan`].)
    pub(super) async fn change_admins<F>(&mut self, id: &str, change: F) -> ClientResult<()>
    where
        F: Fn(&MlsGroup, &mut Vec<String>),
    {
        self.commit_change(id, |group, _| {
            let meta = mls::meta_of(group)
                .ok_or_else(|| ClientError::Mls("the group lacks the Kith extension".into()))?;
            let mut admins = meta.admins.clone();
            change(group, &mut admins);
            Ok(Some(Plan { admins: Some(admins), ..Plan::default() }))
        })
        .await
    }

    /// Changes a conversation's settings with `change` (applied to them as they are when the
    /// commit is built): a commit, so every member has them from the same epoch on.
    pub(crate) async fn change_settings<F>(&mut self, id: &str, change: F) -> ClientResult<()>
    where
        F: Fn(&mut Settings),
    {
        self.commit_change(id, |_, held| {
            let mut settings = held.clone();
            change(&mut settings);
            Ok(Some(Plan { settings: Some(settings), ..Plan::default() }))
        })
        .await
    }

    /// The conversation's settings as this device holds them.
    pub(crate) fn settings_of(&self, id: &str) -> ClientResult<Settings> {
        let c = self
            .local
            .conversation(id)?
            .ok_or_else(|| ClientError::UnknownConversation(id.to_string()))?;
        Ok(Settings { name: c.name, timer: c.timer_seconds })
    }

    /// Rotates this device's keys in a conversation (an MLS update commit): messages after it
    /// are safe even if this device's earlier keys leak (post-compromise security).
    pub async fn update_keys(&mut self, conversation: &str) -> ClientResult<()> {
        let id = match self.resolve_group(conversation) {
            Ok(id) => id,
            Err(_) => conversation.to_string(),
        };
        self.commit_change(&id, |_, _| Ok(Some(Plan { self_update: true, ..Plan::default() })))
            .await
    }

    /// Renames a group: a commit carrying the name sealed for the members. Admins only.
    pub async fn group_rename(&mut self, group: &str, name: &str) -> ClientResult<()> {
        let id = self.resolve_group(group)?;
        // On the name as it is now: another admin may have set it already.
        self.sync_inner().await?;
        let (_, meta, _) = self.current(&id)?;
        self.require_admin(&meta, "rename the group")?;
        if !valid_group_name(name) {
            return Err(ClientError::refused(
                Refusal::BadArgument,
                "a group name has 1 to 128 characters and no control characters",
            ));
        }
        if self.local.conversation(&id)?.and_then(|c| c.name).as_deref() == Some(name) {
            return Err(ClientError::refused(
                Refusal::AlreadyDone,
                format!("the group is already named {name}"),
            ));
        }
        self.change_settings(&id, |s| s.name = Some(name.to_string())).await?;
        let me = self.me()?.username.clone();
        self.note(&id, SystemEvent::Named { by: me.clone(), name: name.to_string() })
    }
}
