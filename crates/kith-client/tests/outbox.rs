//! The outbox, end to end against a real `kithd`: a message is in its sender's history from the
//! moment it is written, *sending*; it goes by itself once the server can be reached, and is
//! delivered once however often it was posted; one refused for good is *failed*, with why, and
//! a retry sends it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kith_client::{Delivery, ErrorCode};
use kith_testkit::{TestServer, test_config};

fn texts_of(messages: &[kith_client::Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.kind != kith_client::ConversationKind::System)
        .map(|m| m.text.clone())
        .collect()
}

fn states(messages: &[kith_client::Message]) -> Vec<(String, Delivery)> {
    messages.iter().filter(|m| m.outgoing).map(|m| (m.text.clone(), m.state)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_written_while_the_server_is_down_go_once_when_it_is_back() {
    let server = TestServer::start().await;
    let mut ann = server.user("ann").await;
    let mut bob = server.user("bob").await;
    ann.send_text("bob", "before").await.unwrap();
    bob.sync().await.unwrap();
    let down = server.down().await;
    for text in ["one", "two", "three"] {
        let sent = ann.send_text_reporting("bob", text).await.unwrap();
        assert_eq!(sent.message.state, Delivery::Sending, "{text} was not kept as sending");
    }
    // In the history at once, in the order written, each waiting.
    let waiting = states(&ann.history("bob").unwrap());
    assert_eq!(
        waiting,
        [
            ("before".to_string(), Delivery::Sent),
            ("one".to_string(), Delivery::Sending),
            ("two".to_string(), Delivery::Sending),
            ("three".to_string(), Delivery::Sending),
        ]
    );
    assert_eq!(ann.waiting_to_send().unwrap(), 3);
    // A sync while it is still down reaches nothing and loses nothing.
    assert!(ann.sync().await.is_err());
    assert_eq!(ann.waiting_to_send().unwrap(), 3);
    let server = down.up().await;
    // Nothing to do but what a device does anyway: its next sync.
    ann.sync().await.unwrap();
    assert_eq!(ann.waiting_to_send().unwrap(), 0);
    assert!(states(&ann.history("bob").unwrap()).iter().all(|(_, s)| *s == Delivery::Sent));
    let got = bob.sync().await.unwrap();
    assert_eq!(texts_of(&got.messages), ["one", "two", "three"]);
    assert_eq!((got.duplicates, got.dropped), (0, 0));
    // Once: another sync on either side changes nothing.
    ann.sync().await.unwrap();
    assert!(bob.sync().await.unwrap().messages.is_empty());
    assert_eq!(texts_of(&bob.history("ann").unwrap()), ["before", "one", "two", "three"]);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_connection_sends_what_waited() {
    let server = TestServer::start().await;
    let mut ann = server.user("ann").await;
    let mut bob = server.user("bob").await;
    let group = ann.create_group("walkers", &["bob".to_string()]).await.unwrap();
    bob.sync().await.unwrap();
    let down = server.down().await;
    let sent = ann.send_group_reporting(&group, "see you at nine").await.unwrap();
    assert_eq!(sent.message.state, Delivery::Sending);
    let _server = down.up().await;
    // The app's live loop connects, and that is all it takes.
    let _push = ann.connect_push().await.unwrap();
    assert_eq!(ann.waiting_to_send().unwrap(), 0);
    let got = bob.sync().await.unwrap();
    assert_eq!(texts_of(&got.messages), ["see you at nine"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_every_answer_was_lost_waits_and_then_goes_once() {
    let server = TestServer::start().await;
    let (proxy, mut ann) = server.user_losing_answers("ann").await;
    let mut bob = server.user("bob").await;
    ann.send_text("bob", "hello").await.unwrap();
    bob.sync().await.unwrap();
    // Every attempt of the send reaches the server; no answer reaches ann.
    for _ in 0..4 {
        proxy.lose_next("/messages");
    }
    let sent = ann.send_text_reporting("bob", "once only").await.unwrap();
    assert_eq!(proxy.lost(), 4, "the answers were not all lost: the test tests nothing");
    assert_eq!(sent.message.state, Delivery::Sending);
    // Bob already has it (the first attempt was stored; the others were recognised).
    let got = bob.sync().await.unwrap();
    assert_eq!(texts_of(&got.messages), ["once only"]);
    assert_eq!((got.duplicates, got.dropped), (0, 0), "stored more than once: {got:?}");
    // Ann's next sync posts it again, marked a repeat: answered as delivered, stored no more.
    ann.sync().await.unwrap();
    let mine = states(&ann.history("bob").unwrap());
    assert_eq!(mine.last().unwrap(), &("once only".to_string(), Delivery::Sent));
    assert_eq!(mine.iter().filter(|(t, _)| t == "once only").count(), 1);
    let again = bob.sync().await.unwrap();
    assert!(again.messages.is_empty(), "delivered twice: {again:?}");
    assert_eq!((again.duplicates, again.dropped), (0, 0), "delivered twice: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_failed_with_why_and_a_retry_sends_it() {
    let mut config = test_config();
    config.max_queued_per_device = 3;
    let server =
        TestServer::start_with(config, std::sync::Arc::new(kith_testkit::SystemClock)).await;
    let mut ann = server.user("ann").await;
    let mut bob = server.user("bob").await;
    ann.send_text("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();
    // Bob is away: his queue fills, and the server refuses the next one for good.
    let mut refused = None;
    for n in 0..5 {
        match ann.send_text("bob", &format!("message {n}")).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::QueueFull), "{e}");
                refused = Some(format!("message {n}"));
                break;
            }
        }
    }
    let refused = refused.expect("the queue never filled");
    let history = ann.history("bob").unwrap();
    let failed = history.iter().find(|m| m.text == refused).unwrap();
    assert_eq!(failed.state, Delivery::Failed);
    assert!(failed.failure.as_deref().unwrap_or("").contains("undelivered"), "{failed:?}");
    // Not sent again by itself: a refusal is for the person to decide on.
    ann.sync().await.unwrap();
    assert_eq!(
        ann.history("bob").unwrap().iter().find(|m| m.text == refused).unwrap().state,
        Delivery::Failed
    );
    // Bob catches up; ann retries; it goes, once.
    let before = bob.sync().await.unwrap();
    assert!(!texts_of(&before.messages).contains(&refused));
    let retried = ann.retry_message(&failed.id).await.unwrap();
    assert_eq!((retried.state, retried.failure.clone()), (Delivery::Sent, None));
    let got = bob.sync().await.unwrap();
    assert_eq!(texts_of(&got.messages), std::slice::from_ref(&refused));
    // Only a failed message can be retried.
    assert!(ann.retry_message(&failed.id).await.is_err());
    assert!(ann.retry_message("no-such-message").await.is_err());
}
