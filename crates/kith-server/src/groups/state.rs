//! One conversation's public MLS state, as the server keeps it.

use std::collections::HashMap;

use kith_proto::{GroupMeta, group::GROUP_META_EXTENSION};
use kith_store::AppliedHandshake;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::MemoryStorage;

use super::error::{GroupError, GroupResult as ApiResult};
use crate::mls::CIPHERSUITE;

/// A member leaf: its index, the username its credential names and its signature key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub index: u32,
    pub username: String,
    pub signature_key: Vec<u8>,
}

/// Where a server before schema 11 kept the last handshake it applied from each device,
/// beside OpenMLS's values in the blob; read for what such a server applied, never written:
/// the store keeps them now ([`kith_store::AppliedHandshake`]).
const LEGACY_APPLIED_KEY: &[u8] = b"kith/applied-handshakes";
const LEGACY_APPLIED_LEN: usize = 8 + 32 + 8 + 4;

/// What this device's request with these bytes (their SHA-256) got, if the server applied
/// it: the store's record, or the group state's from a server that kept it there (`loaded`,
/// when the caller holds the state already; read here otherwise).
pub async fn applied_by(
    state: &crate::state::AppState,
    conversation: &kith_proto::ConversationId,
    device: u64,
    digest: &[u8; 32],
    loaded: Option<&Tracked>,
) -> ApiResult<Option<AppliedHandshake>> {
    let id = conversation.as_bytes();
    if let Some(a) = state.store.applied_handshake(id, device).await? {
        return Ok((a.digest == digest).then_some(a));
    }
    let legacy = |t: &Tracked| {
        t.legacy_applied().into_iter().find(|a| a.device == device && a.digest == digest)
    };
    if let Some(tracked) = loaded {
        return Ok(legacy(tracked));
    }
    let Some(stored) = state.store.group_state(id).await? else { return Ok(None) };
    Ok(legacy(&Tracked::load(id, &stored.state)?))
}

/// A `PublicGroup` with the storage it lives in.
pub struct Tracked {
    pub group: PublicGroup,
    pub storage: MemoryStorage,
}

fn internal(why: &'static str) -> GroupError {
    GroupError::Internal(why)
}

