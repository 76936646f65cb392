//! Conversations this device is (or was) in: their kind, peer, settings (name and timer, as
//! of an epoch), and who put this device out of them.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{LocalStore, i, u};

/// What kind of conversation a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(rename = "Kind"))]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
    Story,
    System,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
            ConversationKind::Story => "story",
            ConversationKind::System => "system",
        }
    }

    pub(super) fn parse(s: &str) -> Self {
        match s {
            "group" => ConversationKind::Group,
            "story" => ConversationKind::Story,
            "system" => ConversationKind::System,
            _ => ConversationKind::Direct,
        }
    }
}

/// A conversation this device is (or was) in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    pub kind: ConversationKind,
    /// For a 1:1 conversation, the other account.
    pub peer: Option<String>,
    /// For a group, its name as of the current epoch (known only to members).
    pub name: Option<String>,
    pub created_at: u64,
    /// This device left or was removed: nothing more can be sent or received.
    pub left: bool,
    /// Disappearing messages, as of the current epoch: each message is deleted this long after
    /// the server accepted it.
    pub timer_seconds: Option<u64>,
}

const CONVERSATION_COLUMNS: &str = "id, kind, peer, name, created_at, left_at, timer_seconds";

fn conversation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: r.get(0)?,
        kind: ConversationKind::parse(&r.get::<_, String>(1)?),
        peer: r.get(2)?,
        name: r.get(3)?,
        created_at: u(r.get(4)?),
        left: r.get::<_, Option<i64>>(5)?.is_some(),
        timer_seconds: r.get::<_, Option<i64>>(6)?.map(u),
    })
}

/// Epochs back whose timer is kept: more than a device keeps the keys of.
const EPOCH_TIMERS_KEPT: u64 = 8;

