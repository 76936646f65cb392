//! Conversations (the operations of [`ConversationStore`]): creation with the Welcomes,
//! the public group state (epoch, revision, member devices) and its compare-and-swap
//! updates, routes for sending, and who has spoken where.

use super::*;

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn create_conversation(&self, c: NewConversation) -> StoreResult<MessageId> {
        self.inner
            .writer
            .write(move |conn| {
                let inserted = conn.execute(
                    "INSERT INTO conversations (id, created_at, epoch, group_state, poster, direct)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![c.conversation, i(c.now), i(c.epoch), c.group_state, c.poster, c.direct],
                );
                match inserted {
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::ConversationExists),
                    other => other.map_err(backend)?,
                };
                let mut members = c.members.clone();
                members.push(c.creator_device);
                members.sort_unstable();
                members.dedup();
                for d in &members {
                    let known: Option<i64> = conn
                        .prepare_cached("SELECT id FROM devices WHERE id = ?1")
                        .map_err(backend)?
                        .query_row(params![i(*d)], |r| r.get(0))
                        .optional()
                        .map_err(backend)?;
                    if known.is_none() {
                        return Err(StoreError::UnknownDevice);
                    }
                    conn.prepare_cached(
                        "INSERT INTO conversation_members (conversation, device_id) VALUES (?1, ?2)",
                    )
                    .map_err(backend)?
                    .execute(params![c.conversation, i(*d)])
                    .map_err(backend)?;
                }
                if let Some(a) = &c.applied {
                    note_applied(conn, &c.conversation, a).map_err(backend)?;
                }
                let recipients = members
                    .into_iter()
                    .filter(|d| *d != c.creator_device && !c.withheld.contains(d))
                    .collect();
                insert_message(
                    conn,
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
                .map(|e| e.message_id)
                .map_err(backend)
            })
            .await
    }

    async fn group_state(&self, conversation: &[u8]) -> StoreResult<Option<GroupState>> {
        let conversation = conversation.to_vec();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT epoch, group_state, revision FROM conversations WHERE id = ?1",
            )?
            .query_row(params![conversation], |r| {
                Ok(GroupState { epoch: u(r.get(0)?), state: r.get(1)?, revision: u(r.get(2)?) })
            })
            .optional()
        })
        .await
    }

    async fn update_group(&self, g: GroupUpdate) -> StoreResult<Vec<MessageId>> {
        self.inner
            .writer
            .write(move |conn| {
                let current: Option<(i64, i64)> = conn
                    .prepare_cached("SELECT epoch, revision FROM conversations WHERE id = ?1")
                    .map_err(backend)?
                    .query_row(params![g.conversation], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(backend)?;
                match current {
                    None => return Err(StoreError::UnknownConversation),
                    Some((e, r)) if u(e) != g.expected_epoch || u(r) != g.expected_revision => {
                        return Err(StoreError::StaleEpoch);
                    }
                    Some(_) => {}
                }
                conn.prepare_cached(
                    "UPDATE conversations SET epoch = ?2, group_state = ?3, revision = revision + 1
                     WHERE id = ?1",
                )
                .map_err(backend)?
                .execute(params![g.conversation, i(g.epoch), g.state])
                .map_err(backend)?;
                conn.prepare_cached("DELETE FROM conversation_members WHERE conversation = ?1")
                    .map_err(backend)?
                    .execute(params![g.conversation])
                    .map_err(backend)?;
                let mut add = conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO conversation_members (conversation, device_id)
                         VALUES (?1, ?2)",
                    )
                    .map_err(backend)?;
                for d in &g.members {
                    add.execute(params![g.conversation, i(*d)]).map_err(backend)?;
                }
                if let Some(a) = &g.applied {
                    note_applied(conn, &g.conversation, a).map_err(backend)?;
                }
                g.messages
                    .iter()
                    .map(|m| insert_message(conn, m).map(|e| e.message_id).map_err(backend))
                    .collect()
            })
            .await
    }

    async fn applied_handshake(
        &self,
        conversation: &[u8],
        device: DeviceId,
    ) -> StoreResult<Option<AppliedHandshake>> {
        let conversation = conversation.to_vec();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT digest, epoch, members FROM applied_handshakes
                 WHERE conversation = ?1 AND device_id = ?2",
            )?
            .query_row(params![conversation, i(device)], |r| {
                Ok(AppliedHandshake {
                    device,
                    digest: r.get(0)?,
                    epoch: u(r.get(1)?),
                    members: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX),
                })
            })
            .optional()
        })
        .await
    }

    async fn conversation_route(&self, conversation: &[u8]) -> StoreResult<Option<Route>> {
        let conversation = conversation.to_vec();
        self.read(move |conn| {
            let Some((poster, direct, epoch)) = conn
                .prepare_cached("SELECT poster, direct, epoch FROM conversations WHERE id = ?1")?
                .query_row(params![conversation], |r| {
                    Ok((r.get::<_, Option<String>>(0)?, r.get::<_, bool>(1)?, u(r.get(2)?)))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let members = conn
                .prepare_cached(
                    "SELECT device_id FROM conversation_members WHERE conversation = ?1
                     ORDER BY device_id",
                )?
                .query_map(params![conversation], |r| r.get::<_, i64>(0).map(u))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(Route { members, poster, direct, epoch }))
        })
        .await
    }

    async fn share_direct_conversation(&self, a: &str, b: &str) -> StoreResult<bool> {
        let (a, b) = (a.to_string(), b.to_string());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM accounts a1
                     JOIN devices d1 ON d1.account_id = a1.id
                     JOIN conversation_members m1 ON m1.device_id = d1.id
                     JOIN conversations c ON c.id = m1.conversation AND c.direct = 1
                     JOIN conversation_members m2 ON m2.conversation = c.id
                     JOIN devices d2 ON d2.id = m2.device_id
                     JOIN accounts a2 ON a2.id = d2.account_id
                     WHERE a1.username = ?1 AND a2.username = ?2 LIMIT 1",
                )?
                .query_row(params![a, b], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn note_spoke(&self, conversation: &[u8], speaker: &str) -> StoreResult<()> {
        let (conversation, speaker) = (conversation.to_vec(), speaker.to_string());
        self.inner
            .writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO speakers (conversation, username) VALUES (?1, ?2)",
                )
                .and_then(|mut st| st.execute(params![conversation, speaker]))
                .map(|_| ())
                .map_err(backend)
            })
            .await
    }

    async fn has_written_to(&self, speaker: &str, listener: &str) -> StoreResult<bool> {
        let (speaker, listener) = (speaker.to_string(), listener.to_string());
        self.read(move |conn| reputation::has_written_to(conn, &speaker, &listener)).await
    }
}

/// Remembers a device's applied handshake, in the caller's transaction (its last replaces the
/// one before).
fn note_applied(
    conn: &rusqlite::Connection,
    conversation: &[u8],
    a: &AppliedHandshake,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO applied_handshakes (conversation, device_id, digest, epoch, members)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![conversation, i(a.device), a.digest, i(a.epoch), i64::from(a.members)])?;
    Ok(())
}
