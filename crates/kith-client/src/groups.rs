//! Group management: add, remove, promote, rename, leave — each a commit the server validates,
//! retried after catching up when another member's commit won the epoch.

use std::collections::BTreeSet;

use kith_proto::*;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;

use crate::client::{Client, conversation_bytes, now_millis, random_hex};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::local::{self, ConversationKind, Message, Unsure};
use crate::mls::{self, Provider};
use crate::settings::{self as epoch_settings, Committed};
use crate::unsure::{Answer, classify, request_json};
use kith_proto::group::kept_admins;
use kith_proto::payload::valid_group_name;
use kith_proto::settings::Settings;

/// Attempts at one change before giving up on a group that keeps moving.
const MAX_COMMIT_ATTEMPTS: usize = 10;

/// A group as this device knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSummary {
    pub id: String,
    pub name: Option<String>,
    /// Member accounts, sorted.
    pub members: Vec<String>,
    pub admins: Vec<String>,
    /// This device left or was removed.
    pub left: bool,
    /// The admin who removed this device, if it did not leave on its own.
    pub removed_by: Option<String>,
    /// The disappearing-messages timer, in seconds, if one is set.
    pub timer_seconds: Option<u64>,
    /// The MLS epoch this device's copy is at: members at one epoch see the same group (its
    /// name, timer, admins and members).
    pub epoch: u64,
}

/// What a name given by the user refers to (see [`Client::resolve_target`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A group, by id.
    Group(String),
    /// A person, by username.
    Person(String),
}

/// What a commit of this device's changes. The rest follows from the group as it is when the
/// commit is built: requests to leave that wait are completed, the admins are kept members
/// (the heir named if none is left; see [`kept_admins`]), and the settings travel with it when
/// they change or the conversation has none in its epoch yet.
#[derive(Default)]
pub(crate) struct Plan {
    pub adds: Vec<KeyPackage>,
    pub removes: Vec<LeafNodeIndex>,
    /// The admins this device, an admin, chooses.
    pub admins: Option<Vec<String>>,
    /// New settings.
    pub settings: Option<Settings>,
    /// Rotate this device's keys even if nothing else requires it.
    pub self_update: bool,
}

/// A commit ready to send: its Welcome if it adds anyone, and the settings record it commits
/// to when they change.
struct Built {
    commit: MlsMessageOut,
    welcome: Option<MlsMessageOut>,
    record: Option<Vec<u8>>,
}

/// The leaves a pending proposal removes (requests to leave this device holds).
fn pending_removals(group: &MlsGroup) -> BTreeSet<LeafNodeIndex> {
    group
        .pending_proposals()
        .filter_map(|p| match p.proposal() {
            Proposal::Remove(r) => Some(r.removed()),
            _ => None,
        })
        .collect()
}

/// Members who are not on their way out (no pending proposal removes them).
fn staying_members(group: &MlsGroup) -> BTreeSet<String> {
    let leaving = pending_removals(group);
    group
        .members()
        .filter(|m| !leaving.contains(&m.index))
        .filter_map(|m| mls::identity(&m.credential))
        .collect()
}

fn members_of(group: &MlsGroup) -> Vec<String> {
    let set: BTreeSet<String> =
        group.members().filter_map(|m| mls::identity(&m.credential)).collect();
    set.into_iter().collect()
}

impl Client {
    fn load_group(&self, provider: &Provider<'_>, id: &str) -> ClientResult<MlsGroup> {
        // This copy may change the group in storage: the kept one would be stale.
        self.forget_cached(Some(id));
        MlsGroup::load(provider.storage(), &GroupId::from_slice(&conversation_bytes(id)?))
            .map_err(ClientError::mls)?
            .ok_or_else(|| ClientError::UnknownConversation(id.to_string()))
    }

