//! The message history: stored once per id, handed to the caller once, kept until its timer
//! is up or its conversation is deleted.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{ConversationKind, Delivery, LocalStore, i, u};
use crate::events::SystemEvent;

/// Profiles made before system lines carried their event.
pub(super) const EVENT_COLUMN: (&str, &str) =
    ("event", "ALTER TABLE kith_messages ADD COLUMN event TEXT");

/// One message of the local history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Message {
    /// The sender's message id (random, unique): the same on every device.
    pub id: String,
    pub conversation: String,
    pub kind: ConversationKind,
    pub from: String,
    pub text: String,
    /// The sender's clock, Unix milliseconds.
    pub sent_at: u64,
    /// When this device stored it, Unix milliseconds.
    pub received_at: u64,
    pub outgoing: bool,
    /// When this device deletes it (a story's expiry, a disappearing-message timer).
    pub expires_at: Option<u64>,
    /// Sent by a business account, and whether the server's admin verified it.
    pub from_business: bool,
    pub verified: bool,
    /// For this device's own messages: sending, sent or failed (see `outbox`).
    pub state: Delivery,
    /// Why a failed message was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub failure: Option<String>,
    /// What a system line says happened, as data (its `text` words it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub event: Option<SystemEvent>,
}

pub fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        conversation: r.get(1)?,
        kind: ConversationKind::parse(&r.get::<_, String>(2)?),
        from: r.get(3)?,
        text: r.get(4)?,
        sent_at: u(r.get(5)?),
        received_at: u(r.get(6)?),
        outgoing: r.get(7)?,
        expires_at: r.get::<_, Option<i64>>(8)?.map(u),
        from_business: r.get(9)?,
        verified: r.get(10)?,
        state: Delivery::parse(&r.get::<_, String>(11)?),
        failure: r.get(12)?,
        // A line this device cannot read back (from a newer SDK) is still shown, by its text.
        event: r.get::<_, Option<String>>(13)?.and_then(|e| serde_json::from_str(&e).ok()),
    })
}

impl LocalStore {
    /// Stores a message unless one with its id is stored already. Returns whether it was new. A
    /// received one is *unshown* until [`take_unshown`] hands it to the caller.
    pub fn insert_message(&self, m: &Message) -> rusqlite::Result<bool> {
        self.insert_shown(m, m.outgoing)
    }

    /// The same for a message that came from the server, this account's own (sent from
    /// another of its devices) included: unshown until handed over.
    pub fn insert_received(&self, m: &Message) -> rusqlite::Result<bool> {
        self.insert_shown(m, false)
    }

