//! The one place an error becomes an HTTP answer: a stable code, a status and a sentence.
//!
//! Services return their own errors — [`GroupError`], [`DeliveryError`], [`ReportError`],
//! [`BusinessError`], [`AccountError`], [`BlockError`], [`AckError`], the policy's [`Refusal`],
//! the extractors' [`RequestError`] — each sentence written once, in its `#[error]`. Here each
//! gets its code (and a `Retry-After` where one is due). Internal details go to the log, never
//! to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kith_proto::group::ChangeRefusal;
use kith_proto::{ErrorBody, ErrorCode, IdError};
use kith_store::StoreError;

use crate::accounts::AccountError;
use crate::businesses::BusinessError;
use crate::delivery::DeliveryError;
use crate::delivery::entries::AckError;
use crate::extract::RequestError;
use crate::groups::GroupError;
use crate::mls::{FramingError, KeyPackageRefusal};
use crate::safety::Refusal;
use crate::safety::blocks::BlockError;
use crate::safety::reports::ReportError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (rate limits, cool-offs).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The `Retry-After` (seconds) of a `503 unavailable`: storage unreachable or stopping.
const UNAVAILABLE_RETRY_AFTER: u64 = 2;
/// `Retry-After` (seconds) of a `queue_full` refusal.
const QUEUE_FULL_RETRY_AFTER: u64 = 60;
/// `Retry-After` (seconds) for a device over its push connections.
const CONNECTIONS_RETRY_AFTER: u64 = 5;

impl ApiError {
    /// The error's own sentence under `code`.
    pub(crate) fn said(code: ErrorCode, e: &impl std::fmt::Display) -> Self {
        ApiError { code, message: e.to_string(), retry_after: None }
    }

    fn retry(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// `internal`: the reason goes to the log, the client gets a fixed sentence.
    fn internal(reason: &dyn std::fmt::Display) -> Self {
        tracing::error!(%reason, "internal error");
        ApiError { code: ErrorCode::Internal, message: "internal error".into(), retry_after: None }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::UsernameTaken => ErrorCode::UsernameTaken,
            StoreError::UnknownUser => ErrorCode::UnknownUser,
            StoreError::UnknownDevice => ErrorCode::UnknownDevice,
            StoreError::ConversationExists => ErrorCode::ConversationExists,
            StoreError::LinkExists => ErrorCode::LinkUsed,
            StoreError::UnknownConversation => ErrorCode::UnknownConversation,
            StoreError::StaleEpoch => ErrorCode::StaleEpoch,
            StoreError::Unavailable => {
                let why = "the server cannot reach its storage right now; try again shortly";
                return ApiError::said(ErrorCode::Unavailable, &why).retry(UNAVAILABLE_RETRY_AFTER);
            }
            StoreError::Backend(detail) => return ApiError::internal(&detail),
            StoreError::NewerSchema { .. } => return ApiError::internal(&e.to_string()),
        };
        ApiError::said(code, &e)
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        let code = match e {
            IdError::UsernameLength | IdError::UsernameCharacter(_) => ErrorCode::InvalidUsername,
            IdError::ConversationId => ErrorCode::InvalidConversationId,
        };
        ApiError::said(code, &e)
    }
}

impl From<Refusal> for ApiError {
    fn from(e: Refusal) -> Self {
        match e {
            Refusal::SlowDown { retry_after, .. } | Refusal::CoolingOff { retry_after, .. } => {
                ApiError::said(ErrorCode::RateLimited, &e).retry(retry_after)
            }
            Refusal::Suspended { .. } => ApiError::said(ErrorCode::Suspended, &e),
            Refusal::Store(e) => e.into(),
        }
    }
}

impl From<FramingError> for ApiError {
    fn from(e: FramingError) -> Self {
        ApiError::said(ErrorCode::InvalidMessage, &e)
    }
}

impl From<KeyPackageRefusal> for ApiError {
    fn from(e: KeyPackageRefusal) -> Self {
        ApiError::said(ErrorCode::InvalidKeyPackage, &e)
    }
}

