//! The executor: pulls remote changes into the remote tree, scans the
//! disk, asks the planner, and carries out its operations, round after
//! round until both sides agree.
//!
//! Safety rules kept here: a local file is only replaced or removed after
//! checking it still holds what the plan saw; files removed by sync go to
//! `.tessera/trash/`; downloads land in `.tessera/tmp/`, are hash-checked
//! and fsynced, then renamed into place.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_proto::api::{Change, ChangeKind};
use tessera_proto::{BlockId, ContentHash};

use super::brake;
use super::case;
use super::planner::{Op, plan};
use super::scan::{self, STATE_DIR, Spelling, current_hash, local_rel};
use super::state::{BlockIndex, StatCache, State, StateError};
use super::status::StatusFile;
use super::tree::{Node, NodeKind, Tree, is_below};
use crate::remote::{ClientError, Remote};
use crate::transfer::{
    LocalSite, SMALL_FILE, SmallFile, download_assembling, download_file, sites_in_file,
    upload_file, upload_small_files,
};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Remote(#[from] ClientError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0} is linked to another server or account ({1}); use another folder")]
    OtherAccount(String, String),
    #[error("another `tessera sync` is running on {0}; stop it first")]
    Busy(String),
    #[error("{0} is not a synced folder yet: run `tessera sync {0}` first")]
    NotLinked(String),
    /// The folder (or its `.tessera` state) disappeared under a running
    /// sync: an unmounted disk looks like this, and refilling the empty
    /// mount point would copy everything onto the wrong disk.
    #[error(
        "{0} is gone, or its sync state (.tessera) is: is its disk mounted? \
         Nothing is synced until it is back"
    )]
    Vanished(String),
}

/// Written by `tessera sync DIR --allow-mass-delete` while another process
/// syncs DIR: the running sync carries out the paused deletions once, then
/// removes the file.
pub const CONFIRM_FILE: &str = "confirm-deletes";

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub rounds: usize,
    pub uploaded: usize,
    pub downloaded: usize,
    pub conflicts: Vec<String>,
    pub deleted_local: usize,
    pub deleted_remote: usize,
    pub moved: usize,
    /// Plain bytes of file content fetched from the server.
    pub bytes_fetched: u64,
    /// Plain bytes taken from older local versions instead of fetched.
    pub bytes_reused: u64,
    /// What could not be done, and why.
    pub stuck: Vec<String>,
    /// Everything left out of sync now (names the server or this folder
    /// cannot hold as they are), and why. The folder is not in sync while
    /// this is not empty.
    pub skipped: Vec<String>,
    /// The skips this syncer had not reported before: each is announced
    /// once, and again only after it went away and came back.
    pub warnings: Vec<String>,
}

pub struct Syncer {
    root: PathBuf,
    remote: Remote,
    state: State,
    device: String,
    /// The server's tree as of `cursor`, changed only by the journal. What
    /// this device does on the server comes back through the journal in the
    /// server's order; were it also applied here at once, an operation
    /// whose answer was lost (applied by the server, not here) would later
    /// be replayed onto a tree already changed by the operations after it:
    /// a folder deleted after a file was moved out of it would take the
    /// moved file with it, and this device would never see the file again.
    remote_tree: Tree,
    synced: Tree,
    cache: StatCache,
    cursor: Option<String>,
    status: StatusFile,
    /// Held while this syncer may change the folder; `None` when read-only.
    lock: Option<std::fs::File>,
    /// How the last scan found names spelled on disk where that differs
    /// from the server's NFC spelling.
    spelling: Spelling,
    /// The folder's file system ignores case (probed at every open, so a
    /// folder moved to another disk is seen as it is now).
    ignores_case: bool,
    /// Skips already reported, so a daemon reports each once.
    announced: BTreeSet<String>,
    pub allow_mass_delete: bool,
}

fn rel_to_remote(rel: &str) -> String {
    format!("/{rel}")
}

