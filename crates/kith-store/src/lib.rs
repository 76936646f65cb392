//! The server's storage, as a trait of domain operations.
//!
//! Map:
//! - [`Store`]: what the server asks of storage, as five domain traits — [`AccountStore`]
//!   (accounts and devices), [`KeyPackageStore`], [`ConversationStore`] (conversations, their
//!   group state and member devices), [`DeliveryStore`] (the message blobs, per-device queues
//!   and the retention sweep) and [`SafetyStore`] (franking keys, reports, blocks, flags,
//!   signals). Backends (`kith-store-sqlite`, the embedded default, and
//!   `kith-store-postgres`) implement each in a file of its own.
//! - [`sql`], [`entry_kind_from_code`], [`account_kind_from_code`]: what both backends' row
//!   mapping shares.
//! - [`StoreError`]: the domain refusals a caller acts on, plus `Backend` for everything else.
//! - [`conformance`]: one suite every backend runs, through [`conformance_suite!`].
//!
//! Contract shared by every backend:
//! - an `Ok` from a write means it is committed and survives a crash of the process;
//! - a one-time KeyPackage is returned by exactly one claim;
//! - a message is stored once however many devices receive it, and it is deleted when its last
//!   queue entry is acknowledged (or by the retention sweep);
//! - queue sequence numbers and message ids only grow: they are never reused, so a client may
//!   use them to recognise a redelivery.

pub mod conformance;

use async_trait::async_trait;
pub use kith_proto::{AccountKind, EntryKind, SecretBytes};

/// A device's id, assigned by the store.
pub type DeviceId = u64;
/// A stored message's id, assigned by the store.
pub type MessageId = u64;
/// Unix time in milliseconds.
pub type Millis = u64;

/// How backends store an [`AccountKind`]: a small integer (0 person, 1 business).
pub fn account_kind_code(kind: AccountKind) -> i16 {
    match kind {
        AccountKind::Person => 0,
        AccountKind::Business => 1,
    }
}

/// The [`AccountKind`] for a stored code; unknown codes read as a person (the least privileged).
pub fn account_kind_from_code(code: i64) -> AccountKind {
    if code == 1 { AccountKind::Business } else { AccountKind::Person }
}

/// The [`EntryKind`] for a stored code; `None` for a code no version wrote.
pub fn entry_kind_from_code(code: i64) -> Option<EntryKind> {
    u8::try_from(code).ok().and_then(EntryKind::from_u8)
}

/// Queries whose text both backends run unchanged, so their column order — which each
/// backend's row mapping reads — is written once.
pub mod sql {
    /// An account with what safety needs to know (read into `AccountInfo`): username, kind,
    /// created_at, suspend_reason, blocked-by count, reported-by count, display_name,
    /// description, verified. Append a `WHERE`/`ORDER BY`.
    pub const ACCOUNT_INFO: &str = "SELECT a.username, a.kind, a.created_at, a.suspend_reason,
        (SELECT COUNT(*) FROM blocks b WHERE b.blocked = a.username),
        (SELECT COUNT(DISTINCT reporter) FROM reports r WHERE r.sender = a.username),
        a.display_name, a.description, a.verified
     FROM accounts a";
}

/// Ids and times are `u64` in the API and signed 64-bit in SQL; values never come near the
/// sign bit, and these conversions saturate rather than wrap if one ever did.
pub fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// See [`to_sql`]; a negative value (which no backend writes) reads as 0.
pub fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Domain refusals (worded as the server answers them) and backend failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("that username is taken")]
    UsernameTaken,
    #[error("no such user")]
    UnknownUser,
    #[error("no such device")]
    UnknownDevice,
    #[error("a conversation with that id exists")]
    ConversationExists,
    #[error("a link with that id exists")]
    LinkExists,
    #[error("no such conversation")]
    UnknownConversation,
    /// A group update expected an epoch the conversation has moved past.
    #[error("the group has moved on; fetch what you missed and try again")]
    StaleEpoch,
    /// The store is shutting down or its database cannot be reached; worth trying again.
    #[error("store unavailable")]
    Unavailable,
    /// Anything else; the text is for the log, never for a client.
    #[error("storage backend: {0}")]
    Backend(String),
    /// The database was brought to a schema this version does not know (a newer `kithd` ran
    /// on it): nothing is read or written, and the server does not start.
    #[error(
        "this database is at schema {found}, written by a newer kithd; this kithd knows schema \
         {known} at most: run that newer version (or a later one) on it"
    )]
    NewerSchema { found: u64, known: u64 },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An account with its first device, for [`AccountStore::create_account`].
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub username: String,
    pub kind: AccountKind,
    pub credential_key: Vec<u8>,
    /// SHA-256 of the device's bearer token; the token itself is never stored.
    pub token_hash: [u8; 32],
    pub key_packages: Vec<Vec<u8>>,
    /// `None` for a device whose KeyPackages follow its registration (they carry a
    /// certificate naming the device id it is given).
    pub last_resort: Option<Vec<u8>>,
    pub now: Millis,
    /// A business's public profile (display name, description); `None` for people.
    pub profile: Option<(String, String)>,
    /// The account key's public half (Ed25519, 32 bytes), which signs each device's
    /// certificate; `None` for a client from before account keys.
    pub account_key: Option<Vec<u8>>,
    /// The recovery key's public half (Ed25519, 32 bytes); `None` for a client from before
    /// recovery codes.
    pub recovery_key: Option<Vec<u8>>,
    /// The account key's signature binding the recovery key to it
    /// (`kith_proto::recovery::binding_bytes`).
    pub recovery_binding: Option<Vec<u8>>,
}

