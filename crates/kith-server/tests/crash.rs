//! Crash durability: kithd is killed with SIGKILL while a client sends a stream of messages,
//! then restarted on the same data. Every message it accepted (`2xx`) reaches the recipient
//! exactly once; nothing else appears.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kith_client::AccountKind;
use kith_testkit::{ChildKithd, TestUser};

/// Starts kithd on `listen` (port 0 for any), with its log in `log`.
fn start(data: &Path, listen: &str, database_url: Option<&str>, log: &str) -> (ChildKithd, String) {
    let mut args: Vec<OsString> =
        vec!["serve".into(), "--listen".into(), listen.into(), "--data".into()];
    args.push(data.join("store").into());
    if let Some(url) = database_url {
        args.extend(["--database-url".into(), url.into()]);
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_kithd"));
    let kithd = ChildKithd::start(exe, &args, &[("KITHD_LOG", "info")], &data.join(log));
    let addr = kithd.addr.clone();
    (kithd, addr)
}

async fn crash_and_recover(database_url: Option<String>) {
    let data = tempfile::tempdir().unwrap();
    let (mut kithd, addr) = start(data.path(), "127.0.0.1:0", database_url.as_deref(), "1.log");
    let url = format!("http://{addr}");
    let mut alice = TestUser::register(&url, "alice", AccountKind::Person).await;
    let mut bob = TestUser::register(&url, "bob", AccountKind::Person).await;
    alice.send_text("bob", "before the crash").await.unwrap();
    bob.sync().await.unwrap();

    // A stream of sends; the server is killed partway through, without warning.
    let mut accepted = HashSet::new();
    let mut attempted = HashSet::new();
    let mut waiting = HashSet::new();
    let pid = kithd.pid();
    let mut killer = None;
    let mut failures = 0;
    for i in 0..5000 {
        // After 40 accepted messages the kill is fired from another thread, landing while
        // the following sends are in flight.
        if accepted.len() == 40 && killer.is_none() {
            killer = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(3));
                Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
            }));
        }
        let text = format!("message {i}");
        attempted.insert(text.clone());
        match alice.send_text("bob", &text).await {
            Ok(m) if m.state == kith_client::Delivery::Sent => {
                accepted.insert(text);
            }
            // No answer: written, it waits in alice's outbox (sent after the restart), or the
            // send was refused before it was written.
            other => {
                if other.is_ok() {
                    waiting.insert(text);
                }
                failures += 1;
                if failures > 3 {
                    break;
                }
            }
        }
    }
    killer.unwrap().join().unwrap();
    let _ = kithd.child.wait();
    assert!(accepted.len() >= 5, "the crash came too early to mean anything");
    assert!(failures > 0, "the server was never killed");
    eprintln!("{} messages accepted before the SIGKILL", accepted.len());

    // Restart on the same data and address.
    let (_kithd, _) = start(data.path(), &addr, database_url.as_deref(), "2.log");
    // alice's next sync sends what waited (a message the server had taken before the kill is
    // recognised, and not stored again).
    alice.sync().await.unwrap();
    assert_eq!(alice.waiting_to_send().unwrap(), 0);
    let mut received = Vec::new();
    for _ in 0..5 {
        let r = bob.sync().await.unwrap();
        received.extend(r.messages.into_iter().map(|m| m.text));
    }
    let unique: HashSet<String> = received.iter().cloned().collect();
    assert_eq!(unique.len(), received.len(), "a message was shown twice");
    for text in accepted.iter().chain(&waiting) {
        assert!(unique.contains(text), "{text} was written but never delivered");
    }
    for text in &unique {
        assert!(attempted.contains(text), "{text} appeared from nowhere");
    }
    // Both sides go on working after the crash.
    alice.send_text("bob", "after the crash").await.unwrap();
    assert_eq!(bob.sync().await.unwrap().messages[0].text, "after the crash");
    bob.send_text("alice", "all good").await.unwrap();
    assert!(alice.sync().await.unwrap().messages.iter().any(|m| m.text == "all good"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_accepted_on_sqlite() {
    crash_and_recover(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_accepted_on_postgres() {
    let Ok(url) = std::env::var("KITH_TEST_DATABASE_URL") else {
        eprintln!(
            "skipped: KITH_TEST_DATABASE_URL is not set, so the PostgreSQL run did not happen"
        );
        return;
    };
    let (store, schema) = kith_store_postgres::PgStore::connect_fresh_schema(&url).await.unwrap();
    drop(store);
    let sep = if url.contains('?') { '&' } else { '?' };
    crash_and_recover(Some(format!("{url}{sep}options=-csearch_path%3D{schema}"))).await;
}
