//! Server entries already processed (each exactly once), and those held until what they
//! depend on arrives.

use rusqlite::{OptionalExtension, params};

use kith_proto::QueueEntry;

use super::{LocalStore, i, u};

impl LocalStore {
    pub fn was_processed(&self, message_id: u64) -> rusqlite::Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM kith_processed WHERE message_id = ?1")?
            .query_row(params![i(message_id)], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn mark_processed(&self, message_id: u64, now: u64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO kith_processed (message_id, processed_at) VALUES (?1, ?2)",
            )?
            .execute(params![i(message_id), i(now)])?;
        Ok(())
    }

    /// Keeps an entry that arrived before what it depends on (see `ClientError::NotYet`).
    pub fn hold(&self, entry: &QueueEntry, now: u64) -> rusqlite::Result<()> {
        let json = serde_json::to_string(entry)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO kith_held (message_id, conversation, entry, held_at)
         VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![i(entry.message_id), entry.conversation_id, json, i(now)])?;
        Ok(())
    }

    /// Held invitations (Welcomes) from `sender`, as MLS named them when they were held.
    pub fn held_invitations_from(&self, sender: &str) -> rusqlite::Result<u64> {
        self.conn
            .prepare_cached(
                "SELECT COUNT(*) FROM kith_held
         WHERE json_extract(entry, '$.kind') = 'welcome' AND json_extract(entry, '$.sender') = ?1",
            )?
            .query_row(params![sender], |r| r.get::<_, i64>(0))
            .map(u)
    }

    /// The conversations that hold entries.
    pub fn held_conversations(&self) -> rusqlite::Result<Vec<String>> {
        self.conn
            .prepare_cached("SELECT DISTINCT conversation FROM kith_held ORDER BY conversation")?
            .query_map([], |r| r.get(0))?
            .collect()
    }

    /// Every held entry of a conversation, oldest first (they stay held until [`unhold`]).
    pub fn held(&self, conversation: &str) -> rusqlite::Result<Vec<QueueEntry>> {
        let rows: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT entry FROM kith_held WHERE conversation = ?1 ORDER BY message_id",
            )?
            .query_map(params![conversation], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows.iter().filter_map(|json| serde_json::from_str(json).ok()).collect())
    }

    /// Held invitations (Welcomes) from contacts, oldest first.
    pub fn held_invitations_from_contacts(&self) -> rusqlite::Result<Vec<QueueEntry>> {
        let rows: Vec<String> = self
            .conn
            .prepare_cached("SELECT entry FROM kith_held ORDER BY message_id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows
            .iter()
            .filter_map(|json| serde_json::from_str::<QueueEntry>(json).ok())
            .filter(|e| e.kind == kith_proto::EntryKind::Welcome)
            .filter(|e| self.is_contact(&e.sender).unwrap_or(false))
            .collect())
    }

    /// How many entries are held, and the ids of the oldest `over` of them past `max`.
    pub fn held_over(&self, max: u64) -> rusqlite::Result<Vec<u64>> {
        let n: i64 = self.conn.query_row("SELECT COUNT(*) FROM kith_held", [], |r| r.get(0))?;
        let over = u(n).saturating_sub(max);
        if over == 0 {
            return Ok(Vec::new());
        }
        self.conn
            .prepare_cached(
                "SELECT message_id FROM kith_held ORDER BY held_at, message_id LIMIT ?1",
            )?
            .query_map(params![i(over)], |r| r.get::<_, i64>(0).map(u))?
            .collect()
    }

    pub fn unhold(&self, message_id: u64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM kith_held WHERE message_id = ?1")?
            .execute(params![i(message_id)])?;
        Ok(())
    }
}
