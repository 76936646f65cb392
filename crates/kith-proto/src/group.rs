//! The Kith extension carried in every conversation's MLS group context.
//!
//! It holds what both the clients and the server must agree on and enforce: whether the
//! conversation is a 1:1 or a group, and who its admins are. The group context is signed and
//! changes only by commit, so the admin list cannot be forged; and since the server follows each
//! group's public state, it is visible to the server — which is why nothing private (a group's
//! name, its timer) goes here in the clear: only a salted digest of them (see [`crate::settings`]).

use serde::{Deserialize, Serialize};

/// The MLS extension type of [`GroupMeta`] (from the private-use range).
pub const GROUP_META_EXTENSION: u16 = 0xF4B1;

/// Most admins a group lists.
pub const MAX_ADMINS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupType {
    /// A 1:1 conversation.
    Direct,
    /// A group with a name and admins.
    Group,
    /// A user's story channel: the owner (its only admin) and their contacts; only the owner
    /// posts, and the server deletes each story at its expiry.
    Story,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMeta {
    #[serde(rename = "type")]
    pub kind: GroupType,
    /// Usernames of the admins: they may add and remove members and change the admin list.
    pub admins: Vec<String>,
    /// The digest of the conversation's private settings ([`crate::settings::digest`]), since
    /// its creation or its first commit after settings became epoch state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
}

impl GroupMeta {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Refuses anything but a well-formed extension with valid, distinct admin usernames.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let meta: GroupMeta = serde_json::from_slice(bytes).ok()?;
        let mut seen = std::collections::BTreeSet::new();
        let valid = meta.admins.len() <= MAX_ADMINS
            && meta
                .admins
                .iter()
                .all(|a| crate::validate_username(a).is_ok() && seen.insert(a.as_str()))
            && meta.settings.as_deref().is_none_or(crate::settings::valid_digest);
        valid.then_some(meta)
    }

    pub fn is_admin(&self, username: &str) -> bool {
        self.admins.iter().any(|a| a == username)
    }
}

/// A commit's effect on a conversation, as the change rule ([`check_change`]) sees it.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    /// The Kith extension in the context the commit was made in, and in the one it makes.
    pub before: &'a GroupMeta,
    pub after: &'a GroupMeta,
    /// The account that signed the commit.
    pub committer: &'a str,
    /// Whether it adds a device of another account than the committer's, and whether it
    /// removes one (other than members who asked to leave): a member adds and removes its own
    /// account's devices without being an admin (a linked device, a removed one).
    pub adds: bool,
    pub removes_others: bool,
    /// The member accounts after it.
    pub members_after: &'a std::collections::BTreeSet<String>,
}

/// Why a commit breaks the change rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeRefusal {
    /// Only an admin may do this.
    NotAdmin(&'static str),
    /// Nobody may.
    Invalid(&'static str),
}

impl std::fmt::Display for ChangeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeRefusal::NotAdmin(what) => write!(f, "only group admins can {what}"),
            ChangeRefusal::Invalid(why) => f.write_str(why),
        }
    }
}

/// The admins a group has after a change that does not choose them: the listed admins who are
/// still members; if none is, the first member by name (the heir). Any member may commit this
/// list; only an admin may commit another.
pub fn kept_admins(
    admins: &[String],
    members_after: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let kept: Vec<String> = admins.iter().filter(|a| members_after.contains(*a)).cloned().collect();
    match (kept.is_empty(), members_after.first()) {
        (true, Some(heir)) => vec![heir.clone()],
        _ => kept,
    }
}

