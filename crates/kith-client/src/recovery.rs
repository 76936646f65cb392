//! The recovery code: taking an account back from anyone who holds a copy of one of its
//! devices (see `kith_proto::recovery` and docs/protocol.md, "Recovery").
//!
//! A code is 24 characters of Crockford's base32 (120 random bits) in six groups of four,
//! read without regard to case, with `O` as `0` and `I`/`L` as `1`. HKDF-SHA256 turns it into
//! the seed of an Ed25519 **recovery key**; the server holds only its public half. A device
//! shows its code once — at registration, or at the first sync of an account from before
//! recovery codes — and keeps nothing of it. The code:
//!
//! - takes the account back ([`Client::recover`]): a new device, a new account key and a new
//!   code, every old device removed at once, and each conversation's members told, whose
//!   clients follow the key change (the old recovery key signed it) and put the new device in
//!   place of the old ones ([`Client::replace_recovered_devices`]);
//! - is replaced only with itself ([`Client::replace_recovery_code`]).

use ed25519_dalek::SigningKey;
use kith_proto::recovery::{self as proof, KeyChange};
use kith_proto::*;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use zeroize::Zeroizing;

use crate::api::Api;
use crate::client::{Client, now_millis, random_hex};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::local::Profile;

use kith_proto::recovery::{CODE_ALPHABET as ALPHABET, CODE_LENGTH as LENGTH};

/// The upkeep record of this account's recovery key given to the server (at registration, by
/// the first sync of an account from before recovery codes, or found given by another device).
const RECOVERY_KEY_GIVEN: &str = "recovery_key_given";

/// A recovery code. It never prints (`Debug` shows `[redacted]`) and zeroizes on drop; only
/// [`RecoveryCode::show`] gives its text, for the person to write down.
#[derive(Clone)]
pub struct RecoveryCode(Secret);

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode([redacted])")
    }
}

impl RecoveryCode {
    /// A fresh code.
    pub fn generate() -> ClientResult<Self> {
        let mut bytes = Zeroizing::new([0u8; LENGTH]);
        getrandom::fill(bytes.as_mut_slice())
            .map_err(|e| ClientError::Mls(format!("no randomness: {e}")))?;
        Ok(RecoveryCode(Secret::new(
            bytes.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])).collect(),
        )))
    }

    /// Reads a code as a person typed it.
    pub fn parse(text: &str) -> ClientResult<Self> {
        kith_proto::recovery::normalize_code(text).map(|c| RecoveryCode(Secret::new(c))).ok_or_else(
            || {
                ClientError::refused(
                    Refusal::BadRecoveryCode,
                    "a recovery code is 24 letters and digits in six groups of four",
                )
            },
        )
    }

    /// The code as it is shown: six groups of four.
    pub fn show(&self) -> Secret {
        Secret::new(kith_proto::recovery::show_code(self.0.expose()))
    }

    /// The recovery key the code stands for.
    pub(crate) fn key(&self) -> SigningKey {
        kith_proto::recovery::code_key(self.0.expose())
    }

    /// The recovery key's public half, as the server keeps it.
    pub(crate) fn public_key(&self) -> Vec<u8> {
        kith_proto::account::public_key(&self.key())
    }

    /// The account key's signature binding this code's recovery key to `username`'s account.
    pub(crate) fn binding(&self, account_key: &SigningKey, username: &str) -> Vec<u8> {
        proof::sign(account_key, &proof::binding_bytes(username, &self.public_key()))
    }
}

impl Client {
    /// The recovery code this client made since it was opened (at registration, or for an
    /// account from before recovery codes), once: the only time it can be shown.
    pub fn take_recovery_code(&mut self) -> Option<RecoveryCode> {
        self.fresh_recovery_code.take()
    }

    /// A code made here, to show once, and the registration's record that the server has it.
    pub(crate) fn recovery_code_for_registration(&mut self) -> ClientResult<RecoveryCode> {
        let code = RecoveryCode::generate()?;
        self.fresh_recovery_code = Some(code.clone());
        Ok(code)
    }

