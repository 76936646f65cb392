//! KeyPackages (the operations of [`KeyPackageStore`]): uploads, claims — the oldest
//! one-time KeyPackage first, the last-resort one when none is left — and which device owns
//! a credential key.

use super::*;

#[async_trait]
impl KeyPackageStore for SqliteStore {
    async fn add_key_packages(
        &self,
        device: DeviceId,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> StoreResult<u64> {
        self.inner
            .writer
            .write(move |conn| {
                let exists: Option<i64> = conn
                    .query_row("SELECT id FROM devices WHERE id = ?1", params![i(device)], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(backend)?;
                if exists.is_none() {
                    return Err(StoreError::UnknownDevice);
                }
                let mut kp = conn
                    .prepare_cached("INSERT INTO key_packages (device_id, data) VALUES (?1, ?2)")
                    .map_err(backend)?;
                for k in &key_packages {
                    kp.execute(params![i(device), k]).map_err(backend)?;
                }
                if let Some(last) = last_resort {
                    conn.execute(
                        "INSERT INTO last_resort_key_packages (device_id, data) VALUES (?1, ?2)
                         ON CONFLICT (device_id) DO UPDATE SET data = excluded.data",
                        params![i(device), last],
                    )
                    .map_err(backend)?;
                }
                conn.query_row(
                    "SELECT COUNT(*) FROM key_packages WHERE device_id = ?1",
                    params![i(device)],
                    |r| r.get::<_, i64>(0),
                )
                .map(u)
                .map_err(backend)
            })
            .await
    }

    async fn key_packages_remaining(&self, device: DeviceId) -> StoreResult<u64> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM key_packages WHERE device_id = ?1",
                params![i(device)],
                |r| r.get::<_, i64>(0),
            )
            .map(u)
        })
        .await
    }

    async fn drop_key_packages(&self, device: DeviceId) -> StoreResult<u64> {
        self.inner
            .writer
            .write(move |conn| {
                conn.execute("DELETE FROM key_packages WHERE device_id = ?1", params![i(device)])
                    .map(|n| n as u64)
                    .map_err(backend)
            })
            .await
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        one_time: bool,
        except: Option<DeviceId>,
    ) -> StoreResult<Vec<ClaimedKeyPackage>> {
        let username = username.to_string();
        self.inner
            .writer
            .write(move |conn| {
                let account: Option<i64> = conn
                    .query_row(
                        "SELECT id FROM accounts WHERE username = ?1",
                        params![username],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                let Some(account) = account else { return Err(StoreError::UnknownUser) };
                let devices = conn
                    .prepare_cached(
                        "SELECT id FROM devices
                         WHERE account_id = ?1 AND id != ?2 AND removed_at IS NULL ORDER BY id",
                    )
                    .map_err(backend)?
                    .query_map(params![account, except.map(i).unwrap_or(-1)], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map_err(backend)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                let mut out = Vec::new();
                for d in devices {
                    if !one_time {
                        out.extend(last_resort(conn, d)?);
                        continue;
                    }
                    let taken = conn
                        .prepare_cached(
                            "DELETE FROM key_packages WHERE id =
                               (SELECT id FROM key_packages WHERE device_id = ?1 ORDER BY id LIMIT 1)
                             RETURNING data",
                        )
                        .map_err(backend)?
                        .query_row(params![d], |r| r.get::<_, Vec<u8>>(0))
                        .optional()
                        .map_err(backend)?;
                    let claimed = match taken {
                        Some(data) => Some(ClaimedKeyPackage { device_id: u(d), data, last_resort: false }),
                        None => last_resort(conn, d)?,
                    };
                    out.extend(claimed);
                }
                Ok(out)
            })
            .await
    }

    async fn devices_by_credential_keys(&self, keys: &[Vec<u8>]) -> StoreResult<Vec<KeyOwner>> {
        let keys = keys.to_vec();
        self.read(move |conn| {
            let mut q = conn.prepare_cached(
                "SELECT d.id, a.username, d.removed_at IS NOT NULL
                 FROM devices d JOIN accounts a ON a.id = d.account_id
                 WHERE d.credential_key = ?1 ORDER BY d.id LIMIT 1",
            )?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let found = q
                    .query_row(params![key], |r| {
                        Ok((u(r.get(0)?), r.get::<_, String>(1)?, r.get::<_, bool>(2)?))
                    })
                    .optional()?;
                if let Some((device_id, username, removed)) = found {
                    out.push(KeyOwner { credential_key: key, device_id, username, removed });
                }
            }
            Ok(out)
        })
        .await
    }
}

pub(crate) fn last_resort(
    conn: &Connection,
    device: i64,
) -> StoreResult<Option<ClaimedKeyPackage>> {
    conn.query_row(
        "SELECT data FROM last_resort_key_packages WHERE device_id = ?1",
        params![device],
        |r| r.get::<_, Vec<u8>>(0),
    )
    .optional()
    .map_err(backend)
    .map(|d| d.map(|data| ClaimedKeyPackage { device_id: u(device), data, last_resort: true }))
}
