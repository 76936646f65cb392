//! Accounts and their devices: registration, tokens and KeyPackages, one function per rule.
//!
//! - [`register`]: per address, a budget of registration attempts (on this node and across
//!   every node sharing the store); a repeat of a registration that went through (its answer
//!   was lost) is answered as done, by the client that chose its token ([`registered_already`]);
//! - [`create`]: a valid username, a 32-byte credential key no other device has, at most
//!   `max_key_packages_per_upload` KeyPackages, each one the shared rule accepts for this
//!   device ([`check_key_packages`]), a business profile only for a business
//!   ([`business_profile`]), and a token of 256 random bits ([`chosen_token`]);
//! - [`rotate_token`]: signed by the device's own key, never the token in use;
//! - [`upload_key_packages`]: at most `max_key_packages_per_device` held; one no Kith client
//!   makes counts against the uploader;
//! - [`claim_key_packages`]: the claim limits, the opt-in rule for a business, the hourly
//!   budget of one-time KeyPackages, and only what every client will take.

use std::net::IpAddr;

use kith_proto::*;
use kith_store::{NewAccount, StoreError};
use openmls_rust_crypto::OpenMlsRustCrypto;
use subtle::ConstantTimeEq as _;

use crate::businesses::BusinessError;
use crate::extract::{AuthedDevice, token_hash};
use crate::mls::{self, KeyPackageRefusal};
use crate::safety::{self, Refusal};
use crate::state::AppState;

