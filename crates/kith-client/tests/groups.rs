//! Groups end to end: a real kithd validating every commit, real clients.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::Arc;

use kith_client::{ClientError, ConversationKind, ErrorCode, Refusal, SystemEvent};
use kith_testkit::{ServerConfig, SystemClock, TestServer, TestUser};

fn texts(report: &kith_client::SyncReport, kind: ConversationKind) -> Vec<String> {
    report.messages.iter().filter(|m| m.kind == kind).map(|m| m.text.clone()).collect()
}

async fn sync_all(users: &mut [&mut TestUser]) {
    for u in users.iter_mut() {
        u.sync().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_group_of_four_chats() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let mut dave = server.user("dave").await;

    let id =
        alice.create_group("Family", &["bob".into(), "carol".into(), "dave".into()]).await.unwrap();
    assert_eq!(id.len(), 32);
    alice.send_group("Family", "dinner at 7?").await.unwrap();

    for u in [&mut bob, &mut carol, &mut dave] {
        let r = u.sync().await.unwrap();
        assert_eq!(r.joined, vec![id.clone()]);
        assert_eq!(texts(&r, ConversationKind::Group), ["dinner at 7?"]);
        let m = r.messages.iter().find(|m| m.kind == ConversationKind::Group).unwrap();
        assert_eq!((m.from.as_str(), m.conversation.as_str()), ("alice", id.as_str()));
        // The name arrived encrypted, and the group can be addressed by it.
        let g = u.group("Family").unwrap();
        assert_eq!(g.name.as_deref(), Some("Family"));
        assert_eq!(g.members, ["alice", "bob", "carol", "dave"]);
        assert_eq!(g.admins, ["alice"]);
    }
    bob.send_group(&id, "yes!").await.unwrap();
    carol.send_group(&id, "I'll bring cake").await.unwrap();
    for u in [&mut alice, &mut dave] {
        let r = u.sync().await.unwrap();
        assert_eq!(texts(&r, ConversationKind::Group), ["yes!", "I'll bring cake"]);
    }
    let history: Vec<String> = dave
        .conversation_history(&id)
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == ConversationKind::Group)
        .map(|m| m.text)
        .collect();
    assert_eq!(history, ["dinner at 7?", "yes!", "I'll bring cake"]);
    // One stored copy per message: the server keeps nothing once all have acknowledged.
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    let c = server.store().counts().await.unwrap();
    assert_eq!((c.messages, c.queue_entries), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_adding_at_the_same_moment_both_succeed() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut erin = server.user("erin").await;
    let mut frank = server.user("frank").await;
    let id = alice.create_group("Club", &["bob".into()]).await.unwrap();
    bob.sync().await.unwrap();
    alice.group_promote(&id, "bob").await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(bob.group(&id).unwrap().admins, ["alice", "bob"]);

    for round in 0..3 {
        let (a, b) = (format!("a{round}x"), format!("b{round}x"));
        let _ua = server.user(&a).await;
        let _ub = server.user(&b).await;
        // Both commits are in flight at once; one wins the epoch, the other catches up.
        let (ra, rb) = tokio::join!(
            alice.group_add(&id, std::slice::from_ref(&a)),
            bob.group_add(&id, std::slice::from_ref(&b))
        );
        ra.unwrap();
        rb.unwrap();
    }
    let (erin_name, frank_name) = (["erin".to_string()], ["frank".to_string()]);
    let (re, rf) = tokio::join!(alice.group_add(&id, &erin_name), bob.group_add(&id, &frank_name));
    re.unwrap();
    rf.unwrap();
    // The race was real: the server refused at least one commit as stale.
    let metrics = server.state.metrics.render();
    let stale = metrics
        .lines()
        .find(|l| l.starts_with("kith_http_responses_total{status=\"409\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(stale >= 1, "no commit was ever stale: {metrics}");
    sync_all(&mut [&mut alice, &mut bob, &mut erin, &mut frank]).await;
    let expected = alice.group(&id).unwrap().members;
    assert_eq!(expected.len(), 10, "{expected:?}");
    for u in [&bob, &erin, &frank] {
        assert_eq!(u.group(&id).unwrap().members, expected);
    }
    erin.send_group(&id, "hello from erin").await.unwrap();
    let r = frank.sync().await.unwrap();
    assert_eq!(texts(&r, ConversationKind::Group), ["hello from erin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_member_catches_up_after_many_epochs() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut carol = server.user("carol").await;
    let id = alice.create_group("Team", &["carol".into()]).await.unwrap();
    carol.sync().await.unwrap();
    // Carol is offline while the group goes through twelve epochs.
    for i in 0..6 {
        let name = format!("temp{i}");
        let _u = server.user(&name).await;
        alice.group_add(&id, std::slice::from_ref(&name)).await.unwrap();
        alice.group_remove(&id, &name).await.unwrap();
    }
    alice.send_group(&id, "still here?").await.unwrap();
    let r = carol.sync().await.unwrap();
    assert_eq!(texts(&r, ConversationKind::Group), ["still here?"]);
    assert_eq!(carol.group(&id).unwrap().members, ["alice", "carol"]);
    carol.send_group(&id, "caught up").await.unwrap();
    assert_eq!(texts(&alice.sync().await.unwrap(), ConversationKind::Group), ["caught up"]);
    // Carol rotates her keys (an update commit anyone may make); the group carries on.
    carol.update_keys(&id).await.unwrap();
    alice.send_group(&id, "after the update").await.unwrap();
    assert_eq!(texts(&carol.sync().await.unwrap(), ConversationKind::Group), ["after the update"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_limit_is_enforced_by_client_and_server() {
    let config = ServerConfig { max_group_size: 3, ..kith_testkit::test_config() };
    let server = TestServer::start_with(config, Arc::new(SystemClock)).await;
    let mut alice = server.user("alice").await;
    let _bob = server.user("bob").await;
    let _carol = server.user("carol").await;
    let _dave = server.user("dave").await;
    let id = alice.create_group("Three", &["bob".into(), "carol".into()]).await.unwrap();

    let err = alice.group_add(&id, &["dave".into()]).await.unwrap_err();
    assert!(matches!(err, ClientError::GroupFull { members: 4, max: 3 }), "{err}");
    // A client that does not check is refused by the server.
    alice.set_local_checks(false);
    let err = alice.group_add(&id, &["dave".into()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::GroupFull), "{err}");
    assert!(err.to_string().contains("at most 3"), "{err}");
    let err = alice
        .create_group("Four", &["bob".into(), "carol".into(), "dave".into()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::GroupFull), "{err}");
    // The refused commit left the group usable.
    alice.set_local_checks(true);
    assert_eq!(alice.group(&id).unwrap().members, ["alice", "bob", "carol"]);
    alice.send_group(&id, "still three").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_add_remove_and_rename() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let _dave = server.user("dave").await;
    let id = alice.create_group("Book club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;

    let err = bob.group_add(&id, &["dave".into()]).await.unwrap_err();
    assert!(matches!(err, ClientError::NotAdmin(_)), "{err}");
    let err = bob.group_remove(&id, "carol").await.unwrap_err();
    assert!(matches!(err, ClientError::NotAdmin(_)), "{err}");
    // The server refuses a non-admin's commit too.
    bob.set_local_checks(false);
    let err = bob.group_add(&id, &["dave".into()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAdmin), "{err}");
    let err = bob.group_remove(&id, "carol").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAdmin), "{err}");
    let err = bob.group_promote(&id, "bob").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAdmin), "{err}");
    // A rename is a commit: the server refuses a non-admin's, though it cannot read the name.
    let err = bob.group_rename(&id, "Bob's club").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAdmin), "{err}");
    let err = bob.set_disappearing(&id, Some(std::time::Duration::from_secs(60))).await;
    assert_eq!(err.unwrap_err().code(), Some(ErrorCode::NotAdmin));
    carol.sync().await.unwrap();
    let g = carol.group(&id).unwrap();
    assert_eq!((g.name.as_deref(), g.timer_seconds), (Some("Book club"), None));
    bob.set_local_checks(true);

    // Once promoted, bob can add.
    alice.group_promote(&id, "bob").await.unwrap();
    bob.sync().await.unwrap();
    bob.group_add(&id, &["dave".into()]).await.unwrap();
    alice.group_rename(&id, "Readers").await.unwrap();
    let r = carol.sync().await.unwrap();
    let system = texts(&r, ConversationKind::System);
    assert!(system.contains(&"alice made bob an admin".to_string()), "{system:?}");
    assert!(system.contains(&"bob added dave".to_string()), "{system:?}");
    assert!(system.contains(&"alice named the group \"Readers\"".to_string()), "{system:?}");
    assert_eq!(carol.group("Readers").unwrap().members, ["alice", "bob", "carol", "dave"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_gets_nothing_and_could_not_read_it() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let id = alice.create_group("Trio", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;

    alice.group_remove(&id, "bob").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert_eq!(texts(&r, ConversationKind::System), ["alice removed you"]);
    assert!(bob.group(&id).unwrap().left);
    carol.sync().await.unwrap();

    alice.send_group(&id, "bob cannot see this").await.unwrap();
    // The server queued nothing for bob...
    assert!(bob.raw_queue().await.is_empty());
    let err = bob.send_group(&id, "let me back").await.unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::NotInConversation), "{err}");
    // ...and had it, bob could not decrypt it: hand him carol's copy.
    let for_carol = carol.raw_queue().await;
    assert_eq!(for_carol.len(), 1);
    let r = bob.receive_entries(&for_carol).await.unwrap();
    assert!(r.messages.is_empty());
    assert_eq!(r.dropped, 1);
    assert_eq!(
        texts(&carol.sync().await.unwrap(), ConversationKind::Group),
        ["bob cannot see this"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaves_and_the_admin_commits_it() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let id = alice.create_group("Hikers", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;

    carol.group_leave(&id).await.unwrap();
    assert!(carol.group(&id).unwrap().left);
    // Carol gets nothing from the moment she leaves.
    bob.send_group(&id, "bye carol").await.unwrap();
    assert!(carol.raw_queue().await.is_empty());
    // Alice, the admin, sees the request and commits it on her next sync.
    // Each sees one line for it: the request, not the commit completing it too.
    let once = |r: &kith_client::SyncReport| {
        texts(r, ConversationKind::System).iter().filter(|t| *t == "carol left").count()
    };
    let r = alice.sync().await.unwrap();
    assert_eq!(once(&r), 1, "{:?}", texts(&r, ConversationKind::System));
    assert_eq!(alice.group(&id).unwrap().members, ["alice", "bob"]);
    let r = bob.sync().await.unwrap();
    assert_eq!(once(&r), 1, "{:?}", texts(&r, ConversationKind::System));
    assert_eq!(bob.group(&id).unwrap().members, ["alice", "bob"]);
    alice.send_group(&id, "just us").await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap(), ConversationKind::Group), ["just us"]);

    // The last admin leaving hands the role on.
    alice.group_leave(&id).await.unwrap();
    bob.sync().await.unwrap();
    let g = bob.group(&id).unwrap();
    assert_eq!(g.admins, ["bob"]);
    assert_eq!(g.members, ["bob"]);
}

/// Group names travel only inside encrypted payloads, so the server cannot check them: every
/// client does, when naming and when receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_names_are_limited_to_128_bytes() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let _bob = server.user("bob").await;
    let long = "n".repeat(kith_proto::payload::MAX_GROUP_NAME_BYTES + 1);
    let err = alice.create_group(&long, &["bob".into()]).await.unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::BadArgument), "{err}");
    let fits = "n".repeat(kith_proto::payload::MAX_GROUP_NAME_BYTES);
    let group = alice.create_group(&fits, &["bob".into()]).await.unwrap();
    let err = alice.group_rename(&group, &long).await.unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::BadArgument), "{err}");
    assert!(alice.group_rename(&group, "short").await.is_ok());
}

