//! Every rule against a client that does not follow it: the testkit's hostile client builds
//! what a modified client on OpenMLS could send (encrypted commits, removes and admin changes
//! by a non-admin, signature-key changes, re-sent messages, floods), throwaway accounts try
//! to move reputations, and a blocked account tries to reach its blocker. Each test runs on
//! SQLite and on PostgreSQL (when `KITH_TEST_DATABASE_URL` is set), against a real kithd, and
//! checks the server's answer and — as if the server were hostile too — what the other
//! members' clients do with the same bytes.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::time::Duration;

use kith_client::ConversationKind;
use kith_proto::{AccountKind, B64, EntryKind, FrankTag, GroupMeta, GroupType, QueueEntry};
use kith_server::ServerConfig;
use kith_testkit::hostile::Wire;
use kith_testkit::{TestServer, TestUser, test_config};
use serde_json::json;

/// Generates, for each `test(config)`, one test on SQLite and one on PostgreSQL.
macro_rules! on_both_stores {
    ($($name:ident($config:expr)),* $(,)?) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = kith_testkit::TestServer::start_with(
                        $config,
                        std::sync::Arc::new(kith_testkit::SystemClock),
                    )
                    .await;
                    super::$name(server).await;
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = kith_testkit::TestServer::start_postgres_with($config).await
                    else {
                        return;
                    };
                    super::$name(server).await;
                }
            )*
        }
    };
}

on_both_stores! {
    an_encrypted_commit_cannot_change_a_group(test_config()),
    a_member_who_is_not_an_admin_cannot_take_over(test_config()),
    settings_travel_sealed_with_their_digest(test_config()),
    admins_stay_members(test_config()),
    a_signature_key_the_server_never_saw_is_refused(test_config()),
    commits_keep_to_the_rate_limits(few_changes()),
    commits_keep_to_the_queue_cap(small_queues()),
    a_block_is_invisible_and_complete(test_config()),
    a_story_channel_reaches_contacts_only(test_config()),
    a_stolen_token_cannot_rotate_itself(test_config()),
    key_packages_cannot_be_drained(test_config()),
    an_owner_tops_up_what_claims_took(big_budget()),
    a_resent_message_cannot_be_reported_as_new(test_config()),
    throwaway_accounts_cannot_move_a_reputation(test_config()),
    a_leave_is_never_lost_to_a_racing_commit(test_config()),
    suspension_closes_push_connections(quick_recheck()),
    replays_and_misdirected_commits_are_refused(test_config()),
    concurrent_requests_cannot_slip_past_a_limit(ten_registrations()),
    a_leave_nobody_else_can_read_does_not_freeze_the_group(test_config()),
    an_unusable_key_package_is_refused_and_counts_against_its_uploader(test_config()),
    a_stored_unusable_key_package_is_never_handed_out(test_config()),
    a_poisoning_stranger_flags_nobody(last_resort_only()),
    a_group_with_a_poisoner_is_made_without_her_and_costs_nothing(last_resort_only()),
    a_credential_key_serves_one_device_only(test_config()),
    an_expired_key_package_gives_way_to_the_next(test_config()),
    a_device_renews_its_last_resort_key_package(last_resort_only()),
    a_member_cannot_hand_its_seat_to_another_account(test_config()),
    a_forged_leave_costs_the_one_left_nothing(test_config()),
    a_flood_of_invitations_pushes_no_friend_s_out(generous_claims()),
    a_message_id_is_its_own_device_s(test_config()),
    a_repeat_is_held_to_the_rate_like_any_post(few_messages()),
    a_device_key_its_account_never_certified_is_refused(test_config()),
}

fn few_messages() -> ServerConfig {
    let mut c = test_config();
    c.safety.max_messages_per_minute = 3;
    c
}

fn generous_claims() -> ServerConfig {
    let mut c = big_budget();
    c.safety.max_claims_of_one_account_per_hour = 1000;
    c.safety.max_unused_claims_per_hour = 1000;
    c
}

fn last_resort_only() -> ServerConfig {
    let mut c = test_config();
    // Every claim gets the last-resort KeyPackage: what a stranger who spent the hourly
    // budget with throwaway claims leaves for everyone else.
    c.safety.key_package_budget_per_hour = 0;
    c
}

fn few_changes() -> ServerConfig {
    let mut c = test_config();
    c.safety.max_changes_per_conversation_per_minute = 4;
    c
}

fn ten_registrations() -> ServerConfig {
    let mut c = test_config();
    c.safety.registrations_per_ip_per_hour = 20;
    c
}

fn quick_recheck() -> ServerConfig {
    let mut c = test_config();
    c.push_recheck = Duration::from_secs(1);
    c
}

fn big_budget() -> ServerConfig {
    let mut c = test_config();
    c.safety.key_package_budget_per_hour = 1000;
    c
}

fn small_queues() -> ServerConfig {
    let mut c = test_config();
    c.max_queued_per_device = 4;
    c
}

