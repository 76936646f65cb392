//! Request and response bodies of `/v1`, queue entries and WebSocket frames.
//!
//! Times are Unix milliseconds (`u64`). Device ids are server-assigned `u64`s. Conversation ids
//! are lowercase hex (see [`crate::ConversationId`]).

use serde::{Deserialize, Serialize};

use crate::{B64, ConversationId, Username};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Whether an account is a person or a business.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    #[default]
    Person,
    Business,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Person => "person",
            AccountKind::Business => "business",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "person" => Some(AccountKind::Person),
            "business" => Some(AccountKind::Business),
            _ => None,
        }
    }
}

/// `POST /v1/accounts`: a new account with its first device.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RegisterRequest {
    pub username: Username,
    #[serde(default)]
    pub kind: AccountKind,
    /// The device's Ed25519 public key: its MLS credential key.
    pub credential_key: B64,
    /// The account key's public half (Ed25519, 32 bytes): it signs each device's certificate
    /// (see `kith_proto::account`). Optional for clients from before account keys.
    #[serde(default)]
    pub account_key: Option<B64>,
    /// The recovery key's public half (Ed25519, 32 bytes), derived from the recovery code the
    /// device showed once and kept nothing of (see `kith_proto::recovery`). Optional for
    /// clients from before recovery codes.
    #[serde(default)]
    pub recovery_key: Option<B64>,
    /// The account key's signature over `kith_proto::recovery::binding_bytes` of the recovery
    /// key: required with one.
    #[serde(default)]
    pub recovery_binding: Option<B64>,
    /// One-time KeyPackages (TLS-serialized `MlsMessage`-free `KeyPackage`s). Only from a
    /// client without an account key: with one, a device's KeyPackages carry its certificate,
    /// which names the device id this registration gives, so they follow it
    /// (`POST /v1/key-packages`) and none may come with it.
    #[serde(default)]
    pub key_packages: Vec<B64>,
    /// The KeyPackage handed out when no one-time KeyPackage is left: required without an
    /// account key, refused with one (as above).
    #[serde(default)]
    pub last_resort_key_package: Option<B64>,
    /// A business's public name (1–64 characters); defaults to the username.
    #[serde(default)]
    pub display_name: Option<String>,
    /// A business's public description (up to 500 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// The device's bearer secret, chosen by the client (64 lowercase hex characters: 256
    /// random bits); the server makes one when it is missing. A client that chose it can post
    /// the same registration again when the answer was lost, and is answered as registered
    /// (see docs/protocol.md).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^[0-9a-f]{64}$"))]
    pub token: Option<crate::Secret>,
}

/// One entry of the business directory. All of it is public by design.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BusinessEntry {
    pub username: String,
    pub display_name: String,
    pub description: String,
    /// Marked by this server's admin.
    pub verified: bool,
}

/// `GET /v1/businesses?q=QUERY`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BusinessSearch {
    pub businesses: Vec<BusinessEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RegisterResponse {
    pub username: String,
    pub device_id: u64,
    /// The device's bearer secret. The server keeps only its SHA-256; it is shown once.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: crate::Secret,
}

/// `POST /v1/me/token`: proof that the device itself asks, not someone holding a copy of its
/// token — a signature by the device's credential key over
/// [`RotateTokenRequest::signed_bytes`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateTokenRequest {
    /// Ed25519 signature, 64 bytes.
    pub signature: B64,
    /// The new token, chosen by the client (64 lowercase hex characters); the server makes
    /// one when it is missing. A client that chose it learns whether a rotation whose answer
    /// was lost took effect by trying it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^[0-9a-f]{64}$"))]
    pub new_token: Option<crate::Secret>,
}

impl RotateTokenRequest {
    /// What the signature covers: a label, the device id, the SHA-256 of the token being
    /// replaced (so a signature is good for one rotation of one device only) and, when the
    /// client chose the new token, its SHA-256.
    pub fn signed_bytes(
        device_id: u64,
        current_token_hash: &[u8],
        new_token_hash: Option<&[u8]>,
    ) -> Vec<u8> {
        [
            b"kith rotate-token v1\0".as_slice(),
            &device_id.to_be_bytes(),
            current_token_hash,
            new_token_hash.unwrap_or_default(),
        ]
        .concat()
    }
}

