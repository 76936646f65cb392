//! The batching writer: sends and acknowledgements from many tasks go through one task that
//! commits up to `MAX_BATCH` of them in one transaction (one fsync), falling back to one by
//! one when a batch fails so a bad write does not fail its neighbours.

use super::*;

/// A write the batcher folds into a shared transaction.
pub(crate) enum Op {
    Enqueue(NewMessage),
    Ack(DeviceId, Vec<u64>),
}

/// A job's answer: what a send stored, or how many entries an acknowledgement removed.
pub(crate) enum Done {
    Enqueued(Enqueued),
    Removed(u64),
}

pub(crate) type Job = (Op, tokio::sync::oneshot::Sender<StoreResult<Done>>);

/// Most writes folded into one transaction.
pub(crate) const MAX_BATCH: usize = 256;

/// Commits concurrent sends and acknowledgements together: one `COMMIT` (one WAL flush) for
/// many of them, as the SQLite writer does. The whole batch goes in a few set-based statements
/// (see [`run_fast`]); should that fail for any reason but a lost connection, it is run again
/// job by job, each in its own savepoint, so a failing one does not undo its neighbours. Every
/// job is answered only after the commit, so an `Ok` is durable.
pub(crate) async fn batcher(
    pool: PgPool,
    mut rx: tokio::sync::mpsc::Receiver<Job>,
    announce: Arc<Announce>,
) {
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

pub(crate) async fn run_op(
    tx: &mut sqlx::PgConnection,
    a: &Announce,
    op: &Op,
) -> Result<Done, sqlx::Error> {
    match op {
        Op::Enqueue(m) => insert_message(tx, a, m).await.map(Done::Enqueued),
        Op::Ack(device, seqs) => ack_in(tx, *device, seqs).await.map(Done::Removed),
    }
}

pub(crate) fn refuse(
    replies: Vec<tokio::sync::oneshot::Sender<StoreResult<Done>>>,
    e: &sqlx::Error,
) {
    for reply in replies {
        let _ = reply.send(Err(backend_ref(e)));
    }
}

pub(crate) async fn run_batch(pool: &PgPool, announce: &Announce, jobs: Vec<Job>) {
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
pub(crate) async fn run_fast(
    tx: &mut sqlx::PgConnection,
    announce: &Announce,
    jobs: &[Job],
) -> Result<Vec<Done>, sqlx::Error> {
    let mut results: Vec<Done> = jobs.iter().map(|_| Done::Removed(0)).collect();
    let mut sends: Vec<(usize, &NewMessage)> = jobs
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
        // A repeat of a message its device posted before (same client id) is answered with the
        // first and stored no more.
        leave_out_repeats(tx, &mut sends, &mut ids, &mut results).await?;
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
            results[*n] = Done::Enqueued(Enqueued { message_id: u(*id), seqs, repeat_of: None });
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

/// Claims the client ids of `sends` (each with its drawn id) and takes out of `sends` and `ids`
/// the repeats, answering each with the first message (what is left may be nothing: the
/// statements that follow insert nothing then). Acks in the batch are unaffected.
async fn leave_out_repeats(
    tx: &mut sqlx::PgConnection,
    sends: &mut Vec<(usize, &NewMessage)>,
    ids: &mut Vec<i64>,
    results: &mut [Done],
) -> Result<(), sqlx::Error> {
    let claims: Vec<(DeviceId, &[u8], i64, Millis)> = sends
        .iter()
        .zip(ids.iter())
        .filter_map(|((_, m), id)| Some((m.sender_device, m.client_id.as_deref()?, *id, m.now)))
        .collect();
    if claims.is_empty() {
        return Ok(());
    }
    let claimed = crate::delivery::claim_client_ids(tx, &claims).await?;
    if claimed.len() == claims.len() {
        return Ok(());
    }
    let mut kept_sends = Vec::with_capacity(sends.len());
    let mut kept_ids = Vec::with_capacity(ids.len());
    for ((n, m), id) in sends.drain(..).zip(ids.drain(..)) {
        match &m.client_id {
            Some(client_id) if !claimed.contains(&id) => {
                let (first, at) = crate::delivery::sent_before(tx, m.sender_device, client_id)
                    .await?
                    .ok_or_else(|| sqlx::Error::Protocol("a claimed client id vanished".into()))?;
                results[n] = Done::Enqueued(Enqueued {
                    message_id: first,
                    seqs: Vec::new(),
                    repeat_of: Some(at),
                });
            }
            _ => {
                kept_sends.push((n, m));
                kept_ids.push(id);
            }
        }
    }
    *sends = kept_sends;
    *ids = kept_ids;
    Ok(())
}

/// The slow path: each job in its own savepoint.
pub(crate) async fn run_one_by_one(pool: &PgPool, announce: &Announce, jobs: Vec<Job>) {
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

pub(crate) async fn ack_in(
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
pub(crate) async fn delete_orphans(
    tx: &mut sqlx::PgConnection,
    messages: &[i64],
) -> Result<(), sqlx::Error> {
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
