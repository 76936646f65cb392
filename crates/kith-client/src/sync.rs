//! A sync: settle what was unsure, fetch the queue page by page, process each entry (see
//! [`crate::process`]), acknowledge, hand new messages over once, and keep KeyPackages topped
//! up.

use kith_proto::*;

use crate::client::{Client, now_millis};
use crate::error::ClientResult;
use crate::local::Message;
use crate::mls;
use crate::process::Flow;
use crate::report::{Problem, ProblemKind, SyncReport};

/// One-time KeyPackages uploaded at registration and kept topped up.
pub(crate) const KEY_PACKAGE_TARGET: usize = 50;

/// Below this many on the server, a sync uploads more.
const KEY_PACKAGE_LOW: u64 = 15;

/// How often a sync checks the KeyPackages the server holds, when nothing was joined.
const KEY_PACKAGE_CHECK: std::time::Duration = std::time::Duration::from_secs(600);

/// How often a fresh last-resort KeyPackage is uploaded (it lives twelve weeks).
const LAST_RESORT_RENEWAL: std::time::Duration = std::time::Duration::from_secs(28 * 86_400);

/// The upkeep record of the last-resort KeyPackage's renewal.
pub(crate) const LAST_RESORT: &str = "last_resort_key_package";

/// Entries asked for per fetch.
const FETCH_PAGE: u32 = 200;

/// Pages one sync fetches at most (200,000 entries).
const MAX_PAGES: u32 = 1000;

impl Client {
    /// Brings this device up to date. The steps, in order (each one's outcome is in the
    /// report; an upkeep step that fails is reported and the others still run):
    /// 1. settles what waited: a token rotation, handshakes whose outcome was unknown, the
    ///    outbox (`crate::unsure`);
    /// 2. takes in invitations held until their sender became a contact;
    /// 3. fetches the queue page by page, processes each entry in its own transaction (held,
    ///    left out or dropped ones counted), acknowledges each page with the missed-message
    ///    counts it told;
    /// 4. tops up this device's KeyPackages after a join, or every ten minutes;
    /// 5. completes the pending requests of members to leave its groups;
    /// 6. brings the story channel's members in line with the contacts
    ///    ([`Client::sync_story_channel`]; `story_audience_changed`);
    /// 7. deletes the messages whose time is up ([`Client::purge_expired`]; `expired`);
    /// 8. hands over every message not handed to the caller yet, once (`messages`), and the
    ///    missed-message counts (`missed`).
    ///
    /// When the server cannot be reached part-way, what came is kept and shown, and the
    /// report says so (`Unreached`); when it is not reached at all, the error is returned.
    pub async fn sync(&mut self) -> ClientResult<SyncReport> {
        self.settle().await?;
        let mut report = SyncReport::default();
        if let Err(e) = self.sync_inner_into(&mut report).await {
            // Reached nothing: the caller hears why. Part-way: what came is shown.
            if e.is_local() || !report.took_anything() {
                return Err(e);
            }
            report.problems.push(Problem {
                kind: ProblemKind::Unreached,
                conversation: String::new(),
                user: None,
                detail: e.to_string(),
            });
        } else {
            // Each upkeep step on its own: one that fails is reported, the others run.
            if let Err(e) = self.commit_pending_leaves().await {
                report.upkeep_failed(e)?;
            }
            // Members who took their account back (told in this sync): their new devices in.
            if let Err(e) = self.replace_recovered_devices().await {
                report.upkeep_failed(e)?;
            }
            // Chats read here, for the account's other devices.
            if let Err(e) = self.share_reads().await {
                report.upkeep_failed(e)?;
            }
            // Blocks another device of this account made or lifted.
            if let Err(e) = self.refresh_blocks().await {
                report.upkeep_failed(e)?;
            }
            // Conversations joined now that still hold a device this account removed.
            let joined = report.joined.clone();
            if let Err(e) = self.tidy_own_leaves(&joined).await {
                report.upkeep_failed(e)?;
            }
            match self.tend_story_audience(&mut report).await {
                Ok(changed) => report.story_audience_changed = changed,
                Err(e) => report.upkeep_failed(e)?,
            }
            // What the key directory published for this account (once a minute).
            if let Err(e) = self.check_own_keys(false).await {
                report.upkeep_failed(e)?;
            }
            // Roots other people's devices took, newer than this device's.
            if let Err(e) = self.check_peer_roots().await {
                report.upkeep_failed(e)?;
            }
        }
        // Key directory warnings, handed over once like messages.
        report.key_warnings = self.local.key_warnings(true)?;
        self.local.mark_key_warnings_shown()?;
        report.expired = self.purge_expired()?;
        report.messages = self.hand_over()?;
        report.missed_while_full(&self.local.take_missed()?);
        Ok(report)
    }

