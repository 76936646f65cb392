//! `kith`: the Kith command line.
//!
//! Scripting commands over the `kith-client` SDK. Output is for people by default and one JSON
//! object per line with `--json`; errors go to stderr and the exit code is non-zero.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kith_client::{AccountKind, Client, ClientError, ErrorCode};

#[derive(Parser)]
#[command(name = "kith", version, about = "Kith: end-to-end encrypted messaging")]
struct Cli {
    /// The profile folder (keys, MLS state, history) [default: ~/.kith].
    #[arg(long, global = true, env = "KITH_PROFILE")]
    profile: Option<PathBuf>,
    /// Print JSON, one object per line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account on a server, with this profile as its first device.
    Register {
        username: String,
        /// The server, e.g. http://127.0.0.1:8420.
        #[arg(long)]
        server: String,
        /// Register a business account (public profile, cannot cold-message people).
        #[arg(long)]
        business: bool,
    },
    /// Show this profile's account.
    Whoami,
    /// Send a 1:1 message.
    Send { username: String, text: String },
    /// Fetch, decrypt and print new messages.
    Sync,
    /// Print the local history with a user.
    History { username: String },
}

fn default_profile() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".kith")
}

/// Plain words for the refusals a person is most likely to meet.
fn explain(err: &ClientError, cli_target: Option<&str>) -> String {
    match (err.code(), cli_target) {
        (Some(ErrorCode::UnknownUser), Some(who)) => {
            format!("there is no user named {who} on this server")
        }
        (Some(ErrorCode::UsernameTaken), Some(who)) => {
            format!("the username {who} is taken on this server; pick another")
        }
        (Some(ErrorCode::Unauthorized), _) => {
            "the server does not accept this profile's credentials (was the account removed, or is this the right server?)".into()
        }
        _ => err.to_string(),
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let dir = cli.profile.clone().unwrap_or_else(default_profile);
    let mut client = Client::open(&dir)
        .map_err(|e| format!("cannot open the profile {}: {e}", dir.display()))?;
    let out = output::Output { json: cli.json };
    match cli.command {
        Command::Register { username, server, business } => {
            let kind = if business { AccountKind::Business } else { AccountKind::Person };
            let p = client
                .register(&server, &username, kind)
                .await
                .map_err(|e| explain(&e, Some(&username)))?;
            out.registered(&p);
        }
        Command::Whoami => {
            let me = client.whoami().await.map_err(|e| explain(&e, None))?;
            let server = client.profile().map(|p| p.server.clone()).unwrap_or_default();
            out.whoami(&me, &server);
        }
        Command::Send { username, text } => {
            let m = client
                .send_text(&username, &text)
                .await
                .map_err(|e| explain(&e, Some(&username)))?;
            out.sent(&m, &username);
        }
        Command::Sync => {
            let report = client.sync().await.map_err(|e| explain(&e, None))?;
            out.synced(&report);
        }
        Command::History { username } => {
            if client.profile().is_none() {
                return Err(ClientError::NotRegistered.to_string());
            }
            let messages = client.history(&username).map_err(|e| e.to_string())?;
            out.history(&messages, &username);
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kith: {message}");
            ExitCode::FAILURE
        }
    }
}
