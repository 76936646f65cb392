//! The profile's own tables: the account, conversations, message history and the set of
//! server messages already processed. MLS state lives beside them, kept by OpenMLS.

pub mod outbox;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

pub use outbox::Delivery;

use kith_proto::{AccountKind, QueueEntry, Secret};

/// The account this profile belongs to.
#[derive(Clone, Debug)]
pub struct Profile {
    pub server: String,
    pub username: String,
    pub kind: AccountKind,
    pub device_id: u64,
    /// The bearer secret: `[redacted]` in `Debug`, wiped when dropped.
    pub(crate) token: Secret,
    pub signature_key: Vec<u8>,
    /// A CA certificate (PEM) trusted for this server, besides the web roots.
    pub ca_cert: Option<String>,
}

impl Profile {
    pub(crate) fn bearer(&self) -> Secret {
        Secret::new(format!("{}:{}", self.device_id, self.token.expose()))
    }
}

/// What kind of conversation a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

    fn parse(s: &str) -> Self {
        match s {
            "group" => ConversationKind::Group,
            "story" => ConversationKind::Story,
            "system" => ConversationKind::System,
            _ => ConversationKind::Direct,
        }
    }
}

/// One message of the local history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    pub failure: Option<String>,
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kith_profile (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    server TEXT NOT NULL,
    username TEXT NOT NULL,
    kind TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    token TEXT NOT NULL,
    signature_key BLOB NOT NULL,
    ca_cert TEXT
);
-- A token rotation sent to the server whose outcome is not known yet: the new token and the
-- signature that asks for it. It may be in force, or not (yet).
CREATE TABLE IF NOT EXISTS kith_pending_rotation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    token TEXT NOT NULL,
    signature BLOB NOT NULL
);
-- A commit or a request to leave sent to the server whose outcome is not known yet (no answer
-- after every attempt): posted again before anything else is done in that conversation. A
-- commit's staged state stays in the group meanwhile.
CREATE TABLE IF NOT EXISTS kith_unsure_handshakes (
    conversation TEXT PRIMARY KEY,
    leave INTEGER NOT NULL,
    request TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_conversations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    peer TEXT,
    name TEXT,
    created_at INTEGER NOT NULL,
    left_at INTEGER,
    timer_seconds INTEGER
);
CREATE INDEX IF NOT EXISTS kith_conversations_peer ON kith_conversations (peer, created_at);
CREATE TABLE IF NOT EXISTS kith_missed (
    conversation TEXT PRIMARY KEY,
    acked INTEGER NOT NULL DEFAULT 0,
    unacked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS kith_epoch_timers (
    conversation TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    timer_seconds INTEGER,
    PRIMARY KEY (conversation, epoch)
);
CREATE TABLE IF NOT EXISTS kith_messages (
    id TEXT PRIMARY KEY,
    conversation TEXT NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    outgoing INTEGER NOT NULL,
    expires_at INTEGER,
    from_business INTEGER NOT NULL DEFAULT 0,
    verified INTEGER NOT NULL DEFAULT 0,
    shown INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS kith_messages_conversation ON kith_messages (conversation, sent_at);
CREATE INDEX IF NOT EXISTS kith_messages_expiry ON kith_messages (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS kith_contacts (
    username TEXT PRIMARY KEY,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_blocked (
    username TEXT PRIMARY KEY,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_franks (
    message_id TEXT PRIMARY KEY,
    conversation TEXT NOT NULL,
    sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    server_time INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    tag BLOB NOT NULL,
    core BLOB NOT NULL,
    fk BLOB NOT NULL,
    sig BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_processed (
    message_id INTEGER PRIMARY KEY,
    processed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_held (
    message_id INTEGER PRIMARY KEY,
    conversation TEXT NOT NULL,
    entry TEXT NOT NULL,
    held_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kith_held_conversation ON kith_held (conversation, message_id);
CREATE TABLE IF NOT EXISTS kith_read (
    chat TEXT PRIMARY KEY,
    read_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_device_keys (
    username TEXT NOT NULL,
    credential_key BLOB NOT NULL,
    device_id INTEGER NOT NULL,
    PRIMARY KEY (username, credential_key)
);
-- When upkeep steps last ran (a fresh last-resort KeyPackage, say).
CREATE TABLE IF NOT EXISTS kith_upkeep (
    what TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
-- What kind of account each looked-up account is (from the same device list as its keys).
CREATE TABLE IF NOT EXISTS kith_account_kinds (
    username TEXT PRIMARY KEY,
    business INTEGER NOT NULL
);
";

pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    for (column, ddl) in outbox::MESSAGE_COLUMNS {
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('kith_messages') WHERE name = ?1")?
            .exists([column])?;
        if !has {
            conn.execute_batch(ddl)?;
        }
    }
    conn.execute_batch(outbox::SCHEMA)?;
    // Profiles made before settings were epoch state.
    for (column, ddl) in [
        ("settings_record", "ALTER TABLE kith_conversations ADD COLUMN settings_record BLOB"),
        ("staged_settings", "ALTER TABLE kith_conversations ADD COLUMN staged_settings BLOB"),
        ("removed_by", "ALTER TABLE kith_conversations ADD COLUMN removed_by TEXT"),
    ] {
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('kith_conversations') WHERE name = ?1")?
            .exists([column])?;
        if !has {
            conn.execute_batch(ddl)?;
        }
    }
    let has_shown: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('kith_messages') WHERE name = 'shown'")?
        .exists([])?;
    if !has_shown {
        conn.execute_batch(
            "ALTER TABLE kith_messages ADD COLUMN shown INTEGER NOT NULL DEFAULT 1",
        )?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS kith_messages_unshown ON kith_messages (shown) WHERE shown = 0",
    )
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub fn load_profile(conn: &Connection) -> rusqlite::Result<Option<Profile>> {
    conn.query_row(
        "SELECT server, username, kind, device_id, token, signature_key, ca_cert
         FROM kith_profile WHERE id = 1",
        [],
        |r| {
            Ok(Profile {
                server: r.get(0)?,
                username: r.get(1)?,
                kind: AccountKind::parse(&r.get::<_, String>(2)?).unwrap_or_default(),
                device_id: u(r.get(3)?),
                token: Secret::new(r.get(4)?),
                signature_key: r.get(5)?,
                ca_cert: r.get(6)?,
            })
        },
    )
    .optional()
}

pub fn save_profile(conn: &Connection, p: &Profile) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO kith_profile (id, server, username, kind, device_id, token, signature_key,
            ca_cert)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            p.server,
            p.username,
            p.kind.as_str(),
            i(p.device_id),
            p.token.expose(),
            p.signature_key,
            p.ca_cert
        ],
    )?;
    Ok(())
}

pub fn set_token(conn: &Connection, token: &Secret) -> rusqlite::Result<()> {
    conn.execute("UPDATE kith_profile SET token = ?1 WHERE id = 1", params![token.expose()])?;
    Ok(())
}

/// Records (or, with `None`, forgets) a token rotation before it is sent: its new token and
/// its signature.
pub fn set_pending_rotation(
    conn: &Connection,
    rotation: Option<(&Secret, &[u8])>,
) -> rusqlite::Result<()> {
    match rotation {
        Some((token, signature)) => conn.execute(
            "INSERT INTO kith_pending_rotation (id, token, signature) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET token = excluded.token, signature = excluded.signature",
            params![token.expose(), signature],
        )?,
        None => conn.execute("DELETE FROM kith_pending_rotation", [])?,
    };
    Ok(())
}

pub fn pending_rotation(conn: &Connection) -> rusqlite::Result<Option<(Secret, Vec<u8>)>> {
    conn.query_row("SELECT token, signature FROM kith_pending_rotation WHERE id = 1", [], |r| {
        Ok((Secret::new(r.get::<_, String>(0)?), r.get::<_, Vec<u8>>(1)?))
    })
    .optional()
}

/// Keeps a handshake whose outcome is unknown (see `kith_unsure_handshakes`); `leave` for a
/// request to leave, else a commit.
pub fn keep_unsure(
    conn: &Connection,
    conversation: &str,
    kind: Unsure,
    request: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO kith_unsure_handshakes (conversation, leave, request) VALUES (?1, ?2, ?3)
         ON CONFLICT (conversation) DO UPDATE SET leave = excluded.leave, request = excluded.request",
        params![conversation, kind as i64, request],
    )?;
    Ok(())
}

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

/// The request kept for a conversation, and what it is.
pub fn unsure(conn: &Connection, conversation: &str) -> rusqlite::Result<Option<(Unsure, String)>> {
    conn.query_row(
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

/// Most missed messages kept per conversation: whatever a server says, a count stays a number.
const MISSED_CAP: u64 = 1_000_000;

/// Messages the server says this device missed (its queue was full), as its last page said:
/// kept beside what was acknowledged before, so a lost acknowledgement (the server says the
/// same again) is never counted twice.
pub fn note_missed(conn: &Connection, told: &[kith_proto::Missed]) -> rusqlite::Result<()> {
    for m in told {
        conn.execute(
            "INSERT INTO kith_missed (conversation, unacked) VALUES (?1, ?2)
             ON CONFLICT (conversation) DO UPDATE SET unacked = excluded.unacked",
            params![m.conversation_id, i(m.count.min(MISSED_CAP))],
        )?;
    }
    Ok(())
}

/// The server took back these counts: they are this device's to tell, until a sync hands them
/// to the user (a catch-up inside another command takes them in too).
pub fn missed_acknowledged(conn: &Connection, told: &[kith_proto::Missed]) -> rusqlite::Result<()> {
    for m in told {
        conn.execute(
            "UPDATE kith_missed SET acked = MIN(acked + unacked, ?2), unacked = 0
             WHERE conversation = ?1",
            params![m.conversation_id, i(MISSED_CAP)],
        )?;
    }
    Ok(())
}

/// The acknowledged missed counts not handed to the user yet, forgotten here.
pub fn take_missed(conn: &Connection) -> rusqlite::Result<Vec<kith_proto::Missed>> {
    let missed = conn
        .prepare(
            "SELECT conversation, acked FROM kith_missed WHERE acked > 0 ORDER BY conversation",
        )?
        .query_map([], |r| {
            Ok(kith_proto::Missed { conversation_id: r.get(0)?, count: u(r.get(1)?) })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    conn.execute("UPDATE kith_missed SET acked = 0", [])?;
    conn.execute("DELETE FROM kith_missed WHERE acked = 0 AND unacked = 0", [])?;
    Ok(missed)
}

/// Forgets a conversation entirely: its row, its messages, its epochs' timers (a creation the
/// server refused).
pub fn forget_conversation(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    delete_messages(conn, id)?;
    conn.execute("DELETE FROM kith_epoch_timers WHERE conversation = ?1", params![id])?;
    conn.execute("DELETE FROM kith_conversations WHERE id = ?1", params![id])?;
    Ok(())
}

pub fn unsure_conversations(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT conversation FROM kith_unsure_handshakes ORDER BY conversation")?
        .query_map([], |r| r.get(0))?
        .collect()
}

pub fn forget_unsure(conn: &Connection, conversation: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM kith_unsure_handshakes WHERE conversation = ?1", [conversation])?;
    Ok(())
}

pub fn set_ca_cert(conn: &Connection, pem: &str) -> rusqlite::Result<()> {
    conn.execute("UPDATE kith_profile SET ca_cert = ?1 WHERE id = 1", params![pem])?;
    Ok(())
}

pub fn add_conversation(conn: &Connection, c: &Conversation) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO kith_conversations (id, kind, peer, name, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![c.id, c.kind.as_str(), c.peer, c.name, i(c.created_at)],
    )?;
    Ok(())
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

pub fn conversation(conn: &Connection, id: &str) -> rusqlite::Result<Option<Conversation>> {
    conn.prepare_cached(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM kith_conversations WHERE id = ?1"
    ))?
    .query_row(params![id], conversation_row)
    .optional()
}

/// The newest 1:1 conversation with `peer` this device is still in.
pub fn direct_with(conn: &Connection, peer: &str) -> rusqlite::Result<Option<Conversation>> {
    conn.query_row(
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
pub fn groups(conn: &Connection) -> rusqlite::Result<Vec<Conversation>> {
    conn.prepare(&format!(
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
    conn: &Connection,
    id: &str,
    epoch: u64,
    settings: &kith_proto::settings::Settings,
    record: Option<&[u8]>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE kith_conversations SET name = ?2, timer_seconds = ?3, settings_record = ?4
         WHERE id = ?1",
        params![id, settings.name, settings.timer.map(i), record],
    )?;
    note_epoch_timer(conn, id, epoch, settings.timer)
}

/// Records the timer in force at `epoch` (and forgets those of long-past epochs).
pub fn note_epoch_timer(
    conn: &Connection,
    id: &str,
    epoch: u64,
    timer: Option<u64>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO kith_epoch_timers (conversation, epoch, timer_seconds)
         VALUES (?1, ?2, ?3)",
        params![id, i(epoch), timer.map(i)],
    )?;
    conn.execute(
        "DELETE FROM kith_epoch_timers WHERE conversation = ?1 AND epoch < ?2",
        params![id, i(epoch.saturating_sub(EPOCH_TIMERS_KEPT))],
    )?;
    Ok(())
}

/// Epochs back whose timer is kept: more than a device keeps the keys of.
const EPOCH_TIMERS_KEPT: u64 = 8;

/// The timer in force at `epoch`, if this device knows it (`Some(None)`: off).
pub fn epoch_timer(
    conn: &Connection,
    id: &str,
    epoch: u64,
) -> rusqlite::Result<Option<Option<u64>>> {
    conn.prepare_cached(
        "SELECT timer_seconds FROM kith_epoch_timers WHERE conversation = ?1 AND epoch = ?2",
    )?
    .query_row(params![id, i(epoch)], |r| Ok(r.get::<_, Option<i64>>(0)?.map(u)))
    .optional()
}

/// The record of the conversation's current settings, if this device holds it.
pub fn settings_record(conn: &Connection, id: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row(
        "SELECT settings_record FROM kith_conversations WHERE id = ?1",
        params![id],
        |r| r.get(0),
    )
    .optional()
    .map(Option::flatten)
}

/// Settings a commit of this device's carries, kept until the server's answer says whether
/// they became the conversation's (see [`take_staged_settings`]).
pub fn stage_settings(conn: &Connection, id: &str, record: Option<&[u8]>) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE kith_conversations SET staged_settings = ?2 WHERE id = ?1",
        params![id, record],
    )?;
    Ok(())
}

/// The settings staged with this device's commit, forgotten here.
pub fn take_staged_settings(conn: &Connection, id: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    let staged: Option<Vec<u8>> = conn
        .query_row(
            "SELECT staged_settings FROM kith_conversations WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    stage_settings(conn, id, None)?;
    Ok(staged)
}

/// This device is in the conversation again (invited back after leaving or being removed).
pub fn set_rejoined(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE kith_conversations SET left_at = NULL, removed_by = NULL WHERE id = ?1",
        params![id],
    )?;
    Ok(())
}

/// This device is out of the conversation by someone else's doing: the admin who removed it
/// from a group, or the other person of a 1:1, who deleted the chat.
pub fn set_removed_by(conn: &Connection, id: &str, at: u64, by: &str) -> rusqlite::Result<()> {
    set_left(conn, id, at)?;
    conn.execute("UPDATE kith_conversations SET removed_by = ?2 WHERE id = ?1", params![id, by])?;
    Ok(())
}

/// Who put this device out of the conversation (see [`set_removed_by`]); `None` if it left on
/// its own, or is still in.
pub fn removed_by(conn: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT removed_by FROM kith_conversations WHERE id = ?1", params![id], |r| {
        r.get(0)
    })
    .optional()
    .map(Option::flatten)
}

pub fn set_left(conn: &Connection, id: &str, at: u64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE kith_conversations SET left_at = ?2 WHERE id = ?1 AND left_at IS NULL",
        params![id, i(at)],
    )?;
    Ok(())
}

/// Stores a message unless one with its id is stored already. Returns whether it was new. A
/// received one is *unshown* until [`take_unshown`] hands it to the caller.
pub fn insert_message(conn: &Connection, m: &Message) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO kith_messages
         (id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
          from_business, verified, shown, state, failure)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?8, ?12, ?13)",
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
            m.failure
        ])?;
    Ok(n == 1)
}

/// Every received message not handed to the caller yet, in the order they were stored, now
/// marked as handed over.
/// Messages not handed over yet, oldest first, without marking them.
pub fn unshown(conn: &Connection, now: u64) -> rusqlite::Result<Vec<Message>> {
    conn.prepare_cached(
        "SELECT id, conversation, kind, sender, text, sent_at, received_at, outgoing,
                expires_at, from_business, verified, state, failure
         FROM kith_messages WHERE shown = 0 AND (expires_at IS NULL OR expires_at > ?1)
         ORDER BY rowid",
    )?
    .query_map(params![i(now)], message_row)?
    .collect()
}

pub fn mark_shown(conn: &Connection, ids: &[&str]) -> rusqlite::Result<()> {
    let mut update = conn.prepare_cached("UPDATE kith_messages SET shown = 1 WHERE id = ?1")?;
    for id in ids {
        update.execute(params![id])?;
    }
    Ok(())
}

pub fn take_unshown(conn: &Connection, now: u64) -> rusqlite::Result<Vec<Message>> {
    let messages = unshown(conn, now)?;
    if !messages.is_empty() {
        conn.prepare_cached("UPDATE kith_messages SET shown = 1 WHERE shown = 0")?.execute([])?;
    }
    Ok(messages)
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
    })
}

