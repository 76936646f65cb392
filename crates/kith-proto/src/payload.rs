//! What travels inside an MLS application message. The server never sees it — except the one
//! message a recipient chooses to report.
//!
//! The plaintext of every application message is a [`Franked`] payload: the message body
//! ([`Payload`], serialized once by the sender as `core`), the sender's random franking key `fk`,
//! and the sender's signature over [`FRANK_CONTEXT`] ‖ group id ‖ SHA-256(`core`). The MLS
//! authenticated data carries the commitment `c = HMAC-SHA256(fk, core)`, which the server reads
//! and binds into its franking tag.

use serde::{Deserialize, Serialize};

use crate::B64;

/// Domain separation for the sender's signature over a message body.
pub const FRANK_CONTEXT: &[u8] = b"kith-frank-v1";

/// The plaintext of an application message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Franked {
    /// The serialized [`Payload`], exactly as committed and signed.
    pub core: B64,
    /// 32 random bytes, fresh for every message.
    pub fk: B64,
    /// Ed25519 signature by the sender's credential key.
    pub sig: B64,
}

impl Franked {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Refuses anything but a well-formed payload with a 32-byte key and a 64-byte signature.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let f: Franked = serde_json::from_slice(bytes).ok()?;
        (f.fk.0.len() == 32 && f.sig.0.len() == 64).then_some(f)
    }

    /// The bytes the sender signs: context ‖ group id ‖ SHA-256(core) (the hash is given).
    pub fn signed_bytes(group_id: &[u8], core_hash: &[u8]) -> Vec<u8> {
        [FRANK_CONTEXT, group_id, core_hash].concat()
    }
}

/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 128;

/// Version 1 of the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub v: u8,
    /// Random 128-bit id in hex, chosen by the sender: receivers deduplicate by it.
    pub id: String,
    /// The sender's clock, Unix milliseconds.
    pub sent_at: u64,
    /// When the message disappears (Unix ms), by the timer of the epoch it was sent in; every
    /// device deletes it at the earlier of this and the server's time of acceptance plus that
    /// timer, so at the same moment.
    /// (Not `expires_at`: a story's body has its own.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disappears_at: Option<u64>,
    /// The newest key-directory epoch and root the sender's device took (`kith_client::kt`):
    /// each recipient holds it against its own, so a server that shows two people two
    /// directories (a split view) is caught by the people themselves, inside what MLS proves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kt: Option<KtSeen>,
    #[serde(flatten)]
    pub body: Body,
}

/// A key-directory root a device took: its epoch and the root (32 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtSeen {
    pub epoch: u64,
    pub root: crate::B64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// A text message.
    Text { text: String },
    /// A group's new name, as clients before settings were epoch state sent it: read, and
    /// ignored (a rename is a commit now; see [`crate::settings`]).
    GroupName { name: String },
    /// A story: shown to the owner's contacts until `expires_at` (Unix ms), then deleted.
    Story { text: String, expires_at: u64 },
    /// A disappearing-message timer as clients before settings were epoch state sent it: read,
    /// and ignored (a timer change is a commit now).
    Timer { seconds: Option<u64> },
}

/// Shortest and longest disappearing-message timers.
pub const MIN_TIMER_SECONDS: u64 = 30;
pub const MAX_TIMER_SECONDS: u64 = 4 * 7 * 86_400;

/// A timer a member may set: off, or 30 s to 4 weeks.
pub fn valid_timer(seconds: Option<u64>) -> bool {
    seconds.is_none_or(|s| (MIN_TIMER_SECONDS..=MAX_TIMER_SECONDS).contains(&s))
}

impl Body {
    /// The text a person would read in this message, for reports.
    pub fn readable_text(&self) -> String {
        match self {
            Body::Text { text } | Body::Story { text, .. } => text.clone(),
            Body::GroupName { name } => format!("(renamed the group to \"{name}\")"),
            Body::Timer { seconds: None } => "(turned disappearing messages off)".into(),
            Body::Timer { seconds: Some(s) } => format!("(set disappearing messages to {s} s)"),
        }
    }
}

impl Payload {
    pub fn new(id: String, sent_at: u64, body: Body) -> Self {
        Payload { v: 1, id, sent_at, disappears_at: None, kt: None, body }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Refuses anything but a well-formed version-1 payload.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let p: Payload = serde_json::from_slice(bytes).ok()?;
        let body_ok = match &p.body {
            Body::Text { .. } | Body::Story { .. } => true,
            Body::GroupName { name } => valid_group_name(name),
            Body::Timer { seconds } => valid_timer(*seconds),
        };
        (p.v == 1 && !p.id.is_empty() && p.id.len() <= 64 && body_ok).then_some(p)
    }
}

/// A message id as clients make it: 16 random bytes as 32 lowercase hex characters. A received
/// message with any other id is refused, so no sender can choose an id the SDK gives its own
/// lines (`sys-…`) and have its message take that line's place.
pub fn valid_message_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A group name is 1–128 bytes of text without control characters.
pub fn valid_group_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.len() <= MAX_GROUP_NAME_BYTES
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let p = Payload::new("ab".into(), 5, Body::Text { text: "hi".into() });
        assert_eq!(Payload::decode(&p.encode()), Some(p));
        let n = Payload::new("cd".into(), 6, Body::GroupName { name: "Family".into() });
        assert_eq!(Payload::decode(&n.encode()), Some(n));
        // A story's own expiry and a message's disappearing moment do not collide.
        let mut st = Payload::new("ef".into(), 7, Body::Story { text: "x".into(), expires_at: 9 });
        st.disappears_at = Some(8);
        assert_eq!(Payload::decode(&st.encode()), Some(st));
        assert_eq!(Payload::decode(b"{}"), None);
        assert_eq!(
            Payload::decode(br#"{"v":2,"id":"a","type":"text","text":"x","sent_at":1}"#),
            None
        );
        assert_eq!(
            Payload::decode(br#"{"v":1,"id":"a","type":"group_name","name":"","sent_at":1}"#),
            None
        );
        assert_eq!(Payload::decode(br#"{"v":1,"id":"a","type":"nope","sent_at":1}"#), None);
        assert_eq!(Payload::decode(b"\xff"), None);
    }
}
