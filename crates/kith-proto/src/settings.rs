//! A conversation's private settings — a group's name, the disappearing-message timer, and any
//! later one — as part of the MLS epoch.
//!
//! Members at one epoch hold the same settings by construction:
//!
//! - The group context's Kith extension ([`crate::GroupMeta::settings`]) holds a *digest* of
//!   the settings: SHA-256 over a domain label and the settings' *record*, which carries 32
//!   random bytes of salt, so the digest (which the server sees) says nothing about them. The
//!   group context is agreed by MLS, and changes only by commit.
//! - A commit that changes the digest carries the new record in its authenticated data,
//!   sealed ([`Sealed`]) under a key every member of the epoch the commit was made in exports
//!   (the label [`EXPORTER_LABEL`]); each member opens it and checks it against the new digest.
//! - A Welcome carries the record of the new epoch in its GroupInfo (the extension
//!   [`SETTINGS_EXTENSION`]), which MLS encrypts to the joiners alone and the committer signs;
//!   each joiner checks it against the digest of the group context it joins.
//!
//! The server checks the shape of both and who may change the digest (see `docs/protocol.md`);
//! it never sees a setting.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::B64;
use crate::payload::{valid_group_name, valid_timer};

/// The GroupInfo extension type carrying the settings record to joiners.
pub const SETTINGS_EXTENSION: u16 = 0xF4B2;

/// The MLS exporter label of the key that seals settings in a commit.
pub const EXPORTER_LABEL: &str = "kith settings v1";

/// Domain separation of the digest.
const DIGEST_CONTEXT: &[u8] = b"kith-settings-v1";

/// Largest sealed settings a commit's authenticated data may carry, in bytes (as sent).
pub const MAX_SEALED_BYTES: usize = 2048;

/// The settings members see.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// A group's name (a 1:1 and a story channel have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The disappearing-message timer in seconds; `None` is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<u64>,
}

/// The settings as committed to: with a fresh salt.
#[derive(Serialize, Deserialize)]
struct Record {
    v: u8,
    salt: B64,
    #[serde(flatten)]
    settings: Settings,
}

impl Settings {
    /// A name of 1–128 bytes without control characters (or none), and a timer that is off
    /// or 30 s to 4 weeks.
    pub fn valid(&self) -> bool {
        self.name.as_deref().is_none_or(valid_group_name) && valid_timer(self.timer)
    }

    /// The record committed to, with `salt` (32 random bytes).
    pub fn record(&self, salt: [u8; 32]) -> Vec<u8> {
        let record = Record { v: 1, salt: B64(salt.to_vec()), settings: self.clone() };
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// The settings of a well-formed version-1 record (fields a later version adds are
    /// ignored, but still covered by the digest).
    pub fn from_record(bytes: &[u8]) -> Option<Settings> {
        let record: Record = serde_json::from_slice(bytes).ok()?;
        (record.v == 1 && record.salt.0.len() == 32 && record.settings.valid())
            .then_some(record.settings)
    }
}

/// The digest of a record, as the group context holds it: lowercase hex.
pub fn digest(record: &[u8]) -> String {
    let hash = sha2::Sha256::new().chain_update(DIGEST_CONTEXT).chain_update(record).finalize();
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` has the form of a digest: 64 lowercase hex characters.
pub fn valid_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A record sealed for the members of the epoch a commit is made in: ChaCha20-Poly1305 under
/// the epoch's exported key, with a random nonce and the group id and epoch as associated data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub nonce: B64,
    pub ct: B64,
}

impl Sealed {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Refuses anything but a 12-byte nonce and a ciphertext that fits the bound.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_SEALED_BYTES {
            return None;
        }
        let s: Sealed = serde_json::from_slice(bytes).ok()?;
        (s.nonce.0.len() == 12 && s.ct.0.len() >= 16).then_some(s)
    }

    /// The associated data a seal binds: the group and the epoch it was made in.
    pub fn associated_data(group_id: &[u8], epoch: u64) -> Vec<u8> {
        [DIGEST_CONTEXT, group_id, &epoch.to_be_bytes()].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_digests_and_refusals() {
        let s = Settings { name: Some("Family".into()), timer: Some(30) };
        let record = s.record([7; 32]);
        assert_eq!(Settings::from_record(&record), Some(s.clone()));
        // The salt hides equal settings from each other.
        assert_ne!(digest(&record), digest(&s.record([8; 32])));
        assert!(valid_digest(&digest(&record)));
        assert!(!valid_digest("ABC") && !valid_digest(&"G".repeat(64)));
        let bad = Settings { name: Some(String::new()), timer: None };
        assert_eq!(Settings::from_record(&bad.record([1; 32])), None);
        let short = Settings { name: None, timer: Some(5) };
        assert_eq!(Settings::from_record(&short.record([1; 32])), None);
        assert_eq!(Settings::from_record(br#"{"v":1,"salt":"AAAA"}"#), None);
        assert_eq!(Settings::from_record(b"\xff"), None);
        let sealed = Sealed { nonce: B64(vec![0; 12]), ct: B64(vec![1; 40]) };
        assert_eq!(Sealed::decode(&sealed.encode()), Some(sealed));
        assert_eq!(Sealed::decode(br#"{"nonce":"AAAA","ct":"AAAA"}"#), None);
    }
}
