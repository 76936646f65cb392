//! A hostile client: what a modified client built directly on OpenMLS could send, from a real
//! member's state — encrypted handshakes, removes and admin changes by non-admins,
//! signature-key changes, replays, commits for the wrong group or epoch — and raw posts of
//! it to `kithd`, so each rule can be tested against a client that does not follow it.
//!
//! Nothing built here is merged into the member's own state: each builder leaves the group
//! as it found it (its pending commit cleared), so the same user can go on as a normal client.

use kith_proto::group::GROUP_META_EXTENSION;
use kith_proto::{B64, GroupMeta, HandshakeRequest, SendMessage};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use serde_json::Value;

use crate::TestUser;

/// How a handshake travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// An MLS `PublicMessage`, as Kith clients send handshakes.
    Public,
    /// An MLS `PrivateMessage`: encrypted, so the server cannot see what it changes.
    Private,
}

/// What `kithd` answered a raw post.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The error code, if it was a refusal.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

/// A commit and the Welcome that goes with it (when it adds someone).
#[derive(Clone, Debug)]
pub struct Built {
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
}

/// The hostile side of a [`TestUser`].
pub struct Hostile<'a> {
    user: &'a TestUser,
}

impl TestUser {
    pub fn hostile(&self) -> Hostile<'_> {
        Hostile { user: self }
    }
}

fn policy_for(wire: Wire) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(match wire {
            Wire::Public => PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
            Wire::Private => MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY,
        })
        .use_ratchet_tree_extension(true)
        .max_past_epochs(3)
        .build()
}

fn bytes(m: &MlsMessageOut) -> Vec<u8> {
    m.tls_serialize_detached().expect("an MLS message serializes")
}

