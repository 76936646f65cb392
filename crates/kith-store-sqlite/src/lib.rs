//! The embedded default backend: one SQLite file in WAL mode.
//!
//! Map:
//! - [`SqliteStore`]: the [`Store`] implementation;
//! - `writer`: the single writer thread that groups concurrent writes into one transaction;
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

mod reputation;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use kith_store::*;
use kith_store::{from_sql as u, to_sql as i};
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
        schema::migrate(&mut conn).map_err(backend)?;
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
                readers.insert(self.inner.path.clone(), conn);
            }
            let conn = readers.get(&self.inner.path).ok_or(StoreError::Unavailable)?;
            f(conn).map_err(backend)
        })
    }
}

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
    // A truncating checkpoint waits for readers and the writer; not for long.
    conn.busy_timeout(std::time::Duration::from_millis(200)).map_err(backend)?;
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("kith-sqlite-checkpoint".into())
        .spawn(move || {
            let mut truncated = std::time::Instant::now();
            while path.exists() {
                std::thread::sleep(CHECKPOINT_EVERY.min(truncate_every));
                let truncate = truncated.elapsed() >= truncate_every;
                let mode = if truncate { "TRUNCATE" } else { "PASSIVE" };
                if truncate {
                    truncated = std::time::Instant::now();
                }
                let sql = format!("PRAGMA wal_checkpoint({mode})");
                if let Err(e) = conn.query_row(&sql, [], |_| Ok(())) {
                    tracing::debug!(error = %e, mode, "background checkpoint failed; will retry");
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

fn kind_from(v: i64) -> Result<EntryKind, rusqlite::Error> {
    u8::try_from(v)
        .ok()
        .and_then(EntryKind::from_u8)
        .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(3, v))
}

fn hash32(v: Vec<u8>) -> Result<[u8; 32], rusqlite::Error> {
    v.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "token_hash".into(), rusqlite::types::Type::Blob)
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn insert_message(conn: &Connection, m: &NewMessage) -> Result<Enqueued, rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO messages (conversation, sender_device, kind, data, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        m.conversation,
        i(m.sender_device),
        m.kind.as_u8(),
        m.data,
        i(m.now),
        m.expires_at.map(i)
    ])?;
    let id = conn.last_insert_rowid();
    let mut q = conn.prepare_cached("INSERT INTO queue (device_id, message_id) VALUES (?1, ?2)")?;
    let mut seqs = Vec::with_capacity(m.recipients.len());
    for d in &m.recipients {
        q.execute(params![i(*d), id])?;
        seqs.push(u(conn.last_insert_rowid()));
    }
    if !m.withheld.is_empty() {
        // At most MAX_WITHHELD per device and sending device: a blocked account cannot pile
        // up invitations on its blocker's device (beyond that they are dropped).
        let mut w = conn.prepare_cached(
            "INSERT INTO queue (device_id, message_id, held)
             SELECT ?1, ?2, 1
             WHERE (SELECT COUNT(*) FROM queue q JOIN messages m ON m.id = q.message_id
                    WHERE q.device_id = ?1 AND q.held = 1 AND m.sender_device = ?3) < ?4",
        )?;
        for d in &m.withheld {
            w.execute(params![i(*d), id, i(m.sender_device), i(MAX_WITHHELD)])?;
        }
    }
    Ok(Enqueued { message_id: u(id), seqs })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(&self, a: NewAccount) -> StoreResult<DeviceId> {
        self.inner
            .writer
            .write(move |conn| {
                let (display_name, description) = a.profile.clone().unzip();
                let inserted = conn.execute(
                    "INSERT INTO accounts (username, kind, created_at, display_name, description)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        a.username,
                        i64::from(account_kind_code(a.kind)),
                        i(a.now),
                        display_name,
                        description
                    ],
                );
                match inserted {
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::UsernameTaken),
                    other => other.map_err(backend)?,
                };
                let account = conn.last_insert_rowid();
                conn.execute(
                    "INSERT INTO devices (account_id, credential_key, token_hash, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![account, a.credential_key, a.token_hash.to_vec(), i(a.now)],
                )
                .map_err(backend)?;
                let device = conn.last_insert_rowid();
                let mut kp = conn
                    .prepare_cached("INSERT INTO key_packages (device_id, data) VALUES (?1, ?2)")
                    .map_err(backend)?;
                for k in &a.key_packages {
                    kp.execute(params![device, k]).map_err(backend)?;
                }
                conn.execute(
                    "INSERT INTO last_resort_key_packages (device_id, data) VALUES (?1, ?2)",
                    params![device, a.last_resort],
                )
                .map_err(backend)?;
                Ok(u(device))
            })
            .await
    }

    async fn device_auth(&self, device: DeviceId) -> StoreResult<Option<DeviceAuth>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT d.id, a.username, a.kind, d.token_hash, d.credential_key, a.suspend_reason,
                        a.verified
                 FROM devices d JOIN accounts a ON a.id = d.account_id WHERE d.id = ?1",
            )?
            .query_row(params![i(device)], |r| {
                Ok(DeviceAuth {
                    device_id: u(r.get(0)?),
                    username: r.get(1)?,
                    kind: account_kind_from_code(r.get(2)?),
                    token_hash: hash32(r.get(3)?)?,
                    credential_key: r.get(4)?,
                    suspended: r.get(5)?,
                    verified: r.get(6)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn account_devices(&self, username: &str) -> StoreResult<Option<AccountDevices>> {
        let username = username.to_string();
        self.read(move |conn| {
            let Some((account, kind)) = conn
                .prepare_cached("SELECT id, kind FROM accounts WHERE username = ?1")?
                .query_row(params![username], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .optional()?
            else {
                return Ok(None);
            };
            let devices = conn
                .prepare_cached(
                    "SELECT id, credential_key, created_at FROM devices
                     WHERE account_id = ?1 ORDER BY id",
                )?
                .query_map(params![account], |r| {
                    Ok(DeviceRecord {
                        device_id: u(r.get(0)?),
                        credential_key: r.get(1)?,
                        created_at: u(r.get(2)?),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(AccountDevices { username, kind: account_kind_from_code(kind), devices }))
        })
        .await
    }

    async fn add_key_packages(
        &self,
        device: DeviceId,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> StoreResult<u64> {
        self.inner
            .writer
            .write(move |conn| {
                let exists: Option<i64> = conn
                    .query_row("SELECT id FROM devices WHERE id = ?1", params![i(device)], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(backend)?;
                if exists.is_none() {
                    return Err(StoreError::UnknownDevice);
                }
                let mut kp = conn
                    .prepare_cached("INSERT INTO key_packages (device_id, data) VALUES (?1, ?2)")
                    .map_err(backend)?;
                for k in &key_packages {
                    kp.execute(params![i(device), k]).map_err(backend)?;
                }
                if let Some(last) = last_resort {
                    conn.execute(
                        "INSERT INTO last_resort_key_packages (device_id, data) VALUES (?1, ?2)
                         ON CONFLICT (device_id) DO UPDATE SET data = excluded.data",
                        params![i(device), last],
                    )
                    .map_err(backend)?;
                }
                conn.query_row(
                    "SELECT COUNT(*) FROM key_packages WHERE device_id = ?1",
                    params![i(device)],
                    |r| r.get::<_, i64>(0),
                )
                .map(u)
                .map_err(backend)
            })
            .await
    }

    async fn key_packages_remaining(&self, device: DeviceId) -> StoreResult<u64> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM key_packages WHERE device_id = ?1",
                params![i(device)],
                |r| r.get::<_, i64>(0),
            )
            .map(u)
        })
        .await
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        one_time: bool,
    ) -> StoreResult<Vec<ClaimedKeyPackage>> {
        let username = username.to_string();
        self.inner
            .writer
            .write(move |conn| {
                let account: Option<i64> = conn
                    .query_row(
                        "SELECT id FROM accounts WHERE username = ?1",
                        params![username],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                let Some(account) = account else { return Err(StoreError::UnknownUser) };
                let devices = conn
                    .prepare_cached("SELECT id FROM devices WHERE account_id = ?1 ORDER BY id")
                    .map_err(backend)?
                    .query_map(params![account], |r| r.get::<_, i64>(0))
                    .map_err(backend)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                let mut out = Vec::new();
                for d in devices {
                    if !one_time {
                        out.extend(last_resort(conn, d)?);
                        continue;
                    }
                    let taken = conn
                        .prepare_cached(
                            "DELETE FROM key_packages WHERE id =
                               (SELECT id FROM key_packages WHERE device_id = ?1 ORDER BY id LIMIT 1)
                             RETURNING data",
                        )
                        .map_err(backend)?
                        .query_row(params![d], |r| r.get::<_, Vec<u8>>(0))
                        .optional()
                        .map_err(backend)?;
                    let claimed = match taken {
                        Some(data) => Some(ClaimedKeyPackage { device_id: u(d), data, last_resort: false }),
                        None => last_resort(conn, d)?,
                    };
                    out.extend(claimed);
                }
                Ok(out)
            })
            .await
    }

    async fn create_conversation(&self, c: NewConversation) -> StoreResult<MessageId> {
        self.inner
            .writer
            .write(move |conn| {
                let inserted = conn.execute(
                    "INSERT INTO conversations (id, created_at, epoch, group_state, poster, direct)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![c.conversation, i(c.now), i(c.epoch), c.group_state, c.poster, c.direct],
                );
                match inserted {
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::ConversationExists),
                    other => other.map_err(backend)?,
                };
                let mut members = c.members.clone();
                members.push(c.creator_device);
                members.sort_unstable();
                members.dedup();
                for d in &members {
                    let known: Option<i64> = conn
                        .prepare_cached("SELECT id FROM devices WHERE id = ?1")
                        .map_err(backend)?
                        .query_row(params![i(*d)], |r| r.get(0))
                        .optional()
                        .map_err(backend)?;
                    if known.is_none() {
                        return Err(StoreError::UnknownDevice);
                    }
                    conn.prepare_cached(
                        "INSERT INTO conversation_members (conversation, device_id) VALUES (?1, ?2)",
                    )
                    .map_err(backend)?
                    .execute(params![c.conversation, i(*d)])
                    .map_err(backend)?;
                }
                let recipients = members
                    .into_iter()
                    .filter(|d| *d != c.creator_device && !c.withheld.contains(d))
                    .collect();
                insert_message(
                    conn,
                    &NewMessage {
                        conversation: c.conversation,
                        sender_device: c.creator_device,
                        kind: EntryKind::Welcome,
                        data: c.welcome,
                        recipients,
                        now: c.now,
                        expires_at: None,
                        withheld: c.withheld,
                    },
                )
                .map(|e| e.message_id)
                .map_err(backend)
            })
            .await
    }

    async fn group_state(&self, conversation: &[u8]) -> StoreResult<Option<GroupState>> {
        let conversation = conversation.to_vec();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT epoch, group_state, revision FROM conversations WHERE id = ?1",
            )?
            .query_row(params![conversation], |r| {
                Ok(GroupState { epoch: u(r.get(0)?), state: r.get(1)?, revision: u(r.get(2)?) })
            })
            .optional()
        })
        .await
    }

    async fn update_group(&self, g: GroupUpdate) -> StoreResult<Vec<MessageId>> {
        self.inner
            .writer
            .write(move |conn| {
                let current: Option<(i64, i64)> = conn
                    .prepare_cached("SELECT epoch, revision FROM conversations WHERE id = ?1")
                    .map_err(backend)?
                    .query_row(params![g.conversation], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(backend)?;
                match current {
                    None => return Err(StoreError::UnknownConversation),
                    Some((e, r)) if u(e) != g.expected_epoch || u(r) != g.expected_revision => {
                        return Err(StoreError::StaleEpoch);
                    }
                    Some(_) => {}
                }
                conn.prepare_cached(
                    "UPDATE conversations SET epoch = ?2, group_state = ?3, revision = revision + 1
                     WHERE id = ?1",
                )
                .map_err(backend)?
                .execute(params![g.conversation, i(g.epoch), g.state])
                .map_err(backend)?;
                conn.prepare_cached("DELETE FROM conversation_members WHERE conversation = ?1")
                    .map_err(backend)?
                    .execute(params![g.conversation])
                    .map_err(backend)?;
                let mut add = conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO conversation_members (conversation, device_id)
                         VALUES (?1, ?2)",
                    )
                    .map_err(backend)?;
                for d in &g.members {
                    add.execute(params![g.conversation, i(*d)]).map_err(backend)?;
                }
                g.messages
                    .iter()
                    .map(|m| insert_message(conn, m).map(|e| e.message_id).map_err(backend))
                    .collect()
            })
            .await
    }

    async fn devices_by_credential_keys(&self, keys: &[Vec<u8>]) -> StoreResult<Vec<KeyOwner>> {
        let keys = keys.to_vec();
        self.read(move |conn| {
            let mut q = conn.prepare_cached(
                "SELECT d.id, a.username FROM devices d JOIN accounts a ON a.id = d.account_id
                 WHERE d.credential_key = ?1 ORDER BY d.id LIMIT 1",
            )?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let found = q
                    .query_row(params![key], |r| Ok((u(r.get(0)?), r.get::<_, String>(1)?)))
                    .optional()?;
                if let Some((device_id, username)) = found {
                    out.push(KeyOwner { credential_key: key, device_id, username });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn conversation_route(&self, conversation: &[u8]) -> StoreResult<Option<Route>> {
        let conversation = conversation.to_vec();
        self.read(move |conn| {
            let Some((poster, direct, epoch)) = conn
                .prepare_cached("SELECT poster, direct, epoch FROM conversations WHERE id = ?1")?
                .query_row(params![conversation], |r| {
                    Ok((r.get::<_, Option<String>>(0)?, r.get::<_, bool>(1)?, u(r.get(2)?)))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let members = conn
                .prepare_cached(
                    "SELECT device_id FROM conversation_members WHERE conversation = ?1
                     ORDER BY device_id",
                )?
                .query_map(params![conversation], |r| r.get::<_, i64>(0).map(u))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(Route { members, poster, direct, epoch }))
        })
        .await
    }

    async fn enqueue(&self, m: NewMessage) -> StoreResult<Enqueued> {
        self.inner.writer.write(move |conn| insert_message(conn, &m).map_err(backend)).await
    }

    async fn fetch(
        &self,
        device: DeviceId,
        after: u64,
        limit: u32,
        now: Millis,
    ) -> StoreResult<Vec<StoredEntry>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT q.seq, m.id, m.conversation, m.kind, a.username, m.sender_device, m.data,
                        m.created_at, m.expires_at, a.kind, a.verified
                 FROM queue q
                 JOIN messages m ON m.id = q.message_id
                 JOIN devices d ON d.id = m.sender_device
                 JOIN accounts a ON a.id = d.account_id
                 WHERE q.device_id = ?1 AND q.seq > ?2 AND q.held = 0
                   AND (m.expires_at IS NULL OR m.expires_at > ?4)
                 ORDER BY q.seq LIMIT ?3",
            )?
            .query_map(params![i(device), i(after), i64::from(limit), i(now)], |r| {
                Ok(StoredEntry {
                    seq: u(r.get(0)?),
                    message_id: u(r.get(1)?),
                    conversation: r.get(2)?,
                    kind: kind_from(r.get(3)?)?,
                    sender: r.get(4)?,
                    sender_device: u(r.get(5)?),
                    data: r.get(6)?,
                    created_at: u(r.get(7)?),
                    expires_at: r.get::<_, Option<i64>>(8)?.map(u),
                    sender_kind: account_kind_from_code(r.get(9)?),
                    sender_verified: r.get(10)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn queue_depths(&self, devices: &[DeviceId]) -> StoreResult<Vec<u64>> {
        let devices = devices.to_vec();
        self.read(move |conn| {
            // One indexed count per device, on one prepared statement and one connection.
            let mut count = conn
                .prepare_cached("SELECT COUNT(*) FROM queue WHERE device_id = ?1 AND held = 0")?;
            devices
                .iter()
                .map(|d| count.query_row(params![i(*d)], |r| r.get::<_, i64>(0)).map(u))
                .collect()
        })
        .await
    }

    async fn ack(&self, device: DeviceId, seqs: &[u64]) -> StoreResult<u64> {
        let seqs = seqs.to_vec();
        self.inner
            .writer
            .write(move |conn| {
                let mut removed = 0u64;
                let mut del = conn
                    .prepare_cached(
                        "DELETE FROM queue WHERE seq = ?1 AND device_id = ?2 RETURNING message_id",
                    )
                    .map_err(backend)?;
                let mut gc = conn
                    .prepare_cached(
                        "DELETE FROM messages WHERE id = ?1
                         AND NOT EXISTS (SELECT 1 FROM queue WHERE message_id = ?1)",
                    )
                    .map_err(backend)?;
                for s in seqs {
                    let msg: Option<i64> = del
                        .query_row(params![i(s), i(device)], |r| r.get(0))
                        .optional()
                        .map_err(backend)?;
                    if let Some(msg) = msg {
                        removed += 1;
                        gc.execute(params![msg]).map_err(backend)?;
                    }
                }
                Ok(removed)
            })
            .await
    }

    async fn sweep_expired(&self, cutoff: Millis, now: Millis) -> StoreResult<u64> {
        self.inner
            .writer
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM queue WHERE message_id IN
                       (SELECT id FROM messages WHERE created_at < ?1 OR expires_at <= ?2)",
                    params![i(cutoff), i(now)],
                )
                .map_err(backend)?;
                conn.execute(
                    "DELETE FROM messages WHERE created_at < ?1 OR expires_at <= ?2",
                    params![i(cutoff), i(now)],
                )
                .map(|n| n as u64)
                .map_err(backend)
            })
            .await
    }

    async fn compact(&self) -> StoreResult<()> {
        self.inner.writer.checkpoint().await
    }

    async fn franking_keys(&self) -> StoreResult<Vec<FrankingKey>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT id, key, created_at, retired_at FROM franking_keys ORDER BY id",
            )?
            .query_map([], |r| {
                Ok(FrankingKey {
                    id: u32::try_from(r.get::<_, i64>(0)?).unwrap_or(u32::MAX),
                    key: kith_store::SecretBytes::new(r.get(1)?),
                    created_at: u(r.get(2)?),
                    retired_at: r.get::<_, Option<i64>>(3)?.map(u),
                })
            })?
            .collect()
        })
        .await
    }

    async fn add_franking_key(&self, key: Vec<u8>, now: Millis) -> StoreResult<u32> {
        self.inner
            .writer
            .write(move |conn| {
                conn.execute(
                    "UPDATE franking_keys SET retired_at = ?1 WHERE retired_at IS NULL",
                    params![i(now)],
                )
                .map_err(backend)?;
                conn.execute(
                    "INSERT INTO franking_keys (key, created_at) VALUES (?1, ?2)",
                    params![key, i(now)],
                )
                .map_err(backend)?;
                Ok(u32::try_from(conn.last_insert_rowid()).unwrap_or(u32::MAX))
            })
            .await
    }

    async fn add_report(&self, r: NewReport) -> StoreResult<(u64, bool)> {
        self.inner
            .writer
            .write(move |conn| {
                let inserted = conn.execute(
                    "INSERT OR IGNORE INTO reports (reporter, sender, sender_device, conversation,
                        message_time, text, reason, tag, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        r.reporter,
                        r.sender,
                        i(r.sender_device),
                        r.conversation,
                        i(r.message_time),
                        r.text,
                        r.reason,
                        r.tag,
                        i(r.now)
                    ],
                )
                .map_err(backend)?;
                conn.query_row(
                    "SELECT id FROM reports WHERE reporter = ?1 AND tag = ?2",
                    params![r.reporter, r.tag],
                    |row| row.get::<_, i64>(0),
                )
                .map(|id| (u(id), inserted == 1))
                .map_err(backend)
            })
            .await
    }

    async fn reports(&self) -> StoreResult<Vec<ReportRecord>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT id, reporter, sender, sender_device, conversation, message_time, text,
                        reason, created_at
                 FROM reports ORDER BY id",
            )?
            .query_map([], |r| {
                Ok(ReportRecord {
                    id: u(r.get(0)?),
                    reporter: r.get(1)?,
                    sender: r.get(2)?,
                    sender_device: u(r.get(3)?),
                    conversation: r.get(4)?,
                    message_time: u(r.get(5)?),
                    text: r.get(6)?,
                    reason: r.get(7)?,
                    created_at: u(r.get(8)?),
                })
            })?
            .collect()
        })
        .await
    }

    async fn block(&self, blocker: &str, blocked: &str, now: Millis) -> StoreResult<()> {
        let (blocker, blocked) = (blocker.to_string(), blocked.to_string());
        self.inner
            .writer
            .write(move |conn| {
                if !account_is_known(conn, &blocked).map_err(backend)? {
                    return Err(StoreError::UnknownUser);
                }
                conn.execute(
                    "INSERT OR IGNORE INTO blocks (blocker, blocked, created_at) VALUES (?1, ?2, ?3)",
                    params![blocker, blocked, i(now)],
                )
                .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn unblock(&self, blocker: &str, blocked: &str) -> StoreResult<bool> {
        let (blocker, blocked) = (blocker.to_string(), blocked.to_string());
        self.inner
            .writer
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2",
                    params![blocker, blocked],
                )
                .map(|n| n > 0)
                .map_err(backend)
            })
            .await
    }

    async fn blocked_by(&self, blocker: &str) -> StoreResult<Vec<String>> {
        let blocker = blocker.to_string();
        self.read(move |conn| {
            conn.prepare_cached("SELECT blocked FROM blocks WHERE blocker = ?1 ORDER BY blocked")?
                .query_map(params![blocker], |r| r.get(0))?
                .collect()
        })
        .await
    }

    async fn devices_blocking(&self, sender: &str) -> StoreResult<Vec<DeviceId>> {
        let sender = sender.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT d.id FROM blocks b
                 JOIN accounts a ON a.username = b.blocker
                 JOIN devices d ON d.account_id = a.id
                 WHERE b.blocked = ?1 ORDER BY d.id",
            )?
            .query_map(params![sender], |r| r.get::<_, i64>(0).map(u))?
            .collect()
        })
        .await
    }

    async fn account_info(&self, username: &str) -> StoreResult<Option<AccountInfo>> {
        let username = username.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!("{ACCOUNT_INFO} WHERE a.username = ?1"))?
                .query_row(params![username], account_info_row)
                .optional()
        })
        .await
    }

    async fn set_token_hash(&self, device: DeviceId, token_hash: [u8; 32]) -> StoreResult<()> {
        self.inner
            .writer
            .write(move |conn| {
                let n = conn
                    .execute(
                        "UPDATE devices SET token_hash = ?2 WHERE id = ?1",
                        params![i(device), token_hash.to_vec()],
                    )
                    .map_err(backend)?;
                if n == 0 { Err(StoreError::UnknownDevice) } else { Ok(()) }
            })
            .await
    }

    async fn set_suspended(&self, username: &str, reason: Option<String>) -> StoreResult<()> {
        let username = username.to_string();
        self.inner
            .writer
            .write(move |conn| {
                let n = conn
                    .execute(
                        "UPDATE accounts SET suspend_reason = ?2 WHERE username = ?1",
                        params![username, reason],
                    )
                    .map_err(backend)?;
                if n == 0 { Err(StoreError::UnknownUser) } else { Ok(()) }
            })
            .await
    }

    async fn add_flag(&self, f: FlagRecord) -> StoreResult<()> {
        self.inner
            .writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO flags (username, action, reason, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![f.username, f.action, f.reason, i(f.created_at)],
                )
                .map(|_| ())
                .map_err(backend)
            })
            .await
    }

    async fn flags(&self) -> StoreResult<Vec<FlagRecord>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT username, action, reason, created_at FROM flags ORDER BY id",
            )?
            .query_map([], |r| {
                Ok(FlagRecord {
                    username: r.get(0)?,
                    action: r.get(1)?,
                    reason: r.get(2)?,
                    created_at: u(r.get(3)?),
                })
            })?
            .collect()
        })
        .await
    }

    async fn set_verified(&self, username: &str, verified: bool) -> StoreResult<()> {
        let username = username.to_string();
        self.inner
            .writer
            .write(move |conn| {
                let n = conn
                    .execute(
                        "UPDATE accounts SET verified = ?2 WHERE username = ?1 AND kind = 1",
                        params![username, verified],
                    )
                    .map_err(backend)?;
                if n == 0 { Err(StoreError::UnknownUser) } else { Ok(()) }
            })
            .await
    }

    async fn search_businesses(&self, query: &str, limit: u32) -> StoreResult<Vec<AccountInfo>> {
        let query = query.to_lowercase();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "{ACCOUNT_INFO} WHERE a.kind = 1 AND (
                    instr(lower(a.username), ?1) > 0
                    OR instr(lower(coalesce(a.display_name, '')), ?1) > 0
                    OR instr(lower(coalesce(a.description, '')), ?1) > 0)
                 ORDER BY a.verified DESC, a.username LIMIT ?2"
            ))?
            .query_map(params![query, i64::from(limit)], account_info_row)?
            .collect()
        })
        .await
    }

    async fn share_direct_conversation(&self, a: &str, b: &str) -> StoreResult<bool> {
        let (a, b) = (a.to_string(), b.to_string());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM accounts a1
                     JOIN devices d1 ON d1.account_id = a1.id
                     JOIN conversation_members m1 ON m1.device_id = d1.id
                     JOIN conversations c ON c.id = m1.conversation AND c.direct = 1
                     JOIN conversation_members m2 ON m2.conversation = c.id
                     JOIN devices d2 ON d2.id = m2.device_id
                     JOIN accounts a2 ON a2.id = d2.account_id
                     WHERE a1.username = ?1 AND a2.username = ?2 LIMIT 1",
                )?
                .query_row(params![a, b], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn release_withheld(&self, blocker: &str, sender: &str) -> StoreResult<Vec<DeviceId>> {
        let (blocker, sender) = (blocker.to_string(), sender.to_string());
        self.inner
            .writer
            .write(move |conn| {
                reputation::release_withheld(conn, &blocker, &sender).map_err(backend)
            })
            .await
    }

    async fn add_signal(&self, signal: SignalRecord) -> StoreResult<Option<u64>> {
        self.inner
            .writer
            .write(move |conn| reputation::add_signal(conn, &signal).map_err(backend))
            .await
    }

    async fn withdraw_signal(
        &self,
        target: &str,
        source: &str,
        kind: SignalKind,
    ) -> StoreResult<bool> {
        let (target, source) = (target.to_string(), source.to_string());
        self.inner
            .writer
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM signals WHERE target = ?1 AND source = ?2 AND kind = ?3",
                    params![target, source, kind.code()],
                )
                .map(|n| n > 0)
                .map_err(backend)
            })
            .await
    }

    async fn signals(&self, target: Option<&str>) -> StoreResult<Vec<SignalRecord>> {
        let target = target.map(str::to_string);
        self.read(move |conn| reputation::signals(conn, target.as_deref())).await
    }

    async fn clear_signals(&self, target: &str) -> StoreResult<u64> {
        let target = target.to_string();
        self.inner
            .writer
            .write(move |conn| {
                conn.execute("DELETE FROM signals WHERE target = ?1", params![target])
                    .map(|n| n as u64)
                    .map_err(backend)
            })
            .await
    }

    async fn note_spoke(&self, conversation: &[u8], speaker: &str) -> StoreResult<()> {
        let (conversation, speaker) = (conversation.to_vec(), speaker.to_string());
        self.inner
            .writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO speakers (conversation, username) VALUES (?1, ?2)",
                )
                .and_then(|mut st| st.execute(params![conversation, speaker]))
                .map(|_| ())
                .map_err(backend)
            })
            .await
    }

    async fn has_written_to(&self, speaker: &str, listener: &str) -> StoreResult<bool> {
        let (speaker, listener) = (speaker.to_string(), listener.to_string());
        self.read(move |conn| reputation::has_written_to(conn, &speaker, &listener)).await
    }

    async fn counts(&self) -> StoreResult<StoreCounts> {
        self.read(|conn| {
            let count = |table: &str| -> Result<u64, rusqlite::Error> {
                conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
                    .map(u)
            };
            Ok(StoreCounts {
                accounts: count("accounts")?,
                devices: count("devices")?,
                messages: count("messages")?,
                queue_entries: count("queue")?,
                key_packages: count("key_packages")?,
            })
        })
        .await
    }
}

