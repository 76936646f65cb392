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
const REMOVE_DEVICE: [&str; 8] = [
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
