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

/// Most writes folded into one transaction. Bounded so one commit never grows without end.
const MAX_BATCH: usize = 512;
/// Writes waiting for the thread before senders are made to wait (backpressure).
const QUEUE_DEPTH: usize = 8192;

/// A handle to the writer thread. When the last handle is dropped the thread finishes the
/// queued writes, checkpoints the WAL and exits.
pub struct Writer {
    tx: mpsc::Sender<Job>,
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
        self.tx.send(Job { work, reply }).await.map_err(|_| StoreError::Unavailable)?;
        let out = answer.await.map_err(|_| StoreError::Unavailable)??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Backend("writer returned the wrong type".into()))
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&conn, &mut batch);
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
    }
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        fail_all(batch, &e);
        return;
    }
    let mut results = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        let result = match conn.execute_batch("SAVEPOINT job") {
            Err(e) => Err(StoreError::Backend(e.to_string())),
            Ok(()) => {
                let r = (job.work)(conn);
                let end = if r.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
                match conn.execute_batch(end) {
                    Ok(()) => r,
                    Err(e) => Err(StoreError::Backend(e.to_string())),
                }
            }
        };
        results.push((job.reply, result));
    }
    match conn.execute_batch("COMMIT") {
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
