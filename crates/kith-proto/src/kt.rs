//! Key transparency (see DESIGN.md, "Key transparency"): the server keeps an `akd` directory
//! of every account's keys, publishes it in epochs and signs each epoch's root; clients check
//! what they are given against it. This module holds what both sides must agree on byte for
//! byte (the value published for an account, the signed root), the wire types of the public
//! endpoints, and safety numbers.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::B64;

/// Domain separation for a root's signature.
const ROOT: &[u8] = b"kith kt root v1";
/// Domain separation for the committed device set.
const DEVICES: &[u8] = b"kith kt devices v1";
/// The version byte that starts a published value.
const VALUE_V1: u8 = 1;

/// The bytes the server's signing key signs for an epoch: the epoch and the directory's root.
pub fn root_bytes(epoch: u64, root: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROOT.len() + 8 + root.len());
    out.extend_from_slice(ROOT);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(root);
    out
}

/// Signs an epoch's root.
pub fn sign_root(key: &SigningKey, epoch: u64, root: &[u8]) -> Vec<u8> {
    key.sign(&root_bytes(epoch, root)).to_bytes().to_vec()
}

/// Whether `signature` is the signing key `key`'s over this epoch's root.
pub fn verify_root(key: &[u8], epoch: u64, root: &[u8], signature: &[u8]) -> bool {
    root.len() == 32 && crate::recovery::verify(key, &root_bytes(epoch, root), signature)
}

/// The value the directory holds for an account: its account key (empty for an account from
/// before account keys) and a digest of its current devices (their ids and signature keys),
/// so a device the server lists for it to anyone is one its own devices see listed too.
pub fn directory_value(account_key: Option<&[u8]>, devices: &[(u64, &[u8])]) -> Vec<u8> {
    let key = account_key.unwrap_or_default();
    let mut out = Vec::with_capacity(2 + key.len() + 32);
    out.push(VALUE_V1);
    out.push(u8::try_from(key.len()).unwrap_or(0));
    out.extend_from_slice(if key.len() <= 255 { key } else { &[] });
    out.extend_from_slice(&devices_digest(devices));
    out
}

/// The digest of a device set: order does not matter, each device counts once.
pub fn devices_digest(devices: &[(u64, &[u8])]) -> [u8; 32] {
    let mut sorted: Vec<(u64, &[u8])> = devices.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut h = Sha256::new();
    h.update(DEVICES);
    for (id, key) in sorted {
        h.update(id.to_be_bytes());
        h.update((key.len() as u64).to_be_bytes());
        h.update(key);
    }
    h.finalize().into()
}

/// A published value read back: the account key (`None` for an account without one) and the
/// digest of its devices; `None` if the bytes are not a value this version writes.
pub fn parse_value(value: &[u8]) -> Option<(Option<Vec<u8>>, [u8; 32])> {
    let (&version, rest) = value.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if version != VALUE_V1 || rest.len() != usize::from(len) + 32 {
        return None;
    }
    let (key, digest) = rest.split_at(usize::from(len));
    let key = (!key.is_empty()).then(|| key.to_vec());
    Some((key, digest.try_into().ok()?))
}

/// `GET /v1/kt/keys`: the directory's public keys. A client takes them on first contact with
/// a server and refuses a server that shows others later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KtKeys {
    /// The VRF's public key (labels are VRF outputs, so the tree shows no usernames).
    pub vrf_public_key: B64,
    /// The Ed25519 key that signs each epoch's root.
    pub signing_key: B64,
}

/// One published epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KtRoot {
    pub epoch: u64,
    /// The directory's root hash at this epoch (32 bytes).
    pub root: B64,
    /// The signing key's signature over [`root_bytes`].
    pub signature: B64,
    /// When it was published (ms since the Unix epoch).
    pub published_at: u64,
}

/// `GET /v1/kt/roots?from=E`: published roots from epoch `E` on, oldest first (a page).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KtRoots {
    pub roots: Vec<KtRoot>,
    /// The newest published epoch (0 before the first publish).
    pub latest: u64,
}

/// `GET /v1/kt/audit?from=A&to=B`: for each epoch `e` in `A+1..=B`, the append-only proof
/// from `e-1` to `e` (akd's `SingleAppendOnlyProof`, protobuf-encoded).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KtAudit {
    pub from: u64,
    pub to: u64,
    pub proofs: Vec<B64>,
}

