//! Registration, `whoami` and device listing.

use axum::Json;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use kith_proto::*;
use kith_store::NewAccount;
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthedDevice, Body, token_hash};
use crate::mls;
use crate::state::AppState;

/// A fresh 256-bit bearer token, as hex.
fn new_token() -> ApiResult<Secret> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|e| {
        tracing::error!(error = %e, "no randomness for a token");
        ApiError::new(ErrorCode::Internal, "internal error")
    })?;
    Ok(Secret::new(hex::encode(bytes.as_slice())))
}

/// A token the client chose: 256 bits as 64 lowercase hex characters, as the server makes them.
fn chosen_token(token: Option<Secret>) -> ApiResult<Secret> {
    match token {
        None => new_token(),
        Some(t)
            if t.expose().len() == 64
                && t.expose().bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(t)
        }
        Some(_) => Err(ApiError::new(
            ErrorCode::BadRequest,
            "a token is 64 lowercase hex characters (256 random bits)",
        )),
    }
}

fn check_username(name: &str) -> ApiResult<()> {
    validate_username(name).map_err(|e| ApiError::new(ErrorCode::InvalidUsername, e.to_string()))
}

/// Register an account with its first device.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered; the token is shown once", body = RegisterResponse),
        (status = 200, description = "The same registration, with the token the client chose, posted again (its answer was lost): it is registered already", body = RegisterResponse),
        (status = 400, description = "invalid_username, invalid_key_package, too_many_key_packages, malformed_json, bad_base64", body = ErrorBody),
        (status = 409, description = "username_taken", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody),
        (status = 429, description = "rate_limited: too many registrations from this address", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(req): Body<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    // A repeat of a registration that went through (its answer was lost) is answered as
    // such: looked up only where the request would otherwise be refused — past the per-IP
    // limit, or for a taken name — so it costs nothing more on the way in.
    let who = (req.username.clone(), req.credential_key.0.clone(), req.token.clone());
    let repeat = async |refused: ApiError| {
        registered_already(&state, &who.0, &who.1, who.2.as_ref()).await?.ok_or(refused)
    };
    // Per-IP, so one address cannot mint accounts in bulk (behind a proxy, the proxy's). The
    // attempt counts from here; if it fails, it is given back.
    let at = state.now();
    let verdict = state.safety.check_registration(peer.ip(), at);
    if let Err(limited) = crate::safety::enforce(&state, "", verdict).await {
        return repeat(limited).await;
    }
    // The same limit on attempts across every node sharing the store (the count above is
    // this node's alone).
    let source = crate::safety::policy::registration_source(peer.ip());
    let hour = 3_600_000;
    let attempts = state
        .store
        .count_attempt(&format!("registration {source}"), at.saturating_sub(hour), at)
        .await?;
    if attempts > u64::from(state.safety.config.registration_attempts_per_ip_per_hour) {
        state.safety.registration_failed(peer.ip(), at);
        let limited = ApiError::slow_down(
            "slow down: too many registration attempts from this address; try again later",
            600,
        );
        return repeat(limited).await;
    }
    match create_account(&state, req).await {
        Ok(done) => Ok(done),
        Err(e) => {
            state.safety.registration_failed(peer.ip(), at);
            // A taken name, or a taken key (the first of two identical registrations posted
            // at once may land between this one's two looks): answered as registered if it is
            // this client's own registration, refused otherwise.
            if matches!(e.code, ErrorCode::UsernameTaken | ErrorCode::InvalidKeyPackage) {
                repeat(e).await
            } else {
                Err(e)
            }
        }
    }
}

async fn create_account(
    state: &AppState,
    req: RegisterRequest,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    check_username(&req.username)?;
    mls::check_credential_key(&req.credential_key.0)?;
    if req.key_packages.len() > state.config.max_key_packages_per_upload {
        return Err(ApiError::new(
            ErrorCode::TooManyKeyPackages,
            format!("at most {} KeyPackages per request", state.config.max_key_packages_per_upload),
        ));
    }
    // Cheap checks before the costly ones (each KeyPackage costs two signature checks and two
    // trial encryptions): a taken name is refused before any of it.
    if state.store.account_info(&req.username).await?.is_some() {
        return Err(kith_store::StoreError::UsernameTaken.into());
    }
    if !state
        .store
        .devices_by_credential_keys(std::slice::from_ref(&req.credential_key.0))
        .await?
        .is_empty()
    {
        // One device per credential key, across accounts: a second account reusing a key
        // would be indistinguishable from the first in a group's tree.
        return Err(ApiError::new(
            ErrorCode::InvalidKeyPackage,
            "this credential key belongs to another device: every device has a key of its own",
        ));
    }
    let crypto = OpenMlsRustCrypto::default();
    let one_time = req.key_packages.iter().map(|kp| (kp, mls::Slot::OneTime));
    let last_resort = std::iter::once((&req.last_resort_key_package, mls::Slot::LastResort));
    for (kp, slot) in one_time.chain(last_resort) {
        mls::check_key_package(&crypto, &kp.0, &req.username, &req.credential_key.0, slot)
            .map_err(ApiError::from)?;
    }
    let profile = business_profile(&req)?;
    let token = chosen_token(req.token)?;
    let device_id = state
        .store
        .create_account(NewAccount {
            username: req.username.clone(),
            kind: req.kind,
            credential_key: req.credential_key.0,
            token_hash: token_hash(token.expose()),
            key_packages: req.key_packages.into_iter().map(B64::into_inner).collect(),
            last_resort: req.last_resort_key_package.0,
            now: state.now(),
            profile,
        })
        .await?;
    state.metrics.registrations.inc();
    tracing::info!(device = device_id, kind = req.kind.as_str(), "account registered");
    Ok((StatusCode::CREATED, Json(RegisterResponse { username: req.username, device_id, token })))
}

