//! Taking an account back with its recovery code (see `kith_proto::recovery` and
//! docs/protocol.md, "Recovery"). The server keeps the public half of the account's recovery
//! key and every key change it signed; it never sees the code.
//!
//! - [`set_recovery_key`]: an account without a recovery key takes one from any of its
//!   devices; after that only a change signed by the current one replaces it, so a thief who
//!   holds a copy of a device cannot lock the owner's code out;
//! - [`recover`]: with the current recovery key's signatures, every device of the account is
//!   removed (tokens refused at once on every node, push connections closed), the new one is
//!   made, the keys change, and each conversation's other members are told, so their clients
//!   replace the old devices with the new one.

use std::net::IpAddr;
use std::sync::Arc;

use kith_proto::recovery::{self as proof, KeyChange};
use kith_proto::*;
use kith_store::{
    AccountRecovery, NewMessage, RecoveryKeySet, RecoveryOutcome, StoreError, StoredEntry,
};

use crate::extract::{AuthedDevice, token_hash};
use crate::state::AppState;

/// The suspension reason of an account the operator reset (`kithd admin recover`): lifted by
/// the recovery that uses the code it printed, and by nothing else but `unsuspend`.
pub const RECOVERY_PENDING: &str =
    "the server's operator reset this account's recovery code: take it back with `kith recover`";

