//! Turning one queue entry into local state, inside one local transaction per entry:
//! [`welcome`] joins from a Welcome, [`message`] reads an application message, [`commit`]
//! applies a commit or stores a proposal. What cannot be used now is not an error: it is a
//! [`Skip`] — held for later, waiting for keys, or left out (counted) — decided here, once.

mod commit;
mod message;
mod welcome;

use kith_proto::*;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;

use crate::client::{Client, now_millis};
use crate::error::{ClientError, ClientResult};
use crate::events::SystemEvent;
use crate::local::{ConversationKind, Message};
use crate::mls;
use crate::report::{Problem, ProblemKind, SyncReport};

/// Entries held at most (see [`SyncReport::held`]); past it the oldest are dropped.
const MAX_HELD: u64 = 1000;
/// Invitations from one account held at most, waiting for it to become a contact.
const MAX_HELD_PER_INVITER: u64 = 20;

/// What a used entry gave: messages for the history, the conversation it joined.
#[derive(Default)]
pub(crate) struct Outcome {
    pub messages: Vec<Message>,
    pub joined: Option<String>,
}

/// Why an entry was not used now. Internal: each is an outcome of processing that
/// [`Client::process_one`] turns into holding, fetching or counting, never an error a caller
/// of the SDK sees.
#[derive(Debug)]
pub(crate) enum Skip {
    /// Arrived before what it depends on (its conversation's Welcome, its epoch's commit):
    /// held, and tried again when the conversation moves.
    NotYet(String),
    /// A story channel's invitation from `adder` (as MLS names it), not a contact yet: held,
    /// and tried again once they are.
    WaitsForContact { adder: String },
    /// Names device keys of these accounts not looked up yet: fetched, then tried again.
    NeedKeys(Vec<String>),
    /// From an account this device blocks: left out, counted apart.
    FromBlocked,
    /// From an epoch whose keys this device has deleted (forward secrecy): too late to read.
    TooLate,
    /// A second copy of a ciphertext already read (its sender posted it again, unsure the
    /// first had arrived): its key was used up by the first.
    Copy,
    /// Unusable for good (a broken rule, a corrupt message): dropped, and reported.
    Unusable(ClientError),
    /// The local store failed: nothing is acknowledged, and the sync stops.
    Fault(ClientError),
}

impl From<ClientError> for Skip {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Storage(_) | ClientError::Io(_) => Skip::Fault(e),
            e => Skip::Unusable(e),
        }
    }
}

impl From<rusqlite::Error> for Skip {
    fn from(e: rusqlite::Error) -> Self {
        Skip::Fault(e.into())
    }
}

/// What processing part of an entry gives, or why it was not used.
pub(crate) type Processing<T> = Result<T, Skip>;

/// Where processing stands after an entry (see [`Client::process_one`]).
pub(crate) enum Flow {
    /// Its conversation moved: entries held for it may be usable now.
    Moved,
    /// Nothing changed (held, left out, or seen before).
    Still,
    /// It waits for these accounts' device keys (see the `keys` module).
    NeedKeys(Vec<String>),
}

/// A received message as MLS vouches for it, beside what the server said of it.
pub(crate) struct Received<'a> {
    pub entry: &'a QueueEntry,
    /// Who signed it, as MLS says (the entry's `sender` is only the server's label).
    pub sender: String,
    pub sender_leaf: Option<LeafNodeIndex>,
    pub aad: Vec<u8>,
    /// The epoch it was sent in.
    pub epoch: u64,
}

/// System lines a handshake produced (who joined, left, was promoted), and which of them, if
/// any, stays when the conversation's messages disappear.
#[derive(Default)]
pub(crate) struct Lines {
    pub lines: Vec<SystemEvent>,
    pub lasting: Option<usize>,
}