    /// Every group this device is or was in, newest first.
    pub fn groups(&self) -> ClientResult<Vec<GroupSummary>> {
        let provider = self.provider();
        local::groups(&self.conn)?
            .into_iter()
            .map(|c| {
                let (members, admins, epoch) = match (c.left, self.load_group(&provider, &c.id)) {
                    (false, Ok(g)) => (
                        members_of(&g),
                        mls::meta_of(&g).map(|m| m.admins).unwrap_or_default(),
                        g.epoch().as_u64(),
                    ),
                    _ => (vec![], vec![], 0),
                };
                let removed_by = if c.left { local::removed_by(&self.conn, &c.id)? } else { None };
                Ok(GroupSummary {
                    removed_by,
                    id: c.id,
                    name: c.name,
                    members,
                    admins,
                    left: c.left,
                    timer_seconds: c.timer_seconds,
                    epoch,
                })
            })
            .collect()
    }

    /// One group, by id or name.
    pub fn group(&self, group: &str) -> ClientResult<GroupSummary> {
        let id = self.resolve_group(group)?;
        self.groups()?
            .into_iter()
            .find(|g| g.id == id)
            .ok_or_else(|| ClientError::UnknownConversation(group.to_string()))
    }

    /// A group's id from its id or its (unique) name.
    pub fn resolve_group(&self, group: &str) -> ClientResult<String> {
        let groups = local::groups(&self.conn)?;
        if let Some(g) = groups.iter().find(|g| g.id == group) {
            return Ok(g.id.clone());
        }
        let named: Vec<_> =
            groups.iter().filter(|g| !g.left && g.name.as_deref() == Some(group)).collect();
        match named.as_slice() {
            [one] => Ok(one.id.clone()),
            [] if let Some(g) =
                groups.iter().find(|g| g.left && g.name.as_deref() == Some(group)) =>
            {
                let why = match local::removed_by(&self.conn, &g.id)? {
                    Some(by) => format!("{by} removed you from the group {group:?}"),
                    None => format!("you are no longer in the group {group:?}"),
                };
                Err(ClientError::refused(Refusal::NotInConversation, why))
            }
            [] => Err(ClientError::UnknownConversation(format!(
                "{group:?} (no group of yours has that id or name; see `kith group list`)"
            ))),
            _ => Err(ClientError::refused(
                Refusal::Ambiguous,
                format!("several of your groups are named {group:?}; use the group's id"),
            )),
        }
    }

    /// What a name the user gave means, the same way in every command that takes a person or
    /// a group: a group's id; `@name` for a person; a group's name, unless several groups have
    /// it, or it is also the name of someone this device talks to (ambiguity is an error, never
    /// a guess); otherwise a person.
    pub fn resolve_target(&self, name: &str) -> ClientResult<Target> {
        let person = |u: &str| {
            validate_username(u).map(|()| Target::Person(u.to_string())).map_err(|_| {
                ClientError::refused(
                    Refusal::NoSuchConversation,
                    format!("{name:?} is neither a group nor a user"),
                )
            })
        };
        if let Some(user) = name.strip_prefix('@') {
            return person(user);
        }
        match self.resolve_group(name) {
            Ok(id) if id == name => Ok(Target::Group(id)),
            Ok(id) => {
                let talks_to = validate_username(name).is_ok()
                    && (local::direct_with(&self.conn, name)?.is_some()
                        || local::is_contact(&self.conn, name)?);
                if talks_to {
                    return Err(ClientError::refused(
                        Refusal::Ambiguous,
                        format!(
                            "{name:?} is both a group and a person you talk to; write @{name} for the \
                         person, or the group's id (see `kith group list`)"
                        ),
                    ));
                }
                Ok(Target::Group(id))
            }
            Err(e @ ClientError::Refused { .. }) => Err(e),
            Err(_) => person(name),
        }
    }

    /// The group's current members and admins, for local checks.
    pub(crate) fn current(&self, id: &str) -> ClientResult<(Vec<String>, GroupMeta, usize)> {
        if local::conversation(&self.conn, id)?.is_some_and(|c| c.left) {
            return Err(self.no_longer_in(id)?);
        }
        let provider = self.provider();
        let group = self.load_group(&provider, id)?;
        let meta = mls::meta_of(&group)
            .ok_or_else(|| ClientError::Mls("the group lacks the Kith extension".into()))?;
        Ok((members_of(&group), meta, group.members().count()))
    }

