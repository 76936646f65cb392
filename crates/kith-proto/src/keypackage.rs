//! What a usable Kith KeyPackage is (feature `mls`).
//!
//! One rule, in one place, applied three times: by `kithd` when a device uploads a KeyPackage,
//! by `kithd` again when it hands one out (a KeyPackage stored before this rule, or one that
//! expired since, is dropped then), and by every client when it claims one. Because the server
//! never hands out a KeyPackage this rule refuses, a claimer's client never meets one it must
//! refuse from an honest server, and a claim is never charged for a KeyPackage nobody could use.
//!
//! A KeyPackage is usable when a Kith group can add it: it parses exactly and verifies (its
//! signatures, the protocol version, its lifetime now); it uses Kith's ciphersuite and a basic
//! credential naming its account; its leaf's capabilities list everything every Kith group
//! requires (the ciphersuite, the basic credential, the Kith group-context extension, and the
//! last-resort extension it may carry); its leaf carries the device's certificate, signed by
//! its account's key, exactly when the account has one ([`leaf_certificate`]); it carries no
//! extension Kith does not know; its lifetime
//! is no longer than OpenMLS's default; its init key and its leaf's encryption key are keys HPKE
//! can encrypt to; and it is marked last-resort exactly when it is uploaded as one.

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _, VLBytes};
use openmls::prelude::*;
use openmls::treesync::LeafNodeSource;
use openmls_traits::crypto::OpenMlsCrypto;

use crate::account::{CertificateError, DEVICE_CERTIFICATE_EXTENSION, DeviceCertificate};
use crate::group::GROUP_META_EXTENSION;

/// The one ciphersuite Kith speaks.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// The Kith group-context extension, which every Kith group requires of its members.
pub fn kith_extension() -> ExtensionType {
    ExtensionType::Unknown(GROUP_META_EXTENSION)
}

/// The leaf extension that carries a device's certificate.
pub fn certificate_extension() -> ExtensionType {
    ExtensionType::Unknown(DEVICE_CERTIFICATE_EXTENSION)
}

/// What every Kith leaf supports beyond the defaults: last-resort KeyPackages, the Kith
/// group-context extension and the device certificate. (A leaf must list the extensions it
/// carries, and every member must support the group context's extensions.)
pub fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        None,
        Some(&[ExtensionType::LastResort, kith_extension(), certificate_extension()]),
        None,
        None,
    )
}

/// A leaf's extensions: its device's certificate.
pub fn leaf_extensions(
    certificate: &DeviceCertificate,
) -> Result<Extensions<LeafNode>, InvalidExtensionError> {
    Extensions::single(Extension::Unknown(
        DEVICE_CERTIFICATE_EXTENSION,
        UnknownExtension(certificate.encode()),
    ))
}

/// Whose a KeyPackage or a leaf must be: an account, its account key as the checker knows it
/// (`None`: an account from before account keys), and the device when the checker knows which.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    pub account: &'a str,
    pub account_key: Option<&'a [u8]>,
    pub device: Option<u64>,
}

/// The certificate `leaf` carries, checked against its owner: present and signed by the
/// account's key for this account, this device and the leaf's own signature key when the
/// account has a key; absent when it has none (nothing unverifiable is taken). A leaf's
/// credential naming its account is the caller's part ([`check`] does it for KeyPackages).
pub fn leaf_certificate(
    leaf: &LeafNode,
    owner: &Owner<'_>,
) -> Result<Option<DeviceCertificate>, CertificateError> {
    let carried = leaf.extensions().unknown(DEVICE_CERTIFICATE_EXTENSION);
    match (owner.account_key, carried) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(CertificateError::NoAccountKey),
        (Some(_), None) => Err(CertificateError::Missing),
        (Some(key), Some(ext)) => {
            let cert = DeviceCertificate::decode(&ext.0)?;
            cert.verify_for(key, owner.account, owner.device, leaf.signature_key().as_slice())?;
            Ok(Some(cert))
        }
    }
}

/// Whether `leaf`, a member's, is left over from before its account's key changed: it carries
/// a certificate that `account_key`, the account's key now, did not sign (its account was
/// recovered and started again with new devices). Any member may remove such a leaf, and
/// add the account's new devices in its place; the server and every client judge it alike.
pub fn is_stale(leaf: &LeafNode, account: &str, account_key: &[u8]) -> bool {
    let owner = Owner { account, account_key: Some(account_key), device: None };
    leaf.extensions().unknown(DEVICE_CERTIFICATE_EXTENSION).is_some()
        && leaf_certificate(leaf, &owner).is_err()
}

/// Which of a device's KeyPackages this is meant to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Used once, then deleted.
    OneTime,
    /// Handed out when the one-time ones are gone (or the hourly budget is spent); kept.
    LastResort,
}

