//! The accept loop `kithd` and `kith app` share, so that one client cannot starve the others.
//!
//! Map:
//! - [`Gate`]: connections in total and per address (an IPv6 /64 counts as one address) are
//!   capped; when a cap is reached, the oldest connection of that scope that has not yet sent
//!   a whole request is closed to make room (a client holding sockets open without speaking
//!   cannot keep a speaking one out: a connection has spoken once a whole request was read
//!   and answered, so one stalling its body stays evictable), and only when every one of them
//!   has spoken is the newcomer turned away; an upgraded connection (a WebSocket) stays counted
//!   while its handler holds the [`ConnectionPermit`];
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
    /// Set once the connection has sent a whole request: it is a client that speaks.
    spoke: Arc<AtomicBool>,
    close: Arc<Notify>,
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
    spoke: Arc<AtomicBool>,
    close: Arc<Notify>,
}

impl Permit {
    /// The connection sent a whole request: it is no longer the first to be closed for room.
    pub fn spoke(&self) {
        self.spoke.store(true, Ordering::Relaxed);
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
            // The oldest silent one of the full scope makes room (it leaves the count now; its
            // task ends when it hears).
            let victim = open
                .held
                .iter()
                .enumerate()
                .filter(|(_, h)| scope.is_none_or(|s| h.source == s))
                .filter(|(_, h)| !h.spoke.load(Ordering::Relaxed))
                .min_by_key(|(_, h)| h.since)
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
        let spoke = Arc::new(AtomicBool::new(false));
        let close = Arc::new(Notify::new());
        open.held.push(Held {
            id,
            source,
            since: Instant::now(),
            spoke: spoke.clone(),
            close: close.clone(),
        });
        *open.per_source.entry(source).or_default() += 1;
        Some(Permit { gate: self.clone(), id, spoke, close })
    }
}

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
            // A handler that takes the connection over (a WebSocket) keeps the permit with it.
            req.extensions_mut().insert(ConnectionPermit(marks.clone()));
            let response = app.call(req).await;
            // Spoken: a whole request was read and answered (a stalled body never gets here).
            marks.spoke();
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
        first.spoke();
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
        // Everyone speaks: the next one is turned away.
        third.spoke();
        fourth.spoke();
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
        a.spoke();
        b.spoke();
        assert!(g.admit(ip(1)).is_none(), "the address is full of speaking connections");
        assert!(g.admit(ip(2)).is_some(), "others are not held back");
        // An IPv6 /64 counts as one address.
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        let c = g.admit(v6(1)).unwrap();
        let d = g.admit(v6(2)).unwrap();
        c.spoke();
        d.spoke();
        assert!(g.admit(v6(3)).is_none());
    }
}