/// What authentication needs to know about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceAuth {
    pub device_id: DeviceId,
    pub username: String,
    pub kind: AccountKind,
    pub token_hash: [u8; 32],
    /// The device's Ed25519 public key (its MLS signature key).
    pub credential_key: Vec<u8>,
    /// Why the account is suspended, if it is.
    pub suspended: Option<String>,
    /// A business account the operator verified.
    pub verified: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: DeviceId,
    pub credential_key: Vec<u8>,
    pub created_at: Millis,
    /// The name its account gave it, if any (shown to the account's own devices only).
    pub name: Option<String>,
    /// When it was last seen authenticating, to within [`SEEN_EVERY`] (its account's own
    /// devices only).
    pub last_seen: Option<Millis>,
}

/// How often a device's `last_seen` is written at most: the account sees "last seen" to
/// within this, and an active device costs one write per interval, not one per request.
pub const SEEN_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountDevices {
    pub username: String,
    pub kind: AccountKind,
    pub devices: Vec<DeviceRecord>,
    /// See [`NewAccount::account_key`].
    pub account_key: Option<Vec<u8>>,
    /// See [`NewAccount::recovery_key`].
    pub recovery_key: Option<Vec<u8>>,
    /// See [`NewAccount::recovery_binding`]; `None` after an operator's reset.
    pub recovery_binding: Option<Vec<u8>>,
    /// The device that set the recovery key without the previous one's word (an account from
    /// before recovery codes), and when: such a key takes nothing back for a while, and goes
    /// with that device if it is removed.
    pub recovery_set_by: Option<(DeviceId, Millis)>,
    /// The devices the account had and removed (their keys stay taken): a leaf of one may still
    /// be in a group until a member takes it out, and a joiner must be able to tell it from a
    /// key nobody registered.
    pub removed: Vec<DeviceRecord>,
    /// Every change of the account's keys its recovery key signed (encoded
    /// `kith_proto::recovery::KeyChange`s), oldest first.
    pub key_changes: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKeyPackage {
    pub device_id: DeviceId,
    pub data: Vec<u8>,
    pub last_resort: bool,
}

/// Withheld entries one device holds at most from one sending device (see
/// [`NewMessage::withheld`]).
pub const MAX_WITHHELD: u64 = 16;

/// A message to store once and queue for each recipient device.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub conversation: Vec<u8>,
    pub sender_device: DeviceId,
    pub kind: EntryKind,
    pub data: Vec<u8>,
    pub recipients: Vec<DeviceId>,
    pub now: Millis,
    /// When the server must delete it, delivered or not (stories); `None`: retention only.
    pub expires_at: Option<Millis>,
    /// Devices it is queued for but withheld from — not fetched, not pushed, not counted in
    /// [`DeliveryStore::queue_depths`] — until [`SafetyStore::release_withheld`]: an invitation to someone
    /// whose account blocks the sender. A device holds at most [`MAX_WITHHELD`] withheld
    /// entries from one sending device; past that, it is left out.
    pub withheld: Vec<DeviceId>,
    /// The id the sending device chose for this message (16 bytes), so that posting it again —
    /// its answer was lost — delivers it once: a message whose device and id were stored before
    /// is not stored again (see [`Enqueued::repeat_of`]). Remembered for the retention period.
    pub client_id: Option<Vec<u8>>,
}

/// What another server process sharing the store announced (see [`DeliveryStore::announcements`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// These devices' queues grew.
    Queued(Vec<DeviceId>),
    /// This device's access changed (its token was rotated, its account suspended):
    /// connections opened before must close.
    AccessChanged(DeviceId),
    /// Announcements may have been missed (the listening connection was lost and replaced):
    /// every connected device should read its queue.
    Missed,
}

/// What [`DeliveryStore::enqueue`] stored: the message and, for `recipients[i]`, the entry `seqs[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub message_id: MessageId,
    pub seqs: Vec<u64>,
    /// `Some(accepted_at)` when the device had posted this client id before: nothing was
    /// stored or queued, `message_id` is the first's and this the time it was accepted.
    pub repeat_of: Option<Millis>,
}

