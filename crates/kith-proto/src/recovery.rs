//! Taking an account back (see DESIGN.md, "Identities and authentication"). At registration
//! (or at the first sync of an account from before recovery codes) a device makes a
//! **recovery code**, shows it once and keeps nothing of it; the server keeps only the public
//! half of the Ed25519 **recovery key** the code derives. The recovery key signs two things:
//!
//! - a [`KeyChange`]: "this account's key is now `account_key`, and its recovery key
//!   `recovery_key`". The server keeps every change and hands them out with the account's
//!   keys, so a contact who knew the account's recovery key before follows the change and
//!   knows it was the code's holder who made it, not the server;
//! - a recovery request ([`recovery_bytes`]): the new device the account starts again with.
//!
//! A change that keeps the account key only replaces the recovery key: it is how a code is
//! replaced, and only the current code can do it. The encoding is total: [`KeyChange::decode`]
//! consumes every byte or refuses.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Domain separation: a change's signature is nothing else the recovery key signs.
const CHANGE: &[u8] = b"kith account key change v1";
const RECOVERY: &[u8] = b"kith account recovery v1";
const BINDING: &[u8] = b"kith recovery key binding v1";

/// A recovery code's characters: Crockford's base32.
pub const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters of a code (120 bits), and of each group it is shown in.
pub const CODE_LENGTH: usize = 24;
const CODE_GROUP: usize = 4;

/// A code as a person typed it, in its one form (upper case, no separators, `O` read as `0`
/// and `I`/`L` as `1`), or `None` if it cannot be one.
pub fn normalize_code(text: &str) -> Option<String> {
    let chars: String = text
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect();
    (chars.len() == CODE_LENGTH && chars.bytes().all(|c| CODE_ALPHABET.contains(&c)))
        .then_some(chars)
}

/// A normalized code as it is shown: six groups of four.
pub fn show_code(code: &str) -> String {
    code.as_bytes()
        .chunks(CODE_GROUP)
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The recovery key a normalized code stands for: HKDF-SHA256 (salt `kith recovery code v1`,
/// info `recovery key`) of the code's text gives its seed.
pub fn code_key(code: &str) -> SigningKey {
    let hk = hkdf::Hkdf::<sha2_10::Sha256>::new(Some(b"kith recovery code v1"), code.as_bytes());
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit: this cannot fail.
    if hk.expand(b"recovery key", seed.as_mut_slice()).is_err() {
        seed.fill(0);
    }
    SigningKey::from_bytes(&seed)
}

/// Longest username a change holds (the rules allow 32).
const MAX_USERNAME: usize = 32;

/// "`username`'s account key is now `account_key`, its recovery key `recovery_key`", signed by
/// the recovery key before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    pub username: String,
    /// The account key from this change on (Ed25519 public, 32 bytes).
    pub account_key: Vec<u8>,
    /// The recovery key from this change on (Ed25519 public, 32 bytes).
    pub recovery_key: Vec<u8>,
    /// When it was made, Unix milliseconds.
    pub at: u64,
    /// The previous recovery key's signature over the fields above.
    pub signature: Vec<u8>,
}

impl KeyChange {
    /// The change `recovery` (the current recovery key) signs.
    pub fn sign(
        recovery: &SigningKey,
        username: &str,
        account_key: &[u8],
        recovery_key: &[u8],
        at: u64,
    ) -> Self {
        let signed = change_bytes(username, account_key, recovery_key, at);
        KeyChange {
            username: username.to_string(),
            account_key: account_key.to_vec(),
            recovery_key: recovery_key.to_vec(),
            at,
            signature: recovery.sign(&signed).to_bytes().to_vec(),
        }
    }

    /// Whether the recovery key `by` (32 bytes) signed this change, strictly, and both keys it
    /// names can be keys.
    pub fn verify(&self, by: &[u8]) -> bool {
        crate::account::is_account_key(&self.account_key)
            && crate::account::is_account_key(&self.recovery_key)
            && verify(
                by,
                &change_bytes(&self.username, &self.account_key, &self.recovery_key, self.at),
                &self.signature,
            )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.username.len() + 33 + 33 + 8 + 65);
        put(&mut out, self.username.as_bytes());
        put(&mut out, &self.account_key);
        put(&mut out, &self.recovery_key);
        out.extend_from_slice(&self.at.to_be_bytes());
        put(&mut out, &self.signature);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = bytes;
        let username = String::from_utf8(field(&mut r, MAX_USERNAME)?.to_vec()).ok()?;
        let account_key = field(&mut r, 32)?.to_vec();
        let recovery_key = field(&mut r, 32)?.to_vec();
        let (at, rest) = r.split_first_chunk::<8>()?;
        r = rest;
        let signature = field(&mut r, 64)?.to_vec();
        (r.is_empty()
            && account_key.len() == 32
            && recovery_key.len() == 32
            && signature.len() == 64)
            .then(|| KeyChange {
                username,
                account_key,
                recovery_key,
                at: u64::from_be_bytes(*at),
                signature,
            })
    }
}

