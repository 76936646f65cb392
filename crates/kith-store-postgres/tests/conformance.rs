//! The shared Store conformance suite against PostgreSQL. Runs when `KITH_TEST_DATABASE_URL`
//! names a database; otherwise every test says it was skipped and passes. Each test gets a
//! schema of its own (`kith_test_*`), left behind for inspection.

use std::str::FromStr;
use std::sync::Arc;

use kith_store::Store;
use kith_store_postgres::PgStore;
use sqlx::postgres::PgConnectOptions;

async fn fresh() -> Option<Arc<dyn Store>> {
    let Ok(url) = std::env::var("KITH_TEST_DATABASE_URL") else {
        eprintln!("skipped: KITH_TEST_DATABASE_URL is not set, so the PostgreSQL suite did not run");
        return None;
    };
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).expect("random");
    let schema = format!("kith_test_{}", u64::from_le_bytes(suffix));
    let admin = sqlx::PgPool::connect(&url).await.expect("connect to KITH_TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.expect("create schema");
    admin.close().await;
    let options = PgConnectOptions::from_str(&url)
        .expect("parse KITH_TEST_DATABASE_URL")
        .options([("search_path", schema.as_str())]);
    Some(Arc::new(PgStore::connect_with(options).await.expect("connect")))
}

kith_store::conformance_suite!(fresh);
