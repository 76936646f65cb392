//! Other accounts as this device knows them: contacts, blocks, and which are businesses.

use rusqlite::{OptionalExtension, params};

use super::{LocalStore, i, u};

impl LocalStore {
    pub fn set_blocked(&self, username: &str, blocked: bool, now: u64) -> rusqlite::Result<()> {
        if blocked {
            self.conn.execute(
                "INSERT OR IGNORE INTO kith_blocked (username, since) VALUES (?1, ?2)",
                params![username, i(now)],
            )?;
        } else {
            self.conn.execute("DELETE FROM kith_blocked WHERE username = ?1", params![username])?;
        }
        Ok(())
    }

    pub fn is_blocked(&self, username: &str) -> rusqlite::Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM kith_blocked WHERE username = ?1")?
            .query_row(params![username], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn blocked(&self) -> rusqlite::Result<Vec<String>> {
        self.conn
            .prepare("SELECT username FROM kith_blocked ORDER BY username")?
            .query_map([], |r| r.get(0))?
            .collect()
    }

    /// Records a contact; returns whether it is new.
    pub fn add_contact(&self, username: &str, since: u64) -> rusqlite::Result<bool> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO kith_contacts (username, since) VALUES (?1, ?2)",
            params![username, i(since)],
        )? == 1)
    }

    /// Every contact, blocked ones included: who may stay in the story channel.
    pub fn audience(&self) -> rusqlite::Result<Vec<String>> {
        self.conn
            .prepare("SELECT username FROM kith_contacts ORDER BY username")?
            .query_map([], |r| r.get(0))?
            .collect()
    }

    /// Whether `username` is a contact that this device does not block.
    pub fn is_contact(&self, username: &str) -> rusqlite::Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM kith_contacts WHERE username = ?1
             AND username NOT IN (SELECT username FROM kith_blocked)",
            )?
            .query_row(params![username], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn remove_contact(&self, username: &str) -> rusqlite::Result<bool> {
        Ok(self.conn.execute("DELETE FROM kith_contacts WHERE username = ?1", params![username])?
            == 1)
    }

    /// Contacts and since when, by name — leaving out those this device blocks (they stay in the
    /// table, and in the story channel, until unblocked or deleted).
    pub fn contacts(&self) -> rusqlite::Result<Vec<(String, u64)>> {
        self.conn
            .prepare(
                "SELECT username, since FROM kith_contacts
         WHERE username NOT IN (SELECT username FROM kith_blocked) ORDER BY username",
            )?
            .query_map([], |r| Ok((r.get(0)?, u(r.get(1)?))))?
            .collect()
    }

    /// Records whether `username` is a business (as its device list said).
    pub fn set_account_kind(&self, username: &str, business: bool) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO kith_account_kinds (username, business) VALUES (?1, ?2)",
            )?
            .execute(params![username, business])?;
        Ok(())
    }

    /// Whether `username` is a business, if its device list was ever fetched.
    pub fn account_is_business(&self, username: &str) -> rusqlite::Result<Option<bool>> {
        self.conn
            .prepare_cached("SELECT business FROM kith_account_kinds WHERE username = ?1")?
            .query_row(params![username], |r| r.get(0))
            .optional()
    }

    /// Records `username`'s account key as the server lists it (`None`: it has none).
    pub fn set_account_key_of(&self, username: &str, key: Option<&[u8]>) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO kith_account_keys (username, account_key) VALUES (?1, ?2)
                 ON CONFLICT (username) DO UPDATE SET account_key = excluded.account_key",
            )?
            .execute(params![username, key])?;
        Ok(())
    }

    /// Records `username`'s recovery key (the public half), as known from now on.
    pub fn set_recovery_key_of(&self, username: &str, key: Option<&[u8]>) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("UPDATE kith_account_keys SET recovery_key = ?2 WHERE username = ?1")?
            .execute(params![username, key])?;
        Ok(())
    }

    /// The account key the server lists for `username` that this device did not take (its
    /// recovery key did not sign the change to it), if any: entries that need it wait.
    pub fn set_unconfirmed_key_of(
        &self,
        username: &str,
        key: Option<&[u8]>,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE kith_account_keys SET unconfirmed_key = ?2 WHERE username = ?1",
            )?
            .execute(params![username, key])?;
        Ok(())
    }

    pub fn unconfirmed_key_of(&self, username: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT unconfirmed_key FROM kith_account_keys WHERE username = ?1")?
            .query_row(params![username], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
    }

    /// `username`'s recovery key, if known.
    pub fn recovery_key_of(&self, username: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT recovery_key FROM kith_account_keys WHERE username = ?1")?
            .query_row(params![username], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
    }

    /// `username`'s account key, if looked up before: `Some(None)` for an account without one.
    pub fn account_key_of(&self, username: &str) -> rusqlite::Result<Option<Option<Vec<u8>>>> {
        self.conn
            .prepare_cached("SELECT account_key FROM kith_account_keys WHERE username = ?1")?
            .query_row(params![username], |r| r.get(0))
            .optional()
    }

    /// The device the server registered `key` for under `username`, if looked up before.
    pub fn registered_device(&self, username: &str, key: &[u8]) -> rusqlite::Result<Option<u64>> {
        self.conn
        .prepare_cached(
            "SELECT device_id FROM kith_device_keys WHERE username = ?1 AND credential_key = ?2",
        )?
        .query_row(params![username, key], |r| r.get::<_, i64>(0))
        .optional()
        .map(|d| d.map(u))
    }

    /// The key the server registered for `username`'s device `device`, if looked up before.
    pub fn device_key(&self, username: &str, device: u64) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn
        .prepare_cached(
            "SELECT credential_key FROM kith_device_keys WHERE username = ?1 AND device_id = ?2",
        )?
        .query_row(params![username, i(device)], |r| r.get(0))
        .optional()
    }

    /// A device of `username` the server lists as removed (its key was registered), if seen.
    pub fn removed_device(&self, username: &str, key: &[u8]) -> rusqlite::Result<Option<u64>> {
        self.conn
            .prepare_cached(
                "SELECT device_id FROM kith_removed_device_keys
                 WHERE username = ?1 AND credential_key = ?2",
            )?
            .query_row(params![username, key], |r| r.get::<_, i64>(0))
            .optional()
            .map(|d| d.map(u))
    }

    /// Records a device of `username` the server lists as removed.
    pub fn add_removed_device_key(
        &self,
        username: &str,
        key: &[u8],
        device: u64,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO kith_removed_device_keys (username, credential_key, device_id)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![username, key, i(device)])?;
        Ok(())
    }

    /// Records a device key the server lists for `username`.
    pub fn add_device_key(&self, username: &str, key: &[u8], device: u64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO kith_device_keys (username, credential_key, device_id)
             VALUES (?1, ?2, ?3)",
            )?
            .execute(params![username, key, i(device)])?;
        Ok(())
    }
}