/// A send that meets `stale_epoch` catches up before it encrypts again; what that catch-up
/// took in is not lost: the next sync returns it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_taken_in_by_a_send_reach_the_next_sync() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let club = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut alice, &mut bob, &mut carol]).await;
    // The group moves on while bob is away, and carol writes twice.
    alice.update_keys(&club).await.unwrap();
    carol.sync().await.unwrap();
    carol.send_group(&club, "first while you were away").await.unwrap();
    carol.send_group(&club, "second while you were away").await.unwrap();
    // bob writes without syncing: stale, so his client catches up, then sends.
    bob.send_group(&club, "hello all").await.unwrap();
    let r = bob.sync().await.unwrap();
    let texts: Vec<&str> = r.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["first while you were away", "second while you were away"], "{texts:?}");
    // Handed over once: the next sync has nothing.
    assert!(bob.sync().await.unwrap().messages.is_empty());
}

/// Two admins rename the group, and set its timer, at the same moment, over and over: every
/// member ends with the same name and timer — the change the server accepted last — and a
/// member added afterwards gets both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_converge_in_the_servers_order() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let _dave = server.user("dave").await;
    let club = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut alice, &mut bob, &mut carol]).await;
    alice.group_promote(&club, "bob").await.unwrap();
    sync_all(&mut [&mut alice, &mut bob, &mut carol]).await;
    for i in 0..5 {
        // Neither has seen the other's change when making its own.
        alice.group_rename(&club, &format!("A{i}")).await.unwrap();
        bob.group_rename(&club, &format!("B{i}")).await.unwrap();
    }
    let minutes = |m: u64| Some(std::time::Duration::from_secs(m * 60));
    alice.set_disappearing(&club, minutes(5)).await.unwrap();
    bob.set_disappearing(&club, minutes(60)).await.unwrap();
    sync_all(&mut [&mut alice, &mut bob, &mut carol]).await;
    let seen: Vec<(Option<String>, Option<u64>)> = [&alice, &bob, &carol]
        .iter()
        .map(|u| {
            let g = u.group(&club).unwrap();
            (g.name, g.timer_seconds)
        })
        .collect();
    assert_eq!(seen[0], (Some("B4".to_string()), Some(3600)), "{seen:?}");
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    // dave, added now, learns both.
    alice.group_add(&club, &["dave".into()]).await.unwrap();
    let mut dave = _dave;
    dave.sync().await.unwrap();
    let g = dave.group(&club).unwrap();
    assert_eq!((g.name.as_deref(), g.timer_seconds), (Some("B4"), Some(3600)));
    // And an existing member's view did not move.
    carol.sync().await.unwrap();
    assert_eq!(carol.group(&club).unwrap().name.as_deref(), Some("B4"));
}

