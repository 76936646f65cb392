//! End to end: real kithd (in-process, loopback port), real clients, real MLS.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use kith_client::{ClientError, ConversationKind, ErrorCode, Refusal};
use kith_testkit::TestServer;
use std::time::Duration;

/// What the server answers `GET /v1/me` with this `Authorization` header.
async fn status_of(server: &str, bearer: &str) -> u16 {
    let resp = reqwest::Client::new()
        .get(format!("{server}/v1/me"))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_and_bob_exchange_messages_both_ways() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;

    // Bob is offline: alice writes twice before he syncs.
    let sent1 = alice.send_text("bob", "hello bob").await.unwrap();
    let sent2 = alice.send_text("bob", "are you there?").await.unwrap();
    assert_eq!(sent1.conversation, sent2.conversation, "one conversation per pair");

    let report = bob.sync().await.unwrap();
    assert_eq!(report.joined, vec![sent1.conversation.clone()]);
    let texts: Vec<&str> = report.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hello bob", "are you there?"]);
    assert!(
        report.messages.iter().all(|m| m.from == "alice" && m.kind == ConversationKind::Direct)
    );
    assert_eq!(report.messages[0].id, sent1.id);

    // A second sync brings nothing new.
    let again = bob.sync().await.unwrap();
    assert!(again.messages.is_empty() && again.joined.is_empty() && again.dropped == 0);

    // Bob answers in the same conversation.
    let reply = bob.send_text("alice", "yes, hi alice").await.unwrap();
    assert_eq!(reply.conversation, sent1.conversation);
    let got = alice.sync().await.unwrap();
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].text, "yes, hi alice");
    assert_eq!(got.messages[0].from, "bob");

    // Both histories hold the three messages in order.
    for client in [&alice.client, &bob.client] {
        let peer = if client.profile().unwrap().username == "alice" { "bob" } else { "alice" };
        let h: Vec<String> = client.history(peer).unwrap().into_iter().map(|m| m.text).collect();
        assert_eq!(h, ["hello bob", "are you there?", "yes, hi alice"]);
    }

    // Everything was acknowledged, so the server holds no message any more.
    let counts = server.store().counts().await.unwrap();
    assert_eq!((counts.messages, counts.queue_entries), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_delivers_to_a_connected_device() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;

    alice.send_text("bob", "before connecting").await.unwrap();
    let mut push = bob.connect_push().await.unwrap();
    // What waited is pushed first.
    let mut texts = Vec::new();
    while texts.is_empty() {
        let r = bob.receive_push(&mut push).await.unwrap();
        texts.extend(r.messages.into_iter().map(|m| m.text));
    }
    assert_eq!(texts, ["before connecting"]);

    // Then new messages arrive without a fetch.
    alice.send_text("bob", "live one").await.unwrap();
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), bob.receive_push(&mut push))
        .await
        .expect("push within 10 s")
        .unwrap();
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].text, "live one");

    // The acks went over the socket: the server keeps nothing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let c = server.store().counts().await.unwrap();
        if c.queue_entries == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "acks over the socket never landed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Pushed entries come straight from the send that committed them; Welcomes and commits make
