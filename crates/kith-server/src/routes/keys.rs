//! KeyPackage upload and claim.

use axum::Json;
use axum::extract::{Path, State};
use kith_proto::*;
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthedDevice, Body};
use crate::mls;
use crate::routes::accounts::username_checked;
use crate::safety;
use crate::state::AppState;

/// Claims tried again, at most, while they hand out only unusable one-time KeyPackages.
const UNUSABLE_TRIES: usize = 8;

/// Upload more one-time KeyPackages (and optionally a new last-resort one) for this device.
#[utoipa::path(post, path = "/v1/key-packages", tag = "key-packages", security(("bearer" = [])),
    request_body = UploadKeyPackages,
    responses(
        (status = 200, body = UploadKeyPackagesResponse),
        (status = 400, description = "invalid_key_package, too_many_key_packages", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 429, description = "rate_limited: too many unusable KeyPackages uploaded (see docs/safety.md)", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<UploadKeyPackages>,
) -> ApiResult<Json<UploadKeyPackagesResponse>> {
    let limit = state.config.max_key_packages_per_upload;
    if req.key_packages.len() > limit {
        return Err(ApiError::new(
            ErrorCode::TooManyKeyPackages,
            format!("at most {limit} KeyPackages per request"),
        ));
    }
    // A replacing upload drops what the device holds: only the new ones count.
    let held =
        if req.replace { 0 } else { state.store.key_packages_remaining(me.device_id).await? };
    let cap = state.config.max_key_packages_per_device;
    if held + req.key_packages.len() as u64 > cap {
        return Err(ApiError::new(
            ErrorCode::TooManyKeyPackages,
            format!("a device may hold at most {cap} KeyPackages; it holds {held}"),
        ));
    }
    let key = state
        .store
        .account_devices(&me.username)
        .await?
        .and_then(|a| a.devices.into_iter().find(|d| d.device_id == me.device_id))
        .map(|d| d.credential_key)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownDevice, "this device is gone"))?;
    let crypto = OpenMlsRustCrypto::default();
    let one_time = req.key_packages.iter().map(|kp| (kp, mls::Slot::OneTime));
    let last_resort = req.last_resort_key_package.iter().map(|kp| (kp, mls::Slot::LastResort));
    for (kp, slot) in one_time.chain(last_resort) {
        if let Err(e) = mls::check_key_package(&crypto, &kp.0, &me.username, &key, slot) {
            // Kith's own clients never upload one (but for a clock that is off): this counts
            // against the uploader, who alone can upload for this device.
            if e.blames_uploader() {
                let verdict = state.safety.note_unusable_upload(&me.username, state.now());
                safety::enforce(&state, &me.username, verdict).await?;
            }
            return Err(e.into());
        }
    }
    if req.replace {
        state.store.drop_key_packages(me.device_id).await?;
    }
    let remaining = state
        .store
        .add_key_packages(
            me.device_id,
            req.key_packages.into_iter().map(B64::into_inner).collect(),
            req.last_resort_key_package.map(B64::into_inner),
        )
        .await?;
    Ok(Json(UploadKeyPackagesResponse { key_packages_remaining: remaining }))
}

/// Claim one KeyPackage for each device of an account, to add them to a conversation.
#[utoipa::path(post, path = "/v1/accounts/{username}/key-packages/claim", tag = "key-packages",
    security(("bearer" = [])),
    params(("username" = String, Path, pattern = "^[a-z0-9_.]{3,32}$")),
    responses(
        (status = 200, body = ClaimResponse),
        (status = 400, description = "invalid_username", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "unknown_user", body = ErrorBody),
        (status = 409, description = "no_key_packages", body = ErrorBody),
        (status = 429, description = "rate_limited: KeyPackages claimed too often (see docs/safety.md)", body = ErrorBody),
    ))]
pub async fn claim(
    State(state): State<AppState>,
    me: AuthedDevice,
    Path(username): Path<String>,
) -> ApiResult<Json<ClaimResponse>> {
    username_checked(&username)?;
    let now = state.now();
    let created =
        state.store.account_info(&me.username).await?.map(|a| a.created_at).unwrap_or(now);
    let verdict = state.safety.check_claim(&me.username, &username, created, now);
    safety::enforce(&state, &me.username, verdict).await?;
    let none_left = || {
        ApiError::new(
            ErrorCode::NoKeyPackages,
            format!("{username} has no device with a KeyPackage"),
        )
    };
    // A blocked caller gets the same answer as anyone (the block stays invisible); what it
    // then builds never reaches the blocker (see `delivery`).
    // A business reaches only people who opened a conversation with it.
    if me.kind == AccountKind::Business {
        crate::businesses::require_opt_in(&state, &me.username, &username).await?;
    }
    // All claimers together take at most the account's hourly budget of one-time KeyPackages;
    // past it they get its last-resort KeyPackage, so nobody can drain it.
    let one_time = state.safety.take_key_package_budget(&username, now);
    // Only what every Kith client will take is handed out (the rule clients apply at claim):
    // one that expired since, or was stored before the rule, is dropped here, so the claimer
    // is never charged for a KeyPackage nobody could use. A one-time KeyPackage dropped so is
    // used up; the next one is tried (a few times: an account idle for months holds many
    // expired ones until its device tops up).
    let crypto = OpenMlsRustCrypto::default();
    let mut claimed = Vec::new();
    for _ in 0..UNUSABLE_TRIES {
        let round = state.store.claim_key_packages(&username, one_time).await?;
        let handed = round.len();
        let mut dropped_one_time = false;
        claimed = round
            .into_iter()
            .filter(|c| {
                let usable = mls::usable_now(&crypto, &c.data, &username);
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
    if claimed.is_empty() {
        return Err(none_left());
    }
    let n = u32::try_from(claimed.len()).unwrap_or(u32::MAX);
    state.safety.note_claim(&me.username, &username, n, now);
    state.metrics.key_packages_claimed.inc_by(claimed.len() as u64);
    Ok(Json(ClaimResponse {
        username,
        key_packages: claimed
            .into_iter()
            .map(|c| ClaimedKeyPackage {
                device_id: c.device_id,
                key_package: B64(c.data),
                last_resort: c.last_resort,
            })
            .collect(),
    }))
}
