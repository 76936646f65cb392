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
/// as soon as it is accepted (the peer sees the connection end, as when a network path or the
/// database goes away); [`restore`](FaultProxy::restore) forwards again. Dropping the proxy
/// stops it and closes everything.
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    cut: AtomicBool,
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

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
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
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let (mut inbound, mut outbound) = (inbound, outbound);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = generation.changed() => {}
            }
            // Both sockets are dropped here: the cut is seen on both sides at once.
        });
    }
}
