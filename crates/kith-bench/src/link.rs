//! `link`: what linking a device costs an account with many conversations — the time from the
//! code to the new device in every conversation (one commit each), then the history's
//! hand-over, and the bytes each device sent and received meanwhile (counted by a TCP proxy
//! in front of kithd for each of the two devices).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kith_client::{AccountKind, Client};
use kith_testkit::{TestServer, TestUser};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::StoreKind;
use crate::report::Report;

pub struct Config {
    pub store: StoreKind,
    /// 1:1 conversations the account has when it links a device.
    pub conversations: usize,
    /// Messages in each, for the history.
    pub messages: usize,
}

/// Bytes through a proxy, each way.
#[derive(Default)]
struct Counted {
    up: AtomicU64,
    down: AtomicU64,
}

impl Counted {
    fn take(&self) -> (u64, u64) {
        (self.up.swap(0, Ordering::SeqCst), self.down.swap(0, Ordering::SeqCst))
    }
}

/// Copies one direction, counting.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<Counted>,
    up: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        let slot = if up { &count.up } else { &count.down };
        slot.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// A counting proxy in front of `target`; its URL.
async fn proxy(target: std::net::SocketAddr, count: Arc<Counted>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pump(cr, sw, count.clone(), true), pump(sr, cw, count, false));
            });
        }
    });
    Ok(url)
}

async fn start(store: StoreKind) -> anyhow::Result<TestServer> {
    // One account opening a hundred conversations in a minute is what the safety policy
    // stops; a benchmark of speed lifts those limits.
    let mut config = kith_testkit::test_config();
    config.safety.max_key_package_claims_per_hour = u32::MAX;
    config.safety.max_unused_claims_per_hour = u32::MAX;
    config.safety.max_new_conversations_per_hour = u32::MAX;
    config.safety.max_messages_per_minute = u32::MAX;
    config.safety.max_changes_per_minute = u32::MAX;
    config.safety.registrations_per_ip_per_hour = u32::MAX;
    config.safety.registration_attempts_per_ip_per_hour = u32::MAX;
    config.safety.unanswered_conversations_per_day = u32::MAX;
    Ok(match store {
        StoreKind::Sqlite => {
            TestServer::start_with(config, Arc::new(kith_testkit::SystemClock)).await
        }
        StoreKind::Postgres => TestServer::start_postgres_with(config)
            .await
            .ok_or_else(|| anyhow::anyhow!("--store postgres needs KITH_TEST_DATABASE_URL"))?,
    })
}

fn secs(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

pub async fn run(config: Config) -> anyhow::Result<Report> {
    let mut report = Report::new("link");
    report.context("conversations", json!(config.conversations));
    report.context("messages_per_conversation", json!(config.messages));
    report.context("store", json!(format!("{:?}", config.store).to_lowercase()));
    let server = start(config.store).await?;
    let phone_bytes = Arc::new(Counted::default());
    let laptop_bytes = Arc::new(Counted::default());
    let phone_url = proxy(server.state.config.listen, phone_bytes.clone()).await?;
    let laptop_url = proxy(server.state.config.listen, laptop_bytes.clone()).await?;

    let t = Instant::now();
    let mut ana = TestUser::register(&phone_url, "ana", AccountKind::Person).await;
    let text = "a message of an ordinary length, about two hundred bytes long: ".repeat(3);
    for i in 0..config.conversations {
        let name = format!("p{i:04}");
        let _peer = TestUser::register(&server.url, &name, AccountKind::Person).await;
        for _ in 0..config.messages {
            ana.send_text(&name, &text).await?;
        }
    }
    report.context("setup_s", json!(secs(t)));
    phone_bytes.take();

    // The code is shown; the new device joins with it (a new profile behind its own proxy).
    let dir = tempfile::tempdir()?;
    let mut laptop = TestUser { client: Client::open(dir.path())?, dir };
    let poll = Duration::from_millis(20);
    let t = Instant::now();
    let offer = ana.offer_link().await?;
    let code = offer.code().expose().replace(&phone_url, &laptop_url);
    let (approved, joined) =
        tokio::join!(ana.approve_link(offer, poll), laptop.register_by_link(&code, poll, true));
    joined?;
    let approved = approved?;
    let approve_s = secs(t);
    let t = Instant::now();
    let linked =
        ana.add_linked_device(&approved, poll, Duration::from_secs(600), |_, _| {}).await?;
    let add_s = secs(t);
    anyhow::ensure!(linked.not_added.is_empty(), "not added to {:?}", linked.not_added);
    let (add_up, add_down) = phone_bytes.take();
    let t = Instant::now();
    let chunks = ana.send_history(&approved, |_, _| {}).await?;
    while laptop.continue_history().await?.is_some() {}
    let history_s = secs(t);
    let (history_up, _) = phone_bytes.take();
    let t = Instant::now();
    let r = laptop.sync().await?;
    let join_s = secs(t);
    let (laptop_up, laptop_down) = laptop_bytes.take();
    anyhow::ensure!(
        r.joined.len() == config.conversations,
        "the laptop joined {} of {}",
        r.joined.len(),
        config.conversations
    );
    let shown = laptop.history("p0000")?.len();
    anyhow::ensure!(shown == config.messages, "the history shows {shown} of {}", config.messages);

    report.figure("approve_s", approve_s, "s", "code to approval (both devices)");
    report.figure(
        "add_s",
        add_s,
        "s",
        "linking device: the new device into every conversation (one commit each)",
    );
    report.figure(
        "add_per_conversation_ms",
        add_s * 1000.0 / config.conversations as f64,
        "ms",
        "per conversation",
    );
    report.figure("add_bytes_up", add_up as f64, "B", "linking device sent while adding");
    report.figure("add_bytes_down", add_down as f64, "B", "linking device received while adding");
    report.figure("history_s", history_s, "s", "history sealed, put up, fetched and taken in");
    report.figure("history_chunks", chunks as f64, "", "chunks of 192 KiB");
    report.figure(
        "history_bytes_up",
        history_up as f64,
        "B",
        "linking device sent for the history",
    );
    report.figure("new_device_join_s", join_s, "s", "new device: first sync (every Welcome)");
    report.figure("new_device_bytes_down", laptop_down as f64, "B", "new device received in all");
    report.figure("new_device_bytes_up", laptop_up as f64, "B", "new device sent in all");
    Ok(report)
}
