//! OpenMLS over the profile's SQLite file.

use kith_proto::account::DeviceCertificate;
use kith_proto::{GroupMeta, group::GROUP_META_EXTENSION};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use rusqlite::Connection;

use crate::error::{ClientError, ClientResult};

/// The one ciphersuite Kith speaks.
pub use kith_proto::keypackage::CIPHERSUITE;
/// What every Kith leaf supports (shared with the server's KeyPackage rule).
pub use kith_proto::keypackage::capabilities;

/// OpenMLS's stored values as JSON.
#[derive(Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

pub type Storage<'a> = SqliteStorageProvider<JsonCodec, &'a Connection>;

/// An OpenMLS provider borrowing the profile's connection; made per operation, never held
/// across an await.
pub struct Provider<'a> {
    crypto: &'a RustCrypto,
    storage: Storage<'a>,
}

impl<'a> Provider<'a> {
    pub fn new(crypto: &'a RustCrypto, conn: &'a Connection) -> Self {
        Provider { crypto, storage: SqliteStorageProvider::new(conn) }
    }
}

impl<'a> OpenMlsProvider for Provider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = Storage<'a>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        self.crypto
    }
}

/// Creates OpenMLS's tables.
pub fn migrate(conn: &mut Connection) -> ClientResult<()> {
    let mut storage = SqliteStorageProvider::<JsonCodec, &mut Connection>::new(conn);
    storage.run_migrations().map_err(ClientError::mls)
}

/// How many past epochs' keys a device keeps, for messages in flight across commits; an
/// older message can no longer be read (forward secrecy).
pub const MAX_PAST_EPOCHS: usize = 3;

/// Handshakes in the clear for the server to validate — sent and accepted only so —,
/// application messages encrypted; tolerance for messages in flight across a commit.
pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(64, 1000))
        .build()
}

/// The group context's extensions: `meta`, and the requirement that every member support it.
/// (A group-context-extensions commit replaces the whole list, so both always travel together.)
pub fn meta_extensions(meta: &GroupMeta) -> ClientResult<Extensions<GroupContext>> {
    let kith = ExtensionType::Unknown(GROUP_META_EXTENSION);
    Extensions::from_vec(vec![
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(&[kith], &[], &[])),
        Extension::Unknown(GROUP_META_EXTENSION, UnknownExtension(meta.encode())),
    ])
    .map_err(ClientError::mls)
}

/// The Kith extension of a group's current context.
pub fn meta_of(group: &MlsGroup) -> Option<GroupMeta> {
    group.extensions().unknown(GROUP_META_EXTENSION).and_then(|e| GroupMeta::decode(&e.0))
}

/// The Kith extension of a group context (a commit's, before it is merged).
pub fn meta_of_context(context: &GroupContext) -> Option<GroupMeta> {
    context.extensions().unknown(GROUP_META_EXTENSION).and_then(|e| GroupMeta::decode(&e.0))
}

/// This device's leaf's extensions: its certificate, when the account has a key.
pub fn leaf_extensions(
    certificate: Option<&DeviceCertificate>,
) -> ClientResult<Extensions<LeafNode>> {
    certificate
        .map(|c| kith_proto::keypackage::leaf_extensions(c).map_err(ClientError::mls))
        .transpose()
        .map(Option::unwrap_or_default)
}

pub fn create_config(
    meta: &GroupMeta,
    certificate: Option<&DeviceCertificate>,
) -> ClientResult<MlsGroupCreateConfig> {
    Ok(MlsGroupCreateConfig::builder()
        .capabilities(capabilities())
        .with_leaf_node_extensions(leaf_extensions(certificate)?)
        .map_err(ClientError::mls)?
        .with_group_context_extensions(meta_extensions(meta)?)
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(64, 1000))
        .build())
}

pub fn credential(username: &str, signer: &SignatureKeyPair) -> CredentialWithKey {
    CredentialWithKey {
        credential: BasicCredential::new(username.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    }
}

pub fn load_signer(provider: &Provider<'_>, public: &[u8]) -> ClientResult<SignatureKeyPair> {
    SignatureKeyPair::read(provider.storage(), public, SignatureScheme::ED25519).ok_or_else(|| {
        ClientError::Mls("the device's signature key is missing from the profile".into())
    })
}

/// `count` one-time KeyPackages, TLS-serialized, each carrying the device's certificate when
/// it has one; their private keys stay in the profile.
pub fn key_packages(
    provider: &Provider<'_>,
    signer: &SignatureKeyPair,
    username: &str,
    certificate: Option<&DeviceCertificate>,
    count: usize,
    last_resort: bool,
) -> ClientResult<Vec<Vec<u8>>> {
    use openmls::prelude::tls_codec::Serialize as _;
    let extensions = leaf_extensions(certificate)?;
    (0..count)
        .map(|_| {
            // A KeyPackage must list the extensions it carries among its capabilities.
            let mut builder = KeyPackage::builder()
                .leaf_node_capabilities(capabilities())
                .leaf_node_extensions(extensions.clone());
            if last_resort {
                builder = builder.mark_as_last_resort();
            }
            let bundle = builder
                .build(CIPHERSUITE, provider, signer, credential(username, signer))
                .map_err(ClientError::mls)?;
            bundle.key_package().tls_serialize_detached().map_err(ClientError::mls)
        })
        .collect()
}

/// Whether this device's own leaf in `group` carries a device certificate.
pub fn carries_certificate(group: &MlsGroup) -> bool {
    group.own_leaf_node().is_some_and(|leaf| {
        leaf.extensions().unknown(kith_proto::account::DEVICE_CERTIFICATE_EXTENSION).is_some()
    })
}

/// The leaf parameters for this device's next commit in `group`: its certificate and Kith's
/// capabilities, when the device has a certificate its leaf does not carry yet (a profile
/// from before account keys); none otherwise (the leaf keeps what it has).
pub fn certifying_leaf(
    group: &MlsGroup,
    certificate: Option<&DeviceCertificate>,
) -> ClientResult<LeafNodeParameters> {
    match certificate {
        Some(c) if !carries_certificate(group) => Ok(LeafNodeParameters::builder()
            .with_capabilities(capabilities())
            .with_extensions(leaf_extensions(Some(c))?)
            .build()),
        _ => Ok(LeafNodeParameters::default()),
    }
}

/// The username a credential names, if it is a basic credential of valid UTF-8.
pub fn identity(credential: &Credential) -> Option<String> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    String::from_utf8(basic.identity().to_vec()).ok()
}
