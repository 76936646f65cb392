//! A Welcome: join the conversation it invites this device to, if every rule allows it.

use std::collections::BTreeSet;

use kith_proto::*;
use openmls::prelude::*;

use super::{Outcome, Processing, Skip, system};
use crate::client::{Client, conversation_bytes};
use crate::error::{ClientError, Refusal};
use crate::events::SystemEvent;
use crate::local::{Conversation, ConversationKind};
use crate::mls;
use kith_proto::settings::Settings;

impl Client {
    pub(super) fn join(&self, entry: &QueueEntry, message: MlsMessageIn) -> Processing<Outcome> {
        let me = self.me()?;
        let provider = self.provider();
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(Skip::from(ClientError::refused(
                Refusal::BadWelcome,
                "a welcome entry without a Welcome",
            )));
        };
        // Invited back into a conversation this device was removed from or left: the old
        // state goes, the new one comes from the Welcome. (Inside the entry's transaction: if
        // the join fails, the old state is back.)
        let id = GroupId::from_slice(&conversation_bytes(&entry.conversation_id)?);
        if let Some(mut old) = MlsGroup::load(provider.storage(), &id).map_err(ClientError::mls)? {
            let left = self.local.conversation(&entry.conversation_id)?.is_some_and(|c| c.left);
            if old.is_active() && !left {
                return Err(Skip::from(ClientError::refused(
                    Refusal::BadWelcome,
                    "a Welcome to a group this device is in",
                )));
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
        if self.local.is_blocked(&adder)? {
            return Err(Skip::FromBlocked);
        }
        let group = staged.into_group(&provider).map_err(ClientError::mls)?;
        // Joined with a KeyPackage from before this device had a certificate: its leaf here
        // gets one at the next settle step.
        if !mls::carries_certificate(&group) && self.local.device_certificate()?.is_some() {
            self.local.clear_upkeep(crate::account::LEAVES_CERTIFIED)?;
        }
        if group.group_id().as_slice() != conversation_bytes(&entry.conversation_id)? {
            return Err(Skip::from(ClientError::refused(
                Refusal::BadWelcome,
                "the Welcome is for another conversation",
            )));
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
        // Every member must use a key the server registered for one of its devices, certified
        // by its account's key.
        let leaves: Vec<LeafNode> =
            group.members().filter_map(|m| group.public_group().leaf(m.index).cloned()).collect();
        self.check_member_keys(&leaves, true)?;
        let others: BTreeSet<String> = group
            .members()
            .filter_map(|m| mls::identity(&m.credential))
            .filter(|u| *u != me.username)
            .collect();
        // A business reaches only people who opened a conversation with it: this device joins
        // a group holding one only if it has, and a story channel never holds one.
        if meta.kind != GroupType::Direct && me.kind == AccountKind::Person {
            for other in &others {
                if self.local.account_is_business(other)? != Some(true) {
                    continue;
                }
                if meta.kind == GroupType::Story || !self.local.has_open_direct(other)? {
                    return Err(Skip::from(ClientError::refused(
                        Refusal::BadWelcome,
                        format!("a group with {other}, a business you have not written to"),
                    )));
                }
            }
        }
        // Added by another device of this account (a link): it joins what that device is in.
        let own = adder == me.username;
        let (kind, peer) = match meta.kind {
            GroupType::Direct if own && others.len() == 1 => {
                (ConversationKind::Direct, others.first().cloned())
            }
            GroupType::Story if own && meta.admins.len() == 1 => {
                let owner = meta.admins[0].clone();
                if owner != me.username && !self.local.is_contact(&owner)? {
                    return Err(Skip::WaitsForContact { adder: owner });
                }
                (ConversationKind::Story, Some(owner))
            }
            // A business never opens a conversation with a person (it answers in theirs).
            GroupType::Direct
                if me.kind == AccountKind::Person
                    && self.local.account_is_business(&adder)? == Some(true) =>
            {
                return Err(Skip::from(ClientError::refused(
                    Refusal::BadWelcome,
                    format!("a conversation {adder}, a business, opened"),
                )));
            }
            GroupType::Direct if others.len() == 1 && others.contains(&adder) => {
                (ConversationKind::Direct, Some(adder.clone()))
            }
            GroupType::Direct => {
                return Err(Skip::from(ClientError::refused(
                    Refusal::BadWelcome,
                    "a 1:1 conversation with the wrong members",
                )));
            }
            GroupType::Group => (ConversationKind::Group, None),
            // A story channel's only admin is its owner, who must be the one adding us — and
            // a contact of ours: stories go between people who have written to each other.
            // From someone we have not written to (yet), it waits: held, and tried again
            // once we have (see `Client::retry_invitations`).
            GroupType::Story if meta.admins == [adder.clone()] => {
                if !self.local.is_contact(&adder)? {
                    return Err(Skip::WaitsForContact { adder });
                }
                (ConversationKind::Story, Some(adder.clone()))
            }
            GroupType::Story => {
                return Err(Skip::from(ClientError::refused(
                    Refusal::BadWelcome,
                    "a story channel not owned by its creator",
                )));
            }
        };
        self.local.add_conversation(&Conversation {
            id: entry.conversation_id.clone(),
            kind,
            peer,
            name: None,
            created_at: entry.server_time,
            left: false,
            timer_seconds: None,
        })?;
        self.local.set_rejoined(&entry.conversation_id)?;
        self.local.set_settings(
            &entry.conversation_id,
            group.epoch().as_u64(),
            &settings,
            record.as_deref(),
        )?;
        let mut outcome =
            Outcome { joined: Some(entry.conversation_id.clone()), ..Outcome::default() };
        if kind == ConversationKind::Group && !own {
            let event = SystemEvent::Added { by: adder.clone(), who: vec![me.username.clone()] };
            let line = system(entry, 0, &adder, (event, &me.username), None);
            self.local.insert_message(&line)?;
            outcome.messages.push(line);
        }
        Ok(outcome)
    }
}
