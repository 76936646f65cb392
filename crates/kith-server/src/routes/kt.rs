//! The key directory's endpoints (`crate::kt`): its keys, roots and audit proofs are public,
//! so anyone can audit the server; lookups and history need a device.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kith_proto::kt::{KtAudit, KtHistory, KtKeys, KtLookup, KtRoots};
use kith_proto::*;
use serde::Deserialize;

use crate::error::ApiResult;
use crate::extract::{AuthedDevice, RequestError, UserPath};
use crate::state::AppState;

/// The directory's public keys: the VRF's and the one that signs each epoch's root.
#[utoipa::path(get, path = "/v1/kt/keys", tag = "key-transparency",
    responses((status = 200, body = KtKeys)))]
pub async fn keys(State(state): State<AppState>) -> Json<KtKeys> {
    Json(state.kt.keys())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RootsParams {
    /// The first epoch wanted (default 0).
    pub from: Option<u64>,
}

/// Published epochs' signed roots from `from` on, oldest first (at most 1000).
#[utoipa::path(get, path = "/v1/kt/roots", tag = "key-transparency",
    params(RootsParams),
    responses(
        (status = 200, body = KtRoots),
        (status = 400, description = "bad_request", body = ErrorBody),
    ))]
pub async fn roots(
    State(state): State<AppState>,
    params: Result<Query<RootsParams>, QueryRejection>,
) -> ApiResult<Json<KtRoots>> {
    let Query(params) = params.map_err(|e| RequestError::BadQuery(e.body_text()))?;
    Ok(Json(state.kt.roots(params.from.unwrap_or(0), state.now()).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditParams {
    /// The epoch the proofs start from.
    pub from: u64,
    /// The epoch they end at (at most 64 after `from`; the answer's `to` says where it ended).
    pub to: u64,
}

/// The append-only proofs from epoch `from` to `to`, one per epoch: each shows the directory
/// at that epoch is the one before with entries added, nothing changed or taken out.
#[utoipa::path(get, path = "/v1/kt/audit", tag = "key-transparency",
    params(AuditParams),
    responses(
        (status = 200, body = KtAudit),
        (status = 400, description = "bad_request", body = ErrorBody),
        (status = 404, description = "unknown_epoch: `to` is not published yet", body = ErrorBody),
    ))]
pub async fn audit(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> ApiResult<Json<KtAudit>> {
    let Query(params) = params.map_err(|e| RequestError::BadQuery(e.body_text()))?;
    Ok(Json(state.kt.audit(params.from, params.to).await?))
}

/// An account's keys as published at the latest epoch, with the proof.
#[utoipa::path(get, path = "/v1/kt/lookup/{username}", tag = "key-transparency",
    security(("bearer" = [])),
    params(("username" = String, Path, pattern = "^[a-z0-9_.]{3,32}$")),
    responses(
        (status = 200, body = KtLookup),
        (status = 400, description = "invalid_username", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "not_published: no such account, or not published yet", body = ErrorBody),
    ))]
pub async fn lookup(
    State(state): State<AppState>,
    _me: AuthedDevice,
    UserPath(username): UserPath,
) -> ApiResult<Json<KtLookup>> {
    let (root, proof) = state.kt.lookup(&username, state.now()).await?;
    Ok(Json(KtLookup { username, root, proof: B64(proof) }))
}

/// Every value the directory published for the caller's own account, with the proof: each
/// device checks it holds nothing its account did not make.
#[utoipa::path(get, path = "/v1/kt/history", tag = "key-transparency",
    security(("bearer" = [])),
    responses(
        (status = 200, body = KtHistory),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "not_published: not published yet", body = ErrorBody),
    ))]
pub async fn history(
    State(state): State<AppState>,
    me: AuthedDevice,
) -> ApiResult<Json<KtHistory>> {
    let (root, proof) = state.kt.history(&me.username, state.now()).await?;
    Ok(Json(KtHistory { username: me.username.clone(), root, proof: B64(proof) }))
}
