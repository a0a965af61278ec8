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

use tessera_proto::ContentHash;
use tessera_proto::api::{Change, ChangeKind, EntryKind};

use std::sync::Arc;

use super::brake;
use super::case;
use super::dirty::Dirty;
use super::error::OpError;
use super::planner::{Op, Phase, Plan, plan};
use super::prefetch::Prefetches;
use super::scan::{self, STATE_DIR, Scan, Spelling, local_rel};
use super::state::{StatCache, State, StateError};
use super::status::StatusFile;
use super::tree::{Node, NodeKind, Tree, is_below};
use crate::remote::{ClientError, Remote};

mod disk;
mod download;
mod execute;
mod read_only;
pub mod selection;

use disk::{now_secs, purge_trash};
pub use execute::describe;

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

/// Present while the folder's sync is paused (`tessera pause DIR`): a
/// running sync finishes the round under way and then waits, neither
/// scanning nor asking the server, until the file goes (`tessera resume`).
/// Kept across restarts, as a paused folder stays paused.
pub const PAUSE_FILE: &str = "paused";

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
    /// What the watcher saw change, when a daemon watches the folder: a
    /// scan then looks only there. Without it every scan is a whole one.
    dirty: Option<Arc<Dirty>>,
    /// The last scan, which a partial one starts from.
    last_scan: Option<Scan>,
    /// Files outside the selection and their content, with when this run
    /// first saw them (none: an earlier run did): only one that appeared
    /// recently can be where a file was moved (`engine/selection.rs`).
    outside_seen: HashMap<(String, ContentHash), Option<std::time::Instant>>,
    /// Large new files fetched while another device uploads them, when a
    /// daemon runs (`prefetch.rs`).
    prefetch: Option<Prefetches>,
    /// The server folders this round keeps (selective sync; empty: all),
    /// read once a round (`engine/selection.rs`).
    selected: selection::Selection,
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

