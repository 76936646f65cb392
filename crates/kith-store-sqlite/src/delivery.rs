//! Delivery (the operations of [`DeliveryStore`]): a message stored once and queued per
//! recipient device, fetch, acknowledgement (a message goes with its last entry), and the
//! retention sweep.

use super::*;

/// The message `device` stored under `client_id` before: its id and acceptance time.
fn sent_before(
    conn: &Connection,
    device: DeviceId,
    client_id: &[u8],
) -> Result<Option<(u64, u64)>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT message_id, created_at FROM sent_ids WHERE device_id = ?1 AND client_id = ?2",
    )?
    .query_row(params![i(device), client_id], |r| Ok((u(r.get(0)?), u(r.get(1)?))))
    .optional()
}

pub(crate) fn insert_message(
    conn: &Connection,
    m: &NewMessage,
) -> Result<Enqueued, rusqlite::Error> {
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
    // The device's id for it is claimed before anything is queued; taken already (a repeat),
    // the row just made goes again and the first is answered. (Writes are serialized on one
    // connection: nothing can come between the two.)
    if let Some(client_id) = &m.client_id {
        let claimed = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO sent_ids (device_id, client_id, message_id, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![i(m.sender_device), client_id, id, i(m.now)])?;
        if claimed == 0 {
            conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?.execute(params![id])?;
            let (message_id, at) = sent_before(conn, m.sender_device, client_id)?
                .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            return Ok(Enqueued { message_id, seqs: Vec::new(), repeat_of: Some(at) });
        }
    }
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
    Ok(Enqueued { message_id: u(id), seqs, repeat_of: None })
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn enqueue(&self, m: NewMessage) -> StoreResult<Enqueued> {
        self.inner.writer.write(move |conn| insert_message(conn, &m).map_err(backend)).await
    }

    async fn sent_before(
        &self,
        device: DeviceId,
        client_id: &[u8],
    ) -> StoreResult<Option<(MessageId, Millis)>> {
        let client_id = client_id.to_vec();
        self.read(move |conn| sent_before(conn, device, &client_id)).await
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

    async fn note_missed(&self, devices: &[DeviceId], conversation: &[u8]) -> StoreResult<()> {
        if devices.is_empty() {
            return Ok(());
        }
        let (devices, conversation) = (devices.to_vec(), conversation.to_vec());
        self.inner
            .writer
            .write(move |conn| {
                let mut add = conn
                    .prepare_cached(
                        "INSERT INTO missed (device_id, conversation, count) VALUES (?1, ?2, 1)
                         ON CONFLICT (device_id, conversation) DO UPDATE SET count = count + 1",
                    )
                    .map_err(backend)?;
                for d in &devices {
                    add.execute(params![i(*d), conversation]).map_err(backend)?;
                }
                Ok(())
            })
            .await
    }

    async fn missed(&self, device: DeviceId, limit: u32) -> StoreResult<Vec<(Vec<u8>, u64)>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT conversation, count FROM missed WHERE device_id = ?1
                 ORDER BY conversation LIMIT ?2",
            )?
            .query_map(params![i(device), limit], |r| Ok((r.get(0)?, u(r.get(1)?))))?
            .collect()
        })
        .await
    }

    async fn forget_missed(&self, device: DeviceId, told: &[(Vec<u8>, u64)]) -> StoreResult<()> {
        let told = told.to_vec();
        self.inner
            .writer
            .write(move |conn| {
                let mut sub = conn
                    .prepare_cached(
                        "UPDATE missed SET count = count - ?3 WHERE device_id = ?1 AND conversation = ?2",
                    )
                    .map_err(backend)?;
                for (conversation, count) in &told {
                    sub.execute(params![i(device), conversation, i(*count)]).map_err(backend)?;
                }
                conn.prepare_cached("DELETE FROM missed WHERE device_id = ?1 AND count <= 0")
                    .and_then(|mut s| s.execute(params![i(device)]))
                    .map_err(backend)?;
                Ok(())
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
                conn.execute("DELETE FROM sent_ids WHERE created_at < ?1", params![i(cutoff)])
                    .map_err(backend)?;
                conn.execute("DELETE FROM links WHERE expires_at <= ?1", params![i(now)])
                    .map_err(backend)?;
                conn.execute(
                    "DELETE FROM link_chunks WHERE link_id NOT IN (SELECT id FROM links)",
                    [],
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
