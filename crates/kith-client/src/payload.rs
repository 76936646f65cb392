//! What travels inside an MLS application message. The server never sees it.

use serde::{Deserialize, Serialize};

/// Version 1 of the payload: a text message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub v: u8,
    /// Random 128-bit id in hex, chosen by the sender: receivers deduplicate by it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: PayloadKind,
    pub text: String,
    /// The sender's clock, Unix milliseconds.
    pub sent_at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    Text,
}

impl Payload {
    pub fn text(id: String, text: String, sent_at: u64) -> Self {
        Payload { v: 1, id, kind: PayloadKind::Text, text, sent_at }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Refuses anything but a well-formed version-1 payload.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let p: Payload = serde_json::from_slice(bytes).ok()?;
        (p.v == 1 && !p.id.is_empty() && p.id.len() <= 64).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let p = Payload::text("ab".into(), "hi".into(), 5);
        assert_eq!(Payload::decode(&p.encode()), Some(p));
        assert_eq!(Payload::decode(b"{}"), None);
        assert_eq!(
            Payload::decode(br#"{"v":2,"id":"a","type":"text","text":"x","sent_at":1}"#),
            None
        );
        assert_eq!(Payload::decode(b"\xff"), None);
    }
}