/// One message of the history, by id.
pub fn message(conn: &Connection, id: &str) -> rusqlite::Result<Option<Message>> {
    conn.prepare_cached(
        "SELECT id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
                from_business, verified, state, failure
         FROM kith_messages WHERE id = ?1",
    )?
    .query_row(params![id], message_row)
    .optional()
}

/// Every message exchanged with `peer` in 1:1 conversations, oldest first.
pub fn history_with(conn: &Connection, peer: &str, now: u64) -> rusqlite::Result<Vec<Message>> {
    conn.prepare(
        "SELECT m.id, m.conversation, m.kind, m.sender, m.text, m.sent_at, m.received_at, m.outgoing,
                m.expires_at, m.from_business, m.verified, m.state, m.failure
         FROM kith_messages m JOIN kith_conversations c ON c.id = m.conversation
         WHERE c.kind = 'direct' AND c.peer = ?1 AND (m.expires_at IS NULL OR m.expires_at > ?2)
         ORDER BY m.sent_at, m.received_at, m.id",
    )?
    .query_map(params![peer, i(now)], message_row)?
    .collect()
}

/// Every message of one conversation, oldest first.
pub fn history_of(
    conn: &Connection,
    conversation: &str,
    now: u64,
) -> rusqlite::Result<Vec<Message>> {
    conn.prepare(
        "SELECT id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
                from_business, verified, state, failure
         FROM kith_messages WHERE conversation = ?1 AND (expires_at IS NULL OR expires_at > ?2)
         ORDER BY sent_at, received_at, id",
    )?
    .query_map(params![conversation, i(now)], message_row)?
    .collect()
}

