//! The key-transparency directory (the operations of [`DirectoryStore`]): `akd`'s records and
//! value states, the directory's keys, the roots it published, the publisher's lease and the
//! accounts waiting for the next publish.

use super::*;

fn state(r: &rusqlite::Row<'_>) -> rusqlite::Result<KtState> {
    Ok(KtState { label: r.get(0)?, epoch: u(r.get(1)?), version: u(r.get(2)?), data: r.get(3)? })
}

fn root(r: &rusqlite::Row<'_>) -> rusqlite::Result<KtRootRecord> {
    Ok(KtRootRecord {
        epoch: u(r.get(0)?),
        root: r.get(1)?,
        signature: r.get(2)?,
        published_at: u(r.get(3)?),
    })
}

#[async_trait]
impl DirectoryStore for SqliteStore {
    async fn kt_records(&self, ids: &[Vec<u8>]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let ids = ids.to_vec();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT data FROM kt_records WHERE id = ?1")?;
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(data) = stmt.query_row([&id], |r| r.get(0)).optional()? {
                    found.push((id, data));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn kt_write(&self, write: KtWrite) -> StoreResult<()> {
        self.inner
            .writer
            .write(move |conn| {
                if let Some(epoch) = write.head {
                    let head: Option<i64> = conn
                        .query_row("SELECT epoch FROM kt_head WHERE one = 1", [], |r| r.get(0))
                        .optional()
                        .map_err(backend)?;
                    if head.is_some_and(|h| u(h) + 1 != epoch) {
                        return Err(StoreError::StaleEpoch);
                    }
                    conn.execute(
                        "INSERT INTO kt_head (one, epoch) VALUES (1, ?1)
                         ON CONFLICT (one) DO UPDATE SET epoch = excluded.epoch",
                        [i(epoch)],
                    )
                    .map_err(backend)?;
                }
                let mut put = conn
                    .prepare_cached("INSERT OR REPLACE INTO kt_records (id, data) VALUES (?1, ?2)")
                    .map_err(backend)?;
                for (id, data) in &write.records {
                    put.execute(params![id, data]).map_err(backend)?;
                }
                let mut put = conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO kt_states (label, epoch, version, data)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(backend)?;
                for s in &write.states {
                    put.execute(params![s.label, i(s.epoch), i(s.version), s.data])
                        .map_err(backend)?;
                }
                Ok(())
            })
            .await
    }

    async fn kt_states(&self, label: &[u8]) -> StoreResult<Vec<KtState>> {
        let label = label.to_vec();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT label, epoch, version, data FROM kt_states WHERE label = ?1 ORDER BY epoch",
            )?
            .query_map([label], state)?
            .collect()
        })
        .await
    }

    async fn kt_latest_states(
        &self,
        labels: &[Vec<u8>],
        max_epoch: Option<u64>,
    ) -> StoreResult<Vec<KtState>> {
        let labels = labels.to_vec();
        let max = i(max_epoch.unwrap_or(u64::MAX >> 1));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT label, epoch, version, data FROM kt_states
                 WHERE label = ?1 AND epoch <= ?2 ORDER BY epoch DESC LIMIT 1",
            )?;
            let mut found = Vec::with_capacity(labels.len());
            for label in labels {
                if let Some(s) = stmt.query_row(params![label, max], state).optional()? {
                    found.push(s);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn kt_keys(&self, made: (Vec<u8>, Vec<u8>)) -> StoreResult<(SecretBytes, SecretBytes)> {
        self.inner
            .writer
            .write(move |conn| {
                conn.execute(
                    "INSERT OR IGNORE INTO kt_keys (one, vrf, signing) VALUES (1, ?1, ?2)",
                    params![made.0, made.1],
                )
                .map_err(backend)?;
                conn.query_row("SELECT vrf, signing FROM kt_keys WHERE one = 1", [], |r| {
                    Ok((SecretBytes::new(r.get(0)?), SecretBytes::new(r.get(1)?)))
                })
                .map_err(backend)
            })
            .await
    }

    async fn add_kt_root(&self, r: KtRootRecord) -> StoreResult<()> {
        self.inner
            .writer
            .write(move |conn| {
                conn.execute(
                    "INSERT OR IGNORE INTO kt_roots (epoch, root, signature, published_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![i(r.epoch), r.root, r.signature, i(r.published_at)],
                )
                .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn kt_roots(&self, from: u64, limit: u32) -> StoreResult<Vec<KtRootRecord>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT epoch, root, signature, published_at FROM kt_roots
                 WHERE epoch >= ?1 ORDER BY epoch LIMIT ?2",
            )?
            .query_map(params![i(from), i64::from(limit)], root)?
            .collect()
        })
        .await
    }

    async fn kt_latest_root(&self) -> StoreResult<Option<KtRootRecord>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT epoch, root, signature, published_at FROM kt_roots
                 ORDER BY epoch DESC LIMIT 1",
            )?
            .query_row([], root)
            .optional()
        })
        .await
    }

    async fn kt_lead(&self, node: &str, now: Millis, until: Millis) -> StoreResult<bool> {
        let node = node.to_string();
        self.inner
            .writer
            .write(move |conn| {
                let changed = conn
                    .execute(
                        "INSERT INTO kt_lease (one, node, until) VALUES (1, ?1, ?3)
                         ON CONFLICT (one) DO UPDATE SET node = excluded.node, until = excluded.until
                         WHERE kt_lease.node = excluded.node OR kt_lease.until < ?2",
                        params![node, i(now), i(until)],
                    )
                    .map_err(backend)?;
                Ok(changed == 1)
            })
            .await
    }

    async fn kt_take_dirty(&self, limit: u32) -> StoreResult<Vec<String>> {
        self.inner
            .writer
            .write(move |conn| {
                let names: Vec<String> = conn
                    .prepare_cached("SELECT username FROM kt_dirty ORDER BY urgent DESC LIMIT ?1")
                    .and_then(|mut s| s.query_map([i64::from(limit)], |r| r.get(0))?.collect())
                    .map_err(backend)?;
                let mut del = conn
                    .prepare_cached("DELETE FROM kt_dirty WHERE username = ?1")
                    .map_err(backend)?;
                for n in &names {
                    del.execute([n]).map_err(backend)?;
                }
                Ok(names)
            })
            .await
    }

    async fn kt_mark(&self, usernames: &[String]) -> StoreResult<()> {
        let names = usernames.to_vec();
        self.inner
            .writer
            .write(move |conn| {
                let mut put = conn
                    .prepare_cached(
                        "INSERT INTO kt_dirty (username, urgent) VALUES (?1, 1)
                         ON CONFLICT (username) DO UPDATE SET urgent = 1",
                    )
                    .map_err(backend)?;
                for n in &names {
                    put.execute([n]).map_err(backend)?;
                }
                Ok(())
            })
            .await
    }

    async fn kt_mark_all(&self) -> StoreResult<()> {
        self.inner
            .writer
            .write(|conn| {
                conn.execute(
                    "INSERT OR IGNORE INTO kt_dirty (username, urgent) SELECT username, 0 FROM accounts",
                    [],
                )
                .map_err(backend)?;
                Ok(())
            })
            .await
    }
}