const ACCOUNT_INFO: &str = "SELECT a.username, a.kind, a.created_at, a.suspend_reason,
        (SELECT COUNT(*) FROM blocks b WHERE b.blocked = a.username),
        (SELECT COUNT(DISTINCT reporter) FROM reports r WHERE r.sender = a.username),
        a.display_name, a.description, a.verified
     FROM accounts a";

fn account_info_row(r: &rusqlite::Row<'_>) -> Result<AccountInfo, rusqlite::Error> {
    Ok(AccountInfo {
        username: r.get(0)?,
        kind: account_kind_from_code(r.get(1)?),
        created_at: u(r.get(2)?),
        suspended: r.get(3)?,
        blocked_by: u(r.get(4)?),
        reported_by: u(r.get(5)?),
        display_name: r.get(6)?,
        description: r.get(7)?,
        verified: r.get(8)?,
    })
}

fn last_resort(conn: &Connection, device: i64) -> StoreResult<Option<ClaimedKeyPackage>> {
    conn.query_row(
        "SELECT data FROM last_resort_key_packages WHERE device_id = ?1",
        params![device],
        |r| r.get::<_, Vec<u8>>(0),
    )
    .optional()
    .map_err(backend)
    .map(|d| d.map(|data| ClaimedKeyPackage { device_id: u(device), data, last_resort: true }))
}

fn account_is_known(conn: &Connection, username: &str) -> Result<bool, rusqlite::Error> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM accounts WHERE username = ?1")?
        .query_row(params![username], |_| Ok(()))
        .optional()?
        .is_some())
}
