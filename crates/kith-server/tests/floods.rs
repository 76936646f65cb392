//! One client cannot starve the others: a flood of each kind against a real kithd, with an
//! honest pair exchanging messages alongside, on SQLite and on PostgreSQL (when
//! `KITH_TEST_DATABASE_URL` is set), and on two PostgreSQL nodes with the flood on one and the
//! honest pair across both. Each test checks that the honest pair loses nothing and
//! that what the flood holds on the server stays bounded. (The honest pair's latency during
//! each flood is measured by `kith-bench floods`, not here: timings are not tests.)

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::time::Duration;

use kith_server::ServerConfig;
use kith_testkit::{TestServer, TestUser, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One flood at a time: every flood here comes from 127.0.0.1, as do the honest pairs, so two
/// floods at once (the test threads run side by side) would measure each other, not the rule.
static ONE_FLOOD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

macro_rules! on_both_stores {
    ($($name:ident($config:expr)),* $(,)?) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let _alone = super::ONE_FLOOD.lock().await;
                    let server = kith_testkit::TestServer::start_with(
                        $config,
                        std::sync::Arc::new(kith_testkit::SystemClock),
                    )
                    .await;
                    let bob_url = server.url.clone();
                    super::$name(server, bob_url).await;
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let _alone = super::ONE_FLOOD.lock().await;
                    let Some(server) = kith_testkit::TestServer::start_postgres_with($config).await
                    else {
                        return;
                    };
                    let bob_url = server.url.clone();
                    super::$name(server, bob_url).await;
                }
            )*
        }
        /// Two kithd nodes on one PostgreSQL: the flood hits the first, bob is on the second.
        mod two_nodes {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let _alone = super::ONE_FLOOD.lock().await;
                    let Some(mut nodes) =
                        kith_testkit::TestServer::start_postgres_nodes_with(2, $config).await
                    else {
                        return;
                    };
                    let other = nodes.pop().unwrap();
                    let flooded = nodes.pop().unwrap();
                    super::$name(flooded, other.url.clone()).await;
                    drop(other);
                }
            )*
        }
    };
}

on_both_stores! {
    idle_connections_cannot_keep_an_honest_pair_out(few_connections()),
    stalled_bodies_hold_a_bounded_amount_of_memory(small_body_budget()),
    failed_registrations_are_limited_too(few_registration_attempts()),
    push_connections_are_held_to_each_device_s_limit(test_config()),
    a_flooded_queue_stays_bounded(small_queues()),
    an_account_s_disk_quota_holds(small_disk_quota()),
}

fn small_disk_quota() -> ServerConfig {
    let mut c = test_config();
    c.safety.max_bytes_per_hour = 20_000;
    c
}

fn small_queues() -> ServerConfig {
    let mut c = test_config();
    c.max_queued_per_device = 20;
    c
}

fn few_connections() -> ServerConfig {
    let mut c = test_config();
    c.max_connections = 120;
    c.max_connections_per_address = 100;
    c
}

fn small_body_budget() -> ServerConfig {
    let mut c = test_config();
    c.max_body_memory_per_address = 2 << 20;
    c.max_body_memory_bytes = 4 << 20;
    c
}

fn few_registration_attempts() -> ServerConfig {
    let mut c = test_config();
    c.safety.registration_attempts_per_ip_per_hour = 20;
    c
}

/// alice and bob exchange `n` messages each way; every one arrives.
async fn honest_pair_talks(alice: &mut TestUser, bob: &mut TestUser, n: usize) {
    for i in 0..n {
        send_until_sent(alice, "bob", &format!("ping {i}")).await;
        assert_eq!(synced_texts(bob).await, [format!("ping {i}")]);
        send_until_sent(bob, "alice", &format!("pong {i}")).await;
        assert_eq!(synced_texts(alice).await, [format!("pong {i}")]);
    }
}

