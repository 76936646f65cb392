//! Delivery to connected devices.
//!
//! Each push connection has an [`Inbox`]. When a send has committed, the server hands the new
//! entries straight to the inboxes of the recipients' connections ([`Hub::push`]): the entry
//! that reaches a device is the one just made durable, and delivering it costs no read of the
//! store. Anything else that grows a queue (a Welcome, a commit) only marks the inboxes for a
//! read of the store ([`Hub::notify`]), as does an inbox that overflowed because its device
//! reads slower than messages arrive. Entries are never handed over before their commit, so a
//! crash cannot deliver what it then loses; what is lost from memory is still in the queue
//! until acknowledged, and is read again. Entries other nodes sharing the database queued are
//! announced by them and also mark the inboxes for a read ([`follow_other_nodes`]).

pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kith_proto::QueueEntry;
use kith_store::{Announcement, DeviceId};
use tokio::sync::Notify;

/// Entries an inbox holds before it gives them up and asks for a read of the store instead;
/// bounds the memory a slow reader costs.
pub const INBOX_CAPACITY: usize = 1024;

/// One entry for one device: its sequence number and the message, shared by every recipient.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub seq: u64,
    pub entry: Arc<QueueEntry>,
}

#[derive(Debug, Default)]
struct Pending {
    entries: Vec<Pushed>,
    /// The queue may hold entries the inbox does not: read the store.
    reread: bool,
    /// The device's token changed: close the connection.
    closed: bool,
}

/// What a push connection has to do next.
#[derive(Debug, Default)]
pub struct Work {
    pub entries: Vec<Pushed>,
    pub reread: bool,
    pub closed: bool,
}