/// Why an account request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Username(#[from] IdError),
    #[error("no user named {0}")]
    NoSuchUser(String),
    #[error("this device is gone")]
    DeviceGone,
    #[error("the credential key must be a 32-byte Ed25519 public key")]
    CredentialKey,
    #[error(
        "an account key (and a recovery key) is a 32-byte Ed25519 public key, and a recovery key \
         comes with the account key's signature binding it"
    )]
    AccountKey,
    #[error("this account has another account key; it changes only by linking or recovery")]
    AccountKeyHeld,
    #[error("a device's name has 1 to 64 characters and no control characters")]
    DeviceName,
    #[error("this account has no device {0}")]
    NotOwnDevice(u64),
    #[error("a device is removed from another device of its account")]
    RemoveFromAnother,
    #[error("this credential key belongs to another device: every device has a key of its own")]
    KeyTaken,
    #[error(
        "with an account key, a device's KeyPackages follow its registration (POST \
         /v1/key-packages), certified for the device id it is given"
    )]
    KeyPackagesTooEarly,
    #[error("a registration without an account key carries a last-resort KeyPackage")]
    NoLastResort,
    #[error(transparent)]
    KeyPackage(#[from] KeyPackageRefusal),
    #[error("at most {0} KeyPackages per request")]
    TooManyKeyPackages(usize),
    #[error("a device may hold at most {cap} KeyPackages; it holds {held}")]
    TooManyHeld { cap: u64, held: u64 },
    #[error("{0} has no device with a KeyPackage")]
    NoKeyPackages(String),
    #[error("a token is 64 lowercase hex characters (256 random bits)")]
    BadToken,
    #[error("the new token is the one in use")]
    SameToken,
    #[error("rotating a token needs a signature by the device's own key")]
    NotDeviceSignature,
    #[error("only business accounts have a public display name and description")]
    PersonProfile,
    #[error("a display name has 1 to 64 characters and no control characters")]
    DisplayName,
    #[error("a description has at most 500 characters")]
    Description,
    /// `internal`: logged, answered without the reason.
    #[error("internal error")]
    NoRandomness,
    #[error(transparent)]
    Business(#[from] BusinessError),
    #[error(transparent)]
    Limited(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, AccountError>;

/// Claims tried again, at most, while they hand out only unusable one-time KeyPackages.
const UNUSABLE_TRIES: usize = 8;

/// An account registered: `new` unless this was a repeat of the client's own registration.
#[derive(Debug)]
pub struct Registered {
    pub answer: RegisterResponse,
    pub new: bool,
}

/// Registers `req` from `peer`, or answers a repeat of it.
pub async fn register(state: &AppState, peer: IpAddr, req: RegisterRequest) -> Result<Registered> {
    // A repeat of a registration that went through (its answer was lost) is answered as
    // such: looked up only where the request would otherwise be refused — past the per-IP
    // limit, or for a taken name — so it costs nothing more on the way in.
    let who = (req.username.clone(), req.credential_key.0.clone(), req.token.clone());
    let repeat = async |refused: AccountError| {
        let before = registered_already(state, &who.0, &who.1, who.2.as_ref()).await?;
        before.map(|answer| Registered { answer, new: false }).ok_or(refused)
    };
    // The attempt is counted at `at`, and given back at the same `at` if it fails.
    let at = state.now();
    if let Err(limited) = count_attempt(state, peer, at).await {
        return repeat(limited).await;
    }
    match create(state, req).await {
        Ok(answer) => Ok(Registered { answer, new: true }),
        Err(e) => {
            state.safety.registration_failed(peer, at);
            // A taken name, or a taken key (the first of two identical registrations posted
            // at once may land between this one's two looks): answered as registered if it is
            // this client's own registration, refused otherwise.
            let taken = matches!(
                e,
                AccountError::Store(StoreError::UsernameTaken)
                    | AccountError::KeyTaken
                    | AccountError::CredentialKey
                    | AccountError::KeyPackage(_)
            );
            if taken { repeat(e).await } else { Err(e) }
        }
    }
}

/// Per address, so one address cannot mint accounts in bulk (behind a proxy, the proxy's):
/// counted on this node and across every node sharing the store. The attempt counts from
/// here; if it fails, it is given back.
pub(crate) async fn count_attempt(state: &AppState, peer: IpAddr, at: u64) -> Result<()> {
    let verdict = state.safety.check_registration(peer, at);
    safety::enforce(state, "", verdict).await?;
    let source = crate::safety::policy::registration_source(peer);
    let hour = 3_600_000;
    let attempts = state
        .store
        .count_attempt(&format!("registration {source}"), at.saturating_sub(hour), at)
        .await?;
    if attempts > u64::from(state.safety.config.registration_attempts_per_ip_per_hour) {
        state.safety.registration_failed(peer, at);
        let reason = "too many registration attempts from this address; try again later";
        return Err(Refusal::SlowDown { reason: reason.to_string(), retry_after: 600 }.into());
    }
    Ok(())
}

/// Creates the account and its first device.
async fn create(state: &AppState, req: RegisterRequest) -> Result<RegisterResponse> {
    if !mls::is_credential_key(&req.credential_key.0) {
        return Err(AccountError::CredentialKey);
    }
    let is_key =
        |k: &Option<B64>| k.as_ref().is_none_or(|k| kith_proto::account::is_account_key(&k.0));
    if !is_key(&req.account_key) || !is_key(&req.recovery_key) {
        return Err(AccountError::AccountKey);
    }
    // A recovery key comes bound to the account key that signs for it.
    if let Some(recovery) = &req.recovery_key {
        let bound = req.account_key.as_ref().zip(req.recovery_binding.as_ref()).is_some_and(
            |(account, binding)| {
                kith_proto::recovery::verify(
                    &account.0,
                    &kith_proto::recovery::binding_bytes(&req.username, &recovery.0),
                    &binding.0,
                )
            },
        );
        if !bound {
            return Err(AccountError::AccountKey);
        }
    }
    let max = state.config.max_key_packages_per_upload;
    if req.key_packages.len() > max {
        return Err(AccountError::TooManyKeyPackages(max));
    }
    // Cheap checks before the costly ones (each KeyPackage costs two signature checks and two
    // trial encryptions): a taken name is refused before any of it.
    if state.store.account_info(&req.username).await?.is_some() {
        return Err(StoreError::UsernameTaken.into());
    }
    let key = std::slice::from_ref(&req.credential_key.0);
    if !state.store.devices_by_credential_keys(key).await?.is_empty() {
        // One device per credential key, across accounts: a second account reusing a key
        // would be indistinguishable from the first in a group's tree.
        return Err(AccountError::KeyTaken);
    }
    // With an account key, KeyPackages follow the registration, each carrying a certificate
    // naming the device id it gives; without one (a client from before account keys) they
    // come with it, a last-resort one among them.
    let last_resort = req.last_resort_key_package.as_ref();
    match (&req.account_key, last_resort) {
        (Some(_), Some(_)) => return Err(AccountError::KeyPackagesTooEarly),
        (Some(_), None) if !req.key_packages.is_empty() => {
            return Err(AccountError::KeyPackagesTooEarly);
        }
        (None, None) => return Err(AccountError::NoLastResort),
        _ => {}
    }
    let owner = mls::Owner { account: &req.username, account_key: None, device: None };
    check_key_packages(&owner, &req.credential_key.0, &req.key_packages, last_resort)?;
    let profile = business_profile(&req)?;
    let token = chosen_token(req.token)?;
    let device_id = state
        .store
        .create_account(NewAccount {
            username: req.username.to_string(),
            kind: req.kind,
            credential_key: req.credential_key.0,
            token_hash: token_hash(token.expose()),
            key_packages: req.key_packages.into_iter().map(B64::into_inner).collect(),
            last_resort: req.last_resort_key_package.map(B64::into_inner),
            now: state.now(),
            profile,
            account_key: req.account_key.clone().map(B64::into_inner),
            recovery_key: req.recovery_key.clone().map(B64::into_inner),
            recovery_binding: req.recovery_binding.clone().map(B64::into_inner),
        })
        .await?;
    state.metrics.registrations.inc();
    state.kt.changed(&[req.username.to_string()]).await;
    tracing::info!(device = device_id, kind = req.kind.as_str(), "account registered");
    Ok(RegisterResponse { username: req.username.into_string(), device_id, token })
}

/// Each KeyPackage is one the shared rule accepts, for this account and this device's key, in
/// the slot it is uploaded to.
fn check_key_packages(
    owner: &mls::Owner<'_>,
    credential_key: &[u8],
    one_time: &[B64],
    last_resort: Option<&B64>,
) -> std::result::Result<(), KeyPackageRefusal> {
    let crypto = OpenMlsRustCrypto::default();
    let one_time = one_time.iter().map(|kp| (kp, mls::Slot::OneTime));
    let last_resort = last_resort.into_iter().map(|kp| (kp, mls::Slot::LastResort));
    for (kp, slot) in one_time.chain(last_resort) {
        mls::check_key_package(&crypto, &kp.0, owner, credential_key, slot)?;
    }
    Ok(())
}

/// The answer to a registration posted again by the client that made it: the same username,
/// credential key and chosen token as an account's device. Only that client knows the token.
async fn registered_already(
    state: &AppState,
    username: &str,
    credential_key: &[u8],
    token: Option<&Secret>,
) -> Result<Option<RegisterResponse>> {
    let Some(token) = token else { return Ok(None) };
    let owners = state.store.devices_by_credential_keys(&[credential_key.to_vec()]).await?;
    let Some(owner) = owners.into_iter().find(|o| o.username == username) else {
        return Ok(None);
    };
    let Some(auth) = state.store.device_auth(owner.device_id).await? else { return Ok(None) };
    if !bool::from(auth.token_hash.ct_eq(&token_hash(token.expose()))) {
        return Ok(None);
    }
    Ok(Some(RegisterResponse {
        username: owner.username,
        device_id: owner.device_id,
        token: token.clone(),
    }))
}

/// A fresh 256-bit bearer token, as hex.
fn new_token() -> Result<Secret> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|_| AccountError::NoRandomness)?;
    Ok(Secret::new(hex::encode(bytes.as_slice())))
}

/// A token the client chose: 256 bits as 64 lowercase hex characters, as the server makes them.
fn chosen_token(token: Option<Secret>) -> Result<Secret> {
    match token {
        None => new_token(),
        Some(t)
            if t.expose().len() == 64
                && t.expose().bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(t)
        }
        Some(_) => Err(AccountError::BadToken),
    }
}