/// `GET /v1/kt/lookup/{username}`: the account's value at the latest epoch, with akd's lookup
/// proof (protobuf-encoded) and the signed root it is checked against.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KtLookup {
    pub username: String,
    pub root: KtRoot,
    pub proof: B64,
}

/// `GET /v1/kt/history`: the caller's own account's every published value, with akd's
/// history proof (protobuf-encoded) and the signed root it is checked against.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KtHistory {
    pub username: String,
    pub root: KtRoot,
    pub proof: B64,
}

/// Iterations of the hash behind a safety number's half (as in Signal's, so it costs a brute
/// force search as much).
const FINGERPRINT_ROUNDS: usize = 5200;
const FINGERPRINT_VERSION: [u8; 2] = [0, 1];

/// One account's half of a safety number: 30 digits from its username and account key.
pub fn fingerprint(username: &str, account_key: &[u8]) -> String {
    let mut h = Sha512::new();
    h.update(FINGERPRINT_VERSION);
    h.update(account_key);
    h.update(username.as_bytes());
    let mut digest = h.finalize();
    for _ in 1..FINGERPRINT_ROUNDS {
        let mut h = Sha512::new();
        h.update(digest);
        h.update(account_key);
        digest = h.finalize();
    }
    digest[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect()
}

/// The safety number of two accounts: 60 digits, the same whichever side computes it.
pub fn safety_number(a: (&str, &[u8]), b: (&str, &[u8])) -> String {
    let (x, y) = (fingerprint(a.0, a.1), fingerprint(b.0, b.1));
    if x <= y { x + &y } else { y + &x }
}

/// A safety number as people read it: twelve groups of five digits.
pub fn show_safety_number(number: &str) -> String {
    number.as_bytes().chunks(5).map(|c| String::from_utf8_lossy(c)).collect::<Vec<_>>().join(" ")
}

/// What a safety number's QR code holds: the two usernames (sorted) and the number, so a
/// scan checks both the people and their keys.
pub fn safety_code(a: &str, b: &str, number: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("kith-safety:1:{x}:{y}:{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_safety_number_is_the_same_from_both_sides_and_changes_with_either_key() {
        let n = safety_number(("ana", &[1; 32]), ("bob", &[2; 32]));
        assert_eq!(n, safety_number(("bob", &[2; 32]), ("ana", &[1; 32])));
        assert_eq!(n.len(), 60);
        assert!(n.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(show_safety_number(&n).split(' ').count(), 12);
        assert_ne!(n, safety_number(("ana", &[3; 32]), ("bob", &[2; 32])));
        assert_ne!(n, safety_number(("ana", &[1; 32]), ("bob", &[3; 32])));
        assert_ne!(n, safety_number(("ann", &[1; 32]), ("bob", &[2; 32])));
    }

    #[test]
    fn a_value_reads_back_and_its_device_digest_ignores_order() {
        let v = directory_value(Some(&[7; 32]), &[(2, b"k2"), (1, b"k1")]);
        assert_eq!(v, directory_value(Some(&[7; 32]), &[(1, b"k1"), (2, b"k2")]));
        let (key, digest) = parse_value(&v).unwrap();
        assert_eq!(key, Some(vec![7; 32]));
        assert_eq!(digest, devices_digest(&[(1, b"k1"), (2, b"k2")]));
        assert_ne!(digest, devices_digest(&[(1, b"k1")]));
        assert_eq!(parse_value(&directory_value(None, &[])).unwrap().0, None);
        assert_eq!(parse_value(&v[..v.len() - 1]), None);
        assert_eq!(parse_value(&[]), None);
    }

    #[test]
    fn a_root_signature_covers_its_epoch_and_root() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let public = key.verifying_key().to_bytes();
        let sig = sign_root(&key, 4, &[1; 32]);
        assert!(verify_root(&public, 4, &[1; 32], &sig));
        assert!(!verify_root(&public, 5, &[1; 32], &sig));
        assert!(!verify_root(&public, 4, &[2; 32], &sig));
    }
}

/// The directory's `akd` configuration: its hashes are domain-separated by Kith's own label.
#[cfg(feature = "akd")]
pub mod config {
    /// Kith's domain label for the directory's hashes.
    #[derive(Clone)]
    pub struct KithDirectory;

    impl akd_core::DomainLabel for KithDirectory {
        fn domain_label() -> &'static [u8] {
            b"kith key directory v1"
        }
    }

    /// The configuration the server publishes with and clients verify with.
    pub type Config = akd_core::ExperimentalConfiguration<KithDirectory>;
}
