//! The account: registration, the bearer token and its rotation, what the server says of it.

use kith_proto::*;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;

use crate::api::Api;
use crate::client::{Client, now_millis, random_hex};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::local::Profile;
use crate::mls;
use crate::sync::LAST_RESORT;
use kith_proto::account::DeviceCertificate;

impl Client {
    /// Registers a new account with this device as its first, on `server`.
    pub async fn register(
        &mut self,
        server: &str,
        username: &str,
        kind: AccountKind,
    ) -> ClientResult<Profile> {
        self.register_with_profile(server, username, kind, None).await
    }

    /// Registers a business with its public profile: a display name and a description anyone
    /// can find in the directory.
    pub async fn register_business(
        &mut self,
        server: &str,
        username: &str,
        display_name: &str,
        description: &str,
    ) -> ClientResult<Profile> {
        let profile = Some((display_name.to_string(), description.to_string()));
        self.register_with_profile(server, username, AccountKind::Business, profile).await
    }

    async fn register_with_profile(
        &mut self,
        server: &str,
        username: &str,
        kind: AccountKind,
        profile: Option<(String, String)>,
    ) -> ClientResult<Profile> {
        if let Some(p) = &self.profile {
            return Err(ClientError::AlreadyRegistered(p.username.clone()));
        }
        let name = Username::parse(username)
            .map_err(|e| ClientError::refused(Refusal::BadUsername, e.to_string()))?;
        let ca = self.pending_ca.clone();
        let api = Api::new(self.http(ca.as_deref())?, server, None, ca.as_deref())?;
        // The account key: made here, kept before the registration naming it is posted. The
        // recovery code: made here, kept in memory only, to be shown once.
        let account_key = self.make_account_key()?;
        let code = self.recovery_code_for_registration()?;
        let request = {
            let provider = self.provider();
            let signer =
                SignatureKeyPair::new(SignatureScheme::ED25519).map_err(ClientError::mls)?;
            signer.store(provider.storage()).map_err(ClientError::mls)?;
            RegisterRequest {
                username: name,
                kind,
                credential_key: B64(signer.to_public_vec()),
                account_key: Some(B64(kith_proto::account::public_key(&account_key))),
                recovery_key: Some(B64(code.public_key())),
                recovery_binding: Some(B64(code.binding(&account_key, username))),
                // They follow, each carrying the certificate of the device id given here.
                key_packages: Vec::new(),
                last_resort_key_package: None,
                display_name: profile.as_ref().map(|p| p.0.clone()),
                description: profile.as_ref().map(|p| p.1.clone()),
                // Chosen here, so a registration whose answer was lost can be posted again
                // and be answered as registered (see `Api::register`).
                token: Some(Secret::new(random_hex(32)?)),
            }
        };
        let response = api.register(&request).await?;
        let profile = Profile {
            server: api.base().to_string(),
            username: response.username,
            kind,
            device_id: response.device_id,
            token: response.token,
            signature_key: request.credential_key.0,
            ca_cert: self.pending_ca.clone(),
        };
        self.local.save_profile(&profile)?;
        self.certify_device(&account_key, &profile)?;
        self.mark_certified()?;
        self.mark_recovery_key_given()?;
        self.profile = Some(profile.clone());
        // The device's KeyPackages, certified. If they cannot go now, every sync tries again
        // (no last-resort KeyPackage is on record yet), and nobody can add the device before.
        match self.replenish_key_packages().await {
            Err(e) if e.is_local() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "this device's KeyPackages wait for the next sync")
            }
            Ok(_) => {}
        }
        Ok(profile)
    }

    /// Signs and keeps this device's certificate with the account key.
    pub(crate) fn certify_device(
        &self,
        account_key: &ed25519_dalek::SigningKey,
        profile: &Profile,
    ) -> ClientResult<DeviceCertificate> {
        let cert = DeviceCertificate::sign(
            account_key,
            &profile.username,
            profile.device_id,
            &profile.signature_key,
            now_millis(),
        );
        self.local.set_device_certificate(&cert.encode())?;
        Ok(cert)
    }

    /// A device that starts with its certificate (registered or linked with an account key)
    /// has nothing to migrate.
    pub(crate) fn mark_certified(&self) -> ClientResult<()> {
        self.local.set_upkeep_at(ACCOUNT_KEY_GIVEN, now_millis())?;
        self.local.set_upkeep_at(LEAVES_CERTIFIED, now_millis())?;
        Ok(())
    }

    /// Every KeyPackage is renewed at the next upkeep (this sync's): those on the server lack
    /// the device's new certificate, and the server hands none of them out any more.
    fn renew_key_packages_now(&self) -> ClientResult<()> {
        self.local.clear_upkeep(LAST_RESORT)?;
        self.key_packages_checked.set(None);
        Ok(())
    }

    /// This device's certificate, once the account has a key.
    pub(crate) fn own_certificate(&self) -> ClientResult<Option<DeviceCertificate>> {
        let Some(bytes) = self.local.device_certificate()? else { return Ok(None) };
        DeviceCertificate::decode(&bytes)
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("this device's certificate: {e}")))
    }

    /// Replaces this device's token with a new one and keeps it in the profile: for a token
    /// that may have leaked (a copied profile folder, a lost backup). Copies of the profile
    /// made before stop working; so do push connections opened before.
    ///
    /// The new token is chosen here and kept aside with the signed request before it is
    /// sent: if the outcome is not known (no answer, a gateway's 502 or 504), the next sync
    /// settles it (see [`Client::settle_token`]), so the device is never left with a token
    /// the server no longer accepts.
    pub async fn rotate_token(&mut self) -> ClientResult<()> {
        self.settle_token().await?;
        let me = self.me()?;
        let chosen = Secret::new(random_hex(32)?);
        let signature = {
            use openmls_traits::crypto::OpenMlsCrypto as _;
            use openmls_traits::signatures::Signer as _;
            let provider = self.provider();
            let hash = |t: &Secret| {
                provider
                    .crypto()
                    .hash(openmls::prelude::HashType::Sha2_256, t.expose().as_bytes())
                    .map_err(ClientError::mls)
            };
            let signed = RotateTokenRequest::signed_bytes(
                me.device_id,
                &hash(&me.token)?,
                Some(&hash(&chosen)?),
            );
            self.signer(&provider)?
                .sign(&signed)
                .map_err(|_| ClientError::Mls("cannot sign the rotation".into()))?
        };
        self.local.set_pending_rotation(Some((&chosen, &signature)))?;
        match self.finish_rotation(false).await {
            // Not known (only the answer may have been lost): settled at once if it can be.
            Err(_) if self.local.pending_rotation()?.is_some() => self.finish_rotation(true).await,
            done => done,
        }
    }

    /// Settles a rotation whose outcome is not known yet (its answer was lost): keeps the new
    /// token if the server holds it, or asks for it again. Nothing to do without one; a sync
    /// and a push connection do it first.
    pub(crate) async fn settle_token(&mut self) -> ClientResult<()> {
        self.finish_rotation(true).await
    }

    /// Posts the pending rotation (after first asking whether its token is in force already,
    /// when `look_first`) until its outcome is known. The signed request names the token it
    /// replaces, so posting it again is safe: once the new token is in force, the old one —
    /// and with it any copy of the request still on its way — is refused.
    async fn finish_rotation(&mut self, look_first: bool) -> ClientResult<()> {
        let Some((token, signature)) = self.local.pending_rotation()? else {
            return Ok(());
        };
        if look_first && in_force(&self.trial_api(&token)?).await? {
            return self.adopt_token(token);
        }
        let request =
            RotateTokenRequest { signature: B64(signature), new_token: Some(token.clone()) };
        match self.api()?.rotate_token(&request).await {
            // The token the server says it holds (the chosen one, unless it made its own).
            Ok(fresh) => self.adopt_token(fresh.token),
            // The old token is refused: a copy of the request got there first.
            Err(e) if e.code() == Some(ErrorCode::Unauthorized) => {
                if in_force(&self.trial_api(&token)?).await? {
                    return self.adopt_token(token);
                }
                Err(e)
            }
            Err(e @ ClientError::Server { status: 400..=499, .. }) => {
                self.local.set_pending_rotation(None)?;
                Err(e)
            }
            // Not known: kept for the next attempt.
            Err(e) => Err(e),
        }
    }

    /// Calls to the server as this device with `token`.
    fn trial_api(&self, token: &Secret) -> ClientResult<Api> {
        let mut trial = self.me()?.clone();
        trial.token = token.clone();
        let ca = trial.ca_cert.as_deref();
        Api::new(self.http(ca)?, &trial.server, Some(trial.bearer()), ca)
    }

    /// The token the server holds for this device from now on.
    fn adopt_token(&mut self, token: Secret) -> ClientResult<()> {
        // Saved before anything else can fail: from now on only the new token works.
        self.local.set_token(&token)?;
        self.local.set_pending_rotation(None)?;
        if let Some(p) = &mut self.profile {
            p.token = token;
        }
        Ok(())
    }

    /// The server's view of this device.
    pub async fn whoami(&mut self) -> ClientResult<WhoAmI> {
        self.api()?.whoami().await
    }

    /// An account's devices, as the server lists them.
    pub async fn devices(&mut self, username: &str) -> ClientResult<DeviceList> {
        self.api()?.devices(username).await
    }
}

