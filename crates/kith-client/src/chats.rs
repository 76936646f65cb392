//! Chats, as a messenger's window lists them: one per person talked to (however many 1:1
//! conversations that took, as after a deleted chat) and one per group, each with its last
//! message, what is unread and its marks. A chat is named by `@username` or a group's id
//! (what [`Client::resolve_target`] reads); reading one marks it read on this device.

use kith_proto::validate_username;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::client::Client;
use crate::error::{ClientError, ClientResult, Refusal};
use crate::local::{self, Conversation, ConversationKind, Message};

/// One line of the chat list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

/// When `chat` was last read on this device (Unix ms), 0 if never.
fn read_at(conn: &rusqlite::Connection, chat: &str) -> rusqlite::Result<u64> {
    conn.query_row("SELECT read_at FROM kith_read WHERE chat = ?1", params![chat], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|v| v.map(|v| u64::try_from(v).unwrap_or(0)).unwrap_or(0))
}

/// Which messages a chat holds: every 1:1 conversation with a person, or one group.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Person(&'a str),
    Group(&'a str),
}

impl<'a> Scope<'a> {
    /// The SQL condition on `kith_messages m` (bound as `?1`).
    fn condition(self) -> &'static str {
        match self {
            Scope::Person(_) => {
                "m.conversation IN (SELECT id FROM kith_conversations
                                    WHERE kind = 'direct' AND peer = ?1)"
            }
            Scope::Group(_) => "m.conversation = ?1",
        }
    }

    fn value(self) -> &'a str {
        match self {
            Scope::Person(v) | Scope::Group(v) => v,
        }
    }
}

const MESSAGE_COLUMNS: &str = "m.id, m.conversation, m.kind, m.sender, m.text, m.sent_at,
    m.received_at, m.outgoing, m.expires_at, m.from_business, m.verified, m.state, m.failure";

/// The chat list's figures for one chat, each one indexed query (never its whole history).
fn summary(
    conn: &rusqlite::Connection,
    scope: Scope<'_>,
    chat: String,
    title: String,
    kind: ConversationKind,
    now: u64,
    conversation: Option<&Conversation>,
) -> ClientResult<Option<ChatSummary>> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let live = "(m.expires_at IS NULL OR m.expires_at > ?2)";
    let cond = scope.condition();
    let last = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM kith_messages m WHERE {cond} AND {live}
             ORDER BY m.sent_at DESC, m.received_at DESC, m.id DESC LIMIT 1"
        ))?
        .query_row(params![scope.value(), now], local::message_row)
        .optional()?;
    if last.is_none() && conversation.is_none_or(|c| c.left) && kind == ConversationKind::Direct {
        return Ok(None);
    }
    let read = read_at(conn, &chat)?;
    let theirs = "m.outgoing = 0 AND m.kind != 'system'";
    let unread: i64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM kith_messages m
             WHERE {cond} AND {live} AND {theirs} AND m.received_at > ?3"
        ))?
        .query_row(params![scope.value(), now, i64::try_from(read).unwrap_or(i64::MAX)], |r| {
            r.get(0)
        })?;
    let (business, verified) = if kind == ConversationKind::Direct {
        conn.prepare_cached(&format!(
            "SELECT m.from_business, m.verified FROM kith_messages m WHERE {cond} AND {theirs}
             ORDER BY m.sent_at DESC, m.received_at DESC LIMIT 1"
        ))?
        .query_row(params![scope.value()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((false, false))
    } else {
        (false, false)
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
        let c = local::conversation(&self.conn, id).ok()??;
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
        let now = self.expiry_now();
        let mut chats = Vec::new();
        let peers: Vec<String> = self
            .conn
            .prepare("SELECT DISTINCT peer FROM kith_conversations WHERE kind = 'direct'")?
            .query_map([], |r| r.get::<_, Option<String>>(0))?
            .filter_map(|p| p.transpose())
            .collect::<Result<_, _>>()?;
        for peer in peers {
            let open = local::direct_with(&self.conn, &peer)?;
            let (chat, kind) = (format!("@{peer}"), ConversationKind::Direct);
            let scope = Scope::Person(&peer);
            let found = summary(&self.conn, scope, chat, peer.clone(), kind, now, open.as_ref())?;
            chats.extend(found);
        }
        for group in local::groups(&self.conn)? {
            let title = group.name.clone().unwrap_or_else(|| group.id.clone());
            let (chat, kind) = (group.id.clone(), ConversationKind::Group);
            let scope = Scope::Group(&group.id);
            chats.extend(summary(&self.conn, scope, chat, title, kind, now, Some(&group))?);
        }
        chats.sort_by(|a, b| b.activity().cmp(&a.activity()).then_with(|| a.title.cmp(&b.title)));
        Ok(chats)
    }

    /// The messages of a chat (`@username` or a group's id), oldest first, system lines
    /// included.
    pub fn chat_history(&self, chat: &str) -> ClientResult<Vec<Message>> {
        let now = self.expiry_now();
        match self.chat_scope(chat)? {
            Scope::Person(peer) => Ok(local::history_with(&self.conn, peer, now)?),
            Scope::Group(id) => Ok(local::history_of(&self.conn, id, now)?),
        }
    }

    /// What a chat's name (`@username` or a group's id) names, or why it names nothing.
    fn chat_scope<'c>(&self, chat: &'c str) -> ClientResult<Scope<'c>> {
        match chat.strip_prefix('@') {
            Some(peer) if validate_username(peer).is_ok() => Ok(Scope::Person(peer)),
            None if local::conversation(&self.conn, chat)?
                .is_some_and(|c| c.kind == ConversationKind::Group) =>
            {
                Ok(Scope::Group(chat))
            }
            _ => Err(ClientError::refused(
                Refusal::NoSuchConversation,
                format!("no chat {chat:?} (a chat is @username or a group's id)"),
            )),
        }
    }

    /// The chat a conversation's messages show in: `@peer` for a 1:1 conversation, the id for
    /// a group; `None` for a story channel or an unknown conversation.
    pub fn chat_of(&self, conversation: &str) -> ClientResult<Option<String>> {
        Ok(local::conversation(&self.conn, conversation)?.and_then(|c| match c.kind {
            ConversationKind::Direct => c.peer.map(|p| format!("@{p}")),
            ConversationKind::Group => Some(c.id),
            _ => None,
        }))
    }

    /// Marks everything in the chat read on this device, as of now.
    pub fn mark_read(&self, chat: &str) -> ClientResult<()> {
        self.chat_scope(chat)?;
        self.conn.execute(
            "INSERT INTO kith_read (chat, read_at) VALUES (?1, ?2)
             ON CONFLICT (chat) DO UPDATE SET read_at = MAX(read_at, excluded.read_at)",
            params![chat, i64::try_from(self.expiry_now()).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }
}
