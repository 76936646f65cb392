//! `abuse-sim`: a population of normal and abusive accounts against a real `kithd`, with
//! simulated time, scoring the safety policy.
//!
//! Normal accounts live in small circles of friends they chat with in bursts (every message is
//! answered), make a couple of new contacts a day (most of whom answer), now and then start a
//! group with friends, and some are *planners*: in one hour they write to a friend, post a
//! story and open two groups with that same friend. They are a month old when the abusers
//! arrive. Abusers are new accounts of six kinds:
//! - **bulk**: messages strangers as fast as the server lets it;
//! - **drain**: claims strangers' KeyPackages without ever writing;
//! - **groups**: creates group after group with strangers;
//! - **slow**: one new stranger every ten minutes, under every hourly limit;
//! - **mob**: a ring of five throwaway accounts that all block one innocent person, and report
//!   whatever that person answers them — to get it suspended;
//! - **under**: a spammer that keeps just under every threshold: eleven new strangers a day
//!   (one under the unanswered-conversations rule), one message each;
//! - **poison**: a stranger aimed at the people who answer it: once a target has answered, it
//!   tries to upload KeyPackages no Kith group can take (so that the target's story channel
//!   would fail to add it), and sends the target messages that cannot be decrypted and
//!   invitations that cannot be joined — to break the target's syncs and turn the policy on it.
//!
//! Strangers who hear from an abuser sometimes block it (15 %) or report the message (10 %).
//!
//! An account counts as *acted against* when the server refuses it with `429` (slow down,
//! cool-off) or `403 suspended`, and as *detected* when it was acted against or flagged for an
//! admin's review. Precision and recall are over abusers (detected); the false-positive rate,
//! and innocent suspensions, over normal accounts — mob targets included.

use std::sync::Arc;
use std::time::Duration;

use kith_client::{AccountKind, ErrorCode};
use kith_testkit::{ManualClock, Rng, TestServer, TestUser, test_config};
use serde_json::json;

use crate::report::Report;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Normal,
    Bulk,
    Drain,
    Groups,
    Slow,
    Mob,
    Under,
    Poison,
}

struct Account {
    user: TestUser,
    name: String,
    kind: Kind,
    friends: Vec<usize>,
    /// Application messages the server accepted from this account.
    sent: u64,
    /// Messages it had got out when the server first acted against it.
    first_action_after: Option<u64>,
    /// A planner: writes, posts a story and opens groups with one friend within an hour.
    planner: bool,
    /// Simulated day of the next batch of strangers (the `under` spammer).
    next_batch: u64,
    /// Syncs that failed (a normal account's must not: nothing a stranger sends breaks one).
    sync_failures: u64,
    /// What its syncs skipped and reported (an unreadable message, an unjoinable invitation).
    problems: u64,
    /// People who answered this account (the poisoner's targets).
    answered_by: Vec<usize>,
}

/// Whether an error is the server acting against the account.
fn is_action(e: &kith_client::ClientError) -> bool {
    matches!(e.code(), Some(ErrorCode::RateLimited | ErrorCode::Suspended))
}

impl Account {
    fn acted(&mut self, e: &kith_client::ClientError) -> bool {
        if is_action(e) && self.first_action_after.is_none() {
            self.first_action_after = Some(self.sent);
        }
        is_action(e)
    }
}

pub struct Config {
    pub normal: usize,
    pub abusers: usize,
    pub hours: u64,
    pub seed: u64,
}

const TICK: Duration = Duration::from_secs(600);

