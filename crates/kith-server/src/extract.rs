//! Request extractors: the authenticated device and the JSON body.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use kith_proto::{AccountKind, ErrorCode, b64::BAD_BASE64_MARK};
use kith_store::{DeviceAuth, DeviceId};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

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
    pub async fn authenticate(state: &AppState, value: Option<&str>) -> Result<Self, ApiError> {
        let value = value.ok_or_else(|| {
            ApiError::unauthorized(
                "this endpoint needs `Authorization: Bearer <device-id>:<token>`",
            )
        })?;
        let (device, token) = parse_bearer(value).ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <device-id>:<token>`")
        })?;
        let auth = device_record(state, device)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown device or wrong token"))?;
        if !bool::from(token_hash(token).ct_eq(&auth.token_hash)) {
            return Err(ApiError::unauthorized("unknown device or wrong token"));
        }
        if let Some(reason) = &auth.suspended {
            return Err(ApiError::new(
                ErrorCode::Suspended,
                format!("this account is suspended: {reason}"),
            ));
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
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::unauthorized("the Authorization header is not valid text")
            })?),
        };
        AuthedDevice::authenticate(state, value).await
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
                return ApiError::new(ErrorCode::BodyTooLarge, "the request body is too large");
            }
            // Refused by the body budget or its deadline (`crate::bodies`)?
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
            while let Some(e) = source {
                match e.downcast_ref::<crate::bodies::BodyRefused>() {
                    Some(crate::bodies::BodyRefused::Busy) => {
                        return ApiError::unavailable(
                            "the server is holding too many request bodies; try again shortly",
                        );
                    }
                    Some(crate::bodies::BodyRefused::TooSlow) => {
                        return ApiError::new(
                            ErrorCode::BadRequest,
                            "the request body did not arrive in time",
                        );
                    }
                    None => source = e.source(),
                }
            }
            ApiError::new(ErrorCode::BadRequest, "the request body could not be read")
        })?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            let text = e.to_string();
            if text.contains(BAD_BASE64_MARK) {
                ApiError::new(
                    ErrorCode::BadBase64,
                    format!(
                        "a binary field is not valid base64 ({})",
                        text.replace(BAD_BASE64_MARK, "").trim()
                    ),
                )
            } else {
                ApiError::new(
                    ErrorCode::MalformedJson,
                    format!("the body is not the expected JSON: {text}"),
                )
            }
        })
    }
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
