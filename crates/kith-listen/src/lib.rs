//! The accept loop `kithd` and `kith app` share, so that one client cannot starve the others.
//!
//! Map:
//! - [`Gate`]: connections in total and per address (an IPv6 /64 counts as one address) are
//!   capped; when a cap is reached, a connection of that scope that is not handling a request
//!   is closed to make room — the oldest that never had a request answered (silent sockets,
//!   stalled bodies), else the one idle the longest (so speaking once and idling holds
//!   nothing) — and only when every one of them is busy is the newcomer turned away; an
//!   upgraded connection (a WebSocket) is busy for good and stays counted while its handler
//!   holds the [`ConnectionPermit`];
//! - [`Acceptor`]: `accept` that never spins: when it fails (out of file descriptors above
//!   all) it pauses, doubling up to a second, and logs at most one line per ten seconds, with
//!   how many failures it did not log;
//! - [`serve_connection`]: one HTTP/1.1 connection (WebSocket upgrades included) with a
//!   deadline for each request's headers, which also closes a keep-alive connection that stays
//!   idle that long; closed early by its gate's eviction or by shutdown;
//! - [`raise_open_file_limit`]: as many sockets as the system allows.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

/// Caps and timeouts of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64).
    pub max_per_address: usize,
    /// How long a connection may take to send a request's headers, and stay idle between
    /// requests.
    pub header_timeout: Duration,
}

/// Where connections are counted from: the address, or for IPv6 its /64.
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One open connection, as the gate sees it.
struct Held {
    id: u64,
    source: IpAddr,
    since: Instant,
    activity: Arc<Activity>,
    close: Arc<Notify>,
}

/// What a connection is doing, as its task tells the gate.
#[derive(Default)]
struct Activity {
    /// Set once a whole request was read and answered: a client that speaks.
    spoke: AtomicBool,
    /// A request is being handled, or the connection was taken over (a WebSocket).
    busy: AtomicBool,
    /// When it last finished a request (milliseconds since the gate was made).
    last: AtomicU64,
}

#[derive(Default)]
struct Open {
    held: Vec<Held>,
    per_source: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// The connection caps of one listener (see the crate's header).
pub struct Gate {
    limits: Limits,
    started: Instant,
    open: Mutex<Open>,
    /// Connections turned away, and idle ones closed to make room.
    pub refused: AtomicU64,
    pub evicted: AtomicU64,
}

/// A connection let in: released when dropped. `closing` resolves when the gate closes it to
/// make room; `spoke` marks it as a client that sent a request.
pub struct Permit {
    gate: Arc<Gate>,
    id: u64,
    activity: Arc<Activity>,
    close: Arc<Notify>,
}

impl Permit {
    /// A request arrived: the connection is not closed for room while it is handled.
    pub fn busy(&self) {
        self.activity.busy.store(true, Ordering::Relaxed);
    }

