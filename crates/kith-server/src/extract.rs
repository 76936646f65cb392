//! Request extractors: the authenticated device, the JSON body, and the ids in a path —
//! each parsed once, here, with its own stable error code.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{StatusCode, header, request::Parts};
use kith_proto::watch::{Spoiled, watching};
use kith_proto::{AccountKind, ConversationId, IdError};
use kith_store::{DeviceAuth, DeviceId, StoreError};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::safety::Refusal;
use crate::state::AppState;

/// Why a request was refused before any service saw it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `unauthorized`.
    #[error("this endpoint needs `Authorization: Bearer <device-id>:<token>`")]
    NoAuthorization,
    #[error("the Authorization header must be `Bearer <device-id>:<token>`")]
    BadAuthorization,
    #[error("the Authorization header is not valid text")]
    AuthorizationNotText,
    #[error("unknown device or wrong token")]
    WrongToken,
    /// `body_too_large`.
    #[error("the request body is too large")]
    BodyTooLarge,
    /// `unavailable`, with `Retry-After`.
    #[error("the server is holding too many request bodies; try again shortly")]
    BodiesBusy,
    /// `bad_request`.
    #[error("the request body did not arrive in time")]
    BodyTooSlow,
    #[error("the request body could not be read")]
    BodyUnreadable,
    /// `bad_base64`.
    #[error("a binary field is not valid base64 ({0})")]
    BadBase64(String),
    /// `malformed_json`.
    #[error("the body is not the expected JSON: {0}")]
    MalformedJson(String),
    /// `bad_request`.
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("this endpoint takes a WebSocket upgrade request: {0}")]
    NotWebSocket(String),
    /// `rate_limited`.
    #[error("this device already has {0} open push connections; close one first")]
    TooManyConnections(usize),
    /// `not_found`.
    #[error("no such endpoint")]
    NoSuchEndpoint,
    /// `method_not_allowed`.
    #[error("this endpoint does not take that method")]
    MethodNotAllowed,
    /// `unavailable`: the handler did not finish in `request_timeout_seconds`.
    #[error("the server could not answer in time; try again shortly")]
    TooLate,
    /// `internal`: a handler failed.
    #[error("internal error")]
    HandlerFailed,
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request made by a device that proved its bearer token.
#[derive(Clone, Debug)]
pub struct AuthedDevice {
    pub device_id: DeviceId,
    pub username: String,
    pub kind: AccountKind,
    /// The device's Ed25519 public key: the key its MLS leaf must carry.
    pub credential_key: Vec<u8>,
    /// A business account the operator verified (as of the cached record).
    pub verified: bool,
    /// SHA-256 of the token this request presented (what a token rotation's signature covers).
    pub token_hash: [u8; 32],
}

/// Devices' authentication records, so a busy device costs a hash, not a query, per request.
/// Records only: tokens are never held. A std mutex, held for a map lookup and never across an
/// await.
#[derive(Default)]
pub struct AuthCache {
    devices: Mutex<HashMap<DeviceId, (DeviceAuth, Instant)>>,
    /// When this node last wrote each device's `last_seen` (see [`kith_store::SEEN_EVERY`]).
    seen: Mutex<HashMap<DeviceId, Instant>>,
}

/// How long a cached record is trusted. An admin's suspension from another process (or
/// another node) takes effect within this time.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(10);

/// Bounds the cache; past it the cache starts again empty (cheap, and rare).
const AUTH_CACHE_MAX: usize = 100_000;

impl AuthCache {
    fn get(&self, device: DeviceId) -> Option<DeviceAuth> {
        let map = self.devices.lock().ok()?;
        let (auth, at) = map.get(&device)?;
        (at.elapsed() < AUTH_CACHE_TTL).then(|| auth.clone())
    }

    fn put(&self, auth: DeviceAuth) {
        if let Ok(mut map) = self.devices.lock() {
            if map.len() >= AUTH_CACHE_MAX {
                map.clear();
            }
            map.insert(auth.device_id, (auth, Instant::now()));
        }
    }

    /// Whether the device's `last_seen` is due to be written (and, if so, noted as written).
    fn due_to_note_seen(&self, device: DeviceId) -> bool {
        let Ok(mut seen) = self.seen.lock() else { return false };
        if seen.get(&device).is_some_and(|at| at.elapsed() < kith_store::SEEN_EVERY) {
            return false;
        }
        if seen.len() >= AUTH_CACHE_MAX {
            seen.clear();
        }
        seen.insert(device, Instant::now());
        true
    }

    /// Forget a device (e.g. when it is removed or its token rotated).
    pub fn forget(&self, device: DeviceId) {
        if let Ok(mut map) = self.devices.lock() {
            map.remove(&device);
        }
    }

    /// Forget every device of an account (e.g. when it is suspended).
    pub fn forget_account(&self, username: &str) {
        if let Ok(mut map) = self.devices.lock() {
            map.retain(|_, (a, _)| a.username != username);
        }
    }
}

/// SHA-256 of a bearer token: what the server stores in place of the token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Splits `Bearer <device-id>:<token>`.
fn parse_bearer(value: &str) -> Option<(DeviceId, &str)> {
    let rest = value.strip_prefix("Bearer ")?;
    let (id, token) = rest.split_once(':')?;
    let id = id.parse().ok()?;
    (!token.is_empty()).then_some((id, token))
}

