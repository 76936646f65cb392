//! Linking a new device to an account (see docs/protocol.md, "Linking a device"). The server
//! relays; it never learns the code's password, so it can neither read what the two devices
//! seal for each other nor make a device on its own:
//!
//! - [`offer`]: a device of the account offers a link (its id chosen by the device, ten
//!   minutes, one open link per device at a time is not enforced: each works once);
//! - [`look`], [`join`], [`result`]: the new device, without a token yet — reads the offer,
//!   joins once (counted like a registration attempt, per address), and collects the outcome;
//! - [`request`], [`approve`], [`cancel`]: the offering account's devices — read what the new
//!   device sent, approve it with a signature by the account key (within the device limit),
//!   or cancel;
//! - [`answer`]: the new device, now with its token, hands over its KeyPackages sealed, which
//!   drops the handover from the server.

use std::net::IpAddr;

use kith_proto::*;
use kith_store::{LinkApproval, LinkRecord, LinkedDevice, NewLink, StoreError};

use crate::extract::AuthedDevice;
use crate::state::AppState;

/// How long a link works.
pub const LINK_LIFETIME_MS: u64 = 10 * 60 * 1000;
/// How long an approved link lasts for its history transfer (a new device that went away
/// half-way resumes within this).
pub const TRANSFER_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// The largest history chunk, sealed, and the most chunks one history has.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;
pub const MAX_CHUNKS: u32 = 4_096;

