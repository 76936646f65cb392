//! What the server checks of MLS data. It holds no group secrets: it can parse framing, read
//! group ids and epochs, and verify KeyPackage signatures, nothing more.

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::OpenMlsRustCrypto;

/// The ciphersuite every Kith client uses.
pub use kith_proto::keypackage::CIPHERSUITE;
pub use kith_proto::keypackage::{Owner, Slot};

/// Why an uploaded KeyPackage was refused (`invalid_key_package`).
#[derive(Debug, thiserror::Error)]
pub enum KeyPackageRefusal {
    /// It breaks the shared rule (`kith_proto::keypackage`).
    #[error("{}", rule_text(*.0))]
    Rule(kith_proto::keypackage::Unusable),
    /// It is signed by another key than the device's.
    #[error("a KeyPackage is signed by a key that is not this device's")]
    NotThisDevice,
    /// It is in date, but too close to its ends to be handed out safely.
    #[error("{OUT_OF_DATE}")]
    NearItsEnds,
}

const OUT_OF_DATE: &str = "a KeyPackage is out of date (or about to be): check this device's clock";

/// The shared rule's words, but for a KeyPackage out of its lifetime: the uploader's clock is
/// the likely cause, and it is told so.
fn rule_text(rule: kith_proto::keypackage::Unusable) -> String {
    match rule {
        kith_proto::keypackage::Unusable::OutOfLifetime => OUT_OF_DATE.to_string(),
        other => other.to_string(),
    }
}

impl KeyPackageRefusal {
    /// Whether it counts against the uploader: only what no Kith client makes does. A device
    /// whose clock is off makes KeyPackages out of date, and is told so without a penalty.
    pub fn blames_uploader(&self) -> bool {
        !matches!(
            self,
            KeyPackageRefusal::Rule(kith_proto::keypackage::Unusable::OutOfLifetime)
                | KeyPackageRefusal::NearItsEnds
        )
    }
}

/// A KeyPackage the server takes or hands out must have begun this long ago and stay good this
/// much longer, so that a claimer whose clock is a little off never meets one it must refuse
/// (OpenMLS makes them valid from an hour ago, for twelve weeks).
const BEGUN_AGO: u64 = 10 * 60;
const GOOD_FOR: u64 = 24 * 3600;

fn clear_of_its_ends(kp: &KeyPackage) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let life = kp.life_time();
    life.not_before().saturating_add(BEGUN_AGO) <= now
        && life.not_after() >= now.saturating_add(GOOD_FOR)
}

/// Checks that `bytes` is a KeyPackage every Kith group can add (the shared rule,
/// `kith_proto::keypackage`), uploaded into `slot`, of `owner` (its credential, and its
/// certificate when the account has a key) and whose signature key is the device's
/// `credential_key`, and clear of the ends of its lifetime.
pub fn check_key_package(
    crypto: &OpenMlsRustCrypto,
    bytes: &[u8],
    owner: &Owner<'_>,
    credential_key: &[u8],
    slot: Slot,
) -> Result<(), KeyPackageRefusal> {
    let kp = kith_proto::keypackage::check(crypto.crypto(), bytes, owner, Some(slot))
        .map_err(KeyPackageRefusal::Rule)?;
    if kp.leaf_node().signature_key().as_slice() != credential_key {
        return Err(KeyPackageRefusal::NotThisDevice);
    }
    if !clear_of_its_ends(&kp) {
        return Err(KeyPackageRefusal::NearItsEnds);
    }
    Ok(())
}

/// Whether a stored KeyPackage may be handed out now: the shared rule again (it may have
/// expired since it was uploaded, or have been stored before the rule was this strict), and
/// clear of the ends of its lifetime.
pub fn usable_now(crypto: &OpenMlsRustCrypto, bytes: &[u8], owner: &Owner<'_>) -> bool {
    kith_proto::keypackage::check(crypto.crypto(), bytes, owner, None)
        .is_ok_and(|kp| clear_of_its_ends(&kp))
}

/// An Ed25519 public key is 32 bytes.
pub fn is_credential_key(key: &[u8]) -> bool {
    key.len() == 32
}

/// Why a posted Welcome or application message was refused (`invalid_message`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("the welcome is not an MLS message")]
    WelcomeNotMls,
    #[error("the welcome is an MLS message but not a Welcome")]
    NotAWelcome,
    #[error("the message is not an MLS message")]
    NotMls,
    #[error(
        "only application messages are posted here; commits and proposals go to \
         /v1/conversations/{{id}}/handshake as MLS PublicMessages"
    )]
    OnlyApplications,
    #[error("the message is neither a public nor a private MLS message")]
    NotPublicOrPrivate,
    #[error("the message belongs to another conversation")]
    OtherConversation,
}

/// Checks that `bytes` is an MLS Welcome.
pub fn check_welcome(bytes: &[u8]) -> Result<(), FramingError> {
    let msg =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| FramingError::WelcomeNotMls)?;
    match msg.extract() {
        MlsMessageBodyIn::Welcome(_) => Ok(()),
        _ => Err(FramingError::NotAWelcome),
    }
}

/// What the server reads of an application message, once, when it is posted.
#[derive(Debug)]
pub struct Framing {
    pub epoch: u64,
    /// What its franking tags are computed from (see [`crate::safety::franking`]); `None` when
    /// the message carries no commitment (it is delivered untagged, and clients drop it).
    pub committed: Option<crate::safety::franking::Committed>,
}

/// Checks that `bytes` is an MLS application message of `group_id`: a `PrivateMessage` whose
/// (authenticated) content type is `application`. Anything else — a commit or proposal, in
/// either wire format — is refused here, so the only door for a change to the group is the
/// handshake route, where it is validated.
pub fn check_application_message(bytes: &[u8], group_id: &[u8]) -> Result<Framing, FramingError> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| FramingError::NotMls)?;
    let message = match msg.extract() {
        MlsMessageBodyIn::PrivateMessage(m) => m,
        MlsMessageBodyIn::PublicMessage(_) => return Err(FramingError::OnlyApplications),
        _ => return Err(FramingError::NotPublicOrPrivate),
    };
    if message.group_id().as_slice() != group_id {
        return Err(FramingError::OtherConversation);
    }
    if message.content_type() != ContentType::Application {
        return Err(FramingError::OnlyApplications);
    }
    Ok(Framing {
        epoch: message.epoch().as_u64(),
        committed: crate::safety::franking::committed_parts(&message),
    })
}
