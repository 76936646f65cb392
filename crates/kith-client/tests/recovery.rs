//! Taking an account back with its recovery code, end to end against a real kithd on both
//! stores: a thief copies ana's profile folder and rotates its token first (the owner is locked
//! out, and no device of hers is left); ana recovers on a new device with the code she wrote
//! down. Every old device is refused at once, her contacts' clients follow the key change her
//! recovery key signed and put the new device in place of the old leaves, in 1:1s and in
//! groups where she is an admin or not; the code works once, and only the current code
//! replaces it.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use kith_client::{Client, ErrorCode, RecoveryCode, SyncReport, SystemEvent};
use kith_testkit::{TestServer, TestUser};

fn texts(r: &SyncReport) -> Vec<String> {
    r.messages.iter().map(|m| m.text.clone()).collect()
}

fn empty_profile() -> TestUser {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path()).unwrap();
    TestUser { client, dir }
}

/// A copy of `user`'s profile folder, opened as a second client: what a thief with a backup
/// or a few minutes at the laptop holds.
fn copy_of(user: &TestUser) -> TestUser {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(user.dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    // The copy's lock file is the original's; a copy opens as its own profile.
    let client = Client::open(dir.path()).unwrap();
    TestUser { client, dir }
}

/// The credential keys of the member devices the server routes `conversation` to.
async fn routed(server: &TestServer, conversation: &str) -> Vec<u64> {
    let id: Vec<u8> = (0..conversation.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&conversation[i..i + 2], 16).unwrap())
        .collect();
    server.store().conversation_route(&id).await.unwrap().unwrap().members
}

async fn a_thief_with_a_copy_is_locked_out_and_the_owner_takes_the_account_back(
    server: TestServer,
) {
    let mut ana = server.user("ana").await;
    let code = ana.take_recovery_code().expect("a code shown at registration");
    assert!(ana.take_recovery_code().is_none(), "shown once");
    let mut bob = server.user("bob").await;
    let mut cyd = server.user("cyd").await;
    bob.send_text("ana", "hi ana").await.unwrap();
    ana.sync().await.unwrap();
    ana.send_text("bob", "hi bob").await.unwrap();
    bob.sync().await.unwrap();
    // bob's group (ana is no admin there) and ana's own (she is its only admin).
    let club = bob.create_group("Club", &["ana".into(), "cyd".into()]).await.unwrap();
    let anas = ana.create_group("Ana's", &["bob".into(), "cyd".into()]).await.unwrap();
    // ana's story channel, which bob (a contact) is in.
    ana.story_post("before").await.unwrap();
    for u in [&mut ana, &mut bob, &mut cyd] {
        u.sync().await.unwrap();
    }
    let old_device = ana.profile().unwrap().device_id;

    // The thief copies the folder and rotates the copy's token first: ana's own device is
    // locked out.
    let mut thief = copy_of(&ana);
    thief.rotate_token().await.unwrap();
    let e = ana.sync().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");

    // A wrong code changes nothing.
    let mut fresh = empty_profile();
    let wrong = RecoveryCode::generate().unwrap();
    let e = fresh.recover(&server.url, "ana", &wrong).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::WrongRecoveryCode), "{e}");
    thief.sync().await.unwrap();

    // The right one takes the account back: the thief's copy is refused at once.
    let mut fresh = empty_profile();
    let (me, new_code) = fresh.recover(&server.url, "ana", &code).await.unwrap();
    assert_eq!(me.username, "ana");
    assert_ne!(me.device_id, old_device);
    let e = thief.sync().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
    let devices = fresh.my_devices().await.unwrap();
    assert_eq!(devices.iter().map(|d| d.device_id).collect::<Vec<_>>(), [me.device_id]);
    assert_ne!(fresh.account_key().unwrap(), ana.account_key().unwrap());
    // The code worked once.
    let e = empty_profile().recover(&server.url, "ana", &code).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::WrongRecoveryCode), "{e}");

    // bob and cyd hear of it at their next sync; whichever gets there first puts the new
    // device in.
    for u in [&mut bob, &mut cyd] {
        let r = u.sync().await.unwrap();
        assert_eq!((r.dropped, r.problems.len()), (0, 0), "{r:?}");
    }
    let said: Vec<SystemEvent> = [&bob, &cyd]
        .iter()
        .flat_map(|u| u.conversation_history(&club).unwrap())
        .filter_map(|m| m.event)
        .collect();
    assert!(
        said.iter().any(|e| matches!(e, SystemEvent::Recovered { who, .. } if who == "ana")),
        "{said:?}"
    );
    let r = fresh.sync().await.unwrap();
    // Nothing it could not take: her old story channel is not offered to it.
    assert_eq!((r.dropped, r.problems.len()), (0, 0), "{r:?}");
    for id in [&club, &anas] {
        assert!(r.joined.contains(id), "{id}: {r:?}");
        let members = routed(&server, id).await;
        assert!(members.contains(&me.device_id), "{members:?}");
        assert!(!members.contains(&old_device), "{members:?}");
    }
    // Talk goes on, both ways, in the 1:1 and in both groups.
    bob.send_text("ana", "welcome back").await.unwrap();
    bob.send_group(&club, "club, after").await.unwrap();
    let r = fresh.sync().await.unwrap();
    assert!(texts(&r).contains(&"welcome back".to_string()), "{r:?}");
    assert!(texts(&r).contains(&"club, after".to_string()), "{r:?}");
    fresh.send_group(&anas, "it is me again").await.unwrap();
    fresh.send_text("bob", "thanks").await.unwrap();
    let r = bob.sync().await.unwrap();
    let from_ana: Vec<_> = r.messages.iter().filter(|m| m.from == "ana").map(|m| &m.text).collect();
    assert!(from_ana.contains(&&"it is me again".to_string()), "{r:?}");
    assert!(from_ana.contains(&&"thanks".to_string()), "{r:?}");
    assert!(texts(&cyd.sync().await.unwrap()).contains(&"it is me again".to_string()));
    // Her stories start again on the new device, for bob.
    fresh.story_post("after").await.unwrap();
    bob.sync().await.unwrap();
    let stories: Vec<String> = bob.stories().unwrap().into_iter().map(|s| s.text).collect();
    assert!(stories.contains(&"after".to_string()), "{stories:?}");
    // The copy gets nothing more: its token is dead and its leaves are out of every group.
    let e = thief.sync().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");

    // Only the current code replaces the code; the replaced one no longer recovers.
    let e = fresh.replace_recovery_code(&code).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::WrongRecoveryCode), "{e}");
    let newer = fresh.replace_recovery_code(&new_code).await.unwrap();
    let e = empty_profile().recover(&server.url, "ana", &new_code).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::WrongRecoveryCode), "{e}");
    // bob still follows ana's key through the replacement, and a second recovery.
    let mut again = empty_profile();
    again.recover(&server.url, "ana", &newer).await.unwrap();
    bob.sync().await.unwrap();
    again.sync().await.unwrap();
    bob.send_text("ana", "third device").await.unwrap();
    assert!(texts(&again.sync().await.unwrap()).contains(&"third device".to_string()));
}