pub const TRASH_DAYS: i64 = 30;

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
            let _ = tokio::fs::remove_dir_all(dir.join("prefetch")).await;
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
        if writable {
            // Saves forget only the paths they saw go; anything else the
            // index kept (a round that failed before saving) goes here.
            state.block_index().forget_unsynced().await?;
        }
        let ignores_case = case::ignores_case(&root);
        // What an earlier run saw is not new to this one.
        let outside_seen = cache
            .iter()
            .map(|(p, (_, h))| ((p.clone(), *h), None))
            .collect();
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
            dirty: None,
            last_scan: None,
            outside_seen,
            prefetch: None,
            selected: selection::Selection::default(),
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
        let mut announced = BTreeSet::new();
        loop {
            let page = self
                .remote
                .changes(self.cursor.as_deref(), Some(5000))
                .await?;
            for c in &page.changes {
                apply_change(&mut self.remote_tree, c);
                if c.kind == ChangeKind::Move
                    && let Some(old) = &c.old_path
                {
                    self.follow_move(&remote_to_rel(old), &remote_to_rel(&c.path))?;
                }
                announced.remove(&c.path);
                if c.kind == ChangeKind::Pending
                    && c.node == EntryKind::File
                    && c.device != self.device
                    && !self.synced.contains_key(&remote_to_rel(&c.path))
                {
                    announced.insert(c.path.clone());
                }
            }
            applied += page.changes.len();
            self.cursor = Some(page.cursor);
            if !page.has_more {
                // Only uploads still under way as of the cursor: older
                // marks have been followed by their commit or expiry.
                if let Some(prefetch) = &self.prefetch {
                    for path in announced {
                        prefetch.start(path);
                    }
                }
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

    /// The operations the planner wants now (pulls first), in execution
    /// order, and what is left out of sync.
    pub async fn pending(&mut self) -> Result<(Vec<Op>, Vec<String>), SyncError> {
        self.load_selection()?;
        let (plan, warnings) = self.pending_plan().await?;
        Ok((plan.into_ops(), warnings))
    }

    /// What this device would send, from a scan against what it last knew
    /// of the server, without asking the server (which may be out of
    /// reach): the changes waiting here.
    pub async fn pending_here(&mut self) -> Result<Vec<Op>, SyncError> {
        self.load_selection()?;
        let (plan, _) = self.plan_from_scan(None).await?;
        Ok(plan
            .into_ops()
            .into_iter()
            .filter(|o| {
                matches!(
                    o,
                    Op::Upload { .. }
                        | Op::CreateRemoteFolder { .. }
                        | Op::MoveRemote { .. }
                        | Op::DeleteRemote { .. }
                )
            })
            .collect())
    }

    /// Scans from now on look only where `dirty` says the folder changed
    /// (the daemon's watcher fills it).
    pub fn follow(&mut self, dirty: Arc<Dirty>) {
        self.dirty = Some(dirty);
    }

    /// Fetches large new files while other devices are still uploading
    /// them (streaming sync), for a daemon that keeps running: a single
    /// round would leave before the upload ends.
    pub async fn stream_uploads(&mut self) -> Result<(), SyncError> {
        let live = self.status.live();
        let progress: crate::transfer::Progress = Arc::new(move |n| {
            live.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        });
        let dir = self.root.join(STATE_DIR).join("prefetch");
        self.prefetch = Some(Prefetches::new(dir, self.remote.clone(), progress).await?);
        Ok(())
    }

    /// Pulls, scans and plans. A plan from a partial scan that would
    /// delete or move anything on the server is made again from a whole
    /// scan: what the disk lacks is only taken from a look at all of it.
    async fn pending_plan(&mut self) -> Result<(Plan, Vec<String>), SyncError> {
        self.pull().await?;
        let hint = self.dirty.as_ref().and_then(|d| d.take());
        let partial = hint.is_some();
        let (plan, warnings) = self.plan_from_scan(hint).await?;
        let absences = plan
            .ops()
            .any(|o| matches!(o, Op::DeleteRemote { .. } | Op::MoveRemote { .. }));
        if partial && absences {
            return self.plan_from_scan(None).await;
        }
        Ok((plan, warnings))
    }

    /// Scans the disk (where `hint` says, or all of it) and plans.
    async fn plan_from_scan(
        &mut self,
        hint: Option<BTreeSet<String>>,
    ) -> Result<(Plan, Vec<String>), SyncError> {
        let root = self.root.clone();
        let cache = self.cache.clone();
        let prev = self.last_scan.take();
        let scan = tokio::task::spawn_blocking(move || {
            let partial = match (&hint, &prev) {
                (Some(paths), Some(prev)) => scan::rescan(&root, prev, paths, &cache),
                _ => None,
            };
            match partial {
                Some(scan) => {
                    tracing::debug!(looked_at = hint.map_or(0, |h| h.len()), "partial scan");
                    scan
                }
                None => {
                    tracing::debug!("whole scan");
                    scan::scan(&root, &cache)
                }
            }
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.last_scan = Some(scan.clone());
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
        self.select_made_here(&local, &mut warnings)?;
        let selected = self.select_trees(&local);
        if clashes.is_empty() {
            return Ok(match &selected {
                Some((local, remote, synced)) => (plan(local, remote, synced), warnings),
                None => (plan(&local, &self.remote_tree, &self.synced), warnings),
            });
        }
        // What is left out is neither fetched nor taken as deleted here;
        // forgetting it as synced makes it come down once the clash is
        // resolved, and can never delete anything.
        let (mut local, mut remote) = match selected {
            Some((local, remote, _)) => (local, remote),
            None => (local, self.remote_tree.clone()),
        };
        for c in &clashes {
            remove_subtree(&mut remote, &c.left_out);
            remove_subtree(&mut self.synced, &c.left_out);
            warnings.push(c.describe());
        }
        let selection = self.selected.clone();
        local.retain(|p, _| selection.keeps(p));
        let synced: Tree = self
            .synced
            .iter()
            .filter(|(p, _)| selection.keeps(p))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        Ok((plan(&local, &remote, &synced), warnings))
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
        let out = self.rounds_inner().await;
        if out.is_err()
            && let Some(dirty) = &self.dirty
        {
            // Whatever the failed round did on disk is looked at again.
            dirty.mark_all();
        }
        out
    }

    async fn rounds_inner(&mut self) -> Result<Report, SyncError> {
        let mut report = Report::default();
        let mut last_stuck = Vec::new();
        for round in 1..=8 {
            report.rounds = round;
            self.check_present()?;
            self.load_selection()?;
            let (mut plan, skipped) = self.pending_plan().await?;
            // A scan of a folder unmounted meanwhile finds nothing: that
            // must not become deletions.
            self.check_present()?;
            self.note_skips(&mut report, skipped);
            let mut stuck = Vec::new();
            // Before the brake: a move is not a deletion to count. Said as
            // a warning: the file comes back in a later round of this run.
            self.keep_moves_out_of_selection(&mut plan, &mut report.warnings);
            self.brake_mass_deletes(&mut plan, &mut stuck);
            self.keep_folders_above_selection(&mut plan, &mut stuck);
            let kept_out = self.keep_out_of_read_only(&mut plan, &mut report).await;
            if plan.is_empty() && kept_out > 0 {
                self.save().await?;
                continue;
            }
            // In sync under the selection applied so far: a wanted one
            // that takes something away is carried out now, then planned.
            if plan.is_empty() && stuck.is_empty() && self.apply_selection(&mut report).await? {
                continue;
            }
            if plan.is_empty() {
                self.status.end_round(&stuck);
                report.stuck = stuck;
                self.save().await?;
                return Ok(report);
            }
            let (files, bytes) = plan
                .phase(Phase::Transfers)
                .iter()
                .filter_map(|o| self.transfer_size(o))
                .fold((0, 0), |(n, b), size| (n + 1, b + size));
            self.status.start_round(files, bytes);
            // What this round writes on disk, the next scan looks at, even
            // before the watcher reports it.
            if let Some(dirty) = &self.dirty {
                for path in plan.ops().flat_map(Op::paths) {
                    dirty.mark(path.to_owned());
                }
            }
            for step in plan.steps {
                self.run_step(step, &mut report, &mut stuck).await;
            }
            self.status.end_round(&stuck);
            self.save().await?;
            // The same failures twice: another round would not help.
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

    fn brake_mass_deletes(&self, plan: &mut Plan, stuck: &mut Vec<String>) {
        if let Some(why) = self.paused(plan.phase(Phase::Deletes)) {
            plan.retain(|o| !matches!(o, Op::DeleteRemote { .. }));
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

    /// Whether the file or folder at `rel` still holds `expected`; see
    /// [`disk::unchanged`].
    fn unchanged(&self, rel: &str, expected: Option<&Node>) -> Result<(), OpError> {
        disk::unchanged(&self.disk(rel), rel, expected, &self.cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