    /// A request was answered. A connection `taken_over` (a WebSocket) stays busy for good.
    pub fn answered(&self, taken_over: bool) {
        let since = u64::try_from(self.gate.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.last.store(since, Ordering::Relaxed);
        self.activity.spoke.store(true, Ordering::Relaxed);
        if !taken_over {
            self.activity.busy.store(false, Ordering::Relaxed);
        }
    }

    /// Resolves when the gate wants this connection closed.
    pub async fn closing(&self) {
        self.close.notified().await;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        if let Some(at) = open.held.iter().position(|h| h.id == self.id) {
            let held = open.held.swap_remove(at);
            if let Some(n) = open.per_source.get_mut(&held.source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.per_source.remove(&held.source);
                }
            }
        }
    }
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Gate {
            limits,
            started: Instant::now(),
            open: Mutex::new(Open::default()),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().held.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        match self.open.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Lets a connection from `peer` in, making room by closing the oldest connection of the
    /// full scope that has not spoken yet; `None` when every one of them has (the newcomer
    /// is turned away).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Permit> {
        let source = source(peer);
        let mut open = self.lock();
        let from_source = open.per_source.get(&source).copied().unwrap_or(0);
        let scope: Option<Option<IpAddr>> = if from_source >= self.limits.max_per_address {
            Some(Some(source))
        } else if open.held.len() >= self.limits.max_connections {
            Some(None)
        } else {
            None
        };
        if let Some(scope) = scope {
            let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            // One that is not handling a request makes room: the oldest that never spoke, else
            // the one idle the longest (it leaves the count now; its task ends when it hears).
            // A client cannot hold a slot by speaking once and then idling.
            let victim = open
                .held
                .iter()
                .enumerate()
                .filter(|(_, h)| scope.is_none_or(|s| h.source == s))
                .filter(|(_, h)| !h.activity.busy.load(Ordering::Relaxed))
                // A client between two quick requests is not cut off mid-conversation (a
                // silent connection has no such grace: the oldest goes first, and a fresh one
                // is the last to go).
                .filter(|(_, h)| {
                    let a = &h.activity;
                    !a.spoke.load(Ordering::Relaxed)
                        || now.saturating_sub(a.last.load(Ordering::Relaxed)) >= GRACE_MS
                })
                .min_by_key(|(_, h)| {
                    let a = &h.activity;
                    (a.spoke.load(Ordering::Relaxed), a.last.load(Ordering::Relaxed), h.since)
                })
                .map(|(i, _)| i);
            let Some(at) = victim else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            let held = open.held.swap_remove(at);
            if let Some(n) = open.per_source.get_mut(&held.source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.per_source.remove(&held.source);
                }
            }
            held.close.notify_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        open.next_id += 1;
        let id = open.next_id;
        let activity = Arc::new(Activity::default());
        let close = Arc::new(Notify::new());
        open.held.push(Held {
            id,
            source,
            since: Instant::now(),
            activity: activity.clone(),
            close: close.clone(),
        });
        *open.per_source.entry(source).or_default() += 1;
        Some(Permit { gate: self.clone(), id, activity, close })
    }
}

/// How long a connection between two requests is safe from being closed for room.
const GRACE_MS: u64 = 500;

/// `accept` that never spins on failure (see the crate's header).
pub struct Acceptor {
    listener: tokio::net::TcpListener,
    what: &'static str,
    pause: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
}

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Acceptor {
    /// `what` names the listener in the log ("kithd", "kith app").
    pub fn new(listener: tokio::net::TcpListener, what: &'static str) -> Self {
        Acceptor { listener, what, pause: FIRST_PAUSE, last_logged: None, unlogged: 0 }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Failures (no file descriptors left, a connection reset before it
    /// was taken) pause the loop instead of spinning, and are logged sparingly.
    pub async fn accept(&mut self) -> (tokio::net::TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => {
                    self.pause = FIRST_PAUSE;
                    return accepted;
                }
                Err(e) => {
                    let due = self.last_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY);
                    if due {
                        tracing::warn!(
                            listener = self.what,
                            error = %e,
                            not_logged_since = self.unlogged,
                            "accept failed; pausing"
                        );
                        self.last_logged = Some(Instant::now());
                        self.unlogged = 0;
                    } else {
                        self.unlogged += 1;
                    }
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).min(LONGEST_PAUSE);
                }
            }
        }
    }
}

/// The permit of the connection a request came on, in its extensions: a handler that upgrades
/// the connection (a WebSocket) holds it for as long as the socket lives, so upgraded
/// connections stay counted.
#[derive(Clone)]
pub struct ConnectionPermit(pub Arc<Permit>);

