//! Group management: add, remove, promote, rename, leave — each a commit the server validates,
//! retried after catching up when another member's commit won the epoch.

mod commit;
mod members;

use std::collections::BTreeSet;

use kith_proto::*;
use openmls::prelude::*;

pub(crate) use commit::{Plan, one_member_may_cause};

use crate::client::{Client, conversation_bytes, now_millis, random_hex};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::events::SystemEvent;
use crate::local::{ConversationKind, LocalStore, Message};
use crate::mls::{self, Provider};

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

/// Every group this device is or was in, newest first (see [`Client::groups`]).
pub(crate) fn summaries(
    local: &LocalStore,
    provider: &Provider<'_>,
) -> ClientResult<Vec<GroupSummary>> {
    local
        .groups()?
        .into_iter()
        .map(|c| {
            let id = GroupId::from_slice(&conversation_bytes(&c.id)?);
            let loaded = MlsGroup::load(provider.storage(), &id).ok().flatten();
            let (members, admins, epoch) = match (c.left, loaded) {
                (false, Some(g)) => (
                    members_of(&g),
                    mls::meta_of(&g).map(|m| m.admins).unwrap_or_default(),
                    g.epoch().as_u64(),
                ),
                _ => (vec![], vec![], 0),
            };
            let removed_by = if c.left { local.removed_by(&c.id)? } else { None };
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

/// One group, by id or name (see [`Client::group`]).
pub(crate) fn summary(
    local: &LocalStore,
    provider: &Provider<'_>,
    group: &str,
) -> ClientResult<GroupSummary> {
    let id = resolve(local, group)?;
    summaries(local, provider)?
        .into_iter()
        .find(|g| g.id == id)
        .ok_or_else(|| ClientError::UnknownConversation(group.to_string()))
}

/// A group's id from its id or its (unique) name (see [`Client::resolve_group`]).
fn resolve(local: &LocalStore, group: &str) -> ClientResult<String> {
    let groups = local.groups()?;
    if let Some(g) = groups.iter().find(|g| g.id == group) {
        return Ok(g.id.clone());
    }
    let named: Vec<_> =
        groups.iter().filter(|g| !g.left && g.name.as_deref() == Some(group)).collect();
    match named.as_slice() {
        [one] => Ok(one.id.clone()),
        [] if let Some(g) = groups.iter().find(|g| g.left && g.name.as_deref() == Some(group)) => {
            let why = match local.removed_by(&g.id)? {
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

impl Client {
    /// Every group this device is or was in, newest first.
    pub fn groups(&self) -> ClientResult<Vec<GroupSummary>> {
        summaries(&self.local, &self.provider())
    }

    /// One group, by id or name.
    pub fn group(&self, group: &str) -> ClientResult<GroupSummary> {
        summary(&self.local, &self.provider(), group)
    }

    /// A group's id from its id or its (unique) name.
    pub fn resolve_group(&self, group: &str) -> ClientResult<String> {
        resolve(&self.local, group)
    }

    /// A group loaded to be changed (the kept copy is dropped: this one becomes current).
    pub(crate) fn load_group(&self, provider: &Provider<'_>, id: &str) -> ClientResult<MlsGroup> {
        self.forget_cached(Some(id));
        MlsGroup::load(provider.storage(), &GroupId::from_slice(&conversation_bytes(id)?))
            .map_err(ClientError::mls)?
            .ok_or_else(|| ClientError::UnknownConversation(id.to_string()))
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
                    && (self.local.direct_with(name)?.is_some() || self.local.is_contact(name)?);
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
        if self.local.conversation(id)?.is_some_and(|c| c.left) {
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
    pub(crate) fn note(&self, id: &str, event: SystemEvent) -> ClientResult<()> {
        let timer = self.local.conversation(id)?.and_then(|c| c.timer_seconds);
        self.note_until(id, event, timer)
    }

    /// A line about someone else that this device learned on its own (not from a message):
    /// handed to the caller with the next sync's messages, like a received one.
    pub(crate) fn note_received(
        &self,
        id: &str,
        about: &str,
        event: SystemEvent,
    ) -> ClientResult<()> {
        let timer = self.local.conversation(id)?.and_then(|c| c.timer_seconds);
        self.local.insert_received(&self.system_line(id, event, Some(about), timer)?)?;
        Ok(())
    }

    /// A line in the group's history that stays while the messages around it disappear (the
    /// one saying the timer changed), as on the other members' devices.
    pub(crate) fn note_lasting(&self, id: &str, event: SystemEvent) -> ClientResult<()> {
        self.note_until(id, event, None)
    }

    fn note_until(&self, id: &str, event: SystemEvent, timer: Option<u64>) -> ClientResult<()> {
        self.local.insert_message(&self.system_line(id, event, None, timer)?)?;
        Ok(())
    }

    /// A system line of conversation `id`: this device's own (`about` is `None`), or about
    /// another account.
    fn system_line(
        &self,
        id: &str,
        event: SystemEvent,
        about: Option<&str>,
        timer: Option<u64>,
    ) -> ClientResult<Message> {
        let now = now_millis();
        let me = self.me()?.username.clone();
        Ok(Message {
            id: format!("sys-{}", random_hex(8)?),
            conversation: id.to_string(),
            kind: ConversationKind::System,
            text: event.text(&me),
            from: about.map_or(me, str::to_string),
            sent_at: now,
            received_at: now,
            outgoing: about.is_none(),
            expires_at: timer.map(|t| now + t * 1000),
            from_business: false,
            verified: false,
            state: crate::local::Delivery::Sent,
            failure: None,
            event: Some(event),
        })
    }

    /// The member accounts of any conversation this device is in.
    pub(crate) fn conversation_members(&self, id: &str) -> ClientResult<Vec<String>> {
        Ok(self.current(id)?.0)
    }
}
