//! Reducing permanence: disappearing messages, deleting conversations, and making deleted text
//! unrecoverable from the profile's files (contacts are in `contacts`, stories in `stories`).
//!
//! - **Disappearing messages**: a conversation's timer is one of its settings, part of the MLS
//!   epoch (see [`kith_proto::settings`]): set by a commit — by either person in a 1:1, by an
//!   admin in a group — and the same for every member of an epoch. A message disappears when
//!   the timer of the epoch it was sent in has run from the moment the server accepted it (or
//!   at the expiry its sender gave it, if earlier): at the same moment on every device. From
//!   acceptance, not reading, because a device cannot know when a person read a line.
//! - **Deleted means gone**: the profile's SQLite runs with `secure_delete` (deleted rows are
//!   overwritten in place), and after every deletion the WAL is checkpointed and truncated, so
//!   no copy remains in the WAL file either.

use std::time::Duration;

use crate::client::{Client, now_millis};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::events::SystemEvent;
use kith_proto::payload::{MAX_TIMER_SECONDS, MIN_TIMER_SECONDS, valid_timer};

/// "alice set disappearing messages to 5m" / "alice turned disappearing messages off".
pub fn describe(who: &str, seconds: Option<u64>) -> String {
    match seconds {
        None => format!("{who} turned disappearing messages off"),
        Some(s) => format!("{who} set disappearing messages to {}", human(s)),
    }
}

/// A timer as people write it: `30s`, `5m`, `1d`, `4w`.
pub fn human(seconds: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(604_800, "w"), (86_400, "d"), (3_600, "h"), (60, "m")];
    for (size, unit) in UNITS {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

impl Client {
    /// Deletes messages whose time is up and scrubs the WAL. Returns how many went.
    pub fn purge_expired(&self) -> ClientResult<usize> {
        let gone = self.local.purge_expired(self.expiry_now())?;
        if gone > 0 {
            self.local.scrub()?;
        }
        Ok(gone)
    }

    /// Sets a conversation's disappearing-message timer for every member (a user's 1:1
    /// conversation, or a group by name or id); `None` turns it off.
    pub async fn set_disappearing(
        &mut self,
        target: &str,
        timer: Option<Duration>,
    ) -> ClientResult<()> {
        let seconds = timer.map(|d| d.as_secs());
        if !valid_timer(seconds) {
            return Err(ClientError::refused(
                Refusal::BadArgument,
                format!(
                    "a timer is off or between {MIN_TIMER_SECONDS} seconds and {} weeks",
                    MAX_TIMER_SECONDS / 604_800
                ),
            ));
        }
        let (mut id, person) = match self.resolve_target(target)? {
            crate::groups::Target::Group(id) => (id, None),
            crate::groups::Target::Person(user) => {
                (self.direct_conversation(&user).await?, Some(user))
            }
        };
        let group = person.is_none();
        // On the settings as they are now: another member may have changed them already.
        self.sync_inner().await?;
        if self.local.conversation(&id)?.is_some_and(|c| c.left) {
            match &person {
                // They deleted the chat meanwhile: the timer goes to a new one, as a message
                // would.
                Some(user) => id = self.direct_conversation(user).await?,
                None => return Err(self.no_longer_in(&id)?),
            }
        }
        if group {
            let (_, meta, _) = self.current(&id)?;
            let me = self.me()?.username.clone();
            if self.local_checks && !meta.is_admin(&me) {
                return Err(ClientError::NotAdmin(
                    "change the group's disappearing messages".into(),
                ));
            }
        }
        if self.settings_of(&id)?.timer == seconds {
            return Ok(());
        }
        // A commit: every member has the timer from the same epoch on.
        self.change_settings(&id, |s| s.timer = seconds).await?;
        let me = self.me()?.username.clone();
        self.note_lasting(&id, SystemEvent::Timer { by: me.clone(), seconds })?;
        Ok(())
    }

    /// Deletes every 1:1 conversation with `peer`: leaves it (the server stops delivering at
    /// once), wipes its history from this device, and ends the contact.
    pub async fn delete_conversation(&mut self, peer: &str) -> ClientResult<usize> {
        let conversations = self.local.directs_with(peer)?;
        if conversations.is_empty() && !self.local.is_contact(peer)? {
            return Err(ClientError::refused(
                Refusal::NoSuchConversation,
                format!("you have no conversation with {peer:?}"),
            ));
        }
        for c in conversations.iter().filter(|c| !c.left) {
            if let Err(e) = self.leave_conversation(&c.id).await {
                tracing::warn!(error = %e, "could not tell the server about leaving; deleting anyway");
            }
        }
        let mut gone = 0;
        for c in &conversations {
            gone += self.local.delete_messages(&c.id)?;
            self.local.set_left(&c.id, now_millis())?;
            self.forget_group(&c.id);
        }
        // Their stories leave this device too ("no more stories either way").
        self.local.delete_stories_of(peer)?;
        self.local.scrub()?;
        // Deleting the chat is what ends the contact: the story channel lets them go now.
        if self.local.remove_contact(peer)? {
            self.sync_story_channel().await?;
        }
        Ok(gone)
    }
}
