//! `relay`: messages through a real `kithd` child process, from concurrent senders to devices
//! connected over WebSocket.
//!
//! Server mode (the default) prepares one real MLS ciphertext per conversation before the
//! timed part and posts it over and over: what is measured is the server accepting, storing,
//! pushing and deleting on acknowledgement. `--e2e` makes every message a fresh SDK encryption
//! and every delivery an SDK decryption into the recipient's durable profile.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use kith_client::AccountKind;
use kith_proto::ClientFrame;
use kith_testkit::TestUser;
use serde_json::json;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::StoreKind;
use crate::report::Report;
use crate::server::Kithd;

pub struct Config {
    pub store: StoreKind,
    /// 1:1 conversations (sender, receiver pairs); with `group`, receivers of one group.
    pub pairs: usize,
    pub senders: usize,
    pub seconds: u64,
    pub bytes: usize,
    pub rate: Option<u64>,
    pub group: Option<usize>,
    pub e2e: bool,
    /// Soak mode: sample the server's resident memory every this many seconds and report it
    /// over time; latencies are then kept for one message in [`SOAK_LATENCY_SAMPLE`] only, so
    /// a long run's own bookkeeping stays small.
    pub rss_every: Option<u64>,
    /// Devices per receiving account (1: no linked ones).
    pub devices: usize,
}

/// `user` and `more` devices linked to its account (without history: it has none yet).
async fn with_devices(mut user: TestUser, more: usize) -> anyhow::Result<Vec<TestUser>> {
    let poll = Duration::from_millis(20);
    let mut devices = Vec::new();
    for _ in 0..more {
        let dir = tempfile::tempdir()?;
        let mut device = TestUser { client: kith_client::Client::open(dir.path())?, dir };
        let offer = user.offer_link().await?;
        let code = offer.code();
        let (approved, joined) = tokio::join!(
            user.approve_link(offer, poll),
            device.register_by_link(code.expose(), poll, false)
        );
        joined?;
        let approved = approved?;
        user.add_linked_device(&approved, poll, Duration::from_secs(60), |_, _| {}).await?;
        devices.push(device);
    }
    devices.insert(0, user);
    Ok(devices)
}

/// In soak mode, latencies of message ids divisible by this are kept.
const SOAK_LATENCY_SAMPLE: u64 = 64;

struct Conversation {
    id: String,
    sender: usize,
    /// The other account of a 1:1 conversation.
    peer: Option<String>,
}

