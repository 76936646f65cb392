//! Short-lived caches in front of the store for what every send reads: a conversation's route
//! (member devices, who may post) and the devices that block a sender.
//!
//! This node drops an entry the moment it changes it (a commit, a leave, a block); entries
//! also expire after [`TTL`], which bounds how long a change made by *another* `kithd` node on
//! the same PostgreSQL database can go unseen here. That is harmless for routes (a member
//! removed elsewhere cannot read the new epoch's messages) but not for blocks: on a store other
//! nodes share, blocks are read from the store on every send.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kith_store::{DeviceId, Route, Store, StoreResult};

/// How long an entry may be served without asking the store.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept at most per cache; past it the cache starts again empty.
const MAX: usize = 50_000;

struct Timed<T> {
    value: T,
    at: Instant,
}

/// A std mutex per map: held for a lookup or an insert, never across an await.
#[derive(Default)]
pub struct FanoutCache {
    /// Whether blocks may be served from this cache (only one node changes them).
    cache_blocks: bool,
    routes: Mutex<HashMap<Vec<u8>, Timed<Route>>>,
    blocking: Mutex<HashMap<String, Timed<Vec<DeviceId>>>>,
    /// (conversation, account) pairs this node has recorded as having posted: the store is
    /// written once per pair, not once per message.
    spoken: Mutex<std::collections::HashSet<(Vec<u8>, String)>>,
}

fn get<K, V: Clone>(map: &Mutex<HashMap<K::Owned, Timed<V>>>, key: &K) -> Option<V>
where
    K: std::hash::Hash + Eq + ToOwned + ?Sized,
    K::Owned: std::hash::Hash + Eq + std::borrow::Borrow<K>,
{
    let map = map.lock().ok()?;
    map.get(key).filter(|t| t.at.elapsed() < TTL).map(|t| t.value.clone())
}

fn put<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, Timed<V>>>, key: K, value: V) {
    if let Ok(mut map) = map.lock() {
        if map.len() >= MAX {
            map.clear();
        }
        map.insert(key, Timed { value, at: Instant::now() });
    }
}

impl FanoutCache {
    /// `shared`: other nodes change the store too ([`DeliveryStore::shared`]).
    pub fn new(shared: bool) -> Self {
        FanoutCache { cache_blocks: !shared, ..Default::default() }
    }

    pub async fn route(
        &self,
        store: &dyn Store,
        conversation: &[u8],
    ) -> StoreResult<Option<Route>> {
        if let Some(route) = get(&self.routes, conversation) {
            return Ok(Some(route));
        }
        // Only existing conversations are kept: one created a moment later must be found.
        let route = store.conversation_route(conversation).await?;
        if let Some(r) = &route {
            put(&self.routes, conversation.to_vec(), r.clone());
        }
        Ok(route)
    }

    pub async fn blocking(&self, store: &dyn Store, sender: &str) -> StoreResult<Vec<DeviceId>> {
        if !self.cache_blocks {
            return store.devices_blocking(sender).await;
        }
        if let Some(devices) = get(&self.blocking, sender) {
            return Ok(devices);
        }
        let devices = store.devices_blocking(sender).await?;
        put(&self.blocking, sender.to_string(), devices.clone());
        Ok(devices)
    }

    /// The conversation's members or rules changed.
    pub fn forget_route(&self, conversation: &[u8]) {
        if let Ok(mut map) = self.routes.lock() {
            map.remove(conversation);
        }
    }

    /// Every conversation's members may have changed (a device was removed).
    pub fn forget_routes(&self) {
        if let Ok(mut map) = self.routes.lock() {
            map.clear();
        }
    }

    /// Remembers in the store that `sender` posted in `conversation` (for reputation: a block
    /// counts only from someone the blocked account wrote to). The first post per pair writes.
    pub async fn note_spoke(
        &self,
        store: &dyn Store,
        conversation: &[u8],
        sender: &str,
    ) -> StoreResult<()> {
        let key = (conversation.to_vec(), sender.to_string());
        if self.spoken.lock().is_ok_and(|s| s.contains(&key)) {
            return Ok(());
        }
        store.note_spoke(conversation, sender).await?;
        if let Ok(mut spoken) = self.spoken.lock() {
            if spoken.len() >= MAX {
                spoken.clear();
            }
            spoken.insert(key);
        }
        Ok(())
    }

    /// Someone blocked or unblocked `sender`.
    pub fn forget_blocking(&self, sender: &str) {
        if let Ok(mut map) = self.blocking.lock() {
            map.remove(sender);
        }
    }
}
