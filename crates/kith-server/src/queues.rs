//! How many undelivered entries each device's queue holds, for `max_queued_per_device`.
//!
//! A device that never fetches (a lost phone) must not make the server keep an unbounded
//! amount of ciphertext for it. The depth of each device a send goes to is read from the store
//! in one query, then followed here: raised when entries are queued, lowered when they are
//! acknowledged, and read again after [`REFRESH`] and after every retention sweep, so it is
//! exact on a single node and at most `REFRESH` of traffic off when several `kithd` nodes share
//! one PostgreSQL database.
//!
//! What a sender sees at the limit (see `routes::conversations::send`): devices whose queue
//! is full are left out of an application message; if that leaves none of the other members'
//! devices, the send is refused with `429 queue_full` and `Retry-After`. Commits and Welcomes
//! are always queued — a device that misses one cannot follow its group — and count toward
//! the depth.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kith_store::{DeviceId, Store, StoreResult};

/// How long a depth followed here is trusted before it is read from the store again.
pub const REFRESH: Duration = Duration::from_secs(10);
/// Devices followed at most; past it the map starts again empty.
const MAX_FOLLOWED: usize = 200_000;

struct Depth {
    entries: u64,
    read_at: Instant,
}

/// A std mutex, held for map work only and never across an await.
pub struct QueueDepths {
    max: u64,
    depths: Mutex<HashMap<DeviceId, Depth>>,
}

impl QueueDepths {
    pub fn new(max: u64) -> Self {
        QueueDepths { max, depths: Mutex::new(HashMap::new()) }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Which of `devices` hold `max` entries or more.
    pub async fn full(
        &self,
        store: &dyn Store,
        devices: &[DeviceId],
    ) -> StoreResult<Vec<DeviceId>> {
        let stale: Vec<DeviceId> = {
            let depths = self.lock();
            devices
                .iter()
                .copied()
                .filter(|d| depths.get(d).is_none_or(|e| e.read_at.elapsed() >= REFRESH))
                .collect()
        };
        if !stale.is_empty() {
            let counts = store.queue_depths(&stale).await?;
            let mut depths = self.lock();
            if depths.len() + stale.len() > MAX_FOLLOWED {
                depths.clear();
            }
            let now = Instant::now();
            for (device, entries) in stale.into_iter().zip(counts) {
                depths.insert(device, Depth { entries, read_at: now });
            }
        }
        let depths = self.lock();
        Ok(devices
            .iter()
            .copied()
            .filter(|d| depths.get(d).is_some_and(|e| e.entries >= self.max))
            .collect())
    }

    /// One entry was queued for each of `devices`.
    pub fn added(&self, devices: &[DeviceId]) {
        let mut depths = self.lock();
        for d in devices {
            if let Some(e) = depths.get_mut(d) {
                e.entries += 1;
            }
        }
    }

    /// `n` of the device's entries were acknowledged.
    pub fn removed(&self, device: DeviceId, n: u64) {
        if let Some(e) = self.lock().get_mut(&device) {
            e.entries = e.entries.saturating_sub(n);
        }
    }

    /// Entries went some other way (the retention sweep): read every depth again.
    pub fn forget_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Depth>> {
        // A panic while holding this lock cannot leave the map inconsistent (each change is
        // one insert or one addition), so a poisoned lock is used as it is.
        self.depths.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