/// `n` users named after `names`.
async fn users(server: &TestServer, names: &[&str]) -> Vec<TestUser> {
    let mut out = Vec::new();
    for n in names {
        out.push(server.user(n).await);
    }
    out
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// What a hostile server could hand a member: `data` as if `from` had posted it.
fn as_delivered(from: &TestUser, conversation: &str, data: &[u8], n: u64) -> QueueEntry {
    QueueEntry {
        seq: 9_000_000 + n,
        message_id: 9_000_000 + n,
        conversation_id: conversation.to_string(),
        kind: EntryKind::Message,
        sender: from.profile().unwrap().username.clone(),
        sender_device: from.profile().unwrap().device_id,
        sender_kind: AccountKind::Person,
        sender_verified: false,
        data: B64(data.to_vec()),
        server_time: 0,
        expires_at: None,
        frank: Some(FrankTag { key_id: 1, epoch: 0, tag: B64(vec![0; 32]) }),
    }
}

fn texts(r: &kith_client::SyncReport) -> Vec<String> {
    r.messages.iter().map(|m| m.text.clone()).collect()
}

/// A group of alice (its admin), bob and carol, everyone synced.
async fn club(server: &TestServer) -> (Vec<TestUser>, String) {
    let mut u = users(server, &["alice", "bob", "carol"]).await;
    let id = u[0].create_group("Club", &strings(&["bob", "carol"])).await.unwrap();
    for m in u.iter_mut() {
        m.sync().await.unwrap();
    }
    (u, id)
}

async fn an_encrypted_commit_cannot_change_a_group(server: TestServer) {
    let (mut u, club) = club(&server).await;
    let bob = &u[1];
    // bob removes alice and makes himself the only admin, encrypted so the server cannot see.
    let remove = bob.hostile().remove(&club, "alice", Wire::Private);
    let meta = GroupMeta { kind: GroupType::Group, admins: vec!["bob".into()], settings: None };
    let takeover = bob.hostile().set_meta(&club, &meta, Wire::Private);
    // Even a change any member may make (a key update) is refused encrypted: nobody could
    // check it.
    let update = bob.hostile().update(&club, Wire::Private);
    for built in [&remove, &takeover, &update] {
        // At /messages: only application messages pass, whatever the wire format.
        let a = bob.hostile().post_message(&club, built.commit.clone()).await;
        assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
        // At /handshake: only in the clear, where the server can check it.
        let a = bob.hostile().post_handshake(&club, built).await;
        assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
    }
    // A hostile server delivers them anyway: carol's client refuses both.
    let entries = [
        as_delivered(&u[1], &club, &remove.commit, 1),
        as_delivered(&u[1], &club, &takeover.commit, 2),
        as_delivered(&u[1], &club, &update.commit, 3),
    ];
    let r = u[2].receive_entries(&entries).await.unwrap();
    assert_eq!(r.dropped, 3);
    // The group is as it was: alice still runs it and everyone reads her.
    u[0].send_group(&club, "still here").await.unwrap();
    u[0].group_rename(&club, "Club 2").await.unwrap();
    for m in u.iter_mut().skip(1) {
        assert!(texts(&m.sync().await.unwrap()).contains(&"still here".to_string()));
        assert_eq!(m.group(&club).unwrap().name.as_deref(), Some("Club 2"));
    }
}

async fn a_member_who_is_not_an_admin_cannot_take_over(server: TestServer) {
    let (mut u, club) = club(&server).await;
    let bob = &u[1];
    let remove = bob.hostile().remove(&club, "alice", Wire::Public);
    let meta = GroupMeta { kind: GroupType::Group, admins: vec!["bob".into()], settings: None };
    let takeover = bob.hostile().set_meta(&club, &meta, Wire::Public);
    let retyped = GroupMeta { kind: GroupType::Direct, admins: vec![], settings: None };
    let retype = bob.hostile().set_meta(&club, &retyped, Wire::Public);
    let dave = server.user("dave").await;
    let adds = bob.hostile().add(&club, "dave").await;
    for built in [&remove, &takeover, &retype, &adds] {
        let a = bob.hostile().post_handshake(&club, built).await;
        assert_eq!((a.status, a.code()), (403, Some("not_admin")), "{:?}", a.body);
    }
    // Nobody was added: the Welcome went nowhere.
    assert!(dave.raw_queue().await.is_empty());
    // The same commits, delivered by a hostile server, are refused by carol's client.
    let entries: Vec<QueueEntry> = [&remove, &takeover, &retype, &adds]
        .iter()
        .enumerate()
        .map(|(n, b)| as_delivered(&u[1], &club, &b.commit, n as u64))
        .collect();
    let r = u[2].receive_entries(&entries).await.unwrap();
    assert_eq!(r.dropped, 4);
    u[0].send_group(&club, "mine").await.unwrap();
    assert_eq!(texts(&u[2].sync().await.unwrap()), ["mine"]);
    assert!(u[2].group(&club).unwrap().admins.contains(&"alice".to_string()));
}

/// Settings are epoch state: the group context holds their digest, and the commit that changes
/// it carries them sealed. The server cannot open them, but refuses a new digest without them,
/// authenticated data without a new digest, and a dropped digest. A committer that seals
/// something else than the digest says (a modified client) cannot make members disagree: none
/// can open it, so all keep what they had — and the next honest change seals them again.
async fn settings_travel_sealed_with_their_digest(server: TestServer) {
    let (mut u, club) = club(&server).await;
    // bob, an admin, runs a modified client.
    u[0].group_promote(&club, "bob").await.unwrap();
    u[1].sync().await.unwrap();
    let bob = &u[1];
    let now = bob.hostile().meta(&club);
    assert!(now.settings.is_some(), "a new group has settings in its context");
    let other = GroupMeta { settings: Some("ab".repeat(32)), ..now.clone() };
    let sealed = kith_proto::settings::Sealed { nonce: B64(vec![1; 12]), ct: B64(vec![2; 48]) };
    let cases = [
        (other.clone(), Vec::new(), "a new digest without its settings"),
        (now.clone(), sealed.encode(), "sealed settings without a new digest"),
        (GroupMeta { settings: None, ..now.clone() }, Vec::new(), "a dropped digest"),
        (other.clone(), b"not sealed".to_vec(), "settings not sealed"),
    ];
    for (meta, aad, what) in cases {
        let built = bob.hostile().set_meta_with(&club, &meta, aad, Wire::Public);
        let a = bob.hostile().post_handshake(&club, &built).await;
        assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{what}: {:?}", a.body);
    }
    // Well-formed but sealed to nobody: taken (the server cannot tell), and every member is
    // in the same position.
    let built = bob.hostile().set_meta_with(&club, &other, sealed.encode(), Wire::Public);
    let a = bob.hostile().post_handshake(&club, &built).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    for m in [0, 2] {
        u[m].sync().await.unwrap();
    }
    let view = |m: &TestUser| {
        let g = m.group(&club).unwrap();
        (g.epoch, g.name, g.timer_seconds)
    };
    assert_eq!(view(&u[0]), view(&u[2]));
    assert_eq!(view(&u[0]).1.as_deref(), Some("Club"));
    // And each is told who did it.
    let said = u[2].chat_history(&club).unwrap().into_iter().any(|m| {
        m.kind == ConversationKind::System && m.text.starts_with("bob changed the group's settings")
    });
    assert!(said, "the members are not told");
    // The next honest change seals them again, for everyone.
    u[0].group_rename(&club, "Club 2").await.unwrap();
    u[2].sync().await.unwrap();
    assert_eq!(view(&u[0]), view(&u[2]));
    assert_eq!(view(&u[2]).1.as_deref(), Some("Club 2"));
}

/// A group's admins are always members: a commit that removes an admin but leaves them on the
/// list is refused, as is an admin list naming someone outside; and a member who is not an
/// admin may name only the heir the rule names, never itself.
async fn admins_stay_members(server: TestServer) {
    let (mut u, club) = club(&server).await;
    u[0].group_promote(&club, "bob").await.unwrap();
    for m in u.iter_mut().skip(1) {
        m.sync().await.unwrap();
    }
    let alice = &u[0];
    let remove = alice.hostile().remove(&club, "bob", Wire::Public);
    let a = alice.hostile().post_handshake(&club, &remove).await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
    assert!(a.body.to_string().contains("admins are members"), "{:?}", a.body);
    let now = alice.hostile().meta(&club);
    let outsider = GroupMeta { admins: vec!["alice".into(), "zed".into()], ..now.clone() };
    let a = alice
        .hostile()
        .post_handshake(&club, &alice.hostile().set_meta(&club, &outsider, Wire::Public))
        .await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
    // carol, no admin, cannot make herself one while both admins stay.
    let carol = &u[2];
    let herself = GroupMeta { admins: vec!["carol".into()], ..now.clone() };
    let a = carol
        .hostile()
        .post_handshake(&club, &carol.hostile().set_meta(&club, &herself, Wire::Public))
        .await;
    assert_eq!((a.status, a.code()), (403, Some("not_admin")), "{:?}", a.body);
    // The honest removal takes bob off the list in the same commit.
    u[0].group_remove(&club, "bob").await.unwrap();
    u[2].sync().await.unwrap();
    assert_eq!(u[2].group(&club).unwrap().admins, ["alice"]);
}

async fn a_signature_key_the_server_never_saw_is_refused(server: TestServer) {
    let (mut u, club) = club(&server).await;
    let public = u[1].hostile().new_signature_key(&club, Wire::Public);
    let a = u[1].hostile().post_handshake(&club, &public).await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
    let private = u[1].hostile().new_signature_key(&club, Wire::Private);
    let a = u[1].hostile().post_message(&club, private.commit.clone()).await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
    // Delivered anyway, carol's client checks the key against the server's registry.
    let entry = as_delivered(&u[1], &club, &public.commit, 1);
    let r = u[2].receive_entries(&[entry]).await.unwrap();
    assert_eq!(r.dropped, 1);
    // bob's messages stay reportable.
    u[1].send_group(&club, "spam from bob").await.unwrap();
    let r = u[2].sync().await.unwrap();
    let id = r.messages.iter().find(|m| m.text == "spam from bob").unwrap().id.clone();
    u[2].report(&id, Some("spam")).await.unwrap();
}

/// A certificate for `u`'s device signed by a key that is not its account's.
fn forged_certificate(u: &TestUser) -> kith_proto::account::DeviceCertificate {
    let p = u.profile().unwrap();
    let not_the_account_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    kith_proto::account::DeviceCertificate::sign(
        &not_the_account_key,
        &p.username,
        p.device_id,
        &p.signature_key,
        1,
    )
}

async fn a_device_key_its_account_never_certified_is_refused(server: TestServer) {
    use kith_proto::keypackage::{capabilities, leaf_extensions};
    let (mut u, club) = club(&server).await;
    // KeyPackages: without a certificate, or with one the account key never signed.
    let bare = u[1].raw_key_package(|b| b.leaf_node_capabilities(capabilities())).unwrap();
    let forged = leaf_extensions(&forged_certificate(&u[1])).unwrap();
    let forged_kp = u[1]
        .raw_key_package(|b| b.leaf_node_capabilities(capabilities()).leaf_node_extensions(forged))
        .unwrap();
    for (kp, says) in [(bare, "no certificate"), (forged_kp, "not signed by the account's key")] {
        let a = u[1].hostile().post("/v1/key-packages", json!({"key_packages": [B64(kp)]})).await;
        assert_eq!((a.status, a.code()), (400, Some("invalid_key_package")), "{:?}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains(says), "{:?}", a.body);
    }
    // A registration with an account key brings no KeyPackages: they follow, certified for
    // the device id it gives.
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let mut req = kith_testkit::raw_registration(&provider, "early");
    req.account_key = Some(B64(kith_proto::account::public_key(
        &ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
    )));
    let a = u[1].hostile().post("/v1/accounts", serde_json::to_value(&req).unwrap()).await;
    assert_eq!((a.status, a.code()), (400, Some("bad_request")), "{:?}", a.body);
    // In a group: a key update whose leaf carries a forged certificate, or none.
    let forged = leaf_extensions(&forged_certificate(&u[1])).unwrap();
    let commits = [
        u[1].hostile().update_with_leaf_extensions(&club, forged),
        u[1].hostile().update_with_leaf_extensions(&club, Default::default()),
    ];
    for (built, id) in commits.iter().zip(1..) {
        let a = u[1].hostile().post_handshake(&club, built).await;
        assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
        assert!(
            a.body["error"]["message"].as_str().unwrap().contains("certificate"),
            "{:?}",
            a.body
        );
        // Delivered anyway by a hostile server, carol's client refuses it too.
        let entry = as_delivered(&u[1], &club, &built.commit, id);
        let r = u[2].receive_entries(&[entry]).await.unwrap();
        assert_eq!(r.dropped, 1, "{r:?}");
    }
    // The group goes on: bob's honest key update (which keeps his certificate) is taken.
    u[1].update_keys(&club).await.unwrap();
    u[0].send_group(&club, "still here").await.unwrap();
    assert!(texts(&u[2].sync().await.unwrap()).contains(&"still here".to_string()));
    // The control: the same kind of commit, delivered the same way, with bob's own
    // certificate in its leaf, is taken (carol refused the two above for their certificates).
    let honest = u[1].hostile().update(&club, Wire::Public);
    let entry = as_delivered(&u[1], &club, &honest.commit, 3);
    let r = u[2].receive_entries(&[entry]).await.unwrap();
    assert_eq!(r.dropped, 0, "{r:?}");
}

async fn commits_keep_to_the_rate_limits(server: TestServer) {
    let (mut u, club) = club(&server).await;
    // Key updates are ordinary, but not a flood of them: four changes a minute by one member
    // in one conversation.
    for _ in 0..4 {
        u[1].update_keys(&club).await.unwrap();
    }
    let err = u[1].update_keys(&club).await.unwrap_err();
    assert_eq!(err.code(), Some(kith_proto::ErrorCode::RateLimited), "{err}");
    // The budget is bob's in this group, not the group's: its admin can still change it.
    u[0].group_rename(&club, "Still ours").await.unwrap();
    u[0].update_keys(&club).await.unwrap();
    // Messages are another budget: still fine.
    u[1].send_group(&club, "hello").await.unwrap();
    assert!(texts(&u[2].sync().await.unwrap()).contains(&"hello".to_string()));
}

async fn commits_keep_to_the_queue_cap(server: TestServer) {
    let (mut u, club) = club(&server).await;
    // carol stops fetching; bob's commits fill her queue up to the cap, and no further.
    let mut accepted = 0;
    let err = loop {
        match u[1].update_keys(&club).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 10, "commits past the queue cap");
    };
    assert_eq!(err.code(), Some(kith_proto::ErrorCode::QueueFull), "{err}");
    assert_eq!(u[2].raw_queue().await.len(), 4);
    // The admin's changes still go through — removing the member who flooded above all.
    u[0].sync().await.unwrap();
    u[0].group_remove(&club, "bob").await.unwrap();
    // Once carol catches up, nothing is lost for her: she follows every commit, bob is gone.
    u[2].sync().await.unwrap();
    u[0].send_group(&club, "after").await.unwrap();
    assert_eq!(texts(&u[2].sync().await.unwrap()), ["after"]);
    assert!(!u[2].group(&club).unwrap().members.contains(&"bob".to_string()));
    // In a 1:1 either person changes the settings by commit: a stranger toggling the timer
    // at someone who is away (and blocks them) fills their queue to the cap, and no further.
    let mallory = server.user("mallory").await;
    let mut mallory = mallory;
    mallory.send_text("carol", "hi").await.unwrap();
    u[2].block("mallory").await.unwrap();
    let mut accepted = 0;
    let err = loop {
        let timer = [Some(Duration::from_secs(30)), None][accepted % 2];
        match mallory.set_disappearing("carol", timer).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 10, "1:1 settings commits past the queue cap");
    };
    assert_eq!(err.code(), Some(kith_proto::ErrorCode::QueueFull), "{err}");
    assert!(u[2].raw_queue().await.len() <= 4);
}

