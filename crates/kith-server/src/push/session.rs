//! One device's push session: everything waiting in its queue, then each new entry as it
//! arrives — handed over by the send that committed it, or read from the store when the hub
//! says so — several to a frame; acknowledgements read on the same socket. It ends when the
//! socket breaks, the server stops, or the device's access changes (checked every
//! `push_recheck`).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use kith_proto::{ClientFrame, QueueEntry, ServerFrame};

use super::{Hub, Inbox, Pushed};
use crate::delivery::entries::{MAX_FETCH, ack_seqs, to_wire};
use crate::state::AppState;

/// A device's push connection; giving it back (also when the upgrade never happens) frees the
/// connection slot.
pub struct Slot {
    pub hub: Arc<Hub>,
    pub device: u64,
    pub inbox: Arc<Inbox>,
    /// The token the connection was opened with.
    pub token_hash: [u8; 32],
    /// The listener's permit: the socket stays counted against the connection caps.
    pub connection: Option<kith_listen::ConnectionPermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.release(self.device, &self.inbox);
    }
}

/// Entries per frame at most (the same as a page of `GET /v1/queue`).
const MAX_PER_FRAME: usize = MAX_FETCH as usize;

/// Runs the session until it ends.
pub async fn serve(state: AppState, slot: Slot, mut socket: WebSocket) {
    let mut shutdown = state.shutdown_signal();
    state.metrics.websockets.inc();
    let mut conn = Connection {
        state: &state,
        device: slot.device,
        sent: HashSet::new(),
        prune_at: MIN_PRUNE_AT,
    };
    // What another process changed (an admin's suspension on SQLite, an announcement a node
    // missed) ends the connection within `push_recheck`.
    let every = state.config.push_recheck;
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    'conn: loop {
        let work = slot.inbox.take();
        if work.closed {
            let _ = socket.send(Message::Close(None)).await;
            break;
        }
        // A device that acknowledges over HTTP instead of this socket leaves its entries in
        // `sent`; past a bound, a read of the queue drops the ones it no longer holds.
        let prune = conn.sent.len() >= conn.prune_at;
        if (work.reread || prune) && conn.reread(&mut socket).await.is_err() {
            break;
        }
        if conn.deliver(&mut socket, work.entries).await.is_err() {
            break;
        }
        // Wait for more, reading acknowledgements meanwhile.
        loop {
            tokio::select! {
                () = slot.inbox.changed() => continue 'conn,
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<ClientFrame>(&text) {
                            Ok(ClientFrame::Ack { seqs }) => conn.acked(&seqs).await,
                            Err(_) => {
                                tracing::debug!("push: unreadable client frame; closing");
                                break 'conn;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break 'conn,
                    Some(Ok(_)) => {} // pings are answered by axum; binary frames are ignored
                },
                _ = shutdown.changed() => {
                    let _ = socket.send(Message::Close(None)).await;
                    break 'conn;
                }
                _ = recheck.tick() => {
                    if !crate::extract::still_allowed(&state, slot.device, &slot.token_hash).await {
                        let _ = socket.send(Message::Close(None)).await;
                        break 'conn;
                    }
                }
            }
        }
    }
    state.metrics.websockets.dec();
}

/// The socket broke, or the queue could not be read: the connection ends.
struct Closed;

struct Connection<'a> {
    state: &'a AppState,
    device: u64,
    /// Entries sent on this connection and not yet acknowledged on it: a read of the store
    /// finds them again and must not send them twice.
    sent: HashSet<u64>,
    /// How large `sent` may grow before a read of the queue prunes it: twice what the last
    /// read left, so a device that is simply far behind does not cause a read per message.
    prune_at: usize,
}

/// The least `prune_at`.
const MIN_PRUNE_AT: usize = 4096;

impl Connection<'_> {
    /// Sends what the queue holds that this connection has not sent yet. Reading from the
    /// start of the queue (not from the last entry seen) means an entry that committed late
    /// with a lower number than one already sent is still found.
    async fn reread(&mut self, socket: &mut WebSocket) -> Result<(), Closed> {
        let state = self.state;
        let mut still_unacked = HashSet::with_capacity(self.sent.len());
        let mut after = 0;
        loop {
            let page = state.store.fetch(self.device, after, MAX_FETCH, state.now()).await;
            let page = page.map_err(|e| {
                tracing::warn!(error = %e, "push: cannot read the queue");
                Closed
            })?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let complete = page.len() < MAX_FETCH as usize;
            let mut fresh = Vec::with_capacity(page.len());
            for e in page {
                still_unacked.insert(e.seq);
                if !self.sent.contains(&e.seq) {
                    fresh.push(to_wire(e, &state.franking, self.device));
                }
            }
            self.send(socket, fresh).await?;
            if complete {
                break;
            }
        }
        // What the queue no longer holds was acknowledged some other way.
        self.sent = still_unacked;
        self.prune_at = (self.sent.len() * 2).max(MIN_PRUNE_AT);
        Ok(())
    }

    /// Sends pushed entries, in queue order, leaving out any a read already sent and any
    /// that expired meanwhile.
    async fn deliver(
        &mut self,
        socket: &mut WebSocket,
        mut pushed: Vec<Pushed>,
    ) -> Result<(), Closed> {
        if pushed.is_empty() {
            return Ok(());
        }
        pushed.sort_unstable_by_key(|p| p.seq);
        let now = self.state.now();
        let mut entries: Vec<QueueEntry> = pushed
            .into_iter()
            .filter(|p| !self.sent.contains(&p.seq))
            .filter(|p| p.entry.expires_at.is_none_or(|at| at > now))
            .map(|p| QueueEntry {
                seq: p.seq,
                frank: self.state.franking.tag_wire(&p.entry, self.device),
                ..(*p.entry).clone()
            })
            .collect();
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(MAX_PER_FRAME));
            self.send(socket, std::mem::replace(&mut entries, rest)).await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        socket: &mut WebSocket,
        entries: Vec<QueueEntry>,
    ) -> Result<(), Closed> {
        if entries.is_empty() {
            return Ok(());
        }
        let n = entries.len() as u64;
        self.sent.extend(entries.iter().map(|e| e.seq));
        let text = serde_json::to_string(&ServerFrame::Entries { entries }).map_err(|_| Closed)?;
        socket.send(Message::Text(text.into())).await.map_err(|_| Closed)?;
        self.state.metrics.entries_delivered.inc_by(n);
        Ok(())
    }

    async fn acked(&mut self, seqs: &[u64]) {
        match ack_seqs(self.state, self.device, seqs).await {
            Ok(_) => {
                for s in seqs {
                    self.sent.remove(s);
                }
            }
            Err(e) => tracing::debug!(error = %e, "push: ack refused"),
        }
    }
}
