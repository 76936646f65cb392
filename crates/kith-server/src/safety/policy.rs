//! The policy: thresholds on metadata signals, and the action each breach leads to.
//!
//! | signal | threshold (default) | action |
//! |---|---|---|
//! | messages per minute | 120 | slow down: `429` with `Retry-After` until a token refills |
//! | new 1:1 conversations per hour | 20 (10 for accounts younger than 72 h) | cool-off |
//! | groups created per hour | 10 (5 young) | cool-off |
//! | KeyPackages claimed but not used within 2 min, per hour | 30 (15 young) | cool-off |
//! | KeyPackages claimed per hour | 500 | slow down |
//! | claims of the same account's KeyPackages never used, per hour | 3 | cool-off |
//! | one-time KeyPackages of one account handed out per hour, all claimers together | 10 | its last-resort KeyPackage instead |
//! | uploads with a KeyPackage no Kith group can take, per hour | 3 | cool-off |
//! | bytes of messages an account stores on the server, per hour | 256 MiB | slow down |
//! | changes to conversations (commits, proposals, new conversations) per minute | 60 | slow down |
//! | changes by one member to one conversation per minute | 30 | slow down |
//! | changes by its owner to one story channel's audience per hour | 60 | slow down |
//! | 1:1 conversations opened in 24 h and unanswered after 60 min | 12 | suspend |
//! | qualified accounts blocking it | 5 | flag for an admin |
//! | qualified accounts reporting it (verified reports) | 3 | flag for an admin |
//! | cool-offs within 24 h | a third one | suspend |
//! | successful registrations per IP per hour | 10 | `429` on registration |
//! | registration attempts per IP per hour, failed ones included | 60 | `429` on registration |
//!
//! Blocks and reports are *qualified* only when they come from an account older than
//! `young_account_hours` to which the target has written (a report proves it; for a block,
//! the target posted in a 1:1 conversation with the blocker). Others are kept but never counted,
//! so throwaway accounts cannot move anyone's reputation; and even qualified ones only raise
//! a flag for an admin (`kithd admin signals`), never a suspension.
//!
//! A cool-off lasts `cool_off_minutes` (60): the account can go on talking in its existing
//! conversations but cannot open new ones, create groups or claim KeyPackages. A suspension
//! stops every authenticated request with `403 suspended` until an admin lifts it. Every
//! cool-off and suspension is recorded with its reason (`kithd admin accounts --flagged`).

use std::net::IpAddr;
use std::sync::Mutex;

use kith_store::Millis;
use serde::Deserialize;

use super::signals::{DAY, HOUR, MINUTE, Signals};
use kith_proto::GroupType;
use kith_store::SignalKind;

/// Thresholds, from the `[safety]` table of the configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    pub max_messages_per_minute: u32,
    pub max_new_conversations_per_hour: u32,
    pub max_groups_created_per_hour: u32,
    pub max_unused_claims_per_hour: u32,
    pub max_key_package_claims_per_hour: u32,
    pub max_claims_of_one_account_per_hour: u32,
    /// Accounts younger than this get half of the hourly limits above.
    pub young_account_hours: u64,
    pub unanswered_conversations_per_day: u32,
    pub unanswered_grace_minutes: u64,
    /// Qualified blocks after which the account is flagged for an admin.
    #[serde(alias = "blocks_to_suspend")]
    pub blocks_to_flag: u64,
    /// Qualified reports after which the account is flagged for an admin.
    #[serde(alias = "reports_to_suspend")]
    pub reports_to_flag: u64,
    /// One-time KeyPackages of one account handed out per hour, all claimers together; past
    /// it, claims get the last-resort KeyPackage.
    pub key_package_budget_per_hour: u32,
    pub max_changes_per_minute: u32,
    pub max_changes_per_conversation_per_minute: u32,
    pub max_story_changes_per_hour: u32,
    pub cool_off_minutes: u64,
    /// Cool-offs within 24 h after which the next breach suspends.
    pub cool_offs_before_suspension: u32,
    pub registrations_per_ip_per_hour: u32,
    /// Registration attempts per IP per hour, failed ones included: past it, `429`.
    pub registration_attempts_per_ip_per_hour: u32,
    /// Uploads refused for an unusable KeyPackage (per account, per hour) after which the
    /// uploader cools off. Only the account's own devices can upload for it.
    pub max_unusable_uploads_per_hour: u32,
    /// Bytes of messages one account may have the server store per hour (its disk quota's
    /// rate; the retention limit bounds how long they stay).
    pub max_bytes_per_hour: u64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            max_messages_per_minute: 120,
            max_new_conversations_per_hour: 20,
            max_groups_created_per_hour: 10,
            max_unused_claims_per_hour: 30,
            max_key_package_claims_per_hour: 500,
            max_claims_of_one_account_per_hour: 3,
            young_account_hours: 72,
            unanswered_conversations_per_day: 12,
            unanswered_grace_minutes: 60,
            blocks_to_flag: 5,
            reports_to_flag: 3,
            key_package_budget_per_hour: 10,
            max_changes_per_minute: 60,
            max_changes_per_conversation_per_minute: 30,
            max_story_changes_per_hour: 60,
            cool_off_minutes: 60,
            cool_offs_before_suspension: 2,
            registrations_per_ip_per_hour: 10,
            registration_attempts_per_ip_per_hour: 60,
            max_unusable_uploads_per_hour: 3,
            max_bytes_per_hour: 256 << 20,
        }
    }
}

