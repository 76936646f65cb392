//! `floods`: an honest pair's latency while one client floods a real `kithd` (a child process
//! with its default limits), one kind of flood at a time, next to the same pair with no flood.
//!
//! The pair: alice sends bob a message and bob syncs until it is there; the round trip is
//! timed, over and over. The floods, each from loopback like the pair (so the per-address caps
//! are shared with it — the hardest case):
//! - **idle connections**: thousands of sockets that never send a byte, topped up as the
//!   server closes them;
//! - **stalled bodies**: hundreds of registrations that announce a body just under the limit,
//!   send most of it and stall;
//! - **failed registrations**: four tasks re-posting a taken name with 200 KeyPackages as
//!   fast as they can.
//!
//! Reported per phase: the pair's p50 and p99 round trip, round trips that failed, and the
//! server's RSS at the end of the phase.

use std::time::{Duration, Instant};

use kith_proto::AccountKind;
use kith_testkit::TestUser;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::report::Report;
use crate::server::Kithd;

/// kithd's own defaults — its connection caps, body budget and registration limits — but for
/// the message rate, which the honest pair's timed round trips would otherwise reach.
const FLOOD_CONFIG: &str = "retention_days = 30\n[safety]\nmax_messages_per_minute = 1000000\n";

pub struct Config {
    pub store: crate::StoreKind,
    pub rounds: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flood {
    None,
    IdleConnections,
    StalledBodies,
    FailedRegistrations,
}

impl Flood {
    fn label(self) -> &'static str {
        match self {
            Flood::None => "no_flood",
            Flood::IdleConnections => "idle_connections",
            Flood::StalledBodies => "stalled_bodies",
            Flood::FailedRegistrations => "failed_registrations",
        }
    }
}

pub async fn run(config: Config) -> anyhow::Result<Report> {
    kith_listen::raise_open_file_limit();
    let kithd = Kithd::start_with_config(config.store, FLOOD_CONFIG).await?;
    let addr: std::net::SocketAddr = kithd.url.trim_start_matches("http://").parse()?;
    let mut alice = TestUser::register(&kithd.url, "alice", AccountKind::Person).await;
    let mut bob = TestUser::register(&kithd.url, "bob", AccountKind::Person).await;
    alice.send_text("bob", "hello").await?;
    bob.sync().await?;
    let mut report = Report::new("floods");
    report.context("rounds_per_phase", json!(config.rounds));
    report.context("store", json!(format!("{:?}", config.store).to_lowercase()));
    for flood in
        [Flood::None, Flood::IdleConnections, Flood::StalledBodies, Flood::FailedRegistrations]
    {
        let task = tokio::spawn(flood_forever(flood, addr, kithd.url.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut times = Vec::with_capacity(config.rounds);
        let mut failed = 0;
        for i in 0..config.rounds {
            let text = format!("{} {i}", flood.label());
            let started = Instant::now();
            if alice.send_text("bob", &text).await.is_err() {
                failed += 1;
                continue;
            }
            let mut arrived = false;
            for _ in 0..50 {
                match bob.sync().await {
                    Ok(r) if r.messages.iter().any(|m| m.text == text) => {
                        arrived = true;
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            if arrived {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            } else {
                failed += 1;
            }
        }
        let rss = kithd.memory_kib("VmRSS:") as f64 / 1024.0;
        task.abort();
        let _ = task.await;
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times.get(((times.len() as f64 - 1.0) * q) as usize).copied();
        let label = flood.label();
        report.figure(
            &format!("{label}_p50_ms"),
            at(0.5).unwrap_or(f64::NAN),
            "ms",
            &format!("honest round trip p50, {label}"),
        );
        report.figure(
            &format!("{label}_p99_ms"),
            at(0.99).unwrap_or(f64::NAN),
            "ms",
            &format!("honest round trip p99, {label}"),
        );
        report.figure(
            &format!("{label}_failed"),
            failed as f64,
            "",
            &format!("honest round trips that failed, {label}"),
        );
        report.figure(
            &format!("{label}_rss_mb"),
            rss,
            "MB",
            &format!("kithd RSS at the end, {label}"),
        );
        // Let the server close what the flood left before the next phase.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(report)
}

async fn flood_forever(flood: Flood, addr: std::net::SocketAddr, url: String) {
    match flood {
        Flood::None => std::future::pending().await,
        Flood::IdleConnections => {
            let mut held: Vec<TcpStream> = Vec::new();
            loop {
                // Keep 5,000 open, replacing the ones the server closed.
                held.retain(still_open);
                while held.len() < 5000 {
                    match TcpStream::connect(addr).await {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Flood::StalledBodies => {
            let mut held: Vec<TcpStream> = Vec::new();
            let head = "POST /v1/accounts HTTP/1.1\r\nhost: kithd\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n";
            let part = vec![b' '; 900_000];
            loop {
                held.retain(still_open);
                while held.len() < 300 {
                    let Ok(mut s) = TcpStream::connect(addr).await else { break };
                    if s.write_all(head.as_bytes()).await.is_err() {
                        continue;
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(50), s.write_all(&part)).await;
                    held.push(s);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Flood::FailedRegistrations => {
            let body = json!({
                "username": "alice",
                "credential_key": kith_proto::B64(vec![7; 32]),
                "key_packages": (0..200).map(|_| kith_proto::B64(vec![1; 300])).collect::<Vec<_>>(),
                "last_resort_key_package": kith_proto::B64(vec![1; 300]),
            });
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (url, body) = (url.clone(), body.clone());
                tasks.push(tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    loop {
                        let _ = http.post(format!("{url}/v1/accounts")).json(&body).send().await;
                    }
                }));
            }
            struct AbortAll(Vec<tokio::task::JoinHandle<()>>);
            impl Drop for AbortAll {
                fn drop(&mut self) {
                    for t in &self.0 {
                        t.abort();
                    }
                }
            }
            let _guard = AbortAll(tasks);
            std::future::pending::<()>().await;
        }
    }
}

/// Whether the server has not closed this socket (without waiting).
fn still_open(s: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match s.try_read(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}
