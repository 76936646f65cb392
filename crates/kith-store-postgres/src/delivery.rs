//! Delivery (the operations of [`DeliveryStore`]): a message stored once and queued per
//! recipient device, fetch, acknowledgement (a message goes with its last entry), and the
//! retention sweep.

use super::*;

/// The message `device` stored under `client_id` before: its id and acceptance time.
pub(crate) async fn sent_before(
    conn: &mut sqlx::PgConnection,
    device: DeviceId,
    client_id: &[u8],
) -> Result<Option<(MessageId, Millis)>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT message_id, created_at FROM sent_ids WHERE device_id = $1 AND client_id = $2",
    )
    .bind(i(device))
    .bind(client_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(m, at)| (u(m), u(at))))
}

/// Claims `client_id` of `device` for the message `id`: false when the device used it before
/// (a concurrent claim waits for the other transaction, then sees it).
pub(crate) async fn claim_client_ids(
    tx: &mut sqlx::PgConnection,
    claims: &[(DeviceId, &[u8], i64, Millis)],
) -> Result<std::collections::HashSet<i64>, sqlx::Error> {
    let devices: Vec<i64> = claims.iter().map(|c| i(c.0)).collect();
    let ids: Vec<&[u8]> = claims.iter().map(|c| c.1).collect();
    let messages: Vec<i64> = claims.iter().map(|c| c.2).collect();
    let created: Vec<i64> = claims.iter().map(|c| i(c.3)).collect();
    let claimed: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO sent_ids (device_id, client_id, message_id, created_at)
         SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::BIGINT[], $4::BIGINT[])
         ON CONFLICT DO NOTHING
         RETURNING message_id",
    )
    .bind(&devices)
    .bind(&ids)
    .bind(&messages)
    .bind(&created)
    .fetch_all(&mut *tx)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// Stores a message and its queue entries, and announces them to the other processes.
pub(crate) async fn insert_message(
    tx: &mut sqlx::PgConnection,
    announce: &Announce,
    m: &NewMessage,
) -> Result<Enqueued, sqlx::Error> {
    let id: i64 =
        sqlx::query_scalar("SELECT nextval('messages_id_seq')").fetch_one(&mut *tx).await?;
    if let Some(client_id) = &m.client_id {
        let claim = [(m.sender_device, client_id.as_slice(), id, m.now)];
        if claim_client_ids(tx, &claim).await?.is_empty() {
            let (first, at) = sent_before(tx, m.sender_device, client_id)
                .await?
                .ok_or_else(|| sqlx::Error::Protocol("a claimed client id vanished".into()))?;
            return Ok(Enqueued { message_id: first, seqs: Vec::new(), repeat_of: Some(at) });
        }
    }
    sqlx::query(
        "INSERT INTO messages (id, conversation, sender_device, kind, data, created_at, expires_at)
         VALUES ($7, $1, $2, $3, $4, $5, $6)",
    )
    .bind(&m.conversation)
    .bind(i(m.sender_device))
    .bind(i16::from(m.kind.as_u8()))
    .bind(&m.data)
    .bind(i(m.now))
    .bind(m.expires_at.map(i))
    .bind(id)
    .execute(&mut *tx)
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
    Ok(Enqueued { message_id: u(id), seqs, repeat_of: None })
}

#[async_trait]
impl DeliveryStore for PgStore {
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

    async fn sent_before(
        &self,
        device: DeviceId,
        client_id: &[u8],
    ) -> StoreResult<Option<(MessageId, Millis)>> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        sent_before(&mut conn, device, client_id).await.map_err(backend)
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

    async fn note_missed(&self, devices: &[DeviceId], conversation: &[u8]) -> StoreResult<()> {
        if devices.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = devices.iter().map(|d| i(*d)).collect();
        sqlx::query(
            "INSERT INTO missed (device_id, conversation, count)
             SELECT d, $2, 1 FROM UNNEST($1::BIGINT[]) AS d
             ON CONFLICT (device_id, conversation) DO UPDATE SET count = missed.count + 1",
        )
        .bind(&ids)
        .bind(conversation)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn missed(&self, device: DeviceId, limit: u32) -> StoreResult<Vec<(Vec<u8>, u64)>> {
        let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT conversation, count FROM missed WHERE device_id = $1
             ORDER BY conversation LIMIT $2",
        )
        .bind(i(device))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(|(c, n)| (c, u(n))).collect())
    }

    async fn forget_missed(&self, device: DeviceId, told: &[(Vec<u8>, u64)]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for (conversation, count) in told {
            sqlx::query(
                "UPDATE missed SET count = count - $3 WHERE device_id = $1 AND conversation = $2",
            )
            .bind(i(device))
            .bind(conversation)
            .bind(i(*count))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        sqlx::query("DELETE FROM missed WHERE device_id = $1 AND count <= 0")
            .bind(i(device))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
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
        sqlx::query("DELETE FROM sent_ids WHERE created_at < $1")
            .bind(i(cutoff))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM links WHERE expires_at <= $1")
            .bind(i(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM link_chunks WHERE link_id NOT IN (SELECT id FROM links)")
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