/// What the policy decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// Transient: try again after this many seconds.
    SlowDown {
        retry_after: u64,
        reason: String,
    },
    /// No new conversations, groups or KeyPackage claims until it ends.
    CoolOff {
        retry_after: u64,
        reason: String,
        new: bool,
    },
    Suspend {
        reason: String,
    },
}

/// The safety engine: signals plus policy. Methods named `check_*` decide before an operation;
/// `note_*` record one that happened.
pub struct Safety {
    pub config: SafetyConfig,
    /// A std mutex: every method holds it for a few map operations, never across an await.
    signals: Mutex<Signals>,
}

/// Where registrations are counted from: the address, or for IPv6 its /64 (one subscriber's
/// whole prefix) — the same source the connection caps count by.
pub use kith_listen::source as registration_source;

/// How long a claimed KeyPackage may wait to be used before it counts as unused.
const CLAIM_GRACE: Millis = 2 * MINUTE;

fn secs(ms: Millis) -> u64 {
    ms.div_ceil(1000).max(1)
}

impl Safety {
    pub fn new(config: SafetyConfig) -> Self {
        Safety { config, signals: Mutex::new(Signals::default()) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Signals) -> T) -> T {
        let mut guard = match self.signals.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// An hourly limit, halved for young accounts.
    fn limit(&self, base: u32, account_created: Millis, now: Millis) -> u64 {
        let young = account_created + self.config.young_account_hours * HOUR > now;
        if young { u64::from(base.div_ceil(2)) } else { u64::from(base) }
    }

    /// Starts a cool-off, or suspends if cool-offs keep coming.
    fn breach(&self, s: &mut Signals, user: &str, reason: String, now: Millis) -> Action {
        let a = s.account(user, now);
        if let Some(until) = a.cool_off_until.filter(|u| *u > now) {
            return Action::CoolOff { retry_after: secs(until - now), reason, new: false };
        }
        if a.cool_offs.count(now, DAY) >= u64::from(self.config.cool_offs_before_suspension) {
            return Action::Suspend { reason: format!("{reason}, after repeated cool-offs") };
        }
        let until = now + self.config.cool_off_minutes * MINUTE;
        a.cool_off_until = Some(until);
        a.cool_offs.add(now, 1);
        Action::CoolOff { retry_after: secs(until - now), reason, new: true }
    }

    fn cooling(&self, s: &mut Signals, user: &str, now: Millis) -> Option<Action> {
        let a = s.account(user, now);
        a.cool_off_until.filter(|u| *u > now).map(|until| Action::CoolOff {
            retry_after: secs(until - now),
            reason: "cooling off: no new conversations, groups or contacts for now".into(),
            new: false,
        })
    }

    /// Before accepting an application message: the per-account message rate.
    pub fn check_send(&self, user: &str, now: Millis) -> Action {
        let cap = f64::from(self.config.max_messages_per_minute.max(1));
        let per_ms = cap / MINUTE as f64;
        self.with(|s| {
            let a = s.account(user, now);
            if a.refilled_at == 0 {
                a.tokens = cap;
            } else {
                let elapsed = now.saturating_sub(a.refilled_at) as f64;
                a.tokens = (a.tokens + elapsed * per_ms).min(cap);
            }
            a.refilled_at = now;
            if a.tokens >= 1.0 {
                a.tokens -= 1.0;
                Action::Allow
            } else {
                let wait = ((1.0 - a.tokens) / per_ms).ceil() as u64;
                Action::SlowDown {
                    retry_after: secs(wait),
                    reason: format!("more than {cap} messages a minute"),
                }
            }
        })
    }

    /// Before storing `bytes` of a message from `user`: its hourly volume.
    pub fn check_volume(&self, user: &str, bytes: u64, now: Millis) -> Action {
        let limit = self.config.max_bytes_per_hour;
        self.with(|s| {
            let a = s.account(user, now);
            if a.bytes_sent.count(now, HOUR).saturating_add(bytes) > limit {
                return Action::SlowDown {
                    retry_after: 300,
                    reason: format!("more than {} MiB of messages an hour", limit >> 20),
                };
            }
            a.bytes_sent.add(now, u32::try_from(bytes).unwrap_or(u32::MAX));
            Action::Allow
        })
    }

    /// After an application message was accepted: it answers a 1:1 conversation if its sender
    /// did not open it.
    pub fn note_send(&self, user: &str, conversation: &[u8], now: Millis) {
        self.with(|s| {
            if let Some(opener) = s.openers.get(conversation).cloned()
                && opener != user
            {
                s.account(&opener, now).unanswered.remove(conversation);
                s.openers.remove(conversation);
            }
        })
    }

    /// Before creating a conversation.
    pub fn check_new_conversation(
        &self,
        user: &str,
        kind: GroupType,
        account_created: Millis,
        now: Millis,
    ) -> Action {
        if kind == GroupType::Story {
            return Action::Allow; // one's own story channel reaches contacts only
        }
        let direct = kind == GroupType::Direct;
        self.with(|s| {
            if let Some(cooling) = self.cooling(s, user, now) {
                return cooling;
            }
            let grace = self.config.unanswered_grace_minutes * MINUTE;
            let a = s.account(user, now);
            if direct {
                let unanswered = a.unanswered(now, grace);
                if unanswered >= u64::from(self.config.unanswered_conversations_per_day) {
                    return Action::Suspend {
                        reason: format!(
                            "{unanswered} conversations opened in 24 h went unanswered"
                        ),
                    };
                }
                let limit =
                    self.limit(self.config.max_new_conversations_per_hour, account_created, now);
                if a.new_directs.count(now, HOUR) >= limit {
                    let reason = format!("more than {limit} new conversations in an hour");
                    return self.breach(s, user, reason, now);
                }
                // Counted now, under the lock, so concurrent requests cannot all slip under
                // the limit; given back if the conversation is not created.
                a.new_directs.add(now, 1);
            } else {
                let limit =
                    self.limit(self.config.max_groups_created_per_hour, account_created, now);
                if a.groups_created.count(now, HOUR) >= limit {
                    let reason = format!("more than {limit} groups created in an hour");
                    return self.breach(s, user, reason, now);
                }
                a.groups_created.add(now, 1);
            }
            Action::Allow
        })
    }

    /// A conversation allowed by [`Safety::check_new_conversation`] at `at` was not created
    /// after all: it no longer counts.
    pub fn release_new_conversation(&self, user: &str, direct: bool, at: Millis) {
        self.with(|s| {
            let a = s.account(user, at);
            let w = if direct { &mut a.new_directs } else { &mut a.groups_created };
            w.remove(at, 1);
        })
    }

    /// After a conversation was created, with the KeyPackages it used.
    pub fn note_new_conversation(
        &self,
        user: &str,
        conversation: &[u8],
        kind: GroupType,
        accounts: &[String],
        devices_added: u32,
        now: Millis,
    ) {
        self.with(|s| {
            let a = s.account(user, now);
            a.used.add(now, devices_added);
            for target in accounts {
                a.used_of.entry(target.clone()).or_default().add(now, 1);
            }
            if kind == GroupType::Story {
                return;
            }
            // (Counted toward the hourly limits by `check_new_conversation` already.)
            if kind == GroupType::Direct {
                a.unanswered.insert(conversation.to_vec(), now);
                s.openers.insert(conversation.to_vec(), user.to_string());
            }
        })
    }

    /// After a commit or a new conversation added `accounts` (with `devices_added` devices):
    /// the KeyPackages claimed for them were used.
    pub fn note_used(&self, user: &str, accounts: &[String], devices_added: u32, now: Millis) {
        self.with(|s| {
            let a = s.account(user, now);
            a.used.add(now, devices_added);
            for target in accounts {
                a.used_of.entry(target.clone()).or_default().add(now, 1);
            }
        })
    }

    /// Before `user` changes a conversation (a commit, a proposal, its creation): its own rate
    /// of changes, apart from its message rate.
    pub fn check_account_change(&self, user: &str, now: Millis) -> Action {
        let limit = self.config.max_changes_per_minute;
        self.with(|s| {
            let a = s.account(user, now);
            if a.changes.count(now, MINUTE) >= u64::from(limit) {
                return Action::SlowDown {
                    retry_after: secs(MINUTE / u64::from(limit.max(1))),
                    reason: format!("more than {limit} changes to conversations a minute"),
                };
            }
            a.changes.add(now, 1);
            Action::Allow
        })
    }

    /// Before `user` changes a conversation (a commit, a proposal, its creation): its rate of
    /// changes to that conversation, per minute for groups and per hour for a story channel's
    /// audience. Counted per member, so a hostile member burns its own budget, not the
    /// admins'.
    pub fn check_change(
        &self,
        user: &str,
        conversation: &[u8],
        story: bool,
        now: Millis,
    ) -> Action {
        let (limit, span, what) = if story {
            (self.config.max_story_changes_per_hour, HOUR, "changes to a story channel an hour")
        } else {
            (
                self.config.max_changes_per_conversation_per_minute,
                MINUTE,
                "changes to a conversation a minute",
            )
        };
        self.with(|s| {
            let key = [conversation, user.as_bytes()].concat();
            let w = s.changes.entry(key).or_default();
            if w.count(now, span) >= u64::from(limit) {
                return Action::SlowDown {
                    retry_after: secs(span / u64::from(limit.max(1))),
                    reason: format!("more than {limit} {what}"),
                };
            }
            w.add(now, 1);
            Action::Allow
        })
    }

    /// Whether a claim of `target`'s KeyPackages may take one-time ones (and counts it), or
    /// must make do with the last-resort ones: the budget all claimers share.
    pub fn take_key_package_budget(&self, target: &str, now: Millis) -> bool {
        self.with(|s| {
            let w = s.claimed.entry(target.to_string()).or_default();
            if w.count(now, HOUR) >= u64::from(self.config.key_package_budget_per_hour) {
                return false;
            }
            w.add(now, 1);
            true
        })
    }

    /// Before handing out `target`'s KeyPackages.
    pub fn check_claim(
        &self,
        user: &str,
        target: &str,
        account_created: Millis,
        now: Millis,
    ) -> Action {
        self.with(|s| {
            if let Some(cooling) = self.cooling(s, user, now) {
                return cooling;
            }
            let a = s.account(user, now);
            let of_target = a.claims_of.entry(target.to_string()).or_default().count(now, HOUR);
            let used = a.used_of.entry(target.to_string()).or_default().count(now, HOUR);
            // Claims of one person that ended in a conversation are ordinary use (a chat, a
            // story, two groups with the same friend in an hour); the unused ones are not.
            if of_target.saturating_sub(used)
                >= u64::from(self.config.max_claims_of_one_account_per_hour)
            {
                let reason = format!("claimed {target}'s KeyPackages over and over");
                return self.breach(s, user, reason, now);
            }
            let a = s.account(user, now);
            if a.claims.count(now, HOUR) >= u64::from(self.config.max_key_package_claims_per_hour) {
                return Action::SlowDown {
                    retry_after: 60,
                    reason: "too many KeyPackage claims this hour".into(),
                };
            }
            // Claims still in flight (a conversation being built) get two minutes to be used.
            let settled = a.claims.count_older(now, HOUR, CLAIM_GRACE);
            let used = a.used.count(now, HOUR);
            let limit = self.limit(self.config.max_unused_claims_per_hour, account_created, now);
            if settled.saturating_sub(used) >= limit {
                let reason =
                    format!("more than {limit} KeyPackages claimed and never used in an hour");
                return self.breach(s, user, reason, now);
            }
            Action::Allow
        })
    }

    /// After an upload was refused for a KeyPackage no Kith group can take: it counts against
    /// the uploader (never against whoever would have claimed it).
    pub fn note_unusable_upload(&self, user: &str, now: Millis) -> Action {
        self.with(|s| {
            let a = s.account(user, now);
            a.unusable_uploads.add(now, 1);
            let n = a.unusable_uploads.count(now, HOUR);
            if n >= u64::from(self.config.max_unusable_uploads_per_hour.max(1)) {
                let reason = format!("uploaded unusable KeyPackages {n} times in an hour");
                return self.breach(s, user, reason, now);
            }
            Action::Allow
        })
    }

    pub fn note_claim(&self, user: &str, target: &str, key_packages: u32, now: Millis) {
        self.with(|s| {
            let a = s.account(user, now);
            a.claims.add(now, key_packages);
            a.claims_of.entry(target.to_string()).or_default().add(now, 1);
            a.claims_of.retain(|_, w| w.count(now, HOUR) > 0);
            a.used_of.retain(|_, w| w.count(now, HOUR) > 0);
        })
    }

    /// Whether a new qualified block or report brings the account to a threshold: the reason
    /// to flag it for an admin, once (at the threshold itself, so a later one adds nothing).
    /// Never a suspension: see the module's table.
    pub fn reputation_flag(&self, kind: SignalKind, qualified: u64) -> Option<String> {
        let (threshold, what) = match kind {
            SignalKind::Block => (self.config.blocks_to_flag, "blocked"),
            SignalKind::Report => (self.config.reports_to_flag, "reported"),
        };
        (qualified == threshold.max(1))
            .then(|| format!("{what} by {qualified} accounts it wrote to; review it"))
    }

    /// Before a registration from `ip` (an IPv6 address counts for its whole /64): counted at
    /// once, under the lock, so concurrent requests cannot slip past the limit — and given
    /// back by [`Safety::registration_failed`], so only successful registrations count and
    /// bad requests cannot lock out an address.
    pub fn check_registration(&self, ip: IpAddr, now: Millis) -> Action {
        let source = registration_source(ip);
        self.with(|s| {
            // Failed attempts cost the server too (a taken name with 200 KeyPackages is the
            // costliest request there is): all attempts count, under a higher limit.
            let tried = s.registration_attempts.entry(source).or_default();
            if tried.count(now, HOUR)
                >= u64::from(self.config.registration_attempts_per_ip_per_hour)
            {
                return Action::SlowDown {
                    retry_after: 600,
                    reason: "too many registration attempts from this address; try again later"
                        .into(),
                };
            }
            tried.add(now, 1);
            let w = s.registrations.entry(source).or_default();
            if w.count(now, HOUR) >= u64::from(self.config.registrations_per_ip_per_hour) {
                return Action::SlowDown {
                    retry_after: 600,
                    reason: "too many registrations from this address; try again later".into(),
                };
            }
            w.add(now, 1);
            Action::Allow
        })
    }

    /// A registration allowed by [`Safety::check_registration`] at `at` failed.
    pub fn registration_failed(&self, ip: IpAddr, at: Millis) {
        let source = registration_source(ip);
        self.with(|s| {
            if let Some(w) = s.registrations.get_mut(&source) {
                w.remove(at, 1);
            }
        })
    }

    /// Periodic clean-up of old signals.
    pub fn prune(&self, now: Millis) {
        self.with(|s| s.prune(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_800_000_000_000;

    #[test]
    fn message_rate_slows_down_then_refills() {
        let s = Safety::new(SafetyConfig { max_messages_per_minute: 3, ..Default::default() });
        for _ in 0..3 {
            assert_eq!(s.check_send("a", T0), Action::Allow);
        }
        assert!(matches!(s.check_send("a", T0), Action::SlowDown { retry_after: 20, .. }));
        assert_eq!(s.check_send("a", T0 + 20_000), Action::Allow);
        // Another account has its own budget.
        assert_eq!(s.check_send("b", T0), Action::Allow);
    }

    #[test]
    fn too_many_new_conversations_cool_off_then_suspend() {
        let s = Safety::new(SafetyConfig::default());
        let old = T0 - 10 * DAY;
        let mut now = T0;
        for round in 0..3 {
            for i in 0..20u32 {
                assert_eq!(
                    s.check_new_conversation("x", GroupType::Direct, old, now),
                    Action::Allow
                );
                s.note_new_conversation("x", &[round, i as u8], GroupType::Direct, &[], 1, now);
                now += 1000;
            }
            match s.check_new_conversation("x", GroupType::Direct, old, now) {
                Action::CoolOff { new: true, .. } if round < 2 => {}
                Action::Suspend { reason } if round == 2 => {
                    assert!(reason.contains("repeated cool-offs"), "{reason}");
                }
                other => panic!("round {round}: {other:?}"),
            }
            // During the cool-off nothing new is allowed; after it, the hour window is clean.
            if round < 2 {
                assert!(matches!(
                    s.check_new_conversation("x", GroupType::Direct, old, now + 1000),
                    Action::CoolOff { new: false, .. }
                ));
            }
            now += 61 * MINUTE;
            // Answer them all so the unanswered rule stays out of this test.
            for i in 0..20u32 {
                s.note_send("peer", &[round, i as u8], now);
            }
        }
    }

    #[test]
    fn unanswered_conversations_suspend_slow_spammers() {
        let s = Safety::new(SafetyConfig::default());
        let old = T0 - 10 * DAY;
        // Five a hour is well under the hourly limit, but nobody answers.
        let mut now = T0;
        let mut opened = 0u32;
        let action = loop {
            let a = s.check_new_conversation("slow", GroupType::Direct, old, now);
            if a != Action::Allow {
                break a;
            }
            s.note_new_conversation("slow", &opened.to_be_bytes(), GroupType::Direct, &[], 1, now);
            opened += 1;
            now += 12 * MINUTE;
        };
        assert!(matches!(action, Action::Suspend { .. }), "{action:?}");
        assert!(opened <= 20, "{opened}");
        // A normal account whose conversations are answered is never caught.
        let mut now = T0;
        for i in 0..40u32 {
            assert_eq!(
                s.check_new_conversation("kind", GroupType::Direct, old, now),
                Action::Allow
            );
            s.note_new_conversation(
                "kind",
                &(1000 + i).to_be_bytes(),
                GroupType::Direct,
                &[],
                1,
                now,
            );
            s.note_send("friend", &(1000 + i).to_be_bytes(), now + MINUTE);
            now += 2 * HOUR;
        }
    }

    #[test]
    fn unused_claims_cool_off_but_used_ones_do_not() {
        let s = Safety::new(SafetyConfig::default());
        let old = T0 - 10 * DAY;
        for i in 0..100 {
            let friend = format!("f{i}");
            assert_eq!(s.check_claim("builder", &friend, old, T0 + i), Action::Allow);
            s.note_claim("builder", &friend, 1, T0 + i);
            s.note_used("builder", std::slice::from_ref(&friend), 1, T0 + i);
        }
        // Claims a second apart: unused ones count once they are two minutes old.
        let mut claimed = 0;
        let now = |n: u64| T0 + n * 1000;
        while s.check_claim("drainer", &format!("v{claimed}"), old, now(claimed)) == Action::Allow {
            s.note_claim("drainer", &format!("v{claimed}"), 1, now(claimed));
            claimed += 1;
        }
        // 119 in flight (younger than two minutes) and 30 settled, unused ones.
        assert_eq!(claimed, 119 + 30);
        // Draining one person is caught at once.
        for _ in 0..3 {
            assert_eq!(s.check_claim("leech", "victim", old, T0), Action::Allow);
            s.note_claim("leech", "victim", 1, T0);
        }
        assert!(matches!(s.check_claim("leech", "victim", old, T0), Action::CoolOff { .. }));
    }

    #[test]
    fn young_accounts_get_half_the_hourly_limits() {
        let s = Safety::new(SafetyConfig::default());
        let mut n = 0u32;
        while s.check_new_conversation("new", GroupType::Group, T0, T0) == Action::Allow {
            s.note_new_conversation("new", &n.to_be_bytes(), GroupType::Group, &[], 3, T0);
            n += 1;
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn registrations_per_ip() {
        let s =
            Safety::new(SafetyConfig { registrations_per_ip_per_hour: 2, ..Default::default() });
        let ip: IpAddr = [127, 0, 0, 1].into();
        // Refused attempts (a bad request, a taken name) do not count.
        for _ in 0..5 {
            assert_eq!(s.check_registration(ip, T0), Action::Allow);
            s.registration_failed(ip, T0);
        }
        assert_eq!(s.check_registration(ip, T0), Action::Allow);
        assert_eq!(s.check_registration(ip, T0), Action::Allow);
        assert!(matches!(s.check_registration(ip, T0), Action::SlowDown { .. }));
        // One IPv6 /64 is one source.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(s.check_registration(a, T0), Action::Allow);
        assert_eq!(s.check_registration(b, T0), Action::Allow);
        assert!(matches!(s.check_registration(a, T0), Action::SlowDown { .. }));
        assert_eq!(s.check_registration(other, T0), Action::Allow);
        assert_eq!(s.check_registration(ip, T0 + HOUR + 1), Action::Allow);
    }
}