/// `kithd admin recover`: suspends the account and gives it a fresh recovery code (returned,
/// normalized, to be printed once). The change is the operator's, not signed by the account's
/// old recovery key, so contacts' clients do not follow the new account key on their own.
pub async fn operator_reset(
    store: &dyn kith_store::Store,
    username: &str,
    now: u64,
) -> anyhow::Result<Secret> {
    let account = store
        .account_devices(username)
        .await?
        .ok_or_else(|| anyhow::anyhow!("there is no account named {username}"))?;
    let mut bytes = zeroize::Zeroizing::new([0u8; proof::CODE_LENGTH]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let code = Secret::new(
        bytes.iter().map(|b| char::from(proof::CODE_ALPHABET[usize::from(b & 31)])).collect(),
    );
    let set = RecoveryKeySet {
        expected: account.recovery_key,
        new: kith_proto::account::public_key(&proof::code_key(code.expose())),
        change: None,
        binding: None,
        set_by: None,
    };
    if !store.set_recovery_key(username, set).await? {
        anyhow::bail!("the account's recovery code changed meanwhile: run this again");
    }
    // Suspended until the person uses the code; a suspension it had already stays (and is
    // not lifted by the recovery: only `unsuspend` lifts it).
    let suspended = store.account_info(username).await?.and_then(|a| a.suspended);
    if suspended.is_none() {
        crate::safety::set_suspension(store, username, Some(RECOVERY_PENDING), now).await?;
    }
    Ok(code)
}

/// How long a recovery key one device set without an earlier key's word (an account from
/// before recovery codes) takes nothing back: time for the account's owner to notice a copy of
/// a device that got there first, and remove it (which takes its key away).
pub const PROVISIONAL_MS: u64 = 7 * 86_400_000;

/// Why a recovery request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("a recovery key is a 32-byte Ed25519 public key")]
    BadKey,
    #[error("the key change does not decode, or is for another account or other keys")]
    BadChange,
    #[error("the recovery code does not match this account's")]
    WrongCode,
    #[error("this account has no recovery code")]
    NoCode,
    #[error("this account has a recovery code: only it replaces it")]
    CodeHeld,
    #[error(
        "this account's recovery code was set by one of its devices less than {0} days ago, \
         without an earlier code's word: it takes the account back only after that"
    )]
    TooSoon(u64),
    #[error("the recovery key is not bound to the account key by its signature")]
    Unbound,
    #[error("a token is 64 lowercase hex characters (256 random bits)")]
    BadToken,
    #[error("the credential key must be a 32-byte Ed25519 public key")]
    CredentialKey,
    #[error("this credential key belongs to another device: every device has a key of its own")]
    KeyTaken,
    #[error("no user named {0}")]
    NoSuchUser(String),
    #[error(transparent)]
    Limited(#[from] crate::safety::Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, RecoveryError>;

/// Gives `me`'s account its recovery key (see the module's rules).
pub async fn set_recovery_key(
    state: &AppState,
    me: &AuthedDevice,
    req: SetRecoveryKey,
) -> Result<()> {
    let new = req.recovery_key.0;
    if !kith_proto::account::is_account_key(&new) {
        return Err(RecoveryError::BadKey);
    }
    let account = state
        .store
        .account_devices(&me.username)
        .await?
        .ok_or_else(|| RecoveryError::NoSuchUser(me.username.clone()))?;
    let account_key = account.account_key.clone().ok_or(RecoveryError::Unbound)?;
    if !proof::verify(&account_key, &proof::binding_bytes(&me.username, &new), &req.binding.0) {
        return Err(RecoveryError::Unbound);
    }
    let Some(change) = req.change else {
        // The first, from one device of an account from before recovery codes: it takes
        // nothing back for a while, and goes with that device if the account removes it.
        let set = RecoveryKeySet {
            expected: None,
            new,
            change: None,
            binding: Some(req.binding.0),
            set_by: Some((me.device_id, state.now())),
        };
        return match state.store.set_recovery_key(&me.username, set).await? {
            true => Ok(()),
            false => Err(RecoveryError::CodeHeld),
        };
    };
    let change = KeyChange::decode(&change.0).ok_or(RecoveryError::BadChange)?;
    // Replacing the code keeps the account key: a new account key comes only with recovery.
    if change.username != me.username
        || change.recovery_key != new
        || Some(&change.account_key) != account.account_key.as_ref()
    {
        return Err(RecoveryError::BadChange);
    }
    let held = account.recovery_key.ok_or(RecoveryError::NoCode)?;
    if !change.verify(&held) {
        return Err(RecoveryError::WrongCode);
    }
    let set = RecoveryKeySet {
        expected: Some(held),
        new,
        change: Some(change.encode()),
        binding: Some(req.binding.0),
        set_by: None,
    };
    if !state.store.set_recovery_key(&me.username, set).await? {
        // Replaced in the meantime: by another code than this one.
        return Err(RecoveryError::WrongCode);
    }
    tracing::info!(device = me.device_id, "recovery code replaced");
    Ok(())
}

/// Starts `username` again on a new device (see the module's rules). Each request counts as
/// a registration attempt of its address.
pub async fn recover(
    state: &AppState,
    peer: IpAddr,
    username: &str,
    req: RecoverAccount,
) -> Result<Recovered> {
    let now = state.now();
    // Counted apart from registrations (a person who mistypes a code a few times still
    // registers, and the other way round); a code has 120 bits, so the count is for load.
    let source = crate::safety::policy::registration_source(peer);
    let attempts = state
        .store
        .count_attempt(&format!("recovery {source}"), now.saturating_sub(3_600_000), now)
        .await?;
    if attempts > u64::from(state.safety.config.registration_attempts_per_ip_per_hour) {
        return Err(RecoveryError::Limited(crate::safety::Refusal::SlowDown {
            reason: "too many recovery attempts from this address; try again later".into(),
            retry_after: 600,
        }));
    }
    if !crate::mls::is_credential_key(&req.credential_key.0) {
        return Err(RecoveryError::CredentialKey);
    }
    let token = req.token.expose();
    if token.len() != 64 || !token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(RecoveryError::BadToken);
    }
    let change = KeyChange::decode(&req.change.0).ok_or(RecoveryError::BadChange)?;
    if change.username != username {
        return Err(RecoveryError::BadChange);
    }
    let account = state
        .store
        .account_devices(username)
        .await?
        .ok_or_else(|| RecoveryError::NoSuchUser(username.to_string()))?;
    let held = account.recovery_key.ok_or(RecoveryError::NoCode)?;
    let hash = token_hash(token);
    let signed = proof::recovery_bytes(username, &change, &req.credential_key.0, &hash);
    if !change.verify(&held) || !proof::verify(&held, &signed, &req.signature.0) {
        return Err(RecoveryError::WrongCode);
    }
    // A code is used once: the change names a recovery key of its own.
    if change.recovery_key == held {
        return Err(RecoveryError::BadChange);
    }
    let bound = proof::binding_bytes(username, &change.recovery_key);
    if !proof::verify(&change.account_key, &bound, &req.recovery_binding.0) {
        return Err(RecoveryError::Unbound);
    }
    if let Some((_, at)) = account.recovery_set_by
        && now < at + PROVISIONAL_MS
    {
        return Err(RecoveryError::TooSoon(PROVISIONAL_MS / 86_400_000));
    }
    let outcome = state
        .store
        .recover_account(AccountRecovery {
            username: username.to_string(),
            verified_with: held,
            account_key: change.account_key.clone(),
            recovery_key: change.recovery_key.clone(),
            recovery_binding: req.recovery_binding.0,
            change: change.encode(),
            credential_key: req.credential_key.0,
            token_hash: hash,
            now,
        })
        .await?;
    let (device_id, removed, conversations) = match outcome {
        RecoveryOutcome::Recovered { device_id, removed, conversations } => {
            (device_id, removed, conversations)
        }
        RecoveryOutcome::OtherKey => return Err(RecoveryError::WrongCode),
        RecoveryOutcome::KeyTaken => return Err(RecoveryError::KeyTaken),
    };
    for device in &removed {
        state.auth_cache.forget(*device);
        state.hub.disconnect(*device);
    }
    state.kt.changed(&[username.to_string()]).await;
    // The operator's reset is done with: its suspension goes (any other stays).
    if state.store.account_info(username).await?.and_then(|a| a.suspended).as_deref()
        == Some(RECOVERY_PENDING)
    {
        crate::safety::set_suspension(&*state.store, username, None, now).await?;
        state.auth_cache.forget_account(username);
    }
    state.fanout.forget_routes();
    tracing::info!(device = device_id, removed = removed.len(), "an account recovered");
    tell_members(state, username, device_id, account.kind, conversations).await;
    Ok(Recovered { device_id, removed: u32::try_from(removed.len()).unwrap_or(u32::MAX) })
}

