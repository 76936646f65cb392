//! What this device keeps of the server's key directory (see `crate::kt`).

use rusqlite::{OptionalExtension, params};

use super::{LocalStore, i, u};

/// Something the key directory did not prove, or showed that this device did not make.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct KeyWarning {
    pub id: u64,
    /// When it was found (ms since the Unix epoch).
    pub at: u64,
    /// The account it is about, if one.
    pub username: Option<String>,
    /// Whether it is about this device's own account (a key or device it did not make).
    pub own: bool,
    pub what: String,
}

impl LocalStore {
    pub fn kt_keys(&self) -> rusqlite::Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.conn
            .prepare_cached("SELECT vrf, signing FROM kith_kt_keys WHERE id = 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    }

    pub fn set_kt_keys(&self, vrf: &[u8], signing: &[u8]) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO kith_kt_keys (id, vrf, signing) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![vrf, signing])?;
        Ok(())
    }

    /// The newest root this device checked.
    pub fn kt_head(&self) -> rusqlite::Result<Option<(u64, Vec<u8>)>> {
        self.conn
            .prepare_cached("SELECT epoch, root FROM kith_kt_roots ORDER BY epoch DESC LIMIT 1")?
            .query_row([], |r| Ok((u(r.get(0)?), r.get(1)?)))
            .optional()
    }

    /// The root this device checked for `epoch`, if it did.
    pub fn kt_root(&self, epoch: u64) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT root FROM kith_kt_roots WHERE epoch = ?1")?
            .query_row([i(epoch)], |r| r.get(0))
            .optional()
    }

    pub fn add_kt_root(&self, epoch: u64, root: &[u8]) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO kith_kt_roots (epoch, root) VALUES (?1, ?2)")?
            .execute(params![i(epoch), root])?;
        Ok(())
    }

    /// Keeps a root another person's device took for an epoch this device has not reached.
    pub fn add_peer_root(&self, epoch: u64, username: &str, root: &[u8]) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO kith_kt_peer_roots (epoch, username, root)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![i(epoch), username, root])?;
        Ok(())
    }

    /// The roots kept by [`LocalStore::add_peer_root`], oldest epoch first (a few at a time).
    pub fn peer_roots(&self) -> rusqlite::Result<Vec<(u64, String, Vec<u8>)>> {
        self.conn
            .prepare_cached(
                "SELECT epoch, username, root FROM kith_kt_peer_roots ORDER BY epoch LIMIT 16",
            )?
            .query_map([], |r| Ok((u(r.get(0)?), r.get(1)?, r.get(2)?)))?
            .collect()
    }

    pub fn forget_peer_root(&self, epoch: u64, username: &str) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM kith_kt_peer_roots WHERE epoch = ?1 AND username = ?2")?
            .execute(params![i(epoch), username])?;
        Ok(())
    }

    /// The value `username` had when last checked, the epoch it was checked at, and when.
    pub fn kt_checked(&self, username: &str) -> rusqlite::Result<Option<(Vec<u8>, u64, u64)>> {
        self.conn
            .prepare_cached("SELECT value, epoch, at FROM kith_kt_checked WHERE username = ?1")?
            .query_row([username], |r| Ok((r.get(0)?, u(r.get(1)?), u(r.get(2)?))))
            .optional()
    }

    pub fn set_kt_checked(
        &self,
        username: &str,
        value: &[u8],
        epoch: u64,
        at: u64,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO kith_kt_checked (username, value, epoch, at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![username, value, i(epoch), i(at)])?;
        Ok(())
    }

    /// Records a warning, unless the same one is on record and not yet shown.
    pub fn add_key_warning(
        &self,
        at: u64,
        username: Option<&str>,
        own: bool,
        what: &str,
    ) -> rusqlite::Result<()> {
        let known: bool = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM kith_kt_problems WHERE username IS ?1 AND what = ?2 AND shown = 0",
            )?
            .exists(params![username, what])?;
        if !known {
            self.conn
                .prepare_cached(
                    "INSERT INTO kith_kt_problems (at, username, own, what) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![i(at), username, own, what])?;
        }
        Ok(())
    }

    /// Every warning on record, newest first; with `unshown_only`, those not yet shown.
    pub fn key_warnings(&self, unshown_only: bool) -> rusqlite::Result<Vec<KeyWarning>> {
        self.conn
            .prepare_cached(
                "SELECT id, at, username, own, what FROM kith_kt_problems
                 WHERE shown = 0 OR ?1 = 0 ORDER BY id DESC LIMIT 100",
            )?
            .query_map([unshown_only], |r| {
                Ok(KeyWarning {
                    id: u(r.get(0)?),
                    at: u(r.get(1)?),
                    username: r.get(2)?,
                    own: r.get(3)?,
                    what: r.get(4)?,
                })
            })?
            .collect()
    }

    pub fn mark_key_warnings_shown(&self) -> rusqlite::Result<()> {
        self.conn.execute("UPDATE kith_kt_problems SET shown = 1 WHERE shown = 0", [])?;
        Ok(())
    }

    /// The account key `username` had when this person verified them, if they did.
    pub fn verified_key(&self, username: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT account_key FROM kith_verified WHERE username = ?1")?
            .query_row([username], |r| r.get(0))
            .optional()
    }

    pub fn set_verified(
        &self,
        username: &str,
        key: Option<&[u8]>,
        at: u64,
    ) -> rusqlite::Result<()> {
        match key {
            Some(key) => self
                .conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO kith_verified (username, account_key, at)
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![username, key, i(at)])?,
            None => self
                .conn
                .prepare_cached("DELETE FROM kith_verified WHERE username = ?1")?
                .execute([username])?,
        };
        Ok(())
    }
}
