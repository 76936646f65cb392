//! Secrets that never print and do not linger: a device's bearer token ([`Secret`]) and key
//! material ([`SecretBytes`]). Both are wiped from memory when dropped (`zeroize`), show as
//! `[redacted]` in `Debug`, and have no `Display`; reading one takes an explicit `expose()`.
//! Only [`Secret`] serializes — as its plain text, because the wire needs it (the token in a
//! registration or rotation answer); key material never leaves through serde.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A text secret: a device's bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(text: String) -> Self {
        Secret(Zeroizing::new(text))
    }

    /// The secret itself, for the one place that needs it (a header, a hash, a file).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Key material (a franking key): no serde at all.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[redacted {} bytes]", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret_and_serde_round_trips() {
        let token = Secret::new("s3cr3t-token".into());
        assert_eq!(format!("{token:?}"), "[redacted]");
        assert_eq!(format!("{:#?}", Some(&token)), "Some(\n    [redacted],\n)");
        let wire = serde_json::to_string(&token).unwrap();
        assert_eq!(wire, "\"s3cr3t-token\"");
        assert_eq!(serde_json::from_str::<Secret>(&wire).unwrap(), token);
        let key = SecretBytes::new(vec![7; 32]);
        assert_eq!(format!("{key:?}"), "[redacted 32 bytes]");
        assert_eq!(key.expose(), [7; 32]);
    }
}
