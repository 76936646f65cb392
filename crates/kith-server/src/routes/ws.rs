//! `GET /v1/ws`: push of new queue entries to a connected device.
//!
//! On connect the device first gets everything waiting in its queue, then each new entry as it
//! arrives. Entries are read from the store after a wake-up from the hub, so what is pushed is
//! always what is durable. The device acknowledges with an `ack` frame or `POST /v1/queue/ack`;
//! unacknowledged entries are sent again on the next connection.

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use kith_proto::{ClientFrame, ServerFrame};

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::ApiError;
use crate::extract::AuthedDevice;
use crate::push::Hub;
use crate::routes::queue::{MAX_FETCH, ack_seqs, to_wire};
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
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            kith_proto::ErrorCode::BadRequest,
            format!("this endpoint takes a WebSocket upgrade request: {}", e.body_text()),
        )
    })?;
    // The slot is taken before the upgrade, so a device over its limit gets a clear `429`
    // instead of a socket that closes at once.
    let Some(wake) = state.hub.try_subscribe(me.device_id, state.config.max_connections_per_device)
    else {
        return Err(ApiError::slow_down(
            format!(
                "this device already has {} open push connections; close one first",
                state.config.max_connections_per_device
            ),
            5,
        ));
    };
    let slot = Slot { hub: state.hub.clone(), device: me.device_id, wake: Some(wake) };
    // Small buffers: an idle device should cost kilobytes, not tungstenite's default 128 KiB
    // read buffer. Client frames are small acks; a larger one is refused.
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(state.config.max_ws_message_bytes)
        .max_frame_size(state.config.max_ws_message_bytes)
        .on_upgrade(move |socket| serve(state, slot, socket)))
}

/// A device's push subscription; giving it back (also when the upgrade never happens)
/// frees the connection slot.
struct Slot {
    hub: Arc<Hub>,
    device: u64,
    wake: Option<watch::Receiver<u64>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.wake.take());
        self.hub.release(self.device);
    }
}

async fn serve(state: AppState, mut slot: Slot, mut socket: WebSocket) {
    let device = slot.device;
    let Some(wake) = slot.wake.as_mut() else { return };
    let mut shutdown = state.shutdown_signal();
    state.metrics.websockets.inc();
    let mut after = 0u64;
    'conn: loop {
        // Send everything new since the last frame.
        loop {
            let entries = match state.store.fetch(device, after, MAX_FETCH, state.now()).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "push: cannot read the queue");
                    break 'conn;
                }
            };
            let Some(last) = entries.last() else { break };
            after = last.seq;
            let n = entries.len() as u64;
            // A short page is all there was: anything queued since then has marked the wake-up
            // channel, so the next `changed()` returns at once. Asking again now would cost a
            // query per delivery that finds nothing.
            let drained = n < u64::from(MAX_FETCH);
            let entries = entries.into_iter().map(|e| to_wire(e, &state.franking)).collect();
            let frame = ServerFrame::Entries { entries };
            let Ok(text) = serde_json::to_string(&frame) else {
                break 'conn;
            };
            if socket.send(Message::Text(text.into())).await.is_err() {
                break 'conn;
            }
            state.metrics.entries_delivered.inc_by(n);
            if drained {
                break;
            }
        }
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() { break 'conn; }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(ClientFrame::Ack { seqs }) => {
                        if let Err(e) = ack_seqs(&state, device, &seqs).await {
                            tracing::debug!(code = %e.code, "push: ack refused");
                        }
                    }
                    Err(_) => {
                        tracing::debug!("push: unreadable client frame; closing");
                        break 'conn;
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break 'conn,
                Some(Ok(_)) => {} // pings are answered by axum; binary frames are ignored
            },
            _ = shutdown.changed() => {
                let _ = socket.send(Message::Close(None)).await;
                break 'conn;
            }
        }
    }
    state.metrics.websockets.dec();
}
