//! Conversations (the operations of [`ConversationStore`]): creation with the Welcomes,
//! the public group state (epoch, revision, member devices) and its compare-and-swap
//! updates, routes for sending, and who has spoken where.

use super::*;

#[async_trait]
impl ConversationStore for PgStore {
    async fn create_conversation(&self, c: NewConversation) -> StoreResult<MessageId> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        match sqlx::query(
            "INSERT INTO conversations (id, created_at, epoch, group_state, poster, direct)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.conversation)
        .bind(i(c.now))
        .bind(i(c.epoch))
        .bind(&c.group_state)
        .bind(&c.poster)
        .bind(c.direct)
        .execute(&mut *tx)
        .await
        {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::ConversationExists),
            other => other.map_err(backend)?,
        };
        let mut members = c.members.clone();
        members.push(c.creator_device);
        members.sort_unstable();
        members.dedup();
        let ids: Vec<i64> = members.iter().map(|d| i(*d)).collect();
        let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if u(known) != members.len() as u64 {
            return Err(StoreError::UnknownDevice);
        }
        sqlx::query(
            "INSERT INTO conversation_members (conversation, device_id)
             SELECT $1, d FROM UNNEST($2::BIGINT[]) AS d",
        )
        .bind(&c.conversation)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if let Some(a) = &c.applied {
            note_applied(&mut tx, &c.conversation, a).await?;
        }
        let recipients = members
            .into_iter()
            .filter(|d| *d != c.creator_device && !c.withheld.contains(d))
            .collect();
        let id = insert_message(
            &mut tx,
            &self.announce,
            &NewMessage {
                conversation: c.conversation,
                sender_device: c.creator_device,
                kind: EntryKind::Welcome,
                data: c.welcome,
                recipients,
                now: c.now,
                expires_at: None,
                withheld: c.withheld,
                client_id: None,
            },
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(id.message_id)
    }

    async fn group_state(&self, conversation: &[u8]) -> StoreResult<Option<GroupState>> {
        let row: Option<(i64, Vec<u8>, i64)> =
            sqlx::query_as("SELECT epoch, group_state, revision FROM conversations WHERE id = $1")
                .bind(conversation)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        Ok(row.map(|(epoch, state, revision)| GroupState {
            epoch: u(epoch),
            state,
            revision: u(revision),
        }))
    }

    async fn update_group(&self, g: GroupUpdate) -> StoreResult<Vec<MessageId>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The row lock orders concurrent updates of one conversation, across kithd nodes too.
        let current: Option<(i64, i64)> =
            sqlx::query_as("SELECT epoch, revision FROM conversations WHERE id = $1 FOR UPDATE")
                .bind(&g.conversation)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        match current {
            None => return Err(StoreError::UnknownConversation),
            Some((e, r)) if u(e) != g.expected_epoch || u(r) != g.expected_revision => {
                return Err(StoreError::StaleEpoch);
            }
            Some(_) => {}
        }
        sqlx::query(
            "UPDATE conversations SET epoch = $2, group_state = $3, revision = revision + 1
             WHERE id = $1",
        )
        .bind(&g.conversation)
        .bind(i(g.epoch))
        .bind(&g.state)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM conversation_members WHERE conversation = $1")
            .bind(&g.conversation)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let ids: Vec<i64> = g.members.iter().map(|d| i(*d)).collect();
        sqlx::query(
            "INSERT INTO conversation_members (conversation, device_id)
             SELECT $1, d FROM UNNEST($2::BIGINT[]) AS d ON CONFLICT DO NOTHING",
        )
        .bind(&g.conversation)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if let Some(a) = &g.applied {
            note_applied(&mut tx, &g.conversation, a).await?;
        }
        let mut out = Vec::with_capacity(g.messages.len());
        for m in &g.messages {
            out.push(insert_message(&mut tx, &self.announce, m).await.map_err(backend)?.message_id);
        }
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    async fn applied_handshake(
        &self,
        conversation: &[u8],
        device: DeviceId,
    ) -> StoreResult<Option<AppliedHandshake>> {
        let row: Option<(Vec<u8>, i64, i64)> = sqlx::query_as(
            "SELECT digest, epoch, members FROM applied_handshakes
             WHERE conversation = $1 AND device_id = $2",
        )
        .bind(conversation)
        .bind(i(device))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(row.map(|(digest, epoch, members)| AppliedHandshake {
            device,
            digest,
            epoch: u(epoch),
            members: u32::try_from(members).unwrap_or(u32::MAX),
        }))
    }

    async fn conversation_route(&self, conversation: &[u8]) -> StoreResult<Option<Route>> {
        let row: Option<(Option<String>, bool, i64)> =
            sqlx::query_as("SELECT poster, direct, epoch FROM conversations WHERE id = $1")
                .bind(conversation)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let Some((poster, direct, epoch)) = row else { return Ok(None) };
        let members: Vec<i64> = sqlx::query_scalar(
            "SELECT device_id FROM conversation_members WHERE conversation = $1 ORDER BY device_id",
        )
        .bind(conversation)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(Some(Route {
            members: members.into_iter().map(u).collect(),
            poster,
            direct,
            epoch: u(epoch),
        }))
    }

    async fn share_direct_conversation(&self, a: &str, b: &str) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM accounts a1
             JOIN devices d1 ON d1.account_id = a1.id
             JOIN conversation_members m1 ON m1.device_id = d1.id
             JOIN conversations c ON c.id = m1.conversation AND c.direct
             JOIN conversation_members m2 ON m2.conversation = c.id
             JOIN devices d2 ON d2.id = m2.device_id
             JOIN accounts a2 ON a2.id = d2.account_id
             WHERE a1.username = $1 AND a2.username = $2 LIMIT 1",
        )
        .bind(a)
        .bind(b)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(found.is_some())
    }

    async fn note_spoke(&self, conversation: &[u8], speaker: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO speakers (conversation, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(conversation)
        .bind(speaker)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn has_written_to(&self, speaker: &str, listener: &str) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM speakers s
             JOIN conversations c ON c.id = s.conversation AND c.direct
             JOIN conversation_members m ON m.conversation = s.conversation
             JOIN devices d ON d.id = m.device_id
             JOIN accounts a ON a.id = d.account_id
             WHERE s.username = $1 AND a.username = $2 LIMIT 1",
        )
        .bind(speaker)
        .bind(listener)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(found.is_some())
    }
}

/// Remembers a device's applied handshake, in the caller's transaction (its last replaces the
/// one before).
async fn note_applied(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    conversation: &[u8],
    a: &AppliedHandshake,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO applied_handshakes (conversation, device_id, digest, epoch, members)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (conversation, device_id)
         DO UPDATE SET digest = excluded.digest, epoch = excluded.epoch, members = excluded.members",
    )
    .bind(conversation)
    .bind(i(a.device))
    .bind(&a.digest)
    .bind(i(a.epoch))
    .bind(i64::from(a.members))
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}
