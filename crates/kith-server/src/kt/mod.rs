//! Key transparency (DESIGN.md, "Key transparency"): an `akd` directory of every account's
//! keys (username → [`kith_proto::kt::directory_value`]: the account key and a digest of its
//! devices), published in epochs and kept in the server's own store ([`storage::KtDb`]).
//!
//! - The VRF key and the root-signing key are made by the first node to start and kept in the
//!   store; every node loads the same pair.
//! - Changes mark accounts ([`Kt::changed`]); every `kt_publish_interval` the node holding the
//!   publisher's lease publishes the marked accounts whose value changed as one epoch, and
//!   signs its root. A node that takes the lease checks every account once (a mark lost to a
//!   crash costs one extra check, never a missed change).
//! - Any node answers lookups, history and audit proofs from the store (no cache, so never
//!   behind the publisher).

pub mod storage;

use std::sync::Arc;

use akd::Directory;
use akd::append_only_zks::AzksParallelismConfig;
use akd::ecvrf::{VRFKeyStorage, VrfError};
use akd::storage::StorageManager;
use akd::{AkdLabel, AkdValue, EpochHash};
use async_trait::async_trait;
use ed25519_dalek::SigningKey;
use kith_proto::B64;
use kith_proto::kt::config::Config;
use kith_proto::kt::{KtAudit, KtKeys, KtRoot, KtRoots, directory_value};
use kith_store::{KtRootRecord, Millis, SecretBytes, Store, StoreError};
use protobuf::Message;

use crate::state::AppState;

/// How long a publisher's lease lasts without renewal; another node takes over after it.
const LEASE_MS: Millis = 8_000;
/// Accounts published in one epoch at most.
const BATCH: u32 = 10_000;
/// Epochs one audit answer covers at most.
pub const MAX_AUDIT_EPOCHS: u64 = 64;
/// Proof bytes one audit answer carries at most (it may end before `to`).
const MAX_AUDIT_BYTES: usize = 4 << 20;
/// Roots one answer lists at most.
pub const MAX_ROOTS: u32 = 1000;

/// The directory's VRF key, loaded once from the store.
#[derive(Clone)]
pub struct KtVrf(Arc<SecretBytes>);

#[async_trait]
impl VRFKeyStorage for KtVrf {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Ok(self.0.expose().to_vec())
    }
}

type Dir = Directory<Config, storage::KtDb, KtVrf>;

/// Why a directory request failed.
#[derive(Debug, thiserror::Error)]
pub enum KtError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not in the directory (yet): no such account, or one the publisher has not reached.
    #[error("{0} is not in the key directory yet")]
    NotPublished(String),
    #[error("the key directory has no epoch {0} yet")]
    NoEpoch(u64),
    #[error("the key directory failed: {0}")]
    Directory(String),
}

/// The server's directory.
pub struct Kt {
    store: Arc<dyn Store>,
    dir: Dir,
    signing: SigningKey,
    keys: KtKeys,
    node: String,
    /// Whether this node has held the publisher's lease since it started.
    led: std::sync::atomic::AtomicBool,
}

fn random32() -> Result<[u8; 32], StoreError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| StoreError::Backend(format!("no randomness: {e}")))?;
    Ok(b)
}

fn akd_failed(e: impl std::fmt::Display) -> KtError {
    KtError::Directory(e.to_string())
}

impl Kt {
    /// Loads the directory's keys (making them if this is the first node ever to start) and
    /// its tree (making the empty one likewise).
    pub async fn start(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let made = (random32()?.to_vec(), random32()?.to_vec());
        let (vrf, signing) = store.kt_keys(made).await?;
        let signing =
            <[u8; 32]>::try_from(signing.expose()).map(|b| SigningKey::from_bytes(&b)).map_err(
                |_| StoreError::Backend("the stored directory signing key is not one".into()),
            )?;
        let vrf = KtVrf(Arc::new(vrf));
        let vrf_public = vrf
            .get_vrf_public_key()
            .await
            .map_err(|e| StoreError::Backend(format!("the stored VRF key is not one: {e}")))?;
        let manager = StorageManager::new_no_cache(storage::KtDb::new(store.clone()));
        let dir = Dir::new(manager, vrf, AzksParallelismConfig::disabled())
            .await
            .map_err(|e| StoreError::Backend(format!("the key directory cannot start: {e}")))?;
        let keys = KtKeys {
            vrf_public_key: B64(vrf_public.as_bytes().to_vec()),
            signing_key: B64(signing.verifying_key().to_bytes().to_vec()),
        };
        let node = hex::encode(random32()?);
        Ok(Kt { store, dir, signing, keys, node, led: Default::default() })
    }