/// Whether a request the flood cut off failed (the person tries again), not a refusal.
fn cut_off(e: &kith_client::ClientError) -> bool {
    matches!(e, kith_client::ClientError::NoAnswer { .. } | kith_client::ClientError::Network(_))
}

/// A sync, again when the flood cut its request off (what it took in before is kept and
/// shown by the next); the texts it showed.
async fn synced_texts(user: &mut TestUser) -> Vec<String> {
    for _ in 0..12 {
        match user.sync().await {
            Ok(r) => return r.messages.into_iter().map(|m| m.text).collect(),
            Err(e) if cut_off(&e) => tracing::debug!(error = %e, "synced again"),
            Err(e) => panic!("a sync failed: {e}"),
        }
    }
    panic!("twelve syncs in a row were cut off");
}

/// Sends, and settles the outbox if the answer was lost (a kept-alive connection the flood
/// made the server close under the request): the message goes at the next sync, once, as any
/// person's would. Nothing is lost; the peer's sync then checks it arrived once.
async fn send_until_sent(from: &mut TestUser, to: &str, text: &str) {
    // Opening the conversation (KeyPackage claims: the peer's, and this account's other
    // devices') has no outbox: a request the flood cut off is told as such, and the person
    // sends again.
    let mut tries = 0;
    loop {
        match from.send_text(to, text).await {
            Ok(_) => break,
            Err(
                e @ (kith_client::ClientError::NoAnswer { .. }
                | kith_client::ClientError::Network(_)),
            ) if tries < 12 => {
                tries += 1;
                tracing::debug!(error = %e, "sent again after a cut-off request");
            }
            Err(e) => panic!("{text:?} was not sent: {e}"),
        }
    }
    for _ in 0..12 {
        if from.waiting_to_send().unwrap() == 0 {
            return;
        }
        if let Err(e) = from.sync().await {
            assert!(cut_off(&e), "a sync failed: {e}");
        }
    }
    panic!("{text:?} still waits to be sent after twelve syncs");
}

async fn idle_connections_cannot_keep_an_honest_pair_out(server: TestServer, bob_url: String) {
    let mut alice = server.user("alice").await;
    let mut bob = TestUser::register(&bob_url, "bob", kith_proto::AccountKind::Person).await;
    // They talk already: what the flood must not stop is their messages (opening a
    // conversation is three requests without an outbox, each of which a flood can cut off).
    send_until_sent(&mut alice, "bob", "hello").await;
    assert_eq!(synced_texts(&mut bob).await, ["hello"]);
    send_until_sent(&mut bob, "alice", "hi").await;
    assert_eq!(synced_texts(&mut alice).await, ["hi"]);
    // A local flood: far more silent sockets than the server keeps, from one address.
    let mut idle = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(server.state.config.listen).await {
            idle.push(s);
        }
    }
    // And as many that send a request's headers and stall its (small) body: they have not
    // spoken either (nothing was answered), so they make room just the same.
    for _ in 0..200 {
        idle.push(stall_a_body(&server, 16_000, 0).await);
    }
    // And as many that ask one cheap question, keep the connection open and idle: having
    // spoken once holds nothing.
    for _ in 0..200 {
        let Ok(mut s) = TcpStream::connect(server.state.config.listen).await else { continue };
        if s.write_all(b"GET /healthz HTTP/1.1\r\nhost: kithd\r\n\r\n").await.is_ok() {
            let _ = answer_within(&mut s, Duration::from_millis(200)).await;
            idle.push(s);
        }
    }
    // Past the moment a fresh connection is given to speak.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let gate = &server.state.gate;
    assert!(gate.open() <= 120, "{} connections held", gate.open());
    // The honest pair gets in (each new connection of theirs makes room) and loses nothing.
    honest_pair_talks(&mut alice, &mut bob, 5).await;
    // The flood was turned away, or made room for newcomers.
    let (evicted, refused) = (
        gate.evicted.load(std::sync::atomic::Ordering::Relaxed),
        gate.refused.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(evicted + refused > 0);
    assert!(gate.open() <= 120);
    drop(idle);
}

