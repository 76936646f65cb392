//! The same group operations in raw OpenMLS, in memory, with no server: the floor Kith is
//! measured against.

use std::time::Instant;

use kith_client::CIPHERSUITE;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

struct Party {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl Party {
    fn new(name: &str) -> anyhow::Result<Self> {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519)?;
        signer.store(provider.storage())?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Ok(Party { provider, signer, credential })
    }

    fn key_package(&self) -> anyhow::Result<KeyPackage> {
        Ok(KeyPackage::builder()
            .build(CIPHERSUITE, &self.provider, &self.signer, self.credential.clone())?
            .key_package()
            .clone())
    }
}

pub struct RawGroup {
    pub add_commit_ms: f64,
    pub commit_bytes: usize,
    pub welcome_bytes: usize,
    pub join_ms: f64,
    pub update_commit_ms: f64,
    pub update_commit_bytes: usize,
    pub update_process_ms: f64,
    pub message_bytes: usize,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// A group of `members` (creator included) in one commit, two joins from its Welcome, an
/// update commit by a member processed by another, and one `text_bytes` message.
pub fn group(members: usize, text_bytes: usize) -> anyhow::Result<RawGroup> {
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build();
    let join_config = MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build();
    let creator = Party::new("creator")?;
    let joiners = [Party::new("m1")?, Party::new("m2")?];
    let mut kps = vec![joiners[0].key_package()?, joiners[1].key_package()?];
    // The other members' KeyPackages (each member has its own signature key).
    for i in 0..members.saturating_sub(3) {
        kps.push(Party::new(&format!("o{i}"))?.key_package()?);
    }
    let mut group =
        MlsGroup::new(&creator.provider, &creator.signer, &config, creator.credential.clone())?;

    let t = Instant::now();
    let (commit, welcome, _) = group.add_members(&creator.provider, &creator.signer, &kps)?;
    group.merge_pending_commit(&creator.provider)?;
    let add_commit_ms = ms(t);
    let commit_bytes = commit.tls_serialize_detached()?.len();
    let welcome_bytes = welcome.tls_serialize_detached()?.len();
    let welcome_in = MlsMessageIn::from(welcome);

    let join = |p: &Party| -> anyhow::Result<MlsGroup> {
        let MlsMessageBodyIn::Welcome(w) = welcome_in.clone().extract() else {
            anyhow::bail!("not a welcome");
        };
        Ok(StagedWelcome::new_from_welcome(&p.provider, &join_config, w, None)?
            .into_group(&p.provider)?)
    };
    let t = Instant::now();
    let mut g1 = join(&joiners[0])?;
    let join_ms = ms(t);
    let mut g2 = join(&joiners[1])?;

    let t = Instant::now();
    let bundle =
        g1.self_update(&joiners[0].provider, &joiners[0].signer, LeafNodeParameters::default())?;
    let update_commit_ms = ms(t);
    let update = bundle.into_commit();
    let update_commit_bytes = update.tls_serialize_detached()?.len();
    g1.merge_pending_commit(&joiners[0].provider)?;
    let update_in = MlsMessageIn::from(update).try_into_protocol_message()?;
    let t = Instant::now();
    let processed = g2.process_message(&joiners[1].provider, update_in)?;
    if let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() {
        g2.merge_staged_commit(&joiners[1].provider, *staged)?;
    }
    let update_process_ms = ms(t);

    let message =
        g2.create_message(&joiners[1].provider, &joiners[1].signer, &vec![b'x'; text_bytes])?;
    let message_bytes = message.tls_serialize_detached()?.len();
    Ok(RawGroup {
        add_commit_ms,
        commit_bytes,
        welcome_bytes,
        join_ms,
        update_commit_ms,
        update_commit_bytes,
        update_process_ms,
        message_bytes,
    })
}
