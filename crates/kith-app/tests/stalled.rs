//! The app while its server does not answer: what the page only reads (the chat list, a
//! chat's messages, a group) is shown from the profile at once, not after the client's wait
//! on the network has ended.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod common;

use std::time::Duration;

use common::Session;
use kith_client::{AccountKind, Client};
use kith_testkit::{FaultProxy, TestServer};

/// How long a read may take before the test calls it stuck behind the network (the stalled
/// send waits up to a minute per attempt).
const STUCK: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reads_its_chats_while_a_send_waits_on_a_silent_server() {
    let server = TestServer::start().await;
    let target: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(target).await.unwrap();
    let mut bob = server.user("bob").await;

    // ann's profile reaches kithd through the proxy, and already talks to bob.
    let profile = tempfile::tempdir().unwrap();
    {
        let mut ann = Client::open(profile.path()).unwrap();
        ann.register(&format!("http://{}", proxy.addr), "ann", AccountKind::Person).await.unwrap();
        ann.send_text("bob", "hello bob").await.unwrap();
    }
    bob.sync().await.unwrap();
    bob.send_text("ann", "hello ann").await.unwrap();

    let options = kith_app::AppOptions { profile: profile.path().to_path_buf(), port: 0 };
    let running = kith_app::serve(options).await.unwrap();
    let page = Session::open(&running).await;
    // The app catches up when it connects: bob's answer is in before the server goes quiet.
    let mut tries = 0;
    while !page.call("GET", "/api/chats/@bob/messages", None).await.body.contains("hello ann") {
        tries += 1;
        assert!(tries < 100, "the app never caught up with bob's answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The server stops answering (packets dropped), and the person sends: the client waits.
    proxy.stall();
    let sending = tokio::spawn({
        let page =
            Session { addr: page.addr, cookie: page.cookie.clone(), token: page.token.clone() };
        async move {
            page.call("POST", "/api/send", Some(r#"{"chat":"@bob","text":"are you there?"}"#)).await
        }
    });
    // Long enough for the send to have taken the client and be waiting on the network.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sending.is_finished(), "the send did not wait on the stalled server");

    let list = tokio::time::timeout(STUCK, page.call("GET", "/api/chats", None))
        .await
        .expect("the chat list waited for the send to the silent server");
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("\"@bob\""), "{}", list.body);
    let history = tokio::time::timeout(STUCK, page.call("GET", "/api/chats/@bob/messages", None))
        .await
        .expect("the chat waited for the send to the silent server");
    assert!(history.body.contains("hello ann"), "{}", history.body);
    let me = tokio::time::timeout(STUCK, page.call("GET", "/api/me", None)).await.unwrap();
    assert!(me.body.contains("\"username\":\"ann\""), "{}", me.body);
    let read = tokio::time::timeout(STUCK, page.call("POST", "/api/chats/@bob/read", Some("{}")))
        .await
        .expect("marking a chat read waited for the silent server");
    assert_eq!(read.status, 200, "{}", read.body);
    assert!(!sending.is_finished(), "the server answered while stalled");

    // The server answers again: the message goes out and reaches bob, once.
    proxy.restore();
    let sent = sending.await.unwrap();
    assert_eq!(sent.status, 200, "{}", sent.body);
    let texts: Vec<String> =
        bob.sync().await.unwrap().messages.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["are you there?"]);
}
