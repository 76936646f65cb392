//! Database faults: the connection between kithd and PostgreSQL is cut (or stalled) and
//! restored by a TCP proxy while clients send. Meanwhile kithd answers `503 unavailable` with
//! `Retry-After`; clients post the same ciphertext again after it; kithd recovers by itself once
//! the path is back, and every message it accepted reaches its recipient exactly once.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kith_client::Delivery;
use kith_testkit::{TestServer, TestUser};
use tokio::sync::Mutex;

/// Syncs `reader` until nothing new comes, and checks it was shown every accepted message,
/// each once, and nothing that was never attempted.
async fn received_once(
    reader: &mut TestUser,
    who: &str,
    accepted: &[String],
    attempted: &HashSet<String>,
) {
    let mut received = Vec::new();
    loop {
        let r = reader.sync().await.unwrap();
        if r.messages.is_empty() {
            break;
        }
        received.extend(r.messages.into_iter().map(|m| m.text));
    }
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "{who} was shown a message twice");
    for text in accepted {
        assert!(unique.contains(text), "{text} was accepted but never delivered");
    }
    for text in &unique {
        assert!(attempted.contains(*text), "{text} appeared from nowhere");
    }
}

/// What one sender saw, in order.
#[derive(Default)]
struct Outcomes {
    accepted: Vec<String>,
    attempted: HashSet<String>,
    /// Sends still unanswered after the client's own retries: written, they wait in the
    /// sender's outbox and go with its next send.
    refused: Vec<String>,
    /// Sends that went through only after the client, answered `503`, waited and posted the
    /// same ciphertext again.
    bridged: usize,
    /// Sends that began after the path was restored, and whether each was accepted.
    after_restore: Vec<bool>,
}