/// A business's public profile from a registration; people have none.
fn business_profile(req: &RegisterRequest) -> Result<Option<(String, String)>> {
    match req.kind {
        AccountKind::Person if req.display_name.is_some() || req.description.is_some() => {
            Err(AccountError::PersonProfile)
        }
        AccountKind::Person => Ok(None),
        AccountKind::Business => {
            let name = req.display_name.clone().unwrap_or_else(|| req.username.to_string());
            let about = req.description.clone().unwrap_or_default();
            let clean = |s: &str| !s.chars().any(char::is_control);
            if name.trim().is_empty() || name.chars().count() > 64 || !clean(&name) {
                return Err(AccountError::DisplayName);
            }
            if about.chars().count() > 500 || about.chars().any(|c| c.is_control() && c != '\n') {
                return Err(AccountError::Description);
            }
            Ok(Some((name, about)))
        }
    }
}

/// Replaces the calling device's token, on a signature by the device's own key (a stolen token
/// alone cannot lock its device out). The old token is refused from the next request on, and
/// push connections opened with it end.
pub async fn rotate_token(
    state: &AppState,
    me: &AuthedDevice,
    req: RotateTokenRequest,
) -> Result<RotateTokenResponse> {
    use openmls::prelude::OpenMlsCrypto as _;
    let chosen_hash = req.new_token.as_ref().map(|t| token_hash(t.expose()));
    let signed = RotateTokenRequest::signed_bytes(
        me.device_id,
        &me.token_hash,
        chosen_hash.as_ref().map(|h| h.as_slice()),
    );
    state
        .franking
        .crypto()
        .verify_signature(
            openmls::prelude::SignatureScheme::ED25519,
            &signed,
            &me.credential_key,
            &req.signature.0,
        )
        .map_err(|_| AccountError::NotDeviceSignature)?;
    let token = chosen_token(req.new_token)?;
    let new_hash = token_hash(token.expose());
    if new_hash == me.token_hash {
        return Err(AccountError::SameToken);
    }
    state.store.set_token_hash(me.device_id, new_hash).await?;
    state.auth_cache.forget(me.device_id);
    state.hub.disconnect(me.device_id);
    tracing::info!(device = me.device_id, "device token rotated");
    Ok(RotateTokenResponse { device_id: me.device_id, token })
}

