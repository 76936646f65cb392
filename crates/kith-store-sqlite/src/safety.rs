//! Safety (the operations of [`SafetyStore`]): franking keys, reports, blocks and the
//! entries they withhold, flags and signals.

use super::*;

#[async_trait]
impl SafetyStore for SqliteStore {
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

    async fn count_attempt(&self, source: &str, since: Millis, now: Millis) -> StoreResult<u64> {
        let source = source.to_string();
        self.inner
            .writer
            .write(move |conn| {
                let run = || -> rusqlite::Result<i64> {
                    conn.prepare_cached("DELETE FROM attempts WHERE at < ?1")?
                        .execute(params![i(since)])?;
                    conn.prepare_cached("INSERT INTO attempts (source, at) VALUES (?1, ?2)")?
                        .execute(params![source, i(now)])?;
                    conn.prepare_cached(
                        "SELECT COUNT(*) FROM attempts WHERE source = ?1 AND at >= ?2",
                    )?
                    .query_row(params![source, i(since)], |r| r.get(0))
                };
                run().map(u).map_err(backend)
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
}

pub(crate) fn account_is_known(conn: &Connection, username: &str) -> Result<bool, rusqlite::Error> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM accounts WHERE username = ?1")?
        .query_row(params![username], |_| Ok(()))
        .optional()?
        .is_some())
}
