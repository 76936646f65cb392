//! What the server sends a client: queue entries with arbitrary bytes, kinds and
//! conversations, handed to a real registered client that is in a real conversation. Every
//! entry must be dropped or used, never panic, and the client must keep its state.
#![no_main]

use std::sync::{Mutex, OnceLock};

use kith_client::AccountKind;
use kith_proto::{B64, EntryKind, QueueEntry};
use kith_testkit::{TestServer, TestUser};
use libfuzzer_sys::fuzz_target;

struct World {
    rt: tokio::runtime::Runtime,
    _server: TestServer,
    bob: TestUser,
    conversation: String,
    alice_device: u64,
    /// Each input is a new server message id, or the client would skip it as seen.
    next_id: u64,
}

fn world() -> &'static Mutex<World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (server, bob, conversation, alice_device) = rt.block_on(async {
            let server = TestServer::start().await;
            let mut alice = TestUser::register(&server.url, "alice", AccountKind::Person).await;
            let mut bob = TestUser::register(&server.url, "bob", AccountKind::Person).await;
            let conversation = alice.direct_conversation("bob").await.unwrap();
            bob.sync().await.unwrap();
            let device = alice.profile().unwrap().device_id;
            (server, bob, conversation, device)
        });
        Mutex::new(World { rt, _server: server, bob, conversation, alice_device, next_id: 1 << 40 })
    })
}

fuzz_target!(|bytes: &[u8]| {
    let mut world = world().lock().unwrap();
    let (flags, data) = bytes.split_first().unwrap_or((&0, &[]));
    world.next_id += 1;
    let entry = QueueEntry {
        seq: world.next_id,
        message_id: world.next_id,
        conversation_id: if flags & 1 == 0 { world.conversation.clone() } else { "ab".repeat(16) },
        kind: if flags & 2 == 0 { EntryKind::Message } else { EntryKind::Welcome },
        sender: "alice".into(),
        sender_device: world.alice_device,
        sender_kind: AccountKind::Person,
        sender_verified: false,
        data: B64(data.to_vec()),
        server_time: 0,
        expires_at: None,
        frank: None,
    };
    let World { rt, bob, .. } = &mut *world;
    let _guard = rt.enter();
    let report = bob.receive_entries(&[entry]).unwrap();
    // Random bytes never become a message.
    assert!(report.messages.is_empty());
});
