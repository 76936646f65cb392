//! Reducing permanence end to end: contacts, stories, disappearing messages, deletion that
//! leaves nothing on disk, and the server's retention.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::Arc;
use std::time::Duration;

use kith_client::ConversationKind;
use kith_testkit::{
    Clock, ManualClock, ServerConfig, SystemClock, TestServer, TestUser, contains, files_under,
};

fn names(contacts: Vec<(String, u64)>) -> Vec<String> {
    contacts.into_iter().map(|(n, _)| n).collect()
}

fn profile_holds(user: &TestUser, text: &str) -> bool {
    files_under(user.dir.path()).iter().any(|(_, bytes)| contains(bytes, text.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_come_from_writing_and_end_with_deletion() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    assert!(alice.contacts().unwrap().is_empty());

    alice.send_text("bob", "hi").await.unwrap();
    assert_eq!(names(alice.contacts().unwrap()), ["bob"]);
    bob.sync().await.unwrap();
    // Receiving does not make a contact; replying does.
    assert!(bob.contacts().unwrap().is_empty());
    bob.send_text("alice", "hello").await.unwrap();
    assert_eq!(names(bob.contacts().unwrap()), ["alice"]);

    // Deleting the conversation ends the contact and wipes the history from disk.
    alice.sync().await.unwrap();
    assert!(profile_holds(&alice, "hello"));
    let gone = alice.delete_conversation("bob").await.unwrap();
    assert_eq!(gone, 2);
    assert!(alice.contacts().unwrap().is_empty());
    assert!(alice.history("bob").unwrap().is_empty());
    assert!(!profile_holds(&alice, "hello"), "deleted text left on disk");
    // The old conversation is over for her; bob's next message, written before he heard of
    // it, still reaches her — in a new conversation — and so does the one after.
    bob.send_text("alice", "are you there?").await.unwrap();
    bob.send_text("alice", "new start").await.unwrap();
    let r = alice.sync().await.unwrap();
    let texts: Vec<&str> = r.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["are you there?", "new start"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_story_reaches_contacts_only_and_only_its_owner_posts() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let mut dave = server.user("dave").await;

    // bob and alice wrote to each other; carol wrote to alice but alice never wrote to carol.
    alice.send_text("bob", "hi bob").await.unwrap();
    bob.sync().await.unwrap();
    bob.send_text("alice", "hi alice").await.unwrap();
    carol.send_text("alice", "hi alice").await.unwrap();
    alice.sync().await.unwrap();

    let story = alice.story_post("at the beach").await.unwrap();
    assert_eq!(story.author, "alice");
    assert!(story.expires_at >= story.posted_at + 86_399_000);
    let r = bob.sync().await.unwrap();
    let got: Vec<_> = r.messages.iter().filter(|m| m.kind == ConversationKind::Story).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "at the beach");
    let listed = bob.stories().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].author.as_str(), listed[0].text.as_str()), ("alice", "at the beach"));
    assert_eq!(listed[0].id, story.id);

    // Carol and dave get nothing: not a Welcome to the channel, not the story.
    assert!(carol.raw_queue().await.is_empty());
    assert!(carol.sync().await.unwrap().messages.is_empty());
    assert!(carol.stories().unwrap().is_empty());
    assert!(dave.sync().await.unwrap().messages.is_empty());

    // A new contact is added to the channel, but sees stories only once the contact is
    // mutual: until dave writes back, the invitation waits on his device.
    alice.send_text("dave", "hi dave").await.unwrap();
    alice.story_post("sunset").await.unwrap();
    let r = dave.sync().await.unwrap();
    assert!(dave.stories().unwrap().is_empty());
    assert!(r.messages.iter().all(|m| m.kind != ConversationKind::Story));
    dave.send_text("alice", "hi alice").await.unwrap();
    dave.sync().await.unwrap();
    let dave_sees: Vec<String> = dave.stories().unwrap().into_iter().map(|s| s.text).collect();
    assert_eq!(dave_sees, ["sunset"]);
    // Nobody was told who joined the audience.
    for h in [bob.history("alice").unwrap(), dave.history("alice").unwrap()] {
        assert!(h.iter().all(|m| !m.text.contains("added")), "{h:?}");
    }

    // Only the owner posts: bob replaying alice's ciphertext into her channel is refused.
    alice.story_post("one more").await.unwrap();
    let entry = bob.raw_queue().await.pop().unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/conversations/{}/messages", server.url, entry.conversation_id))
        .header("authorization", bob.bearer())
        .json(&serde_json::json!({ "message": entry.data }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");

    // Ending the contact takes bob out of the channel.
    bob.sync().await.unwrap();
    alice.delete_conversation("bob").await.unwrap();
    alice.story_post("bob will not see this").await.unwrap();
    bob.sync().await.unwrap();
    let bob_sees: Vec<String> = bob.stories().unwrap().into_iter().map(|s| s.text).collect();
    assert!(!bob_sees.contains(&"bob will not see this".to_string()), "{bob_sees:?}");
}

/// Found by the model-based test: a contact who deleted the chat made the next story fail
/// (the server refused them in the story channel) until the poster synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_story_posts_after_a_contact_deleted_the_chat() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    for peer in [&mut bob, &mut carol] {
        alice.send_text(peer.profile().unwrap().username.as_str(), "hi").await.unwrap();
        peer.sync().await.unwrap();
        peer.send_text("alice", "hi alice").await.unwrap();
    }
    bob.delete_conversation("alice").await.unwrap();
    // alice has not synced: her device still counts bob as a contact.
    alice.story_post("at the lake").await.unwrap();
    let carol_sees: Vec<String> =
        carol.sync().await.unwrap().messages.into_iter().map(|m| m.text).collect();
    assert!(carol_sees.contains(&"at the lake".to_string()), "{carol_sees:?}");
    assert!(bob.sync().await.unwrap().messages.iter().all(|m| m.kind != ConversationKind::Story));
    assert_eq!(
        alice.contacts().unwrap().into_iter().map(|(c, _)| c).collect::<Vec<_>>(),
        ["carol"]
    );
}

