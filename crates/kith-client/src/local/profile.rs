//! The account this profile belongs to, its token (and a rotation in flight), the CA it
//! trusts, and when upkeep steps last ran.

use rusqlite::{OptionalExtension, params};

use kith_proto::{AccountKind, Secret};

use super::{LocalStore, i, u};

/// The account this profile belongs to.
#[derive(Clone, Debug)]
pub struct Profile {
    pub server: String,
    pub username: String,
    pub kind: AccountKind,
    pub device_id: u64,
    /// The bearer secret: `[redacted]` in `Debug`, wiped when dropped.
    pub(crate) token: Secret,
    pub signature_key: Vec<u8>,
    /// A CA certificate (PEM) trusted for this server, besides the web roots.
    pub ca_cert: Option<String>,
}

impl Profile {
    pub(crate) fn bearer(&self) -> Secret {
        Secret::new(format!("{}:{}", self.device_id, self.token.expose()))
    }
}

impl LocalStore {
    pub fn load_profile(&self) -> rusqlite::Result<Option<Profile>> {
        self.conn
            .query_row(
                "SELECT server, username, kind, device_id, token, signature_key, ca_cert
         FROM kith_profile WHERE id = 1",
                [],
                |r| {
                    Ok(Profile {
                        server: r.get(0)?,
                        username: r.get(1)?,
                        kind: AccountKind::parse(&r.get::<_, String>(2)?).unwrap_or_default(),
                        device_id: u(r.get(3)?),
                        token: Secret::new(r.get(4)?),
                        signature_key: r.get(5)?,
                        ca_cert: r.get(6)?,
                    })
                },
            )
            .optional()
    }

    pub fn save_profile(&self, p: &Profile) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO kith_profile (id, server, username, kind, device_id, token, signature_key,
            ca_cert)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                p.server,
                p.username,
                p.kind.as_str(),
                i(p.device_id),
                p.token.expose(),
                p.signature_key,
                p.ca_cert
            ],
        )?;
        Ok(())
    }

    pub fn set_token(&self, token: &Secret) -> rusqlite::Result<()> {
        self.conn
            .execute("UPDATE kith_profile SET token = ?1 WHERE id = 1", params![token.expose()])?;
        Ok(())
    }

    /// Records (or, with `None`, forgets) a token rotation before it is sent: its new token and
    /// its signature.
    pub fn set_pending_rotation(&self, rotation: Option<(&Secret, &[u8])>) -> rusqlite::Result<()> {
        match rotation {
            Some((token, signature)) => self.conn.execute(
                "INSERT INTO kith_pending_rotation (id, token, signature) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET token = excluded.token, signature = excluded.signature",
                params![token.expose(), signature],
            )?,
            None => self.conn.execute("DELETE FROM kith_pending_rotation", [])?,
        };
        Ok(())
    }

    pub fn pending_rotation(&self) -> rusqlite::Result<Option<(Secret, Vec<u8>)>> {
        self.conn
            .query_row("SELECT token, signature FROM kith_pending_rotation WHERE id = 1", [], |r| {
                Ok((Secret::new(r.get::<_, String>(0)?), r.get::<_, Vec<u8>>(1)?))
            })
            .optional()
    }

    pub fn set_ca_cert(&self, pem: &str) -> rusqlite::Result<()> {
        self.conn.execute("UPDATE kith_profile SET ca_cert = ?1 WHERE id = 1", params![pem])?;
        Ok(())
    }

    /// When the upkeep step `what` last ran (Unix ms), if ever.
    pub fn upkeep_at(&self, what: &str) -> rusqlite::Result<Option<u64>> {
        self.conn
            .prepare_cached("SELECT at FROM kith_upkeep WHERE what = ?1")?
            .query_row(params![what], |r| r.get::<_, i64>(0))
            .optional()
            .map(|v| v.map(u))
    }

    /// Forgets when the upkeep step `what` ran, so that it runs at the next chance.
    pub fn clear_upkeep(&self, what: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached("DELETE FROM kith_upkeep WHERE what = ?1")?.execute([what])?;
        Ok(())
    }

    /// Records that the upkeep step `what` ran at `at`.
    pub fn set_upkeep_at(&self, what: &str, at: u64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO kith_upkeep (what, at) VALUES (?1, ?2)")?
            .execute(params![what, i(at)])?;
        Ok(())
    }

    /// Keeps the account key's secret (before the registration that names its public half is
    /// posted, as the device's own keys are).
    pub fn set_account_key(&self, seed: &[u8; 32]) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO kith_account_key (id, seed) VALUES (1, ?1)",
            params![seed.as_slice()],
        )?;
        Ok(())
    }

    /// Keeps this device's certificate (encoded).
    pub fn set_device_certificate(&self, certificate: &[u8]) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO kith_device_certificate (id, certificate) VALUES (1, ?1)",
            params![certificate],
        )?;
        Ok(())
    }

    /// This device's certificate (encoded), once it has one.
    pub fn device_certificate(&self) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn
            .query_row("SELECT certificate FROM kith_device_certificate WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
    }

    /// The account key's secret, if this profile holds one (a profile registered before
    /// account keys does not).
    pub fn account_key(&self) -> rusqlite::Result<Option<kith_proto::SecretBytes>> {
        self.conn
            .query_row("SELECT seed FROM kith_account_key WHERE id = 1", [], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()
            .map(|s| s.map(kith_proto::SecretBytes::new))
    }
}
