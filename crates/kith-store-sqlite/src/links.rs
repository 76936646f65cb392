//! Link sessions: a device of an account offers a link, a new device joins it, the first
//! approves it and the new device is made (see `kith_store::LinkRecord`).

use super::*;

const LINK_COLUMNS: &str = "id, username, device_id, pake, expires_at, new_pake, request, \
     approved_device, handover, key_packages";

fn link_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LinkRecord> {
    let new_pake: Option<Vec<u8>> = r.get(5)?;
    let request: Option<Vec<u8>> = r.get(6)?;
    let approved: Option<i64> = r.get(7)?;
    let handover: Option<Vec<u8>> = r.get(8)?;
    Ok(LinkRecord {
        id: r.get(0)?,
        username: r.get(1)?,
        device_id: u(r.get(2)?),
        pake: r.get(3)?,
        expires_at: u(r.get(4)?),
        joined: new_pake.zip(request),
        approved: approved.map(|d| (u(d), handover)),
        key_packages: r.get(9)?,
    })
}

pub(crate) fn read_link(conn: &Connection, id: &str) -> rusqlite::Result<Option<LinkRecord>> {
    conn.prepare_cached(&format!("SELECT {LINK_COLUMNS} FROM links WHERE id = ?1"))?
        .query_row(params![id], link_row)
        .optional()
}

pub(crate) fn create_link(conn: &Connection, l: &NewLink) -> StoreResult<()> {
    let inserted = conn.execute(
        "INSERT INTO links (id, username, device_id, pake, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![l.id, l.username, i(l.device_id), l.pake, i(l.created_at), i(l.expires_at)],
    );
    match inserted {
        Err(e) if is_unique_violation(&e) => Err(StoreError::LinkExists),
        other => other.map(|_| ()).map_err(backend),
    }
}

pub(crate) fn join_link(
    conn: &Connection,
    id: &str,
    pake: &[u8],
    request: &[u8],
    now: Millis,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE links SET new_pake = ?2, request = ?3
         WHERE id = ?1 AND new_pake IS NULL AND expires_at > ?4",
        params![id, pake, request, i(now)],
    )?;
    Ok(n == 1)
}

/// One writer job: atomic (the writer runs each in a savepoint, undone on error).
pub(crate) fn approve_link(
    tx: &Connection,
    id: &str,
    d: &LinkedDevice,
) -> StoreResult<LinkApproval> {
    let Some(link) = read_link(tx, id).map_err(backend)? else {
        return Ok(LinkApproval::Gone);
    };
    if link.expires_at <= d.now || link.approved.is_some() {
        return Ok(LinkApproval::Gone);
    }
    if link.joined.is_none() {
        return Ok(LinkApproval::NotJoined);
    }
    let account: i64 = tx
        .query_row("SELECT id FROM accounts WHERE username = ?1", params![link.username], |r| {
            r.get(0)
        })
        .map_err(backend)?;
    let devices: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM devices WHERE account_id = ?1 AND removed_at IS NULL",
            params![account],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if u(devices) >= u64::from(d.max_devices) {
        return Ok(LinkApproval::TooManyDevices);
    }
    let taken: bool = tx
        .prepare_cached("SELECT 1 FROM devices WHERE credential_key = ?1")
        .and_then(|mut s| s.exists(params![d.credential_key]))
        .map_err(backend)?;
    if taken {
        return Ok(LinkApproval::KeyTaken);
    }
    let inserted = tx.execute(
        "INSERT INTO devices (account_id, credential_key, token_hash, created_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![account, d.credential_key, d.token_hash.to_vec(), i(d.now)],
    );
    match inserted {
        Err(e) if is_unique_violation(&e) => return Ok(LinkApproval::KeyTaken),
        other => other.map_err(backend)?,
    };
    let device = tx.last_insert_rowid();
    tx.execute(
        "UPDATE links SET approved_device = ?2, handover = ?3, expires_at = ?4 WHERE id = ?1",
        params![id, device, d.handover, i(d.keep_until)],
    )
    .map_err(backend)?;
    Ok(LinkApproval::Approved(u(device)))
}

pub(crate) fn answer_link(
    conn: &Connection,
    id: &str,
    key_packages: &[u8],
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE links SET key_packages = ?2, handover = NULL
         WHERE id = ?1 AND approved_device IS NOT NULL AND key_packages IS NULL",
        params![id, key_packages],
    )?;
    Ok(n == 1)
}

/// What goes with a removed device (`?1`), in this order.
const REMOVE_DEVICE: [&str; 9] = [
    // A recovery key it set without the previous one's word goes with it.
    "UPDATE accounts SET recovery_key = NULL, recovery_binding = NULL, recovery_set_by = NULL,
                         recovery_set_at = NULL
     WHERE recovery_set_by = ?1",
    "DELETE FROM key_packages WHERE device_id = ?1",
    "DELETE FROM last_resort_key_packages WHERE device_id = ?1",
    "DELETE FROM conversation_members WHERE device_id = ?1",
    // Each message its queue holds that no other device's does, then its queue.
    "DELETE FROM messages WHERE id IN (SELECT message_id FROM queue WHERE device_id = ?1)
       AND id NOT IN (SELECT message_id FROM queue WHERE device_id != ?1 AND message_id IN
                        (SELECT message_id FROM queue WHERE device_id = ?1))",
    "DELETE FROM queue WHERE device_id = ?1",
    "DELETE FROM missed WHERE device_id = ?1",
    // The links it offered or was made by, and their history: nothing of it waits on.
    "DELETE FROM link_chunks WHERE link_id IN
       (SELECT id FROM links WHERE device_id = ?1 OR approved_device = ?1)",
    "DELETE FROM links WHERE device_id = ?1 OR approved_device = ?1",
];

