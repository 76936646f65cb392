//! Delivery faults between several clients: a seeded adversary drops, duplicates, delays and
//! reorders what the server hands each device, while the members send, open 1:1
//! conversations, rotate keys, rename the group and set its timer — two admins at the same
//! moment too — and a late joiner comes in. Once deliveries are honest again, every member of
//! every conversation has the same history — every message that was sent, each exactly once —
//! nothing legitimate was thrown away, and every member (the late joiner too) ends on the same
//! group name and timer.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::collections::{BTreeMap, BTreeSet};

use kith_client::ConversationKind;
use kith_proto::QueueEntry;
use kith_testkit::{TestServer, TestUser};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// The timers a member may set: long enough that nothing disappears during a run.
const TIMERS: [Option<u64>; 3] = [None, Some(86_400), Some(604_800)];

#[derive(Clone, Debug)]
enum Step {
    /// `from` writes to the group.
    Group { from: usize },
    /// `from` writes to `to` in their 1:1 conversation (opened on first use).
    Direct { from: usize, to: usize },
    /// `who` rotates its keys in the group: a commit, so a new epoch.
    Rekey { who: usize },
    /// An admin (alice, or bob whom she promoted) renames the group.
    Rename { by: usize },
    /// An admin (alice, or bob) sets the group's disappearing timer.
    Timer { who: usize, choice: usize },
    /// Both admins rename the group at the same moment, or set its timer.
    AtOnce { timers: bool },
    /// alice adds dave (once).
    AddLate,
    /// The adversary hands `to` what the server holds for it, changed.
    Deliver { to: usize, drop_percent: u8, duplicate_percent: u8, reorder: bool, seed: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize).prop_map(|from| Step::Group { from }),
        2 => (0..3usize, 1..3usize).prop_map(|(from, d)| Step::Direct { from, to: (from + d) % 3 }),
        1 => (0..3usize).prop_map(|who| Step::Rekey { who }),
        1 => (0..2usize).prop_map(|by| Step::Rename { by }),
        1 => (0..2usize, 0..3usize).prop_map(|(who, choice)| Step::Timer { who, choice }),
        1 => any::<bool>().prop_map(|timers| Step::AtOnce { timers }),
        1 => Just(Step::AddLate),
        4 => (0..4usize, 0..60u8, 0..40u8, any::<bool>(), any::<u64>()).prop_map(
            |(to, drop_percent, duplicate_percent, reorder, seed)| Step::Deliver {
                to,
                drop_percent,
                duplicate_percent,
                reorder,
                seed
            }
        ),
    ]
}

/// xorshift64*: the adversary's coin, from the step's seed.
struct Coin(u64);

impl Coin {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn percent(&mut self, p: u8) -> bool {
        self.next() % 100 < u64::from(p)
    }
}

/// What the adversary delivers: some entries dropped (they stay queued and come again
/// later: a delay), some twice, and the order shuffled.
fn tamper(
    entries: Vec<QueueEntry>,
    drop: u8,
    dup: u8,
    reorder: bool,
    seed: u64,
) -> Vec<QueueEntry> {
    let mut coin = Coin(seed | 1);
    let mut out = Vec::new();
    for e in entries {
        if coin.percent(drop) {
            continue;
        }
        if coin.percent(dup) {
            out.push(e.clone());
        }
        out.push(e);
    }
    if reorder {
        for i in (1..out.len()).rev() {
            let j = usize::try_from(coin.next() % (i as u64 + 1)).unwrap();
            out.swap(i, j);
        }
    }
    out
}

fn joined(user: &TestUser, group: &str) -> bool {
    user.groups().unwrap().iter().any(|g| g.id == group)
}

