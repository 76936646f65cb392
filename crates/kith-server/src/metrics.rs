//! Prometheus metrics. Counters only count events; no label ever holds a username, a
//! conversation id or content.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub responses: Family<StatusLabel, Counter>,
    pub registrations: Counter,
    pub messages_accepted: Counter,
    pub queue_entries_created: Counter,
    pub entries_delivered: Counter,
    pub entries_acked: Counter,
    pub key_packages_claimed: Counter,
    /// Stored KeyPackages not handed out because the KeyPackage rule refuses them now.
    pub key_packages_unusable: Counter,
    pub retention_deleted: Counter,
    /// Sends refused because every other member's device queue was full.
    pub queue_full_refusals: Counter,
    pub change_rate_refusals: Counter,
    /// Device queues left out of a message because they were full.
    pub queue_full_skips: Counter,
    /// Requests answered `503` because they did not finish within `request_timeout_seconds`.
    pub request_timeouts: Counter,
    /// Connections turned away by the connection caps (every open one was busy).
    pub connections_refused: Counter,
    /// Requests answered `503` because the body budget was spent.
    pub body_budget_refusals: Counter,
    pub websockets: Gauge,
    /// Safety actions taken (slow_down, cool_off, suspend).
    pub safety_actions: Family<ActionLabel, Counter>,
    /// Verified reports received.
    pub reports: Counter,
    /// Server time to validate and store a new conversation.
    pub create_seconds: Histogram,
    /// Server time to validate and store a commit or proposal.
    pub handshake_seconds: Histogram,
    /// Server time to accept an application message.
    pub send_seconds: Histogram,
}

/// 50 µs to ~26 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kith");
        let m = Metrics {
            responses: Family::default(),
            registrations: Counter::default(),
            messages_accepted: Counter::default(),
            queue_entries_created: Counter::default(),
            entries_delivered: Counter::default(),
            entries_acked: Counter::default(),
            key_packages_claimed: Counter::default(),
            key_packages_unusable: Counter::default(),
            retention_deleted: Counter::default(),
            queue_full_refusals: Counter::default(),
            change_rate_refusals: Counter::default(),
            queue_full_skips: Counter::default(),
            request_timeouts: Counter::default(),
            connections_refused: Counter::default(),
            body_budget_refusals: Counter::default(),
            websockets: Gauge::default(),
            safety_actions: Family::default(),
            reports: Counter::default(),
            create_seconds: latency(),
            handshake_seconds: latency(),
            send_seconds: latency(),
            registry: Registry::default(),
        };
        registry.register("http_responses", "HTTP answers by status", m.responses.clone());
        registry.register("registrations", "Accounts registered", m.registrations.clone());
        registry.register(
            "messages_accepted",
            "Messages stored for delivery",
            m.messages_accepted.clone(),
        );
        registry.register(
            "queue_entries_created",
            "Queue entries created (one per recipient device)",
            m.queue_entries_created.clone(),
        );
        registry.register(
            "entries_delivered",
            "Queue entries handed to devices (fetch or push)",
            m.entries_delivered.clone(),
        );
        registry.register(
            "entries_acked",
            "Queue entries acknowledged and deleted",
            m.entries_acked.clone(),
        );
        registry.register(
            "key_packages_claimed",
            "KeyPackages handed out",
            m.key_packages_claimed.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections turned away at the connection caps",
            m.connections_refused.clone(),
        );
        registry.register(
            "body_budget_refusals",
            "Requests answered 503 because too many request bodies were held in memory",
            m.body_budget_refusals.clone(),
        );
        registry.register(
            "key_packages_unusable",
            "Stored KeyPackages not handed out: expired, or refused by the KeyPackage rule",
            m.key_packages_unusable.clone(),
        );
        registry.register(
            "retention_deleted",
            "Messages deleted by the retention sweep",
            m.retention_deleted.clone(),
        );
        registry.register(
            "queue_full_refusals",
            "Sends refused because the recipients' device queues were full",
            m.queue_full_refusals.clone(),
        );
        registry.register(
            "change_rate_refusals",
            "Changes to a conversation refused by its own rate limit",
            m.change_rate_refusals.clone(),
        );
        registry.register(
            "queue_full_skips",
            "Device queues left out of a message because they were full",
            m.queue_full_skips.clone(),
        );
        registry.register(
            "request_timeouts",
            "Requests answered 503 because they took longer than request_timeout_seconds",
            m.request_timeouts.clone(),
        );
        registry.register("websockets", "Open WebSocket connections", m.websockets.clone());
        registry.register("safety_actions", "Safety actions taken", m.safety_actions.clone());
        registry.register("reports", "Verified reports received", m.reports.clone());
        registry.register(
            "create_seconds",
            "Time to accept a new conversation",
            m.create_seconds.clone(),
        );
        registry.register(
            "handshake_seconds",
            "Time to accept a commit or proposal",
            m.handshake_seconds.clone(),
        );
        registry.register(
            "send_seconds",
            "Time to accept an application message",
            m.send_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
