//! Why a new conversation or a change to one was refused. Each sentence is written here once;
//! `crate::error` gives each its stable code.

use kith_proto::group::ChangeRefusal;
use kith_store::StoreError;

use crate::businesses::BusinessError;
use crate::delivery::DeliveryError;
use crate::mls::FramingError;
use crate::safety::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    // What the handshake is (`invalid_message`).
    #[error("the handshake is not an MLS message")]
    NotMls,
    #[error("commits and proposals must be sent as MLS PublicMessages")]
    NotPublic,
    #[error("not an MLS protocol message")]
    NotProtocol,
    #[error("the handshake belongs to another conversation")]
    OtherConversation,
    #[error("application messages go to /v1/conversations/{{id}}/messages")]
    NotHandshake,
    #[error("a handshake is a commit or a proposal")]
    NotCommitOrProposal,
    #[error("only a proposal to leave may be sent on its own")]
    OnlyLeaveAlone,
    #[error("the handshake is for an epoch the group has not reached")]
    FutureEpoch,
    #[error("the handshake does not verify against the group")]
    DoesNotVerify,
    #[error("only members may send handshakes")]
    NotFromMember,
    #[error("unknown sender")]
    UnknownSender,
    #[error("a commit that adds members needs its Welcome")]
    WelcomeMissing,
    #[error("a Welcome comes only with a commit that adds")]
    WelcomeUnexpected,

    // The group's state (`invalid_message`).
    #[error("the group info is not an MLS message")]
    GroupInfoNotMls,
    #[error("the group info is an MLS message but not a GroupInfo")]
    NotGroupInfo,
    #[error("the ratchet tree does not parse")]
    TreeDoesNotParse,
    #[error("the group state does not verify")]
    StateDoesNotVerify,
    #[error("the group info is for another conversation")]
    GroupInfoOtherConversation,
    #[error("the group uses a ciphersuite this server does not speak")]
    Ciphersuite,
    #[error("the group lacks a valid Kith extension")]
    LacksExtension,
    #[error("the new group context lacks a valid Kith extension")]
    NewContextLacksExtension,
    #[error("a member of the group ({0}) is not a registered device of that user")]
    Unregistered(String),
    #[error("a device of {0} in the group is refused: {1}")]
    Certificate(String, kith_proto::account::CertificateError),

    // The rules of a new conversation (`invalid_message`).
    #[error("the creator is not in the group")]
    CreatorOutside,
    #[error("a conversation needs another member")]
    Alone,
    #[error("a 1:1 conversation has exactly two accounts and no admins")]
    DirectShape,
    #[error("a new group or story channel has its creator as its only admin")]
    FirstAdmin,

    // The rules of a commit.
    #[error("{0}")]
    Change(ChangeRefusal),
    #[error("this server accepts add, remove, update and group-context proposals only")]
    Proposal,
    #[error("a commit that changes the settings carries them, sealed")]
    SettingsUnsealed,
    #[error("a commit carries authenticated data only with new settings")]
    UnexpectedData,
    #[error("a commit's new leaf names another account than its sender")]
    PathLeafOfOther,
    #[error("an update names another account than the member it replaces")]
    UpdateOfOther,
    #[error("the group would have {members} members; this server allows at most {max}")]
    Full { members: usize, max: usize },
    /// `stale_epoch`: a commit must include every pending request to leave.
    #[error(
        "a member asked to leave and this commit does not include it; fetch what you missed \
         and commit again"
    )]
    LeaveLeftOut,
    /// `forbidden`.
    #[error("the handshake is signed by another member's key")]
    SignedByOther,
    /// `forbidden`: for an honest client the cause is a contact who deleted the chat, which the
    /// owner's device has not heard of yet: it catches up and tries again.
    #[error("a story channel reaches only accounts you have a conversation with")]
    StoryAudience,

    /// `internal`: logged with its reason, answered without it.
    #[error("internal error")]
    Internal(&'static str),

    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Business(#[from] BusinessError),
    #[error(transparent)]
    Limited(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ChangeRefusal> for GroupError {
    fn from(r: ChangeRefusal) -> Self {
        GroupError::Change(r)
    }
}

pub type GroupResult<T> = Result<T, GroupError>;
