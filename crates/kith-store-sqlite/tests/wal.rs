//! What SQLite keeps on disk: acknowledged ciphertext leaves the write-ahead log within the
//! truncation interval (not at some later sweep), and the files are the owner's alone.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::time::Duration;

use kith_store::*;
use kith_store_sqlite::SqliteStore;

fn account(name: &str) -> NewAccount {
    NewAccount {
        username: name.into(),
        kind: AccountKind::Person,
        credential_key: format!("key-{name}").into_bytes(),
        token_hash: [1; 32],
        key_packages: vec![],
        last_resort: Some(b"last".to_vec()),
        now: 1,
        profile: None,
        account_key: None,
        recovery_key: None,
        recovery_binding: None,
    }
}

fn holds(path: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_ciphertext_leaves_the_wal_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap().keep();
    let db = dir.join("kithd.db");
    let store = SqliteStore::open_truncating_every(&db, Duration::from_secs(1)).unwrap();
    let a = store.create_account(account("alice")).await.unwrap();
    let b = store.create_account(account("bob")).await.unwrap();
    let marker = b"CIPHERTEXT-MARKER-27182818".to_vec();
    let sent = store
        .enqueue(NewMessage {
            conversation: vec![1; 16],
            sender_device: a,
            kind: EntryKind::Message,
            data: marker.clone(),
            recipients: vec![b],
            now: 1,
            expires_at: None,
            withheld: vec![],
            client_id: None,
        })
        .await
        .unwrap();
    let wal = dir.join("kithd.db-wal");
    assert!(holds(&wal, &marker) || holds(&db, &marker), "the marker was never written");
    store.ack(b, &sent.seqs).await.unwrap();
    // Within the interval (and a checkpoint's wait), it is gone from every file: looked for
    // until then, not waited out.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while [&db, &wal].iter().any(|f| holds(f, &marker)) {
        for f in [&db, &wal] {
            assert!(
                std::time::Instant::now() < deadline || !holds(f, &marker),
                "{} still holds acknowledged ciphertext",
                f.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    use std::os::unix::fs::PermissionsExt as _;
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
}
