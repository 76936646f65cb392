//! Accounts and devices: creation, authentication records, token rotation, suspension (the
//! operations of [`AccountStore`]) and the business directory.

use super::*;
use kith_store::sql::ACCOUNT_INFO;

#[async_trait]
impl AccountStore for PgStore {
    async fn create_link(&self, link: NewLink) -> StoreResult<()> {
        crate::links::create_link(&self.pool, &link).await
    }

    async fn link(&self, id: &str) -> StoreResult<Option<LinkRecord>> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        crate::links::read_link(&mut conn, id, false).await
    }

    async fn join_link(
        &self,
        id: &str,
        pake: Vec<u8>,
        request: Vec<u8>,
        now: Millis,
    ) -> StoreResult<bool> {
        crate::links::join_link(&self.pool, id, &pake, &request, now).await
    }

    async fn approve_link(&self, id: &str, device: LinkedDevice) -> StoreResult<LinkApproval> {
        crate::links::approve_link(&self.pool, id, &device).await
    }

    async fn answer_link(&self, id: &str, key_packages: Vec<u8>) -> StoreResult<bool> {
        crate::links::answer_link(&self.pool, id, &key_packages).await
    }

    async fn remove_device(&self, device: DeviceId, now: Millis) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        crate::links::remove_device(&mut tx, &self.announce, device, now).await?;
        tx.commit().await.map_err(backend)
    }

    async fn set_recovery_key(&self, username: &str, set: RecoveryKeySet) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let account = crate::links::lock_account(&mut tx, username).await?;
        let (by, at) = set.set_by.map(|(d, at)| (i(d), i(at))).unzip();
        let n = sqlx::query(
            "UPDATE accounts SET recovery_key = $2, recovery_binding = $4, recovery_set_by = $5,
                                 recovery_set_at = $6
             WHERE id = $1 AND recovery_key IS NOT DISTINCT FROM $3",
        )
        .bind(account)
        .bind(&set.new)
        .bind(&set.expected)
        .bind(&set.binding)
        .bind(by)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        if let Some(change) = &set.change {
            crate::links::add_key_change(&mut tx, account, change).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn recover_account(&self, recovery: AccountRecovery) -> StoreResult<RecoveryOutcome> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let outcome = crate::links::recover_account(&mut tx, &self.announce, &recovery).await?;
        if matches!(outcome, RecoveryOutcome::Recovered { .. }) {
            tx.commit().await.map_err(backend)?;
        }
        Ok(outcome)
    }

    async fn delete_link(&self, id: &str) -> StoreResult<()> {
        for sql in ["DELETE FROM links WHERE id = $1", "DELETE FROM link_chunks WHERE link_id = $1"]
        {
            sqlx::query(sql).bind(id).execute(&self.pool).await.map_err(backend)?;
        }
        Ok(())
    }

    async fn put_link_chunk(
        &self,
        id: &str,
        n: u32,
        total: u32,
        data: Vec<u8>,
        now: Millis,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO link_chunks (link_id, n, total, data)
             SELECT $1, $2, $3, $4 WHERE EXISTS
               (SELECT 1 FROM links WHERE id = $1 AND approved_device IS NOT NULL AND expires_at > $5)
             ON CONFLICT (link_id, n) DO UPDATE SET total = EXCLUDED.total, data = EXCLUDED.data",
        )
        .bind(id)
        .bind(i64::from(n))
        .bind(i64::from(total))
        .bind(data)
        .bind(i(now))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn link_chunk(&self, id: &str, n: u32) -> StoreResult<Option<(u32, Vec<u8>)>> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT total, data FROM link_chunks WHERE link_id = $1 AND n = $2")
                .bind(id)
                .bind(i64::from(n))
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        Ok(row.map(|(t, d)| (u32::try_from(t).unwrap_or(0), d)))
    }

    async fn create_account(&self, a: NewAccount) -> StoreResult<DeviceId> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let account: i64 = match sqlx::query_scalar(
            "INSERT INTO accounts
             (username, kind, created_at, display_name, description, account_key, recovery_key,
              recovery_binding)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&a.username)
        .bind(account_kind_code(a.kind))
        .bind(i(a.now))
        .bind(a.profile.as_ref().map(|p| p.0.clone()))
        .bind(a.profile.as_ref().map(|p| p.1.clone()))
        .bind(&a.account_key)
        .bind(&a.recovery_key)
        .bind(&a.recovery_binding)
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
        if let Some(last) = &a.last_resort {
            sqlx::query("INSERT INTO last_resort_key_packages (device_id, data) VALUES ($1, $2)")
                .bind(device)
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(u(device))
    }

    async fn device_auth(&self, device: DeviceId) -> StoreResult<Option<DeviceAuth>> {
        let row = sqlx::query(
            "SELECT d.id, a.username, a.kind, d.token_hash, d.credential_key, a.suspend_reason,
                    a.verified
             FROM devices d JOIN accounts a ON a.id = d.account_id
             WHERE d.id = $1 AND d.removed_at IS NULL",
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
        type Row =
            (i64, i16, Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>, Option<i64>);
        let account: Option<Row> = sqlx::query_as(
            "SELECT id, kind, account_key, recovery_key, recovery_binding, recovery_set_by,
                    recovery_set_at
             FROM accounts WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some((id, kind, account_key, recovery_key, recovery_binding, set_by, set_at)) = account
        else {
            return Ok(None);
        };
        let key_changes: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT statement FROM key_changes WHERE account_id = $1 ORDER BY n",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        type Device = (i64, Vec<u8>, i64, Option<String>, Option<i64>, bool);
        let rows: Vec<Device> = sqlx::query_as(
            "SELECT id, credential_key, created_at, name, last_seen, removed_at IS NOT NULL
             FROM devices WHERE account_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let (removed, devices): (Vec<_>, Vec<_>) = rows.into_iter().partition(|d| d.5);
        let record = |(id, key, at, name, seen, _): Device| DeviceRecord {
            device_id: u(id),
            credential_key: key,
            created_at: u(at),
            name,
            last_seen: seen.map(u),
        };
        Ok(Some(AccountDevices {
            username: username.to_string(),
            kind: account_kind_from_code(i64::from(kind)),
            devices: devices.into_iter().map(record).collect(),
            account_key,
            recovery_key,
            recovery_binding,
            recovery_set_by: set_by.zip(set_at).map(|(d, at)| (u(d), u(at))),
            removed: removed.into_iter().map(record).collect(),
            key_changes,
        }))
    }

    async fn account_info(&self, username: &str) -> StoreResult<Option<AccountInfo>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{ACCOUNT_INFO} WHERE a.username = $1")))
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_info_row).transpose().map_err(backend)
    }

    async fn set_account_key(&self, username: &str, key: Vec<u8>) -> StoreResult<bool> {
        sqlx::query(
            "UPDATE accounts SET account_key = $2 WHERE username = $1 AND account_key IS NULL",
        )
        .bind(username)
        .bind(&key)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        let held: Option<(Option<Vec<u8>>,)> =
            sqlx::query_as("SELECT account_key FROM accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        match held {
            None => Err(StoreError::UnknownUser),
            Some((held,)) => Ok(held.as_deref() == Some(key.as_slice())),
        }
    }

    async fn set_device_name(&self, device: DeviceId, name: Option<String>) -> StoreResult<()> {
        let n = sqlx::query("UPDATE devices SET name = $2 WHERE id = $1")
            .bind(i(device))
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected();
        if n == 0 { Err(StoreError::UnknownDevice) } else { Ok(()) }
    }

    async fn note_seen(&self, device: DeviceId, at: Millis) -> StoreResult<()> {
        sqlx::query(
            "UPDATE devices SET last_seen = $2
             WHERE id = $1 AND (last_seen IS NULL OR last_seen < $2)",
        )
        .bind(i(device))
        .bind(i(at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
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
        announce_access_changed(&mut tx, &self.announce, device).await.map_err(backend)?;
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
            announce_account_shut(&mut tx, &self.announce, username).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
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

    async fn businesses_among(&self, usernames: &[String]) -> StoreResult<Vec<String>> {
        if usernames.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "SELECT username FROM accounts WHERE kind = 1 AND username = ANY($1) ORDER BY username",
        )
        .bind(usernames)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)
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
}