/// A new conversation: its members (the creator included), the server's copy of its public
/// group state, and the Welcome for every member but the creator.
#[derive(Clone, Debug)]
pub struct NewConversation {
    pub conversation: Vec<u8>,
    pub creator_device: DeviceId,
    pub members: Vec<DeviceId>,
    pub welcome: Vec<u8>,
    pub epoch: u64,
    pub group_state: Vec<u8>,
    pub now: Millis,
    /// The only account allowed to post application messages (a story channel's owner).
    pub poster: Option<String>,
    /// A 1:1 conversation.
    pub direct: bool,
    /// Members the Welcome is withheld from (their account blocks the creator; see
    /// [`NewMessage::withheld`]).
    pub withheld: Vec<DeviceId>,
    /// The creation itself, remembered for its creator (see [`AppliedHandshake`]).
    pub applied: Option<AppliedHandshake>,
}

/// A handshake (a conversation's creation, a commit, a request to leave) the server applied
/// for a device: a device whose answer was lost posts the same bytes again — at once, or at its
/// next sync, however much happened in the group meanwhile — and is told they were applied
/// (rather than "stale", which would leave it behind the group for good). Kept per device and
/// conversation, the last one only: a client settles one before it sends another there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedHandshake {
    pub device: DeviceId,
    /// SHA-256 of what the device posted.
    pub digest: Vec<u8>,
    /// What it was answered: the epoch after it, and the members then.
    pub epoch: u64,
    pub members: u32,
}

/// Where a conversation's messages go, and who may post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Member devices, ascending.
    pub members: Vec<DeviceId>,
    /// The only account allowed to post application messages, if restricted.
    pub poster: Option<String>,
    /// A 1:1 conversation.
    pub direct: bool,
    /// The group's current epoch (application messages are accepted for this one only).
    pub epoch: u64,
}

/// A server key for franking tags. The newest unretired one signs; retired ones still verify
/// for the retention period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrankingKey {
    pub id: u32,
    /// `[redacted]` in `Debug`, wiped when dropped.
    pub key: kith_proto::SecretBytes,
    pub created_at: Millis,
    pub retired_at: Option<Millis>,
}

/// A verified report of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReport {
    pub reporter: String,
    pub sender: String,
    pub sender_device: DeviceId,
    pub conversation: Vec<u8>,
    pub message_time: Millis,
    /// The reported message's text, revealed by the reporter.
    pub text: String,
    pub reason: Option<String>,
    /// The franking tag: one report per reporter and message.
    pub tag: Vec<u8>,
    pub now: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRecord {
    pub id: u64,
    pub reporter: String,
    pub sender: String,
    pub sender_device: DeviceId,
    pub conversation: Vec<u8>,
    pub message_time: Millis,
    pub text: String,
    pub reason: Option<String>,
    pub created_at: Millis,
}

/// An account as the safety policy and the admin see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountInfo {
    pub username: String,
    pub kind: AccountKind,
    pub created_at: Millis,
    pub suspended: Option<String>,
    /// Distinct accounts that block it.
    pub blocked_by: u64,
    /// Distinct accounts that reported it.
    pub reported_by: u64,
    /// A business's public profile.
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub verified: bool,
}

/// An action the safety policy (or an admin) took, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagRecord {
    pub username: String,
    pub action: String,
    pub reason: String,
    pub created_at: Millis,
}

/// What an account did about another that its reputation may count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignalKind {
    Block,
    Report,
}

impl SignalKind {
    /// How backends store it.
    pub fn code(self) -> i16 {
        match self {
            SignalKind::Block => 0,
            SignalKind::Report => 1,
        }
    }

    pub fn from_code(code: i64) -> Self {
        if code == 1 { SignalKind::Report } else { SignalKind::Block }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Block => "block",
            SignalKind::Report => "report",
        }
    }
}

/// One account's block or report of another, as reputation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalRecord {
    pub target: String,
    pub source: String,
    pub kind: SignalKind,
    /// Whether it counts: the source is not a brand-new account and the target wrote to it.
    pub qualified: bool,
    pub created_at: Millis,
}

/// The server's copy of a conversation's public MLS state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    pub epoch: u64,
    pub state: Vec<u8>,
    /// Bumped by every update, a proposal's too (which keeps the epoch): an update made from
    /// an older copy is refused, so two nodes cannot overwrite each other's change.
    pub revision: u64,
}

/// A validated change to a conversation: applied only if the conversation is still at
/// `expected_epoch` (one commit per epoch) and `expected_revision` (nothing changed it since
/// it was read).
#[derive(Clone, Debug)]
pub struct GroupUpdate {
    pub conversation: Vec<u8>,
    pub expected_epoch: u64,
    pub expected_revision: u64,
    pub epoch: u64,
    pub state: Vec<u8>,
    /// The member devices after the change: the conversation's fan-out list.
    pub members: Vec<DeviceId>,
    /// Messages to store and queue with the change (the commit, a Welcome).
    pub messages: Vec<NewMessage>,
    /// The handshake, remembered for the device that posted it, with the change or not at all
    /// (see [`AppliedHandshake`]).
    pub applied: Option<AppliedHandshake>,
}

