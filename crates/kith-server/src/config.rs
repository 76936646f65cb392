//! Server settings, in one struct: [`ServerConfig`] is what `kithd` runs with and the shape
//! of its TOML file (every key optional, durations in seconds). Precedence: command-line flag,
//! then `KITHD_*` variable (clap reads both; see [`Overrides`]), then the file, then the
//! default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The settings `kithd` runs with. Unknown keys in the file are an error, so a typo is caught.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen (default `127.0.0.1:8420`).
    pub listen: SocketAddr,
    /// The data folder: the SQLite database lives here (default `./kithd-data`).
    pub data: PathBuf,
    /// `postgres://…` to use PostgreSQL instead of SQLite.
    pub database_url: Option<String>,
    /// Undelivered ciphertext is deleted after this many days (default 30).
    pub retention_days: u32,
    /// How often the retention sweep runs.
    #[serde(rename = "sweep_interval_seconds", deserialize_with = "seconds")]
    pub sweep_interval: Duration,
    /// Largest request body accepted (default 1 MiB).
    pub max_body_bytes: usize,
    /// One-time KeyPackages one upload may carry.
    pub max_key_packages_per_upload: usize,
    /// One-time KeyPackages one device may hold.
    pub max_key_packages_per_device: u64,
    /// Most member devices a group may have (default 1024).
    pub max_group_size: usize,
    /// Most devices one account may have (default 5).
    pub max_devices_per_account: u32,
    /// How long a story lives on the server (default 24 h).
    pub story_ttl_seconds: u64,
    /// How often the key directory publishes an epoch when an account's keys changed
    /// (default 2 s).
    #[serde(rename = "kt_publish_interval_ms", deserialize_with = "millis")]
    pub kt_publish_interval: Duration,
    /// The safety policy's thresholds (`[safety]` in the file).
    pub safety: crate::safety::SafetyConfig,
    /// PEM certificate chain and private key: serve HTTPS/WSS instead of plain HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A client must finish sending its request headers within this (default 10 s).
    #[serde(rename = "header_read_timeout_seconds", deserialize_with = "seconds")]
    pub header_read_timeout: Duration,
    /// Open WebSocket push connections one device may hold at once (default 4).
    pub max_connections_per_device: usize,
    /// Undelivered entries one device's queue may hold (default 10,000); see
    /// [`crate::queues`] for what a sender sees at the limit.
    pub max_queued_per_device: u64,
    /// Every request is answered within this (default 30 s): `503` if the work takes longer.
    #[serde(rename = "request_timeout_seconds", deserialize_with = "seconds")]
    pub request_timeout: Duration,
    /// Largest WebSocket message (and frame) a client may send (default 64 KiB); a larger one
    /// closes the connection. Client frames are acknowledgements, a few hundred bytes.
    pub max_ws_message_bytes: usize,
    /// How often an open push connection checks that its token still holds and its account is
    /// not suspended (default 30 s): what another process changed ends it within this time.
    #[serde(rename = "push_recheck_seconds", deserialize_with = "seconds")]
    pub push_recheck: Duration,
    /// Connections open at once (default 16,384, and never more than the open-file limit
    /// leaves room for). At the cap, the oldest connection that has not sent a request yet is
    /// closed for a newcomer; see `kith_listen`.
    pub max_connections: usize,
    /// Connections open at once from one address, an IPv6 /64 counting as one (default 1,024:
    /// many devices may share an address behind NAT).
    pub max_connections_per_address: usize,
    /// Request bodies held in memory at once, all requests together (default 64 MiB). Bodies
    /// up to 16 KiB do not count (every connection may hold one).
    pub max_body_memory_bytes: usize,
    /// The same, from one address (default 8 MiB).
    pub max_body_memory_per_address: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8420)),
            data: PathBuf::from("kithd-data"),
            database_url: None,
            retention_days: 30,
            sweep_interval: Duration::from_secs(60),
            max_body_bytes: 1 << 20,
            max_key_packages_per_upload: 200,
            max_key_packages_per_device: 1000,
            max_group_size: 1024,
            max_devices_per_account: 5,
            story_ttl_seconds: 86_400,
            kt_publish_interval: Duration::from_secs(2),
            safety: Default::default(),
            tls_cert: None,
            tls_key: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections_per_device: 4,
            max_queued_per_device: 10_000,
            request_timeout: Duration::from_secs(30),
            max_ws_message_bytes: 64 * 1024,
            push_recheck: Duration::from_secs(30),
            max_connections: 16_384,
            max_connections_per_address: 1024,
            max_body_memory_bytes: 64 << 20,
            max_body_memory_per_address: 8 << 20,
        }
    }
}

impl ServerConfig {
    pub fn retention_millis(&self) -> u64 {
        u64::from(self.retention_days) * 86_400_000
    }

    /// The SQLite database file inside the data folder.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data.join("kithd.db")
    }
}

fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {path} is not valid: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{0}")]
    Invalid(String),
}

