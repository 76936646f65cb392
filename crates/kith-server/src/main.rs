//! `kithd`: the Kith server.
//!
//! ```text
//! kithd serve [--config FILE] [--listen ADDR] [--data DIR] [--database-url URL]
//! kithd admin stats [--config FILE] [--data DIR] [--database-url URL]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kith_server::config::{self, FileConfig, Overrides, ServerConfig};
use kith_server::{AppState, SystemClock};
use kith_store::Store;

#[derive(Parser)]
#[command(
    name = "kithd",
    version,
    about = "The Kith server: relays end-to-end encrypted messages it cannot read"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Common),
    /// Administrative commands on the server's data.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// How many accounts, devices, messages and queue entries the store holds.
    Stats(Common),
}

#[derive(Args, Clone)]
struct Common {
    /// A TOML configuration file.
    #[arg(long, env = "KITHD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8420].
    #[arg(long, env = "KITHD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data folder (SQLite database) [default: ./kithd-data].
    #[arg(long, env = "KITHD_DATA")]
    data: Option<PathBuf>,
    /// Use PostgreSQL: postgres://user@host/db.
    #[arg(long, env = "KITHD_DATABASE_URL")]
    database_url: Option<String>,
    /// Delete undelivered ciphertext after this many days [default: 30].
    #[arg(long, env = "KITHD_RETENTION_DAYS")]
    retention_days: Option<u32>,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "KITHD_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Most member devices a group may have [default: 1024].
    #[arg(long, env = "KITHD_MAX_GROUP_SIZE")]
    max_group_size: Option<usize>,
    /// How long a story lives, in seconds [default: 86400].
    #[arg(long, env = "KITHD_STORY_TTL_SECONDS")]
    story_ttl_seconds: Option<u64>,
}

impl Common {
    fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Ok(config::resolve(
            file,
            Overrides {
                listen: self.listen,
                data: self.data.clone(),
                database_url: self.database_url.clone(),
                retention_days: self.retention_days,
                max_body_bytes: self.max_body_bytes,
                max_group_size: self.max_group_size,
                story_ttl_seconds: self.story_ttl_seconds,
            },
        )?)
    }
}

async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.database_url {
        Some(url) => Arc::new(
            kith_store_postgres::PgStore::connect(url)
                .await
                .context("cannot open the PostgreSQL database")?,
        ),
        None => {
            std::fs::create_dir_all(&config.data).with_context(|| {
                format!("cannot create the data folder {}", config.data.display())
            })?;
            Arc::new(
                kith_store_sqlite::SqliteStore::open(config.sqlite_path())
                    .context("cannot open the SQLite database")?,
            )
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KITHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve(common) => {
            let config = common.resolve()?;
            let store = open_store(&config).await?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let addr = listener.local_addr()?;
            let backend = if config.database_url.is_some() { "postgres" } else { "sqlite" };
            tracing::info!(%addr, backend, data = %config.data.display(), "kithd listening");
            let state = AppState::new(store, config, Arc::new(SystemClock));
            kith_server::run(listener, state, shutdown_signal()).await?;
            tracing::info!("kithd stopped");
        }
        Command::Admin { command: AdminCommand::Stats(common) } => {
            let config = common.resolve()?;
            let store = open_store(&config).await?;
            let c = store.counts().await?;
            println!(
                "accounts {}\ndevices {}\nmessages {}\nqueue_entries {}\nkey_packages {}",
                c.accounts, c.devices, c.messages, c.queue_entries, c.key_packages
            );
        }
    }
    Ok(())
}
