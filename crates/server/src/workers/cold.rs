//! The `cold` worker: moves blocks that only files untouched for
//! `cold_after_secs` use to the cold store, a few hundred per step. Reads
//! stay transparent (a block's record says which store holds it) and are
//! served from the cold store as they are; a cold block is not warmed
//! back, but a file edited again writes its new blocks to the main store.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Clock, Step, Worker, WorkerError};
use crate::blocks::BlockStore;
use crate::meta::Meta;

/// Blocks moved per step (into one cold object).
const BATCH: i64 = 256;

pub struct Cold {
    pub meta: Meta,
    pub blocks: BlockStore,
    pub clock: Clock,
    pub after: Duration,
}

impl Worker for Cold {
    fn name(&self) -> &'static str {
        "cold"
    }

    /// Blocks moved are what a step did.
    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
        async move {
            let cutoff = self
                .clock
                .now_ms()
                .saturating_sub(i64::try_from(self.after.as_millis()).unwrap_or(i64::MAX));
            let found = self.meta.cold_candidates(cutoff, BATCH).await?;
            let moved = self.blocks.move_cold(&found).await?;
            if moved > 0 {
                tracing::info!(blocks = moved, "moved blocks to the cold store");
            }
            Ok(if found.len() as i64 == BATCH && moved > 0 {
                Step::Busy { done: moved }
            } else {
                Step::Idle { done: moved }
            })
        }
        .boxed()
    }

    fn wait(&self) -> Duration {
        Duration::from_secs(3600)
    }
}
