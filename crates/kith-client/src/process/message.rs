//! An application message: a text, a story, or a setting sent the old way (ignored). Shown
//! only if it can be reported, and never from an account this device blocks.

use kith_proto::*;
use openmls::prelude::*;

use super::{Processing, Received, Skip};
use crate::client::{Client, now_millis};
use crate::error::{ClientError, Refusal};
use crate::local::{self, ConversationKind, Message};
use crate::mls::{self, Provider};
use kith_proto::payload::{Body, Payload};

impl Client {
    /// Reads an application message of `group`; what is new for the history.
    pub(super) fn read_application(
        &self,
        provider: &Provider<'_>,
        group: &MlsGroup,
        r: &Received<'_>,
        app: ApplicationMessage,
    ) -> Processing<Vec<Message>> {
        let entry = r.entry;
        let sender = &r.sender;
        let (aad, sender_leaf, message_epoch) = (&r.aad, r.sender_leaf, r.epoch);
        // Shown only if it can be reported: the server tagged it for this device, and
        // its franking signature is by the key the server registered for the sending
        // device (the key a report is checked against). Looked up by device, not in
        // today's tree: a message from an epoch its sender has since left is still
        // checked, and still shown.
        if entry.frank.is_none() {
            return Err(Skip::from(ClientError::refused(
                Refusal::BadMessage,
                "a message without a franking tag",
            )));
        }
        let sender_key = self.registered_key(sender, entry.sender_device)?;
        if let Some(leaf) = sender_leaf
            .and_then(|leaf| group.members().find(|m| m.index == leaf))
            .filter(|m| mls::identity(&m.credential).as_deref() == Some(sender.as_str()))
            && leaf.signature_key != sender_key
        {
            return Err(Skip::from(ClientError::refused(
                Refusal::BadMessage,
                "a sender key the server never registered",
            )));
        }
        let franked = crate::franking::check(
            provider,
            &self.verifiers,
            group.group_id().as_slice(),
            aad,
            &app.into_bytes(),
            &sender_key,
        )?;
        let payload = Payload::decode(&franked.core.0)
            .ok_or_else(|| ClientError::refused(Refusal::BadMessage, "unreadable payload"))?;
        // Ids a client makes, and nothing else: one chosen to match a line this device writes
        // itself (a predictable `sys-…`) would take that line's place in the history.
        if !kith_proto::payload::valid_message_id(&payload.id) {
            return Err(Skip::from(ClientError::refused(
                Refusal::BadMessage,
                "a message id no client makes",
            )));
        }
        let local = self
            .local
            .conversation(&entry.conversation_id)?
            .ok_or_else(|| ClientError::UnknownConversation(entry.conversation_id.clone()))?;
        // A blocked account's messages that reached us anyway are dropped, in any kind
        // of conversation.
        if self.local.is_blocked(sender)? {
            return Err(Skip::FromBlocked);
        }
        // The key directory as the sender's device saw it, against this device's view.
        if let Some(seen) = &payload.kt {
            self.compare_peer_root(sender, seen)?;
        }
        // Keep what a report of this message needs, as long as the message lives.
        if let Some(frank) = &entry.frank {
            self.local.store_frank(&local::Frank {
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
            })?;
        }
        let now = now_millis();
        let own = *sender == self.me()?.username;
        // The timer of the epoch it was sent in (the server refuses a message for an
        // older one, but one may arrive after the commit that ended its epoch).
        let timer = match self.local.epoch_timer(&entry.conversation_id, message_epoch)? {
            Some(timer) => timer,
            None => local.timer_seconds,
        };
        let expiry = crate::convo::message_expiry(payload.disappears_at, entry.server_time, timer);
        let (kind, text, expires_at) = match payload.body {
            Body::Text { text } => {
                if local.kind == ConversationKind::Story {
                    return Err(Skip::from(ClientError::refused(
                        Refusal::BadMessage,
                        "a text message in a story channel",
                    )));
                }
                (local.kind, text, expiry)
            }
            Body::Story { text, expires_at } => {
                // Only the channel's owner posts; the earlier of the two expiries wins.
                if local.kind != ConversationKind::Story
                    || local.peer.as_deref() != Some(sender.as_str())
                {
                    return Err(Skip::from(ClientError::refused(
                        Refusal::BadMessage,
                        "a story from someone else",
                    )));
                }
                // Stories go between contacts: after the contact ended (a block, a
                // deleted chat), none is shown until this device writes to them again.
                if !own && !self.local.is_contact(sender)? {
                    return Err(Skip::from(ClientError::refused(
                        Refusal::BadMessage,
                        "a story from a non-contact",
                    )));
                }
                let expires_at = expires_at.min(entry.expires_at.unwrap_or(u64::MAX));
                if expires_at <= self.expiry_now() {
                    return Ok(Vec::new());
                }
                (ConversationKind::Story, text, Some(expires_at))
            }
            // Settings sent as messages, by clients from before they were epoch
            // state: a commit carries them now, and these change nothing.
            Body::Timer { .. } | Body::GroupName { .. } => {
                tracing::debug!("a setting sent as a message, ignored");
                return Ok(Vec::new());
            }
        };
        let m = Message {
            id: payload.id,
            conversation: entry.conversation_id.clone(),
            kind,
            from: sender.clone(),
            text,
            sent_at: payload.sent_at,
            received_at: now,
            // Sent from another device of this account: this account's own message.
            outgoing: own,
            expires_at,
            from_business: entry.sender_kind == AccountKind::Business,
            verified: entry.sender_verified,
            state: crate::local::Delivery::Sent,
            failure: None,
            event: None,
        };
        // Written to from another device of this account: a contact here too, as if this
        // device had written (a business is nobody's story contact, nor has any).
        if own
            && local.kind == ConversationKind::Direct
            && let Some(peer) = &local.peer
            && self.me()?.kind == AccountKind::Person
            && self.local.account_is_business(peer)? != Some(true)
        {
            self.local.add_contact(peer, entry.server_time)?;
        }
        Ok(if self.local.insert_received(&m)? { vec![m] } else { Vec::new() })
    }
}