/// Follows `changes` (oldest first) from the keys a contact knows, `known` (account key,
/// recovery key), and returns the account key they lead to: a change counts only when the
/// recovery key known at that point signed it. `None` when `listed` is not where the
/// signed changes lead (the server lists a key the code's holder never chose).
pub fn follow(
    username: &str,
    known: (&[u8], &[u8]),
    changes: &[KeyChange],
    listed: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)> {
    let (mut account, mut recovery) = (known.0.to_vec(), known.1.to_vec());
    for change in changes {
        if change.username == username && change.verify(&recovery) {
            account = change.account_key.clone();
            recovery = change.recovery_key.clone();
        }
    }
    (account == listed).then_some((account, recovery))
}

/// What the recovery key signs to start an account again on a new device: the account, the
/// change it makes (by its signature), and the new device's credential key and token hash.
pub fn recovery_bytes(
    username: &str,
    change: &KeyChange,
    credential_key: &[u8],
    token_hash: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECOVERY.len() + 1 + username.len() + 65 + 33 + 33);
    put(&mut out, RECOVERY);
    put(&mut out, username.as_bytes());
    put(&mut out, &change.signature);
    put(&mut out, credential_key);
    put(&mut out, token_hash);
    out
}

/// What the account key signs to bind a recovery key to itself: a client that knew the
/// account key before takes a recovery key it has not seen only with this signature, so a
/// server cannot slip in a recovery key of its own and then sign "changes" with it.
pub fn binding_bytes(username: &str, recovery_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BINDING.len() + 1 + username.len() + 33);
    put(&mut out, BINDING);
    put(&mut out, username.as_bytes());
    put(&mut out, recovery_key);
    out
}

/// Signs with the recovery key (see [`recovery_bytes`]), or with the account key (see
/// [`binding_bytes`]).
pub fn sign(recovery: &SigningKey, bytes: &[u8]) -> Vec<u8> {
    recovery.sign(bytes).to_bytes().to_vec()
}

/// Whether `signature` is `key`'s over `bytes`, strictly.
pub fn verify(key: &[u8], bytes: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = <[u8; 32]>::try_from(key) else { return false };
    let Ok(sig) = <[u8; 64]>::try_from(signature) else { return false };
    VerifyingKey::from_bytes(&key)
        .is_ok_and(|k| !k.is_weak() && k.verify_strict(bytes, &Signature::from_bytes(&sig)).is_ok())
}

fn change_bytes(username: &str, account_key: &[u8], recovery_key: &[u8], at: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHANGE.len() + 1 + username.len() + 66 + 8);
    put(&mut out, CHANGE);
    put(&mut out, username.as_bytes());
    put(&mut out, account_key);
    put(&mut out, recovery_key);
    out.extend_from_slice(&at.to_be_bytes());
    out
}

/// A field with its one-byte length before it (every field here is under 256 bytes).
fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.push(u8::try_from(field.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&field[..field.len().min(255)]);
}

fn field<'a>(r: &mut &'a [u8], max: usize) -> Option<&'a [u8]> {
    let (&len, rest) = r.split_first()?;
    let len = usize::from(len);
    if len > max || rest.len() < len {
        return None;
    }
    let (f, rest) = rest.split_at(len);
    *r = rest;
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::public_key;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_change_counts_only_when_the_known_recovery_key_signed_it() {
        let (k1, r1, k2, r2, k3, r3) = (key(1), key(2), key(3), key(4), key(5), key(6));
        let first = KeyChange::sign(&r1, "ana", &public_key(&k2), &public_key(&r2), 10);
        assert_eq!(KeyChange::decode(&first.encode()), Some(first.clone()));
        assert!(first.verify(&public_key(&r1)));
        assert!(!first.verify(&public_key(&r2)));
        let second = KeyChange::sign(&r2, "ana", &public_key(&k3), &public_key(&r3), 20);
        let known = (public_key(&k1), public_key(&r1));
        let known = (known.0.as_slice(), known.1.as_slice());
        // Both changes, in order: the chain leads to the third key.
        assert_eq!(
            follow("ana", known, &[first.clone(), second.clone()], &public_key(&k3)),
            Some((public_key(&k3), public_key(&r3)))
        );
        // A server that lists a key of its own is not followed.
        assert_eq!(
            follow("ana", known, &[first.clone(), second.clone()], &public_key(&key(9))),
            None
        );
        // Nor one that signs a change with a key it made up.
        let forged =
            KeyChange::sign(&key(9), "ana", &public_key(&key(8)), &public_key(&key(7)), 30);
        assert_eq!(follow("ana", known, &[forged], &public_key(&key(8))), None);
        // A change for another account does not count for this one.
        let other = KeyChange::sign(&r1, "bob", &public_key(&k2), &public_key(&r2), 10);
        assert_eq!(follow("ana", known, &[other], &public_key(&k2)), None);
        // Nothing changed: the known key stands.
        assert!(follow("ana", known, &[], &public_key(&k1)).is_some());
    }

    #[test]
    fn malformed_changes_are_refused() {
        let change = KeyChange::sign(&key(2), "ana", &public_key(&key(3)), &public_key(&key(4)), 1);
        let bytes = change.encode();
        assert_eq!(KeyChange::decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(KeyChange::decode(&longer), None);
        assert_eq!(KeyChange::decode(&[]), None);
        // A weak key in a change is never followed.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = KeyChange::sign(&key(2), "ana", &identity, &public_key(&key(4)), 1);
        assert!(!weak.verify(&public_key(&key(2))));
    }
}
