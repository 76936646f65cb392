//! Turning one queue entry into local state: join from a Welcome, decrypt an application
//! message, apply a commit or store a proposal. Runs inside the caller's SQLite transaction.

use std::collections::BTreeSet;

use kith_proto::*;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;

use crate::client::{Client, Outcome, conversation_bytes, now_millis};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::local::{self, Conversation, ConversationKind, Message};
use crate::mls;
use kith_proto::payload::{Body, Payload};
use kith_proto::settings::Settings;

/// A system line (who joined, left, was promoted) attached to a received entry.
fn system(
    entry: &QueueEntry,
    n: usize,
    from: &str,
    text: String,
    expires_at: Option<u64>,
) -> Message {
    Message {
        id: format!("sys-{}-{n}", entry.message_id),
        conversation: entry.conversation_id.clone(),
        kind: ConversationKind::System,
        from: from.to_string(),
        text,
        sent_at: entry.server_time,
        received_at: now_millis(),
        outgoing: false,
        expires_at,
        from_business: false,
        verified: false,
        state: crate::local::Delivery::Sent,
        failure: None,
    }
}

impl Client {
    pub(crate) fn process_in_transaction(&self, entry: &QueueEntry) -> ClientResult<Outcome> {
        let message =
            MlsMessageIn::tls_deserialize_exact(&entry.data.0).map_err(ClientError::mls)?;
        match entry.kind {
            EntryKind::Welcome => self.join(entry, message),
            EntryKind::Message => self.handle(entry, message),
        }
    }