/// the connection read its queue instead. Mixed in one burst, every message still arrives
/// exactly once, each sender's in order, and all are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_mixed_with_new_conversations_is_pushed_once_each() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut carol = server.user("carol").await;
    let mut bob = server.user("bob").await;
    let mut push = bob.connect_push().await.unwrap();

    const BURST: usize = 120;
    let mut sent = Vec::new();
    for n in 0..BURST {
        sent.push(format!("alice {n}"));
        alice.send_text("bob", &sent[n]).await.unwrap();
        if n == BURST / 2 {
            // A new conversation (a Welcome, then a story-channel commit) mid-burst.
            carol.send_text("bob", "carol here").await.unwrap();
        }
    }
    let (mut from_alice, mut from_carol, mut duplicates, mut dropped) = (Vec::new(), 0, 0, 0);
    while from_alice.len() < BURST || from_carol < 1 {
        let r = tokio::time::timeout(Duration::from_secs(10), bob.receive_push(&mut push))
            .await
            .expect("pushed within 10 s")
            .unwrap();
        duplicates += r.duplicates;
        dropped += r.dropped;
        for m in r.messages {
            match m.from.as_str() {
                "alice" => from_alice.push(m.text),
                _ => from_carol += 1,
            }
        }
    }
    assert_eq!(from_alice, sent, "alice's messages once each, in order");
    assert_eq!(from_carol, 1);
    assert_eq!((duplicates, dropped), (0, 0), "nothing was sent twice or lost");

    // The acks went over the socket: the server keeps nothing for bob.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.store().queue_depths(&[bob.profile().unwrap().device_id]).await.unwrap() != [0] {
        assert!(std::time::Instant::now() < deadline, "acks over the socket never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_is_shown_once() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "only once").await.unwrap();

    // Fetch twice without acknowledging: the server hands out the same entries again.
    let mut pages = Vec::new();
    for _ in 0..2 {
        let entries = bob.raw_queue().await;
        assert_eq!(entries.len(), 2, "welcome and message");
        pages.push(entries);
    }
    let first = bob.receive_entries(&pages[0]).await.unwrap();
    let second = bob.receive_entries(&pages[1]).await.unwrap();
    assert_eq!(first.messages.len(), 1);
    assert_eq!(second.messages.len(), 0);
    assert_eq!(second.duplicates, 2);
    // And the sync that finally acknowledges them shows nothing new either.
    let third = bob.sync().await.unwrap();
    assert!(third.messages.is_empty());
    assert_eq!(third.duplicates, 2);
    assert_eq!(bob.history("alice").unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_problem() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;

    let err = alice.send_text("nobody", "hi").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownUser), "{err}");

    let err = alice.send_text("Not Valid", "hi").await.unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::BadUsername), "{err}");
    assert_eq!(err.code_str(), "bad_username");

    let err = alice.send_text("alice", "hi").await.unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::Yourself), "{err}");

    let err = alice.send_text("bob", "").await.unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::BadText), "{err}");
    assert_eq!(err.to_string(), "the message is empty");

    // A second account under a taken name is refused, and the profile stays unregistered.
    let dir = tempfile::tempdir().unwrap();
    let mut again = kith_client::Client::open(dir.path()).unwrap();
    let err =
        again.register(&server.url, "alice", kith_client::AccountKind::Person).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UsernameTaken), "{err}");
    assert!(again.profile().is_none());
    assert!(matches!(again.sync().await.unwrap_err(), ClientError::NotRegistered));

    // Registering a profile twice is refused locally.
    let err =
        alice.register(&server.url, "alice2", kith_client::AccountKind::Person).await.unwrap_err();
    assert!(matches!(err, ClientError::AlreadyRegistered(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_packages_are_topped_up_after_joins() {
    let server = TestServer::start().await;
    let mut bob = server.user("bob").await;
    let start = bob.whoami().await.unwrap().key_packages_remaining;
    assert!(start >= 15);
    // Forty people write to bob. The first claims of the hour take one-time KeyPackages, up
    // to the budget all claimers share; the rest get his last-resort one, which every join
    // can use: nobody can drain him, and every conversation still opens.
    let budget = u64::from(server.state.safety.config.key_package_budget_per_hour);
    for i in 0..40 {
        let mut u = server.user(&format!("user{i:02}")).await;
        u.send_text("bob", "hi").await.unwrap();
    }
    let before = bob.whoami().await.unwrap().key_packages_remaining;
    assert_eq!(before, start - budget);
    let report = bob.sync().await.unwrap();
    assert_eq!(report.joined.len(), 40);
    assert_eq!(report.messages.len(), 40);
    let after = bob.whoami().await.unwrap().key_packages_remaining;
    assert!(after >= 15, "only {after} left after the sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_on_postgres() {
    let Some(server) = TestServer::start_postgres().await else {
        return;
    };
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "over postgres").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert_eq!(r.messages[0].text, "over postgres");
    bob.send_text("alice", "and back").await.unwrap();
    assert_eq!(alice.sync().await.unwrap().messages[0].text, "and back");
    let counts = server.store().counts().await.unwrap();
    assert_eq!((counts.messages, counts.queue_entries), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_shuts_out_copies_of_the_profile() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    // Someone copies alice's profile folder (a lost backup) and holds a push connection.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(alice.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
    }
    let mut thief = kith_client::Client::open(copy.path()).unwrap();
    assert_eq!(thief.whoami().await.unwrap().username, "alice");
    let old_bearer = alice.bearer();
    let mut push = thief.connect_push().await.unwrap();

    alice.rotate_token().await.unwrap();

    // The copy is refused everywhere, and its open push connection is closed.
    let refused = thief.whoami().await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Unauthorized), "{refused}");
    assert_eq!(thief.sync().await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if thief.receive_push(&mut push).await.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the push connection opened with the old token stayed open");
    assert_eq!(status_of(&server.url, &old_bearer).await, 401);

    // Alice goes on with the new token, kept in her profile (a reopened client uses it); what
    // bob writes now reaches her and not the copy.
    bob.send_text("alice", "after").await.unwrap();
    assert_eq!(alice.sync().await.unwrap().messages[0].text, "after");
    // (One process per profile: the first client closes before the profile is reopened.)
    let kith_testkit::TestUser { client, dir } = alice;
    drop(client);
    let mut reopened = kith_client::Client::open(dir.path()).unwrap();
    assert_eq!(reopened.whoami().await.unwrap().username, "alice");
    reopened.send_text("bob", "still me").await.unwrap();
    assert_eq!(bob.sync().await.unwrap().messages[0].text, "still me");
}

/// A sync cut short (the client killed or its task dropped mid-way, after some pages were
/// taken in) loses nothing: the next sync returns every message the first did not, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_cut_short_loses_nothing() {
    const SENT: usize = 600;
    let mut config = kith_testkit::test_config();
    config.safety.max_messages_per_minute = 100_000;
    let server =
        TestServer::start_with(config, std::sync::Arc::new(kith_testkit::SystemClock)).await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut cut_mid_way = 0;
    // Cut at growing moments, until a cut has landed between the first and the last page.
    for (round, cut) in [2u64, 5, 10, 20, 40, 80, 160, 320].into_iter().enumerate() {
        let texts: Vec<String> = (0..SENT).map(|n| format!("round {round} message {n}")).collect();
        for t in &texts {
            alice.send_text("bob", t).await.unwrap();
        }
        let mut seen = Vec::new();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(cut), bob.sync()).await {
            seen.extend(r.unwrap().messages.into_iter().map(|m| m.text));
        }
        // How many of this round's messages the cut sync had stored.
        let prefix = format!("round {round} ");
        let stored =
            bob.history("alice").unwrap().iter().filter(|m| m.text.starts_with(&prefix)).count();
        if stored > 0 && stored < SENT {
            cut_mid_way += 1;
        }
        seen.extend(bob.sync().await.unwrap().messages.into_iter().map(|m| m.text));
        assert_eq!(seen, texts, "cut after {cut} ms, with {stored} messages stored");
        if cut_mid_way >= 2 {
            break;
        }
    }
    assert!(cut_mid_way >= 1, "no cut landed mid-way: the test did not test anything");
}

