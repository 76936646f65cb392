//! A conversation's settings as MLS epoch state (see [`kith_proto::settings`]): sealing them
//! into a commit, opening them from one, and reading them from a Welcome.

use kith_proto::settings::{
    EXPORTER_LABEL, SETTINGS_EXTENSION, Sealed, Settings, digest as settings_digest,
};
use kith_proto::{B64, GroupMeta};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::random::OpenMlsRand;
use openmls_traits::types::AeadType;

use crate::error::{ClientError, ClientResult};
use crate::mls::Provider;

/// Settings with their record and the record's digest.
pub(crate) struct Committed {
    pub settings: Settings,
    pub record: Vec<u8>,
    pub digest: String,
}

impl Committed {
    /// `settings` with a fresh salt.
    pub fn new(provider: &Provider<'_>, settings: Settings) -> ClientResult<Self> {
        let salt: [u8; 32] = provider.rand().random_array().map_err(ClientError::mls)?;
        let record = settings.record(salt);
        Ok(Committed { digest: settings_digest(&record), settings, record })
    }
}

/// The key every member of the group's current epoch exports for sealing settings.
fn epoch_key(provider: &Provider<'_>, group: &MlsGroup) -> ClientResult<Vec<u8>> {
    group.export_secret(provider.crypto(), EXPORTER_LABEL, b"", 32).map_err(ClientError::mls)
}

/// Seals `record` for the members of the group's current epoch: the authenticated data of a
/// commit made in it.
pub(crate) fn seal(
    provider: &Provider<'_>,
    group: &MlsGroup,
    record: &[u8],
) -> ClientResult<Vec<u8>> {
    let key = epoch_key(provider, group)?;
    let nonce = provider.rand().random_vec(12).map_err(ClientError::mls)?;
    let ad = Sealed::associated_data(group.group_id().as_slice(), group.epoch().as_u64());
    let ct = provider
        .crypto()
        .aead_encrypt(AeadType::ChaCha20Poly1305, &key, record, &nonce, &ad)
        .map_err(ClientError::mls)?;
    Ok(Sealed { nonce: B64(nonce), ct: B64(ct) }.encode())
}

/// Opens the settings a commit made in the group's current epoch carries in `aad`, and checks
/// them against `digest`, the one its new context holds. `None` if they cannot be opened or
/// do not match: the committer broke the protocol.
pub(crate) fn open(
    provider: &Provider<'_>,
    group: &MlsGroup,
    aad: &[u8],
    digest: &str,
) -> Option<(Settings, Vec<u8>)> {
    let sealed = Sealed::decode(aad)?;
    let key = epoch_key(provider, group).ok()?;
    let ad = Sealed::associated_data(group.group_id().as_slice(), group.epoch().as_u64());
    let record = provider
        .crypto()
        .aead_decrypt(AeadType::ChaCha20Poly1305, &key, &sealed.ct.0, &sealed.nonce.0, &ad)
        .ok()?;
    checked(record, digest)
}

/// A record, if it is well formed and has `digest`.
pub(crate) fn checked(record: Vec<u8>, digest: &str) -> Option<(Settings, Vec<u8>)> {
    if settings_digest(&record) != digest {
        return None;
    }
    Settings::from_record(&record).map(|s| (s, record))
}

/// The GroupInfo extension that carries `record` to joiners.
pub(crate) fn welcome_extension(record: &[u8]) -> Extension {
    Extension::Unknown(SETTINGS_EXTENSION, UnknownExtension(record.to_vec()))
}

/// The record a Welcome's GroupInfo carries, if any.
pub(crate) fn from_welcome(welcome: &ProcessedWelcome) -> Option<Vec<u8>> {
    welcome.unverified_group_info().extensions().unknown(SETTINGS_EXTENSION).map(|e| e.0.clone())
}

/// The settings digest of a group's context.
pub(crate) fn digest_of(meta: Option<&GroupMeta>) -> Option<&str> {
    meta.and_then(|m| m.settings.as_deref())
}