/// `POST /v1/me/token`: the device's new bearer secret; the old one stops working at once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RotateTokenResponse {
    pub device_id: u64,
    /// Shown once, like the first; the server keeps only its SHA-256.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: crate::Secret,
}

/// `GET /v1/me`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WhoAmI {
    pub username: String,
    pub kind: AccountKind,
    pub device_id: u64,
    /// One-time KeyPackages this device still has on the server.
    pub key_packages_remaining: u64,
    pub limits: ServerLimits,
}

/// One device of an account.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceInfo {
    pub device_id: u64,
    pub credential_key: B64,
    pub created_at: u64,
}

/// `GET /v1/accounts/{username}/devices`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceList {
    pub username: String,
    pub kind: AccountKind,
    pub devices: Vec<DeviceInfo>,
    /// The account key's public half, when the account has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key: Option<B64>,
    /// See [`AccountKeys`].
    #[serde(default, flatten)]
    pub keys: AccountKeys,
    /// Devices the account removed: their keys were registered, and a leaf of one may still be
    /// in a group until a member takes it out (a joiner accepts it; nobody adds one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_devices: Vec<DeviceInfo>,
}

/// What lets a contact follow an account's key from one it knew: the recovery key, and each
/// change the recovery key signed (`kith_proto::recovery::KeyChange`, encoded), oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AccountKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_key: Option<B64>,
    /// The account key's signature binding the recovery key to it (absent after an operator's
    /// reset): a client that knew the account key takes a recovery key only with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_binding: Option<B64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_changes: Vec<B64>,
}

/// `PUT /v1/me/recovery-key`: gives the account a recovery key. An account without one takes
/// `recovery_key` from any of its devices (an account from before recovery codes); after that
/// only `change`, a `KeyChange` keeping the account key and signed by the current recovery
/// key — the current code — replaces it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SetRecoveryKey {
    pub recovery_key: B64,
    /// The account key's signature over `kith_proto::recovery::binding_bytes`.
    pub binding: B64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<B64>,
}

/// `POST /v1/accounts/{username}/recover`: starts the account again on a new device, with
/// the recovery code. Every device the account had is removed and its token refused at once;
/// `change` (a `KeyChange` signed by the current recovery key) gives the account its new
/// account and recovery keys; `signature` is the current recovery key's over
/// `kith_proto::recovery::recovery_bytes`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RecoverAccount {
    pub change: B64,
    /// The new device's Ed25519 public key: its MLS credential key.
    pub credential_key: B64,
    /// The new device's bearer secret, chosen by it (64 lowercase hex characters).
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{64}$"))]
    pub token: crate::Secret,
    pub signature: B64,
    /// The new account key's signature binding the new recovery key to it.
    pub recovery_binding: B64,
}

/// The answer to [`RecoverAccount`]: the new device's id (its KeyPackages, certified by the new
/// account key, follow as after a registration).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Recovered {
    pub device_id: u64,
    /// How many devices were removed.
    pub removed: u32,
}

/// What the server itself tells a conversation's members (a queue entry of kind `notice`):
/// only what a member needs to look up again, never content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// This member account started again with its recovery code: its devices are new, under a
    /// new account key (which the recovery key signed).
    Recovered(String),
    /// Another device of this account blocked or unblocked someone: the list to read again
    /// (`GET /v1/blocks`). Sent with an all-zero conversation id.
    BlocksChanged,
    /// What another device of this account posted for its other devices (`POST /v1/me/notes`),
    /// sealed with a key only the account's devices hold. Sent with an all-zero conversation id.
    Note(B64),
}

/// `POST /v1/me/notes`: a note for the caller's account's other devices, sealed by the device
/// (at most 4 KiB); the server queues it for each of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PostNote {
    pub data: B64,
}

/// `GET /v1/me/devices`: the caller's own account's devices, with what only the account
/// sees (names, when each was last seen).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MyDevices {
    pub devices: Vec<MyDevice>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MyDevice {
    pub device_id: u64,
    #[serde(default)]
    pub name: Option<String>,
    /// When it was added, Unix milliseconds.
    pub created_at: u64,
    /// When it was last seen, to within ten minutes; `None` before the first time.
    #[serde(default)]
    pub last_seen: Option<u64>,
    /// The device that asked.
    pub this_device: bool,
}

/// `PUT /v1/me/devices/{device_id}/name`: 1–64 characters without control characters, or
/// `null` to remove the name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RenameDevice {
    pub name: Option<String>,
}

