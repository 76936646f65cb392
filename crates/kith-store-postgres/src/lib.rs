//! The PostgreSQL backend, for deployments that outgrow one SQLite file or run several `kithd`
//! nodes against one database.
//!
//! Map:
//! - [`PgStore`]: the [`Store`] implementation over an `sqlx` pool;
//! - `schema`: migrations recorded in `kith_schema_version`, serialised across nodes by an
//!   advisory lock.
//!
//! PostgreSQL orders concurrent writers itself, so each operation is one transaction; a
//! `COMMIT` that returned is durable, which is what an `Ok` promises. KeyPackages are claimed
//! with `FOR UPDATE SKIP LOCKED`, so concurrent claims never share a one-time KeyPackage.

mod schema;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use kith_store::*;
use kith_store::{from_sql as u, to_sql as i};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

/// The PostgreSQL [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Sends and acknowledgements go through one task that commits concurrent ones together.
    batch: tokio::sync::mpsc::Sender<Job>,
    announce: Arc<Announce>,
    /// Whether [`Store::announcements`] was already asked (it starts the listener).
    listening: Arc<std::sync::atomic::AtomicBool>,
}

/// How this process tells the others sharing the database which queues it added to: a
/// `NOTIFY` on `channel`, inside the transaction that adds the entries (so it is delivered on
/// commit, and only then), with the payload `"<node> <device>,<device>,…"`; and which device's
/// token changed: `"<node> !<device>"`.
struct Announce {
    channel: String,
    /// A random name for this process, so it can skip its own announcements.
    node: String,
}

/// Bytes of device ids per `NOTIFY` payload at most (PostgreSQL allows a little under 8000).
const ANNOUNCE_CHUNK: usize = 7000;

