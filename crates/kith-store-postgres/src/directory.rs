//! The key-transparency directory (the operations of [`DirectoryStore`]): `akd`'s records and
//! value states, the directory's keys, the roots it published, the publisher's lease and the
//! accounts waiting for the next publish.

use super::*;

type StateRow = (Vec<u8>, i64, i64, Vec<u8>);
type RootRow = (i64, Vec<u8>, Vec<u8>, i64);

fn state((label, epoch, version, data): StateRow) -> KtState {
    KtState { label, epoch: u(epoch), version: u(version), data }
}

fn root((epoch, root, signature, published_at): RootRow) -> KtRootRecord {
    KtRootRecord { epoch: u(epoch), root, signature, published_at: u(published_at) }
}

#[async_trait]
impl DirectoryStore for PgStore {
    async fn kt_records(&self, ids: &[Vec<u8>]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        sqlx::query_as("SELECT id, data FROM kt_records WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
    }

    async fn kt_write(&self, write: KtWrite) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if let Some(epoch) = write.head {
            let head: Option<i64> =
                sqlx::query_scalar("SELECT epoch FROM kt_head WHERE one = 1 FOR UPDATE")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
            if head.is_some_and(|h| u(h) + 1 != epoch) {
                return Err(StoreError::StaleEpoch);
            }
            // Two first writes race on the insert: the loser's conflict is a refusal too.
            let moved = sqlx::query(
                "INSERT INTO kt_head (one, epoch) VALUES (1, $1)
                 ON CONFLICT (one) DO UPDATE SET epoch = excluded.epoch
                 WHERE kt_head.epoch + 1 = excluded.epoch",
            )
            .bind(i(epoch))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            if moved.rows_affected() != 1 {
                return Err(StoreError::StaleEpoch);
            }
        }
        let (ids, data): (Vec<Vec<u8>>, Vec<Vec<u8>>) = write.records.into_iter().unzip();
        sqlx::query(
            "INSERT INTO kt_records (id, data) SELECT * FROM UNNEST($1::bytea[], $2::bytea[])
             ON CONFLICT (id) DO UPDATE SET data = excluded.data",
        )
        .bind(&ids)
        .bind(&data)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let mut labels = Vec::with_capacity(write.states.len());
        let mut epochs = Vec::with_capacity(write.states.len());
        let mut versions = Vec::with_capacity(write.states.len());
        let mut datas = Vec::with_capacity(write.states.len());
        for s in write.states {
            labels.push(s.label);
            epochs.push(i(s.epoch));
            versions.push(i(s.version));
            datas.push(s.data);
        }
        sqlx::query(
            "INSERT INTO kt_states (label, epoch, version, data)
             SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[])
             ON CONFLICT (label, epoch) DO UPDATE
             SET version = excluded.version, data = excluded.data",
        )
        .bind(&labels)
        .bind(&epochs)
        .bind(&versions)
        .bind(&datas)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn kt_states(&self, label: &[u8]) -> StoreResult<Vec<KtState>> {
        let rows: Vec<StateRow> = sqlx::query_as(
            "SELECT label, epoch, version, data FROM kt_states WHERE label = $1 ORDER BY epoch",
        )
        .bind(label)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(state).collect())
    }

    async fn kt_latest_states(
        &self,
        labels: &[Vec<u8>],
        max_epoch: Option<u64>,
    ) -> StoreResult<Vec<KtState>> {
        let rows: Vec<StateRow> = sqlx::query_as(
            "SELECT DISTINCT ON (label) label, epoch, version, data FROM kt_states
             WHERE label = ANY($1) AND epoch <= $2 ORDER BY label, epoch DESC",
        )
        .bind(labels)
        .bind(i(max_epoch.unwrap_or(u64::MAX >> 1)))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(state).collect())
    }

    async fn kt_keys(&self, made: (Vec<u8>, Vec<u8>)) -> StoreResult<(SecretBytes, SecretBytes)> {
        sqlx::query(
            "INSERT INTO kt_keys (one, vrf, signing) VALUES (1, $1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&made.0)
        .bind(&made.1)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        let (vrf, signing): (Vec<u8>, Vec<u8>) =
            sqlx::query_as("SELECT vrf, signing FROM kt_keys WHERE one = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        Ok((SecretBytes::new(vrf), SecretBytes::new(signing)))
    }

    async fn add_kt_root(&self, r: KtRootRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO kt_roots (epoch, root, signature, published_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(i(r.epoch))
        .bind(&r.root)
        .bind(&r.signature)
        .bind(i(r.published_at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn kt_roots(&self, from: u64, limit: u32) -> StoreResult<Vec<KtRootRecord>> {
        let rows: Vec<RootRow> = sqlx::query_as(
            "SELECT epoch, root, signature, published_at FROM kt_roots
             WHERE epoch >= $1 ORDER BY epoch LIMIT $2",
        )
        .bind(i(from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(root).collect())
    }

    async fn kt_latest_root(&self) -> StoreResult<Option<KtRootRecord>> {
        let row: Option<RootRow> = sqlx::query_as(
            "SELECT epoch, root, signature, published_at FROM kt_roots
             ORDER BY epoch DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(row.map(root))
    }

    async fn kt_lead(&self, node: &str, now: Millis, until: Millis) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO kt_lease (one, node, until) VALUES (1, $1, $3)
             ON CONFLICT (one) DO UPDATE SET node = excluded.node, until = excluded.until
             WHERE kt_lease.node = excluded.node OR kt_lease.until < $2",
        )
        .bind(node)
        .bind(i(now))
        .bind(i(until))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn kt_take_dirty(&self, limit: u32) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "DELETE FROM kt_dirty WHERE username IN
                (SELECT username FROM kt_dirty ORDER BY urgent DESC LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING username",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)
    }

    async fn kt_mark(&self, usernames: &[String]) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO kt_dirty (username, urgent)
             SELECT DISTINCT u, TRUE FROM UNNEST($1::text[]) AS u
             ON CONFLICT (username) DO UPDATE SET urgent = TRUE",
        )
        .bind(usernames)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn kt_mark_all(&self) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO kt_dirty (username, urgent) SELECT username, FALSE FROM accounts
             ON CONFLICT DO NOTHING",
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}
