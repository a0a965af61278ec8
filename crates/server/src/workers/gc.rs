//! The `gc` worker: frees the storage nobody needs any more.
//!
//! A pass, in order:
//!
//! 0. Unlink: a block stored as a delta (see `blocks/codec.rs`) against a
//!    block that no revision has used for the grace period is stored whole
//!    again, so that its base is collected like any other.
//! 1. Collect: block records without references for the grace period, and
//!    named by no upload session, go, with every user's claim to them; the
//!    objects left without a record are doomed (`doomed_objects`), in the
//!    same transaction.
//! 2. Compact: a pack whose live share fell under [`COMPACT_BELOW`] has its
//!    sound blocks copied into a new pack and their records moved (compared
//!    and swapped); the old pack is doomed.
//! 3. Sweep, at most once per [`SWEEP_EVERY`]: objects in the store that no
//!    record names (a crash between a write and its record) are doomed,
//!    once they are older than the grace period and never younger than
//!    [`SWEEP_MIN_AGE`] of wall time, so no write under way is taken.
//! 4. Delete the objects doomed a grace period ago, then forget them.
//!
//! Each step is safe to cut short by a crash: metadata changes commit
//! before any object is deleted, deleting is idempotent, and a new pack is
//! only named once it is stored. The next pass finishes what one began.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Clock, Step, Worker, WorkerError};
use crate::blocks::{BlockError, BlockStore};
use crate::meta::Meta;

/// A pack is rewritten once less than this share of it is still used.
pub const COMPACT_BELOW: f64 = 0.5;
/// How often the whole store is listed for orphans.
const SWEEP_EVERY: Duration = Duration::from_secs(24 * 3600);
/// An object younger than this (by the store's own clock) is never swept,
/// whatever the grace period: its record may be a moment away.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(15 * 60);
/// Rows per collection transaction, and transactions per step.
const COLLECT_BATCH: i64 = 1000;
const COLLECT_ROUNDS: usize = 20;
/// Packs looked at, and doomed objects deleted, per step.
const PACKS_PER_STEP: i64 = 20;
/// Deltas stored whole again per step (each read through its base).
const UNLINK_BATCH: i64 = 200;
const DELETES_PER_STEP: i64 = 5000;

pub struct Gc {
    pub meta: Meta,
    pub blocks: BlockStore,
    pub clock: Clock,
    pub grace: Duration,
    /// When (on `clock`) the store was last swept.
    pub last_sweep_ms: Option<i64>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl From<BlockError> for WorkerError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::Meta(m) => WorkerError::Meta(m),
            other => WorkerError::Other(other.to_string()),
        }
    }
}

impl Gc {
    async fn unlink(&self, now: i64) -> Result<(u64, bool), WorkerError> {
        let cutoff = now.saturating_sub(ms(self.grace));
        let deltas = self
            .meta
            .deltas_on_unused_bases(cutoff, UNLINK_BATCH)
            .await?;
        if deltas.is_empty() {
            return Ok((0, false));
        }
        let full = deltas.len() as i64 == UNLINK_BATCH;
        let moved = self.blocks.store_whole(&deltas).await?;
        tracing::info!(
            blocks = moved,
            "stored deltas whole: their bases are no longer used"
        );
        Ok((moved, full && moved > 0))
    }

    async fn collect(&self, now: i64) -> Result<(u64, bool), WorkerError> {
        let cutoff = now.saturating_sub(ms(self.grace));
        let mut removed = 0;
        for _ in 0..COLLECT_ROUNDS {
            let pass = self.meta.collect_blocks(cutoff, COLLECT_BATCH).await?;
            removed += pass.blocks;
            if pass.blocks < COLLECT_BATCH as u64 {
                if removed > 0 {
                    tracing::info!(blocks = removed, "collected unreferenced blocks");
                }
                return Ok((removed, false));
            }
        }
        Ok((removed, true))
    }

    async fn compact(&self) -> Result<(u64, bool), WorkerError> {
        let packs = self.meta.packs_with_freed_space(PACKS_PER_STEP).await?;
        let full = packs.len() as i64 == PACKS_PER_STEP;
        let mut moved = 0u64;
        for (pack, live) in packs {
            let size = match self.blocks.object_size(&pack).await {
                Ok(size) => size,
                Err(BlockError::Store(object_store::Error::NotFound { .. })) => {
                    self.meta.forget_pack_freed(&pack).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if size > 0 && (live as f64) >= COMPACT_BELOW * size as f64 {
                continue;
            }
            let n = self.blocks.compact_pack(&pack).await?;
            tracing::info!(%pack, blocks = n, live, size, "compacted a pack");
            moved += n;
        }
        Ok((moved, full && moved > 0))
    }

    async fn sweep(&mut self, now: i64) -> Result<u64, WorkerError> {
        if self
            .last_sweep_ms
            .is_some_and(|t| now.saturating_sub(t) < ms(SWEEP_EVERY))
        {
            return Ok(0);
        }
        let age = self.grace.max(SWEEP_MIN_AGE);
        let doomed = self
            .blocks
            .doom_orphans(now.saturating_sub(ms(age)))
            .await?;
        if doomed > 0 {
            tracing::warn!(objects = doomed, "found stored objects no block names");
        }
        self.last_sweep_ms = Some(now);
        Ok(doomed)
    }

    async fn delete_doomed(&self, now: i64) -> Result<(u64, bool), WorkerError> {
        // A doomed object waits a grace period too: a pack that compaction
        // or a cold move emptied was named by the database until then, so a
        // backup whose snapshot came first, or a read that looked a block
        // up, still finds it while the copy takes less than the grace.
        let before = now.saturating_sub(ms(self.grace));
        let doomed = self.meta.doomed_objects(before, DELETES_PER_STEP).await?;
        self.blocks.delete_objects(&doomed).await?;
        self.meta.forget_doomed(&doomed).await?;
        Ok((doomed.len() as u64, doomed.len() as i64 == DELETES_PER_STEP))
    }
}

impl Worker for Gc {
    fn name(&self) -> &'static str {
        "gc"
    }

    /// Collected blocks plus deleted objects are what a step did.
    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
        async move {
            let now = self.clock.now_ms();
            // Storing deltas whole reads their bases; a store that fails
            // that (a cold tier gone, say) must not hold collection back.
            let more_deltas = match self.unlink(now).await {
                Ok((_, more)) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "could not store deltas of unused bases whole");
                    false
                }
            };
            let (collected, more_blocks) = self.collect(now).await?;
            let (_, more_packs) = self.compact().await?;
            self.sweep(now).await?;
            // Read the clock again: what this pass doomed counts from now.
            let (deleted, more_objects) = self.delete_doomed(self.clock.now_ms()).await?;
            let done = collected + deleted;
            Ok(
                if more_deltas || more_blocks || more_packs || more_objects {
                    Step::Busy { done }
                } else {
                    Step::Idle { done }
                },
            )
        }
        .boxed()
    }

    /// A quarter of the grace period, between a minute and an hour.
    fn wait(&self) -> Duration {
        (self.grace / 4).clamp(Duration::from_secs(60), Duration::from_secs(3600))
    }
}