/// Deleting a chat ends the contact both ways: the other's stories leave the deleter's device
/// too, not only future ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_chat_drops_the_stories_already_received() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();
    bob.send_text("alice", "hi alice").await.unwrap();
    alice.sync().await.unwrap();
    alice.story_post("at the lake").await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(bob.stories().unwrap().len(), 1);
    bob.delete_conversation("alice").await.unwrap();
    assert!(bob.stories().unwrap().is_empty(), "{:?}", bob.stories().unwrap());
    assert!(!profile_holds(&bob, "at the lake"), "the deleted contact's story is still on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stories_expire_on_the_server_and_on_clients_leaving_no_trace() {
    let config = ServerConfig { story_ttl_seconds: 1, ..kith_testkit::test_config() };
    // The server's clock is moved past the expiry, not waited for; it starts at the clients'.
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let server = TestServer::start_with(config, clock.clone()).await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let _dave = server.user("dave").await;
    alice.send_text("bob", "hi").await.unwrap();
    alice.send_text("dave", "hi").await.unwrap();
    // Stories go between people who wrote to each other.
    bob.sync().await.unwrap();
    bob.send_text("alice", "hi").await.unwrap();
    let marker = "STORY-MARKER-3141";
    alice.story_post(marker).await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(bob.stories().unwrap().len(), 1);
    assert!(profile_holds(&bob, marker));
    // The ciphertext dave has not fetched is on the server until the story expires.
    let before = server.store().counts().await.unwrap();
    assert!(before.messages >= 1);
    let story_entry = _dave.raw_queue().await.into_iter().find(|e| e.expires_at.is_some()).unwrap();
    let ciphertext = &story_entry.data.0;
    let sample = &ciphertext[ciphertext.len() / 2..ciphertext.len() / 2 + 48];
    let on_server = |needle: &[u8]| {
        files_under(server.data.path()).iter().any(|(_, bytes)| contains(bytes, needle))
    };
    kith_server::retention::sweep_once(&server.state).await.unwrap();
    assert!(on_server(sample), "the story's ciphertext should be stored before its expiry");

    clock.advance(Duration::from_secs(2));
    for client in [&mut alice, &mut bob] {
        client.advance_clock(Duration::from_secs(2));
    }
    // Dave never fetched it: the server deletes it anyway, and hands out nothing expired.
    let gone = kith_server::retention::sweep_once(&server.state).await.unwrap();
    assert!(gone >= 1);
    assert!(_dave.raw_queue().await.iter().all(|e| e.expires_at.is_none()));
    let after = server.store().counts().await.unwrap();
    assert_eq!(after.messages, before.messages - gone);
    assert!(!on_server(sample), "an expired story's ciphertext stayed in the server's files");
    // Clients hide it at expiry, and their next sync deletes it (and says so): the text is
    // gone from both profiles' files.
    assert!(bob.stories().unwrap().is_empty());
    assert!(alice.stories().unwrap().is_empty());
    assert!(bob.sync().await.unwrap().expired >= 1);
    assert!(alice.sync().await.unwrap().expired >= 1);
    assert!(!profile_holds(&bob, marker), "an expired story left its text on disk");
    assert!(!profile_holds(&alice, marker), "an expired story left its text on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_set_by_one_member_is_honoured_by_the_other() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "before the timer").await.unwrap();
    alice.set_disappearing("bob", Some(Duration::from_secs(300))).await.unwrap();
    let r = bob.sync().await.unwrap();
    let system: Vec<&str> = r
        .messages
        .iter()
        .filter(|m| m.kind == ConversationKind::System)
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(system, ["alice set disappearing messages to 5m"]);

    let secret = "VANISHING-2718";
    bob.send_text("alice", secret).await.unwrap();
    alice.sync().await.unwrap();
    assert!(profile_holds(&alice, secret) && profile_holds(&bob, secret));
    let m = alice.history("bob").unwrap().into_iter().find(|m| m.text == secret).unwrap();
    assert!(m.expires_at.is_some());

    // Four minutes on, it is still there; past five, gone from both profiles' files.
    for u in [&mut alice, &mut bob] {
        u.advance_clock(Duration::from_secs(240));
        assert!(
            u.history(if u.profile().unwrap().username == "alice" { "bob" } else { "alice" })
                .unwrap()
                .iter()
                .any(|m| m.text == secret)
        );
        u.advance_clock(Duration::from_secs(61));
        u.purge_expired().unwrap();
    }
    assert!(!alice.history("bob").unwrap().iter().any(|m| m.text == secret));
    assert!(!bob.history("alice").unwrap().iter().any(|m| m.text == secret));
    assert!(!profile_holds(&alice, secret), "a disappeared message left its text on disk");
    assert!(!profile_holds(&bob, secret), "a disappeared message left its text on disk");
    // The message from before the timer stays.
    assert!(bob.history("alice").unwrap().iter().any(|m| m.text == "before the timer"));
    // So does the line saying the timer was set, on both sides: it explains why the rest went.
    for (u, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let history = u.history(peer).unwrap();
        let line = "alice set disappearing messages to 5m";
        assert!(history.iter().any(|m| m.text == line), "{peer}'s chat lost the timer line");
    }

    // Turning it off works the same way, and invalid timers are refused.
    bob.set_disappearing("alice", None).await.unwrap();
    let r = alice.sync().await.unwrap();
    assert!(r.messages.iter().any(|m| m.text == "bob turned disappearing messages off"));
    for bad in [Duration::from_secs(5), Duration::from_secs(30 * 86_400)] {
        assert!(alice.set_disappearing("bob", Some(bad)).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_timers_apply_to_every_member() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let id = alice.create_group("Secret club", &["bob".into(), "carol".into()]).await.unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    // In a group, the timer is the admins' to set, like the name.
    let e = bob.set_disappearing("Secret club", Some(Duration::from_secs(30))).await.unwrap_err();
    assert!(matches!(e, kith_client::ClientError::NotAdmin(_)), "{e}");
    alice.set_disappearing("Secret club", Some(Duration::from_secs(30))).await.unwrap();
    alice.sync().await.unwrap();
    carol.sync().await.unwrap();
    carol.send_group(&id, "GONE-SOON-1618").await.unwrap();
    alice.sync().await.unwrap();
    for u in [&mut alice, &mut carol] {
        assert!(profile_holds(u, "GONE-SOON-1618"));
        u.advance_clock(Duration::from_secs(31));
        u.purge_expired().unwrap();
        assert!(!profile_holds(u, "GONE-SOON-1618"));
    }
}

/// Removed from a story channel and added back (the contact ended, then both wrote again), a
/// member joins it again and reads the next story; the same for a group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_and_added_back_reads_again() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();
    bob.send_text("alice", "hi").await.unwrap();
    alice.sync().await.unwrap();
    alice.story_post("one").await.unwrap();
    bob.sync().await.unwrap();
    // alice deletes the chat: the contact ends and bob leaves her channel.
    alice.delete_conversation("bob").await.unwrap();
    alice.story_post("two").await.unwrap();
    bob.sync().await.unwrap();
    // They write to each other again: bob is back in the channel and reads the next story.
    bob.send_text("alice", "still friends?").await.unwrap();
    alice.sync().await.unwrap();
    alice.send_text("bob", "yes").await.unwrap();
    alice.story_post("three").await.unwrap();
    bob.sync().await.unwrap();
    let seen: Vec<String> = bob.stories().unwrap().into_iter().map(|s| s.text).collect();
    assert!(seen.contains(&"three".to_string()), "{seen:?}");
    assert!(!seen.contains(&"two".to_string()), "{seen:?}");

    // A group: removed by the admin, added back, bob reads it again.
    let club = alice.create_group("Club", &["bob".into()]).await.unwrap();
    bob.sync().await.unwrap();
    alice.group_remove(&club, "bob").await.unwrap();
    bob.sync().await.unwrap();
    assert!(bob.group(&club).unwrap().left);
    alice.group_add(&club, &["bob".into()]).await.unwrap();
    alice.send_group(&club, "welcome back").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert!(r.messages.iter().any(|m| m.text == "welcome back"), "{:?}", r.messages);
    assert!(!bob.group(&club).unwrap().left);
}

/// A profile's folder and files are its owner's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    alice.send_text("alice2", "x").await.unwrap_err();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(alice.dir.path()), 0o700);
    // Opened again (as every `kith` command does), the files are narrowed too.
    let kith_testkit::TestUser { client, dir } = alice;
    drop(client);
    drop(kith_client::Client::open(dir.path()).unwrap());
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap().path();
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

/// dan deletes the chat; ann, who has not synced since, writes again: the message reaches dan,
/// in a new conversation — never a "sent" that goes nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_someone_who_deleted_the_chat_reaches_them() {
    let server = TestServer::start().await;
    let mut ann = server.user("ann").await;
    let mut dan = server.user("dan").await;
    ann.send_text("dan", "hi").await.unwrap();
    dan.sync().await.unwrap();
    dan.send_text("ann", "hi ann").await.unwrap();
    ann.sync().await.unwrap();
    dan.delete_conversation("ann").await.unwrap();
    ann.send_text("dan", "are you there?").await.unwrap();
    let r = dan.sync().await.unwrap();
    let texts: Vec<&str> = r.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["are you there?"]);
    // ann sees the old conversation ended and the message in the new one.
    let history: Vec<String> = ann.history("dan").unwrap().into_iter().map(|m| m.text).collect();
    assert!(history.contains(&"are you there?".to_string()), "{history:?}");
}
