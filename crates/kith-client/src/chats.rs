//! Chats, as a messenger's window lists them: one per person talked to (however many 1:1
//! conversations that took, as after a deleted chat) and one per group, each with its last
//! message, what is unread and its marks. A chat is named by `@username` or a group's id
//! (what [`Client::resolve_target`] reads); reading one marks it read on this device.

use kith_proto::validate_username;
use serde::Serialize;

use crate::client::Client;
use crate::error::{ClientError, ClientResult, Refusal};
use crate::local::chats::Scope;
use crate::local::{Conversation, ConversationKind, LocalStore, Message};

/// One line of the chat list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(rename = "Chat"))]
pub struct ChatSummary {
    /// `@username` for a person, the group's id for a group.
    pub chat: String,
    pub kind: ConversationKind,
    /// The person's username, or the group's name (its id while it has none).
    pub title: String,
    pub last: Option<Message>,
    /// Messages from others that arrived after the chat was last read here.
    pub unread: u32,
    /// The person is a business account, and the server's admin verified it.
    pub business: bool,
    pub verified: bool,
    /// The disappearing-messages timer, in seconds, when one is set.
    pub timer_seconds: Option<u64>,
    /// This device left the group (or the 1:1 conversation ended): nothing more can be sent.
    pub left: bool,
}

impl ChatSummary {
    fn activity(&self) -> u64 {
        self.last.as_ref().map(|m| m.received_at.max(m.sent_at)).unwrap_or(0)
    }
}

/// The chat list's line for one chat; `None` for a 1:1 chat that ended and whose history is
/// gone (a deleted chat).
fn summary(
    local: &LocalStore,
    scope: Scope<'_>,
    (chat, title): (String, String),
    kind: ConversationKind,
    now: u64,
    conversation: Option<&Conversation>,
) -> ClientResult<Option<ChatSummary>> {
    let last = local.last_message(scope, now)?;
    if last.is_none() && conversation.is_none_or(|c| c.left) && kind == ConversationKind::Direct {
        return Ok(None);
    }
    let unread = local.unread_since(scope, now, local.read_at(&chat)?)?;
    let (business, verified) = match kind {
        ConversationKind::Direct => local.business_marks(scope)?,
        _ => (false, false),
    };
    Ok(Some(ChatSummary {
        chat,
        kind,
        title,
        last,
        unread: u32::try_from(unread).unwrap_or(u32::MAX),
        business,
        verified,
        timer_seconds: conversation.and_then(|c| c.timer_seconds),
        left: conversation.is_none_or(|c| c.left),
    }))
}

/// Every chat, the most recently active first (see [`Client::chats`]).
pub(crate) fn list(local: &LocalStore, now: u64) -> ClientResult<Vec<ChatSummary>> {
    let mut chats = Vec::new();
    for peer in local.direct_peers()? {
        let open = local.direct_with(&peer)?;
        let names = (format!("@{peer}"), peer.clone());
        let scope = Scope::Person(&peer);
        chats.extend(summary(local, scope, names, ConversationKind::Direct, now, open.as_ref())?);
    }
    for group in local.groups()? {
        let names = (group.id.clone(), group.name.clone().unwrap_or_else(|| group.id.clone()));
        let scope = Scope::Group(&group.id);
        chats.extend(summary(local, scope, names, ConversationKind::Group, now, Some(&group))?);
    }
    chats.sort_by(|a, b| b.activity().cmp(&a.activity()).then_with(|| a.title.cmp(&b.title)));
    Ok(chats)
}

/// What a chat's name (`@username` or a group's id) names, or why it names nothing.
fn scope_of<'c>(local: &LocalStore, chat: &'c str) -> ClientResult<Scope<'c>> {
    match chat.strip_prefix('@') {
        Some(peer) if validate_username(peer).is_ok() => Ok(Scope::Person(peer)),
        None if local.conversation(chat)?.is_some_and(|c| c.kind == ConversationKind::Group) => {
            Ok(Scope::Group(chat))
        }
        _ => Err(ClientError::refused(
            Refusal::NoSuchConversation,
            format!("no chat {chat:?} (a chat is @username or a group's id)"),
        )),
    }
}