/// Whether a device may still use what it opened with the token of hash `token_hash` (a push
/// connection): the token is unchanged and the account not suspended. A store failure keeps
/// it (the next check decides).
pub async fn still_allowed(state: &AppState, device: DeviceId, token_hash: &[u8; 32]) -> bool {
    match device_record(state, device).await {
        Ok(Some(auth)) => bool::from(auth.token_hash.ct_eq(token_hash)) && auth.suspended.is_none(),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// The device's authentication record, from the cache or else the store (then cached).
async fn device_record(
    state: &AppState,
    device: DeviceId,
) -> Result<Option<DeviceAuth>, kith_store::StoreError> {
    if let Some(a) = state.auth_cache.get(device) {
        return Ok(Some(a));
    }
    let found = state.store.device_auth(device).await?;
    if let Some(a) = &found {
        state.auth_cache.put(a.clone());
    }
    Ok(found)
}

impl AuthedDevice {
    /// Checks an `Authorization` header value against the store.
    pub async fn authenticate(state: &AppState, value: Option<&str>) -> Result<Self, RequestError> {
        let value = value.ok_or(RequestError::NoAuthorization)?;
        let (device, token) = parse_bearer(value).ok_or(RequestError::BadAuthorization)?;
        let auth = device_record(state, device).await?.ok_or(RequestError::WrongToken)?;
        if !bool::from(token_hash(token).ct_eq(&auth.token_hash)) {
            return Err(RequestError::WrongToken);
        }
        if let Some(reason) = auth.suspended {
            return Err(Refusal::Suspended { reason }.into());
        }
        // "Last seen", for the account's own device list: written at most every
        // `SEEN_EVERY` per device, off the request's path.
        if state.auth_cache.due_to_note_seen(auth.device_id) {
            let (store, device, now) = (state.store.clone(), auth.device_id, state.now());
            tokio::spawn(async move {
                if let Err(e) = store.note_seen(device, now).await {
                    tracing::debug!(error = %e, "could not note a device as seen");
                }
            });
        }
        Ok(AuthedDevice {
            device_id: auth.device_id,
            username: auth.username,
            kind: auth.kind,
            credential_key: auth.credential_key,
            verified: auth.verified,
            token_hash: auth.token_hash,
        })
    }
}

impl FromRequestParts<AppState> for AuthedDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| RequestError::AuthorizationNotText)?),
        };
        Ok(AuthedDevice::authenticate(state, value).await?)
    }
}

/// A JSON body. Unlike `axum::Json` it ignores the content type and answers every failure with
/// a stable code: `body_too_large`, `bad_base64` or `malformed_json`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                return RequestError::BodyTooLarge;
            }
            // Refused by the body budget or its deadline (`crate::bodies`)?
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
            while let Some(e) = source {
                match e.downcast_ref::<crate::bodies::BodyRefused>() {
                    Some(crate::bodies::BodyRefused::Busy) => return RequestError::BodiesBusy,
                    Some(crate::bodies::BodyRefused::TooSlow) => return RequestError::BodyTooSlow,
                    None => source = e.source(),
                }
            }
            RequestError::BodyUnreadable
        })?;
        // A typed field (base64, a username, a conversation id) that refused its value says
        // so with its own code: the body's ids are checked here, once.
        let (parsed, spoiled) = watching(|| serde_json::from_slice(&bytes));
        Ok(parsed.map(Body).map_err(|e| match spoiled {
            Some(Spoiled::Base64) => RequestError::BadBase64(e.to_string()),
            Some(Spoiled::Id(id)) => RequestError::from(id),
            None => RequestError::MalformedJson(e.to_string()),
        })?)
    }
}

/// The `{username}` of a path, checked (`invalid_username`).
pub struct UserPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let name = path_text(parts, state).await?;
        kith_proto::validate_username(&name).map_err(RequestError::from)?;
        Ok(UserPath(name))
    }
}

/// The `{id}` of a path, parsed (`invalid_conversation_id`).
pub struct ConversationPath(pub ConversationId);

impl<S: Send + Sync> FromRequestParts<S> for ConversationPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(ConversationPath(conversation_id(&path_text(parts, state).await?)?))
    }
}

/// The `{link_id}` of a path, as given (the link rules judge it).
pub struct LinkPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for LinkPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(LinkPath(path_text(parts, state).await?))
    }
}

/// The `{link_id}` and chunk number `{n}` of a path.
pub struct LinkChunkPath(pub String, pub u32);

impl<S: Send + Sync> FromRequestParts<S> for LinkChunkPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((id, n)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| RequestError::BadQuery(e.body_text()))?;
        let n = n.parse().map_err(|_| RequestError::BadQuery("a chunk number".into()))?;
        Ok(LinkChunkPath(id, n))
    }
}

/// The `{device_id}` of a path, a number (`bad_request` when it is not).
pub struct DevicePath(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for DevicePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let text = path_text(parts, state).await?;
        let id =
            text.parse().map_err(|_| RequestError::BadQuery("a device id is a number".into()))?;
        Ok(DevicePath(id))
    }
}

/// The one parameter of a path, as text.
async fn path_text<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, RequestError> {
    let Path(text) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| RequestError::BadQuery(e.body_text()))?;
    Ok(text)
}

/// A conversation id in a body (`invalid_conversation_id`).
pub fn conversation_id(text: &str) -> Result<ConversationId, RequestError> {
    Ok(ConversationId::parse(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(parse_bearer("Bearer 12:abc"), Some((12, "abc")));
        assert_eq!(parse_bearer("Bearer 12:"), None);
        assert_eq!(parse_bearer("Bearer x:abc"), None);
        assert_eq!(parse_bearer("Basic 12:abc"), None);
        assert_eq!(parse_bearer("Bearer 12abc"), None);
        assert_eq!(parse_bearer("Bearer 12:a:b"), Some((12, "a:b")));
    }
}
