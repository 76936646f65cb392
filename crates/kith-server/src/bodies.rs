//! Request bodies held in memory, bounded across all requests: a client that sends bodies
//! just under the size limit and then stalls holds at most its address's share
//! (`max_body_memory_per_address`), and all such clients together at most
//! `max_body_memory_bytes`. A request past either gets `503 unavailable` with `Retry-After`
//! at once, before its body is read. Bodies up to [`SMALL`] do not count: every connection may
//! hold one (connections are capped), so honest small requests never wait on this.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies up to this many bytes are not counted.
pub const SMALL: usize = 16 * 1024;

/// The budget (see the module's header).
pub struct BodyBudget {
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
    pub fn new(total: usize, per_address: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
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

    /// Reserves `bytes` for a body from `peer`: `Ok(None)` for a small body, `Err(Spent)` when
    /// the address's share or the whole budget is spent.
    pub fn reserve(
        self: &Arc<Self>,
        peer: IpAddr,
        bytes: usize,
    ) -> Result<Option<Reserved>, Spent> {
        if bytes <= SMALL {
            return Ok(None);
        }
        let source = kith_listen::source(peer);
        let mut held = self.lock();
        let mine = held.get(&source).copied().unwrap_or(0);
        if mine.saturating_add(bytes) > self.per_address {
            return Err(Spent);
        }
        let permits = u32::try_from(bytes).map_err(|_| Spent)?;
        let total = self.total.clone().try_acquire_many_owned(permits).map_err(|_| Spent)?;
        *held.entry(source).or_default() += bytes;
        drop(held);
        Ok(Some(Reserved { budget: self.clone(), source, bytes, _total: total }))
    }
}
