//! The KeyPackage rule (`kith_proto::keypackage`), one refusal per thing a Kith group requires:
//! what the server checks at upload and hand-out and every client at claim.

#![cfg(feature = "mls")]
#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use kith_proto::account::{CertificateError, DeviceCertificate};
use kith_proto::keypackage::{
    CIPHERSUITE, Owner, Slot, Unusable, capabilities, check, kith_extension, leaf_extensions,
};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

/// A KeyPackage of `name`'s, from a builder `build` shapes, in `suite`.
fn made(
    name: &str,
    suite: Ciphersuite,
    build: impl FnOnce(KeyPackageBuilder) -> KeyPackageBuilder,
) -> Vec<u8> {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(suite.signature_algorithm()).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    build(KeyPackage::builder())
        .build(suite, &provider, &signer, credential)
        .unwrap()
        .key_package()
        .tls_serialize_detached()
        .unwrap()
}

fn kith(build: impl FnOnce(KeyPackageBuilder) -> KeyPackageBuilder) -> Vec<u8> {
    made("ana", CIPHERSUITE, |b| build(b.leaf_node_capabilities(capabilities())))
}

fn verdict(bytes: &[u8], slot: Option<Slot>) -> Result<(), Unusable> {
    let crypto = OpenMlsRustCrypto::default();
    let owner = Owner { account: "ana", account_key: None, device: None };
    check(crypto.crypto(), bytes, &owner, slot).map(|_| ())
}

#[test]
fn a_kith_key_package_is_usable_in_its_slot() {
    assert_eq!(verdict(&kith(|b| b), Some(Slot::OneTime)), Ok(()));
    assert_eq!(verdict(&kith(|b| b), None), Ok(()));
    assert_eq!(verdict(&kith(|b| b.mark_as_last_resort()), Some(Slot::LastResort)), Ok(()));
}

#[test]
fn the_last_resort_mark_must_match_the_slot() {
    assert_eq!(verdict(&kith(|b| b), Some(Slot::LastResort)), Err(Unusable::LastResortMark));
    assert_eq!(
        verdict(&kith(|b| b.mark_as_last_resort()), Some(Slot::OneTime)),
        Err(Unusable::LastResortMark)
    );
}

#[test]
fn a_key_package_without_the_kith_extension_is_refused() {
    // The poisoned KeyPackage of the review: valid MLS, but no Kith group can add it.
    let caps = Capabilities::new(None, None, Some(&[ExtensionType::LastResort]), None, None);
    let poisoned =
        made("ana", CIPHERSUITE, |b| b.leaf_node_capabilities(caps).mark_as_last_resort());
    assert_eq!(verdict(&poisoned, Some(Slot::LastResort)), Err(Unusable::Capabilities));
    // Nor without the ciphersuite among its capabilities.
    let caps = Capabilities::new(
        None,
        Some(&[Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519]),
        Some(&[ExtensionType::LastResort, kith_extension()]),
        None,
        None,
    );
    let narrow = made("ana", CIPHERSUITE, |b| b.leaf_node_capabilities(caps));
    assert_eq!(verdict(&narrow, None), Err(Unusable::Capabilities));
}

#[test]
fn another_ciphersuite_is_refused() {
    let other = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;
    let caps = Capabilities::new(
        None,
        Some(&[other, CIPHERSUITE]),
        Some(&[ExtensionType::LastResort, kith_extension()]),
        None,
        None,
    );
    let bytes = made("ana", other, |b| b.leaf_node_capabilities(caps));
    assert_eq!(verdict(&bytes, None), Err(Unusable::Ciphersuite));
}

#[test]
fn unknown_extensions_are_refused() {
    let odd = ExtensionType::Unknown(0xF00D);
    let caps = Capabilities::new(
        None,
        None,
        Some(&[ExtensionType::LastResort, kith_extension(), odd]),
        None,
        None,
    );
    let in_kp = made("ana", CIPHERSUITE, |b| {
        b.leaf_node_capabilities(caps.clone()).key_package_extensions(
            Extensions::single(Extension::Unknown(0xF00D, UnknownExtension(vec![1, 2, 3])))
                .unwrap(),
        )
    });
    assert_eq!(verdict(&in_kp, None), Err(Unusable::Extensions));
    let in_leaf = made("ana", CIPHERSUITE, |b| {
        b.leaf_node_capabilities(caps).leaf_node_extensions(
            Extensions::single(Extension::Unknown(0xF00D, UnknownExtension(vec![1]))).unwrap(),
        )
    });
    assert_eq!(verdict(&in_leaf, None), Err(Unusable::Extensions));
}

