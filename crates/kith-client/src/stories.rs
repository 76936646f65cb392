//! Stories: each user's **story channel** is an MLS group of their own devices and their
//! contacts' devices, with the user as its only admin; it is created at the first story and
//! kept in step with the contacts: new contacts are added, ended ones removed. Only the owner
//! posts. The server deletes each story at its expiry (`story_ttl_seconds`, 24 h by default),
//! and so does every client.

use std::time::Duration;

use kith_proto::*;

use crate::client::{Client, now_millis};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::local::{Conversation, ConversationKind, LocalStore, Message};
use crate::report::SyncReport;
use kith_proto::payload::Body;

/// How long a contact who could not be added to the story channel is left alone.
const ADD_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// A story as the CLI and SDK show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Story {
    pub id: String,
    pub author: String,
    pub text: String,
    pub posted_at: u64,
    pub expires_at: u64,
    /// Contacts a story just posted did not reach (their queue on the server was full).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_delivered: Vec<String>,
}

/// Stories not expired at `now`, newest first (see [`Client::stories`]).
pub(crate) fn stories(local: &LocalStore, now: u64) -> ClientResult<Vec<Story>> {
    Ok(local
        .stories(now)?
        .into_iter()
        .map(|m| Story {
            id: m.id,
            author: m.from,
            text: m.text,
            posted_at: m.sent_at,
            expires_at: m.expires_at.unwrap_or_default(),
            not_delivered: Vec::new(),
        })
        .collect())
}

impl Client {
    /// Brings the story channel's members in line with the contacts. A contact who cannot be
    /// added (no usable KeyPackage; refused by the server as no longer in a conversation with
    /// this user — then this device catches up, which ends the contact if they deleted the
    /// chat) is left out and tried again in a day; the others are added. Returns whether the
    /// members changed.
    pub async fn sync_story_channel(&mut self) -> ClientResult<bool> {
        let mut report = SyncReport::default();
        let changed = self.tend_story_audience(&mut report).await?;
        for p in &report.problems {
            tracing::info!(problem = %p, "story audience");
        }
        Ok(changed)
    }

    /// [`Client::sync_story_channel`], reporting who could not be added or removed.
    pub(crate) async fn tend_story_audience(
        &mut self,
        report: &mut SyncReport,
    ) -> ClientResult<bool> {
        match self.tend_story_channel(report).await {
            Err(e) if e.code() == Some(ErrorCode::Forbidden) => {
                self.sync_inner().await?;
                self.tend_story_channel(report).await
            }
            other => other,
        }
    }

