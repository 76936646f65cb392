//! Ed25519 keys held parsed, for the per-message signatures and checks.
//!
//! `SignatureKeyPair` (openmls_basic_credential) keeps the private key as bytes and derives the
//! full signing key, public point included, on every signature; OpenMLS's RustCrypto provider
//! likewise decompresses the public key on every verification. Both are curve operations as
//! dear as the signature itself. The SDK signs twice per message (the MLS framing and the
//! franking signature) and checks the franking signature of every message it receives, so it
//! keeps its own key, and the keys of the senders it has seen, parsed. The signing and checking
//! are ed25519-dalek's, the same implementation and the same strict check OpenMLS uses.

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use openmls::prelude::SignatureScheme;
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::signatures::{Signer, SignerError};

use crate::error::{ClientError, ClientResult};

/// This device's signing key, parsed once.
pub struct DeviceSigner {
    key: SigningKey,
}

impl DeviceSigner {
    /// The key of a stored key pair; refused unless it is a well-formed Ed25519 pair.
    pub fn new(pair: &SignatureKeyPair) -> ClientResult<Self> {
        let bad = || ClientError::Mls("the device's signature key is not an Ed25519 key".into());
        if pair.signature_scheme() != SignatureScheme::ED25519 {
            return Err(bad());
        }
        let key = SigningKey::try_from(pair.private()).map_err(|_| bad())?;
        if key.verifying_key().as_bytes().as_slice() != pair.public() {
            return Err(bad());
        }
        Ok(Self { key })
    }
}

impl Signer for DeviceSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.key.sign(payload).to_bytes().to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// Senders' public keys, parsed; bounded, emptied when full (a cache, not a record).
#[derive(Default)]
pub struct Verifiers {
    keys: Mutex<HashMap<Vec<u8>, VerifyingKey>>,
}

const MAX_VERIFIERS: usize = 4096;

impl Verifiers {
    /// Whether `signature` is `key`'s strict Ed25519 signature of `message`.
    pub fn verify(&self, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else { return false };
        let mut keys = self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let parsed = match keys.get(key) {
            Some(k) => *k,
            None => {
                let Ok(bytes) = <[u8; 32]>::try_from(key) else { return false };
                let Ok(k) = VerifyingKey::from_bytes(&bytes) else { return false };
                if keys.len() >= MAX_VERIFIERS {
                    keys.clear();
                }
                keys.insert(key.to_vec(), k);
                k
            }
        };
        drop(keys);
        parsed.verify_strict(message, &signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_basic_credential_and_verify_strictly() {
        let pair = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let signer = DeviceSigner::new(&pair).unwrap();
        assert_eq!(signer.key.verifying_key().as_bytes().as_slice(), pair.public());
        // Ed25519 is deterministic: the same signature as the key pair's own.
        let ours = signer.sign(b"hello").unwrap();
        assert_eq!(ours, pair.sign(b"hello").unwrap());

        let verifiers = Verifiers::default();
        assert!(verifiers.verify(pair.public(), b"hello", &ours));
        assert!(verifiers.verify(pair.public(), b"hello", &ours), "again, from the cache");
        assert!(!verifiers.verify(pair.public(), b"hellO", &ours));
        let mut forged = ours.clone();
        forged[5] ^= 1;
        assert!(!verifiers.verify(pair.public(), b"hello", &forged));
        let other = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        assert!(!verifiers.verify(other.public(), b"hello", &ours));
        assert!(!verifiers.verify(&[1, 2, 3], b"hello", &ours));
        assert!(!verifiers.verify(pair.public(), b"hello", &ours[..10]));
    }
}
