//! The SDK's errors: what went wrong ([`ClientError`]) and, for a refusal, which rule said
//! no ([`Refusal`], a stable code a caller matches on instead of reading the text).

use kith_proto::ErrorCode;

/// A rule the SDK applied and that said no. The first group refuses what the caller asked;
/// the second refuses what another device sent (those never reach callers of `sync`: the
/// entry is counted as dropped). Codes are stable: a program may match on them and on
/// [`Refusal::as_str`]; the text next to them is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// A message or story that is empty or too long.
    BadText,
    /// A username that cannot exist (characters, length).
    BadUsername,
    /// An argument out of its range: a report reason, a timer, a search, a group name.
    BadArgument,
    /// Something one cannot do to oneself (block, remove, write to oneself).
    Yourself,
    /// Unblocking someone who is not blocked.
    NotBlocked,
    /// Adding someone who is already a member (or renaming to the current name).
    AlreadyDone,
    /// Naming someone who is not a member of the group.
    NotMember,
    /// This device is no longer in that conversation.
    NotInConversation,
    /// A name that could mean several conversations.
    Ambiguous,
    /// A name that is neither a known group nor a user with a chat.
    NoSuchConversation,
    /// A message id this device never received.
    UnknownMessage,
    /// A CA certificate or server address that cannot be used.
    BadServer,
    /// A commit or proposal that breaks the group's rules (see `rules`).
    GroupRules,
    /// A Welcome that does not fit the conversation it claims to start.
    BadWelcome,
    /// An application message that breaks the rules of its conversation (a story from a
    /// non-contact, a rename from a non-admin, a missing or wrong franking tag).
    BadMessage,
    /// A device key the server has not registered for the account that uses it.
    UnregisteredKey,
    /// A KeyPackage that does not verify or names another account.
    BadKeyPackage,
    /// A business in a group with someone who never wrote to it (this person, here).
    NotOptedIn,
    /// A link code that cannot be read, or that the other device did not take.
    BadLinkCode,
    /// A recovery code that cannot be read.
    BadRecoveryCode,
    /// Keys the server's key directory does not prove are the ones it published (see
    /// `kith_client::kt`): they are not used.
    KeyNotPublished,
    /// The server's key directory broke its own history: a root it did not sign, another root
    /// for an epoch already seen, an epoch that went back, an append-only proof that fails.
    KeyDirectory,
    /// A verified contact's safety number changed: nothing is sent to them until this person
    /// looks at the new one (`kith verify`).
    SafetyNumberChanged,
}

