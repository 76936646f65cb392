//! Key transparency and safety numbers, end to end against a real kithd: the server publishes
//! every account's keys in its `akd` directory and clients hold it to them. Each test plays a
//! server (or an operator) that lies in one way, and checks what each client says:
//!
//! - keys the directory proves are used, on both stores, and after a restart the directory
//!   goes on from the same history (clients follow it by append-only proofs; an audit from
//!   epoch 0 holds);
//! - a key the server hands out without publishing it is refused, and recorded;
//! - a key the operator puts in the database for ana, which none of her devices made, is
//!   published — and her own devices say so loudly;
//! - a tampered lookup proof, a forked directory (another root for an epoch a client saw) and a
//!   rolled-back epoch are refused;
//! - a verified contact whose key changes is flagged before the next send;
//! - `kith_client::kt::audit` checks a server from its public endpoints alone.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::{Arc, Mutex};

use kith_client::{Client, Refusal};
use kith_testkit::{HostileServer, TestServer, TestUser};
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> Value {
    serde_json::to_value(kith_proto::B64(bytes.to_vec())).unwrap()
}

fn unb64(v: &Value) -> Vec<u8> {
    serde_json::from_value::<kith_proto::B64>(v.clone()).unwrap().0
}

/// The directory's signing key, as a malicious operator holds it (the server's own).
async fn signing_key(server: &TestServer) -> ed25519_dalek::SigningKey {
    let (_, signing) = server.store().kt_keys((vec![0; 32], vec![0; 32])).await.unwrap();
    ed25519_dalek::SigningKey::from_bytes(&signing.expose().try_into().unwrap())
}