pub async fn run(config: Config) -> anyhow::Result<Report> {
    let mut rng = Rng(config.seed);
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let server = TestServer::start_with(test_config(), clock.clone()).await;
    let mut people: Vec<Account> = Vec::new();
    let register = |name: String, kind: Kind| {
        let url = server.url.clone();
        async move {
            let user = TestUser::register(&url, &name, AccountKind::Person).await;
            Account {
                user,
                name,
                kind,
                friends: vec![],
                sent: 0,
                first_action_after: None,
                planner: false,
                next_batch: 0,
                sync_failures: 0,
                problems: 0,
                answered_by: vec![],
            }
        }
    };
    for i in 0..config.normal {
        people.push(register(format!("person{i:04}"), Kind::Normal).await);
    }
    // Circles of friends: neighbours on a ring, plus a few across.
    let n = config.normal;
    for (i, person) in people.iter_mut().enumerate() {
        let mut f: Vec<usize> = (1..=3).flat_map(|d| [(i + d) % n, (i + n - d) % n]).collect();
        f.push(rng.below(n));
        f.retain(|x| *x != i);
        f.dedup();
        person.friends = f;
        person.planner = i % 10 == 0;
    }
    // The normal accounts are a month old when the abusers register.
    clock.advance(Duration::from_secs(30 * 86_400));
    let kinds =
        [Kind::Bulk, Kind::Drain, Kind::Groups, Kind::Slow, Kind::Mob, Kind::Under, Kind::Poison];
    for i in 0..config.abusers {
        people.push(register(format!("abuser{i:03}"), kinds[i % kinds.len()]).await);
    }

    // A mob ring is five throwaway accounts aimed at one innocent person each.
    let mut mobs = Vec::new();
    for (a, p) in people.iter().enumerate().filter(|(_, p)| p.kind == Kind::Mob) {
        mobs.push((a, p.name.clone()));
    }
    let mut rings = Vec::new();
    for (a, name) in mobs {
        let mut ring = vec![a];
        for k in 1..5 {
            let extra = register(format!("{name}r{k}"), Kind::Mob).await;
            people.push(extra);
            ring.push(people.len() - 1);
        }
        let target = rng.below(n);
        rings.push((ring, target));
    }

    let ticks = config.hours * 3600 / TICK.as_secs();
    for tick in 0..ticks {
        for i in 0..people.len() {
            match people[i].kind {
                Kind::Normal => normal_tick(&mut people, i, &mut rng).await,
                Kind::Mob => {}
                _ => abuser_tick(&mut people, i, tick, &mut rng).await,
            }
        }
        for (ring, target) in &rings {
            mob_tick(&mut people, ring, *target, tick).await;
        }
        clock.advance(TICK);
    }

    // Flagged for an admin's review (qualified blocks and reports) counts as detected too.
    let flags = server.store().flags().await?;
    let flagged = |a: &Account| flags.iter().any(|f| f.username == a.name);
    let suspended_innocents = {
        let mut n = 0;
        for a in people.iter().filter(|a| a.kind == Kind::Normal) {
            if server.store().account_info(&a.name).await?.is_some_and(|i| i.suspended.is_some()) {
                n += 1;
            }
        }
        n
    };
    let detected = |a: &Account| a.first_action_after.is_some() || flagged(a);
    // Precision and recall are over the abusers the policy is meant to stop (spam, drains,
    // group spam). The mob and the under-threshold spammer are measured apart: what matters
    // for the mob is that its targets come to no harm; for the under-threshold spammer, how
    // much it gets out.
    let stoppable = [Kind::Bulk, Kind::Drain, Kind::Groups, Kind::Slow];
    let abusers: Vec<&Account> = people.iter().filter(|a| stoppable.contains(&a.kind)).collect();
    let normals: Vec<&Account> = people.iter().filter(|a| a.kind == Kind::Normal).collect();
    let tp = abusers.iter().filter(|a| detected(a)).count();
    let fp = normals.iter().filter(|a| detected(a)).count();
    let precision = if tp + fp == 0 { 0.0 } else { tp as f64 / (tp + fp) as f64 };
    let recall = tp as f64 / abusers.len().max(1) as f64;
    let fpr = fp as f64 / normals.len().max(1) as f64;
    let mut before: Vec<u64> =
        abusers.iter().map(|a| a.first_action_after.unwrap_or(a.sent)).collect();
    before.sort_unstable();
    let median = before.get(before.len() / 2).copied().unwrap_or(0) as f64;
    let normal_messages: u64 = normals.iter().map(|a| a.sent).sum();
    let abuse_messages: u64 = abusers.iter().map(|a| a.sent).sum();

    let mut report = Report::new("abuse-sim");
    report.context("normal_accounts", json!(config.normal));
    report.context("abusive_accounts", json!(config.abusers));
    report.context("simulated_hours", json!(config.hours));
    report.context("seed", json!(config.seed));
    report.context("normal_messages", json!(normal_messages));
    report.context("abusive_messages", json!(abuse_messages));
    report.figure(
        "precision",
        precision,
        "",
        "precision (acted-against accounts that were abusive)",
    );
    report.figure("recall", recall, "", "recall (abusive accounts acted against)");
    report.figure("false_positive_rate", fpr, "", "normal accounts acted against or flagged");
    report.figure(
        "innocent_suspensions",
        suspended_innocents as f64,
        "",
        "normal accounts suspended (mob targets included)",
    );
    // The poisoner's targets: nothing it sent may break their syncs or act against them.
    let targets: std::collections::BTreeSet<usize> = people
        .iter()
        .filter(|a| a.kind == Kind::Poison)
        .flat_map(|a| a.answered_by.iter().copied())
        .collect();
    let targets_harmed = targets.iter().filter(|t| detected(&people[**t])).count();
    report.context("poison_targets", json!(targets.len()));
    report.context(
        "poison_problems_reported",
        json!(targets.iter().map(|t| people[*t].problems).sum::<u64>()),
    );
    report.figure(
        "poison_targets_acted_against",
        targets_harmed as f64,
        "",
        "people who answered a poisoner and were then slowed, cooled off, suspended or flagged",
    );
    report.figure(
        "innocent_sync_failures",
        normals.iter().map(|a| a.sync_failures).sum::<u64>() as f64,
        "",
        "syncs of normal accounts that failed (poisoned input included)",
    );
    let targets_flagged = rings.iter().filter(|(_, t)| flagged(&people[*t])).count();
    let mut mob_signals = 0;
    for (_, t) in &rings {
        mob_signals += server.store().signals(Some(&people[*t].name)).await?.len();
    }
    report.context("mob_signals_recorded", json!(mob_signals));
    report.context(
        "planners",
        json!(people.iter().filter(|a| a.planner && a.kind == Kind::Normal).count()),
    );
    report.context("mob_targets_flagged", json!(format!("{targets_flagged}/{}", rings.len())));
    let unders: Vec<&Account> = people.iter().filter(|a| a.kind == Kind::Under).collect();
    let unders_detected = unders.iter().filter(|a| detected(a)).count();
    report
        .context("under_threshold_detected", json!(format!("{unders_detected}/{}", unders.len())));
    let days = (config.hours as f64 / 24.0).max(1.0 / 24.0);
    let per_day =
        unders.iter().map(|a| a.sent).sum::<u64>() as f64 / unders.len().max(1) as f64 / days;
    report.figure(
        "under_threshold_messages_per_day",
        per_day,
        "msgs",
        "unwanted messages one under-threshold spammer gets out a day",
    );
    report.figure(
        "median_messages_before_action",
        median,
        "msgs",
        "median messages an abuser got out first",
    );
    for kind in kinds {
        let of_kind: Vec<&Account> = people.iter().filter(|a| a.kind == kind).collect();
        let caught = of_kind.iter().filter(|a| detected(a)).count();
        let label = format!("{kind:?}").to_lowercase();
        report.context(&format!("caught_{label}"), json!(format!("{caught}/{}", of_kind.len())));
    }
    // What each kind was first caught by (the first recorded cool-off, suspension or flag).
    for kind in kinds {
        let first = people
            .iter()
            .filter(|a| a.kind == kind)
            .find_map(|a| flags.iter().find(|f| f.username == a.name))
            .map(|f| format!("{}: {}", f.action, f.reason));
        let label = format!("{kind:?}").to_lowercase();
        report.context(&format!("first_action_{label}"), json!(first));
    }
    server.stop().await;
    Ok(report)
}