async fn a_block_is_invisible_and_complete(server: TestServer) {
    let mut u = users(&server, &["alice", "mallory", "carol", "dave"]).await;
    u[1].send_text("alice", "hi").await.unwrap();
    u[0].sync().await.unwrap();
    // They wrote to each other, so alice sees mallory's stories — until she blocks mallory.
    u[0].send_text("mallory", "hi back").await.unwrap();
    u[1].sync().await.unwrap();
    u[1].story_post("before").await.unwrap();
    assert_eq!(texts(&u[0].sync().await.unwrap()), ["before"]);
    u[0].story_post("alice before").await.unwrap();
    let r = u[1].sync().await.unwrap();
    assert_eq!(texts(&r), ["alice before"]);
    let alice_channel = r.messages[0].conversation.clone();
    u[0].block("mallory").await.unwrap();
    // alice's own stories stop reaching mallory, without a removal from her channel that
    // would tell it: nothing at all arrives for that channel.
    u[0].story_post("alice after").await.unwrap();
    assert!(u[1].raw_queue().await.iter().all(|e| e.conversation_id != alice_channel));
    // KeyPackages: the same answer as for anyone.
    let a = u[1].hostile().post("/v1/accounts/alice/key-packages/claim", json!({})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["key_packages"].as_array().unwrap().len(), 1);
    // A group with alice: created as usual; her device never gets the Welcome.
    let trap = u[1].create_group("Trap", &strings(&["alice", "carol"])).await.unwrap();
    assert!(u[0].raw_queue().await.iter().all(|e| e.conversation_id != trap));
    // A message there: counted for alice's device as for anyone's, delivered to carol only.
    let bytes = u[1].encrypt_for_bench(&trap, "you cannot hide").unwrap();
    let a = u[1].hostile().post_message(&trap, bytes).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.body["recipients"], 2);
    u[2].sync().await.unwrap();
    assert!(u[0].raw_queue().await.iter().all(|e| e.conversation_id != trap));
    // In a group both are in (dave's), mallory's messages skip alice; dave's reach her.
    let dgroup = u[3].create_group("D", &strings(&["alice", "mallory"])).await.unwrap();
    for m in u.iter_mut().take(2) {
        m.sync().await.unwrap();
    }
    u[1].send_group(&dgroup, "from mallory").await.unwrap();
    u[3].send_group(&dgroup, "from dave").await.unwrap();
    assert_eq!(texts(&u[0].sync().await.unwrap()), ["from dave"]);
    // Its story channel: mallory's stories no longer reach alice's device at all.
    u[1].story_post("look at me").await.unwrap();
    assert!(u[0].raw_queue().await.iter().all(|e| e.expires_at.is_none()));
    let r = u[0].sync().await.unwrap();
    assert!(r.messages.is_empty(), "{:?}", r.messages);
    assert!(u[0].stories().unwrap().iter().all(|s| s.text != "look at me"));
    // Should an invitation slip through (a hostile server), alice's client drops it: a group
    // made before the block, delivered after.
    let mut eve = server.user("eve").await;
    eve.send_text("alice", "hi").await.unwrap();
    let from_eve = eve.create_group("Eve's", &strings(&["alice"])).await.unwrap();
    u[0].block("eve").await.unwrap();
    let r = u[0].sync().await.unwrap();
    assert!(r.joined.iter().all(|j| *j != from_eve));
    assert!(u[0].groups().unwrap().iter().all(|g| g.id != from_eve));
}