pub fn was_processed(conn: &Connection, message_id: u64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM kith_processed WHERE message_id = ?1")?
        .query_row(params![i(message_id)], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn mark_processed(conn: &Connection, message_id: u64, now: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO kith_processed (message_id, processed_at) VALUES (?1, ?2)",
    )?
    .execute(params![i(message_id), i(now)])?;
    Ok(())
}

/// Keeps an entry that arrived before what it depends on (see `ClientError::NotYet`).
pub fn hold(conn: &Connection, entry: &QueueEntry, now: u64) -> rusqlite::Result<()> {
    let json = serde_json::to_string(entry)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO kith_held (message_id, conversation, entry, held_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![i(entry.message_id), entry.conversation_id, json, i(now)])?;
    Ok(())
}

/// Held invitations (Welcomes) from `sender`, as MLS named them when they were held.
pub fn held_invitations_from(conn: &Connection, sender: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT COUNT(*) FROM kith_held
         WHERE json_extract(entry, '$.kind') = 'welcome' AND json_extract(entry, '$.sender') = ?1",
    )?
    .query_row(params![sender], |r| r.get::<_, i64>(0))
    .map(u)
}

/// Every held entry of a conversation, oldest first (they stay held until [`unhold`]).
pub fn held(conn: &Connection, conversation: &str) -> rusqlite::Result<Vec<QueueEntry>> {
    let rows: Vec<String> = conn
        .prepare_cached("SELECT entry FROM kith_held WHERE conversation = ?1 ORDER BY message_id")?
        .query_map(params![conversation], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows.iter().filter_map(|json| serde_json::from_str(json).ok()).collect())
}