/// Sends a registration's headers (open to anyone) declaring `length` bytes and `sent` of
/// them, then stalls.
async fn stall_a_body(server: &TestServer, length: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(server.state.config.listen).await.unwrap();
    let head = format!(
        "POST /v1/accounts HTTP/1.1\r\nhost: kithd\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; sent]).await.unwrap();
    s
}

/// What the server answered on `s` within `wait` (empty: nothing yet).
async fn answer_within(s: &mut TcpStream, wait: Duration) -> String {
    let mut answer = vec![0u8; 256];
    match tokio::time::timeout(wait, s.read(&mut answer)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&answer[..n]).into_owned(),
        _ => String::new(),
    }
}

async fn stalled_bodies_hold_a_bounded_amount_of_memory(server: TestServer, bob_url: String) {
    let mut alice = server.user("alice").await;
    let mut bob = TestUser::register(&bob_url, "bob", kith_proto::AccountKind::Person).await;
    // Declaring a large body and sending nothing holds nothing: all twelve wait their turn.
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(stall_a_body(&server, 1_000_000, 0).await);
    }
    for s in &mut held {
        assert_eq!(answer_within(s, Duration::from_millis(50)).await, "");
    }
    held.clear();
    // Sending half of it and stalling holds what was sent: one address's 2 MiB share takes
    // four such bodies; the others are refused as soon as their bytes arrive.
    let mut refused = 0;
    for _ in 0..12 {
        let mut s = stall_a_body(&server, 1_000_000, 500_000).await;
        if answer_within(&mut s, Duration::from_millis(300)).await.starts_with("HTTP/1.1 503") {
            refused += 1;
        }
        held.push(s);
    }
    assert_eq!(refused, 8, "{refused} of 12 stalled bodies were refused");
    // Small requests do not wait on the budget: the pair talks on.
    honest_pair_talks(&mut alice, &mut bob, 3).await;
    // A body must arrive whole within ten seconds: then what it held is given back.
    tokio::time::sleep(kith_server::bodies::DEADLINE + Duration::from_millis(500)).await;
    let mut s = stall_a_body(&server, 1_000_000, 500_000).await;
    assert_eq!(answer_within(&mut s, Duration::from_millis(300)).await, "", "still refused");
    drop(held);
}

/// One address posts a registration of the taken name "alice" thirty times, in turn to each
/// of `urls`; with alice and bob registered from it too and a limit of 20 attempts an hour,
/// 18 are refused as taken and the last 12 with `429`.
async fn taken_name_posted_thirty_times(urls: &[String]) {
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for k in 0..30 {
        let resp = http
            .post(format!("{}/v1/accounts", urls[k % urls.len()]))
            .json(&serde_json::json!({
                "username": "alice", "credential_key": kith_proto::B64(vec![7; 32]),
                "key_packages": [], "last_resort_key_package": kith_proto::B64(vec![1]),
            }))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 18, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 12, "{statuses:?}");
}

async fn failed_registrations_are_limited_too(server: TestServer, bob_url: String) {
    let mut alice = server.user("alice").await;
    let mut bob = TestUser::register(&bob_url, "bob", kith_proto::AccountKind::Person).await;
    // One address keeps posting a taken name (the costliest refusal): past 20 attempts an
    // hour, 429 before any work is done.
    let urls = [server.url.clone()];
    // alice and bob registered from this address too: 18 refusals as taken, then 429s.
    taken_name_posted_thirty_times(&urls).await;
    honest_pair_talks(&mut alice, &mut bob, 2).await;
}