/// See [`Client::chat_history`].
pub(crate) fn history(local: &LocalStore, chat: &str, now: u64) -> ClientResult<Vec<Message>> {
    match scope_of(local, chat)? {
        Scope::Person(peer) => Ok(local.history_with(peer, now)?),
        Scope::Group(id) => Ok(local.history_of(id, now)?),
    }
}

/// See [`Client::chat_of`].
pub(crate) fn chat_of(local: &LocalStore, conversation: &str) -> ClientResult<Option<String>> {
    Ok(local.conversation(conversation)?.and_then(|c| match c.kind {
        ConversationKind::Direct => c.peer.map(|p| format!("@{p}")),
        ConversationKind::Group => Some(c.id),
        _ => None,
    }))
}

/// See [`Client::mark_read`].
pub(crate) fn mark_read(local: &LocalStore, chat: &str, now: u64) -> ClientResult<()> {
    scope_of(local, chat)?;
    local.set_read(chat, now)?;
    // The account's other devices are told at the next sync (see `notes`).
    Ok(local.read_to_share(chat, now)?)
}

impl Client {
    /// A problem of a sync as a sentence a person reads, with where it happened ("In the chat
    /// with ana: a message could not be decrypted or verified and was dropped.").
    pub fn problem_sentence(&self, p: &crate::Problem) -> String {
        match self.describe_conversation(&p.conversation) {
            Some(place) => format!("In {place}: {p}."),
            None => {
                let text = p.to_string();
                let mut chars = text.chars();
                let first: String =
                    chars.next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
                format!("{first}{}.", chars.as_str())
            }
        }
    }

    /// Where a conversation is, in words a person knows it by ("the chat with bob", "the
    /// group Family", "ana's stories", "your stories"); `None` for one this device does not know.
    pub fn describe_conversation(&self, id: &str) -> Option<String> {
        if id.is_empty() {
            return None;
        }
        let c = self.local.conversation(id).ok()??;
        let me = self.profile.as_ref().map(|p| p.username.as_str());
        Some(match (c.kind, c.peer, c.name) {
            (ConversationKind::Direct, Some(peer), _) => format!("the chat with {peer}"),
            (ConversationKind::Group, _, Some(name)) => format!("the group \"{name}\""),
            (ConversationKind::Group, _, None) => "an unnamed group".into(),
            (ConversationKind::Story, Some(owner), _) if Some(owner.as_str()) == me => {
                "your stories".into()
            }
            (ConversationKind::Story, Some(owner), _) => format!("{owner}'s stories"),
            _ => "a conversation".into(),
        })
    }

    /// Every chat, the most recently active first. A 1:1 chat whose conversation ended and
    /// whose history is gone (a deleted chat) is not listed.
    pub fn chats(&self) -> ClientResult<Vec<ChatSummary>> {
        list(&self.local, self.expiry_now())
    }

    /// The messages of a chat (`@username` or a group's id), oldest first, system lines
    /// included.
    pub fn chat_history(&self, chat: &str) -> ClientResult<Vec<Message>> {
        history(&self.local, chat, self.expiry_now())
    }

    /// The chat a conversation's messages show in: `@peer` for a 1:1 conversation, the id for
    /// a group; `None` for a story channel or an unknown conversation.
    pub fn chat_of(&self, conversation: &str) -> ClientResult<Option<String>> {
        chat_of(&self.local, conversation)
    }

    /// Marks everything in the chat read on this device, as of now.
    pub fn mark_read(&self, chat: &str) -> ClientResult<()> {
        mark_read(&self.local, chat, self.expiry_now())
    }
}