/// A system line (who joined, left, was promoted) attached to a received entry.
/// Worded for `me` (see [`SystemEvent::text`]).
fn system(
    entry: &QueueEntry,
    n: usize,
    from: &str,
    (event, me): (SystemEvent, &str),
    expires_at: Option<u64>,
) -> Message {
    Message {
        id: format!("sys-{}-{n}", entry.message_id),
        conversation: entry.conversation_id.clone(),
        kind: ConversationKind::System,
        from: from.to_string(),
        text: event.text(me),
        sent_at: entry.server_time,
        received_at: now_millis(),
        outgoing: false,
        expires_at,
        from_business: false,
        verified: false,
        state: crate::local::Delivery::Sent,
        failure: None,
        event: Some(event),
    }
}

impl Client {
    /// Processes one entry, in the caller's transaction.
    pub(crate) fn process_in_transaction(&self, entry: &QueueEntry) -> Processing<Outcome> {
        if entry.kind == EntryKind::Notice {
            return self.take_notice(entry);
        }
        let message =
            MlsMessageIn::tls_deserialize_exact(&entry.data.0).map_err(ClientError::mls)?;
        match entry.kind {
            EntryKind::Welcome => self.join(entry, message),
            EntryKind::Message | EntryKind::Notice => self.handle(entry, message),
        }
    }

    /// A word from the server about a member of a conversation this device is in: only a
    /// reason to look again, never believed on its own (the keys it points at are checked
    /// when they are fetched). A notice about another conversation, or that does not parse,
    /// is dropped.
    fn take_notice(&self, entry: &QueueEntry) -> Processing<Outcome> {
        let notice: Notice = serde_json::from_slice(&entry.data.0).map_err(|_| {
            Skip::Unusable(ClientError::Protocol("a notice that does not parse".into()))
        })?;
        match notice {
            // Another device of this account read a chat: read here too.
            Notice::Note(sealed) => {
                if entry.sender == self.me()?.username {
                    self.take_note(&sealed.0)?;
                }
            }
            // Another device of this account changed its blocks: read them again.
            Notice::BlocksChanged => {
                if entry.sender == self.me()?.username {
                    self.local.clear_upkeep(crate::safety::BLOCKS_READ)?;
                }
            }
            Notice::Recovered(who) => {
                // About a member of this conversation only (a hostile server could otherwise
                // put a line about anyone anywhere).
                if self.local.conversation(&entry.conversation_id)?.is_some_and(|c| !c.left)
                    && kith_proto::validate_username(&who).is_ok()
                    && who != self.me()?.username
                    && self
                        .conversation_members(&entry.conversation_id)
                        .is_ok_and(|m| m.contains(&who))
                {
                    self.local.note_recovered(&entry.conversation_id, &who)?;
                }
            }
        }
        Ok(Outcome::default())
    }

    fn handle(&self, entry: &QueueEntry, message: MlsMessageIn) -> Processing<Outcome> {
        let provider = self.provider();
        self.with_group(&provider, &entry.conversation_id, |group| {
            self.handle_in(&provider, group, entry, message)
        })
        .map_err(|e| match e {
            // Its Welcome may still be on the way.
            Skip::Unusable(ClientError::UnknownConversation(id)) => {
                Skip::NotYet(format!("no conversation {id} yet"))
            }
            other => other,
        })
    }