/// A device found by its credential key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOwner {
    pub credential_key: Vec<u8>,
    pub device_id: DeviceId,
    pub username: String,
    /// Removed from its account ([`AccountStore::remove_device`]): its key stays taken, and a
    /// group's leaf that still carries it gets nothing.
    pub removed: bool,
}

/// One entry of a device's queue, joined with its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub seq: u64,
    pub message_id: MessageId,
    pub conversation: Vec<u8>,
    pub kind: EntryKind,
    pub sender: String,
    pub sender_device: DeviceId,
    /// The sender's account kind and, for a business, whether the admin verified it.
    pub sender_kind: AccountKind,
    pub sender_verified: bool,
    pub data: Vec<u8>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
}

/// How much the store holds; for tests, metrics and operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub accounts: u64,
    pub devices: u64,
    pub messages: u64,
    pub queue_entries: u64,
    pub key_packages: u64,
}

/// A link offered by a device of `username` (see [`AccountStore::create_link`]).
#[derive(Clone, Debug)]
pub struct NewLink {
    pub id: String,
    pub username: String,
    pub device_id: DeviceId,
    /// The offering device's key-exchange message.
    pub pake: Vec<u8>,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// A link session as stored. Everything in it but the ids is either public (key-exchange
/// messages) or sealed between the two devices with a key the server never learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRecord {
    pub id: String,
    pub username: String,
    /// The device that offered it.
    pub device_id: DeviceId,
    pub pake: Vec<u8>,
    pub expires_at: Millis,
    /// The new device's key-exchange message and its sealed request, once it joined.
    pub joined: Option<(Vec<u8>, Vec<u8>)>,
    /// The new device's id and the sealed handover, once approved (the handover is dropped
    /// when the new device answers with its KeyPackages).
    pub approved: Option<(DeviceId, Option<Vec<u8>>)>,
    /// The new device's sealed KeyPackages, for the offering device to add it with.
    pub key_packages: Option<Vec<u8>>,
}

/// The device an approval makes, with the sealed handover for it.
#[derive(Clone, Debug)]
pub struct LinkedDevice {
    pub credential_key: Vec<u8>,
    pub token_hash: [u8; 32],
    pub handover: Vec<u8>,
    pub max_devices: u32,
    pub now: Millis,
    /// The link's new expiry once approved: the history transfer runs until then.
    pub keep_until: Millis,
}

/// A new recovery key, for [`AccountStore::set_recovery_key`].
#[derive(Clone, Debug)]
pub struct RecoveryKeySet {
    /// The recovery key the account must have now (`None`: none).
    pub expected: Option<Vec<u8>>,
    pub new: Vec<u8>,
    /// The change the expected key signed (kept with the others), if any.
    pub change: Option<Vec<u8>>,
    /// See [`NewAccount::recovery_binding`].
    pub binding: Option<Vec<u8>>,
    /// The device setting it without the previous key's word (see
    /// [`AccountDevices::recovery_set_by`]), and when.
    pub set_by: Option<(DeviceId, Millis)>,
}

/// An account started again on a new device, for [`AccountStore::recover_account`].
#[derive(Clone, Debug)]
pub struct AccountRecovery {
    pub username: String,
    /// The recovery key the request was verified under: the recovery happens only if it is
    /// still the account's.
    pub verified_with: Vec<u8>,
    /// The account's keys from now on, and the change (signed by `verified_with`) that says so.
    pub account_key: Vec<u8>,
    pub recovery_key: Vec<u8>,
    pub recovery_binding: Vec<u8>,
    pub change: Vec<u8>,
    /// The new device.
    pub credential_key: Vec<u8>,
    pub token_hash: [u8; 32],
    pub now: Millis,
}

/// What a recovery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryOutcome {
    Recovered {
        device_id: DeviceId,
        /// The devices removed.
        removed: Vec<DeviceId>,
        /// Each conversation a removed device was in, with its other accounts' member devices
        /// (to be told the account started again).
        conversations: Vec<(Vec<u8>, Vec<DeviceId>)>,
    },
    /// The account's recovery key is not the one the request was verified under (replaced
    /// meanwhile, or never set).
    OtherKey,
    /// The credential key is another device's.
    KeyTaken,
}

/// What an approval did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkApproval {
    Approved(DeviceId),
    /// Nobody joined the link yet.
    NotJoined,
    /// Expired, approved already, or no such link.
    Gone,
    /// The account holds as many devices as it may.
    TooManyDevices,
    /// The credential key is another device's.
    KeyTaken,
}

