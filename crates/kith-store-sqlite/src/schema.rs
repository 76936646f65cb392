//! Migrations. Each entry runs once, in order, inside one transaction with the bump of
//! `PRAGMA user_version`; never edit a published entry, append a new one.

use kith_store::{StoreError, StoreResult};
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: accounts, devices, KeyPackages, conversations, messages and queues.
    "CREATE TABLE accounts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL UNIQUE,
        kind INTEGER NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE TABLE devices (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        credential_key BLOB NOT NULL,
        token_hash BLOB NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX devices_account ON devices (account_id);
     CREATE TABLE key_packages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id INTEGER NOT NULL REFERENCES devices (id),
        data BLOB NOT NULL
     );
     CREATE INDEX key_packages_device ON key_packages (device_id, id);
     CREATE TABLE last_resort_key_packages (
        device_id INTEGER PRIMARY KEY REFERENCES devices (id),
        data BLOB NOT NULL
     );
     CREATE TABLE conversations (
        id BLOB PRIMARY KEY,
        created_at INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE conversation_members (
        conversation BLOB NOT NULL REFERENCES conversations (id),
        device_id INTEGER NOT NULL REFERENCES devices (id),
        PRIMARY KEY (conversation, device_id)
     ) WITHOUT ROWID;
     CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation BLOB NOT NULL,
        sender_device INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        data BLOB NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX messages_created ON messages (created_at);
     CREATE TABLE queue (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id INTEGER NOT NULL,
        message_id INTEGER NOT NULL
     );
     CREATE INDEX queue_device ON queue (device_id, seq);
     CREATE INDEX queue_message ON queue (message_id);",
    // 2: the server's copy of each group's public state, and device lookup by key.
    "ALTER TABLE conversations ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE conversations ADD COLUMN group_state BLOB NOT NULL DEFAULT x'';
     CREATE INDEX devices_key ON devices (credential_key);",
    // 3: messages the server deletes at a set time (stories), and who may post (story owner).
    "ALTER TABLE messages ADD COLUMN expires_at INTEGER;
     CREATE INDEX messages_expires ON messages (expires_at) WHERE expires_at IS NOT NULL;
     ALTER TABLE conversations ADD COLUMN poster TEXT;",
    // 4: safety — blocks, verified reports, franking keys, suspensions and flags.
    "ALTER TABLE conversations ADD COLUMN direct INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE accounts ADD COLUMN suspend_reason TEXT;
     CREATE TABLE franking_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        retired_at INTEGER
     );
     CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        reporter TEXT NOT NULL,
        sender TEXT NOT NULL,
        sender_device INTEGER NOT NULL,
        conversation BLOB NOT NULL,
        message_time INTEGER NOT NULL,
        text TEXT NOT NULL,
        reason TEXT,
        tag BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (reporter, tag)
     );
     CREATE INDEX reports_sender ON reports (sender);
     CREATE TABLE blocks (
        blocker TEXT NOT NULL,
        blocked TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (blocker, blocked)
     ) WITHOUT ROWID;
     CREATE INDEX blocks_blocked ON blocks (blocked);
     CREATE TABLE flags (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX flags_username ON flags (username);",
    // 5: businesses — public profile and verification; finding a member's conversations.
    "ALTER TABLE accounts ADD COLUMN display_name TEXT;
     ALTER TABLE accounts ADD COLUMN description TEXT;
     ALTER TABLE accounts ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX conversation_members_device ON conversation_members (device_id);",
    // 6: reputation — who posted in which conversation, and blocks and reports as signals;
    //    queue entries withheld from a device whose account blocks their sender.
    "CREATE TABLE speakers (
        conversation BLOB NOT NULL,
        username TEXT NOT NULL,
        PRIMARY KEY (username, conversation)
     ) WITHOUT ROWID;
     CREATE TABLE signals (
        target TEXT NOT NULL,
        kind INTEGER NOT NULL,
        source TEXT NOT NULL,
        qualified INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (target, kind, source)
     ) WITHOUT ROWID;
     ALTER TABLE queue ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX queue_held ON queue (device_id) WHERE held = 1;",
    // 7: a revision per group state, so no update is made from a stale copy.
    "ALTER TABLE conversations ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;",
    // 8: attempts counted across every node sharing the store (registrations per address).
    "CREATE TABLE attempts (source TEXT NOT NULL, at INTEGER NOT NULL);
     CREATE INDEX attempts_source ON attempts (source, at);
     CREATE INDEX attempts_at ON attempts (at);",
    // 9: messages a device missed because its queue was full, by conversation.
    "CREATE TABLE missed (
        device_id INTEGER NOT NULL,
        conversation BLOB NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (device_id, conversation)
     ) WITHOUT ROWID;",
    // 10: the id each sending device chose for a message, so a repeat is delivered once.
    "CREATE TABLE sent_ids (
        device_id INTEGER NOT NULL,
        client_id BLOB NOT NULL,
        message_id INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (device_id, client_id)
     ) WITHOUT ROWID;
     CREATE INDEX sent_ids_created ON sent_ids (created_at);",
    // 11: the last handshake applied for each device of a conversation (it was kept inside
    // the group state's blob before), so a repeat is answered as applied.
    "CREATE TABLE applied_handshakes (
        conversation BLOB NOT NULL,
        device_id INTEGER NOT NULL,
        digest BLOB NOT NULL,
        epoch INTEGER NOT NULL,
        members INTEGER NOT NULL,
        PRIMARY KEY (conversation, device_id)
     ) WITHOUT ROWID;",
    // 12: each account's key (the public half), which signs its devices' certificates.
    "ALTER TABLE accounts ADD COLUMN account_key BLOB;",
    // 13: a device's name (its account's to give) and when it was last seen.
    "ALTER TABLE devices ADD COLUMN name TEXT;
     ALTER TABLE devices ADD COLUMN last_seen INTEGER;",
    // 14: link sessions (a device of an account adds a new one); gone once used or expired.
    "CREATE TABLE links (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        device_id INTEGER NOT NULL,
        pake BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        new_pake BLOB,
        request BLOB,
        approved_device INTEGER,
        handover BLOB,
        key_packages BLOB
     );
     CREATE INDEX links_expiry ON links (expires_at);",
    // 15: a device removed from its account (its key stays taken).
    "ALTER TABLE devices ADD COLUMN removed_at INTEGER;",
    // 16: the history a linking device hands the new one, sealed, in chunks.
    "CREATE TABLE link_chunks (
        link_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        total INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (link_id, n)
     );",
    // 17: the public half of an account's recovery key, and every change of its keys the
    // recovery key signed (a contact follows them from the keys it knew).
    "ALTER TABLE accounts ADD COLUMN recovery_key BLOB;
     CREATE TABLE key_changes (
        account_id INTEGER NOT NULL,
        n INTEGER NOT NULL,
        statement BLOB NOT NULL,
        PRIMARY KEY (account_id, n)
     );",
    // 18: the account key's signature binding the recovery key to it, and the device that set
    // a recovery key without the previous one's word (and when).
    "ALTER TABLE accounts ADD COLUMN recovery_binding BLOB;
     ALTER TABLE accounts ADD COLUMN recovery_set_by INTEGER;
     ALTER TABLE accounts ADD COLUMN recovery_set_at INTEGER;",
    // 19: the key-transparency directory (akd's records, its value states by label and epoch,
    // its keys, the roots it published, who publishes, and the accounts to publish next).
    "CREATE TABLE kt_records (id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
     CREATE TABLE kt_states (
        label BLOB NOT NULL,
        epoch INTEGER NOT NULL,
        version INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (label, epoch)
     ) WITHOUT ROWID;
     CREATE TABLE kt_head (one INTEGER PRIMARY KEY CHECK (one = 1), epoch INTEGER NOT NULL);
     CREATE TABLE kt_keys (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        vrf BLOB NOT NULL,
        signing BLOB NOT NULL
     );
     CREATE TABLE kt_roots (
        epoch INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        signature BLOB NOT NULL,
        published_at INTEGER NOT NULL
     );
     CREATE TABLE kt_lease (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        node TEXT NOT NULL,
        until INTEGER NOT NULL
     );
     CREATE TABLE kt_dirty (
        username TEXT PRIMARY KEY,
        urgent INTEGER NOT NULL
     ) WITHOUT ROWID;",
];

/// Brings the database up to the newest schema this version knows; refuses one a newer
/// version wrote ([`StoreError::NewerSchema`]) before touching it.
pub fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let current: i64 =
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(crate::backend)?;
    let known = MIGRATIONS.len() as u64;
    let found = u64::try_from(current).unwrap_or(0);
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    migrate_from(conn, current).map_err(crate::backend)
}

fn migrate_from(conn: &mut Connection, current: i64) -> Result<(), rusqlite::Error> {
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(current).unwrap_or(0)) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", n + 1))?;
        tx.commit()?;
    }
    Ok(())
}