/// Serves one HTTP/1.1 connection (upgrades included) with `app`: a client that has not sent a
/// request's headers within `header_timeout` — the first request's, or the next one's on a
/// kept-alive connection — is disconnected. Ends early when the permit is closed by its gate
/// or `stop` changes (then gracefully: requests in flight finish).
pub async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    permit: Permit,
    mut stop: tokio::sync::watch::Receiver<bool>,
    header_timeout: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower_service::Service as _;
    let permit = Arc::new(permit);
    let marks = permit.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut app = app.clone();
        let marks = marks.clone();
        async move {
            let mut req = req.map(axum::body::Body::new);
            marks.busy();
            // A handler that takes the connection over (a WebSocket) keeps the permit with it.
            req.extensions_mut().insert(ConnectionPermit(marks.clone()));
            let response = app.call(req).await;
            // A whole request was read and answered (a stalled body never gets here); a
            // connection switching protocols stays busy for as long as it lives.
            let taken_over = response
                .as_ref()
                .is_ok_and(|r| r.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS);
            marks.answered(taken_over);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = permit.closing() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// `wanted` connections, or fewer if the open-file limit leaves no room for them (a few
/// hundred descriptors stay for files, the database and the accept loop itself).
pub fn room_for(wanted: usize) -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024);
    let room = usize::try_from(soft.saturating_sub(256)).unwrap_or(usize::MAX).max(64);
    wanted.min(room)
}

/// Raises the open-file limit as far as the system allows (every connection holds one), and
/// returns it.
pub fn raise_open_file_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is a failed test
    use super::*;

    fn gate(total: usize, per: usize) -> Arc<Gate> {
        Gate::new(Limits {
            max_connections: total,
            max_per_address: per,
            header_timeout: Duration::from_secs(1),
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_silent_connection_makes_room_and_a_speaking_one_is_kept() {
        let g = gate(3, 3);
        let first = g.admit(ip(1)).unwrap();
        let second = g.admit(ip(1)).unwrap();
        let third = g.admit(ip(2)).unwrap();
        first.answered(false);
        std::thread::sleep(Duration::from_millis(GRACE_MS + 20));
        // Full: the oldest silent one (second) is closed for the newcomer.
        let fourth = g.admit(ip(3)).unwrap();
        assert_eq!(g.open(), 3);
        assert_eq!(g.evicted.load(Ordering::Relaxed), 1);
        // `second` hears it (a stored permit: its task would end now).
        let heard =
            tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(
                async {
                    tokio::time::timeout(Duration::from_millis(100), second.closing()).await.is_ok()
                },
            );
        assert!(heard);
        drop(second);
        assert_eq!(g.open(), 3, "an evicted permit leaves the count once");
        // Everyone is handling a request: the next one is turned away.
        for p in [&first, &third, &fourth] {
            p.busy();
        }
        assert!(g.admit(ip(4)).is_none());
        assert_eq!(g.refused.load(Ordering::Relaxed), 1);
        drop(first);
        assert!(g.admit(ip(4)).is_some());
    }

    #[test]
    fn one_address_is_capped_on_its_own() {
        let g = gate(100, 2);
        let a = g.admit(ip(1)).unwrap();
        let b = g.admit(ip(1)).unwrap();
        a.busy();
        b.busy();
        assert!(g.admit(ip(1)).is_none(), "the address is full of busy connections");
        assert!(g.admit(ip(2)).is_some(), "others are not held back");
        // An IPv6 /64 counts as one address.
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        let c = g.admit(v6(1)).unwrap();
        let d = g.admit(v6(2)).unwrap();
        c.busy();
        d.busy();
        assert!(g.admit(v6(3)).is_none());
    }

    #[test]
    fn speaking_once_then_idling_holds_nothing() {
        let g = gate(2, 2);
        let early = g.admit(ip(1)).unwrap();
        let late = g.admit(ip(1)).unwrap();
        early.busy();
        early.answered(false);
        std::thread::sleep(Duration::from_millis(5));
        late.busy();
        late.answered(false);
        std::thread::sleep(Duration::from_millis(GRACE_MS + 20));
        // Both spoke and idle: the one idle the longest makes room.
        let _new = g.admit(ip(1)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let heard = |p: &Permit| {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(50), p.closing()).await.is_ok()
            })
        };
        assert!(heard(&early) && !heard(&late));
        // A connection taken over (a WebSocket) is never closed for room.
        let g = gate(1, 1);
        let ws = g.admit(ip(1)).unwrap();
        ws.busy();
        ws.answered(true);
        assert!(g.admit(ip(1)).is_none());
    }
}
