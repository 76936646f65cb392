//! A hostile server: a proxy in front of a real kithd (the testkit's [`HostileServer`]) rewrites,
//! drops, reorders and replays the queue entries bob's device fetches. One test per field the
//! server supplies; each checks the same properties: the sync succeeds, every message shown is
//! shown once and attributed to the account that really wrote it (MLS says who, never the
//! entry), what could not be used is reported for its conversation, and the conversation goes
//! on afterwards.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::collections::BTreeMap;
use std::sync::Arc;

use kith_client::{ProblemKind, SyncReport};
use kith_proto::AccountKind;
use kith_testkit::{HostileServer, TestServer, TestUser};
use serde_json::{Value, json};

/// What bob saw: (author, text) of every message shown, and the reports.
struct Seen {
    shown: Vec<(String, String)>,
    reports: Vec<SyncReport>,
}

impl Seen {
    fn problems(&self) -> Vec<ProblemKind> {
        self.reports.iter().flat_map(|r| r.problems.iter().map(|p| p.kind)).collect()
    }
}

/// alice and carol each have a 1:1 chat with bob, whose device reaches kithd through a hostile
/// server. With `rewrite` on, alice sends "two" and "three" and carol "carol two"; then, with
/// it off, alice sends "four". Checks the properties every rewrite must keep.
async fn through(rewrite: impl Fn(&mut Vec<Value>) + Send + Sync + 'static) -> Seen {
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut bob = TestUser::register(&proxy.url(), "bob", AccountKind::Person).await;
    let mut alice = server.user("alice").await;
    let mut carol = server.user("carol").await;
    alice.send_text("bob", "one").await.unwrap();
    carol.send_text("bob", "carol one").await.unwrap();
    let mut reports = vec![bob.sync().await.unwrap()];
    proxy.rewrite_queue(Some(Arc::new(rewrite)));
    alice.send_text("bob", "two").await.unwrap();
    alice.send_text("bob", "three").await.unwrap();
    carol.send_text("bob", "carol two").await.unwrap();
    reports.push(bob.sync().await.expect("a sync through a hostile server succeeds"));
    proxy.rewrite_queue(None);
    alice.send_text("bob", "four").await.unwrap();
    carol.send_text("bob", "carol three").await.unwrap();
    reports.push(bob.sync().await.unwrap());
    let shown: Vec<(String, String)> = reports
        .iter()
        .flat_map(|r| r.messages.iter().map(|m| (m.from.clone(), m.text.clone())))
        .collect();
    // Attributed to whoever really wrote it, and shown once.
    let authors: BTreeMap<&str, &str> = [
        ("one", "alice"),
        ("two", "alice"),
        ("three", "alice"),
        ("four", "alice"),
        ("carol one", "carol"),
        ("carol two", "carol"),
        ("carol three", "carol"),
    ]
    .into();
    for (from, text) in &shown {
        assert_eq!(Some(&from.as_str()), authors.get(text.as_str()), "{text:?} shown as {from}'s");
        assert_eq!(shown.iter().filter(|(_, t)| t == text).count(), 1, "{text:?} shown twice");
    }
    // The conversations go on after whatever the hostile server did.
    for text in ["one", "carol one", "four", "carol three"] {
        assert!(shown.iter().any(|(_, t)| t == text), "{text:?} was not shown: {shown:?}");
    }
    // Every entry dropped is reported, for its conversation.
    let dropped: u32 = reports.iter().map(|r| r.dropped).sum();
    let reported = reports
        .iter()
        .flat_map(|r| &r.problems)
        .filter(|p| {
            matches!(
                p.kind,
                ProblemKind::Unreadable | ProblemKind::Unjoinable | ProblemKind::Malformed
            )
        })
        .count();
    assert_eq!(dropped as usize, reported);
    Seen { shown, reports }
}

