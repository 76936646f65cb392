//! Opening conversations (1:1 and groups) and sending into them.
//!
//! What a send does besides posting, and only in its own conversation: it first settles what
//! waited there (a token rotation, a handshake whose outcome was unknown, earlier messages of
//! the outbox — their order is the conversation's), completes a member's pending request to
//! leave (MLS sends nothing while a proposal is pending), and, when the server says this
//! device is behind (`stale_epoch`, `not_a_member`), catches up before encrypting again. It
//! commits nothing in other conversations, and what a catch-up receives is kept unshown and
//! handed over by the next `sync()` (or push), never lost.

use kith_proto::*;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;

use crate::claims::Claimed;
use crate::client::{Client, conversation_bytes, now_millis, random_hex};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::events::SystemEvent;
use crate::local::{self, Conversation, ConversationKind, Message, Profile};
use crate::mls;
use crate::settings::{Committed, welcome_extension};
use crate::unsure::{Answer, classify, request_json};
use kith_proto::payload::{Body, Payload, valid_group_name};
use kith_proto::settings::Settings;

/// Largest text a message may carry.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

fn check_text(text: &str) -> ClientResult<()> {
    if text.trim().is_empty() {
        return Err(ClientError::refused(Refusal::BadText, "the message is empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(ClientError::refused(
            Refusal::BadText,
            format!("the message is longer than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn check_username(name: &str) -> ClientResult<()> {
    validate_username(name)
        .map_err(|e| ClientError::refused(Refusal::BadUsername, format!("{name:?}: {e}")))
}

/// When a message disappears: at the earlier of the expiry its sender gave it and the moment
/// the server accepted it plus the timer of the epoch it was sent in; never if that epoch had
/// no timer. The same on every device, the sender's included.
pub(crate) fn message_expiry(
    given: Option<u64>,
    accepted_at: u64,
    timer: Option<u64>,
) -> Option<u64> {
    // Saturating: the time comes from the server, which may lie.
    timer.map(|t| accepted_at.saturating_add(t.saturating_mul(1000)).min(given.unwrap_or(u64::MAX)))
}

/// A message sent, and the accounts it did not reach: one of their devices was away so long
/// that its queue on the server was full (each is told, on return, how many it missed).
#[derive(Clone, Debug)]
pub struct Sent {
    pub message: Message,
    pub not_delivered: Vec<String>,
}

impl Client {
    /// Sends `text` to `peer` in a 1:1 conversation, opening one if there is none.
    pub async fn send_text(&mut self, peer: &str, text: &str) -> ClientResult<Message> {
        Ok(self.send_text_reporting(peer, text).await?.message)
    }

    /// [`Client::send_text`], saying whom it did not reach.
    pub async fn send_text_reporting(&mut self, peer: &str, text: &str) -> ClientResult<Sent> {
        check_username(peer)?;
        check_text(text)?;
        self.check_verified_keys(&[peer.to_string()]).await?;
        let conversation = self.direct_conversation(peer).await?;
        let body = Body::Text { text: text.to_string() };
        let sent = match self.write(&conversation, body.clone()).await? {
            // They deleted the chat, and this device has not heard yet: it catches up (their
            // leave), and the message goes in a new conversation, as in every messenger.
            // The first stays in the old chat, failed, until the new one is written: nothing the
            // person wrote is lost on the way.
            (ended, Answer::Refused(e)) if e.code() == Some(ErrorCode::ConversationEnded) => {
                self.sync_inner().await?;
                self.local.set_left(&conversation, now_millis())?;
                let fresh = self.direct_conversation(peer).await?;
                let sent = self.send_body(&fresh, body).await?;
                self.local.discard_outgoing(&ended.id)?;
                sent
            }
            (message, Answer::Done(sent)) => Sent { message, not_delivered: sent.not_delivered },
            (message, Answer::Unknown(_)) => Sent { message, not_delivered: Vec::new() },
            (_, Answer::Refused(e)) => return Err(e),
        };
        // Writing to someone makes them a contact (and puts them in the story channel). The
        // message is out already; a failure here is retried at the next story.
        if let Err(e) = self.became_contact(peer).await {
            tracing::warn!(error = %e, "could not update the story channel");
        }
        Ok(sent)
    }

    /// Sends `text` to a group (by id or name).
    pub async fn send_group(&mut self, group: &str, text: &str) -> ClientResult<Message> {
        Ok(self.send_group_reporting(group, text).await?.message)
    }

    /// [`Client::send_group`], saying whom it did not reach.
    pub async fn send_group_reporting(&mut self, group: &str, text: &str) -> ClientResult<Sent> {
        check_text(text)?;
        let id = self.resolve_group(group)?;
        let members = self.conversation_members(&id)?;
        self.check_verified_keys(&members).await?;
        self.send_body(&id, Body::Text { text: text.to_string() }).await
    }

    /// The 1:1 conversation with `peer`: the newest one known, or a new one.
    pub async fn direct_conversation(&mut self, peer: &str) -> ClientResult<String> {
        let me = self.me()?.clone();
        if peer == me.username {
            return Err(ClientError::refused(
                Refusal::Yourself,
                "you cannot open a conversation with yourself",
            ));
        }
        if let Some(c) = self.local.direct_with(peer)? {
            return Ok(c.id);
        }
        let claimed = self.claim(&[peer.to_string()]).await?;
        let meta = GroupMeta { kind: GroupType::Direct, admins: vec![], settings: None };
        // A new conversation with someone keeps the timer this device had with them: after
        // they deleted the chat, the next message is as disappearing as the last.
        let timer = self
            .local
            .directs_with(peer)?
            .into_iter()
            .max_by_key(|c| c.created_at)
            .and_then(|c| c.timer_seconds);
        let settings = Settings { name: None, timer };
        let conversation = Conversation {
            id: String::new(),
            kind: ConversationKind::Direct,
            peer: Some(peer.to_string()),
            name: None,
            created_at: now_millis(),
            left: false,
            timer_seconds: None,
        };
        self.open_conversation(&me, &meta, claimed, Some(settings), conversation).await
    }

    /// Creates a group named `name` with `members` (usernames) and this device as its admin.
    /// Returns the group's id. Members who cannot be added are left out (see
    /// [`Client::create_group_reporting`]).
    pub async fn create_group(&mut self, name: &str, members: &[String]) -> ClientResult<String> {
        Ok(self.create_group_reporting(name, members).await?.0)
    }

    /// Creates a group as [`Client::create_group`] does, and says who could not be added (no
    /// usable KeyPackage, no such user): they are left out — noted in the group's history —
    /// and the others are in, as messengers do. Fails only when nobody could be added.
    pub async fn create_group_reporting(
        &mut self,
        name: &str,
        members: &[String],
    ) -> ClientResult<(String, Vec<crate::report::Problem>)> {
        let me = self.me()?.clone();
        if !valid_group_name(name) {
            return Err(ClientError::refused(
                Refusal::BadArgument,
                "a group name has 1 to 128 characters and no control characters",
            ));
        }
        let mut others: Vec<String> = Vec::new();
        for m in members {
            check_username(m)?;
            if *m != me.username && !others.contains(m) {
                others.push(m.clone());
            }
        }
        if others.is_empty() {
            return Err(ClientError::refused(
                Refusal::BadArgument,
                "a group needs at least one other member",
            ));
        }
        // The same group asked for again after its creation's answer was lost: settled, and
        // the group it made is the answer (no second group).
        for id in self.local.unsure_conversations()? {
            let Some((local::Unsure::Creation, _)) = self.local.unsure(&id)? else {
                continue;
            };
            if self.local.conversation(&id)?.and_then(|c| c.name).as_deref() == Some(name) {
                self.settle_unsure(&id).await?;
                if self.local.conversation(&id)?.is_some() {
                    return Ok((id, Vec::new()));
                }
            }
        }
        self.check_new_members(&others).await?;
        let mut claims = self.claim_each(&others).await?;
        if claims.claimed.is_empty()
            && let Some((_, first)) = claims.refused.drain(..).next()
        {
            return Err(first);
        }
        let claimed = claims.key_packages();
        let others = claims.users();
        if self.local_checks {
            self.check_size(1 + claimed.len()).await?;
        }
        let meta =
            GroupMeta { kind: GroupType::Group, admins: vec![me.username.clone()], settings: None };
        let settings = Settings { name: Some(name.to_string()), timer: None };
        let conversation = Conversation {
            id: String::new(),
            kind: ConversationKind::Group,
            peer: None,
            name: None,
            created_at: now_millis(),
            left: false,
            timer_seconds: None,
        };
        let id = self.open_conversation(&me, &meta, claimed, Some(settings), conversation).await?;
        self.note(&id, SystemEvent::Created { by: me.username.clone(), with: others.clone() })?;
        let problems = claims.problems(&id);
        for p in &problems {
            self.note(&id, SystemEvent::Problem { text: p.to_string() })?;
        }
        Ok((id, problems))
    }

    /// Creates the MLS group with `settings` (none for a story channel) as its epoch state,
    /// adds the claimed devices, registers it with the server, which delivers the Welcome, and
    /// stores `conversation` (its id filled in). Returns the conversation id.
    pub(crate) async fn open_conversation(
        &mut self,
        me: &Profile,
        meta: &GroupMeta,
        claimed: Vec<Claimed>,
        settings: Option<Settings>,
        mut conversation: Conversation,
    ) -> ClientResult<String> {
        if claimed.is_empty() {
            return Err(ClientError::Protocol(
                "nobody to add: no KeyPackage was handed out".into(),
            ));
        }
        // This account's other devices are in every conversation it opens.
        let mut claimed = claimed;
        claimed.extend(self.claim_own_devices().await?);
        let (id, request, record) = self.build_conversation(me, meta, claimed, settings)?;
        let unknown = match classify(self.api()?.create_conversation(&request).await) {
            Answer::Done(_) => None,
            // Made or not, nobody can say now: kept, and posted again before anything else is
            // done in it (the server answers its creator's repeat as created) — so the others
            // are never left in a conversation its creator dropped, and a retry makes no
            // second one.
            Answer::Unknown(e) => Some(e),
            Answer::Refused(e) => {
                self.forget_group(&id);
                return Err(e);
            }
        };
        conversation.id = id.clone();
        self.local.add_conversation(&conversation)?;
        let epoch = {
            let provider = self.provider();
            let group =
                MlsGroup::load(provider.storage(), &GroupId::from_slice(&conversation_bytes(&id)?))
                    .map_err(ClientError::mls)?
                    .ok_or_else(|| ClientError::UnknownConversation(id.clone()))?;
            group.epoch().as_u64()
        };
        match &record {
            Some(c) => self.local.set_settings(&id, epoch, &c.settings, Some(&c.record))?,
            None => self.local.note_epoch_timer(&id, epoch, None)?,
        }
        if let Some(e) = unknown {
            self.local.keep_unsure(&id, local::Unsure::Creation, &request_json(&request)?)?;
            return Err(e);
        }
        Ok(id)
    }

    /// A new MLS group with `claimed` added: its id, the request that registers it, and the
    /// settings it was created with.
    pub(crate) fn build_conversation(
        &self,
        me: &Profile,
        meta: &GroupMeta,
        claimed: Vec<Claimed>,
        settings: Option<Settings>,
    ) -> ClientResult<(String, CreateConversation, Option<Committed>)> {
        let id = random_hex(16)?;
        let provider = self.provider();
        let signer = mls::load_signer(&provider, &me.signature_key)?;
        let committed = settings.map(|s| Committed::new(&provider, s)).transpose()?;
        let meta =
            GroupMeta { settings: committed.as_ref().map(|c| c.digest.clone()), ..meta.clone() };
        let mut group = MlsGroup::new_with_group_id(
            &provider,
            &signer,
            &mls::create_config(&meta, self.own_certificate()?.as_ref())?,
            GroupId::from_slice(&conversation_bytes(&id)?),
            mls::credential(&me.username, &signer),
        )
        .map_err(ClientError::mls)?;
        let kps: Vec<KeyPackage> = claimed.into_iter().map(|c| c.key_package).collect();
        // The joiners read the settings from the Welcome's GroupInfo.
        let mut builder = group
            .commit_builder()
            .propose_adds(kps)
            .load_psks(provider.storage())
            .map_err(ClientError::mls)?;
        if let Some(c) = &committed {
            builder = builder
                .create_group_info_with_extensions([welcome_extension(&c.record)])
                .map_err(ClientError::mls)?;
        }
        let bundle = builder
            .build(provider.rand(), provider.crypto(), &signer, |_| true)
            .map_err(ClientError::mls)?
            .stage_commit(&provider)
            .map_err(ClientError::mls)?;
        let (_commit, welcome, _) = bundle.into_messages();
        let welcome = welcome.ok_or_else(|| ClientError::Protocol("no Welcome was made".into()))?;
        group.merge_pending_commit(&provider).map_err(ClientError::mls)?;
        let info =
            group.export_group_info(provider.crypto(), &signer, false).map_err(ClientError::mls)?;
        let request = CreateConversation {
            conversation_id: ConversationId::parse(&id)
                .map_err(|e| ClientError::Protocol(e.to_string()))?,
            welcome: B64(welcome.tls_serialize_detached().map_err(ClientError::mls)?),
            group_info: B64(info.tls_serialize_detached().map_err(ClientError::mls)?),
            ratchet_tree: B64(group
                .export_ratchet_tree()
                .tls_serialize_detached()
                .map_err(ClientError::mls)?),
        };
        Ok((id, request, committed))
    }

    /// Deletes a group's MLS state (after the server refused it, or after leaving).
    pub(crate) fn forget_group(&self, id: &str) {
        self.forget_cached(Some(id));
        let provider = self.provider();
        if let Ok(bytes) = conversation_bytes(id)
            && let Ok(Some(mut group)) =
                MlsGroup::load(provider.storage(), &GroupId::from_slice(&bytes))
        {
            let _ = group.delete(provider.storage());
        }
    }

    /// The refusal for acting in a conversation this device is out of, saying who removed it.
    pub(crate) fn no_longer_in(&self, conversation: &str) -> ClientResult<ClientError> {
        let direct = self
            .local
            .conversation(conversation)?
            .is_some_and(|c| c.kind == ConversationKind::Direct);
        let why = match (self.local.removed_by(conversation)?, direct) {
            (Some(by), true) => format!("{by} deleted this chat"),
            (Some(by), false) => format!("{by} removed you from this group"),
            (None, _) => "you are no longer in that conversation".to_string(),
        };
        Ok(ClientError::refused(Refusal::NotInConversation, why))
    }

    /// Frames, franks and encrypts a payload for the conversation: the MLS message to send.
    pub(crate) fn seal(&self, conversation: &str, payload: &Payload) -> ClientResult<Vec<u8>> {
        let provider = self.provider();
        let signer = self.signer(&provider)?;
        let group_id = conversation_bytes(conversation)?;
        // Franking: commit to the body with a fresh key, and sign it for the server.
        let (franked, commitment) =
            crate::franking::frank(&provider, signer, &group_id, &payload.encode())?;
        self.with_group(&provider, conversation, |group| {
            group.set_aad(commitment);
            let out = group
                .create_message(&provider, signer, &franked.encode())
                .map_err(ClientError::mls)?;
            out.tls_serialize_detached().map_err(ClientError::mls)
        })
    }

    /// Encrypts a text for a conversation without sending or storing it: what `send_text`
    /// costs before the network. For benchmarks.
    #[doc(hidden)]
    pub fn encrypt_for_bench(&self, conversation: &str, text: &str) -> ClientResult<Vec<u8>> {
        let payload = Payload::new(random_hex(16)?, now_millis(), Body::Text { text: text.into() });
        self.seal(conversation, &payload)
    }

    /// Writes `body` into the conversation: in the history and the outbox at once, *sending*
    /// (see `crate::unsure`), then posted with whatever waits before it. The message as it
    /// stands after (*sent*, still *sending* — no answer: it goes by itself at the next sync
    /// or push connection — or *failed*), and what the server said.
    pub(crate) async fn write(
        &mut self,
        conversation: &str,
        body: Body,
    ) -> ClientResult<(Message, Answer<SendResponse>)> {
        let me = self.me()?.clone();
        let local = self
            .local
            .conversation(conversation)?
            .ok_or_else(|| ClientError::UnknownConversation(conversation.to_string()))?;
        if local.left {
            return Err(self.no_longer_in(conversation)?);
        }
        let now = now_millis();
        let payload = Payload::new(random_hex(16)?, now, body);
        let (kind, text, expires_at) = match &payload.body {
            Body::Text { text } => (local.kind, text.clone(), None),
            Body::Story { text, expires_at } => {
                (ConversationKind::Story, text.clone(), Some(*expires_at))
            }
            Body::GroupName { .. } | Body::Timer { .. } => {
                return Err(ClientError::Protocol("settings are changed by commit".into()));
            }
        };
        let message = Message {
            id: payload.id.clone(),
            conversation: conversation.to_string(),
            kind,
            from: me.username,
            text,
            sent_at: now,
            received_at: now,
            outgoing: true,
            expires_at,
            from_business: me.kind == AccountKind::Business,
            verified: false,
            state: local::Delivery::Sending,
            failure: None,
            event: None,
        };
        // One row: in the history and the outbox at once.
        self.local.write_outgoing(&message, &payload.encode(), &random_hex(16)?)?;
        let answer = match self.settle_token().await {
            Err(e) if e.is_local() => return Err(e),
            Err(e) => Answer::Unknown(e),
            Ok(()) => {
                let answers =
                    self.send_outbox(Some(conversation), Some(message.id.clone())).await?;
                answers.into_iter().find(|(id, _)| *id == message.id).map_or_else(
                    || Answer::Unknown(ClientError::Protocol("waiting behind another".into())),
                    |(_, a)| a,
                )
            }
        };
        let message = self.local.message(&message.id)?.unwrap_or(message);
        Ok((message, answer))
    }

    /// [`Client::write`], as a send's caller sees it: sent or waiting, it is returned; refused
    /// for good, it stays in the history *failed* and the refusal is returned.
    pub(crate) async fn send_body(&mut self, conversation: &str, body: Body) -> ClientResult<Sent> {
        let (message, answer) = self.write(conversation, body).await?;
        match answer {
            Answer::Done(sent) => Ok(Sent { message, not_delivered: sent.not_delivered }),
            Answer::Unknown(_) => Ok(Sent { message, not_delivered: Vec::new() }),
            Answer::Refused(e) => Err(e),
        }
    }
}
