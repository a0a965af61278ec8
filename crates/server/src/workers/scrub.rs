//! The `scrub` worker: reads every block back, from every copy, once per
//! `scrub_interval_secs`, a page at a time at an even pace. A damaged copy
//! is rewritten from a sound one; a block with no sound copy is marked
//! damaged and logged with every file revision that uses it (`tessera
//! admin fsck` lists them too).

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tessera_proto::BlockId;

use super::{Step, Worker, WorkerError};
use crate::blocks::BlockStore;
use crate::blocks::store::Scrubbed;
use crate::meta::Meta;

/// Blocks read per step.
const PAGE: i64 = 200;

pub struct Scrub {
    pub meta: Meta,
    pub blocks: BlockStore,
    pub interval: Duration,
    /// Where the pass under way has got to.
    pub cursor: Option<BlockId>,
    /// Block records when the pass began: paces the steps.
    pub total: u64,
}

impl Scrub {
    pub fn new(meta: Meta, blocks: BlockStore, interval: Duration) -> Self {
        Self {
            meta,
            blocks,
            interval,
            cursor: None,
            total: 0,
        }
    }
}

impl Worker for Scrub {
    fn name(&self) -> &'static str {
        "scrub"
    }

    /// Blocks checked are what a step did.
    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
        async move {
            if self.cursor.is_none() {
                self.total = self.meta.block_count().await?;
            }
            let page = self.meta.blocks_page(self.cursor, PAGE).await?;
            let (mut repaired, mut lost) = (0u32, 0u32);
            for (id, loc) in &page {
                match self.blocks.scrub_block(*id, loc).await? {
                    Scrubbed::Sound => {}
                    Scrubbed::Repaired(n) => repaired += n,
                    Scrubbed::Unrepaired => {
                        tracing::warn!(block = %id, object = %loc.object,
                            "a damaged copy could not be repaired; reads use a sound one");
                    }
                    Scrubbed::Lost => {
                        lost += 1;
                        let uses = self.meta.block_uses(id).await.unwrap_or_default();
                        let files: Vec<String> = uses
                            .iter()
                            .map(|u| match u.rev {
                                Some(rev) => format!("{} {} rev {rev}", u.owner, u.path),
                                None => format!("{} {} (upload)", u.owner, u.path),
                            })
                            .collect();
                        tracing::error!(block = %id, object = %loc.object, files = ?files,
                            "a block has no sound copy left: upload the files again from a device that has them");
                    }
                }
            }
            if repaired > 0 || lost > 0 {
                tracing::info!(repaired, lost, "scrub found damaged copies");
            }
            let done = page.len() as u64;
            self.cursor = if page.len() as i64 == PAGE {
                page.last().map(|(id, _)| *id)
            } else {
                None
            };
            // One page per wait: a pass spreads over the interval.
            Ok(Step::Idle { done })
        }
        .boxed()
    }

    /// The interval shared by the pages of a pass, between a second and
    /// an hour.
    fn wait(&self) -> Duration {
        let pages = self.total.div_ceil(PAGE as u64).max(1);
        let each = self.interval / u32::try_from(pages).unwrap_or(u32::MAX);
        each.clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }
}
