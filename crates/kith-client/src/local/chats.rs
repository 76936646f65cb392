//! What the chat list reads: which people this device talked to, a chat's last message, how
//! much of it is unread since it was last read here, and when that was.

use rusqlite::{OptionalExtension, params};

use super::{LocalStore, Message, i, message_row, u};

/// Which messages a chat holds: every 1:1 conversation with a person, or one group.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Person(&'a str),
    Group(&'a str),
}

impl<'a> Scope<'a> {
    /// The SQL condition on `kith_messages m` (bound as `?1`).
    fn condition(self) -> &'static str {
        match self {
            Scope::Person(_) => {
                "m.conversation IN (SELECT id FROM kith_conversations
                                    WHERE kind = 'direct' AND peer = ?1)"
            }
            Scope::Group(_) => "m.conversation = ?1",
        }
    }

    fn value(self) -> &'a str {
        match self {
            Scope::Person(v) | Scope::Group(v) => v,
        }
    }
}

const MESSAGE_COLUMNS: &str = "m.id, m.conversation, m.kind, m.sender, m.text, m.sent_at,
    m.received_at, m.outgoing, m.expires_at, m.from_business, m.verified, m.state, m.failure, m.event";
/// Not expired at `?2`.
const LIVE: &str = "(m.expires_at IS NULL OR m.expires_at > ?2)";
/// Written by someone else (system lines are nobody's).
const THEIRS: &str = "m.outgoing = 0 AND m.kind != 'system'";

/// Each is one indexed query: the chat list never reads a chat's whole history.
impl LocalStore {
    /// Everyone this device had a 1:1 conversation with.
    pub fn direct_peers(&self) -> rusqlite::Result<Vec<String>> {
        self.conn
            .prepare("SELECT DISTINCT peer FROM kith_conversations WHERE kind = 'direct'")?
            .query_map([], |r| r.get::<_, Option<String>>(0))?
            .filter_map(|p| p.transpose())
            .collect()
    }

    /// The chat's newest message not expired at `now`.
    pub fn last_message(&self, scope: Scope<'_>, now: u64) -> rusqlite::Result<Option<Message>> {
        let cond = scope.condition();
        self.conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM kith_messages m WHERE {cond} AND {LIVE}
                 ORDER BY m.sent_at DESC, m.received_at DESC, m.id DESC LIMIT 1"
            ))?
            .query_row(params![scope.value(), i(now)], message_row)
            .optional()
    }

    /// Messages of others not expired at `now` that arrived after `since`.
    pub fn unread_since(&self, scope: Scope<'_>, now: u64, since: u64) -> rusqlite::Result<u64> {
        let cond = scope.condition();
        self.conn
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM kith_messages m
                 WHERE {cond} AND {LIVE} AND {THEIRS} AND m.received_at > ?3"
            ))?
            .query_row(params![scope.value(), i(now), i(since)], |r| r.get::<_, i64>(0))
            .map(u)
    }

    /// Whether the newest message of others came from a business, and a verified one.
    pub fn business_marks(&self, scope: Scope<'_>) -> rusqlite::Result<(bool, bool)> {
        let cond = scope.condition();
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT m.from_business, m.verified FROM kith_messages m WHERE {cond} AND {THEIRS}
                 ORDER BY m.sent_at DESC, m.received_at DESC LIMIT 1"
            ))?
            .query_row(params![scope.value()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((false, false)))
    }

    /// When `chat` was last read on this device (Unix ms), 0 if never.
    pub fn read_at(&self, chat: &str) -> rusqlite::Result<u64> {
        self.conn
            .prepare_cached("SELECT read_at FROM kith_read WHERE chat = ?1")?
            .query_row(params![chat], |r| r.get::<_, i64>(0))
            .optional()
            .map(|v| v.map(u).unwrap_or(0))
    }

    /// Keeps a read of `chat` for the account's other devices (the latest per chat).
    pub fn read_to_share(&self, chat: &str, at: u64) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO kith_reads_to_share (chat, read_at) VALUES (?1, ?2)
             ON CONFLICT (chat) DO UPDATE SET read_at = MAX(read_at, excluded.read_at)",
            params![chat, i(at)],
        )?;
        Ok(())
    }

    /// Up to `max` reads waiting for the other devices.
    pub fn reads_to_share(&self, max: usize) -> rusqlite::Result<Vec<(String, u64)>> {
        self.conn
            .prepare_cached("SELECT chat, read_at FROM kith_reads_to_share ORDER BY chat LIMIT ?1")?
            .query_map(params![i(max as u64)], |r| Ok((r.get(0)?, u(r.get::<_, i64>(1)?))))?
            .collect()
    }

    /// These reads went (one read again since stays).
    pub fn reads_shared(&self, reads: &[(String, u64)]) -> rusqlite::Result<()> {
        let mut gone = self
            .conn
            .prepare_cached("DELETE FROM kith_reads_to_share WHERE chat = ?1 AND read_at <= ?2")?;
        for (chat, at) in reads {
            gone.execute(params![chat, i(*at)])?;
        }
        Ok(())
    }

    /// `chat` is read as of `at` (a later time already recorded stands).
    pub fn set_read(&self, chat: &str, at: u64) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO kith_read (chat, read_at) VALUES (?1, ?2)
             ON CONFLICT (chat) DO UPDATE SET read_at = MAX(read_at, excluded.read_at)",
            params![chat, i(at)],
        )?;
        Ok(())
    }
}