    pub(crate) fn forget_recovery_key_given(&self) -> ClientResult<()> {
        self.local.clear_upkeep(RECOVERY_KEY_GIVEN)?;
        Ok(())
    }

    pub(crate) fn mark_recovery_key_given(&self) -> ClientResult<()> {
        self.local.set_upkeep_at(RECOVERY_KEY_GIVEN, now_millis())?;
        Ok(())
    }

    /// An account from before recovery codes gets one at the first settle step after the
    /// upgrade, from whichever of its devices gets there first; the code is kept in memory for
    /// [`Client::take_recovery_code`] and nowhere else. An account that has one (another device
    /// gave it) is left as it is.
    pub(crate) async fn ensure_recovery_key(&mut self) -> ClientResult<()> {
        if self.profile.is_none() || self.local.upkeep_at(RECOVERY_KEY_GIVEN)?.is_some() {
            return Ok(());
        }
        let Some(account_key) = self.stored_account_key()? else { return Ok(()) };
        let code = RecoveryCode::generate()?;
        let req = SetRecoveryKey {
            recovery_key: B64(code.public_key()),
            binding: B64(code.binding(&account_key, &self.me()?.username)),
            change: None,
        };
        match self.api()?.set_recovery_key(&req).await {
            Ok(()) => self.fresh_recovery_code = Some(code),
            Err(e) if e.code() == Some(ErrorCode::WrongRecoveryCode) => {
                tracing::info!("this account has a recovery code already");
            }
            Err(e) => return Err(e),
        }
        self.mark_recovery_key_given()
    }

    /// Replaces this account's recovery code with a new one, given the current one; the new
    /// code is returned to be shown once.
    pub async fn replace_recovery_code(
        &mut self,
        current: &RecoveryCode,
    ) -> ClientResult<RecoveryCode> {
        let me = self.me()?.clone();
        let account_key = self.stored_account_key()?.ok_or_else(|| {
            ClientError::Protocol("this profile holds no account key yet: sync first".into())
        })?;
        let new = RecoveryCode::generate()?;
        let change = KeyChange::sign(
            &current.key(),
            &me.username,
            &kith_proto::account::public_key(&account_key),
            &new.public_key(),
            now_millis(),
        );
        let req = SetRecoveryKey {
            recovery_key: B64(new.public_key()),
            binding: B64(new.binding(&account_key, &me.username)),
            change: Some(B64(change.encode())),
        };
        self.api()?.set_recovery_key(&req).await?;
        self.mark_recovery_key_given()?;
        Ok(new)
    }