/// A member's leave is completed by whatever change the admin makes next, not lost: a promote
/// or a remove made before the admin saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_survives_a_racing_promote_or_remove() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let mut dave = server.user("dave").await;
    let club =
        alice.create_group("Club", &["bob".into(), "carol".into(), "dave".into()]).await.unwrap();
    sync_all(&mut [&mut alice, &mut bob, &mut carol, &mut dave]).await;
    bob.group_leave(&club).await.unwrap();
    alice.group_promote(&club, "carol").await.unwrap();
    let g = alice.group(&club).unwrap();
    assert!(!g.members.contains(&"bob".to_string()), "{g:?}");
    assert!(g.admins.contains(&"carol".to_string()));
    // And a remove racing a leave: carol (an admin now) removes erin before seeing dave go.
    let mut erin = server.user("erin").await;
    alice.group_add(&club, &["erin".into()]).await.unwrap();
    sync_all(&mut [&mut carol, &mut dave, &mut erin]).await;
    dave.group_leave(&club).await.unwrap();
    carol.group_remove(&club, "erin").await.unwrap();
    sync_all(&mut [&mut alice, &mut carol]).await;
    for u in [&alice, &carol] {
        let g = u.group(&club).unwrap();
        assert_eq!(g.members, ["alice", "carol"], "{g:?}");
    }
}

