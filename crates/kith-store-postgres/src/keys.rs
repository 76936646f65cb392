//! KeyPackages (the operations of [`KeyPackageStore`]): uploads, claims — the oldest
//! one-time KeyPackage first, the last-resort one when none is left — and which device owns
//! a credential key.

use super::*;

#[async_trait]
impl KeyPackageStore for PgStore {
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

    async fn drop_key_packages(&self, device: DeviceId) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM key_packages WHERE device_id = $1")
            .bind(i(device))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        one_time: bool,
        except: Option<DeviceId>,
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
        let devices: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM devices
             WHERE account_id = $1 AND id != $2 AND removed_at IS NULL ORDER BY id",
        )
        .bind(account)
        .bind(except.map(i).unwrap_or(-1))
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

    async fn devices_by_credential_keys(&self, keys: &[Vec<u8>]) -> StoreResult<Vec<KeyOwner>> {
        let rows: Vec<(Vec<u8>, i64, String, bool)> = sqlx::query_as(
            "SELECT DISTINCT ON (d.credential_key) d.credential_key, d.id, a.username,
                    d.removed_at IS NOT NULL
             FROM devices d JOIN accounts a ON a.id = d.account_id
             WHERE d.credential_key = ANY($1) ORDER BY d.credential_key, d.id",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(credential_key, id, username, removed)| KeyOwner {
                credential_key,
                device_id: u(id),
                username,
                removed,
            })
            .collect())
    }
}