/// Gives the caller's account its key if it has none (an account from before account keys);
/// the same key again is answered as set, another is refused.
pub async fn set_account_key(
    state: &AppState,
    me: &AuthedDevice,
    req: SetAccountKey,
) -> Result<SetAccountKey> {
    if !kith_proto::account::is_account_key(&req.account_key.0) {
        return Err(AccountError::AccountKey);
    }
    if !state.store.set_account_key(&me.username, req.account_key.0.clone()).await? {
        return Err(AccountError::AccountKeyHeld);
    }
    state.kt.changed(std::slice::from_ref(&me.username)).await;
    tracing::info!(device = me.device_id, "account key set");
    Ok(req)
}

/// The caller's own account's devices, with their names and when each was last seen.
pub async fn my_devices(state: &AppState, me: &AuthedDevice) -> Result<MyDevices> {
    let found = state.store.account_devices(&me.username).await?.ok_or(AccountError::DeviceGone)?;
    Ok(MyDevices {
        devices: found
            .devices
            .into_iter()
            .map(|d| MyDevice {
                this_device: d.device_id == me.device_id,
                device_id: d.device_id,
                name: d.name,
                created_at: d.created_at,
                last_seen: d.last_seen,
            })
            .collect(),
    })
}

/// Removes one of the caller's own account's other devices: its token is refused at once on
/// this node and every node sharing the store, its push connections close, and it gets
/// nothing more (see [`kith_store::AccountStore::remove_device`]). Its leaves leave each
/// conversation by the commits the caller's client makes next; until then they get nothing.
pub async fn remove_device(state: &AppState, me: &AuthedDevice, device: u64) -> Result<MyDevices> {
    if device == me.device_id {
        return Err(AccountError::RemoveFromAnother);
    }
    let own = state.store.account_devices(&me.username).await?.ok_or(AccountError::DeviceGone)?;
    if !own.devices.iter().any(|d| d.device_id == device) {
        return Err(AccountError::NotOwnDevice(device));
    }
    state.store.remove_device(device, state.now()).await?;
    state.kt.changed(std::slice::from_ref(&me.username)).await;
    state.auth_cache.forget(device);
    state.hub.disconnect(device);
    state.fanout.forget_routes();
    tracing::info!(device, by = me.device_id, "a device removed");
    my_devices(state, me).await
}