/// Why a KeyPackage cannot be used by a Kith group. Each has a plain sentence ([`Display`]).
///
/// [`Display`]: std::fmt::Display
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Not one TLS-encoded KeyPackage.
    Malformed,
    /// A signature, the protocol version or the init key does not verify.
    DoesNotVerify,
    /// Its lifetime is over, or has not begun.
    OutOfLifetime,
    /// Its lifetime is longer than a KeyPackage may live.
    LifetimeTooLong,
    /// Another ciphersuite than Kith's.
    Ciphersuite,
    /// Not a basic credential.
    Credential,
    /// Its credential names another account.
    WrongAccount,
    /// Its leaf does not support something every Kith group requires.
    Capabilities,
    /// It carries an extension Kith does not know.
    Extensions,
    /// Marked last-resort where a one-time KeyPackage was expected, or the other way round.
    LastResortMark,
    /// Its init key or its leaf's encryption key is not a key anything can be encrypted to.
    Keys,
    /// Its device certificate is missing, does not verify, or is not its account's to carry.
    Certificate(CertificateError),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unusable::Malformed => "a KeyPackage does not parse",
            Unusable::DoesNotVerify => "a KeyPackage does not verify",
            Unusable::OutOfLifetime => "a KeyPackage is expired or not valid yet",
            Unusable::LifetimeTooLong => "a KeyPackage's lifetime is longer than allowed",
            Unusable::Ciphersuite => "a KeyPackage uses a ciphersuite Kith does not speak",
            Unusable::Credential => "a KeyPackage's credential is not a basic credential",
            Unusable::WrongAccount => "a KeyPackage's credential names another account",
            Unusable::Capabilities => {
                "a KeyPackage lacks a capability every Kith group requires (its ciphersuite, \
                 the basic credential or the Kith extension)"
            }
            Unusable::Extensions => "a KeyPackage carries an extension Kith does not know",
            Unusable::LastResortMark => {
                "a KeyPackage's last-resort mark does not match where it was uploaded"
            }
            Unusable::Keys => "a KeyPackage's encryption keys cannot be encrypted to",
            Unusable::Certificate(e) => return write!(f, "a KeyPackage is refused: {e}"),
        })
    }
}

impl std::error::Error for Unusable {}

/// Checks that `bytes` is a KeyPackage of `owner` that every Kith group can add (see the
/// module's header), and returns it parsed. `slot`, when known, is where it was uploaded: a
/// last-resort KeyPackage must be marked so and a one-time one must not. Checking the
/// device's own signature key against a registered one is the caller's part.
pub fn check(
    crypto: &impl OpenMlsCrypto,
    bytes: &[u8],
    owner: &Owner<'_>,
    slot: Option<Slot>,
) -> Result<KeyPackage, Unusable> {
    let account = owner.account;
    let kp = KeyPackageIn::tls_deserialize_exact(bytes).map_err(|_| Unusable::Malformed)?;
    let kp = kp.validate(crypto, ProtocolVersion::Mls10).map_err(|e| match e {
        KeyPackageVerifyError::LifetimeError(_) | KeyPackageVerifyError::MissingLifetime => {
            Unusable::OutOfLifetime
        }
        KeyPackageVerifyError::UnsupportedExtension
        | KeyPackageVerifyError::ExtensionTypeNotValidInKeyPackage(_) => Unusable::Extensions,
        _ => Unusable::DoesNotVerify,
    })?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(Unusable::Ciphersuite);
    }
    let leaf = kp.leaf_node();
    match leaf.leaf_node_source() {
        LeafNodeSource::KeyPackage(lifetime) if lifetime.has_acceptable_range() => {}
        LeafNodeSource::KeyPackage(_) => return Err(Unusable::LifetimeTooLong),
        _ => return Err(Unusable::DoesNotVerify),
    }
    let credential =
        BasicCredential::try_from(leaf.credential().clone()).map_err(|_| Unusable::Credential)?;
    if credential.identity() != account.as_bytes() {
        return Err(Unusable::WrongAccount);
    }
    let caps = leaf.capabilities();
    let supports = caps.versions().contains(&ProtocolVersion::Mls10)
        && caps.ciphersuites().contains(&VerifiableCiphersuite::from(CIPHERSUITE))
        && caps.credentials().contains(&CredentialType::Basic)
        && caps.extensions().contains(&kith_extension())
        && caps.extensions().contains(&ExtensionType::LastResort);
    if !supports {
        return Err(Unusable::Capabilities);
    }
    // Kith puts only the device certificate in a leaf's extensions, and only the last-resort
    // mark in a KeyPackage's: anything else is from a client that is not Kith's.
    if leaf.extensions().iter().any(|e| e.extension_type() != certificate_extension())
        || kp.extensions().iter().any(|e| e.extension_type() != ExtensionType::LastResort)
    {
        return Err(Unusable::Extensions);
    }
    leaf_certificate(leaf, owner).map_err(Unusable::Certificate)?;
    // A Welcome is encrypted to the init key, and every later commit's path to the leaf's
    // encryption key: both must be keys HPKE can encrypt to (not short, not a low-order point).
    let leaf_key = leaf
        .encryption_key()
        .tls_serialize_detached()
        .ok()
        .and_then(|b| VLBytes::tls_deserialize_exact(&b).ok());
    let usable = |key: &[u8]| {
        key.len() == 32
            && crypto.hpke_seal(CIPHERSUITE.hpke_config(), key, b"kith key check", b"", b"").is_ok()
    };
    if !usable(kp.hpke_init_key().key().as_slice())
        || !leaf_key.is_some_and(|k| usable(k.as_slice()))
    {
        return Err(Unusable::Keys);
    }
    match slot {
        Some(Slot::OneTime) if kp.last_resort() => return Err(Unusable::LastResortMark),
        Some(Slot::LastResort) if !kp.last_resort() => return Err(Unusable::LastResortMark),
        _ => {}
    }
    Ok(kp)
}