/// Tells each conversation's other members the account started again. The recovery is done
/// whatever happens here: a member not told learns it at the account's next message or claim.
async fn tell_members(
    state: &AppState,
    username: &str,
    device: u64,
    kind: AccountKind,
    conversations: Vec<(Vec<u8>, Vec<u64>)>,
) {
    let notice = Notice::Recovered(username.to_string());
    for (conversation, recipients) in conversations {
        let from = (username, device, kind);
        if let Err(e) = notify(state, from, conversation, recipients, &notice).await {
            tracing::warn!(error = %e, "cannot tell a conversation an account recovered");
        }
    }
}

/// Queues `notice` (a queue entry of kind `notice`, from the server itself) for `recipients`
/// under `conversation`, from `from` (the account, device and kind it is about), and pushes
/// it to those connected.
pub async fn notify(
    state: &AppState,
    from: (&str, u64, AccountKind),
    conversation: Vec<u8>,
    recipients: Vec<u64>,
    notice: &Notice,
) -> std::result::Result<(), StoreError> {
    if recipients.is_empty() {
        return Ok(());
    }
    let data = serde_json::to_vec(notice).unwrap_or_default();
    let now = state.now();
    let message = NewMessage {
        conversation: conversation.clone(),
        sender_device: from.1,
        kind: EntryKind::Notice,
        data: data.clone(),
        recipients: recipients.clone(),
        now,
        expires_at: None,
        withheld: vec![],
        client_id: None,
    };
    let queued = state.store.enqueue(message).await?;
    state.queues.added(&recipients);
    let entry = StoredEntry {
        seq: 0,
        message_id: queued.message_id,
        conversation,
        kind: EntryKind::Notice,
        sender: from.0.to_string(),
        sender_device: from.1,
        sender_kind: from.2,
        sender_verified: false,
        data,
        created_at: now,
        expires_at: None,
    };
    let entry = Arc::new(crate::delivery::entries::to_wire_untagged(entry));
    state.hub.push(&recipients, &queued.seqs, &entry);
    Ok(())
}
