//! Per-account and per-IP activity windows, kept in memory by each `kithd` node.
//!
//! Everything here is metadata the server needs to deliver messages anyway. Windows are pruned
//! as they are read, and idle accounts are dropped by [`Signals::prune`].

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use kith_store::Millis;

pub const MINUTE: Millis = 60_000;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;

/// Event times (with a weight) within a sliding window.
#[derive(Default, Debug)]
pub struct Window {
    events: VecDeque<(Millis, u32)>,
}

impl Window {
    pub fn add(&mut self, at: Millis, n: u32) {
        self.events.push_back((at, n));
    }

    /// Takes back one event of weight `n` added at `at` (the newest such), if it is there.
    pub fn remove(&mut self, at: Millis, n: u32) {
        if let Some(i) = self.events.iter().rposition(|e| *e == (at, n)) {
            self.events.remove(i);
        }
    }

    /// The total weight of events after `now - span`.
    pub fn count(&mut self, now: Millis, span: Millis) -> u64 {
        let from = now.saturating_sub(span);
        while self.events.front().is_some_and(|(t, _)| *t <= from) {
            self.events.pop_front();
        }
        self.events.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// The weight of events after `now - span` that are at least `age` old.
    pub fn count_older(&mut self, now: Millis, span: Millis, age: Millis) -> u64 {
        self.count(now, span);
        let until = now.saturating_sub(age);
        self.events.iter().filter(|(t, _)| *t <= until).map(|(_, n)| u64::from(*n)).sum()
    }

    fn last(&self) -> Option<Millis> {
        self.events.back().map(|(t, _)| *t)
    }
}

/// What the server knows of one account's recent activity.
#[derive(Default, Debug)]
pub struct AccountSignals {
    /// Message tokens left, and when they were last refilled.
    pub tokens: f64,
    pub refilled_at: Millis,
    pub new_directs: Window,
    pub groups_created: Window,
    pub claims: Window,
    /// Claims per claimed account: draining one person's KeyPackages.
    pub claims_of: HashMap<String, Window>,
    /// Of those, the ones that ended up in a conversation (the claimed account was added).
    pub used_of: HashMap<String, Window>,
    /// KeyPackages that ended up in a conversation this account created or grew.
    pub used: Window,
    /// 1:1 conversations this account opened that the other side has not answered yet.
    pub unanswered: HashMap<Vec<u8>, Millis>,
    /// Changes (commits, proposals, new conversations) this account made.
    pub changes: Window,
    /// Uploads refused because a KeyPackage broke the KeyPackage rule (no Kith client makes one).
    pub unusable_uploads: Window,
    /// Bytes of messages accepted from this account (what it puts on the server's disk).
    pub bytes_sent: Window,
    pub cool_off_until: Option<Millis>,
    pub cool_offs: Window,
    pub last_seen: Millis,
}

impl AccountSignals {
    /// 1:1 conversations opened in the last day, older than `grace`, still unanswered.
    pub fn unanswered(&mut self, now: Millis, grace: Millis) -> u64 {
        self.unanswered.retain(|_, at| *at + DAY > now);
        self.unanswered.values().filter(|at| **at + grace <= now).count() as u64
    }
}

#[derive(Default)]
pub struct Signals {
    pub accounts: HashMap<String, AccountSignals>,
    /// Which account opened each recent 1:1 conversation, to notice the answer.
    pub openers: HashMap<Vec<u8>, String>,
    pub registrations: HashMap<IpAddr, Window>,
    /// Every registration attempt, failed ones included (never given back).
    pub registration_attempts: HashMap<IpAddr, Window>,
    /// One-time KeyPackages handed out per claimed account, whoever claimed them: the budget
    /// that keeps many claimers together from draining one person.
    pub claimed: HashMap<String, Window>,
    /// Changes (commits, proposals, new conversations) per conversation and member
    /// (conversation id ‖ username).
    pub changes: HashMap<Vec<u8>, Window>,
}

impl Signals {
    pub fn account(&mut self, username: &str, now: Millis) -> &mut AccountSignals {
        let a = self.accounts.entry(username.to_string()).or_default();
        a.last_seen = now;
        a
    }

    /// Drops what is older than a day, and accounts idle for a day.
    pub fn prune(&mut self, now: Millis) {
        self.accounts
            .retain(|_, a| a.last_seen + DAY > now || a.cool_off_until.is_some_and(|u| u > now));
        let accounts = &self.accounts;
        self.openers.retain(|_, who| accounts.contains_key(who));
        self.registrations.retain(|_, w| w.last().is_some_and(|t| t + HOUR > now));
        self.registration_attempts.retain(|_, w| w.last().is_some_and(|t| t + HOUR > now));
        self.claimed.retain(|_, w| w.last().is_some_and(|t| t + HOUR > now));
        self.changes.retain(|_, w| w.last().is_some_and(|t| t + HOUR > now));
    }
}