/// A sync, counting a failure against nobody but noting it (a normal account's must not fail).
async fn sync(people: &mut [Account], who: usize) -> Option<kith_client::SyncReport> {
    match people[who].user.sync().await {
        Ok(r) => {
            people[who].problems += r.problems.len() as u64;
            Some(r)
        }
        Err(e) => {
            people[who].acted(&e);
            people[who].sync_failures += 1;
            None
        }
    }
}

async fn send(people: &mut [Account], from: usize, to: usize, text: &str) -> bool {
    let peer = people[to].name.clone();
    match people[from].user.send_text(&peer, text).await {
        Ok(_) => {
            people[from].sent += 1;
            true
        }
        Err(e) => {
            people[from].acted(&e);
            false
        }
    }
}

async fn normal_tick(people: &mut [Account], i: usize, rng: &mut Rng) {
    // A burst with a friend, answered.
    if rng.chance(0.08) {
        let f = people[i].friends[rng.below(people[i].friends.len())];
        for k in 0..1 + rng.below(4) {
            send(people, i, f, &format!("how are you? ({k})")).await;
        }
        sync(people, f).await;
        send(people, f, i, "good, you?").await;
        sync(people, i).await;
    }
    // A new contact now and then (about two a day), who usually answers.
    if rng.chance(2.0 / 144.0) {
        let normals = people.iter().filter(|a| a.kind == Kind::Normal).count();
        let other = rng.below(normals);
        if other != i {
            send(people, i, other, "hi, we met at the meetup").await;
            sync(people, other).await;
            if rng.chance(0.8) {
                send(people, other, i, "oh hi!").await;
            }
        }
    }
    // A planner's hour: a friend, a story, and two groups with that friend.
    if people[i].planner && rng.chance(0.02) {
        let f = people[i].friends[0];
        let friend = people[f].name.clone();
        send(people, i, f, "party on saturday?").await;
        sync(people, f).await;
        send(people, f, i, "yes!").await;
        sync(people, i).await;
        if let Err(e) = people[i].user.story_post("party prep").await {
            people[i].acted(&e);
        }
        for name in ["party", "party food"] {
            match people[i].user.create_group(name, std::slice::from_ref(&friend)).await {
                Ok(id) => {
                    if people[i].user.send_group(&id, "plans").await.is_ok() {
                        people[i].sent += 1;
                    }
                }
                Err(e) => {
                    people[i].acted(&e);
                }
            }
        }
    }
    // A group with a few friends, rarely.
    if rng.chance(0.003) {
        let friends: Vec<String> =
            people[i].friends.iter().take(3).map(|f| people[*f].name.clone()).collect();
        match people[i].user.create_group("weekend plans", &friends).await {
            Ok(id) => {
                if people[i].user.send_group(&id, "who's in?").await.is_ok() {
                    people[i].sent += 1;
                }
            }
            Err(e) => {
                people[i].acted(&e);
            }
        }
    }
}

