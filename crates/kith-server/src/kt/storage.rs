//! `akd`'s storage on the server's [`Store`]: each record is encoded here into bytes (the
//! store keeps them opaque, by akd's binary id), and value states are kept by label and epoch
//! too, for the queries akd makes by user. A write that moves the tree's head carries its new
//! epoch, and the store refuses it unless the stored head is the epoch before: two nodes can
//! never both publish one epoch, whatever their leases say.

use std::collections::HashMap;
use std::sync::Arc;

use akd::errors::StorageError;
use akd::storage::types::{DbRecord, KeyData, StorageType, ValueState, ValueStateRetrievalFlag};
use akd::storage::{Database, DbSetState, Storable};
use akd::tree_node::{TreeNode, TreeNodeWithPreviousValue};
use akd::{AkdLabel, AkdValue, Azks, NodeLabel};
use async_trait::async_trait;
use kith_store::{KtState, KtWrite, Store, StoreError};

/// akd's storage over the server's store.
#[derive(Clone)]
pub struct KtDb {
    store: Arc<dyn Store>,
}

impl KtDb {
    pub fn new(store: Arc<dyn Store>) -> Self {
        KtDb { store }
    }
}

fn failed(e: StoreError) -> StorageError {
    match e {
        StoreError::StaleEpoch => {
            StorageError::Transaction("another node published this epoch".into())
        }
        e => StorageError::Connection(e.to_string()),
    }
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Other(format!("a stored {what} record does not decode"))
}

// ---- Encoding. Fixed-width big-endian fields, lengths before variable ones; decoding reads
// every byte or refuses.

