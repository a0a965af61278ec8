//! The wire contract between Tessera's server and its clients: block rules,
//! path rules, request and response types, error codes. No IO lives here.

pub mod api;
pub mod block;
pub mod cursor;
pub mod delta;
pub mod error;
pub mod headers;
pub mod pack;
pub mod path;

pub use block::{BlockId, ContentHash};
pub use error::{ErrorBody, ErrorCode};
pub use path::{PathError, RemotePath};

/// Prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";