#[test]
fn lifetimes_are_checked() {
    let expired = kith(|b| b.key_package_lifetime(Lifetime::init(1, 2)));
    assert_eq!(verdict(&expired, None), Err(Unusable::OutOfLifetime));
    let forever = kith(|b| b.key_package_lifetime(Lifetime::new(10 * 365 * 24 * 3600)));
    assert_eq!(verdict(&forever, None), Err(Unusable::LifetimeTooLong));
}

#[test]
fn another_account_garbage_and_truncation_are_refused() {
    let bytes = kith(|b| b);
    let crypto = OpenMlsRustCrypto::default();
    assert_eq!(
        check(
            crypto.crypto(),
            &bytes,
            &Owner { account: "ben", account_key: None, device: None },
            None
        )
        .map(|_| ()),
        Err(Unusable::WrongAccount)
    );
    assert_eq!(verdict(b"not a key package", None), Err(Unusable::Malformed));
    assert_eq!(verdict(&bytes[..bytes.len() - 1], None), Err(Unusable::Malformed));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(verdict(&flipped, None), Err(Unusable::DoesNotVerify));
}

/// A KeyPackage of ana's device 7 whose leaf carries the certificate `certify` makes for the
/// device's own signature key.
fn certified(certify: impl FnOnce(&[u8]) -> DeviceCertificate) -> Vec<u8> {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(b"ana".to_vec()).into(),
        signature_key: signer.public().into(),
    };
    KeyPackage::builder()
        .leaf_node_capabilities(capabilities())
        .leaf_node_extensions(leaf_extensions(&certify(signer.public())).unwrap())
        .build(CIPHERSUITE, &provider, &signer, credential)
        .unwrap()
        .key_package()
        .tls_serialize_detached()
        .unwrap()
}

fn account_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn verdict_for(bytes: &[u8], key: Option<&[u8]>, device: Option<u64>) -> Result<(), Unusable> {
    let crypto = OpenMlsRustCrypto::default();
    let owner = Owner { account: "ana", account_key: key, device };
    check(crypto.crypto(), bytes, &owner, None).map(|_| ())
}

#[test]
fn a_key_package_carries_its_device_certificate_exactly_when_the_account_has_a_key() {
    let ana = account_key(1);
    let public = kith_proto::account::public_key(&ana);
    let good = certified(|key| DeviceCertificate::sign(&ana, "ana", 7, key, 5));
    assert_eq!(verdict_for(&good, Some(&public), Some(7)), Ok(()));
    assert_eq!(verdict_for(&good, Some(&public), None), Ok(()));
    let refused = |e| Err(Unusable::Certificate(e));
    // Another device's place, another account's key, an account without a key.
    assert_eq!(verdict_for(&good, Some(&public), Some(8)), refused(CertificateError::OtherDevice));
    let mallory = kith_proto::account::public_key(&account_key(2));
    assert_eq!(
        verdict_for(&good, Some(&mallory), Some(7)),
        refused(CertificateError::BadSignature)
    );
    assert_eq!(verdict_for(&good, None, Some(7)), refused(CertificateError::NoAccountKey));
    // Uncertified, for an account that has a key.
    assert_eq!(
        verdict_for(&kith(|b| b), Some(&public), Some(7)),
        refused(CertificateError::Missing)
    );
    // A certificate the account key signed, but for another signature key (a device key the
    // account never certified, carrying a certificate copied from one it did).
    let copied = certified(|_| DeviceCertificate::sign(&ana, "ana", 7, &[9; 32], 5));
    assert_eq!(verdict_for(&copied, Some(&public), Some(7)), refused(CertificateError::OtherKey));
    // Signed by the right key for another account's name.
    let bob = certified(|key| DeviceCertificate::sign(&ana, "bob", 7, key, 5));
    assert_eq!(verdict_for(&bob, Some(&public), Some(7)), refused(CertificateError::OtherAccount));
    // Forged: a signature by a key that is not the account's.
    let forged = certified(|key| DeviceCertificate::sign(&account_key(2), "ana", 7, key, 5));
    assert_eq!(
        verdict_for(&forged, Some(&public), Some(7)),
        refused(CertificateError::BadSignature)
    );
}
