//! The embedded default backend: one SQLite file in WAL mode.
//!
//! Map (one file per concern):
//! - this file: [`SqliteStore`], opening (connections, the per-thread readers, the
//!   checkpointer);
//! - `accounts`, `keys`, `conversations`, `delivery`, `safety`: the [`Store`]'s operations,
//!   one domain trait of `kith_store` per file (`reputation` holds safety's queries);
//! - `writer`: the single writer thread that groups concurrent writes into one transaction;
//! - `rows`: row mapping;
//! - `schema`: migrations, applied in order and recorded in `PRAGMA user_version`.
//!
//! Why a writer thread: SQLite allows one writer at a time, and a commit (a WAL append) costs
//! far more than the inserts it holds. Funnelling every write through one thread that commits a
//! batch at a time turns N concurrent sends into one commit, and nothing ever waits on
//! `SQLITE_BUSY`. Each write runs inside its own SAVEPOINT, so one refused write does not undo its
//! neighbours; its caller is answered only after the batch's COMMIT, so an `Ok` is durable.
//!
//! Durability: WAL with `synchronous = NORMAL` keeps every committed transaction across a crash
//! of the process (the WAL is written before COMMIT returns); only a power loss can lose the
//! last transactions. `secure_delete` overwrites deleted content so ciphertext does not linger
//! in free pages.

mod accounts;
mod conversations;
mod delivery;
mod directory;
mod keys;
mod links;
mod reputation;
mod rows;
mod safety;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use delivery::insert_message;
use kith_store::*;
use kith_store::{from_sql as u, to_sql as i};
use rows::*;
use rusqlite::{Connection, OptionalExtension, params};

use writer::Writer;

/// The SQLite [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    path: PathBuf,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    // NO_MUTEX: each connection is used by one thread at a time (the writer thread, or the
    // thread that owns a reader), so SQLite's per-call locking is pure overhead.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;",
    )?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_truncating_every(path, TRUNCATE_EVERY)
    }

    /// [`SqliteStore::open`], with the WAL truncated every `truncate_every` (tests shorten it).
    pub fn open_truncating_every(
        path: impl AsRef<Path>,
        truncate_every: std::time::Duration,
    ) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open(&path).map_err(backend)?;
        owner_only(&path)?;
        schema::migrate(&mut conn)?;
        // The writer never checkpoints (that would stall it on an fsync while senders wait);
        // a background thread does, without blocking anyone (PASSIVE).
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0").map_err(backend)?;
        let writer = Writer::start(conn);
        start_checkpointer(&path, truncate_every)?;
        Ok(SqliteStore { inner: Arc::new(Inner { writer, path }) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs a read on this thread's own connection to the database.
    ///
    /// Reads here are single indexed lookups that take microseconds; running them in place
    /// costs far less than handing each to a blocking-pool thread and back (measured: that
    /// hand-off, not SQLite, dominated the relay's CPU). Each thread keeps one connection per
    /// database, so readers never contend for a lock; WAL lets them run beside the writer.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        READERS.with(|cell| {
            let mut readers = cell.borrow_mut();
            if !readers.contains_key(&self.inner.path) {
                let conn = open(&self.inner.path).map_err(backend)?;
                // A read touches a few hot index pages; a small page cache per reader keeps
                // the server's memory bounded by design (SQLite's default is 2 MiB each).
                conn.execute_batch(READER_CACHE).map_err(backend)?;
                readers.insert(self.inner.path.clone(), conn);
            }
            let conn = readers.get(&self.inner.path).ok_or(StoreError::Unavailable)?;
            f(conn).map_err(backend)
        })
    }
}

/// The page cache of each per-thread read connection: 512 KiB.
const READER_CACHE: &str = "PRAGMA cache_size = -512";

/// The WAL's size past which the checkpointer truncates it without waiting for its turn.
const WAL_LIMIT: u64 = 64 << 20;

/// How often the background checkpointer folds the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// How often a checkpoint truncates the WAL: what was deleted (acknowledged ciphertext) leaves
/// the WAL file within this time, not at some later sweep.
pub const TRUNCATE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The database and its WAL and shared-memory files are readable by their owner only: they
/// hold the franking key and ciphertext. (SQLite gives the WAL and shared-memory files the
/// database's permissions when it creates them.)
fn owner_only(path: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mut files = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_os_string();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
        for f in files.iter().filter(|f| f.exists()) {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
                StoreError::Backend(format!("cannot restrict {}: {e}", f.display()))
            })?;
        }
    }
    Ok(())
}

/// Checkpoints the WAL in the background while the database file exists. It holds no handle
/// to the store, so it does not keep it alive; it ends when a checkpoint finds the file gone
/// (the process exiting also ends it).
fn start_checkpointer(path: &Path, truncate_every: std::time::Duration) -> StoreResult<()> {
    let conn = open(path).map_err(backend)?;
    // A truncating checkpoint waits for the writer's current batch and for readers to move on
    // (each takes microseconds), then holds writes while it copies what is left and truncates.
    conn.busy_timeout(std::time::Duration::from_secs(2)).map_err(backend)?;
    let path = path.to_path_buf();
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    std::thread::Builder::new()
        .name("kith-sqlite-checkpoint".into())
        .spawn(move || {
            let mut truncated = std::time::Instant::now();
            while path.exists() {
                std::thread::sleep(CHECKPOINT_EVERY.min(truncate_every));
                // Under sustained writes a passive checkpoint never catches up with the end
                // of the WAL, so SQLite never starts it over: it would grow without bound, and
                // with it the WAL index every connection maps. Past WAL_LIMIT it is truncated.
                let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                let truncate = truncated.elapsed() >= truncate_every || wal_bytes > WAL_LIMIT;
                let mode = if truncate { "TRUNCATE" } else { "PASSIVE" };
                let sql = format!("PRAGMA wal_checkpoint({mode})");
                // The answer's first column is 1 when the checkpoint could not finish.
                match conn.query_row(&sql, [], |r| r.get::<_, i64>(0)) {
                    Ok(0) if truncate => truncated = std::time::Instant::now(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, mode, "background checkpoint failed; will retry");
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| StoreError::Backend(format!("cannot start the checkpointer: {e}")))
}

thread_local! {
    /// One read connection per database per thread.
    static READERS: std::cell::RefCell<std::collections::HashMap<PathBuf, Connection>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}
