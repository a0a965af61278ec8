//! Carrying out a plan's steps. Each step runs as the planner ordered it;
//! a failed operation is reported and the round goes on without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use tessera_proto::BlockId;
use tessera_proto::api::{MAX_BATCH_SEGMENTS, path_segments};

use super::super::case;
use super::super::error::OpError;
use super::super::planner::{Op, Phase, Step};
use super::super::scan::{self, STATE_DIR};
use super::super::tree::{Node, NodeKind, is_below};
use super::disk::{fsync_dir, now_secs, unused};
use super::download::Wanted;
use super::{Report, Syncer, conflicted_name, move_subtree, rel_to_remote, remove_subtree};
use crate::transfer::{Base, Progress, SMALL_FILE, SmallFile, upload_edit, upload_small_files};

/// Large uploads sent at once.
const PARALLEL_UPLOADS: usize = 3;
/// Folders made on the server in one request (the server takes 1,000).
const FOLDERS_AT_ONCE: usize = 1000;

/// A transfer step sorted by how each file travels.
#[derive(Default)]
struct Transfers {
    small_up: Vec<(String, i64)>,
    large_up: Vec<(String, i64)>,
    small_down: Vec<Wanted>,
    large_down: Vec<Wanted>,
}

impl Syncer {
    /// Runs one step of the plan.
    pub(super) async fn run_step(
        &mut self,
        step: Step,
        report: &mut Report,
        stuck: &mut Vec<String>,
    ) {
        if step.phase == Phase::Transfers {
            self.transfer(step.ops, report, stuck).await;
            return;
        }
        let mut ops = step.ops.into_iter().peekable();
        while let Some(op) = ops.next() {
            if let Op::CreateRemoteFolder { path } = &op
                && matches!(ops.peek(), Some(Op::CreateRemoteFolder { .. }))
            {
                // A new tree's folders: one request and one transaction
                // for many, not a round trip each.
                let mut paths = vec![path.clone()];
                let mut names = path_segments(path);
                while paths.len() < FOLDERS_AT_ONCE
                    && let Some(Op::CreateRemoteFolder { path }) = ops.peek()
                    && names + path_segments(path) <= MAX_BATCH_SEGMENTS
                {
                    names += path_segments(path);
                    paths.push(path.clone());
                    ops.next();
                }
                self.create_remote_folders(paths, stuck).await;
                continue;
            }
            if !matches!(op, Op::MarkSynced { .. } | Op::Forget { .. }) {
                tracing::info!("{}", describe(&op));
            }
            if let Err(e) = self.execute(&op, report).await {
                tracing::warn!(?op, error = %e, "sync operation did not complete");
                stuck.push(format!("{}: {e}", describe(&op)));
            }
        }
    }

