//! The `cold` worker: moves blocks that only files untouched for
//! `cold_after_secs` use to the cold store, up to 256 blocks or 64 MiB a
//! step (one cold object). Reads stay transparent (a block's record says
//! which store holds it) and are served from the cold store as they are; a
//! cold block is not warmed back, but a file edited again writes its new
//! blocks to the main store.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Clock, Step, Worker, WorkerError};
use tessera_proto::BlockId;

use crate::blocks::BlockStore;
use crate::meta::{BlockLoc, Meta};

/// Blocks moved per step (into one cold object).
const BATCH: i64 = 256;
/// A cold object holds blocks up to this many stored bytes (and the block
/// that crosses it, at most 16 MiB more): the pack is built in memory and
/// sent in one PUT, and 256 large blocks would make it 4 GiB, near S3's
/// 5 GiB limit for one PUT. 64 MiB is few objects, and one retried PUT
/// resends little.
pub const COLD_PACK_BYTES: u64 = 64 << 20;

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
            let cutoff = self.clock.ago_ms(self.after);
            let mut found = self.meta.cold_candidates(cutoff, BATCH).await?;
            let full = found.len() as i64 == BATCH;
            let fits = fitting(&found, COLD_PACK_BYTES);
            let cut = fits < found.len();
            found.truncate(fits);
            let moved = self.blocks.move_cold(&found).await?;
            if moved > 0 {
                tracing::info!(blocks = moved, "moved blocks to the cold store");
            }
            Ok(if (full || cut) && moved > 0 {
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

/// How many of `blocks`, from the first, make a pack of at most `cap`
/// stored bytes plus the block that crosses it (always at least one).
fn fitting(blocks: &[(BlockId, BlockLoc)], cap: u64) -> usize {
    let mut bytes = 0u64;
    for (n, (_, loc)) in blocks.iter().enumerate() {
        if bytes >= cap {
            return n;
        }
        bytes += loc.length;
    }
    blocks.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(lengths: &[u64]) -> Vec<(BlockId, BlockLoc)> {
        lengths
            .iter()
            .enumerate()
            .map(|(i, &length)| {
                let loc = BlockLoc {
                    object: format!("blocks/{i}"),
                    offset: 0,
                    length,
                };
                (BlockId::of(&[i as u8]), loc)
            })
            .collect()
    }

    #[test]
    fn a_cold_pack_stops_at_the_block_that_crosses_the_cap() {
        assert_eq!(fitting(&blocks(&[]), 100), 0);
        assert_eq!(fitting(&blocks(&[500]), 100), 1);
        assert_eq!(fitting(&blocks(&[40, 40, 40, 40]), 100), 3);
        assert_eq!(fitting(&blocks(&[50, 50, 1]), 100), 2);
        assert_eq!(fitting(&blocks(&[10, 10]), 100), 2);
    }
}