/// Names resolve one way everywhere, and ambiguity is an error, never a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_could_mean_two_things_is_refused() {
    use kith_client::Target;
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let _bob = server.user("bob").await;
    let _carol = server.user("carol").await;
    alice.send_text("bob", "hi bob").await.unwrap();
    // A group named like the person alice writes to.
    let g = alice.create_group("bob", &["carol".into()]).await.unwrap();
    let err = alice.resolve_target("bob").unwrap_err();
    assert!(err.to_string().contains("@bob"), "{err}");
    assert!(alice.set_disappearing("bob", None).await.is_err());
    assert_eq!(alice.resolve_target("@bob").unwrap(), Target::Person("bob".into()));
    assert_eq!(alice.resolve_target(&g).unwrap(), Target::Group(g.clone()));
    // Two groups of one name.
    alice.create_group("Club", &["carol".into()]).await.unwrap();
    alice.create_group("Club", &["carol".into()]).await.unwrap();
    let err = alice.resolve_target("Club").unwrap_err();
    assert!(err.to_string().contains("several"), "{err}");
    // Otherwise a person.
    assert_eq!(alice.resolve_target("carol").unwrap(), Target::Person("carol".into()));
}

// Found by the model-based test (`model.rs`); each stays as a named regression test.

/// Seed 1: a member who left still reads what was sent to it before its leave took effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_before_a_leave_still_arrive() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let club = alice.create_group("Club", &["bob".into()]).await.unwrap();
    bob.sync().await.unwrap();
    alice.send_group(&club, "before you go").await.unwrap();
    bob.group_leave(&club).await.unwrap();
    let r = bob.sync().await.unwrap();
    assert!(r.messages.iter().any(|m| m.text == "before you go"), "{:?}", r.messages);
}