impl ServerConfig {
    /// The file's settings over the defaults (not yet checked: see [`ServerConfig::checked`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// The settings if they make sense together, else what is wrong.
    pub fn checked(self) -> Result<Self, ConfigError> {
        let invalid = |why: &str| Err(ConfigError::Invalid(why.to_string()));
        let at_least_1 = [
            (self.push_recheck.is_zero(), "push_recheck_seconds"),
            (self.request_timeout.is_zero(), "request_timeout_seconds"),
            (self.max_queued_per_device == 0, "max_queued_per_device"),
            (self.max_connections_per_device == 0, "max_connections_per_device"),
            (self.header_read_timeout.is_zero(), "header_read_timeout_seconds"),
            (self.story_ttl_seconds == 0, "story_ttl_seconds"),
            (self.kt_publish_interval.is_zero(), "kt_publish_interval_ms"),
            (self.retention_days == 0, "retention_days"),
            (self.sweep_interval.is_zero(), "sweep_interval_seconds"),
            (self.max_connections == 0, "max_connections"),
            (self.max_connections_per_address == 0, "max_connections_per_address"),
        ];
        if let Some((_, name)) = at_least_1.iter().find(|(zero, _)| *zero) {
            return invalid(&format!("{name} must be at least 1"));
        }
        if self.max_ws_message_bytes < 1024 {
            return invalid("max_ws_message_bytes must be at least 1024");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("TLS needs both tls_cert and tls_key");
        }
        if self.max_devices_per_account < 1 {
            return invalid("max_devices_per_account must be at least 1");
        }
        if self.max_group_size < 2 {
            return invalid("max_group_size must be at least 2");
        }
        if self.max_body_bytes < 4096 {
            return invalid("max_body_bytes must be at least 4096");
        }
        if self.max_body_memory_per_address < self.max_body_bytes
            || self.max_body_memory_bytes < self.max_body_memory_per_address
        {
            return invalid(
                "max_body_memory_per_address must hold one largest body (max_body_bytes), and \
                 max_body_memory_bytes at least that",
            );
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return invalid(
                "database_url must start with postgres:// (SQLite needs no URL: it lives in --data)",
            );
        }
        Ok(self)
    }
}

/// Settings given on the command line or in the environment (`KITHD_*`), applied over the
/// file's; unset ones leave it alone.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address to listen on [default: 127.0.0.1:8420].
    #[arg(long, env = "KITHD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data folder (SQLite database) [default: ./kithd-data].
    #[arg(long, env = "KITHD_DATA")]
    pub data: Option<PathBuf>,
    /// Use PostgreSQL: postgres://user@host/db.
    #[arg(long, env = "KITHD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Delete undelivered ciphertext after this many days [default: 30].
    #[arg(long, env = "KITHD_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "KITHD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most member devices a group may have [default: 1024].
    #[arg(long, env = "KITHD_MAX_GROUP_SIZE")]
    pub max_group_size: Option<usize>,
    /// Most devices one account may have [default: 5].
    #[arg(long, env = "KITHD_MAX_DEVICES_PER_ACCOUNT")]
    pub max_devices_per_account: Option<u32>,
    /// How long a story lives, in seconds [default: 86400].
    #[arg(long, env = "KITHD_STORY_TTL_SECONDS")]
    pub story_ttl_seconds: Option<u64>,
    /// PEM certificate chain: serve HTTPS and WSS (with --tls-key).
    #[arg(long, env = "KITHD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "KITHD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl Overrides {
    /// `config` with these settings over it.
    pub fn over(self, mut config: ServerConfig) -> ServerConfig {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        set(&mut config.listen, self.listen);
        set(&mut config.data, self.data);
        set(&mut config.retention_days, self.retention_days);
        set(&mut config.max_body_bytes, self.max_body_bytes);
        set(&mut config.max_group_size, self.max_group_size);
        set(&mut config.max_devices_per_account, self.max_devices_per_account);
        set(&mut config.story_ttl_seconds, self.story_ttl_seconds);
        config.database_url = self.database_url.or(config.database_url);
        config.tls_cert = self.tls_cert.or(config.tls_cert);
        config.tls_key = self.tls_key.or(config.tls_key);
        config
    }
}

/// The defaults, then the file, then the overrides; checked.
pub fn resolve(file: ServerConfig, over: Overrides) -> Result<ServerConfig, ConfigError> {
    over.over(file).checked()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_default() {
        let file: ServerConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nretention_days = 7\nmax_body_bytes = 8192\n",
        )
        .unwrap();
        let over = Overrides { retention_days: Some(3), ..Default::default() };
        let c = resolve(file, over).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.retention_days, 3);
        assert_eq!(c.max_body_bytes, 8192);
        assert_eq!(c.data, PathBuf::from("kithd-data"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ServerConfig>("retention_dayz = 3").is_err());
        let over = Overrides { retention_days: Some(0), ..Default::default() };
        assert!(resolve(ServerConfig::default(), over).is_err());
        let over = Overrides { database_url: Some("mysql://x".into()), ..Default::default() };
        assert!(resolve(ServerConfig::default(), over).is_err());
        for zero in [
            "max_queued_per_device = 0",
            "max_connections_per_device = 0",
            "header_read_timeout_seconds = 0",
            "request_timeout_seconds = 0",
        ] {
            let file: ServerConfig = toml::from_str(zero).unwrap();
            let err = resolve(file, Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("at least 1"), "{zero}: {err}");
        }
        let file: ServerConfig = toml::from_str("max_queued_per_device = 50").unwrap();
        assert_eq!(resolve(file, Overrides::default()).unwrap().max_queued_per_device, 50);
    }
}
