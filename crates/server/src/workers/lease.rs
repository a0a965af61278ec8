//! Which instance runs a worker. With several instances on one database,
//! each worker's periodic steps run on one of them at a time: the one
//! holding the worker's lease. A step takes the lease for the step and the
//! wait after it (plus [`LEASE`]), and renews it while it runs; when the
//! holder dies the lease lapses and another instance takes the worker over
//! at its next turn, so within about two of the worker's waits. The steps are safe side by side (they change rows by statements
//! that re-check them), so the lease saves repeated work and contention;
//! it is not what keeps data right.

use std::sync::Arc;
use std::time::Duration;

use crate::meta::{Meta, MetaError, now_ms};

/// How long a lease outlasts the wait it covers.
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

    /// Takes or renews `worker`'s lease for `hold`; answers the other
    /// instance that holds it, if one does.
    pub async fn take(&self, worker: &str, hold: Duration) -> Result<Option<String>, MetaError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(hold.as_millis()).unwrap_or(i64::MAX));
        self.meta.take_lease(worker, &self.holder, now, until).await
    }

    /// Gives every lease up, so another instance takes over at once.
    pub async fn release(&self) {
        if let Err(e) = self.meta.release_leases(&self.holder).await {
            tracing::warn!(error = %e, "worker leases not released: they lapse by themselves");
        }
    }
}
