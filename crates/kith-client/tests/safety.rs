//! Safety end to end: verified reports (and every forgery refused), blocking, and the
//! metadata-only policy.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::Arc;
use std::time::Duration;

use kith_client::{ClientError, ErrorCode, Refusal};
use kith_proto::payload::{Body, Payload};
use kith_proto::{B64, QueueEntry, ReportRequest};
use kith_testkit::{ManualClock, TestServer, TestUser, test_config};
use serde_json::Value;

async fn post_report(server: &TestServer, who: &TestUser, req: &ReportRequest) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/reports", server.url))
        .header("authorization", who.bearer())
        .json(req)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

fn id_of(r: &kith_client::SyncReport, text: &str) -> String {
    r.messages.iter().find(|m| m.text == text).unwrap().id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_reveals_one_message_and_every_forgery_is_refused() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let dave = server.user("dave").await;
    carol.send_text("bob", "hi bob, it's carol").await.unwrap();
    carol.send_text("bob", "buy cheap watches at example.com").await.unwrap();
    alice.send_text("bob", "lunch?").await.unwrap();
    let r = bob.sync().await.unwrap();
    let spam = id_of(&r, "buy cheap watches at example.com");
    let hello = id_of(&r, "hi bob, it's carol");
    let lunch = id_of(&r, "lunch?");
    // Every delivered application message came with a franking tag.
    assert!(r.dropped == 0);

    let genuine = bob.report_request(&spam, Some("spam")).unwrap();
    use ErrorCode::InvalidReport;
    let refused = |code: &str, body: &Value| assert_eq!(body["error"]["code"], code, "{body}");

    // An edited text.
    let mut edited = genuine.clone();
    let mut payload = Payload::decode(&edited.core.0).unwrap();
    payload.body = Body::Text { text: "carol threatened me".into() };
    edited.core = B64(payload.encode());
    let (status, body) = post_report(&server, &bob, &edited).await;
    assert_eq!(status, 400);
    refused(InvalidReport.as_str(), &body);
    // A wrong franking key.
    let mut wrong_key = genuine.clone();
    wrong_key.fk = B64(vec![7; 32]);
    refused(InvalidReport.as_str(), &post_report(&server, &bob, &wrong_key).await.1);
    // A forged tag.
    let mut forged = genuine.clone();
    forged.frank.tag = B64(vec![1; 32]);
    refused(InvalidReport.as_str(), &post_report(&server, &bob, &forged).await.1);
    // A replayed tag: the real tag of carol's first message, on the spam's body.
    let other = bob.report_request(&hello, None).unwrap();
    let mut replayed = genuine.clone();
    replayed.frank = other.frank.clone();
    replayed.server_time = other.server_time;
    refused(InvalidReport.as_str(), &post_report(&server, &bob, &replayed).await.1);
    // A message attributed to someone who did not send it.
    let mut misattributed = genuine.clone();
    misattributed.sender = kith_proto::Username::parse("alice").unwrap();
    misattributed.sender_device = alice.profile().unwrap().device_id;
    refused(InvalidReport.as_str(), &post_report(&server, &bob, &misattributed).await.1);
    // A report by someone who was not a recipient.
    let (status, body) = post_report(&server, &dave, &genuine).await;
    assert_eq!(status, 403);
    refused("not_a_member", &body);
    assert!(server.store().reports().await.unwrap().is_empty(), "a forgery was recorded");

    // The genuine report goes through, once.
    let first = bob.report(&spam, Some("spam")).await.unwrap();
    assert!(!first.repeated);
    let again = bob.report(&spam, Some("a new reason")).await.unwrap();
    assert_eq!((again.report_id, again.repeated), (first.report_id, true));
    let reports = server.store().reports().await.unwrap();
    assert_eq!(reports.len(), 1);
    let rep = &reports[0];
    assert_eq!(rep.sender, "carol");
    assert_eq!(rep.reporter, "bob");
    assert_eq!(rep.text, "buy cheap watches at example.com");
    assert_eq!(rep.reason.as_deref(), Some("spam"));
    assert_eq!(rep.sender_device, carol.profile().unwrap().device_id);
    // Nothing else of the conversation reached the server.
    assert!(!rep.text.contains("hi bob"));
    let _ = lunch;

    // Your own messages and unknown ids cannot be reported.
    let mine = carol.history("bob").unwrap()[0].id.clone();
    let refusal = |r: Result<_, ClientError>| r.err().and_then(|e| e.refusal());
    assert_eq!(refusal(carol.report(&mine, None).await), Some(Refusal::UnknownMessage));
    assert_eq!(refusal(bob.report("nope", None).await), Some(Refusal::UnknownMessage));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_franking_key_rotation_keeps_old_tags_verifiable() {
    let server = TestServer::start().await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    carol.send_text("bob", "before the rotation").await.unwrap();
    let r = bob.sync().await.unwrap();
    let old = id_of(&r, "before the rotation");
    kith_server::safety::franking::Franking::rotate(&**server.store(), server.state.now())
        .await
        .unwrap();
    server.state.franking.reload(&**server.store()).await.unwrap();
    carol.send_text("bob", "after the rotation").await.unwrap();
    let r = bob.sync().await.unwrap();
    let new = id_of(&r, "after the rotation");
    let (a, b) = (bob.report_request(&old, None).unwrap(), bob.report_request(&new, None).unwrap());
    assert_ne!(a.frank.key_id, b.frank.key_id);
    bob.report(&old, None).await.unwrap();
    bob.report(&new, None).await.unwrap();
    assert_eq!(server.store().reports().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_holds_and_the_blocked_sender_is_not_told() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();
    bob.send_text("alice", "hello").await.unwrap();
    alice.sync().await.unwrap();
    assert_eq!(bob.contacts().unwrap().len(), 1);

    // This one is already queued when bob blocks: his client drops it.
    alice.send_text("bob", "slipped through").await.unwrap();
    bob.block("alice").await.unwrap();
    assert!(bob.contacts().unwrap().is_empty(), "a block ends the contact");
    assert_eq!(bob.blocked().unwrap(), ["alice"]);
    let r = bob.sync().await.unwrap();
    assert!(r.messages.is_empty());
    assert_eq!((r.blocked, r.dropped), (1, 0), "counted as blocked, not as unusable");

    // Alice is not told: her send succeeds; bob's queue stays empty.
    alice.send_text("bob", "are you ignoring me?").await.unwrap();
    assert!(bob.raw_queue().await.is_empty());
    // A new conversation gets the same answers as anyone's (KeyPackages, the creation, the
    // send), and reaches nobody: the Welcome is never queued for bob.
    alice.delete_conversation("bob").await.unwrap();
    alice.send_text("bob", "new thread").await.unwrap();
    assert!(bob.raw_queue().await.iter().all(|e| e.kind != kith_proto::EntryKind::Welcome));
    // (Her leave of the old conversation reaches bob's device — it is the group's state —
    // but his client shows nothing from an account he blocks.)
    assert!(bob.sync().await.unwrap().messages.is_empty());

    bob.unblock("alice").await.unwrap();
    alice.send_text("bob", "friends again?").await.unwrap();
    let r = bob.sync().await.unwrap();
    let direct: Vec<&str> = r
        .messages
        .iter()
        .filter(|m| m.kind == kith_client::ConversationKind::Direct)
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(direct, ["friends again?"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_slows_down_cools_off_and_suspends_on_metadata_alone() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let mut config = test_config();
    config.safety.max_messages_per_minute = 5;
    config.safety.max_new_conversations_per_hour = 4; // 2 for young accounts
    config.safety.blocks_to_flag = 2;
    let server = TestServer::start_with(config, clock.clone()).await;
    let mut mallory = server.user("mallory").await;
    let mut u: Vec<TestUser> = Vec::new();
    for i in 0..5 {
        u.push(server.user(&format!("user{i}")).await);
    }

    // Slow down: the sixth message within a minute.
    for i in 0..5 {
        mallory.send_text("user0", &format!("m{i}")).await.unwrap();
    }
    let err = mallory.send_text("user0", "one too many").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
    clock.advance(Duration::from_secs(61));
    mallory.send_text("user0", "after a pause").await.unwrap();

    // Cool-off: a young account opening a third new conversation within the hour.
    mallory.send_text("user1", "hi").await.unwrap();
    let err = mallory.send_text("user2", "hi").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
    assert!(err.to_string().contains("cooling off"), "{err}");
    let flags = server.store().flags().await.unwrap();
    assert_eq!((flags[0].username.as_str(), flags[0].action.as_str()), ("mallory", "cool_off"));
    // Existing conversations still work during the cool-off; after it, new ones do too.
    mallory.send_text("user0", "still talking").await.unwrap();
    clock.advance(Duration::from_secs(61 * 60));
    mallory.send_text("user2", "hi").await.unwrap();

    // Blocks never suspend, and count only from established accounts mallory wrote to.
    // Two brand-new accounts mallory wrote to block it: not counted.
    for v in u.iter_mut().take(2) {
        v.sync().await.unwrap();
        v.block("mallory").await.unwrap();
    }
    let review = || async {
        server.store().flags().await.unwrap().into_iter().filter(|f| f.action == "review").count()
    };
    assert_eq!(review().await, 0);
    clock.advance(Duration::from_secs(73 * 3600));
    // user3 is established but mallory never wrote to it: not counted either.
    u[3].block("mallory").await.unwrap();
    // user2 (written to) counts; a repeated block by it changes nothing.
    u[2].sync().await.unwrap();
    u[2].block("mallory").await.unwrap();
    u[2].unblock("mallory").await.unwrap();
    u[2].block("mallory").await.unwrap();
    assert_eq!(review().await, 0);
    // A second qualified block flags mallory for an admin, once; mallory is not suspended.
    mallory.send_text("user4", "hi").await.unwrap();
    u[4].sync().await.unwrap();
    u[4].block("mallory").await.unwrap();
    assert_eq!(review().await, 1);
    let info = server.store().account_info("mallory").await.unwrap().unwrap();
    assert_eq!(info.suspended, None);
    mallory.send_text("user0", "still here").await.unwrap();
    let signals = server.store().signals(Some("mallory")).await.unwrap();
    assert_eq!(signals.len(), 5);
    assert_eq!(signals.iter().filter(|s| s.qualified).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_address() {
    let mut config = test_config();
    config.safety.registrations_per_ip_per_hour = 2;
    let server = TestServer::start_with(config, Arc::new(kith_testkit::SystemClock)).await;
    // Refused attempts do not count: a NAT's bad requests cannot lock it out.
    for _ in 0..5 {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/accounts", server.url))
            .json(&serde_json::json!({"username": "X", "credential_key": "", "key_packages": [],
                "last_resort_key_package": ""}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
    }
    server.user("first").await;
    server.user("second").await;
    let dir = tempfile::tempdir().unwrap();
    let mut third = kith_client::Client::open(dir.path()).unwrap();
    let err = third.register(&server.url, "third", kith_client::AccountKind::Person).await;
    assert_eq!(err.unwrap_err().code(), Some(ErrorCode::RateLimited));
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/accounts", server.url))
        .json(&serde_json::json!({
            "username": "fourth", "credential_key": "", "key_packages": [],
            "last_resort_key_package": ""
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_the_server_sends_is_refused_without_a_panic() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let conv = alice.direct_conversation("bob").await.unwrap();
    bob.sync().await.unwrap();
    // A seeded generator: the same garbage every run.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut entries = Vec::new();
    for i in 0..400u64 {
        let len = (next() % 700) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && data.len() > 4 {
            // Starts like an MLS message: version 1, a wire format.
            data[..4].copy_from_slice(&[0, 1, 0, (1 + i % 3) as u8]);
        }
        entries.push(QueueEntry {
            seq: 5_000_000 + i,
            message_id: 5_000_000 + i,
            conversation_id: if i % 3 == 0 { "ab".repeat(16) } else { conv.clone() },
            kind: if i % 5 == 0 {
                kith_proto::EntryKind::Welcome
            } else {
                kith_proto::EntryKind::Message
            },
            sender: "alice".into(),
            sender_device: alice.profile().unwrap().device_id,
            sender_kind: kith_client::AccountKind::Person,
            sender_verified: false,
            data: B64(data),
            server_time: 0,
            expires_at: None,
            frank: None,
        });
    }
    let report = bob.receive_entries(&entries).await.unwrap();
    assert!(report.messages.is_empty());
    assert_eq!(report.dropped, 400);
    // And the conversation still works.
    alice.send_text("bob", "still fine").await.unwrap();
    assert_eq!(bob.sync().await.unwrap().messages[0].text, "still fine");
}

/// Ordinary use on the default settings never trips the policy: in one hour, write to a friend,
/// post a story and open two groups with that friend — and again the next hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_use_never_trips_the_policy() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let server = TestServer::start_with(test_config(), clock.clone()).await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    for hour in 0..3 {
        alice.send_text("bob", &format!("hour {hour}")).await.unwrap();
        bob.sync().await.unwrap();
        bob.send_text("alice", "hi!").await.unwrap();
        alice.sync().await.unwrap();
        alice.story_post(&format!("story {hour}")).await.unwrap();
        for g in 0..2 {
            let id =
                alice.create_group(&format!("plans {hour}.{g}"), &["bob".into()]).await.unwrap();
            alice.send_group(&id, "who's in?").await.unwrap();
        }
        bob.sync().await.unwrap();
        clock.advance(Duration::from_secs(3600));
    }
    assert!(server.store().flags().await.unwrap().is_empty());
    assert_eq!(server.store().account_info("alice").await.unwrap().unwrap().suspended, None);
}

/// Found by an attack on the system lines: the SDK names its own lines after the server's
/// message id (`sys-N-0`), which anyone can guess. A modified client posting a message with
/// such an id made its message take the place of the line "alice set disappearing messages to
/// 5m" on bob's device: the timer changed and bob was never told. A received message must have
/// an id a client makes (32 lowercase hex), so the two can never meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_cannot_take_the_place_of_a_system_line() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();
    let conversation = bob.history("alice").unwrap()[0].conversation.clone();

    // The last message id the server gave, and the one the timer's commit will get after three
    // crafted messages.
    let last_id = || {
        let db = rusqlite::Connection::open(server.data.path().join("kithd.db")).unwrap();
        db.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'messages'", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };
    let commit_id = last_id() + 4;
    // A modified client: messages whose ids are the lines bob's device will write, posted
    // through alice's own outbox (encrypted and franked as any of hers).
    {
        let db = rusqlite::Connection::open(alice.dir().join("kith.db")).unwrap();
        for (n, id) in [commit_id, commit_id + 1, commit_id + 2].into_iter().enumerate() {
            let payload = Payload::new(format!("sys-{id}-0"), 1, Body::Text { text: "ok".into() });
            db.execute(
                "INSERT INTO kith_messages (id, conversation, kind, sender, text, sent_at,
                 received_at, outgoing, expires_at, from_business, verified, shown, state,
                 client_id, payload)
                 VALUES (?1, ?2, 'direct', 'alice', 'ok', ?3, ?3, 1, NULL, 0, 0, 1, 'sending', ?4, ?5)",
                rusqlite::params![
                    format!("sys-{id}-0"),
                    conversation,
                    1 + n as i64,
                    format!("{:032x}", 0xfeed_0000 + n),
                    payload.encode()
                ],
            )
            .unwrap();
        }
    }
    alice.sync().await.unwrap();
    assert_eq!(alice.waiting_to_send().unwrap(), 0, "the crafted messages were not posted");
    alice.set_disappearing("bob", Some(Duration::from_secs(300))).await.unwrap();
    assert_eq!(last_id(), commit_id, "the timer's commit did not get the id the attack aimed at");

    let r = bob.sync().await.unwrap();
    assert!(r.messages.iter().all(|m| m.text != "ok"), "a message with a line's id was shown");
    let lines: Vec<String> = bob
        .history("alice")
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == kith_client::ConversationKind::System)
        .map(|m| m.text)
        .collect();
    assert!(lines.contains(&"alice set disappearing messages to 5m".to_string()), "{lines:?}");
}
