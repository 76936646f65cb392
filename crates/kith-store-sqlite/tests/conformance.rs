//! The shared Store conformance suite against SQLite.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::Arc;

use kith_store::Store;
use kith_store_sqlite::SqliteStore;

async fn fresh() -> Option<Arc<dyn Store>> {
    // The directory is leaked on purpose: the store's writer thread may outlive the test body.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    Some(Arc::new(SqliteStore::open(dir.join("kith.db")).expect("open")))
}

kith_store::conformance_suite!(fresh);
