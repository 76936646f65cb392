//! Several `kithd` nodes on one PostgreSQL database, as behind a load balancer: a device
//! connected to one node gets, over the push connection it already has, what was sent through
//! another (the nodes announce new queue entries to each other with `NOTIFY`).

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::time::Duration;

use kith_client::{AccountKind, PushConnection};
use kith_testkit::{TestServer, TestUser};

/// Texts pushed to `user` on `push` until `want` have arrived; fails after 10 s.
async fn pushed(user: &mut TestUser, push: &mut PushConnection, want: usize) -> Vec<String> {
    let mut texts = Vec::new();
    while texts.len() < want {
        let report = tokio::time::timeout(Duration::from_secs(10), user.receive_push(push))
            .await
            .expect("pushed within 10 s")
            .unwrap();
        texts.extend(report.messages.into_iter().map(|m| m.text));
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_one_node_gets_what_is_sent_through_another() {
    let Some(nodes) = TestServer::start_postgres_nodes(2).await else { return };
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut alice = TestUser::register(&a.url, "alice", AccountKind::Person).await;
    let mut bob = TestUser::register(&b.url, "bob", AccountKind::Person).await;
    let mut alice_push = alice.connect_push().await.unwrap();
    let mut bob_push = bob.connect_push().await.unwrap();

    // A new conversation (its Welcome) and a message, both through node A, to bob on node B.
    alice.send_text("bob", "hello from a").await.unwrap();
    assert_eq!(pushed(&mut bob, &mut bob_push, 1).await, ["hello from a"]);

    // And back: bob writes through node B to alice, connected to node A.
    bob.send_text("alice", "hello from b").await.unwrap();
    assert_eq!(pushed(&mut alice, &mut alice_push, 1).await, ["hello from b"]);

    // A burst keeps its order across nodes.
    let burst: Vec<String> = (0..20).map(|n| format!("burst {n}")).collect();
    for text in &burst {
        alice.send_text("bob", text).await.unwrap();
    }
    assert_eq!(pushed(&mut bob, &mut bob_push, burst.len()).await, burst);

    for node in nodes {
        node.stop().await;
    }
}
