//! kithd as a child process: configuration from a file, flags and the environment, a unique
//! marker that never reaches any file the server wrote, tokens that never reach its logs, and a
//! graceful stop on SIGTERM.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use kith_testkit::{ChildKithd, TestUser, contains, files_under};

/// kithd configured from a file, a flag and the environment.
struct Kithd {
    process: ChildKithd,
    url: String,
}

fn start_kithd(data: &Path) -> Kithd {
    let config = data.join("kithd.toml");
    std::fs::write(
        &config,
        format!("data = {:?}\nretention_days = 7\nlisten = \"127.0.0.1:1\"\n", data.join("store")),
    )
    .unwrap();
    // The flag beats the file's listen address.
    let args: Vec<OsString> = vec![
        "serve".into(),
        "--config".into(),
        config.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    let env = [("KITHD_LOG", "debug"), ("KITHD_MAX_BODY_BYTES", "100000")];
    let exe = Path::new(env!("CARGO_BIN_EXE_kithd"));
    let process = ChildKithd::start(exe, &args, &env, &data.join("kithd.log"));
    let url = format!("http://{}", process.addr);
    Kithd { process, url }
}

fn sigterm_and_wait(k: &mut Kithd) -> std::process::ExitStatus {
    k.process.signal_and_wait("TERM")
}

fn token_of(user: &TestUser) -> String {
    let conn = rusqlite::Connection::open(user.dir.path().join("kith.db")).unwrap();
    conn.query_row("SELECT token FROM kith_profile", [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_holds_plaintext_and_stops_gracefully() {
    let data = tempfile::tempdir().unwrap();
    let mut kithd = start_kithd(data.path());
    let url = kithd.url.clone();
    let mut alice = TestUser::register(&url, "alice", kith_client::AccountKind::Person).await;
    let mut bob = TestUser::register(&url, "bob", kith_client::AccountKind::Person).await;

    let mut marker = [0u8; 12];
    getrandom::fill(&mut marker).unwrap();
    let marker = format!("MARKER-{}", hex::encode(marker));
    alice.send_text("bob", &format!("{marker} delivered")).await.unwrap();
    bob.sync().await.unwrap();
    bob.send_text("alice", &format!("{marker} answered")).await.unwrap();
    // A group whose name and texts carry the marker: the name travels only inside MLS.
    let group_name = format!("{marker} group");
    let group = alice.create_group(&group_name, &["bob".into()]).await.unwrap();
    alice.send_group(&group, &format!("{marker} to the group")).await.unwrap();
    let r = bob.sync().await.unwrap();
    assert_eq!(bob.group(&group).unwrap().name.as_deref(), Some(group_name.as_str()));
    assert!(r.messages.iter().any(|m| m.text == format!("{marker} to the group")));
    bob.group_rename(&group, "renamed").await.unwrap_err(); // not an admin
    alice.group_rename(&group, &format!("{marker} renamed")).await.unwrap();
    // alice links a laptop, with the history: the code's password, the handover (her account
    // key among it) and the history (the markers among it) travel sealed between the two.
    let laptop_dir = tempfile::tempdir().unwrap();
    let laptop_client = kith_client::Client::open(laptop_dir.path()).unwrap();
    let mut laptop = TestUser { client: laptop_client, dir: laptop_dir };
    let offer = alice.offer_link().await.unwrap();
    let code = offer.code().expose().to_string();
    let password = code.split('@').next().unwrap().replace('-', "")[10..].to_string();
    let poll = std::time::Duration::from_millis(20);
    let (approved, joined) =
        tokio::join!(alice.approve_link(offer, poll), laptop.register_by_link(&code, poll, true));
    joined.unwrap();
    let approved = approved.unwrap();
    let wait = std::time::Duration::from_secs(10);
    alice.add_linked_device(&approved, poll, wait, |_, _| {}).await.unwrap();
    alice.send_history(&approved, |_, _| {}).await.unwrap();
    laptop.sync().await.unwrap();
    assert!(laptop.history("bob").unwrap().iter().any(|m| m.text.contains(&marker)));
    bob.sync().await.unwrap();
    let account_key: Vec<u8> = rusqlite::Connection::open(alice.dir.path().join("kith.db"))
        .unwrap()
        .query_row("SELECT seed FROM kith_account_key", [], |r| r.get(0))
        .unwrap();
    // One message stays undelivered on the server (for bob and the laptop), as ciphertext.
    alice.send_text("bob", &format!("{marker} waiting")).await.unwrap();

    // The body limit came from the environment.
    let big = reqwest::Client::new()
        .post(format!("{url}/v1/accounts"))
        .body(vec![b' '; 100_001])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);

    let status = tokio::task::spawn_blocking(move || sigterm_and_wait(&mut kithd)).await.unwrap();
    assert!(status.success(), "kithd exited with {status}");

    let mut log = String::new();
    std::fs::File::open(data.path().join("kithd.log")).unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("kithd stopped"), "{log}");

    let server_files = files_under(data.path());
    assert!(server_files.iter().any(|(p, _)| p.ends_with("kithd.db")), "no database written");
    // The data folder and the database (franking key, ciphertext) are the owner's alone.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let store = data.path().join("store");
        assert_eq!(mode(&store), 0o700, "data folder");
        for f in std::fs::read_dir(&store).unwrap() {
            let f = f.unwrap().path();
            if f.to_string_lossy().contains("kithd.db") {
                assert_eq!(mode(&f), 0o600, "{}", f.display());
            }
        }
    }
    let secrets = [marker.clone(), token_of(&alice), token_of(&bob), token_of(&laptop), password];
    for (path, bytes) in &server_files {
        for s in &secrets {
            assert!(!contains(bytes, s.as_bytes()), "{} holds a secret", path.display());
        }
        assert!(!contains(bytes, &account_key), "{} holds the account key", path.display());
    }
    // The search does find the marker where it belongs: in bob's own profile.
    let found = files_under(bob.dir.path()).iter().any(|(_, b)| contains(b, marker.as_bytes()));
    assert!(found, "the marker is not even in the recipient's profile: the search is broken");

    // The undelivered ciphertext (alice's last, for bob and her laptop; bob took the rest in
    // when the laptop was added) is stored once; bob's answer reached alice when her rename
    // caught up first.
    let out = Command::new(env!("CARGO_BIN_EXE_kithd"))
        .args(["admin", "stats", "--data"])
        .arg(data.path().join("store"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stats = String::from_utf8(out.stdout).unwrap();
    assert!(stats.contains("accounts 2"), "{stats}");
    assert!(stats.contains("messages 1"), "{stats}");
}

/// A database a newer kithd brought to a schema this one does not know is left alone, and
/// kithd says why instead of starting.
#[test]
fn a_database_a_newer_kithd_wrote_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kithd.db");
    rusqlite::Connection::open(&db).unwrap().execute_batch("PRAGMA user_version = 999").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kithd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema 999") && err.contains("newer kithd"), "{err}");
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 999, "the newer database was changed");
}

#[test]
fn bad_configuration_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "retention_dayz = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kithd"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retention_dayz"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_kithd"))
        .args(["serve", "--database-url", "mysql://nope", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres://"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_sees_exactly_the_reported_message_and_acts_on_accounts() {
    let data = tempfile::tempdir().unwrap();
    let mut kithd = start_kithd(data.path());
    let url = kithd.url.clone();
    let mut bob = TestUser::register(&url, "bob", kith_client::AccountKind::Person).await;
    let mut carol = TestUser::register(&url, "carol", kith_client::AccountKind::Person).await;
    carol.send_text("bob", "see you at the match").await.unwrap();
    carol.send_text("bob", "send me your bank password").await.unwrap();
    let r = bob.sync().await.unwrap();
    let bad = r.messages.iter().find(|m| m.text.contains("password")).unwrap().id.clone();
    // A reason that tries to paint the operator's terminal and forge a line of its own.
    let reason = "phishing\u{1b}[2J\n#2 dave reported erin";
    bob.report(&bad, Some(reason)).await.unwrap();

    let store = data.path().join("store");
    let admin = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kithd"))
            .arg("admin")
            .args(args)
            .arg("--data")
            .arg(&store)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let reports = admin(&["reports", "--json"]);
    let lines: Vec<serde_json::Value> =
        reports.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{reports}");
    assert_eq!(lines[0]["sender"], "carol");
    assert_eq!(lines[0]["reporter"], "bob");
    assert_eq!(lines[0]["reason"], reason);
    assert_eq!(lines[0]["text"], "send me your bank password");
    assert!(!reports.contains("see you at the match"), "more than the one message: {reports}");
    let human = admin(&["reports"]);
    assert!(human.contains("bob reported carol"), "{human}");
    assert_eq!(human.lines().count(), 1, "a reason wrote a line of its own: {human}");
    assert!(!human.contains('\u{1b}'), "a control character reached the terminal: {human:?}");

    // Suspend and reinstate from the command line; the running server follows within seconds.
    assert!(admin(&["suspend", "carol", "--reason", "phishing"]).contains("Suspended carol"));
    let flagged = admin(&["accounts", "--flagged", "--json"]);
    let carol_line: serde_json::Value =
        serde_json::from_str(flagged.lines().next().unwrap()).unwrap();
    assert_eq!(carol_line["username"], "carol");
    assert_eq!(carol_line["suspended"], "phishing");
    assert_eq!(carol_line["reported_by"], 1);
    assert!(admin(&["unsuspend", "carol"]).contains("Reinstated carol"));
    assert!(admin(&["accounts", "--flagged"]).contains("unsuspend"));
    assert!(admin(&["rotate-franking-key"]).contains("New franking key"));
    // Verifying a business; a person cannot be.
    let dir = tempfile::tempdir().unwrap();
    let mut shop = kith_client::Client::open(dir.path()).unwrap();
    shop.register_business(&url, "cafe", "Cafe", "Coffee").await.unwrap();
    assert!(admin(&["verify-business", "cafe"]).contains("now a verified business"));
    assert!(bob.search_businesses("cafe").await.unwrap()[0].verified);
    assert!(admin(&["unverify-business", "cafe"]).contains("no longer verified"));
    assert!(!bob.search_businesses("cafe").await.unwrap()[0].verified);
    let out = Command::new(env!("CARGO_BIN_EXE_kithd"))
        .args(["admin", "verify-business", "bob", "--data"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no business account named bob"));

    let status = tokio::task::spawn_blocking(move || sigterm_and_wait(&mut kithd)).await.unwrap();
    assert!(status.success());
}

/// `kithd admin signals` lists blocks and reports with whether they count; `clear-signals`
/// forgets them after a review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_and_clear_signals() {
    let server = kith_testkit::TestServer::start().await;
    let mut mob = server.user("mob1").await;
    let _victim = server.user("victim").await;
    mob.block("victim").await.unwrap();
    let admin = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kithd"))
            .arg("admin")
            .args(args)
            .arg("--data")
            .arg(server.data.path())
            .env_remove("KITHD_DATABASE_URL")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (out, _) = admin(&["signals", "victim", "--json"]);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["source"], "mob1");
    assert_eq!(line["kind"], "block");
    // A brand-new account the victim never wrote to: kept, but it does not count.
    assert_eq!(line["qualified"], false);
    let (out, _) = admin(&["signals"]);
    assert!(out.contains("mob1 blocked victim (does not count)"), "{out}");
    let (out, _) = admin(&["clear-signals", "victim"]);
    assert!(out.contains("Cleared 1 signals of victim"), "{out}");
    let (out, err) = admin(&["signals", "victim"]);
    assert!(out.is_empty() && err.contains("No signals"), "{out}{err}");
    // Mistakes are refused, not reported as success.
    let out = Command::new(env!("CARGO_BIN_EXE_kithd"))
        .args(["admin", "clear-signals", "nosuchuser", "--data"])
        .arg(server.data.path())
        .env_remove("KITHD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account named nosuchuser"));
    // An admin command pointed at a folder with no server in it says so, and creates nothing.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kithd"))
        .args(["admin", "reports", "--data"])
        .arg(empty.path().join("nothing-here"))
        .env_remove("KITHD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Kith database"), "{out:?}");
    assert!(!empty.path().join("nothing-here").exists());
}
