//! One async lock per conversation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Held while a handshake for one conversation is validated and stored.
pub type ConversationGuard = tokio::sync::OwnedMutexGuard<()>;

#[derive(Default)]
pub struct Locks {
    /// A std mutex: held only to find or insert an entry, never across an await.
    map: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

impl Locks {
    pub async fn lock(&self, conversation: &[u8]) -> ConversationGuard {
        let lock = {
            let mut map = match self.map.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            // Drop entries nobody holds or waits for, so the map stays small.
            if map.len() > 1024 {
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(conversation.to_vec()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
