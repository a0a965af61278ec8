//! The `retention` worker: applies the `[retention]` schedule
//! ([`crate::retention::expired`]) to every file with history, a few
//! hundred files per step. The blocks of removed revisions lose a
//! reference each; those left without any go to `gc` after its grace.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Clock, Step, Worker, WorkerError};
use crate::meta::Meta;
use crate::retention::{Policy, expired};

/// Files looked at per step.
const FILES_PER_STEP: i64 = 200;

pub struct Retention {
    pub meta: Meta,
    pub clock: Clock,
    pub policy: Policy,
    /// Where the pass under way has got to (namespace, node id).
    pub cursor: Option<(i64, String)>,
}

impl Worker for Retention {
    fn name(&self) -> &'static str {
        "retention"
    }

    /// Revisions removed are what a step did.
    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
        async move {
            let files = self
                .meta
                .files_with_history(self.cursor.clone(), FILES_PER_STEP)
                .await?;
            let now = self.clock.now_ms();
            let mut removed = 0;
            for (ns, node, current) in &files {
                let revs = self.meta.revision_ages(*ns, node).await?;
                let gone = expired(&revs, *current, now, &self.policy);
                if !gone.is_empty() {
                    removed += self.meta.drop_revisions(*ns, node, &gone).await?;
                }
            }
            if removed > 0 {
                tracing::info!(revisions = removed, "removed old revisions");
            }
            let full = files.len() as i64 == FILES_PER_STEP;
            self.cursor = if full {
                files.last().map(|(ns, node, _)| (*ns, node.clone()))
            } else {
                None
            };
            Ok(if full {
                Step::Busy { done: removed }
            } else {
                Step::Idle { done: removed }
            })
        }
        .boxed()
    }

    /// Daily buckets change once a day; hourly is plenty.
    fn wait(&self) -> Duration {
        Duration::from_secs(3600)
    }
}