async fn a_story_channel_reaches_contacts_only(server: TestServer) {
    let mut u = users(&server, &["sto", "stb", "ste", "stranger"]).await;
    // sto and stb wrote to each other; sto wrote to ste, who never answered.
    u[0].send_text("stb", "hi").await.unwrap();
    u[1].sync().await.unwrap();
    u[1].send_text("sto", "hi").await.unwrap();
    u[0].send_text("ste", "hi").await.unwrap();
    u[0].sync().await.unwrap();
    u[0].story_post("first").await.unwrap();
    let r = u[1].sync().await.unwrap();
    assert_eq!(texts(&r), ["first"]);
    let channel = r.messages[0].conversation.clone();
    let r = u[2].sync().await.unwrap();
    assert!(texts(&r).iter().all(|t| t != "first"));
    assert!(u[2].stories().unwrap().is_empty());
    // A story channel straight at a stranger is refused by the server...
    let meta = GroupMeta { kind: GroupType::Story, admins: vec!["sto".into()], settings: None };
    let (_, request) = u[0].raw_conversation(&meta, &strings(&["stranger"])).await.unwrap();
    let a = u[0].hostile().post("/v1/conversations", serde_json::to_value(&request).unwrap()).await;
    assert_eq!((a.status, a.code()), (403, Some("forbidden")), "{:?}", a.body);
    // Nor can the owner hand the channel to someone else (clients would refuse it).
    let two = GroupMeta {
        kind: GroupType::Story,
        admins: vec!["sto".into(), "stb".into()],
        settings: None,
    };
    let handover = u[0].hostile().set_meta(&channel, &two, Wire::Public);
    let a = u[0].hostile().post_handshake(&channel, &handover).await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
    // ...and so is adding one to an existing channel.
    let add = u[0].hostile().add(&channel, "stranger").await;
    let a = u[0].hostile().post_handshake(&channel, &add).await;
    assert_eq!((a.status, a.code()), (403, Some("forbidden")), "{:?}", a.body);
    assert!(u[3].raw_queue().await.is_empty());
    // Changes to the audience tell nobody: sto blocks stb, then ste answers; neither stb nor
    // ste sees a line about it.
    u[0].block("stb").await.unwrap();
    u[2].send_text("sto", "hello back").await.unwrap();
    u[0].sync().await.unwrap();
    u[0].story_post("second").await.unwrap();
    for m in u.iter_mut().take(3).skip(1) {
        let r = m.sync().await.unwrap();
        for msg in &r.messages {
            assert!(msg.kind != ConversationKind::System, "{}", msg.text);
        }
    }
    assert!(u[1].stories().unwrap().iter().all(|s| s.text != "second"));
    let mut seen: Vec<String> = u[2].stories().unwrap().into_iter().map(|s| s.text).collect();
    seen.sort();
    assert_eq!(seen, ["first", "second"]);
}