/// `POST /v1/links`: a device offers a link for a new device of its account. The id is the
/// client's (ten characters of Crockford base32: 50 random bits), so its code can be shown
/// at once; `pake` is its half of the key exchange (see `kith_client::link`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct OfferLink {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9A-HJKMNP-TV-Z]{10}$"))]
    pub link_id: String,
    pub pake: B64,
}

/// The answer to [`OfferLink`], and `GET /v1/links/{link_id}` (no authentication: what the new
/// device needs to start).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LinkOffered {
    pub link_id: String,
    /// The offering device's half of the key exchange.
    pub pake: B64,
    /// Unix milliseconds; the link works until then, once.
    pub expires_at: u64,
}

/// `POST /v1/links/{link_id}/join` (no authentication): the new device's half of the key
/// exchange, and its request sealed for the offering device (its credential key and the hash
/// of the token it chose) — taken once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JoinLink {
    pub pake: B64,
    pub request: B64,
}

/// `GET /v1/links/{link_id}/request`: what the new device sent, once it joined.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LinkRequest {
    pub joined: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pake: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<B64>,
    /// The new device's sealed KeyPackages, once it answered the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_packages: Option<B64>,
    /// The new device's id, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<u64>,
}

/// `POST /v1/links/{link_id}/approve`: the offering device approves the new one. The server
/// makes the device only with a signature by the account's key over
/// [`crate::account::approval_bytes`] (this link, this account, this credential key and token
/// hash), and keeps the sealed handover for the new device.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApproveLink {
    pub credential_key: B64,
    /// SHA-256 of the new device's token (32 bytes).
    pub token_hash: B64,
    pub signature: B64,
    pub handover: B64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LinkApproved {
    pub device_id: u64,
}

/// `GET /v1/links/{link_id}/result` (no authentication): the new device's id and the sealed
/// handover, once approved.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LinkResult {
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<B64>,
}

/// `POST /v1/links/{link_id}/key-packages`: the new device, authenticated with its token, hands
/// the offering device its KeyPackages, sealed (the handover is dropped from the server then).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AnswerLink {
    pub key_packages: B64,
}

/// `PUT /v1/links/{link_id}/history/{n}` (the offering device puts up chunk `n` of `total`)
/// and `GET` of the same (the new device; `data` is absent until it is up). The data is sealed
/// between the two devices.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HistoryChunk {
    pub total: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<B64>,
}

/// `PUT /v1/me/account-key`: the key of an account from before account keys, given once by
/// one of its devices (the account key's public half; see `kith_proto::account`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SetAccountKey {
    pub account_key: B64,
}

/// `POST /v1/key-packages`: more KeyPackages for the calling device.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UploadKeyPackages {
    pub key_packages: Vec<B64>,
    /// Replaces the device's last-resort KeyPackage when present.
    #[serde(default)]
    pub last_resort_key_package: Option<B64>,
    /// Drop the device's one-time KeyPackages the server holds before adding these (a device
    /// renews them before they expire, so no claim meets an expired one).
    #[serde(default)]
    pub replace: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UploadKeyPackagesResponse {
    pub key_packages_remaining: u64,
}

/// A KeyPackage handed out by a claim. A one-time KeyPackage is never handed out twice.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClaimedKeyPackage {
    pub device_id: u64,
    pub key_package: B64,
    pub last_resort: bool,
}

/// `POST /v1/accounts/{username}/key-packages/claim`: one KeyPackage per device of the account.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClaimResponse {
    pub username: String,
    pub key_packages: Vec<ClaimedKeyPackage>,
    /// The account key each KeyPackage's certificate verifies under, when the account has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key: Option<B64>,
    /// See [`AccountKeys`].
    #[serde(default, flatten)]
    pub keys: AccountKeys,
}

/// `POST /v1/conversations`: register a new MLS group and deliver its Welcome.
///
/// The server follows the group from its public state: it verifies the GroupInfo and ratchet
/// tree, and derives the member devices from the tree's leaves (never from a list the client
/// claims).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateConversation {
    /// The MLS group id as lowercase hex.
    pub conversation_id: ConversationId,
    /// The TLS-serialized `MlsMessage` carrying the Welcome for every member but the creator.
    pub welcome: B64,
    /// The TLS-serialized `MlsMessage` carrying the group's signed GroupInfo.
    pub group_info: B64,
    /// The TLS-serialized ratchet tree.
    pub ratchet_tree: B64,
}