/// Seed 1: the admin adds back someone who left, before having synced the leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_back_someone_who_left() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let _carol = server.user("carol").await;
    let club = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    bob.sync().await.unwrap();
    bob.group_leave(&club).await.unwrap();
    alice.group_add(&club, &["bob".into()]).await.unwrap();
    alice.send_group(&club, "welcome back").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert!(r.messages.iter().any(|m| m.text == "welcome back"), "{:?}", r.messages);
}

/// Seed 4: a message from a member removed after sending it (its epoch is past) is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_member_removed_since_is_shown() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let club = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    bob.send_group(&club, "my last words").await.unwrap();
    alice.group_remove(&club, "bob").await.unwrap();
    for u in [&mut alice, &mut carol] {
        let r = u.sync().await.unwrap();
        assert!(r.messages.iter().any(|m| m.text == "my last words"), "{:?}", r.messages);
    }
}

/// Seed 5 (of 30): a member's message is not held up by another member's request to leave
/// that no admin has committed yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_leave_does_not_block_a_members_message() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let club = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    bob.group_leave(&club).await.unwrap();
    carol.sync().await.unwrap();
    carol.send_group(&club, "still here").await.unwrap();
    let r = alice.sync().await.unwrap();
    assert!(r.messages.iter().any(|m| m.text == "still here"), "{:?}", r.messages);
    assert!(!alice.group(&club).unwrap().members.contains(&"bob".to_string()));
}

/// Found by the model-based test: the last admin leaving without having synced another
/// member's leave handed the role to that member, and the group was left with no admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_hands_over_to_a_member_who_stays() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let club = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    bob.group_leave(&club).await.unwrap();
    alice.group_leave(&club).await.unwrap();
    carol.sync().await.unwrap();
    carol.sync().await.unwrap();
    let seen = carol.group(&club).unwrap();
    assert_eq!(seen.members, ["carol"]);
    assert_eq!(seen.admins, ["carol"]);
}

/// Found by the model-based test: an heir who never joined (it dropped the invitation of an
/// account it blocks) cannot complete the last admin's leave; another member does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_completes_though_the_heir_never_joined() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let club = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    bob.block("alice").await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    alice.group_leave(&club).await.unwrap();
    carol.sync().await.unwrap();
    assert_eq!(carol.group(&club).unwrap().members, ["bob", "carol"]);
}

/// Found by the model-based test: an admin change built on a copy of the admin list that
/// another admin changed meanwhile undid that change (a promotion was lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_made_meanwhile_is_kept() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let mut dave = server.user("dave").await;
    let club =
        alice.create_group("Club", &["bob".into(), "carol".into(), "dave".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol, &mut dave]).await;
    alice.group_promote(&club, "bob").await.unwrap();
    bob.sync().await.unwrap();
    alice.group_promote(&club, "carol").await.unwrap();
    bob.group_promote(&club, "dave").await.unwrap();
    sync_all(&mut [&mut alice, &mut carol, &mut dave]).await;
    for u in [&alice, &bob, &carol, &dave] {
        let mut admins = u.group(&club).unwrap().admins;
        admins.sort();
        assert_eq!(admins, ["alice", "bob", "carol", "dave"]);
    }
}

/// Found by the model-based test: the last member could not leave (the admin role had
/// nobody to go to, and the server keeps at least one admin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_leaves() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let club = alice.create_group("Club", &["bob".into()]).await.unwrap();
    bob.sync().await.unwrap();
    alice.group_remove(&club, "bob").await.unwrap();
    alice.group_leave(&club).await.unwrap();
    assert!(alice.group(&club).unwrap().left);
}

/// Found by the user-flow review: an admin who had not synced "promoted" a member who had
/// just left, and every member then listed a non-member as admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_left_is_not_made_an_admin() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let club = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    bob.group_leave(&club).await.unwrap();
    let err = alice.group_promote(&club, "bob").await.unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::NotMember), "{err}");
    carol.sync().await.unwrap();
    for u in [&alice, &carol] {
        let seen = u.group(&club).unwrap();
        assert_eq!(
            (seen.members, seen.admins),
            (vec!["alice".into(), "carol".into()], vec!["alice".to_string()])
        );
    }
}

