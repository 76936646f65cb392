//! What a report of a received message needs (its franking material), kept as long as the
//! message.

use rusqlite::{OptionalExtension, params};

use super::{LocalStore, i, u};

/// What a report of one received message needs (it holds the message's text).
#[derive(Clone, Debug)]
pub struct Frank {
    pub message_id: String,
    pub conversation: String,
    pub sender: String,
    pub sender_device: u64,
    pub server_time: u64,
    pub key_id: u32,
    pub epoch: u64,
    pub tag: Vec<u8>,
    pub core: Vec<u8>,
    pub fk: Vec<u8>,
    pub sig: Vec<u8>,
}

impl LocalStore {
    pub fn store_frank(&self, f: &Frank) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO kith_franks (message_id, conversation, sender, sender_device,
            server_time, key_id, epoch, tag, core, fk, sig)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                f.message_id,
                f.conversation,
                f.sender,
                i(f.sender_device),
                i(f.server_time),
                f.key_id,
                i(f.epoch),
                f.tag,
                f.core,
                f.fk,
                f.sig
            ],
        )?;
        Ok(())
    }

    pub fn frank(&self, message_id: &str) -> rusqlite::Result<Option<Frank>> {
        self.conn.query_row(
        "SELECT message_id, conversation, sender, sender_device, server_time, key_id, epoch, tag,
                core, fk, sig
         FROM kith_franks WHERE message_id = ?1",
        params![message_id],
        |r| {
            Ok(Frank {
                message_id: r.get(0)?,
                conversation: r.get(1)?,
                sender: r.get(2)?,
                sender_device: u(r.get(3)?),
                server_time: u(r.get(4)?),
                key_id: r.get(5)?,
                epoch: u(r.get(6)?),
                tag: r.get(7)?,
                core: r.get(8)?,
                fk: r.get(9)?,
                sig: r.get(10)?,
            })
        },
    )
    .optional()
    }

    /// A frank holds the message's text: it goes when the message goes.
    pub(super) fn forget_orphan_franks(&self) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM kith_franks WHERE message_id NOT IN (SELECT id FROM kith_messages)",
            [],
        )
    }
}