    /// What this device stored and has not handed to the caller yet: what this call received,
    /// and what an earlier one took in without returning it — a catch-up inside a send, or a
    /// sync cut short. Each message is handed over exactly once; one whose time is up is not.
    pub(crate) fn hand_over(&mut self) -> ClientResult<Vec<Message>> {
        if self.defer_shown {
            return Ok(self.local.unshown(self.expiry_now())?);
        }
        Ok(self.local.take_unshown(self.expiry_now())?)
    }

    /// For a caller whose hand-over can be cut short after the call returns (a process that
    /// prints, then may be killed): messages stay unshown — returned again by the next call —
    /// until [`Client::mark_shown`] says they reached their reader. A cut between the two
    /// shows a message twice, never loses it.
    pub fn defer_shown(&mut self, on: bool) {
        self.defer_shown = on;
    }

    /// These messages reached their reader (see [`Client::defer_shown`]).
    pub fn mark_shown(&self, messages: &[Message]) -> ClientResult<()> {
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        Ok(self.local.mark_shown(&ids)?)
    }

    /// Fetch, process and acknowledge, without committing anything.
    pub(crate) async fn sync_inner(&mut self) -> ClientResult<SyncReport> {
        let mut report = SyncReport::default();
        self.sync_inner_into(&mut report).await?;
        Ok(report)
    }

    async fn sync_inner_into(&mut self, report: &mut SyncReport) -> ClientResult<()> {
        // A commit whose outcome is unknown is settled before what arrived on top of it.
        self.settle_all_unsure().await;
        let api = self.api()?;
        self.retry_invitations(report).await?;
        let mut after = 0;
        // A server that keeps saying `more` (only a hostile one does, past this) does not keep
        // a sync going for ever: the rest waits for the next sync.
        for n in 0..MAX_PAGES {
            let page = api.fetch(after, FETCH_PAGE).await?;
            // Messages that skipped this device while its queue was full: told once, with the
            // first page, and acknowledged with it.
            let told = if n == 0 { page.missed } else { Vec::new() };
            self.local.note_missed(&told)?;
            // A page that does not move on (only a hostile server sends one) ends the loop.
            let Some(last) = page.entries.iter().map(Incoming::seq).max().filter(|l| *l > after)
            else {
                if !told.is_empty() {
                    api.ack_told(&[], &told).await?;
                    self.local.missed_acknowledged(&told)?;
                }
                break;
            };
            after = last;
            let seqs: Vec<u64> = page.entries.iter().map(Incoming::seq).collect();
            let entries = report.readable(page.entries);
            self.take_in(&entries, report).await?;
            api.ack_told(&seqs, &told).await?;
            self.local.missed_acknowledged(&told)?;
            if !page.more {
                break;
            }
        }
        // Joins use KeyPackages, and so do other people's claims (several claimers can take
        // up to the server's hourly budget): top up after a join, and otherwise every
        // `KEY_PACKAGE_CHECK` at most. What came in is kept whatever happens here.
        let due = self.key_packages_checked.get().is_none_or(|t| t.elapsed() >= KEY_PACKAGE_CHECK);
        if !report.joined.is_empty() || due {
            match self.replenish_key_packages().await {
                Ok(_) => self.key_packages_checked.set(Some(std::time::Instant::now())),
                Err(e) => report.upkeep_failed(e)?,
            }
        }
        Ok(())
    }

    /// Processes entries obtained some other way (a custom transport, a replay). Entries
    /// already processed are counted as duplicates; nothing is acknowledged to the server.
    /// (The server is asked only for device keys the entries name that this device has not
    /// seen yet.)
    pub async fn receive_entries(&mut self, entries: &[QueueEntry]) -> ClientResult<SyncReport> {
        let mut report = SyncReport::default();
        self.take_in(entries, &mut report).await?;
        report.messages = self.hand_over()?;
        Ok(report)
    }