/// Found by the user-flow review: a second admin removing someone another admin had removed
/// was told "Removed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_someone_already_removed_says_so() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let club = alice.create_group("Club", &["bob".into(), "carol".into()]).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    alice.group_promote(&club, "bob").await.unwrap();
    bob.sync().await.unwrap();
    bob.group_remove(&club, "carol").await.unwrap();
    let err = alice.group_remove(&club, "carol").await.unwrap_err();
    assert!(err.to_string().contains("not in the group"), "{err}");
    let err = alice.group_add(&club, &["bob".into()]).await.unwrap_err();
    assert!(err.to_string().contains("already in the group"), "{err}");
}

/// The admin's own history tells what the admin did, once each: creating the group, adding,
/// renaming. A member learns the name from the Welcome (no rename line), the rest once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_each_of_its_own_changes_once() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    let _dave = server.user("dave").await;
    let id = alice.create_group("Trio", &["bob".into(), "carol".into()]).await.unwrap();
    alice.set_disappearing(&id, Some(std::time::Duration::from_secs(3600))).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    alice.group_add(&id, &["dave".into()]).await.unwrap();
    alice.group_rename(&id, "Quartet").await.unwrap();
    let system = |u: &TestUser| -> Vec<String> {
        u.chat_history(&id)
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == ConversationKind::System)
            .map(|m| m.text)
            .collect()
    };
    let mine = system(&alice);
    assert_eq!(mine[0], "alice created the group with bob, carol", "{mine:?}");
    assert_eq!(
        mine.iter().filter(|l| l.contains("named the group \"Trio\"")).count(),
        0,
        "{mine:?}"
    );
    assert_eq!(mine.iter().filter(|l| l.contains("disappearing")).count(), 1, "{mine:?}");
    assert_eq!(mine.iter().filter(|l| l.as_str() == "alice added dave").count(), 1, "{mine:?}");
    assert_eq!(mine.iter().filter(|l| l.contains("\"Quartet\"")).count(), 1, "{mine:?}");
    bob.sync().await.unwrap();
    let his = system(&bob);
    assert_eq!(his[0], "alice added you", "{his:?}");
    assert_eq!(his.iter().filter(|l| l.contains("\"Trio\"")).count(), 0, "{his:?}");
    assert_eq!(his.iter().filter(|l| l.contains("\"Quartet\"")).count(), 1, "{his:?}");
    assert_eq!(his.iter().filter(|l| l.contains("disappearing")).count(), 1, "{his:?}");
    assert_eq!(his.iter().filter(|l| l.as_str() == "alice added dave").count(), 1, "{his:?}");
    // Each line carries what happened as data, the same on both sides: a reader words it
    // without taking the sentence apart.
    let events = |u: &TestUser| -> Vec<SystemEvent> {
        u.chat_history(&id).unwrap().into_iter().filter_map(|m| m.event).collect()
    };
    let (mine, his) = (events(&alice), events(&bob));
    assert_eq!(
        mine[0],
        SystemEvent::Created { by: "alice".into(), with: vec!["bob".into(), "carol".into()] }
    );
    assert_eq!(his[0], SystemEvent::Added { by: "alice".into(), who: vec!["bob".into()] });
    for shared in [
        SystemEvent::Timer { by: "alice".into(), seconds: Some(3600) },
        SystemEvent::Added { by: "alice".into(), who: vec!["dave".into()] },
        SystemEvent::Named { by: "alice".into(), name: "Quartet".into() },
    ] {
        assert!(mine.contains(&shared) && his.contains(&shared), "{shared:?}: {mine:?} / {his:?}");
    }
}