async fn a_stolen_token_cannot_rotate_itself(server: TestServer) {
    let mut owner = server.user("owner").await;
    let thief = owner.hostile();
    // The thief has the token, not the device key.
    let a = thief.post("/v1/me/token", json!({ "signature": B64(vec![7; 64]) })).await;
    assert_eq!((a.status, a.code()), (403, Some("forbidden")), "{:?}", a.body);
    let a = thief.post("/v1/me/token", json!({})).await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    let stolen = owner.bearer();
    // The owner rotates (the SDK signs), and the copy is shut out.
    owner.rotate_token().await.unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/me", server.url))
        .header("authorization", stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    owner.sync().await.unwrap();
}

async fn key_packages_cannot_be_drained(server: TestServer) {
    let mut victim = server.user("victim").await;
    let start = victim.whoami().await.unwrap().key_packages_remaining;
    let budget = u64::from(server.state.safety.config.key_package_budget_per_hour);
    // Fifteen throwaway accounts, each well under its own per-claimer limit.
    let mut last_resort = 0;
    for i in 0..15 {
        let t = server.user(&format!("throwaway{i}")).await;
        let a = t.hostile().post("/v1/accounts/victim/key-packages/claim", json!({})).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        if a.body["key_packages"][0]["last_resort"] == true {
            last_resort += 1;
        }
    }
    assert_eq!(last_resort, 15 - budget);
    assert_eq!(victim.whoami().await.unwrap().key_packages_remaining, start - budget);
    // Someone who really writes still gets through (on the last-resort KeyPackage).
    let mut friend = server.user("friend").await;
    friend.send_text("victim", "hello").await.unwrap();
    assert_eq!(texts(&victim.sync().await.unwrap()), ["hello"]);
}

async fn an_owner_tops_up_what_claims_took(server: TestServer) {
    let mut owner = server.user("owner").await;
    let start = owner.whoami().await.unwrap().key_packages_remaining;
    for i in 0..40 {
        let t = server.user(&format!("claimer{i}")).await;
        let a = t.hostile().post("/v1/accounts/owner/key-packages/claim", json!({})).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    assert_eq!(owner.whoami().await.unwrap().key_packages_remaining, start - 40);
    // Nothing was joined, yet the next sync sees the pool low and tops it up.
    owner.sync().await.unwrap();
    assert!(owner.whoami().await.unwrap().key_packages_remaining >= 15);
}

async fn a_resent_message_cannot_be_reported_as_new(server: TestServer) {
    let (mut u, club) = club(&server).await;
    u[2].send_group(&club, "carol's words").await.unwrap();
    let r = u[1].sync().await.unwrap();
    let original = r.messages.iter().find(|m| m.text == "carol's words").unwrap().id.clone();
    let carol_report = u[1].report_request(&original, None).unwrap();
    u[0].sync().await.unwrap();
    // bob re-sends carol's signed message, with its commitment, as his own post.
    let franked = u[1].raw_received_franked(&original).unwrap();
    let c = {
        use openmls::prelude::{HashType, OpenMlsCrypto as _};
        let crypto = openmls_rust_crypto::RustCrypto::default();
        crypto.hmac(HashType::Sha2_256, &carol_report.fk.0, &carol_report.core.0).unwrap()
    };
    let replay = u[1].hostile().application(&club, &franked, c.as_slice());
    let a = u[1].hostile().post_message(&club, replay).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    // alice's client does not show it (the signature is not bob's)...
    let entry = u[0].raw_queue().await.pop().unwrap();
    let r = u[0].sync().await.unwrap();
    assert!(r.messages.is_empty() && r.dropped == 1, "{:?}", r.messages);
    // ...and a report of it as carol's, new message fails: its tag names bob's device.
    let mut forged = carol_report.clone();
    forged.frank = entry.frank.clone().unwrap();
    forged.server_time = entry.server_time;
    let a = u[0].hostile().post("/v1/reports", serde_json::to_value(&forged).unwrap()).await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_report")), "{:?}", a.body);
    // So does reporting it as bob's (his key did not sign it), and bob's own copy of carol's
    // tag from alice's account (tags name their recipient).
    forged.sender = kith_proto::Username::parse("bob").unwrap();
    forged.sender_device = u[1].profile().unwrap().device_id;
    let a = u[0].hostile().post("/v1/reports", serde_json::to_value(&forged).unwrap()).await;
    assert_eq!(a.code(), Some("invalid_report"), "{:?}", a.body);
    let a = u[0].hostile().post("/v1/reports", serde_json::to_value(&carol_report).unwrap()).await;
    assert_eq!(a.code(), Some("invalid_report"), "{:?}", a.body);
    assert!(server.store().reports().await.unwrap().is_empty());
    // The genuine report, by its recipient, goes through.
    u[1].report(&original, Some("abuse")).await.unwrap();
    assert_eq!(server.store().reports().await.unwrap().len(), 1);
}

async fn throwaway_accounts_cannot_move_a_reputation(server: TestServer) {
    let mut victim = server.user("victim").await;
    let mut mob = users(&server, &["mob1", "mob2", "mob3", "mob4", "mob5", "mob6"]).await;
    // A group of fresh accounts around the victim, who writes once.
    let trap = mob[0].create_group("Trap", &strings(&["victim", "mob2", "mob3"])).await.unwrap();
    victim.sync().await.unwrap();
    victim.send_group(&trap, "hello?").await.unwrap();
    for m in mob.iter_mut() {
        let r = m.sync().await.unwrap();
        if let Some(msg) = r.messages.iter().find(|x| x.text == "hello?") {
            m.report(&msg.id, Some("abuse")).await.unwrap();
        }
        m.block("victim").await.unwrap();
        // A repeated block changes nothing.
        m.block("victim").await.unwrap();
    }
    let info = server.store().account_info("victim").await.unwrap().unwrap();
    assert_eq!(info.suspended, None);
    let flags = server.store().flags().await.unwrap();
    assert!(flags.iter().all(|f| f.username != "victim"), "{flags:?}");
    let signals = server.store().signals(Some("victim")).await.unwrap();
    assert_eq!(signals.len(), 6 + 3);
    assert!(signals.iter().all(|s| !s.qualified));
    victim.send_group(&trap, "still here").await.unwrap();
}

async fn a_leave_is_never_lost_to_a_racing_commit(server: TestServer) {
    let (mut u, club) = club(&server).await;
    let _dave = server.user("dave").await;
    // bob leaves; alice, who has not synced since, adds dave.
    u[1].group_leave(&club).await.unwrap();
    u[0].group_add(&club, &strings(&["dave"])).await.unwrap();
    // Her commit had to include bob's leave: he is out of the group and out of delivery.
    let members = u[0].group(&club).unwrap().members;
    assert!(!members.contains(&"bob".to_string()), "{members:?}");
    let route = server.store().conversation_route(&hex(&club)).await.unwrap().unwrap();
    let bob_device = u[1].profile().unwrap().device_id;
    assert!(!route.members.contains(&bob_device));
    let before = u[1].raw_queue().await.len();
    u[0].send_group(&club, "without bob").await.unwrap();
    assert_eq!(u[1].raw_queue().await.len(), before);
    u[2].sync().await.unwrap();
    assert!(!u[2].group(&club).unwrap().members.contains(&"bob".to_string()));
}

async fn suspension_closes_push_connections(server: TestServer) {
    // By the policy, in this process: at once.
    let mut bob = server.user("bob").await;
    let mut push = bob.connect_push().await.unwrap();
    kith_server::safety::suspend(&server.state, "bob", "test").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), bob.receive_push(&mut push)).await;
    assert!(matches!(closed, Ok(Err(_))), "the push connection stayed open");
    // By an admin, through the store alone (as `kithd admin suspend` does from another
    // process): within `push_recheck`.
    let mut carol = server.user("carol").await;
    let mut push = carol.connect_push().await.unwrap();
    server.store().set_suspended("carol", Some("admin".into())).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while carol.receive_push(&mut push).await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "an admin's suspension left the push connection open");
}

async fn replays_and_misdirected_commits_are_refused(server: TestServer) {
    let (mut u, club) = club(&server).await;
    let direct = u[1].direct_conversation("alice").await.unwrap();
    u[0].sync().await.unwrap();
    // A commit built for the club, posted to another conversation.
    let update = u[1].hostile().update(&club, Wire::Public);
    let a = u[1].hostile().post_handshake(&direct, &update).await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
    // Posted where it belongs it is accepted once.
    let a = u[1].hostile().post_handshake(&club, &update).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    // Posted again by the same device (its answer was lost, say), it is told it was applied
    // (200, not 202), and nothing is stored or sent again.
    let before = server.store().counts().await.unwrap();
    let a = u[1].hostile().post_handshake(&club, &update).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(server.store().counts().await.unwrap(), before, "a repeat was stored again");
    // Replayed by another member, it is for an epoch gone by.
    let a = u[2].hostile().post_handshake(&club, &update).await;
    assert_eq!((a.status, a.code()), (409, Some("stale_epoch")), "{:?}", a.body);
    // bob's own state never merged that commit: for the server his next one is stale too.
    let behind = u[1].hostile().update(&club, Wire::Public);
    let a = u[1].hostile().post_handshake(&club, &behind).await;
    assert_eq!((a.status, a.code()), (409, Some("stale_epoch")), "{:?}", a.body);
    // An application message replayed by another member: stored (the server cannot tell),
    // shown to nobody — counted as a copy of one already read (its key is used up).
    u[0].sync().await.unwrap();
    u[2].sync().await.unwrap();
    u[0].send_group(&club, "once").await.unwrap();
    let original = u[1].raw_queue().await.pop().unwrap();
    assert_eq!(texts(&u[2].sync().await.unwrap()), ["once"]);
    let a = u[1].hostile().post_message(&club, original.data.0.clone()).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let r = u[2].sync().await.unwrap();
    assert!(r.messages.is_empty() && r.duplicates == 1 && r.dropped == 0, "{r:?}");
}