/// Arrival time of each message id at each device, and send times.
#[derive(Default)]
struct Times {
    sent: HashMap<u64, Instant>,
    arrived: Vec<(u64, Instant)>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(config: Config) -> anyhow::Result<Report> {
    let kithd = Kithd::start(config.store).await?;
    let url = kithd.url.clone();
    let mut report = Report::new("relay");
    report.context("store", json!(format!("{:?}", config.store).to_lowercase()));
    report.context("senders", json!(config.senders));
    report.context("message_text_bytes", json!(config.bytes));
    report.context("seconds", json!(config.seconds));
    report.context(
        "mode",
        json!(if config.e2e {
            "e2e (SDK encrypt + decrypt)"
        } else {
            "server (prepared ciphertexts)"
        }),
    );
    if let Some(r) = config.rate {
        report.context("offered_rate_per_s", json!(r));
    }
    let more = config.devices.max(1) - 1;
    report.context("devices_per_receiving_account", json!(more + 1));

    // Set-up: accounts, conversations, one prepared ciphertext per conversation.
    let t = Instant::now();
    let text = "x".repeat(config.bytes);
    let (mut senders, mut receivers, conversations) = match config.group {
        None => {
            report.context("conversations", json!(format!("{} 1:1", config.pairs)));
            let mut s = Vec::new();
            let mut r = Vec::new();
            let mut c = Vec::new();
            for i in 0..config.pairs {
                let mut a =
                    TestUser::register(&url, &format!("s{i:05}"), AccountKind::Person).await;
                let b = TestUser::register(&url, &format!("r{i:05}"), AccountKind::Person).await;
                let b = with_devices(b, more).await?;
                let id = a.direct_conversation(&format!("r{i:05}")).await?;
                c.push(Conversation { id, sender: i, peer: Some(format!("r{i:05}")) });
                s.push(a);
                r.extend(b);
            }
            (s, r, c)
        }
        Some(n) => {
            report.context("conversations", json!(format!("1 group of {n}")));
            let mut a = TestUser::register(&url, "s00000", AccountKind::Person).await;
            let mut r = Vec::new();
            let mut names = Vec::new();
            for i in 1..n {
                names.push(format!("r{i:05}"));
                let b = TestUser::register(&url, &names[i - 1], AccountKind::Person).await;
                r.extend(with_devices(b, more).await?);
            }
            let id = a.create_group("bench", &names).await?;
            (vec![a], r, vec![Conversation { id, sender: 0, peer: None }])
        }
    };
    for r in receivers.iter_mut() {
        r.sync().await?;
    }
    report.context("setup_s", json!((t.elapsed().as_secs_f64() * 10.0).round() / 10.0));

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let times = Arc::new(Mutex::new(Times::default()));
    let cpu_before = kithd.cpu_seconds();
    let keep = {
        let every = if config.rss_every.is_some() { SOAK_LATENCY_SAMPLE } else { 1 };
        move |id: u64| id.is_multiple_of(every)
    };
    // Soak mode: the server's RSS over time, sampled until the run stops.
    // With it, what the RSS is made of (heap, mapped files, shared memory such as SQLite's
    // WAL index) and the store's file sizes, so a step can be told apart.
    let rss_samples: Arc<std::sync::Mutex<Vec<(u64, f64)>>> = Arc::default();
    let rss_detail: Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sampler = config.rss_every.map(|every| {
        let (stop, samples, detail) = (stop.clone(), rss_samples.clone(), rss_detail.clone());
        let pid = kithd.pid();
        let files = kithd.data_files();
        let began = Instant::now();
        tokio::spawn(async move {
            let mb = |kib: u64| (kib as f64 / 102.4).round() / 10.0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(every)).await;
                let at = began.elapsed().as_secs();
                let rss = mb(crate::server::memory_kib_of(pid, "VmRSS:"));
                if let Ok(mut s) = samples.lock() {
                    s.push((at, rss));
                }
                let size = |name: &str| {
                    let bytes = std::fs::metadata(files.join(name)).map(|m| m.len()).unwrap_or(0);
                    mb(bytes / 1024)
                };
                if let Ok(mut d) = detail.lock() {
                    d.push(json!({
                        "t": at,
                        "rss": rss,
                        "anon": mb(crate::server::memory_kib_of(pid, "RssAnon:")),
                        "file": mb(crate::server::memory_kib_of(pid, "RssFile:")),
                        "shmem": mb(crate::server::memory_kib_of(pid, "RssShmem:")),
                        "threads": crate::server::memory_kib_of(pid, "Threads:"),
                        "db": size("kithd.db"),
                        "wal": size("kithd.db-wal"),
                    }));
                }
            }
        })
    });

    // Receivers: each device on its own WebSocket, acknowledging what it gets.
    let mut receiver_tasks = Vec::new();
    if config.e2e {
        for mut r in std::mem::take(&mut receivers) {
            let (stop, delivered, times) = (stop.clone(), delivered.clone(), times.clone());
            let mut push = r.connect_push().await?;
            receiver_tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let got =
                        tokio::time::timeout(Duration::from_millis(200), r.receive_push(&mut push))
                            .await;
                    let Ok(Ok(report)) = got else { continue };
                    let now = Instant::now();
                    let mut t = times.lock().await;
                    for m in report.messages {
                        if let Some(n) =
                            m.text.split(':').next().and_then(|n| n.parse::<u64>().ok())
                        {
                            if keep(n) {
                                t.arrived.push((n, now));
                            }
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    } else {
        for r in &receivers {
            let ws_url = url.replacen("http://", "ws://", 1) + "/v1/ws";
            let mut req = ws_url.into_client_request()?;
            req.headers_mut().insert("authorization", r.bearer().parse()?);
            // tungstenite zeroes its whole read buffer before every read: at the default
            // 128 KiB that was an eighth of the load generator's time.
            let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(req, Some(config), true).await?;
            let (stop, delivered, times) = (stop.clone(), delivered.clone(), times.clone());
            receiver_tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some(Ok(frame))) =
                        tokio::time::timeout(Duration::from_millis(200), ws.next()).await
                    else {
                        continue;
                    };
                    let tungstenite::Message::Text(text) = frame else { continue };
                    // Only what the measurement needs: the ciphertexts are not decoded.
                    let Ok(Frame { entries }) = serde_json::from_str(text.as_str()) else {
                        continue;
                    };
                    let now = Instant::now();
                    {
                        let mut t = times.lock().await;
                        t.arrived.extend(
                            entries
                                .iter()
                                .filter(|e| keep(e.message_id))
                                .map(|e| (e.message_id, now)),
                        );
                    }
                    delivered.fetch_add(entries.len() as u64, Ordering::Relaxed);
                    let ack = ClientFrame::Ack { seqs: entries.iter().map(|e| e.seq).collect() };
                    let Ok(ack) = serde_json::to_string(&ack) else { break };
                    if ws.send(tungstenite::Message::Text(ack.into())).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }

    // Senders.
    let per_sender_interval =
        config.rate.map(|r| Duration::from_secs_f64(config.senders as f64 / r as f64));
    let deadline = Instant::now() + Duration::from_secs(config.seconds);
    let started = Instant::now();
    let mut sender_tasks = Vec::new();
    let conversations = Arc::new(conversations);
    if config.e2e {
        // Each sender task owns some of the sending clients.
        let mut owned: Vec<Vec<(usize, TestUser)>> =
            (0..config.senders).map(|_| Vec::new()).collect();
        for (i, s) in senders.drain(..).enumerate() {
            owned[i % config.senders].push((i, s));
        }
        let seq = Arc::new(AtomicU64::new(0));
        for mut mine in owned.into_iter().filter(|o| !o.is_empty()) {
            let (accepted, times, conversations, seq, text) =
                (accepted.clone(), times.clone(), conversations.clone(), seq.clone(), text.clone());
            sender_tasks.push(tokio::spawn(async move {
                let mut k = 0;
                let mut next = Instant::now();
                while Instant::now() < deadline {
                    let len = mine.len();
                    let (i, client) = &mut mine[k % len];
                    k += 1;
                    let Some(conv) = conversations.iter().find(|c| c.sender == *i) else {
                        continue;
                    };
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let body = format!("{n}:{text}");
                    let ok = match &conv.peer {
                        Some(peer) => client.send_text(peer, &body).await.is_ok(),
                        None => client.send_group(&conv.id, &body).await.is_ok(),
                    };
                    if ok {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        if keep(n) {
                            times.lock().await.sent.insert(n, sent);
                        }
                    }
                    if let Some(iv) = per_sender_interval {
                        next += iv;
                        tokio::time::sleep_until(next.into()).await;
                    }
                }
            }));
        }
    } else {
        let http = reqwest::Client::builder().pool_max_idle_per_host(config.senders * 2).build()?;
        // Prepared: one real ciphertext per conversation, and its sender's credentials.
        let mut prepared = Vec::new();
        for c in conversations.iter() {
            let bytes = senders[c.sender].encrypt_for_bench(&c.id, &text)?;
            let body = serde_json::to_vec(&json!({ "message": kith_proto::B64(bytes) }))?;
            prepared.push(Prepared {
                url: reqwest::Url::parse(&format!("{url}/v1/conversations/{}/messages", c.id))?,
                bearer: HeaderValue::from_str(&senders[c.sender].bearer())?,
                body: Bytes::from(body),
            });
        }
        let prepared = Arc::new(prepared);
        for s in 0..config.senders {
            let (http, prepared, accepted, times) =
                (http.clone(), prepared.clone(), accepted.clone(), times.clone());
            let mut poster = Poster::connect(&prepared[0].url, &http).await?;
            sender_tasks.push(tokio::spawn(async move {
                let mut k = s;
                let mut next = Instant::now();
                let mut local = Vec::new();
                while Instant::now() < deadline {
                    let send = &prepared[k % prepared.len()];
                    k += config.senders;
                    let sent = Instant::now();
                    if let Some(id) = poster.post(send).await {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        if keep(id) {
                            local.push((id, sent));
                        }
                    }
                    if let Some(iv) = per_sender_interval {
                        next += iv;
                        tokio::time::sleep_until(next.into()).await;
                    }
                }
                times.lock().await.sent.extend(local);
            }));
        }
    }
    for t in sender_tasks {
        let _ = t.await;
    }
    let send_window = started.elapsed().as_secs_f64();
    // Let deliveries finish (bounded).
    let fanout = receivers.len().max(1) as u64;
    let expected =
        accepted.load(Ordering::Relaxed) * if config.group.is_some() { fanout } else { 1 };
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_delivered = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in receiver_tasks {
        let _ = t.await;
    }
    let cpu = kithd.cpu_seconds() - cpu_before;
    if let Some(sampler) = sampler {
        let _ = sampler.await;
        let samples = rss_samples.lock().map(|s| s.clone()).unwrap_or_default();
        report.context("rss_mb_over_time", json!(samples));
        let detail = rss_detail.lock().map(|d| d.clone()).unwrap_or_default();
        report.context("rss_detail_over_time", json!(detail));
        // After the first minute (the warm-up: caches, pools, connections), memory should stay
        // flat: the change from then to the end.
        let after_warm_up = samples.iter().find(|(t, _)| *t >= 60).map(|(_, mb)| *mb);
        let end = samples.last().map(|(_, mb)| *mb);
        if let (Some(start), Some(end)) = (after_warm_up, end) {
            let max =
                samples.iter().filter(|(t, _)| *t >= 60).map(|(_, mb)| *mb).fold(0.0, f64::max);
            report.figure("rss_mb_at_60s", start, "MB", "server RSS after the first minute");
            report.figure("rss_mb_end", end, "MB", "server RSS at the end");
            report.figure(
                "rss_max_growth_after_60s_pct",
                (max - start) / start * 100.0,
                "%",
                "largest RSS after the first minute, over the RSS at 60 s",
            );
        }
    }

    let accepted = accepted.load(Ordering::Relaxed);
    let delivered = delivered.load(Ordering::Relaxed);
    let t = times.lock().await;
    let mut latencies: Vec<f64> = t
        .arrived
        .iter()
        .filter_map(|(id, at)| t.sent.get(id).map(|s| at.duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    report.context("accepted", json!(accepted));
    report.context("delivered", json!(delivered));
    report.figure(
        "accepted_per_s",
        accepted as f64 / send_window,
        "msg/s",
        "messages accepted per second",
    );
    report.figure(
        "delivered_per_s",
        delivered as f64 / all_delivered,
        "msg/s",
        "deliveries per second (until all arrived)",
    );
    report.figure("p50_ms", percentile(&latencies, 0.5), "ms", "send → recipient has it, median");
    report.figure("p99_ms", percentile(&latencies, 0.99), "ms", "  99th percentile");
    report.figure("p999_ms", percentile(&latencies, 0.999), "ms", "  99.9th percentile");
    if config.group.is_some() {
        // Per message, the time until the last member had it.
        let mut last: HashMap<u64, Instant> = HashMap::new();
        for (id, at) in &t.arrived {
            let e = last.entry(*id).or_insert(*at);
            if at > e {
                *e = *at;
            }
        }
        let mut all: Vec<f64> = last
            .iter()
            .filter_map(|(id, at)| {
                t.sent.get(id).map(|s| at.duration_since(*s).as_secs_f64() * 1000.0)
            })
            .collect();
        all.sort_by(|a, b| a.total_cmp(b));
        report.figure(
            "all_members_p50_ms",
            percentile(&all, 0.5),
            "ms",
            "send → every member has it, median",
        );
    }
    report.figure(
        "server_cpu_s_per_1k",
        if accepted == 0 { 0.0 } else { cpu / (accepted as f64 / 1000.0) },
        "s",
        "server CPU per 1000 messages",
    );
    report.figure(
        "server_peak_rss_mb",
        kithd.memory_kib("VmHWM:") as f64 / 1024.0,
        "MB",
        "server peak memory",
    );
    Ok(report)
}

/// The parts of a pushed frame the server-only mode reads.
#[derive(serde::Deserialize)]
struct Frame {
    entries: Vec<FrameEntry>,
}

#[derive(serde::Deserialize)]
struct FrameEntry {
    seq: u64,
    message_id: u64,
}

/// One prepared send: where, as whom, what.
struct Prepared {
    url: reqwest::Url,
    bearer: HeaderValue,
    body: Bytes,
}

/// Posts prepared sends: on a plain `http://` server over one HTTP/1.1 connection per sender
/// task with hyper alone (the lightest client, so the load generator leaves more of the shared
/// cores to the server), through reqwest otherwise (TLS).
enum Poster {
    Plain { send: hyper::client::conn::http1::SendRequest<Full<Bytes>>, host: HeaderValue },
    Any(reqwest::Client),
}

impl Poster {
    async fn connect(url: &reqwest::Url, http: &reqwest::Client) -> anyhow::Result<Self> {
        if url.scheme() != "http" {
            return Ok(Poster::Any(http.clone()));
        }
        let host = url.host_str().context("the server URL has no host")?;
        let port = url.port_or_known_default().context("the server URL has no port")?;
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Poster::Plain { send, host: HeaderValue::from_str(&format!("{host}:{port}"))? })
    }

    /// The message id, if the server accepted the send.
    async fn post(&mut self, p: &Prepared) -> Option<u64> {
        let answer = match self {
            Poster::Plain { send, host } => {
                let request = hyper::Request::post(p.url.path())
                    .header(header::HOST, host.clone())
                    .header(header::AUTHORIZATION, p.bearer.clone())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(p.body.clone()))
                    .ok()?;
                send.ready().await.ok()?;
                let response = send.send_request(request).await.ok()?;
                if response.status().as_u16() != 202 {
                    return None;
                }
                response.into_body().collect().await.ok()?.to_bytes()
            }
            Poster::Any(http) => {
                let response = http
                    .post(p.url.clone())
                    .header(header::AUTHORIZATION, p.bearer.clone())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(p.body.clone())
                    .send()
                    .await
                    .ok()?;
                if response.status().as_u16() != 202 {
                    return None;
                }
                response.bytes().await.ok()?
            }
        };
        serde_json::from_slice::<kith_proto::SendResponse>(&answer).ok().map(|a| a.message_id)
    }
}