impl From<BusinessError> for ApiError {
    fn from(e: BusinessError) -> Self {
        match e {
            BusinessError::Store(e) => e.into(),
            BusinessError::BadSearch => ApiError::said(ErrorCode::BadRequest, &e),
            _ => ApiError::said(ErrorCode::NotOptedIn, &e),
        }
    }
}

impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> Self {
        let code = match e {
            DeliveryError::NotAMember => ErrorCode::NotAMember,
            DeliveryError::StoryOwnerOnly => ErrorCode::Forbidden,
            DeliveryError::Ended => ErrorCode::ConversationEnded,
            DeliveryError::ClientId => ErrorCode::BadRequest,
            DeliveryError::Stale { .. } => ErrorCode::StaleEpoch,
            DeliveryError::QueueFull { .. } => {
                return ApiError::said(ErrorCode::QueueFull, &e).retry(QUEUE_FULL_RETRY_AFTER);
            }
            DeliveryError::Framing(e) => return e.into(),
            DeliveryError::Limited(e) => return e.into(),
            DeliveryError::Store(e) => return e.into(),
        };
        ApiError::said(code, &e)
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        let code = match e {
            GroupError::Change(ChangeRefusal::NotAdmin(_)) => ErrorCode::NotAdmin,
            GroupError::Full { .. } => ErrorCode::GroupFull,
            GroupError::LeaveLeftOut => ErrorCode::StaleEpoch,
            GroupError::SignedByOther | GroupError::StoryAudience => ErrorCode::Forbidden,
            GroupError::Internal(reason) => return ApiError::internal(&reason),
            GroupError::Framing(e) => return e.into(),
            GroupError::Delivery(e) => return e.into(),
            GroupError::Business(e) => return e.into(),
            GroupError::Limited(e) => return e.into(),
            GroupError::Store(e) => return e.into(),
            _ => ErrorCode::InvalidMessage,
        };
        ApiError::said(code, &e)
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::DoesNotVerify => ApiError::said(ErrorCode::InvalidReport, &e),
            ReportError::NotRecipient => ApiError::said(ErrorCode::NotAMember, &e),
            ReportError::Store(e) => e.into(),
        }
    }
}

impl From<crate::links::LinkError> for ApiError {
    fn from(e: crate::links::LinkError) -> Self {
        use crate::links::LinkError as L;
        let code = match e {
            L::BadId | L::BadPake | L::BadDevice | L::BadChunk => ErrorCode::BadRequest,
            L::NotForThisDevice => ErrorCode::Forbidden,
            L::Unknown => ErrorCode::UnknownLink,
            L::Expired => ErrorCode::LinkExpired,
            L::Used | L::NotJoined | L::NotAwaited => ErrorCode::LinkUsed,
            L::OtherAccount | L::NoAccountKey | L::BadSignature => ErrorCode::Forbidden,
            L::TooManyDevices(_) => ErrorCode::TooManyDevices,
            L::KeyTaken => ErrorCode::InvalidKeyPackage,
            L::Limited(e) => return e.into(),
            L::Store(e) => return e.into(),
        };
        ApiError::said(code, &e)
    }
}

impl From<crate::recovery::RecoveryError> for ApiError {
    fn from(e: crate::recovery::RecoveryError) -> Self {
        use crate::recovery::RecoveryError as R;
        let code = match e {
            R::BadKey | R::BadChange | R::BadToken | R::Unbound => ErrorCode::BadRequest,
            R::TooSoon(_) => ErrorCode::WrongRecoveryCode,
            R::CredentialKey | R::KeyTaken => ErrorCode::InvalidKeyPackage,
            R::WrongCode | R::NoCode | R::CodeHeld => ErrorCode::WrongRecoveryCode,
            R::NoSuchUser(_) => ErrorCode::UnknownUser,
            R::Limited(e) => return e.into(),
            R::Store(e) => return e.into(),
        };
        ApiError::said(code, &e)
    }
}