/// The change rule, the same on the server and in every client, judged against the context
/// the commit was made in (so a change made by an admin whom a commit that won the epoch
/// removed never applies):
///
/// - a conversation's type never changes; a 1:1 has no admins; a story channel's owner is its
///   only admin for good;
/// - adding members, removing anyone but members who asked to leave, choosing the admins and
///   changing a group's settings (its name and timer) need an admin; in a 1:1 either person
///   changes the settings; anyone adds and removes devices of their own account;
/// - a group's admins are always members: every commit leaves them so, and when the last admin
///   is gone the commit names the heir ([`kept_admins`]) — whoever makes it;
/// - the settings digest, once set, is never dropped.
pub fn check_change(c: &Change<'_>) -> Result<(), ChangeRefusal> {
    use ChangeRefusal::{Invalid, NotAdmin};
    let (before, after) = (c.before, c.after);
    let is_admin = before.kind != GroupType::Direct && before.is_admin(c.committer);
    if c.adds && !is_admin {
        return Err(NotAdmin("add members"));
    }
    if c.removes_others && !is_admin {
        return Err(NotAdmin("remove other members"));
    }
    // What someone who is not an admin may change in the context: a 1:1's settings; a
    // group's admins to those the change leaves (the heir, when none is left).
    if after != before && !is_admin {
        let direct_settings = before.kind == GroupType::Direct
            && after.kind == GroupType::Direct
            && after.admins == before.admins;
        let kept = before.kind == GroupType::Group
            && after.kind == GroupType::Group
            && after.settings == before.settings
            && after.admins == kept_admins(&before.admins, c.members_after);
        if !direct_settings && !kept {
            return Err(NotAdmin(if after.settings != before.settings {
                "change the group's settings"
            } else {
                "change the group's admins"
            }));
        }
    }
    if after.kind != before.kind {
        return Err(Invalid("a conversation's type cannot change"));
    }
    if after.settings.is_none() && before.settings.is_some() {
        return Err(Invalid("a conversation's settings cannot be dropped"));
    }
    match after.kind {
        GroupType::Direct if !after.admins.is_empty() => {
            Err(Invalid("a 1:1 conversation has no admins"))
        }
        GroupType::Story if after.admins != before.admins => {
            Err(Invalid("a story channel's owner is its only admin, for good"))
        }
        GroupType::Group => {
            if after.admins.iter().any(|a| !c.members_after.contains(a)) {
                return Err(Invalid(
                    "a group's admins are members: an admin who goes leaves the admins in the \
                     same commit",
                ));
            }
            if after.admins.is_empty() && !c.members_after.is_empty() {
                return Err(Invalid("a group keeps at least one admin"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let m = GroupMeta { kind: GroupType::Group, admins: vec!["alice".into()], settings: None };
        assert_eq!(GroupMeta::decode(&m.encode()), Some(m.clone()));
        assert!(m.is_admin("alice") && !m.is_admin("bob"));
        assert_eq!(GroupMeta::decode(br#"{"type":"group","admins":["Bad Name"]}"#), None);
        assert_eq!(GroupMeta::decode(br#"{"type":"group","admins":["bob","bob"]}"#), None);
        assert_eq!(GroupMeta::decode(br#"{"type":"group","admins":[],"x":1}"#), None);
        assert_eq!(GroupMeta::decode(b"\xff"), None);
        let d = "ab".repeat(32);
        let with = GroupMeta { settings: Some(d), ..m };
        assert_eq!(GroupMeta::decode(&with.encode()), Some(with));
        assert_eq!(GroupMeta::decode(br#"{"type":"group","admins":[],"settings":"x"}"#), None);
    }

    fn set(names: &[&str]) -> std::collections::BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn meta(admins: &[&str], settings: Option<&str>) -> GroupMeta {
        GroupMeta {
            kind: GroupType::Group,
            admins: admins.iter().map(|a| a.to_string()).collect(),
            settings: settings.map(|s| s.repeat(64)),
        }
    }

    #[test]
    fn the_change_rule() {
        let members = set(&["bob", "carol"]);
        let change = |before: &GroupMeta, after: &GroupMeta, by: &'static str| {
            let c = Change {
                before,
                after,
                committer: by,
                adds: false,
                removes_others: false,
                members_after: &members,
            };
            check_change(&c)
        };
        let (a, b) = (meta(&["alice"], None), meta(&["bob"], None));
        // The last admin left: anyone names the heir, the first member by name, and only him.
        assert_eq!(kept_admins(&a.admins, &members), vec!["bob".to_string()]);
        assert_eq!(change(&a, &b, "carol"), Ok(()));
        assert!(change(&a, &meta(&["carol"], None), "carol").is_err());
        // An admin who is no longer a member cannot stay listed, nor can the list go empty.
        assert!(change(&a, &a, "carol").is_err());
        assert!(change(&b, &meta(&[], None), "bob").is_err());
        // Settings: an admin's; never dropped.
        assert_eq!(change(&b, &meta(&["bob"], Some("a")), "bob"), Ok(()));
        assert!(change(&b, &meta(&["bob"], Some("a")), "carol").is_err());
        assert!(change(&meta(&["bob"], Some("a")), &b, "bob").is_err());
        // A 1:1: either person changes the settings; no admins ever.
        let direct = |s: Option<&str>, admins: &[&str]| GroupMeta {
            kind: GroupType::Direct,
            ..meta(admins, s)
        };
        assert_eq!(change(&direct(None, &[]), &direct(Some("b"), &[]), "carol"), Ok(()));
        assert!(change(&direct(None, &[]), &direct(None, &["carol"]), "carol").is_err());
    }
}