    fn require_admin(&self, meta: &GroupMeta, what: &str) -> ClientResult<()> {
        let me = &self.me()?.username;
        if self.local_checks && !meta.is_admin(me) {
            return Err(ClientError::NotAdmin(what.to_string()));
        }
        Ok(())
    }

    /// A line in the group's history about this device's own action.
    pub(crate) fn note(&self, id: &str, text: String) -> ClientResult<()> {
        let timer = local::conversation(&self.conn, id)?.and_then(|c| c.timer_seconds);
        self.note_until(id, text, timer)
    }

    /// A line in the group's history that stays while the messages around it disappear (the
    /// one saying the timer changed), as on the other members' devices.
    pub(crate) fn note_lasting(&self, id: &str, text: String) -> ClientResult<()> {
        self.note_until(id, text, None)
    }

    fn note_until(&self, id: &str, text: String, timer: Option<u64>) -> ClientResult<()> {
        let now = now_millis();
        local::insert_message(
            &self.conn,
            &Message {
                id: format!("sys-{}", random_hex(8)?),
                conversation: id.to_string(),
                kind: ConversationKind::System,
                from: self.me()?.username.clone(),
                text,
                sent_at: now,
                received_at: now,
                outgoing: true,
                expires_at: timer.map(|t| now + t * 1000),
                from_business: false,
                verified: false,
                state: crate::local::Delivery::Sent,
                failure: None,
            },
        )?;
        Ok(())
    }

