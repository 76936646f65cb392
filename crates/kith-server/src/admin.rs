//! `kithd admin …`: operations on the server's data, beside or without a running server —
//! the commands, their settings ([`Common`]) and what each does ([`run`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::Clock;
use crate::config::{self, Overrides, ServerConfig};
use crate::stores::open_existing as open_existing_store;

#[derive(Subcommand)]
pub enum AdminCommand {
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
    /// For a person who lost every device and their recovery code: suspends the account (every
    /// device is refused at once) and gives it a new recovery code, printed once, to hand to
    /// them over a channel you trust. Nothing changes hands until they run `kith recover` with
    /// it, which lifts this suspension; their contacts' apps then ask them to confirm the new
    /// key (`kith trust`), since their old code did not sign it.
    Recover {
        username: String,
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
pub struct Common {
    /// A TOML configuration file.
    #[arg(long, env = "KITHD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

impl Common {
    /// The settings: defaults, then the file, then flags and environment.
    pub fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => ServerConfig::load(path)?,
            None => ServerConfig::default(),
        };
        Ok(config::resolve(file, self.overrides.clone())?)
    }
}

use serde_json::json;

/// RFC 3339 to the second.
fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    let now = crate::SystemClock.now_millis();
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
                    // Text and reason are quoted and escaped: a reporter writes the reason,
                    // and a control character must not reach the operator's terminal as one.
                    let reason = r.reason.as_ref().map_or("-".to_string(), |r| format!("{r:?}"));
                    println!(
                        "#{} {} reported {} (message of {}): {:?}  reason: {reason}",
                        r.id,
                        r.reporter,
                        r.sender,
                        time(r.message_time),
                        r.text,
                    );
                }
            }
            if reports.is_empty() && !json {
                eprintln!("No reports.");
            }
        }
        AdminCommand::Suspend { username, reason, common } => {
            let store = open_existing_store(&common.resolve()?).await?;
            crate::safety::set_suspension(&*store, &username, Some(&reason), now).await?;
            println!("Suspended {username}.");
        }
        AdminCommand::Recover { username, common } => {
            let store = open_existing_store(&common.resolve()?).await?;
            let code = crate::recovery::operator_reset(&*store, &username, now).await?;
            println!("{username} is suspended until they take the account back with this code:");
            println!("Recovery code: {}", kith_proto::recovery::show_code(code.expose()));
            println!(
                "Give it to them over a channel you trust; it is shown only now. They run \
                 `kith recover {username} --server URL` (or \"Take your account back\" in the app)."
            );
        }
        AdminCommand::Unsuspend { username, common } => {
            let store = open_existing_store(&common.resolve()?).await?;
            crate::safety::set_suspension(&*store, &username, None, now).await?;
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
                        .map(
                            |f| json!({"action": f.action, "reason": f.reason, "at": f.created_at}),
                        )
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
            let id = crate::safety::franking::Franking::rotate(&*store, now).await?;
            println!("New franking key {id}; running servers pick it up within a minute.");
        }
    }
    Ok(())
}
