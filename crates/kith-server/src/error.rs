//! The one place an error becomes an HTTP answer: a stable code, a status and a sentence.
//! Internal details go to the log, never to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kith_proto::{ErrorBody, ErrorCode};
use kith_store::StoreError;

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

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after: None }
    }

    /// `429 rate_limited` with `Retry-After`.
    pub fn slow_down(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            code: ErrorCode::RateLimited,
            message: message.into(),
            retry_after: Some(retry_after.max(1)),
        }
    }

    /// `503 unavailable` with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            code: ErrorCode::Unavailable,
            message: message.into(),
            retry_after: Some(UNAVAILABLE_RETRY_AFTER),
        }
    }

    pub fn unauthorized(why: &str) -> Self {
        ApiError::new(ErrorCode::Unauthorized, why)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => {
                ApiError::new(ErrorCode::UsernameTaken, "that username is taken")
            }
            StoreError::UnknownUser => ApiError::new(ErrorCode::UnknownUser, "no such user"),
            StoreError::UnknownDevice => ApiError::new(ErrorCode::UnknownDevice, "no such device"),
            StoreError::ConversationExists => {
                ApiError::new(ErrorCode::ConversationExists, "a conversation with that id exists")
            }
            StoreError::UnknownConversation => {
                ApiError::new(ErrorCode::UnknownConversation, "no such conversation")
            }
            StoreError::StaleEpoch => ApiError::new(
                ErrorCode::StaleEpoch,
                "the group has moved on; fetch what you missed and try again",
            ),
            StoreError::Unavailable => ApiError::unavailable(
                "the server cannot reach its storage right now; try again shortly",
            ),
            StoreError::Backend(detail) => {
                tracing::error!(%detail, "storage failure");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
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
