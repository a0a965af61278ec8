//! The expiry workers: pending marks of uploads that never finished, idle
//! upload sessions, and old trash.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Clock, Step, Worker, WorkerError};
use crate::meta::Meta;

/// The cutoff `ttl` before now on `clock`.
fn cutoff(clock: &Clock, ttl: Duration) -> i64 {
    clock
        .now_ms()
        .saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// Pending and upload expiry run every `ttl / 2`, between 1 s and 1 min.
fn pending_wait(ttl: Duration) -> Duration {
    (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Ends pending marks whose upload did not finish within the TTL (the
/// store publishes the change, which wakes the namespace's long polls).
pub struct PendingExpiry {
    pub meta: Meta,
    pub clock: Clock,
    pub ttl: Duration,
}

impl Worker for PendingExpiry {
    fn name(&self) -> &'static str {
        "pending"
    }

    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
        async move {
            let changed = self
                .meta
                .expire_pending(cutoff(&self.clock, self.ttl))
                .await?;
            let done = changed.len() as u64;
            Ok(Step::Idle { done })
        }
        .boxed()
    }

    fn wait(&self) -> Duration {
        pending_wait(self.ttl)
    }
}

/// Ends upload sessions idle for the TTL (the pending mark a session set
/// goes with it; the store publishes the change). What the sessions
/// stored stays unreferenced, for collection.
pub struct UploadExpiry {
    pub meta: Meta,
    pub clock: Clock,
    pub ttl: Duration,
}

impl Worker for UploadExpiry {
    fn name(&self) -> &'static str {
        "uploads"
    }

    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
        async move {
            let changed = self
                .meta
                .expire_uploads(cutoff(&self.clock, self.ttl))
                .await?;
            let done = changed.len() as u64;
            Ok(Step::Idle { done })
        }
        .boxed()
    }

    fn wait(&self) -> Duration {
        pending_wait(self.ttl)
    }
}

/// Removes trash entries older than the TTL, every `ttl / 10` (between 1 s
/// and 1 h). Nothing in the trash is visible in the tree, so no client
/// needs waking.
pub struct TrashExpiry {
    pub meta: Meta,
    pub clock: Clock,
    pub ttl: Duration,
}

impl Worker for TrashExpiry {
    fn name(&self) -> &'static str {
        "trash"
    }

    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
        async move {
            let n = self
                .meta
                .expire_trash(cutoff(&self.clock, self.ttl))
                .await?;
            if n > 0 {
                tracing::info!(removed = n, "expired trash entries");
            }
            Ok(Step::Idle { done: n })
        }
        .boxed()
    }

    fn wait(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }
}