async fn concurrent_requests_cannot_slip_past_a_limit(server: TestServer) {
    // A young account may create 5 groups an hour; it sends 9 creations at once.
    let mut mallory = server.user("mallory").await;
    let mut requests = Vec::new();
    for i in 0..9 {
        let name = format!("member{i}");
        server.user(&name).await;
        let meta =
            GroupMeta { kind: GroupType::Group, admins: vec!["mallory".into()], settings: None };
        requests.push(mallory.raw_conversation(&meta, &[name]).await.unwrap().1);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for r in requests {
        let body = serde_json::to_value(&r).unwrap();
        let (url, bearer) = (format!("{}/v1/conversations", server.url), mallory.bearer());
        tasks.spawn(async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("authorization", bearer)
                .json(&body)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        });
    }
    let created = tasks.join_all().await.into_iter().filter(|s| *s == 201).count();
    assert_eq!(created, 5);
    // Registrations: 20 an hour from one address, 10 used above; 15 more at once get 10.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..15 {
        let url = server.url.clone();
        tasks.spawn(async move {
            let dir = tempfile::tempdir().unwrap();
            let mut c = kith_client::Client::open(dir.path()).unwrap();
            c.register(&url, &format!("burst{i}"), AccountKind::Person).await.is_ok()
        });
    }
    let registered = tasks.join_all().await.into_iter().filter(|ok| *ok).count();
    assert_eq!(registered, 10);
}

async fn a_leave_nobody_else_can_read_does_not_freeze_the_group(server: TestServer) {
    let (mut u, club) = club(&server).await;
    server.user("dave").await;
    // bob asks to leave with a proposal whose membership tag is spoiled: the server (which
    // cannot check the tag) keeps it; alice's and carol's clients cannot use it.
    let leave = u[1].hostile().leave_with_bad_tag(&club);
    let a = u[1].hostile().post_handshake(&club, &leave).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(u[2].sync().await.unwrap().dropped, 1);
    // The admin's next change completes the leave by removing bob, then goes through.
    u[0].group_add(&club, &strings(&["dave"])).await.unwrap();
    let members = u[0].group(&club).unwrap().members;
    assert!(members.contains(&"dave".to_string()) && !members.contains(&"bob".to_string()));
    // A member who is not an admin is told what is needed instead of a loop.
    let mut g = server.user("gina").await;
    let other = u[0].create_group("Other", &strings(&["carol", "gina"])).await.unwrap();
    g.sync().await.unwrap();
    u[2].sync().await.unwrap();
    let leave = g.hostile().leave_with_bad_tag(&other);
    assert_eq!(g.hostile().post_handshake(&other, &leave).await.status, 202);
    let err = u[2].update_keys(&other).await.unwrap_err();
    assert!(err.to_string().contains("an admin"), "{err}");
    u[0].update_keys(&other).await.unwrap();
    u[2].update_keys(&other).await.unwrap();
}

fn hex(id: &str) -> Vec<u8> {
    kith_proto::ConversationId::parse(id).unwrap().as_bytes().to_vec()
}

/// Capabilities that leave out the Kith extension: a KeyPackage that verifies as MLS, but
/// that no Kith group can add (the poisoned KeyPackage of the review).
fn without_kith() -> openmls::prelude::Capabilities {
    use openmls::prelude::*;
    Capabilities::new(None, None, Some(&[ExtensionType::LastResort]), None, None)
}

fn poisoned_last_resort(u: &TestUser) -> Vec<u8> {
    u.raw_key_package(|b| b.leaf_node_capabilities(without_kith()).mark_as_last_resort()).unwrap()
}

async fn an_unusable_key_package_is_refused_and_counts_against_its_uploader(server: TestServer) {
    let mut u = users(&server, &["mallory", "bob"]).await;
    let bad = poisoned_last_resort(&u[0]);
    let a = u[0]
        .hostile()
        .post("/v1/key-packages", json!({"key_packages": [], "last_resort_key_package": B64(bad)}))
        .await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_key_package")), "{:?}", a.body);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("capability"), "{:?}", a.body);
    // A one-time KeyPackage marked last-resort: refused too.
    let marked = u[0]
        .raw_key_package(|b| {
            b.leaf_node_capabilities(kith_proto::keypackage::capabilities()).mark_as_last_resort()
        })
        .unwrap();
    let a = u[0].hostile().post("/v1/key-packages", json!({"key_packages": [B64(marked)]})).await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_key_package")), "{:?}", a.body);
    // The third refused upload in an hour: the uploader cools off, and it is flagged.
    let bad = poisoned_last_resort(&u[0]);
    let a = u[0]
        .hostile()
        .post("/v1/key-packages", json!({"key_packages": [], "last_resort_key_package": B64(bad)}))
        .await;
    assert_eq!(a.status, 429, "{:?}", a.body);
    let flags = server.store().flags().await.unwrap();
    assert!(flags.iter().any(|f| f.username == "mallory"), "{flags:?}");
    // Nobody else is touched: bob reaches mallory's valid KeyPackages as before.
    u[1].send_text("mallory", "hi").await.unwrap();
    assert!(flags.iter().all(|f| f.username != "bob"));
}

async fn a_stored_unusable_key_package_is_never_handed_out(server: TestServer) {
    // One stored before the rule (or expired since): the server drops it at hand-out, and
    // the claimer is not charged for it however often it asks.
    let mut u = users(&server, &["mallory"]).await;
    let device = u[0].profile().unwrap().device_id;
    let bad = poisoned_last_resort(&u[0]);
    server.store().add_key_packages(device, vec![], Some(bad)).await.unwrap();
    // Throwaway claims spend her hourly budget of one-time KeyPackages (each claimer below
    // its own limits); past it, claims get the last-resort one, which is unusable.
    let mut answers = Vec::new();
    for i in 0..8 {
        let t = server.user(&format!("drainer{i}")).await;
        for _ in 0..2 {
            let a = t.hostile().post("/v1/accounts/mallory/key-packages/claim", json!({})).await;
            answers.push((a.status, a.code().map(str::to_string)));
        }
    }
    // Once her one-time KeyPackages are gone, nothing is handed out, and nobody cools off.
    let tail: Vec<_> = answers.iter().rev().take(4).cloned().collect();
    assert!(
        tail.iter()
            .all(|(status, code)| *status == 409 && code.as_deref() == Some("no_key_packages")),
        "{answers:?}"
    );
    assert!(server.store().flags().await.unwrap().is_empty());
    // Her own device still sees its one-time KeyPackages counted as before.
    assert!(u[0].whoami().await.unwrap().key_packages_remaining > 0);
}

