//! The router: one module per concern, assembled by [`app`].

pub mod accounts;
pub mod blocks;
pub mod businesses;
pub mod conversations;
pub mod handshake;
pub mod keys;
pub mod kt;
pub mod links;
pub mod ops;
pub mod queue;
pub mod reports;
pub mod ws;

use crate::extract::RequestError;
use crate::metrics::StatusLabel;
use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

/// Every route of the API. Registration, `/healthz`, `/metrics` and `/v1/openapi.json` are
/// open; everything else demands a bearer token (the `AuthedDevice` extractor).
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/v1/accounts", post(accounts::register))
        .route("/v1/me", get(accounts::whoami))
        .route("/v1/me/token", post(accounts::rotate_token))
        .route("/v1/me/account-key", put(accounts::set_account_key))
        .route("/v1/me/recovery-key", put(accounts::set_recovery_key))
        .route("/v1/me/notes", post(accounts::post_note))
        .route("/v1/accounts/{username}/recover", post(accounts::recover))
        .route("/v1/me/devices", get(accounts::my_devices))
        .route("/v1/me/devices/{device_id}", axum::routing::delete(accounts::remove_device))
        .route("/v1/me/devices/{device_id}/name", put(accounts::rename_device))
        .route("/v1/accounts/{username}/devices", get(accounts::devices))
        .route("/v1/links", post(links::offer))
        .route("/v1/links/{link_id}", get(links::look).delete(links::cancel))
        .route("/v1/links/{link_id}/join", post(links::join))
        .route("/v1/links/{link_id}/request", get(links::request))
        .route("/v1/links/{link_id}/approve", post(links::approve))
        .route("/v1/links/{link_id}/result", get(links::result))
        .route("/v1/links/{link_id}/key-packages", post(links::answer))
        .route("/v1/links/{link_id}/history/{n}", put(links::put_chunk).get(links::chunk))
        .route("/v1/key-packages", post(keys::upload))
        .route("/v1/accounts/{username}/key-packages/claim", post(keys::claim))
        .route("/v1/conversations", post(conversations::create))
        .route("/v1/conversations/{id}/messages", post(conversations::send))
        .route("/v1/conversations/{id}/handshake", post(handshake::handshake))
        .route("/v1/conversations/{id}/pending-leaves", get(handshake::pending_leaves))
        .route("/v1/businesses", get(businesses::search))
        .route("/v1/reports", post(reports::report))
        .route("/v1/blocks", post(blocks::block).get(blocks::blocked))
        .route("/v1/blocks/{username}", axum::routing::delete(blocks::unblock))
        .route("/v1/queue", get(queue::fetch))
        .route("/v1/queue/ack", post(queue::ack))
        .route("/v1/ws", get(ws::connect))
        .route("/v1/kt/keys", get(kt::keys))
        .route("/v1/kt/roots", get(kt::roots))
        .route("/v1/kt/audit", get(kt::audit))
        .route("/v1/kt/lookup/{username}", get(kt::lookup))
        .route("/v1/kt/history", get(kt::history))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), bounded_bodies))
        .layer(middleware::from_fn_with_state(state.clone(), answer_in_time))
        .layer(middleware::from_fn_with_state(state.clone(), count_responses))
        .with_state(state)
}

async fn not_found() -> RequestError {
    RequestError::NoSuchEndpoint
}

async fn method_not_allowed() -> RequestError {
    RequestError::MethodNotAllowed
}

/// Every request is answered within `request_timeout_seconds`: if the handler has not finished
/// by then (storage stalled, say), the client gets `503 unavailable` with `Retry-After`. The
/// handler is not cancelled — it runs to its end in its own task, so nothing is left half
/// done — but nobody waits for it. As with any `503`, a write may still have been applied.
async fn answer_in_time(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.request_timeout;
    let mut handler = tokio::spawn(next.run(req));
    match tokio::time::timeout(limit, &mut handler).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a request handler failed");
            RequestError::HandlerFailed.into_response()
        }
        Err(_) => {
            tracing::warn!(seconds = limit.as_secs(), "a request took too long; answered 503");
            state.metrics.request_timeouts.inc();
            // The connection closes after this answer: a request still sending its body
            // holds nothing more.
            let mut response = RequestError::TooLate.into_response();
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// Meters every request body against the body budget and its deadline (`crate::bodies`).
async fn bounded_bodies(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let (parts, body) = req.into_parts();
    let body = crate::bodies::metered(state.bodies.clone(), peer, body);
    next.run(Request::from_parts(parts, body)).await
}

async fn count_responses(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    state
        .metrics
        .responses
        .get_or_create(&StatusLabel { status: response.status().as_u16() })
        .inc();
    response
}