impl LocalStore {
    /// Forgets a conversation entirely: its row, its messages, its epochs' timers (a creation the
    /// server refused).
    /// The ids of the conversations this device has not left.
    /// Notes that `username`, a member of conversation `id`, started again after its recovery.
    pub fn note_recovered(&self, id: &str, username: &str) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO kith_recovered (conversation, username) VALUES (?1, ?2)",
            )?
            .execute(params![id, username])?;
        Ok(())
    }

    /// The (conversation, account) pairs noted by [`LocalStore::note_recovered`].
    pub fn recovered(&self) -> rusqlite::Result<Vec<(String, String)>> {
        self.conn
            .prepare_cached(
                "SELECT conversation, username FROM kith_recovered ORDER BY conversation",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    }

    pub fn forget_recovered(&self, id: &str, username: &str) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM kith_recovered WHERE conversation = ?1 AND username = ?2")?
            .execute(params![id, username])?;
        Ok(())
    }

    pub fn active_conversation_ids(&self) -> rusqlite::Result<Vec<String>> {
        self.conn
            .prepare_cached("SELECT id FROM kith_conversations WHERE left_at IS NULL ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect()
    }

    pub fn forget_conversation(&self, id: &str) -> rusqlite::Result<()> {
        self.delete_messages(id)?;
        self.conn.execute("DELETE FROM kith_epoch_timers WHERE conversation = ?1", params![id])?;
        self.conn.execute("DELETE FROM kith_conversations WHERE id = ?1", params![id])?;
        Ok(())
    }

    pub fn add_conversation(&self, c: &Conversation) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO kith_conversations (id, kind, peer, name, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.id, c.kind.as_str(), c.peer, c.name, i(c.created_at)],
        )?;
        Ok(())
    }

    pub fn conversation(&self, id: &str) -> rusqlite::Result<Option<Conversation>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {CONVERSATION_COLUMNS} FROM kith_conversations WHERE id = ?1"
            ))?
            .query_row(params![id], conversation_row)
            .optional()
    }

    /// The newest 1:1 conversation with `peer` this device is still in.
    pub fn direct_with(&self, peer: &str) -> rusqlite::Result<Option<Conversation>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM kith_conversations
             WHERE kind = 'direct' AND peer = ?1 AND left_at IS NULL
             ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
                params![peer],
                conversation_row,
            )
            .optional()
    }

    /// Every group, newest first.
    pub fn groups(&self) -> rusqlite::Result<Vec<Conversation>> {
        self.conn
            .prepare(&format!(
                "SELECT {CONVERSATION_COLUMNS} FROM kith_conversations WHERE kind = 'group'
         ORDER BY created_at DESC, id"
            ))?
            .query_map([], conversation_row)?
            .collect()
    }

    /// The conversation's settings as of `epoch` (see [`kith_proto::settings`]): its name and
    /// timer, and the record they were committed as (`None` when this device could not read it,
    /// or the conversation predates settings in the epoch). The timer of each of the last few
    /// epochs is kept too, for messages sent in an epoch the group has since left.
    pub fn set_settings(
        &self,
        id: &str,
        epoch: u64,
        settings: &kith_proto::settings::Settings,
        record: Option<&[u8]>,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE kith_conversations SET name = ?2, timer_seconds = ?3, settings_record = ?4
         WHERE id = ?1",
            params![id, settings.name, settings.timer.map(i), record],
        )?;
        self.note_epoch_timer(id, epoch, settings.timer)
    }

    /// Records the timer in force at `epoch` (and forgets those of long-past epochs).
    pub fn note_epoch_timer(
        &self,
        id: &str,
        epoch: u64,
        timer: Option<u64>,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO kith_epoch_timers (conversation, epoch, timer_seconds)
         VALUES (?1, ?2, ?3)",
            params![id, i(epoch), timer.map(i)],
        )?;
        self.conn.execute(
            "DELETE FROM kith_epoch_timers WHERE conversation = ?1 AND epoch < ?2",
            params![id, i(epoch.saturating_sub(EPOCH_TIMERS_KEPT))],
        )?;
        Ok(())
    }

    /// The timer in force at `epoch`, if this device knows it (`Some(None)`: off).
    pub fn epoch_timer(&self, id: &str, epoch: u64) -> rusqlite::Result<Option<Option<u64>>> {
        self.conn.prepare_cached(
        "SELECT timer_seconds FROM kith_epoch_timers WHERE conversation = ?1 AND epoch = ?2",
    )?
    .query_row(params![id, i(epoch)], |r| Ok(r.get::<_, Option<i64>>(0)?.map(u)))
    .optional()
    }

    /// The record of the conversation's current settings, if this device holds it.
    pub fn settings_record(&self, id: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn
            .query_row(
                "SELECT settings_record FROM kith_conversations WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
    }

    /// Settings a commit of this device's carries, kept until the server's answer says whether
    /// they became the conversation's (see [`take_staged_settings`]).
    pub fn stage_settings(&self, id: &str, record: Option<&[u8]>) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE kith_conversations SET staged_settings = ?2 WHERE id = ?1",
            params![id, record],
        )?;
        Ok(())
    }

    /// The settings staged with this device's commit, forgotten here.
    pub fn take_staged_settings(&self, id: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        let staged: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT staged_settings FROM kith_conversations WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        self.stage_settings(id, None)?;
        Ok(staged)
    }

    /// This device is in the conversation again (invited back after leaving or being removed).
    pub fn set_rejoined(&self, id: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE kith_conversations SET left_at = NULL, removed_by = NULL WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// This device is out of the conversation by someone else's doing: the admin who removed it
    /// from a group, or the other person of a 1:1, who deleted the chat.
    pub fn set_removed_by(&self, id: &str, at: u64, by: &str) -> rusqlite::Result<()> {
        self.set_left(id, at)?;
        self.conn.execute(
            "UPDATE kith_conversations SET removed_by = ?2 WHERE id = ?1",
            params![id, by],
        )?;
        Ok(())
    }

    /// Who put this device out of the conversation (see [`set_removed_by`]); `None` if it left on
    /// its own, or is still in.
    pub fn removed_by(&self, id: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT removed_by FROM kith_conversations WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
    }

    pub fn set_left(&self, id: &str, at: u64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE kith_conversations SET left_at = ?2 WHERE id = ?1 AND left_at IS NULL",
            params![id, i(at)],
        )?;
        Ok(())
    }

    /// This device's story channel (the one it owns), if it has one.
    pub fn own_story_channel(&self, me: &str) -> rusqlite::Result<Option<Conversation>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM kith_conversations
             WHERE kind = 'story' AND peer = ?1 AND left_at IS NULL
             ORDER BY created_at DESC LIMIT 1"
                ),
                params![me],
                conversation_row,
            )
            .optional()
    }

    /// Every 1:1 conversation with `peer` this device is still in.
    pub fn directs_with(&self, peer: &str) -> rusqlite::Result<Vec<Conversation>> {
        self.conn
            .prepare(&format!(
                "SELECT {CONVERSATION_COLUMNS} FROM kith_conversations
         WHERE kind = 'direct' AND peer = ?1"
            ))?
            .query_map(params![peer], conversation_row)?
            .collect()
    }

    /// Whether this device has an open 1:1 conversation with `peer`.
    pub fn has_open_direct(&self, peer: &str) -> rusqlite::Result<bool> {
        self.conn.prepare_cached(
        "SELECT 1 FROM kith_conversations WHERE kind = 'direct' AND peer = ?1 AND left_at IS NULL",
    )?
    .exists(params![peer])
    }
}
