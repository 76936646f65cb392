//! The device keys the server registered, as this client has seen them. A member of a
//! conversation is accepted only with a signature key the server lists for one of its
//! account's devices, and a message only from the key of the device the server says sent it:
//! so a member cannot swap in a key the server does not know (which would make its messages
//! unreportable), and every message shown is one its recipient can report.
//!
//! Checks run inside the transaction that processes an entry, without network: a key not
//! seen yet answers [`Skip::NeedKeys`]; the caller fetches those accounts' devices
//! ([`Client::fetch_keys`]) and processes the entry again, and a key still unknown then is
//! refused.

use std::collections::HashSet;

use kith_proto::AccountKind;
use kith_proto::keypackage::{Owner, leaf_certificate};
use openmls::prelude::LeafNode;

use crate::client::Client;
use crate::error::{ClientError, ClientResult, Refusal};
use crate::mls;
use crate::process::{Processing, Skip};

/// Accounts whose devices were fetched during the current round of processing.
#[derive(Debug, Default)]
pub(crate) struct Fetched(std::cell::RefCell<HashSet<String>>);

impl Fetched {
    fn contains(&self, username: &str) -> bool {
        self.0.borrow().contains(username)
    }

    pub(crate) fn clear(&self) {
        self.0.borrow_mut().clear();
    }
}

fn unregistered(username: &str) -> ClientError {
    ClientError::refused(
        Refusal::UnregisteredKey,
        format!("{username} uses a key the server has not registered for it"),
    )
}

impl Client {
    /// Checks that every leaf's signature key is a device key the server registered for the
    /// account its credential names, and that the leaf carries that device's certificate,
    /// signed by the account's key, when the account has one (`kith_proto::keypackage`).
    /// Accounts not fetched in this round whose keys are not known yet ask for a fetch first.
    ///
    /// With `removed_too`, a leaf of a device its account has removed since is accepted too: it
    /// was registered when the Welcome or commit that brings it was made (the server checked
    /// every leaf then), and a member who takes it in late must not fall out of the group. It
    /// stays until a member takes it out, and gets nothing from the server meanwhile.
    pub(crate) fn check_member_keys(
        &self,
        leaves: &[LeafNode],
        removed_too: bool,
    ) -> Processing<()> {
        let me = self.me()?;
        let mut wanted = Vec::new();
        for leaf in leaves {
            let username = mls::identity(leaf.credential()).unwrap_or_default();
            let key = leaf.signature_key().as_slice();
            if username == me.username && key == me.signature_key {
                continue;
            }
            let fetched = self.keys_fetched.contains(&username);
            let device = match self.local.registered_device(&username, key)? {
                None if removed_too => self.local.removed_device(&username, key)?,
                found => found,
            };
            let account_key = self.local.account_key_of(&username)?;
            match (device, account_key) {
                // Known key and account key; the kind of account (which the opt-in rule
                // needs) known too, or just asked for.
                (Some(device), Some(account_key))
                    if fetched || self.local.account_is_business(&username)?.is_some() =>
                {
                    let owner = Owner {
                        account: &username,
                        account_key: account_key.as_deref(),
                        device: Some(device),
                    };
                    match leaf_certificate(leaf, &owner) {
                        Ok(_) => continue,
                        // Certified by a key the server lists that this device has not taken
                        // (an operator's reset): the entry waits until this person trusts it,
                        // rather than be dropped and leave this device behind its group.
                        Err(_)
                            if fetched
                                && self.local.unconfirmed_key_of(&username)?.is_some_and(|u| {
                                    let owner = Owner {
                                        account: &username,
                                        account_key: Some(&u),
                                        device: Some(device),
                                    };
                                    leaf_certificate(leaf, &owner).is_ok()
                                }) =>
                        {
                            return Err(Skip::NotYet(format!(
                                "waits until you trust {username}'s new account key"
                            )));
                        }
                        // Refused on what the server lists now, not on what was seen before
                        // (an account that gave its key since, say).
                        Err(e) if fetched => {
                            return Err(ClientError::refused(
                                Refusal::UnregisteredKey,
                                format!("a device of {username}'s is refused: {e}"),
                            )
                            .into());
                        }
                        Err(_) => {}
                    }
                }
                _ if fetched => return Err(unregistered(&username).into()),
                _ => {}
            }
            if !wanted.contains(&username) {
                wanted.push(username);
            }
        }
        if wanted.is_empty() { Ok(()) } else { Err(Skip::NeedKeys(wanted)) }
    }

