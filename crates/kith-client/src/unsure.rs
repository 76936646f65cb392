//! Requests whose outcome is unknown, in one place.
//!
//! A request that changes something can end without an answer the device can trust: the
//! network failed after it was sent, the server answered `503`, a gateway in front of it gave
//! up (`502`, `504`). The server may have carried it out, or not. This module decides once
//! what an answer means ([`classify`]: [`Answer::Done`], [`Answer::Refused`],
//! [`Answer::Unknown`]), keeps what is unknown, and posts it again until the server says —
//! the server carries out each of these once however often it comes:
//!
//! - a conversation's creation, a commit, a request to leave (`local::keep_unsure`): posted
//!   again before anything else is done in that conversation ([`Client::settle_unsure`]);
//! - messages: every message is written into the history first, *sending*, and into the
//!   outbox (`local::outbox`); posted with the id this device chose for it
//!   (`SendMessage::client_id`), so a repeat is delivered once; *sent* when the server
//!   answers, *failed* with the reason when it refuses for good ([`Client::retry_message`]
//!   puts it back);
//! - a token rotation (`Client::settle_token`).
//!
//! **The settle step**, [`Client::settle`], runs at one point: at the start of every
//! [`Client::sync`] and whenever a push connection opens ([`Client::connect_push`]) — token,
//! then kept handshakes, then the outbox, oldest first. A message written while the server
//! is down is sent there, without anyone doing anything. (Inside other operations a
//! conversation's own kept handshake is settled before anything else is done in it; the
//! internal catch-up settles kept handshakes, never the outbox.)

use kith_proto::payload::Payload;
use kith_proto::*;

use crate::client::{Client, now_millis};
use crate::convo::message_expiry;
use crate::error::{ClientError, ClientResult};
use crate::local::{self, Unsure, outbox};

/// What a request that changes something got.
#[derive(Debug)]
pub(crate) enum Answer<T> {
    /// Carried out.
    Done(T),
    /// Refused: nothing happened.
    Refused(ClientError),
    /// Carried out or not: nobody can say now.
    Unknown(ClientError),
}

/// What a first post's result means: no answer, or a gateway's `502`–`504`, after every
/// attempt `Api` made, is unknown; any other error is a refusal.
pub(crate) fn classify<T>(result: ClientResult<T>) -> Answer<T> {
    match result {
        Ok(done) => Answer::Done(done),
        Err(e) if outcome_unknown(&e) => Answer::Unknown(e),
        Err(e) => Answer::Refused(e),
    }
}

/// The same for a repeat of something kept: a refusal that does not tell whether the first
/// went through (`401`: a token rotation to settle first; `429`: the first attempts used the
/// limit up) leaves it unknown.
pub(crate) fn classify_repeat<T>(result: ClientResult<T>) -> Answer<T> {
    match classify(result) {
        Answer::Refused(e)
            if matches!(e.code(), Some(ErrorCode::Unauthorized | ErrorCode::RateLimited)) =>
        {
            Answer::Unknown(e)
        }
        other => other,
    }
}

/// Whether the server may have carried out a request it did not answer.
pub(crate) fn outcome_unknown(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Network(_)
            | ClientError::NoAnswer { .. }
            | ClientError::Server { status: 502..=504, .. }
    )
}