    fn handle_in(
        &self,
        provider: &crate::mls::Provider<'_>,
        group: &mut MlsGroup,
        entry: &QueueEntry,
        message: MlsMessageIn,
    ) -> Processing<Outcome> {
        let protocol = message.try_into_protocol_message().map_err(ClientError::mls)?;
        crate::rules::check_wire_format(&protocol)?;
        if protocol.epoch() > group.epoch() {
            return Err(Skip::NotYet(format!(
                "a message for epoch {} while the group is at {}",
                protocol.epoch().as_u64(),
                group.epoch().as_u64()
            )));
        }
        let oldest_kept = group.epoch().as_u64().saturating_sub(mls::MAX_PAST_EPOCHS as u64);
        if matches!(protocol, ProtocolMessage::PrivateMessage(_))
            && protocol.epoch().as_u64() < oldest_kept
        {
            return Err(Skip::TooLate);
        }
        let message_epoch = protocol.epoch().as_u64();
        let processed = match group.process_message(provider, protocol) {
            Ok(processed) => processed,
            Err(ProcessMessageError::ValidationError(ValidationError::UnableToDecrypt(
                openmls::framing::errors::MessageDecryptionError::SecretTreeError(
                    openmls::framing::errors::SecretTreeError::SecretReuseError,
                ),
            ))) => return Err(Skip::Copy),
            Err(e) => return Err(ClientError::mls(e).into()),
        };
        let sender = mls::identity(processed.credential()).unwrap_or_default();
        // MLS says who signed it; the entry's `sender` is only the server's label, and is not
        // believed (a relabelled message is shown as its signer's, not dropped: the device
        // keys below still have to match that signer's registered device).
        if sender != entry.sender {
            tracing::warn!("a message whose signer is not the account the server named");
        }
        let sender_leaf = match processed.sender() {
            Sender::Member(leaf) => Some(*leaf),
            _ => None,
        };
        let aad = processed.aad().to_vec();
        let r = Received { entry, sender, sender_leaf, aad, epoch: message_epoch };
        let (mut messages, lines) = match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                (self.read_application(provider, group, &r, app)?, Lines::default())
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                (Vec::new(), self.apply_commit(provider, group, &r, *staged)?)
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                let lines = self.store_proposal(provider, group, &r, *proposal)?;
                (Vec::new(), Lines { lines, lasting: None })
            }
            _ => (Vec::new(), Lines::default()),
        };
        messages.extend(self.write_lines(&r, lines)?);
        Ok(Outcome { messages, joined: None })
    }

    /// Stores the system lines a handshake produced, as every member sees them; what is new.
    fn write_lines(
        &self,
        r: &Received<'_>,
        Lines { lines, lasting }: Lines,
    ) -> Processing<Vec<Message>> {
        let (entry, sender) = (r.entry, &r.sender);
        let mut messages = Vec::new();
        // Changes to a story channel's audience are nobody's business: no line for anyone.
        // Nor is anything shown of what an account this device blocks does.
        let story = self
            .local
            .conversation(&entry.conversation_id)?
            .is_some_and(|c| c.kind == ConversationKind::Story);
        if lines.is_empty() || story || self.local.is_blocked(sender)? {
            return Ok(messages);
        }
        let timer = self
            .local
            .conversation(&entry.conversation_id)?
            .and_then(|c| c.timer_seconds)
            .map(|t| entry.server_time.saturating_add(t.saturating_mul(1000)));
        let me = self.me()?.username.clone();
        for (n, event) in lines.into_iter().enumerate() {
            let expires_at = if lasting == Some(n) { None } else { timer };
            let line = system(entry, n, sender, (event, &me), expires_at);
            if self.local.insert_message(&line)? {
                messages.push(line);
            }
        }
        Ok(messages)
    }
}

impl Client {
    /// Processes one queue entry in one local transaction, then whatever it freed. An entry
    /// that cannot be used is dropped (and counted); a local storage failure is returned and
    /// nothing is acknowledged.
    pub(crate) fn process_entry(
        &mut self,
        entry: &QueueEntry,
        report: &mut SyncReport,
    ) -> ClientResult<Flow> {
        match self.process_one(entry, report)? {
            Flow::Moved => self.retry_held(&entry.conversation_id, report),
            other => Ok(other),
        }
    }

