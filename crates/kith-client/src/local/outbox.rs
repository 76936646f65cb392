//! The outbox: every message this device writes is in its history from the moment it is
//! written, *sending*, with what it takes to post it (again) beside it; *sent* once the server
//! answered; *failed*, with the reason, when the server refused it for good (a retry puts it
//! back). See `crate::unsure` for when it is posted.

use rusqlite::{OptionalExtension, params};

use super::{LocalStore, Message, i, u};

/// The outbox lives in `kith_messages` itself — one row per message, written once and updated
/// once on the send path: its state, why it failed, the id the server recognises a repeat by,
/// and, while it is not sent, its plaintext payload (encrypted afresh at each post, for the
/// group's epoch then; dropped once sent).
pub(super) const MESSAGE_COLUMNS: [(&str, &str); 4] = [
    ("state", "ALTER TABLE kith_messages ADD COLUMN state TEXT NOT NULL DEFAULT 'sent'"),
    ("failure", "ALTER TABLE kith_messages ADD COLUMN failure TEXT"),
    ("client_id", "ALTER TABLE kith_messages ADD COLUMN client_id TEXT"),
    ("payload", "ALTER TABLE kith_messages ADD COLUMN payload BLOB"),
];

/// After the columns: the messages waiting, found without reading the history.
pub(super) const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS kith_messages_sending ON kith_messages (sent_at)
    WHERE state = 'sending';
";

/// Where a message of this device stands with the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Written, not answered yet: it is posted again by itself (at the next sync, or when a
    /// push connection opens) until the server answers.
    Sending,
    /// With the server (a received message always is).
    #[default]
    Sent,
    /// Refused for good (see the message's `failure`); [`LocalStore::retry_outgoing`] puts it back.
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

impl LocalStore {
    /// Puts a message just written in the history, *sending*, with what it takes to post it.
    pub fn write_outgoing(
        &self,
        message: &Message,
        payload: &[u8],
        client_id: &str,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO kith_messages
         (id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
          from_business, verified, shown, state, client_id, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 1, ?7, ?8, 0, 1, 'sending', ?9, ?10)",
            )?
            .execute(params![
                message.id,
                message.conversation,
                message.kind.as_str(),
                message.from,
                message.text,
                i(message.sent_at),
                message.expires_at.map(i),
                message.from_business,
                client_id,
                payload
            ])?;
        Ok(())
    }

    /// The messages waiting to be sent, oldest first; of one conversation, or of all.
    pub fn sending(&self, conversation: Option<&str>) -> rusqlite::Result<Vec<Pending>> {
        self.conn
            .prepare_cached(
                "SELECT id, conversation, client_id, payload FROM kith_messages
         WHERE state = 'sending' AND (?1 IS NULL OR conversation = ?1)
           AND client_id IS NOT NULL AND payload IS NOT NULL
         ORDER BY sent_at, rowid",
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
    /// accepted it); its payload is not kept.
    pub fn mark_sent(&self, message_id: &str, expires_at: Option<u64>) -> rusqlite::Result<()> {
        self.conn.prepare_cached(
        "UPDATE kith_messages SET state = 'sent', failure = NULL, expires_at = ?2, payload = NULL
         WHERE id = ?1",
    )?
    .execute(params![message_id, expires_at.map(i)])?;
        Ok(())
    }

    /// Refused for good: *failed*, with why. Its payload stays for a [`retry`].
    pub fn mark_failed(&self, message_id: &str, reason: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE kith_messages SET state = 'failed', failure = ?2 WHERE id = ?1",
            params![message_id, reason],
        )?;
        Ok(())
    }

    /// Puts a failed message back to *sending*; the conversation it is in, if it was one.
    pub fn retry_outgoing(&self, message_id: &str) -> rusqlite::Result<Option<String>> {
        let conversation: Option<String> = self
            .conn
            .query_row(
                "SELECT conversation FROM kith_messages
             WHERE id = ?1 AND state = 'failed' AND payload IS NOT NULL",
                params![message_id],
                |r| r.get(0),
            )
            .optional()?;
        if conversation.is_some() {
            self.conn.execute(
                "UPDATE kith_messages SET state = 'sending', failure = NULL WHERE id = ?1",
                params![message_id],
            )?;
        }
        Ok(conversation)
    }

    /// Takes a message out of the history (one sent again elsewhere).
    pub fn discard_outgoing(&self, message_id: &str) -> rusqlite::Result<()> {
        self.conn.execute("DELETE FROM kith_messages WHERE id = ?1", params![message_id])?;
        Ok(())
    }

    /// How many messages wait to be sent.
    pub fn waiting_to_send(&self) -> rusqlite::Result<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM kith_messages WHERE state = 'sending'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(u)
    }
}