    fn insert_shown(&self, m: &Message, shown: bool) -> rusqlite::Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO kith_messages
         (id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
          from_business, verified, shown, state, failure, event)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?15, ?12, ?13, ?14)",
            )?
            .execute(params![
                m.id,
                m.conversation,
                m.kind.as_str(),
                m.from,
                m.text,
                i(m.sent_at),
                i(m.received_at),
                m.outgoing,
                m.expires_at.map(i),
                m.from_business,
                m.verified,
                m.state.as_str(),
                m.failure,
                m.event.as_ref().and_then(|e| serde_json::to_string(e).ok()),
                shown
            ])?;
        Ok(n == 1)
    }

    /// Every received message not handed to the caller yet, in the order they were stored, now
    /// marked as handed over.
    /// Messages not handed over yet, oldest first, without marking them.
    pub fn unshown(&self, now: u64) -> rusqlite::Result<Vec<Message>> {
        self.conn
            .prepare_cached(
                "SELECT id, conversation, kind, sender, text, sent_at, received_at, outgoing,
                expires_at, from_business, verified, state, failure, event
         FROM kith_messages WHERE shown = 0 AND (expires_at IS NULL OR expires_at > ?1)
         ORDER BY rowid",
            )?
            .query_map(params![i(now)], message_row)?
            .collect()
    }

    pub fn mark_shown(&self, ids: &[&str]) -> rusqlite::Result<()> {
        let mut update =
            self.conn.prepare_cached("UPDATE kith_messages SET shown = 1 WHERE id = ?1")?;
        for id in ids {
            update.execute(params![id])?;
        }
        Ok(())
    }

    pub fn take_unshown(&self, now: u64) -> rusqlite::Result<Vec<Message>> {
        let messages = self.unshown(now)?;
        if !messages.is_empty() {
            self.conn
                .prepare_cached("UPDATE kith_messages SET shown = 1 WHERE shown = 0")?
                .execute([])?;
        }
        Ok(messages)
    }

    /// One message of the history, by id.
    pub fn message(&self, id: &str) -> rusqlite::Result<Option<Message>> {
        self.conn.prepare_cached(
        "SELECT id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
                from_business, verified, state, failure, event
         FROM kith_messages WHERE id = ?1",
    )?
    .query_row(params![id], message_row)
    .optional()
    }

    /// Every message exchanged with `peer` in 1:1 conversations, oldest first.
    pub fn history_with(&self, peer: &str, now: u64) -> rusqlite::Result<Vec<Message>> {
        self.conn.prepare(
        "SELECT m.id, m.conversation, m.kind, m.sender, m.text, m.sent_at, m.received_at, m.outgoing,
                m.expires_at, m.from_business, m.verified, m.state, m.failure, m.event
         FROM kith_messages m JOIN kith_conversations c ON c.id = m.conversation
         WHERE c.kind = 'direct' AND c.peer = ?1 AND (m.expires_at IS NULL OR m.expires_at > ?2)
         ORDER BY m.sent_at, m.received_at, m.id",
    )?
    .query_map(params![peer, i(now)], message_row)?
    .collect()
    }

    /// Every message of one conversation, oldest first.
    pub fn history_of(&self, conversation: &str, now: u64) -> rusqlite::Result<Vec<Message>> {
        self.conn.prepare(
        "SELECT id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
                from_business, verified, state, failure, event
         FROM kith_messages WHERE conversation = ?1 AND (expires_at IS NULL OR expires_at > ?2)
         ORDER BY sent_at, received_at, id",
    )?
    .query_map(params![conversation, i(now)], message_row)?
    .collect()
    }

    /// Stories not yet expired, newest first.
    /// Live stories, newest first, leaving out those of accounts this device blocks (kept, so they
    /// can still be reported, until they expire).
    pub fn stories(&self, now: u64) -> rusqlite::Result<Vec<Message>> {
        self.conn.prepare(
        "SELECT id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
                from_business, verified, state, failure, event
         FROM kith_messages WHERE kind = 'story' AND (expires_at IS NULL OR expires_at > ?1)
           AND sender NOT IN (SELECT username FROM kith_blocked)
         ORDER BY sent_at DESC, id",
    )?
    .query_map(params![i(now)], message_row)?
    .collect()
    }

    /// Deletes the stories `author` posted. Returns how many went.
    pub fn delete_stories_of(&self, author: &str) -> rusqlite::Result<usize> {
        let gone = self
            .conn
            .execute("DELETE FROM kith_messages WHERE kind = 'story' AND sender = ?1", [author])?;
        if gone > 0 {
            self.forget_orphan_franks()?;
        }
        Ok(gone)
    }

    /// Deletes every message whose time is up. Returns how many went.
    pub fn purge_expired(&self, now: u64) -> rusqlite::Result<usize> {
        let gone = self.conn.execute(
            "DELETE FROM kith_messages WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            params![i(now)],
        )?;
        if gone > 0 {
            self.forget_orphan_franks()?;
        }
        Ok(gone)
    }

    /// Deletes a conversation's whole history.
    pub fn delete_messages(&self, conversation: &str) -> rusqlite::Result<usize> {
        let gone = self
            .conn
            .execute("DELETE FROM kith_messages WHERE conversation = ?1", params![conversation])?;
        self.forget_orphan_franks()?;
        Ok(gone)
    }
}