async fn run(steps: Vec<Step>) {
    let server = TestServer::start().await;
    let mut users: Vec<TestUser> = Vec::new();
    for name in NAMES {
        users.push(server.user(name).await);
    }
    let group = users[0].create_group("three", &["bob".into(), "carol".into()]).await.unwrap();
    users[1].sync().await.unwrap();
    users[0].group_promote(&group, "bob").await.unwrap();
    users[1].sync().await.unwrap();
    let mut in_group = vec![0, 1, 2];
    // Names given to the group (the end state must be one of them) and timers set.
    let mut names = BTreeSet::from(["three".to_string()]);
    // What each conversation should hold in the end: (sender, text), by conversation id.
    let mut sent: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut members: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    members.insert(group.clone(), vec![0, 1, 2]);
    let mut dropped = 0;
    // Messages a member could no longer read: held back by the adversary while more than
    // `max_past_epochs` commits went by, their keys were deleted (forward secrecy).
    let mut too_late = [0u32; NAMES.len()];
    for (n, step) in steps.into_iter().enumerate() {
        match step {
            Step::Group { from } => {
                let text = format!("group message {n}");
                // A member that has not yet received the Welcome cannot write; it is not a
                // delivery fault, so it catches up honestly first.
                if !joined(&users[from], &group) {
                    users[from].sync().await.unwrap();
                }
                let m = users[from].send_group(&group, &text).await.unwrap();
                sent.entry(group.clone()).or_default().insert((NAMES[from].into(), text));
                assert_eq!(m.conversation, group);
            }
            Step::Direct { from, to } => {
                let text = format!("direct message {n}");
                let m = users[from].send_text(NAMES[to], &text).await.unwrap();
                sent.entry(m.conversation.clone()).or_default().insert((NAMES[from].into(), text));
                members.insert(m.conversation, vec![from, to]);
            }
            Step::Rekey { who } => {
                if !joined(&users[who], &group) {
                    users[who].sync().await.unwrap();
                }
                users[who].update_keys(&group).await.unwrap();
            }
            Step::Rename { by } => {
                let name = format!("name {n}");
                users[by].group_rename(&group, &name).await.unwrap();
                names.insert(name);
            }
            Step::Timer { who, choice } => {
                if !joined(&users[who], &group) {
                    users[who].sync().await.unwrap();
                }
                let timer = TIMERS[choice].map(std::time::Duration::from_secs);
                users[who].set_disappearing(&group, timer).await.unwrap();
            }
            Step::AtOnce { timers } => {
                let (a, rest) = users.split_at_mut(1);
                let (alice, bob) = (&mut a[0], &mut rest[0]);
                if timers {
                    let (x, y) = (Some(TIMERS[1].unwrap()), Some(TIMERS[2].unwrap()));
                    let (r1, r2) = tokio::join!(
                        alice.set_disappearing(&group, x.map(std::time::Duration::from_secs)),
                        bob.set_disappearing(&group, y.map(std::time::Duration::from_secs)),
                    );
                    r1.unwrap();
                    r2.unwrap();
                } else {
                    let (x, y) = (format!("alice's {n}"), format!("bob's {n}"));
                    let (r1, r2) =
                        tokio::join!(alice.group_rename(&group, &x), bob.group_rename(&group, &y));
                    r1.unwrap();
                    r2.unwrap();
                    names.extend([x, y]);
                }
            }
            Step::AddLate => {
                if !in_group.contains(&3) {
                    users[0].group_add(&group, &["dave".into()]).await.unwrap();
                    in_group.push(3);
                }
            }
            Step::Deliver { to, drop_percent, duplicate_percent, reorder, seed } => {
                let entries = users[to].raw_queue().await;
                let batch = tamper(entries, drop_percent, duplicate_percent, reorder, seed);
                let report = users[to].receive_entries(&batch).await.unwrap();
                dropped += report.dropped;
                too_late[to] += report.too_late;
            }
        }
    }
    // Honest delivery from here on.
    for (i, user) in users.iter_mut().enumerate() {
        let report = user.sync().await.unwrap();
        dropped += report.dropped;
        too_late[i] += report.too_late;
    }
    assert_eq!(dropped, 0, "a legitimate message was thrown away");
    // One name and one timer for everyone in the group, the late joiner included.
    let settings: Vec<(Option<String>, Option<u64>)> = in_group
        .iter()
        .map(|i| {
            let g = users[*i].group(&group).unwrap();
            (g.name, g.timer_seconds)
        })
        .collect();
    assert!(settings.windows(2).all(|w| w[0] == w[1]), "members disagree: {settings:?}");
    let name = settings[0].0.clone().unwrap_or_default();
    assert!(names.contains(&name), "the group is named {name:?}, which nobody chose");
    for (conversation, expected) in &sent {
        for &i in &members[conversation] {
            let history = users[i].conversation_history(conversation).unwrap();
            let texts: Vec<(String, String)> = history
                .iter()
                .filter(|m| m.kind != ConversationKind::System)
                .map(|m| (m.from.clone(), m.text.clone()))
                .collect();
            let unique: BTreeSet<(String, String)> = texts.iter().cloned().collect();
            assert_eq!(unique.len(), texts.len(), "{} sees a message twice", NAMES[i]);
            assert!(unique.is_subset(expected), "{} sees what was not sent", NAMES[i]);
            let missing = expected.len() - unique.len();
            assert!(
                missing <= too_late[i] as usize,
                "{} lacks {missing} message(s) of {conversation}, {} too late to read",
                NAMES[i],
                too_late[i]
            );
        }
    }
}

