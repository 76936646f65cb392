//! `kith-bench`: benchmark scenarios against a real `kithd` on loopback.
//!
//! Each scenario starts its own server (SQLite in a temporary folder, or PostgreSQL with
//! `--store postgres` and `KITH_TEST_DATABASE_URL`), prints a table for people and, with
//! `--json`, one JSON object with the figures as its last line.
//!
//! - `abuse-sim`: a population of normal and abusive accounts over simulated days, scoring the
//!   safety policy (precision, recall, false positives, messages before the first action);
//! - `floods`: an honest pair's round trip during each kind of flood, next to none;
//! - `kt`: the key directory: publishing an epoch of 1,000 changes in a directory of 100,000
//!   accounts, a lookup proof's and an audit proof's size, and the time to check each;
//! - `groups`: the cost of a large group — creating it in one commit, joining from its
//!   Welcome, one message to every member, one member's update commit — through Kith, next to
//!   raw OpenMLS in memory for the same operations.

mod abuse;
mod connections;
mod floods;
mod groups;
mod kt;
mod link;
mod mls_cost;
mod raw;
mod relay;
mod report;
mod server;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "kith-bench", about = "Kith benchmark scenarios")]
struct Cli {
    /// Print one JSON object with the figures as the last line.
    #[arg(long, global = true)]
    json: bool,
    /// Which store the server uses.
    #[arg(long, global = true, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Subcommand)]
enum Scenario {
    /// A group of N members: create, join, one message to all, an update commit.
    Groups {
        /// Members of the group, the creator included.
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Size of the message's text in bytes.
        #[arg(long, default_value_t = 200)]
        bytes: usize,
    },
    /// Messages through a kithd child process to devices on WebSockets.
    Relay {
        /// 1:1 conversations (sender and receiver devices).
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Concurrent senders.
        #[arg(long, default_value_t = 16)]
        senders: usize,
        /// Length of the timed part.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Size of each message's text.
        #[arg(long, default_value_t = 200)]
        bytes: usize,
        /// Cap the offered load at this many messages per second.
        #[arg(long)]
        rate: Option<u64>,
        /// Instead of 1:1 pairs, one group of this many members.
        #[arg(long)]
        group: Option<usize>,
        /// Every message encrypted and decrypted by SDK clients.
        #[arg(long)]
        e2e: bool,
        /// Soak mode: sample the server's memory (RSS) every this many seconds and report it
        /// over time, e.g. `--seconds 1800 --rss-every 30`.
        #[arg(long)]
        rss_every: Option<u64>,
        /// Devices per receiving account (linked before the conversations are made): each
        /// message goes to every one, each on its own WebSocket.
        #[arg(long, default_value_t = 1)]
        devices: usize,
    },
    /// Linking a device to an account with many conversations: time and bytes.
    Link {
        /// 1:1 conversations the account has.
        #[arg(long, default_value_t = 100)]
        conversations: usize,
        /// Messages in each (the history handed over).
        #[arg(long, default_value_t = 10)]
        messages: usize,
    },
    /// One message's cost in the SDK against raw OpenMLS on the same storage.
    /// The key directory: publishing an epoch of CHANGES changes in a directory of ACCOUNTS
    /// accounts; a lookup proof and an epoch's audit proof, their sizes and checking times.
    Kt {
        #[arg(long, default_value_t = 100_000)]
        accounts: usize,
        #[arg(long, default_value_t = 1000)]
        changes: usize,
    },
    Mls {
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        #[arg(long, default_value_t = 200)]
        bytes: usize,
    },
    /// Many idle devices on WebSockets: server memory per device.
    Connections {
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
    },
    /// An honest pair's round trip while one client floods kithd, one kind of flood at a time.
    Floods {
        /// Round trips timed per phase.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
    /// Normal and abusive accounts against the safety policy, over simulated time.
    AbuseSim {
        #[arg(long, default_value_t = 200)]
        normal: usize,
        /// Abusive accounts, spread over the seven kinds (a mob ring adds four accounts each).
        #[arg(long, default_value_t = 28)]
        abusers: usize,
        /// Simulated hours.
        #[arg(long, default_value_t = 48)]
        hours: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.scenario {
        Scenario::Groups { members, bytes } => groups::run(cli.store, members, bytes).await?,
        Scenario::Relay {
            pairs,
            senders,
            seconds,
            bytes,
            rate,
            group,
            e2e,
            rss_every,
            devices,
        } => {
            relay::run(relay::Config {
                store: cli.store,
                pairs,
                senders,
                seconds,
                bytes,
                rate,
                group,
                e2e,
                rss_every,
                devices,
            })
            .await?
        }
        Scenario::Link { conversations, messages } => {
            link::run(link::Config { store: cli.store, conversations, messages }).await?
        }
        Scenario::Mls { messages, bytes } => mls_cost::run(messages, bytes).await?,
        Scenario::Kt { accounts, changes } => kt::run(cli.store, accounts, changes).await?,
        Scenario::Connections { devices } => connections::run(cli.store, devices).await?,
        Scenario::Floods { rounds } => {
            floods::run(floods::Config { store: cli.store, rounds }).await?
        }
        Scenario::AbuseSim { normal, abusers, hours, seed } => {
            abuse::run(abuse::Config { normal, abusers, hours, seed }).await?
        }
    };
    report.print(cli.json);
    Ok(())
}
