//! `kith`: the Kith command line.
//!
//! Scripting commands over the `kith-client` SDK. Output is for people by default and one JSON
//! object per line with `--json`; errors go to stderr and the exit code is non-zero: 1, or
//! [`UNREACHED`] when `kith sync` reached nothing at all (the server could not be reached).

mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kith_client::{AccountKind, Client, ClientError, ErrorCode, Refusal};

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
    /// Open the Kith app: a web interface for this profile, served on 127.0.0.1 only.
    App {
        /// The loopback port to serve on (0, the default, picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Print the address without opening a browser.
        #[arg(long)]
        no_open: bool,
    },
    /// Create an account on a server, with this profile as its first device; or, with
    /// `--link CODE`, join an account as a new device (the code from `kith device link`).
    Register {
        #[arg(required_unless_present = "link")]
        username: Option<String>,
        /// The server, e.g. http://127.0.0.1:8420.
        #[arg(long, required_unless_present = "link")]
        server: Option<String>,
        /// Join an account with the code another of its devices shows (`kith device link`).
        #[arg(long, value_name = "CODE", conflicts_with_all = ["username", "server", "business"])]
        link: Option<String>,
        /// With --link: without the account's history (only what comes from now on).
        #[arg(long, requires = "link")]
        no_history: bool,
        /// Register a business account (public profile, cannot cold-message people).
        #[arg(long)]
        business: bool,
        /// A business's public name [default: the username].
        #[arg(long, requires = "business")]
        display_name: Option<String>,
        /// A business's public description.
        #[arg(long, requires = "business")]
        description: Option<String>,
        /// Trust this CA certificate (PEM file) for the server, besides the web's roots.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
    },
    /// Take an account back with its recovery code, on this (new, empty) profile: every
    /// device the account had is removed at once, and this one is its only device. The code
    /// is read from standard input unless given with --code. Prints a new recovery code.
    Recover {
        username: String,
        /// The server, e.g. http://127.0.0.1:8420.
        #[arg(long)]
        server: String,
        /// The recovery code (24 characters); read from standard input when absent.
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
        /// Trust this CA certificate (PEM file) for the server, besides the web's roots.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
    },
    /// Trust the account key the server lists for a user now, after checking it with them: for
    /// a key their recovery code did not sign (the server's operator reset their account). Their
    /// new device then joins your conversations with them.
    Trust { username: String },
    /// Your safety number with a user (sixty digits and a QR code, the same on both sides):
    /// compare it with them in person, then mark them verified with --confirm. A later change of
    /// a verified user's key stops messages to them until you look at the new number.
    Verify {
        username: String,
        /// Mark them verified (after comparing the number with them).
        #[arg(long, conflicts_with = "clear")]
        confirm: bool,
        /// With --confirm: the text of their QR code as scanned (or the sixty digits they read
        /// out); refused unless it is this number.
        #[arg(long, requires = "confirm", conflicts_with = "clear", value_name = "TEXT")]
        scanned: Option<String>,
        /// Take the verification back (messages go again after a change, unverified).
        #[arg(long)]
        clear: bool,
    },
    /// Audit a server's key directory from its public endpoints: every root is signed by its
    /// key, and every epoch follows from the one before (nothing changed or taken out). Needs no
    /// account; anyone can run it against any server.
    Audit {
        /// The server, e.g. https://kith.example.org.
        #[arg(long)]
        server: String,
        /// The epoch to start from [default: 0, the first].
        #[arg(long)]
        from: Option<u64>,
        /// Trust this CA certificate (PEM file) for the server, besides the web's roots.
        #[arg(long, value_name = "PEM")]
        ca_cert: Option<PathBuf>,
    },
    /// This account's recovery code.
    RecoveryCode {
        #[command(subcommand)]
        command: RecoveryCodeCommand,
    },
    /// Show this profile's account.
    Whoami,
    /// Replace this device's token (if a copy of the profile folder may have leaked): copies
    /// made before stop working.
    RotateToken,
    /// Send a 1:1 message. Written while the server cannot be reached, it waits on this device
    /// and goes by itself at the next `kith sync` (or while `kith app` runs).
    Send { username: String, text: String },
    /// Send again a message of yours that the server refused (its id from `history --json`).
    Retry { id: String },
    /// Fetch, decrypt and print new messages.
    Sync,
    /// Print the local history with a user, or of a group (by name or id).
    History {
        #[arg(value_name = "USERNAME|GROUP")]
        target: String,
    },
    /// Groups: create, add, remove, promote, rename, leave, list, send.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// The people you have written to: they see your stories (a business you wrote to is not
    /// a contact: businesses never see stories).
    Contacts,
    /// This account's devices: link a new one, list them, name one, remove one.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Stories: shown to your contacts only, gone after 24 hours.
    Story {
        #[command(subcommand)]
        command: StoryCommand,
    },
    /// Set a conversation's disappearing-message timer for everyone in it.
    Disappear {
        #[arg(value_name = "USERNAME|GROUP")]
        target: String,
        /// `off`, or a duration from 30s to 4w (e.g. 30s, 5m, 1h, 1d, 4w).
        #[arg(value_name = "off|DURATION")]
        duration: String,
    },
    /// Delete your 1:1 conversation with a user: its history on this device, and the contact.
    Delete { username: String },
    /// Block a user: nothing they send reaches you, in any conversation. They are not told.
    Block { username: String },
    /// Lift a block.
    Unblock { username: String },
    /// The business directory.
    Business {
        #[command(subcommand)]
        command: BusinessCommand,
    },
    /// Report one message you received (its id from `sync --json` or `history --json`).
    Report {
        message_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum RecoveryCodeCommand {
    /// Replace the recovery code with a new one, given the current one (read from standard
    /// input unless given with --code). Prints the new code, once.
    Replace {
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
}

#[derive(Subcommand)]
enum BusinessCommand {
    /// Find businesses by name or description; verified ones first.
    Search { query: String },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Link a new device: shows a one-time code (and its QR code) for `kith register --link`
    /// on the new device, waits for it, then adds it to every conversation.
    Link,
    /// Every device of this account: id, name, when added, when last seen, and this one.
    List,
    /// Name a device of this account (an empty NAME removes the name).
    Rename { id: u64, name: String },
    /// Remove another device of this account (a lost or sold one): its token stops working at
    /// once, and it is taken out of every conversation.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum StoryCommand {
    /// Post a story to your contacts.
    Post { text: String },
    /// Stories from your contacts and your own, newest first.
    List,
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group; prints its id on the last line.
    Create {
        name: String,
        /// Comma-separated usernames.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Add a user to a group (admins only).
    Add { group: String, username: String },
    /// Remove a user from a group (admins only).
    Remove { group: String, username: String },
    /// Make a member an admin (admins only).
    Promote { group: String, username: String },
    /// Rename a group (admins only); the name is end-to-end encrypted.
    Rename { group: String, name: String },
    /// Leave a group.
    Leave { group: String },
    /// List your groups.
    List,
    /// Send a message to a group.
    Send { group: String, text: String },
}

/// `off` or a duration such as `30s`, `5m`, `1d`, `4w`.
fn parse_timer(text: &str) -> Result<Option<std::time::Duration>, String> {
    if text == "off" {
        return Ok(None);
    }
    humantime::parse_duration(text)
        .map(Some)
        .map_err(|_| format!("{text:?} is not `off` or a duration like 30s, 5m, 1d, 4w"))
}

fn default_profile() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".kith")
}

/// Plain words for the refusals a person is most likely to meet, chosen by the error's code
/// (never by reading its text); the server's own message fills in the detail.
fn explain(err: &ClientError, cli_target: Option<&str>) -> Failure {
    Failure { message: explain_text(err, cli_target), code: 1, error: err.code_str() }
}

fn explain_text(err: &ClientError, cli_target: Option<&str>) -> String {
    let detail = err.message();
    match (err.code(), cli_target) {
        (Some(ErrorCode::UnknownUser), Some(who)) => {
            format!("there is no user named {who} on this server")
        }
        (Some(ErrorCode::UsernameTaken), Some(who)) => {
            format!("the username {who} is taken on this server; pick another")
        }
        (Some(ErrorCode::GroupFull), _) => format!("the group is full: {detail}"),
        (Some(ErrorCode::NotAdmin), _) => format!("{detail} (ask an admin of the group)"),
        // The server says who has not opted in to which business: its words are the answer.
        (Some(ErrorCode::NotOptedIn), _) => detail.to_string(),
        (Some(ErrorCode::Suspended), _) => {
            format!("your account is suspended on this server: {detail}")
        }
        (Some(ErrorCode::RateLimited), _) => format!("the server asks you to slow down: {detail}"),
        (Some(ErrorCode::QueueFull), _) => format!("not sent: {detail}"),
        (Some(ErrorCode::Unauthorized), _) => {
            "the server does not accept this profile's credentials: was this device removed from another device of the account, was the account taken back with its recovery code (kith recover), was its token rotated from another copy of this profile, or is this the wrong server?".into()
        }
        _ => match err.refusal() {
            Some(Refusal::GroupRules | Refusal::BadMessage | Refusal::BadWelcome) => {
                format!("refused by the group's rules: {detail}")
            }
            _ => err.to_string(),
        },
    }
}

/// `kith sync`'s exit code when it reached nothing (the server could not be reached); a sync
/// that showed what it could exits 0 and reports what it could not do on stderr.
const UNREACHED: u8 = 3;

/// Why a command failed: in words, as a stable code (`--json` prints both), and its exit code.
struct Failure {
    message: String,
    code: u8,
    /// The SDK's or the server's code (`unknown_user`, `not_admin`, `network`…); `failed` for
    /// what the command line itself refused (a file it could not read, a bad argument).
    error: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, code: 1, error: "failed".into() }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // An audit needs no profile.
    if let Command::Audit { server, from, ca_cert } = &cli.command {
        let out = output::Output { json: cli.json, names: Default::default() };
        let pem = match ca_cert {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            None => None,
        };
        return match kith_client::kt::audit(server, pem.as_deref(), *from).await {
            Ok(report) => {
                out.audited(&report);
                Ok(())
            }
            Err(kith_client::kt::AuditError::Failed(why)) => Err(Failure {
                message: format!("the audit FAILED: {why}"),
                code: 2,
                error: "audit_failed".into(),
            }),
            Err(kith_client::kt::AuditError::Client(e)) => Err(explain(&e, None)),
        };
    }
    let dir = cli.profile.clone().unwrap_or_else(default_profile);
    // Opening waits a while for another `kith` command that holds the profile: off the async
    // threads, which the wait would otherwise block.
    let opening = dir.clone();
    let mut client = tokio::task::spawn_blocking(move || Client::open(&opening))
        .await
        .map_err(|e| format!("cannot open the profile {}: {e}", dir.display()))?
        .map_err(|e| match e {
            ClientError::ProfileInUse { .. } => explain(&e, None),
            e => Failure {
                message: format!("cannot open the profile {}: {e}", dir.display()),
                ..explain(&e, None)
            },
        })?;
    let names = client
        .groups()
        .map(|gs| gs.into_iter().filter_map(|g| Some((g.id, g.name?))).collect())
        .unwrap_or_default();
    let mut out = output::Output { json: cli.json, names };
    match cli.command {
        Command::App { port, no_open } => {
            // The app opens the profile itself, and keeps it while it runs.
            drop(client);
            return Ok(app(dir, port, no_open).await?);
        }
        Command::Register {
            username,
            server,
            link,
            no_history,
            business,
            display_name,
            description,
            ca_cert,
        } => {
            if let Some(path) = ca_cert {
                let pem = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                client.trust_ca_pem(&pem).map_err(|e| explain(&e, None))?;
            }
            if let Some(code) = link {
                if !out.json {
                    eprintln!("Waiting for the other device to approve this one…");
                }
                let p = client
                    .register_by_link(&code, LINK_POLL, !no_history)
                    .await
                    .map_err(|e| explain(&e, None))?;
                out.linked_here(&p);
                if !no_history {
                    take_history(&mut client, &out).await?;
                }
                return Ok(());
            }
            let (Some(username), Some(server)) = (username, server) else {
                return Err("register needs a USERNAME and --server, or --link CODE"
                    .to_string()
                    .into());
            };
            let registered = if business {
                let name = display_name.unwrap_or_else(|| username.clone());
                let about = description.unwrap_or_default();
                client.register_business(&server, &username, &name, &about).await
            } else {
                client.register(&server, &username, AccountKind::Person).await
            };
            let p = registered.map_err(|e| explain(&e, Some(&username)))?;
            out.registered(&p);
        }
        Command::Recover { username, server, code, ca_cert } => {
            if let Some(path) = ca_cert {
                let pem = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                client.trust_ca_pem(&pem).map_err(|e| explain(&e, None))?;
            }
            let code = recovery_code(code, &out)?;
            let (p, new_code) = client
                .recover(&server, &username, &code)
                .await
                .map_err(|e| explain(&e, Some(&username)))?;
            out.recovered(&p, new_code.show().expose());
        }
        Command::Trust { username } => {
            let n = client
                .trust_account_key(&username)
                .await
                .map_err(|e| explain(&e, Some(&username)))?;
            out.done(&format!(
                "You trust {username}'s account key as the server lists it now; their devices \
                 are in your {n} conversation(s) with them."
            ));
        }
        Command::Verify { username, confirm, scanned, clear } => {
            if clear {
                client.clear_safety_number(&username).map_err(|e| explain(&e, None))?;
            }
            let number = if confirm {
                client.confirm_safety_number(&username, scanned.as_deref()).await
            } else {
                client.safety_number(&username).await
            }
            .map_err(|e| explain(&e, Some(&username)))?;
            out.safety_number(&number);
        }
        Command::Audit { .. } => {}
        Command::RecoveryCode { command: RecoveryCodeCommand::Replace { code } } => {
            let code = recovery_code(code, &out)?;
            let new_code =
                client.replace_recovery_code(&code).await.map_err(|e| explain(&e, None))?;
            out.recovery_code(new_code.show().expose(), "Your new recovery code");
        }
        Command::Business { command: BusinessCommand::Search { query } } => {
            let found = client.search_businesses(&query).await.map_err(|e| explain(&e, None))?;
            out.businesses(&found);
        }
        Command::Whoami => {
            let me = client.whoami().await.map_err(|e| explain(&e, None))?;
            let server = client.profile().map(|p| p.server.clone()).unwrap_or_default();
            out.whoami(&me, &server);
        }
        Command::RotateToken => {
            client.rotate_token().await.map_err(|e| explain(&e, None))?;
            out.done(
                "This device has a new token; copies of the profile made before no longer work.",
            );
        }
        Command::Send { username, text } => {
            let m = client
                .send_text_reporting(&username, &text)
                .await
                .map_err(|e| explain(&e, Some(&username)))?;
            out.sent(&m, &username);
        }
        Command::Retry { id } => {
            let m = client.retry_message(&id).await.map_err(|e| explain(&e, None))?;
            // Refused again: it stays *failed* (and says why), and the command failed.
            if m.state == kith_client::Delivery::Failed {
                let why = m.failure.clone().unwrap_or_else(|| "refused".into());
                return Err(Failure {
                    message: format!("not sent: {why}"),
                    code: 1,
                    error: "not_sent".into(),
                });
            }
            out.retried(&m);
        }
        Command::Sync => {
            // Marked shown only once printed: a `kith sync` killed before that prints them
            // again next time rather than never.
            client.defer_shown(true);
            let report = client.sync().await.map_err(|e| Failure {
                code: if e.is_unreached() { UNREACHED } else { 1 },
                ..explain(&e, None)
            })?;
            if let Ok(groups) = client.groups() {
                out.names = groups.into_iter().filter_map(|g| Some((g.id, g.name?))).collect();
            }
            out.synced(&report);
            for problem in &report.problems {
                eprintln!("{}", output::shown(&client.problem_sentence(problem)));
            }
            use std::io::Write as _;
            std::io::stdout().flush().map_err(|e| format!("cannot print: {e}"))?;
            client.mark_shown(&report.messages).map_err(|e| explain(&e, None))?;
        }
        Command::History { target } => {
            if client.profile().is_none() {
                return Err(explain(&ClientError::NotRegistered, None));
            }
            // A group this device is out of still has its history here: by name too.
            let resolved = match client.resolve_target(&target) {
                Err(e) if e.refusal() == Some(kith_client::Refusal::NotInConversation) => client
                    .groups()
                    .map_err(|e| explain(&e, None))?
                    .into_iter()
                    .find(|g| g.left && g.name.as_deref() == Some(target.as_str()))
                    .map(|g| kith_client::Target::Group(g.id))
                    .ok_or_else(|| explain(&e, None))?,
                other => other.map_err(|e| explain(&e, None))?,
            };
            let messages = match resolved {
                kith_client::Target::Group(id) => client.conversation_history(&id),
                kith_client::Target::Person(user) => client.history(&user),
            }
            .map_err(|e| explain(&e, None))?;
            out.history(&messages, &target);
        }
        Command::Group { command } => group(&mut client, &out, command).await?,
        Command::Contacts => {
            if client.profile().is_none() {
                return Err(explain(&ClientError::NotRegistered, None));
            }
            out.contacts(&client.contacts().map_err(|e| explain(&e, None))?);
        }
        Command::Device { command: DeviceCommand::Link } => link_device(&mut client, &out).await?,
        Command::Device { command: DeviceCommand::Remove { id } } => {
            let bar = progress_bar(&out, "conversations");
            let (left, kept) = client
                .remove_device(id, |done, total| {
                    if let Some(bar) = &bar {
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    }
                })
                .await
                .map_err(|e| explain(&e, None))?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            out.device_removed(id, &kept);
            out.devices(&left);
        }
        Command::Device { command: DeviceCommand::List } => {
            let devices = client.my_devices().await.map_err(|e| explain(&e, None))?;
            out.devices(&devices);
            // What the key directory holds for this account that none of its devices made.
            if let Err(e) = client.check_own_keys(true).await {
                eprintln!("Could not check the key directory: {}", explain(&e, None).message);
            }
            // The last week's (each is also shown once by the sync that found it).
            let recent = client.recent_key_warnings().map_err(|e| explain(&e, None))?;
            out.key_warnings(&recent);
        }
        Command::Device { command: DeviceCommand::Rename { id, name } } => {
            let name = Some(name.trim()).filter(|n| !n.is_empty());
            let devices = client.rename_device(id, name).await.map_err(|e| explain(&e, None))?;
            out.devices(&devices);
        }
        Command::Story { command: StoryCommand::Post { text } } => {
            let story = client.story_post(&text).await.map_err(|e| explain(&e, None))?;
            let reach = client.contacts().map(|c| c.len()).unwrap_or(0);
            out.story_posted(&story, reach);
        }
        Command::Story { command: StoryCommand::List } => {
            if client.profile().is_none() {
                return Err(explain(&ClientError::NotRegistered, None));
            }
            out.stories(&client.stories().map_err(|e| explain(&e, None))?);
        }
        Command::Disappear { target, duration } => {
            let timer = parse_timer(&duration)?;
            client
                .set_disappearing(&target, timer)
                .await
                .map_err(|e| explain(&e, Some(&target)))?;
            let chat = match target.strip_prefix('@') {
                Some(user) => format!("the chat with {user}"),
                None if client.resolve_group(&target).is_ok() => target.clone(),
                None => format!("the chat with {target}"),
            };
            out.done(&match timer {
                None => format!("Disappearing messages are off in {chat}, for everyone."),
                Some(d) => format!(
                    "Messages in {chat} now disappear for everyone {} after the server accepts \
                     them.",
                    kith_client::timer_text(d.as_secs())
                ),
            });
        }
        Command::Block { username } => {
            client.block(&username).await.map_err(|e| explain(&e, Some(&username)))?;
            out.done(&format!("Blocked {username}. They will not be told."));
        }
        Command::Unblock { username } => {
            client.unblock(&username).await.map_err(|e| explain(&e, Some(&username)))?;
            out.done(&format!("Unblocked {username}."));
        }
        Command::Report { message_id, reason } => {
            let done = client
                .report(&message_id, reason.as_deref())
                .await
                .map_err(|e| explain(&e, None))?;
            let id = done.report_id;
            if done.repeated {
                out.done(&format!(
                    "You reported this message already (report {id}); that report and its \
                     reason stand."
                ));
            } else {
                out.done(&format!(
                    "Reported. The server's admins see this one message, its sender and your \
                     reason (report {id})."
                ));
            }
        }
        Command::Delete { username } => {
            let gone =
                client.delete_conversation(&username).await.map_err(|e| explain(&e, None))?;
            let messages = if gone == 1 { "message" } else { "messages" };
            out.done(&format!("Deleted your conversation with {username} ({gone} {messages})."));
        }
    }
    // A recovery code made by this command (at registration, or the first sync of an account
    // from before recovery codes): shown now, the only time.
    if let Some(code) = client.take_recovery_code() {
        out.recovery_code(code.show().expose(), "Your recovery code");
    }
    Ok(())
}

