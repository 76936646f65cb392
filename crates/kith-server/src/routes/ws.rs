//! `GET /v1/ws`: push of new queue entries to a connected device. The handler takes a
//! connection slot and upgrades; the session itself is [`crate::push::session`]. The device
//! acknowledges with an `ack` frame or `POST /v1/queue/ack`; unacknowledged entries are sent
//! again on the next connection.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::Response;

use crate::error::ApiError;
use crate::extract::{AuthedDevice, RequestError};
use crate::push::session::{Slot, serve};
use crate::state::AppState;

/// Open the push channel (WebSocket upgrade; authenticate with the same bearer header).
#[utoipa::path(get, path = "/v1/ws", tag = "queue", security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to WebSocket; the server sends `ServerFrame`s, the client may send `ClientFrame`s"),
        (status = 400, description = "bad_request: not a WebSocket upgrade request", body = kith_proto::ErrorBody),
        (status = 401, description = "unauthorized", body = kith_proto::ErrorBody),
        (status = 429, description = "rate_limited: the device already has `max_connections_per_device` open push connections", body = kith_proto::ErrorBody),
    ))]
pub async fn connect(
    State(state): State<AppState>,
    me: AuthedDevice,
    connection: Option<axum::Extension<kith_listen::ConnectionPermit>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| RequestError::NotWebSocket(e.body_text()))?;
    // The slot is taken before the upgrade, so a device over its limit gets a clear `429`
    // instead of a socket that closes at once.
    let Some(inbox) =
        state.hub.try_subscribe(me.device_id, state.config.max_connections_per_device)
    else {
        return Err(
            RequestError::TooManyConnections(state.config.max_connections_per_device).into()
        );
    };
    let slot = Slot {
        hub: state.hub.clone(),
        device: me.device_id,
        inbox,
        token_hash: me.token_hash,
        connection: connection.map(|c| c.0),
    };
    // Small buffers: an idle device should cost kilobytes, not tungstenite's default 128 KiB
    // read buffer. Client frames are small acks; a larger one is refused.
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(state.config.max_ws_message_bytes)
        .max_frame_size(state.config.max_ws_message_bytes)
        .on_upgrade(move |socket| serve(state, slot, socket)))
}
