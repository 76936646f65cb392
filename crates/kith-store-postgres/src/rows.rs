//! Row mapping: stored rows read back into the store's types (the query text and the code
//! conversions they share with the other backend live in `kith_store`).

use super::*;

pub(crate) fn account_info_row(r: &PgRow) -> Result<AccountInfo, sqlx::Error> {
    Ok(AccountInfo {
        username: r.try_get(0)?,
        kind: account_kind_from_code(i64::from(r.try_get::<i16, _>(1)?)),
        created_at: u(r.try_get(2)?),
        suspended: r.try_get(3)?,
        blocked_by: u(r.try_get(4)?),
        reported_by: u(r.try_get(5)?),
        display_name: r.try_get(6)?,
        description: r.try_get(7)?,
        verified: r.try_get(8)?,
    })
}

pub(crate) fn entry(r: &PgRow) -> Result<StoredEntry, sqlx::Error> {
    let kind: i16 = r.try_get(3)?;
    let kind = entry_kind_from_code(i64::from(kind))
        .ok_or_else(|| sqlx::Error::Decode("unknown entry kind".into()))?;
    Ok(StoredEntry {
        seq: u(r.try_get(0)?),
        message_id: u(r.try_get(1)?),
        conversation: r.try_get(2)?,
        kind,
        sender: r.try_get(4)?,
        sender_device: u(r.try_get(5)?),
        data: r.try_get(6)?,
        created_at: u(r.try_get(7)?),
        expires_at: r.try_get::<Option<i64>, _>(8)?.map(u),
        sender_kind: account_kind_from_code(i64::from(r.try_get::<i16, _>(9)?)),
        sender_verified: r.try_get(10)?,
    })
}