/// Secrets never print: the `Debug` of every type that holds one shows none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_debug_output_shows_a_secret() {
    use kith_proto::{RegisterResponse, RotateTokenResponse, Secret};
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bearer = alice.raw_bearer().unwrap();
    let token = bearer.expose().split_once(':').unwrap().1.to_string();
    assert_eq!(token.len(), 64);
    let keys = server.store().franking_keys().await.unwrap();
    let key = keys[0].key.expose().to_vec();
    let shown = [
        format!("{:?}", alice.client),
        format!("{:#?}", alice.profile().unwrap()),
        format!("{bearer:?}"),
        format!(
            "{:?}",
            RegisterResponse {
                username: "alice".into(),
                device_id: 1,
                token: Secret::new(token.clone())
            }
        ),
        format!("{:?}", RotateTokenResponse { device_id: 1, token: Secret::new(token.clone()) }),
        format!("{keys:?}"),
    ];
    let key_as_debug = format!("{:?}", &key[..8]);
    let key_start = key_as_debug.trim_end_matches(']');
    for text in &shown {
        assert!(!text.contains(&token), "the token shows in {text}");
        assert!(!text.contains(&hex::encode(&key)), "the franking key shows in {text}");
        assert!(!text.contains(key_start), "the franking key shows in {text}");
    }
    assert!(shown[5].contains("[redacted 32 bytes]"), "{}", shown[5]);
}