fn put_label(out: &mut Vec<u8>, l: &NodeLabel) {
    out.extend_from_slice(&l.label_val);
    out.extend_from_slice(&l.label_len.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_opt_label(out: &mut Vec<u8>, l: &Option<NodeLabel>) {
    match l {
        None => out.push(0),
        Some(l) => {
            out.push(1);
            put_label(out, l);
        }
    }
}

fn put_node(out: &mut Vec<u8>, n: &TreeNode) {
    out.extend_from_slice(&n.last_epoch.to_be_bytes());
    out.extend_from_slice(&n.min_descendant_epoch.to_be_bytes());
    put_label(out, &n.parent);
    out.push(n.node_type as u8);
    put_opt_label(out, &n.left_child);
    put_opt_label(out, &n.right_child);
    out.extend_from_slice(&n.hash.0);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn digest(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }
    fn label(&mut self) -> Option<([u8; 32], u32)> {
        Some((self.digest()?, self.u32()?))
    }
    fn opt_label(&mut self) -> Option<Option<NodeLabel>> {
        match self.u8()? {
            0 => Some(None),
            1 => {
                let (v, l) = self.label()?;
                Some(Some(NodeLabel::new(v, l)))
            }
            _ => None,
        }
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::try_from(self.u64()?).ok()?;
        Some(self.take(n)?.to_vec())
    }
    fn end<T>(self, t: T) -> Option<T> {
        self.0.is_empty().then_some(t)
    }
}

/// A tree node's fields as read back, before akd builds it.
struct NodeFields {
    last_epoch: u64,
    min_descendant_epoch: u64,
    parent: ([u8; 32], u32),
    node_type: u8,
    left: Option<NodeLabel>,
    right: Option<NodeLabel>,
    hash: [u8; 32],
}

impl Reader<'_> {
    fn node(&mut self) -> Option<NodeFields> {
        Some(NodeFields {
            last_epoch: self.u64()?,
            min_descendant_epoch: self.u64()?,
            parent: self.label()?,
            node_type: self.u8()?,
            left: self.opt_label()?,
            right: self.opt_label()?,
            hash: self.digest()?,
        })
    }
}

fn encode(record: &DbRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    match record {
        DbRecord::Azks(a) => {
            out.extend_from_slice(&a.latest_epoch.to_be_bytes());
            out.extend_from_slice(&a.num_nodes.to_be_bytes());
        }
        DbRecord::TreeNode(n) => {
            put_label(&mut out, &n.label);
            put_node(&mut out, &n.latest_node);
            match &n.previous_node {
                None => out.push(0),
                Some(p) => {
                    out.push(1);
                    put_node(&mut out, p);
                }
            }
        }
        DbRecord::ValueState(s) => encode_state(&mut out, s),
    }
    out
}

fn encode_state(out: &mut Vec<u8>, s: &ValueState) {
    put_bytes(out, &s.value.0);
    out.extend_from_slice(&s.version.to_be_bytes());
    put_label(out, &s.label);
    out.extend_from_slice(&s.epoch.to_be_bytes());
    put_bytes(out, &s.username.0);
}

fn decode_azks(data: &[u8]) -> Option<Azks> {
    let mut r = Reader(data);
    let (epoch, nodes) = (r.u64()?, r.u64()?);
    r.end(DbRecord::build_azks(epoch, nodes))
}

fn decode_node(data: &[u8]) -> Option<TreeNodeWithPreviousValue> {
    let mut r = Reader(data);
    let (label_val, label_len) = r.label()?;
    let n = r.node()?;
    let p = match r.u8()? {
        0 => None,
        1 => Some(r.node()?),
        _ => return None,
    };
    let node = DbRecord::build_tree_node_with_previous_value(
        label_val,
        label_len,
        n.last_epoch,
        n.min_descendant_epoch,
        n.parent.0,
        n.parent.1,
        n.node_type,
        n.left,
        n.right,
        n.hash,
        p.as_ref().map(|p| p.last_epoch),
        p.as_ref().map(|p| p.min_descendant_epoch),
        p.as_ref().map(|p| p.parent.0),
        p.as_ref().map(|p| p.parent.1),
        p.as_ref().map(|p| p.node_type),
        p.as_ref().and_then(|p| p.left),
        p.as_ref().and_then(|p| p.right),
        p.as_ref().map(|p| p.hash),
    );
    r.end(node)
}

fn decode_state(data: &[u8]) -> Option<ValueState> {
    let mut r = Reader(data);
    let value = r.bytes()?;
    let version = r.u64()?;
    let (label_val, label_len) = r.label()?;
    let epoch = r.u64()?;
    let username = r.bytes()?;
    r.end(DbRecord::build_user_state(username, value, version, label_len, label_val, epoch))
}

fn decode(kind: StorageType, data: &[u8]) -> Result<DbRecord, StorageError> {
    match kind {
        StorageType::Azks => decode_azks(data).map(DbRecord::Azks).ok_or_else(|| corrupt("tree")),
        StorageType::TreeNode => {
            decode_node(data).map(DbRecord::TreeNode).ok_or_else(|| corrupt("node"))
        }
        StorageType::ValueState => {
            decode_state(data).map(DbRecord::ValueState).ok_or_else(|| corrupt("value"))
        }
    }
}

/// The value a stored state holds, as the publisher compares it with an account's now.
pub fn state_value(data: &[u8]) -> Option<Vec<u8>> {
    decode_state(data).map(|s| s.value.0)
}

fn states(found: Vec<KtState>) -> Result<Vec<ValueState>, StorageError> {
    found.iter().map(|s| decode_state(&s.data).ok_or_else(|| corrupt("value"))).collect()
}

/// The state `flag` picks among a label's states (oldest first).
fn pick(states: Vec<ValueState>, flag: ValueStateRetrievalFlag) -> Option<ValueState> {
    use ValueStateRetrievalFlag::*;
    match flag {
        MaxEpoch => states.into_iter().max_by_key(|s| s.epoch),
        MinEpoch => states.into_iter().min_by_key(|s| s.epoch),
        SpecificVersion(v) => states.into_iter().find(|s| s.version == v),
        SpecificEpoch(e) => states.into_iter().find(|s| s.epoch == e),
        LeqEpoch(e) => states.into_iter().filter(|s| s.epoch <= e).max_by_key(|s| s.epoch),
    }
}

#[async_trait]
impl Database for KtDb {
    async fn set(&self, record: DbRecord) -> Result<(), StorageError> {
        self.batch_set(vec![record], DbSetState::General).await
    }

    async fn batch_set(
        &self,
        records: Vec<DbRecord>,
        _state: DbSetState,
    ) -> Result<(), StorageError> {
        let mut write = KtWrite::default();
        let mut first_head = false;
        for record in &records {
            let id = record.get_full_binary_id();
            let data = encode(record);
            match record {
                DbRecord::Azks(a) => {
                    write.head = Some(a.latest_epoch);
                    first_head = a.latest_epoch == 0;
                }
                DbRecord::ValueState(s) => write.states.push(KtState {
                    label: s.username.0.clone(),
                    epoch: s.epoch,
                    version: s.version,
                    data: data.clone(),
                }),
                DbRecord::TreeNode(_) => {}
            }
            write.records.push((id, data));
        }
        match self.store.kt_write(write).await {
            // Two nodes starting at once both make the empty tree: the second is too late,
            // and the tree is there, which is all it wanted.
            Err(StoreError::StaleEpoch) if first_head && records.len() == 1 => Ok(()),
            done => done.map_err(failed),
        }
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, StorageError> {
        let bin = St::get_full_binary_key_id(id);
        let found = self.store.kt_records(std::slice::from_ref(&bin)).await.map_err(failed)?;
        match found.into_iter().next() {
            Some((_, data)) => decode(St::data_type(), &data),
            None => Err(StorageError::NotFound(format!("{:?}", St::data_type()))),
        }
    }

    async fn batch_get<St: Storable>(
        &self,
        ids: &[St::StorageKey],
    ) -> Result<Vec<DbRecord>, StorageError> {
        let bins: Vec<Vec<u8>> = ids.iter().map(St::get_full_binary_key_id).collect();
        let mut out = Vec::with_capacity(bins.len());
        for chunk in bins.chunks(1000) {
            for (_, data) in self.store.kt_records(chunk).await.map_err(failed)? {
                out.push(decode(St::data_type(), &data)?);
            }
        }
        Ok(out)
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, StorageError> {
        let found = states(self.store.kt_states(&username.0).await.map_err(failed)?)?;
        if found.is_empty() {
            return Err(StorageError::NotFound(format!("no states of {username:?}")));
        }
        Ok(KeyData { states: found })
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, StorageError> {
        let found = states(self.store.kt_states(&username.0).await.map_err(failed)?)?;
        pick(found, flag).ok_or_else(|| StorageError::NotFound(format!("{username:?}")))
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        let labels: Vec<Vec<u8>> = usernames.iter().map(|u| u.0.clone()).collect();
        let latest = match flag {
            ValueStateRetrievalFlag::MaxEpoch => Some(None),
            ValueStateRetrievalFlag::LeqEpoch(e) => Some(Some(e)),
            _ => None,
        };
        let mut out = HashMap::with_capacity(labels.len());
        if let Some(max) = latest {
            for chunk in labels.chunks(1000) {
                let found = self.store.kt_latest_states(chunk, max).await.map_err(failed)?;
                for s in states(found)? {
                    out.insert(s.username.clone(), (s.version, s.value.clone()));
                }
            }
        } else {
            for u in usernames {
                if let Ok(s) = self.get_user_state(u, flag).await {
                    out.insert(u.clone(), (s.version, s.value));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let label = NodeLabel::new([3; 32], 17);
        let node = DbRecord::build_tree_node_with_previous_value(
            [3; 32],
            17,
            5,
            2,
            [4; 32],
            16,
            3,
            Some(NodeLabel::new([5; 32], 18)),
            None,
            [6; 32],
            Some(4),
            Some(1),
            Some([4; 32]),
            Some(16),
            Some(3),
            None,
            Some(NodeLabel::new([7; 32], 18)),
            Some([8; 32]),
        );
        assert_eq!(node.label, label);
        let node = DbRecord::TreeNode(node);
        assert_eq!(decode(StorageType::TreeNode, &encode(&node)).unwrap(), node);
        let azks = DbRecord::Azks(DbRecord::build_azks(9, 1000));
        assert_eq!(decode(StorageType::Azks, &encode(&azks)).unwrap(), azks);
        let state = DbRecord::ValueState(DbRecord::build_user_state(
            b"ana".to_vec(),
            vec![1, 2, 3],
            2,
            256,
            [9; 32],
            7,
        ));
        let bytes = encode(&state);
        assert_eq!(decode(StorageType::ValueState, &bytes).unwrap(), state);
        // Decoding is total: a byte short or long is refused, never a panic.
        for kind in [StorageType::Azks, StorageType::TreeNode, StorageType::ValueState] {
            assert!(decode(kind, &bytes[..bytes.len() - 1]).is_err());
            assert!(decode(kind, &[bytes.as_slice(), &[0]].concat()).is_err());
        }
    }
}
