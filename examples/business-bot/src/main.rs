//! `kith-business-bot --profile DIR --hours TEXT [--orders FILE] [--once]`
//!
//! Answers the questions people send to a business account. Register the business first:
//! `kith --profile DIR register NAME --server URL --business --display-name TEXT`.

use std::path::PathBuf;

use clap::Parser;
use kith_business_bot::{Bot, Knowledge};

#[derive(Parser)]
#[command(name = "kith-business-bot", about = "Answers questions sent to a Kith business account")]
struct Args {
    /// The business's profile folder.
    #[arg(long, env = "KITH_PROFILE")]
    profile: PathBuf,
    /// Opening hours, as the bot should say them.
    #[arg(long, default_value = "9:00 to 18:00, Monday to Saturday")]
    hours: String,
    /// A JSON file of order numbers and their status: {"1234": "out for delivery"}.
    #[arg(long)]
    orders: Option<PathBuf>,
    /// Answer what is waiting, then exit (for cron) instead of staying connected.
    #[arg(long)]
    once: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = kith_client::Client::open(&args.profile)?;
    let Some(me) = client.profile() else {
        anyhow::bail!(
            "{} is not registered; run `kith register … --business` first",
            args.profile.display()
        );
    };
    if me.kind != kith_client::AccountKind::Business {
        anyhow::bail!("{} is a person's profile; the bot runs on a business account", me.username);
    }
    let knowledge = Knowledge::load(&args.hours, args.orders.as_deref())?;
    let mut bot = Bot::new(client, knowledge);
    if args.once {
        let n = bot.answer_pending().await?;
        println!("answered {n} question(s)");
        return Ok(());
    }
    bot.run().await
}
