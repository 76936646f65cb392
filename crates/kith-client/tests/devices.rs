//! Several devices per account, end to end against a real kithd: linking by code (once, for
//! ten minutes, refused when mistyped), the new device in every conversation, a message to ana
//! reaching both her devices, and what one of them sends shown on the other as hers.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::Arc;
use std::time::Duration;

use kith_client::{Client, ClientError, ErrorCode, Refusal, SyncReport, SystemEvent};
use kith_server::state::{Clock, ManualClock, SystemClock};
use kith_testkit::{TestServer, TestUser, test_config};

const POLL: Duration = Duration::from_millis(20);

fn texts(r: &SyncReport) -> Vec<String> {
    r.messages.iter().map(|m| m.text.clone()).collect()
}

fn empty_profile() -> TestUser {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path()).unwrap();
    TestUser { client, dir }
}

/// `user`'s new device, linked with the code `user` offers; `user` adds it everywhere.
async fn link(user: &mut TestUser) -> (TestUser, kith_client::Linked) {
    let mut new = empty_profile();
    let offer = user.offer_link().await.unwrap();
    let code = offer.code();
    let (approved, joined) = tokio::join!(
        user.approve_link(offer, POLL),
        new.register_by_link(code.expose(), POLL, true)
    );
    joined.unwrap();
    let approved = approved.unwrap();
    let linked = user.add_linked_device(&approved, POLL, Duration::from_secs(10), |_, _| {}).await;
    assert!(approved.history);
    user.send_history(&approved, |_, _| {}).await.unwrap();
    (new, linked.unwrap())
}

