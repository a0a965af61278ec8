//! The consistency check behind `tessera admin fsck`: every block record
//! is read back and verified, and the metadata is checked against itself
//! and against the store. With `repair`, what can be fixed is fixed, each
//! fix one short transaction, so it may run beside a serving server.
//!
//! What it finds, and what `repair` does about it:
//!
//! - a block whose stored copy is missing or damaged, with every file
//!   revision and upload session that uses it: marked damaged, so it counts
//!   as missing and the next upload of its bytes replaces it (no replica
//!   holds a copy to restore from yet);
//! - a block that revisions name but that has no record: reported only;
//! - a reference count that disagrees with the revisions: set right;
//! - an object no record names (older than a write could still be under
//!   way): handed to collection, which deletes it;
//! - an unfinished upload session naming a block with no record: ended
//!   (its client starts the upload again).

use crate::blocks::store::{Unnamed, is_damage};
use crate::blocks::{BlockError, BlockStore};
use crate::meta::{BlockUse, Dangling, Meta, MetaError};
use tessera_proto::BlockId;

/// Blocks read per page, and reports per kind listed at most.
const PAGE: i64 = 500;
const LISTED: i64 = 10_000;
/// Objects younger than this are not judged (the gc worker's rule).
const MIN_AGE_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Block(#[from] BlockError),
}

/// A block that cannot be read back as it should.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadBlock {
    pub id: String,
    pub object: Option<String>,
    pub problem: String,
    pub used_by: Vec<BlockUse>,
    /// Marked damaged (with `repair`).
    pub marked: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CountFix {
    pub id: String,
    pub recorded: i64,
    pub actual: i64,
    pub fixed: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionFix {
    #[serde(flatten)]
    pub session: Dangling,
    pub ended: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub bad_blocks: Vec<BadBlock>,
    pub unrecorded_blocks: Vec<BadBlock>,
    pub wrong_counts: Vec<CountFix>,
    pub unnamed_objects: Unnamed,
    /// Unnamed objects handed to collection (with `repair`).
    pub unnamed_doomed: u64,
    pub broken_sessions: Vec<SessionFix>,
    /// What `repair` could not fix, in words.
    pub not_fixed: Vec<String>,
}

impl Report {
    /// True if nothing was wrong.
    pub fn clean(&self) -> bool {
        self.bad_blocks.is_empty()
            && self.unrecorded_blocks.is_empty()
            && self.wrong_counts.is_empty()
            && self.unnamed_objects.count == 0
            && self.broken_sessions.is_empty()
    }
}

/// Checks everything; with `repair`, fixes what it can.
pub async fn run(meta: &Meta, blocks: &BlockStore, repair: bool) -> Result<Report, FsckError> {
    let mut report = Report::default();
    check_blocks(meta, blocks, repair, &mut report).await?;
    for id in meta.dangling_blocks(LISTED).await? {
        report.unrecorded_blocks.push(BadBlock {
            id: id.to_string(),
            object: None,
            problem: "named by revisions but not recorded".into(),
            used_by: meta.block_uses(&id).await?,
            marked: false,
        });
    }
    for wrong in meta.wrong_refcounts(LISTED).await? {
        if repair {
            meta.fix_refcount(&wrong.id).await?;
        }
        report.wrong_counts.push(CountFix {
            id: wrong.id.to_string(),
            recorded: wrong.recorded,
            actual: wrong.actual,
            fixed: repair,
        });
    }
    let before = crate::meta::now_ms() - MIN_AGE_MS;
    report.unnamed_objects = blocks.unnamed_objects(before, 20).await?;
    if repair && report.unnamed_objects.count > 0 {
        report.unnamed_doomed = blocks.doom_orphans(before).await?;
    }
    for session in meta.dangling_sessions().await? {
        let ended = repair
            && meta
                .delete_upload(session.namespace_id, &session.id)
                .await?;
        report.broken_sessions.push(SessionFix { session, ended });
    }
    if repair {
        explain_unfixed(&mut report);
    }
    Ok(report)
}

/// Reads every recorded block back, a page at a time.
async fn check_blocks(
    meta: &Meta,
    blocks: &BlockStore,
    repair: bool,
    report: &mut Report,
) -> Result<(), FsckError> {
    let mut after: Option<BlockId> = None;
    loop {
        let page = meta.blocks_page(after, PAGE).await?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(*last);
        for (id, loc) in page {
            report.blocks_checked += 1;
            report.bytes_checked += loc.length;
            match blocks.verify(id, &loc).await {
                Ok(()) => {}
                Err(e) if is_damage(&e) => {
                    if repair {
                        blocks.mark_damaged(&id, &loc).await?;
                    }
                    report.bad_blocks.push(BadBlock {
                        id: id.to_string(),
                        object: Some(loc.object.clone()),
                        problem: e.to_string(),
                        used_by: meta.block_uses(&id).await?,
                        marked: repair,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn explain_unfixed(report: &mut Report) {
    let used: Vec<&BadBlock> = report
        .bad_blocks
        .iter()
        .chain(&report.unrecorded_blocks)
        .filter(|b| !b.used_by.is_empty())
        .collect();
    if !used.is_empty() {
        report.not_fixed.push(format!(
            "{} block(s) used by files are lost from this store and no replica holds them: \
             upload the affected files again from a device that has them (the next upload \
             of the same bytes repairs every file that uses them)",
            used.len()
        ));
    }
}
