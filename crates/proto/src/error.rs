//! The API's error model: a stable machine-readable code and a message that
//! tells a person what to fix.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    InvalidPath,
    Unauthorized,
    /// Authenticated, but the request lacks what this kind of session
    /// requires (the web session's anti-forgery header).
    Forbidden,
    RateLimited,
    NotFound,
    AlreadyExists,
    NotAFolder,
    NotAFile,
    Conflict,
    MissingBlocks,
    HashMismatch,
    TooLarge,
    InsufficientStorage,
    /// The change would take the account past its storage quota (507).
    QuotaExceeded,
    /// The server cannot take this request now (a database failover, too
    /// many clients arriving at once): retry after `Retry-After` (503).
    Unavailable,
    Internal,
}

/// Body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// For `conflict`: the revision the server has now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_rev: Option<i64>,
    /// For `missing_blocks`: the ids the server does not have for you.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<crate::BlockId>,
}
