//! The business bot end to end: a real kithd, a real business account, a real person.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use kith_business_bot::{Bot, Knowledge};
use kith_client::{Client, ConversationKind, ErrorCode};
use kith_testkit::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_asks_and_the_bot_answers() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let orders = dir.path().join("orders.json");
    std::fs::write(&orders, r#"{"1234": "out for delivery", "5678": "being baked"}"#).unwrap();
    let mut shop = Client::open(dir.path().join("profile")).unwrap();
    shop.register_business(&server.url, "pizzeria", "Pizzeria Uno", "Pizza, to go").await.unwrap();
    let knowledge = Knowledge::load("11:00 to 23:00 every day", Some(&orders)).unwrap();
    let mut bot = Bot::new(shop, knowledge);

    let mut alice = server.user("alice").await;
    alice.send_text("pizzeria", "when are you open?").await.unwrap();
    alice.send_text("pizzeria", "and what about order 5678?").await.unwrap();
    assert_eq!(bot.answer_pending().await.unwrap(), 2);

    let r = alice.sync().await.unwrap();
    let answers: Vec<&str> = r
        .messages
        .iter()
        .filter(|m| m.kind == ConversationKind::Direct)
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(answers, ["We are open 11:00 to 23:00 every day.", "Order 5678: being baked."]);
    assert!(r.messages.iter().all(|m| m.from_business && !m.verified));

    // Live: the bot answers over the push channel.
    let live = tokio::spawn(async move { bot.run().await });
    alice.send_text("pizzeria", "order 1234?").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(alice.sync().await.unwrap().messages.into_iter().map(|m| m.text));
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(got, ["Order 1234: out for delivery."]);
    live.abort();

    // The bot could never have written first to someone else.
    let dir2 = tempfile::tempdir().unwrap();
    let mut other = Client::open(dir2.path()).unwrap();
    other.register_business(&server.url, "spamshop", "Spam Shop", "").await.unwrap();
    let err = other.send_text("alice", "special offer").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotOptedIn), "{err}");
}