/// The server's storage: every domain's operations together. Each method is one atomic
/// operation; see the domain traits for what each does. Every type that implements the five
/// is a `Store`.
pub trait Store:
    AccountStore + KeyPackageStore + ConversationStore + DeliveryStore + SafetyStore + DirectoryStore
{
}

impl<T> Store for T where
    T: AccountStore
        + KeyPackageStore
        + ConversationStore
        + DeliveryStore
        + SafetyStore
        + DirectoryStore
{
}

/// One state of a key-transparency label (an `akd` value state): which label, published at
/// which epoch as which version, and the record as the directory encodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtState {
    pub label: Vec<u8>,
    pub epoch: u64,
    pub version: u64,
    pub data: Vec<u8>,
}

/// One atomic write of the key-transparency directory.
#[derive(Clone, Debug, Default)]
pub struct KtWrite {
    /// Records by their binary id (tree nodes, the tree's head), replacing any with that id.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Value states, replacing any of the same label and epoch.
    pub states: Vec<KtState>,
    /// The epoch the tree's head moves to in this write, if it moves: the write is refused
    /// with [`StoreError::StaleEpoch`] unless the stored head is the epoch before it (or there
    /// is none yet), so two publishers can never both write one epoch.
    pub head: Option<u64>,
}

/// A published epoch: the directory's root hash then, and the server's signature over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtRootRecord {
    pub epoch: u64,
    pub root: Vec<u8>,
    pub signature: Vec<u8>,
    pub published_at: Millis,
}

/// The key-transparency directory's storage (`akd`'s, in the server's database): its records,
/// the keys it was started with, the roots it published, and who publishes.
#[async_trait]
pub trait DirectoryStore: Send + Sync + 'static {
    /// The records with these binary ids that exist, as (id, data).
    async fn kt_records(&self, ids: &[Vec<u8>]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Writes `write` in one transaction (see [`KtWrite::head`]).
    async fn kt_write(&self, write: KtWrite) -> StoreResult<()>;

    /// Every state of a label, oldest epoch first.
    async fn kt_states(&self, label: &[u8]) -> StoreResult<Vec<KtState>>;

    /// The newest state of each label that has one, at `max_epoch` or before when given.
    async fn kt_latest_states(
        &self,
        labels: &[Vec<u8>],
        max_epoch: Option<u64>,
    ) -> StoreResult<Vec<KtState>>;

    /// The directory's secret keys (VRF, root signing), made by the first node to start: a
    /// node passes the pair it made and gets back the stored one, its own if it was first.
    async fn kt_keys(&self, made: (Vec<u8>, Vec<u8>)) -> StoreResult<(SecretBytes, SecretBytes)>;

    /// Records a published root (an existing one for the epoch is kept: first one wins).
    async fn add_kt_root(&self, root: KtRootRecord) -> StoreResult<()>;

    /// Published roots from `from` on, oldest first, at most `limit`.
    async fn kt_roots(&self, from: u64, limit: u32) -> StoreResult<Vec<KtRootRecord>>;

    /// The newest published root, if any.
    async fn kt_latest_root(&self) -> StoreResult<Option<KtRootRecord>>;

    /// Takes or renews the publisher's lease for `node` until `until`: true if `node` holds it
    /// now (nobody did, it had expired by `now`, or `node` held it already).
    async fn kt_lead(&self, node: &str, now: Millis, until: Millis) -> StoreResult<bool>;

    /// Accounts whose directory value may have changed since the last publish, taken out of
    /// the list (at most `limit`), those marked by [`DirectoryStore::kt_mark`] (a change) before
    /// those only [`DirectoryStore::kt_mark_all`] marked (a check).
    async fn kt_take_dirty(&self, limit: u32) -> StoreResult<Vec<String>>;

    /// Marks accounts for the next publish.
    async fn kt_mark(&self, usernames: &[String]) -> StoreResult<()>;

    /// Marks every account for the next publish (a new publisher checks them all once).
    async fn kt_mark_all(&self) -> StoreResult<()>;
}