/// Held invitations (Welcomes) from contacts, oldest first.
pub fn held_invitations_from_contacts(conn: &Connection) -> rusqlite::Result<Vec<QueueEntry>> {
    let rows: Vec<String> = conn
        .prepare_cached("SELECT entry FROM kith_held ORDER BY message_id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .iter()
        .filter_map(|json| serde_json::from_str::<QueueEntry>(json).ok())
        .filter(|e| e.kind == kith_proto::EntryKind::Welcome)
        .filter(|e| is_contact(conn, &e.sender).unwrap_or(false))
        .collect())
}

/// How many entries are held, and the ids of the oldest `over` of them past `max`.
pub fn held_over(conn: &Connection, max: u64) -> rusqlite::Result<Vec<u64>> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM kith_held", [], |r| r.get(0))?;
    let over = u(n).saturating_sub(max);
    if over == 0 {
        return Ok(Vec::new());
    }
    conn.prepare_cached("SELECT message_id FROM kith_held ORDER BY held_at, message_id LIMIT ?1")?
        .query_map(params![i(over)], |r| r.get::<_, i64>(0).map(u))?
        .collect()
}

pub fn unhold(conn: &Connection, message_id: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM kith_held WHERE message_id = ?1")?
        .execute(params![i(message_id)])?;
    Ok(())
}