/// The answer to a registration posted again by the client that made it: the same username,
/// credential key and chosen token as an account's device. Only that client knows the token.
async fn registered_already(
    state: &AppState,
    username: &str,
    credential_key: &[u8],
    token: Option<&Secret>,
) -> ApiResult<Option<(StatusCode, Json<RegisterResponse>)>> {
    let Some(token) = token else { return Ok(None) };
    let owners = state.store.devices_by_credential_keys(&[credential_key.to_vec()]).await?;
    let Some(owner) = owners.into_iter().find(|o| o.username == username) else {
        return Ok(None);
    };
    let Some(auth) = state.store.device_auth(owner.device_id).await? else { return Ok(None) };
    use subtle::ConstantTimeEq as _;
    if !bool::from(auth.token_hash.ct_eq(&token_hash(token.expose()))) {
        return Ok(None);
    }
    let answer = RegisterResponse {
        username: owner.username,
        device_id: owner.device_id,
        token: token.clone(),
    };
    Ok(Some((StatusCode::OK, Json(answer))))
}

/// Replaces the calling device's token: for a token that may have leaked (a copied profile
/// folder, a lost backup). The old token is refused from the next request on. The request is
/// signed by the device's credential key, so a stolen token alone cannot lock its device out.
#[utoipa::path(post, path = "/v1/me/token", tag = "accounts", security(("bearer" = [])),
    request_body = RotateTokenRequest,
    responses(
        (status = 200, description = "The new token, shown once", body = RotateTokenResponse),
        (status = 400, description = "malformed_json", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the signature is not the device's", body = ErrorBody),
    ))]
pub async fn rotate_token(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<RotateTokenRequest>,
) -> ApiResult<Json<RotateTokenResponse>> {
    let chosen_hash = req.new_token.as_ref().map(|t| token_hash(t.expose()));
    let signed = RotateTokenRequest::signed_bytes(
        me.device_id,
        &me.token_hash,
        chosen_hash.as_ref().map(|h| h.as_slice()),
    );
    use openmls::prelude::OpenMlsCrypto as _;
    state
        .franking
        .crypto()
        .verify_signature(
            openmls::prelude::SignatureScheme::ED25519,
            &signed,
            &me.credential_key,
            &req.signature.0,
        )
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Forbidden,
                "rotating a token needs a signature by the device's own key",
            )
        })?;
    let token = chosen_token(req.new_token)?;
    let new_hash = token_hash(token.expose());
    if new_hash == me.token_hash {
        return Err(ApiError::new(ErrorCode::BadRequest, "the new token is the one in use"));
    }
    state.store.set_token_hash(me.device_id, new_hash).await?;
    state.auth_cache.forget(me.device_id);
    // Push connections opened with the old token end too.
    state.hub.disconnect(me.device_id);
    tracing::info!(device = me.device_id, "device token rotated");
    Ok(Json(RotateTokenResponse { device_id: me.device_id, token }))
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, body = WhoAmI),
        (status = 401, description = "unauthorized", body = ErrorBody),
    ))]
pub async fn whoami(State(state): State<AppState>, me: AuthedDevice) -> ApiResult<Json<WhoAmI>> {
    let remaining = state.store.key_packages_remaining(me.device_id).await?;
    Ok(Json(WhoAmI {
        username: me.username,
        kind: me.kind,
        device_id: me.device_id,
        key_packages_remaining: remaining,
        limits: ServerLimits {
            max_group_size: u32::try_from(state.config.max_group_size).unwrap_or(u32::MAX),
            max_body_bytes: state.config.max_body_bytes as u64,
            story_ttl_seconds: state.config.story_ttl_seconds,
        },
    }))
}

/// An account's devices and their credential keys.
#[utoipa::path(get, path = "/v1/accounts/{username}/devices", tag = "accounts", security(("bearer" = [])),
    params(("username" = String, Path, pattern = "^[a-z0-9_.]{3,32}$")),
    responses(
        (status = 200, body = DeviceList),
        (status = 400, description = "invalid_username", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "unknown_user", body = ErrorBody),
    ))]
pub async fn devices(
    State(state): State<AppState>,
    _me: AuthedDevice,
    Path(username): Path<String>,
) -> ApiResult<Json<DeviceList>> {
    check_username(&username)?;
    let found = state.store.account_devices(&username).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::UnknownUser, format!("no user named {username}"))
    })?;
    Ok(Json(DeviceList {
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
    }))
}

/// A business's public profile from a registration; people have none.
fn business_profile(req: &RegisterRequest) -> ApiResult<Option<(String, String)>> {
    let bad = |why: &str| ApiError::new(ErrorCode::BadRequest, why);
    match req.kind {
        AccountKind::Person if req.display_name.is_some() || req.description.is_some() => {
            Err(bad("only business accounts have a public display name and description"))
        }
        AccountKind::Person => Ok(None),
        AccountKind::Business => {
            let name = req.display_name.clone().unwrap_or_else(|| req.username.clone());
            let about = req.description.clone().unwrap_or_default();
            let clean = |s: &str| !s.chars().any(char::is_control);
            if name.trim().is_empty() || name.chars().count() > 64 || !clean(&name) {
                return Err(bad("a display name has 1 to 64 characters and no control characters"));
            }
            if about.chars().count() > 500 || about.chars().any(|c| c.is_control() && c != '\n') {
                return Err(bad("a description has at most 500 characters"));
            }
            Ok(Some((name, about)))
        }
    }
}

pub(crate) fn username_checked(name: &str) -> ApiResult<()> {
    check_username(name)
}
