//! Link sessions: a device of an account offers a link, a new device joins it, the first
//! approves it and the new device is made (see `kith_store::LinkRecord`).

use super::*;

type LinkRow = (
    String,
    String,
    i64,
    Vec<u8>,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

const LINK_COLUMNS: &str = "id, username, device_id, pake, expires_at, new_pake, request, \
     approved_device, handover, key_packages";

fn record(r: LinkRow) -> LinkRecord {
    let (id, username, device_id, pake, expires_at, new_pake, request, approved, handover, kps) = r;
    LinkRecord {
        id,
        username,
        device_id: u(device_id),
        pake,
        expires_at: u(expires_at),
        joined: new_pake.zip(request),
        approved: approved.map(|d| (u(d), handover)),
        key_packages: kps,
    }
}

pub(crate) async fn read_link(
    conn: &mut sqlx::PgConnection,
    id: &str,
    lock: bool,
) -> StoreResult<Option<LinkRecord>> {
    let sql = format!(
        "SELECT {LINK_COLUMNS} FROM links WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<LinkRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    Ok(row.map(record))
}

pub(crate) async fn create_link(pool: &sqlx::PgPool, l: &NewLink) -> StoreResult<()> {
    let inserted = sqlx::query(
        "INSERT INTO links (id, username, device_id, pake, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&l.id)
    .bind(&l.username)
    .bind(i(l.device_id))
    .bind(&l.pake)
    .bind(i(l.created_at))
    .bind(i(l.expires_at))
    .execute(pool)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => Err(StoreError::LinkExists),
        other => other.map(|_| ()).map_err(backend),
    }
}

pub(crate) async fn join_link(
    pool: &sqlx::PgPool,
    id: &str,
    pake: &[u8],
    request: &[u8],
    now: Millis,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE links SET new_pake = $2, request = $3
         WHERE id = $1 AND new_pake IS NULL AND expires_at > $4",
    )
    .bind(id)
    .bind(pake)
    .bind(request)
    .bind(i(now))
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn approve_link(
    pool: &sqlx::PgPool,
    id: &str,
    d: &LinkedDevice,
) -> StoreResult<LinkApproval> {
    let mut tx = pool.begin().await.map_err(backend)?;
    let Some(link) = read_link(&mut tx, id, true).await? else {
        return Ok(LinkApproval::Gone);
    };
    if link.expires_at <= d.now || link.approved.is_some() {
        return Ok(LinkApproval::Gone);
    }
    if link.joined.is_none() {
        return Ok(LinkApproval::NotJoined);
    }
    // The account's row is locked so two approvals at once cannot both pass the device limit.
    let account: i64 = sqlx::query_scalar("SELECT id FROM accounts WHERE username = $1 FOR UPDATE")
        .bind(&link.username)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
    let devices: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM devices WHERE account_id = $1 AND removed_at IS NULL",
    )
    .bind(account)
    .fetch_one(&mut *tx)
    .await
    .map_err(backend)?;
    if u(devices) >= u64::from(d.max_devices) {
        return Ok(LinkApproval::TooManyDevices);
    }
    let taken: Option<i32> = sqlx::query_scalar("SELECT 1 FROM devices WHERE credential_key = $1")
        .bind(&d.credential_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
    if taken.is_some() {
        return Ok(LinkApproval::KeyTaken);
    }
    let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
        "INSERT INTO devices (account_id, credential_key, token_hash, created_at)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(account)
    .bind(&d.credential_key)
    .bind(d.token_hash.as_slice())
    .bind(i(d.now))
    .fetch_one(&mut *tx)
    .await;
    let device = match inserted {
        Err(e) if is_unique_violation(&e) => return Ok(LinkApproval::KeyTaken),
        other => other.map_err(backend)?,
    };
    sqlx::query(
        "UPDATE links SET approved_device = $2, handover = $3, expires_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(device)
    .bind(&d.handover)
    .bind(i(d.keep_until))
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    tx.commit().await.map_err(backend)?;
    Ok(LinkApproval::Approved(u(device)))
}

pub(crate) async fn answer_link(
    pool: &sqlx::PgPool,
    id: &str,
    key_packages: &[u8],
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE links SET key_packages = $2, handover = NULL
         WHERE id = $1 AND approved_device IS NOT NULL AND key_packages IS NULL",
    )
    .bind(id)
    .bind(key_packages)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected() == 1)
}

/// What goes with a removed device (`$1`), in this order.
const REMOVE_DEVICE: [&str; 9] = [
    // A recovery key it set without the previous one's word goes with it.
    "UPDATE accounts SET recovery_key = NULL, recovery_binding = NULL, recovery_set_by = NULL,
                         recovery_set_at = NULL
     WHERE recovery_set_by = $1",
    "DELETE FROM key_packages WHERE device_id = $1",
    "DELETE FROM last_resort_key_packages WHERE device_id = $1",
    "DELETE FROM conversation_members WHERE device_id = $1",
    // Each message its queue holds that no other device's does, then its queue.
    "DELETE FROM messages WHERE id IN (SELECT message_id FROM queue WHERE device_id = $1)
       AND id NOT IN (SELECT message_id FROM queue WHERE device_id != $1 AND message_id IN
                        (SELECT message_id FROM queue WHERE device_id = $1))",
    "DELETE FROM queue WHERE device_id = $1",
    "DELETE FROM missed WHERE device_id = $1",
    // The links it offered or was made by, and their history: nothing of it waits on.
    "DELETE FROM link_chunks WHERE link_id IN
       (SELECT id FROM links WHERE device_id = $1 OR approved_device = $1)",
    "DELETE FROM links WHERE device_id = $1 OR approved_device = $1",
];

/// Removes `device` inside `tx` (see `AccountStore::remove_device`).
pub(crate) async fn remove_device(
    tx: &mut sqlx::PgConnection,
    announce: &Announce,
    device: DeviceId,
    now: Millis,
) -> StoreResult<()> {
    let n = sqlx::query("UPDATE devices SET removed_at = $2 WHERE id = $1 AND removed_at IS NULL")
        .bind(i(device))
        .bind(i(now))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::UnknownDevice);
    }
    for sql in REMOVE_DEVICE {
        sqlx::query(sql).bind(i(device)).execute(&mut *tx).await.map_err(backend)?;
    }
    // Other nodes refuse its token and close its push connections at once.
    announce_access_changed(tx, announce, device).await.map_err(backend)
}

