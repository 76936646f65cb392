//! Server settings. Precedence: command-line flag, then `KITHD_*` variable (clap reads both),
//! then the TOML file, then the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The settings `kithd` runs with.
#[derive(Clone, Debug)]
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
    pub sweep_interval: Duration,
    /// Largest request body accepted (default 1 MiB).
    pub max_body_bytes: usize,
    /// One-time KeyPackages one upload may carry.
    pub max_key_packages_per_upload: usize,
    /// One-time KeyPackages one device may hold.
    pub max_key_packages_per_device: u64,
    /// Most member devices a group may have (default 1024).
    pub max_group_size: usize,
    /// How long a story lives on the server (default 24 h).
    pub story_ttl_seconds: u64,
    /// The safety policy's thresholds (`[safety]` in the file).
    pub safety: crate::safety::SafetyConfig,
    /// PEM certificate chain and private key: serve HTTPS/WSS instead of plain HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A client must finish sending its request headers within this (default 10 s).
    pub header_read_timeout: Duration,
    /// Open WebSocket push connections one device may hold at once (default 4).
    pub max_connections_per_device: usize,
    /// Undelivered entries one device's queue may hold (default 10,000); see
    /// [`crate::queues`] for what a sender sees at the limit.
    pub max_queued_per_device: u64,
    /// Every request is answered within this (default 30 s): `503` if the work takes longer.
    pub request_timeout: Duration,
    /// Largest WebSocket message (and frame) a client may send (default 64 KiB); a larger one
    /// closes the connection. Client frames are acknowledgements, a few hundred bytes.
    pub max_ws_message_bytes: usize,
    /// How often an open push connection checks that its token still holds and its account is
    /// not suspended (default 30 s): what another process changed ends it within this time.
    pub push_recheck: Duration,
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
            story_ttl_seconds: 86_400,
            safety: Default::default(),
            tls_cert: None,
            tls_key: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections_per_device: 4,
            max_queued_per_device: 10_000,
            request_timeout: Duration::from_secs(30),
            max_ws_message_bytes: 64 * 1024,
            push_recheck: Duration::from_secs(30),
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

/// The TOML file's shape: every key optional; unknown keys are an error, so a typo is caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub database_url: Option<String>,
    pub retention_days: Option<u32>,
    pub sweep_interval_seconds: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub max_key_packages_per_upload: Option<usize>,
    pub max_key_packages_per_device: Option<u64>,
    pub max_group_size: Option<usize>,
    pub story_ttl_seconds: Option<u64>,
    pub safety: Option<crate::safety::SafetyConfig>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub header_read_timeout_seconds: Option<u64>,
    pub max_connections_per_device: Option<usize>,
    pub max_queued_per_device: Option<u64>,
    pub request_timeout_seconds: Option<u64>,
    pub max_ws_message_bytes: Option<usize>,
    pub push_recheck_seconds: Option<u64>,
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

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }
}

/// Settings given on the command line or in the environment; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub database_url: Option<String>,
    pub retention_days: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub max_group_size: Option<usize>,
    pub story_ttl_seconds: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Merges overrides over the file over the defaults, and checks the result.