    pub fn keys(&self) -> KtKeys {
        self.keys.clone()
    }

    /// Marks accounts whose keys or devices changed for the next epoch.
    pub async fn changed(&self, usernames: &[String]) {
        if let Err(e) = self.store.kt_mark(usernames).await {
            // The next publisher to start checks every account; until then this one waits.
            tracing::warn!(error = %e, "could not mark an account for the key directory");
        }
    }

    /// A signed root for `epoch` and its hash (signed now if this node is the first to see it:
    /// Ed25519 signs deterministically, so every node signs it alike).
    fn signed(&self, EpochHash(epoch, root): EpochHash, now: Millis) -> KtRootRecord {
        KtRootRecord {
            epoch,
            root: root.to_vec(),
            signature: kith_proto::kt::sign_root(&self.signing, epoch, &root),
            published_at: now,
        }
    }

    /// Records the current epoch's root if it is not yet (a publisher that stopped between
    /// its epoch and the record, or the empty tree's epoch 0).
    async fn record_current(&self, now: Millis) -> Result<KtRootRecord, KtError> {
        let current = self.dir.get_epoch_hash().await.map_err(akd_failed)?;
        match self.store.kt_latest_root().await? {
            Some(r) if r.epoch >= current.0 => Ok(r),
            _ => {
                let rec = self.signed(current, now);
                self.store.add_kt_root(rec.clone()).await?;
                Ok(rec)
            }
        }
    }

    /// One publisher's turn: if this node holds (or takes) the lease, publishes the marked
    /// accounts whose value changed. Returns the epoch published, if any.
    pub async fn publish_once(&self, now: Millis) -> Result<Option<u64>, KtError> {
        let held = self.store.kt_lead(&self.node, now, now + LEASE_MS).await?;
        if !held {
            return Ok(None);
        }
        let latest = self.record_current(now).await?;
        // The first turn of a new publisher: every account once.
        if latest.epoch == 0 || self.node_is_new() {
            self.store.kt_mark_all().await?;
        }
        let names = self.store.kt_take_dirty(BATCH).await?;
        if names.is_empty() {
            return Ok(None);
        }
        match self.publish(&names, now).await {
            Ok(done) => Ok(done.map(|r| r.epoch)),
            Err(e) => {
                self.store.kt_mark(&names).await?;
                Err(e)
            }
        }
    }

    /// Gives up the publisher's lease (at shutdown), so another node takes over at once.
    pub async fn step_down(&self, now: Millis) {
        if let Err(e) = self.store.kt_lead(&self.node, now, 0).await {
            tracing::warn!(error = %e, "could not give up the key directory's lease");
        }
    }