/// Waits until the directory has published an epoch after `epoch`.
async fn published_after(server: &TestServer, epoch: u64) -> u64 {
    for _ in 0..200 {
        if let Some(r) = server.store().kt_latest_root().await.unwrap()
            && r.epoch > epoch
        {
            return r.epoch;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("nothing published after epoch {epoch}");
}

async fn latest_epoch(server: &TestServer) -> u64 {
    server.store().kt_latest_root().await.unwrap().map_or(0, |r| r.epoch)
}

async fn keys_are_proved_and_the_directory_survives_a_restart(server: TestServer) {
    let mut ana = server.user("ana").await;
    let mut bob = server.user("bob").await;
    ana.send_text("bob", "hi bob").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert_eq!(r.messages.len(), 1, "{r:?}");
    assert!(r.key_warnings.is_empty(), "{:?}", r.key_warnings);
    let before = latest_epoch(&server).await;
    assert!(before >= 1, "the registrations were published");

    // An audit from the first epoch holds, from the public endpoints alone.
    let audit = kith_client::kt::audit(&server.url, None, None).await.unwrap();
    assert_eq!((audit.from, audit.to), (0, before));
    assert_eq!(audit.epochs_checked, before);

    // After a restart the directory goes on from the same keys and history: ana follows it
    // from the epoch she saw by append-only proofs to one published after the restart.
    let server = server.restart().await;
    let mut cyd = server.user("cyd").await;
    let after = published_after(&server, before).await;
    ana.send_text("cyd", "hi cyd").await.unwrap();
    let r = cyd.sync().await.unwrap();
    assert_eq!(r.messages.len(), 1, "{r:?}");
    let audit = kith_client::kt::audit(&server.url, None, Some(before)).await.unwrap();
    assert!(audit.to >= after, "{audit:?}");
    // Own history: nothing anyone but ana made.
    assert!(ana.check_own_keys(true).await.unwrap().is_empty());
    assert!(ana.key_warnings(false).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_proved_and_the_directory_survives_a_restart_on_sqlite() {
    keys_are_proved_and_the_directory_survives_a_restart(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_proved_and_the_directory_survives_a_restart_on_postgres() {
    let Some(server) = TestServer::start_postgres().await else { return };
    keys_are_proved_and_the_directory_survives_a_restart(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_did_not_publish_is_refused() {
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut ana = TestUser::register(&proxy.url(), "ana", kith_proto::AccountKind::Person).await;
    let _bob = server.user("bob").await;
    // The server lists a key of its own making for bob (and would hand out KeyPackages it
    // certified): it did not publish it.
    let fake = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes();
    proxy.rewrite_answers(
        "/v1/accounts/bob/devices",
        Arc::new(move |v: &mut Value| v["account_key"] = b64(&fake)),
    );
    let e = ana.send_text("bob", "hi").await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::KeyNotPublished), "{e}");
    let warnings = ana.key_warnings(false).unwrap();
    assert!(
        warnings.iter().any(|w| w.username.as_deref() == Some("bob") && !w.own),
        "{warnings:?}"
    );
    // Without the lie, bob's real keys are used.
    proxy.clear_answer_rewrites();
    ana.send_text("bob", "hi").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_contact_takes_no_key_the_claim_alone_names() {
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut ana = TestUser::register(&proxy.url(), "ana", kith_proto::AccountKind::Person).await;
    let _bob = server.user("bob").await;
    // bob's device list (and so the lookup) is honest; the claim names another account key.
    let fake = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes();
    proxy.rewrite_answers(
        "/v1/accounts/bob/key-packages/claim",
        Arc::new(move |v: &mut Value| v["account_key"] = b64(&fake)),
    );
    let e = ana.send_text("bob", "hi").await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::KeyNotPublished), "{e}");
    proxy.clear_answer_rewrites();
    ana.send_text("bob", "hi").await.unwrap();
    let sn = ana.safety_number("bob").await.unwrap();
    let real = server.store().account_devices("bob").await.unwrap().unwrap().account_key.unwrap();
    assert_eq!(
        sn.number,
        kith_proto::kt::safety_number(
            ("ana", &ana.account_key().unwrap().unwrap()),
            ("bob", &real)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_published_for_ana_without_her_devices_is_caught_by_them() {
    let server = TestServer::start().await;
    let mut ana = server.user("ana").await;
    let mut bob = server.user("bob").await;
    bob.send_text("ana", "hi").await.unwrap();
    ana.sync().await.unwrap();
    let before = published_after(&server, 0).await;
    assert!(ana.check_own_keys(true).await.unwrap().is_empty());

    // The operator swaps ana's account key in the database for one of their own; the
    // directory publishes what the database holds.
    let fake = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
    let db = rusqlite::Connection::open(server.data.path().join("kithd.db")).unwrap();
    db.execute("UPDATE accounts SET account_key = ?1 WHERE username = 'ana'", [fake.to_vec()])
        .unwrap();
    server.state.kt.changed(&["ana".to_string()]).await;
    published_after(&server, before).await;

    let warnings = ana.check_own_keys(true).await.unwrap();
    assert!(warnings.iter().any(|w| w.own && w.what.contains("does not hold")), "{warnings:?}");
    // The next sync hands it over, loud, once.
    let r = ana.sync().await.unwrap();
    assert!(r.key_warnings.iter().any(|w| w.own), "{:?}", r.key_warnings);
    assert!(ana.sync().await.unwrap().key_warnings.is_empty());
    // bob knew ana's key: the swapped one, unsigned by her recovery key, is not taken.
    bob.send_text("ana", "still you?").await.unwrap();
    let sn = bob.safety_number("ana").await.unwrap();
    let own = ana.safety_number("bob").await.unwrap();
    assert_eq!(sn.number, own.number, "bob still uses ana's real key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_proof_a_fork_and_a_rollback_are_refused() {
    let server = TestServer::start().await;
    let proxy = HostileServer::start(server.state.config.listen).await.unwrap();
    let mut ana = TestUser::register(&proxy.url(), "ana", kith_proto::AccountKind::Person).await;
    let _bob = server.user("bob").await;
    let _cyd = server.user("cyd").await;
    published_after(&server, 1).await;
    // A real answer about ana's own account, kept to be replayed later.
    let kept: Arc<Mutex<Option<Value>>> = Arc::default();
    let keep = kept.clone();
    let replay = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let replaying = replay.clone();
    proxy.rewrite_answers(
        "/v1/kt/history",
        Arc::new(move |v: &mut Value| {
            let mut k = keep.lock().unwrap();
            match &*k {
                Some(old) if replaying.load(std::sync::atomic::Ordering::SeqCst) => {
                    *v = old.clone()
                }
                None => *k = Some(v.clone()),
                Some(_) => {}
            }
        }),
    );
    assert!(ana.check_own_keys(true).await.unwrap().is_empty());
    ana.send_text("bob", "hi bob").await.unwrap();
    let seen = latest_epoch(&server).await;

    // A tampered proof.
    proxy.rewrite_answers(
        "/v1/kt/lookup/cyd",
        Arc::new(|v: &mut Value| {
            let mut proof = unb64(&v["proof"]);
            let n = proof.len() / 2;
            proof[n] ^= 1;
            v["proof"] = b64(&proof);
        }),
    );
    let e = ana.send_text("cyd", "hi").await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::KeyDirectory), "{e}");

    // A fork: a root for the epoch ana saw, other than the one she saw, signed with the
    // directory's own key (the operator holds it).
    let key = signing_key(&server).await;
    let _dan = server.user("dan").await;
    proxy.rewrite_answers(
        "/v1/kt/lookup/dan",
        Arc::new(move |v: &mut Value| {
            let root = [0x42u8; 32];
            v["root"]["epoch"] = json!(seen);
            v["root"]["root"] = b64(&root);
            v["root"]["signature"] = b64(&kith_proto::kt::sign_root(&key, seen, &root));
        }),
    );
    let e = ana.send_text("dan", "hi").await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::KeyDirectory), "{e}");
    assert!(e.to_string().contains("fork"), "{e}");

    // A rollback: ana follows the directory past the epoch of her old history answer, which
    // is then replayed to her.
    let _eve = server.user("eve").await;
    published_after(&server, seen).await;
    ana.send_text("eve", "hi").await.unwrap();
    replay.store(true, std::sync::atomic::Ordering::SeqCst);
    let warnings = ana.check_own_keys(true).await.unwrap();
    assert!(warnings.iter().any(|w| w.what.contains("went back")), "{warnings:?}");
    // Each one is on record.
    let all = ana.key_warnings(false).unwrap();
    assert!(all.iter().any(|w| w.username.as_deref() == Some("cyd")), "{all:?}");
    assert!(all.iter().any(|w| w.username.as_deref() == Some("dan")), "{all:?}");
    // The honest directory is still taken.
    proxy.clear_answer_rewrites();
    ana.send_text("eve", "still here").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_contact_whose_key_changes_is_flagged_before_the_next_send() {
    let server = TestServer::start().await;
    let mut ana = server.user("ana").await;
    let code = ana.take_recovery_code().unwrap();
    let mut bob = server.user("bob").await;
    ana.send_text("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();

    // The same number on both sides, sixty digits in twelve groups.
    let mine = bob.safety_number("ana").await.unwrap();
    let hers = ana.safety_number("bob").await.unwrap();
    assert_eq!(mine.number, hers.number);
    assert_eq!(mine.shown.split(' ').count(), 12);
    assert_eq!(mine.qr, hers.qr);
    assert!(!mine.verified && !mine.changed);
    // A scan of another code is refused; hers marks ana verified.
    let e = bob.confirm_safety_number("ana", Some("kith-safety:1:ana:bob:123")).await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::BadArgument), "{e}");
    let v = bob.confirm_safety_number("ana", Some(&hers.qr)).await.unwrap();
    assert!(v.verified);
    bob.send_text("ana", "verified").await.unwrap();

    // ana takes her account back on a new device: a new account key, signed by her code.
    let dir = tempfile::tempdir().unwrap();
    let mut fresh = TestUser { client: Client::open(dir.path()).unwrap(), dir };
    fresh.recover(&server.url, "ana", &code).await.unwrap();
    // Before bob hears of it in a sync: his very next message is stopped.
    let e = bob.send_text("ana", "first after").await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::SafetyNumberChanged), "{e}");
    bob.sync().await.unwrap();
    let e = bob.send_text("ana", "who is this?").await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::SafetyNumberChanged), "{e}");
    let now = bob.safety_number("ana").await.unwrap();
    assert!(now.changed && !now.verified, "{now:?}");
    assert_ne!(now.number, mine.number);
    // Compared again with her, in person: messages go again.
    let theirs = fresh.safety_number("bob").await.unwrap();
    assert_eq!(theirs.number, now.number);
    bob.confirm_safety_number("ana", None).await.unwrap();
    bob.send_text("ana", "hi again").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_publish_one_directory_and_a_follower_takes_over() {
    let Some(mut nodes) = TestServer::start_postgres_nodes(2).await else { return };
    let mut ana = nodes[0].user("ana").await;
    let mut bob = nodes[1].user("bob").await;
    // Keys registered through either node are published in one directory, which both serve.
    ana.send_text("bob", "across nodes").await.unwrap();
    assert_eq!(bob.sync().await.unwrap().messages.len(), 1);
    bob.send_text("ana", "back").await.unwrap();
    let one = kith_client::kt::audit(&nodes[0].url, None, None).await.unwrap();
    let two = kith_client::kt::audit(&nodes[1].url, None, None).await.unwrap();
    assert_eq!((one.signing_key.clone(), one.vrf_key.clone()), (two.signing_key, two.vrf_key));
    let before = one.to.min(two.to);
    // The publisher stops; the other node takes the lease and publishes what comes after.
    let leader = nodes.remove(0);
    drop(leader.down().await);
    let _cyd = nodes[0].user("cyd").await;
    let after = published_after(&nodes[0], before).await;
    let audit = kith_client::kt::audit(&nodes[0].url, None, Some(before)).await.unwrap();
    assert!(audit.to >= after, "{audit:?}");
    bob.send_text("cyd", "hi cyd").await.unwrap();
}

/// The newest key-directory epoch a profile took, read from its folder.
fn head_of(user: &TestUser) -> u64 {
    let db = rusqlite::Connection::open(user.dir.path().join("kith.db")).unwrap();
    db.query_row("SELECT MAX(epoch) FROM kith_kt_roots", [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_view_is_caught_by_the_people_shown_it() {
    let server = TestServer::start().await;
    let mut ana = server.user("ana").await;
    let mut bob = server.user("bob").await;
    ana.send_text("bob", "hi bob").await.unwrap();
    bob.sync().await.unwrap();
    bob.send_text("ana", "hi ana").await.unwrap();
    let r = ana.sync().await.unwrap();
    assert!(r.key_warnings.is_empty(), "{:?}", r.key_warnings);
    let epoch = head_of(&ana);
    assert_eq!(head_of(&bob), epoch, "both took the same directory");

    // bob's server showed him another root for that epoch than it showed ana (as a server
    // keeping two directories for two groups of people would): written into his profile.
    let db = rusqlite::Connection::open(bob.dir.path().join("kith.db")).unwrap();
    db.execute(
        "UPDATE kith_kt_roots SET root = ?1 WHERE epoch = ?2",
        rusqlite::params![vec![0x42u8; 32], epoch as i64],
    )
    .unwrap();
    // ana's next message says which root she took: bob's device sees they differ.
    ana.send_text("bob", "are we seeing the same keys?").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert_eq!(r.messages.len(), 1);
    assert!(
        r.key_warnings
            .iter()
            .any(|w| w.username.as_deref() == Some("ana") && w.what.contains("split view")),
        "{:?}",
        r.key_warnings
    );

    // A newer epoch ana took than bob: checked at bob's next sync against the server's.
    let _cyd = server.user("cyd").await;
    published_after(&server, epoch).await;
    ana.send_text("cyd", "hi cyd").await.unwrap();
    assert!(head_of(&ana) > epoch);
    ana.send_text("bob", "and now?").await.unwrap();
    let r = bob.sync().await.unwrap();
    // bob's own (forked) view cannot reach ana's newer root: said too.
    assert!(!r.key_warnings.is_empty(), "{:?}", r.key_warnings);
}