/// Found by the user-flow review: `kith sync` killed after marking messages shown but before
/// printing them lost them. A caller that prints marks them shown after printing; until then
/// they come again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_stay_unshown_until_the_caller_says_they_were_shown() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "one").await.unwrap();
    bob.defer_shown(true);
    let first = bob.sync().await.unwrap().messages;
    assert_eq!(first.len(), 1);
    // Not marked (the printing process died): the next sync hands it over again.
    alice.send_text("bob", "two").await.unwrap();
    let again: Vec<String> =
        bob.sync().await.unwrap().messages.into_iter().map(|m| m.text).collect();
    assert_eq!(again, ["one", "two"]);
    bob.mark_shown(&bob.history("alice").unwrap()).unwrap();
    assert!(bob.sync().await.unwrap().messages.is_empty());
}

/// One process per profile: a second `Client` on the same folder waits for the first.
#[test]
fn a_profile_is_opened_by_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = kith_client::Client::open(dir.path()).unwrap();
    let path = dir.path().to_path_buf();
    let started = std::time::Instant::now();
    let second =
        std::thread::spawn(move || kith_client::Client::open(&path).map(|_| started.elapsed()));
    std::thread::sleep(Duration::from_millis(300));
    drop(first);
    let waited = second.join().unwrap().unwrap();
    assert!(waited >= Duration::from_millis(250), "the second open did not wait: {waited:?}");
}

#[test]
fn a_profile_held_by_the_app_is_named_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let _app = kith_client::Client::open_as(dir.path(), "the Kith app (kith app)", true).unwrap();
    let started = std::time::Instant::now();
    let err = kith_client::Client::open(dir.path()).expect_err("the profile is held");
    assert!(started.elapsed() < Duration::from_secs(5), "it waited for a holder that stays");
    assert_eq!(err.code_str(), "profile_in_use");
    assert!(err.to_string().ends_with("is in use by the Kith app (kith app)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_list_counts_what_is_unread_until_it_is_read() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    alice.send_text("bob", "one").await.unwrap();
    alice.send_text("bob", "two").await.unwrap();
    let club = carol.create_group("Club", &["bob".into()]).await.unwrap();
    carol.send_group(&club, "welcome").await.unwrap();
    bob.sync().await.unwrap();

    let chats = bob.chats().unwrap();
    let titles: Vec<&str> = chats.iter().map(|c| c.title.as_str()).collect();
    // The most recent first: the group's message came last.
    assert_eq!(titles, ["Club", "alice"]);
    let with_alice = chats.iter().find(|c| c.chat == "@alice").unwrap();
    assert_eq!(with_alice.unread, 2);
    assert_eq!(with_alice.last.as_ref().unwrap().text, "two");
    assert!(!with_alice.business && !with_alice.left);
    assert_eq!(
        bob.chat_of(&with_alice.last.as_ref().unwrap().conversation).unwrap().unwrap(),
        "@alice"
    );
    assert_eq!(chats[0].chat, club);
    assert_eq!(chats[0].unread, 1);

    bob.mark_read("@alice").unwrap();
    assert_eq!(bob.chats().unwrap().iter().find(|c| c.chat == "@alice").unwrap().unread, 0);
    // Bob's own answer is not unread; a new message from alice is.
    bob.send_text("alice", "three").await.unwrap();
    alice.send_text("bob", "four").await.unwrap();
    bob.sync().await.unwrap();
    let with_alice = bob.chats().unwrap().into_iter().find(|c| c.chat == "@alice").unwrap();
    assert_eq!(with_alice.unread, 1);
    let texts: Vec<String> =
        bob.chat_history("@alice").unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["one", "two", "three", "four"]);
    let err = bob.chat_history("not-a-chat").unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::NoSuchConversation));

    // A deleted chat leaves the list.
    bob.delete_conversation("alice").await.unwrap();
    assert!(bob.chats().unwrap().iter().all(|c| c.chat != "@alice"));
}

/// Found by the model-based test (CI, seed 4): right after kithd restarted, a sync took from
/// the pool the kept-alive connection the old process had just closed, and failed with
/// "error sending request" although the server was up. A call that may be asked twice is
/// tried once more on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_right_after_a_restart_reaches_the_server() {
    let mut server = TestServer::start().await;
    let mut ann = server.user("ann").await;
    let mut bob = server.user("bob").await;
    let mut texts = Vec::new();
    for round in 0..15 {
        // A connection kept alive from the last call...
        texts.extend(ann.sync().await.unwrap().messages.into_iter().map(|m| m.text));
        server = server.restart().await;
        // ...is the one the pool hands out first.
        let report = ann.sync().await.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        texts.extend(report.messages.into_iter().map(|m| m.text));
        bob.send_text("ann", &format!("after restart {round}")).await.unwrap();
    }
    texts.extend(ann.sync().await.unwrap().messages.into_iter().map(|m| m.text));
    let expected: Vec<String> = (0..15).map(|r| format!("after restart {r}")).collect();
    assert_eq!(texts, expected, "every message once, in order");
}