#[test]
fn a_code_reads_back_as_shown_whatever_the_case_and_lookalikes() {
    let code = RecoveryCode::generate().unwrap();
    let shown = code.show().expose().to_string();
    assert_eq!(shown.len(), 29);
    assert_eq!(shown.matches('-').count(), 5);
    let typed = shown.to_lowercase().replace('-', " ").replace('0', "o").replace('1', "l");
    assert_eq!(RecoveryCode::parse(&typed).unwrap().show().expose(), shown);
    assert!(RecoveryCode::parse(&shown[..20]).is_err());
    assert!(RecoveryCode::parse(&format!("{shown}U")).is_err());
    assert!(!format!("{code:?}").contains(&shown[..4]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_sqlite() {
    a_thief_with_a_copy_is_locked_out_and_the_owner_takes_the_account_back(
        TestServer::start().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_postgres() {
    let Some(server) = TestServer::start_postgres().await else {
        eprintln!("skipped: KITH_TEST_DATABASE_URL is not set");
        return;
    };
    a_thief_with_a_copy_is_locked_out_and_the_owner_takes_the_account_back(server).await;
}

/// For a person who lost every device and the code: the operator's `kithd admin recover`
/// suspends the account at once and prints a new code; nothing changes hands until the person
/// uses it, which lifts the suspension. The new key is not signed by the old code, so bob's
/// client does not follow it on its own: it says so, and puts ana's new device in only once bob
/// trusts the key (after checking with her).
async fn an_operator_reset_waits_for_the_person_and_for_each_contact(server: TestServer) {
    let mut ana = server.user("ana").await;
    let mut bob = server.user("bob").await;
    let mut cyd = server.user("cyd").await;
    bob.send_text("ana", "hi ana").await.unwrap();
    ana.sync().await.unwrap();
    ana.send_text("bob", "hi bob").await.unwrap();
    bob.sync().await.unwrap();
    // bob's group, where ana and cyd are not admins.
    let club = bob.create_group("Club", &["ana".into(), "cyd".into()]).await.unwrap();
    ana.sync().await.unwrap();
    cyd.sync().await.unwrap();

    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64;
    let code =
        kith_server::recovery::operator_reset(&*server.state.store, "ana", now).await.unwrap();
    // Suspended: the old device is refused (a running server notices the admin command's
    // suspension within its auth cache's ten seconds; here, at once).
    server.state.auth_cache.forget_account("ana");
    let e = ana.sync().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Suspended), "{e}");
    let code = RecoveryCode::parse(code.expose()).unwrap();
    let mut fresh = empty_profile();
    fresh.recover(&server.url, "ana", &code).await.unwrap();
    // Lifted by the recovery: the new device works.
    fresh.sync().await.unwrap();

    // bob's client does not take the new key on the server's word.
    let r = bob.sync().await.unwrap();
    assert_eq!((r.dropped, r.problems.len()), (0, 0), "{r:?}");
    let events: Vec<SystemEvent> = r.messages.iter().filter_map(|m| m.event.clone()).collect();
    assert!(events.contains(&SystemEvent::KeyUnconfirmed { who: "ana".into() }), "{events:?}");
    assert!(fresh.sync().await.unwrap().joined.is_empty());
    // cyd checks first and trusts: her client puts ana's new device in the club. bob has not
    // trusted yet: that commit waits on his device (it is not dropped).
    cyd.sync().await.unwrap();
    assert_eq!(cyd.trust_account_key("ana").await.unwrap(), 1);
    let r = bob.sync().await.unwrap();
    assert_eq!((r.dropped, r.problems.len()), (0, 0), "{r:?}");
    assert!(fresh.sync().await.unwrap().joined.contains(&club));
    // bob checked with ana: he trusts it; the waiting commit goes through, and the 1:1 and
    // the group go on.
    assert_eq!(bob.trust_account_key("ana").await.unwrap(), 2);
    let r = bob.sync().await.unwrap();
    assert_eq!((r.dropped, r.problems.len()), (0, 0), "{r:?}");
    bob.send_text("ana", "checked with you").await.unwrap();
    bob.send_group(&club, "club goes on").await.unwrap();
    let r = fresh.sync().await.unwrap();
    assert!(texts(&r).contains(&"checked with you".to_string()), "{r:?}");
    assert!(texts(&r).contains(&"club goes on".to_string()), "{r:?}");
    fresh.send_group(&club, "back in the club").await.unwrap();
    assert!(texts(&bob.sync().await.unwrap()).contains(&"back in the club".to_string()));
    assert!(texts(&cyd.sync().await.unwrap()).contains(&"back in the club".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reset_on_sqlite() {
    an_operator_reset_waits_for_the_person_and_for_each_contact(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reset_on_postgres() {
    let Some(server) = TestServer::start_postgres().await else {
        eprintln!("skipped: KITH_TEST_DATABASE_URL is not set");
        return;
    };
    an_operator_reset_waits_for_the_person_and_for_each_contact(server).await;
}

/// An account from before recovery codes gets one at its first sync, from whichever device
/// gets there first — perhaps a thief's copy. Such a code takes nothing back for a week, and
/// goes with the device that set it when the account removes it; then the owner's device sets
/// its own at its next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_set_at_migration_waits_and_goes_with_its_device() {
    let server = TestServer::start().await;
    let mut ana = empty_profile();
    ana.raw_register_before_account_keys(&server.url, "ana").await.unwrap();
    ana.sync().await.unwrap();
    let code = ana.take_recovery_code().expect("a code made at the migration");
    // Not for a week: a copy that got there first cannot use it to take the account.
    let e = empty_profile().recover(&server.url, "ana", &code).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::WrongRecoveryCode), "{e}");
    assert!(e.to_string().contains("days"), "{e}");
    // The owner links a second device and removes the one that set the code: it goes with it.
    let mut laptop = empty_profile();
    let offer = ana.offer_link().await.unwrap();
    let link = offer.code();
    let (approved, joined) = tokio::join!(
        ana.approve_link(offer, std::time::Duration::from_millis(20)),
        laptop.register_by_link(link.expose(), std::time::Duration::from_millis(20), false)
    );
    joined.unwrap();
    approved.unwrap();
    let first = ana.profile().unwrap().device_id;
    laptop.remove_device(first, |_, _| {}).await.unwrap();
    let keys = laptop.devices("ana").await.unwrap().keys;
    assert_eq!(keys.recovery_key, None);
    // The laptop gives the account a code of its own at its next sync... which waits its week
    // too (it was set without an earlier code's word).
    laptop.sync().await.unwrap();
    assert!(laptop.take_recovery_code().is_some());
    assert!(laptop.devices("ana").await.unwrap().keys.recovery_key.is_some());
}