    /// The leaves `staged` removes that are left over from before their account's recovery
    /// ([`kith_proto::keypackage::is_stale`], on the account key this client holds for it):
    /// anyone may remove those. A removal of someone else's leaf by a member who may not
    /// remove others asks for that account's keys first (its recovery may be news here), so
    /// this client judges on the key the server lists now, followed from the one it knew.
    pub(crate) fn stale_leaves(
        &self,
        group: &openmls::prelude::MlsGroup,
        before: Option<&kith_proto::GroupMeta>,
        committer: &str,
        staged: &openmls::prelude::StagedCommit,
    ) -> Processing<std::collections::BTreeSet<openmls::prelude::LeafNodeIndex>> {
        use openmls::prelude::Sender;
        let admin = before
            .is_some_and(|m| m.kind != kith_proto::GroupType::Direct && m.is_admin(committer));
        let mut stale = std::collections::BTreeSet::new();
        let mut wanted = Vec::new();
        for rm in staged.remove_proposals() {
            let index = rm.remove_proposal().removed();
            if matches!(rm.sender(), Sender::Member(s) if *s == index) {
                continue;
            }
            let Some(leaf) = group.public_group().leaf(index) else { continue };
            let username = mls::identity(leaf.credential()).unwrap_or_default();
            if username == committer {
                continue;
            }
            let key = self.local.account_key_of(&username)?.flatten();
            if key.is_some_and(|k| kith_proto::keypackage::is_stale(leaf, &username, &k)) {
                stale.insert(index);
            } else if !admin
                && !self.keys_fetched.contains(&username)
                && !wanted.contains(&username)
            {
                wanted.push(username);
            } else if !admin
                && self
                    .local
                    .unconfirmed_key_of(&username)?
                    .is_some_and(|u| kith_proto::keypackage::is_stale(leaf, &username, &u))
            {
                // Stale only under a key the server lists that this device has not taken: the
                // commit waits until this person trusts it, rather than be dropped.
                return Err(Skip::NotYet(format!(
                    "waits until you trust {username}'s new account key"
                )));
            }
        }
        if wanted.is_empty() { Ok(stale) } else { Err(Skip::NeedKeys(wanted)) }
    }

    /// The key the server registered for `username`'s device `device`: what a message that
    /// device sent must be signed with (looked up by device, so a message from an epoch the
    /// sender has since left the group in is still checked).
    pub(crate) fn registered_key(&self, username: &str, device: u64) -> Processing<Vec<u8>> {
        let key = self.local.device_key(username, device)?;
        match key {
            Some(k) => Ok(k),
            None if self.keys_fetched.contains(username) => Err(unregistered(username).into()),
            None => Err(Skip::NeedKeys(vec![username.to_string()])),
        }
    }

    /// Fetches the accounts' devices from the server and remembers their keys. An account the
    /// server does not know has none, and neither has a name that cannot be a username (a
    /// stranger's Welcome may name anything): it is not even asked for. Only an unreachable
    /// server or a local fault stops this; anything else the server answers means "no
    /// devices", so the entry that named them is refused alone.
    pub(crate) async fn fetch_keys(&mut self, users: &[String]) -> ClientResult<()> {
        let api = self.api()?;
        for username in users {
            let list = if kith_proto::validate_username(username).is_err() {
                None
            } else {
                match api.devices(username).await {
                    Ok(list) => Some(list),
                    Err(e) if e.is_unreached() || e.is_local() => return Err(e),
                    Err(e) => {
                        tracing::debug!(error = %e, "no device keys for an account an entry named");
                        None
                    }
                }
            };
            // Only keys the server's key directory proves are taken (`crate::kt`); others are
            // as none, so what named them is refused alone.
            let list = match list {
                Some(l) => {
                    let devices: Vec<(u64, &[u8])> = l
                        .devices
                        .iter()
                        .map(|d| (d.device_id, d.credential_key.0.as_slice()))
                        .collect();
                    let key = l.account_key.as_ref().map(|k| k.0.clone());
                    match self.kt_check(username, key.as_deref(), &devices).await {
                        Ok(()) => Some(l),
                        Err(e) if e.is_unreached() || e.is_local() => return Err(e),
                        Err(e) => {
                            tracing::debug!(error = %e, "keys the key directory does not prove");
                            None
                        }
                    }
                }
                None => None,
            };
            if let Some(l) = &list {
                self.local.set_account_kind(username, l.kind == AccountKind::Business)?;
                let listed = l.account_key.as_ref().map(|k| k.0.as_slice());
                self.note_account_key(username, listed, &l.keys)?;
            }
            if let Some(l) = &list {
                for d in &l.removed_devices {
                    self.local.add_removed_device_key(
                        username,
                        &d.credential_key.0,
                        d.device_id,
                    )?;
                }
            }
            for d in list.into_iter().flat_map(|l| l.devices) {
                self.local.add_device_key(username, &d.credential_key.0, d.device_id)?;
            }
            self.keys_fetched.0.borrow_mut().insert(username.clone());
        }
        Ok(())
    }

