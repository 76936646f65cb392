//! The profile's own tables, with one owner: [`LocalStore`]. MLS state lives beside them in
//! the same SQLite file, kept by OpenMLS through the same connection ([`LocalStore::conn`]).
//!
//! One file per group of tables:
//! - [`profile`]: the account, its token, a token rotation in flight, upkeep times;
//! - [`conversations`]: conversations, their settings and per-epoch timers;
//! - [`messages`]: the history, what is not handed to the caller yet, expiry;
//! - [`outbox`]: the state of this device's own messages (sending, sent, failed);
//! - [`processed`]: server entries processed once, and those held for later;
//! - [`unsure`]: handshakes whose outcome is unknown;
//! - [`missed`]: what the server says this device missed;
//! - [`franks`]: the material a report of a received message needs;
//! - [`people`]: contacts, blocks, which accounts are businesses, their device keys;
//! - [`chats`]: when each chat was last read.

pub mod chats;
pub mod conversations;
pub mod franks;
pub mod history;
pub mod kt;
pub mod messages;
pub mod missed;
pub mod outbox;
pub mod people;
pub mod processed;
pub mod profile;
pub mod unsure;

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};

pub use conversations::{Conversation, ConversationKind};
pub use franks::Frank;
pub use history::History;
pub use messages::{Message, message_row};
pub use outbox::Delivery;
pub use profile::Profile;
pub use unsure::Unsure;

/// The profile's database: the only holder of its connection. Every read and write of the
/// SDK's own tables is a method here; OpenMLS borrows the connection through [`Self::conn`].
pub struct LocalStore {
    conn: Connection,
}