/// A recovery code from `--code`, or else the first line of standard input.
fn recovery_code(
    given: Option<String>,
    out: &output::Output,
) -> Result<kith_client::RecoveryCode, Failure> {
    let text = match given {
        Some(text) => text,
        None => {
            if !out.json {
                eprintln!("Recovery code:");
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the recovery code: {e}"))?;
            line
        }
    };
    kith_client::RecoveryCode::parse(&text).map_err(|e| explain(&e, None))
}

async fn group(
    client: &mut Client,
    out: &output::Output,
    cmd: GroupCommand,
) -> Result<(), Failure> {
    let fail = |e: ClientError| explain(&e, None);
    match cmd {
        GroupCommand::Create { name, members } => {
            let (id, not_added) =
                client.create_group_reporting(&name, &members).await.map_err(|e| {
                    match e.code() {
                        Some(ErrorCode::UnknownUser) => Failure {
                            message: format!("cannot create the group: {e}"),
                            ..explain(&e, None)
                        },
                        _ => explain(&e, None),
                    }
                })?;
            for problem in &not_added {
                eprintln!("{}", output::shown(&client.problem_sentence(problem)));
            }
            out.group_created(&name, &id);
        }
        GroupCommand::Add { group, username } => {
            client
                .group_add(&group, std::slice::from_ref(&username))
                .await
                .map_err(|e| explain(&e, Some(&username)))?;
            out.done(&format!("Added {username} to {group}."));
        }
        GroupCommand::Remove { group, username } => {
            client.group_remove(&group, &username).await.map_err(fail)?;
            out.done(&format!("Removed {username} from {group}."));
        }
        GroupCommand::Promote { group, username } => {
            client.group_promote(&group, &username).await.map_err(fail)?;
            out.done(&format!("{username} is now an admin of {group}."));
        }
        GroupCommand::Rename { group, name } => {
            client.group_rename(&group, &name).await.map_err(fail)?;
            out.done(&format!("Renamed {group} to {name}."));
        }
        GroupCommand::Leave { group } => {
            client.group_leave(&group).await.map_err(fail)?;
            out.done(&format!("You left {group}."));
        }
        GroupCommand::List => out.groups(&client.groups().map_err(fail)?),
        GroupCommand::Send { group, text } => {
            let m = client.send_group_reporting(&group, &text).await.map_err(fail)?;
            out.sent(&m, &group);
        }
    }
    Ok(())
}

/// `kith app`: serves the app until interrupted.
async fn app(profile: PathBuf, port: u16, no_open: bool) -> Result<(), String> {
    let running = kith_app::serve(kith_app::AppOptions { profile: profile.clone(), port })
        .await
        .map_err(|e| format!("cannot start the app for the profile {}: {e}", profile.display()))?;
    // Written, not printed: a closed stdout must not stop the app.
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "Kith app for {}: open {}", profile.display(), running.url);
    let _ = writeln!(
        stdout,
        "(The address carries the app's secret: do not share it. Ctrl+C stops the app.)"
    );
    let _ = stdout.flush();
    if !no_open {
        // The browser is handed a file in the profile, not the secret: a command line is
        // readable by every user of the machine.
        if let Ok(page) = running.page_file() {
            open_browser(&page);
        }
    }
    let ended = tokio::select! {
        served = running.task => match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the app stopped: {e}")),
            Err(e) => Err(format!("the app stopped: {e}")),
        },
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    let _ = std::fs::remove_file(profile.join(kith_app::PAGE_FILE));
    ended
}

