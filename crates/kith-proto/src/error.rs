//! Stable, machine-readable error codes. A code, once published, keeps its meaning and status.

use serde::{Deserialize, Serialize};

/// Every error the API returns. The serialized name (`snake_case`) is the stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not the JSON the endpoint expects.
    MalformedJson,
    /// A binary field is not valid base64.
    BadBase64,
    /// The body is larger than the server's `max_body_bytes`.
    BodyTooLarge,
    /// A query string or path parameter is invalid.
    BadRequest,
    /// The username breaks the rules (3–32 characters of `a-z 0-9 _ .`).
    InvalidUsername,
    /// Somebody already registered that username.
    UsernameTaken,
    /// No account has that username.
    UnknownUser,
    /// A device id named in the request does not exist or does not fit.
    UnknownDevice,
    /// The `Authorization` header is missing, malformed or wrong.
    Unauthorized,
    /// The caller is authenticated but not allowed to do this.
    Forbidden,
    /// A KeyPackage or credential key does not parse, verify or belong to the device.
    InvalidKeyPackage,
    /// More KeyPackages than one request or one device may hold.
    TooManyKeyPackages,
    /// The account has no device with a KeyPackage to hand out.
    NoKeyPackages,
    /// A conversation id is not 16–32 bytes of lowercase hex.
    InvalidConversationId,
    /// A conversation with that id exists already.
    ConversationExists,
    /// No conversation has that id.
    UnknownConversation,
    /// The caller's device is not a member of the conversation.
    NotAMember,
    /// The MLS message does not parse or does not fit the conversation.
    InvalidMessage,
    /// A commit for an epoch that has already moved on.
    StaleEpoch,
    /// The other side of a 1:1 conversation left it (deleted the chat): nothing posted there
    /// reaches anyone; open a new conversation.
    ConversationEnded,
    /// The change would take the group past the server's `max_group_size`.
    GroupFull,
    /// Only the group's admins may do this (add, remove others, change admins).
    NotAdmin,
    /// A report that does not verify (tag, commitment or signature).
    InvalidReport,
    /// The account is suspended; the message says why.
    Suspended,
    /// A business may write only to people who opened a conversation with it.
    NotOptedIn,
    /// Slow down; `Retry-After` says for how long.
    RateLimited,
    /// Every device of the recipient holds as many undelivered messages as the server keeps;
    /// try again after `Retry-After` (when they have caught up).
    QueueFull,
    /// No link has that id (never offered, cancelled, or used and gone).
    UnknownLink,
    /// The link's ten minutes are over.
    LinkExpired,
    /// The link was joined already: a code works once.
    LinkUsed,
    /// The account holds as many devices as the server allows.
    TooManyDevices,
    /// The recovery code does not match the account's (or the account has none).
    WrongRecoveryCode,
    /// The key directory holds nothing for that account yet (it is published within seconds
    /// of a change).
    NotPublished,
    /// The key directory has not published that epoch.
    UnknownEpoch,
    /// No such route.
    NotFound,
    /// The route exists but not with that method.
    MethodNotAllowed,
    /// The server is shutting down or overloaded; try again.
    Unavailable,
    /// Our fault. The details are in the server's log, not in the answer.
    Internal,
    /// A code this version does not know — one a newer server added. Never sent; the answer's
    /// HTTP status and message still say what happened.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MalformedJson
            | BadBase64
            | BadRequest
            | InvalidUsername
            | UnknownDevice
            | InvalidKeyPackage
            | TooManyKeyPackages
            | InvalidConversationId
            | InvalidReport
            | InvalidMessage => 400,
            Unauthorized => 401,
            Forbidden | NotAMember | NotAdmin | Suspended | NotOptedIn | WrongRecoveryCode => 403,
            UnknownUser | UnknownConversation | UnknownLink | NotFound | NotPublished
            | UnknownEpoch => 404,
            MethodNotAllowed => 405,
            UsernameTaken | ConversationExists | StaleEpoch | ConversationEnded | NoKeyPackages
            | GroupFull | LinkUsed | TooManyDevices => 409,
            LinkExpired => 410,
            BodyTooLarge => 413,
            RateLimited => 429,
            QueueFull => 429,
            Internal | Unknown => 500,
            Unavailable => 503,
        }
    }

    /// The stable code as text, e.g. `"stale_epoch"`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedJson => "malformed_json",
            BadBase64 => "bad_base64",
            BodyTooLarge => "body_too_large",
            BadRequest => "bad_request",
            InvalidUsername => "invalid_username",
            UsernameTaken => "username_taken",
            UnknownUser => "unknown_user",
            UnknownDevice => "unknown_device",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            InvalidKeyPackage => "invalid_key_package",
            TooManyKeyPackages => "too_many_key_packages",
            NoKeyPackages => "no_key_packages",
            InvalidConversationId => "invalid_conversation_id",
            ConversationExists => "conversation_exists",
            UnknownConversation => "unknown_conversation",
            NotAMember => "not_a_member",
            InvalidMessage => "invalid_message",
            StaleEpoch => "stale_epoch",
            ConversationEnded => "conversation_ended",
            GroupFull => "group_full",
            NotAdmin => "not_admin",
            InvalidReport => "invalid_report",
            Suspended => "suspended",
            NotOptedIn => "not_opted_in",
            RateLimited => "rate_limited",
            QueueFull => "queue_full",
            UnknownLink => "unknown_link",
            LinkExpired => "link_expired",
            LinkUsed => "link_used",
            TooManyDevices => "too_many_devices",
            WrongRecoveryCode => "wrong_recovery_code",
            NotPublished => "not_published",
            UnknownEpoch => "unknown_epoch",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Unavailable => "unavailable",
            Internal => "internal",
            Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// A sentence for people; never parse it.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody { error: ErrorDetail { code, message: message.into() } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_name_matches_as_str() {
        for code in [
            ErrorCode::MalformedJson,
            ErrorCode::StaleEpoch,
            ErrorCode::NotAMember,
            ErrorCode::TooManyKeyPackages,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn a_code_a_newer_server_adds_is_read_as_unknown() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"error": {"code": "needs_a_newer_client", "message": "upgrade"}}"#,
        )
        .unwrap();
        assert_eq!(body.error.code, ErrorCode::Unknown);
        assert_eq!(body.error.message, "upgrade");
    }
}