impl Hostile<'_> {
    /// Builds a commit with `make` in the wire format asked for, then forgets it locally.
    fn commit(
        &self,
        conversation: &str,
        wire: Wire,
        make: impl FnOnce(
            &mut MlsGroup,
            &kith_client::raw::Provider<'_>,
            &SignatureKeyPair,
        ) -> (MlsMessageOut, Option<MlsMessageOut>),
    ) -> Built {
        self.user
            .raw_mls(conversation, |group, provider, signer| {
                let saved = group.configuration().clone();
                group.set_configuration(provider.storage(), &policy_for(wire)).unwrap();
                let (commit, welcome) = make(group, provider, signer);
                group.clear_pending_commit(provider.storage()).unwrap();
                group.set_configuration(provider.storage(), &saved).unwrap();
                Built { commit: bytes(&commit), welcome: welcome.as_ref().map(bytes) }
            })
            .unwrap()
    }

    /// The leaf indices of `username`'s devices in the group.
    pub fn leaves_of(&self, conversation: &str, username: &str) -> Vec<LeafNodeIndex> {
        self.user
            .raw_mls(conversation, |group, _, _| {
                group
                    .members()
                    .filter(|m| {
                        BasicCredential::try_from(m.credential.clone())
                            .is_ok_and(|c| c.identity() == username.as_bytes())
                    })
                    .map(|m| m.index)
                    .collect()
            })
            .unwrap()
    }

    /// A commit removing every device of `victim`, whoever this user is.
    pub fn remove(&self, conversation: &str, victim: &str, wire: Wire) -> Built {
        let leaves = self.leaves_of(conversation, victim);
        self.commit(conversation, wire, |group, provider, signer| {
            let (c, w, _) = group.remove_members(provider, signer, &leaves).unwrap();
            (c, w)
        })
    }

    /// A commit replacing the group's Kith extension (its type and admin list).
    pub fn set_meta(&self, conversation: &str, meta: &GroupMeta, wire: Wire) -> Built {
        self.set_meta_with(conversation, meta, Vec::new(), wire)
    }

    /// The same, with `aad` as the commit's authenticated data (where settings travel sealed).
    pub fn set_meta_with(
        &self,
        conversation: &str,
        meta: &GroupMeta,
        aad: Vec<u8>,
        wire: Wire,
    ) -> Built {
        let kith = ExtensionType::Unknown(GROUP_META_EXTENSION);
        let extensions = Extensions::from_vec(vec![
            Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(&[kith], &[], &[])),
            Extension::Unknown(GROUP_META_EXTENSION, UnknownExtension(meta.encode())),
        ])
        .unwrap();
        self.commit(conversation, wire, |group, provider, signer| {
            group.set_aad(aad);
            let (c, w, _) =
                group.update_group_context_extensions(provider, extensions, signer).unwrap();
            (c, w)
        })
    }

    /// The Kith extension of the group's current context, as this member holds it.
    pub fn meta(&self, conversation: &str) -> GroupMeta {
        self.user
            .raw_mls(conversation, |group, _, _| {
                group
                    .extensions()
                    .unknown(GROUP_META_EXTENSION)
                    .and_then(|e| GroupMeta::decode(&e.0))
                    .unwrap()
            })
            .unwrap()
    }

    /// A commit that swaps this device's signature key for a fresh one the server never saw.
    pub fn new_signature_key(&self, conversation: &str, wire: Wire) -> Built {
        let me = self.user.profile().unwrap().username.clone();
        let fresh = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        self.new_leaf(conversation, wire, &me, &fresh)
    }

    /// A commit that hands this member's seat to `other` (another account the attacker holds):
    /// its new path leaf names `other` with `other`'s real device key — no add in sight.
    pub fn hand_seat_to(&self, conversation: &str, other: &TestUser) -> Built {
        let name = other.profile().unwrap().username.clone();
        self.new_leaf(conversation, Wire::Public, &name, &other.raw_signer().unwrap())
    }

    /// A self-update commit whose new leaf names `account` with `key`'s public key.
    fn new_leaf(
        &self,
        conversation: &str,
        wire: Wire,
        account: &str,
        key: &SignatureKeyPair,
    ) -> Built {
        self.commit(conversation, wire, |group, provider, signer| {
            let credential = CredentialWithKey {
                credential: BasicCredential::new(account.as_bytes().to_vec()).into(),
                signature_key: key.public().into(),
            };
            let params =
                LeafNodeParameters::builder().with_credential_with_key(credential.clone()).build();
            let bundle = group
                .self_update_with_new_signer(
                    provider,
                    signer,
                    NewSignerBundle { signer: key, credential_with_key: credential },
                    params,
                )
                .unwrap();
            let (c, _, _) = bundle.into_contents();
            (c, None)
        })
    }

    /// Claims `username`'s KeyPackages (as anyone may) and builds a commit adding them, with
    /// its Welcome, whoever this user is.
    pub async fn add(&self, conversation: &str, username: &str) -> Built {
        let claimed = self
            .post(&format!("/v1/accounts/{username}/key-packages/claim"), serde_json::json!({}))
            .await;
        assert_eq!(claimed.status, 200, "{:?}", claimed.body);
        let claimed: kith_proto::ClaimResponse = serde_json::from_value(claimed.body).unwrap();
        self.commit(conversation, Wire::Public, |group, provider, signer| {
            use openmls::prelude::tls_codec::Deserialize as _;
            let kps: Vec<KeyPackage> = claimed
                .key_packages
                .iter()
                .map(|c| {
                    KeyPackageIn::tls_deserialize_exact(&c.key_package.0)
                        .unwrap()
                        .validate(provider.crypto(), ProtocolVersion::Mls10)
                        .unwrap()
                })
                .collect();
            let (c, w, _) = group.add_members(provider, signer, &kps).unwrap();
            (c, Some(w))
        })
    }

    /// This member's request to leave, with its membership tag (the MAC the server cannot
    /// check, having no group secrets) spoiled: the server takes it, members' clients cannot.
    pub fn leave_with_bad_tag(&self, conversation: &str) -> Built {
        let mut commit = self
            .user
            .raw_mls(conversation, |group, provider, signer| {
                let saved = group.configuration().clone();
                group.set_configuration(provider.storage(), &policy_for(Wire::Public)).unwrap();
                let proposal = group.leave_group(provider, signer).unwrap();
                group.set_configuration(provider.storage(), &saved).unwrap();
                bytes(&proposal)
            })
            .unwrap();
        // The membership tag is the message's last field.
        if let Some(last) = commit.last_mut() {
            *last ^= 0x5a;
        }
        Built { commit, welcome: None }
    }

    /// An ordinary key-update commit — what any member may send, in the clear.
    pub fn update(&self, conversation: &str, wire: Wire) -> Built {
        self.commit(conversation, wire, |group, provider, signer| {
            let bundle =
                group.self_update(provider, signer, LeafNodeParameters::default()).unwrap();
            let (c, _, _) = bundle.into_contents();
            (c, None)
        })
    }

    /// A key-update commit whose new leaf carries `extensions` in place of this device's
    /// certificate (another certificate, a forged one, none).
    pub fn update_with_leaf_extensions(
        &self,
        conversation: &str,
        extensions: Extensions<LeafNode>,
    ) -> Built {
        self.commit(conversation, Wire::Public, |group, provider, signer| {
            let params = LeafNodeParameters::builder()
                .with_capabilities(kith_proto::keypackage::capabilities())
                .with_extensions(extensions)
                .build();
            let bundle = group.self_update(provider, signer, params).unwrap();
            let (c, _, _) = bundle.into_contents();
            (c, None)
        })
    }

    /// An application message carrying `plaintext` with `aad` as its authenticated data, for
    /// the group's current epoch: e.g. someone else's franked message re-sent as new.
    pub fn application(&self, conversation: &str, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.user
            .raw_mls(conversation, |group, provider, signer| {
                group.set_aad(aad.to_vec());
                bytes(&group.create_message(provider, signer, plaintext).unwrap())
            })
            .unwrap()
    }

    /// The group's epoch as this member sees it.
    pub fn epoch(&self, conversation: &str) -> u64 {
        self.user.raw_mls(conversation, |group, _, _| group.epoch().as_u64()).unwrap()
    }

    /// Posts raw bytes as an application message.
    pub async fn post_message(&self, conversation: &str, message: Vec<u8>) -> Answer {
        let body = serde_json::to_value(SendMessage {
            message: B64(message),
            client_id: None,
            repeat: false,
        })
        .unwrap();
        self.post(&format!("/v1/conversations/{conversation}/messages"), body).await
    }

    /// Posts raw bytes as a handshake.
    pub async fn post_handshake(&self, conversation: &str, built: &Built) -> Answer {
        let body = serde_json::to_value(HandshakeRequest {
            message: B64(built.commit.clone()),
            welcome: built.welcome.clone().map(B64),
        })
        .unwrap();
        self.post(&format!("/v1/conversations/{conversation}/handshake"), body).await
    }

    /// Any authenticated POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        let url = format!("{}{path}", self.user.profile().unwrap().server);
        let resp = reqwest::Client::new()
            .post(url)
            .header("authorization", self.user.bearer())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        Answer { status, body: resp.json().await.unwrap_or(Value::Null) }
    }
}