/// A push channel that dies without a word (packets dropped: a laptop asleep, a network
/// changed) is noticed — the client pings after a quiet spell and gives up on a server that
/// does not answer — so the app reconnects and catches up instead of waiting forever. A
/// quiet channel whose server answers stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_channel_that_goes_silent_is_noticed() {
    let server = TestServer::start().await;
    let target: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let proxy = kith_testkit::FaultProxy::start(target).await.unwrap();
    let mut alice = server.user("alice").await;
    let via = format!("http://{}", proxy.addr);
    let mut bob =
        kith_testkit::TestUser::register(&via, "bob", kith_client::AccountKind::Person).await;

    let mut push = bob.connect_push().await.unwrap();
    // Pings after 100 ms of quiet, answers within a second: the quiet spell below is longer than
    // both, so the channel stays only if the server answers.
    push.set_liveness(Duration::from_millis(100), Duration::from_secs(1));
    // Quiet for many times the ping interval: the server answers each ping, the channel
    // stays, and a message then arrives on it.
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        alice.send_text("bob", "after a quiet spell").await.unwrap();
        alice
    });
    let mut texts = Vec::new();
    while texts.is_empty() {
        let r = tokio::time::timeout(Duration::from_secs(10), bob.receive_push(&mut push))
            .await
            .expect("the message within 10 s")
            .expect("the quiet channel was given up although the server answered");
        texts.extend(r.messages.into_iter().map(|m| m.text));
    }
    assert_eq!(texts, ["after a quiet spell"]);
    let mut alice = later.await.unwrap();

    // The path goes silent: the channel is given up, not waited on for ever.
    proxy.stall();
    let lost = tokio::time::timeout(Duration::from_secs(20), bob.receive_push(&mut push))
        .await
        .expect("a silent push channel was waited on for 20 s");
    assert!(matches!(lost, Err(ClientError::Network(_))), "{lost:?}");

    // Back again: a new channel, and what was sent meanwhile arrives once.
    alice.send_text("bob", "while you were away").await.unwrap();
    proxy.restore();
    let report = bob.sync().await.unwrap();
    let texts: Vec<String> = report.messages.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["while you were away"]);
}

/// A registration whose answer was lost is posted again and answered as registered (the
/// client chose the token, so the server can tell its repeat): before, the username was taken
/// by an account nobody could use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_whose_answer_was_lost_is_not_burned() {
    let server = TestServer::start().await;
    let proxy = server.answer_loser().await;
    proxy.lose_next("/v1/accounts");
    let mut ann =
        kith_testkit::TestUser::register(&proxy.url(), "ann", kith_client::AccountKind::Person)
            .await;
    assert_eq!(proxy.lost(), 1, "the answer was not lost: the test tests nothing");
    let mut bob = server.user("bob").await;
    ann.send_text("bob", "registered once").await.unwrap();
    let texts: Vec<String> =
        bob.sync().await.unwrap().messages.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["registered once"]);
    // Someone else registering ann's name is refused as before. (Her public key with another
    // token: `a_repeated_registration_is_answered_once_and_only_to_its_client`, `api.rs`.)
    let taken = kith_client::Client::open(tempfile::tempdir().unwrap().path())
        .unwrap()
        .register(&server.url, "ann", kith_client::AccountKind::Person)
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Some(ErrorCode::UsernameTaken), "{taken}");
}