/// The deliveries waiting for one push connection.
#[derive(Debug)]
pub struct Inbox {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Inbox {
    fn new() -> Self {
        // A new connection starts by reading everything waiting in the queue.
        let pending = Pending { reread: true, ..Pending::default() };
        Self { pending: Mutex::new(pending), wake: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything waiting, leaving the inbox empty.
    pub fn take(&self) -> Work {
        let mut p = self.lock();
        Work {
            entries: std::mem::take(&mut p.entries),
            reread: std::mem::take(&mut p.reread),
            closed: p.closed,
        }
    }

    /// Resolves once something arrived since the last [`Inbox::take`] (at once if it already
    /// has: a wake-up given while nobody waits is kept).
    pub async fn changed(&self) {
        self.wake.notified().await
    }

    fn put(&self, pushed: Pushed) {
        {
            let mut p = self.lock();
            if p.reread {
                // The read to come covers it.
            } else if p.entries.len() >= INBOX_CAPACITY {
                p.entries = Vec::new();
                p.reread = true;
            } else {
                p.entries.push(pushed);
            }
        }
        self.wake.notify_one();
    }

    fn mark(&self, closed: bool) {
        {
            let mut p = self.lock();
            p.reread = true;
            p.closed |= closed;
        }
        self.wake.notify_one();
    }
}

#[derive(Default)]
pub struct Hub {
    /// The inboxes of each device's live connections. A std mutex: held for map operations
    /// only, never across an await.
    devices: Mutex<HashMap<DeviceId, Vec<Arc<Inbox>>>>,
}

impl Hub {
    fn map(&self) -> MutexGuard<'_, HashMap<DeviceId, Vec<Arc<Inbox>>>> {
        self.devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An inbox for a new connection of `device` (made before the queue is first read, so no
    /// entry is missed), or `None` when the device already has `max` connections. Checked and
    /// taken under one lock, so concurrent connects cannot overshoot the limit.
    pub fn try_subscribe(&self, device: DeviceId, max: usize) -> Option<Arc<Inbox>> {
        let mut map = self.map();
        let inboxes = map.entry(device).or_default();
        if inboxes.len() >= max {
            return None;
        }
        let inbox = Arc::new(Inbox::new());
        inboxes.push(inbox.clone());
        Some(inbox)
    }

    /// Gives back a connection's inbox.
    pub fn release(&self, device: DeviceId, inbox: &Arc<Inbox>) {
        let mut map = self.map();
        if let Some(inboxes) = map.get_mut(&device) {
            inboxes.retain(|i| !Arc::ptr_eq(i, inbox));
            if inboxes.is_empty() {
                map.remove(&device);
            }
        }
    }

    /// Closes every push connection of the device (its token changed, its account was
    /// suspended).
    pub fn disconnect(&self, device: DeviceId) {
        if let Some(inboxes) = self.map().remove(&device) {
            for inbox in inboxes {
                inbox.mark(true);
            }
        }
    }

    /// Hands committed entries to the connected ones among their devices: `recipients[i]`
    /// gets `seqs[i]`, all of them the same message.
    pub fn push(&self, recipients: &[DeviceId], seqs: &[u64], entry: &Arc<QueueEntry>) {
        let map = self.map();
        for (device, seq) in recipients.iter().zip(seqs) {
            for inbox in map.get(device).into_iter().flatten() {
                inbox.put(Pushed { seq: *seq, entry: entry.clone() });
            }
        }
    }

    /// Tells the connected ones among `devices` that their queue grew in a way only the store
    /// knows (a Welcome, a commit): they read it.
    pub fn notify(&self, devices: &[DeviceId]) {
        let map = self.map();
        for device in devices {
            for inbox in map.get(device).into_iter().flatten() {
                inbox.mark(false);
            }
        }
    }

    /// Has every connection read its queue.
    pub fn notify_all(&self) {
        for inbox in self.map().values().flatten() {
            inbox.mark(false);
        }
    }

    /// Devices with a live connection.
    pub fn connected(&self) -> usize {
        self.map().len()
    }
}

/// Applies what other processes sharing the store announce (see
/// [`kith_store::DeliveryStore::announcements`]) to this process's connections.
pub async fn follow_other_nodes(
    state: crate::AppState,
    mut announcements: tokio::sync::mpsc::Receiver<Announcement>,
) {
    while let Some(a) = announcements.recv().await {
        match a {
            Announcement::Queued(devices) => state.hub.notify(&devices),
            Announcement::AccessChanged(device) => {
                state.auth_cache.forget(device);
                state.hub.disconnect(device);
            }
            Announcement::Missed => state.hub.notify_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Arc<QueueEntry> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "seq": 0, "message_id": 1, "conversation_id": "00", "kind": "message",
                "sender": "alice", "sender_device": 1, "data": "", "server_time": 0
            }))
            .expect("a queue entry"),
        )
    }

    #[test]
    fn a_new_inbox_reads_the_store_first_then_gets_pushes() {
        let hub = Hub::default();
        let inbox = hub.try_subscribe(7, 2).unwrap();
        let first = inbox.take();
        assert!(first.reread && first.entries.is_empty() && !first.closed);
        hub.push(&[7, 8], &[10, 11], &entry());
        let next = inbox.take();
        assert!(!next.reread);
        assert_eq!(next.entries.iter().map(|p| p.seq).collect::<Vec<_>>(), [10]);
        assert!(inbox.take().entries.is_empty());
    }

    #[test]
    fn an_overflowing_inbox_gives_up_its_entries_for_a_read() {
        let hub = Hub::default();
        let inbox = hub.try_subscribe(7, 1).unwrap();
        inbox.take();
        let e = entry();
        for seq in 0..=INBOX_CAPACITY as u64 {
            hub.push(&[7], &[seq], &e);
        }
        let work = inbox.take();
        assert!(work.reread);
        assert!(work.entries.is_empty());
    }

    #[test]
    fn connections_are_limited_and_released() {
        let hub = Hub::default();
        let a = hub.try_subscribe(7, 2).unwrap();
        let b = hub.try_subscribe(7, 2).unwrap();
        assert!(hub.try_subscribe(7, 2).is_none());
        hub.release(7, &a);
        assert_eq!(hub.connected(), 1);
        hub.notify(&[7]);
        assert!(b.take().reread);
        hub.disconnect(7);
        assert!(b.take().closed);
        assert_eq!(hub.connected(), 0);
    }
}
