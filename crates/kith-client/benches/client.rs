//! The client's hot paths: encrypt, and check-decrypt-store, on a durable profile.
//! `cargo bench -p kith-client`

#![allow(clippy::unwrap_used)] // benchmarks panic on set-up failure

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kith_client::AccountKind;
use kith_proto::{B64, EntryKind, FrankTag, QueueEntry};
use kith_testkit::{TestServer, TestUser};

fn bench(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_server, alice, mut bob, conv, to_carol) = rt.block_on(async {
        let server = TestServer::start().await;
        let mut alice = TestUser::register(&server.url, "alice", AccountKind::Person).await;
        let mut bob = TestUser::register(&server.url, "bob", AccountKind::Person).await;
        let _carol = TestUser::register(&server.url, "carol", AccountKind::Person).await;
        let conv = alice.direct_conversation("bob").await.unwrap();
        // Encryption is measured in another conversation, so bob's stays within MLS's window
        // of skipped messages.
        let to_carol = alice.direct_conversation("carol").await.unwrap();
        bob.sync().await.unwrap();
        (server, alice, bob, conv, to_carol)
    });
    let text = "x".repeat(200);
    c.bench_function("encrypt a 200-byte message", |b| {
        b.iter(|| alice.encrypt_for_bench(&to_carol, &text).unwrap())
    });
    let mut next = 10_000_000u64;
    c.bench_function("check, decrypt and store a message", |b| {
        b.iter_batched(
            || {
                next += 1;
                QueueEntry {
                    seq: next,
                    message_id: next,
                    conversation_id: conv.clone(),
                    kind: EntryKind::Message,
                    sender: "alice".into(),
                    sender_device: alice.profile().unwrap().device_id,
                    sender_kind: AccountKind::Person,
                    sender_verified: false,
                    data: B64(alice.encrypt_for_bench(&conv, &text).unwrap()),
                    server_time: 0,
                    expires_at: None,
                    // Shown only with a tag (its content is the server's business).
                    frank: Some(FrankTag { key_id: 1, epoch: 0, tag: B64(vec![0; 32]) }),
                }
            },
            |entry| {
                let got = rt.block_on(bob.receive_entries(&[entry])).unwrap();
                assert_eq!(got.messages.len(), 1)
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