/// Opens `page` in the default browser where there is one; quietly does nothing otherwise
/// (the address is printed). The launcher is waited for in the background.
fn open_browser(page: &std::path::Path) {
    let opener: &[&str] = if cfg!(target_os = "macos") {
        &["open"]
    } else if cfg!(windows) {
        &["cmd", "/C", "start", ""]
    } else {
        &["xdg-open"]
    };
    let launched = std::process::Command::new(opener[0])
        .args(&opener[1..])
        .arg(page)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = launched {
        std::thread::spawn(move || child.wait());
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code, error }) => {
            if json {
                let failure = serde_json::json!({ "error": { "code": error, "message": message } });
                eprintln!("{failure}");
            } else {
                eprintln!("kith: {message}");
            }
            ExitCode::from(code)
        }
    }
}

/// How often a linking device asks whether the other side has moved.
const LINK_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// `kith device link`: the code and its QR code, then the wait, then adding the new device to
/// every conversation with a progress bar.
async fn link_device(client: &mut Client, out: &output::Output) -> Result<(), Failure> {
    let offer = client.offer_link().await.map_err(|e| explain(&e, None))?;
    let code = offer.code();
    out.link_code(code.expose(), offer.expires_at);
    let approved = client.approve_link(offer, LINK_POLL).await.map_err(|e| explain(&e, None))?;
    let device = approved.device_id;
    if !out.json {
        println!("Device {device} joined this account; adding it to your conversations…");
    }
    let follow = |bar: &Option<indicatif::ProgressBar>, done: usize, total: usize| {
        if let Some(bar) = bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    };
    let bar = progress_bar(out, "conversations");
    let wait = std::time::Duration::from_secs(120);
    let linked = client
        .add_linked_device(&approved, LINK_POLL, wait, |d, t| follow(&bar, d, t))
        .await
        .map_err(|e| explain(&e, None))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out.linked(&linked);
    if approved.history {
        let bar = progress_bar(out, "history chunks");
        let sent = client
            .send_history(&approved, |d, t| follow(&bar, d, t))
            .await
            .map_err(|e| explain(&e, None))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        out.done(&format!("Handed the history over ({sent} chunks, end-to-end encrypted)."));
    }
    Ok(())
}

/// On a device just linked: the history, as it comes (a progress bar), for up to two minutes;
/// what has not come by then comes at the next `kith sync`.
async fn take_history(client: &mut Client, out: &output::Output) -> Result<(), Failure> {
    let bar = progress_bar(out, "history chunks");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let done = loop {
        match client.continue_history().await.map_err(|e| explain(&e, None))? {
            None => break true,
            Some((done, total)) => {
                if let Some(bar) = &bar {
                    bar.set_length(u64::from(total));
                    bar.set_position(u64::from(done));
                }
            }
        }
        if std::time::Instant::now() >= until {
            break false;
        }
        tokio::time::sleep(LINK_POLL).await;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !out.json {
        println!(
            "{}",
            if done {
                "The account's history is here: kith history shows it."
            } else {
                "The history is still coming; it arrives at the next kith sync."
            }
        );
    }
    Ok(())
}

/// A progress bar over `what`, for people (none with `--json`).
fn progress_bar(out: &output::Output, what: &str) -> Option<indicatif::ProgressBar> {
    (!out.json).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {what}"))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    })
}
