//! The SDK's errors.

use kith_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("this profile has no account yet; run `kith register` first")]
    NotRegistered,
    #[error("this profile is already registered as {0}")]
    AlreadyRegistered(String),
    /// The server refused the request; `code` is its stable error code.
    #[error("{message} ({code})")]
    Server {
        status: u16,
        code: ErrorCode,
        message: String,
        /// The server's `Retry-After`, in seconds, when it gave one.
        retry_after: Option<u64>,
    },
    #[error("cannot reach the server: {0}")]
    Network(String),
    #[error("the server answered something unexpected: {0}")]
    Protocol(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("no conversation {0}")]
    UnknownConversation(String),
    /// Checked locally before asking the server, which enforces the same limit.
    #[error("the group would have {members} members; this server allows at most {max}")]
    GroupFull { members: usize, max: usize },
    /// Checked locally before asking the server, which enforces the same rule.
    #[error("only group admins can {0}")]
    NotAdmin(String),
    #[error("MLS: {0}")]
    Mls(String),
    /// An entry that cannot be used yet: its conversation's Welcome or the commit of its
    /// epoch has not arrived. It is held and tried again when they have.
    #[error("not yet usable: {0}")]
    NotYet(String),
    /// An entry names device keys of these accounts that this device has not looked up yet;
    /// the SDK fetches them and tries the entry again (never returned to callers).
    #[error("device keys of {0:?} needed")]
    NeedKeys(Vec<String>),
    /// An entry from an account this device blocks: left out, counted apart from the
    /// unusable ones (never returned to callers).
    #[error("from an account this device blocks")]
    FromBlocked,
    /// A message from an epoch whose keys this device has deleted (forward secrecy): it
    /// arrived too late to be read (never returned to callers).
    #[error("arrived after its epoch's keys were deleted")]
    TooLate,
    #[error("local storage: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("profile folder: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The server's error code, when the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::GroupFull { .. } => Some(ErrorCode::GroupFull),
            ClientError::NotAdmin(_) => Some(ErrorCode::NotAdmin),
            _ => None,
        }
    }

    pub(crate) fn mls(e: impl std::fmt::Display) -> Self {
        ClientError::Mls(e.to_string())
    }
}

pub type ClientResult<T> = Result<T, ClientError>;