/// A stranger who heard from abuser `a` sometimes blocks it or reports the message.
async fn victim_reacts(people: &mut [Account], v: usize, a: usize, rng: &mut Rng) {
    let abuser = people[a].name.clone();
    if rng.chance(0.3) {
        let Some(r) = sync(people, v).await else { return };
        let spam = r.messages.iter().rev().find(|m| m.from == abuser).map(|m| m.id.clone());
        if rng.chance(0.15) {
            let _ = people[v].user.block(&abuser).await;
        } else if let Some(id) = spam.filter(|_| rng.chance(0.1 / 0.85)) {
            let _ = people[v].user.report(&id, Some("spam")).await;
        }
    }
}

/// A mob ring at work: each member opens a conversation with the target once, blocks it, and
/// reports whatever the target answers.
async fn mob_tick(people: &mut [Account], ring: &[usize], target: usize, tick: u64) {
    let name = people[target].name.clone();
    for (k, m) in ring.iter().enumerate() {
        // One member a tick, from the first hour on.
        if tick != 6 + k as u64 {
            continue;
        }
        send(people, *m, target, "hi, we met at the meetup").await;
        sync(people, target).await;
        let mob_name = people[*m].name.clone();
        send(people, target, *m, "oh hi!").await;
        if let Some(r) = sync(people, *m).await
            && let Some(msg) = r.messages.iter().find(|x| x.from == name)
        {
            let id = msg.id.clone();
            let _ = people[*m].user.report(&id, Some("harassment")).await;
        }
        let _ = people[*m].user.block(&name).await;
        let _ = people[*m].user.block(&name).await;
        let _ = mob_name;
    }
}

