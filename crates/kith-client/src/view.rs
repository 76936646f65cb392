//! A look at a profile the [`Client`] holds, on a connection of its own: a process whose
//! client waits on the network (a send to a server that does not answer, a sync over a slow
//! link) can still show its chats. It reads, and marks chats read; it makes no network call
//! and changes no group.

use crate::chats::ChatSummary;
use crate::client::{Client, connect};
use crate::error::ClientResult;
use crate::groups::GroupSummary;
use crate::local::{self, Message, Profile};
use crate::timers::Story;

/// See the [module](self). Made by [`Client::view`]; lives no longer than the process that
/// holds the profile should (it takes no lock of its own).
pub struct View {
    client: Client,
}

impl Client {
    /// A [`View`] of this profile on a second connection. It sees what this client stores
    /// as soon as it is stored.
    pub fn view(&self) -> ClientResult<View> {
        let conn = connect(&self.dir)?;
        let mut client = Client::assemble(self.dir.clone(), conn, None, None);
        client.clock_offset_ms = self.clock_offset_ms;
        Ok(View { client })
    }
}

impl View {
    /// The registered account as stored now (a registration or a new token made since the
    /// view was opened included).
    pub fn profile(&self) -> ClientResult<Option<Profile>> {
        Ok(local::load_profile(&self.client.conn)?)
    }

    /// See [`Client::chats`].
    pub fn chats(&self) -> ClientResult<Vec<ChatSummary>> {
        self.client.chats()
    }

    /// See [`Client::chat_history`].
    pub fn chat_history(&self, chat: &str) -> ClientResult<Vec<Message>> {
        self.client.chat_history(chat)
    }

    /// See [`Client::chat_of`].
    pub fn chat_of(&self, conversation: &str) -> ClientResult<Option<String>> {
        self.client.chat_of(conversation)
    }

    /// See [`Client::mark_read`].
    pub fn mark_read(&self, chat: &str) -> ClientResult<()> {
        self.client.mark_read(chat)
    }

    /// See [`Client::groups`].
    pub fn groups(&self) -> ClientResult<Vec<GroupSummary>> {
        self.client.groups()
    }

    /// See [`Client::group`].
    pub fn group(&self, group: &str) -> ClientResult<GroupSummary> {
        self.client.group(group)
    }

    /// See [`Client::stories`].
    pub fn stories(&self) -> ClientResult<Vec<Story>> {
        self.client.stories()
    }

    /// See [`Client::contacts`].
    pub fn contacts(&self) -> ClientResult<Vec<(String, u64)>> {
        self.client.contacts()
    }

    /// See [`Client::blocked`].
    pub fn blocked(&self) -> ClientResult<Vec<String>> {
        self.client.blocked()
    }
}