/// Accounts and devices: creation, authentication, suspension, business listing.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account and its first device. `Err(UsernameTaken)` if the name exists.
    async fn create_account(&self, account: NewAccount) -> StoreResult<DeviceId>;

    /// The device's authentication record, `Ok(None)` if there is no such device.
    async fn device_auth(&self, device: DeviceId) -> StoreResult<Option<DeviceAuth>>;

    /// The account and its devices in creation order, `Ok(None)` if there is no such account.
    async fn account_devices(&self, username: &str) -> StoreResult<Option<AccountDevices>>;

    /// The account, with what safety needs to know, `Ok(None)` if there is none.
    async fn account_info(&self, username: &str) -> StoreResult<Option<AccountInfo>>;

    /// Suspends (with a reason) or, with `None`, reinstates an account. `Err(UnknownUser)`.
    /// A suspension is announced to other processes sharing the store as
    /// [`Announcement::AccessChanged`] of each of the account's devices.
    async fn set_suspended(&self, username: &str, reason: Option<String>) -> StoreResult<()>;

    /// Gives an account from before account keys its key: set only while it has none. Whether
    /// the account holds `key` now (`false`: it holds another). `Err(UnknownUser)`.
    async fn set_account_key(&self, username: &str, key: Vec<u8>) -> StoreResult<bool>;

    /// Stores a link offered by a device. `Err(LinkExists)` if the id is taken.
    async fn create_link(&self, link: NewLink) -> StoreResult<()>;

    /// The link, if it exists (expired or not: the caller judges).
    async fn link(&self, id: &str) -> StoreResult<Option<LinkRecord>>;

    /// The new device's half of the key exchange and its sealed request: taken once, and only
    /// before `now` passes the link's expiry. Whether it was taken.
    async fn join_link(
        &self,
        id: &str,
        pake: Vec<u8>,
        request: Vec<u8>,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Makes the new device of a joined, unexpired, unapproved link (within the account's
    /// device limit, with a credential key no device has) and keeps the sealed handover for
    /// it, atomically.
    async fn approve_link(&self, id: &str, device: LinkedDevice) -> StoreResult<LinkApproval>;

    /// The new device's sealed KeyPackages, in place of the handover (which it has now).
    /// Whether the link was approved and still there.
    async fn answer_link(&self, id: &str, key_packages: Vec<u8>) -> StoreResult<bool>;

    /// Keeps chunk `n` of `total` of the history the offering device hands the new one, while
    /// the link is approved and unexpired at `now`. Whether it was kept.
    async fn put_link_chunk(
        &self,
        id: &str,
        n: u32,
        total: u32,
        data: Vec<u8>,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Chunk `n` of a link's history and the count, once put up.
    async fn link_chunk(&self, id: &str, n: u32) -> StoreResult<Option<(u32, Vec<u8>)>>;

    /// Forgets a link (used, or cancelled), with its history chunks. Links also go with the retention sweep once
    /// expired ([`DeliveryStore::sweep_expired`]).
    async fn delete_link(&self, id: &str) -> StoreResult<()>;

    /// Removes a device from its account at `now`, for good: its token is refused from then on
    /// (it has no authentication record any more), its KeyPackages, queue and conversation
    /// memberships go, and it is left out of every device list, claim and device count. Other
    /// processes sharing the store are told ([`Announcement::AccessChanged`]).
    /// `Err(UnknownDevice)` if there is no such device (or it was removed already).
    async fn remove_device(&self, device: DeviceId, now: Millis) -> StoreResult<()>;

    /// Gives the account the recovery key `set.new` if its recovery key is `set.expected` now
    /// (`None`: it has none), recording `set.change` (an encoded `KeyChange`) among its key
    /// changes when given; `Ok(false)` when the recovery key is not the expected one.
    /// `Err(UnknownUser)`.
    async fn set_recovery_key(&self, username: &str, set: RecoveryKeySet) -> StoreResult<bool>;

    /// Starts the account again on a new device, in one transaction: every device it had is
    /// removed as [`AccountStore::remove_device`] removes one (other processes are told), the new
    /// one is made, and its keys are replaced with the change recorded. `Err(UnknownUser)`.
    async fn recover_account(&self, recovery: AccountRecovery) -> StoreResult<RecoveryOutcome>;

    /// Names (or, with `None`, unnames) a device. `Err(UnknownDevice)`.
    async fn set_device_name(&self, device: DeviceId, name: Option<String>) -> StoreResult<()>;

    /// Records that the device was seen at `at` (an earlier time never replaces a later one).
    async fn note_seen(&self, device: DeviceId, at: Millis) -> StoreResult<()>;

    /// Replaces the device's token hash (a rotated token); `Err(UnknownDevice)` if none.
    async fn set_token_hash(&self, device: DeviceId, token_hash: [u8; 32]) -> StoreResult<()>;

    /// Marks a business verified (or not). `Err(UnknownUser)` if there is no such business.
    async fn set_verified(&self, username: &str, verified: bool) -> StoreResult<()>;

    /// Which of `usernames` are business accounts (unknown names are left out), in one query:
    /// the opt-in rule asks it of a whole group at every change that adds.
    async fn businesses_among(&self, usernames: &[String]) -> StoreResult<Vec<String>>;

    /// Business accounts whose username, display name or description contains `query`
    /// (case-insensitive), verified first, then by name; at most `limit`.
    async fn search_businesses(&self, query: &str, limit: u32) -> StoreResult<Vec<AccountInfo>>;
}

/// KeyPackages: upload, claims (one-time first, then the last-resort one), and which device owns a credential key.
#[async_trait]
pub trait KeyPackageStore: Send + Sync + 'static {
    /// Adds one-time KeyPackages (and replaces the last-resort one when given). Returns how
    /// many one-time KeyPackages the device now holds.
    async fn add_key_packages(
        &self,
        device: DeviceId,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> StoreResult<u64>;

    /// One-time KeyPackages the device holds.
    async fn key_packages_remaining(&self, device: DeviceId) -> StoreResult<u64>;

    /// Deletes every one-time KeyPackage the device holds (its last-resort one stays); returns
    /// how many went. The device renews them so (see `UploadKeyPackages::replace`).
    async fn drop_key_packages(&self, device: DeviceId) -> StoreResult<u64>;

    /// Hands out one KeyPackage for each device of the account: the oldest one-time
    /// KeyPackage, consumed, or the last-resort one (kept) when none is left — or always the
    /// last-resort one when `one_time` is false (the account's claim budget is spent). A device
    /// with neither is skipped. `Err(UnknownUser)` if there is no such account.
    async fn claim_key_packages(
        &self,
        username: &str,
        one_time: bool,
        except: Option<DeviceId>,
    ) -> StoreResult<Vec<ClaimedKeyPackage>>;

    /// The devices whose credential key is one of `keys` (unknown keys are left out).
    async fn devices_by_credential_keys(&self, keys: &[Vec<u8>]) -> StoreResult<Vec<KeyOwner>>;
}

/// Conversations: their creation, public group state (epoch, revision, members), routes, and who has spoken where.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Records a conversation and its members and queues the Welcome for every member but the
    /// creator, in one transaction. `Err(ConversationExists)`, `Err(UnknownDevice)`.
    async fn create_conversation(&self, conversation: NewConversation) -> StoreResult<MessageId>;

    /// The server's copy of the conversation's public group state.
    async fn group_state(&self, conversation: &[u8]) -> StoreResult<Option<GroupState>>;

    /// Applies a validated group change atomically: new state, epoch and member list, and its
    /// messages queued. `Err(StaleEpoch)` if the conversation is no longer at
    /// `expected_epoch` and `expected_revision`, `Err(UnknownConversation)`. Returns the ids of the stored messages.
    async fn update_group(&self, update: GroupUpdate) -> StoreResult<Vec<MessageId>>;

    /// The last handshake applied for `device` in the conversation (see [`AppliedHandshake`]).
    async fn applied_handshake(
        &self,
        conversation: &[u8],
        device: DeviceId,
    ) -> StoreResult<Option<AppliedHandshake>>;

    /// The conversation's member devices and posting rule, `Ok(None)` if there is no such
    /// conversation.
    async fn conversation_route(&self, conversation: &[u8]) -> StoreResult<Option<Route>>;

    /// Whether `a` and `b` are both members of a 1:1 conversation.
    async fn share_direct_conversation(&self, a: &str, b: &str) -> StoreResult<bool>;

    /// Remembers that `speaker` posted in the conversation (idempotent).
    async fn note_spoke(&self, conversation: &[u8], speaker: &str) -> StoreResult<()>;

    /// Whether `speaker` posted in a 1:1 conversation with `listener` (a group does not count:
    /// its admin could add anyone after the fact).
    async fn has_written_to(&self, speaker: &str, listener: &str) -> StoreResult<bool>;
}

/// Delivery: messages stored once, per-device queues, acknowledgements, retention, and what other nodes announce.
#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    /// Stores the message once and queues it for each recipient. Durable when it returns.
    /// Answers the message id and each recipient's entry, in the order of `recipients`, so the
    /// server can push them to connected devices without reading them back.
    async fn enqueue(&self, message: NewMessage) -> StoreResult<Enqueued>;

    /// The message `device` posted with `client_id` (see [`NewMessage::client_id`]): its id and
    /// when it was accepted, while the retention period keeps it.
    async fn sent_before(
        &self,
        device: DeviceId,
        client_id: &[u8],
    ) -> StoreResult<Option<(MessageId, Millis)>>;

    /// Up to `limit` of the device's entries with `seq > after`, in queue order, leaving out
    /// messages that expired by `now`.
    async fn fetch(
        &self,
        device: DeviceId,
        after: u64,
        limit: u32,
        now: Millis,
    ) -> StoreResult<Vec<StoredEntry>>;

    /// How many entries each device's queue holds (expired ones included until the sweep,
    /// withheld ones not), in the order of `devices`; an unknown device holds 0.
    async fn queue_depths(&self, devices: &[DeviceId]) -> StoreResult<Vec<u64>>;

    /// Counts one message of `conversation` as missed by each of `devices`: it skipped them,
    /// their queues being full.
    async fn note_missed(&self, devices: &[DeviceId], conversation: &[u8]) -> StoreResult<()>;

    /// Up to `limit` of the device's missed counts, by conversation (see
    /// [`DeliveryStore::note_missed`]).
    async fn missed(&self, device: DeviceId, limit: u32) -> StoreResult<Vec<(Vec<u8>, u64)>>;

    /// Subtracts the counts the device was told of; a count that reaches zero is forgotten.
    async fn forget_missed(&self, device: DeviceId, told: &[(Vec<u8>, u64)]) -> StoreResult<()>;

    /// Deletes the device's entries with these sequence numbers, and every message whose last
    /// entry that was. Unknown or already-acknowledged numbers are ignored. Returns how many
    /// entries were removed.
    async fn ack(&self, device: DeviceId, seqs: &[u64]) -> StoreResult<u64>;

    /// Deletes every message created before `cutoff` or expiring by `now`, with its queue
    /// entries, delivered or not, and every link expired by `now`. Returns how many messages
    /// were deleted.
    async fn sweep_expired(&self, cutoff: Millis, now: Millis) -> StoreResult<u64>;

    /// Makes deleted content unrecoverable from the store's own files where the backend keeps
    /// copies (SQLite: checkpoint and truncate the WAL). A no-op elsewhere.
    async fn compact(&self) -> StoreResult<()>;

    /// What the store holds now.
    async fn counts(&self) -> StoreResult<StoreCounts>;

    /// What *other* server processes sharing this store changed that concerns this process's
    /// open connections, as they announce it (PostgreSQL: `LISTEN`/`NOTIFY`). `None` for a
    /// store one process uses alone; only the first call gets the receiver.
    fn announcements(&self) -> Option<tokio::sync::mpsc::Receiver<Announcement>> {
        None
    }

    /// Whether other processes (other `kithd` nodes) may change this store too: a node then
    /// must not serve a rule that protects people (a block) from its own cache.
    fn shared(&self) -> bool {
        false
    }
}

