//! Shared server state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kith_store::{Millis, Store};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::extract::AuthCache;
use crate::metrics::Metrics;
use crate::push::Hub;

/// Where the server gets the time, so tests can move it.
pub trait Clock: Send + Sync + 'static {
    fn now_millis(&self) -> Millis;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock tests set by hand.
#[derive(Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        ManualClock(AtomicU64::new(start))
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything a handler needs. One shared allocation: every request clones it several times
/// (router, middleware, extractors), so a clone is one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub config: Arc<ServerConfig>,
    pub hub: Arc<Hub>,
    pub auth_cache: Arc<AuthCache>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// One lock per conversation for validating handshakes in order.
    pub locks: Arc<crate::groups::locks::Locks>,
    pub safety: Arc<crate::safety::Safety>,
    /// What each send reads to fan a message out (routes, blocks), cached; not the HTTP router,
    /// which is `routes`.
    pub fanout: Arc<crate::fanout_cache::FanoutCache>,
    pub franking: Arc<crate::safety::franking::Franking>,
    /// Undelivered entries per device, for `max_queued_per_device`.
    pub queues: Arc<crate::queues::QueueDepths>,
    /// The listener's connection caps (`kith_listen::Gate`).
    pub gate: Arc<kith_listen::Gate>,
    /// Request bodies held in memory, bounded across all requests.
    pub bodies: Arc<crate::bodies::BodyBudget>,
    /// The key-transparency directory.
    pub kt: Arc<crate::kt::Kt>,
    shutdown: watch::Sender<bool>,
}

impl AppState {
    /// Builds the state; loads (or, on a new server, creates) the franking key.
    pub async fn build(
        store: Arc<dyn Store>,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, kith_store::StoreError> {
        let franking = crate::safety::franking::Franking::load(&*store, clock.now_millis()).await?;
        let metrics = Arc::new(Metrics::new());
        let kt = Arc::new(crate::kt::Kt::start(store.clone()).await?);
        Ok(AppState(Arc::new(Shared {
            kt,
            safety: Arc::new(crate::safety::Safety::new(config.safety.clone())),
            fanout: Arc::new(crate::fanout_cache::FanoutCache::new(store.shared())),
            franking: Arc::new(franking),
            queues: Arc::new(crate::queues::QueueDepths::new(config.max_queued_per_device)),
            gate: kith_listen::Gate::new(kith_listen::Limits {
                max_connections: kith_listen::room_for(config.max_connections),
                max_per_address: config.max_connections_per_address,
                header_timeout: config.header_read_timeout,
            }),
            bodies: crate::bodies::BodyBudget::new(
                config.max_body_memory_bytes,
                config.max_body_memory_per_address,
                metrics.body_budget_refusals.clone(),
            ),
            store,
            config: Arc::new(config),
            hub: Arc::new(Hub::default()),
            auth_cache: Arc::new(AuthCache::default()),
            metrics,
            clock,
            locks: Arc::default(),
            shutdown: watch::Sender::new(false),
        })))
    }

    pub fn now(&self) -> Millis {
        self.clock.now_millis()
    }

    /// Long-lived tasks (WebSockets, the sweeper) watch this to stop.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}
