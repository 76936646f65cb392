//! `kt`: the key directory's costs, on the server's own store: filling a directory of
//! `accounts` accounts, publishing one epoch of `changes` changed accounts in it, and for a
//! client the size of a lookup proof and of one epoch's audit proof and the time to check each
//! (`kith_client::kt::verify`, what every client runs before it uses a key).

use std::sync::Arc;
use std::time::Instant;

use kith_proto::kt::directory_value;
use kith_server::kt::Kt;
use kith_store::Store;
use serde_json::json;

use crate::StoreKind;
use crate::report::Report;

fn value(n: usize, version: u8) -> Vec<u8> {
    let mut key = [version; 32];
    key[..8].copy_from_slice(&(n as u64).to_be_bytes());
    directory_value(Some(&key), &[(n as u64, &key)])
}

fn name(n: usize) -> String {
    format!("user{n:07}")
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

pub async fn run(kind: StoreKind, accounts: usize, changes: usize) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = match kind {
        StoreKind::Sqlite => {
            Arc::new(kith_store_sqlite::SqliteStore::open(dir.path().join("kt.db"))?)
        }
        StoreKind::Postgres => {
            let url = std::env::var("KITH_TEST_DATABASE_URL")
                .map_err(|_| anyhow::anyhow!("--store postgres needs KITH_TEST_DATABASE_URL"))?;
            Arc::new(kith_store_postgres::PgStore::connect_fresh_schema(&url).await?.0)
        }
    };
    let kt = Kt::start(store.clone()).await?;
    let keys = kt.keys();
    let now = 1_800_000_000_000;
    let changes = changes.max(1);

    // Fill: `accounts` accounts, `changes` to an epoch.
    let filling = Instant::now();
    let mut n = 0;
    while n < accounts {
        let end = (n + changes).min(accounts);
        let batch: Vec<(String, Vec<u8>)> = (n..end).map(|i| (name(i), value(i, 1))).collect();
        kt.publish_values(batch, now).await?;
        n = end;
    }
    let fill_seconds = filling.elapsed().as_secs_f64();

    // One epoch of `changes` accounts that changed (a new key each), spread over the directory.
    let step = (accounts / changes).max(1);
    let updates: Vec<(String, Vec<u8>)> = (0..changes)
        .map(|i| (i * step) % accounts.max(1))
        .map(|i| (name(i), value(i, 2)))
        .collect();
    let publishing = Instant::now();
    let epoch = kt.publish_values(updates, now).await?.map(|r| r.epoch).unwrap_or(0);
    let publish_ms = ms(publishing);

    // A client's lookup: the proof's size and the time to make and to check it.
    let who = name(step); // changed in the last epoch: two versions
    let looking = Instant::now();
    let (root, proof) = kt.lookup(&who, now).await?;
    let lookup_make_ms = ms(looking);
    let root_hash: [u8; 32] = root.root.0.as_slice().try_into()?;
    let rounds = 200;
    let checking = Instant::now();
    for _ in 0..rounds {
        kith_client::kt::verify::lookup(
            &keys.vrf_public_key.0,
            root_hash,
            root.epoch,
            &who,
            &proof,
        )
        .map_err(anyhow::Error::msg)?;
    }
    let lookup_verify_ms = ms(checking) / f64::from(rounds);
    let (_, history) = kt.history(&who, now).await?;

    // An auditor's step from one epoch to the next (the one of `changes` changes).
    let auditing = Instant::now();
    let audit = kt.audit(epoch - 1, epoch).await?;
    let audit_make_ms = ms(auditing);
    let roots = store.kt_roots(epoch - 1, 2).await?;
    let (start, end): ([u8; 32], [u8; 32]) =
        (roots[0].root.as_slice().try_into()?, roots[1].root.as_slice().try_into()?);
    let audit_bytes = audit.proofs.iter().map(|p| p.0.len()).sum::<usize>();
    let checking = Instant::now();
    for p in &audit.proofs {
        kith_client::kt::verify::append_only(&p.0, start, end, epoch)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let audit_verify_ms = ms(checking);

    let mut report = Report::new("kt");
    report.context("store", json!(format!("{kind:?}").to_lowercase()));
    report.context("accounts", json!(accounts));
    report.context("changes_per_epoch", json!(changes));
    report.context("epochs", json!(epoch));
    report.figure("fill_seconds", fill_seconds, "s", "filling the directory");
    report.figure("publish_ms", publish_ms, "ms", "publishing one epoch of changes");
    report.figure("lookup_proof_bytes", proof.len() as f64, "B", "lookup proof (protobuf)");
    report.figure("lookup_make_ms", lookup_make_ms, "ms", "making a lookup proof (server)");
    report.figure("lookup_verify_ms", lookup_verify_ms, "ms", "checking a lookup proof (client)");
    report.figure("history_proof_bytes", history.len() as f64, "B", "history proof, 2 versions");
    report.figure("audit_proof_bytes", audit_bytes as f64, "B", "audit proof of that epoch");
    report.figure("audit_make_ms", audit_make_ms, "ms", "making the audit proof (server)");
    report.figure("audit_verify_ms", audit_verify_ms, "ms", "checking the audit proof (auditor)");
    Ok(report)
}