/// Names (or unnames) one of the caller's own account's devices.
pub async fn rename_device(
    state: &AppState,
    me: &AuthedDevice,
    device: u64,
    req: RenameDevice,
) -> Result<MyDevices> {
    if let Some(name) = &req.name
        && (name.trim().is_empty()
            || name.chars().count() > 64
            || name.chars().any(char::is_control))
    {
        return Err(AccountError::DeviceName);
    }
    let own = state.store.account_devices(&me.username).await?.ok_or(AccountError::DeviceGone)?;
    if !own.devices.iter().any(|d| d.device_id == device) {
        return Err(AccountError::NotOwnDevice(device));
    }
    state.store.set_device_name(device, req.name.map(|n| n.trim().to_string())).await?;
    my_devices(state, me).await
}

/// An account's devices and their credential keys.
pub async fn devices(state: &AppState, username: &str) -> Result<DeviceList> {
    let found = state
        .store
        .account_devices(username)
        .await?
        .ok_or_else(|| AccountError::NoSuchUser(username.to_string()))?;
    Ok(DeviceList {
        username: found.username,
        kind: found.kind,
        devices: found
            .devices
            .into_iter()
            .map(|d| DeviceInfo {
                device_id: d.device_id,
                credential_key: B64(d.credential_key),
                created_at: d.created_at,
            })
            .collect(),
        account_key: found.account_key.map(B64),
        keys: AccountKeys {
            recovery_key: found.recovery_key.map(B64),
            recovery_binding: found.recovery_binding.map(B64),
            key_changes: found.key_changes.into_iter().map(B64).collect(),
        },
        removed_devices: found
            .removed
            .into_iter()
            .map(|d| DeviceInfo {
                device_id: d.device_id,
                credential_key: B64(d.credential_key),
                created_at: d.created_at,
            })
            .collect(),
    })
}

/// Adds one-time KeyPackages (and optionally a new last-resort one) to `me`'s device; how many
/// it holds now.
pub async fn upload_key_packages(
    state: &AppState,
    me: &AuthedDevice,
    req: UploadKeyPackages,
) -> Result<u64> {
    let limit = state.config.max_key_packages_per_upload;
    if req.key_packages.len() > limit {
        return Err(AccountError::TooManyKeyPackages(limit));
    }
    // A replacing upload drops what the device holds: only the new ones count.
    let held =
        if req.replace { 0 } else { state.store.key_packages_remaining(me.device_id).await? };
    let cap = state.config.max_key_packages_per_device;
    if held + req.key_packages.len() as u64 > cap {
        return Err(AccountError::TooManyHeld { cap, held });
    }
    let account = state.store.account_devices(&me.username).await?;
    let account_key = account.as_ref().and_then(|a| a.account_key.clone());
    let key = account
        .and_then(|a| a.devices.into_iter().find(|d| d.device_id == me.device_id))
        .map(|d| d.credential_key)
        .ok_or(AccountError::DeviceGone)?;
    let last_resort = req.last_resort_key_package.as_ref();
    let owner = mls::Owner {
        account: &me.username,
        account_key: account_key.as_deref(),
        device: Some(me.device_id),
    };
    if let Err(e) = check_key_packages(&owner, &key, &req.key_packages, last_resort) {
        // Kith's own clients never upload one (but for a clock that is off): this counts
        // against the uploader, who alone can upload for this device.
        if e.blames_uploader() {
            let verdict = state.safety.note_unusable_upload(&me.username, state.now());
            safety::enforce(state, &me.username, verdict).await?;
        }
        return Err(e.into());
    }
    if req.replace {
        state.store.drop_key_packages(me.device_id).await?;
    }
    Ok(state
        .store
        .add_key_packages(
            me.device_id,
            req.key_packages.into_iter().map(B64::into_inner).collect(),
            req.last_resort_key_package.map(B64::into_inner),
        )
        .await?)
}