const PAIRS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_database_gets_503_retry_after_then_recovers_and_loses_nothing() {
    let Some((server, proxy)) = TestServer::start_postgres_behind_proxy().await else { return };
    let proxy = Arc::new(proxy);
    let mut pairs = Vec::new();
    for n in 0..PAIRS {
        let mut from = server.user(&format!("sender{n}")).await;
        let mut to = server.user(&format!("reader{n}")).await;
        from.send_text(&format!("reader{n}"), "before the cut").await.unwrap();
        assert_eq!(to.sync().await.unwrap().messages.len(), 1);
        pairs.push((from, to));
    }
    assert!(proxy.forwarded() > 0, "the store does not go through the proxy");

    // Senders stream messages until told to stop; the proxy is cut and restored under them.
    let stop = Arc::new(AtomicBool::new(false));
    let restored = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    let results: Vec<_> = (0..PAIRS).map(|_| Arc::new(Mutex::new(Outcomes::default()))).collect();
    for (n, (from, to)) in pairs.into_iter().enumerate() {
        readers.push(to);
        let (stop, restored, out) = (stop.clone(), restored.clone(), results[n].clone());
        senders.push(tokio::spawn(async move {
            let mut from: TestUser = from;
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let text = format!("sender{n} message {i}");
                let was_restored = restored.load(Ordering::SeqCst);
                let began = Instant::now();
                let result = from.send_text(&format!("reader{n}"), &text).await;
                // Only a retry after a 503 (its Retry-After is at least a second) takes this long.
                let retried = began.elapsed() >= Duration::from_secs(1);
                let mut out = out.lock().await;
                out.attempted.insert(text.clone());
                let sent = matches!(&result, Ok(m) if m.state == Delivery::Sent);
                if was_restored {
                    out.after_restore.push(sent);
                }
                match &result {
                    Ok(_) if sent => {
                        out.accepted.push(text.clone());
                        if retried {
                            out.bridged += 1;
                        }
                    }
                    // Still 503 after the client's own retries: written, it waits in the
                    // outbox, and goes with the sender's next send.
                    Ok(_) => {
                        out.refused.push(text.clone());
                        drop(out);
                        // A client backs off before trying again.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("{text}: unexpected answer {e}"),
                }
            }
            from
        }));
    }
    let total = |results: &[Arc<Mutex<Outcomes>>]| {
        let results = results.to_vec();
        async move {
            let mut n = 0;
            for r in &results {
                n += r.lock().await.accepted.len();
            }
            n
        }
    };
    wait_until(Duration::from_secs(60), || async { total(&results).await >= 60 }).await;

    proxy.cut();
    let cut_at = Instant::now();
    // A reader's fetch while the path is cut: 503, the stable code and a Retry-After.
    let raw = reqwest::Client::new()
        .get(format!("{}/v1/queue", server.url))
        .header("authorization", readers[0].bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 503);
    let retry_after: u64 =
        raw.headers()["retry-after"].to_str().unwrap().parse().expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    let body: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    // The path stays cut for three seconds of load: longer than one Retry-After.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut_at.elapsed())).await;
    let cut_for = cut_at.elapsed();

    proxy.restore();
    restored.store(true, Ordering::SeqCst);
    // Recovery without help: each sender gets 20 more messages through.
    for r in &results {
        let r = r.clone();
        wait_until(Duration::from_secs(60), || {
            let r = r.clone();
            async move { r.lock().await.after_restore.iter().filter(|ok| **ok).count() >= 20 }
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut senders_back = Vec::new();
    for s in senders {
        senders_back.push(s.await.unwrap());
    }

    // The server did answer 503s while cut, and the clients' retries carried sends across.
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("kith_http_responses_total{status=\"503\"}"), "{metrics}");
    let mut bridged = 0;
    for r in &results {
        bridged += r.lock().await.bridged;
    }
    assert!(bridged > 0, "no send was carried across the cut by a retry");
    for (n, reader) in readers.iter_mut().enumerate() {
        let out = results[n].lock().await;
        eprintln!(
            "sender{n}: {} accepted ({} across the cut), {} given up (path cut for {cut_for:?}), {} sends after restore",
            out.accepted.len(),
            out.bridged,
            out.refused.len(),
            out.after_restore.len()
        );
        // Once the path was back, every send went through: nothing had to be restarted.
        assert!(
            out.after_restore.iter().all(|ok| *ok),
            "sender{n} was refused after the path came back: {:?}",
            out.after_restore
        );
        // Nothing written is lost: what waited went with the sender's later sends, once.
        let written: Vec<String> = out.accepted.iter().chain(&out.refused).cloned().collect();
        received_once(reader, &format!("reader{n}"), &written, &out.attempted).await;
    }
    // Both directions work afterwards.
    for (n, mut from) in senders_back.into_iter().enumerate() {
        readers[n].send_text(&format!("sender{n}"), "all good").await.unwrap();
        let got = from.sync().await.unwrap();
        assert!(got.messages.iter().any(|m| m.text == "all good"));
    }
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stall: the path to PostgreSQL stays open but no byte moves (packets silently dropped).
/// Nothing fails by itself, so only the request deadline stops a request from hanging: each is
/// answered `503` with `Retry-After` within `request_timeout_seconds`. Once bytes flow again the
/// server goes on by itself, and every accepted message arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_is_answered_in_time_and_recovers() {
    let config = kith_server::ServerConfig {
        request_timeout: Duration::from_secs(2),
        ..kith_testkit::test_config()
    };
    let Some((server, proxy)) = TestServer::start_postgres_behind_proxy_with(config).await else {
        return;
    };
    let proxy = Arc::new(proxy);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut accepted = vec!["before the stall".to_string()];
    let mut attempted: HashSet<String> = accepted.iter().cloned().collect();
    alice.send_text("bob", &accepted[0]).await.unwrap();

    proxy.stall();
    // A request that needs the database is answered at the deadline, not left hanging.
    let started = Instant::now();
    let raw = reqwest::Client::new()
        .get(format!("{}/v1/queue", server.url))
        .header("authorization", bob.bearer())
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(raw.status().as_u16(), 503);
    assert!(raw.headers().contains_key("retry-after"));
    assert!(waited < Duration::from_secs(6), "the answer took {waited:?}");
    // A send during the stall: the client is answered 503 and posts the same ciphertext again
    // after Retry-After; the path comes back meanwhile, and the send goes through.
    let unstall = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            proxy.restore();
        })
    };
    attempted.insert("during the stall".into());
    alice.send_text("bob", "during the stall").await.unwrap();
    accepted.push("during the stall".into());
    unstall.await.unwrap();

    // Back by itself: within a few seconds sends go through again, and then keep doing so.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut waiting = Vec::new();
    let mut n = 0;
    while accepted.len() < 12 {
        let text = format!("after the stall {n}");
        n += 1;
        attempted.insert(text.clone());
        match alice.send_text("bob", &text).await {
            Ok(m) if m.state == Delivery::Sent => accepted.push(text),
            // Still unavailable: written, it waits (and goes with the next send).
            Ok(_) => {
                waiting.push(text);
                assert!(accepted.len() == 2, "not sent after having recovered");
                assert!(Instant::now() < deadline, "no recovery after the stall");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(alice.waiting_to_send().unwrap(), 0, "what waited did not go");
    accepted.extend(waiting);
    received_once(&mut bob, "bob", &accepted, &attempted).await;
    eprintln!("a fetch during the stall was answered 503 in {waited:?}");
}