/// `POST /v1/conversations/{id}/handshake`: a commit (with a Welcome when it adds members), or
/// a member's proposal to leave. Sent as an MLS `PublicMessage` so the server can validate it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HandshakeRequest {
    pub message: B64,
    #[serde(default)]
    pub welcome: Option<B64>,
}

/// The commit or proposal was accepted; for a commit, the group is now at `epoch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HandshakeResponse {
    pub message_id: u64,
    pub epoch: u64,
    pub server_time: u64,
    /// Devices in the group after the change.
    pub members: u32,
}

/// `GET /v1/conversations/{id}/pending-leaves`: members who asked to leave, whose removal the
/// next commit must include (a commit without it is `409 stale_epoch`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PendingLeaves {
    pub leaves: Vec<PendingLeave>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PendingLeave {
    /// The member's leaf index in the group's tree.
    pub leaf: u32,
    pub username: String,
}

/// Limits of this server that clients check before they ask.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ServerLimits {
    /// Most member devices a group may have.
    pub max_group_size: u32,
    pub max_body_bytes: u64,
    /// How long a story lives before the server deletes it.
    pub story_ttl_seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateConversationResponse {
    pub conversation_id: String,
    pub message_id: u64,
    pub server_time: u64,
}

/// `POST /v1/conversations/{id}/messages`: one MLS message for every other member device.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SendMessage {
    /// The TLS-serialized `MlsMessage` (a `PrivateMessage` for application data).
    pub message: B64,
    /// An id the sending device chose for this message: 16 random bytes. Posted again with the
    /// same id — its answer was lost, or it waited in the device's outbox — the message is
    /// stored and delivered once; the repeat is answered `200` with the first's `message_id`
    /// and `server_time`. Remembered for the server's retention period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<B64>,
    /// Set when the device posts a message again: the server looks for the first before
    /// anything else, so a repeat is answered as delivered even after the group moved on to
    /// another epoch or the device left it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
}

/// The length of a [`SendMessage::client_id`].
pub const CLIENT_ID_LEN: usize = 16;

/// A `2xx` to a send means the message is durable on the server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SendResponse {
    pub message_id: u64,
    pub server_time: u64,
    /// How many device queues the message went into.
    pub recipients: u32,
    /// Devices left out because their queue is full (`max_queued_per_device`).
    #[serde(default)]
    pub skipped: u32,
    /// The accounts those devices belong to: the message did not reach them (each is told, on
    /// return, how many it missed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_delivered: Vec<String>,
    /// The message was stored before under this `client_id`: nothing was stored or sent again
    /// (`recipients`, `skipped` and `not_delivered` are then 0 and empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
}

/// What a queue entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// An MLS Welcome: the device was added to a conversation.
    Welcome,
    /// Any other MLS message of the conversation.
    Message,
    /// A word from the server itself about a member ([`Notice`], JSON), not an MLS message.
    Notice,
}

impl EntryKind {
    pub fn as_u8(self) -> u8 {
        match self {
            EntryKind::Welcome => 1,
            EntryKind::Message => 2,
            EntryKind::Notice => 3,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(EntryKind::Welcome),
            2 => Some(EntryKind::Message),
            3 => Some(EntryKind::Notice),
            _ => None,
        }
    }
}

/// One message waiting in a device's queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueEntry {
    /// Position in the device's queue; acknowledge by it.
    pub seq: u64,
    /// The stored message; the same for every recipient of one send.
    pub message_id: u64,
    pub conversation_id: String,
    pub kind: EntryKind,
    /// The account whose device sent it.
    pub sender: String,
    pub sender_device: u64,
    /// Whether the sender is a business, and if so whether this server verified it.
    #[serde(default)]
    pub sender_kind: AccountKind,
    #[serde(default)]
    pub sender_verified: bool,
    pub data: B64,
    pub server_time: u64,
    /// When the server deletes this message whether or not it was delivered (stories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The server's franking tag for an application message: kept by the recipient, it lets
    /// them report this one message verifiably.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frank: Option<FrankTag>,
}

/// `HMAC-SHA256(K_server[key_id], c ‖ group_id ‖ epoch ‖ server_time)`, where `c` is the
/// commitment in the message's authenticated data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FrankTag {
    pub key_id: u32,
    pub epoch: u64,
    pub tag: B64,
}

