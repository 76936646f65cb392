//! Handshakes (a creation, a commit, a leave) whose outcome is unknown, kept until settled
//! (see `crate::unsure`).

use rusqlite::{OptionalExtension, params};

use super::LocalStore;

/// What a kept request whose outcome was unknown is (stored as 0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsure {
    /// A commit, staged in the group.
    Commit = 0,
    /// A request to leave.
    Leave = 1,
    /// The conversation's creation.
    Creation = 2,
}

impl LocalStore {
    /// Keeps a handshake whose outcome is unknown (see `kith_unsure_handshakes`); `leave` for a
    /// request to leave, else a commit.
    pub fn keep_unsure(
        &self,
        conversation: &str,
        kind: Unsure,
        request: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
        "INSERT INTO kith_unsure_handshakes (conversation, leave, request) VALUES (?1, ?2, ?3)
         ON CONFLICT (conversation) DO UPDATE SET leave = excluded.leave, request = excluded.request",
        params![conversation, kind as i64, request],
    )?;
        Ok(())
    }

    /// The request kept for a conversation, and what it is.
    pub fn unsure(&self, conversation: &str) -> rusqlite::Result<Option<(Unsure, String)>> {
        self.conn
            .query_row(
                "SELECT leave, request FROM kith_unsure_handshakes WHERE conversation = ?1",
                [conversation],
                |r| {
                    let kind = match r.get::<_, i64>(0)? {
                        1 => Unsure::Leave,
                        2 => Unsure::Creation,
                        _ => Unsure::Commit,
                    };
                    Ok((kind, r.get(1)?))
                },
            )
            .optional()
    }

    pub fn unsure_conversations(&self) -> rusqlite::Result<Vec<String>> {
        self.conn
            .prepare("SELECT conversation FROM kith_unsure_handshakes ORDER BY conversation")?
            .query_map([], |r| r.get(0))?
            .collect()
    }

    pub fn forget_unsure(&self, conversation: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "DELETE FROM kith_unsure_handshakes WHERE conversation = ?1",
            [conversation],
        )?;
        Ok(())
    }
}