/// Safety: franking keys, reports, blocks (and the entries withheld by them), flags and signals.
#[async_trait]
pub trait SafetyStore: Send + Sync + 'static {
    /// Every franking key, oldest first.
    async fn franking_keys(&self) -> StoreResult<Vec<FrankingKey>>;

    /// Adds a franking key and retires the ones in use (they keep verifying for a while).
    async fn add_franking_key(&self, key: Vec<u8>, now: Millis) -> StoreResult<u32>;

    /// Records a verified report: its id, and whether it is new. Reporting the same message
    /// (tag) again records nothing and returns the first report's id with `false`.
    async fn add_report(&self, report: NewReport) -> StoreResult<(u64, bool)>;

    /// Every report, oldest first.
    async fn reports(&self) -> StoreResult<Vec<ReportRecord>>;

    /// `blocker` blocks `blocked` (idempotent). `Err(UnknownUser)` if `blocked` does not exist.
    async fn block(&self, blocker: &str, blocked: &str, now: Millis) -> StoreResult<()>;

    /// Lifts a block; returns whether there was one.
    async fn unblock(&self, blocker: &str, blocked: &str) -> StoreResult<bool>;

    /// The accounts `blocker` blocks, by name.
    async fn blocked_by(&self, blocker: &str) -> StoreResult<Vec<String>>;

    /// The devices of every account that blocks `sender`.
    async fn devices_blocking(&self, sender: &str) -> StoreResult<Vec<DeviceId>>;

    /// Counts one more attempt by `source` (an address, say) at `now`, and returns how many
    /// it made since `since`, this one included. Attempts older than `since` (of every source)
    /// are forgotten. Every node sharing the store counts into the same total.
    async fn count_attempt(&self, source: &str, since: Millis, now: Millis) -> StoreResult<u64>;

    /// Records an action taken against an account.
    async fn add_flag(&self, flag: FlagRecord) -> StoreResult<()>;

    /// Every recorded action, oldest first.
    async fn flags(&self) -> StoreResult<Vec<FlagRecord>>;

    /// `blocker` no longer blocks `sender`: the entries withheld from `blocker`'s devices
    /// because `sender` sent them are delivered from now on. Answers the devices whose queue
    /// grew.
    async fn release_withheld(&self, blocker: &str, sender: &str) -> StoreResult<Vec<DeviceId>>;

    /// Records a block or report, once per target, source and kind: a repeat changes nothing
    /// and answers `Ok(None)`. Otherwise answers how many *qualified* signals of that kind the
    /// target now has.
    async fn add_signal(&self, signal: SignalRecord) -> StoreResult<Option<u64>>;

    /// Takes back one signal (a block that was lifted); answers whether there was one.
    async fn withdraw_signal(
        &self,
        target: &str,
        source: &str,
        kind: SignalKind,
    ) -> StoreResult<bool>;

    /// The recorded signals (of one target, or all), oldest first.
    async fn signals(&self, target: Option<&str>) -> StoreResult<Vec<SignalRecord>>;

    /// Forgets a target's signals (an admin reviewed them); answers how many there were.
    async fn clear_signals(&self, target: &str) -> StoreResult<u64>;
}
