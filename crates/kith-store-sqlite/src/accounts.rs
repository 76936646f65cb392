//! Accounts and devices: creation, authentication records, token rotation, suspension (the
//! operations of [`AccountStore`]) and the business directory.

use super::*;
use kith_store::sql::ACCOUNT_INFO;

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, a: NewAccount) -> StoreResult<DeviceId> {
        self.inner
            .writer
            .write(move |conn| {
                let (display_name, description) = a.profile.clone().unzip();
                let inserted = conn.execute(
                    "INSERT INTO accounts
                     (username, kind, created_at, display_name, description, account_key,
                      recovery_key, recovery_binding)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        a.username,
                        i64::from(account_kind_code(a.kind)),
                        i(a.now),
                        display_name,
                        description,
                        a.account_key,
                        a.recovery_key,
                        a.recovery_binding
                    ],
                );
                match inserted {
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::UsernameTaken),
                    other => other.map_err(backend)?,
                };
                let account = conn.last_insert_rowid();
                conn.execute(
                    "INSERT INTO devices (account_id, credential_key, token_hash, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![account, a.credential_key, a.token_hash.to_vec(), i(a.now)],
                )
                .map_err(backend)?;
                let device = conn.last_insert_rowid();
                let mut kp = conn
                    .prepare_cached("INSERT INTO key_packages (device_id, data) VALUES (?1, ?2)")
                    .map_err(backend)?;
                for k in &a.key_packages {
                    kp.execute(params![device, k]).map_err(backend)?;
                }
                if let Some(last) = &a.last_resort {
                    conn.execute(
                        "INSERT INTO last_resort_key_packages (device_id, data) VALUES (?1, ?2)",
                        params![device, last],
                    )
                    .map_err(backend)?;
                }
                Ok(u(device))
            })
            .await
    }

    async fn create_link(&self, link: NewLink) -> StoreResult<()> {
        self.inner.writer.write(move |conn| crate::links::create_link(conn, &link)).await
    }

    async fn link(&self, id: &str) -> StoreResult<Option<LinkRecord>> {
        let id = id.to_string();
        self.read(move |conn| crate::links::read_link(conn, &id)).await
    }

    async fn join_link(
        &self,
        id: &str,
        pake: Vec<u8>,
        request: Vec<u8>,
        now: Millis,
    ) -> StoreResult<bool> {
        let id = id.to_string();
        self.inner
            .writer
            .write(move |conn| {
                crate::links::join_link(conn, &id, &pake, &request, now).map_err(backend)
            })
            .await
    }

    async fn approve_link(&self, id: &str, device: LinkedDevice) -> StoreResult<LinkApproval> {
        let id = id.to_string();
        self.inner.writer.write(move |conn| crate::links::approve_link(conn, &id, &device)).await
    }

    async fn answer_link(&self, id: &str, key_packages: Vec<u8>) -> StoreResult<bool> {
        let id = id.to_string();
        self.inner
            .writer
            .write(move |conn| crate::links::answer_link(conn, &id, &key_packages).map_err(backend))
            .await
    }

    async fn delete_link(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.inner
            .writer
            .write(move |conn| {
                conn.execute("DELETE FROM links WHERE id = ?1", params![id]).map_err(backend)?;
                conn.execute("DELETE FROM link_chunks WHERE link_id = ?1", params![id])
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn put_link_chunk(
        &self,
        id: &str,
        n: u32,
        total: u32,
        data: Vec<u8>,
        now: Millis,
    ) -> StoreResult<bool> {
        let id = id.to_string();
        self.inner
            .writer
            .write(move |conn| {
                let open: bool = conn
                    .prepare_cached(
                        "SELECT 1 FROM links
                         WHERE id = ?1 AND approved_device IS NOT NULL AND expires_at > ?2",
                    )
                    .and_then(|mut q| q.exists(params![id, i(now)]))
                    .map_err(backend)?;
                if open {
                    conn.execute(
                        "INSERT OR REPLACE INTO link_chunks (link_id, n, total, data)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![id, n, total, data],
                    )
                    .map_err(backend)?;
                }
                Ok(open)
            })
            .await
    }

    async fn link_chunk(&self, id: &str, n: u32) -> StoreResult<Option<(u32, Vec<u8>)>> {
        let id = id.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT total, data FROM link_chunks WHERE link_id = ?1 AND n = ?2",
            )?
            .query_row(params![id, n], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
        })
        .await
    }

    async fn remove_device(&self, device: DeviceId, now: Millis) -> StoreResult<()> {
        self.inner.writer.write(move |conn| crate::links::remove_device(conn, device, now)).await
    }

    async fn set_recovery_key(&self, username: &str, set: RecoveryKeySet) -> StoreResult<bool> {
        let username = username.to_string();
        self.inner
            .writer
            .write(move |conn| crate::links::set_recovery_key(conn, &username, &set))
            .await
    }

    async fn recover_account(&self, recovery: AccountRecovery) -> StoreResult<RecoveryOutcome> {
        self.inner.writer.write(move |conn| crate::links::recover_account(conn, &recovery)).await
    }

    async fn device_auth(&self, device: DeviceId) -> StoreResult<Option<DeviceAuth>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT d.id, a.username, a.kind, d.token_hash, d.credential_key, a.suspend_reason,
                        a.verified
                 FROM devices d JOIN accounts a ON a.id = d.account_id
                 WHERE d.id = ?1 AND d.removed_at IS NULL",
            )?
            .query_row(params![i(device)], |r| {
                Ok(DeviceAuth {
                    device_id: u(r.get(0)?),
                    username: r.get(1)?,
                    kind: account_kind_from_code(r.get(2)?),
                    token_hash: hash32(r.get(3)?)?,
                    credential_key: r.get(4)?,
                    suspended: r.get(5)?,
                    verified: r.get(6)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn account_devices(&self, username: &str) -> StoreResult<Option<AccountDevices>> {
        let username = username.to_string();
        self.read(move |conn| {
            type Row = (
                i64,
                i64,
                Option<Vec<u8>>,
                Option<Vec<u8>>,
                Option<Vec<u8>>,
                Option<i64>,
                Option<i64>,
            );
            let Some((account, kind, account_key, recovery_key, recovery_binding, set_by, set_at)) =
                conn.prepare_cached(
                    "SELECT id, kind, account_key, recovery_key, recovery_binding, recovery_set_by,
                            recovery_set_at
                     FROM accounts WHERE username = ?1",
                )?
                .query_row(params![username], |r| {
                    Ok::<Row, _>((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let all = conn
                .prepare_cached(
                    "SELECT id, credential_key, created_at, name, last_seen,
                            removed_at IS NOT NULL FROM devices
                     WHERE account_id = ?1 ORDER BY id",
                )?
                .query_map(params![account], |r| {
                    Ok((
                        DeviceRecord {
                            device_id: u(r.get(0)?),
                            credential_key: r.get(1)?,
                            created_at: u(r.get(2)?),
                            name: r.get(3)?,
                            last_seen: r.get::<_, Option<i64>>(4)?.map(u),
                        },
                        r.get::<_, bool>(5)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let (removed, devices): (Vec<_>, Vec<_>) = all.into_iter().partition(|d| d.1);
            let devices = devices.into_iter().map(|d| d.0).collect();
            let removed = removed.into_iter().map(|d| d.0).collect();
            let key_changes = conn
                .prepare_cached(
                    "SELECT statement FROM key_changes WHERE account_id = ?1 ORDER BY n",
                )?
                .query_map(params![account], |r| r.get(0))?
                .collect::<Result<Vec<Vec<u8>>, _>>()?;
            Ok(Some(AccountDevices {
                username,
                kind: account_kind_from_code(kind),
                devices,
                account_key,
                recovery_key,
                recovery_binding,
                recovery_set_by: set_by.zip(set_at).map(|(d, at)| (u(d), u(at))),
                removed,
                key_changes,
            }))
        })
        .await
    }

    async fn account_info(&self, username: &str) -> StoreResult<Option<AccountInfo>> {
        let username = username.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!("{ACCOUNT_INFO} WHERE a.username = ?1"))?
                .query_row(params![username], account_info_row)
                .optional()
        })
        .await
    }

    async fn set_account_key(&self, username: &str, key: Vec<u8>) -> StoreResult<bool> {
        let username = username.to_string();
        self.inner
            .writer
            .write(move |conn| {
                conn.execute(
                    "UPDATE accounts SET account_key = ?2
                     WHERE username = ?1 AND account_key IS NULL",
                    params![username, key],
                )
                .map_err(backend)?;
                let held: Option<Option<Vec<u8>>> = conn
                    .query_row(
                        "SELECT account_key FROM accounts WHERE username = ?1",
                        params![username],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                match held {
                    None => Err(StoreError::UnknownUser),
                    Some(held) => Ok(held.as_deref() == Some(key.as_slice())),
                }
            })
            .await
    }

    async fn set_device_name(&self, device: DeviceId, name: Option<String>) -> StoreResult<()> {
        self.inner
            .writer
            .write(move |conn| {
                let n = conn
                    .execute("UPDATE devices SET name = ?2 WHERE id = ?1", params![i(device), name])
                    .map_err(backend)?;
                if n == 0 { Err(StoreError::UnknownDevice) } else { Ok(()) }
            })
            .await
    }

    async fn note_seen(&self, device: DeviceId, at: Millis) -> StoreResult<()> {
        self.inner
            .writer
            .write(move |conn| {
                conn.execute(
                    "UPDATE devices SET last_seen = ?2
                     WHERE id = ?1 AND (last_seen IS NULL OR last_seen < ?2)",
                    params![i(device), i(at)],
                )
                .map(|_| ())
                .map_err(backend)
            })
            .await
    }

    async fn set_token_hash(&self, device: DeviceId, token_hash: [u8; 32]) -> StoreResult<()> {
        self.inner
            .writer
            .write(move |conn| {
                let n = conn
                    .execute(
                        "UPDATE devices SET token_hash = ?2 WHERE id = ?1",
                        params![i(device), token_hash.to_vec()],
                    )
                    .map_err(backend)?;
                if n == 0 { Err(StoreError::UnknownDevice) } else { Ok(()) }
            })
            .await
    }

    async fn set_suspended(&self, username: &str, reason: Option<String>) -> StoreResult<()> {
        let username = username.to_string();
        self.inner
            .writer
            .write(move |conn| {
                let n = conn
                    .execute(
                        "UPDATE accounts SET suspend_reason = ?2 WHERE username = ?1",
                        params![username, reason],
                    )
                    .map_err(backend)?;
                if n == 0 { Err(StoreError::UnknownUser) } else { Ok(()) }
            })
            .await
    }

    async fn set_verified(&self, username: &str, verified: bool) -> StoreResult<()> {
        let username = username.to_string();
        self.inner
            .writer
            .write(move |conn| {
                let n = conn
                    .execute(
                        "UPDATE accounts SET verified = ?2 WHERE username = ?1 AND kind = 1",
                        params![username, verified],
                    )
                    .map_err(backend)?;
                if n == 0 { Err(StoreError::UnknownUser) } else { Ok(()) }
            })
            .await
    }

    async fn businesses_among(&self, usernames: &[String]) -> StoreResult<Vec<String>> {
        let names = usernames.to_vec();
        self.read(move |conn| {
            // In-process: one prepared lookup per name costs what one query would.
            let mut q =
                conn.prepare_cached("SELECT 1 FROM accounts WHERE username = ?1 AND kind = 1")?;
            let mut out = Vec::new();
            for name in names {
                if q.exists(params![name])? {
                    out.push(name);
                }
            }
            out.sort();
            out.dedup();
            Ok(out)
        })
        .await
    }

    async fn search_businesses(&self, query: &str, limit: u32) -> StoreResult<Vec<AccountInfo>> {
        let query = query.to_lowercase();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "{ACCOUNT_INFO} WHERE a.kind = 1 AND (
                    instr(lower(a.username), ?1) > 0
                    OR instr(lower(coalesce(a.display_name, '')), ?1) > 0
                    OR instr(lower(coalesce(a.description, '')), ?1) > 0)
                 ORDER BY a.verified DESC, a.username LIMIT ?2"
            ))?
            .query_map(params![query, i64::from(limit)], account_info_row)?
            .collect()
        })
        .await
    }
}
