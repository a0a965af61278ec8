//! Why one sync operation did not complete. The round goes on without it;
//! what the variant says decides what the next round does about it.

use crate::remote::ClientError;

use super::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The disk no longer holds what the plan saw, so nothing there was
    /// touched: the next round scans again and plans afresh (an edit made
    /// meanwhile is uploaded, never overwritten).
    #[error("changed on disk meanwhile; will retry")]
    ChangedMeanwhile,
    /// A deletion found something other than what it was to delete: it
    /// stays, and the next round carries it over as a change.
    #[error("changed on disk meanwhile; kept")]
    KeptChanged,
    /// A folder to delete still holds something: it stays.
    #[error("folder is not empty; kept")]
    KeptNotEmpty,
    /// The server could not be reached or failed for a while; trying
    /// again later may work as it is.
    #[error(transparent)]
    RetryLater(ClientError),
    /// The server refused the operation, or the disk or the sync state
    /// failed: it stays undone until something changes.
    #[error(transparent)]
    Refused(ClientError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    State(#[from] StateError),
}

impl OpError {
    /// Whether the same operation may succeed in a later round with no
    /// one doing anything about it.
    pub fn will_retry(&self) -> bool {
        matches!(self, OpError::ChangedMeanwhile | OpError::RetryLater(_))
    }
}

impl From<ClientError> for OpError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Io(io) => OpError::Io(io),
            e if passing(&e) => OpError::RetryLater(e),
            e => OpError::Refused(e),
        }
    }
}

/// A failure of the connection or of the server's own, not an answer
/// about the operation.
fn passing(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } | ClientError::Http(_) => true,
        ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
            *status >= 500 || *status == 429
        }
        ClientError::Io(_) | ClientError::BadUrl(_) | ClientError::Integrity(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::ErrorCode;

    fn api(status: u16, code: ErrorCode) -> ClientError {
        ClientError::Api {
            status,
            code,
            message: "no".into(),
            current_rev: None,
            missing: Vec::new(),
            retry_after: None,
        }
    }

    #[test]
    fn what_comes_back_by_itself_is_retried() {
        assert!(OpError::ChangedMeanwhile.will_retry());
        assert!(!OpError::KeptChanged.will_retry());
        assert!(!OpError::KeptNotEmpty.will_retry());
        let away = ClientError::Unreachable {
            server: "http://127.0.0.1:1".into(),
            reason: "refused".into(),
        };
        assert!(matches!(OpError::from(away), OpError::RetryLater(_)));
        assert!(OpError::from(api(503, ErrorCode::Internal)).will_retry());
        let stale = OpError::from(api(409, ErrorCode::Conflict));
        assert!(matches!(stale, OpError::Refused(_)) && !stale.will_retry());
        let damaged = OpError::from(ClientError::Integrity("bad".into()));
        assert!(!damaged.will_retry());
    }

    #[test]
    fn the_messages_say_what_happened_to_the_file() {
        assert_eq!(
            OpError::ChangedMeanwhile.to_string(),
            "changed on disk meanwhile; will retry"
        );
        assert_eq!(
            OpError::KeptChanged.to_string(),
            "changed on disk meanwhile; kept"
        );
        let io = OpError::from(ClientError::Io(std::io::Error::other("disk full")));
        assert_eq!(io.to_string(), "disk full");
    }
}
