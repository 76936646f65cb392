//! A loopback TCP proxy that can cut the connection between `kithd` and its database and
//! restore it, for fault-injection tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection made to [`FaultProxy::addr`] to a target address.
///
/// [`cut`](FaultProxy::cut) closes every forwarded connection at once and closes each new one
/// as soon as it is accepted (the peer sees the connection end, as when the database goes
/// away); [`stall`](FaultProxy::stall) keeps every connection open but stops moving bytes (as
/// when packets are silently dropped); [`restore`](FaultProxy::restore) forwards again.
/// Dropping the proxy stops it and closes everything.
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    cut: AtomicBool,
    /// While true, no byte is passed on in either direction.
    stalled: watch::Sender<bool>,
    /// Bumped by every cut; each forwarding task ends when it changes.
    generation: watch::Sender<u64>,
    /// Connections forwarded so far, for tests that check the proxy was really used.
    forwarded: AtomicU64,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            cut: AtomicBool::new(false),
            stalled: watch::channel(false).0,
            generation: watch::channel(0).0,
            forwarded: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, target, state.clone()));
        Ok(FaultProxy { addr, state, task })
    }

    /// Drops every forwarded connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Stops moving bytes on every connection, open or new, without closing any.
    pub fn stall(&self) {
        self.state.stalled.send_replace(true);
    }

    /// Forwards again after a cut or a stall.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.stalled.send_replace(false);
    }

    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// How many connections have been forwarded to the target.
    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: Arc<State>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        if state.cut.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        let mut generation = state.generation.subscribe();
        generation.mark_unchanged();
        state.forwarded.fetch_add(1, Ordering::SeqCst);
        let stalled = state.stalled.subscribe();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::select! {
                _ = pump(in_read, out_write, stalled.clone()) => {}
                _ = pump(out_read, in_write, stalled) => {}
                _ = generation.changed() => {}
            }
            // Both sockets are dropped here: the cut is seen on both sides at once.
        });
    }
}

/// Copies bytes one way until either side ends, holding each chunk while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