/// Runs transaction control through the statement cache (it is issued per message).
pub fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// This device's story channel (the one it owns), if it has one.
pub fn own_story_channel(conn: &Connection, me: &str) -> rusqlite::Result<Option<Conversation>> {
    conn.query_row(
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

/// Stories not yet expired, newest first.
/// Live stories, newest first, leaving out those of accounts this device blocks (kept, so they
/// can still be reported, until they expire).
pub fn stories(conn: &Connection, now: u64) -> rusqlite::Result<Vec<Message>> {
    conn.prepare(
        "SELECT id, conversation, kind, sender, text, sent_at, received_at, outgoing, expires_at,
                from_business, verified, state, failure
         FROM kith_messages WHERE kind = 'story' AND (expires_at IS NULL OR expires_at > ?1)
           AND sender NOT IN (SELECT username FROM kith_blocked)
         ORDER BY sent_at DESC, id",
    )?
    .query_map(params![i(now)], message_row)?
    .collect()
}

/// Deletes the stories `author` posted. Returns how many went.
pub fn delete_stories_of(conn: &Connection, author: &str) -> rusqlite::Result<usize> {
    let gone =
        conn.execute("DELETE FROM kith_messages WHERE kind = 'story' AND sender = ?1", [author])?;
    if gone > 0 {
        forget_orphan_franks(conn)?;
    }
    Ok(gone)
}

/// Deletes every message whose time is up. Returns how many went.
pub fn purge_expired(conn: &Connection, now: u64) -> rusqlite::Result<usize> {
    let gone = conn.execute(
        "DELETE FROM kith_messages WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        params![i(now)],
    )?;
    if gone > 0 {
        forget_orphan_franks(conn)?;
    }
    Ok(gone)
}

/// Deletes a conversation's whole history.
pub fn delete_messages(conn: &Connection, conversation: &str) -> rusqlite::Result<usize> {
    let gone =
        conn.execute("DELETE FROM kith_messages WHERE conversation = ?1", params![conversation])?;
    forget_orphan_franks(conn)?;
    Ok(gone)
}

/// What a report of one received message needs (it holds the message's text).
#[derive(Clone, Debug)]
pub struct Frank {
    pub message_id: String,
    pub conversation: String,
    pub sender: String,
    pub sender_device: u64,
    pub server_time: u64,
    pub key_id: u32,
    pub epoch: u64,
    pub tag: Vec<u8>,
    pub core: Vec<u8>,
    pub fk: Vec<u8>,
    pub sig: Vec<u8>,
}

pub fn store_frank(conn: &Connection, f: &Frank) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO kith_franks (message_id, conversation, sender, sender_device,
            server_time, key_id, epoch, tag, core, fk, sig)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            f.message_id,
            f.conversation,
            f.sender,
            i(f.sender_device),
            i(f.server_time),
            f.key_id,
            i(f.epoch),
            f.tag,
            f.core,
            f.fk,
            f.sig
        ],
    )?;
    Ok(())
}