/// Why a link request was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("a link id is ten characters of Crockford base32")]
    BadId,
    #[error("a key-exchange message is 33 bytes")]
    BadPake,
    #[error("no such link: it was never offered, was cancelled, or is used and gone")]
    Unknown,
    #[error("the link expired: offer a new one on the other device")]
    Expired,
    #[error("the link was used already: a code works once")]
    Used,
    #[error("nobody has joined the link yet")]
    NotJoined,
    #[error("this link is another account's")]
    OtherAccount,
    #[error("the account has no account key: a device from before account keys syncs first")]
    NoAccountKey,
    #[error("the approval is not signed by the account's key")]
    BadSignature,
    #[error("a token hash is 32 bytes, a credential key 32")]
    BadDevice,
    #[error("this account has {0} devices, as many as this server allows: remove one first")]
    TooManyDevices(u32),
    #[error("this credential key belongs to another device")]
    KeyTaken,
    #[error("the link is not waiting for this device's KeyPackages")]
    NotAwaited,
    #[error("a history chunk is at most 256 KiB, and a history at most 4,096 chunks")]
    BadChunk,
    #[error("this link's history is for its new device")]
    NotForThisDevice,
    #[error(transparent)]
    Limited(#[from] crate::safety::Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, LinkError>;

/// Ten characters of Crockford base32 (no I, L, O, U).
pub fn valid_id(id: &str) -> bool {
    id.len() == 10 && id.bytes().all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
}

/// SPAKE2's messages on Ed25519 are a side byte and a point: 33 bytes.
fn valid_pake(pake: &[u8]) -> bool {
    pake.len() == 33
}

/// A device offers a link for a new device of its account.
pub async fn offer(state: &AppState, me: &AuthedDevice, req: OfferLink) -> Result<LinkOffered> {
    if !valid_id(&req.link_id) {
        return Err(LinkError::BadId);
    }
    if !valid_pake(&req.pake.0) {
        return Err(LinkError::BadPake);
    }
    let account = state.store.account_devices(&me.username).await?;
    if account.and_then(|a| a.account_key).is_none() {
        return Err(LinkError::NoAccountKey);
    }
    let now = state.now();
    let expires_at = now + LINK_LIFETIME_MS;
    state
        .store
        .create_link(NewLink {
            id: req.link_id.clone(),
            username: me.username.clone(),
            device_id: me.device_id,
            pake: req.pake.0.clone(),
            created_at: now,
            expires_at,
        })
        .await
        .map_err(|e| match e {
            // Fifty random bits: a collision is someone reusing an id.
            StoreError::LinkExists => LinkError::Used,
            e => e.into(),
        })?;
    tracing::info!(device = me.device_id, "a link offered");
    Ok(LinkOffered { link_id: req.link_id, pake: req.pake, expires_at })
}

/// The link, if it is open: known and not expired.
async fn open_link(state: &AppState, id: &str) -> Result<LinkRecord> {
    if !valid_id(id) {
        return Err(LinkError::Unknown);
    }
    let link = state.store.link(id).await?.ok_or(LinkError::Unknown)?;
    if link.expires_at <= state.now() {
        return Err(LinkError::Expired);
    }
    Ok(link)
}

/// What the new device needs to start: the offering device's half of the key exchange.
pub async fn look(state: &AppState, id: &str) -> Result<LinkOffered> {
    let link = open_link(state, id).await?;
    if link.joined.is_some() {
        return Err(LinkError::Used);
    }
    Ok(LinkOffered { link_id: link.id, pake: B64(link.pake), expires_at: link.expires_at })
}

/// The new device joins, once. Each join counts as a registration attempt of its address.
pub async fn join(state: &AppState, peer: IpAddr, id: &str, req: JoinLink) -> Result<()> {
    crate::accounts::count_attempt(state, peer, state.now()).await.map_err(|e| match e {
        crate::accounts::AccountError::Limited(r) => LinkError::Limited(r),
        crate::accounts::AccountError::Store(e) => LinkError::Store(e),
        _ => LinkError::Limited(crate::safety::Refusal::SlowDown {
            reason: "too many attempts from this address".into(),
            retry_after: 600,
        }),
    })?;
    if !valid_pake(&req.pake.0) {
        return Err(LinkError::BadPake);
    }
    let link = open_link(state, id).await?;
    if link.joined.is_some() {
        return Err(LinkError::Used);
    }
    if !state.store.join_link(id, req.pake.0, req.request.0, state.now()).await? {
        // Joined (or expired) between the look and the write.
        return Err(LinkError::Used);
    }
    Ok(())
}

/// The link of `me`'s account, open or not.
async fn own_link(state: &AppState, me: &AuthedDevice, id: &str) -> Result<LinkRecord> {
    if !valid_id(id) {
        return Err(LinkError::Unknown);
    }
    let link = state.store.link(id).await?.ok_or(LinkError::Unknown)?;
    if link.username != me.username {
        return Err(LinkError::OtherAccount);
    }
    Ok(link)
}

/// What the new device sent, for the account's devices.
pub async fn request(state: &AppState, me: &AuthedDevice, id: &str) -> Result<LinkRequest> {
    let link = own_link(state, me, id).await?;
    if link.approved.is_none() && link.expires_at <= state.now() {
        return Err(LinkError::Expired);
    }
    let (pake, request) = link.joined.map(|(p, r)| (B64(p), B64(r))).unzip();
    Ok(LinkRequest {
        joined: pake.is_some(),
        pake,
        request,
        key_packages: link.key_packages.map(B64),
        device_id: link.approved.map(|(d, _)| d),
    })
}

/// The offering account approves the new device: signed by its account key, within its
/// device limit.
pub async fn approve(
    state: &AppState,
    me: &AuthedDevice,
    id: &str,
    req: ApproveLink,
) -> Result<LinkApproved> {
    let link = own_link(state, me, id).await?;
    if link.expires_at <= state.now() {
        return Err(LinkError::Expired);
    }
    let token_hash: [u8; 32] =
        req.token_hash.0.as_slice().try_into().map_err(|_| LinkError::BadDevice)?;
    if !crate::mls::is_credential_key(&req.credential_key.0) {
        return Err(LinkError::BadDevice);
    }
    let account_key = state
        .store
        .account_devices(&me.username)
        .await?
        .and_then(|a| a.account_key)
        .ok_or(LinkError::NoAccountKey)?;
    let approval = account::approval_bytes(id, &me.username, &req.credential_key.0, &token_hash);
    if !account::verify_approval(&account_key, &approval, &req.signature.0) {
        return Err(LinkError::BadSignature);
    }
    let max = state.config.max_devices_per_account;
    let now = state.now();
    let device = LinkedDevice {
        credential_key: req.credential_key.0,
        token_hash,
        handover: req.handover.0,
        max_devices: max,
        now,
        keep_until: now + TRANSFER_WINDOW_MS,
    };
    match state.store.approve_link(id, device).await? {
        LinkApproval::Approved(device_id) => {
            state.kt.changed(std::slice::from_ref(&me.username)).await;
            tracing::info!(device = device_id, by = me.device_id, "a device linked");
            Ok(LinkApproved { device_id })
        }
        LinkApproval::NotJoined => Err(LinkError::NotJoined),
        LinkApproval::Gone => Err(LinkError::Used),
        LinkApproval::TooManyDevices => Err(LinkError::TooManyDevices(max)),
        LinkApproval::KeyTaken => Err(LinkError::KeyTaken),
    }
}

/// The outcome, for the new device: its id and the sealed handover once approved.
pub async fn result(state: &AppState, id: &str) -> Result<LinkResult> {
    if !valid_id(id) {
        return Err(LinkError::Unknown);
    }
    let link = state.store.link(id).await?.ok_or(LinkError::Unknown)?;
    match link.approved {
        Some((device_id, handover)) => Ok(LinkResult {
            approved: true,
            device_id: Some(device_id),
            handover: handover.map(B64),
        }),
        None if link.expires_at <= state.now() => Err(LinkError::Expired),
        None => Ok(LinkResult { approved: false, device_id: None, handover: None }),
    }
}

/// The new device, with its own token now, hands over its KeyPackages sealed.
pub async fn answer(state: &AppState, me: &AuthedDevice, id: &str, req: AnswerLink) -> Result<()> {
    let link = own_link(state, me, id).await?;
    if link.approved.map(|(d, _)| d) != Some(me.device_id) {
        return Err(LinkError::NotAwaited);
    }
    if !state.store.answer_link(id, req.key_packages.0).await? {
        return Err(LinkError::NotAwaited);
    }
    Ok(())
}

/// The account's devices cancel a link (a wrong code was tried) or drop it once used.
pub async fn cancel(state: &AppState, me: &AuthedDevice, id: &str) -> Result<()> {
    own_link(state, me, id).await?;
    state.store.delete_link(id).await?;
    Ok(())
}

/// The offering device puts up chunk `n` of the history (sealed for the new device).
pub async fn put_chunk(
    state: &AppState,
    me: &AuthedDevice,
    id: &str,
    n: u32,
    req: HistoryChunk,
) -> Result<()> {
    let data = req.data.map(B64::into_inner).unwrap_or_default();
    if data.is_empty() || data.len() > MAX_CHUNK_BYTES || req.total > MAX_CHUNKS || n >= req.total {
        return Err(LinkError::BadChunk);
    }
    let link = own_link(state, me, id).await?;
    if link.device_id != me.device_id {
        return Err(LinkError::OtherAccount);
    }
    if !state.store.put_link_chunk(id, n, req.total, data, state.now()).await? {
        return Err(LinkError::Expired);
    }
    Ok(())
}

/// The new device fetches chunk `n` (absent until it is up).
pub async fn chunk(state: &AppState, me: &AuthedDevice, id: &str, n: u32) -> Result<HistoryChunk> {
    let link = own_link(state, me, id).await?;
    if link.approved.map(|(d, _)| d) != Some(me.device_id) {
        return Err(LinkError::NotForThisDevice);
    }
    if link.expires_at <= state.now() {
        return Err(LinkError::Expired);
    }
    Ok(match state.store.link_chunk(id, n).await? {
        Some((total, data)) => HistoryChunk { total, data: Some(B64(data)) },
        None => HistoryChunk { total: 0, data: None },
    })
}
