//! `connections`: many idle devices connected over WebSocket to a `kithd` child process; the
//! server's memory per connected device, and how long connecting them all takes.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kith_proto::RegisterResponse;
use openmls_rust_crypto::OpenMlsRustCrypto;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::StoreKind;
use crate::report::Report;
use crate::server::Kithd;

pub async fn run(store: StoreKind, devices: usize) -> anyhow::Result<Report> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let kithd = Kithd::start(store).await?;
    let mut report = Report::new("connections");
    report.context("devices", json!(devices));
    report.context("store", json!(format!("{store:?}").to_lowercase()));

    // Register the devices (not timed).
    let http = reqwest::Client::new();
    let provider = OpenMlsRustCrypto::default();
    let mut bearers = Vec::with_capacity(devices);
    let t = Instant::now();
    for i in 0..devices {
        let req = kith_testkit::raw_registration(&provider, &format!("idle{i:06}"));
        let resp: RegisterResponse = http
            .post(format!("{}/v1/accounts", kithd.url))
            .json(&req)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        bearers.push(format!("Bearer {}:{}", resp.device_id, resp.token.expose()));
    }
    report.context("setup_s", json!((t.elapsed().as_secs_f64() * 10.0).round() / 10.0));

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = kithd.memory_kib("VmRSS:");
    let ws_url = kithd.url.replacen("http://", "ws://", 1) + "/v1/ws";
    let t = Instant::now();
    let mut sockets = Vec::with_capacity(devices);
    let mut pending = futures_util::stream::iter(bearers.iter().map(|b| {
        let ws_url = ws_url.clone();
        let b = b.clone();
        async move {
            let mut req = ws_url.into_client_request()?;
            req.headers_mut().insert("authorization", b.parse()?);
            let (ws, _) = tokio_tungstenite::connect_async(req).await?;
            anyhow::Ok(ws)
        }
    }))
    .buffer_unordered(64);
    while let Some(ws) = pending.next().await {
        sockets.push(ws?);
    }
    let connect_s = t.elapsed().as_secs_f64();
    // Let the server settle, then read its memory with every device connected and idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = kithd.memory_kib("VmRSS:");
    report.context("server_rss_before_mb", json!(before / 1024));
    report.context("server_rss_after_mb", json!(after / 1024));
    report.figure(
        "rss_per_device_kib",
        after.saturating_sub(before) as f64 / devices.max(1) as f64,
        "KiB",
        "server memory per idle connected device",
    );
    report.figure("connect_s", connect_s, "s", "time to connect them all");
    drop(sockets);
    Ok(report)
}
