//! Migrations, recorded in `kith_schema_version`. Several nodes may start at once: an advisory
//! lock held for the transaction makes one of them migrate while the others wait.

use kith_store::{StoreError, StoreResult};
use sqlx::PgPool;

const MIGRATIONS: &[&str] = &[
    // 1: accounts, devices, KeyPackages, conversations, messages and queues.
    "CREATE TABLE accounts (
        id BIGSERIAL PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        kind SMALLINT NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE TABLE devices (
        id BIGSERIAL PRIMARY KEY,
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        credential_key BYTEA NOT NULL,
        token_hash BYTEA NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE INDEX devices_account ON devices (account_id);
     CREATE TABLE key_packages (
        id BIGSERIAL PRIMARY KEY,
        device_id BIGINT NOT NULL REFERENCES devices (id),
        data BYTEA NOT NULL
     );
     CREATE INDEX key_packages_device ON key_packages (device_id, id);
     CREATE TABLE last_resort_key_packages (
        device_id BIGINT PRIMARY KEY REFERENCES devices (id),
        data BYTEA NOT NULL
     );
     CREATE TABLE conversations (
        id BYTEA PRIMARY KEY,
        created_at BIGINT NOT NULL
     );
     CREATE TABLE conversation_members (
        conversation BYTEA NOT NULL REFERENCES conversations (id),
        device_id BIGINT NOT NULL REFERENCES devices (id),
        PRIMARY KEY (conversation, device_id)
     );
     CREATE TABLE messages (
        id BIGSERIAL PRIMARY KEY,
        conversation BYTEA NOT NULL,
        sender_device BIGINT NOT NULL,
        kind SMALLINT NOT NULL,
        data BYTEA NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE INDEX messages_created ON messages (created_at);
     CREATE TABLE queue (
        seq BIGSERIAL PRIMARY KEY,
        device_id BIGINT NOT NULL,
        message_id BIGINT NOT NULL
     );
     CREATE INDEX queue_device ON queue (device_id, seq);
     CREATE INDEX queue_message ON queue (message_id);",
    // 2: the server's copy of each group's public state, and device lookup by key.
    "ALTER TABLE conversations ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
     ALTER TABLE conversations ADD COLUMN group_state BYTEA NOT NULL DEFAULT '\\x';
     CREATE INDEX devices_key ON devices (credential_key);",
    // 3: messages the server deletes at a set time (stories), and who may post (story owner).
    "ALTER TABLE messages ADD COLUMN expires_at BIGINT;
     CREATE INDEX messages_expires ON messages (expires_at) WHERE expires_at IS NOT NULL;
     ALTER TABLE conversations ADD COLUMN poster TEXT;",
    // 4: safety — blocks, verified reports, franking keys, suspensions and flags.
    "ALTER TABLE conversations ADD COLUMN direct BOOLEAN NOT NULL DEFAULT FALSE;
     ALTER TABLE accounts ADD COLUMN suspend_reason TEXT;
     CREATE TABLE franking_keys (
        id SERIAL PRIMARY KEY,
        key BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        retired_at BIGINT
     );
     CREATE TABLE reports (
        id BIGSERIAL PRIMARY KEY,
        reporter TEXT NOT NULL,
        sender TEXT NOT NULL,
        sender_device BIGINT NOT NULL,
        conversation BYTEA NOT NULL,
        message_time BIGINT NOT NULL,
        text TEXT NOT NULL,
        reason TEXT,
        tag BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (reporter, tag)
     );
     CREATE INDEX reports_sender ON reports (sender);
     CREATE TABLE blocks (
        blocker TEXT NOT NULL,
        blocked TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (blocker, blocked)
     );
     CREATE INDEX blocks_blocked ON blocks (blocked);
     CREATE TABLE flags (
        id BIGSERIAL PRIMARY KEY,
        username TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE INDEX flags_username ON flags (username);",
    // 5: businesses — public profile and verification; finding a member's conversations.
    "ALTER TABLE accounts ADD COLUMN display_name TEXT;
     ALTER TABLE accounts ADD COLUMN description TEXT;
     ALTER TABLE accounts ADD COLUMN verified BOOLEAN NOT NULL DEFAULT FALSE;
     CREATE INDEX conversation_members_device ON conversation_members (device_id);",
    // 6: reputation — who posted in which conversation, and blocks and reports as signals;
    //    queue entries withheld from a device whose account blocks their sender.
    "CREATE TABLE speakers (
        conversation BYTEA NOT NULL,
        username TEXT NOT NULL,
        PRIMARY KEY (username, conversation)
     );
     CREATE TABLE signals (
        target TEXT NOT NULL,
        kind SMALLINT NOT NULL,
        source TEXT NOT NULL,
        qualified BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (target, kind, source)
     );
     ALTER TABLE queue ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;
     CREATE INDEX queue_held ON queue (device_id) WHERE held;",
    // 7: a revision per group state, so no update is made from a stale copy.
    "ALTER TABLE conversations ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;",
    // 8: attempts counted across every node sharing the store (registrations per address).
    "CREATE TABLE attempts (source TEXT NOT NULL, at BIGINT NOT NULL);
     CREATE INDEX attempts_source ON attempts (source, at);
     CREATE INDEX attempts_at ON attempts (at);",
    // 9: messages a device missed because its queue was full, by conversation.
    "CREATE TABLE missed (
        device_id BIGINT NOT NULL,
        conversation BYTEA NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (device_id, conversation)
     );",
    // 10: the id each sending device chose for a message, so a repeat is delivered once.
    "CREATE TABLE sent_ids (
        device_id BIGINT NOT NULL,
        client_id BYTEA NOT NULL,
        message_id BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (device_id, client_id)
     );
     CREATE INDEX sent_ids_created ON sent_ids (created_at);",
    // 11: the last handshake applied for each device of a conversation (it was kept inside
    // the group state's blob before), so a repeat is answered as applied.
    "CREATE TABLE applied_handshakes (
        conversation BYTEA NOT NULL,
        device_id BIGINT NOT NULL,
        digest BYTEA NOT NULL,
        epoch BIGINT NOT NULL,
        members BIGINT NOT NULL,
        PRIMARY KEY (conversation, device_id)
     );",
    // 12: each account's key (the public half), which signs its devices' certificates.
    "ALTER TABLE accounts ADD COLUMN account_key BYTEA;",
    // 13: a device's name (its account's to give) and when it was last seen.
    "ALTER TABLE devices ADD COLUMN name TEXT;
     ALTER TABLE devices ADD COLUMN last_seen BIGINT;",
    // 14: link sessions (a device of an account adds a new one); gone once used or expired.
    "CREATE TABLE links (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        device_id BIGINT NOT NULL,
        pake BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        new_pake BYTEA,
        request BYTEA,
        approved_device BIGINT,
        handover BYTEA,
        key_packages BYTEA
     );
     CREATE INDEX links_expiry ON links (expires_at);",
    // 15: a device removed from its account (its key stays taken).
    "ALTER TABLE devices ADD COLUMN removed_at BIGINT;",
    // 16: the history a linking device hands the new one, sealed, in chunks.
    "CREATE TABLE link_chunks (
        link_id TEXT NOT NULL,
        n BIGINT NOT NULL,
        total BIGINT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (link_id, n)
     );",
    // 17: the public half of an account's recovery key, and every change of its keys the
    // recovery key signed (a contact follows them from the keys it knew).
    "ALTER TABLE accounts ADD COLUMN recovery_key BYTEA;
     CREATE TABLE key_changes (
        account_id BIGINT NOT NULL,
        n BIGINT NOT NULL,
        statement BYTEA NOT NULL,
        PRIMARY KEY (account_id, n)
     );",
    // 18: the account key's signature binding the recovery key to it, and the device that set
    // a recovery key without the previous one's word (and when).
    "ALTER TABLE accounts ADD COLUMN recovery_binding BYTEA;
     ALTER TABLE accounts ADD COLUMN recovery_set_by BIGINT;
     ALTER TABLE accounts ADD COLUMN recovery_set_at BIGINT;",
    // 19: the key-transparency directory (akd's records, its value states by label and epoch,
    // its keys, the roots it published, who publishes, and the accounts to publish next).
    "CREATE TABLE kt_records (id BYTEA PRIMARY KEY, data BYTEA NOT NULL);
     CREATE TABLE kt_states (
        label BYTEA NOT NULL,
        epoch BIGINT NOT NULL,
        version BIGINT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (label, epoch)
     );
     CREATE TABLE kt_head (one INTEGER PRIMARY KEY CHECK (one = 1), epoch BIGINT NOT NULL);
     CREATE TABLE kt_keys (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        vrf BYTEA NOT NULL,
        signing BYTEA NOT NULL
     );
     CREATE TABLE kt_roots (
        epoch BIGINT PRIMARY KEY,
        root BYTEA NOT NULL,
        signature BYTEA NOT NULL,
        published_at BIGINT NOT NULL
     );
     CREATE TABLE kt_lease (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        node TEXT NOT NULL,
        until BIGINT NOT NULL
     );
     CREATE TABLE kt_dirty (username TEXT PRIMARY KEY, urgent BOOLEAN NOT NULL);",
];

/// An arbitrary constant naming Kith's migration lock.
const MIGRATION_LOCK: i64 = 0x6b69_7468;

/// Brings the database up to the newest schema this version knows, one node at a time; refuses
/// one a newer version wrote ([`StoreError::NewerSchema`]) before touching it.
pub async fn migrate(pool: &PgPool) -> StoreResult<()> {
    migrate_known(pool).await.map_err(|e| match e {
        Migration::Newer(found) => {
            StoreError::NewerSchema { found, known: MIGRATIONS.len() as u64 }
        }
        Migration::Sql(e) => crate::backend(e),
    })
}

enum Migration {
    Newer(u64),
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for Migration {
    fn from(e: sqlx::Error) -> Self {
        Migration::Sql(e)
    }
}

async fn migrate_known(pool: &PgPool) -> Result<(), Migration> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS kith_schema_version (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM kith_schema_version")
        .fetch_one(&mut *tx)
        .await?;
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(Migration::Newer(current as u64));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO kith_schema_version (version) VALUES ($1)")
            .bind(i64::try_from(n + 1).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx.commit().await?)
}
