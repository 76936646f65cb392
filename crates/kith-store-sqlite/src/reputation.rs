//! Reputation and blocks: who posted where (so a block can be checked against a real
//! conversation), blocks and reports recorded as signals, and the entries withheld from a
//! blocker's devices until the block is lifted.

use kith_store::{SignalKind, SignalRecord};
use kith_store::{from_sql as u, to_sql as i};
use rusqlite::{Connection, OptionalExtension, params};

/// Records `signal` unless its (target, kind, source) is known; answers the target's
/// qualified signals of that kind after it, or `None` for a repeat.
pub fn add_signal(conn: &Connection, s: &SignalRecord) -> Result<Option<u64>, rusqlite::Error> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO signals (target, kind, source, qualified, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![s.target, s.kind.code(), s.source, s.qualified, i(s.created_at)])?;
    if inserted == 0 {
        return Ok(None);
    }
    conn.prepare_cached(
        "SELECT COUNT(*) FROM signals WHERE target = ?1 AND kind = ?2 AND qualified",
    )?
    .query_row(params![s.target, s.kind.code()], |r| r.get::<_, i64>(0))
    .map(|n| Some(u(n)))
}

pub fn signals(
    conn: &Connection,
    target: Option<&str>,
) -> Result<Vec<SignalRecord>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT target, source, kind, qualified, created_at FROM signals
         WHERE ?1 IS NULL OR target = ?1 ORDER BY created_at, target, source",
    )?
    .query_map(params![target], |r| {
        Ok(SignalRecord {
            target: r.get(0)?,
            source: r.get(1)?,
            kind: SignalKind::from_code(r.get(2)?),
            qualified: r.get(3)?,
            created_at: u(r.get(4)?),
        })
    })?
    .collect()
}

pub fn has_written_to(
    conn: &Connection,
    speaker: &str,
    listener: &str,
) -> Result<bool, rusqlite::Error> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM speakers s
             JOIN conversations c ON c.id = s.conversation AND c.direct = 1
             JOIN conversation_members m ON m.conversation = s.conversation
             JOIN devices d ON d.id = m.device_id
             JOIN accounts a ON a.id = d.account_id
             WHERE s.username = ?1 AND a.username = ?2 LIMIT 1",
        )?
        .query_row(params![speaker, listener], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Delivers the entries withheld from `blocker`'s devices that `sender` sent; answers the
/// devices concerned.
pub fn release_withheld(
    conn: &Connection,
    blocker: &str,
    sender: &str,
) -> Result<Vec<u64>, rusqlite::Error> {
    let devices: Vec<i64> = conn
        .prepare_cached(
            "UPDATE queue SET held = 0
             WHERE held = 1
               AND device_id IN (SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id
                                 WHERE a.username = ?1)
               AND EXISTS (SELECT 1 FROM messages m
                           JOIN devices d ON d.id = m.sender_device
                           JOIN accounts a ON a.id = d.account_id
                           WHERE m.id = queue.message_id AND a.username = ?2)
             RETURNING device_id",
        )?
        .query_map(params![blocker, sender], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out: Vec<u64> = devices.into_iter().map(u).collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}
