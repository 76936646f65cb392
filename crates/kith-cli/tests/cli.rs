//! The `kith` binary against a real kithd on a loopback port.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::path::Path;

use kith_testkit::TestServer;
use serde_json::Value;

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn kith(profile: &Path, args: &[&str]) -> Run {
    let profile = profile.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kith"))
            .arg("--profile")
            .arg(&profile)
            .args(&args)
            .env_remove("KITH_PROFILE")
            .output()
            .expect("run kith");
        Run {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_send_sync_history() {
    let server = TestServer::start().await;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();

    let r = kith(a.path(), &["register", "alice", "--server", &server.url]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("Registered alice"), "{}", r.stdout);
    let r = kith(b.path(), &["--json", "register", "bob", "--server", &server.url]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(json_lines(&r.stdout)[0]["username"], "bob");

    let r = kith(a.path(), &["--json", "whoami"]).await;
    assert!(r.ok, "{}", r.stderr);
    let me = &json_lines(&r.stdout)[0];
    assert_eq!(me["username"], "alice");
    assert_eq!(me["kind"], "person");

    let r = kith(a.path(), &["send", "bob", "hi bob, it's alice"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("Sent to bob"));

    let r = kith(b.path(), &["--json", "sync"]).await;
    assert!(r.ok, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    assert_eq!(lines.len(), 1, "{}", r.stdout);
    let m = &lines[0];
    assert_eq!(m["kind"], "direct");
    assert_eq!(m["from"], "alice");
    assert_eq!(m["text"], "hi bob, it's alice");
    assert_eq!(m["conversation"].as_str().unwrap().len(), 32);
    assert!(m["id"].as_str().is_some_and(|s| !s.is_empty()));
    let sent_at = m["sent_at"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(sent_at).is_ok(), "{sent_at}");

    // A second sync prints nothing.
    let r = kith(b.path(), &["--json", "sync"]).await;
    assert!(r.ok && r.stdout.is_empty(), "{}", r.stdout);
    let r = kith(b.path(), &["sync"]).await;
    assert!(r.ok && r.stdout.is_empty() && r.stderr.contains("No new messages"));

    let r = kith(b.path(), &["send", "bob", "talking to myself"]).await;
    assert!(!r.ok);
    let r = kith(b.path(), &["send", "alice", "hello alice"]).await;
    assert!(r.ok, "{}", r.stderr);
    let r = kith(a.path(), &["sync"]).await;
    assert!(r.ok);
    assert!(r.stdout.contains("bob: hello alice"), "{}", r.stdout);

    let r = kith(a.path(), &["history", "bob"]).await;
    assert!(r.ok);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[0].ends_with("you: hi bob, it's alice"), "{}", lines[0]);
    assert!(lines[1].ends_with("bob: hello alice"), "{}", lines[1]);
    let r = kith(b.path(), &["--json", "history", "alice"]).await;
    let h = json_lines(&r.stdout);
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["outgoing"], false);
    assert_eq!(h[1]["outgoing"], true);

    // A copy of alice's profile stops working once she rotates her token; she goes on.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(a.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
    }
    assert!(kith(copy.path(), &["whoami"]).await.ok);
    let r = kith(a.path(), &["rotate-token"]).await;
    assert!(r.ok && r.stdout.contains("new token"), "{}{}", r.stdout, r.stderr);
    let r = kith(copy.path(), &["whoami"]).await;
    assert!(
        !r.ok && r.stderr.contains("does not accept this profile's credentials"),
        "{}",
        r.stderr
    );
    assert!(kith(a.path(), &["whoami"]).await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_plain_and_exit_non_zero() {
    let server = TestServer::start().await;
    let a = tempfile::tempdir().unwrap();
    let fresh = tempfile::tempdir().unwrap();

    let r = kith(fresh.path(), &["sync"]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("kith register"), "{}", r.stderr);

    let r = kith(a.path(), &["register", "Bad Name", "--server", &server.url]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("username"), "{}", r.stderr);

    let r = kith(a.path(), &["register", "alice", "--server", "127.0.0.1:1"]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("http://"), "{}", r.stderr);

    assert!(kith(a.path(), &["register", "alice", "--server", &server.url]).await.ok);
    let other = tempfile::tempdir().unwrap();
    let r = kith(other.path(), &["register", "alice", "--server", &server.url]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("taken"), "{}", r.stderr);

    let r = kith(a.path(), &["send", "nobody", "hello?"]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("no user named nobody"), "{}", r.stderr);

    let r = kith(a.path(), &["send"]).await;
    assert!(!r.ok);

    // With --json, an error is an object with a stable code (scripts match the code, never the
    // sentence).
    let code_of = |r: &Run| -> String {
        let v: Value = serde_json::from_str(r.stderr.trim()).expect("one JSON object on stderr");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v["error"]["code"].as_str().unwrap().to_string()
    };
    let r = kith(a.path(), &["--json", "send", "nobody", "hello?"]).await;
    assert_eq!((r.ok, code_of(&r).as_str()), (false, "unknown_user"));
    let r = kith(fresh.path(), &["--json", "history", "bob"]).await;
    assert_eq!(code_of(&r), "not_registered");
    let r = kith(a.path(), &["--json", "group", "add", "no-such-group", "bob"]).await;
    assert_eq!(code_of(&r), "unknown_conversation");

    // A server that is gone is named as such.
    server.stop().await;
    let r = kith(a.path(), &["sync"]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("cannot reach the server"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_group_from_the_command_line() {
    let config = kith_testkit::ServerConfig { max_group_size: 3, ..kith_testkit::test_config() };
    let server =
        TestServer::start_with(config, std::sync::Arc::new(kith_testkit::SystemClock)).await;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let names = ["mum", "dad", "kid", "gran"];
    for (d, n) in dirs.iter().zip(names) {
        assert!(kith(d.path(), &["register", n, "--server", &server.url]).await.ok);
    }
    let (mum, dad, kid) = (dirs[0].path(), dirs[1].path(), dirs[2].path());

    let r = kith(mum, &["group", "create", "Family", "--members", "dad,kid"]).await;
    assert!(r.ok, "{}", r.stderr);
    let id = r.stdout.lines().last().unwrap().trim().to_string();
    assert_eq!(id.len(), 32, "{}", r.stdout);
    assert!(kith(mum, &["group", "send", "Family", "Sunday lunch?"]).await.ok);

    let r = kith(kid, &["--json", "sync"]).await;
    assert!(r.ok, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    let texts: Vec<&Value> = lines.iter().filter(|m| m["kind"] == "group").collect();
    assert_eq!(texts.len(), 1, "{}", r.stdout);
    assert_eq!(texts[0]["text"], "Sunday lunch?");
    assert_eq!(texts[0]["conversation"], id.as_str());
    assert_eq!(texts[0]["from"], "mum");
    // A system line carries what happened as data, beside its sentence.
    let joined = lines.iter().find(|m| m["kind"] == "system").expect("a system line");
    assert_eq!(joined["text"], "mum added you", "{}", r.stdout);
    assert_eq!(joined["event"], serde_json::json!({"kind": "added", "by": "mum", "who": ["kid"]}));
    let r = kith(dad, &["sync"]).await;
    assert!(r.stdout.contains("mum in Family: Sunday lunch?"), "{}", r.stdout);
    assert!(kith(dad, &["group", "send", &id, "yes please"]).await.ok);
    assert!(kith(kid, &["sync"]).await.ok);
    let r = kith(kid, &["history", "Family"]).await;
    assert!(r.ok);
    assert!(r.stdout.contains("mum in Family: Sunday lunch?"), "{}", r.stdout);
    assert!(r.stdout.contains("dad in Family: yes please"), "{}", r.stdout);

    // A fourth member is past this server's limit of three, in plain words.
    let r = kith(mum, &["group", "add", "Family", "gran"]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("the group is full"), "{}", r.stderr);
    assert!(r.stderr.contains("at most 3"), "{}", r.stderr);
    // Only admins add.
    let r = kith(dad, &["group", "add", "Family", "gran"]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("only group admins"), "{}", r.stderr);

    let r = kith(kid, &["--json", "group", "list"]).await;
    let g = &json_lines(&r.stdout)[0];
    assert_eq!(g["name"], "Family");
    assert_eq!(g["members"], serde_json::json!(["dad", "kid", "mum"]));
    assert_eq!(g["admins"], serde_json::json!(["mum"]));

    // The kid is removed and hears nothing more.
    assert!(kith(mum, &["group", "remove", "Family", "kid"]).await.ok);
    assert!(kith(mum, &["group", "send", "Family", "kid-free planning"]).await.ok);
    let r = kith(kid, &["sync"]).await;
    assert!(r.stdout.contains("mum removed you"), "{}", r.stdout);
    assert!(!r.stdout.contains("kid-free planning"), "{}", r.stdout);
    let r = kith(dad, &["sync"]).await;
    assert!(r.stdout.contains("kid-free planning"), "{}", r.stdout);
    let r = kith(kid, &["group", "send", &id, "hello?"]).await;
    assert!(!r.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_stories_and_disappearing_messages_from_the_command_line() {
    let server = TestServer::start().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (d, n) in dirs.iter().zip(["alice", "bob", "carol"]) {
        assert!(kith(d.path(), &["register", n, "--server", &server.url]).await.ok);
    }
    let (alice, bob, carol) = (dirs[0].path(), dirs[1].path(), dirs[2].path());

    let r = kith(alice, &["contacts"]).await;
    assert!(r.ok && r.stdout.is_empty() && r.stderr.contains("No contacts"));
    assert!(kith(alice, &["send", "bob", "hi"]).await.ok);
    let r = kith(alice, &["--json", "contacts"]).await;
    assert_eq!(json_lines(&r.stdout)[0]["username"], "bob");

    // Stories go between people who wrote to each other.
    assert!(kith(bob, &["sync"]).await.ok);
    assert!(kith(bob, &["send", "alice", "hello"]).await.ok);
    let r = kith(alice, &["story", "post", "hiking today"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("1 contact"), "{}", r.stdout);
    assert!(kith(bob, &["sync"]).await.ok);
    let r = kith(bob, &["--json", "story", "list"]).await;
    assert!(r.ok, "{}", r.stderr);
    let stories = json_lines(&r.stdout);
    assert_eq!(stories.len(), 1);
    let s = &stories[0];
    assert_eq!((s["author"].as_str(), s["text"].as_str()), (Some("alice"), Some("hiking today")));
    for key in ["id", "posted_at", "expires_at"] {
        assert!(s[key].is_string(), "{key} missing: {s}");
    }
    let posted = humantime::parse_rfc3339(s["posted_at"].as_str().unwrap()).unwrap();
    let expires = humantime::parse_rfc3339(s["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires.duration_since(posted).unwrap().as_secs(), 86_400);
    assert!(kith(carol, &["sync"]).await.ok);
    let r = kith(carol, &["story", "list"]).await;
    assert!(r.stdout.is_empty() && r.stderr.contains("No stories"), "{}", r.stdout);

    let r = kith(alice, &["disappear", "bob", "5m"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("5m"), "{}", r.stdout);
    let r = kith(bob, &["sync"]).await;
    assert!(r.stdout.contains("alice set disappearing messages to 5m"), "{}", r.stdout);
    let r = kith(alice, &["disappear", "bob", "soon"]).await;
    assert!(!r.ok && r.stderr.contains("not `off` or a duration"), "{}", r.stderr);
    let r = kith(alice, &["disappear", "bob", "10s"]).await;
    assert!(!r.ok && r.stderr.contains("30 seconds"), "{}", r.stderr);
    assert!(kith(alice, &["disappear", "bob", "off"]).await.ok);

    let r = kith(alice, &["delete", "bob"]).await;
    assert!(r.ok, "{}", r.stderr);
    let r = kith(alice, &["history", "bob"]).await;
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(kith(alice, &["contacts"]).await.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_unblock_and_report_from_the_command_line() {
    let server = TestServer::start().await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for (d, n) in dirs.iter().zip(["bob", "carol"]) {
        assert!(kith(d.path(), &["register", n, "--server", &server.url]).await.ok);
    }
    let (bob, carol) = (dirs[0].path(), dirs[1].path());
    assert!(kith(carol, &["send", "bob", "win a prize, click here"]).await.ok);
    let r = kith(bob, &["--json", "sync"]).await;
    let id = json_lines(&r.stdout)[0]["id"].as_str().unwrap().to_string();
    let r = kith(bob, &["report", &id, "--reason", "scam"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("Reported"), "{}", r.stdout);
    let reports = server.store().reports().await.unwrap();
    assert_eq!(
        (reports[0].sender.as_str(), reports[0].text.as_str()),
        ("carol", "win a prize, click here")
    );
    let r = kith(bob, &["report", "no-such-message"]).await;
    assert!(!r.ok && r.stderr.contains("can be reported"), "{}", r.stderr);

    let r = kith(bob, &["block", "carol"]).await;
    assert!(r.ok && r.stdout.contains("Blocked carol"), "{}", r.stderr);
    // Carol is not told: her send "succeeds", and bob gets nothing.
    assert!(kith(carol, &["send", "bob", "hello??"]).await.ok);
    let r = kith(bob, &["sync"]).await;
    assert!(!r.stdout.contains("hello??"), "{}", r.stdout);
    assert!(kith(bob, &["unblock", "carol"]).await.ok);
    assert!(kith(carol, &["send", "bob", "back again"]).await.ok);
    let r = kith(bob, &["sync"]).await;
    assert!(r.stdout.contains("back again"), "{}", r.stdout);
    let r = kith(bob, &["block", "nobody"]).await;
    assert!(!r.ok && r.stderr.contains("no user named nobody"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn businesses_from_the_command_line() {
    let server = TestServer::start().await;
    let (shop, alice) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let r = kith(
        shop.path(),
        &[
            "register",
            "bikeshop",
            "--server",
            &server.url,
            "--business",
            "--display-name",
            "Bike Shop",
            "--description",
            "Repairs while you wait",
        ],
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("as a business") && r.stdout.contains("public"), "{}", r.stdout);
    assert!(kith(alice.path(), &["register", "alice", "--server", &server.url]).await.ok);
    let r = kith(alice.path(), &["register", "x", "--server", &server.url, "--display-name", "X"])
        .await;
    assert!(!r.ok, "a display name needs --business");

    let r = kith(shop.path(), &["send", "alice", "spring sale!"]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("only in a conversation alice opened with it"), "{}", r.stderr);

    let r = kith(alice.path(), &["--json", "business", "search", "repair"]).await;
    assert!(r.ok, "{}", r.stderr);
    let found = json_lines(&r.stdout);
    assert_eq!(found[0]["username"], "bikeshop");
    assert_eq!(found[0]["display_name"], "Bike Shop");
    assert_eq!(found[0]["verified"], false);

    assert!(kith(alice.path(), &["send", "bikeshop", "can you fix a flat today?"]).await.ok);
    assert!(kith(shop.path(), &["sync"]).await.ok);
    assert!(kith(shop.path(), &["send", "alice", "yes, bring it by 5"]).await.ok);
    let r = kith(alice.path(), &["--json", "sync"]).await;
    let m = &json_lines(&r.stdout)[0];
    assert_eq!((m["from_business"].as_bool(), m["verified"].as_bool()), (Some(true), Some(false)));
    server.store().set_verified("bikeshop", true).await.unwrap();
    assert!(kith(shop.path(), &["send", "alice", "see you"]).await.ok);
    let r = kith(alice.path(), &["sync"]).await;
    assert!(r.stdout.contains("bikeshop [verified business]: see you"), "{}", r.stdout);
    let r = kith(alice.path(), &["business", "search", "bike"]).await;
    assert!(r.stdout.contains("Bike Shop (bikeshop, verified)"), "{}", r.stdout);
}

/// Runs `kith` and kills it with SIGKILL after `after`; returns whether it was still running.
async fn kith_killed(profile: &Path, args: &[&str], after: std::time::Duration) -> bool {
    let profile = profile.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kith"))
            .arg("--profile")
            .arg(&profile)
            .args(&args)
            .env_remove("KITH_PROFILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run kith");
        std::thread::sleep(after);
        let running = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let _ = child.wait();
        running
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_sync_or_send_loses_and_repeats_nothing() {
    let mut config = kith_testkit::test_config();
    config.safety.max_messages_per_minute = 100_000;
    let server =
        TestServer::start_with(config, std::sync::Arc::new(kith_testkit::SystemClock)).await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert!(kith(a.path(), &["register", "alice", "--server", &server.url]).await.ok);
    assert!(kith(b.path(), &["register", "bob", "--server", &server.url]).await.ok);
    // Alice writes 300 messages (through the SDK, quicker than 300 processes).
    let mut alice = kith_client::Client::open(a.path()).unwrap();
    let mut sent = Vec::new();
    for i in 0..300 {
        let text = format!("numbered {i}");
        alice.send_text("bob", &text).await.unwrap();
        sent.push(text);
    }
    drop(alice);

    // Bob's sync is killed part-way, again and again, until one run finishes.
    let mut kills = 0;
    for delay_ms in [15u64, 30, 45, 60, 90] {
        if kith_killed(b.path(), &["sync"], std::time::Duration::from_millis(delay_ms)).await {
            kills += 1;
        }
    }
    assert!(kills >= 1, "no sync run was killed part-way: the test proved nothing");
    let r = kith(b.path(), &["sync"]).await;
    assert!(r.ok, "{}", r.stderr);
    let r = kith(b.path(), &["--json", "history", "alice"]).await;
    let seen: Vec<String> =
        json_lines(&r.stdout).iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(seen.len(), 300, "kills: {kills}; got {} messages", seen.len());
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 300, "a message shows twice");
    assert!(sent.iter().all(|t| unique.contains(t)));

    // A send killed in flight: afterwards both can still talk.
    kith_killed(b.path(), &["send", "alice", "maybe sent"], std::time::Duration::from_millis(20))
        .await;
    let r = kith(b.path(), &["send", "alice", "surely sent"]).await;
    assert!(r.ok, "{}", r.stderr);
    let r = kith(a.path(), &["--json", "sync"]).await;
    assert!(r.ok, "{}", r.stderr);
    let got: Vec<String> =
        json_lines(&r.stdout).iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    assert!(got.contains(&"surely sent".to_string()), "{got:?}");
    let r = kith(a.path(), &["send", "bob", "still here"]).await;
    assert!(r.ok, "{}", r.stderr);
    let r = kith(b.path(), &["sync"]).await;
    assert!(r.stdout.contains("still here"), "{}", r.stdout);
    eprintln!("sync runs killed part-way: {kills}");
}

/// A raw HTTP/1.1 GET on loopback: the status line's code.
fn http_status(addr: &str, path: &str, headers: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A raw HTTP/1.1 request on loopback (`line` is "METHOD PATH"): the whole answer.
fn http_raw(addr: &str, line: &str, headers: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let length = body.len();
    write!(
        s,
        "{line} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {length}\r\nConnection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

fn header_of<'a>(answer: &'a str, name: &str) -> &'a str {
    answer
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v.trim())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kith_app_serves_the_profile_and_other_commands_are_told_who_holds_it() {
    use std::io::BufRead;
    let server = TestServer::start().await;
    let a = tempfile::tempdir().unwrap();
    assert!(kith(a.path(), &["register", "alice", "--server", &server.url]).await.ok);

    let mut app = std::process::Command::new(env!("CARGO_BIN_EXE_kith"))
        .arg("--profile")
        .arg(a.path())
        .args(["app", "--no-open"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(app.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let url = first.split_whitespace().last().unwrap().to_string();
    let rest = url.strip_prefix("http://127.0.0.1:").expect("served on loopback only");
    let (port, path) = rest.split_once('/').unwrap();
    let addr = format!("127.0.0.1:{port}");
    assert!(path.starts_with("open?key="), "{url}");

    // Nothing without the secret; the secret's address hands out a cookie.
    assert_eq!(http_status(&addr, "/api/me", ""), 401);
    assert_eq!(http_status(&addr, "/open?key=wrong", ""), 403);
    assert_eq!(http_status(&addr, &format!("/{path}"), ""), 303);

    // A second registration is refused before anything is written: a CA certificate sent with
    // it must not replace the one the profile trusts (that cut the profile off its server).
    let opened = http_raw(&addr, &format!("GET /{path}"), "", "");
    let cookie = header_of(&opened, "set-cookie").split(';').next().unwrap().to_string();
    let token = header_of(&opened, "location").trim_start_matches("/#session=").to_string();
    let body = r#"{"username":"x","server":"http://127.0.0.1:1","ca_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}"#;
    let headers = format!(
        "Cookie: {cookie}\r\nX-Kith-Session: {token}\r\nOrigin: http://{addr}\r\nContent-Type: application/json\r\n"
    );
    let refused = http_raw(&addr, "POST /api/register", &headers, body);
    assert!(refused.contains("already_registered"), "{refused}");

    // The app holds the profile: a command is told so at once, not after a wait.
    let started = std::time::Instant::now();
    let r = kith(a.path(), &["whoami"]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("in use by the Kith app"), "{}", r.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    app.kill().unwrap();
    app.wait().unwrap();
    let r = kith(a.path(), &["whoami"]).await;
    assert!(r.ok, "{}", r.stderr);
    // And the profile still reaches its server.
    let r = kith(a.path(), &["sync"]).await;
    assert!(r.ok, "the refused registration broke the profile: {}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_shows_what_it_can_says_what_it_cannot_and_exits_3_only_when_it_reached_nothing() {
    let server = TestServer::start().await;
    let proxy = kith_testkit::HostileServer::start(server.state.config.listen).await.unwrap();
    let b = tempfile::tempdir().unwrap();
    let r = kith(b.path(), &["register", "bob", "--server", &proxy.url()]).await;
    assert!(r.ok, "{}", r.stderr);
    let mut alice = server.user("alice").await;
    alice.send_text("bob", "first").await.unwrap();
    assert!(kith(b.path(), &["sync"]).await.stdout.contains("first"));
    // The next message arrives as garbage (a hostile server, a corrupt copy); the one after
    // it is fine.
    proxy.rewrite_queue(Some(std::sync::Arc::new(|entries: &mut Vec<Value>| {
        if let Some(e) = entries.first_mut() {
            e["data"] = serde_json::json!("AAECAwQ=");
        }
    })));
    alice.send_text("bob", "garbled").await.unwrap();
    alice.send_text("bob", "second").await.unwrap();
    let r = kith(b.path(), &["sync"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("second") && !r.stdout.contains("garbled"), "{}", r.stdout);
    assert!(
        r.stderr.contains(
            "In the chat with alice: a message could not be decrypted or verified and was dropped"
        ),
        "{}",
        r.stderr
    );
    // With the server out of reach, it reached nothing: exit code 3.
    drop(proxy);
    let r = kith(b.path(), &["sync"]).await;
    assert_eq!(r.code, Some(3), "{} {}", r.stdout, r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_written_while_the_server_is_down_goes_by_itself_once() {
    let server = TestServer::start().await;
    let a = tempfile::tempdir().unwrap();
    assert!(kith(a.path(), &["register", "alice", "--server", &server.url]).await.ok);
    let mut bob = server.user("bob").await;
    assert!(kith(a.path(), &["send", "bob", "before"]).await.ok);
    bob.sync().await.unwrap();
    let down = server.down().await;
    let r = kith(a.path(), &["send", "bob", "while you were out"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("waits on this device"), "{}", r.stdout);
    let r = kith(a.path(), &["--json", "send", "bob", "and again"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(json_lines(&r.stdout)[0]["state"], "sending");
    let r = kith(a.path(), &["--json", "history", "bob"]).await;
    let states: Vec<(String, String)> = json_lines(&r.stdout)
        .iter()
        .map(|m| {
            (m["text"].as_str().unwrap().to_string(), m["state"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        states,
        [
            ("before".to_string(), "sent".to_string()),
            ("while you were out".to_string(), "sending".to_string()),
            ("and again".to_string(), "sending".to_string()),
        ]
    );
    let r = kith(a.path(), &["history", "bob"]).await;
    assert!(r.stdout.contains("while you were out  (sending…)"), "{}", r.stdout);
    let _server = down.up().await;
    let r = kith(a.path(), &["sync"]).await;
    assert!(r.ok, "{}", r.stderr);
    let r = kith(a.path(), &["--json", "history", "bob"]).await;
    assert!(json_lines(&r.stdout).iter().all(|m| m["state"] == "sent"), "{}", r.stdout);
    let got: Vec<String> = bob.sync().await.unwrap().messages.into_iter().map(|m| m.text).collect();
    assert_eq!(got, ["while you were out", "and again"]);
    assert!(kith(a.path(), &["sync"]).await.ok);
    assert!(bob.sync().await.unwrap().messages.is_empty());
}

/// `kith device list` shows this account's devices (this one marked), `kith device rename`
/// names one; a device of another account is not this account's to name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_listed_and_named() {
    let server = TestServer::start().await;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    assert!(kith(a.path(), &["register", "alice", "--server", &server.url]).await.ok);
    assert!(kith(b.path(), &["register", "bob", "--server", &server.url]).await.ok);

    let r = kith(a.path(), &["--json", "device", "list"]).await;
    assert!(r.ok, "{}", r.stderr);
    let list = json_lines(&r.stdout);
    assert_eq!(list.len(), 1, "{}", r.stdout);
    assert_eq!(list[0]["this_device"], true);
    assert_eq!(list[0]["name"], Value::Null);
    let id = list[0]["id"].as_u64().unwrap().to_string();

    let r = kith(a.path(), &["device", "rename", &id, "laptop"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("laptop") && r.stdout.contains("(this device)"), "{}", r.stdout);
    let r = kith(a.path(), &["--json", "device", "list"]).await;
    assert_eq!(json_lines(&r.stdout)[0]["name"], "laptop");

    let r = kith(b.path(), &["--json", "device", "list"]).await;
    let bobs = json_lines(&r.stdout)[0]["id"].as_u64().unwrap().to_string();
    let r = kith(a.path(), &["--json", "device", "rename", &bobs, "mine now"]).await;
    assert!(!r.ok);
    assert_eq!(json_lines(&r.stderr)[0]["error"]["code"], "unknown_device", "{}", r.stderr);
    let r = kith(a.path(), &["--json", "device", "rename", &id, "bad\u{7}name"]).await;
    assert_eq!(json_lines(&r.stderr)[0]["error"]["code"], "bad_request", "{}", r.stderr);
    // An empty name removes it.
    assert!(kith(a.path(), &["device", "rename", &id, ""]).await.ok);
    let r = kith(a.path(), &["--json", "device", "list"]).await;
    assert_eq!(json_lines(&r.stdout)[0]["name"], Value::Null);
}

/// `kith device link` prints `Link code: …` and a QR code and waits; `kith register --link`
/// on a new profile joins the account; the first adds it to every conversation. A message to
/// alice then reaches both, what the new one sends is hers, and the code does not work twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_linked_from_the_command_line() {
    use std::io::{BufRead as _, BufReader};
    let server = TestServer::start().await;
    let a = tempfile::tempdir().unwrap();
    let laptop = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    assert!(kith(a.path(), &["register", "alice", "--server", &server.url]).await.ok);
    assert!(kith(b.path(), &["register", "bob", "--server", &server.url]).await.ok);
    assert!(kith(b.path(), &["send", "alice", "hello alice"]).await.ok);
    assert!(kith(a.path(), &["sync"]).await.ok);

    let mut linking = std::process::Command::new(env!("CARGO_BIN_EXE_kith"))
        .arg("--profile")
        .arg(a.path())
        .args(["device", "link"])
        .env_remove("KITH_PROFILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(linking.stdout.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || {
        let line = lines.next().unwrap().unwrap();
        // The QR code follows: block characters, several lines.
        let qr: Vec<String> = (0..5).map(|_| lines.next().unwrap().unwrap()).collect();
        (line, qr, lines)
    })
    .await
    .unwrap();
    let (line, qr, rest) = first;
    let code = line.strip_prefix("Link code: ").unwrap_or_else(|| panic!("{line}")).to_string();
    assert!(qr.iter().any(|l| l.contains('█') || l.contains('▀') || l.contains('▄')), "{qr:?}");

    let r = kith(laptop.path(), &["register", "--link", &code]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("Linked to alice"), "{}", r.stdout);
    let done = tokio::task::spawn_blocking(move || {
        let out: Vec<String> = rest.map_while(Result::ok).collect();
        (linking.wait().unwrap(), out)
    })
    .await
    .unwrap();
    assert!(done.0.success(), "{:?}", done.1);
    assert!(done.1.iter().any(|l| l.contains("added to 1 conversations")), "{:?}", done.1);

    let r = kith(laptop.path(), &["--json", "device", "list"]).await;
    assert_eq!(json_lines(&r.stdout).len(), 2, "{}", r.stdout);
    // The history came along: `history --json` is the same on both.
    let history = |p: std::path::PathBuf| async move {
        let r = kith(&p, &["--json", "history", "bob"]).await;
        assert!(r.ok, "{}", r.stderr);
        json_lines(&r.stdout)
            .into_iter()
            .map(|m| (m["id"].clone(), m["from"].clone(), m["text"].clone()))
            .collect::<Vec<_>>()
    };
    let on_laptop = history(laptop.path().to_path_buf()).await;
    assert_eq!(on_laptop, history(a.path().to_path_buf()).await);
    assert!(on_laptop.iter().any(|(_, _, t)| t == "hello alice"), "{on_laptop:?}");
    assert!(kith(laptop.path(), &["sync"]).await.ok);
    assert!(kith(b.path(), &["send", "alice", "to both"]).await.ok);
    for p in [a.path(), laptop.path()] {
        let r = kith(p, &["--json", "sync"]).await;
        assert!(r.stdout.contains("to both"), "{}", r.stdout);
    }
    assert!(kith(laptop.path(), &["send", "bob", "from the laptop"]).await.ok);
    let r = kith(b.path(), &["--json", "sync"]).await;
    let seen = json_lines(&r.stdout);
    assert!(
        seen.iter().any(|m| m["from"] == "alice" && m["text"] == "from the laptop"),
        "{seen:?}"
    );

    // The code worked once.
    let again = tempfile::tempdir().unwrap();
    let r = kith(again.path(), &["--json", "register", "--link", &code]).await;
    assert!(!r.ok);
    let code = &json_lines(&r.stderr)[0]["error"]["code"];
    assert!(code == "unknown_link" || code == "link_used", "{}", r.stderr);

    // `kith device remove` from the first: the laptop is shut out.
    let r = kith(laptop.path(), &["--json", "whoami"]).await;
    let laptop_id = json_lines(&r.stdout)[0]["device_id"].as_u64().unwrap().to_string();
    let r = kith(a.path(), &["device", "remove", &laptop_id]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains(&format!("Removed device {laptop_id}")), "{}", r.stdout);
    let r = kith(laptop.path(), &["--json", "sync"]).await;
    assert!(!r.ok);
    assert_eq!(json_lines(&r.stderr)[0]["error"]["code"], "unauthorized", "{}", r.stderr);
    let r = kith(a.path(), &["--json", "device", "list"]).await;
    assert_eq!(json_lines(&r.stdout).len(), 1, "{}", r.stdout);
}

/// The story a person lives: `register` prints the recovery code once; a thief copies the
/// profile folder and rotates its token, so the owner's `kith` is refused; `kith recover` with
/// the code (typed on standard input) on a new profile takes the account back — the copy is
/// refused from then on, bob's next sync puts the new device in their chat, and a message
/// reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_taken_back_from_a_copy_with_the_recovery_code() {
    use std::io::Write as _;
    let server = TestServer::start().await;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let r = kith(a.path(), &["register", "alice", "--server", &server.url]).await;
    assert!(r.ok, "{}", r.stderr);
    let code = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Your recovery code: "))
        .unwrap_or_else(|| panic!("{}", r.stdout))
        .to_string();
    assert!(kith(b.path(), &["register", "bob", "--server", &server.url]).await.ok);
    assert!(kith(b.path(), &["send", "alice", "hello alice"]).await.ok);
    assert!(kith(a.path(), &["sync"]).await.ok);

    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(a.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    assert!(kith(copy.path(), &["rotate-token"]).await.ok);
    let r = kith(a.path(), &["sync"]).await;
    assert!(!r.ok && r.stderr.contains("credentials"), "{}", r.stderr);

    // A mistyped code is refused and changes nothing.
    let fresh = tempfile::tempdir().unwrap();
    let r =
        kith(fresh.path(), &["recover", "alice", "--server", &server.url, "--code", "0000"]).await;
    assert!(!r.ok && r.stderr.contains("24 letters"), "{}", r.stderr);
    assert!(kith(copy.path(), &["sync"]).await.ok);

    // The code on standard input.
    let profile = fresh.path().to_path_buf();
    let url = server.url.clone();
    let typed = code.to_lowercase();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kith"))
            .arg("--profile")
            .arg(&profile)
            .args(["recover", "alice", "--server", &url])
            .env_remove("KITH_PROFILE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{typed}").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Took alice back"), "{stdout}");
    let new_code = stdout
        .lines()
        .find_map(|l| l.split_once("recovery code (the old one no longer works): ").map(|p| p.1))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_ne!(new_code, code);
    let r = kith(copy.path(), &["sync"]).await;
    assert!(!r.ok && r.stderr.contains("credentials"), "{}", r.stderr);

    assert!(kith(b.path(), &["sync"]).await.ok);
    assert!(kith(b.path(), &["send", "alice", "welcome back"]).await.ok);
    let r = kith(fresh.path(), &["sync"]).await;
    assert!(r.ok && r.stdout.contains("welcome back"), "{}{}", r.stdout, r.stderr);
    // The used code takes nothing back a second time.
    let again = tempfile::tempdir().unwrap();
    let r =
        kith(again.path(), &["recover", "alice", "--server", &server.url, "--code", &code]).await;
    assert!(!r.ok, "{}", r.stdout);
    assert!(r.stderr.contains("recovery code does not match"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_numbers_are_compared_and_a_server_is_audited_from_the_command_line() {
    let server = TestServer::start().await;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    assert!(kith(a.path(), &["register", "alice", "--server", &server.url]).await.ok);
    assert!(kith(b.path(), &["register", "bob", "--server", &server.url]).await.ok);
    assert!(kith(b.path(), &["send", "alice", "hi alice"]).await.ok);

    // The same sixty digits on both sides, in twelve groups, with a QR code.
    let number = |r: &Run| -> String {
        r.stdout
            .lines()
            .skip_while(|l| !l.starts_with("Safety number with"))
            .skip(1)
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let at_a = kith(a.path(), &["verify", "bob"]).await;
    assert!(at_a.ok, "{}", at_a.stderr);
    let at_b = kith(b.path(), &["verify", "alice"]).await;
    assert!(at_b.ok, "{}", at_b.stderr);
    assert_eq!(number(&at_a), number(&at_b));
    assert_eq!(number(&at_a).split(' ').count(), 12, "{}", at_a.stdout);
    assert!(
        number(&at_a).split(' ').all(|g| g.len() == 5 && g.chars().all(|c| c.is_ascii_digit()))
    );
    assert!(at_a.stdout.contains('█') || at_a.stdout.contains('▀'), "a QR code: {}", at_a.stdout);
    assert!(at_a.stdout.contains("Not verified"), "{}", at_a.stdout);

    // A scan of something else is refused; bob's own code marks him verified.
    let r = kith(a.path(), &["verify", "bob", "--confirm", "--scanned", "kith-safety:1:x"]).await;
    assert!(!r.ok && r.stderr.contains("not your safety number"), "{}", r.stderr);
    let qr = json_lines(&kith(b.path(), &["--json", "verify", "alice"]).await.stdout)[0]["qr"]
        .as_str()
        .unwrap()
        .to_string();
    let r = kith(a.path(), &["verify", "bob", "--confirm", "--scanned", &qr]).await;
    assert!(r.ok && r.stdout.contains("Verified"), "{}{}", r.stdout, r.stderr);
    let j = json_lines(&kith(a.path(), &["--json", "verify", "bob"]).await.stdout);
    assert_eq!((j[0]["verified"].as_bool(), j[0]["changed"].as_bool()), (Some(true), Some(false)));

    // Anyone audits the server, without an account.
    let nobody = tempfile::tempdir().unwrap();
    let r = kith(nobody.path(), &["audit", "--server", &server.url]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("follow one from another"), "{}", r.stdout);
    let r = kith(nobody.path(), &["--json", "audit", "--server", &server.url, "--from", "1"]).await;
    assert!(r.ok, "{}", r.stderr);
    let j = json_lines(&r.stdout);
    assert_eq!(j[0]["from"].as_u64(), Some(1));
    assert!(j[0]["to"].as_u64().unwrap() >= 1);
    // Nothing to say about alice's own keys.
    let r = kith(a.path(), &["device", "list"]).await;
    assert!(r.ok && !r.stderr.contains("WARNING"), "{}", r.stderr);
}
