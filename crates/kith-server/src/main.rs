//! `kithd`: the Kith server.
//!
//! ```text
//! kithd serve [--config FILE] [--listen ADDR] [--data DIR] [--database-url URL]
//! kithd admin stats [--config FILE] [--data DIR] [--database-url URL]
//! ```

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kith_server::{AppState, SystemClock};

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
    Serve(kith_server::admin::Common),
    /// Administrative commands on the server's data.
    Admin {
        #[command(subcommand)]
        command: kith_server::admin::AdminCommand,
    },
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
            let store = kith_server::stores::open(&config).await?;
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
        Command::Admin { command } => kith_server::admin::run(command).await?,
    }
    Ok(())
}
