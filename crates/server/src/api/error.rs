//! Errors as the API answers them: a status, a stable code and a message
//! that says what to fix. Internal failures are logged and answered with a
//! plain 500 that reveals nothing.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_proto::error::{ErrorBody, ErrorCode, ErrorDetail};
use tessera_proto::{BlockId, PathError};

use crate::blocks::BlockError;
use crate::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid path: {0}")]
    InvalidPath(#[from] PathError),
    #[error("missing, wrong or expired credentials: log in again")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("too many failed attempts: wait {0} seconds before trying again")]
    RateLimited(u64),
    /// Over a cap that protects the server (message, seconds to wait).
    #[error("{0}")]
    Throttled(String, u64),
    /// The server cannot take the request now (message, seconds to wait).
    #[error("{0}")]
    Unavailable(String, u64),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0} is a file, not a folder")]
    NotAFolder(String),
    #[error("{0} is a folder, not a file")]
    NotAFile(String),
    #[error("{path} changed: it is at revision {current_rev} now; fetch it and retry")]
    Conflict { path: String, current_rev: i64 },
    #[error("{} block(s) must be uploaded before this commit", .0.len())]
    MissingBlocks(Vec<BlockId>),
    #[error("{0}")]
    HashMismatch(String),
    /// A folder would end up inside itself.
    #[error("{0}")]
    InsideItself(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("range not satisfiable: the file is {0} bytes")]
    RangeNotSatisfiable(u64),
    #[error("the server's storage is full: free space or add capacity, then retry")]
    InsufficientStorage,
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    Internal(String),
}

/// True if `e` or anything it wraps says the disk is full.
fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded)
        {
            return true;
        }
        let text = err.to_string();
        if text.contains("database or disk is full") || text.contains("No space left on device") {
            return true;
        }
        cur = err.source();
    }
    false
}

impl ApiError {
    fn status_code(&self) -> (StatusCode, ErrorCode) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            InvalidPath(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidPath),
            Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            RateLimited(_) | Throttled(..) => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited)
            }
            NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            AlreadyExists(_) => (StatusCode::CONFLICT, ErrorCode::AlreadyExists),
            NotAFolder(_) => (StatusCode::CONFLICT, ErrorCode::NotAFolder),
            NotAFile(_) => (StatusCode::CONFLICT, ErrorCode::NotAFile),
            Conflict { .. } => (StatusCode::CONFLICT, ErrorCode::Conflict),
            MissingBlocks(_) => (StatusCode::BAD_REQUEST, ErrorCode::MissingBlocks),
            HashMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::HashMismatch),
            InsideItself(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge),
            RangeNotSatisfiable(_) => (StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::BadRequest),
            InsufficientStorage => (
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::InsufficientStorage,
            ),
            QuotaExceeded(_) => (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::QuotaExceeded),
            Unavailable(..) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }

    /// The error as a JSON detail, for answers that carry several.
    pub fn status(&self) -> StatusCode {
        self.status_code().0
    }

    pub fn detail(self) -> ErrorDetail {
        let (_, code) = self.status_code();
        let message = self.to_string();
        let (current_rev, missing) = match self {
            ApiError::Conflict { current_rev, .. } => (Some(current_rev), Vec::new()),
            ApiError::MissingBlocks(ids) => (None, ids),
            _ => (None, Vec::new()),
        };
        ErrorDetail {
            code,
            message,
            current_rev,
            missing,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound(m) => ApiError::NotFound(m),
            MetaError::AlreadyExists(m) => ApiError::AlreadyExists(m),
            MetaError::NotAFolder(p) => ApiError::NotAFolder(p),
            MetaError::NotAFile(p) => ApiError::NotAFile(p),
            MetaError::Conflict { path, current_rev } => ApiError::Conflict { path, current_rev },
            MetaError::MissingBlocks(ids) => ApiError::MissingBlocks(ids),
            MetaError::Invalid(m) => ApiError::BadRequest(m),
            MetaError::Forbidden(m) => ApiError::Forbidden(m),
            MetaError::IntoItself(m) => ApiError::InsideItself(m),
            e @ MetaError::QuotaExceeded { .. } => ApiError::QuotaExceeded(e.to_string()),
            MetaError::Unavailable(why) => {
                tracing::warn!(%why, "database unavailable: answered 503");
                ApiError::Unavailable(
                    "the database is unavailable for a moment (restarting or failing over); \
                     nothing was changed: retry after the seconds Retry-After says"
                        .into(),
                    rand::Rng::random_range(&mut rand::rng(), 1..=3),
                )
            }
            MetaError::Interrupted(why) => {
                tracing::warn!(%why, "database stopped answering: answered 503");
                ApiError::Unavailable(
                    "the database stopped answering while this request ran: a change may or \
                     may not have been made, so look before sending it again (reads may be \
                     retried after the seconds Retry-After says)"
                        .into(),
                    rand::Rng::random_range(&mut rand::rng(), 1..=3),
                )
            }
            MetaError::Contended(why) => {
                tracing::warn!(%why, "a change met another: answered 503");
                ApiError::Unavailable(
                    "another change met this one at the same moment; nothing was changed: \
                     send it again after the seconds Retry-After says"
                        .into(),
                    1,
                )
            }
            other if is_disk_full(&other) => ApiError::InsufficientStorage,
            other => ApiError::internal(other),
        }
    }
}

impl From<BlockError> for ApiError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::HashMismatch { .. } => ApiError::HashMismatch(e.to_string()),
            BlockError::BadPayload | BlockError::TooLarge => ApiError::BadRequest(e.to_string()),
            BlockError::Meta(m) => m.into(),
            other if is_disk_full(&other) => ApiError::InsufficientStorage,
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let message = if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
            "internal server error; the server log has the details".to_owned()
        } else {
            self.to_string()
        };
        let mut headers = Vec::new();
        if let ApiError::RateLimited(secs)
        | ApiError::Throttled(_, secs)
        | ApiError::Unavailable(_, secs) = &self
        {
            headers.push((header::RETRY_AFTER, HeaderValue::from(*secs)));
        }
        if let ApiError::RangeNotSatisfiable(size) = &self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.push((header::CONTENT_RANGE, v));
        }
        let (current_rev, missing) = match self {
            ApiError::Conflict { current_rev, .. } => (Some(current_rev), Vec::new()),
            ApiError::MissingBlocks(ids) => (None, ids),
            _ => (None, Vec::new()),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                current_rev,
                missing,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        resp.headers_mut().extend(headers);
        resp
    }
}