pub fn frank(conn: &Connection, message_id: &str) -> rusqlite::Result<Option<Frank>> {
    conn.query_row(
        "SELECT message_id, conversation, sender, sender_device, server_time, key_id, epoch, tag,
                core, fk, sig
         FROM kith_franks WHERE message_id = ?1",
        params![message_id],
        |r| {
            Ok(Frank {
                message_id: r.get(0)?,
                conversation: r.get(1)?,
                sender: r.get(2)?,
                sender_device: u(r.get(3)?),
                server_time: u(r.get(4)?),
                key_id: r.get(5)?,
                epoch: u(r.get(6)?),
                tag: r.get(7)?,
                core: r.get(8)?,
                fk: r.get(9)?,
                sig: r.get(10)?,
            })
        },
    )
    .optional()
}

/// A frank holds the message's text: it goes when the message goes.
fn forget_orphan_franks(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM kith_franks WHERE message_id NOT IN (SELECT id FROM kith_messages)",
        [],
    )
}

pub fn set_blocked(
    conn: &Connection,
    username: &str,
    blocked: bool,
    now: u64,
) -> rusqlite::Result<()> {
    if blocked {
        conn.execute(
            "INSERT OR IGNORE INTO kith_blocked (username, since) VALUES (?1, ?2)",
            params![username, i(now)],
        )?;
    } else {
        conn.execute("DELETE FROM kith_blocked WHERE username = ?1", params![username])?;
    }
    Ok(())
}

