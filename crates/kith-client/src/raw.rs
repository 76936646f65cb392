//! Raw access to a profile's MLS state, for the testkit's hostile client only (the `hostile`
//! feature): with it a test builds what a modified client could send — encrypted commits,
//! commits by non-admins, signature-key changes — from a real member's state.

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;

use crate::client::{Client, conversation_bytes};
use crate::error::{ClientError, ClientResult, Refusal};
pub use crate::mls::Provider;

impl Client {
    /// Builds a conversation of any kind with `members` (their KeyPackages claimed from the
    /// server), without registering it: the request a modified client could post. The group
    /// is kept locally, so the caller can go on using it if the server takes it.
    pub async fn raw_conversation(
        &mut self,
        meta: &kith_proto::GroupMeta,
        members: &[String],
    ) -> ClientResult<(String, kith_proto::CreateConversation)> {
        let me = self.me()?.clone();
        let claimed = self.claim(members).await?;
        // A group or 1:1 carries settings, as this client's would.
        let settings = (meta.kind != kith_proto::GroupType::Story)
            .then(kith_proto::settings::Settings::default);
        let (id, request, _) = self.build_conversation(&me, meta, claimed, settings)?;
        Ok((id, request))
    }

    /// Runs `f` on the conversation's group as stored, with the provider and this device's
    /// key pair. Whatever `f` changes is kept; the SDK's cached copy is dropped.
    pub fn raw_mls<T>(
        &self,
        conversation: &str,
        f: impl FnOnce(&mut MlsGroup, &Provider<'_>, &SignatureKeyPair) -> T,
    ) -> ClientResult<T> {
        let provider = self.provider();
        let signer = crate::mls::load_signer(&provider, &self.me()?.signature_key)?;
        let mut group = MlsGroup::load(
            provider.storage(),
            &GroupId::from_slice(&conversation_bytes(conversation)?),
        )
        .map_err(ClientError::mls)?
        .ok_or_else(|| ClientError::UnknownConversation(conversation.to_string()))?;
        let out = f(&mut group, &provider, &signer);
        self.forget_cached(Some(conversation));
        Ok(out)
    }

    /// The franked plaintext (body, franking key and the sender's signature) this device keeps
    /// of a received message, as the MLS payload carried it: what a member could re-send.
    pub fn raw_received_franked(&self, message_id: &str) -> ClientResult<Vec<u8>> {
        let f = self.local.frank(message_id)?.ok_or_else(|| {
            ClientError::refused(
                Refusal::UnknownMessage,
                format!("no received message {message_id}"),
            )
        })?;
        Ok(kith_proto::payload::Franked {
            core: kith_proto::B64(f.core),
            fk: kith_proto::B64(f.fk),
            sig: kith_proto::B64(f.sig),
        }
        .encode())
    }

    /// A KeyPackage of this device, made by `build` from a bare builder (leave out a
    /// capability, add an extension, mark it last-resort): what a modified client could
    /// upload. Its private keys are kept in the profile, as for any KeyPackage.
    pub fn raw_key_package(
        &self,
        build: impl FnOnce(KeyPackageBuilder) -> KeyPackageBuilder,
    ) -> ClientResult<Vec<u8>> {
        use openmls::prelude::tls_codec::Serialize as _;
        let provider = self.provider();
        let me = self.me()?;
        let signer = crate::mls::load_signer(&provider, &me.signature_key)?;
        let bundle = build(KeyPackage::builder())
            .build(
                crate::mls::CIPHERSUITE,
                &provider,
                &signer,
                crate::mls::credential(&me.username, &signer),
            )
            .map_err(ClientError::mls)?;
        bundle.key_package().tls_serialize_detached().map_err(ClientError::mls)
    }

    /// Registers as a version from before account keys did: no account key, uncertified
    /// KeyPackages posted with the registration. For tests of what such a profile and account
    /// become after an upgrade.
    pub async fn raw_register_before_account_keys(
        &mut self,
        server: &str,
        username: &str,
    ) -> ClientResult<crate::local::Profile> {
        use kith_proto::{B64, RegisterRequest, Secret, Username};
        use openmls_traits::OpenMlsProvider as _;
        let api = crate::api::Api::new(self.http(None)?, server, None, None)?;
        let request = {
            let provider = self.provider();
            let signer =
                SignatureKeyPair::new(SignatureScheme::ED25519).map_err(ClientError::mls)?;
            signer.store(provider.storage()).map_err(ClientError::mls)?;
            let kps = crate::mls::key_packages(&provider, &signer, username, None, 10, false)?;
            let last = crate::mls::key_packages(&provider, &signer, username, None, 1, true)?;
            RegisterRequest {
                username: Username::parse(username)
                    .map_err(|e| ClientError::refused(Refusal::BadUsername, e.to_string()))?,
                kind: kith_proto::AccountKind::Person,
                credential_key: B64(signer.to_public_vec()),
                account_key: None,
                recovery_key: None,
                recovery_binding: None,
                key_packages: kps.into_iter().map(B64).collect(),
                last_resort_key_package: last.into_iter().map(B64).next(),
                display_name: None,
                description: None,
                token: Some(Secret::new(crate::client::random_hex(32)?)),
            }
        };
        let response = api.register(&request).await?;
        let profile = crate::local::Profile {
            server: api.base().to_string(),
            username: response.username,
            kind: kith_proto::AccountKind::Person,
            device_id: response.device_id,
            token: response.token,
            signature_key: request.credential_key.0,
            ca_cert: None,
        };
        self.local.save_profile(&profile)?;
        self.local.set_upkeep_at(crate::sync::LAST_RESORT, crate::client::now_millis())?;
        self.profile = Some(profile.clone());
        Ok(profile)
    }

    /// Takes in at most `max` chunks of a history being handed over: a transfer cut half-way.
    pub async fn raw_continue_history(&mut self, max: u32) -> ClientResult<Option<(u32, u32)>> {
        self.continue_history_upto(max).await
    }

    /// The id of this device's open 1:1 conversation with `peer`.
    pub fn raw_direct_with(&self, peer: &str) -> ClientResult<Option<String>> {
        Ok(self.local.direct_with(peer)?.map(|c| c.id))
    }

    /// Whether this device's leaf in the conversation carries its certificate.
    pub fn raw_leaf_certified(&self, conversation: &str) -> ClientResult<bool> {
        self.raw_mls(conversation, |group, _, _| crate::mls::carries_certificate(group))
    }

    /// This device's signature key pair (what a modified client holding two accounts could
    /// use in the other's group).
    pub fn raw_signer(&self) -> ClientResult<SignatureKeyPair> {
        crate::mls::load_signer(&self.provider(), &self.me()?.signature_key)
    }

    /// Makes this device believe its last-resort KeyPackage was uploaded `days` ago, so the
    /// next sync's upkeep renews it (a test cannot wait four weeks).
    pub fn raw_age_last_resort(&self, days: u64) -> ClientResult<()> {
        let at = crate::client::now_millis().saturating_sub(days * 86_400_000);
        self.local.set_upkeep_at("last_resort_key_package", at)?;
        // And the next sync checks the KeyPackages at once.
        self.key_packages_checked.set(None);
        Ok(())
    }

    /// This device's `<device-id>:<token>`, as its requests carry it: for a test that speaks
    /// HTTP to `kithd` directly as the device.
    pub fn raw_bearer(&self) -> ClientResult<kith_proto::Secret> {
        Ok(self.me()?.bearer())
    }

    /// A signature by this device's credential key over `bytes` (what a request the device
    /// itself must make, such as a token rotation, carries).
    pub fn raw_sign(&self, bytes: &[u8]) -> ClientResult<Vec<u8>> {
        use openmls_traits::signatures::Signer as _;
        let provider = self.provider();
        crate::mls::load_signer(&provider, &self.me()?.signature_key)?
            .sign(bytes)
            .map_err(|_| ClientError::Mls("cannot sign".into()))
    }
}
