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
