//! One truth per epoch: a conversation's settings (name, timer) and its admins are MLS epoch
//! state, so members cannot end up disagreeing about what their group is. Each test is one of
//! the ways members used to diverge — a full queue, a block between admins, a removal and a
//! re-add, a send before syncing, a deleted chat, two admins leaving or acting at once — and
//! checks every member's view against every other's.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::Arc;
use std::time::Duration;

use kith_client::{ConversationKind, ProblemKind, Refusal};
use kith_testkit::{ServerConfig, SystemClock, TestServer, TestUser};

async fn sync_all(users: &mut [&mut TestUser]) {
    for u in users.iter_mut() {
        u.sync().await.unwrap();
    }
}

/// (name, timer, admins, members) of a group as `u` holds it, with its epoch.
fn view(u: &TestUser, id: &str) -> (u64, Option<String>, Option<u64>, Vec<String>, Vec<String>) {
    let g = u.group(id).unwrap();
    let mut admins = g.admins.clone();
    admins.sort();
    (g.epoch, g.name, g.timer_seconds, admins, g.members)
}

/// Everyone in `users` holds the same group, at the same epoch.
fn all_agree(users: &[&TestUser], id: &str) {
    let first = view(users[0], id);
    for u in &users[1..] {
        assert_eq!(view(u, id), first);
    }
}

/// alice's group "Club" with bob and carol, bob an admin too, everyone synced.
async fn club_of_two_admins(server: &TestServer) -> (TestUser, TestUser, TestUser, String) {
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let id = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    alice.group_promote(&id, "bob").await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    (alice, bob, carol, id)
}

fn hours(h: u64) -> Option<Duration> {
    Some(Duration::from_secs(h * 3600))
}

