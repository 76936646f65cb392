//! Safety (the operations of [`SafetyStore`]): franking keys, reports, blocks and the
//! entries they withhold, flags and signals.

use super::*;

#[async_trait]
impl SafetyStore for PgStore {
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

    async fn count_attempt(&self, source: &str, since: Millis, now: Millis) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("DELETE FROM attempts WHERE at < $1")
            .bind(i(since))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO attempts (source, at) VALUES ($1, $2)")
            .bind(source)
            .bind(i(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE source = $1 AND at >= $2")
                .bind(source)
                .bind(i(since))
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(u(n))
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
}