async fn abuser_tick(people: &mut [Account], a: usize, tick: u64, rng: &mut Rng) {
    let normals = people.iter().filter(|p| p.kind == Kind::Normal).count();
    match people[a].kind {
        Kind::Bulk => {
            for _ in 0..6 {
                let v = rng.below(normals);
                if send(people, a, v, "CHEAP WATCHES!!! click here").await {
                    victim_reacts(people, v, a, rng).await;
                }
            }
        }
        Kind::Slow => {
            let v = rng.below(normals);
            if send(people, a, v, "hello friend, a business proposal for you").await {
                victim_reacts(people, v, a, rng).await;
            }
        }
        Kind::Groups => {
            let members: Vec<String> =
                (0..4).map(|_| people[rng.below(normals)].name.clone()).collect();
            match people[a].user.create_group("free crypto", &members).await {
                Ok(id) => {
                    if people[a].user.send_group(&id, "join now").await.is_ok() {
                        people[a].sent += 1;
                    }
                }
                Err(e) => {
                    people[a].acted(&e);
                }
            }
        }
        Kind::Drain => {
            for _ in 0..10 {
                let v = people[rng.below(normals)].name.clone();
                if let Err(e) = people[a].user.claim_for_testing(&v).await {
                    people[a].acted(&e);
                }
            }
        }
        Kind::Under => {
            // Eleven new strangers spread over each simulated day, one message each.
            let day = tick * TICK.as_secs() / 86_400;
            let slot = tick % (86_400 / TICK.as_secs());
            if day >= people[a].next_batch && slot.is_multiple_of(13) && slot / 13 < 11 {
                let v = rng.below(normals);
                if send(people, a, v, "limited offer, just for you").await {
                    victim_reacts(people, v, a, rng).await;
                }
                if slot / 13 == 10 {
                    people[a].next_batch = day + 1;
                }
            }
        }
        Kind::Poison => poison_tick(people, a, tick, rng).await,
        Kind::Normal | Kind::Mob => {}
    }
}

/// The poisoner: an hourly new target, who answers it half the time; then, aimed at everyone
/// who answered, unusable KeyPackages, undecryptable messages and unjoinable invitations.
async fn poison_tick(people: &mut [Account], a: usize, tick: u64, rng: &mut Rng) {
    let normals = people.iter().filter(|p| p.kind == Kind::Normal).count();
    if tick.is_multiple_of(6) {
        let v = rng.below(normals);
        if send(people, a, v, "hi, we met at the meetup").await {
            sync(people, v).await;
            if rng.chance(0.5) && send(people, v, a, "oh hi!").await {
                sync(people, a).await;
                people[a].answered_by.push(v);
            }
        }
    }
    if !tick.is_multiple_of(3) {
        return;
    }
    // KeyPackages without the Kith extension: refused, and counted against the poisoner.
    let caps = openmls::prelude::Capabilities::new(
        None,
        None,
        Some(&[openmls::prelude::ExtensionType::LastResort]),
        None,
        None,
    );
    if let Ok(bad) =
        people[a].user.raw_key_package(|b| b.leaf_node_capabilities(caps).mark_as_last_resort())
    {
        let body = json!({"key_packages": [], "last_resort_key_package": kith_proto::B64(bad)});
        let answer = people[a].user.hostile().post("/v1/key-packages", body).await;
        if answer.status == 429 || answer.status == 403 {
            people[a].first_action_after.get_or_insert(people[a].sent);
        }
    }
    for v in people[a].answered_by.clone() {
        let peer = people[v].name.clone();
        // A message whose ciphertext is broken: the server cannot tell, the target drops it.
        if let Ok(conv) = people[a].user.direct_conversation(&peer).await {
            let mut aad = vec![0u8; 32];
            aad[0] = (tick % 251) as u8;
            let mut m = people[a].user.hostile().application(&conv, b"garbage", &aad);
            if let Some(last) = m.last_mut() {
                *last ^= 0x5a;
            }
            let answer = people[a].user.hostile().post_message(&conv, m).await;
            if answer.status == 429 || answer.status == 403 {
                people[a].first_action_after.get_or_insert(people[a].sent);
            }
        }
        // An invitation whose Welcome nobody can open.
        let meta = kith_proto::GroupMeta {
            kind: kith_proto::GroupType::Group,
            admins: vec![people[a].name.clone()],
            settings: None,
        };
        if let Ok((_, mut req)) = people[a].user.raw_conversation(&meta, &[peer]).await {
            if let Some(last) = req.welcome.0.last_mut() {
                *last ^= 0x5a;
            }
            let body = serde_json::to_value(&req).unwrap_or_default();
            let answer = people[a].user.hostile().post("/v1/conversations", body).await;
            if answer.status == 429 || answer.status == 403 {
                people[a].first_action_after.get_or_insert(people[a].sent);
            }
        }
        sync(people, v).await;
    }
}
