//! Message franking on the server.
//!
//! For each application message it delivers to a device, the server computes
//! `tag = HMAC-SHA256(K_server, c ‖ group_id ‖ epoch ‖ server_time ‖ sender device ‖ recipient
//! device)` from the commitment `c` in the message's MLS authenticated data, and hands it out
//! with the ciphertext. It stores nothing per message: the tag is recomputed from the stored
//! ciphertext whenever it is delivered. A report brings back the message's body, franking key,
//! signature and tag; the server checks that the tag is one it made for the reporting device
//! (so it delivered `c` from that sender's device to the reporter, in that group, epoch and
//! time), that `c` commits to that body under that key, and that the body was signed by the
//! sender's device. Binding sender and recipient means a member who re-sends someone else's
//! signed message gets a tag naming *its own* device, which no report can pass off as the
//! original sender's, and a tag handed to one member cannot be reported by another.
//!
//! `K_server` is generated at first start and kept in the store; rotating it retires the old
//! key, which still verifies for the retention period (no message it tagged is older).

use std::collections::VecDeque;
use std::sync::{Mutex, RwLock};

use std::sync::Arc;

use kith_proto::{B64, EntryKind, FrankTag, QueueEntry};
use kith_store::{DeviceId, FrankingKey, MessageId, Millis, Store, StoreError, StoredEntry};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use subtle::ConstantTimeEq;

/// One delivery of an application message, as a tag binds it.
#[derive(Clone, Copy, Debug)]
pub struct Delivered<'a> {
    pub commitment: &'a [u8],
    pub group: &'a [u8],
    pub epoch: u64,
    /// The server time the message was accepted at.
    pub time: Millis,
    pub sender_device: DeviceId,
    pub recipient_device: DeviceId,
}

pub struct Franking {
    /// A std lock: read on every delivery, written only on (re)load; never held across await.
    keys: RwLock<Vec<FrankingKey>>,
    crypto: RustCrypto,
    /// The commitments of recently delivered messages: a message to a group of 1000 is parsed
    /// once, not once per recipient. A std mutex, held for a lookup or an insert.
    recent: Mutex<VecDeque<(MessageId, Option<Committed>)>>,
}

/// What a tag is computed from, read once per message: its commitment, epoch and group.
pub type Committed = Arc<(Vec<u8>, u64, Vec<u8>)>;

/// Commitments remembered for messages being delivered to many devices at once.
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
    committed_parts(&pm).map(|c| (*c).clone())
}

/// The same, from a message already parsed (the send route's, so a posted message is parsed
/// once: see [`Franking::remember`]).
pub fn committed_parts(pm: &PrivateMessageIn) -> Option<Committed> {
    (pm.aad().len() == 32).then(|| {
        Arc::new((pm.aad().to_vec(), pm.epoch().as_u64(), pm.group_id().as_slice().to_vec()))
    })
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

    fn mac(&self, key: &[u8], d: &Delivered<'_>) -> Option<Vec<u8>> {
        let input = [
            d.commitment,
            d.group,
            &d.epoch.to_be_bytes(),
            &d.time.to_be_bytes(),
            &d.sender_device.to_be_bytes(),
            &d.recipient_device.to_be_bytes(),
        ]
        .concat();
        self.crypto.hmac(HashType::Sha2_256, key, &input).ok().map(|t| t.as_slice().to_vec())
    }

    /// The tag of an application message delivered to `recipient`, if it has a commitment.
    pub fn tag(&self, entry: &StoredEntry, recipient: DeviceId) -> Option<FrankTag> {
        self.tag_parts(
            entry.kind,
            entry.message_id,
            &entry.data,
            entry.created_at,
            entry.sender_device,
            recipient,
        )
    }

    /// The same for an entry already in its wire form (pushed to a connection).
    pub fn tag_wire(&self, entry: &QueueEntry, recipient: DeviceId) -> Option<FrankTag> {
        self.tag_parts(
            entry.kind,
            entry.message_id,
            &entry.data.0,
            entry.server_time,
            entry.sender_device,
            recipient,
        )
    }

    fn tag_parts(
        &self,
        kind: EntryKind,
        message_id: MessageId,
        data: &[u8],
        time: Millis,
        sender_device: DeviceId,
        recipient_device: DeviceId,
    ) -> Option<FrankTag> {
        if kind != EntryKind::Message {
            return None;
        }
        let committed = self.committed(message_id, data)?;
        let (commitment, epoch, group) = (&committed.0, committed.1, &committed.2);
        let keys = self.keys.read().ok()?;
        let key = keys.iter().rev().find(|k| k.retired_at.is_none())?;
        let delivered =
            Delivered { commitment, group, epoch, time, sender_device, recipient_device };
        let tag = self.mac(key.key.expose(), &delivered)?;
        Some(FrankTag { key_id: key.id, epoch, tag: B64(tag) })
    }

    /// Keeps what the send route read of a message it just stored, so tagging its deliveries
    /// does not parse it again.
    pub fn remember(&self, message_id: MessageId, committed: Option<Committed>) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_TAGS {
                recent.pop_front();
            }
            recent.push_back((message_id, committed));
        }
    }

    fn committed(&self, message_id: MessageId, data: &[u8]) -> Option<Committed> {
        if let Ok(recent) = self.recent.lock()
            && let Some((_, c)) = recent.iter().find(|(id, _)| *id == message_id)
        {
            return c.clone();
        }
        let committed = commitment_of(data).map(Arc::new);
        self.remember(message_id, committed.clone());
        committed
    }

    /// Whether `tag` is one this server made for that delivery, with a key that is current or
    /// retired less than `retention` ago.
    pub fn verify(
        &self,
        key_id: u32,
        delivered: &Delivered<'_>,
        tag: &[u8],
        now: Millis,
        retention: Millis,
    ) -> bool {
        let Ok(keys) = self.keys.read() else { return false };
        let Some(key) = keys.iter().find(|k| k.id == key_id) else { return false };
        if key.retired_at.is_some_and(|r| r + retention < now) {
            return false;
        }
        self.mac(key.key.expose(), delivered)
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