/// Announces, inside `tx`, that `devices`' queues grew.
async fn announce(
    tx: &mut sqlx::PgConnection,
    a: &Announce,
    devices: &[i64],
) -> Result<(), sqlx::Error> {
    use std::fmt::Write as _;
    let mut payloads: Vec<String> = Vec::new();
    let mut current = String::new();
    for d in devices {
        if current.len() >= ANNOUNCE_CHUNK {
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            let _ = write!(current, "{} {d}", a.node);
        } else {
            let _ = write!(current, ",{d}");
        }
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::TEXT[]) AS p")
        .bind(&a.channel)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Reads an announcement; `None` for this process's own or a malformed one.
fn announced(payload: &str, own_node: &str) -> Option<Announcement> {
    let (node, rest) = payload.split_once(' ')?;
    if node == own_node {
        return None;
    }
    if let Some(device) = rest.strip_prefix('!') {
        return device.parse().ok().map(Announcement::AccessChanged);
    }
    rest.split(',').map(|d| d.parse::<u64>().ok()).collect::<Option<_>>().map(Announcement::Queued)
}

/// Listens for other processes' announcements until the receiver goes away. A new listening
/// connection (the first, or one replacing a lost one) first sends [`Announcement::Missed`]:
/// what was announced meanwhile is unknown.
async fn listen(
    pool: PgPool,
    announce: Arc<Announce>,
    out: tokio::sync::mpsc::Sender<Announcement>,
) {
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen(&announce.channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match listener.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other nodes' announcements");
                if out.is_closed() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if out.send(Announcement::Missed).await.is_err() {
            return;
        }
        loop {
            // Stop (and give the connection back) as soon as nobody follows.
            let received = tokio::select! {
                () = out.closed() => return,
                r = listener.try_recv() => r,
            };
            match received {
                Ok(Some(n)) => {
                    if let Some(a) = announced(n.payload(), &announce.node)
                        && out.send(a).await.is_err()
                    {
                        return;
                    }
                }
                // The connection was lost and has been replaced: anything may have been missed.
                Ok(None) => {
                    if out.send(Announcement::Missed).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the connection listening for other nodes");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// A write the batcher folds into a shared transaction.
enum Op {
    Enqueue(NewMessage),
    Ack(DeviceId, Vec<u64>),
}

/// A job's answer: what a send stored, or how many entries an acknowledgement removed.
enum Done {
    Enqueued(Enqueued),
    Removed(u64),
}

type Job = (Op, tokio::sync::oneshot::Sender<StoreResult<Done>>);

/// How long a request waits for a database connection before it is refused as unavailable.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A pooled connection idle this long is pinged before it is handed out.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_millis(500);

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 256;

/// Commits concurrent sends and acknowledgements together: one `COMMIT` (one WAL flush) for
/// many of them, as the SQLite writer does. The whole batch goes in a few set-based statements
/// (see [`run_fast`]); should that fail for any reason but a lost connection, it is run again
/// job by job, each in its own savepoint, so a failing one does not undo its neighbours. Every
/// job is answered only after the commit, so an `Ok` is durable.
async fn batcher(pool: PgPool, mut rx: tokio::sync::mpsc::Receiver<Job>, announce: Arc<Announce>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        run_batch(&pool, &announce, std::mem::take(&mut jobs)).await;
    }
}

async fn run_op(tx: &mut sqlx::PgConnection, a: &Announce, op: &Op) -> Result<Done, sqlx::Error> {
    match op {
        Op::Enqueue(m) => insert_message(tx, a, m).await.map(Done::Enqueued),
        Op::Ack(device, seqs) => ack_in(tx, *device, seqs).await.map(Done::Removed),
    }
}

fn refuse(replies: Vec<tokio::sync::oneshot::Sender<StoreResult<Done>>>, e: &sqlx::Error) {
    for reply in replies {
        let _ = reply.send(Err(backend_ref(e)));
    }
}

async fn run_batch(pool: &PgPool, announce: &Announce, jobs: Vec<Job>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return refuse(jobs.into_iter().map(|(_, r)| r).collect(), &e),
    };
    let fast = match run_fast(&mut tx, announce, &jobs).await {
        Ok(results) => tx.commit().await.map(|()| results),
        Err(e) => Err(e),
    };
    match fast {
        Ok(results) => {
            for ((_, reply), result) in jobs.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) if is_connection_failure(&e) => {
            refuse(jobs.into_iter().map(|(_, r)| r).collect(), &e)
        }
        Err(e) => {
            tracing::warn!(error = %e, "batched write failed; retrying job by job");
            run_one_by_one(pool, announce, jobs).await
        }
    }
}

/// The batch in three statements whatever its size: message ids drawn from the sequence in
/// one query, every message and queue entry inserted by one (entries in job order, so each
/// device's queue follows acceptance order), and every acknowledgement applied by two.
/// Returns each job's answer, in order.
async fn run_fast(
    tx: &mut sqlx::PgConnection,
    announce: &Announce,
    jobs: &[Job],
) -> Result<Vec<Done>, sqlx::Error> {
    let mut results: Vec<Done> = jobs.iter().map(|_| Done::Removed(0)).collect();
    let sends: Vec<(usize, &NewMessage)> = jobs
        .iter()
        .enumerate()
        .filter_map(|(n, (op, _))| match op {
            Op::Enqueue(m) => Some((n, m)),
            Op::Ack(..) => None,
        })
        .collect();
    if !sends.is_empty() {
        let count = i64::try_from(sends.len()).unwrap_or(i64::MAX);
        let mut ids: Vec<i64> =
            sqlx::query_scalar("SELECT nextval('messages_id_seq') FROM generate_series(1, $1)")
                .bind(count)
                .fetch_all(&mut *tx)
                .await?;
        ids.sort_unstable();
        let (mut conversation, mut sender, mut kind, mut data, mut created, mut expires) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut entry_device, mut entry_message) = (Vec::new(), Vec::new());
        for ((_, m), id) in sends.iter().zip(&ids) {
            conversation.push(m.conversation.as_slice());
            sender.push(i(m.sender_device));
            kind.push(i16::from(m.kind.as_u8()));
            data.push(m.data.as_slice());
            created.push(i(m.now));
            expires.push(m.expires_at.map(i));
            for d in &m.recipients {
                entry_device.push(i(*d));
                entry_message.push(*id);
            }
        }
        let queued: Vec<(i64, i64, i64)> = sqlx::query_as(
            "WITH m AS (
                INSERT INTO messages (id, conversation, sender_device, kind, data, created_at,
                                      expires_at)
                SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::BIGINT[], $4::SMALLINT[],
                                     $5::BYTEA[], $6::BIGINT[], $7::BIGINT[]))
             INSERT INTO queue (device_id, message_id)
             SELECT d, m FROM UNNEST($8::BIGINT[], $9::BIGINT[]) WITH ORDINALITY AS e(d, m, o)
             ORDER BY o
             RETURNING message_id, device_id, seq",
        )
        .bind(&ids)
        .bind(&conversation)
        .bind(&sender)
        .bind(&kind)
        .bind(&data)
        .bind(&created)
        .bind(&expires)
        .bind(&entry_device)
        .bind(&entry_message)
        .fetch_all(&mut *tx)
        .await?;
        self::announce(&mut *tx, announce, &entry_device).await?;
        let seq_of: std::collections::HashMap<(i64, i64), i64> =
            queued.into_iter().map(|(m, d, seq)| ((m, d), seq)).collect();
        for ((n, m), id) in sends.iter().zip(&ids) {
            let seqs = m
                .recipients
                .iter()
                .map(|d| seq_of.get(&(*id, i(*d))).copied().map(u))
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| sqlx::Error::Protocol("a queued entry was not returned".into()))?;
            results[*n] = Done::Enqueued(Enqueued { message_id: u(*id), seqs });
        }
    }
    let (mut ack_job, mut ack_device, mut ack_seq) = (Vec::new(), Vec::new(), Vec::new());
    for (n, (op, _)) in jobs.iter().enumerate() {
        if let Op::Ack(device, seqs) = op {
            for s in seqs {
                ack_job.push(i64::try_from(n).unwrap_or(i64::MAX));
                ack_device.push(i(*device));
                ack_seq.push(i(*s));
            }
        }
    }
    if !ack_job.is_empty() {
        let removed: Vec<(i64, i64)> = sqlx::query_as(
            "DELETE FROM queue q USING UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[])
                 AS a(job, device, seq)
             WHERE q.device_id = a.device AND q.seq = a.seq
             RETURNING a.job, q.message_id",
        )
        .bind(&ack_job)
        .bind(&ack_device)
        .bind(&ack_seq)
        .fetch_all(&mut *tx)
        .await?;
        let mut messages = Vec::with_capacity(removed.len());
        for (job, message) in removed {
            if let Some(Done::Removed(r)) =
                usize::try_from(job).ok().and_then(|j| results.get_mut(j))
            {
                *r += 1;
            }
            messages.push(message);
        }
        delete_orphans(tx, &messages).await?;
    }
    Ok(results)
}

