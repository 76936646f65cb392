//! A look at a profile the [`Client`] holds, on a connection of its own: a process whose
//! client waits on the network (a send to a server that does not answer, a sync over a slow
//! link) can still show its chats. It reads, and marks chats read; it makes no network call
//! and changes no group.

use openmls_rust_crypto::RustCrypto;

use crate::chats::{self, ChatSummary};
use crate::client::{Client, now_millis};
use crate::error::ClientResult;
use crate::groups::{self, GroupSummary};
use crate::local::{LocalStore, Message, Profile};
use crate::mls::Provider;
use crate::stories::{self, Story};

/// See the [module](self). Made by [`Client::view`]; lives no longer than the process that
/// holds the profile should (it takes no lock of its own).
pub struct View {
    local: LocalStore,
    crypto: RustCrypto,
    clock_offset_ms: u64,
}

impl Client {
    /// A [`View`] of this profile on a second connection. It sees what this client stores
    /// as soon as it is stored.
    pub fn view(&self) -> ClientResult<View> {
        Ok(View {
            local: LocalStore::open(&self.dir)?,
            crypto: RustCrypto::default(),
            clock_offset_ms: self.clock_offset_ms,
        })
    }
}

impl View {
    fn now(&self) -> u64 {
        now_millis().saturating_add(self.clock_offset_ms)
    }

    fn provider(&self) -> Provider<'_> {
        Provider::new(&self.crypto, self.local.conn())
    }

    /// The registered account as stored now (a registration or a new token made since the
    /// view was opened included).
    pub fn profile(&self) -> ClientResult<Option<Profile>> {
        Ok(self.local.load_profile()?)
    }

    /// See [`Client::chats`].
    pub fn chats(&self) -> ClientResult<Vec<ChatSummary>> {
        chats::list(&self.local, self.now())
    }

    /// See [`Client::chat_history`].
    pub fn chat_history(&self, chat: &str) -> ClientResult<Vec<Message>> {
        chats::history(&self.local, chat, self.now())
    }

    /// See [`Client::chat_of`].
    pub fn chat_of(&self, conversation: &str) -> ClientResult<Option<String>> {
        chats::chat_of(&self.local, conversation)
    }

    /// See [`Client::mark_read`].
    pub fn mark_read(&self, chat: &str) -> ClientResult<()> {
        chats::mark_read(&self.local, chat, self.now())
    }

    /// See [`Client::groups`].
    pub fn groups(&self) -> ClientResult<Vec<GroupSummary>> {
        groups::summaries(&self.local, &self.provider())
    }

    /// See [`Client::group`].
    pub fn group(&self, group: &str) -> ClientResult<GroupSummary> {
        groups::summary(&self.local, &self.provider(), group)
    }

    /// See [`Client::stories`].
    pub fn stories(&self) -> ClientResult<Vec<Story>> {
        stories::stories(&self.local, self.now())
    }

    /// See [`Client::contacts`].
    pub fn contacts(&self) -> ClientResult<Vec<(String, u64)>> {
        Ok(self.local.contacts()?)
    }

    /// See [`Client::blocked`].
    pub fn blocked(&self) -> ClientResult<Vec<String>> {
        Ok(self.local.blocked()?)
    }
}
