//! Row mapping: stored rows read back into the store's types (the query text and the code
//! conversions they share with the other backend live in `kith_store`).

use super::*;

pub(crate) fn kind_from(v: i64) -> Result<EntryKind, rusqlite::Error> {
    entry_kind_from_code(v).ok_or(rusqlite::Error::IntegralValueOutOfRange(3, v))
}

pub(crate) fn hash32(v: Vec<u8>) -> Result<[u8; 32], rusqlite::Error> {
    v.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "token_hash".into(), rusqlite::types::Type::Blob)
    })
}

pub(crate) fn account_info_row(r: &rusqlite::Row<'_>) -> Result<AccountInfo, rusqlite::Error> {
    Ok(AccountInfo {
        username: r.get(0)?,
        kind: account_kind_from_code(r.get(1)?),
        created_at: u(r.get(2)?),
        suspended: r.get(3)?,
        blocked_by: u(r.get(4)?),
        reported_by: u(r.get(5)?),
        display_name: r.get(6)?,
        description: r.get(7)?,
        verified: r.get(8)?,
    })
}