    /// Invitations held because they came from someone who was not a contact yet (a story
    /// channel) go again once they are.
    async fn retry_invitations(&mut self, report: &mut SyncReport) -> ClientResult<()> {
        let waiting = self.local.held_invitations_from_contacts()?;
        if waiting.is_empty() {
            return Ok(());
        }
        let held = report.held;
        self.take_in(&waiting, report).await?;
        report.held = held;
        for entry in &waiting {
            if self.local.was_processed(entry.message_id)? {
                self.local.unhold(entry.message_id)?;
            }
        }
        Ok(())
    }

    /// Tries again every held entry, conversation by conversation (what waited for a key this
    /// person has just trusted); what goes through is shown with the next sync.
    pub(crate) async fn retry_all_held(&mut self) -> ClientResult<()> {
        let mut report = SyncReport::default();
        self.keys_fetched.clear();
        for conversation in self.local.held_conversations()? {
            while let Flow::NeedKeys(users) = self.retry_held(&conversation, &mut report)? {
                self.fetch_keys(&users).await?;
            }
        }
        self.keys_fetched.clear();
        Ok(())
    }

    /// Processes entries in order; an entry naming device keys not seen yet waits while they
    /// are fetched, then is processed again (see the `keys` module).
    pub(crate) async fn take_in(
        &mut self,
        entries: &[QueueEntry],
        report: &mut SyncReport,
    ) -> ClientResult<()> {
        self.keys_fetched.clear();
        let result = async {
            for entry in entries {
                let mut after_fetch = false;
                loop {
                    let step = if after_fetch && self.local.was_processed(entry.message_id)? {
                        // It went through; one of the entries it freed waited for keys.
                        self.retry_held(&entry.conversation_id, report)
                    } else {
                        self.process_entry(entry, report)
                    };
                    match step? {
                        Flow::NeedKeys(users) => {
                            self.fetch_keys(&users).await?;
                            after_fetch = true;
                        }
                        Flow::Moved | Flow::Still => break,
                    }
                }
            }
            Ok(())
        }
        .await;
        self.keys_fetched.clear();
        result
    }

    /// Uploads KeyPackages when the server holds few, and renews them all — a fresh
    /// last-resort KeyPackage and a fresh batch replacing the one-time ones — every
    /// [`LAST_RESORT_RENEWAL`] (a KeyPackage lives twelve weeks; the server hands out none that
    /// is about to expire, so KeyPackages left to age would make this account unreachable).
    pub async fn replenish_key_packages(&mut self) -> ClientResult<u64> {
        let api = self.api()?;
        let remaining = api.whoami().await?.key_packages_remaining;
        let renew = self.local.upkeep_at(LAST_RESORT)?.is_none_or(|at| {
            now_millis().saturating_sub(at) >= LAST_RESORT_RENEWAL.as_millis() as u64
        });
        if remaining >= KEY_PACKAGE_LOW && !renew {
            return Ok(remaining);
        }
        let me = self.me()?.clone();
        let cert = self.own_certificate()?;
        let cert = cert.as_ref();
        let (fresh, last_resort) = {
            let provider = self.provider();
            let signer = mls::load_signer(&provider, &me.signature_key)?;
            // At a renewal every one-time KeyPackage is replaced too (they live twelve weeks;
            // renewed every four, none is ever handed out expired).
            let n = if renew {
                KEY_PACKAGE_TARGET
            } else {
                KEY_PACKAGE_TARGET.saturating_sub(usize::try_from(remaining).unwrap_or(0))
            };
            let fresh = mls::key_packages(&provider, &signer, &me.username, cert, n, false)?;
            let last_resort = if renew {
                mls::key_packages(&provider, &signer, &me.username, cert, 1, true)?.pop()
            } else {
                None
            };
            (fresh, last_resort)
        };
        let resp = api
            .upload_key_packages(&UploadKeyPackages {
                key_packages: fresh.into_iter().map(B64).collect(),
                last_resort_key_package: last_resort.map(B64),
                replace: renew,
            })
            .await?;
        if renew {
            self.local.set_upkeep_at(LAST_RESORT, now_millis())?;
        }
        Ok(resp.key_packages_remaining)
    }
}
