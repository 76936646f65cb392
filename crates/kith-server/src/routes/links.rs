//! Linking a new device to an account (the rules: `crate::links`).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use kith_proto::*;

use crate::error::ApiResult;
use crate::extract::{AuthedDevice, Body, LinkChunkPath, LinkPath};
use crate::links;
use crate::state::AppState;

/// Offer a link for a new device of the caller's account: ten minutes, once.
#[utoipa::path(post, path = "/v1/links", tag = "links", security(("bearer" = [])),
    request_body = OfferLink,
    responses(
        (status = 201, description = "Offered", body = LinkOffered),
        (status = 400, description = "bad_request: a malformed link id or key-exchange message", body = ErrorBody),
        (status = 403, description = "forbidden: the account has no account key yet", body = ErrorBody),
        (status = 409, description = "link_used: the id is taken", body = ErrorBody),
    ))]
pub async fn offer(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<OfferLink>,
) -> ApiResult<(StatusCode, Json<LinkOffered>)> {
    Ok((StatusCode::CREATED, Json(links::offer(&state, &me, req).await?)))
}

/// What a new device needs to start linking (no token: it has none yet).
#[utoipa::path(get, path = "/v1/links/{link_id}", tag = "links",
    params(("link_id" = String, Path, description = "the link's id")),
    responses(
        (status = 200, description = "The offer", body = LinkOffered),
        (status = 404, description = "unknown_link", body = ErrorBody),
        (status = 409, description = "link_used", body = ErrorBody),
        (status = 410, description = "link_expired", body = ErrorBody),
    ))]
pub async fn look(
    State(state): State<AppState>,
    LinkPath(id): LinkPath,
) -> ApiResult<Json<LinkOffered>> {
    Ok(Json(links::look(&state, &id).await?))
}

/// The new device joins the link, once (counted like a registration attempt).
#[utoipa::path(post, path = "/v1/links/{link_id}/join", tag = "links",
    params(("link_id" = String, Path, description = "the link's id")),
    request_body = JoinLink,
    responses(
        (status = 204, description = "Joined; the offering device decides"),
        (status = 400, description = "bad_request", body = ErrorBody),
        (status = 404, description = "unknown_link", body = ErrorBody),
        (status = 409, description = "link_used", body = ErrorBody),
        (status = 410, description = "link_expired", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
    ))]
pub async fn join(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    LinkPath(id): LinkPath,
    Body(req): Body<JoinLink>,
) -> ApiResult<StatusCode> {
    links::join(&state, peer.ip(), &id, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the new device sent, for a device of the offering account.
#[utoipa::path(get, path = "/v1/links/{link_id}/request", tag = "links", security(("bearer" = [])),
    params(("link_id" = String, Path, description = "the link's id")),
    responses(
        (status = 200, description = "Joined or not yet", body = LinkRequest),
        (status = 403, description = "forbidden: another account's link", body = ErrorBody),
        (status = 404, description = "unknown_link", body = ErrorBody),
        (status = 410, description = "link_expired", body = ErrorBody),
    ))]
pub async fn request(
    State(state): State<AppState>,
    me: AuthedDevice,
    LinkPath(id): LinkPath,
) -> ApiResult<Json<LinkRequest>> {
    Ok(Json(links::request(&state, &me, &id).await?))
}

/// Approve the new device, with a signature by the account key.
#[utoipa::path(post, path = "/v1/links/{link_id}/approve", tag = "links", security(("bearer" = [])),
    params(("link_id" = String, Path, description = "the link's id")),
    request_body = ApproveLink,
    responses(
        (status = 200, description = "The new device", body = LinkApproved),
        (status = 400, description = "bad_request", body = ErrorBody),
        (status = 403, description = "forbidden: not the account key's signature, or another account's link", body = ErrorBody),
        (status = 404, description = "unknown_link", body = ErrorBody),
        (status = 409, description = "link_used (or not joined yet), too_many_devices", body = ErrorBody),
        (status = 410, description = "link_expired", body = ErrorBody),
    ))]
