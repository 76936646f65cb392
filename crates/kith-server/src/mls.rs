//! What the server checks of MLS data. It holds no group secrets: it can parse framing, read
//! group ids and epochs, and verify KeyPackage signatures, nothing more.

use kith_proto::ErrorCode;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::error::ApiError;

/// The ciphersuite every Kith client uses.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

fn invalid_kp(why: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidKeyPackage, why)
}

/// Checks that `bytes` is one valid, correctly signed KeyPackage of our ciphersuite, whose
/// credential names `username` and whose signature key is the device's `credential_key`.
pub fn check_key_package(
    crypto: &OpenMlsRustCrypto,
    bytes: &[u8],
    username: &str,
    credential_key: &[u8],
) -> Result<(), ApiError> {
    let kp = KeyPackageIn::tls_deserialize_exact(bytes)
        .map_err(|_| invalid_kp("a KeyPackage does not parse"))?;
    let kp = kp.validate(crypto.crypto(), ProtocolVersion::Mls10).map_err(|e| {
        tracing::debug!(error = %e, "a KeyPackage does not verify");
        invalid_kp("a KeyPackage does not verify")
    })?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(invalid_kp("a KeyPackage uses a ciphersuite this server does not speak"));
    }
    let leaf = kp.leaf_node();
    let credential = BasicCredential::try_from(leaf.credential().clone())
        .map_err(|_| invalid_kp("a KeyPackage's credential is not a basic credential"))?;
    if credential.identity() != username.as_bytes() {
        return Err(invalid_kp("a KeyPackage's credential names another user"));
    }
    if leaf.signature_key().as_slice() != credential_key {
        return Err(invalid_kp("a KeyPackage is signed by a key that is not this device's"));
    }
    Ok(())
}

/// An Ed25519 public key is 32 bytes.
pub fn check_credential_key(key: &[u8]) -> Result<(), ApiError> {
    if key.len() == 32 {
        Ok(())
    } else {
        Err(invalid_kp("the credential key must be a 32-byte Ed25519 public key"))
    }
}

fn invalid_message(why: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidMessage, why)
}

/// Checks that `bytes` is an MLS Welcome.
pub fn check_welcome(bytes: &[u8]) -> Result<(), ApiError> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|_| invalid_message("the welcome is not an MLS message"))?;
    match msg.extract() {
        MlsMessageBodyIn::Welcome(_) => Ok(()),
        _ => Err(invalid_message("the welcome is an MLS message but not a Welcome")),
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
pub fn check_application_message(bytes: &[u8], group_id: &[u8]) -> Result<Framing, ApiError> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|_| invalid_message("the message is not an MLS message"))?;
    let only_applications = || {
        invalid_message(
            "only application messages are posted here; commits and proposals go to \
             /v1/conversations/{id}/handshake as MLS PublicMessages",
        )
    };
    let message = match msg.extract() {
        MlsMessageBodyIn::PrivateMessage(m) => m,
        MlsMessageBodyIn::PublicMessage(_) => return Err(only_applications()),
        _ => {
            return Err(invalid_message(
                "the message is neither a public nor a private MLS message",
            ));
        }
    };
    if message.group_id().as_slice() != group_id {
        return Err(invalid_message("the message belongs to another conversation"));
    }
    if message.content_type() != ContentType::Application {
        return Err(only_applications());
    }
    Ok(Framing {
        epoch: message.epoch().as_u64(),
        committed: crate::safety::franking::committed_parts(&message),
    })
}
