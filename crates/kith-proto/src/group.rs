//! The Kith extension carried in every conversation's MLS group context.
//!
//! It holds what both the clients and the server must agree on and enforce: whether the
//! conversation is a 1:1 or a group, and who its admins are. The group context is signed and
//! changes only by commit, so the admin list cannot be forged; and since the server follows each
//! group's public state, it is visible to the server — which is why nothing private (a group's
//! name, its description) goes here: those travel in encrypted application messages.

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
                .all(|a| crate::validate_username(a).is_ok() && seen.insert(a.as_str()));
        valid.then_some(meta)
    }

    pub fn is_admin(&self, username: &str) -> bool {
        self.admins.iter().any(|a| a == username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let m = GroupMeta { kind: GroupType::Group, admins: vec!["alice".into()] };
        assert_eq!(GroupMeta::decode(&m.encode()), Some(m.clone()));
        assert!(m.is_admin("alice") && !m.is_admin("bob"));
        assert_eq!(GroupMeta::decode(br#"{"type":"group","admins":["Bad Name"]}"#), None);
        assert_eq!(GroupMeta::decode(br#"{"type":"group","admins":["bob","bob"]}"#), None);
        assert_eq!(GroupMeta::decode(br#"{"type":"group","admins":[],"x":1}"#), None);
        assert_eq!(GroupMeta::decode(b"\xff"), None);
    }
}