fn texts(seen: &Seen) -> Vec<&str> {
    seen.shown.iter().map(|(_, t)| t.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_sender_never_changes_who_wrote_it() {
    let seen = through(|entries| {
        for e in entries {
            e["sender"] = json!("carol");
        }
    })
    .await;
    // alice's messages labelled as carol's are shown as alice's (MLS says who signed them:
    // nothing is lost to a label), and carol's own go through.
    for text in ["two", "three", "carol two"] {
        assert!(texts(&seen).contains(&text), "{:?}", seen.shown);
    }
    assert!(seen.problems().is_empty(), "{:?}", seen.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_sender_device_misattributes_nothing() {
    through(|entries| {
        for e in entries {
            e["sender_device"] = json!(e["sender_device"].as_u64().unwrap_or(0) + 1);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_moved_to_another_conversation_is_not_shown_there() {
    let seen = through(|entries| {
        let ids: Vec<Value> = entries.iter().map(|e| e["conversation_id"].clone()).collect();
        let (Some(first), Some(other)) =
            (ids.first().cloned(), ids.iter().find(|i| Some(*i) != ids.first()).cloned())
        else {
            return;
        };
        for e in entries {
            e["conversation_id"] =
                if e["conversation_id"] == first { other.clone() } else { first.clone() };
        }
    })
    .await;
    for (from, text) in &seen.shown {
        assert!(!(from == "alice" && text.starts_with("carol")), "{text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_an_unknown_kind_hides_nothing_else() {
    let seen = through(|entries| {
        if let Some(e) = entries.first_mut() {
            e["kind"] = json!("hologram");
        }
    })
    .await;
    assert!(seen.problems().contains(&ProblemKind::Malformed), "{:?}", seen.problems());
    assert!(texts(&seen).contains(&"carol two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_data_is_reported_and_the_rest_is_shown() {
    let seen = through(|entries| {
        if let Some(e) = entries.first_mut() {
            e["data"] = json!("AAECAwQFBgcICQ==");
        }
    })
    .await;
    assert!(seen.problems().contains(&ProblemKind::Unreadable), "{:?}", seen.problems());
    assert!(texts(&seen).contains(&"three") && texts(&seen).contains(&"carol two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_entries_are_shown_once() {
    let seen = through(|entries| {
        let copies: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut c = e.clone();
                c["seq"] = json!(e["seq"].as_u64().unwrap_or(0) + 1_000_000);
                c["message_id"] = json!(e["message_id"].as_u64().unwrap_or(0) + 1_000_000);
                c
            })
            .collect();
        entries.extend(copies);
    })
    .await;
    assert!(texts(&seen).contains(&"two") && texts(&seen).contains(&"three"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_entries_are_all_shown() {
    let seen = through(|entries| entries.reverse()).await;
    for text in ["two", "three", "carol two"] {
        assert!(texts(&seen).contains(&text), "{:?}", seen.shown);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_entry_hides_nothing_else() {
    let seen = through(|entries| {
        if !entries.is_empty() {
            entries.remove(0);
        }
    })
    .await;
    assert!(texts(&seen).contains(&"three") && texts(&seen).contains(&"carol two"));
}

/// A group of alice's with bob, carol not in it, bob behind a hostile server that names carol
/// as the sender of everything.
async fn invited_by_alice_labelled_carol(block_alice: bool) -> (SyncReport, TestUser) {
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut bob = TestUser::register(&proxy.url(), "bob", AccountKind::Person).await;
    let mut alice = server.user("alice").await;
    let _carol = server.user("carol").await;
    let _dave = server.user("dave").await;
    alice.create_group("Picnic", &["bob".to_string(), "dave".to_string()]).await.unwrap();
    if block_alice {
        bob.block("alice").await.unwrap();
    }
    proxy.rewrite_queue(Some(Arc::new(|entries: &mut Vec<Value>| {
        for e in entries {
            e["sender"] = json!("carol");
        }
    })));
    let r = bob.sync().await.unwrap();
    (r, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_you_names_who_signed_the_welcome() {
    let (r, _bob) = invited_by_alice_labelled_carol(false).await;
    let lines: Vec<&str> = r.messages.iter().map(|m| m.text.as_str()).collect();
    assert!(lines.contains(&"alice added you"), "{lines:?}");
    assert!(r.messages.iter().all(|m| m.from != "carol"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_invitation_from_a_blocked_account_stays_out() {
    let (r, bob) = invited_by_alice_labelled_carol(true).await;
    assert!(r.joined.is_empty(), "{:?}", r.joined);
    assert!(r.blocked >= 1);
    assert!(bob.groups().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_naming_a_member_that_cannot_exist_is_refused_alone() {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::*;
    use openmls_basic_credential::SignatureKeyPair;
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut bob = TestUser::register(&proxy.url(), "bob", AccountKind::Person).await;
    let mut alice = server.user("alice").await;
    let mallory = server.user("mallory").await;
    alice.send_text("bob", "hello").await.unwrap();
    bob.sync().await.unwrap();
    // mallory's own OpenMLS client claims bob's KeyPackage and builds a group with him and a
    // member named "AB", a name no account can have (the server would refuse the tree; a
    // hostile server delivers the Welcome anyway).
    let claim = mallory.hostile().post("/v1/accounts/bob/key-packages/claim", json!({})).await;
    let bob_kp: kith_proto::B64 =
        serde_json::from_value(claim.body["key_packages"][0]["key_package"].clone()).unwrap();
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let crypto = openmls_rust_crypto::RustCrypto::default();
    let bob_key: kith_proto::B64 =
        serde_json::from_value(claim.body["account_key"].clone()).unwrap();
    let owner = kith_proto::keypackage::Owner {
        account: "bob",
        account_key: Some(&bob_key.0),
        device: None,
    };
    let bob_kp =
        kith_proto::keypackage::check(&crypto, &bob_kp.0, &owner, None).expect("bob's KeyPackage");
    let member = |name: &str| {
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        (signer, credential)
    };
    let (ab_signer, ab) = member("AB");
    let ab_kp = KeyPackage::builder()
        .leaf_node_capabilities(kith_proto::keypackage::capabilities())
        .build(kith_proto::keypackage::CIPHERSUITE, &provider, &ab_signer, ab)
        .unwrap();
    let (signer, me) = member("mallory");
    let meta = kith_proto::GroupMeta {
        kind: kith_proto::GroupType::Group,
        admins: vec!["mallory".into()],
        settings: None,
    };
    let kith = kith_proto::keypackage::kith_extension();
    let config = MlsGroupCreateConfig::builder()
        .capabilities(kith_proto::keypackage::capabilities())
        .with_group_context_extensions(
            Extensions::from_vec(vec![
                Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
                    &[kith],
                    &[],
                    &[],
                )),
                Extension::Unknown(
                    kith_proto::group::GROUP_META_EXTENSION,
                    UnknownExtension(meta.encode()),
                ),
            ])
            .unwrap(),
        )
        .ciphersuite(kith_proto::keypackage::CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .build();
    let id = "00112233445566778899aabbccddeeff";
    let mut group = MlsGroup::new_with_group_id(
        &provider,
        &signer,
        &config,
        GroupId::from_slice(&hex_bytes(id)),
        me,
    )
    .unwrap();
    let (_, welcome, _) =
        group.add_members(&provider, &signer, &[bob_kp, ab_kp.key_package().clone()]).unwrap();
    let welcome = kith_proto::B64(welcome.tls_serialize_detached().unwrap());
    let once = std::sync::atomic::AtomicBool::new(false);
    proxy.rewrite_queue(Some(Arc::new(move |entries: &mut Vec<Value>| {
        if once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        entries.insert(
            0,
            json!({
                "seq": 1, "message_id": 9_000_000, "conversation_id": id, "kind": "welcome",
                "sender": "mallory", "sender_device": 1, "data": welcome, "server_time": 0,
            }),
        );
    })));
    alice.send_text("bob", "still here").await.unwrap();
    let r = bob.sync().await.expect("one bad Welcome does not fail the sync");
    assert!(r.messages.iter().any(|m| m.text == "still here"), "{:?}", r.messages);
    assert!(r.joined.is_empty());
    assert!(r.problems.iter().any(|p| p.kind == ProblemKind::Unjoinable), "{:?}", r.problems);
    // And it does not come back: the next message arrives as any other.
    alice.send_text("bob", "and again").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert_eq!(r.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["and again"]);
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_package_the_server_tampered_with_keeps_no_one_else_out() {
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut bob = TestUser::register(&proxy.url(), "bob", AccountKind::Person).await;
    let mut carol = server.user("carol").await;
    let mut dave = server.user("dave").await;
    for friend in [&mut carol, &mut dave] {
        friend.send_text("bob", "hi bob").await.unwrap();
    }
    bob.sync().await.unwrap();
    bob.send_text("carol", "hi carol").await.unwrap();
    bob.send_text("dave", "hi dave").await.unwrap();
    // The hostile server hands out a tampered copy of dave's KeyPackage.
    proxy.rewrite_answers(
        "/accounts/dave/key-packages/claim",
        Arc::new(|answer: &mut Value| {
            if let Some(kp) = answer["key_packages"][0]["key_package"].as_str() {
                let mut bytes: Vec<char> = kp.chars().collect();
                let at = bytes.len() / 2;
                bytes[at] = if bytes[at] == 'A' { 'B' } else { 'A' };
                answer["key_packages"][0]["key_package"] =
                    json!(bytes.into_iter().collect::<String>());
            }
        }),
    );
    // bob's first story reaches carol; dave is left out (and tried again in a day: not at
    // every sync, so a contact who cannot be added costs bob one claim a day), not everyone.
    bob.story_post("at the lake").await.unwrap();
    carol.sync().await.unwrap();
    assert_eq!(carol.stories().unwrap().len(), 1);
    let r = bob.sync().await.unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    dave.sync().await.unwrap();
    assert!(dave.stories().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_invitation_waits_for_who_really_sent_it() {
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut bob = TestUser::register(&proxy.url(), "bob", AccountKind::Person).await;
    let mut ana = server.user("ana").await;
    let _carol = server.user("carol").await;
    // ana writes to bob and posts a story: its channel's invitation waits on bob's device until
    // bob writes to ana — and the hostile server says it came from carol.
    ana.send_text("bob", "hi bob").await.unwrap();
    ana.story_post("at the lake").await.unwrap();
    proxy.rewrite_queue(Some(Arc::new(|entries: &mut Vec<Value>| {
        for e in entries {
            e["sender"] = json!("carol");
        }
    })));
    let r = bob.sync().await.unwrap();
    assert!(r.held >= 1, "{r:?}");
    proxy.rewrite_queue(None);
    // bob answers ana: the invitation is ana's (MLS says so), so it goes through now.
    bob.send_text("ana", "hi ana").await.unwrap();
    bob.sync().await.unwrap();
    let stories = bob.stories().unwrap();
    assert_eq!(stories.len(), 1, "{stories:?}");
    assert_eq!(stories[0].author, "ana");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_its_franking_tag_is_reported_and_hides_nothing() {
    let seen = through(|entries| {
        if let Some(e) = entries.first_mut() {
            e.as_object_mut().map(|o| o.remove("frank"));
        }
    })
    .await;
    assert!(seen.problems().contains(&ProblemKind::Unreadable), "{:?}", seen.problems());
    assert!(texts(&seen).contains(&"carol two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_times_are_the_server_s_word_and_change_nothing_else() {
    // The times shown are the server's (documented); a server that lies about them changes
    // no one's words, senders or order of arrival.
    let seen = through(|entries| {
        for e in entries {
            e["server_time"] = json!(0);
        }
    })
    .await;
    for text in ["two", "three", "carol two"] {
        assert!(texts(&seen).contains(&text), "{:?}", seen.shown);
    }
}

/// A KeyPackage of bob's made by the test (a fresh device key), carrying `certify`'s
/// certificate for it.
fn forged_key_package(
    certify: impl FnOnce(&[u8]) -> Option<kith_proto::account::DeviceCertificate>,
) -> kith_proto::B64 {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::*;
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let signer = openmls_basic_credential::SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(b"bob".to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let mut builder =
        KeyPackage::builder().leaf_node_capabilities(kith_proto::keypackage::capabilities());
    if let Some(cert) = certify(signer.public()) {
        builder =
            builder.leaf_node_extensions(kith_proto::keypackage::leaf_extensions(&cert).unwrap());
    }
    let kp =
        builder.build(kith_proto::keypackage::CIPHERSUITE, &provider, &signer, credential).unwrap();
    kith_proto::B64(kp.key_package().tls_serialize_detached().unwrap())
}

/// A hostile server hands out, as bob's, a KeyPackage of a device key bob's account key never
/// signed: with a forged certificate, then — claiming bob's account has no key any more —
/// with none. alice's client refuses both (an account key, once seen, does not go away), and
/// reaches bob as soon as the server is honest again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_key_the_account_never_certified_is_refused_at_claim() {
    use std::sync::atomic::{AtomicU8, Ordering};
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut alice = TestUser::register(&proxy.url(), "alice", AccountKind::Person).await;
    let mut bob = server.user("bob").await;
    let bob_device = bob.profile().unwrap().device_id;
    let not_bobs_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let forged = forged_key_package(|key| {
        Some(kith_proto::account::DeviceCertificate::sign(&not_bobs_key, "bob", bob_device, key, 1))
    });
    let bare = forged_key_package(|_| None);
    // 1: the forged certificate; 2: no certificate and no account key; 0: honest.
    let mode = Arc::new(AtomicU8::new(1));
    let m = mode.clone();
    proxy.rewrite_answers(
        "/accounts/bob/key-packages/claim",
        Arc::new(move |answer: &mut Value| match m.load(Ordering::SeqCst) {
            1 => answer["key_packages"][0]["key_package"] = json!(forged),
            2 => {
                answer["key_packages"][0]["key_package"] = json!(bare);
                answer.as_object_mut().unwrap().remove("account_key");
            }
            _ => {}
        }),
    );
    let err = alice.send_text("bob", "one").await.unwrap_err();
    assert_eq!(err.refusal(), Some(kith_client::Refusal::BadKeyPackage), "{err}");
    assert!(err.to_string().contains("not signed by the account's key"), "{err}");
    // Without the account key its key directory holds for bob, the claim is refused before
    // its KeyPackage is even looked at.
    mode.store(2, Ordering::SeqCst);
    let err = alice.send_text("bob", "two").await.unwrap_err();
    assert_eq!(err.refusal(), Some(kith_client::Refusal::KeyNotPublished), "{err}");
    mode.store(0, Ordering::SeqCst);
    alice.send_text("bob", "three").await.unwrap();
    let r = bob.sync().await.unwrap();
    let texts: Vec<&str> = r.messages.iter().map(|m| m.text.as_str()).collect();
    assert!(texts.contains(&"three"), "{texts:?}");
}

/// A hostile server swaps bob's account key for one of its own and hands out a KeyPackage that
/// key certifies: first with a key change signed by a recovery key of its own making, then
/// with none. alice's client knew bob's keys before: a change counts only when the recovery
/// key it knew signed it, so it keeps bob's key, refuses the KeyPackage, and leaves bob's real
/// devices where they are; it reaches bob as soon as the server is honest again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_the_recovery_key_never_signed_is_not_followed() {
    use std::sync::atomic::{AtomicU8, Ordering};
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut alice = TestUser::register(&proxy.url(), "alice", AccountKind::Person).await;
    let mut bob = server.user("bob").await;
    let bob_device = bob.profile().unwrap().device_id;
    let servers_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let servers_recovery = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let forged = forged_key_package(|key| {
        Some(kith_proto::account::DeviceCertificate::sign(&servers_key, "bob", bob_device, key, 1))
    });
    let change = kith_proto::recovery::KeyChange::sign(
        &servers_recovery,
        "bob",
        &kith_proto::account::public_key(&servers_key),
        &kith_proto::account::public_key(&servers_recovery),
        1,
    );
    let swapped = json!(kith_proto::B64(kith_proto::account::public_key(&servers_key)));
    let signed = json!([kith_proto::B64(change.encode())]);
    // 3: bob's real keys, but a recovery key of the server's own, unbound (or bound by a key
    // that is not bob's); 1: the swapped key with a change that recovery key signed; 2: with no
    // change; 0: honest.
    let mode = Arc::new(AtomicU8::new(3));
    let m = mode.clone();
    let slipped = json!(kith_proto::B64(kith_proto::account::public_key(&servers_recovery)));
    let forged_binding = json!(kith_proto::B64(kith_proto::recovery::sign(
        &servers_key,
        &kith_proto::recovery::binding_bytes(
            "bob",
            &kith_proto::account::public_key(&servers_recovery)
        ),
    )));
    proxy.rewrite_answers(
        "/accounts/bob/key-packages/claim",
        Arc::new(move |answer: &mut Value| {
            let how = m.load(Ordering::SeqCst);
            if how == 0 {
                return;
            }
            if how == 3 {
                answer["recovery_key"] = slipped.clone();
                answer["recovery_binding"] = forged_binding.clone();
                return;
            }
            answer["key_packages"][0]["key_package"] = json!(forged);
            answer["account_key"] = swapped.clone();
            if how == 1 {
                answer["key_changes"] = signed.clone();
            }
        }),
    );
    // alice looks bob up first through it: she knows his account key, and no recovery key
    // (the one listed is not bound to his account key).
    alice.send_text("bob", "one").await.unwrap();
    bob.sync().await.unwrap();
    for how in [1, 2] {
        mode.store(how, Ordering::SeqCst);
        match alice.create_group_reporting(&format!("G{how}"), &["bob".into()]).await {
            // Refused at the claim: under a key the key directory does not hold for bob.
            Err(e) => assert_eq!(e.refusal(), Some(kith_client::Refusal::KeyNotPublished), "{e}"),
            Ok((id, not_added)) => {
                assert!(!not_added.is_empty(), "{how}: bob's swapped device was added");
                assert!(alice.group(&id).unwrap().members.iter().all(|m| m != "bob"));
            }
        }
    }
    mode.store(0, Ordering::SeqCst);
    let g = alice.create_group("G3", &["bob".into()]).await.unwrap();
    alice.send_group(&g, "three").await.unwrap();
    alice.send_text("bob", "four").await.unwrap();
    let r = bob.sync().await.unwrap();
    let texts: Vec<&str> = r.messages.iter().map(|m| m.text.as_str()).collect();
    assert!(texts.contains(&"three") && texts.contains(&"four"), "{texts:?}");
}