    fn node_is_new(&self) -> bool {
        !self.led.swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    async fn publish(
        &self,
        names: &[String],
        now: Millis,
    ) -> Result<Option<KtRootRecord>, KtError> {
        let mut values = Vec::with_capacity(names.len());
        for name in names {
            let Some(acc) = self.store.account_devices(name).await? else { continue };
            let devices: Vec<(u64, &[u8])> =
                acc.devices.iter().map(|d| (d.device_id, d.credential_key.as_slice())).collect();
            values.push((name.clone(), directory_value(acc.account_key.as_deref(), &devices)));
        }
        self.publish_values(values, now).await
    }

    /// Publishes these (username, value) pairs, those that changed, as one epoch, and records
    /// its signed root. The publisher's lease is the caller's to hold (`kith-bench kt` calls
    /// this directly on a directory of its own).
    pub async fn publish_values(
        &self,
        values: Vec<(String, Vec<u8>)>,
        now: Millis,
    ) -> Result<Option<KtRootRecord>, KtError> {
        let labels: Vec<Vec<u8>> = values.iter().map(|(n, _)| n.as_bytes().to_vec()).collect();
        let mut published = std::collections::HashMap::new();
        for chunk in labels.chunks(1000) {
            for s in self.store.kt_latest_states(chunk, None).await? {
                published.insert(s.label.clone(), s.data);
            }
        }
        let updates: Vec<(AkdLabel, AkdValue)> = values
            .into_iter()
            .filter(|(n, v)| {
                published
                    .get(n.as_bytes())
                    .is_none_or(|data| storage::state_value(data).as_ref() != Some(v))
            })
            .map(|(n, v)| (AkdLabel(n.into_bytes()), AkdValue(v)))
            .collect();
        if updates.is_empty() {
            return Ok(None);
        }
        let count = updates.len();
        let hash = self.dir.publish(updates).await.map_err(akd_failed)?;
        let rec = self.signed(hash, now);
        self.store.add_kt_root(rec.clone()).await?;
        tracing::info!(epoch = rec.epoch, accounts = count, "published a key directory epoch");
        Ok(Some(rec))
    }

    /// The signed root `rec` on the wire.
    pub fn root(rec: &KtRootRecord) -> KtRoot {
        KtRoot {
            epoch: rec.epoch,
            root: B64(rec.root.clone()),
            signature: B64(rec.signature.clone()),
            published_at: rec.published_at,
        }
    }

    /// Roots from `from` on (the current epoch's recorded first, if its publisher has not yet:
    /// a lookup answered at it must find its root here).
    pub async fn roots(&self, from: u64, now: Millis) -> Result<KtRoots, KtError> {
        self.record_current(now).await?;
        let roots = self.store.kt_roots(from, MAX_ROOTS).await?;
        let latest = self.store.kt_latest_root().await?.map_or(0, |r| r.epoch);
        Ok(KtRoots { roots: roots.iter().map(Kt::root).collect(), latest })
    }

    /// `username`'s value at the latest epoch, with its lookup proof.
    pub async fn lookup(&self, username: &str, now: Millis) -> Result<(KtRoot, Vec<u8>), KtError> {
        let (proof, hash) =
            self.dir.lookup(AkdLabel(username.as_bytes().to_vec())).await.map_err(|e| match e {
                akd::errors::AkdError::Storage(akd::errors::StorageError::NotFound(_)) => {
                    KtError::NotPublished(username.to_string())
                }
                e => akd_failed(e),
            })?;
        let bytes = akd::proto::specs::types::LookupProof::from(&proof)
            .write_to_bytes()
            .map_err(akd_failed)?;
        Ok((Kt::root(&self.signed(hash, now)), bytes))
    }

    /// Every published value of `username`, with its history proof.
    pub async fn history(&self, username: &str, now: Millis) -> Result<(KtRoot, Vec<u8>), KtError> {
        let (proof, hash) = self
            .dir
            .key_history(&AkdLabel(username.as_bytes().to_vec()), akd::HistoryParams::Complete)
            .await
            .map_err(|e| match e {
                akd::errors::AkdError::Storage(akd::errors::StorageError::NotFound(_)) => {
                    KtError::NotPublished(username.to_string())
                }
                e => akd_failed(e),
            })?;
        let bytes = akd::proto::specs::types::HistoryProof::from(&proof)
            .write_to_bytes()
            .map_err(akd_failed)?;
        Ok((Kt::root(&self.signed(hash, now)), bytes))
    }

    /// The append-only proofs from epoch `from` to `to` (at most [`MAX_AUDIT_EPOCHS`] apart).
    pub async fn audit(&self, from: u64, to: u64) -> Result<KtAudit, KtError> {
        let latest = self.dir.get_epoch_hash().await.map_err(akd_failed)?.0;
        if to > latest {
            return Err(KtError::NoEpoch(to));
        }
        let to = to.min(from.saturating_add(MAX_AUDIT_EPOCHS));
        if from >= to {
            return Ok(KtAudit { from, to: from, proofs: vec![] });
        }
        let proof = self.dir.audit(from, to).await.map_err(akd_failed)?;
        let mut proofs = Vec::with_capacity(proof.proofs.len());
        let mut bytes_so_far = 0;
        for single in &proof.proofs {
            let bytes = akd::proto::specs::types::SingleAppendOnlyProof::from(single)
                .write_to_bytes()
                .map_err(akd_failed)?;
            bytes_so_far += bytes.len();
            proofs.push(B64(bytes));
            // An answer stays a few MiB at most; the auditor asks on from where it ended.
            if bytes_so_far >= MAX_AUDIT_BYTES {
                break;
            }
        }
        let to = from + proofs.len() as u64;
        Ok(KtAudit { from, to, proofs })
    }
}

/// Publishes every `kt_publish_interval` until shutdown.
pub async fn publish_forever(state: AppState) {
    let mut shutdown = state.shutdown_signal();
    let mut tick = tokio::time::interval(state.config.kt_publish_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = state.kt.publish_once(state.now()).await {
                    tracing::warn!(error = %e, "publishing the key directory failed; will retry");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