    /// Processes one entry in its own transaction and decides what becomes of one not used.
    fn process_one(&mut self, entry: &QueueEntry, report: &mut SyncReport) -> ClientResult<Flow> {
        if self.local.was_processed(entry.message_id)? {
            report.duplicates += 1;
            return Ok(Flow::Still);
        }
        let tx = self.local.transaction()?;
        let skip = match self.process_in_transaction(entry) {
            Ok(outcome) => {
                self.local.mark_processed(entry.message_id, now_millis())?;
                tx.commit()?;
                report.messages.extend(outcome.messages);
                report.joined.extend(outcome.joined);
                return Ok(Flow::Moved);
            }
            Err(skip) => skip,
        };
        // Whatever it did is undone; the kept groups may be ahead of what is stored.
        drop(tx);
        self.forget_cached(None);
        match skip {
            Skip::Fault(e) => Err(e),
            // Not processed: tried again once the keys are fetched.
            Skip::NeedKeys(users) => Ok(Flow::NeedKeys(users)),
            // Arrived before its Welcome or its epoch's commit (a reordering transport, or a
            // Welcome still on its way), or an invitation from someone not a contact yet:
            // kept, not marked processed, and tried again once the conversation moves (or they
            // become a contact). An invitation is kept under the name MLS gives its sender,
            // never the server's label, since that name decides its retry.
            Skip::NotYet(why) => self.hold(entry, None, &why, report),
            Skip::WaitsForContact { adder } => {
                self.hold(entry, Some(adder), "an invitation from a non-contact", report)
            }
            Skip::FromBlocked | Skip::TooLate | Skip::Copy => {
                self.local.mark_processed(entry.message_id, now_millis())?;
                match skip {
                    Skip::TooLate => report.too_late += 1,
                    Skip::Copy => report.duplicates += 1,
                    _ => report.blocked += 1,
                }
                Ok(Flow::Still)
            }
            Skip::Unusable(e) => {
                tracing::warn!(message_id = entry.message_id, kind = ?entry.kind, error = %e, "dropped an unusable message");
                self.local.mark_processed(entry.message_id, now_millis())?;
                report.dropped += 1;
                report.problems.push(Problem {
                    kind: match entry.kind {
                        EntryKind::Welcome => ProblemKind::Unjoinable,
                        EntryKind::Message | EntryKind::Notice => ProblemKind::Unreadable,
                    },
                    conversation: entry.conversation_id.clone(),
                    user: None,
                    detail: e.to_string(),
                });
                Ok(Flow::Still)
            }
        }
    }

    /// Holds an entry for later (see [`Skip::NotYet`]); an invitation under its `inviter`.
    fn hold(
        &mut self,
        entry: &QueueEntry,
        inviter: Option<String>,
        why: &str,
        report: &mut SyncReport,
    ) -> ClientResult<Flow> {
        tracing::debug!(message_id = entry.message_id, why, "held a message for later");
        let mut kept = entry.clone();
        if let Some(adder) = inviter {
            // One account's invitations are held up to a few: a stranger cannot push a
            // friend's out of the held set with a flood of story channels.
            if self.local.held_invitations_from(&adder)? >= MAX_HELD_PER_INVITER {
                self.local.mark_processed(entry.message_id, now_millis())?;
                report.dropped += 1;
                report.problems.push(Problem {
                    kind: ProblemKind::Unjoinable,
                    conversation: entry.conversation_id.clone(),
                    user: None,
                    detail: format!("{adder} has more invitations waiting than are kept"),
                });
                return Ok(Flow::Still);
            }
            kept.sender = adder;
        }
        self.local.hold(&kept, now_millis())?;
        report.held += 1;
        for old in self.local.held_over(MAX_HELD)? {
            self.local.unhold(old)?;
            self.local.mark_processed(old, now_millis())?;
            report.dropped += 1;
        }
        Ok(Flow::Still)
    }

    /// Tries the conversation's held entries again, oldest first, until none makes progress.
    pub(crate) fn retry_held(
        &mut self,
        conversation: &str,
        report: &mut SyncReport,
    ) -> ClientResult<Flow> {
        loop {
            let held = self.local.held(conversation)?;
            let mut progress = false;
            for entry in &held {
                let was_held = report.held;
                let flow = self.process_one(entry, report)?;
                // Held again: it was counted when it first arrived.
                report.held = was_held;
                match flow {
                    Flow::NeedKeys(users) => return Ok(Flow::NeedKeys(users)),
                    Flow::Moved => progress = true,
                    Flow::Still => {}
                }
                // Used or dropped for good: it leaves the held set only now, so a failure
                // part-way loses nothing.
                if self.local.was_processed(entry.message_id)? {
                    self.local.unhold(entry.message_id)?;
                }
            }
            if !progress {
                return Ok(Flow::Still);
            }
        }
    }
}
