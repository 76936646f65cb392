//! What travels inside an MLS application message. The server never sees it.

use serde::{Deserialize, Serialize};

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
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// A text message.
    Text { text: String },
    /// A group's new name; honoured only from an admin.
    GroupName { name: String },
    /// A story: shown to the owner's contacts until `expires_at` (Unix ms), then deleted.
    Story { text: String, expires_at: u64 },
    /// The conversation's disappearing-message timer, for every member; `None` turns it off.
    Timer { seconds: Option<u64> },
}

/// Shortest and longest disappearing-message timers.
pub const MIN_TIMER_SECONDS: u64 = 30;
pub const MAX_TIMER_SECONDS: u64 = 4 * 7 * 86_400;

/// A timer a member may set: off, or 30 s to 4 weeks.
pub fn valid_timer(seconds: Option<u64>) -> bool {
    seconds.is_none_or(|s| (MIN_TIMER_SECONDS..=MAX_TIMER_SECONDS).contains(&s))
}

impl Payload {
    pub fn new(id: String, sent_at: u64, body: Body) -> Self {
        Payload { v: 1, id, sent_at, body }
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
