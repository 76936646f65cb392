//! A model-based test of ordinary user flows: a seeded generator drives random sequences of
//! real operations — 1:1 and group messages, syncs at random moments (so users stay offline
//! through many changes), group creation, adds, removes, leaves and renames, deleted chats,
//! blocks and unblocks — across five users against a real `kithd`, and checks what each user sees against
//! a plain model of who should get what: no message lost, none shown twice, and every member of
//! a group seeing the same members and name.
//!
//! Seeds 1–10 run in the suite on SQLite and 1–5 on PostgreSQL; `MODEL_CASES=200` for a long
//! run, `MODEL_SEED` to replay one. The bugs it found stay as named tests in `groups.rs`.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::collections::{BTreeMap, BTreeSet};

use kith_testkit::{Rng, TestServer, TestUser};

const USERS: [&str; 5] = ["ann", "ben", "cat", "dan", "eve"];
const STEPS: usize = 60;

/// A group as the model knows it.
struct Group {
    id: String,
    admin: usize,
    members: BTreeSet<usize>,
    /// The name each member should see: the admin's renames do not reach a member who blocks
    /// the admin.
    names: BTreeMap<usize, String>,
}

/// Who should see what.
#[derive(Default)]
struct Model {
    groups: Vec<Group>,
    /// (blocker, blocked).
    blocks: BTreeSet<(usize, usize)>,
    /// Every (blocker, blocked) pair there ever was: a rename by a blocked admin that was
    /// queued before the block is dropped with everything else from it, so such a member's
    /// view of the name is not checked.
    ever_blocked: BTreeSet<(usize, usize)>,
    /// Texts each user must end up with, and who sent them.
    expected: Vec<BTreeMap<String, usize>>,
    /// Texts a user may or may not see: queued for it before it blocked their sender, and not
    /// fetched yet (its client drops what arrives from an account it blocks).
    maybe: Vec<BTreeSet<String>>,
    /// (user, group): an invitation its client will drop — `true` once it has (it synced while
    /// blocking the group's admin, before taking the invitation in). The user stays in the
    /// group's tree but never joins it. Until then an unblock takes it back.
    declined: BTreeMap<(usize, usize), bool>,
}

impl Model {
    fn delivers(&self, from: usize, to: usize) -> bool {
        !self.blocks.contains(&(to, from))
    }
}