    /// Makes many folders on the server at once; if the request as a whole
    /// fails, each is made on its own (and fails with its own error).
    async fn create_remote_folders(&mut self, paths: Vec<String>, stuck: &mut Vec<String>) {
        let remote_paths = paths.iter().map(|p| rel_to_remote(p)).collect();
        let answers = match self.remote.mkdir_many(remote_paths).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::debug!(error = %e, "making folders in one request failed: one by one");
                for path in paths {
                    if let Err(e) = self.create_remote_folder(&path).await {
                        let op = Op::CreateRemoteFolder { path };
                        stuck.push(format!("{}: {e}", describe(&op)));
                    }
                }
                return;
            }
        };
        for (path, answer) in paths.into_iter().zip(answers) {
            let node = match answer {
                Ok(e) => Node::folder().with_id(&e.id),
                Err(e) if e.code() == Some(tessera_proto::ErrorCode::AlreadyExists) => {
                    Node::folder()
                }
                Err(e) => {
                    let op = Op::CreateRemoteFolder { path };
                    stuck.push(format!("{}: {e}", describe(&op)));
                    continue;
                }
            };
            self.synced.insert(path, node);
        }
    }

    /// The transfer step: small files in batches (few requests, one
    /// transaction), larger ones several at a time.
    async fn transfer(&mut self, ops: Vec<Op>, report: &mut Report, stuck: &mut Vec<String>) {
        let mut t = Transfers::default();
        for op in ops {
            // One line a file, with its path, for whoever reads the log.
            tracing::info!("{}", describe(&op));
            match op {
                Op::Upload { path, base_rev } if self.is_small_file(&path) => {
                    t.small_up.push((path, base_rev))
                }
                Op::Upload { path, base_rev } => t.large_up.push((path, base_rev)),
                Op::Download { path, rev, local } => {
                    let small = self
                        .remote_tree
                        .get(&path)
                        .and_then(|n| n.size)
                        .is_some_and(|s| s <= SMALL_FILE);
                    let want = Wanted { path, rev, local };
                    if small {
                        t.small_down.push(want)
                    } else {
                        t.large_down.push(want)
                    }
                }
                other => {
                    if let Err(e) = self.execute(&other, report).await {
                        stuck.push(format!("{}: {e}", describe(&other)));
                    }
                }
            }
        }
        let (files, bytes) = self.up_size(&t.small_up);
        self.upload_small(t.small_up, report, stuck).await;
        self.progress(files, bytes);
        let (files, bytes) = self.down_size(&t.small_down);
        self.download_batched(t.small_down, report, stuck).await;
        self.progress(files, bytes);
        let (up_files, up_bytes) = self.up_size(&t.large_up);
        let (down_files, down_bytes) = self.down_size(&t.large_down);
        self.upload_large(t.large_up, report, stuck).await;
        self.download_each(t.large_down, report, stuck).await;
        self.progress(up_files + down_files, up_bytes + down_bytes);
    }

    fn up_size(&self, files: &[(String, i64)]) -> (u64, u64) {
        let bytes = files
            .iter()
            .map(|(p, _)| std::fs::metadata(self.disk(p)).map_or(0, |m| m.len()))
            .sum();
        (files.len() as u64, bytes)
    }

    fn down_size(&self, files: &[Wanted]) -> (u64, u64) {
        let bytes = files
            .iter()
            .filter_map(|w| self.remote_tree.get(&w.path).and_then(|n| n.size))
            .sum();
        (files.len() as u64, bytes)
    }

    fn is_small_file(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.disk(rel))
            .is_ok_and(|m| m.is_file() && m.len() <= SMALL_FILE)
    }

    fn upload_progress(&self) -> Progress {
        let live = self.status.live();
        Arc::new(move |n| {
            live.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        })
    }

    async fn upload_small(
        &mut self,
        batch: Vec<(String, i64)>,
        report: &mut Report,
        stuck: &mut Vec<String>,
    ) {
        if batch.is_empty() {
            return;
        }
        let files: Vec<SmallFile> = batch
            .iter()
            .map(|(path, base)| SmallFile {
                local: self.disk(path),
                remote: rel_to_remote(path),
                base_rev: Some(*base),
            })
            .collect();
        let results = match upload_small_files(&self.remote, &files).await {
            Ok(r) => r,
            Err(e) => {
                stuck.push(format!("upload of {} small files: {e}", batch.len()));
                return;
            }
        };
        for ((path, _), result) in batch.into_iter().zip(results) {
            match result {
                Ok(entry) => self.record_uploaded(&path, &entry, report),
                Err(e) => stuck.push(format!("upload {path}: {e}")),
            }
        }
    }

    /// Large uploads, several at once.
    async fn upload_large(
        &mut self,
        up: Vec<(String, i64)>,
        report: &mut Report,
        stuck: &mut Vec<String>,
    ) {
        let mut uploads = Vec::with_capacity(up.len());
        for (path, rev) in up {
            let remote = self.remote.clone();
            let abs = self.disk(&path);
            let progress = self.upload_progress();
            let base = self.base(&path, rev).await;
            uploads.push(async move {
                let r =
                    upload_edit(&remote, &abs, &rel_to_remote(&path), Some(base), progress).await;
                (path, r)
            });
        }
        let done: Vec<_> = futures::stream::iter(uploads)
            .buffer_unordered(PARALLEL_UPLOADS)
            .collect()
            .await;
        for (path, r) in done {
            match r {
                Ok(up) => {
                    self.record_uploaded(&path, &up.entry, report);
                    self.index_file(&path, &up.blocks).await;
                }
                Err(e) => stuck.push(format!("upload {path}: {e}")),
            }
        }
    }

    /// What an upload of `path` is based on: revision `rev`, with the
    /// blocks the local index last recorded for the file (those of the
    /// synced revision, as uploads and downloads record them).
    async fn base(&self, path: &str, rev: i64) -> Base {
        let blocks = match self.state.block_index().blocks_of(path).await {
            Ok(blocks) if !blocks.is_empty() => Some(blocks),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(path, error = %e, "cannot read the local block index");
                None
            }
        };
        Base { rev, blocks }
    }

    /// Notes where the blocks of the local file at `path` lie. Only a
    /// hint for later downloads, so a failure costs nothing but a warning.
    pub(super) async fn index_file(&self, path: &str, blocks: &[(BlockId, u64)]) {
        if let Err(e) = self.state.block_index().record(path, blocks).await {
            tracing::warn!(path, error = %e, "cannot update the local block index");
        }
    }

    /// Records a file this device just uploaded as synced (the remote tree
    /// learns of it from the journal).
    fn record_uploaded(
        &mut self,
        path: &str,
        entry: &tessera_proto::api::Entry,
        report: &mut Report,
    ) {
        let node = Node {
            kind: NodeKind::File,
            hash: entry.content_hash,
            rev: entry.rev,
            id: Some(entry.id.clone()),
            size: entry.size,
        };
        self.synced.insert(path.to_owned(), node);
        report.uploaded += 1;
    }

    /// Carries out one operation.
    async fn execute(&mut self, op: &Op, report: &mut Report) -> Result<(), OpError> {
        match op {
            Op::CreateLocalFolder { path } => {
                tokio::fs::create_dir_all(self.disk(path)).await?;
                let node = self
                    .remote_tree
                    .get(path)
                    .cloned()
                    .unwrap_or_else(Node::folder);
                self.synced.insert(path.clone(), node);
            }
            Op::CreateRemoteFolder { path } => self.create_remote_folder(path).await?,
            Op::Upload { path, base_rev } => {
                let abs = self.disk(path);
                let progress = self.upload_progress();
                let base = self.base(path, *base_rev).await;
                let up = upload_edit(
                    &self.remote,
                    &abs,
                    &rel_to_remote(path),
                    Some(base),
                    progress,
                )
                .await?;
                self.record_uploaded(path, &up.entry, report);
                self.index_file(path, &up.blocks).await;
            }
            Op::Download { path, rev, local } => {
                let want = Wanted {
                    path: path.clone(),
                    rev: *rev,
                    local: local.clone(),
                };
                self.download_one(want, report).await?;
            }
            Op::Conflict { path, .. } => self.keep_conflicted_copy(path, report).await?,
            Op::DeleteLocal { path, expected } => {
                self.delete_local(path, expected).await?;
                report.deleted_local += 1;
            }
            Op::DeleteRemote { path } => {
                self.delete_remote(path).await?;
                report.deleted_remote += 1;
            }
            Op::MoveRemote { from, to } => {
                self.remote
                    .move_to(&rel_to_remote(from), &rel_to_remote(to))
                    .await?;
                move_subtree(&mut self.synced, from, to);
                report.moved += 1;
            }
            Op::MoveLocal { from, to } => {
                self.move_local(from, to).await?;
                report.moved += 1;
            }
            Op::MarkSynced { path, node } => {
                self.synced.insert(path.clone(), node.clone());
            }
            Op::Forget { path } => {
                self.synced.remove(path);
            }
        }
        Ok(())
    }

    async fn create_remote_folder(&mut self, path: &str) -> Result<(), OpError> {
        let entry = match self.remote.mkdir(&rel_to_remote(path)).await {
            Ok(e) => Some(e),
            Err(e) if e.code() == Some(tessera_proto::ErrorCode::AlreadyExists) => None,
            Err(e) => return Err(e.into()),
        };
        let mut node = Node::folder();
        if let Some(e) = entry {
            node = node.with_id(&e.id);
        }
        self.synced.insert(path.to_owned(), node);
        Ok(())
    }

    /// Keeps the local bytes under a new name; the next round uploads that
    /// copy and takes the remote file at `path`.
    async fn keep_conflicted_copy(
        &mut self,
        path: &str,
        report: &mut Report,
    ) -> Result<(), OpError> {
        let abs = self.disk(path);
        let name = abs
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file")
            .to_owned();
        let copy = unused(abs.with_file_name(conflicted_name(&name, &self.device, now_secs())));
        tokio::fs::rename(&abs, &copy).await?;
        if let Some(parent) = abs.parent() {
            fsync_dir(parent).await?;
        }
        let rel = copy
            .strip_prefix(&self.root)
            .unwrap_or(&copy)
            .to_string_lossy()
            .into_owned();
        report.conflicts.push(rel);
        Ok(())
    }

    /// Moves a local file to the trash (or removes an empty folder), if it
    /// still holds what the plan saw.
    async fn delete_local(&mut self, path: &str, expected: &Node) -> Result<(), OpError> {
        match self.unchanged(path, Some(expected)) {
            Ok(()) => {}
            Err(OpError::ChangedMeanwhile) => return Err(OpError::KeptChanged),
            Err(e) => return Err(e),
        }
        let abs = self.disk(path);
        if expected.kind == NodeKind::Folder {
            // Only empty folders go; anything left inside is kept, unless
            // a file on the server takes the name and all that is left is
            // what the sync never carries (ignored files): those go to the
            // local trash with the folder, so the file can come down.
            if tokio::fs::remove_dir(&abs).await.is_err() {
                let file_waits = self
                    .remote_tree
                    .get(path)
                    .is_some_and(|n| n.kind == NodeKind::File);
                let (root, at) = (self.root.clone(), abs.clone());
                let seen = tokio::task::spawn_blocking(move || {
                    if scan::holds_only_ignored(&root, &at) {
                        scan::contents(&at)
                    } else {
                        None
                    }
                })
                .await
                .ok()
                .flatten();
                let Some(seen) = seen.filter(|_| file_waits) else {
                    return Err(OpError::KeptNotEmpty);
                };
                self.trash_folder_as_seen(path, &abs, seen).await?;
            }
        } else {
            self.to_trash(path, &abs).await?;
            self.cache.remove(path);
        }
        remove_subtree(&mut self.synced, path);
        Ok(())
    }

    /// Moves `abs` (at `path`) into this round's batch of the local trash;
    /// returns where it went.
    pub(super) async fn to_trash(&self, path: &str, abs: &Path) -> Result<PathBuf, OpError> {
        let trash = unused(
            self.root
                .join(STATE_DIR)
                .join("trash")
                .join(now_secs().to_string())
                .join(path),
        );
        if let Some(parent) = trash.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(abs, &trash).await?;
        Ok(trash)
    }

    /// Moves the folder `abs` (at `path`) into the trash if it still holds
    /// exactly what was `seen`, and puts it back otherwise: a file saved in
    /// it between the look and the move is never trashed unseen.
    async fn trash_folder_as_seen(
        &self,
        path: &str,
        abs: &Path,
        seen: scan::Listing,
    ) -> Result<(), OpError> {
        let trash = self.to_trash(path, abs).await?;
        let at = trash.clone();
        let now = tokio::task::spawn_blocking(move || scan::contents(&at))
            .await
            .ok()
            .flatten();
        if now.as_ref() == Some(&seen) {
            tracing::info!(%path, trash = %trash.display(),
                "moved a folder of ignored files to the local trash for the file that takes its name");
            return Ok(());
        }
        match tokio::fs::rename(&trash, abs).await {
            Ok(()) => Err(OpError::KeptChanged),
            Err(e) => Err(OpError::Io(std::io::Error::other(format!(
                "{path} changed while it was moved to the local trash, and it could not be \
                 moved back ({e}): it is in {}",
                trash.display()
            )))),
        }
    }

    /// Deletes only the version this device saw: an edit made elsewhere
    /// meanwhile gets 409 and comes down in the next round.
    async fn delete_remote(&mut self, path: &str) -> Result<(), OpError> {
        let base = self
            .synced
            .get(path)
            .filter(|n| n.kind == NodeKind::File)
            .and_then(|n| n.rev);
        match self.remote.delete_at(&rel_to_remote(path), base).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(tessera_proto::ErrorCode::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        remove_subtree(&mut self.synced, path);
        Ok(())
    }

    async fn move_local(&mut self, from: &str, to: &str) -> Result<(), OpError> {
        let expected = self.synced.get(from).cloned();
        let (source, target) = (self.disk(from), self.disk(to));
        // In a folder that ignores case, a rename that changes only
        // case finds its target already there: itself.
        let case_only = case::same_entry(&source, &target);
        self.unchanged(from, expected.as_ref())?;
        if target.exists() && !case_only {
            return Err(OpError::ChangedMeanwhile);
        }
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        if case_only {
            // Both steps without an await between them, so a stop
            // (Ctrl-C drops the round) never leaves the file under
            // the temporary name, and a failed second step is
            // undone: the scan would take that name for the file.
            let step = unused(target.with_file_name(".tessera-case-rename"));
            std::fs::rename(&source, &step)?;
            if let Err(e) = std::fs::rename(&step, &target) {
                let _ = std::fs::rename(&step, &source);
                return Err(e.into());
            }
        } else {
            tokio::fs::rename(&source, &target).await?;
        }
        move_subtree(&mut self.synced, from, to);
        let moved: Vec<(String, _)> = self
            .cache
            .iter()
            .filter(|(k, _)| k.as_str() == from || is_below(k, from))
            .map(|(k, v)| (format!("{to}{}", &k[from.len()..]), *v))
            .collect();
        self.cache
            .retain(|k, _| !(k.as_str() == from || is_below(k, from)));
        self.cache.extend(moved);
        Ok(())
    }
}

pub fn describe(op: &Op) -> String {
    match op {
        Op::MoveRemote { from, to } | Op::MoveLocal { from, to } => format!("move {from} -> {to}"),
        Op::CreateRemoteFolder { path } | Op::CreateLocalFolder { path } => {
            format!("create folder {path}")
        }
        Op::Upload { path, .. } => format!("upload {path}"),
        Op::Download { path, .. } => format!("download {path}"),
        Op::Conflict { path, .. } => format!("resolve conflict on {path}"),
        Op::DeleteLocal { path, .. } | Op::DeleteRemote { path } => format!("delete {path}"),
        Op::MarkSynced { path, .. } | Op::Forget { path } => format!("record {path}"),
    }
}