    /// Takes `username` on `server` back with its recovery code, as this (empty) profile's
    /// first device: every device the account had is removed at once, and the account gets a
    /// new account key and a new recovery code (returned, to be shown once). The account's
    /// contacts put this device in their conversations with it as their clients hear of it;
    /// the history stays with the old devices.
    pub async fn recover(
        &mut self,
        server: &str,
        username: &str,
        code: &RecoveryCode,
    ) -> ClientResult<(Profile, RecoveryCode)> {
        if let Some(p) = &self.profile {
            return Err(ClientError::AlreadyRegistered(p.username.clone()));
        }
        let name = Username::parse(username)
            .map_err(|e| ClientError::refused(Refusal::BadUsername, e.to_string()))?;
        let ca = self.pending_ca.clone();
        let api = Api::new(self.http(ca.as_deref())?, server, None, ca.as_deref())?;
        let account_key = self.make_account_key()?;
        let new_code = RecoveryCode::generate()?;
        let change = KeyChange::sign(
            &code.key(),
            name.as_str(),
            &kith_proto::account::public_key(&account_key),
            &new_code.public_key(),
            now_millis(),
        );
        let token = Secret::new(random_hex(32)?);
        let credential_key = {
            let provider = self.provider();
            let signer =
                SignatureKeyPair::new(SignatureScheme::ED25519).map_err(ClientError::mls)?;
            signer.store(provider.storage()).map_err(ClientError::mls)?;
            signer.to_public_vec()
        };
        let token_hash = {
            use sha2_10::Digest as _;
            sha2_10::Sha256::digest(token.expose().as_bytes())
        };
        let signed = proof::recovery_bytes(name.as_str(), &change, &credential_key, &token_hash);
        let request = RecoverAccount {
            change: B64(change.encode()),
            credential_key: B64(credential_key.clone()),
            token: token.clone(),
            signature: B64(proof::sign(&code.key(), &signed)),
            recovery_binding: B64(new_code.binding(&account_key, name.as_str())),
        };
        let recovered = api.recover(name.as_str(), &request).await?;
        let mut profile = Profile {
            server: api.base().to_string(),
            username: name.to_string(),
            kind: AccountKind::Person,
            device_id: recovered.device_id,
            token,
            signature_key: credential_key,
            ca_cert: self.pending_ca.clone(),
        };
        self.local.save_profile(&profile)?;
        self.certify_device(&account_key, &profile)?;
        self.mark_certified()?;
        self.mark_recovery_key_given()?;
        self.profile = Some(profile.clone());
        // The account's kind, as the server keeps it (a business stays one).
        if let Ok(me) = self.api()?.whoami().await
            && me.kind != profile.kind
        {
            profile.kind = me.kind;
            self.local.save_profile(&profile)?;
            self.profile = Some(profile.clone());
        }
        match self.replenish_key_packages().await {
            Err(e) if e.is_local() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "this device's KeyPackages wait for the next sync")
            }
            Ok(_) => {}
        }
        Ok((profile, new_code))
    }

    /// For each conversation whose member account started again after its recovery (the
    /// server said so; see `process::take_notice`): follows the account's key change from the
    /// key known here — only a change its recovery key signed counts — then, in one commit,
    /// takes its old leaves out and puts its devices now in. Tried again at the next settle
    /// step while the server cannot be reached; dropped when there is nothing to do or the
    /// change cannot be followed (the old devices then stay, and get nothing from the server).
    pub(crate) async fn replace_recovered_devices(&mut self) -> ClientResult<()> {
        for (id, who) in self.local.recovered()? {
            match self.replace_devices(&id, &who).await {
                Err(e) if e.is_local() => return Err(e),
                Err(e) if e.is_unreached() => return Ok(()),
                Err(e) => {
                    tracing::info!(error = %e, "a recovered account's devices stay as they were");
                }
                Ok(()) => {}
            }
            self.local.forget_recovered(&id, &who)?;
        }
        Ok(())
    }

    /// Takes the account key the server lists for `username` now, on this person's word (they
    /// checked it with its owner): for a change its recovery key did not sign (the server's
    /// operator reset the account). Then its devices now are put in every conversation it is
    /// in, in place of the old ones. Returns how many conversations that concerned.
    pub async fn trust_account_key(&mut self, username: &str) -> ClientResult<usize> {
        let list = self.api()?.devices(username).await?;
        let listed = list.account_key.as_ref().map(|k| k.0.as_slice());
        self.local.set_account_key_of(username, listed)?;
        // Its recovery key with it, when the account key binds it (after an operator's reset
        // it does not: a later change is then for this person to trust again).
        let bound =
            listed.zip(list.keys.recovery_key.as_ref()).zip(list.keys.recovery_binding.as_ref());
        let recovery = bound.and_then(|((account, r), b)| {
            proof::verify(account, &proof::binding_bytes(username, &r.0), &b.0)
                .then_some(r.0.as_slice())
        });
        self.local.set_recovery_key_of(username, recovery)?;
        let theirs = {
            let provider = self.provider();
            let mut theirs = Vec::new();
            for id in self.local.active_conversation_ids()? {
                let Ok(group) = self.load_group(&provider, &id) else { continue };
                let member = |m: openmls::prelude::Member| {
                    crate::mls::identity(&m.credential).as_deref() == Some(username)
                };
                if group.members().any(member) {
                    theirs.push(id);
                }
            }
            theirs
        };
        self.local.set_unconfirmed_key_of(username, None)?;
        // What waited for this key goes through now (a commit that put their new device in),
        // then their devices go into the conversations nobody else updated.
        self.retry_all_held().await?;
        for id in &theirs {
            self.local.note_recovered(id, username)?;
        }
        self.replace_recovered_devices().await?;
        Ok(theirs.len())
    }

    async fn replace_devices(&mut self, id: &str, who: &str) -> ClientResult<()> {
        self.keys_fetched.clear();
        self.fetch_keys(&[who.to_string()]).await?;
        let Some(key) = self.local.account_key_of(who)?.flatten() else { return Ok(()) };
        // The server lists a key this device did not take (see `note_account_key`).
        if self.local.unconfirmed_key_of(who)?.is_some() {
            // Not followed: said once in the conversation, and nothing else changes.
            let event = crate::SystemEvent::KeyUnconfirmed { who: who.to_string() };
            self.note_received(id, who, event)?;
            return Ok(());
        }
        let stale_in = |group: &MlsGroup| -> Vec<LeafNodeIndex> {
            group
                .members()
                .filter(|m| crate::mls::identity(&m.credential).as_deref() == Some(who))
                .filter(|m| {
                    group
                        .public_group()
                        .leaf(m.index)
                        .is_some_and(|l| kith_proto::keypackage::is_stale(l, who, &key))
                })
                .map(|m| m.index)
                .collect()
        };
        let has_current = |group: &MlsGroup| {
            group.members().any(|m| {
                crate::mls::identity(&m.credential).as_deref() == Some(who)
                    && group
                        .public_group()
                        .leaf(m.index)
                        .is_some_and(|l| !kith_proto::keypackage::is_stale(l, who, &key))
            })
        };
        let me = self.me()?.username.clone();
        // Who may put the account's devices in: in a story channel only its owner (and never
        // into the recovered account's own: it starts one of its own); elsewhere an admin, or
        // anyone in the commit that takes the stale leaves out.
        let may_add = |group: &MlsGroup, removes: &[LeafNodeIndex]| {
            let Some(meta) = crate::mls::meta_of(group) else { return false };
            let admin = meta.kind != GroupType::Direct && meta.is_admin(&me);
            match meta.kind {
                GroupType::Story => admin && meta.admins != [who.to_string()],
                _ => admin || !removes.is_empty(),
            }
        };
        let todo = |group: &MlsGroup| {
            let removes = stale_in(group);
            let add = !has_current(group) && may_add(group, &removes);
            (removes, add)
        };
        {
            let provider = self.provider();
            let group = self.load_group(&provider, id)?;
            let (removes, add) = todo(&group);
            if removes.is_empty() && !add {
                // Nothing to do here (another member did it first, or the key change could
                // not be followed).
                return Ok(());
            }
        }
        let adds: Vec<KeyPackage> = match self.claim(&[who.to_string()]).await {
            Ok(claimed) => claimed.into_iter().map(|c| c.key_package).collect(),
            Err(e) if e.is_unreached() || e.is_local() => return Err(e),
            // No device to put in yet: the old leaves go all the same.
            Err(e) => {
                tracing::info!(error = %e, "a recovered account's new device cannot be added yet");
                Vec::new()
            }
        };
        let mut replaced = false;
        self.commit_change(id, |group, _| {
            let (removes, add) = todo(group);
            let adds = if add { adds.clone() } else { Vec::new() };
            if removes.is_empty() && adds.is_empty() {
                return Ok(None);
            }
            replaced = !removes.is_empty();
            Ok(Some(crate::groups::Plan { adds, removes, ..Default::default() }))
        })
        .await?;
        // The other members see it in the commit; this device, which made it, says it here.
        if replaced {
            let event = crate::SystemEvent::Recovered { by: me.clone(), who: who.to_string() };
            self.note_received(id, who, event)?;
        }
        Ok(())
    }
}