/// A token rotation whose answer was lost leaves the device with the token the server holds:
/// the client chose the new one and tries it. Before, the old token was refused and the new
/// one never arrived — the device was locked out of its account for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_answer_was_lost_does_not_lock_the_device_out() {
    let server = TestServer::start().await;
    let (proxy, mut ann) = server.user_losing_answers("ann").await;
    let mut bob = server.user("bob").await;
    let first = ann.bearer();

    // The answer is lost; asking which token works tells at once.
    proxy.lose_next("/v1/me/token");
    ann.rotate_token().await.unwrap();
    let second = ann.bearer();
    assert_ne!(first, second, "the rotation was not taken");

    // The answer is lost and so is the look that follows (the network is down a while): the
    // rotation reports the failure, and the next sync settles which token is in force.
    proxy.lose_next("/v1/me/token");
    // The look is asked three times (a connection that broke is tried twice more).
    for _ in 0..3 {
        proxy.lose_next("/v1/me");
    }
    let failed = ann.rotate_token().await.unwrap_err();
    assert!(matches!(failed, ClientError::NoAnswer { timed_out: false }), "{failed:?}");
    assert_eq!(proxy.lost(), 5);
    ann.sync().await.unwrap();
    let third = ann.bearer();
    assert_ne!(third, second, "the sync did not take the token the server holds");

    // Only the token in force works; ann goes on as before.
    for old in [first, second] {
        assert_eq!(status_of(&server.url, &old).await, 401);
    }
    ann.send_text("bob", "still me").await.unwrap();
    let texts: Vec<String> =
        bob.sync().await.unwrap().messages.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["still me"]);
}

/// A rotation a gateway gave up on (`504` at once) that reaches the server later: the client
/// asks whether the new token is in force, posts the same signed request again if not, and
/// the late copy — made with the old token — is refused. The device keeps working either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_that_lands_after_a_gateway_gave_up_does_not_lock_the_device_out() {
    let server = TestServer::start().await;
    let (proxy, mut ann) = server.user_losing_answers("ann").await;
    let mut bob = server.user("bob").await;
    let first = ann.bearer();
    proxy.time_out_next("/v1/me/token", Duration::from_millis(800));
    ann.rotate_token().await.unwrap();
    assert_eq!(proxy.lost(), 1, "the gateway did not give up: the test tests nothing");
    let second = ann.bearer();
    assert_ne!(first, second);
    // The late copy arrives, and changes nothing.
    assert!(proxy.late_ones_arrived(Duration::from_secs(10)).await, "the late copy never arrived");
    assert_eq!(ann.bearer(), second);
    ann.sync().await.unwrap();
    ann.send_text("bob", "still me").await.unwrap();
    let texts: Vec<String> =
        bob.sync().await.unwrap().messages.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["still me"]);
    assert_eq!(status_of(&server.url, &first).await, 401);
}

/// A message posted again because its answer was lost (the server stored the first) shows
/// once, and the second copy counts as a copy — not as a message that could not be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_again_after_a_lost_answer_shows_once() {
    let server = TestServer::start().await;
    let (proxy, mut ann) = server.user_losing_answers("ann").await;
    let mut bob = server.user("bob").await;
    ann.send_text("bob", "hello").await.unwrap();
    bob.sync().await.unwrap();
    proxy.lose_next("/messages");
    ann.send_text("bob", "once only").await.unwrap();
    assert_eq!(proxy.lost(), 1, "the answer was not lost: the test tests nothing");
    let report = bob.sync().await.unwrap();
    let texts: Vec<String> = report.messages.iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts, ["once only"]);
    // The repeat carried the same client id: the server stored it once (no copy to drop).
    assert_eq!((report.dropped, report.duplicates), (0, 0), "{report:?}");
    let mine: Vec<_> =
        ann.history("bob").unwrap().into_iter().filter(|m| m.text == "once only").collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].state, kith_client::Delivery::Sent);
}

/// Each account gets its key at registration: the profile keeps its secret, and the server
/// lists its public half with the account's devices, as another account sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_gets_its_key_at_registration() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let key = alice.account_key().unwrap().expect("an account key");
    assert!(kith_proto::account::is_account_key(&key));
    assert_ne!(Some(key.clone()), bob.account_key().unwrap(), "two accounts, one key");
    let listed = bob.devices("alice").await.unwrap();
    assert_eq!(listed.account_key.map(|k| k.0), Some(key.clone()));
    // Kept in the profile: the same after it is opened again.
    let kith_testkit::TestUser { client, dir } = alice;
    drop(client);
    let again = kith_client::Client::open(dir.path()).unwrap();
    assert_eq!(again.account_key().unwrap(), Some(key));
}

