//! The server's hot paths, without the network: authentication, enqueue, fetch, ack.
//! `cargo bench -p kith-server`

#![allow(clippy::unwrap_used)] // benchmarks panic on set-up failure

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kith_server::extract::{AuthedDevice, token_hash};
use kith_server::{AppState, ServerConfig, SystemClock};
use kith_store::{AccountKind, EntryKind, NewAccount, NewConversation, NewMessage, Store};

fn bench(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(kith_store_sqlite::SqliteStore::open(dir.path().join("kithd.db")).unwrap());
    // Leaked so the async closures below can share it by reference; a benchmark runs once.
    let shared: &'static Arc<dyn Store> = Box::leak(Box::new(store.clone()));
    let account = |name: &str, token: &str| NewAccount {
        username: name.into(),
        kind: AccountKind::Person,
        credential_key: name.as_bytes().to_vec(),
        token_hash: token_hash(token),
        key_packages: vec![],
        last_resort: Some(vec![1]),
        now: 1,
        profile: None,
        account_key: None,
        recovery_key: None,
        recovery_binding: None,
    };
    let (state, a, b) = rt.block_on(async {
        let a = store.create_account(account("alice", "secret-a")).await.unwrap();
        let b = store.create_account(account("bob", "secret-b")).await.unwrap();
        store
            .create_conversation(NewConversation {
                conversation: vec![1; 16],
                creator_device: a,
                members: vec![b],
                welcome: vec![0],
                epoch: 1,
                group_state: vec![],
                now: 1,
                poster: None,
                direct: true,
                withheld: vec![],
                applied: None,
            })
            .await
            .unwrap();
        let state = AppState::build(store.clone(), ServerConfig::default(), Arc::new(SystemClock))
            .await
            .unwrap();
        (state, a, b)
    });
    let header = format!("Bearer {a}:secret-a");
    let message = |to: u64| NewMessage {
        conversation: vec![1; 16],
        sender_device: a,
        kind: EntryKind::Message,
        data: vec![7; 450],
        recipients: vec![to],
        now: 2,
        expires_at: None,
        withheld: vec![],
        client_id: None,
    };

    c.bench_function("authenticate (cached device)", |bench| {
        bench.to_async(&rt).iter(|| async {
            AuthedDevice::authenticate(&state, Some(&header)).await.unwrap();
        })
    });
    c.bench_function("enqueue one message for one device", |bench| {
        bench.to_async(&rt).iter(|| async { shared.enqueue(message(b)).await.unwrap() })
    });
    c.bench_function("fetch one entry", |bench| {
        rt.block_on(async { store.enqueue(message(a)).await.unwrap() });
        bench.to_async(&rt).iter(|| async { shared.fetch(a, 0, 1, 3).await.unwrap() })
    });
    // Set-up for each ack runs on its own runtime: criterion drives the measured part on `rt`.
    let setup = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    c.bench_function("ack one entry (and delete its message)", |bench| {
        bench.to_async(&rt).iter_batched(
            || {
                // Criterion calls this inside `rt`; a runtime cannot be entered from within
                // another on the same thread, so the set-up runs on a helper thread.
                std::thread::scope(|s| {
                    s.spawn(|| {
                        setup.block_on(async {
                            shared.enqueue(message(b)).await.unwrap();
                            shared.fetch(b, 0, 1, 3).await.unwrap()[0].seq
                        })
                    })
                    .join()
                    .unwrap()
                })
            },
            |seq| async move { shared.ack(b, &[seq]).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