    /// Records the account key the server lists for `username` and returns the one to check
    /// its devices with. An account key never goes away (recovery replaces it, nothing removes
    /// it): a server that stops listing one it listed before is not believed, so it cannot
    /// pass off uncertified devices as those of an account from before account keys.
    ///
    /// A listed key other than the one known is taken only when the account's recovery key,
    /// as known here, signed the change to it (`kith_proto::recovery::follow`): the server
    /// cannot swap an account's key on its own. Otherwise the known key stays, and the
    /// account's new devices are refused. The recovery key is taken on first sight, like the
    /// account key, and changes only by a change the one known signed.
    pub(crate) fn note_account_key(
        &self,
        username: &str,
        listed: Option<&[u8]>,
        keys: &kith_proto::AccountKeys,
    ) -> ClientResult<Option<Vec<u8>>> {
        // This account's own key is the one this device holds, whatever the server lists: a
        // server listing another would otherwise pass its own devices off as this account's.
        if self.profile.as_ref().is_some_and(|p| p.username == username)
            && let Some(own) = self.account_key()?
        {
            if listed != Some(own.as_slice()) {
                tracing::warn!("the server lists another key for this account than it holds");
            }
            self.local.set_account_key_of(username, Some(&own))?;
            return Ok(Some(own));
        }
        let known = self.local.account_key_of(username)?.flatten();
        let known_recovery = self.local.recovery_key_of(username)?;
        // A recovery key is taken on first sight only bound to the account key by its
        // signature: the server cannot slip one of its own under an account key it did not
        // choose, and then sign changes with it.
        let bound_to = |account: &[u8]| {
            keys.recovery_key.as_ref().zip(keys.recovery_binding.as_ref()).and_then(|(r, b)| {
                kith_proto::recovery::verify(
                    account,
                    &kith_proto::recovery::binding_bytes(username, &r.0),
                    &b.0,
                )
                .then_some(r.0.as_slice())
            })
        };
        let changes: Vec<kith_proto::recovery::KeyChange> = keys
            .key_changes
            .iter()
            .filter_map(|c| kith_proto::recovery::KeyChange::decode(&c.0))
            .collect();
        match (listed, known) {
            (None, Some(known)) => {
                tracing::warn!("the server no longer lists an account key it listed before");
                Ok(Some(known))
            }
            (Some(listed), Some(known)) => {
                let Some(recovery) = known_recovery else {
                    if listed != known.as_slice() {
                        tracing::warn!("an account key changed, with no recovery key known");
                        self.local.set_unconfirmed_key_of(username, Some(listed))?;
                        return Ok(Some(known));
                    }
                    // The recovery key, on first sight, bound to the account key known.
                    self.local.set_recovery_key_of(username, bound_to(&known))?;
                    self.local.set_unconfirmed_key_of(username, None)?;
                    return Ok(Some(known));
                };
                match kith_proto::recovery::follow(username, (&known, &recovery), &changes, listed)
                {
                    Some((account, recovery)) => {
                        self.local.set_account_key_of(username, Some(&account))?;
                        self.local.set_recovery_key_of(username, Some(&recovery))?;
                        self.local.set_unconfirmed_key_of(username, None)?;
                        Ok(Some(account))
                    }
                    None => {
                        // Kept aside: what a device it certifies brings waits until this
                        // person trusts it (`Client::trust_account_key`).
                        tracing::warn!("an account key changed without its recovery key's word");
                        self.local.set_unconfirmed_key_of(username, Some(listed))?;
                        Ok(Some(known))
                    }
                }
            }
            (listed, _) => {
                self.local.set_account_key_of(username, listed)?;
                self.local.set_recovery_key_of(username, listed.and_then(bound_to))?;
                Ok(listed.map(<[u8]>::to_vec))
            }
        }
    }

    /// Whether `username` is a business account, as the server lists it (asked once, then
    /// remembered). A business is never a story contact, and a person joins a group holding a
    /// business only after opening a conversation with it.
    pub(crate) async fn is_business(&mut self, username: &str) -> ClientResult<bool> {
        if let Some(known) = self.local.account_is_business(username)? {
            return Ok(known);
        }
        self.fetch_keys(&[username.to_string()]).await?;
        Ok(self.local.account_is_business(username)?.unwrap_or(false))
    }
}
