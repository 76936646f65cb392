//! `groups`: what a large group costs through Kith, next to raw OpenMLS.

use std::time::Instant;

use kith_client::AccountKind;
use kith_testkit::{TestServer, TestUser};
use serde_json::json;

use crate::StoreKind;
use crate::raw;
use crate::report::{Report, histogram_sum};

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

async fn start(store: StoreKind, members: usize) -> anyhow::Result<TestServer> {
    // One young account claiming the KeyPackages of hundreds of strangers in a minute is what
    // the safety policy exists to stop; a benchmark of speed lifts those limits.
    let mut config = kith_testkit::test_config();
    config.safety.max_key_package_claims_per_hour = u32::MAX;
    config.safety.max_unused_claims_per_hour = u32::MAX;
    config.max_group_size = config.max_group_size.max(members);
    Ok(match store {
        StoreKind::Sqlite => {
            TestServer::start_with(config, std::sync::Arc::new(kith_testkit::SystemClock)).await
        }
        StoreKind::Postgres => TestServer::start_postgres_with(config)
            .await
            .ok_or_else(|| anyhow::anyhow!("--store postgres needs KITH_TEST_DATABASE_URL"))?,
    })
}

pub async fn run(store: StoreKind, members: usize, text_bytes: usize) -> anyhow::Result<Report> {
    anyhow::ensure!(members >= 3, "a group for this scenario has at least 3 members");
    let mut report = Report::new("groups");
    report.context("members", json!(members));
    report.context("store", json!(format!("{store:?}").to_lowercase()));
    report.context("message_text_bytes", json!(text_bytes));

    let server = start(store, members).await?;
    let t = Instant::now();
    let mut creator = TestUser::register(&server.url, "creator", AccountKind::Person).await;
    let mut names = Vec::with_capacity(members - 1);
    let mut joiners = Vec::new();
    for i in 1..members {
        let name = format!("m{i:05}");
        let user = TestUser::register(&server.url, &name, AccountKind::Person).await;
        if i <= 2 {
            joiners.push(user);
        }
        names.push(name);
    }
    report.context("setup_s", json!((t.elapsed().as_secs_f64() * 10.0).round() / 10.0));

    // What claiming costs on its own: one request per member (these KeyPackages go unused).
    let t = Instant::now();
    for name in &names {
        creator.devices(name).await?;
    }
    report.figure("lookup_all_ms", ms(t), "ms", "one authenticated request per member");

    // Create: claim every member's KeyPackage, one add commit, the server verifies the group
    // and queues the Welcome for every device.
    let metrics = || server.state.metrics.render();
    let t = Instant::now();
    let id = creator.create_group("bench", &names).await?;
    report.figure("group_create_ms", ms(t), "ms", "create the group (Kith SDK, end to end)");
    let server_create = histogram_sum(&metrics(), "kith_create_seconds") * 1000.0;
    report.figure("group_create_server_ms", server_create, "ms", "  of which the server");

    // Join from the Welcome (the sync also fetches the group's name message).
    let t = Instant::now();
    joiners[0].sync().await?;
    report.figure("welcome_join_ms", ms(t), "ms", "join from the Welcome (SDK sync)");
    joiners[1].sync().await?;

    // One message to every member: one stored copy, one queue entry per device.
    let before = server.store().counts().await?;
    let send_before = histogram_sum(&metrics(), "kith_send_seconds");
    let text = "x".repeat(text_bytes);
    let t = Instant::now();
    creator.send_group(&id, &text).await?;
    report.figure("message_send_ms", ms(t), "ms", "send one message to all (SDK)");
    let server_send = (histogram_sum(&metrics(), "kith_send_seconds") - send_before) * 1000.0;
    report.figure("message_server_ms", server_send, "ms", "  of which the server");
    let after = server.store().counts().await?;
    let copies = after.messages - before.messages;
    let entries = after.queue_entries - before.queue_entries;
    let blob = joiners[0].raw_queue().await.last().map(|e| e.data.0.len()).unwrap_or(0);
    report.figure("message_stored_copies", copies as f64, "", "stored copies of the message");
    report.figure("message_queue_entries", entries as f64, "", "queue entries (one per device)");
    report.figure("message_ciphertext_bytes", blob as f64, "B", "ciphertext stored once");
    joiners[0].sync().await?;
    joiners[1].sync().await?;

    // One member's update commit, validated by the server, processed by another member.
    let hs_before = histogram_sum(&metrics(), "kith_handshake_seconds");
    let t = Instant::now();
    joiners[0].update_keys(&id).await?;
    report.figure("update_commit_ms", ms(t), "ms", "a member's update commit (SDK)");
    let server_hs = (histogram_sum(&metrics(), "kith_handshake_seconds") - hs_before) * 1000.0;
    report.figure("update_server_ms", server_hs, "ms", "  of which the server validating it");
    let t = Instant::now();
    joiners[1].sync().await?;
    report.figure("update_process_ms", ms(t), "ms", "another member processes it (SDK sync)");
    creator.sync().await?;

    // A settings change: a rename is a commit with a group-context proposal (the new digest),
    // an update path, and the settings sealed in its authenticated data.
    let hs_before = histogram_sum(&metrics(), "kith_handshake_seconds");
    let t = Instant::now();
    creator.group_rename(&id, "bench renamed").await?;
    report.figure("rename_commit_ms", ms(t), "ms", "a rename: commit with sealed settings (SDK)");
    let server_hs = (histogram_sum(&metrics(), "kith_handshake_seconds") - hs_before) * 1000.0;
    report.figure("rename_server_ms", server_hs, "ms", "  of which the server validating it");
    let size = joiners[1].raw_queue().await.last().map(|e| e.data.0.len()).unwrap_or(0);
    report.figure("rename_commit_bytes", size as f64, "B", "  its size");
    let t = Instant::now();
    joiners[1].sync().await?;
    report.figure("rename_process_ms", ms(t), "ms", "another member opens it (SDK sync)");
    anyhow::ensure!(
        joiners[1].group(&id)?.name.as_deref() == Some("bench renamed"),
        "the rename did not reach a member"
    );

    let raw = tokio::task::spawn_blocking(move || raw::group(members, text_bytes)).await??;
    report.figure(
        "raw_add_commit_ms",
        raw.add_commit_ms,
        "ms",
        "raw OpenMLS: add all in one commit",
    );
    report.figure("raw_commit_bytes", raw.commit_bytes as f64, "B", "raw OpenMLS: that commit");
    report.figure("raw_welcome_bytes", raw.welcome_bytes as f64, "B", "raw OpenMLS: its Welcome");
    report.figure("raw_join_ms", raw.join_ms, "ms", "raw OpenMLS: join from the Welcome");
    report.figure("raw_update_commit_ms", raw.update_commit_ms, "ms", "raw OpenMLS: update commit");
    report.figure(
        "raw_update_commit_bytes",
        raw.update_commit_bytes as f64,
        "B",
        "raw OpenMLS: its size",
    );
    report.figure("raw_update_process_ms", raw.update_process_ms, "ms", "raw OpenMLS: process it");
    report.figure("raw_message_bytes", raw.message_bytes as f64, "B", "raw OpenMLS: one message");
    server.stop().await;
    Ok(report)
}