/// A commit whose answer was lost (the server applied it; the network failed before the
/// answer came back) is posted again, and the server says it was applied instead of "stale":
/// before, the committer took it for refused, dropped it, and stayed an epoch behind its group
/// for good — every later message and change of its refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_not_left_behind() {
    let server = TestServer::start().await;
    let (proxy, mut ann) = server.user_losing_answers("ann").await;
    let mut bob = server.user("bob").await;
    let mut cat = server.user("cat").await;
    let mut dan = server.user("dan").await;
    let group = ann.create_group("walks", &["bob".to_string()]).await.unwrap();
    bob.sync().await.unwrap();

    // An add, then a promotion, each commit's answer lost on the way back.
    proxy.lose_next("/handshake");
    ann.group_add(&group, &["cat".to_string()]).await.unwrap();
    proxy.lose_next("/handshake");
    ann.group_promote(&group, "bob").await.unwrap();
    assert_eq!(proxy.lost(), 2, "the answers were not lost: the test tests nothing");
    sync_all(&mut [&mut bob, &mut cat]).await;
    for u in [&ann, &bob, &cat] {
        let g = u.group(&group).unwrap();
        assert_eq!(g.members, ["ann", "bob", "cat"], "{}", u.profile().unwrap().username);
        assert_eq!(g.admins, ["ann", "bob"], "{}", u.profile().unwrap().username);
    }

    // ann is where her group is: she writes and changes it as before, everyone reads her.
    ann.send_group(&group, "still here").await.unwrap();
    ann.group_add(&group, &["dan".to_string()]).await.unwrap();
    bob.send_group(&group, "hi ann").await.unwrap();
    for u in [&mut bob, &mut cat, &mut dan] {
        let report = u.sync().await.unwrap();
        let got = texts(&report, ConversationKind::Group);
        let name = u.profile().unwrap().username.clone();
        if name == "dan" {
            assert!(got.is_empty() || got == ["hi ann"], "{got:?}");
        } else if name == "bob" {
            assert_eq!(got, ["still here"]);
        } else {
            assert_eq!(got, ["still here", "hi ann"]);
        }
    }
    assert_eq!(texts(&ann.sync().await.unwrap(), ConversationKind::Group), ["hi ann"]);

    // ann leaves: as an admin she first gives up the role (a commit), then asks to leave (a
    // proposal, after which the server no longer counts her in delivery). Both answers are
    // lost; each is posted again and answered as applied.
    proxy.lose_next("/handshake");
    proxy.lose_next("/handshake");
    ann.group_leave(&group).await.unwrap();
    assert_eq!(proxy.lost(), 4);
    sync_all(&mut [&mut bob, &mut cat, &mut dan]).await;
    bob.send_group(&group, "bye ann").await.unwrap();
    let g = bob.group(&group).unwrap();
    assert_eq!(g.members, ["bob", "cat", "dan"]);
    assert_eq!(g.admins, ["bob"]);
}

/// A new conversation whose answer was lost (the server created it and delivered the
/// Welcome) is posted again and answered as created. Before, the creator took it for refused
/// and dropped the group while the others joined it: their messages went to someone who could
/// not read them, and a first message to a person failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_whose_answer_was_lost_is_not_dropped() {
    let server = TestServer::start().await;
    let (proxy, mut ann) = server.user_losing_answers("ann").await;
    let mut bob = server.user("bob").await;

    // A first message to a person: the 1:1 conversation's creation loses its answer.
    proxy.lose_next("/v1/conversations");
    ann.send_text("bob", "first").await.unwrap();
    // A group, the same.
    proxy.lose_next("/v1/conversations");
    let group = ann.create_group("walks", &["bob".to_string()]).await.unwrap();
    assert_eq!(proxy.lost(), 2, "the answers were not lost: the test tests nothing");

    let report = bob.sync().await.unwrap();
    assert_eq!(report.joined.len(), 2, "one 1:1 and one group, each once: {:?}", report.joined);
    assert_eq!(texts(&report, ConversationKind::Direct), ["first"]);
    bob.send_text("ann", "reply").await.unwrap();
    bob.send_group(&group, "in the group").await.unwrap();
    let report = ann.sync().await.unwrap();
    assert_eq!(texts(&report, ConversationKind::Direct), ["reply"]);
    assert_eq!(texts(&report, ConversationKind::Group), ["in the group"]);
    assert_eq!(ann.group(&group).unwrap().members, ["ann", "bob"]);
}

/// A creation whose answer stays lost through every attempt is kept, not dropped: the others
/// are never left in a group its creator forgot (an "(unnamed)" copy before), asking again
/// gives the same group, and a 1:1's next message goes into the one made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_unanswered_through_every_attempt_is_settled_not_repeated() {
    let server = TestServer::start().await;
    let (proxy, mut ann) = server.user_losing_answers("ann").await;
    let mut bob = server.user("bob").await;
    for _ in 0..4 {
        proxy.lose_next("/v1/conversations");
    }
    let failed = ann.create_group("walks", &["bob".to_string()]).await.unwrap_err();
    assert!(matches!(failed, ClientError::NoAnswer { timed_out: false }), "{failed:?}");
    let group = ann.create_group("walks", &["bob".to_string()]).await.unwrap();
    for _ in 0..4 {
        proxy.lose_next("/v1/conversations");
    }
    assert!(ann.send_text("bob", "first").await.is_err());
    assert_eq!(proxy.lost(), 8, "the answers were not lost: the test tests nothing");
    ann.send_text("bob", "second").await.unwrap();
    let report = bob.sync().await.unwrap();
    assert_eq!(report.joined.len(), 2, "one group and one 1:1, each once: {:?}", report.joined);
    assert!(report.joined.contains(&group));
    assert_eq!(texts(&report, ConversationKind::Direct), ["second"]);
    let g = bob.group(&group).unwrap();
    assert_eq!((g.name.as_deref(), g.members.len()), (Some("walks"), 2));
    bob.send_group(&group, "here").await.unwrap();
    assert_eq!(texts(&ann.sync().await.unwrap(), ConversationKind::Group), ["here"]);
    assert_eq!(ann.groups().unwrap().len(), 1);
}

