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
use kith_server::{AppState, Clock, SystemClock};
use kith_store::Store;

/// mimalloc instead of the C library's allocator: every request allocates and frees small
/// buffers from two threads, where glibc's malloc spent a tenth of the server's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Verified reports: sender, reporter, time, reason and the reported text.
    Reports {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        json: bool,
    },
    /// Suspend an account: every request of its devices is refused.
    Suspend {
        username: String,
        #[arg(long, default_value = "suspended by an admin")]
        reason: String,
        #[command(flatten)]
        common: Common,
    },
    /// Lift a suspension.
    Unsuspend {
        username: String,
        #[command(flatten)]
        common: Common,
    },
    /// Accounts the safety policy (or an admin) acted against.
    Accounts {
        /// Only accounts with recorded actions (the only listing for now).
        #[arg(long)]
        flagged: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Blocks and reports received (of one account, or all): who, when, and whether each
    /// counts toward the account's reputation.
    Signals {
        username: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Forget an account's blocks and reports once reviewed; its reputation starts afresh.
    ClearSignals {
        username: String,
        #[command(flatten)]
        common: Common,
    },
    /// Start a new franking key; the old one keeps verifying for the retention period.
    RotateFrankingKey(Common),
    /// Mark a business account verified: the directory and its messages say so.
    VerifyBusiness {
        username: String,
        #[command(flatten)]
        common: Common,
    },
    /// Take a business's verification away.
    UnverifyBusiness {
        username: String,
        #[command(flatten)]
        common: Common,
    },
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
    /// PEM certificate chain: serve HTTPS and WSS (with --tls-key).
    #[arg(long, env = "KITHD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "KITHD_TLS_KEY")]
    tls_key: Option<PathBuf>,
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
                tls_cert: self.tls_cert.clone(),
                tls_key: self.tls_key.clone(),
            },
        )?)
    }
}

mod admin {
    //! `kithd admin …`: operations on the server's data, beside or without a running server.

    use super::*;
    use serde_json::json;

    /// RFC 3339 to the second.
    fn time(ms: u64) -> String {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        humantime::format_rfc3339_seconds(t).to_string()
    }

    pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
        let now = kith_server::SystemClock.now_millis();
        match command {
            AdminCommand::Stats(common) => {
                let store = open_existing_store(&common.resolve()?).await?;
                let c = store.counts().await?;
                println!(
                    "accounts {}\ndevices {}\nmessages {}\nqueue_entries {}\nkey_packages {}",
                    c.accounts, c.devices, c.messages, c.queue_entries, c.key_packages
                );
            }
            AdminCommand::Reports { common, json } => {
                let store = open_existing_store(&common.resolve()?).await?;
                let reports = store.reports().await?;
                for r in &reports {
                    if json {
                        println!(
                            "{}",
                            json!({
                                "id": r.id,
                                "sender": r.sender,
                                "sender_device": r.sender_device,
                                "reporter": r.reporter,
                                "sent_at": r.message_time,
                                "reported_at": r.created_at,
                                "reason": r.reason,
                                "text": r.text,
                            })
                        );
                    } else {
                        println!(
                            "#{} {} reported {} (message of {}): {:?}  reason: {}",
                            r.id,
                            r.reporter,
                            r.sender,
                            time(r.message_time),
                            r.text,
                            r.reason.as_deref().unwrap_or("-")
                        );
                    }
                }
                if reports.is_empty() && !json {
                    eprintln!("No reports.");
                }
            }
            AdminCommand::Suspend { username, reason, common } => {
                let store = open_existing_store(&common.resolve()?).await?;
                store.set_suspended(&username, Some(reason.clone())).await?;
                store
                    .add_flag(kith_store::FlagRecord {
                        username: username.clone(),
                        action: "suspend".into(),
                        reason: format!("admin: {reason}"),
                        created_at: now,
                    })
                    .await?;
                println!("Suspended {username}.");
            }
            AdminCommand::Unsuspend { username, common } => {
                let store = open_existing_store(&common.resolve()?).await?;
                store.set_suspended(&username, None).await?;
                store
                    .add_flag(kith_store::FlagRecord {
                        username: username.clone(),
                        action: "unsuspend".into(),
                        reason: "admin".into(),
                        created_at: now,
                    })
                    .await?;
                println!("Reinstated {username}.");
            }
            AdminCommand::Accounts { flagged: _, json, common } => {
                let store = open_existing_store(&common.resolve()?).await?;
                let flags = store.flags().await?;
                let mut names: Vec<&str> = flags.iter().map(|f| f.username.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                for name in names {
                    let info = store.account_info(name).await?;
                    let actions: Vec<_> = flags.iter().filter(|f| f.username == name).collect();
                    let suspended = info.as_ref().and_then(|i| i.suspended.clone());
                    // What counts toward its reputation now (qualified, not cleared).
                    let signals = store.signals(Some(name)).await?;
                    let counting =
                        |kind| signals.iter().filter(|g| g.kind == kind && g.qualified).count();
                    let (blocks, reports) = (
                        counting(kith_store::SignalKind::Block),
                        counting(kith_store::SignalKind::Report),
                    );
                    if json {
                        let list: Vec<_> = actions
                            .iter()
                            .map(|f| json!({"action": f.action, "reason": f.reason, "at": f.created_at}))
                            .collect();
                        println!(
                            "{}",
                            json!({
                                "username": name,
                                "suspended": suspended,
                                "blocked_by": info.as_ref().map(|i| i.blocked_by),
                                "reported_by": info.as_ref().map(|i| i.reported_by),
                                "counting_blocks": blocks,
                                "counting_reports": reports,
                                "actions": list,
                            })
                        );
                    } else {
                        let reviewed = actions.last().is_some_and(|f| f.action == "cleared");
                        let state = match &suspended {
                            Some(r) => format!("SUSPENDED ({r})"),
                            None if reviewed => "active, reviewed".into(),
                            None => "active".into(),
                        };
                        println!(
                            "{name}: {state}; counting now: {blocks} block(s), {reports} report(s)"
                        );
                        for f in actions {
                            println!("  {} {}: {}", time(f.created_at), f.action, f.reason);
                        }
                    }
                }
            }
            AdminCommand::Signals { username, json, common } => {
                let store = open_existing_store(&common.resolve()?).await?;
                let signals = store.signals(username.as_deref()).await?;
                for g in &signals {
                    if json {
                        println!(
                            "{}",
                            json!({
                                "target": g.target,
                                "source": g.source,
                                "kind": g.kind.as_str(),
                                "qualified": g.qualified,
                                "at": g.created_at,
                            })
                        );
                    } else {
                        let counts = if g.qualified { "counts" } else { "does not count" };
                        println!(
                            "{} {} {} {} ({counts})",
                            time(g.created_at),
                            g.source,
                            if g.kind == kith_store::SignalKind::Block {
                                "blocked"
                            } else {
                                "reported"
                            },
                            g.target
                        );
                    }
                }
                if signals.is_empty() && !json {
                    eprintln!("No signals.");
                }
            }
            AdminCommand::ClearSignals { username, common } => {
                let store = open_existing_store(&common.resolve()?).await?;
                if store.account_info(&username).await?.is_none() {
                    anyhow::bail!("there is no account named {username}");
                }
                let n = store.clear_signals(&username).await?;
                store
                    .add_flag(kith_store::FlagRecord {
                        username: username.clone(),
                        action: "cleared".into(),
                        reason: format!("admin cleared {n} signals"),
                        created_at: now,
                    })
                    .await?;
                println!("Cleared {n} signals of {username}.");
            }
            AdminCommand::VerifyBusiness { username, common } => {
                let store = open_existing_store(&common.resolve()?).await?;
                store.set_verified(&username, true).await.map_err(|e| match e {
                    kith_store::StoreError::UnknownUser => {
                        anyhow::anyhow!("there is no business account named {username}")
                    }
                    other => other.into(),
                })?;
                println!("{username} is now a verified business.");
            }
            AdminCommand::UnverifyBusiness { username, common } => {
                let store = open_existing_store(&common.resolve()?).await?;
                store.set_verified(&username, false).await.map_err(|e| match e {
                    kith_store::StoreError::UnknownUser => {
                        anyhow::anyhow!("there is no business account named {username}")
                    }
                    other => other.into(),
                })?;
                println!("{username} is no longer verified.");
            }
            AdminCommand::RotateFrankingKey(common) => {
                let store = open_existing_store(&common.resolve()?).await?;
                let id = kith_server::safety::franking::Franking::rotate(&*store, now).await?;
                println!("New franking key {id}; running servers pick it up within a minute.");
            }
        }
        Ok(())
    }
}

/// Creates the data folder readable by its owner only (it holds the franking key and
/// ciphertext), and narrows an existing one.
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict the data folder {}", dir.display()))?;
    }
    Ok(())
}

/// The store of a server that exists: admin commands never create an empty one (run from the
/// wrong folder, they would otherwise report on nothing).
async fn open_existing_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    if config.database_url.is_none() && !config.sqlite_path().exists() {
        anyhow::bail!(
            "there is no Kith database at {}; pass the server's --data DIR (or --config FILE, or \
             --database-url URL)",
            config.sqlite_path().display()
        );
    }
    open_store(config).await
}

async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.database_url {
        Some(url) => Arc::new(
            kith_store_postgres::PgStore::connect(url)
                .await
                .context("cannot open the PostgreSQL database")?,
        ),
        None => {
            create_private_dir(&config.data)?;
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
            // Every connected device holds a socket: allow as many as the system lets us.
            if let Ok(limit) = rlimit::increase_nofile_limit(u64::MAX) {
                tracing::debug!(limit, "open file limit");
            }
            let config = common.resolve()?;
            let store = open_store(&config).await?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let addr = listener.local_addr()?;
            let backend = if config.database_url.is_some() { "postgres" } else { "sqlite" };
            let tls = match (&config.tls_cert, &config.tls_key) {
                (Some(cert), Some(key)) => {
                    Some(kith_server::tls::server_config(cert, key).map_err(anyhow::Error::msg)?)
                }
                _ => None,
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(%addr, scheme, backend, data = %config.data.display(), "kithd listening");
            let state = AppState::build(store, config, Arc::new(SystemClock)).await?;
            match tls {
                Some(tls) => {
                    kith_server::tls::run_tls(listener, state, shutdown_signal(), tls).await?
                }
                None => kith_server::run(listener, state, shutdown_signal()).await?,
            }
            tracing::info!("kithd stopped");
        }
        Command::Admin { command } => admin::run(command).await?,
    }
    Ok(())
}