fn remote_to_rel(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

fn move_subtree(tree: &mut Tree, from: &str, to: &str) {
    let keys: Vec<String> = tree
        .keys()
        .filter(|k| k.as_str() == from || is_below(k, from))
        .cloned()
        .collect();
    for k in keys {
        if let Some(n) = tree.remove(&k) {
            tree.insert(format!("{to}{}", &k[from.len()..]), n);
        }
    }
}

fn remove_subtree(tree: &mut Tree, at: &str) {
    tree.retain(|k, _| !(k.as_str() == at || is_below(k, at)));
}

/// Applies one journal entry to the remote tree.
pub fn apply_change(tree: &mut Tree, c: &Change) {
    let path = remote_to_rel(&c.path);
    match c.kind {
        ChangeKind::Mkdir => {
            tree.insert(path, Node::folder().with_id(&c.id));
        }
        ChangeKind::Commit | ChangeKind::Restore => {
            let node = Node {
                kind: NodeKind::File,
                hash: c.content_hash,
                rev: c.rev,
                id: Some(c.id.clone()),
                size: c.size,
            };
            tree.insert(path, node);
        }
        ChangeKind::Move => {
            if let Some(old) = &c.old_path {
                move_subtree(tree, &remote_to_rel(old), &path);
            }
        }
        ChangeKind::Delete => remove_subtree(tree, &path),
        // Uploads under way elsewhere: nothing to fetch until they commit.
        ChangeKind::Pending | ChangeKind::PendingExpired => {}
    }
}

pub use tessera_proto::path::{civil, conflicted_name};

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `path`, or if something is there already, `stem (2).ext`, `stem (3).ext`…
/// so that a rename never replaces a file (two conflicts in one second, or
/// the same path trashed twice in one second).
fn unused(path: PathBuf) -> PathBuf {
    if std::fs::symlink_metadata(&path).is_err() {
        return path;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name.as_str(), ""),
    };
    (2..)
        .map(|n| path.with_file_name(format!("{stem} ({n}){ext}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or(path)
}

/// Small files written and fsynced at once when they come down.
const PARALLEL_FSYNCS: usize = 16;

/// Large files moved at once within a round.
const PARALLEL_TRANSFERS: usize = 3;

/// A download fetched into a temporary file, not yet in place.
struct Fetched {
    tmp: PathBuf,
    result: Result<(crate::transfer::DownloadReport, u64, u64), ClientError>,
    /// The file's blocks (id, length), to index once it is in place.
    blocks: Vec<(BlockId, u64)>,
}

/// Every local place that may hold a block of `list`: the older copy at
/// the same path (cut again, as it may have changed) and whatever the block
/// index knows. Each site is re-hashed when it is read.
async fn local_sites(
    root: &Path,
    index: &BlockIndex,
    old: Option<&Path>,
    list: &tessera_proto::api::BlockListResponse,
) -> HashMap<BlockId, Vec<LocalSite>> {
    let ids: Vec<BlockId> = list.blocks.iter().map(|b| b.id).collect();
    let mut sites: HashMap<BlockId, Vec<LocalSite>> = HashMap::new();
    if let Some(old) = old
        && let Ok(in_old) = sites_in_file(old).await
    {
        for id in &ids {
            if let Some(site) = in_old.get(id) {
                sites.entry(*id).or_default().push(site.clone());
            }
        }
    }
    match index.sites(&ids).await {
        Ok(found) => {
            for (id, places) in found {
                let entry = sites.entry(id).or_default();
                entry.extend(places.into_iter().map(|(p, o, l)| (root.join(p), o, l)));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the local block index"),
    }
    sites
}

/// How long files removed by sync stay in `.tessera/trash/`.
pub const TRASH_DAYS: i64 = 30;

/// Removes trash batches (folders named by the Unix second they were made)
/// older than `cutoff`.
async fn purge_trash(trash: &Path, cutoff: i64) {
    let Ok(mut rd) = tokio::fs::read_dir(trash).await else {
        return;
    };
    while let Ok(Some(e)) = rd.next_entry().await {
        let made = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok());
        if made.is_some_and(|t| t < cutoff)
            && let Err(err) = tokio::fs::remove_dir_all(e.path()).await
        {
            tracing::warn!(path = %e.path().display(), error = %err, "cannot empty old trash");
        }
    }
}

async fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

impl Syncer {
    /// Opens (linking on first use) the sync state of `root` for `remote`.
    pub async fn open(
        root: &Path,
        remote: Remote,
        account: &str,
        device: &str,
    ) -> Result<Self, SyncError> {
        Self::open_with(root, remote, account, device, true).await
    }

    /// Opens an already linked folder to look at it (`tessera status`)
    /// while a running sync may hold it: no lock, nothing cleaned up, and
    /// [`Syncer::sync_once`] refuses to run.
    pub async fn open_read_only(
        root: &Path,
        remote: Remote,
        account: &str,
        device: &str,
    ) -> Result<Self, SyncError> {
        Self::open_with(root, remote, account, device, false).await
    }

    async fn open_with(
        root: &Path,
        remote: Remote,
        account: &str,
        device: &str,
        writable: bool,
    ) -> Result<Self, SyncError> {
        let root = std::fs::canonicalize(root)?;
        let dir = root.join(STATE_DIR);
        let lock = if writable {
            tokio::fs::create_dir_all(&dir).await?;
            // One syncer per folder: two would race on the same files and
            // clear each other's downloads in progress.
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join("lock"))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(SyncError::Busy(root.display().to_string()));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
            }
            // Downloads cut short by a crash leave files in tmp/; none is in
            // use now that this process holds the lock.
            let _ = tokio::fs::remove_dir_all(dir.join("tmp")).await;
            for sub in ["tmp", "trash"] {
                tokio::fs::create_dir_all(dir.join(sub)).await?;
            }
            purge_trash(&dir.join("trash"), now_secs() - TRASH_DAYS * 86_400).await;
            Some(lock)
        } else {
            if !dir.is_dir() {
                return Err(SyncError::NotLinked(root.display().to_string()));
            }
            None
        };
        let state = State::open(&dir).await?;
        let account = format!("{} {account}", remote.server());
        match state.setting("account").await? {
            Some(a) if a != account => {
                return Err(SyncError::OtherAccount(root.display().to_string(), a));
            }
            Some(_) => {}
            None if writable => state.set_setting("account", &account).await?,
            None => {}
        }
        let remote_tree = state.remote_tree().await?;
        let synced = state.synced_tree().await?;
        let cache = state.stat_cache().await?;
        let cursor = state.setting("cursor").await?;
        let ignores_case = case::ignores_case(&root);
        Ok(Self {
            root,
            remote,
            state,
            device: device.to_owned(),
            remote_tree,
            synced,
            cache,
            cursor,
            status: StatusFile::new(&dir),
            lock,
            spelling: Spelling::new(),
            ignores_case,
            announced: BTreeSet::new(),
            allow_mass_delete: false,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    pub async fn close(self) {
        self.state.close().await
    }

    /// Reads the journal from the cursor on into the remote tree.
    pub async fn pull(&mut self) -> Result<usize, SyncError> {
        let mut applied = 0;
        loop {
            let page = self
                .remote
                .changes(self.cursor.as_deref(), Some(5000))
                .await?;
            for c in &page.changes {
                apply_change(&mut self.remote_tree, c);
            }
            applied += page.changes.len();
            self.cursor = Some(page.cursor);
            if !page.has_more {
                return Ok(applied);
            }
        }
    }

    async fn save(&self) -> Result<(), SyncError> {
        self.state
            .save(
                &self.remote_tree,
                self.cursor.as_deref(),
                &self.synced,
                &self.cache,
            )
            .await?;
        Ok(())
    }

    /// The operations the planner wants now (pulls first).
    pub async fn pending(&mut self) -> Result<(Vec<Op>, Vec<String>), SyncError> {
        self.pull().await?;
        let root = self.root.clone();
        let cache = self.cache.clone();
        let scan = tokio::task::spawn_blocking(move || scan::scan(&root, &cache))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.cache = scan.cache;
        self.spelling = scan.spelling;
        let (local, mut warnings) = (scan.tree, scan.warnings);
        let clashes = if self.ignores_case {
            case::clashes(&self.remote_tree, &local, &self.synced)
        } else {
            Vec::new()
        };
        if self.lock.is_some()
            && let Err(e) = case::save(&self.root, &clashes)
        {
            tracing::warn!(error = %e, "cannot record the case clashes for `tessera conflicts`");
        }
        if clashes.is_empty() {
            return Ok((plan(&local, &self.remote_tree, &self.synced), warnings));
        }
        // What is left out is neither fetched nor taken as deleted here;
        // forgetting it as synced makes it come down once the clash is
        // resolved, and can never delete anything.
        let mut remote = self.remote_tree.clone();
        for c in &clashes {
            remove_subtree(&mut remote, &c.left_out);
            remove_subtree(&mut self.synced, &c.left_out);
            warnings.push(c.describe());
        }
        Ok((plan(&local, &remote, &self.synced), warnings))
    }

    /// Where the file or folder at `rel` (the server's spelling) is on disk.
    fn disk(&self, rel: &str) -> PathBuf {
        self.root.join(local_rel(&self.spelling, rel))
    }

    /// Records this round's skips: all of them in `skipped`, and in
    /// `warnings` those not reported before.
    fn note_skips(&mut self, report: &mut Report, skipped: Vec<String>) {
        for w in &skipped {
            if !self.announced.contains(w) && !report.warnings.contains(w) {
                report.warnings.push(w.clone());
            }
        }
        self.announced = skipped.iter().cloned().collect();
        report.skipped = skipped;
    }

    /// Syncs both ways until nothing is left to do (or progress stops).
    pub async fn sync_once(&mut self) -> Result<Report, SyncError> {
        if self.lock.is_none() {
            return Err(SyncError::Busy(self.root.display().to_string()));
        }
        let confirmation = self.confirmation();
        let confirmed = confirmation.is_file();
        let allowed = self.allow_mass_delete;
        self.allow_mass_delete |= confirmed;
        let result = self.rounds().await;
        self.allow_mass_delete = allowed;
        // Kept when the run failed (a vanished folder, the server away), so
        // the confirmation is not lost before it was carried out.
        if confirmed && result.is_ok() {
            let _ = std::fs::remove_file(&confirmation);
        }
        result
    }

    async fn rounds(&mut self) -> Result<Report, SyncError> {
        let mut report = Report::default();
        let mut last_stuck = Vec::new();
        for round in 1..=8 {
            report.rounds = round;
            self.check_present()?;
            let (mut ops, skipped) = self.pending().await?;
            // A scan of a folder unmounted meanwhile finds nothing: that
            // must not become deletions.
            self.check_present()?;
            self.note_skips(&mut report, skipped);
            if ops.is_empty() {
                report.stuck.clear();
                self.status.end_round(&[]);
                self.save().await?;
                return Ok(report);
            }
            let mut stuck = Vec::new();
            self.brake_mass_deletes(&mut ops, &mut stuck);
            if ops.is_empty() {
                self.status.end_round(&stuck);
                report.stuck = stuck;
                self.save().await?;
                return Ok(report);
            }
            let transfers: Vec<(u64, u64)> = ops
                .iter()
                .filter_map(|o| self.transfer_size(o).map(|b| (1, b)))
                .collect();
            self.status.start_round(
                transfers.iter().map(|t| t.0).sum(),
                transfers.iter().map(|t| t.1).sum(),
            );
            // Small files travel together (few requests, one transaction);
            // the batch goes after moves and folder creations, before
            // deletions.
            let mut small = Vec::new();
            let mut small_down = Vec::new();
            let mut large = Vec::new();
            let mut large_down = Vec::new();
            for op in ops {
                match &op {
                    Op::Upload { path, base_rev } if self.is_small_file(path) => {
                        small.push((path.clone(), *base_rev));
                        continue;
                    }
                    Op::Upload { path, base_rev } => {
                        large.push((path.clone(), *base_rev));
                        continue;
                    }
                    Op::Download { path, rev, local } => {
                        let small_file = self
                            .remote_tree
                            .get(path)
                            .and_then(|n| n.size)
                            .is_some_and(|s| s <= SMALL_FILE);
                        let item = (path.clone(), *rev, local.clone());
                        if small_file {
                            small_down.push(item)
                        } else {
                            large_down.push(item)
                        }
                        continue;
                    }
                    Op::MarkSynced { .. }
                    | Op::Forget { .. }
                    | Op::DeleteLocal { .. }
                    | Op::DeleteRemote { .. } => {
                        let (up, down) =
                            (std::mem::take(&mut small), std::mem::take(&mut small_down));
                        self.run_small(up, down, &mut report, &mut stuck).await;
                        let (up, down) =
                            (std::mem::take(&mut large), std::mem::take(&mut large_down));
                        self.run_large(up, down, &mut report, &mut stuck).await;
                    }
                    _ => {}
                }
                if let Err(e) = self.execute(&op, &mut report).await {
                    tracing::warn!(?op, error = %e, "sync operation did not complete");
                    stuck.push(format!("{}: {e}", describe(&op)));
                }
            }
            self.run_small(small, small_down, &mut report, &mut stuck)
                .await;
            self.run_large(large, large_down, &mut report, &mut stuck)
                .await;
            self.status.end_round(&stuck);
            self.save().await?;
            if !stuck.is_empty() && stuck == last_stuck {
                report.stuck = stuck;
                return Ok(report);
            }
            last_stuck = stuck.clone();
            report.stuck = stuck;
        }
        Ok(report)
    }

    /// The deletions of local files that wait for confirmation, if there
    /// are too many (see [`brake`]): why they wait and what to do.
    pub fn paused(&self, ops: &[Op]) -> Option<String> {
        if self.allow_mass_delete {
            return None;
        }
        brake::check(ops, &self.synced).map(|brake::Paused { deleting: n, files }| {
            format!(
                "deleting {n} files on the server is paused: {n} of {files} synced files are \
                 gone from {dir} (more than half, or over {max}). If you deleted \
                 them, run `tessera sync {dir} --allow-mass-delete` (it also works while sync \
                 runs); if not, put them back",
                dir = self.root.display(),
                max = brake::MAX_FILES,
            )
        })
    }

    fn brake_mass_deletes(&self, ops: &mut Vec<Op>, stuck: &mut Vec<String>) {
        if let Some(why) = self.paused(ops) {
            ops.retain(|o| !matches!(o, Op::DeleteRemote { .. }));
            stuck.push(why);
        }
    }

    /// Whether the user confirmed the paused deletions from another
    /// process (see [`CONFIRM_FILE`]).
    fn confirmation(&self) -> PathBuf {
        self.root.join(STATE_DIR).join(CONFIRM_FILE)
    }

    /// Refuses to go on if the folder or its state vanished.
    fn check_present(&self) -> Result<(), SyncError> {
        if self.root.is_dir() && self.root.join(STATE_DIR).join("state.db").is_file() {
            Ok(())
        } else {
            Err(SyncError::Vanished(self.root.display().to_string()))
        }
    }

    /// Bytes an operation moves over the network (before compression),
    /// or `None` if it moves no file content.
    fn transfer_size(&self, op: &Op) -> Option<u64> {
        match op {
            Op::Upload { path, .. } => {
                Some(std::fs::metadata(self.disk(path)).map_or(0, |m| m.len()))
            }
            Op::Download { path, .. } => {
                Some(self.remote_tree.get(path).and_then(|n| n.size).unwrap_or(0))
            }
            _ => None,
        }
    }

    fn progress(&mut self, files: u64, bytes: u64) {
        self.status.progress(files, bytes);
    }

    async fn run_small(
        &mut self,
        up: Vec<(String, i64)>,
        down: Vec<(String, i64, Option<Node>)>,
        report: &mut Report,
        stuck: &mut Vec<String>,
    ) {
        let up_bytes: u64 = up
            .iter()
            .filter_map(|(p, b)| {
                self.transfer_size(&Op::Upload {
                    path: p.clone(),
                    base_rev: *b,
                })
            })
            .sum();
        let up_files = up.len() as u64;
        self.upload_small(up, report, stuck).await;
        self.progress(up_files, up_bytes);
        let down_bytes: u64 = down
            .iter()
            .filter_map(|(p, ..)| self.remote_tree.get(p).and_then(|n| n.size))
            .sum();
        let down_files = down.len() as u64;
        self.download_small(down, report, stuck).await;
        self.progress(down_files, down_bytes);
    }

    fn is_small_file(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.disk(rel))
            .is_ok_and(|m| m.is_file() && m.len() <= SMALL_FILE)
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

    /// Downloads small files a group at a time: one request for their
    /// blocks (a small file is one block, whose id is the file's hash),
    /// then each is written, fsynced, re-checked and renamed into place.
    async fn download_small(
        &mut self,
        batch: Vec<(String, i64, Option<Node>)>,
        report: &mut Report,
        stuck: &mut Vec<String>,
    ) {
        let mut start = 0;
        while start < batch.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < batch.len() && end - start < 1000 && bytes < (8 << 20) {
                bytes += self
                    .remote_tree
                    .get(&batch[end].0)
                    .and_then(|n| n.size)
                    .unwrap_or(0);
                end += 1;
            }
            let group = &batch[start..end];
            start = end;
            let mut ids: Vec<BlockId> = group
                .iter()
                .filter_map(|(path, ..)| self.remote_tree.get(path))
                .filter(|n| n.size != Some(0))
                .filter_map(|n| n.hash.map(|h| BlockId(h.0)))
                .collect();
            ids.sort();
            ids.dedup();
            let blocks: std::collections::HashMap<BlockId, Vec<u8>> =
                match self.remote.fetch_blocks(&ids).await {
                    Ok(b) => b.into_iter().collect(),
                    Err(e) => {
                        // One at a time instead, each with its own error.
                        tracing::warn!(error = %e, "batch block fetch failed");
                        for (path, rev, local) in group {
                            let op = Op::Download {
                                path: path.clone(),
                                rev: *rev,
                                local: local.clone(),
                            };
                            if let Err(e) = self.execute(&op, report).await {
                                stuck.push(format!("download {path}: {e}"));
                            }
                        }
                        continue;
                    }
                };
            // Write and fsync the temporary files side by side (the disk
            // merges concurrent flushes), then check and rename one by one.
            let mut staged = Vec::new();
            for (path, _, local) in group {
                let Some(node) = self.remote_tree.get(path).cloned() else {
                    continue;
                };
                let data: Vec<u8> = match (node.size, node.hash) {
                    (Some(0), _) => Vec::new(),
                    (_, Some(h)) => match blocks.get(&BlockId(h.0)) {
                        Some(d) => d.clone(),
                        None => {
                            stuck.push(format!(
                                "download {path}: the server did not send its block"
                            ));
                            continue;
                        }
                    },
                    _ => continue,
                };
                match self.local_matches(path, local.as_ref()) {
                    Ok(true) => staged.push((path.clone(), local.clone(), node, data)),
                    Ok(false) => stuck.push(format!(
                        "download {path}: changed on disk meanwhile; will retry"
                    )),
                    Err(e) => stuck.push(format!("download {path}: {e}")),
                }
            }
            let tmp_dir = self.root.join(STATE_DIR).join("tmp");
            let writes: Vec<_> = staged
                .iter()
                .map(|(_, _, _, data)| {
                    let tmp = tmp_dir.join(format!("dl-{}", rand::random::<u64>()));
                    let data = data.clone();
                    async move {
                        let written = tokio::task::spawn_blocking({
                            let tmp = tmp.clone();
                            move || -> std::io::Result<()> {
                                use std::io::Write;
                                let mut f = std::fs::File::create(&tmp)?;
                                f.write_all(&data)?;
                                f.sync_all()
                            }
                        })
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))
                        .and_then(|r| r);
                        (tmp, written)
                    }
                })
                .collect();
            let written: Vec<(PathBuf, std::io::Result<()>)> = {
                use futures::StreamExt;
                futures::stream::iter(writes)
                    .buffered(PARALLEL_FSYNCS)
                    .collect()
                    .await
            };
            let mut dirs = std::collections::BTreeSet::new();
            for ((path, local, node, data), (tmp, w)) in staged.into_iter().zip(written) {
                let placed = match w {
                    Ok(()) => self.place_tmp(&path, &tmp, &data, local.as_ref()).await,
                    Err(e) => Err(e.into()),
                };
                match placed {
                    Ok(parent) => {
                        report.bytes_fetched += data.len() as u64;
                        dirs.insert(parent);
                        self.synced.insert(path, node);
                        report.downloaded += 1;
                    }
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        stuck.push(format!("download {path}: {e}"));
                    }
                }
            }
            for dir in dirs {
                if let Err(e) = fsync_dir(&dir).await {
                    stuck.push(format!("flushing {}: {e}", dir.display()));
                }
            }
        }
    }

    /// Renames the fsynced temporary file `tmp` (holding `data`) to `rel`
    /// if the disk still holds `expected` there. Returns the parent folder.
    async fn place_tmp(
        &mut self,
        rel: &str,
        tmp: &Path,
        data: &[u8],
        expected: Option<&Node>,
    ) -> Result<PathBuf, SyncError> {
        if !self.local_matches(rel, expected)? {
            return Err(std::io::Error::other("changed on disk meanwhile; will retry").into());
        }
        let target = self.disk(rel);
        let parent = target
            .parent()
            .map_or_else(|| self.root.clone(), Path::to_path_buf);
        tokio::fs::create_dir_all(&parent).await?;
        tokio::fs::rename(tmp, &target).await?;
        let stat = scan::stat_of(&tokio::fs::symlink_metadata(&target).await?);
        self.cache
            .insert(rel.to_owned(), (stat, ContentHash::of(data)));
        Ok(parent)
    }

    /// Fetches revision `rev` of `path` into a file under `.tessera/tmp/`,
    /// taking every block some local file holds (the older copy at `path`,
    /// or any file the block index knows) from disk and fetching the rest.
    /// The synced folder is not touched.
    fn fetch(
        &self,
        path: &str,
        rev: i64,
        local: Option<&Node>,
    ) -> impl std::future::Future<Output = Fetched> + use<> {
        let remote = self.remote.clone();
        let root = self.root.clone();
        let index = self.state.block_index();
        let old = local
            .is_some_and(|n| n.kind == NodeKind::File)
            .then(|| self.disk(path));
        let tmp = self
            .root
            .join(STATE_DIR)
            .join("tmp")
            .join(format!("dl-{}", rand::random::<u64>()));
        let live = self.status.live();
        let remote_path = rel_to_remote(path);
        async move {
            let mut blocks = Vec::new();
            let result = async {
                let list = remote.block_list(&remote_path, Some(rev)).await?;
                blocks = list.blocks.iter().map(|b| (b.id, b.size)).collect();
                let sites = local_sites(&root, &index, old.as_deref(), &list).await;
                if sites.is_empty() {
                    let progress: crate::transfer::Progress = Arc::new(move |n| {
                        live.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    });
                    let d = download_file(&remote, &remote_path, Some(rev), &tmp, progress).await?;
                    let size = d.size;
                    Ok((d, size, 0))
                } else {
                    let d = download_assembling(&remote, &list, &sites, &tmp).await?;
                    Ok((d.download, d.fetched, d.reused))
                }
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            Fetched {
                tmp,
                result,
                blocks,
            }
        }
    }

    /// Renames a fetched file into place if the disk still holds `local`
    /// at `path` (a local edit made during the download is never replaced).
    async fn place(
        &mut self,
        path: &str,
        local: Option<&Node>,
        fetched: Fetched,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let Fetched {
            tmp,
            result,
            blocks,
        } = fetched;
        let (got, bytes_fetched, bytes_reused) = result?;
        if !self.local_matches(path, local)? {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(std::io::Error::other("changed on disk meanwhile; will retry").into());
        }
        let target = self.disk(path);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(&tmp, &target).await?;
        if let Some(parent) = target.parent() {
            fsync_dir(parent).await?;
        }
        let stat = scan::stat_of(&tokio::fs::symlink_metadata(&target).await?);
        self.cache.insert(path.to_owned(), (stat, got.content_hash));
        let node = self.remote_tree.get(path).cloned().unwrap_or(Node {
            kind: NodeKind::File,
            hash: Some(got.content_hash),
            rev: Some(got.rev),
            id: None,
            size: Some(got.size),
        });
        self.synced.insert(
            path.to_owned(),
            Node {
                hash: Some(got.content_hash),
                ..node
            },
        );
        report.bytes_fetched += bytes_fetched;
        report.bytes_reused += bytes_reused;
        report.downloaded += 1;
        self.index_file(path, &blocks).await;
        Ok(())
    }

    /// Large transfers, several at once: uploads straight, downloads
    /// fetched side by side and then placed one by one.
    async fn run_large(
        &mut self,
        up: Vec<(String, i64)>,
        down: Vec<(String, i64, Option<Node>)>,
        report: &mut Report,
        stuck: &mut Vec<String>,
    ) {
        use futures::StreamExt;
        let mut bytes = 0;
        let files = (up.len() + down.len()) as u64;
        for (path, base) in &up {
            bytes += self
                .transfer_size(&Op::Upload {
                    path: path.clone(),
                    base_rev: *base,
                })
                .unwrap_or(0);
        }
        for (path, ..) in &down {
            bytes += self.remote_tree.get(path).and_then(|n| n.size).unwrap_or(0);
        }
        let uploads: Vec<_> = up
            .into_iter()
            .map(|(path, base)| {
                let remote = self.remote.clone();
                let abs = self.disk(&path);
                let live = self.status.live();
                async move {
                    let progress: crate::transfer::Progress = Arc::new(move |n| {
                        live.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    });
                    let r = upload_file(&remote, &abs, &rel_to_remote(&path), Some(base), progress)
                        .await;
                    (path, r)
                }
            })
            .collect();
        let done: Vec<_> = futures::stream::iter(uploads)
            .buffer_unordered(PARALLEL_TRANSFERS)
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
        let mut wanted = Vec::new();
        for (path, rev, local) in down {
            match self.local_matches(&path, local.as_ref()) {
                Ok(true) => wanted.push((path, rev, local)),
                Ok(false) => stuck.push(format!(
                    "download {path}: changed on disk meanwhile; will retry"
                )),
                Err(e) => stuck.push(format!("download {path}: {e}")),
            }
        }
        let fetches: Vec<_> = wanted
            .iter()
            .map(|(path, rev, local)| self.fetch(path, *rev, local.as_ref()))
            .collect();
        let fetched: Vec<Fetched> = futures::stream::iter(fetches)
            .buffered(PARALLEL_TRANSFERS)
            .collect()
            .await;
        for ((path, _, local), f) in wanted.into_iter().zip(fetched) {
            if let Err(e) = self.place(&path, local.as_ref(), f, report).await {
                stuck.push(format!("download {path}: {e}"));
            }
        }
        self.progress(files, bytes);
    }

    /// Notes where the blocks of the local file at `path` lie. Only a
    /// hint for later downloads, so a failure costs nothing but a warning.
    async fn index_file(&self, path: &str, blocks: &[(BlockId, u64)]) {
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

    fn local_matches(&self, rel: &str, expected: Option<&Node>) -> Result<bool, SyncError> {
        let abs = self.disk(rel);
        match expected {
            None => Ok(std::fs::symlink_metadata(&abs).is_err()),
            Some(n) if n.kind == NodeKind::Folder => Ok(abs.is_dir()),
            Some(n) => Ok(current_hash(&abs, rel, &self.cache)?.map(|(_, h)| h) == n.hash),
        }
    }

    async fn execute(&mut self, op: &Op, report: &mut Report) -> Result<(), SyncError> {
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
            Op::CreateRemoteFolder { path } => {
                let entry = match self.remote.mkdir(&rel_to_remote(path)).await {
                    Ok(e) => Some(e),
                    Err(e) if e.code() == Some(tessera_proto::ErrorCode::AlreadyExists) => None,
                    Err(e) => return Err(e.into()),
                };
                let mut node = Node::folder();
                if let Some(e) = entry {
                    node = node.with_id(&e.id);
                }
                self.synced.insert(path.clone(), node);
            }
            Op::Upload { path, base_rev } => {
                let abs = self.disk(path);
                let up = upload_file(&self.remote, &abs, &rel_to_remote(path), Some(*base_rev), {
                    let live = self.status.live();
                    Arc::new(move |n| {
                        live.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    })
                })
                .await?;
                self.record_uploaded(path, &up.entry, report);
                self.index_file(path, &up.blocks).await;
            }
            Op::Download { path, rev, local } => {
                if !self.local_matches(path, local.as_ref())? {
                    return Err(
                        std::io::Error::other("changed on disk meanwhile; will retry").into(),
                    );
                }
                let fetched = self.fetch(path, *rev, local.as_ref()).await;
                self.place(path, local.as_ref(), fetched, report).await?;
            }
            Op::Conflict { path, .. } => {
                // Keep the local bytes under a new name; the next round
                // uploads that copy and takes the remote file at `path`.
                let abs = self.disk(path);
                let name = abs
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("file")
                    .to_owned();
                let copy =
                    unused(abs.with_file_name(conflicted_name(&name, &self.device, now_secs())));
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
            }
            Op::DeleteLocal { path, expected } => {
                if !self.local_matches(path, Some(expected))? {
                    return Err(std::io::Error::other("changed on disk meanwhile; kept").into());
                }
                let abs = self.disk(path);
                if expected.kind == NodeKind::Folder {
                    // Only empty folders go; anything left inside is kept.
                    if tokio::fs::remove_dir(&abs).await.is_err() {
                        return Err(std::io::Error::other("folder is not empty; kept").into());
                    }
                } else {
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
                    tokio::fs::rename(&abs, &trash).await?;
                    self.cache.remove(path);
                }
                remove_subtree(&mut self.synced, path);
                report.deleted_local += 1;
            }
            Op::DeleteRemote { path } => {
                // Only the version this device saw: an edit made elsewhere
                // meanwhile gets 409 and comes down in the next round.
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
                let expected = self.synced.get(from).cloned();
                let (source, target) = (self.disk(from), self.disk(to));
                // In a folder that ignores case, a rename that changes only
                // case finds its target already there: itself.
                let case_only = case::same_entry(&source, &target);
                if !self.local_matches(from, expected.as_ref())? || (target.exists() && !case_only)
                {
                    return Err(
                        std::io::Error::other("changed on disk meanwhile; will retry").into(),
                    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn old_trash_is_purged_and_recent_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_secs();
        for t in [now - 31 * 86_400, now - 86_400, now] {
            let d = dir.path().join(t.to_string()).join("sub");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f.txt"), b"x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("not-a-batch")).unwrap();
        purge_trash(dir.path(), now - TRASH_DAYS * 86_400).await;
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            (now - 86_400).to_string(),
            now.to_string(),
            "not-a-batch".into(),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn renames_never_land_on_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a (conflicted copy).txt");
        assert_eq!(unused(p.clone()), p);
        std::fs::write(&p, b"1").unwrap();
        let second = unused(p.clone());
        assert_eq!(second, dir.path().join("a (conflicted copy) (2).txt"));
        std::fs::write(&second, b"2").unwrap();
        assert_eq!(unused(p), dir.path().join("a (conflicted copy) (3).txt"));
    }

    #[test]
    fn conflicted_copy_names() {
        // 2026-11-30 05:46:07 UTC
        let t = 1_796_017_567;
        assert_eq!(
            conflicted_name("report.txt", "laptop", t),
            "report (conflicted copy from laptop 2026-11-30 054607).txt"
        );
        assert_eq!(
            conflicted_name("Makefile", "pc", t),
            "Makefile (conflicted copy from pc 2026-11-30 054607)"
        );
        assert_eq!(
            conflicted_name(".bashrc", "pc", t),
            ".bashrc (conflicted copy from pc 2026-11-30 054607)"
        );
    }
}