/// One writer job (see [`approve_link`]): the device out of its account for good.
pub(crate) fn remove_device(conn: &Connection, device: DeviceId, now: Millis) -> StoreResult<()> {
    let n = conn
        .execute(
            "UPDATE devices SET removed_at = ?2 WHERE id = ?1 AND removed_at IS NULL",
            params![i(device), i(now)],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::UnknownDevice);
    }
    for sql in REMOVE_DEVICE {
        conn.execute(sql, params![i(device)]).map_err(backend)?;
    }
    Ok(())
}

fn account_id(conn: &Connection, username: &str) -> StoreResult<i64> {
    conn.query_row("SELECT id FROM accounts WHERE username = ?1", params![username], |r| r.get(0))
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::UnknownUser)
}

fn add_key_change(conn: &Connection, account: i64, change: &[u8]) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO key_changes (account_id, n, statement)
         VALUES (?1, (SELECT COUNT(*) FROM key_changes WHERE account_id = ?1), ?2)",
        params![account, change],
    )
    .map_err(backend)?;
    Ok(())
}

/// One writer job: the recovery key replaced if it is the expected one.
pub(crate) fn set_recovery_key(
    conn: &Connection,
    username: &str,
    set: &RecoveryKeySet,
) -> StoreResult<bool> {
    let account = account_id(conn, username)?;
    let (by, at) = set.set_by.map(|(d, at)| (i(d), i(at))).unzip();
    let n = conn
        .execute(
            "UPDATE accounts SET recovery_key = ?2, recovery_binding = ?4, recovery_set_by = ?5,
                                 recovery_set_at = ?6
             WHERE id = ?1 AND recovery_key IS ?3",
            params![account, set.new, set.expected, set.binding, by, at],
        )
        .map_err(backend)?;
    if n == 0 {
        return Ok(false);
    }
    if let Some(change) = &set.change {
        add_key_change(conn, account, change)?;
    }
    Ok(true)
}

/// One writer job (atomic, see [`approve_link`]): every device of the account out, the new
/// one in, the keys replaced.
pub(crate) fn recover_account(
    conn: &Connection,
    r: &AccountRecovery,
) -> StoreResult<RecoveryOutcome> {
    let account = account_id(conn, &r.username)?;
    let held: Option<Vec<u8>> = conn
        .query_row("SELECT recovery_key FROM accounts WHERE id = ?1", params![account], |row| {
            row.get(0)
        })
        .map_err(backend)?;
    if held.as_deref() != Some(r.verified_with.as_slice()) {
        return Ok(RecoveryOutcome::OtherKey);
    }
    let taken: bool = conn
        .prepare_cached("SELECT 1 FROM devices WHERE credential_key = ?1")
        .and_then(|mut s| s.exists(params![r.credential_key]))
        .map_err(backend)?;
    if taken {
        return Ok(RecoveryOutcome::KeyTaken);
    }
    let removed: Vec<DeviceId> = conn
        .prepare_cached("SELECT id FROM devices WHERE account_id = ?1 AND removed_at IS NULL")
        .and_then(|mut s| s.query_map(params![account], |row| row.get(0).map(u))?.collect())
        .map_err(backend)?;
    // Each conversation the account was in, with the devices of its other accounts.
    let rows: Vec<(Vec<u8>, i64)> = conn
        .prepare(
            "SELECT m.conversation, m.device_id FROM conversation_members m
             JOIN devices d ON d.id = m.device_id
             WHERE d.account_id != ?1 AND m.conversation IN
               (SELECT conversation FROM conversation_members WHERE device_id IN
                 (SELECT id FROM devices WHERE account_id = ?1))
             ORDER BY m.conversation, m.device_id",
        )
        .and_then(|mut s| {
            s.query_map(params![account], |row| Ok((row.get(0)?, row.get(1)?)))?.collect()
        })
        .map_err(backend)?;
    let mut conversations: Vec<(Vec<u8>, Vec<DeviceId>)> = Vec::new();
    for (conversation, device) in rows {
        match conversations.last_mut() {
            Some((c, devices)) if *c == conversation => devices.push(u(device)),
            _ => conversations.push((conversation, vec![u(device)])),
        }
    }
    for device in &removed {
        remove_device(conn, *device, r.now)?;
    }
    conn.execute(
        "INSERT INTO devices (account_id, credential_key, token_hash, created_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![account, r.credential_key, r.token_hash.to_vec(), i(r.now)],
    )
    .map_err(backend)?;
    let device_id = u(conn.last_insert_rowid());
    conn.execute(
        "UPDATE accounts SET account_key = ?2, recovery_key = ?3, recovery_binding = ?4,
                             recovery_set_by = NULL, recovery_set_at = NULL
         WHERE id = ?1",
        params![account, r.account_key, r.recovery_key, r.recovery_binding],
    )
    .map_err(backend)?;
    add_key_change(conn, account, &r.change)?;
    Ok(RecoveryOutcome::Recovered { device_id, removed, conversations })
}