async fn a_poisoning_stranger_flags_nobody(server: TestServer) {
    let mut u = users(&server, &["bob", "carol", "mallory", "dave"]).await;
    // bob has a story channel with carol.
    u[0].send_text("carol", "hi carol").await.unwrap();
    u[1].sync().await.unwrap();
    u[1].send_text("bob", "hi bob").await.unwrap();
    u[0].sync().await.unwrap();
    u[0].story_post("at the lake").await.unwrap();
    // mallory gets one reply, then poisons her last-resort KeyPackage (stored as a server
    // from before the rule would hold it).
    u[2].send_text("bob", "hello from mallory").await.unwrap();
    u[0].sync().await.unwrap();
    u[0].send_text("mallory", "who is this?").await.unwrap();
    let device = u[2].profile().unwrap().device_id;
    let bad = poisoned_last_resort(&u[2]);
    server.store().add_key_packages(device, vec![], Some(bad)).await.unwrap();
    // Every sync of bob's shows what came, adds nobody it cannot, and says so.
    u[1].send_text("bob", "carol again").await.unwrap();
    for round in 0..6 {
        let r = u[0].sync().await.unwrap();
        if round == 0 {
            assert_eq!(texts(&r), ["carol again"]);
        }
        let not_added: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.kind == kith_client::ProblemKind::NotAdded)
            .map(|p| p.user.clone())
            .collect();
        // Said once; then left alone for a day (not claimed at every sync).
        let want = if round == 0 { vec![Some("mallory".to_string())] } else { vec![] };
        assert_eq!(not_added, want, "round {round}: {:?}", r.problems);
    }
    // bob is not slowed, cooled off or flagged: he still opens conversations.
    u[0].send_text("dave", "hi dave").await.unwrap();
    assert!(server.store().flags().await.unwrap().is_empty());
    assert_eq!(texts(&u[3].sync().await.unwrap()), ["hi dave"]);
}

async fn ana_ben_and_a_poisoner(server: &TestServer) -> Vec<TestUser> {
    let u = users(server, &["ana", "ben", "mallory"]).await;
    let device = u[2].profile().unwrap().device_id;
    let bad = poisoned_last_resort(&u[2]);
    server.store().add_key_packages(device, vec![], Some(bad)).await.unwrap();
    u
}

async fn a_group_with_a_poisoner_is_made_without_her_and_costs_nothing(server: TestServer) {
    let mut u = ana_ben_and_a_poisoner(&server).await;
    // Four tries in an hour, as someone puzzled would: each makes the group with ben, says
    // mallory could not be added, and costs ana nothing with the policy.
    for round in 0..4 {
        let (id, problems) = u[0]
            .create_group_reporting(&format!("Picnic {round}"), &strings(&["ben", "mallory"]))
            .await
            .unwrap();
        let who: Vec<_> = problems.iter().map(|p| p.user.clone()).collect();
        assert_eq!(who, [Some("mallory".to_string())]);
        let history = u[0].conversation_history(&id).unwrap();
        assert!(history.iter().any(|m| m.text.starts_with("mallory could not be added")));
    }
    let r = u[1].sync().await.unwrap();
    assert_eq!(r.joined.len(), 4);
    assert!(server.store().flags().await.unwrap().is_empty());
    // With nobody else to add, the reason is the answer.
    let err = u[0].create_group("Just her", &strings(&["mallory"])).await.unwrap_err();
    assert_eq!(err.code(), Some(kith_proto::ErrorCode::NoKeyPackages), "{err}");
}