/// A commit whose answer stays lost through every attempt (the network is down for a while
/// right after the server applied it) is kept, staged, and posted again at the next sync,
/// which the server answers as applied: the committer is where its group is. Before, it was
/// dropped and the committer stayed an epoch behind for good. A request to leave, the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_unanswered_through_every_attempt_is_settled_at_the_next_sync() {
    let server = TestServer::start().await;
    let (proxy, mut ann) = server.user_losing_answers("ann").await;
    let (quiet, mut eve) = server.user_losing_answers("eve").await;
    let mut bob = server.user("bob").await;
    let mut cat = server.user("cat").await;
    let group = ann.create_group("walks", &["bob".to_string(), "eve".to_string()]).await.unwrap();
    ann.set_disappearing(&group, Some(std::time::Duration::from_secs(3600))).await.unwrap();
    sync_all(&mut [&mut bob, &mut eve]).await;

    for _ in 0..4 {
        proxy.lose_next("/handshake");
    }
    let failed = ann.group_add(&group, &["cat".to_string()]).await.unwrap_err();
    assert!(matches!(failed, ClientError::NoAnswer { timed_out: false }), "{failed:?}");
    assert_eq!(proxy.lost(), 4, "the answers were not lost: the test tests nothing");
    // The server applied the first: cat is in. Much happens before ann is back (ten key
    // updates by bob); her next sync settles it all the same.
    bob.sync().await.unwrap();
    for _ in 0..10 {
        bob.update_keys(&group).await.unwrap();
    }
    ann.sync().await.unwrap();
    sync_all(&mut [&mut bob, &mut cat]).await;
    for u in [&ann, &bob, &cat] {
        assert_eq!(u.group(&group).unwrap().members, ["ann", "bob", "cat", "eve"]);
    }
    // cat has the group's name and timer, from the Welcome, as after any add.
    let seen = cat.group(&group).unwrap();
    assert_eq!((seen.name.as_deref(), seen.timer_seconds), (Some("walks"), Some(3600)));
    ann.send_group(&group, "welcome cat").await.unwrap();
    assert_eq!(texts(&cat.sync().await.unwrap(), ConversationKind::Group), ["welcome cat"]);

    // eve's request to leave, unanswered four times: settled by her next sync.
    eve.sync().await.unwrap();
    for _ in 0..4 {
        quiet.lose_next("/handshake");
    }
    let failed = eve.group_leave(&group).await.unwrap_err();
    assert!(matches!(failed, ClientError::NoAnswer { timed_out: false }), "{failed:?}");
    eve.sync().await.unwrap();
    assert!(eve.group(&group).unwrap().left, "the applied leave was not settled");
    ann.sync().await.unwrap();
    assert_eq!(ann.group(&group).unwrap().members, ["ann", "bob", "cat"]);
}

/// Mistakes a person makes with names get words that name the mistake: which member does not
/// exist, and that a group one was removed from is one they are no longer in (not "no such
/// group", while `group list` shows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_with_names_say_which_name_and_why() {
    let server = TestServer::start().await;
    let mut ann = server.user("ann").await;
    let mut bob = server.user("bob").await;
    let e = ann.create_group("walks", &["bob".into(), "bbo".into()]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownUser));
    assert!(e.to_string().contains("bbo"), "{e}");
    let group = ann.create_group("walks", &["bob".into()]).await.unwrap();
    bob.sync().await.unwrap();
    ann.group_remove(&group, "bob").await.unwrap();
    bob.sync().await.unwrap();
    let e = bob.send_group("walks", "hello?").await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::NotInConversation), "{e}");
    assert!(e.to_string().contains("ann removed you from the group \"walks\""), "{e}");
}
