//! Wake-ups for connected devices.
//!
//! The hub carries no data: a WebSocket task is told "your queue grew" and reads the entries
//! from the store, so a message is never delivered from memory that a crash could lose, and a
//! wake-up sent while nobody listens costs nothing. A `watch` channel per connected device
//! keeps at most one pending wake-up, however many messages arrive.

use std::collections::HashMap;
use std::sync::Mutex;

use kith_store::DeviceId;
use tokio::sync::watch;

#[derive(Default)]
pub struct Hub {
    /// A std mutex: held for map operations only, never across an await.
    devices: Mutex<HashMap<DeviceId, watch::Sender<u64>>>,
}

impl Hub {
    /// Wake-ups for `device` (subscribe before reading the queue so none is missed), or `None`
    /// when the device already has `max` live subscriptions. Checked and taken under one lock,
    /// so concurrent connects cannot overshoot the limit.
    pub fn try_subscribe(&self, device: DeviceId, max: usize) -> Option<watch::Receiver<u64>> {
        let mut map = match self.devices.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let sender = map.entry(device).or_insert_with(|| watch::Sender::new(0));
        if sender.receiver_count() >= max {
            return None;
        }
        Some(sender.subscribe())
    }

    /// Drops the device's channel when its last connection went away.
    pub fn release(&self, device: DeviceId) {
        if let Ok(mut map) = self.devices.lock()
            && map.get(&device).is_some_and(|s| s.receiver_count() == 0)
        {
            map.remove(&device);
        }
    }

    /// Closes every push connection of the device (its token changed): each one's wake-up
    /// channel ends, and its task closes the socket.
    pub fn disconnect(&self, device: DeviceId) {
        if let Ok(mut map) = self.devices.lock() {
            map.remove(&device);
        }
    }

    /// Tells the connected ones among `devices` that their queue grew.
    pub fn notify(&self, devices: &[DeviceId]) {
        if let Ok(map) = self.devices.lock() {
            for d in devices {
                if let Some(s) = map.get(d) {
                    s.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        }
    }

    /// Devices with a live connection.
    pub fn connected(&self) -> usize {
        self.devices.lock().map(|m| m.len()).unwrap_or(0)
    }
}