async fn run(seed: u64, server: TestServer) {
    let mut users: Vec<TestUser> = Vec::new();
    for name in USERS {
        users.push(server.user(name).await);
    }
    let n = users.len();
    let mut rng = Rng(seed);
    let mut model = Model {
        expected: vec![BTreeMap::new(); n],
        maybe: vec![BTreeSet::new(); n],
        ..Model::default()
    };
    // What each user was shown, every text once.
    let mut seen: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); n];
    let mut count = 0u32;
    let mut log = Vec::new();
    let take = |u: usize, r: kith_client::SyncReport, seen: &mut Vec<BTreeMap<String, usize>>| {
        for m in r.messages {
            if m.kind == kith_client::ConversationKind::System {
                continue;
            }
            *seen[u].entry(m.text).or_default() += 1;
        }
    };
    for _ in 0..STEPS {
        let u = rng.below(n);
        match rng.below(12) {
            0..=2 => {
                // A 1:1 message.
                let v = (u + 1 + rng.below(n - 1)) % n;
                count += 1;
                let text = format!("d{count} {}>{}", USERS[u], USERS[v]);
                log.push(format!("{} sends {text:?} to {}", USERS[u], USERS[v]));
                users[u].send_text(USERS[v], &text).await.unwrap();
                if model.delivers(u, v) {
                    model.expected[v].insert(text, u);
                }
            }
            3 => {
                // A group message, from a member whose device has joined it (synced since it
                // was added).
                let mine: Vec<usize> = (0..model.groups.len())
                    .filter(|g| model.groups[*g].members.contains(&u))
                    .filter(|g| users[u].group(&model.groups[*g].id).is_ok_and(|s| !s.left))
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let g = mine[rng.below(mine.len())];
                count += 1;
                let text = format!("g{count} {} in {g}", USERS[u]);
                log.push(format!("{} sends {text:?} to group {g}", USERS[u]));
                let id = model.groups[g].id.clone();
                users[u].send_group(&id, &text).await.unwrap();
                for v in model.groups[g].members.clone() {
                    if v == u || !model.delivers(u, v) {
                        continue;
                    }
                    match model.declined.get(&(v, g)) {
                        Some(true) => {}
                        Some(false) => {
                            model.maybe[v].insert(text.clone());
                        }
                        None => {
                            model.expected[v].insert(text.clone(), u);
                        }
                    }
                }
            }
            4..=5 => {
                log.push(format!("{} syncs", USERS[u]));
                let r = users[u].sync().await.unwrap();
                take(u, r, &mut seen);
                for ((who, _), done) in model.declined.iter_mut() {
                    *done |= *who == u;
                }
            }
            6 => {
                // A new group with two or three others who do not block its creator.
                let others: Vec<usize> =
                    (0..n).filter(|v| *v != u && model.delivers(u, *v)).collect();
                if others.len() < 2 {
                    continue;
                }
                let k = 2 + rng.below(2).min(others.len() - 2);
                let mut members = BTreeSet::from([u]);
                while members.len() < k + 1 {
                    members.insert(others[rng.below(others.len())]);
                }
                let names: Vec<String> =
                    members.iter().filter(|v| **v != u).map(|v| USERS[*v].to_string()).collect();
                let g = model.groups.len();
                log.push(format!("{} creates group {g} with {names:?}", USERS[u]));
                let id = users[u].create_group(&format!("group{g}"), &names).await.unwrap();
                let names = members.iter().map(|m| (*m, format!("group{g}"))).collect();
                model.groups.push(Group { id, admin: u, members, names });
            }
            7 => {
                // The admin adds someone who does not block it, or removes a member.
                let admined: Vec<usize> =
                    (0..model.groups.len()).filter(|g| model.groups[*g].admin == u).collect();
                if admined.is_empty() {
                    continue;
                }
                let g = admined[rng.below(admined.len())];
                let id = model.groups[g].id.clone();
                let outside: Vec<usize> = (0..n)
                    .filter(|v| !model.groups[g].members.contains(v) && model.delivers(u, *v))
                    .collect();
                let inside: Vec<usize> =
                    model.groups[g].members.iter().copied().filter(|v| *v != u).collect();
                if rng.below(2) == 0 && !outside.is_empty() {
                    let v = outside[rng.below(outside.len())];
                    log.push(format!("{} adds {} to group {g}", USERS[u], USERS[v]));
                    users[u].group_add(&id, &[USERS[v].to_string()]).await.unwrap();
                    model.groups[g].members.insert(v);
                    // The adder sends the newcomer the name as it knows it.
                    let current = model.groups[g].names[&u].clone();
                    model.groups[g].names.insert(v, current);
                } else if !inside.is_empty() {
                    let v = inside[rng.below(inside.len())];
                    log.push(format!("{} removes {} from group {g}", USERS[u], USERS[v]));
                    users[u].group_remove(&id, USERS[v]).await.unwrap();
                    model.groups[g].members.remove(&v);
                }
            }
            8 => {
                // A member who is not the admin leaves.
                let mine: Vec<usize> = (0..model.groups.len())
                    .filter(|g| {
                        model.groups[*g].members.contains(&u) && model.groups[*g].admin != u
                    })
                    .filter(|g| users[u].group(&model.groups[*g].id).is_ok_and(|s| !s.left))
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let g = mine[rng.below(mine.len())];
                log.push(format!("{} leaves group {g}", USERS[u]));
                let id = model.groups[g].id.clone();
                users[u].group_leave(&id).await.unwrap();
                model.groups[g].members.remove(&u);
            }
            10 => {
                // The admin renames one of its groups.
                let admined: Vec<usize> =
                    (0..model.groups.len()).filter(|g| model.groups[*g].admin == u).collect();
                if admined.is_empty() {
                    continue;
                }
                let g = admined[rng.below(admined.len())];
                count += 1;
                let name = format!("name{count}");
                log.push(format!("{} renames group {g} to {name}", USERS[u]));
                let id = model.groups[g].id.clone();
                users[u].group_rename(&id, &name).await.unwrap();
                for v in model.groups[g].members.clone() {
                    if v == u || model.delivers(u, v) {
                        model.groups[g].names.insert(v, name.clone());
                    }
                }
            }
            11 => {
                // Delete the chat with someone: what they sent and this device has not fetched
                // yet goes with it; what they send next arrives in a new conversation.
                let v = (u + 1 + rng.below(n - 1)) % n;
                if users[u].delete_conversation(USERS[v]).await.is_err() {
                    continue; // no chat with them
                }
                log.push(format!("{} deletes the chat with {}", USERS[u], USERS[v]));
                let unseen: Vec<String> = model.expected[u]
                    .iter()
                    .filter(|(t, from)| {
                        **from == v && t.starts_with('d') && !seen[u].contains_key(*t)
                    })
                    .map(|(t, _)| t.clone())
                    .collect();
                for t in unseen {
                    model.expected[u].remove(&t);
                    model.maybe[u].insert(t);
                }
            }
            _ => {
                // Block or unblock someone.
                let v = (u + 1 + rng.below(n - 1)) % n;
                if model.blocks.contains(&(u, v)) {
                    log.push(format!("{} unblocks {}", USERS[u], USERS[v]));
                    users[u].unblock(USERS[v]).await.unwrap();
                    model.blocks.remove(&(u, v));
                    // Invitations not dropped yet will be taken in after all.
                    let groups = &model.groups;
                    model
                        .declined
                        .retain(|(who, g), done| *done || *who != u || groups[*g].admin != v);
                } else {
                    log.push(format!("{} blocks {}", USERS[u], USERS[v]));
                    users[u].block(USERS[v]).await.unwrap();
                    model.blocks.insert((u, v));
                    model.ever_blocked.insert((u, v));
                    let unseen: Vec<String> = model.expected[u]
                        .iter()
                        .filter(|(t, from)| **from == v && !seen[u].contains_key(*t))
                        .map(|(t, _)| t.clone())
                        .collect();
                    for t in unseen {
                        model.expected[u].remove(&t);
                        model.maybe[u].insert(t);
                    }
                    // Invitations from v not taken in yet are dropped: u never joins those.
                    for (g, group) in model.groups.iter().enumerate() {
                        if group.admin == v
                            && group.members.contains(&u)
                            && users[u].group(&group.id).map_or(true, |s| s.left)
                        {
                            model.declined.entry((u, g)).or_insert(false);
                            let texts: Vec<String> = model.expected[u]
                                .keys()
                                .filter(|t| t.ends_with(&format!(" in {g}")))
                                .cloned()
                                .collect();
                            for t in texts {
                                model.expected[u].remove(&t);
                                model.maybe[u].insert(t);
                            }
                        }
                    }
                }
            }
        }
        // Nobody is ever shown a message twice, or one not meant for them.
        for v in 0..n {
            for (text, times) in &seen[v] {
                assert_eq!(
                    *times,
                    1,
                    "seed {seed}: {} saw {text:?} twice\n{}",
                    USERS[v],
                    log.join("\n")
                );
                assert!(
                    model.expected[v].contains_key(text) || model.maybe[v].contains(text),
                    "seed {seed}: {} saw {text:?}, not meant for them\n{}",
                    USERS[v],
                    log.join("\n")
                );
            }
        }
    }
    // Everyone catches up (twice: admins commit pending leaves on a sync).
    for _ in 0..2 {
        for (u, user) in users.iter_mut().enumerate() {
            let r = user.sync().await.unwrap();
            take(u, r, &mut seen);
        }
    }
    for v in 0..n {
        let lost: Vec<&String> =
            model.expected[v].keys().filter(|t| !seen[v].contains_key(*t)).collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: {} never got {lost:?}\n{}",
            USERS[v],
            log.join("\n")
        );
        assert!(seen[v].values().all(|t| *t == 1), "seed {seed}: duplicates for {}", USERS[v]);
    }
    // Every member of a group sees the same members as the model.
    for (g, group) in model.groups.iter().enumerate() {
        let want: Vec<String> = group.members.iter().map(|v| USERS[*v].to_string()).collect();
        for v in group.members.iter().filter(|v| !model.declined.contains_key(&(**v, g))) {
            let summary = users[*v].group(&group.id).unwrap();
            let name_known = !model.ever_blocked.contains(&(*v, group.admin));
            assert!(
                !name_known || summary.name.as_deref() == group.names.get(v).map(String::as_str),
                "seed {seed}: {} sees group {g} named {:?}\n{}",
                USERS[*v],
                summary.name,
                log.join("\n")
            );
            let have = summary.members;
            assert_eq!(
                have,
                want,
                "seed {seed}: {} sees group {g} as {have:?}\n{}",
                USERS[*v],
                log.join("\n")
            );
        }
    }
}

/// The default settings, but for the hourly creation limits: five brand-new users creating
/// groups at random would be cooled off, which is the policy's business, not this test's.
fn config() -> kith_testkit::ServerConfig {
    let mut c = kith_testkit::test_config();
    c.safety.max_groups_created_per_hour = 1000;
    c.safety.max_new_conversations_per_hour = 1000;
    c
}

fn seeds(default_cases: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("MODEL_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let cases =
        std::env::var("MODEL_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default_cases);
    (1..=cases).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_user_flows_match_the_model() {
    for seed in seeds(10) {
        let clock = std::sync::Arc::new(kith_testkit::SystemClock);
        run(seed, TestServer::start_with(config(), clock).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_user_flows_match_the_model_on_postgres() {
    for seed in seeds(5) {
        let Some(server) = TestServer::start_postgres_with(config()).await else { return };
        run(seed, server).await;
    }
}
