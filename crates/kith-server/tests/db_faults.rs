//! Database faults: the connection between kithd and PostgreSQL is cut and restored by a TCP
//! proxy while clients send. While it is cut kithd answers `503 unavailable` with
//! `Retry-After`; it recovers by itself once the path is back, and every message it accepted
//! reaches its recipient exactly once.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kith_client::{ClientError, ErrorCode};
use kith_testkit::{TestServer, TestUser};
use tokio::sync::Mutex;

/// What one sender saw, in order.
#[derive(Default)]
struct Outcomes {
    accepted: Vec<String>,
    attempted: HashSet<String>,
    /// Refusals, each with whether the proxy was cut when the send began.
    refused: Vec<(String, bool)>,
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
        let (stop, restored, proxy, out) =
            (stop.clone(), restored.clone(), proxy.clone(), results[n].clone());
        senders.push(tokio::spawn(async move {
            let mut from: TestUser = from;
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let text = format!("sender{n} message {i}");
                let (was_cut, was_restored) = (proxy.is_cut(), restored.load(Ordering::SeqCst));
                let result = from.send_text(&format!("reader{n}"), &text).await;
                let mut out = out.lock().await;
                out.attempted.insert(text.clone());
                if was_restored {
                    out.after_restore.push(result.is_ok());
                }
                match &result {
                    Ok(_) => out.accepted.push(text.clone()),
                    Err(ClientError::Server {
                        status: 503, code: ErrorCode::Unavailable, ..
                    }) => {
                        out.refused.push((text.clone(), was_cut));
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
    // Every sender is refused at least once while the path is cut.
    for r in &results {
        let r = r.clone();
        wait_until(Duration::from_secs(30), || {
            let r = r.clone();
            async move { r.lock().await.refused.iter().any(|(_, cut)| *cut) }
        })
        .await;
    }
    // The path stays cut for two seconds of load at least.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(cut_at.elapsed())).await;
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

    for (n, reader) in readers.iter_mut().enumerate() {
        let out = results[n].lock().await;
        eprintln!(
            "sender{n}: {} accepted, {} refused (path cut for {cut_for:?}), {} sends after restore",
            out.accepted.len(),
            out.refused.len(),
            out.after_restore.len()
        );
        // Once the path was back, every send went through: nothing had to be restarted.
        assert!(
            out.after_restore.iter().all(|ok| *ok),
            "sender{n} was refused after the path came back: {:?}",
            out.after_restore
        );
        let mut received = Vec::new();
        loop {
            let r = reader.sync().await.unwrap();
            if r.messages.is_empty() {
                break;
            }
            received.extend(r.messages.into_iter().map(|m| m.text));
        }
        let unique: HashSet<&String> = received.iter().collect();
        assert_eq!(unique.len(), received.len(), "reader{n} was shown a message twice");
        for text in &out.accepted {
            assert!(unique.contains(text), "{text} was accepted but never delivered");
        }
        for text in &unique {
            assert!(out.attempted.contains(*text), "{text} appeared from nowhere");
        }
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