pub fn resolve(file: FileConfig, over: Overrides) -> Result<ServerConfig, ConfigError> {
    let d = ServerConfig::default();
    let config = ServerConfig {
        listen: over.listen.or(file.listen).unwrap_or(d.listen),
        data: over.data.or(file.data).unwrap_or(d.data),
        database_url: over.database_url.or(file.database_url),
        retention_days: over.retention_days.or(file.retention_days).unwrap_or(d.retention_days),
        sweep_interval: file
            .sweep_interval_seconds
            .map(Duration::from_secs)
            .unwrap_or(d.sweep_interval),
        max_body_bytes: over.max_body_bytes.or(file.max_body_bytes).unwrap_or(d.max_body_bytes),
        max_key_packages_per_upload: file
            .max_key_packages_per_upload
            .unwrap_or(d.max_key_packages_per_upload),
        max_key_packages_per_device: file
            .max_key_packages_per_device
            .unwrap_or(d.max_key_packages_per_device),
        max_group_size: over.max_group_size.or(file.max_group_size).unwrap_or(d.max_group_size),
        story_ttl_seconds: over
            .story_ttl_seconds
            .or(file.story_ttl_seconds)
            .unwrap_or(d.story_ttl_seconds),
        safety: file.safety.unwrap_or_default(),
        tls_cert: over.tls_cert.or(file.tls_cert),
        tls_key: over.tls_key.or(file.tls_key),
        header_read_timeout: file
            .header_read_timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(d.header_read_timeout),
        max_connections_per_device: file
            .max_connections_per_device
            .unwrap_or(d.max_connections_per_device),
        max_queued_per_device: file.max_queued_per_device.unwrap_or(d.max_queued_per_device),
        request_timeout: file
            .request_timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(d.request_timeout),
        max_ws_message_bytes: file.max_ws_message_bytes.unwrap_or(d.max_ws_message_bytes),
        push_recheck: file.push_recheck_seconds.map(Duration::from_secs).unwrap_or(d.push_recheck),
    };
    if config.push_recheck.is_zero() {
        return Err(ConfigError::Invalid("push_recheck_seconds must be at least 1".into()));
    }
    if config.max_ws_message_bytes < 1024 {
        return Err(ConfigError::Invalid("max_ws_message_bytes must be at least 1024".into()));
    }
    if config.request_timeout.is_zero() {
        return Err(ConfigError::Invalid("request_timeout_seconds must be at least 1".into()));
    }
    if config.max_queued_per_device == 0 {
        return Err(ConfigError::Invalid("max_queued_per_device must be at least 1".into()));
    }
    if config.max_connections_per_device == 0 {
        return Err(ConfigError::Invalid("max_connections_per_device must be at least 1".into()));
    }
    if config.header_read_timeout.is_zero() {
        return Err(ConfigError::Invalid("header_read_timeout_seconds must be at least 1".into()));
    }
    if config.tls_cert.is_some() != config.tls_key.is_some() {
        return Err(ConfigError::Invalid("TLS needs both tls_cert and tls_key".into()));
    }
    if config.story_ttl_seconds == 0 {
        return Err(ConfigError::Invalid("story_ttl_seconds must be at least 1".into()));
    }
    if config.max_group_size < 2 {
        return Err(ConfigError::Invalid("max_group_size must be at least 2".into()));
    }
    if config.retention_days == 0 {
        return Err(ConfigError::Invalid("retention_days must be at least 1".into()));
    }
    if config.max_body_bytes < 4096 {
        return Err(ConfigError::Invalid("max_body_bytes must be at least 4096".into()));
    }
    if config.sweep_interval.is_zero() {
        return Err(ConfigError::Invalid("sweep_interval_seconds must be at least 1".into()));
    }
    if let Some(url) = &config.database_url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return Err(ConfigError::Invalid(
            "database_url must start with postgres:// (SQLite needs no URL: it lives in --data)"
                .into(),
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_default() {
        let file: FileConfig = toml::from_str(
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
        assert!(toml::from_str::<FileConfig>("retention_dayz = 3").is_err());
        let over = Overrides { retention_days: Some(0), ..Default::default() };
        assert!(resolve(FileConfig::default(), over).is_err());
        let over = Overrides { database_url: Some("mysql://x".into()), ..Default::default() };
        assert!(resolve(FileConfig::default(), over).is_err());
        for zero in [
            "max_queued_per_device = 0",
            "max_connections_per_device = 0",
            "header_read_timeout_seconds = 0",
            "request_timeout_seconds = 0",
        ] {
            let file: FileConfig = toml::from_str(zero).unwrap();
            let err = resolve(file, Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("at least 1"), "{zero}: {err}");
        }
        let file: FileConfig = toml::from_str("max_queued_per_device = 50").unwrap();
        assert_eq!(resolve(file, Overrides::default()).unwrap().max_queued_per_device, 50);
    }
}
