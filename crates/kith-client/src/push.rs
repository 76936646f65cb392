//! The push channel: a WebSocket that brings entries as they arrive, acknowledged on it.

use futures_util::{SinkExt, StreamExt};
use kith_proto::*;
use tokio_tungstenite::tungstenite;

use crate::client::Client;
use crate::error::{ClientError, ClientResult, Refusal};
use crate::report::SyncReport;

impl Client {
    /// Opens the push channel: everything waiting, then new entries as they arrive.
    pub async fn connect_push(&mut self) -> ClientResult<PushConnection> {
        use tungstenite::client::IntoClientRequest;
        // What waited — kept handshakes, the outbox — goes first (see `crate::unsure`).
        self.settle().await?;
        let api = self.api()?;
        let mut request = api
            .ws_url()
            .into_client_request()
            .map_err(|e| ClientError::refused(Refusal::BadArgument, e.to_string()))?;
        let bearer =
            Secret::new(format!("Bearer {}", api.bearer().map(Secret::expose).unwrap_or_default()));
        request.headers_mut().insert(
            "authorization",
            bearer.expose().parse().map_err(|_| ClientError::Protocol("unusable token".into()))?,
        );
        // A server that takes the connection and then says nothing (packets dropped) must not
        // hold this side forever.
        let opening = async {
            let stream = crate::tls::connect(api.base(), api.ca_pem()).await?;
            tokio_tungstenite::client_async_with_config(request, stream, Some(push_config()))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(resp) if resp.status().as_u16() == 401 => {
                        ClientError::Server {
                            status: 401,
                            code: ErrorCode::Unauthorized,
                            message: "the server refused this device's token".into(),
                            retry_after: None,
                        }
                    }
                    other => ClientError::Network(other.to_string()),
                })
        };
        let (ws, _) = tokio::time::timeout(PUSH_OPEN_WAIT, opening).await.map_err(|_| {
            ClientError::Network("the server did not open the push channel in time".into())
        })??;
        Ok(PushConnection { ws, quiet: PUSH_QUIET, answer: PUSH_ANSWER, unreadable: Vec::new() })
    }

    /// Waits for the next pushed frame, processes its entries and acknowledges them.
    pub async fn receive_push(&mut self, push: &mut PushConnection) -> ClientResult<SyncReport> {
        let entries = push.next_entries().await?;
        self.take_pushed(push, &entries).await
    }

    /// Processes entries [`PushConnection::next_entries`] brought and acknowledges them on
    /// the push channel. Split from the wait so a caller that shares the client (the app)
    /// does not hold it while nothing arrives.
    pub async fn take_pushed(
        &mut self,
        push: &mut PushConnection,
        entries: &[kith_proto::QueueEntry],
    ) -> ClientResult<SyncReport> {
        self.settle_all_unsure().await;
        let mut report = SyncReport::default();
        let unreadable = std::mem::take(&mut push.unreadable);
        let mut seqs: Vec<u64> = unreadable.iter().map(Incoming::seq).collect();
        report.readable(unreadable);
        self.take_in(entries, &mut report).await?;
        report.messages = self.hand_over()?;
        seqs.extend(entries.iter().map(|e| e.seq));
        push.ack(seqs).await?;
        if !report.joined.is_empty() {
            self.replenish_key_packages().await?;
        }
        Ok(report)
    }
}

impl PushConnection {
    /// Waits for the next frame of entries the server pushes (without needing the client).
    ///
    /// A connection can die without a word (a laptop asleep, a network changed, a router that
    /// forgot it): after [`PushConnection::set_liveness`]'s `quiet` without a frame this side
    /// pings, and a server that has not answered `answer` later counts as gone — a
    /// [`ClientError::Network`], so the caller reconnects and catches up instead of waiting
    /// forever for messages that go elsewhere.
    pub async fn next_entries(&mut self) -> ClientResult<Vec<kith_proto::QueueEntry>> {
        let mut asked = false;
        loop {
            let wait = if asked { self.answer } else { self.quiet };
            let next = match tokio::time::timeout(wait, self.ws.next()).await {
                Ok(next) => next,
                Err(_) if !asked => {
                    let ping = self.ws.send(tungstenite::Message::Ping(Default::default()));
                    match tokio::time::timeout(self.answer, ping).await {
                        Ok(sent) => sent.map_err(|e| ClientError::Network(e.to_string()))?,
                        Err(_) => return Err(gone()),
                    }
                    asked = true;
                    continue;
                }
                Err(_) => return Err(gone()),
            };
            // Any frame (a pong among them) shows the server is there.
            asked = false;
            let frame = next
                .ok_or_else(|| ClientError::Network("the push channel closed".into()))?
                .map_err(|e| ClientError::Network(e.to_string()))?;
            let text = match frame {
                tungstenite::Message::Text(t) => t,
                tungstenite::Message::Close(_) => {
                    return Err(ClientError::Network("the server closed the push channel".into()));
                }
                _ => continue,
            };
            // Each entry read on its own: one that cannot be read hides nothing else.
            #[derive(serde::Deserialize)]
            struct Frame {
                entries: Vec<serde_json::Value>,
            }
            let frame: Frame = serde_json::from_str(text.as_str())
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let mut entries = Vec::new();
            for incoming in read_entries(frame.entries) {
                match incoming {
                    Incoming::Entry(e) => entries.push(e),
                    unreadable => self.unreadable.push(unreadable),
                }
            }
            return Ok(entries);
        }
    }

    /// How long the channel may be `quiet` before this side pings, and how long the server
    /// then has to `answer` (25 s and 10 s unless set).
    pub fn set_liveness(&mut self, quiet: std::time::Duration, answer: std::time::Duration) {
        self.quiet = quiet;
        self.answer = answer;
    }

    async fn ack(&mut self, seqs: Vec<u64>) -> ClientResult<()> {
        let ack = serde_json::to_string(&ClientFrame::Ack { seqs })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.ws
            .send(tungstenite::Message::Text(ack.into()))
            .await
            .map_err(|e| ClientError::Network(e.to_string()))
    }
}

/// The push socket's settings: tungstenite zeroes its whole read buffer before each read, so
/// its 128 KiB default cost more than the frames; 16 KiB holds a typical frame in one read.
fn push_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024)
}

/// A live push channel from [`Client::connect_push`].
pub struct PushConnection {
    ws: tokio_tungstenite::WebSocketStream<crate::tls::Stream>,
    quiet: std::time::Duration,
    answer: std::time::Duration,
    /// Pushed entries that could not be read, waiting for [`Client::take_pushed`] to
    /// acknowledge and report them.
    unreadable: Vec<Incoming>,
}

/// How long the push channel may be silent before the client pings (under the idle timeouts
/// of common NAT and proxies, so the ping also keeps the path open).
const PUSH_QUIET: std::time::Duration = std::time::Duration::from_secs(25);

/// How long a ping may go unanswered before the channel counts as gone.
const PUSH_ANSWER: std::time::Duration = std::time::Duration::from_secs(10);

/// How long opening the push channel may take.
const PUSH_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

fn gone() -> ClientError {
    ClientError::Network("the server stopped answering on the push channel".into())
}