impl LocalStore {
    /// Opens (creating if needed) the database in the profile folder `dir`, with OpenMLS's
    /// tables and ours brought up to date.
    pub fn open(dir: &Path) -> crate::ClientResult<Self> {
        let mut conn = Connection::open(dir.join("kith.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA secure_delete = ON;",
        )?;
        crate::mls::migrate(&mut conn)?;
        let store = LocalStore { conn };
        store.migrate()?;
        Ok(store)
    }

    /// The connection, for OpenMLS's storage provider (see [`crate::mls::Provider`]).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Begins a write transaction (`IMMEDIATE`: the write lock is taken at once, so it cannot
    /// fail half-way for want of it). It rolls back when dropped uncommitted, whichever path
    /// leaves early. Methods called meanwhile run inside it: it is this store's connection.
    pub(crate) fn transaction(&self) -> rusqlite::Result<Transaction<'_>> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
    }
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
-- Reads this device made that the account's other devices have not been told of yet.
CREATE TABLE IF NOT EXISTS kith_reads_to_share (
    chat TEXT PRIMARY KEY,
    read_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_device_keys (
    username TEXT NOT NULL,
    credential_key BLOB NOT NULL,
    device_id INTEGER NOT NULL,
    PRIMARY KEY (username, credential_key)
);
-- The account key's secret (an Ed25519 seed): it signs this account's device certificates.
-- Kept beside the device's own MLS keys, in the owner-only profile.
CREATE TABLE IF NOT EXISTS kith_account_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seed BLOB NOT NULL
);
-- This device's certificate, signed by the account key (see kith_proto::account).
CREATE TABLE IF NOT EXISTS kith_device_certificate (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    certificate BLOB NOT NULL
);
-- Each looked-up account's key, as the server lists it; NULL for an account without one.
CREATE TABLE IF NOT EXISTS kith_account_keys (
    username TEXT PRIMARY KEY,
    account_key BLOB
);
-- Devices the server lists as removed from their account: a leaf of one may still be in a
-- group a Welcome brings (accepted there, never added).
CREATE TABLE IF NOT EXISTS kith_removed_device_keys (
    username TEXT NOT NULL,
    credential_key BLOB NOT NULL,
    device_id INTEGER NOT NULL,
    PRIMARY KEY (username, credential_key)
);
-- Conversations whose member account started again after its recovery: its new devices are
-- put in (and its old leaves taken out) at the next settle step.
CREATE TABLE IF NOT EXISTS kith_recovered (
    conversation TEXT NOT NULL,
    username TEXT NOT NULL,
    PRIMARY KEY (conversation, username)
);
-- When upkeep steps last ran (a fresh last-resort KeyPackage, say).
CREATE TABLE IF NOT EXISTS kith_upkeep (
    what TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
-- The server's key directory (see kt.rs): its public keys, taken on first contact; every
-- root this device checked (signed, and following from the one before by an append-only
-- proof); the value each account had when it was last checked against it; and what failed.
CREATE TABLE IF NOT EXISTS kith_kt_keys (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    vrf BLOB NOT NULL,
    signing BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_kt_roots (
    epoch INTEGER PRIMARY KEY,
    root BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_kt_checked (
    username TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kith_kt_problems (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    username TEXT,
    own INTEGER NOT NULL,
    what TEXT NOT NULL,
    shown INTEGER NOT NULL DEFAULT 0
);
-- Roots other people's devices took (from their messages) for epochs newer than this
-- device's: checked against the server's at the next sync (a split view shows there).
CREATE TABLE IF NOT EXISTS kith_kt_peer_roots (
    epoch INTEGER NOT NULL,
    username TEXT NOT NULL,
    root BLOB NOT NULL,
    PRIMARY KEY (epoch, username)
);
-- Accounts this person verified in person (safety numbers), with the account key then.
CREATE TABLE IF NOT EXISTS kith_verified (
    username TEXT PRIMARY KEY,
    account_key BLOB NOT NULL,
    at INTEGER NOT NULL
);
-- What kind of account each looked-up account is (from the same device list as its keys).
CREATE TABLE IF NOT EXISTS kith_account_kinds (
    username TEXT PRIMARY KEY,
    business INTEGER NOT NULL
);
";

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl LocalStore {
    /// Creates or brings up to date this module's tables.
    fn migrate(&self) -> rusqlite::Result<()> {
        self.conn.execute_batch(SCHEMA)?;
        for (column, ddl) in outbox::MESSAGE_COLUMNS.into_iter().chain([messages::EVENT_COLUMN]) {
            let has: bool = self
                .conn
                .prepare("SELECT 1 FROM pragma_table_info('kith_messages') WHERE name = ?1")?
                .exists([column])?;
            if !has {
                self.conn.execute_batch(ddl)?;
            }
        }
        self.conn.execute_batch(outbox::SCHEMA)?;
        self.conn.execute_batch(history::SCHEMA)?;
        // Profiles made before settings were epoch state.
        for (column, ddl) in [
            ("settings_record", "ALTER TABLE kith_conversations ADD COLUMN settings_record BLOB"),
            ("staged_settings", "ALTER TABLE kith_conversations ADD COLUMN staged_settings BLOB"),
            ("removed_by", "ALTER TABLE kith_conversations ADD COLUMN removed_by TEXT"),
        ] {
            let has: bool = self
                .conn
                .prepare("SELECT 1 FROM pragma_table_info('kith_conversations') WHERE name = ?1")?
                .exists([column])?;
            if !has {
                self.conn.execute_batch(ddl)?;
            }
        }
        // Profiles made before recovery keys, and before unconfirmed keys were kept.
        for column in ["recovery_key", "unconfirmed_key"] {
            let has: bool = self
                .conn
                .prepare("SELECT 1 FROM pragma_table_info('kith_account_keys') WHERE name = ?1")?
                .exists([column])?;
            if !has {
                self.conn.execute_batch(&format!(
                    "ALTER TABLE kith_account_keys ADD COLUMN {column} BLOB"
                ))?;
            }
        }
        let has_shown: bool = self
            .conn
            .prepare("SELECT 1 FROM pragma_table_info('kith_messages') WHERE name = 'shown'")?
            .exists([])?;
        if !has_shown {
            self.conn.execute_batch(
                "ALTER TABLE kith_messages ADD COLUMN shown INTEGER NOT NULL DEFAULT 1",
            )?;
        }
        self.conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS kith_messages_unshown ON kith_messages (shown) WHERE shown = 0",
    )
    }

    /// Folds the WAL into the database and truncates it, so deleted rows (already overwritten in
    /// place by `secure_delete`) leave no copy behind in the WAL file.
    pub fn scrub(&self) -> rusqlite::Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    }
}