/// What `history` shows of a conversation, as every device of the account must agree on it.
fn seen(user: &TestUser, peer: &str) -> Vec<(String, String, String, u64)> {
    user.history(peer).unwrap().into_iter().map(|m| (m.id, m.from, m.text, m.sent_at)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_is_ana_in_every_conversation() {
    let server = TestServer::start().await;
    let mut ana = server.user("ana").await;
    let mut bob = server.user("bob").await;
    let mut cyd = server.user("cyd").await;
    bob.send_text("ana", "hi ana").await.unwrap();
    ana.sync().await.unwrap();
    // ana is a member of bob's group, not an admin: she adds her own device all the same.
    let club = bob.create_group("Club", &["ana".into(), "cyd".into()]).await.unwrap();
    ana.sync().await.unwrap();
    cyd.sync().await.unwrap();
    // Story channels: ana's own (bob is a contact of hers) and bob's, which ana is in.
    ana.send_text("bob", "hi bob").await.unwrap();
    ana.story_post("from the phone").await.unwrap();
    bob.story_post("bob's day").await.unwrap();
    ana.sync().await.unwrap();
    bob.sync().await.unwrap();

    let (mut laptop, linked) = link(&mut ana).await;
    assert!(linked.not_added.is_empty(), "{linked:?}");
    // The 1:1, the group, ana's story channel and bob's.
    assert_eq!(linked.added_to, 4, "{linked:?}");
    let me = laptop.profile().unwrap().clone();
    assert_eq!((me.username.as_str(), me.device_id), ("ana", linked.device_id));
    assert_eq!(laptop.account_key().unwrap(), ana.account_key().unwrap());
    let devices = ana.my_devices().await.unwrap();
    assert_eq!(devices.len(), 2);
    let r = laptop.sync().await.unwrap();
    assert!(r.joined.contains(&club), "{r:?}");
    // The history came along: the same on both.
    assert_eq!(seen(&laptop, "bob"), seen(&ana, "bob"));
    assert!(seen(&laptop, "bob").len() >= 2);

    // The others see that ana added a device, once, and nothing else changed for them.
    for u in [&mut bob, &mut cyd] {
        let r = u.sync().await.unwrap();
        let events: Vec<_> = r.messages.iter().filter_map(|m| m.event.clone()).collect();
        assert!(events.contains(&SystemEvent::DeviceAdded { who: "ana".into() }), "{events:?}");
        assert_eq!((r.dropped, r.problems.len()), (0, 0), "{r:?}");
    }

    // A message to ana reaches both her devices.
    bob.send_text("ana", "to both of you").await.unwrap();
    bob.send_group(&club, "club news").await.unwrap();
    for device in [&mut ana, &mut laptop] {
        let seen = texts(&device.sync().await.unwrap());
        assert!(seen.contains(&"to both of you".to_string()), "{seen:?}");
        assert!(seen.contains(&"club news".to_string()), "{seen:?}");
    }
    // What the laptop sends is ana's: to bob, to the club, and on her phone as her own.
    laptop.send_text("bob", "from my laptop").await.unwrap();
    laptop.send_group(&club, "laptop in the club").await.unwrap();
    let r = bob.sync().await.unwrap();
    let from_ana: Vec<_> = r.messages.iter().filter(|m| m.from == "ana").map(|m| &m.text).collect();
    assert!(from_ana.contains(&&"from my laptop".to_string()), "{r:?}");
    assert!(texts(&cyd.sync().await.unwrap()).contains(&"laptop in the club".to_string()));
    let r = ana.sync().await.unwrap();
    let own: Vec<_> = r.messages.iter().filter(|m| m.outgoing && m.from == "ana").collect();
    assert_eq!(own.len(), 2, "{r:?}");
    let chat = ana.history("bob").unwrap();
    assert!(chat.iter().any(|m| m.text == "from my laptop" && m.outgoing), "{chat:?}");

    // Stories: bob's next one reaches the laptop; the laptop posts in ana's channel.
    bob.story_post("bob's evening").await.unwrap();
    laptop.sync().await.unwrap();
    let stories = laptop.stories().unwrap();
    assert!(stories.iter().any(|s| s.author == "bob" && s.text == "bob's evening"), "{stories:?}");
    laptop.story_post("from the laptop").await.unwrap();
    bob.sync().await.unwrap();
    let stories = bob.stories().unwrap();
    assert!(
        stories.iter().any(|s| s.author == "ana" && s.text == "from the laptop"),
        "{stories:?}"
    );

    // Whoever opens a conversation with ana later reaches both devices.
    let mut dee = server.user("dee").await;
    dee.send_text("ana", "hello from dee").await.unwrap();
    for device in [&mut ana, &mut laptop] {
        assert!(texts(&device.sync().await.unwrap()).contains(&"hello from dee".to_string()));
    }
    // And a conversation the laptop opens holds the phone too, and a group the phone makes.
    let _erin = server.user("erin").await;
    laptop.send_text("erin", "hi erin").await.unwrap();
    let walk = ana.create_group("Walk", &["bob".into()]).await.unwrap();
    let r = ana.sync().await.unwrap();
    assert!(r.messages.iter().any(|m| m.text == "hi erin" && m.outgoing), "{r:?}");
    let r = laptop.sync().await.unwrap();
    assert!(r.joined.contains(&walk), "{r:?}");
}

fn refused_as(e: &ClientError, codes: &[ErrorCode]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_works_once_and_only_as_shown() {
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let server = TestServer::start_with(test_config(), clock.clone()).await;
    let mut ana = server.user("ana").await;

    // Mistyped: the exchange completes, but neither side can open the other's words; the
    // link is cancelled and nothing is linked.
    let offer = ana.offer_link().await.unwrap();
    let shown = offer.code().expose().to_string();
    let (code, at) = shown.split_once('@').unwrap();
    let last = code.chars().last().unwrap();
    let typo = format!("{}{}@{at}", &code[..code.len() - 1], if last == '7' { '8' } else { '7' });
    let mut other = empty_profile();
    let (approving, joining) =
        tokio::join!(ana.approve_link(offer, POLL), other.register_by_link(&typo, POLL, true));
    assert_eq!(approving.unwrap_err().refusal(), Some(Refusal::BadLinkCode));
    assert_eq!(joining.unwrap_err().refusal(), Some(Refusal::BadLinkCode));
    assert!(other.profile().is_none());
    assert_eq!(ana.my_devices().await.unwrap().len(), 1);

    // Used: a second device with the same code is refused.
    let (_laptop, _) = link(&mut ana).await;
    let offer = ana.offer_link().await.unwrap();
    let code = offer.code().expose().to_string();
    let mut tablet = empty_profile();
    let (approving, joining) =
        tokio::join!(ana.approve_link(offer, POLL), tablet.register_by_link(&code, POLL, true));
    approving.unwrap();
    joining.unwrap();
    let again = empty_profile().register_by_link(&code, POLL, true).await.unwrap_err();
    assert!(refused_as(&again, &[ErrorCode::LinkUsed, ErrorCode::UnknownLink]), "{again}");
    assert_eq!(ana.my_devices().await.unwrap().len(), 3);

    // Expired: ten minutes later the code is refused, and the offering side gives up.
    let offer = ana.offer_link().await.unwrap();
    let code = offer.code().expose().to_string();
    clock.advance(Duration::from_secs(601));
    let late = empty_profile().register_by_link(&code, POLL, true).await.unwrap_err();
    assert!(refused_as(&late, &[ErrorCode::LinkExpired]), "{late}");
    let e = ana.approve_link(offer, POLL).await.unwrap_err();
    assert!(refused_as(&e, &[ErrorCode::LinkExpired]), "{e}");

    // Not a code at all.
    let e = empty_profile().register_by_link("hello", POLL, true).await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::BadLinkCode));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_limit_holds() {
    let mut config = test_config();
    config.max_devices_per_account = 2;
    let server = TestServer::start_with(config, Arc::new(SystemClock)).await;
    let mut ana = server.user("ana").await;
    let _laptop = link(&mut ana).await;
    let offer = ana.offer_link().await.unwrap();
    let code = offer.code().expose().to_string();
    let (approving, _) = tokio::join!(ana.approve_link(offer, POLL), async {
        let mut third = empty_profile();
        let _ =
            tokio::time::timeout(Duration::from_secs(2), third.register_by_link(&code, POLL, true))
                .await;
    });
    let e = approving.unwrap_err();
    assert!(refused_as(&e, &[ErrorCode::TooManyDevices]), "{e}");
    assert!(e.to_string().contains("2 devices"), "{e}");
    assert_eq!(ana.my_devices().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_gets_nothing_more_and_its_token_is_refused() {
    let server = TestServer::start().await;
    let mut ana = server.user("ana").await;
    let mut bob = server.user("bob").await;
    let mut cyd = server.user("cyd").await;
    bob.send_text("ana", "hi").await.unwrap();
    ana.sync().await.unwrap();
    let club = bob.create_group("Club", &["ana".into(), "cyd".into()]).await.unwrap();
    ana.sync().await.unwrap();
    cyd.sync().await.unwrap();
    let (mut laptop, linked) = link(&mut ana).await;
    laptop.sync().await.unwrap();
    bob.sync().await.unwrap();
    cyd.sync().await.unwrap();

    let (left, kept) = ana.remove_device(linked.device_id, |_, _| {}).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(kept.is_empty(), "{kept:?}");
    // Its token is refused; it gets nothing more.
    let e = laptop.sync().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
    // The others see that ana removed a device; the server routes to ana's phone alone.
    for u in [&mut bob, &mut cyd] {
        let r = u.sync().await.unwrap();
        let events: Vec<_> = r.messages.iter().filter_map(|m| m.event.clone()).collect();
        assert!(events.contains(&SystemEvent::DeviceRemoved { who: "ana".into() }), "{events:?}");
        assert_eq!((r.dropped, r.problems.len()), (0, 0), "{r:?}");
    }
    let id = (0..club.len()).step_by(2).map(|i| u8::from_str_radix(&club[i..i + 2], 16).unwrap());
    let route = server.store().conversation_route(&id.collect::<Vec<_>>()).await.unwrap().unwrap();
    assert!(!route.members.contains(&linked.device_id), "{route:?}");
    bob.send_group(&club, "after the laptop").await.unwrap();
    assert!(texts(&ana.sync().await.unwrap()).contains(&"after the laptop".to_string()));
    assert!(texts(&cyd.sync().await.unwrap()).contains(&"after the laptop".to_string()));
    // A device removes others, not itself; nor another account's.
    let mine = ana.profile().unwrap().device_id;
    let e = ana.remove_device(mine, |_, _| {}).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    let bobs = bob.profile().unwrap().device_id;
    let e = ana.remove_device(bobs, |_, _| {}).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownDevice), "{e}");
    // A new device can be linked in its place (the limit counts devices still there).
    let (mut tablet, _) = link(&mut ana).await;
    bob.send_text("ana", "hello tablet").await.unwrap();
    assert!(texts(&tablet.sync().await.unwrap()).contains(&"hello tablet".to_string()));
}

/// The history comes along, end to end encrypted, in chunks; a transfer cut half-way (the new
/// device stopped) resumes where it stopped, after a restart; `--no-history` brings none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_comes_along_and_a_cut_transfer_resumes() {
    let server = TestServer::start().await;
    let mut ana = server.user("ana").await;
    let mut bob = server.user("bob").await;
    // Enough history for several chunks, and a group with a name.
    let long = "x".repeat(3500);
    for i in 0..100 {
        bob.send_text("ana", &format!("{i} {long}")).await.unwrap();
    }
    ana.sync().await.unwrap();
    ana.send_text("bob", "answer").await.unwrap();
    let club = ana.create_group("Book club", &["bob".into()]).await.unwrap();
    ana.send_group(&club, "first meeting").await.unwrap();

    let mut laptop = empty_profile();
    let offer = ana.offer_link().await.unwrap();
    let code = offer.code();
    let (approved, joined) = tokio::join!(
        ana.approve_link(offer, POLL),
        laptop.register_by_link(code.expose(), POLL, true)
    );
    joined.unwrap();
    let approved = approved.unwrap();
    ana.add_linked_device(&approved, POLL, Duration::from_secs(10), |_, _| {}).await.unwrap();
    let mut progress = Vec::new();
    let chunks = ana.send_history(&approved, |d, t| progress.push((d, t))).await.unwrap();
    assert!(chunks >= 2, "{chunks} chunks");
    assert_eq!(progress.last(), Some(&(chunks, chunks)));
    // Cut after one chunk; the laptop stops (its profile closed) and starts again.
    let total = u32::try_from(chunks).unwrap();
    assert_eq!(laptop.raw_continue_history(1).await.unwrap(), Some((1, total)));
    assert!(laptop.history("bob").unwrap().is_empty());
    let TestUser { client, dir } = laptop;
    drop(client);
    let mut laptop = TestUser { client: Client::open(dir.path()).unwrap(), dir };
    laptop.sync().await.unwrap();
    assert_eq!(seen(&laptop, "bob"), seen(&ana, "bob"));
    assert_eq!(seen(&laptop, "bob").len(), 101);
    let group = |u: &TestUser| -> Vec<String> {
        u.conversation_history(&club).unwrap().into_iter().map(|m| m.text).collect()
    };
    assert_eq!(group(&laptop), group(&ana));
    assert_eq!(laptop.group(&club).unwrap().name.as_deref(), Some("Book club"));
    // The transfer is over: nothing more to take.
    assert_eq!(laptop.raw_continue_history(1).await.unwrap(), None);

    // Without the history: only what comes from now on.
    let mut tablet = empty_profile();
    let offer = ana.offer_link().await.unwrap();
    let code = offer.code();
    let (approved, joined) = tokio::join!(
        ana.approve_link(offer, POLL),
        tablet.register_by_link(code.expose(), POLL, false)
    );
    joined.unwrap();
    let approved = approved.unwrap();
    assert!(!approved.history);
    ana.add_linked_device(&approved, POLL, Duration::from_secs(10), |_, _| {}).await.unwrap();
    tablet.sync().await.unwrap();
    assert!(tablet.history("bob").unwrap().is_empty());
    bob.send_text("ana", "new one").await.unwrap();
    tablet.sync().await.unwrap();
    assert_eq!(tablet.history("bob").unwrap().len(), 1);
}

/// A block made on one device holds on all: the server stops what the blocked account sends
/// to every device of the account, and tells the others to read the list again; an unblock on
/// another device is read back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_on_one_device_holds_on_all() {
    let server = TestServer::start().await;
    let mut ana = server.user("ana").await;
    let mut cyd = server.user("cyd").await;
    cyd.send_text("ana", "hi").await.unwrap();
    ana.sync().await.unwrap();
    let (mut laptop, _) = link(&mut ana).await;
    laptop.sync().await.unwrap();
    assert!(laptop.blocked().unwrap().is_empty());

    ana.block("cyd").await.unwrap();
    cyd.send_text("ana", "after the block").await.unwrap();
    let r = laptop.sync().await.unwrap();
    assert!(!texts(&r).contains(&"after the block".to_string()), "{r:?}");
    assert_eq!(laptop.blocked().unwrap(), ["cyd"]);
    // Lifted on the laptop: the phone reads it back.
    laptop.unblock("cyd").await.unwrap();
    ana.sync().await.unwrap();
    assert!(ana.blocked().unwrap().is_empty());
    cyd.send_text("ana", "after the unblock").await.unwrap();
    assert!(texts(&ana.sync().await.unwrap()).contains(&"after the unblock".to_string()));
}

/// What is read on one device is read on all: the read goes sealed to the account's other
/// devices (the server queues it, and cannot open it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_read_on_one_device_is_read_on_all() {
    let server = TestServer::start().await;
    let mut ana = server.user("ana").await;
    let mut bob = server.user("bob").await;
    bob.send_text("ana", "hi").await.unwrap();
    ana.sync().await.unwrap();
    let (mut laptop, _) = link(&mut ana).await;
    laptop.sync().await.unwrap();
    bob.send_text("ana", "one").await.unwrap();
    bob.send_text("ana", "two").await.unwrap();
    ana.sync().await.unwrap();
    laptop.sync().await.unwrap();
    let unread = |u: &TestUser| {
        u.chats().unwrap().into_iter().find(|c| c.chat == "@bob").map(|c| c.unread).unwrap()
    };
    assert!(unread(&laptop) >= 2);
    ana.mark_read("@bob").unwrap();
    assert_eq!(unread(&ana), 0);
    ana.sync().await.unwrap();
    laptop.sync().await.unwrap();
    assert_eq!(unread(&laptop), 0);
}
