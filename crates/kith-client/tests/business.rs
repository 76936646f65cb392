//! Businesses end to end: opt-in only, answers, verification, the directory, blocking.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use kith_client::{AccountKind, Client, ConversationKind, ErrorCode};
use kith_testkit::{TestServer, TestUser};

async fn business(server: &TestServer, name: &str, display: &str, about: &str) -> TestUser {
    let dir = tempfile::tempdir().unwrap();
    let mut client = Client::open(dir.path()).unwrap();
    client.register_business(&server.url, name, display, about).await.unwrap();
    TestUser { client, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_answers_but_never_cold_messages() {
    let server = TestServer::start().await;
    let mut shop = business(&server, "bakery", "The Corner Bakery", "Fresh bread daily").await;
    let mut alice = server.user("alice").await;
    let _bob = server.user("bob").await;
    let mut other_shop = business(&server, "florist", "Florist", "Flowers").await;

    // No cold messages, no KeyPackages, no groups with people.
    let err = shop.send_text("alice", "20% off today!").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotOptedIn), "{err}");
    let err = shop.claim_for_testing("alice").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotOptedIn), "{err}");
    let err = shop.create_group("VIP customers", &["alice".into()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotOptedIn), "{err}");
    // A group of businesses is fine, but a person cannot be added to it by one.
    let g = shop.create_group("Suppliers", &["florist".into()]).await.unwrap();
    let err = shop.group_add(&g, &["alice".into()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotOptedIn), "{err}");
    assert!(alice.raw_queue().await.is_empty(), "something reached alice");
    other_shop.sync().await.unwrap();

    // Alice opens the conversation; the business answers in it.
    alice.send_text("bakery", "do you have rye bread?").await.unwrap();
    let q = shop.sync().await.unwrap();
    assert_eq!(q.messages.iter().filter(|m| m.kind == ConversationKind::Direct).count(), 1);
    assert!(!q.messages[0].from_business);
    shop.send_text("alice", "yes, until 6pm").await.unwrap();
    let r = alice.sync().await.unwrap();
    let m = r.messages.iter().find(|m| m.text == "yes, until 6pm").unwrap();
    assert!(m.from_business && !m.verified);
    // Even with alice's conversation open, it cannot put her in a group.
    let err = shop.group_add(&g, &["alice".into()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotOptedIn), "{err}");
    // A business is not a contact: it has no story channel for alice.
    assert!(shop.contacts().unwrap().is_empty());

    // Verified by the admin: the directory and its next messages say so.
    let found = alice.search_businesses("bread").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].username.as_str(), found[0].verified), ("bakery", false));
    assert_eq!(found[0].display_name, "The Corner Bakery");
    server.store().set_verified("bakery", true).await.unwrap();
    let found = alice.search_businesses("bakery").await.unwrap();
    assert!(found[0].verified);
    shop.send_text("alice", "we also have sourdough").await.unwrap();
    let r = alice.sync().await.unwrap();
    assert!(r.messages[0].from_business && r.messages[0].verified);
    assert!(alice.search_businesses("nothing-like-this").await.unwrap().is_empty());

    // Alice blocks it: it can no longer reach her, and it is not told.
    alice.block("bakery").await.unwrap();
    shop.send_text("alice", "last chance offer").await.unwrap();
    assert!(alice.raw_queue().await.is_empty());
    assert!(alice.sync().await.unwrap().messages.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_businesses_have_public_profiles() {
    let server = TestServer::start().await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/accounts", server.url))
        .json(&serde_json::json!({
            "username": "carol", "credential_key": "", "key_packages": [],
            "last_resort_key_package": "", "display_name": "Carol"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::open(dir.path()).unwrap();
    let err = c.register_business(&server.url, "shop", &"x".repeat(65), "").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    let p = c.register_business(&server.url, "shop", "Shop", "").await.unwrap();
    assert_eq!(p.kind, AccountKind::Business);
    assert_eq!(c.whoami().await.unwrap().kind, AccountKind::Business);
}