impl From<crate::kt::KtError> for ApiError {
    fn from(e: crate::kt::KtError) -> Self {
        use crate::kt::KtError as K;
        let code = match e {
            K::NotPublished(_) => ErrorCode::NotPublished,
            K::NoEpoch(_) => ErrorCode::UnknownEpoch,
            K::Directory(detail) => return ApiError::internal(&detail),
            K::Store(e) => return e.into(),
        };
        ApiError::said(code, &e)
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let code = match e {
            AccountError::NoSuchUser(_) => ErrorCode::UnknownUser,
            AccountError::DeviceGone => ErrorCode::UnknownDevice,
            AccountError::CredentialKey | AccountError::KeyTaken => ErrorCode::InvalidKeyPackage,
            AccountError::AccountKeyHeld => ErrorCode::Forbidden,
            AccountError::NotOwnDevice(_) => ErrorCode::UnknownDevice,
            AccountError::TooManyKeyPackages(_) | AccountError::TooManyHeld { .. } => {
                ErrorCode::TooManyKeyPackages
            }
            AccountError::NoKeyPackages(_) => ErrorCode::NoKeyPackages,
            AccountError::NotDeviceSignature => ErrorCode::Forbidden,
            AccountError::BadToken
            | AccountError::SameToken
            | AccountError::PersonProfile
            | AccountError::DisplayName
            | AccountError::Description
            | AccountError::AccountKey
            | AccountError::KeyPackagesTooEarly
            | AccountError::RemoveFromAnother
            | AccountError::NoLastResort
            | AccountError::DeviceName => ErrorCode::BadRequest,
            AccountError::NoRandomness => return ApiError::internal(&"no randomness for a token"),
            AccountError::Username(e) => return e.into(),
            AccountError::KeyPackage(e) => return e.into(),
            AccountError::Business(e) => return e.into(),
            AccountError::Limited(e) => return e.into(),
            AccountError::Store(e) => return e.into(),
        };
        ApiError::said(code, &e)
    }
}

impl From<BlockError> for ApiError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::Yourself => ApiError::said(ErrorCode::BadRequest, &e),
            BlockError::Store(e) => e.into(),
        }
    }
}

impl From<AckError> for ApiError {
    fn from(e: AckError) -> Self {
        match e {
            AckError::Store(e) => e.into(),
            _ => ApiError::said(ErrorCode::BadRequest, &e),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let code = match e {
            RequestError::NoAuthorization
            | RequestError::BadAuthorization
            | RequestError::AuthorizationNotText
            | RequestError::WrongToken => ErrorCode::Unauthorized,
            RequestError::BodyTooLarge => ErrorCode::BodyTooLarge,
            RequestError::BodiesBusy | RequestError::TooLate => {
                return ApiError::said(ErrorCode::Unavailable, &e).retry(UNAVAILABLE_RETRY_AFTER);
            }
            RequestError::TooManyConnections(_) => {
                return ApiError::said(ErrorCode::RateLimited, &e).retry(CONNECTIONS_RETRY_AFTER);
            }
            RequestError::BadBase64(_) => ErrorCode::BadBase64,
            RequestError::MalformedJson(_) => ErrorCode::MalformedJson,
            RequestError::BodyTooSlow
            | RequestError::BodyUnreadable
            | RequestError::BadQuery(_)
            | RequestError::NotWebSocket(_) => ErrorCode::BadRequest,
            RequestError::NoSuchEndpoint => ErrorCode::NotFound,
            RequestError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            RequestError::HandlerFailed => return ApiError::internal(&"a request handler failed"),
            RequestError::Id(e) => return e.into(),
            RequestError::Refused(e) => return e.into(),
            RequestError::Store(e) => return e.into(),
        };
        ApiError::said(code, &e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response =
            (status, axum::Json(ErrorBody::new(self.code, self.message))).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.code == ErrorCode::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Every service error answers as its `ApiError` does (for handlers returning them directly).
macro_rules! respond_as_api_error {
    ($($t:ty),*) => {$(
        impl IntoResponse for $t {
            fn into_response(self) -> Response {
                ApiError::from(self).into_response()
            }
        }
    )*};
}

respond_as_api_error!(RequestError);