/// A profile and an account from before account keys: at the next sync the device makes the
/// account's key, keeps it, and gives it to the server, once; others then see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_from_before_account_keys_gets_one_at_its_next_sync() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let before = alice.account_key().unwrap().unwrap();
    // Back to how an older version left them: no key on the server, none in the profile.
    rusqlite::Connection::open(server.data.path().join("kithd.db"))
        .unwrap()
        .execute("UPDATE accounts SET account_key = NULL WHERE username = 'alice'", [])
        .unwrap();
    rusqlite::Connection::open(alice.dir().join("kith.db"))
        .unwrap()
        .execute_batch(
            "DELETE FROM kith_account_key; DELETE FROM kith_upkeep WHERE what = 'account_key_given';",
        )
        .unwrap();
    assert_eq!(alice.account_key().unwrap(), None);
    assert_eq!(bob.devices("alice").await.unwrap().account_key.map(|k| k.0), None);

    alice.sync().await.unwrap();
    let made = alice.account_key().unwrap().expect("an account key made at the sync");
    assert_ne!(made, before);
    assert_eq!(bob.devices("alice").await.unwrap().account_key.map(|k| k.0), Some(made.clone()));
    // Given once: another sync changes nothing.
    alice.sync().await.unwrap();
    assert_eq!(alice.account_key().unwrap(), Some(made.clone()));
    assert_eq!(bob.devices("alice").await.unwrap().account_key.map(|k| k.0), Some(made));
}

fn texts(r: &kith_client::SyncReport) -> Vec<String> {
    r.messages.iter().map(|m| m.text.clone()).collect()
}

/// A profile and an account from before device certificates (registered with uncertified
/// KeyPackages, no account key), in a 1:1 and a group. After the upgrade, its first sync
/// gives the account a key, certifies the device, renews its KeyPackages and puts the
/// certificate in its leaf of every conversation: the others take the change (their clients
/// ask the server again rather than refuse on what they knew), a newcomer can join a group
/// holding it, and a new contact reaches it through a certified KeyPackage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_from_before_device_certificates_certifies_itself_everywhere() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut client = kith_client::Client::open(dir.path()).unwrap();
    client.raw_register_before_account_keys(&server.url, "alice").await.unwrap();
    let mut alice = kith_testkit::TestUser { client, dir };
    // The older version never makes a key: held back here until "the upgrade".
    let db = alice.dir().join("kith.db");
    let profile_db = || rusqlite::Connection::open(&db).unwrap();
    profile_db()
        .execute("INSERT INTO kith_upkeep (what, at) VALUES ('account_key_given', 1)", [])
        .unwrap();
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let mut dave = server.user("dave").await;
    bob.send_text("alice", "hi").await.unwrap();
    alice.sync().await.unwrap();
    let club = bob.create_group("Club", &["alice".into(), "carol".into()]).await.unwrap();
    assert_eq!(alice.sync().await.unwrap().joined.len(), 1);
    carol.sync().await.unwrap();
    assert!(!alice.raw_leaf_certified(&club).unwrap());
    assert_eq!(bob.devices("alice").await.unwrap().account_key, None);

    // The upgrade.
    profile_db().execute("DELETE FROM kith_upkeep WHERE what = 'account_key_given'", []).unwrap();
    alice.sync().await.unwrap();
    let key = alice.account_key().unwrap().expect("a key made at the first sync");
    assert_eq!(bob.devices("alice").await.unwrap().account_key.map(|k| k.0), Some(key));
    assert!(alice.raw_leaf_certified(&club).unwrap());
    let direct = alice.raw_direct_with("bob").unwrap().unwrap();
    assert!(alice.raw_leaf_certified(&direct).unwrap());

    // bob and carol take alice's certifying commits, and the conversations go on.
    for u in [&mut bob, &mut carol] {
        let r = u.sync().await.unwrap();
        assert_eq!((r.dropped, r.problems.len()), (0, 0), "{r:?}");
    }
    alice.send_group(&club, "certified now").await.unwrap();
    alice.send_text("bob", "me too").await.unwrap();
    assert!(texts(&carol.sync().await.unwrap()).contains(&"certified now".to_string()));
    let seen = texts(&bob.sync().await.unwrap());
    assert!(seen.contains(&"certified now".to_string()) && seen.contains(&"me too".to_string()));
    // A newcomer joins the group that holds alice's (now certified) leaf.
    bob.send_text("dave", "join us").await.unwrap();
    dave.sync().await.unwrap();
    bob.group_add(&club, &["dave".into()]).await.unwrap();
    assert_eq!(dave.sync().await.unwrap().joined, vec![club.clone()]);
    // And a new contact reaches alice through a certified KeyPackage.
    dave.send_text("alice", "hello alice").await.unwrap();
    assert!(texts(&alice.sync().await.unwrap()).contains(&"hello alice".to_string()));
}
