//! The `recompress` worker: clients compress blocks at a fast level, so
//! that compression keeps up with their link; once a block has been stored
//! for `after`, this worker rewrites the object holding it at a higher zstd
//! level (`blocks::BlockStore::recompress`), one object a step, oldest
//! first. Text and source code shrink by a tenth to a quarter; blocks stored
//! raw or barely shrunk are left as they are, and so is an object that
//! would shrink by less than 3% (its blocks are only recorded as done), or
//! one in the cold tier (recorded as done at level 0, unread). The same
//! step stores the next version of an edited file's block as a delta
//! against the previous version's, when that pays (see `blocks/codec.rs`).
//! Reads of whole blocks are unchanged: any zstd level decompresses alike.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Clock, Step, Worker, WorkerError};
use crate::blocks::BlockStore;
use crate::meta::Meta;

pub struct Recompress {
    pub meta: Meta,
    pub blocks: BlockStore,
    pub clock: Clock,
    pub after: Duration,
    pub level: i32,
}

impl Worker for Recompress {
    fn name(&self) -> &'static str {
        "recompress"
    }

    /// Blocks done are what a step did.
    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
        async move {
            let cutoff = self.clock.ago_ms(self.after);
            let Some(object) = self.meta.next_to_recompress(cutoff).await? else {
                return Ok(Step::Idle { done: 0 });
            };
            let done = self.blocks.recompress(&object, self.level).await?;
            tracing::debug!(%object, blocks = done, level = self.level, "recompressed");
            // A step that settled nothing (a record it could not mark)
            // must not spin: wait as if idle.
            Ok(if done > 0 {
                Step::Busy { done }
            } else {
                Step::Idle { done }
            })
        }
        .boxed()
    }

    fn wait(&self) -> Duration {
        Duration::from_secs(600)
    }
}