/// `POST /v1/reports`: reveal one received message to the server's admins, verifiably.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReportRequest {
    pub conversation_id: ConversationId,
    /// The account and device the message came from (as delivered).
    pub sender: Username,
    pub sender_device: u64,
    /// The delivered message's `server_time` and franking tag.
    pub server_time: u64,
    pub frank: FrankTag,
    /// The message body exactly as the sender committed to it.
    pub core: B64,
    /// The sender's franking key, from the decrypted payload.
    pub fk: B64,
    /// The sender's signature over the group id and the body's hash, from the payload.
    pub sig: B64,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReportResponse {
    pub report_id: u64,
    /// This device had reported this message already: nothing new was recorded (the first
    /// report, and its reason, stand).
    #[serde(default)]
    pub repeated: bool,
}

/// `POST /v1/blocks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BlockRequest {
    pub username: Username,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BlockList {
    pub blocked: Vec<String>,
}

/// `GET /v1/queue?after=SEQ&limit=N`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FetchResponse {
    pub entries: Vec<QueueEntry>,
    /// More entries wait after the last one returned.
    pub more: bool,
    /// Messages this device missed because its queue was full, by conversation, until it
    /// acknowledges having been told (`AckRequest.missed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missed: Vec<Missed>,
}

/// How many messages of a conversation a device missed: they were sent while its queue held
/// `max_queued_per_device` entries, and skipped it. (Commits and Welcomes are never skipped.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Missed {
    /// The conversation id as lowercase hex.
    pub conversation_id: String,
    pub count: u64,
}

/// An entry of a page as a client reads it: each on its own, so one this version cannot read
/// (a kind from a newer server, a malformed field, a hostile server's garbage) hides nothing
/// else. An unreadable entry that still has a `seq` is acknowledged and reported alone.
#[derive(Clone, Debug)]
pub enum Incoming {
    Entry(QueueEntry),
    Unreadable {
        seq: u64,
        /// Its conversation, when that much could be read (empty otherwise).
        conversation_id: String,
        why: String,
    },
}

impl Incoming {
    pub fn seq(&self) -> u64 {
        match self {
            Incoming::Entry(e) => e.seq,
            Incoming::Unreadable { seq, .. } => *seq,
        }
    }
}

/// Reads the entries of a page ([`FetchResponse`]'s or a pushed frame's `entries`) one by
/// one. Entries without even a readable `seq` are left out: nothing can acknowledge them.
pub fn read_entries(entries: Vec<serde_json::Value>) -> Vec<Incoming> {
    entries
        .into_iter()
        .filter_map(|value| {
            let seq = value.get("seq").and_then(serde_json::Value::as_u64)?;
            let conversation_id = value
                .get("conversation_id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            Some(match serde_json::from_value::<QueueEntry>(value) {
                Ok(entry) => Incoming::Entry(entry),
                Err(e) => Incoming::Unreadable { seq, conversation_id, why: e.to_string() },
            })
        })
        .collect()
}

/// `POST /v1/queue/ack`: the device stored these entries durably. Acking twice is harmless.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AckRequest {
    pub seqs: Vec<u64>,
    /// Missed counts the device took in (as `FetchResponse.missed` gave them): subtracted, so
    /// a message missed since is told next time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missed: Vec<Missed>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AckResponse {
    /// Entries removed by this call (already-acked ones count zero).
    pub removed: u64,
}

/// Frames the server pushes on `GET /v1/ws`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// New queue entries, in queue order.
    Entries { entries: Vec<QueueEntry> },
}

/// Frames a client may send on `GET /v1/ws`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Same as `POST /v1/queue/ack`.
    Ack { seqs: Vec<u64> },
}

/// `GET /healthz`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged() {
        let f = ClientFrame::Ack { seqs: vec![1, 2] };
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"type":"ack","seqs":[1,2]}"#);
        let s = ServerFrame::Entries { entries: vec![] };
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"type":"entries","entries":[]}"#);
    }

    #[test]
    fn kind_defaults_to_person() {
        let r: RegisterRequest = serde_json::from_str(
            r#"{"username":"bob","credential_key":"","key_packages":[],"last_resort_key_package":""}"#,
        )
        .unwrap();
        assert_eq!(r.kind, AccountKind::Person);
    }
}