/// The account's id, its row locked until `tx` ends. `Err(UnknownUser)`.
pub(crate) async fn lock_account(tx: &mut sqlx::PgConnection, username: &str) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT id FROM accounts WHERE username = $1 FOR UPDATE")
        .bind(username)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::UnknownUser)
}

pub(crate) async fn add_key_change(
    tx: &mut sqlx::PgConnection,
    account: i64,
    change: &[u8],
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO key_changes (account_id, n, statement)
         VALUES ($1, (SELECT COUNT(*) FROM key_changes WHERE account_id = $1), $2)",
    )
    .bind(account)
    .bind(change)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// See `AccountStore::recover_account`; the caller commits `tx` when it recovered.
pub(crate) async fn recover_account(
    tx: &mut sqlx::PgConnection,
    announce: &Announce,
    r: &AccountRecovery,
) -> StoreResult<RecoveryOutcome> {
    let account = lock_account(tx, &r.username).await?;
    let held: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT recovery_key FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
    if held.as_deref() != Some(r.verified_with.as_slice()) {
        return Ok(RecoveryOutcome::OtherKey);
    }
    let taken: Option<i32> = sqlx::query_scalar("SELECT 1 FROM devices WHERE credential_key = $1")
        .bind(&r.credential_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
    if taken.is_some() {
        return Ok(RecoveryOutcome::KeyTaken);
    }
    let removed: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM devices WHERE account_id = $1 AND removed_at IS NULL ORDER BY id",
    )
    .bind(account)
    .fetch_all(&mut *tx)
    .await
    .map_err(backend)?;
    // Each conversation the account was in, with the devices of its other accounts.
    let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
        "SELECT m.conversation, m.device_id FROM conversation_members m
         JOIN devices d ON d.id = m.device_id
         WHERE d.account_id != $1 AND m.conversation IN
           (SELECT conversation FROM conversation_members WHERE device_id IN
             (SELECT id FROM devices WHERE account_id = $1))
         ORDER BY m.conversation, m.device_id",
    )
    .bind(account)
    .fetch_all(&mut *tx)
    .await
    .map_err(backend)?;
    let mut conversations: Vec<(Vec<u8>, Vec<DeviceId>)> = Vec::new();
    for (conversation, device) in rows {
        match conversations.last_mut() {
            Some((c, devices)) if *c == conversation => devices.push(u(device)),
            _ => conversations.push((conversation, vec![u(device)])),
        }
    }
    for device in &removed {
        remove_device(tx, announce, u(*device), r.now).await?;
    }
    let device: i64 = sqlx::query_scalar(
        "INSERT INTO devices (account_id, credential_key, token_hash, created_at)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(account)
    .bind(&r.credential_key)
    .bind(r.token_hash.as_slice())
    .bind(i(r.now))
    .fetch_one(&mut *tx)
    .await
    .map_err(backend)?;
    sqlx::query(
        "UPDATE accounts SET account_key = $2, recovery_key = $3, recovery_binding = $4,
                             recovery_set_by = NULL, recovery_set_at = NULL
         WHERE id = $1",
    )
    .bind(account)
    .bind(&r.account_key)
    .bind(&r.recovery_key)
    .bind(&r.recovery_binding)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    add_key_change(tx, account, &r.change).await?;
    Ok(RecoveryOutcome::Recovered {
        device_id: u(device),
        removed: removed.into_iter().map(u).collect(),
        conversations,
    })
}