/// One KeyPackage for each device of `username` that has one, for `me` to add them. A claim
/// of the caller's own account (its other devices, which every conversation it opens holds)
/// skips the caller's device, and is neither limited nor counted: nobody else's keys are
/// spent, and an account alone on one device gets an empty list.
pub async fn claim_key_packages(
    state: &AppState,
    me: &AuthedDevice,
    username: &str,
) -> Result<ClaimResponse> {
    let now = state.now();
    let own = username == me.username;
    let one_time = if own {
        true
    } else {
        let created =
            state.store.account_info(&me.username).await?.map(|a| a.created_at).unwrap_or(now);
        let verdict = state.safety.check_claim(&me.username, username, created, now);
        safety::enforce(state, &me.username, verdict).await?;
        // A blocked caller gets the same answer as anyone (the block stays invisible); what
        // it then builds never reaches the blocker (see `delivery`).
        // A business reaches only people who opened a conversation with it.
        if me.kind == AccountKind::Business {
            crate::businesses::require_opt_in(state, &me.username, username).await?;
        }
        // All claimers together take at most the account's hourly budget of one-time
        // KeyPackages; past it they get its last-resort KeyPackage, so nobody can drain it.
        state.safety.take_key_package_budget(username, now)
    };
    let account = state
        .store
        .account_devices(username)
        .await?
        .ok_or_else(|| AccountError::NoSuchUser(username.to_string()))?;
    let account_key = account.account_key;
    let keys = AccountKeys {
        recovery_key: account.recovery_key.map(B64),
        recovery_binding: account.recovery_binding.map(B64),
        key_changes: account.key_changes.into_iter().map(B64).collect(),
    };
    let except = own.then_some(me.device_id);
    let claimed = claim_usable(state, username, account_key.as_deref(), one_time, except).await?;
    if claimed.is_empty() && !own {
        return Err(AccountError::NoKeyPackages(username.to_string()));
    }
    if !own {
        let n = u32::try_from(claimed.len()).unwrap_or(u32::MAX);
        state.safety.note_claim(&me.username, username, n, now);
    }
    state.metrics.key_packages_claimed.inc_by(claimed.len() as u64);
    let key_packages = claimed
        .into_iter()
        .map(|c| ClaimedKeyPackage {
            device_id: c.device_id,
            key_package: B64(c.data),
            last_resort: c.last_resort,
        })
        .collect();
    Ok(ClaimResponse {
        username: username.to_string(),
        key_packages,
        account_key: account_key.map(B64),
        keys,
    })
}

/// Only what every Kith client will take is handed out (the rule clients apply at claim): one
/// that expired since, or was stored before the rule, is dropped here, so the claimer is never
/// charged for a KeyPackage nobody could use. A one-time KeyPackage dropped so is used up; the
/// next one is tried (a few times: an account idle for months holds many expired ones until
/// its device tops up).
async fn claim_usable(
    state: &AppState,
    username: &str,
    account_key: Option<&[u8]>,
    one_time: bool,
    except: Option<kith_store::DeviceId>,
) -> Result<Vec<kith_store::ClaimedKeyPackage>> {
    let crypto = OpenMlsRustCrypto::default();
    let mut claimed = Vec::new();
    for _ in 0..UNUSABLE_TRIES {
        let round = state.store.claim_key_packages(username, one_time, except).await?;
        let handed = round.len();
        let mut dropped_one_time = false;
        claimed = round
            .into_iter()
            .filter(|c| {
                let owner =
                    mls::Owner { account: username, account_key, device: Some(c.device_id) };
                let usable = mls::usable_now(&crypto, &c.data, &owner);
                if !usable {
                    tracing::info!(
                        device = c.device_id,
                        "an unusable stored KeyPackage was not handed out"
                    );
                    state.metrics.key_packages_unusable.inc();
                    dropped_one_time |= !c.last_resort;
                }
                usable
            })
            .collect();
        // Tried again only when nothing usable came and a one-time one was used up.
        if !claimed.is_empty() || handed == 0 || !dropped_one_time {
            break;
        }
    }
    Ok(claimed)
}