    fn join(&self, entry: &QueueEntry, message: MlsMessageIn) -> ClientResult<Outcome> {
        let me = self.me()?;
        let provider = self.provider();
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(ClientError::refused(
                Refusal::BadWelcome,
                "a welcome entry without a Welcome",
            ));
        };
        // Invited back into a conversation this device was removed from or left: the old
        // state goes, the new one comes from the Welcome. (Inside the entry's transaction: if
        // the join fails, the old state is back.)
        let id = GroupId::from_slice(&conversation_bytes(&entry.conversation_id)?);
        if let Some(mut old) = MlsGroup::load(provider.storage(), &id).map_err(ClientError::mls)? {
            let left =
                local::conversation(&self.conn, &entry.conversation_id)?.is_some_and(|c| c.left);
            if old.is_active() && !left {
                return Err(ClientError::refused(
                    Refusal::BadWelcome,
                    "a Welcome to a group this device is in",
                ));
            }
            old.delete(provider.storage()).map_err(ClientError::mls)?;
            self.forget_cached(Some(&entry.conversation_id));
        }
        let processed = ProcessedWelcome::new_from_welcome(&provider, &mls::join_config(), welcome)
            .map_err(ClientError::mls)?;
        // The settings of the epoch joined, from the GroupInfo the adder signed (checked
        // against the group context below, once the Welcome verified).
        let record = crate::settings::from_welcome(&processed);
        let staged = processed.into_staged_welcome(&provider, None).map_err(ClientError::mls)?;
        // Who added this device is who signed the GroupInfo: MLS says so. The entry's `sender`
        // is only the server's word, and is not used for anything a person sees or decides by.
        let adder = staged
            .welcome_sender()
            .ok()
            .and_then(|leaf| mls::identity(leaf.credential()))
            .ok_or_else(|| {
                ClientError::refused(Refusal::BadWelcome, "the Welcome's signer is not a member")
            })?;
        if adder != entry.sender {
            tracing::warn!("a Welcome whose signer is not the account the server named");
        }
        // Invitations from accounts this device blocks are dropped, whatever the conversation.
        if local::is_blocked(&self.conn, &adder)? {
            return Err(ClientError::FromBlocked);
        }
        let group = staged.into_group(&provider).map_err(ClientError::mls)?;
        if group.group_id().as_slice() != conversation_bytes(&entry.conversation_id)? {
            return Err(ClientError::refused(
                Refusal::BadWelcome,
                "the Welcome is for another conversation",
            ));
        }
        let meta = mls::meta_of(&group).ok_or_else(|| {
            ClientError::refused(Refusal::BadWelcome, "the group lacks the Kith extension")
        })?;
        let (settings, record) = match meta.settings.as_deref() {
            Some(digest) => record
                .and_then(|r| crate::settings::checked(r, digest))
                .map(|(s, r)| (s, Some(r)))
                .ok_or_else(|| {
                    ClientError::refused(
                        Refusal::BadWelcome,
                        "a Welcome without the settings its group holds",
                    )
                })?,
            None => (Settings::default(), None),
        };
        // Every member must use a key the server registered for one of its devices.
        let keys: Vec<(String, Vec<u8>)> = group
            .members()
            .map(|m| (mls::identity(&m.credential).unwrap_or_default(), m.signature_key))
            .collect();
        self.check_member_keys(&keys)?;
        let others: BTreeSet<String> = group
            .members()
            .filter_map(|m| mls::identity(&m.credential))
            .filter(|u| *u != me.username)
            .collect();
        // A business reaches only people who opened a conversation with it: this device joins
        // a group holding one only if it has, and a story channel never holds one.
        if meta.kind != GroupType::Direct && me.kind == AccountKind::Person {
            for other in &others {
                if local::account_is_business(&self.conn, other)? != Some(true) {
                    continue;
                }
                if meta.kind == GroupType::Story || !local::has_open_direct(&self.conn, other)? {
                    return Err(ClientError::refused(
                        Refusal::BadWelcome,
                        format!("a group with {other}, a business you have not written to"),
                    ));
                }
            }
        }
        let (kind, peer) = match meta.kind {
            // A business never opens a conversation with a person (it answers in theirs).
            GroupType::Direct
                if me.kind == AccountKind::Person
                    && local::account_is_business(&self.conn, &adder)? == Some(true) =>
            {
                return Err(ClientError::refused(
                    Refusal::BadWelcome,
                    format!("a conversation {adder}, a business, opened"),
                ));
            }
            GroupType::Direct if others.len() == 1 && others.contains(&adder) => {
                (ConversationKind::Direct, Some(adder.clone()))
            }
            GroupType::Direct => {
                return Err(ClientError::refused(
                    Refusal::BadWelcome,
                    "a 1:1 conversation with the wrong members",
                ));
            }
            GroupType::Group => (ConversationKind::Group, None),
            // A story channel's only admin is its owner, who must be the one adding us — and
            // a contact of ours: stories go between people who have written to each other.
            // From someone we have not written to (yet), it waits: held, and tried again
            // once we have (see `Client::retry_invitations`).
            GroupType::Story if meta.admins == [adder.clone()] => {
                if !local::is_contact(&self.conn, &adder)? {
                    return Err(ClientError::WaitsForContact { adder });
                }
                (ConversationKind::Story, Some(adder.clone()))
            }
            GroupType::Story => {
                return Err(ClientError::refused(
                    Refusal::BadWelcome,
                    "a story channel not owned by its creator",
                ));
            }
        };
        local::add_conversation(
            &self.conn,
            &Conversation {
                id: entry.conversation_id.clone(),
                kind,
                peer,
                name: None,
                created_at: entry.server_time,
                left: false,
                timer_seconds: None,
            },
        )?;
        local::set_rejoined(&self.conn, &entry.conversation_id)?;
        local::set_settings(
            &self.conn,
            &entry.conversation_id,
            group.epoch().as_u64(),
            &settings,
            record.as_deref(),
        )?;
        let mut outcome =
            Outcome { joined: Some(entry.conversation_id.clone()), ..Outcome::default() };
        if kind == ConversationKind::Group {
            let line = system(entry, 0, &adder, format!("{adder} added you"), None);
            local::insert_message(&self.conn, &line)?;
            outcome.messages.push(line);
        }
        Ok(outcome)
    }

    fn handle(&self, entry: &QueueEntry, message: MlsMessageIn) -> ClientResult<Outcome> {
        let provider = self.provider();
        self.with_group(&provider, &entry.conversation_id, |group| {
            self.handle_in(&provider, group, entry, message)
        })
        .map_err(|e| match e {
            // Its Welcome may still be on the way.
            ClientError::UnknownConversation(id) => {
                ClientError::NotYet(format!("no conversation {id} yet"))
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
    ) -> ClientResult<Outcome> {
        let protocol = message.try_into_protocol_message().map_err(ClientError::mls)?;
        crate::rules::check_wire_format(&protocol)?;
        if protocol.epoch() > group.epoch() {
            return Err(ClientError::NotYet(format!(
                "a message for epoch {} while the group is at {}",
                protocol.epoch().as_u64(),
                group.epoch().as_u64()
            )));
        }
        let oldest_kept = group.epoch().as_u64().saturating_sub(mls::MAX_PAST_EPOCHS as u64);
        if matches!(protocol, ProtocolMessage::PrivateMessage(_))
            && protocol.epoch().as_u64() < oldest_kept
        {
            return Err(ClientError::TooLate);
        }
        let message_epoch = protocol.epoch().as_u64();
        let processed = match group.process_message(provider, protocol) {
            Ok(processed) => processed,
            Err(ProcessMessageError::ValidationError(ValidationError::UnableToDecrypt(
                openmls::framing::errors::MessageDecryptionError::SecretTreeError(
                    openmls::framing::errors::SecretTreeError::SecretReuseError,
                ),
            ))) => return Err(ClientError::Copy),
            Err(e) => return Err(ClientError::mls(e)),
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
        let mut lines = Vec::new();
        // Which line, if any, stays when the conversation's messages disappear.
        let mut lasting: Option<usize> = None;
        let mut messages = Vec::new();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                // Shown only if it can be reported: the server tagged it for this device, and
                // its franking signature is by the key the server registered for the sending
                // device (the key a report is checked against). Looked up by device, not in
                // today's tree: a message from an epoch its sender has since left is still
                // checked, and still shown.
                if entry.frank.is_none() {
                    return Err(ClientError::refused(
                        Refusal::BadMessage,
                        "a message without a franking tag",
                    ));
                }
                let sender_key = self.registered_key(&sender, entry.sender_device)?;
                if let Some(leaf) = sender_leaf
                    .and_then(|leaf| group.members().find(|m| m.index == leaf))
                    .filter(|m| mls::identity(&m.credential).as_deref() == Some(sender.as_str()))
                    && leaf.signature_key != sender_key
                {
                    return Err(ClientError::refused(
                        Refusal::BadMessage,
                        "a sender key the server never registered",
                    ));
                }
                let franked = crate::franking::check(
                    provider,
                    &self.verifiers,
                    group.group_id().as_slice(),
                    &aad,
                    &app.into_bytes(),
                    &sender_key,
                )?;
                let payload = Payload::decode(&franked.core.0).ok_or_else(|| {
                    ClientError::refused(Refusal::BadMessage, "unreadable payload")
                })?;
                let local =
                    local::conversation(&self.conn, &entry.conversation_id)?.ok_or_else(|| {
                        ClientError::UnknownConversation(entry.conversation_id.clone())
                    })?;
                // A blocked account's messages that reached us anyway are dropped, in any kind
                // of conversation.
                if local::is_blocked(&self.conn, &sender)? {
                    return Err(ClientError::FromBlocked);
                }
                // Keep what a report of this message needs, as long as the message lives.
                if let Some(frank) = &entry.frank {
                    local::store_frank(
                        &self.conn,
                        &local::Frank {
                            message_id: payload.id.clone(),
                            conversation: entry.conversation_id.clone(),
                            sender: sender.clone(),
                            sender_device: entry.sender_device,
                            server_time: entry.server_time,
                            key_id: frank.key_id,
                            epoch: frank.epoch,
                            tag: frank.tag.0.clone(),
                            core: franked.core.0.clone(),
                            fk: franked.fk.0.clone(),
                            sig: franked.sig.0.clone(),
                        },
                    )?;
                }
                let now = now_millis();
                // The timer of the epoch it was sent in (the server refuses a message for an
                // older one, but one may arrive after the commit that ended its epoch).
                let timer =
                    match local::epoch_timer(&self.conn, &entry.conversation_id, message_epoch)? {
                        Some(timer) => timer,
                        None => local.timer_seconds,
                    };
                let expiry =
                    crate::convo::message_expiry(payload.disappears_at, entry.server_time, timer);
                match payload.body {
                    Body::Text { text } => {
                        if local.kind == ConversationKind::Story {
                            return Err(ClientError::refused(
                                Refusal::BadMessage,
                                "a text message in a story channel",
                            ));
                        }
                        let m = Message {
                            id: payload.id,
                            conversation: entry.conversation_id.clone(),
                            kind: local.kind,
                            from: sender.clone(),
                            text,
                            sent_at: payload.sent_at,
                            received_at: now,
                            outgoing: false,
                            expires_at: expiry,
                            from_business: entry.sender_kind == AccountKind::Business,
                            verified: entry.sender_verified,
                            state: crate::local::Delivery::Sent,
                            failure: None,
                        };
                        if local::insert_message(&self.conn, &m)? {
                            messages.push(m);
                        }
                    }
                    Body::Story { text, expires_at } => {
                        // Only the channel's owner posts; the earlier of the two expiries wins.
                        if local.kind != ConversationKind::Story
                            || local.peer.as_deref() != Some(sender.as_str())
                        {
                            return Err(ClientError::refused(
                                Refusal::BadMessage,
                                "a story from someone else",
                            ));
                        }
                        // Stories go between contacts: after the contact ended (a block, a
                        // deleted chat), none is shown until this device writes to them again.
                        if !local::is_contact(&self.conn, &sender)? {
                            return Err(ClientError::refused(
                                Refusal::BadMessage,
                                "a story from a non-contact",
                            ));
                        }
                        let expires_at = expires_at.min(entry.expires_at.unwrap_or(u64::MAX));
                        if expires_at > self.expiry_now() {
                            let m = Message {
                                id: payload.id,
                                conversation: entry.conversation_id.clone(),
                                kind: ConversationKind::Story,
                                from: sender.clone(),
                                text,
                                sent_at: payload.sent_at,
                                received_at: now,
                                outgoing: false,
                                expires_at: Some(expires_at),
                                from_business: entry.sender_kind == AccountKind::Business,
                                verified: entry.sender_verified,
                                state: crate::local::Delivery::Sent,
                                failure: None,
                            };
                            if local::insert_message(&self.conn, &m)? {
                                messages.push(m);
                            }
                        }
                    }
                    // Settings sent as messages, by clients from before they were epoch
                    // state: a commit carries them now, and these change nothing.
                    Body::Timer { .. } | Body::GroupName { .. } => {
                        tracing::debug!("a setting sent as a message, ignored");
                    }
                }
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let me = self.me()?.username.clone();
                let before = mls::meta_of(group);
                crate::rules::check_commit(group, before.as_ref(), &sender, &staged)?;
                // New settings are opened with the key of the epoch the commit was made in,
                // before it is merged, and checked against the digest of the new context.
                let digest_after =
                    mls::meta_of_context(staged.group_context()).and_then(|m| m.settings);
                let opened = (digest_after.as_deref()
                    != crate::settings::digest_of(before.as_ref()))
                .then(|| {
                    digest_after
                        .as_deref()
                        .and_then(|d| crate::settings::open(provider, group, &aad, d))
                });
                self.check_member_keys(&crate::rules::new_keys(&staged, &sender))?;
                let mut added = BTreeSet::new();
                for add in staged.add_proposals() {
                    if let Some(u) =
                        mls::identity(add.add_proposal().key_package().leaf_node().credential())
                    {
                        added.insert(u);
                    }
                }
                // The opt-in rule, as if the server did not keep it: a person stays in a group
                // that a business joins only if they wrote to it; never in a story channel.
                if self.me()?.kind == AccountKind::Person {
                    let kind = before.as_ref().map(|m| m.kind);
                    for user in &added {
                        if local::account_is_business(&self.conn, user)? != Some(true) {
                            continue;
                        }
                        if kind == Some(GroupType::Story)
                            || !local::has_open_direct(&self.conn, user)?
                        {
                            return Err(ClientError::refused(
                                Refusal::GroupRules,
                                format!("{user}, a business you have not written to, added"),
                            ));
                        }
                    }
                }
                if !added.is_empty() {
                    let names: Vec<String> = added.into_iter().collect();
                    lines.push(format!("{sender} added {}", names.join(", ")));
                }
                let mut removed_me = false;
                for rm in staged.remove_proposals() {
                    let removed = rm.remove_proposal().removed();
                    let leaving = matches!(rm.sender(), Sender::Member(s) if *s == removed);
                    let who = group.member(removed).and_then(mls::identity).unwrap_or_default();
                    if !leaving {
                        removed_me |= removed == group.own_leaf_index();
                        let who = if who == me { "you".to_string() } else { who };
                        lines.push(format!("{sender} removed {who}"));
                    }
                }
                // Out by this commit: removed (and who did it is said), or a leave completed.
                let out = staged.self_removed();
                group.merge_staged_commit(provider, *staged).map_err(ClientError::mls)?;
                let epoch = group.epoch().as_u64();
                let id = &entry.conversation_id;
                let held = self.settings_of(id)?;
                match opened {
                    Some(Some((settings, record))) => {
                        if settings.name != held.name
                            && let Some(name) = &settings.name
                        {
                            lines.push(format!("{sender} named the group \"{name}\""));
                        }
                        if settings.timer != held.timer {
                            // The line saying so stays, even though the messages after it
                            // disappear.
                            lasting = Some(lines.len());
                            lines.push(crate::timers::describe(&sender, settings.timer));
                        }
                        local::set_settings(&self.conn, id, epoch, &settings, Some(&record))?;
                    }
                    // Settings that do not open, or do not match: the committer broke the
                    // protocol. Every member is in the same position; the next commit of one
                    // who may set them seals them again.
                    Some(None) => {
                        tracing::warn!("a commit's settings do not match its group context");
                        lines.push(format!(
                            "{sender} changed the group's settings in a way this device cannot \
                             read; it keeps the ones it had"
                        ));
                        local::set_settings(&self.conn, id, epoch, &held, None)?;
                    }
                    None => local::note_epoch_timer(&self.conn, id, epoch, held.timer)?,
                }
                let after = mls::meta_of(group);
                if let (Some(b), Some(a)) = (&before, &after) {
                    for admin in a.admins.iter().filter(|x| !b.is_admin(x)) {
                        lines.push(format!("{sender} made {admin} an admin"));
                    }
                }
                if removed_me {
                    local::set_removed_by(&self.conn, id, now_millis(), &sender)?;
                } else if out {
                    local::set_left(&self.conn, id, now_millis())?;
                }
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                crate::rules::check_proposal(&proposal)?;
                if let Proposal::Remove(rm) = proposal.proposal()
                    && Some(rm.removed()) == sender_leaf
                {
                    // A 1:1 conversation the other side left is over: the next message opens a
                    // new one. Until then they are no contact (they deleted the chat), and the
                    // story channel's upkeep lets them go.
                    let direct = local::conversation(&self.conn, &entry.conversation_id)?
                        .is_some_and(|c| c.kind == ConversationKind::Direct);
                    lines.push(if direct {
                        format!("{sender} deleted this chat")
                    } else {
                        format!("{sender} left")
                    });
                    if direct {
                        let id = &entry.conversation_id;
                        local::set_removed_by(&self.conn, id, now_millis(), &sender)?;
                        let open = local::directs_with(&self.conn, &sender)?;
                        if open.iter().all(|c| c.left) {
                            local::remove_contact(&self.conn, &sender)?;
                        }
                    }
                }
                group
                    .store_pending_proposal(provider.storage(), *proposal)
                    .map_err(ClientError::mls)?;
            }
            _ => {}
        }
        // Changes to a story channel's audience are nobody's business: no line for anyone.
        // Nor is anything shown of what an account this device blocks does.
        let story = local::conversation(&self.conn, &entry.conversation_id)?
            .is_some_and(|c| c.kind == ConversationKind::Story);
        if lines.is_empty() || story || local::is_blocked(&self.conn, &sender)? {
            return Ok(Outcome { messages, joined: None });
        }
        let timer = local::conversation(&self.conn, &entry.conversation_id)?
            .and_then(|c| c.timer_seconds)
            .map(|t| entry.server_time.saturating_add(t.saturating_mul(1000)));
        for (n, text) in lines.into_iter().enumerate() {
            let line =
                system(entry, n, &sender, text, if lasting == Some(n) { None } else { timer });
            if local::insert_message(&self.conn, &line)? {
                messages.push(line);
            }
        }
        Ok(Outcome { messages, joined: None })
    }
}