impl Refusal {
    /// The stable code, as the SDK's callers (the CLI's `--json`, the app) show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadText => "bad_text",
            Refusal::BadUsername => "bad_username",
            Refusal::BadArgument => "bad_argument",
            Refusal::Yourself => "yourself",
            Refusal::NotBlocked => "not_blocked",
            Refusal::AlreadyDone => "already_done",
            Refusal::NotMember => "not_member",
            Refusal::NotInConversation => "not_in_conversation",
            Refusal::Ambiguous => "ambiguous",
            Refusal::NoSuchConversation => "no_such_conversation",
            Refusal::UnknownMessage => "unknown_message",
            Refusal::BadServer => "bad_server",
            Refusal::GroupRules => "group_rules",
            Refusal::BadWelcome => "bad_welcome",
            Refusal::BadMessage => "bad_message",
            Refusal::UnregisteredKey => "unregistered_key",
            Refusal::BadKeyPackage => "bad_key_package",
            Refusal::NotOptedIn => "not_opted_in",
            Refusal::BadLinkCode => "bad_link_code",
            Refusal::BadRecoveryCode => "bad_recovery_code",
            Refusal::KeyNotPublished => "key_not_published",
            Refusal::KeyDirectory => "key_directory",
            Refusal::SafetyNumberChanged => "safety_number_changed",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// The request went out and no answer came: the server may have carried it out (a sent
    /// message may still arrive). `timed_out` when the wait ran out rather than the
    /// connection breaking.
    #[error("{}", if *timed_out {
        "the server did not answer in time; it may still carry the request out"
    } else {
        "the connection broke before the server answered; it may have carried the request out"
    })]
    NoAnswer { timed_out: bool },
    #[error("the server answered something unexpected: {0}")]
    Protocol(String),
    /// One of the SDK's rules said no; `code` says which.
    #[error("{reason}")]
    Refused { code: Refusal, reason: String },
    #[error("no conversation {0}")]
    UnknownConversation(String),
    /// Checked locally before asking the server, which enforces the same limit.
    #[error("the group would have {members} members; this server allows at most {max}")]
    GroupFull { members: usize, max: usize },
    /// Checked locally before asking the server, which enforces the same rule.
    #[error("only group admins can {0}")]
    NotAdmin(String),
    /// OpenMLS or the crypto provider failed (a corrupt message, a storage fault) — not a
    /// rule: rules are [`ClientError::Refused`].
    #[error("MLS: {0}")]
    Mls(String),
    /// Another process holds the profile (one process at a time: see `Client::open`).
    #[error("the profile {path} is in use by {holder}")]
    ProfileInUse { path: String, holder: String },
    #[error("local storage: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("profile folder: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// A refusal by the SDK's rule `code`.
    pub fn refused(code: Refusal, reason: impl Into<String>) -> Self {
        ClientError::Refused { code, reason: reason.into() }
    }

    /// The server's error code, when the server refused (or the SDK refused first what the
    /// server would have refused with that code).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::GroupFull { .. } => Some(ErrorCode::GroupFull),
            ClientError::NotAdmin(_) => Some(ErrorCode::NotAdmin),
            _ => None,
        }
    }

    /// A fault of this device itself (its storage, its folder, its account): it stops
    /// everything, where a fault of one input or one step is reported and skipped.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            ClientError::Storage(_)
                | ClientError::Io(_)
                | ClientError::NotRegistered
                | ClientError::ProfileInUse { .. }
        ) || matches!(
            self.code(),
            Some(ErrorCode::Unauthorized | ErrorCode::Suspended | ErrorCode::UnknownDevice)
        )
    }

    /// The server could not be reached, or did not answer.
    pub fn is_unreached(&self) -> bool {
        matches!(self, ClientError::Network(_) | ClientError::NoAnswer { .. })
    }

    /// Which SDK rule refused, when one did.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// One stable code for every error: the server's code, the SDK rule's code, or the
    /// kind of failure (`network`, `protocol`, `mls`, `storage`, …). For programs that show
    /// errors (the CLI's `--json`, the app's page) and must not parse the text.
    pub fn code_str(&self) -> String {
        match self {
            ClientError::Server { code, .. } => code.to_string(),
            ClientError::Refused { code, .. } => code.as_str().into(),
            ClientError::NotRegistered => "not_registered".into(),
            ClientError::AlreadyRegistered(_) => "already_registered".into(),
            ClientError::Network(_) => "network".into(),
            ClientError::NoAnswer { .. } => "no_answer".into(),
            ClientError::Protocol(_) => "protocol".into(),
            ClientError::UnknownConversation(_) => "unknown_conversation".into(),
            ClientError::GroupFull { .. } => ErrorCode::GroupFull.to_string(),
            ClientError::NotAdmin(_) => ErrorCode::NotAdmin.to_string(),
            ClientError::Mls(_) => "mls".into(),
            ClientError::ProfileInUse { .. } => "profile_in_use".into(),
            ClientError::Storage(_) => "storage".into(),
            ClientError::Io(_) => "io".into(),
        }
    }

    /// The text for a person without the trailing code: the server's own message for a
    /// server refusal, the display text otherwise.
    pub fn message(&self) -> String {
        match self {
            ClientError::Server { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn mls(e: impl std::fmt::Display) -> Self {
        ClientError::Mls(e.to_string())
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

#[cfg(test)]
mod tests {
    use super::Refusal;

    #[test]
    fn refusal_codes_are_distinct_snake_case() {
        let all = [
            Refusal::BadText,
            Refusal::BadUsername,
            Refusal::BadArgument,
            Refusal::Yourself,
            Refusal::NotBlocked,
            Refusal::AlreadyDone,
            Refusal::NotMember,
            Refusal::NotInConversation,
            Refusal::Ambiguous,
            Refusal::NoSuchConversation,
            Refusal::UnknownMessage,
            Refusal::BadServer,
            Refusal::GroupRules,
            Refusal::BadWelcome,
            Refusal::BadMessage,
            Refusal::UnregisteredKey,
            Refusal::BadKeyPackage,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')));
    }
}