pub async fn approve(
    State(state): State<AppState>,
    me: AuthedDevice,
    LinkPath(id): LinkPath,
    Body(req): Body<ApproveLink>,
) -> ApiResult<Json<LinkApproved>> {
    Ok(Json(links::approve(&state, &me, &id, req).await?))
}

/// The outcome, for the new device (no token: it learns it here).
#[utoipa::path(get, path = "/v1/links/{link_id}/result", tag = "links",
    params(("link_id" = String, Path, description = "the link's id")),
    responses(
        (status = 200, description = "Approved or not yet", body = LinkResult),
        (status = 404, description = "unknown_link: cancelled (the code did not match) or never offered", body = ErrorBody),
        (status = 410, description = "link_expired", body = ErrorBody),
    ))]
pub async fn result(
    State(state): State<AppState>,
    LinkPath(id): LinkPath,
) -> ApiResult<Json<LinkResult>> {
    Ok(Json(links::result(&state, &id).await?))
}

/// The new device hands its KeyPackages to the offering one, sealed.
#[utoipa::path(post, path = "/v1/links/{link_id}/key-packages", tag = "links", security(("bearer" = [])),
    params(("link_id" = String, Path, description = "the link's id")),
    request_body = AnswerLink,
    responses(
        (status = 204, description = "Kept for the offering device"),
        (status = 404, description = "unknown_link", body = ErrorBody),
        (status = 409, description = "link_used: not waiting for this device", body = ErrorBody),
    ))]
pub async fn answer(
    State(state): State<AppState>,
    me: AuthedDevice,
    LinkPath(id): LinkPath,
    Body(req): Body<AnswerLink>,
) -> ApiResult<StatusCode> {
    links::answer(&state, &me, &id, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel a link, or drop it once used.
#[utoipa::path(delete, path = "/v1/links/{link_id}", tag = "links", security(("bearer" = [])),
    params(("link_id" = String, Path, description = "the link's id")),
    responses(
        (status = 204, description = "Gone"),
        (status = 403, description = "forbidden: another account's link", body = ErrorBody),
        (status = 404, description = "unknown_link", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    me: AuthedDevice,
    LinkPath(id): LinkPath,
) -> ApiResult<StatusCode> {
    links::cancel(&state, &me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The offering device puts up chunk `n` of the history for the new device, sealed.
#[utoipa::path(put, path = "/v1/links/{link_id}/history/{n}", tag = "links", security(("bearer" = [])),
    params(("link_id" = String, Path, description = "the link's id"), ("n" = u32, Path, description = "the chunk's number, from 0")),
    request_body = HistoryChunk,
    responses(
        (status = 204, description = "Kept for the new device"),
        (status = 400, description = "bad_request: empty, over 256 KiB, or past the count", body = ErrorBody),
        (status = 403, description = "forbidden: not the offering device", body = ErrorBody),
        (status = 404, description = "unknown_link", body = ErrorBody),
        (status = 410, description = "link_expired (or not approved)", body = ErrorBody),
    ))]
pub async fn put_chunk(
    State(state): State<AppState>,
    me: AuthedDevice,
    LinkChunkPath(id, n): LinkChunkPath,
    Body(req): Body<HistoryChunk>,
) -> ApiResult<StatusCode> {
    links::put_chunk(&state, &me, &id, n, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The new device fetches chunk `n` of its history (no `data` until it is up).
#[utoipa::path(get, path = "/v1/links/{link_id}/history/{n}", tag = "links", security(("bearer" = [])),
    params(("link_id" = String, Path, description = "the link's id"), ("n" = u32, Path, description = "the chunk's number, from 0")),
    responses(
        (status = 200, description = "The chunk, or not yet", body = HistoryChunk),
        (status = 400, description = "bad_request: a chunk number that is not one", body = ErrorBody),
        (status = 403, description = "forbidden: not the linked device", body = ErrorBody),
        (status = 404, description = "unknown_link", body = ErrorBody),
        (status = 410, description = "link_expired", body = ErrorBody),
    ))]
pub async fn chunk(
    State(state): State<AppState>,
    me: AuthedDevice,
    LinkChunkPath(id, n): LinkChunkPath,
) -> ApiResult<Json<HistoryChunk>> {
    Ok(Json(links::chunk(&state, &me, &id, n).await?))
}
