//! The single writer thread and its group commit.

use std::any::Any;

use kith_store::{StoreError, StoreResult};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

type Output = Box<dyn Any + Send>;
type Work = Box<dyn FnOnce(&Connection) -> StoreResult<Output> + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<StoreResult<Output>>,
}

/// What the writer thread is asked to do.
enum Task {
    /// A write, grouped with others into one transaction.
    Write(Job),
    /// Checkpoint the WAL into the database and truncate it, outside any transaction.
    Checkpoint(oneshot::Sender<StoreResult<()>>),
}

/// Most writes folded into one transaction. Bounded so one commit never grows without end.
const MAX_BATCH: usize = 512;
/// Writes waiting for the thread before senders are made to wait (backpressure).
const QUEUE_DEPTH: usize = 8192;

/// A handle to the writer thread. When the last handle is dropped the thread finishes the
/// queued writes, checkpoints the WAL and exits.
pub struct Writer {
    tx: mpsc::Sender<Task>,
}

impl Writer {
    pub fn start(conn: Connection) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("kith-sqlite-writer".into())
            .spawn(move || run(conn, rx))
            .map(|_| ())
            .unwrap_or_else(
                |e| tracing::error!(error = %e, "cannot start the SQLite writer thread"),
            );
        Writer { tx }
    }

    /// Runs `f` in the next batch; answers after the batch is committed.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |c| f(c).map(|v| Box::new(v) as Output));
        self.tx
            .send(Task::Write(Job { work, reply }))
            .await
            .map_err(|_| StoreError::Unavailable)?;
        let out = answer.await.map_err(|_| StoreError::Unavailable)??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Backend("writer returned the wrong type".into()))
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Task>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let mut checkpoint = None;
        match first {
            Task::Write(job) => batch.push(job),
            Task::Checkpoint(reply) => checkpoint = Some(reply),
        }
        while checkpoint.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Task::Write(job)) => batch.push(job),
                Ok(Task::Checkpoint(reply)) => checkpoint = Some(reply),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, &mut batch);
        }
        if let Some(reply) = checkpoint {
            let done = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))
                .map_err(|e| StoreError::Backend(e.to_string()))
                .and_then(|busy| {
                    if busy == 0 {
                        Ok(())
                    } else {
                        Err(StoreError::Backend(
                            "the WAL checkpoint was blocked by a reader".into(),
                        ))
                    }
                });
            let _ = reply.send(done);
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
    }
}

impl Writer {
    /// Checkpoints the WAL into the database file and truncates it, after the writes queued
    /// before it.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Task::Checkpoint(reply)).await.map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }
}

/// Runs a statement through the statement cache: transaction control is issued for every job,
/// and re-parsing it each time showed up in profiles.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        fail_all(batch, &e);
        return;
    }
    let mut results = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        let result = match exec(conn, "SAVEPOINT job") {
            Err(e) => Err(StoreError::Backend(e.to_string())),
            Ok(()) => {
                let r = (job.work)(conn);
                let end = if r.is_ok() {
                    exec(conn, "RELEASE job")
                } else {
                    exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
                };
                match end {
                    Ok(()) => r,
                    Err(e) => Err(StoreError::Backend(e.to_string())),
                }
            }
        };
        results.push((job.reply, result));
    }
    match exec(conn, "COMMIT") {
        Ok(()) => {
            for (reply, result) in results {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "SQLite commit failed; the batch is refused");
            let _ = conn.execute_batch("ROLLBACK");
            for (reply, _) in results {
                let _ = reply.send(Err(StoreError::Backend(e.to_string())));
            }
        }
    }
}

fn fail_all(batch: &mut Vec<Job>, e: &rusqlite::Error) {
    tracing::error!(error = %e, "SQLite cannot begin a transaction");
    for job in batch.drain(..) {
        let _ = job.reply.send(Err(StoreError::Backend(e.to_string())));
    }
}