/// The slow path: each job in its own savepoint.
async fn run_one_by_one(pool: &PgPool, announce: &Announce, jobs: Vec<Job>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return refuse(jobs.into_iter().map(|(_, r)| r).collect(), &e),
    };
    let mut done = Vec::with_capacity(jobs.len());
    let mut pending = jobs.into_iter();
    while let Some((op, reply)) = pending.next() {
        let result = match sqlx::query("SAVEPOINT job").execute(&mut *tx).await {
            Ok(_) => run_op(&mut tx, announce, &op).await.map_err(backend),
            Err(e) => Err(backend(e)),
        };
        let end =
            if result.is_ok() { "RELEASE SAVEPOINT job" } else { "ROLLBACK TO SAVEPOINT job" };
        if let Err(e) = sqlx::query(end).execute(&mut *tx).await {
            tracing::error!(error = %e, "savepoint failed; the batch is refused");
            let mut replies: Vec<_> = done.into_iter().map(|(r, _)| r).collect();
            replies.push(reply);
            replies.extend(pending.map(|(_, r)| r));
            return refuse(replies, &e);
        }
        done.push((reply, result));
    }
    match tx.commit().await {
        Ok(()) => {
            for (reply, result) in done {
                let _ = reply.send(result);
            }
        }
        Err(e) => refuse(done.into_iter().map(|(r, _)| r).collect(), &e),
    }
}

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

async fn ack_in(
    tx: &mut sqlx::PgConnection,
    device: DeviceId,
    seqs: &[u64],
) -> Result<u64, sqlx::Error> {
    let seqs: Vec<i64> = seqs.iter().map(|s| i(*s)).collect();
    let messages: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM queue WHERE device_id = $1 AND seq = ANY($2) RETURNING message_id",
    )
    .bind(i(device))
    .bind(&seqs)
    .fetch_all(&mut *tx)
    .await?;
    delete_orphans(tx, &messages).await?;
    Ok(messages.len() as u64)
}

