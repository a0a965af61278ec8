//! Which instance runs a worker. With several instances on one database,
//! each worker's periodic steps run on one of them at a time: the one
//! holding the worker's lease, renewed while it steps; when it dies the
//! lease lapses and another instance takes the worker over at its next
//! turn. The steps are safe side by side (they change rows by statements
//! that re-check them), so the lease saves repeated work and contention;
//! it is not what keeps data right.

use std::sync::Arc;
use std::time::Duration;

use crate::meta::{Meta, MetaError, now_ms};

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);

pub struct Leases {
    meta: Meta,
    holder: Arc<str>,
}

impl Leases {
    pub fn new(meta: Meta, holder: Arc<str>) -> Self {
        Self { meta, holder }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes or renews `worker`'s lease; answers the other instance that
    /// holds it, if one does.
    pub async fn take(&self, worker: &str) -> Result<Option<String>, MetaError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX));
        self.meta.take_lease(worker, &self.holder, now, until).await
    }

    /// Gives every lease up, so another instance takes over at once.
    pub async fn release(&self) {
        if let Err(e) = self.meta.release_leases(&self.holder).await {
            tracing::warn!(error = %e, "worker leases not released: they lapse by themselves");
        }
    }
}
