//! The history a device hands a device it links (see `link::history`): its conversations and
//! the messages still within their timers, as plain rows; and the transfer a new device is
//! taking in, kept so a cut transfer resumes where it stopped.

use rusqlite::{OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

use super::{LocalStore, i, u};

/// One conversation of the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConversationRow {
    pub id: String,
    pub kind: String,
    pub peer: Option<String>,
    pub name: Option<String>,
    pub created_at: u64,
    pub left: bool,
    pub timer_seconds: Option<u64>,
}

/// One message of the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessageRow {
    pub id: String,
    pub conversation: String,
    pub kind: String,
    pub sender: String,
    pub text: String,
    pub sent_at: u64,
    pub received_at: u64,
    pub outgoing: bool,
    pub expires_at: Option<u64>,
    pub from_business: bool,
    pub verified: bool,
    pub event: Option<String>,
}

/// Everything handed over.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub conversations: Vec<ConversationRow>,
    pub messages: Vec<MessageRow>,
}

/// A transfer this device is taking in.
#[derive(Clone, Debug)]
pub struct Transfer {
    pub link: String,
    /// The channel's key for what the linking device seals for this one.
    pub key: kith_proto::SecretBytes,
    /// The next chunk to fetch.
    pub next: u32,
    /// How many chunks there are, once known.
    pub total: Option<u32>,
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kith_history_transfer (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    link TEXT NOT NULL,
    key BLOB NOT NULL,
    next INTEGER NOT NULL,
    total INTEGER
);
CREATE TABLE IF NOT EXISTS kith_history_chunks (
    n INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
";

impl LocalStore {
    /// This device's conversations and its messages still within their timers (`now`).
    pub fn export_history(&self, now: u64) -> rusqlite::Result<History> {
        let conversations = self
            .conn
            .prepare(
                "SELECT id, kind, peer, name, created_at, left_at IS NOT NULL, timer_seconds
                 FROM kith_conversations ORDER BY created_at, id",
            )?
            .query_map([], |r| {
                Ok(ConversationRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    peer: r.get(2)?,
                    name: r.get(3)?,
                    created_at: u(r.get(4)?),
                    left: r.get(5)?,
                    timer_seconds: r.get::<_, Option<i64>>(6)?.map(u),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let messages = self
            .conn
            .prepare(
                "SELECT id, conversation, kind, sender, text, sent_at, received_at, outgoing,
                        expires_at, from_business, verified, event
                 FROM kith_messages WHERE expires_at IS NULL OR expires_at > ?1
                 ORDER BY rowid",
            )?
            .query_map(params![i(now)], |r| {
                Ok(MessageRow {
                    id: r.get(0)?,
                    conversation: r.get(1)?,
                    kind: r.get(2)?,
                    sender: r.get(3)?,
                    text: r.get(4)?,
                    sent_at: u(r.get(5)?),
                    received_at: u(r.get(6)?),
                    outgoing: r.get(7)?,
                    expires_at: r.get::<_, Option<i64>>(8)?.map(u),
                    from_business: r.get(9)?,
                    verified: r.get(10)?,
                    event: r.get(11)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(History { conversations, messages })
    }

    /// Takes in a history: conversations this device does not have are kept as left (their
    /// history readable, nothing sendable); messages are added unless already here, as shown
    /// and sent. Returns how many messages were new.
    pub fn import_history(&self, h: &History) -> rusqlite::Result<u64> {
        let mut conv = self.conn.prepare(
            "INSERT OR IGNORE INTO kith_conversations
             (id, kind, peer, name, created_at, left_at, timer_seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for c in &h.conversations {
            if !matches!(c.kind.as_str(), "direct" | "group" | "story") {
                continue;
            }
            // Not joined here (a conversation left before the link): readable, not active.
            conv.execute(params![
                c.id,
                c.kind,
                c.peer,
                c.name,
                i(c.created_at),
                i(c.created_at),
                c.timer_seconds.map(i)
            ])?;
        }
        let mut msg = self.conn.prepare(
            "INSERT OR IGNORE INTO kith_messages
             (id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
              from_business, verified, shown, state, event)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, 'sent', ?12)",
        )?;
        let mut new = 0;
        for m in &h.messages {
            if !matches!(m.kind.as_str(), "direct" | "group" | "story" | "system") {
                continue;
            }
            new += msg.execute(params![
                m.id,
                m.conversation,
                m.kind,
                m.sender,
                m.text,
                i(m.sent_at),
                i(m.received_at),
                m.outgoing,
                m.expires_at.map(i),
                m.from_business,
                m.verified,
                m.event
            ])? as u64;
        }
        Ok(new)
    }

    /// Starts keeping a transfer (replacing any other).
    pub fn begin_transfer(&self, link: &str, key: &[u8]) -> rusqlite::Result<()> {
        self.conn.execute("DELETE FROM kith_history_chunks", [])?;
        self.conn.execute(
            "INSERT OR REPLACE INTO kith_history_transfer (id, link, key, next, total)
             VALUES (1, ?1, ?2, 0, NULL)",
            params![link, key],
        )?;
        Ok(())
    }

    /// The transfer under way, if any.
    pub fn transfer(&self) -> rusqlite::Result<Option<Transfer>> {
        self.conn
            .query_row(
                "SELECT link, key, next, total FROM kith_history_transfer WHERE id = 1",
                [],
                |r| {
                    Ok(Transfer {
                        link: r.get(0)?,
                        key: kith_proto::SecretBytes::new(r.get::<_, Vec<u8>>(1)?),
                        next: r.get(2)?,
                        total: r.get(3)?,
                    })
                },
            )
            .optional()
    }

    /// Keeps chunk `n` of `total` and moves on to the next.
    pub fn keep_chunk(&self, n: u32, total: u32, data: &[u8]) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO kith_history_chunks (n, data) VALUES (?1, ?2)",
            params![n, data],
        )?;
        self.conn.execute(
            "UPDATE kith_history_transfer SET next = ?1, total = ?2 WHERE id = 1",
            params![n + 1, total],
        )?;
        Ok(())
    }

    /// Every chunk kept, in order, joined.
    pub fn kept_chunks(&self) -> rusqlite::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut q = self.conn.prepare("SELECT data FROM kith_history_chunks ORDER BY n")?;
        for part in q.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
            out.extend(part?);
        }
        Ok(out)
    }

    /// The transfer is over (taken in, or given up).
    pub fn end_transfer(&self) -> rusqlite::Result<()> {
        self.conn.execute("DELETE FROM kith_history_chunks", [])?;
        self.conn.execute("DELETE FROM kith_history_transfer", [])?;
        Ok(())
    }
}