    /// The contacts a story channel reaches: people only (a profile from before businesses
    /// were told apart may list one as a contact).
    async fn story_contacts(&mut self) -> ClientResult<Vec<String>> {
        let mut out = Vec::new();
        for (c, _) in self.contacts()? {
            if !self.is_business(&c).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Whether adding `user` to the story channel failed within [`ADD_BACKOFF`]: then it is
    /// not tried (nor their KeyPackages claimed) again yet, so a contact who cannot be added —
    /// whatever they did to make it so — costs this account one claim a day, never a breach
    /// of the claim limits.
    fn add_backed_off(&self, user: &str) -> ClientResult<bool> {
        let at = self.local.upkeep_at(&format!("story-add {user}"))?;
        Ok(at.is_some_and(|at| now_millis().saturating_sub(at) < ADD_BACKOFF.as_millis() as u64))
    }

    pub(crate) fn back_off_add(&self, user: &str) -> ClientResult<()> {
        Ok(self.local.set_upkeep_at(&format!("story-add {user}"), now_millis())?)
    }

    async fn tend_story_channel(&mut self, report: &mut SyncReport) -> ClientResult<bool> {
        let me = self.me()?.username.clone();
        let contacts = self.story_contacts().await?;
        let Some(channel) = self.local.own_story_channel(&me)? else {
            return Ok(false); // created at the first story
        };
        let mut changed = false;
        let members = self.conversation_members(&channel.id)?;
        let mut missing = Vec::new();
        for c in contacts.iter().filter(|c| !members.contains(c)) {
            if !self.add_backed_off(c)? {
                missing.push(c.clone());
            }
        }
        if !missing.is_empty() {
            let claims = self.claim_each(&missing).await?;
            for (user, _) in &claims.refused {
                self.back_off_add(user)?;
            }
            report.problems.extend(claims.problems(&channel.id));
            changed |= self.add_each_if_need_be(&channel.id, claims, report).await?;
        }
        // A blocked contact stays (removing it would tell it; the server keeps the stories
        // from it); only an ended contact leaves.
        let mut audience = Vec::new();
        for a in self.local.audience()? {
            if !self.is_business(&a).await? {
                audience.push(a);
            }
        }
        for gone in members.iter().filter(|m| **m != me && !audience.contains(m)) {
            self.remove_member_from(&channel.id, gone).await?;
            changed = true;
        }
        Ok(changed)
    }

    /// Posts a story to this user's contacts. With no contacts yet it reaches nobody (and is
    /// kept locally until it expires).
    pub async fn story_post(&mut self, text: &str) -> ClientResult<Story> {
        if text.is_empty() || text.len() > crate::MAX_TEXT_BYTES {
            return Err(ClientError::refused(
                Refusal::BadText,
                "a story has 1 to 65536 bytes of text",
            ));
        }
        let me = self.me()?.username.clone();
        let ttl = self.api()?.whoami().await?.limits.story_ttl_seconds;
        let now = now_millis();
        let expires_at = now + ttl * 1000;
        let body = Body::Story { text: text.to_string(), expires_at };
        let channel = match self.story_channel().await {
            Err(e) if e.code() == Some(ErrorCode::Forbidden) => {
                // A contact deleted the chat and this device has not heard yet.
                self.sync_inner().await?;
                self.story_channel().await?
            }
            other => other?,
        };
        let (message, not_delivered) = match channel {
            Some(id) => {
                let sent = self.send_body(&id, body).await?;
                (sent.message, sent.not_delivered)
            }
            None => {
                // Nobody to show it to: keep it here only, with the same expiry.
                let m = Message {
                    id: crate::client::random_hex(16)?,
                    conversation: String::new(),
                    kind: ConversationKind::Story,
                    from: me.clone(),
                    text: text.to_string(),
                    sent_at: now,
                    received_at: now,
                    outgoing: true,
                    expires_at: Some(expires_at),
                    from_business: false,
                    verified: false,
                    state: crate::local::Delivery::Sent,
                    failure: None,
                    event: None,
                };
                self.local.insert_message(&m)?;
                (m, Vec::new())
            }
        };
        Ok(Story {
            id: message.id,
            author: me,
            text: message.text,
            posted_at: message.sent_at,
            expires_at: message.expires_at.unwrap_or(expires_at),
            not_delivered,
        })
    }

    /// This user's story channel, its members brought in line with the contacts (created at
    /// the first story); `None` while there is nobody to show a story to.
    async fn story_channel(&mut self) -> ClientResult<Option<String>> {
        let me = self.me()?.username.clone();
        let contacts = self.story_contacts().await?;
        Ok(match self.local.own_story_channel(&me)? {
            Some(c) => {
                self.sync_story_channel().await?;
                Some(c.id)
            }
            None if contacts.is_empty() => None,
            None => self.create_story_channel(&contacts).await?,
        })
    }

    /// The story channel with every contact who can be added; `None` when none can (yet).
    async fn create_story_channel(&mut self, contacts: &[String]) -> ClientResult<Option<String>> {
        let me = self.me()?.clone();
        let mut ready = Vec::new();
        for c in contacts {
            if !self.add_backed_off(c)? {
                ready.push(c.clone());
            }
        }
        let claims = self.claim_each(&ready).await?;
        for (user, _) in &claims.refused {
            self.back_off_add(user)?;
        }
        for p in &claims.problems("") {
            tracing::info!(problem = %p, "story audience");
        }
        if claims.claimed.is_empty() {
            return Ok(None);
        }
        let meta =
            GroupMeta { kind: GroupType::Story, admins: vec![me.username.clone()], settings: None };
        let channel = Conversation {
            id: String::new(),
            kind: ConversationKind::Story,
            peer: Some(me.username.clone()),
            name: None,
            created_at: now_millis(),
            left: false,
            timer_seconds: None,
        };
        // With everyone at once; if one of them keeps the server or OpenMLS from taking it,
        // with the first who can be added alone (the others join at the next sync), and the
        // ones who could not are backed off.
        let id = match self
            .open_conversation(&me, &meta, claims.key_packages(), None, channel.clone())
            .await
        {
            Ok(id) => id,
            Err(e) if crate::groups::one_member_may_cause(&e) => {
                let mut made = None;
                let mut refused_audience = false;
                for (user, kps) in claims.claimed {
                    match self.open_conversation(&me, &meta, kps, None, channel.clone()).await {
                        Ok(id) => {
                            made = Some(id);
                            break;
                        }
                        Err(e) if crate::groups::one_member_may_cause(&e) => {
                            tracing::info!(error = %e, "a contact could not join the story channel");
                            refused_audience |= e.code() == Some(ErrorCode::Forbidden);
                            self.back_off_add(&user)?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                // Most likely a contact deleted the chat and this device has not heard yet:
                // catching up ends the contact here too.
                if refused_audience {
                    self.sync_inner().await?;
                }
                let Some(id) = made else { return Ok(None) };
                id
            }
            Err(e) => return Err(e),
        };
        Ok(Some(id))
    }

    /// Stories from contacts and this user's own, not yet expired, newest first.
    pub fn stories(&self) -> ClientResult<Vec<Story>> {
        stories(&self.local, self.expiry_now())
    }
}
