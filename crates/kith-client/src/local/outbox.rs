//! The outbox: every message this device writes is in its history from the moment it is
//! written, *sending*, with what it takes to post it (again) beside it; *sent* once the server
//! answered; *failed*, with the reason, when the server refused it for good (a retry puts it
//! back). See `crate::unsure` for when it is posted.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Message, i, u};

pub(super) const SCHEMA: &str = "
-- A message written and not yet answered by the server (or refused: kept for a retry): its
-- plaintext payload (encrypted afresh at each post, for the group's epoch then) and the id the
-- server recognises a repeat by.
CREATE TABLE IF NOT EXISTS kith_outbox (
    message_id TEXT PRIMARY KEY,
    conversation TEXT NOT NULL,
    client_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    written_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kith_outbox_written ON kith_outbox (written_at);
";

/// Columns the outbox adds to `kith_messages` in profiles made before it.
pub(super) const MESSAGE_COLUMNS: [(&str, &str); 2] = [
    ("state", "ALTER TABLE kith_messages ADD COLUMN state TEXT NOT NULL DEFAULT 'sent'"),
    ("failure", "ALTER TABLE kith_messages ADD COLUMN failure TEXT"),
];

/// Where a message of this device stands with the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Written, not answered yet: it is posted again by itself (at the next sync, or when a
    /// push connection opens) until the server answers.
    Sending,
    /// The server has it (for a received message: always).
    #[default]
    Sent,
    /// Refused for good; see the message's `failure`. [`retry`] puts it back.
    Failed,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Sending => "sending",
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
        }
    }

    pub(super) fn parse(s: &str) -> Self {
        match s {
            "sending" => Delivery::Sending,
            "failed" => Delivery::Failed,
            _ => Delivery::Sent,
        }
    }
}

/// A message waiting in the outbox.
#[derive(Clone, Debug)]
pub struct Pending {
    pub message_id: String,
    pub conversation: String,
    pub client_id: String,
    pub payload: Vec<u8>,
}

/// Puts a message just written in the history, *sending*, and in the outbox (the caller holds
/// a transaction: both or neither).
pub fn write(
    conn: &Connection,
    message: &Message,
    payload: &[u8],
    client_id: &str,
) -> rusqlite::Result<()> {
    super::insert_message(conn, message)?;
    conn.execute(
        "INSERT INTO kith_outbox (message_id, conversation, client_id, payload, written_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![message.id, message.conversation, client_id, payload, i(message.sent_at)],
    )?;
    Ok(())
}

/// The messages waiting to be sent, oldest first; of one conversation, or of all.
pub fn sending(conn: &Connection, conversation: Option<&str>) -> rusqlite::Result<Vec<Pending>> {
    conn.prepare_cached(
        "SELECT o.message_id, o.conversation, o.client_id, o.payload
         FROM kith_outbox o JOIN kith_messages m ON m.id = o.message_id
         WHERE m.state = 'sending' AND (?1 IS NULL OR o.conversation = ?1)
         ORDER BY o.written_at, o.rowid",
    )?
    .query_map(params![conversation], |r| {
        Ok(Pending {
            message_id: r.get(0)?,
            conversation: r.get(1)?,
            client_id: r.get(2)?,
            payload: r.get(3)?,
        })
    })?
    .collect()
}

/// The server has it: *sent*, deleted at `expires_at` (its timer, from the time the server
/// accepted it), and out of the outbox — both or neither.
pub fn delivered(
    conn: &mut Connection,
    message_id: &str,
    expires_at: Option<u64>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.prepare_cached(
        "UPDATE kith_messages SET state = 'sent', failure = NULL, expires_at = ?2 WHERE id = ?1",
    )?
    .execute(params![message_id, expires_at.map(i)])?;
    tx.prepare_cached("DELETE FROM kith_outbox WHERE message_id = ?1")?
        .execute(params![message_id])?;
    tx.commit()
}

/// Refused for good: *failed*, with why. It stays in the outbox for a [`retry`].
pub fn failed(conn: &Connection, message_id: &str, reason: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE kith_messages SET state = 'failed', failure = ?2 WHERE id = ?1",
        params![message_id, reason],
    )?;
    Ok(())
}

/// Puts a failed message back to *sending*; the conversation it is in, if it was one.
pub fn retry(conn: &Connection, message_id: &str) -> rusqlite::Result<Option<String>> {
    let conversation: Option<String> = conn
        .query_row(
            "SELECT o.conversation FROM kith_outbox o JOIN kith_messages m ON m.id = o.message_id
             WHERE o.message_id = ?1 AND m.state = 'failed'",
            params![message_id],
            |r| r.get(0),
        )
        .optional()?;
    if conversation.is_some() {
        conn.execute(
            "UPDATE kith_messages SET state = 'sending', failure = NULL WHERE id = ?1",
            params![message_id],
        )?;
    }
    Ok(conversation)
}

/// Takes a message out of the history and the outbox (one sent again elsewhere).
pub fn discard(conn: &Connection, message_id: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM kith_messages WHERE id = ?1", params![message_id])?;
    conn.execute("DELETE FROM kith_outbox WHERE message_id = ?1", params![message_id])?;
    Ok(())
}

/// Outbox rows whose message is gone (a deleted chat, a purge) go too: nothing of a deleted
/// message stays on the disk.
pub(super) fn forget_orphans(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM kith_outbox WHERE message_id NOT IN (SELECT id FROM kith_messages)",
        [],
    )
}

/// How many messages wait to be sent.
pub fn waiting(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM kith_messages WHERE state = 'sending'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(u)
}
