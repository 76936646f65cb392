//! The Kith client SDK.
//!
//! Map:
//! - [`Client`] (`client`): one device's profile (held by one process at a time), what every
//!   part shares (the local store, the HTTP client, loaded groups);
//! - `account`: registration, the bearer token and its rotation;
//! - `sync`: fetch, process, acknowledge, hand over; KeyPackage upkeep; `push`: the same live
//!   over a WebSocket;
//! - `process`: one received entry into local state, per kind (`welcome`, `message`, `commit`),
//!   and what becomes of one not usable now (held, waiting for keys, left out);
//! - `unsure`: requests whose outcome is unknown, and the outbox — settled at one step;
//! - `convo`: opening 1:1 conversations and groups, writing messages;
//! - `groups`: adding, removing, promoting, renaming, leaving — commits the server validates,
//!   retried after catching up when another member's commit won the epoch;
//! - `report`: what a sync brought ([`SyncReport`]) and what it could not do ([`Problem`]),
//!   each for its own conversation;
//! - `rules`: the group's rules (who may add, remove, rename, change admins), applied to what
//!   others send as if the server were hostile;
//! - `franking` and `safety`: committing to and checking every message so a recipient can
//!   report one verifiably; blocking;
//! - `contacts` (who this device wrote to), `stories` (the story channel), `timers`
//!   (disappearing messages, deleting conversations, keeping deleted text off the disk);
//! - `chats`: the chat list as a window shows it (one line per person and per group, last
//!   message, unread count, marks) and what was read, for the app; [`View`] reads it from a
//!   second connection while the client waits on the network;
//! - `api`: the HTTP calls to `kithd`, and its errors turned into [`ClientError::Server`];
//! - `keys`: the device keys the server registered, which every member and sender must use;
//! - `local`: `local::LocalStore`, the one owner of the profile's database: its own tables
//!   (a file per group of them) in the same SQLite file as the MLS state;
//! - `mls`: the OpenMLS provider over that SQLite file, group configuration, KeyPackages;
//! - `signer`: the device's Ed25519 keys, held parsed; `tls`: the push channel's transport;
//! - `error`: [`ClientError`] (only what callers see), and [`Refusal`]: which of the SDK's
//!   rules said no, as a stable code;
//! - `raw` (feature `hostile`, for the testkit only): a profile's MLS state raw, to build what a
//!   modified client could send.
//!
//! What travels inside an MLS application message is `kith_proto::payload`.
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

mod account;
mod api;
mod chats;
mod claims;
mod client;
mod contacts;
mod convo;
mod error;
mod events;
mod franking;
mod groups;
mod keys;
pub mod kt;
mod link;
mod local;
mod mls;
mod notes;
mod process;
mod push;
#[cfg(feature = "hostile")]
pub mod raw;
mod recovery;
mod report;
mod rules;
mod safety;
mod safety_numbers;
mod settings;
mod signer;
mod stories;
mod sync;
mod timers;
mod tls;
mod unsure;
mod view;

pub use chats::ChatSummary;
pub use client::Client;
pub use convo::{MAX_TEXT_BYTES, Sent};
pub use error::{ClientError, ClientResult, Refusal};
pub use events::SystemEvent;
pub use groups::{GroupSummary, Target};
pub use kith_proto::{AccountKind, ErrorCode};
pub use kt::KeyWarning;
pub use link::{Approved, Joined, LinkCode, LinkOffer, Linked};
pub use local::{ConversationKind, Delivery, Message, Profile};
/// The one MLS ciphersuite Kith speaks.
pub use mls::CIPHERSUITE;
/// How the profile stores OpenMLS state; public for the benchmarks, which build the same store.
#[doc(hidden)]
pub use mls::JsonCodec;
pub use push::PushConnection;
pub use recovery::RecoveryCode;
pub use report::{Problem, ProblemKind, SyncReport};
pub use safety_numbers::SafetyNumber;
pub use stories::Story;
/// A disappearing-messages timer as people write it (`30s`, `5m`, `1d`, `4w`).
pub use timers::human as timer_text;
pub use view::View;

/// The SDK's futures must be `Send`, so a client can live in a spawned task (bots, servers).
#[cfg(test)]
mod send_check {
    fn is_send<T: Send>(_: &T) {}

    #[allow(dead_code, clippy::unwrap_used)]
    async fn futures_are_send(c: &mut crate::Client) {
        is_send(&c.sync());
        is_send(&c.send_text("bob", "x"));
        is_send(&c.create_group("g", &[]));
        is_send(&c.group_add("g", &[]));
        is_send(&c.group_remove("g", "bob"));
        is_send(&c.group_leave("g"));
        is_send(&c.group_promote("g", "bob"));
        is_send(&c.group_rename("g", "n"));
        is_send(&c.send_group("g", "x"));
        is_send(&c.rotate_token());
        is_send(&c.connect_push());
    }
}