/// When the message `text` disappears on `u`'s device.
fn expiry_of(u: &TestUser, chat: &str, text: &str) -> Option<u64> {
    u.chat_history(chat).unwrap().into_iter().find(|m| m.text == text).unwrap().expires_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_queue_filled_up_ends_with_the_groups_settings() {
    let config = ServerConfig { max_queued_per_device: 6, ..kith_testkit::test_config() };
    let server = TestServer::start_with(config, Arc::new(SystemClock)).await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut dave = server.user("dave").await;
    let id = alice.create_group("Club", &["bob".into(), "dave".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut dave]).await;
    // dave is away; bob keeps up. dave's queue fills with messages; the sender is told whom
    // the ones after did not reach…
    let mut skipped = Vec::new();
    for i in 0..8 {
        let sent = alice.send_group_reporting(&id, &format!("m{i}")).await.unwrap();
        skipped.push(sent.not_delivered);
        bob.sync().await.unwrap();
    }
    let dave_only = vec!["dave".to_string()];
    assert_eq!(skipped[..6], vec![Vec::<String>::new(); 6]);
    assert_eq!(skipped[6..], [dave_only.clone(), dave_only.clone()]);
    // …and the changes after it still reach him: commits are never skipped.
    alice.group_rename(&id, "Night club").await.unwrap();
    alice.set_disappearing(&id, hours(1)).await.unwrap();
    let sent = alice.send_group_reporting(&id, "after").await.unwrap();
    assert_eq!(sent.not_delivered, dave_only);
    bob.sync().await.unwrap();
    // dave is told, on return, how many he missed and where — once.
    let r = dave.sync().await.unwrap();
    let missed: Vec<_> =
        r.problems.iter().filter(|p| p.kind == ProblemKind::Missed).cloned().collect();
    assert_eq!(missed.len(), 1, "{:?}", r.problems);
    assert_eq!((missed[0].conversation.as_str(), missed[0].detail.as_str()), (id.as_str(), "3"));
    assert!(missed[0].to_string().starts_with("3 messages did not reach this device"));
    let again = dave.sync().await.unwrap();
    assert!(again.problems.iter().all(|p| p.kind != ProblemKind::Missed), "{:?}", again.problems);
    all_agree(&[&alice, &bob, &dave], &id);
    assert_eq!(view(&dave, &id).1.as_deref(), Some("Night club"));
    assert_eq!(view(&dave, &id).2, Some(3600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_blocked_by_a_member_still_changes_the_group_for_her() {
    let server = TestServer::start().await;
    let (mut alice, mut bob, mut carol, id) = club_of_two_admins(&server).await;
    carol.block("bob").await.unwrap();
    bob.group_rename(&id, "Bob's").await.unwrap();
    bob.set_disappearing(&id, hours(2)).await.unwrap();
    bob.send_group(&id, "from bob").await.unwrap();
    alice.send_group(&id, "from alice").await.unwrap();
    sync_all(&mut [&mut alice, &mut carol]).await;
    all_agree(&[&alice, &bob, &carol], &id);
    // She does not see bob's messages, but alice's disappear for her as for everyone.
    let history = carol.chat_history(&id).unwrap();
    assert!(!history.iter().any(|m| m.text == "from bob"));
    assert_eq!(expiry_of(&carol, &id, "from alice"), expiry_of(&alice, &id, "from alice"));
    assert!(expiry_of(&carol, &id, "from alice").is_some());
    carol.unblock("bob").await.unwrap();
    bob.set_disappearing(&id, None).await.unwrap();
    sync_all(&mut [&mut alice, &mut carol]).await;
    all_agree(&[&alice, &bob, &carol], &id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_added_back_gets_the_timer_of_the_group_as_it_is() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut dave = server.user("dave").await;
    let id = alice.create_group("Club", &["bob".into(), "dave".into()]).await.unwrap();
    alice.set_disappearing(&id, Some(Duration::from_secs(30))).await.unwrap();
    sync_all(&mut [&mut bob, &mut dave]).await;
    assert_eq!(view(&dave, &id).2, Some(30));
    alice.group_remove(&id, "dave").await.unwrap();
    dave.sync().await.unwrap();
    alice.set_disappearing(&id, None).await.unwrap();
    alice.group_add(&id, &["dave".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut dave]).await;
    all_agree(&[&alice, &bob, &dave], &id);
    assert_eq!(view(&dave, &id).2, None);
    dave.send_group(&id, "kept").await.unwrap();
    assert_eq!(expiry_of(&dave, &id, "kept"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_device_behind_disappears_by_the_groups_timer() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let id = alice.create_group("Pair", &["bob".into()]).await.unwrap();
    bob.sync().await.unwrap();
    alice.set_disappearing(&id, hours(1)).await.unwrap();
    // bob has not synced since: his send meets the new epoch, catches up, and goes with it.
    let m = bob.send_group(&id, "late").await.unwrap();
    let expires = m.expires_at.expect("bob's own copy disappears too");
    assert!(expires <= m.sent_at + 3_600_000 + 5_000);
    alice.sync().await.unwrap();
    assert_eq!(expiry_of(&alice, &id, "late"), Some(expires));
    assert_eq!(expiry_of(&bob, &id, "late"), Some(expires));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_chat_after_the_other_deleted_keeps_the_timer_and_says_so() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();
    alice.set_disappearing("bob", hours(1)).await.unwrap();
    bob.sync().await.unwrap();
    bob.delete_conversation("alice").await.unwrap();
    alice.sync().await.unwrap();
    let m = alice.send_text("bob", "again").await.unwrap();
    assert!(m.expires_at.is_some(), "the new chat keeps the timer");
    let r = bob.sync().await.unwrap();
    let got = r.messages.iter().find(|x| x.text == "again").unwrap();
    assert_eq!(got.expires_at, m.expires_at);
    // The earlier chat is told apart from one never started.
    let lines: Vec<String> = alice
        .history("bob")
        .unwrap()
        .into_iter()
        .filter(|x| x.kind == ConversationKind::System)
        .map(|x| x.text)
        .collect();
    assert!(lines.iter().any(|l| l == "bob deleted this chat"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_admin_and_the_heir_leaving_at_once_leave_an_admin_who_is_a_member() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let mut dave = server.user("dave").await;
    let _erin = server.user("erin").await;
    let id =
        alice.create_group("Club", &["bob".into(), "carol".into(), "dave".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol, &mut dave]).await;
    // alice hands the role to bob (first by name) as she leaves; bob leaves at the same time.
    let (a, b) = tokio::join!(alice.group_leave(&id), bob.group_leave(&id));
    a.unwrap();
    b.unwrap();
    sync_all(&mut [&mut carol, &mut dave]).await;
    sync_all(&mut [&mut carol, &mut dave]).await;
    all_agree(&[&carol, &dave], &id);
    let (_, _, _, admins, members) = view(&carol, &id);
    assert_eq!(members, ["carol", "dave"]);
    assert_eq!(admins, ["carol"]);
    // And the group still works: its admin adds.
    carol.group_add(&id, &["erin".into()]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_racing_the_renamers_removal_applies_everywhere_or_nowhere() {
    let server = TestServer::start().await;
    let (mut alice, mut bob, mut carol, id) = club_of_two_admins(&server).await;
    let (removed, renamed) =
        tokio::join!(alice.group_remove(&id, "bob"), bob.group_rename(&id, "Bob's"));
    removed.unwrap();
    sync_all(&mut [&mut alice, &mut carol, &mut bob]).await;
    all_agree(&[&alice, &carol], &id);
    let name = view(&alice, &id).1;
    match renamed {
        // The rename won the epoch: everyone has it, the removal came after.
        Ok(()) => assert_eq!(name.as_deref(), Some("Bob's")),
        // The removal won: the rename applies nowhere, and bob is told why.
        Err(e) => {
            assert_eq!(name.as_deref(), Some("Club"));
            assert_eq!(e.refusal(), Some(Refusal::NotInConversation), "{e}");
            assert!(e.to_string().contains("alice removed you"), "{e}");
        }
    }
    let g = bob.group(&id).unwrap();
    assert!(g.left);
    assert_eq!(g.removed_by.as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_adding_the_same_person_at_once_hear_that_she_is_in() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut dave = server.user("dave").await;
    let id = alice.create_group("Club", &["bob".into()]).await.unwrap();
    bob.sync().await.unwrap();
    alice.group_promote(&id, "bob").await.unwrap();
    bob.sync().await.unwrap();
    let add = ["dave".to_string()];
    let (a, b) = tokio::join!(alice.group_add(&id, &add), bob.group_add(&id, &add));
    let errors: Vec<_> = [a, b].into_iter().filter_map(Result::err).collect();
    assert!(errors.len() <= 1, "{errors:?}");
    for e in &errors {
        assert_eq!(e.refusal(), Some(Refusal::AlreadyDone), "{e}");
        assert!(e.to_string().contains("dave is already in the group"), "{e}");
    }
    sync_all(&mut [&mut alice, &mut bob, &mut dave]).await;
    all_agree(&[&alice, &bob, &dave], &id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_offline_is_told_who_removed_them() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let id = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    alice.group_remove(&id, "carol").await.unwrap();
    // carol has not synced: her message is refused, and she learns why.
    let e = carol.send_group(&id, "hello?").await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::NotInConversation), "{e}");
    assert!(e.to_string().contains("alice removed you from this group"), "{e}");
    let g = carol.group(&id).unwrap();
    assert!(g.left);
    assert_eq!(g.removed_by.as_deref(), Some("alice"));
    let e = carol.group_rename("Club", "Mine").await.unwrap_err();
    assert!(e.to_string().contains("alice removed you"), "{e}");
    // Who left on their own is told apart.
    bob.group_leave(&id).await.unwrap();
    assert_eq!(bob.group(&id).unwrap().removed_by, None);
}
