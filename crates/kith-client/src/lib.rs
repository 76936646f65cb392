//! The Kith client SDK.
//!
//! Map:
//! - [`Client`]: one device's profile — register, open a 1:1 conversation, send, sync, history,
//!   and live push over a WebSocket;
//! - `api`: the HTTP calls to `kithd`, and its errors turned into [`ClientError::Server`];
//! - `local`: the profile's own tables (account, conversations, message history, what was
//!   processed), in the same SQLite file as the MLS state;
//! - `mls`: the OpenMLS provider over that SQLite file, group configuration, KeyPackages;
//! - `payload`: what travels inside an MLS application message.
//!
//! A profile is a folder holding `kith.db` (SQLite, WAL). OpenMLS keeps its group state there
//! through `openmls_sqlite_storage`; our tables sit beside it. Processing a received message —
//! decrypting, advancing the MLS state and storing the plaintext — happens in one SQLite
//! transaction, and the server is told only afterwards, so a crash at any point neither loses a
//! message nor shows it twice.
//!
//! ```no_run
//! use kith_client::{AccountKind, Client};
//!
//! # async fn demo() -> Result<(), kith_client::ClientError> {
//! let mut alice = Client::open("/tmp/alice")?;
//! alice.register("http://127.0.0.1:8420", "alice", AccountKind::Person).await?;
//! alice.send_text("bob", "hello").await?;
//! for m in alice.sync().await?.messages {
//!     println!("{}: {}", m.from, m.text);
//! }
//! # Ok(()) }
//! ```

mod api;
mod client;
mod error;
mod local;
mod mls;
mod payload;

pub use client::{Client, PushConnection, SyncReport};
pub use error::{ClientError, ClientResult};
pub use kith_proto::{AccountKind, ErrorCode};
pub use local::{ConversationKind, Message, Profile};
