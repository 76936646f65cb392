//! The Kith delivery server: a library (`app`, `run`) and the `kithd` binary.
//!
//! Map:
//! - [`config`]: the settings, one struct, from defaults, a TOML file, `KITHD_*` variables and
//!   flags;
//! - [`accounts`]: registration, tokens and KeyPackages, one function per rule;
//! - [`admin`]: `kithd admin …`, and [`stores`]: opening the store a configuration names (the
//!   `kithd` binary only parses its command line and serves);
//! - [`state`]: what every handler shares — the [`Store`](kith_store::Store), the push hub,
//!   the authentication cache, metrics, the clock and the limits;
//! - [`error`]: [`ApiError`](error::ApiError), the one place errors become HTTP answers;
//! - [`extract`]: request extractors — the bearer-authenticated device and a JSON body reader
//!   whose every refusal has its own stable code;
//! - [`groups`]: the server's copy of each group's public MLS state, the admin and size
//!   policy, and per-conversation ordering of commits;
//! - [`mls`]: what the server checks of MLS data without any secret (KeyPackages, message
//!   framing);
//! - [`routes`]: one module per concern (accounts, KeyPackages, conversations, the queue, the
//!   WebSocket, operations) and [`app`], the router;
//! - [`delivery`]: the delivery rules every path goes through (membership, rates, blocks,
//!   the queue cap), one function each; [`queues`]: each device's queue depth;
//! - [`push`]: wake-ups for connected devices when their queue grows;
//! - [`fanout_cache`]: short-lived caches of conversation routes and blocks for the send path;
//! - [`bodies`]: request bodies held in memory, bounded across all requests and per address;
//! - [`retention`]: the sweep that deletes ciphertext older than `retention_days`;
//! - [`metrics`]: Prometheus counters;
//! - [`openapi`]: the OpenAPI document, generated from the handlers' annotations;
//! - [`tls`]: HTTPS and WSS with rustls when a certificate is configured;
//! - [`businesses`]: the opt-in rule — a business reaches only people who opened a
//!   conversation with it, in every kind of conversation;
//! - [`safety`]: message franking and verified reports, and the metadata-only abuse policy.
//!
//! The server never sees plaintext: it stores MLS ciphertext, KeyPackages and the fan-out lists
//! it needs, and logs neither content, tokens nor keys.

pub mod accounts;
pub mod admin;
pub mod bodies;
pub mod businesses;
pub mod config;
pub mod delivery;
pub mod error;
pub mod extract;
pub mod fanout_cache;
pub mod groups;
pub mod kt;
pub mod links;
pub mod metrics;
pub mod mls;
pub mod openapi;
pub mod push;
pub mod queues;
pub mod recovery;
pub mod retention;
pub mod routes;
pub mod safety;
pub mod state;
pub mod stores;
pub mod tls;

use std::future::Future;

pub use config::ServerConfig;
pub use routes::app;
pub use state::{AppState, Clock, ManualClock, SystemClock};

/// Serves `state` on `listener` until `shutdown` resolves, then closes WebSockets, waits for
/// requests in flight and returns. The retention sweep runs in the background meanwhile.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tls::serve(listener, state, shutdown, None).await
}