async fn push_connections_are_held_to_each_device_s_limit(server: TestServer, bob_url: String) {
    let mut alice = server.user("alice").await;
    let mut bob = TestUser::register(&bob_url, "bob", kith_proto::AccountKind::Person).await;
    // Eight throwaway accounts each try to hold ten push connections.
    let mut held = Vec::new();
    for i in 0..8 {
        let mut t = server.user(&format!("throwaway{i}")).await;
        for _ in 0..10 {
            if let Ok(push) = t.connect_push().await {
                held.push(push);
            }
        }
    }
    let per_device = server.state.config.max_connections_per_device;
    assert_eq!(held.len(), 8 * per_device, "each device holds at most its limit");
    // Upgraded connections stay counted by the listener's caps.
    assert!(server.state.gate.open() >= held.len(), "{} open", server.state.gate.open());
    honest_pair_talks(&mut alice, &mut bob, 3).await;
    drop(held);
}

async fn a_flooded_queue_stays_bounded(server: TestServer, bob_url: String) {
    let mut alice = server.user("alice").await;
    let mut bob = TestUser::register(&bob_url, "bob", kith_proto::AccountKind::Person).await;
    let mut mallory = server.user("mallory").await;
    let victim = server.user("victim").await;
    // mallory fills an offline device's queue as fast as she may.
    let mut refused = 0;
    for i in 0..60 {
        match mallory.send_text("victim", &format!("spam {i}")).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Some(kith_proto::ErrorCode::QueueFull), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0);
    let queued = victim.raw_queue().await.len() as u64;
    assert!(queued <= server.state.config.max_queued_per_device, "{queued} entries queued");
    honest_pair_talks(&mut alice, &mut bob, 3).await;
}

/// Two kithd nodes on one PostgreSQL with these settings; `None` without the database.
async fn two_nodes(config: ServerConfig) -> Option<Vec<TestServer>> {
    TestServer::start_postgres_nodes_with(2, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_registrations_are_limited_across_nodes() {
    let Some(nodes) = two_nodes(few_registration_attempts()).await else { return };
    let mut alice =
        TestUser::register(&nodes[0].url, "alice", kith_proto::AccountKind::Person).await;
    let mut bob = TestUser::register(&nodes[1].url, "bob", kith_proto::AccountKind::Person).await;
    // One address alternates between the nodes: the limit is the two nodes' together.
    let urls = [nodes[0].url.clone(), nodes[1].url.clone()];
    taken_name_posted_thirty_times(&urls).await;
    honest_pair_talks(&mut alice, &mut bob, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_on_one_node_cannot_keep_a_pair_on_two_out() {
    let Some(nodes) = two_nodes(few_connections()).await else { return };
    let mut alice =
        TestUser::register(&nodes[0].url, "alice", kith_proto::AccountKind::Person).await;
    let mut bob = TestUser::register(&nodes[1].url, "bob", kith_proto::AccountKind::Person).await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect(nodes[0].state.config.listen).await {
            idle.push(s);
        }
    }
    honest_pair_talks(&mut alice, &mut bob, 3).await;
    assert!(nodes[0].state.gate.open() <= 120);
    drop(idle);
}

async fn an_account_s_disk_quota_holds(server: TestServer, bob_url: String) {
    let mut alice = server.user("alice").await;
    let mut bob = TestUser::register(&bob_url, "bob", kith_proto::AccountKind::Person).await;
    let mut mallory = server.user("mallory").await;
    let _carol = server.user("carol").await;
    // mallory sends 6 kB messages (7 kB or so as ciphertext): her hourly 20 kB are spent
    // after two or three.
    let big = "x".repeat(6000);
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..10 {
        match mallory.send_text("carol", &big).await {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!((2..=3).contains(&accepted), "{accepted} accepted");
    let e = refused.expect("refused past the quota");
    assert_eq!(e.code(), Some(kith_proto::ErrorCode::RateLimited), "{e}");
    // Others are not held to hers.
    honest_pair_talks(&mut alice, &mut bob, 2).await;
}