pub fn is_blocked(conn: &Connection, username: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM kith_blocked WHERE username = ?1")?
        .query_row(params![username], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn blocked(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT username FROM kith_blocked ORDER BY username")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Folds the WAL into the database and truncates it, so deleted rows (already overwritten in
/// place by `secure_delete`) leave no copy behind in the WAL file.
pub fn scrub(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// Records a contact; returns whether it is new.
pub fn add_contact(conn: &Connection, username: &str, since: u64) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "INSERT OR IGNORE INTO kith_contacts (username, since) VALUES (?1, ?2)",
        params![username, i(since)],
    )? == 1)
}

/// Every contact, blocked ones included: who may stay in the story channel.
pub fn audience(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT username FROM kith_contacts ORDER BY username")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Whether `username` is a contact that this device does not block.
pub fn is_contact(conn: &Connection, username: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM kith_contacts WHERE username = ?1
             AND username NOT IN (SELECT username FROM kith_blocked)",
        )?
        .query_row(params![username], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn remove_contact(conn: &Connection, username: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM kith_contacts WHERE username = ?1", params![username])? == 1)
}

/// Contacts and since when, by name — leaving out those this device blocks (they stay in the
/// table, and in the story channel, until unblocked or deleted).
pub fn contacts(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    conn.prepare(
        "SELECT username, since FROM kith_contacts
         WHERE username NOT IN (SELECT username FROM kith_blocked) ORDER BY username",
    )?
    .query_map([], |r| Ok((r.get(0)?, u(r.get(1)?))))?
    .collect()
}

/// Every 1:1 conversation with `peer` this device is still in.
pub fn directs_with(conn: &Connection, peer: &str) -> rusqlite::Result<Vec<Conversation>> {
    conn.prepare(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM kith_conversations
         WHERE kind = 'direct' AND peer = ?1"
    ))?
    .query_map(params![peer], conversation_row)?
    .collect()
}

/// Records whether `username` is a business (as its device list said).
pub fn set_account_kind(conn: &Connection, username: &str, business: bool) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO kith_account_kinds (username, business) VALUES (?1, ?2)",
    )?
    .execute(params![username, business])?;
    Ok(())
}

/// Whether `username` is a business, if its device list was ever fetched.
pub fn account_is_business(conn: &Connection, username: &str) -> rusqlite::Result<Option<bool>> {
    conn.prepare_cached("SELECT business FROM kith_account_kinds WHERE username = ?1")?
        .query_row(params![username], |r| r.get(0))
        .optional()
}

/// Whether this device has an open 1:1 conversation with `peer`.
pub fn has_open_direct(conn: &Connection, peer: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM kith_conversations WHERE kind = 'direct' AND peer = ?1 AND left_at IS NULL",
    )?
    .exists(params![peer])
}

/// When the upkeep step `what` last ran (Unix ms), if ever.
pub fn upkeep_at(conn: &Connection, what: &str) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached("SELECT at FROM kith_upkeep WHERE what = ?1")?
        .query_row(params![what], |r| r.get::<_, i64>(0))
        .optional()
        .map(|v| v.map(u))
}

/// Records that the upkeep step `what` ran at `at`.
pub fn set_upkeep_at(conn: &Connection, what: &str, at: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO kith_upkeep (what, at) VALUES (?1, ?2)")?
        .execute(params![what, i(at)])?;
    Ok(())
}