/// A kept request as it is stored.
pub(crate) fn request_json<T: serde::Serialize>(request: &T) -> ClientResult<String> {
    serde_json::to_string(request).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Catch-ups before a message that keeps meeting new epochs waits for the next settle step.
const STALE_ATTEMPTS: u32 = 3;

impl Client {
    /// The settle step (see the module): the token, every conversation's kept handshake, then
    /// the outbox. What stays unknown stays kept for the next time; nothing here fails the
    /// caller but a local error.
    pub(crate) async fn settle(&mut self) -> ClientResult<()> {
        self.settle_token().await?;
        match self.ensure_account_key().await {
            Err(e) if e.is_local() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "the account key waits"),
            Ok(()) => {}
        }
        self.certify_leaves().await?;
        match self.ensure_recovery_key().await {
            Err(e) if e.is_local() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "the recovery key waits"),
            Ok(()) => {}
        }
        // Members who took their account back: their new devices in, the old ones out.
        self.replace_recovered_devices().await?;
        // A history a linking device hands this one: what has come since the last time.
        match self.continue_history().await {
            Err(e) if e.is_local() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "the history transfer waits"),
            Ok(_) => {}
        }
        self.settle_all_unsure().await;
        match self.send_outbox(None, None).await {
            Err(e) if e.is_local() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "the outbox waits"),
            Ok(_) => {}
        }
        Ok(())
    }

    /// Posts again a handshake of this conversation whose outcome was unknown, before anything
    /// else is done in it: the server answers a repeat of one it applied as applied. Applied,
    /// its commit is merged (or the leave completed) and what waited for it is taken in;
    /// refused, the staged commit is dropped; still unknown, the error is returned and it
    /// stays kept.
    pub(crate) async fn settle_unsure(&mut self, id: &str) -> ClientResult<()> {
        let Some((kind, request)) = self.local.unsure(id)? else { return Ok(()) };
        self.settle_token().await?;
        let json = |e: serde_json::Error| ClientError::Protocol(e.to_string());
        if kind == Unsure::Creation {
            let request: CreateConversation = serde_json::from_str(&request).map_err(json)?;
            match classify_repeat(self.api()?.create_conversation(&request).await) {
                Answer::Unknown(e) => return Err(e),
                Answer::Done(_) => {}
                // Refused: it was never made, and goes here too.
                Answer::Refused(e) => {
                    tracing::info!(error = %e, "a creation was refused when posted again");
                    self.forget_group(id);
                    self.local.forget_conversation(id)?;
                }
            }
            return Ok(self.local.forget_unsure(id)?);
        }
        let request: HandshakeRequest = serde_json::from_str(&request).map_err(json)?;
        let answer = classify_repeat(self.api()?.handshake(id, &request).await);
        match (answer, kind == Unsure::Leave) {
            (Answer::Unknown(e), _) => return Err(e),
            (Answer::Done(_), true) => self.left(id)?,
            // Out of the group already, by this request or another way.
            (Answer::Refused(e), true) if e.code() == Some(ErrorCode::NotAMember) => {
                self.left(id)?
            }
            (Answer::Refused(e), true) => {
                tracing::debug!(error = %e, "a request to leave was refused when posted again");
            }
            (answer, false) => {
                if let Err(e) = self.settle_commit(id, matches!(answer, Answer::Done(_))) {
                    tracing::warn!(error = %e, "a kept commit could not be settled");
                }
            }
        }
        self.local.forget_unsure(id)?;
        // Entries that arrived on top of the commit (by push) waited for it.
        let mut report = crate::SyncReport::default();
        self.retry_held(id, &mut report)?;
        Ok(())
    }

    /// Settles every conversation's kept handshake. One that stays unknown holds up nothing
    /// else: entries for its group wait (held) or, if another commit won, replace it; it is
    /// tried again next time.
    pub(crate) async fn settle_all_unsure(&mut self) {
        let ids = match self.local.unsure_conversations() {
            Ok(ids) => ids,
            Err(e) => return tracing::warn!(error = %e, "cannot read the kept handshakes"),
        };
        for id in ids {
            if let Err(e) = self.settle_unsure(&id).await {
                tracing::debug!(error = %e, "a kept handshake is still unsure");
            }
        }
    }

    /// Posts the outbox's waiting messages (of one conversation, or all), oldest first: each
    /// goes to *sent* or *failed*; one whose outcome stays unknown keeps the rest of its
    /// conversation waiting for the next round, and ends the round if the server could not be
    /// reached. `first` names a message just written,
    /// never posted: the only one not posted as a repeat. What each got, by message id.
    pub(crate) async fn send_outbox(
        &mut self,
        conversation: Option<&str>,
        first: Option<String>,
    ) -> ClientResult<Vec<(String, Answer<SendResponse>)>> {
        let mut answers = Vec::new();
        // A conversation whose message stays unknown keeps the rest of its messages waiting
        // (their order is its); the others go on — unless the server cannot be reached at all.
        let mut stuck = std::collections::BTreeSet::new();
        for pending in self.local.sending(conversation)? {
            if stuck.contains(&pending.conversation) {
                continue;
            }
            // Posted before or not, the server is asked to look for it first: cheap, and right
            // whenever an earlier post may have landed.
            let answer = self.post(&pending, first.as_deref() != Some(&pending.message_id)).await?;
            let unreachable = matches!(&answer, Answer::Unknown(e) if outcome_unknown(e));
            if let Answer::Unknown(e) = &answer {
                tracing::debug!(error = %e, "a message waits in the outbox");
                stuck.insert(pending.conversation.clone());
            }
            answers.push((pending.message_id, answer));
            if unreachable {
                break;
            }
        }
        Ok(answers)
    }

    /// Posts one waiting message, encrypted for the conversation's epoch now (after catching
    /// up, if the server says the group moved on), and records what the server said.
    async fn post(
        &mut self,
        pending: &outbox::Pending,
        repeat: bool,
    ) -> ClientResult<Answer<SendResponse>> {
        let id = pending.conversation.as_str();
        let refused = |this: &Self, e: ClientError| -> ClientResult<Answer<SendResponse>> {
            this.local.mark_failed(&pending.message_id, &e.to_string())?;
            Ok(Answer::Refused(e))
        };
        // MLS sends nothing while a commit of this device is staged: settled first.
        if let Err(e) = self.settle_unsure(id).await {
            return if e.is_local() { Err(e) } else { Ok(Answer::Unknown(e)) };
        }
        match self.local.conversation(id)? {
            Some(c) if !c.left => {}
            Some(_) => {
                let e = self.no_longer_in(id)?;
                return refused(self, e);
            }
            None => return refused(self, ClientError::UnknownConversation(id.to_string())),
        }
        // Nothing goes to a verified contact whose account key changed since, whichever way the
        // message came (a chat, a group, a story, a retry, the outbox): checked as it goes.
        let members = self.conversation_members(id)?;
        if let Err(e) = self.check_verified_keys(&members).await {
            return if e.is_local() {
                Err(e)
            } else if e.refusal() == Some(crate::error::Refusal::SafetyNumberChanged) {
                refused(self, e)
            } else {
                Ok(Answer::Unknown(e))
            };
        }
        let mut payload = Payload::decode(&pending.payload)
            .ok_or_else(|| ClientError::Protocol("a waiting message does not decode".into()))?;
        let client_id = hex::decode(&pending.client_id)
            .map_err(|_| ClientError::Protocol("a waiting message has no usable id".into()))?;
        let mut repeat = repeat;
        let first_post = !repeat;
        for attempt in 1..=STALE_ATTEMPTS {
            // A member's request to leave that nobody committed yet would block the message.
            // One that fails leaves the message waiting (tried again next round).
            if let Err(e) = self.commit_pending_in(id).await {
                return if e.is_local() { Err(e) } else { Ok(Answer::Unknown(e)) };
            }
            // The key directory as this device sees it now, for the recipients to compare.
            payload.kt = self
                .local
                .kt_head()?
                .map(|(epoch, root)| kith_proto::payload::KtSeen { epoch, root: B64(root) });
            // Disappearing by the timer of the epoch it is sent in, from now.
            let timer = self.settings_of(id)?.timer;
            payload.disappears_at = timer.map(|t| now_millis().saturating_add(t * 1000));
            let request = SendMessage {
                message: B64(self.seal_at_once(id, &payload)?),
                client_id: Some(B64(client_id.clone())),
                repeat,
            };
            repeat = true;
            let (result, posted_again) = self.api()?.send(id, &request).await;
            let answer = if first_post && !posted_again {
                classify(result)
            } else {
                classify_repeat(result)
            };
            match answer {
                Answer::Done(sent) => {
                    let expiry = match &payload.body {
                        kith_proto::payload::Body::Story { expires_at, .. } => Some(*expires_at),
                        _ => message_expiry(payload.disappears_at, sent.server_time, timer),
                    };
                    self.local.mark_sent(&pending.message_id, expiry)?;
                    return Ok(Answer::Done(sent));
                }
                Answer::Unknown(e) => return Ok(Answer::Unknown(e)),
                // A device that fell behind (commits it has not fetched) catches up and
                // encrypts the same payload again, for the current epoch.
                Answer::Refused(e)
                    if e.code() == Some(ErrorCode::StaleEpoch) && attempt < STALE_ATTEMPTS =>
                {
                    if let Err(e) = self.sync_inner().await {
                        return if e.is_local() { Err(e) } else { Ok(Answer::Unknown(e)) };
                    }
                }
                // Removed while this device was offline: it learns by whom.
                Answer::Refused(e) if e.code() == Some(ErrorCode::NotAMember) => {
                    if let Err(e) = self.sync_inner().await {
                        return if e.is_local() { Err(e) } else { Ok(Answer::Unknown(e)) };
                    }
                    if self.local.conversation(id)?.is_some_and(|c| c.left) {
                        let e = self.no_longer_in(id)?;
                        return refused(self, e);
                    }
                    return refused(self, e);
                }
                Answer::Refused(e) => return refused(self, e),
            }
        }
        // The group kept moving: it waits for the next round.
        Ok(Answer::Unknown(ClientError::Protocol("the group kept changing".into())))
    }

    /// Encrypts in one local transaction: OpenMLS's several writes for one message (its
    /// ratchet's next secrets) land in one commit, or none.
    fn seal_at_once(&self, id: &str, payload: &Payload) -> ClientResult<Vec<u8>> {
        let tx = self.local.transaction()?;
        let sealed = self.seal(id, payload).and_then(|bytes| Ok(tx.commit().map(|()| bytes)?));
        if sealed.is_err() {
            // Rolled back (when the transaction is dropped): the kept group may be ahead of it.
            self.forget_cached(Some(id));
        }
        sealed
    }

    /// Sends a message that failed again (see the module): it goes back to *sending*, after
    /// any message of its conversation still waiting. The message as it stands then.
    pub async fn retry_message(&mut self, message_id: &str) -> ClientResult<local::Message> {
        let Some(conversation) = self.local.retry_outgoing(message_id)? else {
            return Err(ClientError::refused(
                crate::Refusal::BadArgument,
                format!("no failed message {message_id} to send again"),
            ));
        };
        self.settle_token().await?;
        self.send_outbox(Some(&conversation), None).await?;
        self.local
            .message(message_id)?
            .ok_or_else(|| ClientError::UnknownConversation(conversation.clone()))
    }

    /// How many of this device's messages wait to be sent.
    pub fn waiting_to_send(&self) -> ClientResult<u64> {
        Ok(self.local.waiting_to_send()?)
    }
}
