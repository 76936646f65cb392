//! Message franking on the server.
//!
//! For each application message it delivers, the server computes
//! `tag = HMAC-SHA256(K_server, c ‖ group_id ‖ epoch ‖ server_time)` from the commitment `c` in
//! the message's MLS authenticated data, and hands it out with the ciphertext. It stores nothing
//! per message: the tag is recomputed from the stored ciphertext whenever it is delivered. A
//! report brings back the message's body, franking key, signature and tag; the server checks
//! that the tag is one it made (so it delivered `c` in that group, epoch and time), that `c`
//! commits to that body under that key, and that the body was signed by the sender's device.
//!
//! `K_server` is generated at first start and kept in the store; rotating it retires the old
//! key, which still verifies for the retention period (no message it tagged is older).

use std::collections::VecDeque;
use std::sync::{Mutex, RwLock};

use kith_proto::{B64, EntryKind, FrankTag};
use kith_store::{FrankingKey, MessageId, Millis, Store, StoreError, StoredEntry};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use subtle::ConstantTimeEq;

pub struct Franking {
    /// A std lock: read on every delivery, written only on (re)load; never held across await.
    keys: RwLock<Vec<FrankingKey>>,
    crypto: RustCrypto,
    /// The tags of recently delivered messages: a message to a group of 1000 is tagged once,
    /// not once per recipient. A std mutex, held for a lookup or an insert.
    recent: Mutex<VecDeque<(MessageId, Option<FrankTag>)>>,
}

/// Tags remembered for messages being delivered to many devices at once.
const RECENT_TAGS: usize = 256;

/// A fresh 256-bit key.
fn new_key() -> Result<Vec<u8>, StoreError> {
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| StoreError::Backend(format!("no randomness: {e}")))?;
    Ok(key)
}

/// The commitment, epoch and group of an application message, read without any secret.
pub fn commitment_of(data: &[u8]) -> Option<(Vec<u8>, u64, Vec<u8>)> {
    let msg = MlsMessageIn::tls_deserialize_exact(data).ok()?;
    let MlsMessageBodyIn::PrivateMessage(pm) = msg.extract() else { return None };
    (pm.aad().len() == 32)
        .then(|| (pm.aad().to_vec(), pm.epoch().as_u64(), pm.group_id().as_slice().to_vec()))
}

impl Franking {
    /// Loads the keys, creating the first one on a new server.
    pub async fn load(store: &dyn Store, now: Millis) -> Result<Self, StoreError> {
        let mut keys = store.franking_keys().await?;
        if !keys.iter().any(|k| k.retired_at.is_none()) {
            store.add_franking_key(new_key()?, now).await?;
            keys = store.franking_keys().await?;
        }
        Ok(Franking {
            keys: RwLock::new(keys),
            crypto: RustCrypto::default(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_TAGS)),
        })
    }

    /// Picks up keys another process (an admin's rotation, another node) added.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let keys = store.franking_keys().await?;
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        if let Ok(mut recent) = self.recent.lock() {
            recent.clear();
        }
        Ok(())
    }

    /// Retires the current key and starts a new one. Returns the new key's id.
    pub async fn rotate(store: &dyn Store, now: Millis) -> Result<u32, StoreError> {
        store.add_franking_key(new_key()?, now).await
    }

    fn mac(&self, key: &[u8], c: &[u8], group: &[u8], epoch: u64, time: Millis) -> Option<Vec<u8>> {
        let input = [c, group, &epoch.to_be_bytes(), &time.to_be_bytes()].concat();
        self.crypto.hmac(HashType::Sha2_256, key, &input).ok().map(|t| t.as_slice().to_vec())
    }

    /// The tag for a stored entry, if it is an application message with a commitment.
    pub fn tag(&self, entry: &StoredEntry) -> Option<FrankTag> {
        if entry.kind != EntryKind::Message {
            return None;
        }
        if let Ok(recent) = self.recent.lock()
            && let Some((_, tag)) = recent.iter().find(|(id, _)| *id == entry.message_id)
        {
            return tag.clone();
        }
        let tag = self.compute_tag(entry);
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_TAGS {
                recent.pop_front();
            }
            recent.push_back((entry.message_id, tag.clone()));
        }
        tag
    }

    fn compute_tag(&self, entry: &StoredEntry) -> Option<FrankTag> {
        let (c, epoch, group) = commitment_of(&entry.data)?;
        let keys = self.keys.read().ok()?;
        let key = keys.iter().rev().find(|k| k.retired_at.is_none())?;
        let tag = self.mac(&key.key, &c, &group, epoch, entry.created_at)?;
        Some(FrankTag { key_id: key.id, epoch, tag: B64(tag) })
    }

    /// Whether `tag` is one this server made for `c` in that group, epoch and time, with a
    /// key that is current or retired less than `retention` ago.
    #[allow(clippy::too_many_arguments)]
    pub fn verify(
        &self,
        key_id: u32,
        c: &[u8],
        group: &[u8],
        epoch: u64,
        time: Millis,
        tag: &[u8],
        now: Millis,
        retention: Millis,
    ) -> bool {
        let Ok(keys) = self.keys.read() else { return false };
        let Some(key) = keys.iter().find(|k| k.id == key_id) else { return false };
        if key.retired_at.is_some_and(|r| r + retention < now) {
            return false;
        }
        self.mac(&key.key, c, group, epoch, time)
            .is_some_and(|expected| bool::from(expected.as_slice().ct_eq(tag)))
    }

    /// `HMAC-SHA256(fk, core)`: the commitment a sender puts in the authenticated data.
    pub fn commitment(&self, fk: &[u8], core: &[u8]) -> Option<Vec<u8>> {
        self.crypto.hmac(HashType::Sha2_256, fk, core).ok().map(|c| c.as_slice().to_vec())
    }

    pub fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }
}