async fn a_credential_key_serves_one_device_only(server: TestServer) {
    let u = users(&server, &["mallory"]).await;
    let key = u[0].profile().unwrap().signature_key.clone();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/accounts", server.url))
        .json(&json!({
            "username": "mallory2", "credential_key": B64(key),
            "key_packages": [], "last_resort_key_package": B64(vec![1, 2, 3]),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_key_package", "{body}");
    assert!(server.store().account_info("mallory2").await.unwrap().is_none());
}

async fn an_expired_key_package_gives_way_to_the_next(server: TestServer) {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::*;
    // An account idle for months: its oldest one-time KeyPackages have expired.
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let signer = openmls_basic_credential::SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let make = |lifetime: Option<Lifetime>, last_resort: bool| {
        let mut b =
            KeyPackage::builder().leaf_node_capabilities(kith_proto::keypackage::capabilities());
        if let Some(l) = lifetime {
            b = b.key_package_lifetime(l);
        }
        if last_resort {
            b = b.mark_as_last_resort();
        }
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"idle".to_vec()).into(),
            signature_key: signer.public().into(),
        };
        b.build(kith_proto::keypackage::CIPHERSUITE, &provider, &signer, credential)
            .unwrap()
            .key_package()
            .tls_serialize_detached()
            .unwrap()
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/accounts", server.url))
        .json(&json!({
            "username": "idle", "credential_key": B64(signer.to_public_vec()),
            "key_packages": [], "last_resort_key_package": B64(make(None, true)),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let device = resp.json::<serde_json::Value>().await.unwrap()["device_id"].as_u64().unwrap();
    let expired = || make(Some(Lifetime::init(1, 2)), false);
    server
        .store()
        .add_key_packages(device, vec![expired(), expired(), make(None, false)], None)
        .await
        .unwrap();
    let u = users(&server, &["claimer"]).await;
    let a = u[0].hostile().post("/v1/accounts/idle/key-packages/claim", json!({})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let handed = a.body["key_packages"].as_array().unwrap();
    assert_eq!(handed.len(), 1);
    assert_eq!(
        handed[0]["last_resort"], false,
        "the fresh one-time KeyPackage, not the last resort"
    );
}

async fn a_device_renews_its_last_resort_key_package(server: TestServer) {
    let mut u = users(&server, &["owner", "claimer", "friend"]).await;
    let claim = async |u: &TestUser| {
        let a = u.hostile().post("/v1/accounts/owner/key-packages/claim", json!({})).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body["key_packages"][0]["key_package"].as_str().unwrap().to_string()
    };
    let before = claim(&u[1]).await;
    // Within four weeks a sync leaves it alone; past them, the next sync uploads a fresh one.
    u[0].sync().await.unwrap();
    assert_eq!(claim(&u[1]).await, before);
    // One of its stored one-time KeyPackages is old (here: not one at all).
    let device = u[0].profile().unwrap().device_id;
    let held = server.store().add_key_packages(device, vec![b"old".to_vec()], None).await.unwrap();
    u[0].raw_age_last_resort(29).unwrap();
    u[0].sync().await.unwrap();
    let after = claim(&u[1]).await;
    assert_ne!(after, before, "the last-resort KeyPackage was not renewed");
    // The one-time ones were replaced with a fresh batch: the old one is gone.
    let now = u[0].whoami().await.unwrap().key_packages_remaining;
    assert_eq!((held, now), (51, 50));
    // And the renewed one works: someone new opens a conversation on it.
    u[2].send_text("owner", "hello").await.unwrap();
    assert_eq!(texts(&u[0].sync().await.unwrap()), ["hello"]);
}

async fn a_member_cannot_hand_its_seat_to_another_account(server: TestServer) {
    // mallory holds a person account in a 1:1 with ana and a business account; she commits an
    // update whose new leaf is the business's — which would bring it into ana's chat without
    // an add (and make the server believe ana opted in to it).
    let mut ana = server.user("ana").await;
    let mut mallory = server.user("mallory").await;
    let shop = {
        let dir = tempfile::tempdir().unwrap();
        let mut client = kith_client::Client::open(dir.path()).unwrap();
        client.register_business(&server.url, "shop", "Shop", "Deals").await.unwrap();
        TestUser { client, dir }
    };
    mallory.send_text("ana", "hi ana").await.unwrap();
    ana.sync().await.unwrap();
    let conv = mallory.history("ana").unwrap()[0].conversation.clone();
    let built = mallory.hostile().hand_seat_to(&conv, &shop);
    let a = mallory.hostile().post_handshake(&conv, &built).await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_message")), "{:?}", a.body);
    // Delivered anyway (a hostile server): ana's client refuses it, and the chat goes on.
    let r = ana
        .receive_entries(&[QueueEntry {
            seq: 1,
            message_id: 77_000_001,
            conversation_id: conv.clone(),
            kind: EntryKind::Message,
            sender: "mallory".into(),
            sender_device: mallory.profile().unwrap().device_id,
            sender_kind: AccountKind::Person,
            sender_verified: false,
            data: B64(built.commit.clone()),
            server_time: 0,
            expires_at: None,
            frank: None,
        }])
        .await
        .unwrap();
    assert_eq!(r.dropped, 1, "{:?}", r.problems);
    assert!(!server.store().share_direct_conversation("ana", "shop").await.unwrap());
    mallory.send_text("ana", "still me").await.unwrap();
    assert_eq!(texts(&ana.sync().await.unwrap()), ["still me"]);
}

async fn a_forged_leave_costs_the_one_left_nothing(server: TestServer) {
    // mallory gets one reply from ana, then leaves their chat with a request only the server
    // takes (its membership tag spoiled): ana's device still counts her a contact, and the
    // server refuses her in ana's story audience. ana's syncs must not keep claiming her
    // KeyPackages until the claim limits turn on ana.
    let mut u = users(&server, &["ana", "carol", "mallory"]).await;
    u[1].send_text("ana", "hi ana").await.unwrap();
    u[0].sync().await.unwrap();
    u[0].send_text("carol", "hi carol").await.unwrap();
    u[0].story_post("first").await.unwrap();
    u[2].send_text("ana", "hello from mallory").await.unwrap();
    u[0].sync().await.unwrap();
    u[0].send_text("mallory", "who is this?").await.unwrap();
    let chat = u[2].history("ana").unwrap()[0].conversation.clone();
    let leave = u[2].hostile().leave_with_bad_tag(&chat);
    let a = u[2].hostile().post_handshake(&chat, &leave).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    for _ in 0..8 {
        u[0].sync().await.unwrap();
    }
    u[0].story_post("second").await.unwrap();
    assert!(server.store().flags().await.unwrap().is_empty());
    u[1].sync().await.unwrap();
    let stories: Vec<String> = u[1].stories().unwrap().into_iter().map(|s| s.text).collect();
    assert!(stories.contains(&"second".to_string()), "{stories:?}");
    // ana still opens conversations: nothing slowed or cooled her off.
    let _dave = server.user("dave").await;
    u[0].send_text("dave", "hi dave").await.unwrap();
}

async fn a_flood_of_invitations_pushes_no_friend_s_out(server: TestServer) {
    // carol posts a story to ana, who has not written back yet: its invitation waits on ana's
    // device. ben, a stranger ana never answered either, then invites her to 25 story channels.
    let mut u = users(&server, &["ana", "carol", "ben"]).await;
    u[1].send_text("ana", "hi ana").await.unwrap();
    u[1].story_post("from carol").await.unwrap();
    let r = u[0].sync().await.unwrap();
    assert!(r.held >= 1, "carol's invitation waits for ana to write back");
    u[2].send_text("ana", "hello").await.unwrap();
    let meta = GroupMeta { kind: GroupType::Story, admins: vec!["ben".into()], settings: None };
    for _ in 0..25 {
        let (_, req) = u[2].raw_conversation(&meta, &strings(&["ana"])).await.unwrap();
        let a = u[2].hostile().post("/v1/conversations", serde_json::to_value(&req).unwrap()).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    let r = u[0].sync().await.unwrap();
    // ben's are held up to a few; the rest are dropped and said.
    assert!(
        r.problems.iter().filter(|p| p.kind == kith_client::ProblemKind::Unjoinable).count() >= 5
    );
    // carol's invitation is still there: her story shows once ana has written to her.
    u[0].send_text("carol", "hi carol").await.unwrap();
    u[0].sync().await.unwrap();
    let stories: Vec<String> = u[0].stories().unwrap().into_iter().map(|s| s.text).collect();
    assert!(stories.contains(&"from carol".to_string()), "{stories:?}");
}

/// The id a device gives its message (so a repeat is delivered once) is that device's alone:
/// another member reusing it stores its own message, cannot silence the first device's next
/// one, and a repeat is answered as delivered even after its sender left.
async fn a_message_id_is_its_own_device_s(server: TestServer) {
    let (mut u, club) = club(&server).await;
    let path = format!("/v1/conversations/{club}/messages");
    let body = |bytes: Vec<u8>, id: &[u8], repeat: bool| json!({"message": B64(bytes), "client_id": B64(id.to_vec()), "repeat": repeat});
    let first = u[0].encrypt_for_bench(&club, "first").unwrap();
    let a = u[0].hostile().post(&path, body(first, &[7; 16], false)).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let first_id = a.body["message_id"].as_u64().unwrap();
    // bob takes alice's id for his own message: it is his, stored.
    let bobs = u[1].encrypt_for_bench(&club, "bob's").unwrap();
    let a = u[1].hostile().post(&path, body(bobs, &[7; 16], true)).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_ne!(a.body["message_id"].as_u64(), Some(first_id));
    // alice's repeat (other bytes) is answered with her first, and stores nothing.
    let again = u[0].encrypt_for_bench(&club, "first, once more").unwrap();
    let a = u[0].hostile().post(&path, body(again, &[7; 16], false)).await;
    assert_eq!((a.status, a.body["repeated"].as_bool()), (200, Some(true)), "{:?}", a.body);
    assert_eq!(a.body["message_id"].as_u64(), Some(first_id));
    // Saying "repeat" of an id never used sends a message like any other.
    let fresh = u[0].encrypt_for_bench(&club, "second").unwrap();
    let a = u[0].hostile().post(&path, body(fresh, &[8; 16], true)).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    // An id that is not 16 bytes is refused, nothing stored.
    let odd = u[0].encrypt_for_bench(&club, "odd").unwrap();
    let a = u[0].hostile().post(&path, body(odd, &[9; 15], false)).await;
    assert_eq!((a.status, a.code()), (400, Some("bad_request")), "{:?}", a.body);
    let texts: Vec<String> =
        u[2].sync().await.unwrap().messages.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["first", "bob's", "second"]);
    // alice leaves; her repeat is still answered as delivered (not `not_a_member`).
    u[0].group_leave(&club).await.unwrap();
    let late = b"whatever the bytes".to_vec();
    let a = u[0].hostile().post(&path, body(late.clone(), &[7; 16], true)).await;
    assert_eq!((a.status, a.body["message_id"].as_u64()), (200, Some(first_id)), "{:?}", a.body);
    // Without saying so, it is an ordinary post by a device that left.
    let a = u[0].hostile().post(&path, body(late, &[7; 16], false)).await;
    assert_eq!(a.code(), Some("not_a_member"), "{:?}", a.body);
}

/// Saying "repeat" (with or without an id, one stored or not) does not get a post past the
/// message rate: found in review, where a repeat without an id skipped the rate entirely.
async fn a_repeat_is_held_to_the_rate_like_any_post(server: TestServer) {
    let (u, club) = club(&server).await;
    let path = format!("/v1/conversations/{club}/messages");
    let mut answered = Vec::new();
    for n in 0..8u8 {
        let bytes = u[0].encrypt_for_bench(&club, &format!("post {n}")).unwrap();
        let body = match n % 3 {
            0 => json!({"message": B64(bytes), "repeat": true}),
            1 => json!({"message": B64(bytes), "repeat": true, "client_id": B64(vec![n; 16])}),
            _ => json!({"message": B64(bytes), "repeat": true, "client_id": B64(vec![1; 16])}),
        };
        answered.push(u[0].hostile().post(&path, body).await.status);
    }
    let limited = answered.iter().filter(|s| **s == 429).count();
    assert!(limited >= 4, "a repeat got past the rate: {answered:?}");
}
