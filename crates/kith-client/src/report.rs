//! What a sync or a push brought ([`SyncReport`]), and what it could not do ([`Problem`]):
//! one bad input is skipped, recorded and reported for its own conversation while every other
//! message is shown and every other upkeep step runs.

use kith_proto::{Incoming, QueueEntry};

use crate::error::{ClientError, ClientResult};
use crate::local::Message;

/// What a sync or a push brought.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// New messages, in the order they were stored: everything received and not handed over
    /// before (also what a send took in while catching up, or a sync cut short).
    pub messages: Vec<Message>,
    /// Conversations this device joined.
    pub joined: Vec<String>,
    /// Entries that could not be used (undecryptable, malformed, forged sender) and were
    /// dropped; they are counted, never shown (each is also in `problems`, by conversation).
    pub dropped: u32,
    /// Entries the server delivered again that were already processed.
    pub duplicates: u32,
    /// Entries that arrived before what they depend on (their conversation's Welcome, their
    /// epoch's commit) and are kept to be tried again when it comes.
    pub held: u32,
    /// Entries from accounts this device blocks, left out (sent before the block took effect).
    pub blocked: u32,
    /// Messages that arrived too late to be read: their epoch's keys were already deleted
    /// (forward secrecy). Only a transport that holds messages back while later commits pass
    /// causes this; the server delivers in order.
    pub too_late: u32,
    /// The story channel gained or lost members (contacts made or ended) in this sync.
    pub story_audience_changed: bool,
    /// Messages whose time was up, deleted from this device.
    pub expired: usize,
    /// What could not be done, each for its own conversation (or contact), while everything
    /// else went on: an entry dropped, a contact not added, an upkeep step that failed.
    pub problems: Vec<Problem>,
    /// What the server's key directory did not prove, or showed for this account that none
    /// of its devices made (`crate::kt`), found since the last sync: loud, each shown once.
    pub key_warnings: Vec<crate::KeyWarning>,
    /// Entries came from the server in this sync (read or not).
    pub(crate) took_in: bool,
}

impl SyncReport {
    /// Whether anything was taken in (so a sync cut short still has something to show).
    pub(crate) fn took_anything(&self) -> bool {
        !self.joined.is_empty()
            || self.dropped + self.duplicates + self.held + self.blocked + self.too_late > 0
            || !self.problems.is_empty()
            || self.took_in
    }

    /// The entries of a page that could be read; each one that could not is dropped, counted
    /// and reported for its conversation (it is acknowledged with the rest).
    pub(crate) fn readable(&mut self, entries: Vec<Incoming>) -> Vec<QueueEntry> {
        self.took_in |= !entries.is_empty();
        let mut out = Vec::with_capacity(entries.len());
        for incoming in entries {
            match incoming {
                Incoming::Entry(e) => out.push(e),
                Incoming::Unreadable { conversation_id, why, .. } => {
                    tracing::warn!(error = %why, "dropped a queue entry this version cannot read");
                    self.dropped += 1;
                    self.problems.push(Problem {
                        kind: ProblemKind::Malformed,
                        conversation: conversation_id,
                        user: None,
                        detail: String::new(),
                    });
                }
            }
        }
        out
    }

    /// Messages the server skipped this device for while its queue was full: a problem per
    /// conversation, with how many.
    pub(crate) fn missed_while_full(&mut self, missed: &[kith_proto::Missed]) {
        for m in missed.iter().filter(|m| m.count > 0) {
            self.problems.push(Problem {
                kind: ProblemKind::Missed,
                conversation: m.conversation_id.clone(),
                user: None,
                detail: m.count.to_string(),
            });
        }
    }

    /// An upkeep step failed: reported, and the others go on — unless the fault is this
    /// device's own (its storage), which stops everything.
    pub(crate) fn upkeep_failed(&mut self, e: ClientError) -> ClientResult<()> {
        if e.is_local() {
            return Err(e);
        }
        tracing::warn!(error = %e, "an upkeep step failed; the others go on");
        self.problems.push(Problem {
            kind: if e.is_unreached() { ProblemKind::Unreached } else { ProblemKind::Upkeep },
            conversation: String::new(),
            user: None,
            detail: e.to_string(),
        });
        Ok(())
    }
}

/// Something a sync could not do. `Display` says it in plain words (without the conversation's
/// name, which only the caller knows how to show).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The conversation it concerns; empty when none (a contact, the server, an entry whose
    /// conversation could not be read).
    pub conversation: String,
    /// The account it concerns, when it is about one (a contact who could not be added).
    /// Never a name only the server vouches for.
    pub user: Option<String>,
    /// Why, in plain words.
    pub detail: String,
}

/// Kinds of [`Problem`]; stable codes ([`ProblemKind::as_str`]) for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A message that could not be decrypted or verified: dropped.
    Unreadable,
    /// An invitation (Welcome) that could not be joined: dropped.
    Unjoinable,
    /// An entry this version cannot read at all (an unknown kind, a malformed field): dropped.
    Malformed,
    /// A contact who could not be added to a conversation (their KeyPackages cannot be used,
    /// or they have none): tried again at a later sync.
    NotAdded,
    /// An upkeep step (a pending leave, the story channel's audience) that failed; the others
    /// ran and it is tried again at the next sync.
    Upkeep,
    /// The server stopped answering part-way: what came before is shown, the rest waits.
    Unreached,
    /// Messages that never reached this device: sent while its queue on the server was full
    /// (it was away long). `detail` says how many.
    Missed,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::Unjoinable => "unjoinable",
            ProblemKind::Malformed => "malformed",
            ProblemKind::NotAdded => "not_added",
            ProblemKind::Upkeep => "upkeep",
            ProblemKind::Unreached => "unreached",
            ProblemKind::Missed => "missed",
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind, &self.user) {
            (ProblemKind::Unreadable, _) => {
                write!(f, "a message could not be decrypted or verified and was dropped")?
            }
            (ProblemKind::Unjoinable, _) => {
                write!(f, "an invitation could not be joined and was dropped")?
            }
            (ProblemKind::Malformed, _) => {
                write!(f, "an entry this version cannot read was dropped")?
            }
            (ProblemKind::NotAdded, Some(user)) => write!(f, "{user} could not be added")?,
            (ProblemKind::NotAdded, None) => write!(f, "a contact could not be added")?,
            (ProblemKind::Upkeep, _) => write!(f, "a change could not be made yet")?,
            (ProblemKind::Unreached, _) => write!(f, "the server stopped answering part-way")?,
            (ProblemKind::Missed, _) => {
                let n = self.detail.as_str();
                let (s, they, were) =
                    if n == "1" { ("message", "it", "was") } else { ("messages", "they", "were") };
                return write!(
                    f,
                    "{n} {s} did not reach this device: {they} {were} sent while its queue on \
                     the server was full"
                );
            }
        }
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}
