//! Message franking on the client: committing to each message as its sender, checking the
//! commitment and signature as its recipient, and keeping what a report needs.

use kith_proto::B64;
use kith_proto::payload::Franked;
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use openmls_traits::signatures::Signer;
use subtle::ConstantTimeEq;

use crate::error::{ClientError, ClientResult, Refusal};
use crate::mls::Provider;
use crate::signer::Verifiers;

/// Wraps `core` (a serialized payload) with a fresh franking key and the sender's signature.
/// Returns the plaintext to encrypt and the commitment for the MLS authenticated data.
pub fn frank(
    provider: &Provider<'_>,
    signer: &impl Signer,
    group_id: &[u8],
    core: &[u8],
) -> ClientResult<(Franked, Vec<u8>)> {
    let mut fk = [0u8; 32];
    getrandom::fill(&mut fk).map_err(|e| ClientError::Mls(format!("no randomness: {e}")))?;
    let crypto = provider.crypto();
    let commitment = crypto.hmac(HashType::Sha2_256, &fk, core).map_err(ClientError::mls)?;
    let hash = crypto.hash(HashType::Sha2_256, core).map_err(ClientError::mls)?;
    let sig = signer
        .sign(&Franked::signed_bytes(group_id, &hash))
        .map_err(|e| ClientError::Mls(format!("cannot sign: {e:?}")))?;
    let franked = Franked { core: B64(core.to_vec()), fk: B64(fk.to_vec()), sig: B64(sig) };
    Ok((franked, commitment.as_slice().to_vec()))
}

/// Checks a received payload: the commitment in the authenticated data must be
/// `HMAC(fk, core)`, and the signature must be by `sender_key`. Anything else is a forgery and
/// is dropped; the error does not say which part failed.
pub fn check(
    provider: &Provider<'_>,
    verifiers: &Verifiers,
    group_id: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    sender_key: &[u8],
) -> ClientResult<Franked> {
    let refuse =
        || ClientError::refused(Refusal::BadMessage, "the message's franking does not verify");
    let franked = Franked::decode(plaintext).ok_or_else(refuse)?;
    let crypto = provider.crypto();
    let c =
        crypto.hmac(HashType::Sha2_256, &franked.fk.0, &franked.core.0).map_err(|_| refuse())?;
    if !bool::from(c.as_slice().ct_eq(aad)) {
        return Err(refuse());
    }
    let hash = crypto.hash(HashType::Sha2_256, &franked.core.0).map_err(|_| refuse())?;
    if !verifiers.verify(sender_key, &Franked::signed_bytes(group_id, &hash), &franked.sig.0) {
        return Err(refuse());
    }
    Ok(franked)
}

#[cfg(test)]
mod tests {
    use super::*;

    use openmls_basic_credential::SignatureKeyPair;

    fn setup() -> (rusqlite::Connection, openmls_rust_crypto::RustCrypto, SignatureKeyPair) {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::mls::migrate(&mut conn).unwrap();
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        (conn, openmls_rust_crypto::RustCrypto::default(), signer)
    }

    #[test]
    fn a_genuine_payload_verifies_and_every_change_is_refused() {
        let (conn, crypto, signer) = setup();
        let provider = Provider::new(&crypto, &conn);
        let v = Verifiers::default();
        let group = [9u8; 16];
        let (franked, c) = frank(&provider, &signer, &group, b"{\"hello\":1}").unwrap();
        let plain = franked.encode();
        let key = signer.public().to_vec();
        assert!(check(&provider, &v, &group, &c, &plain, &key).is_ok());

        // Another commitment (the message was edited after committing, or c was swapped).
        let mut bad_c = c.clone();
        bad_c[0] ^= 1;
        assert!(check(&provider, &v, &group, &bad_c, &plain, &key).is_err());
        // An edited body under the same commitment.
        let mut edited = franked.clone();
        edited.core = B64(b"{\"hello\":2}".to_vec());
        assert!(check(&provider, &v, &group, &c, &edited.encode(), &key).is_err());
        // Another franking key.
        let mut other_fk = franked.clone();
        other_fk.fk = B64(vec![0; 32]);
        assert!(check(&provider, &v, &group, &c, &other_fk.encode(), &key).is_err());
        // Signed by someone else, or for another group.
        let stranger = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        assert!(check(&provider, &v, &group, &c, &plain, stranger.public()).is_err());
        assert!(check(&provider, &v, &[8u8; 16], &c, &plain, &key).is_err());
        // Not a franked payload at all.
        assert!(check(&provider, &v, &group, &c, b"{\"text\":\"hi\"}", &key).is_err());
    }
}