    /// The member accounts of any conversation this device is in.
    pub(crate) fn conversation_members(&self, id: &str) -> ClientResult<Vec<String>> {
        Ok(self.current(id)?.0)
    }

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
            self.note(&id, format!("{p}"))?;
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
        claims: crate::convo::Claims,
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
        claimed: Vec<crate::convo::Claimed>,
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
            self.note(&id, format!("{me} added {}", users.join(", ")))?;
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
            self.note(&id, format!("{me} removed {user}"))?;
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
        self.note(&id, format!("{me} made {user} an admin"))
    }

    /// Changes the admins with `change`, applied to the list as the group holds it when the
    /// commit is built — so again after every catch-up, and a promotion another admin made
    /// meanwhile is kept. (An admin is a member who stays: see [`Plan`].)
    async fn change_admins<F>(&mut self, id: &str, change: F) -> ClientResult<()>
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
        let c = local::conversation(&self.conn, id)?
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
        if local::conversation(&self.conn, &id)?.and_then(|c| c.name).as_deref() == Some(name) {
            return Err(ClientError::refused(
                Refusal::AlreadyDone,
                format!("the group is already named {name}"),
            ));
        }
        self.change_settings(&id, |s| s.name = Some(name.to_string())).await?;
        let me = self.me()?.username.clone();
        self.note(&id, format!("{me} named the group \"{name}\""))
    }

    /// Leaves a group. The server stops delivering to this device at once; an admin commits
    /// the removal. The last admin first hands the role to another member.
    pub async fn group_leave(&mut self, group: &str) -> ClientResult<()> {
        let id = self.resolve_group(group)?;
        self.leave_conversation(&id).await
    }

    pub(crate) async fn leave_conversation(&mut self, id: &str) -> ClientResult<()> {
        let id = id.to_string();
        // A request to leave (or a commit) whose outcome was unknown goes first.
        self.settle_unsure(&id).await?;
        if local::conversation(&self.conn, &id)?.is_some_and(|c| c.left) {
            return Ok(());
        }
        let (_, meta, _) = self.current(&id)?;
        let me = self.me()?.username.clone();
        if meta.kind == GroupType::Group && meta.is_admin(&me) {
            self.hand_over_admin(&id, &me).await?;
        }
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let request = {
                let provider = self.provider();
                let signer = mls::load_signer(&provider, &self.me()?.signature_key)?;
                let mut group = self.load_group(&provider, &id)?;
                let proposal = group.leave_group(&provider, &signer).map_err(ClientError::mls)?;
                HandshakeRequest {
                    message: B64(proposal.tls_serialize_detached().map_err(ClientError::mls)?),
                    welcome: None,
                }
            };
            match classify(self.api()?.handshake(&id, &request).await) {
                Answer::Done(_) => return self.left(&id),
                Answer::Unknown(e) => {
                    local::keep_unsure(&self.conn, &id, Unsure::Leave, &request_json(&request)?)?;
                    return Err(e);
                }
                Answer::Refused(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    self.sync_inner().await?;
                }
                Answer::Refused(e) => return Err(e),
            }
        }
        Err(ClientError::Protocol("the group kept changing; try again".into()))
    }

    /// This device's request to leave was applied.
    pub(crate) fn left(&mut self, id: &str) -> ClientResult<()> {
        let group =
            local::conversation(&self.conn, id)?.is_some_and(|c| c.kind == ConversationKind::Group);
        if group {
            self.note(id, "you left the group".into())?;
        }
        local::set_left(&self.conn, id, now_millis())?;
        // The group's state stays: messages queued for this device before the leave took
        // effect still arrive and must be readable (a chat's deletion drops the state itself).
        Ok(())
    }

    /// Before an admin leaves: it stops being one, and if it was the last, the role goes to the
    /// first other member by name who is staying. Decided on the group as the commit is built
    /// (so again after every catch-up): a member whose leave is pending is no heir.
    async fn hand_over_admin(&mut self, id: &str, me: &str) -> ClientResult<()> {
        self.change_admins(id, |group, admins| {
            let mut staying = staying_members(group);
            staying.remove(me);
            admins.retain(|a| staying.contains(a));
            if admins.is_empty()
                && let Some(heir) = staying.first()
            {
                admins.push(heir.clone());
            }
        })
        .await
    }

    /// Brings this device's copy of the group up to date before an admin acts on it: fetches
    /// what waits and completes pending leaves, so the action is decided on the group as it is.
    async fn catch_up_in(&mut self, id: &str) -> ClientResult<()> {
        self.sync_inner().await?;
        self.commit_pending_in(id).await
    }

    /// Commits the requests to leave this device holds for the conversation, if any: MLS
    /// allows no message while a proposal is pending, and any member may complete another's
    /// leave — so a member's message is not held up until an admin syncs.
    pub(crate) async fn commit_pending_in(&mut self, id: &str) -> ClientResult<()> {
        let pending = {
            let provider = self.provider();
            self.load_group(&provider, id)?.pending_proposals().next().is_some()
        };
        if !pending {
            return Ok(());
        }
        // The plan is empty: the commit completes what waits (and names an heir if need be).
        self.commit_change(id, |_, _| Ok(Some(Plan::default()))).await
    }

    /// Completes the pending requests to leave in every group this device is in. Any member
    /// does, not only an admin: the admin may be one who never joined (it dropped the
    /// invitation), and a leave must never wait on it. When several members try at once, the
    /// server takes one commit and the others find the leave done after catching up.
    pub(crate) async fn commit_pending_leaves(&mut self) -> ClientResult<()> {
        let groups: Vec<String> =
            local::groups(&self.conn)?.into_iter().filter(|c| !c.left).map(|c| c.id).collect();
        for id in groups {
            self.commit_pending_in(&id).await?;
        }
        Ok(())
    }

    /// Builds a commit of what `plan` says (see [`Plan`]; `None`: nothing to do), sends it,
    /// and merges it once the server accepted it. When another commit won the epoch
    /// (`stale_epoch`), it drops its own, catches up and plans again.
    pub(crate) async fn commit_change<F>(&mut self, id: &str, mut plan: F) -> ClientResult<()>
    where
        F: FnMut(&MlsGroup, &Settings) -> ClientResult<Option<Plan>>,
    {
        self.settle_unsure(id).await?;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let request = {
                let provider = self.provider();
                let signer = mls::load_signer(&provider, &self.me()?.signature_key)?;
                let mut group = self.load_group(&provider, id)?;
                let Some(todo) = plan(&group, &self.settings_of(id)?)? else { return Ok(()) };
                let Some(built) = self.build_commit(id, &mut group, &provider, &signer, todo)?
                else {
                    return Ok(());
                };
                local::stage_settings(&self.conn, id, built.record.as_deref())?;
                let ser = |m: MlsMessageOut| m.tls_serialize_detached().map_err(ClientError::mls);
                HandshakeRequest {
                    message: B64(ser(built.commit)?),
                    welcome: built.welcome.map(ser).transpose()?.map(B64),
                }
            };
            match classify(self.api()?.handshake(id, &request).await) {
                Answer::Done(_) => return self.settle_commit(id, true),
                // Applied or not, nobody can say now: kept, staged, for the next attempt.
                Answer::Unknown(e) => {
                    local::keep_unsure(&self.conn, id, Unsure::Commit, &request_json(&request)?)?;
                    return Err(e);
                }
                Answer::Refused(e) => {
                    self.settle_commit(id, false)?;
                    if e.code() == Some(ErrorCode::NotAMember) {
                        // Removed while this device was offline: it learns by whom.
                        self.sync_inner().await?;
                        if local::conversation(&self.conn, id)?.is_some_and(|c| c.left) {
                            return Err(self.no_longer_in(id)?);
                        }
                    }
                    if e.code() != Some(ErrorCode::StaleEpoch) {
                        return Err(e);
                    }
                }
            }
            self.sync_inner().await?;
            self.complete_unseen_leaves(id).await?;
        }
        Err(ClientError::Protocol("the group kept changing; try again".into()))
    }

    /// This device's staged commit was applied by the server (merged here, with the settings
    /// it carried) or refused (dropped).
    pub(crate) fn settle_commit(&self, id: &str, applied: bool) -> ClientResult<()> {
        let provider = self.provider();
        let mut group = self.load_group(&provider, id)?;
        let record = local::take_staged_settings(&self.conn, id)?;
        if !applied {
            return group.clear_pending_commit(provider.storage()).map_err(ClientError::mls);
        }
        group.merge_pending_commit(&provider).map_err(ClientError::mls)?;
        let epoch = group.epoch().as_u64();
        match record.as_deref().and_then(Settings::from_record) {
            Some(settings) => {
                local::set_settings(&self.conn, id, epoch, &settings, record.as_deref())?
            }
            None => {
                let timer = self.settings_of(id)?.timer;
                local::note_epoch_timer(&self.conn, id, epoch, timer)?
            }
        }
        Ok(())
    }

    /// The commit `plan` asks for on `group` (see [`Plan`]), staged; `None` when it changes
    /// nothing.
    fn build_commit(
        &self,
        id: &str,
        group: &mut MlsGroup,
        provider: &Provider<'_>,
        signer: &SignatureKeyPair,
        plan: Plan,
    ) -> ClientResult<Option<Built>> {
        let me = self.me()?.username.clone();
        let before = mls::meta_of(group)
            .ok_or_else(|| ClientError::Mls("the group lacks the Kith extension".into()))?;
        let mut removed = pending_removals(group);
        removed.extend(plan.removes.iter().copied());
        let mut members_after: BTreeSet<String> = group
            .members()
            .filter(|m| !removed.contains(&m.index))
            .filter_map(|m| mls::identity(&m.credential))
            .collect();
        members_after
            .extend(plan.adds.iter().filter_map(|kp| mls::identity(kp.leaf_node().credential())));
        let mut after = before.clone();
        if before.kind == GroupType::Group {
            let chosen = plan.admins.as_ref().unwrap_or(&before.admins);
            after.admins = kept_admins(chosen, &members_after);
        }
        // The settings: new ones; or, from whoever may set them, those this device holds, when
        // the context has none yet (a conversation from before settings were epoch state) or
        // joiners need a record this device does not have.
        let may_set = match before.kind {
            GroupType::Direct => true,
            GroupType::Group => before.is_admin(&me),
            GroupType::Story => false,
        };
        let known = local::settings_record(&self.conn, id)?.filter(|r| {
            before.settings.as_deref() == Some(kith_proto::settings::digest(r).as_str())
        });
        let resettle = before.settings.is_none() || (!plan.adds.is_empty() && known.is_none());
        let new = match plan.settings {
            Some(s) => Some(s),
            None if may_set && resettle => Some(self.settings_of(id)?),
            None => None,
        };
        let committed = new.map(|s| Committed::new(provider, s)).transpose()?;
        if let Some(c) = &committed {
            after.settings = Some(c.digest.clone());
        }
        let for_joiners = committed.as_ref().map(|c| c.record.clone()).or(known);
        let change_context = after != before;
        let nothing = !change_context
            && plan.adds.is_empty()
            && plan.removes.is_empty()
            && !plan.self_update
            && group.pending_proposals().next().is_none();
        if nothing {
            return Ok(None);
        }
        if let Some(c) = &committed {
            let sealed = epoch_settings::seal(provider, group, &c.record)?;
            group.set_aad(sealed);
        }
        let adds = !plan.adds.is_empty();
        let mut builder = group
            .commit_builder()
            .propose_adds(plan.adds)
            .propose_removals(plan.removes)
            .force_self_update(plan.self_update);
        if change_context {
            builder = builder
                .propose_group_context_extensions(mls::meta_extensions(&after)?)
                .map_err(ClientError::mls)?;
        }
        let mut loaded = builder.load_psks(provider.storage()).map_err(ClientError::mls)?;
        if adds && let Some(record) = &for_joiners {
            loaded = loaded
                .create_group_info_with_extensions([epoch_settings::welcome_extension(record)])
                .map_err(ClientError::mls)?;
        }
        let bundle = loaded
            .build(provider.rand(), provider.crypto(), signer, |_| true)
            .map_err(ClientError::mls)?
            .stage_commit(provider)
            .map_err(ClientError::mls)?;
        let (commit, welcome, _) = bundle.into_messages();
        Ok(Some(Built { commit, welcome, record: committed.map(|c| c.record) }))
    }

    /// A commit is refused until it includes every pending request to leave. If the server
    /// holds one this device never got (its proposal did not verify here, say), an admin
    /// completes it by removing the member outright — so nobody can freeze a group with a
    /// request only the server kept.
    async fn complete_unseen_leaves(&mut self, id: &str) -> ClientResult<()> {
        let pending = self.api()?.pending_leaves(id).await?.leaves;
        if pending.is_empty() {
            return Ok(());
        }
        let me = self.me()?.username.clone();
        let unseen: Vec<LeafNodeIndex> = {
            let provider = self.provider();
            let group = self.load_group(&provider, id)?;
            let seen = pending_removals(&group);
            let admin = mls::meta_of(&group).is_some_and(|m| m.is_admin(&me));
            let unseen: Vec<LeafNodeIndex> = pending
                .iter()
                .map(|p| LeafNodeIndex::new(p.leaf))
                .filter(|leaf| !seen.contains(leaf))
                // The server's word that someone asked to leave is checked against the tree.
                .filter(|leaf| {
                    group.member(*leaf).and_then(mls::identity).is_some_and(|u| {
                        pending.iter().any(|p| p.leaf == leaf.u32() && p.username == u)
                    })
                })
                .collect();
            if !unseen.is_empty() && !admin {
                return Err(ClientError::refused(
                    Refusal::GroupRules,
                    "a member's request to leave is pending; an admin of the group must \
                     complete it first",
                ));
            }
            unseen
        };
        if unseen.is_empty() {
            return Ok(());
        }
        // Another commit may win meanwhile: the caller's next attempt catches up.
        let plan = |_: &MlsGroup, _: &Settings| {
            Ok(Some(Plan { removes: unseen.clone(), ..Plan::default() }))
        };
        match Box::pin(self.commit_change(id, plan)).await {
            Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => Ok(()),
            other => other,
        }
    }
}

/// Whether adding one member can be why a change failed: OpenMLS refusing to build it (a key
/// that clashes with another member's), or the server refusing its tree or its audience (a
/// contact who is no longer in a conversation with this account, perhaps by a leave only the
/// server took).
pub(crate) fn one_member_may_cause(e: &ClientError) -> bool {
    matches!(e, ClientError::Mls(_))
        || matches!(e.code(), Some(ErrorCode::InvalidMessage | ErrorCode::Forbidden))
}
