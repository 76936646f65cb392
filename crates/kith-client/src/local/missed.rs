//! Messages the server says this device missed (its queue was full), counted once.

use rusqlite::params;

use super::{LocalStore, i, u};

/// Most missed messages kept per conversation: whatever a server says, a count stays a number.
const MISSED_CAP: u64 = 1_000_000;

impl LocalStore {
    /// Messages the server says this device missed (its queue was full), as its last page said:
    /// kept beside what was acknowledged before, so a lost acknowledgement (the server says the
    /// same again) is never counted twice.
    pub fn note_missed(&self, told: &[kith_proto::Missed]) -> rusqlite::Result<()> {
        for m in told {
            self.conn.execute(
                "INSERT INTO kith_missed (conversation, unacked) VALUES (?1, ?2)
             ON CONFLICT (conversation) DO UPDATE SET unacked = excluded.unacked",
                params![m.conversation_id, i(m.count.min(MISSED_CAP))],
            )?;
        }
        Ok(())
    }

    /// The server took back these counts: they are this device's to tell, until a sync hands them
    /// to the user (a catch-up inside another command takes them in too).
    pub fn missed_acknowledged(&self, told: &[kith_proto::Missed]) -> rusqlite::Result<()> {
        for m in told {
            self.conn.execute(
                "UPDATE kith_missed SET acked = MIN(acked + unacked, ?2), unacked = 0
             WHERE conversation = ?1",
                params![m.conversation_id, i(MISSED_CAP)],
            )?;
        }
        Ok(())
    }

    /// The acknowledged missed counts not handed to the user yet, forgotten here.
    pub fn take_missed(&self) -> rusqlite::Result<Vec<kith_proto::Missed>> {
        let missed = self
            .conn
            .prepare(
                "SELECT conversation, acked FROM kith_missed WHERE acked > 0 ORDER BY conversation",
            )?
            .query_map([], |r| {
                Ok(kith_proto::Missed { conversation_id: r.get(0)?, count: u(r.get(1)?) })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        self.conn.execute("UPDATE kith_missed SET acked = 0", [])?;
        self.conn.execute("DELETE FROM kith_missed WHERE acked = 0 AND unacked = 0", [])?;
        Ok(missed)
    }
}
