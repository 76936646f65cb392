//! The shared Store conformance suite against PostgreSQL. Runs when `KITH_TEST_DATABASE_URL`
//! names a database; otherwise every test says it was skipped and passes. Each test gets a
//! schema of its own (`kith_test_*`).

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::Arc;

use kith_store::Store;
use kith_store_postgres::PgStore;

async fn fresh() -> Option<Arc<dyn Store>> {
    let Ok(url) = std::env::var("KITH_TEST_DATABASE_URL") else {
        eprintln!(
            "skipped: KITH_TEST_DATABASE_URL is not set, so the PostgreSQL suite did not run"
        );
        return None;
    };
    let (store, _schema) = PgStore::connect_fresh_schema(&url).await.expect("connect");
    Some(Arc::new(store))
}

kith_store::conformance_suite!(fresh);

/// A schema a newer kithd wrote is refused before anything is read or written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let Ok(url) = std::env::var("KITH_TEST_DATABASE_URL") else {
        eprintln!("skipped: KITH_TEST_DATABASE_URL is not set");
        return;
    };
    let (store, schema) = PgStore::connect_fresh_schema(&url).await.unwrap();
    sqlx::query("INSERT INTO kith_schema_version (version) VALUES (999)")
        .execute(store.pool())
        .await
        .unwrap();
    drop(store);
    match PgStore::connect_in_schema(&url, &schema).await {
        Err(kith_store::StoreError::NewerSchema { found: 999, known }) => assert!(known < 999),
        other => panic!("a newer schema was not refused: {:?}", other.err()),
    }
}
