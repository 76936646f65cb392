//! The PostgreSQL backend, for deployments that outgrow one SQLite file or run several `kithd`
//! nodes against one database.
//!
//! Map (one file per concern):
//! - this file: [`PgStore`], connecting (pool, migrations, the batching task);
//! - `accounts`, `keys`, `conversations`, `delivery`, `safety`: the [`Store`]'s operations,
//!   one domain trait of `kith_store` per file;
//! - `batch`: the batching writer for sends and acknowledgements;
//! - `notify`: what nodes sharing the database tell each other (`NOTIFY`/`LISTEN`);
//! - `rows`: row mapping;
//! - `schema`: migrations recorded in `kith_schema_version`, serialised across nodes by an
//!   advisory lock.
//!
//! PostgreSQL orders concurrent writers itself, so each operation is one transaction; a
//! `COMMIT` that returned is durable, which is what an `Ok` promises. KeyPackages are claimed
//! with `FOR UPDATE SKIP LOCKED`, so concurrent claims never share a one-time KeyPackage.

mod accounts;
mod batch;
mod conversations;
mod delivery;
mod directory;
mod keys;
mod links;
mod notify;
mod rows;
mod safety;
mod schema;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use batch::{Done, Job, Op, batcher};
use delivery::insert_message;
use kith_store::*;
use kith_store::{from_sql as u, to_sql as i};
use notify::{Announce, announce, announce_access_changed, announce_account_shut, listen};
use rows::*;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

/// The PostgreSQL [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Sends and acknowledgements go through one task that commits concurrent ones together.
    batch: tokio::sync::mpsc::Sender<Job>,
    announce: Arc<Announce>,
    /// Whether [`DeliveryStore::announcements`] was already asked (it starts the listener).
    listening: Arc<std::sync::atomic::AtomicBool>,
}

/// How long a request waits for a database connection before it is refused as unavailable.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A pooled connection idle this long is pinged before it is handed out.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_millis(500);

/// Maps a driver error: a lost or unreachable database is [`StoreError::Unavailable`] (the
/// client may try again), anything else [`StoreError::Backend`].
fn backend_ref(e: &sqlx::Error) -> StoreError {
    if is_connection_failure(e) {
        tracing::warn!(error = %e, "the database is unreachable");
        StoreError::Unavailable
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// Errors that mean the database could not be reached or the connection broke, rather than a
/// refused statement: I/O and TLS failures, a pool with no connection to give, and the
/// server-side codes of class 08 (connection exception) and 57P0x (shutting down).
fn is_connection_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
        }
        _ => false,
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    backend_ref(&e)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and brings the schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url).map_err(backend)?;
        Self::connect_with(options).await
    }

    /// Connects with the given options (e.g. a `search_path` for an isolated schema).
    pub async fn connect_with(options: PgConnectOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // While the database is unreachable a request waits this long for a connection,
            // then is answered `503` with `Retry-After` instead of hanging.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection in steady use is not pinged before each use (a round trip per
            // query at full load); one that sat idle is, so a connection the network or the
            // database dropped meanwhile is replaced instead of failing a request.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(backend)?;
        schema::migrate(&pool).await?;
        let announce = Arc::new(Announce::for_schema_of(&pool).await.map_err(backend)?);
        let (batch, rx) = tokio::sync::mpsc::channel(8192);
        tokio::spawn(batcher(pool.clone(), rx, announce.clone()));
        Ok(PgStore { pool, batch, announce, listening: Arc::default() })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connects to `url` inside a new, empty schema with a random name (`kith_test_…`), for
    /// tests that share one database. Returns the store and the schema's name.
    pub async fn connect_fresh_schema(url: &str) -> StoreResult<(Self, String)> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| StoreError::Backend(e.to_string()))?;
        let schema = format!("kith_test_{:016x}", u64::from_le_bytes(suffix));
        let admin = PgPool::connect(url).await.map_err(backend)?;
        // The name is made here of hex digits only: nothing from outside reaches the SQL.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .map_err(backend)?;
        admin.close().await;
        Ok((Self::connect_in_schema(url, &schema).await?, schema))
    }

    /// Connects to `url` with `schema` as the search path (e.g. a second node of a test's
    /// deployment).
    pub async fn connect_in_schema(url: &str, schema: &str) -> StoreResult<Self> {
        let options =
            PgConnectOptions::from_str(url).map_err(backend)?.options([("search_path", schema)]);
        Self::connect_with(options).await
    }
}