proptest! {
    // Each case starts a server and three clients and runs real MLS: few cases, many steps.
    #![proptest_config(ProptestConfig { max_shrink_iters: 50, ..kith_testkit::proptest_config(16) })]

    #[test]
    fn faulty_deliveries_converge_to_one_history(steps in proptest::collection::vec(step(), 5..40)) {
        block_on(steps);
    }
}

fn block_on(steps: Vec<Step>) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(steps));
}

/// Found by the property above: bob joined, then three commits went by without him, and his
/// message — encrypted for an epoch the others had left more than `max_past_epochs` ago —
/// could not be decrypted by anyone. The server now refuses a message that is not for the
/// current epoch (`stale_epoch`), and the client catches up and encrypts it again.
#[test]
fn a_member_three_epochs_behind_can_still_write() {
    block_on(vec![
        Step::Deliver {
            to: 1,
            drop_percent: 0,
            duplicate_percent: 1,
            reorder: false,
            seed: 1_462_236_890_072_427_066,
        },
        Step::Rekey { who: 0 },
        Step::Rekey { who: 2 },
        Step::Rekey { who: 2 },
        Step::Group { from: 1 },
        Step::Rekey { who: 2 },
    ]);
}

/// Found by the property above on its first run: a message that arrives before its epoch's
/// commit, or before its conversation's Welcome, was dropped for good; it is now held.
#[test]
fn messages_ahead_of_their_commit_are_held_not_lost() {
    block_on(vec![
        Step::Group { from: 0 },
        Step::Rekey { who: 0 },
        Step::Group { from: 0 },
        Step::Deliver { to: 1, drop_percent: 0, duplicate_percent: 0, reorder: true, seed: 7 },
        Step::Deliver { to: 2, drop_percent: 30, duplicate_percent: 20, reorder: true, seed: 11 },
    ]);
}

/// Found by the property above once it renamed, promoted and added: a message the adversary
/// held back while more commits than `max_past_epochs` went by can no longer be read (its keys
/// are deleted, as forward secrecy demands). It is counted as too late, not as unusable.
#[test]
fn a_message_held_back_past_the_kept_epochs_is_counted_too_late() {
    block_on(vec![
        Step::Rename { by: 1 },
        Step::Group { from: 0 },
        Step::Group { from: 1 },
        Step::Group { from: 0 },
        Step::AddLate,
        Step::Group { from: 0 },
        Step::Group { from: 1 },
        Step::Rename { by: 1 },
        Step::Direct { from: 1, to: 2 },
        Step::AtOnce { timers: true },
        Step::Rekey { who: 0 },
        Step::Rekey { who: 1 },
        Step::Deliver {
            to: 2,
            drop_percent: 24,
            duplicate_percent: 0,
            reorder: true,
            seed: 5218820055225609152,
        },
        Step::Deliver {
            to: 2,
            drop_percent: 42,
            duplicate_percent: 14,
            reorder: true,
            seed: 7864672101497729328,
        },
    ]);
}