/// Whether the server accepts the token `api` calls with (`false` only when it says no).
async fn in_force(api: &Api) -> ClientResult<bool> {
    match api.whoami().await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(ErrorCode::Unauthorized) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The upkeep record of the account key given to the server (at registration, or once by a
/// profile registered before account keys).
const ACCOUNT_KEY_GIVEN: &str = "account_key_given";

/// The upkeep record of this device's certificate put in its leaf of every conversation.
pub(crate) const LEAVES_CERTIFIED: &str = "leaves_certified";

impl Client {
    /// Makes an account key and keeps its secret in the profile.
    pub(crate) fn make_account_key(&self) -> ClientResult<ed25519_dalek::SigningKey> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice())
            .map_err(|e| ClientError::Mls(format!("no randomness: {e}")))?;
        self.local.set_account_key(&seed)?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// A profile registered before account keys makes its account's key at the first settle
    /// step after the upgrade, keeps it, and gives it to the server, once. An account that
    /// holds another key already (another device of it gave one) is left as it is, and said.
    pub(crate) async fn ensure_account_key(&mut self) -> ClientResult<()> {
        if self.profile.is_none() {
            return Ok(());
        }
        if self.local.upkeep_at(ACCOUNT_KEY_GIVEN)?.is_some() {
            // Given by a version that did not certify devices yet: certified now.
            if self.own_certificate()?.is_none()
                && let Some(key) = self.stored_account_key()?
            {
                let profile = self.me()?.clone();
                self.certify_device(&key, &profile)?;
                self.renew_key_packages_now()?;
            }
            return Ok(());
        }
        let key = match self.stored_account_key()? {
            Some(key) => key,
            None => self.make_account_key()?,
        };
        let req = SetAccountKey { account_key: B64(kith_proto::account::public_key(&key)) };
        match self.api()?.set_account_key(&req).await {
            Ok(_) => {
                // From now on the server takes only certified KeyPackages and leaves: this
                // device certifies itself, renews every KeyPackage at the next upkeep, and
                // puts its certificate in its leaf of every conversation.
                let profile = self.me()?.clone();
                self.certify_device(&key, &profile)?;
                self.renew_key_packages_now()?;
            }
            Err(e) if e.code() == Some(ErrorCode::Forbidden) => {
                tracing::warn!("the server holds another account key for this account");
            }
            Err(e) => return Err(e),
        }
        self.local.set_upkeep_at(ACCOUNT_KEY_GIVEN, now_millis())?;
        Ok(())
    }

    /// Once the device has a certificate: every conversation whose leaf of this device lacks
    /// it gets an update commit that carries it (a profile migrated from before account
    /// keys), so that new members' clients, which refuse an uncertified leaf of an account
    /// with a key, can join. Conversations it cannot update now are tried at the next settle.
    pub(crate) async fn certify_leaves(&mut self) -> ClientResult<()> {
        if self.profile.is_none() || self.local.upkeep_at(LEAVES_CERTIFIED)?.is_some() {
            return Ok(());
        }
        if self.own_certificate()?.is_none() {
            return Ok(());
        }
        let mut all = true;
        for id in self.uncertified_conversations()? {
            match self.update_keys(&id).await {
                Err(e) if e.is_local() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "a conversation's leaf waits for its certificate");
                    all = false;
                }
                Ok(()) => {}
            }
        }
        if all {
            self.local.set_upkeep_at(LEAVES_CERTIFIED, now_millis())?;
        }
        Ok(())
    }

    /// Active conversations whose leaf of this device carries no certificate.
    fn uncertified_conversations(&self) -> ClientResult<Vec<String>> {
        let provider = self.provider();
        let mut out = Vec::new();
        for id in self.local.active_conversation_ids()? {
            let gid = GroupId::from_slice(&crate::client::conversation_bytes(&id)?);
            let Some(group) = MlsGroup::load(provider.storage(), &gid).map_err(ClientError::mls)?
            else {
                continue;
            };
            if group.is_active() && !mls::carries_certificate(&group) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The public half of this account's key (Ed25519, 32 bytes), if the profile holds one:
    /// what signs this account's device certificates, and what safety numbers and key
    /// transparency are about.
    pub fn account_key(&self) -> ClientResult<Option<Vec<u8>>> {
        Ok(self.stored_account_key()?.map(|key| kith_proto::account::public_key(&key)))
    }

    /// The account key the profile keeps, if any.
    pub(crate) fn stored_account_key(&self) -> ClientResult<Option<ed25519_dalek::SigningKey>> {
        let Some(seed) = self.local.account_key()? else { return Ok(None) };
        let seed: [u8; 32] = seed
            .expose()
            .try_into()
            .map_err(|_| ClientError::Protocol("a stored account key is not 32 bytes".into()))?;
        Ok(Some(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }
}

impl Client {
    /// This account's devices: id, name, when added and last seen, and which is this one.
    pub async fn my_devices(&mut self) -> ClientResult<Vec<MyDevice>> {
        Ok(self.api()?.my_devices().await?.devices)
    }

    /// Removes another device of this account: the server refuses its token at once (and
    /// closes its push connections), then this device takes it out of every conversation, one
    /// commit each; `progress(done, total)` after each. Returns the devices left and the
    /// conversations it could not be taken out of now (it gets nothing from them anyway).
    pub async fn remove_device(
        &mut self,
        device: u64,
        mut progress: impl FnMut(usize, usize),
    ) -> ClientResult<(Vec<MyDevice>, Vec<String>)> {
        let me = self.me()?.clone();
        let api = self.api()?;
        let key = api
            .devices(&me.username)
            .await?
            .devices
            .into_iter()
            .find(|d| d.device_id == device)
            .map(|d| d.credential_key.0);
        let left = api.remove_device(device).await?.devices;
        // A recovery code that device set (at the migration to recovery codes) went with it:
        // this one makes the account a new one at its next settle step.
        if api.devices(&me.username).await.is_ok_and(|l| l.keys.recovery_key.is_none()) {
            self.forget_recovery_key_given()?;
        }
        let Some(key) = key else { return Ok((left, Vec::new())) };
        let conversations = self.local.active_conversation_ids()?;
        let total = conversations.len();
        let mut not_removed = Vec::new();
        progress(0, total);
        for (done, id) in conversations.iter().enumerate() {
            let removed = self
                .commit_change(id, |group, _| {
                    let leaves: Vec<_> = group
                        .members()
                        .filter(|m| m.signature_key == key)
                        .map(|m| m.index)
                        .collect();
                    Ok((!leaves.is_empty())
                        .then(|| crate::groups::Plan { removes: leaves, ..Default::default() }))
                })
                .await;
            match removed {
                Ok(()) => {}
                Err(e) if e.is_local() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "a conversation keeps a removed device's leaf");
                    not_removed.push(id.clone());
                }
            }
            progress(done + 1, total);
        }
        Ok((left, not_removed))
    }

    /// In conversations this device just joined, makes the account's devices the ones it has
    /// now: takes out the leaves of devices removed since, and puts in the ones missing (the
    /// Welcome was made before a removal, or before a device was linked, reached that
    /// conversation — or the linking device had not joined it yet).
    pub(crate) async fn tidy_own_leaves(&mut self, joined: &[String]) -> ClientResult<()> {
        if joined.is_empty() {
            return Ok(());
        }
        let me = self.me()?.clone();
        let list = self.api()?.devices(&me.username).await?;
        let removed: Vec<Vec<u8>> =
            list.removed_devices.into_iter().map(|d| d.credential_key.0).collect();
        let current: Vec<Vec<u8>> = list.devices.into_iter().map(|d| d.credential_key.0).collect();
        let mine =
            |m: &Member| mls::identity(&m.credential).as_deref() == Some(me.username.as_str());
        for id in joined {
            let missing = {
                let provider = self.provider();
                let Ok(group) = self.load_group(&provider, id) else { continue };
                let held: Vec<Vec<u8>> =
                    group.members().filter(mine).map(|m| m.signature_key).collect();
                current.iter().any(|k| !held.contains(k))
            };
            let adds: Vec<KeyPackage> = if missing {
                match self.claim_own_devices().await {
                    Ok(claimed) => claimed.into_iter().map(|c| c.key_package).collect(),
                    Err(e) if e.is_local() || e.is_unreached() => return Err(e),
                    Err(e) => {
                        tracing::debug!(error = %e, "this account's other devices wait");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            let done = self
                .commit_change(id, |group, _| {
                    let held: Vec<Vec<u8>> =
                        group.members().filter(mine).map(|m| m.signature_key).collect();
                    let removes: Vec<_> = group
                        .members()
                        .filter(|m| removed.contains(&m.signature_key) && mine(m))
                        .map(|m| m.index)
                        .collect();
                    let adds: Vec<KeyPackage> = adds
                        .iter()
                        .filter(|kp| {
                            !held.contains(&kp.leaf_node().signature_key().as_slice().to_vec())
                        })
                        .cloned()
                        .collect();
                    Ok((!removes.is_empty() || !adds.is_empty()).then(|| crate::groups::Plan {
                        removes,
                        adds,
                        ..Default::default()
                    }))
                })
                .await;
            match done {
                Err(e) if e.is_local() => return Err(e),
                Err(e) => tracing::debug!(error = %e, "a removed device's leaf waits"),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Names one of this account's devices (`None` removes the name); the devices after.
    pub async fn rename_device(
        &mut self,
        device: u64,
        name: Option<&str>,
    ) -> ClientResult<Vec<MyDevice>> {
        let req = RenameDevice { name: name.map(str::to_string) };
        Ok(self.api()?.rename_device(device, &req).await?.devices)
    }
}
