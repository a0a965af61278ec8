//! The expiry workers: pending marks of uploads that never finished, idle
//! upload sessions, and old trash. The store publishes what they change,
//! which wakes the namespaces' long polls.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Clock, Step, Worker, WorkerError};
use crate::meta::Meta;

/// What an [`Expiry`] worker ends once it is older than its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Pending marks of uploads that did not finish.
    Pending,
    /// Idle upload sessions (the pending mark a session set goes with
    /// it). What they stored stays unreferenced, for collection.
    Uploads,
    /// Trash entries, with their subtree and revisions, and accounts
    /// deleted as long ago.
    Trash,
}

/// Ends what it is told to once it is older than `ttl` on `clock`.
pub struct Expiry {
    pub what: Expired,
    pub meta: Meta,
    pub clock: Clock,
    pub ttl: Duration,
}

impl Expiry {
    /// The cutoff `ttl` before now.
    fn cutoff(&self) -> i64 {
        self.clock.ago_ms(self.ttl)
    }
}

impl Worker for Expiry {
    fn name(&self) -> &'static str {
        match self.what {
            Expired::Pending => "pending",
            Expired::Uploads => "uploads",
            Expired::Trash => "trash",
        }
    }

    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
        async move {
            let cutoff = self.cutoff();
            let done = match self.what {
                Expired::Pending => self.meta.expire_pending(cutoff).await?.len() as u64,
                Expired::Uploads => self.meta.expire_uploads(cutoff).await?.len() as u64,
                Expired::Trash => {
                    let mut n = self.meta.expire_trash(cutoff).await?;
                    if n > 0 {
                        tracing::info!(removed = n, "expired trash entries");
                    }
                    // Deleted accounts are kept as long as the trash keeps
                    // what is deleted.
                    for id in self.meta.deleted_before(cutoff).await? {
                        // One account's failure does not hold up the others.
                        match self.meta.purge_account(id, cutoff).await {
                            Ok(true) => {
                                tracing::info!(user = id, "purged a deleted account");
                                n += 1;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(user = id, error = %e, "purging a deleted account failed; tried again next time");
                            }
                        }
                    }
                    n
                }
            };
            Ok(Step::Idle { done })
        }
        .boxed()
    }

    /// Marks and sessions are looked at every `ttl / 2` (between 1 s and
    /// 1 min), so one lives at most half again its TTL; the trash every
    /// `ttl / 10` (between 1 s and 1 h).
    fn wait(&self) -> Duration {
        match self.what {
            Expired::Pending | Expired::Uploads => {
                (self.ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
            }
            Expired::Trash => {
                (self.ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
            }
        }
    }
}
