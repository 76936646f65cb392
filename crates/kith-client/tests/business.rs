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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_holding_a_business_has_only_people_who_opted_in() {
    let server = TestServer::start().await;
    let mut shop = business(&server, "bakery", "The Corner Bakery", "Fresh bread daily").await;
    let mut ana = server.user("ana").await;
    let mut ben = server.user("ben").await;
    let mut carol = server.user("carol").await;
    let mut mallory = server.user("mallory").await;
    // A throwaway person who wrote to the business builds a group with it and ana, who never
    // did: refused, and nothing reaches ana.
    mallory.send_text("bakery", "hi").await.unwrap();
    let err = mallory.create_group("Deals", &["bakery".into(), "ana".into()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotOptedIn), "{err}");
    assert!(ana.raw_queue().await.is_empty(), "something reached ana");
    // ana and ben both wrote to it: a group of the three is fine, and it can post there.
    ana.send_text("bakery", "hello").await.unwrap();
    ben.send_text("bakery", "hello").await.unwrap();
    shop.sync().await.unwrap();
    let g = ana.create_group("Orders", &["ben".into(), "bakery".into()]).await.unwrap();
    ben.sync().await.unwrap();
    shop.sync().await.unwrap();
    shop.send_group(&g, "bread is ready").await.unwrap();
    let r = ben.sync().await.unwrap();
    assert!(r.messages.iter().any(|m| m.text == "bread is ready"), "{:?}", r.messages);
    // Adding carol, who never wrote to it, is refused; so is adding it to carol's group.
    let err = ana.group_add(&g, &["carol".into()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotOptedIn), "{err}");
    let friends = ana.create_group("Friends", &["carol".into()]).await.unwrap();
    let err = ana.group_add(&friends, &["bakery".into()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotOptedIn), "{err}");
    // Once carol has written to it, she can join.
    carol.send_text("bakery", "me too").await.unwrap();
    ana.group_add(&g, &["carol".into()]).await.unwrap();
    let r = carol.sync().await.unwrap();
    assert!(r.joined.contains(&g), "{:?}", r.joined);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_is_never_in_a_story_audience() {
    let server = TestServer::start().await;
    let mut shop = business(&server, "bakery", "The Corner Bakery", "Fresh bread daily").await;
    let mut ana = server.user("ana").await;
    let mut ben = server.user("ben").await;
    ana.send_text("bakery", "hello").await.unwrap();
    shop.sync().await.unwrap();
    ana.send_text("ben", "hi ben").await.unwrap();
    ben.sync().await.unwrap();
    ben.send_text("ana", "hi ana").await.unwrap();
    ana.sync().await.unwrap();
    // Writing to a business does not make it a contact: the story reaches ben only.
    let contacts: Vec<String> = ana.contacts().unwrap().into_iter().map(|(c, _)| c).collect();
    assert_eq!(contacts, ["ben"]);
    ana.story_post("at the bakery").await.unwrap();
    ben.sync().await.unwrap();
    assert_eq!(ben.stories().unwrap().len(), 1);
    let r = shop.sync().await.unwrap();
    let left = shop.raw_queue().await;
    assert!(r.joined.is_empty() && left.is_empty(), "{:?} {left:?}", r.joined);
    // A modified client that puts it in a story channel anyway is refused by the server.
    let meta = kith_proto::GroupMeta {
        kind: kith_proto::GroupType::Story,
        admins: vec!["ben".into()],
        settings: None,
    };
    ben.send_text("bakery", "hello").await.unwrap();
    let (_, req) = ben.raw_conversation(&meta, &["ana".into(), "bakery".into()]).await.unwrap();
    let a = ben.hostile().post("/v1/conversations", serde_json::to_value(&req).unwrap()).await;
    assert_eq!((a.status, a.code()), (403, Some("not_opted_in")), "{:?}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_never_joins_a_group_with_a_business_they_did_not_write_to() {
    // The server refuses such a group; a hostile server delivers its Welcome anyway, and the
    // person's client refuses it too.
    let server = TestServer::start().await;
    let proxy = kith_testkit::HostileServer::start(server.state.config.listen).await.unwrap();
    let _shop = business(&server, "bakery", "The Corner Bakery", "Fresh bread daily").await;
    let mut ana = TestUser::register(&proxy.url(), "ana", AccountKind::Person).await;
    let mut mallory = server.user("mallory").await;
    mallory.send_text("bakery", "hi").await.unwrap();
    let meta = kith_proto::GroupMeta {
        kind: kith_proto::GroupType::Group,
        admins: vec!["mallory".into()],
        settings: None,
    };
    let (id, req) =
        mallory.raw_conversation(&meta, &["ana".into(), "bakery".into()]).await.unwrap();
    let a = mallory.hostile().post("/v1/conversations", serde_json::to_value(&req).unwrap()).await;
    assert_eq!((a.status, a.code()), (403, Some("not_opted_in")), "{:?}", a.body);
    let welcome = req.welcome.clone();
    let once = std::sync::atomic::AtomicBool::new(false);
    proxy.rewrite_queue(Some(std::sync::Arc::new(move |entries: &mut Vec<serde_json::Value>| {
        if once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        entries.push(serde_json::json!({
            "seq": 1, "message_id": 9_000_000, "conversation_id": id, "kind": "welcome",
            "sender": "mallory", "sender_device": 1, "data": welcome, "server_time": 0,
        }));
    })));
    let r = ana.sync().await.unwrap();
    assert!(r.joined.is_empty(), "{:?}", r.joined);
    assert!(ana.groups().unwrap().is_empty());
    assert!(r.problems.iter().any(|p| p.kind == kith_client::ProblemKind::Unjoinable));
}