/// Deletes those of `messages` that no queue entry points at any more.
async fn delete_orphans(tx: &mut sqlx::PgConnection, messages: &[i64]) -> Result<(), sqlx::Error> {
    if !messages.is_empty() {
        sqlx::query(
            "DELETE FROM messages m WHERE m.id = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = m.id)",
        )
        .bind(messages)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

fn backend(e: sqlx::Error) -> StoreError {
    backend_ref(&e)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

const ACCOUNT_INFO: &str = "SELECT a.username, a.kind, a.created_at, a.suspend_reason,
        (SELECT COUNT(*) FROM blocks b WHERE b.blocked = a.username),
        (SELECT COUNT(DISTINCT reporter) FROM reports r WHERE r.sender = a.username),
        a.display_name, a.description, a.verified
     FROM accounts a";

fn account_info_row(r: &PgRow) -> Result<AccountInfo, sqlx::Error> {
    Ok(AccountInfo {
        username: r.try_get(0)?,
        kind: account_kind_from_code(i64::from(r.try_get::<i16, _>(1)?)),
        created_at: u(r.try_get(2)?),
        suspended: r.try_get(3)?,
        blocked_by: u(r.try_get(4)?),
        reported_by: u(r.try_get(5)?),
        display_name: r.try_get(6)?,
        description: r.try_get(7)?,
        verified: r.try_get(8)?,
    })
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
        schema::migrate(&pool).await.map_err(backend)?;
        // One channel per schema, so separate deployments (or tests) in one database do not
        // wake each other; PostgreSQL limits a channel name to 63 bytes.
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(backend)?;
        let mut channel = format!("kith_queue:{schema}");
        if channel.len() > 63 {
            channel = "kith_queue".into();
        }
        let mut node = [0u8; 8];
        getrandom::fill(&mut node).map_err(|e| StoreError::Backend(e.to_string()))?;
        let announce =
            Arc::new(Announce { channel, node: format!("{:016x}", u64::from_le_bytes(node)) });
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

/// Stores a message and its queue entries, and announces them to the other processes.
async fn insert_message(
    tx: &mut sqlx::PgConnection,
    announce: &Announce,
    m: &NewMessage,
) -> Result<Enqueued, sqlx::Error> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO messages (conversation, sender_device, kind, data, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&m.conversation)
    .bind(i(m.sender_device))
    .bind(i16::from(m.kind.as_u8()))
    .bind(&m.data)
    .bind(i(m.now))
    .bind(m.expires_at.map(i))
    .fetch_one(&mut *tx)
    .await?;
    let mut seqs = Vec::with_capacity(m.recipients.len());
    if !m.recipients.is_empty() {
        let devices: Vec<i64> = m.recipients.iter().map(|d| i(*d)).collect();
        let queued: Vec<(i64, i64)> = sqlx::query_as(
            "INSERT INTO queue (device_id, message_id)
             SELECT d, $2 FROM UNNEST($1::BIGINT[]) WITH ORDINALITY AS e(d, o) ORDER BY o
             RETURNING device_id, seq",
        )
        .bind(&devices)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        self::announce(&mut *tx, announce, &devices).await?;
        let seq_of: std::collections::HashMap<i64, i64> = queued.into_iter().collect();
        for d in &devices {
            let seq = seq_of
                .get(d)
                .ok_or_else(|| sqlx::Error::Protocol("a queued entry was not returned".into()))?;
            seqs.push(u(*seq));
        }
    }
    if !m.withheld.is_empty() {
        let devices: Vec<i64> = m.withheld.iter().map(|d| i(*d)).collect();
        // At most MAX_WITHHELD per device and sending device (see the SQLite store).
        sqlx::query(
            "INSERT INTO queue (device_id, message_id, held)
             SELECT d, $2, TRUE FROM UNNEST($1::BIGINT[]) AS d
             WHERE (SELECT COUNT(*) FROM queue q JOIN messages m ON m.id = q.message_id
                    WHERE q.device_id = d AND q.held AND m.sender_device = $3) < $4",
        )
        .bind(&devices)
        .bind(id)
        .bind(i(m.sender_device))
        .bind(i(MAX_WITHHELD))
        .execute(&mut *tx)
        .await?;
    }
    Ok(Enqueued { message_id: u(id), seqs })
}

fn entry(r: &PgRow) -> Result<StoredEntry, sqlx::Error> {
    let kind: i16 = r.try_get(3)?;
    let kind = u8::try_from(kind)
        .ok()
        .and_then(EntryKind::from_u8)
        .ok_or_else(|| sqlx::Error::Decode("unknown entry kind".into()))?;
    Ok(StoredEntry {
        seq: u(r.try_get(0)?),
        message_id: u(r.try_get(1)?),
        conversation: r.try_get(2)?,
        kind,
        sender: r.try_get(4)?,
        sender_device: u(r.try_get(5)?),
        data: r.try_get(6)?,
        created_at: u(r.try_get(7)?),
        expires_at: r.try_get::<Option<i64>, _>(8)?.map(u),
        sender_kind: account_kind_from_code(i64::from(r.try_get::<i16, _>(9)?)),
        sender_verified: r.try_get(10)?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn create_account(&self, a: NewAccount) -> StoreResult<DeviceId> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let account: i64 = match sqlx::query_scalar(
            "INSERT INTO accounts (username, kind, created_at, display_name, description)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&a.username)
        .bind(account_kind_code(a.kind))
        .bind(i(a.now))
        .bind(a.profile.as_ref().map(|p| p.0.clone()))
        .bind(a.profile.as_ref().map(|p| p.1.clone()))
        .fetch_one(&mut *tx)
        .await
        {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::UsernameTaken),
            other => other.map_err(backend)?,
        };
        let device: i64 = sqlx::query_scalar(
            "INSERT INTO devices (account_id, credential_key, token_hash, created_at)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(account)
        .bind(&a.credential_key)
        .bind(a.token_hash.as_slice())
        .bind(i(a.now))
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("INSERT INTO key_packages (device_id, data) SELECT $1, k FROM UNNEST($2::BYTEA[]) WITH ORDINALITY AS t(k, n) ORDER BY n")
            .bind(device)
            .bind(&a.key_packages)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO last_resort_key_packages (device_id, data) VALUES ($1, $2)")
            .bind(device)
            .bind(&a.last_resort)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(u(device))
    }

    async fn device_auth(&self, device: DeviceId) -> StoreResult<Option<DeviceAuth>> {
        let row = sqlx::query(
            "SELECT d.id, a.username, a.kind, d.token_hash, d.credential_key, a.suspend_reason,
                    a.verified
             FROM devices d JOIN accounts a ON a.id = d.account_id WHERE d.id = $1",
        )
        .bind(i(device))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(r) = row else { return Ok(None) };
        let hash: Vec<u8> = r.try_get(3).map_err(backend)?;
        Ok(Some(DeviceAuth {
            device_id: u(r.try_get(0).map_err(backend)?),
            username: r.try_get(1).map_err(backend)?,
            kind: account_kind_from_code(i64::from(r.try_get::<i16, _>(2).map_err(backend)?)),
            token_hash: hash
                .try_into()
                .map_err(|_| StoreError::Backend("token hash is not 32 bytes".into()))?,
            credential_key: r.try_get(4).map_err(backend)?,
            suspended: r.try_get(5).map_err(backend)?,
            verified: r.try_get(6).map_err(backend)?,
        }))
    }

    async fn account_devices(&self, username: &str) -> StoreResult<Option<AccountDevices>> {
        let account: Option<(i64, i16)> =
            sqlx::query_as("SELECT id, kind FROM accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let Some((id, kind)) = account else {
            return Ok(None);
        };
        let rows: Vec<(i64, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT id, credential_key, created_at FROM devices WHERE account_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(Some(AccountDevices {
            username: username.to_string(),
            kind: account_kind_from_code(i64::from(kind)),
            devices: rows
                .into_iter()
                .map(|(id, key, at)| DeviceRecord {
                    device_id: u(id),
                    credential_key: key,
                    created_at: u(at),
                })
                .collect(),
        }))
    }

    async fn add_key_packages(
        &self,
        device: DeviceId,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM devices WHERE id = $1")
            .bind(i(device))
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(StoreError::UnknownDevice);
        }
        sqlx::query("INSERT INTO key_packages (device_id, data) SELECT $1, k FROM UNNEST($2::BYTEA[]) WITH ORDINALITY AS t(k, n) ORDER BY n")
            .bind(i(device))
            .bind(&key_packages)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if let Some(last) = last_resort {
            sqlx::query(
                "INSERT INTO last_resort_key_packages (device_id, data) VALUES ($1, $2)
                 ON CONFLICT (device_id) DO UPDATE SET data = EXCLUDED.data",
            )
            .bind(i(device))
            .bind(&last)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_packages WHERE device_id = $1")
            .bind(i(device))
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(u(n))
    }

    async fn key_packages_remaining(&self, device: DeviceId) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_packages WHERE device_id = $1")
            .bind(i(device))
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(u(n))
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        one_time: bool,
    ) -> StoreResult<Vec<ClaimedKeyPackage>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let account: Option<i64> =
            sqlx::query_scalar("SELECT id FROM accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let Some(account) = account else {
            return Err(StoreError::UnknownUser);
        };
        let devices: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM devices WHERE account_id = $1 ORDER BY id")
                .bind(account)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let mut out = Vec::new();
        for d in devices {
            let taken: Option<Vec<u8>> = if one_time {
                sqlx::query_scalar(
                    "DELETE FROM key_packages WHERE id =
                       (SELECT id FROM key_packages WHERE device_id = $1 ORDER BY id
                        LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING data",
                )
                .bind(d)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
            } else {
                None
            };
            match taken {
                Some(data) => {
                    out.push(ClaimedKeyPackage { device_id: u(d), data, last_resort: false })
                }
                None => {
                    let last: Option<Vec<u8>> = sqlx::query_scalar(
                        "SELECT data FROM last_resort_key_packages WHERE device_id = $1",
                    )
                    .bind(d)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
                    out.extend(last.map(|data| ClaimedKeyPackage {
                        device_id: u(d),
                        data,
                        last_resort: true,
                    }));
                }
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    async fn create_conversation(&self, c: NewConversation) -> StoreResult<MessageId> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        match sqlx::query(
            "INSERT INTO conversations (id, created_at, epoch, group_state, poster, direct)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.conversation)
        .bind(i(c.now))
        .bind(i(c.epoch))
        .bind(&c.group_state)
        .bind(&c.poster)
        .bind(c.direct)
        .execute(&mut *tx)
        .await
        {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::ConversationExists),
            other => other.map_err(backend)?,
        };
        let mut members = c.members.clone();
        members.push(c.creator_device);
        members.sort_unstable();
        members.dedup();
        let ids: Vec<i64> = members.iter().map(|d| i(*d)).collect();
        let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if u(known) != members.len() as u64 {
            return Err(StoreError::UnknownDevice);
        }
        sqlx::query(
            "INSERT INTO conversation_members (conversation, device_id)
             SELECT $1, d FROM UNNEST($2::BIGINT[]) AS d",
        )
        .bind(&c.conversation)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let recipients = members
            .into_iter()
            .filter(|d| *d != c.creator_device && !c.withheld.contains(d))
            .collect();
        let id = insert_message(
            &mut tx,
            &self.announce,
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
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(id.message_id)
    }

    async fn group_state(&self, conversation: &[u8]) -> StoreResult<Option<GroupState>> {
        let row: Option<(i64, Vec<u8>, i64)> =
            sqlx::query_as("SELECT epoch, group_state, revision FROM conversations WHERE id = $1")
                .bind(conversation)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        Ok(row.map(|(epoch, state, revision)| GroupState {
            epoch: u(epoch),
            state,
            revision: u(revision),
        }))
    }

    async fn update_group(&self, g: GroupUpdate) -> StoreResult<Vec<MessageId>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The row lock orders concurrent updates of one conversation, across kithd nodes too.
        let current: Option<(i64, i64)> =
            sqlx::query_as("SELECT epoch, revision FROM conversations WHERE id = $1 FOR UPDATE")
                .bind(&g.conversation)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        match current {
            None => return Err(StoreError::UnknownConversation),
            Some((e, r)) if u(e) != g.expected_epoch || u(r) != g.expected_revision => {
                return Err(StoreError::StaleEpoch);
            }
            Some(_) => {}
        }
        sqlx::query(
            "UPDATE conversations SET epoch = $2, group_state = $3, revision = revision + 1
             WHERE id = $1",
        )
        .bind(&g.conversation)
        .bind(i(g.epoch))
        .bind(&g.state)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM conversation_members WHERE conversation = $1")
            .bind(&g.conversation)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let ids: Vec<i64> = g.members.iter().map(|d| i(*d)).collect();
        sqlx::query(
            "INSERT INTO conversation_members (conversation, device_id)
             SELECT $1, d FROM UNNEST($2::BIGINT[]) AS d ON CONFLICT DO NOTHING",
        )
        .bind(&g.conversation)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let mut out = Vec::with_capacity(g.messages.len());
        for m in &g.messages {
            out.push(insert_message(&mut tx, &self.announce, m).await.map_err(backend)?.message_id);
        }
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    async fn devices_by_credential_keys(&self, keys: &[Vec<u8>]) -> StoreResult<Vec<KeyOwner>> {
        let rows: Vec<(Vec<u8>, i64, String)> = sqlx::query_as(
            "SELECT DISTINCT ON (d.credential_key) d.credential_key, d.id, a.username
             FROM devices d JOIN accounts a ON a.id = d.account_id
             WHERE d.credential_key = ANY($1) ORDER BY d.credential_key, d.id",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(credential_key, id, username)| KeyOwner {
                credential_key,
                device_id: u(id),
                username,
            })
            .collect())
    }

    async fn conversation_route(&self, conversation: &[u8]) -> StoreResult<Option<Route>> {
        let row: Option<(Option<String>, bool, i64)> =
            sqlx::query_as("SELECT poster, direct, epoch FROM conversations WHERE id = $1")
                .bind(conversation)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let Some((poster, direct, epoch)) = row else { return Ok(None) };
        let members: Vec<i64> = sqlx::query_scalar(
            "SELECT device_id FROM conversation_members WHERE conversation = $1 ORDER BY device_id",
        )
        .bind(conversation)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(Some(Route {
            members: members.into_iter().map(u).collect(),
            poster,
            direct,
            epoch: u(epoch),
        }))
    }

    async fn enqueue(&self, m: NewMessage) -> StoreResult<Enqueued> {
        if !m.withheld.is_empty() {
            // Rare (an invitation to someone blocking its sender): not worth the batch's
            // set-based statements.
            let mut tx = self.pool.begin().await.map_err(backend)?;
            let e = insert_message(&mut tx, &self.announce, &m).await.map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            return Ok(e);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.batch.send((Op::Enqueue(m), reply)).await.map_err(|_| StoreError::Unavailable)?;
        match answer.await.map_err(|_| StoreError::Unavailable)?? {
            Done::Enqueued(e) => Ok(e),
            Done::Removed(_) => Err(StoreError::Backend("the batcher mixed up its answers".into())),
        }
    }

    async fn fetch(
        &self,
        device: DeviceId,
        after: u64,
        limit: u32,
        now: Millis,
    ) -> StoreResult<Vec<StoredEntry>> {
        let rows = sqlx::query(
            "SELECT q.seq, m.id, m.conversation, m.kind, a.username, m.sender_device, m.data,
                    m.created_at, m.expires_at, a.kind, a.verified
             FROM queue q
             JOIN messages m ON m.id = q.message_id
             JOIN devices d ON d.id = m.sender_device
             JOIN accounts a ON a.id = d.account_id
             WHERE q.device_id = $1 AND q.seq > $2 AND NOT q.held
               AND (m.expires_at IS NULL OR m.expires_at > $4)
             ORDER BY q.seq LIMIT $3",
        )
        .bind(i(device))
        .bind(i(after))
        .bind(i64::from(limit))
        .bind(i(now))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(entry).collect::<Result<_, _>>().map_err(backend)
    }

    async fn queue_depths(&self, devices: &[DeviceId]) -> StoreResult<Vec<u64>> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = devices.iter().map(|d| i(*d)).collect();
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT device_id, COUNT(*) FROM queue WHERE device_id = ANY($1) AND NOT held
             GROUP BY device_id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let counts: std::collections::HashMap<i64, i64> = rows.into_iter().collect();
        Ok(ids.iter().map(|d| u(counts.get(d).copied().unwrap_or(0))).collect())
    }

    async fn ack(&self, device: DeviceId, seqs: &[u64]) -> StoreResult<u64> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = (Op::Ack(device, seqs.to_vec()), reply);
        self.batch.send(job).await.map_err(|_| StoreError::Unavailable)?;
        match answer.await.map_err(|_| StoreError::Unavailable)?? {
            Done::Removed(n) => Ok(n),
            Done::Enqueued(_) => {
                Err(StoreError::Backend("the batcher mixed up its answers".into()))
            }
        }
    }

    async fn sweep_expired(&self, cutoff: Millis, now: Millis) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "DELETE FROM queue WHERE message_id IN
               (SELECT id FROM messages WHERE created_at < $1 OR expires_at <= $2)",
        )
        .bind(i(cutoff))
        .bind(i(now))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let gone = sqlx::query("DELETE FROM messages WHERE created_at < $1 OR expires_at <= $2")
            .bind(i(cutoff))
            .bind(i(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(gone)
    }

    async fn compact(&self) -> StoreResult<()> {
        // PostgreSQL reuses the space of deleted rows itself (autovacuum); operators who need
        // deleted rows gone from disk at once run VACUUM FULL on `messages`.
        Ok(())
    }

    async fn franking_keys(&self) -> StoreResult<Vec<FrankingKey>> {
        let rows: Vec<(i32, Vec<u8>, i64, Option<i64>)> =
            sqlx::query_as("SELECT id, key, created_at, retired_at FROM franking_keys ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(id, key, created_at, retired_at)| FrankingKey {
                id: u32::try_from(id).unwrap_or(u32::MAX),
                key: kith_store::SecretBytes::new(key),
                created_at: u(created_at),
                retired_at: retired_at.map(u),
            })
            .collect())
    }

    async fn add_franking_key(&self, key: Vec<u8>, now: Millis) -> StoreResult<u32> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("UPDATE franking_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(i(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let id: i32 = sqlx::query_scalar(
            "INSERT INTO franking_keys (key, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(&key)
        .bind(i(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(u32::try_from(id).unwrap_or(u32::MAX))
    }

    async fn add_report(&self, r: NewReport) -> StoreResult<(u64, bool)> {
        let inserted = sqlx::query(
            "INSERT INTO reports (reporter, sender, sender_device, conversation, message_time,
                text, reason, tag, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (reporter, tag) DO NOTHING",
        )
        .bind(&r.reporter)
        .bind(&r.sender)
        .bind(i(r.sender_device))
        .bind(&r.conversation)
        .bind(i(r.message_time))
        .bind(&r.text)
        .bind(&r.reason)
        .bind(&r.tag)
        .bind(i(r.now))
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected();
        let id: i64 = sqlx::query_scalar("SELECT id FROM reports WHERE reporter = $1 AND tag = $2")
            .bind(&r.reporter)
            .bind(&r.tag)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok((u(id), inserted == 1))
    }

    async fn reports(&self) -> StoreResult<Vec<ReportRecord>> {
        let rows = sqlx::query(
            "SELECT id, reporter, sender, sender_device, conversation, message_time, text,
                    reason, created_at
             FROM reports ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(ReportRecord {
                    id: u(r.try_get(0)?),
                    reporter: r.try_get(1)?,
                    sender: r.try_get(2)?,
                    sender_device: u(r.try_get(3)?),
                    conversation: r.try_get(4)?,
                    message_time: u(r.try_get(5)?),
                    text: r.try_get(6)?,
                    reason: r.try_get(7)?,
                    created_at: u(r.try_get(8)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend)
    }

    async fn block(&self, blocker: &str, blocked: &str, now: Millis) -> StoreResult<()> {
        let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE username = $1")
            .bind(blocked)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if known.is_none() {
            return Err(StoreError::UnknownUser);
        }
        sqlx::query(
            "INSERT INTO blocks (blocker, blocked, created_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(blocker)
        .bind(blocked)
        .bind(i(now))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn unblock(&self, blocker: &str, blocked: &str) -> StoreResult<bool> {
        let n = sqlx::query("DELETE FROM blocks WHERE blocker = $1 AND blocked = $2")
            .bind(blocker)
            .bind(blocked)
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected();
        Ok(n > 0)
    }

    async fn blocked_by(&self, blocker: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT blocked FROM blocks WHERE blocker = $1 ORDER BY blocked")
            .bind(blocker)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
    }

    async fn devices_blocking(&self, sender: &str) -> StoreResult<Vec<DeviceId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT d.id FROM blocks b
             JOIN accounts a ON a.username = b.blocker
             JOIN devices d ON d.account_id = a.id
             WHERE b.blocked = $1 ORDER BY d.id",
        )
        .bind(sender)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(ids.into_iter().map(u).collect())
    }

    async fn account_info(&self, username: &str) -> StoreResult<Option<AccountInfo>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{ACCOUNT_INFO} WHERE a.username = $1")))
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_info_row).transpose().map_err(backend)
    }

    async fn set_token_hash(&self, device: DeviceId, token_hash: [u8; 32]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let n = sqlx::query("UPDATE devices SET token_hash = $2 WHERE id = $1")
            .bind(i(device))
            .bind(token_hash.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::UnknownDevice);
        }
        // Other nodes close their push connections opened with the old token.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.announce.channel)
            .bind(format!("{} !{device}", self.announce.node))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn set_suspended(&self, username: &str, reason: Option<String>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let suspending = reason.is_some();
        let n = sqlx::query("UPDATE accounts SET suspend_reason = $2 WHERE username = $1")
            .bind(username)
            .bind(reason)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::UnknownUser);
        }
        if suspending {
            // Every node closes the account's push connections.
            sqlx::query(
                "SELECT pg_notify($1, $2 || ' !' || d.id::TEXT) FROM devices d
                 JOIN accounts a ON a.id = d.account_id WHERE a.username = $3",
            )
            .bind(&self.announce.channel)
            .bind(&self.announce.node)
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn add_flag(&self, f: FlagRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO flags (username, action, reason, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&f.username)
        .bind(&f.action)
        .bind(&f.reason)
        .bind(i(f.created_at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn flags(&self) -> StoreResult<Vec<FlagRecord>> {
        let rows: Vec<(String, String, String, i64)> =
            sqlx::query_as("SELECT username, action, reason, created_at FROM flags ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(username, action, reason, at)| FlagRecord {
                username,
                action,
                reason,
                created_at: u(at),
            })
            .collect())
    }

    async fn set_verified(&self, username: &str, verified: bool) -> StoreResult<()> {
        let n = sqlx::query("UPDATE accounts SET verified = $2 WHERE username = $1 AND kind = 1")
            .bind(username)
            .bind(verified)
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected();
        if n == 0 { Err(StoreError::UnknownUser) } else { Ok(()) }
    }

    async fn search_businesses(&self, query: &str, limit: u32) -> StoreResult<Vec<AccountInfo>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{ACCOUNT_INFO} WHERE a.kind = 1 AND (
                strpos(lower(a.username), $1) > 0
                OR strpos(lower(coalesce(a.display_name, '')), $1) > 0
                OR strpos(lower(coalesce(a.description, '')), $1) > 0)
             ORDER BY a.verified DESC, a.username LIMIT $2"
        )))
        .bind(query.to_lowercase())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(account_info_row).collect::<Result<_, _>>().map_err(backend)
    }

    async fn share_direct_conversation(&self, a: &str, b: &str) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM accounts a1
             JOIN devices d1 ON d1.account_id = a1.id
             JOIN conversation_members m1 ON m1.device_id = d1.id
             JOIN conversations c ON c.id = m1.conversation AND c.direct
             JOIN conversation_members m2 ON m2.conversation = c.id
             JOIN devices d2 ON d2.id = m2.device_id
             JOIN accounts a2 ON a2.id = d2.account_id
             WHERE a1.username = $1 AND a2.username = $2 LIMIT 1",
        )
        .bind(a)
        .bind(b)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(found.is_some())
    }

    async fn release_withheld(&self, blocker: &str, sender: &str) -> StoreResult<Vec<DeviceId>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut devices: Vec<i64> = sqlx::query_scalar(
            "UPDATE queue q SET held = FALSE
             WHERE q.held
               AND q.device_id IN (SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id
                                   WHERE a.username = $1)
               AND EXISTS (SELECT 1 FROM messages m
                           JOIN devices d ON d.id = m.sender_device
                           JOIN accounts a ON a.id = d.account_id
                           WHERE m.id = q.message_id AND a.username = $2)
             RETURNING q.device_id",
        )
        .bind(blocker)
        .bind(sender)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        devices.sort_unstable();
        devices.dedup();
        announce(&mut tx, &self.announce, &devices).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(devices.into_iter().map(u).collect())
    }

    async fn add_signal(&self, s: SignalRecord) -> StoreResult<Option<u64>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let inserted = sqlx::query(
            "INSERT INTO signals (target, kind, source, qualified, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&s.target)
        .bind(s.kind.code())
        .bind(&s.source)
        .bind(s.qualified)
        .bind(i(s.created_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM signals WHERE target = $1 AND kind = $2 AND qualified",
        )
        .bind(&s.target)
        .bind(s.kind.code())
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(u(n)))
    }

    async fn withdraw_signal(
        &self,
        target: &str,
        source: &str,
        kind: SignalKind,
    ) -> StoreResult<bool> {
        Ok(sqlx::query("DELETE FROM signals WHERE target = $1 AND source = $2 AND kind = $3")
            .bind(target)
            .bind(source)
            .bind(kind.code())
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected()
            > 0)
    }

    async fn signals(&self, target: Option<&str>) -> StoreResult<Vec<SignalRecord>> {
        let rows = sqlx::query(
            "SELECT target, source, kind, qualified, created_at FROM signals
             WHERE $1::TEXT IS NULL OR target = $1 ORDER BY created_at, target, source",
        )
        .bind(target)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(SignalRecord {
                    target: r.try_get(0)?,
                    source: r.try_get(1)?,
                    kind: SignalKind::from_code(i64::from(r.try_get::<i16, _>(2)?)),
                    qualified: r.try_get(3)?,
                    created_at: u(r.try_get(4)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend)
    }

    async fn clear_signals(&self, target: &str) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM signals WHERE target = $1")
            .bind(target)
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected())
    }

    async fn note_spoke(&self, conversation: &[u8], speaker: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO speakers (conversation, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(conversation)
        .bind(speaker)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn has_written_to(&self, speaker: &str, listener: &str) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM speakers s
             JOIN conversations c ON c.id = s.conversation AND c.direct
             JOIN conversation_members m ON m.conversation = s.conversation
             JOIN devices d ON d.id = m.device_id
             JOIN accounts a ON a.id = d.account_id
             WHERE s.username = $1 AND a.username = $2 LIMIT 1",
        )
        .bind(speaker)
        .bind(listener)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(found.is_some())
    }

    fn shared(&self) -> bool {
        true
    }

    fn announcements(&self) -> Option<tokio::sync::mpsc::Receiver<Announcement>> {
        if self.listening.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        // Its own connection, outside the pool the queries share.
        let options = (*self.pool.connect_options()).clone();
        let pool = PgPoolOptions::new().max_connections(1).connect_lazy_with(options);
        let (out, announcements) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(listen(pool, self.announce.clone(), out));
        Some(announcements)
    }

    async fn counts(&self) -> StoreResult<StoreCounts> {
        let r = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM devices),
                    (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM queue),
                    (SELECT COUNT(*) FROM key_packages)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let get = |n: usize| r.try_get::<i64, _>(n).map(u).map_err(backend);
        Ok(StoreCounts {
            accounts: get(0)?,
            devices: get(1)?,
            messages: get(2)?,
            queue_entries: get(3)?,
            key_packages: get(4)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::announced;
    use kith_store::Announcement;

    #[test]
    fn announcements_name_devices_and_skip_this_node() {
        assert_eq!(
            announced("00aa 1,22,333", "00bb"),
            Some(Announcement::Queued(vec![1, 22, 333]))
        );
        assert_eq!(announced("00aa 1,22,333", "00aa"), None, "its own");
        assert_eq!(announced("00aa !42", "00bb"), Some(Announcement::AccessChanged(42)));
        assert_eq!(announced("00aa !42", "00aa"), None);
        assert_eq!(announced("00aa", "00bb"), None);
        assert_eq!(announced("00aa 1,x", "00bb"), None);
        assert_eq!(announced("00aa !x", "00bb"), None);
    }
}
