//! Request bodies held in memory while they arrive, bounded across all requests: what a body
//! has actually sent beyond its first [`SMALL`] bytes is reserved as it arrives, from its
//! address's share (`max_body_memory_per_address`) and from the whole
//! (`max_body_memory_bytes`); a body that would go past either is refused (`503 unavailable`
//! with `Retry-After`). Every body must arrive whole within [`DEADLINE`], or it is refused and
//! its connection closed: a client that sends most of a large body and stalls holds its bytes
//! for seconds, not for ever, and one that declares a large body and sends nothing holds
//! nothing. The first [`SMALL`] bytes of each body do not count: connections are capped, so
//! those are bounded too, and honest small requests never wait on this.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first this many bytes of every body are not counted.
pub const SMALL: usize = 16 * 1024;

/// How long a request's body may take to arrive, whole.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a body was not read to its end (found by the body extractor in its error's sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefused {
    /// The budget is spent (the address's share, or all of it).
    Busy,
    /// It did not arrive whole within [`DEADLINE`].
    TooSlow,
}

impl std::fmt::Display for BodyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyRefused::Busy => "the server is holding too many request bodies",
            BodyRefused::TooSlow => "the request body did not arrive in time",
        })
    }
}

impl std::error::Error for BodyRefused {}

/// The request `body` from `peer`, metered (see the module's header).
pub fn metered(budget: Arc<BodyBudget>, peer: IpAddr, body: axum::body::Body) -> axum::body::Body {
    use futures_util::StreamExt as _;
    struct Meter {
        stream: axum::body::BodyDataStream,
        budget: Arc<BodyBudget>,
        peer: IpAddr,
        read: usize,
        held: Vec<Reserved>,
        deadline: tokio::time::Instant,
        done: bool,
    }
    let meter = Meter {
        stream: body.into_data_stream(),
        budget,
        peer,
        read: 0,
        held: Vec::new(),
        deadline: tokio::time::Instant::now() + DEADLINE,
        done: false,
    };
    let stream = futures_util::stream::unfold(meter, |mut m| async move {
        if m.done {
            return None;
        }
        let next = match tokio::time::timeout_at(m.deadline, m.stream.next()).await {
            Err(_) => Err(axum::Error::new(BodyRefused::TooSlow)),
            Ok(None) => return None,
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(chunk))) => {
                let counted_before = m.read.saturating_sub(SMALL);
                m.read = m.read.saturating_add(chunk.len());
                let now_counted = m.read.saturating_sub(SMALL) - counted_before;
                match m.budget.reserve_exact(m.peer, now_counted) {
                    Ok(r) => {
                        m.held.extend(r);
                        Ok(chunk)
                    }
                    Err(Spent) => Err(axum::Error::new(BodyRefused::Busy)),
                }
            }
        };
        m.done = next.is_err();
        Some((next, m))
    });
    axum::body::Body::from_stream(stream)
}

/// The budget (see the module's header).
pub struct BodyBudget {
    /// Bodies refused because the budget was spent (a metric).
    refusals: prometheus_client::metrics::counter::Counter,
    total: Arc<Semaphore>,
    per_address: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// The budget is spent (the address's share, or all of it).
#[derive(Debug)]
pub struct Spent;

/// Bytes reserved for one request's body, given back when dropped.
pub struct Reserved {
    budget: Arc<BodyBudget>,
    source: IpAddr,
    bytes: usize,
    _total: OwnedSemaphorePermit,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut held = self.budget.lock();
        if let Some(n) = held.get_mut(&self.source) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                held.remove(&self.source);
            }
        }
    }
}

impl BodyBudget {
    pub fn new(
        total: usize,
        per_address: usize,
        refusals: prometheus_client::metrics::counter::Counter,
    ) -> Arc<Self> {
        Arc::new(BodyBudget {
            refusals,
            total: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            per_address,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        match self.held.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Reserves `bytes` of a body from `peer` (nothing for zero), or `Err(Spent)` when the
    /// address's share or the whole budget would be passed.
    pub fn reserve_exact(
        self: &Arc<Self>,
        peer: IpAddr,
        bytes: usize,
    ) -> Result<Option<Reserved>, Spent> {
        if bytes == 0 {
            return Ok(None);
        }
        let source = kith_listen::source(peer);
        let mut held = self.lock();
        let mine = held.get(&source).copied().unwrap_or(0);
        let spent = || {
            self.refusals.inc();
            Spent
        };
        if mine.saturating_add(bytes) > self.per_address {
            return Err(spent());
        }
        let permits = u32::try_from(bytes).map_err(|_| spent())?;
        let total = self.total.clone().try_acquire_many_owned(permits).map_err(|_| spent())?;
        *held.entry(source).or_default() += bytes;
        drop(held);
        Ok(Some(Reserved { budget: self.clone(), source, bytes, _total: total }))
    }
}
