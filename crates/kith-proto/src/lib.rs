//! Wire types of Kith's HTTP and WebSocket API.
//!
//! This crate is shared by the server (`kith-server`) and the SDK (`kith-client`) so the two
//! cannot disagree about a field. It does no I/O.
//!
//! Map:
//! - [`b64`]: the base64 byte fields every binary value travels in, with a decoder that refuses
//!   bad input with a recognisable error;
//! - [`error`]: the stable error codes and the `{"error": {"code", "message"}}` body;
//! - [`group`]: the Kith extension in an MLS group's context (conversation type, admins);
//! - [`ids`]: usernames and conversation ids, and the rules that make them valid;
//! - `keypackage` (feature `mls`): what a usable Kith KeyPackage is, the one rule the server
//!   applies at upload and hand-out and every client at claim;
//! - [`api`]: request and response bodies, queue entries and WebSocket frames;
//! - [`settings`]: a conversation's private settings (name, timer) as MLS epoch state: their
//!   digest in the group context, sealed in commits, in Welcomes' GroupInfo;
//! - [`payload`]: what travels inside MLS application messages (never seen by the server, but
//!   for the one message a recipient reports), with its franking fields.

pub mod account;
pub mod api;
pub mod b64;
pub mod error;
pub mod group;
pub mod ids;
#[cfg(feature = "mls")]
pub mod keypackage;
pub mod kt;
pub mod payload;
pub mod recovery;
pub mod secret;
pub mod settings;
pub mod watch;

pub use api::*;
pub use b64::B64;
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use group::{GroupMeta, GroupType};
pub use ids::{ConversationId, IdError, Username, validate_username};
pub use secret::{Secret, SecretBytes};

/// Every API route lives under this prefix.
pub const API_PREFIX: &str = "/v1";

/// The one MLS ciphersuite Kith speaks today (X25519, AES-128-GCM, SHA-256, Ed25519).
pub const CIPHERSUITE_NAME: &str = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";