impl Tracked {
    /// Starts following a group from the creator's GroupInfo and ratchet tree, verifying both.
    pub fn bootstrap(
        provider: &openmls_rust_crypto::OpenMlsRustCrypto,
        conversation: &[u8],
        group_info: &[u8],
        ratchet_tree: &[u8],
    ) -> ApiResult<Self> {
        let info = MlsMessageIn::tls_deserialize_exact(group_info)
            .map_err(|_| GroupError::GroupInfoNotMls)?;
        let MlsMessageBodyIn::GroupInfo(info) = info.extract() else {
            return Err(GroupError::NotGroupInfo);
        };
        let tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree)
            .map_err(|_| GroupError::TreeDoesNotParse)?;
        let storage = MemoryStorage::default();
        let (group, _) = PublicGroup::from_external(
            provider.crypto(),
            &storage,
            tree,
            info,
            ProposalStore::new(),
        )
        .map_err(|e| {
            tracing::debug!(error = %e, "a group state does not verify");
            GroupError::StateDoesNotVerify
        })?;
        if group.group_id().as_slice() != conversation {
            return Err(GroupError::GroupInfoOtherConversation);
        }
        if group.ciphersuite() != CIPHERSUITE {
            return Err(GroupError::Ciphersuite);
        }
        Ok(Tracked { group, storage })
    }

    /// Loads the state saved by [`Tracked::save`].
    pub fn load(conversation: &[u8], blob: &[u8]) -> ApiResult<Self> {
        let values = decode(blob).ok_or_else(|| internal("stored group state does not decode"))?;
        let storage = MemoryStorage::default();
        match storage.values.write() {
            Ok(mut v) => *v = values,
            Err(_) => return Err(internal("group state lock poisoned")),
        }
        let group = PublicGroup::load(&storage, &GroupId::from_slice(conversation))
            .map_err(|_| internal("stored group state does not load"))?
            .ok_or_else(|| internal("stored group state is empty"))?;
        Ok(Tracked { group, storage })
    }

    pub fn save(&self) -> ApiResult<Vec<u8>> {
        let values =
            self.storage.values.read().map_err(|_| internal("group state lock poisoned"))?;
        Ok(encode(&values))
    }

    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// The handshakes a server before schema 11 kept in the state (see [`applied_by`]).
    fn legacy_applied(&self) -> Vec<AppliedHandshake> {
        let Ok(values) = self.storage.values.read() else { return Vec::new() };
        let Some(kept) = values.get(LEGACY_APPLIED_KEY) else { return Vec::new() };
        kept.chunks_exact(LEGACY_APPLIED_LEN)
            .filter_map(|r| {
                let (device, r) = r.split_first_chunk::<8>()?;
                let (digest, r) = r.split_first_chunk::<32>()?;
                let (epoch, r) = r.split_first_chunk::<8>()?;
                let members = r.first_chunk::<4>()?;
                Some(AppliedHandshake {
                    device: u64::from_be_bytes(*device),
                    digest: digest.to_vec(),
                    epoch: u64::from_be_bytes(*epoch),
                    members: u32::from_be_bytes(*members),
                })
            })
            .collect()
    }

    /// The Kith extension of the group context: conversation type and admins.
    pub fn meta(&self) -> Option<GroupMeta> {
        meta_of(self.group.group_context().extensions())
    }

    pub fn leaves(&self) -> Vec<Leaf> {
        self.group
            .members()
            .map(|m| Leaf {
                index: m.index.u32(),
                username: identity(&m.credential).unwrap_or_default(),
                signature_key: m.signature_key,
            })
            .collect()
    }

    pub fn leaf(&self, index: LeafNodeIndex) -> Option<Leaf> {
        self.group.leaf(index).map(|l| Leaf {
            index: index.u32(),
            username: identity(l.credential()).unwrap_or_default(),
            signature_key: l.signature_key().as_slice().to_vec(),
        })
    }
}

pub fn meta_of(extensions: &Extensions<GroupContext>) -> Option<GroupMeta> {
    extensions.unknown(GROUP_META_EXTENSION).and_then(|e| GroupMeta::decode(&e.0))
}

/// The username a basic credential names.
pub fn identity(credential: &Credential) -> Option<String> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    String::from_utf8(basic.identity().to_vec()).ok()
}

/// Entries sorted by key, each as `u32 BE length ‖ key ‖ u32 BE length ‖ value`.
fn encode(values: &HashMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
    let mut entries: Vec<_> = values.iter().collect();
    entries.sort();
    let mut out = Vec::new();
    for (k, v) in entries {
        for part in [k, v] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The inverse of [`encode`]; `None` unless every byte is consumed.
fn decode(mut bytes: &[u8]) -> Option<HashMap<Vec<u8>, Vec<u8>>> {
    fn part<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        *bytes = rest;
        Some(value)
    }
    let mut map = HashMap::new();
    while !bytes.is_empty() {
        let k = part(&mut bytes)?.to_vec();
        let v = part(&mut bytes)?.to_vec();
        map.insert(k, v);
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_codec_is_total() {
        let mut m = HashMap::new();
        m.insert(b"k1".to_vec(), vec![1, 2, 3]);
        m.insert(vec![], vec![]);
        let bytes = encode(&m);
        assert_eq!(decode(&bytes), Some(m));
        for cut in 0..bytes.len() {
            // Every truncation either fails or decodes a prefix of whole entries; none panics.
            let _ = decode(&bytes[..cut]);
        }
        assert_eq!(decode(&[0, 0, 0, 9, 1]), None);
        assert_eq!(decode(&[]), Some(HashMap::new()));
    }
}
