//! Contacts: an account this device has written to in a 1:1 conversation (a first message, or
//! a reply). Deleting the conversation (or blocking) ends it. Contacts are who may see this
//! device's stories, and whose stories it shows.

use kith_proto::*;

use crate::client::{Client, now_millis};
use crate::error::ClientResult;

impl Client {
    /// The accounts this device has written to, by name, with since when (Unix ms).
    pub fn contacts(&self) -> ClientResult<Vec<(String, u64)>> {
        Ok(self.local.contacts()?)
    }

    /// Whether `username` is a contact (and not blocked): one lookup, not the whole list.
    pub fn is_contact(&self, username: &str) -> ClientResult<bool> {
        Ok(self.local.is_contact(username)?)
    }

    /// Records `peer` as a contact after writing to them.
    pub(crate) async fn became_contact(&mut self, peer: &str) -> ClientResult<()> {
        // A business answers people; they are not its contacts and it has no stories for them.
        if self.me()?.kind == AccountKind::Business {
            return Ok(());
        }
        // Nor is a business anyone's story contact: stories go between people.
        if self.is_business(peer).await? {
            return Ok(());
        }
        // The story channel takes them in at the next sync or story.
        self.local.add_contact(peer, now_millis())?;
        Ok(())
    }
}
