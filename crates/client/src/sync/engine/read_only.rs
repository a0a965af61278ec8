//! Folders shared with this user as a viewer. The server refuses every
//! change in them, so the plan's changes there never go up:
//!
//! - a new or edited file is moved to a conflicted copy at the top of the
//!   synced folder, outside the shared folder (where it syncs as the
//!   user's own file), and the server's version comes back;
//! - a file deleted or moved away locally is fetched again (what was
//!   moved away stays where the user put it); the folder itself may move
//!   among the user's own folders;
//! - an empty folder made locally is removed.
//!
//! Each kept copy is reported with the reason, so the user is told why.

use tessera_proto::api::ShareRole;

use super::super::planner::{Op, Plan};
use super::super::tree::is_below;
use super::disk::{fsync_dir, now_secs, unused};
use super::{Report, Syncer, conflicted_name, remote_to_rel, remove_subtree};

impl Syncer {
    /// The folders shared with this user read-only, where they are in
    /// the user's files. A server that cannot say has none.
    async fn read_only_folders(&self) -> Vec<String> {
        match self.remote.shares().await {
            Ok(list) => list
                .shares
                .into_iter()
                .filter(|s| s.role == ShareRole::Viewer)
                .map(|s| remote_to_rel(&s.path))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no list of shared folders");
                Vec::new()
            }
        }
    }

    /// Takes out of `plan` every change it would send into a read-only
    /// folder, and undoes it locally as the module doc says. Returns how
    /// many it took out (the next round then sees what they left).
    pub(super) async fn keep_out_of_read_only(
        &mut self,
        plan: &mut Plan,
        report: &mut Report,
    ) -> usize {
        if plan.is_empty() {
            return 0;
        }
        let folders = self.read_only_folders().await;
        if folders.is_empty() {
            return 0;
        }
        let inside = |p: &str| folders.iter().any(|f| p == f || is_below(p, f));
        let sends = |op: &Op| match op {
            Op::Upload { path, .. }
            | Op::Conflict { path, .. }
            | Op::DeleteRemote { path }
            | Op::CreateRemoteFolder { path } => inside(path),
            // The mount point itself is the user's to move among their
            // own folders.
            Op::MoveRemote { from, to } if folders.contains(from) => inside(to),
            Op::MoveRemote { from, to } => inside(from) || inside(to),
            _ => false,
        };
        let caught: Vec<Op> = plan.ops().filter(|op| sends(op)).cloned().collect();
        if caught.is_empty() {
            return 0;
        }
        plan.retain(|op| !sends(op));
        let taken = caught.len();
        for op in caught {
            match op {
                Op::Upload { path, .. } | Op::Conflict { path, .. } => {
                    self.set_aside(&path, report).await;
                }
                Op::DeleteRemote { path } => self.fetch_again(&path),
                Op::MoveRemote { from, to } => {
                    if inside(&to) && !inside(&from) {
                        self.put_back(&from, &to, report).await;
                    } else if inside(&to) {
                        self.set_aside(&to, report).await;
                    }
                    if inside(&from) {
                        self.fetch_again(&from);
                    }
                }
                Op::CreateRemoteFolder { path } => {
                    // Only an empty one goes; files in it are set aside
                    // one by one, and the next round takes the folder.
                    let _ = tokio::fs::remove_dir(self.disk(&path)).await;
                    self.mark_dirty(&path);
                }
                _ => {}
            }
        }
        taken
    }

    /// Moves what the user moved into a read-only folder (a file or a whole
    /// folder) back to where it came from.
    async fn put_back(&mut self, from: &str, to: &str, report: &mut Report) {
        let (source, target) = (self.disk(to), self.disk(from));
        let moved = async {
            if tokio::fs::symlink_metadata(&target).await.is_ok() {
                return Err(std::io::Error::other(format!("{from} is taken again")));
            }
            tokio::fs::rename(&source, &target).await?;
            for dir in [source.parent(), target.parent()].into_iter().flatten() {
                fsync_dir(dir).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        match moved.await {
            Ok(()) => report.warnings.push(format!(
                "{to} is in a folder shared with you read-only: it was moved back to {from}"
            )),
            Err(e) => {
                report.warnings.push(format!(
                    "{to} is in a folder shared with you read-only and could not go back to \
                     {from} ({e}): it is kept as a copy outside the folder"
                ));
                self.set_aside(to, report).await;
            }
        }
        self.mark_dirty(from);
        self.mark_dirty(to);
    }

    /// Forgets that `path` was synced, so the next round takes the
    /// server's version again.
    fn fetch_again(&mut self, path: &str) {
        remove_subtree(&mut self.synced, path);
        self.mark_dirty(path);
    }

    /// Moves the local file at `path` to a conflicted copy at the top of
    /// the synced folder and lets the server's version come back.
    async fn set_aside(&mut self, path: &str, report: &mut Report) {
        let abs = self.disk(path);
        if !abs.is_file() {
            return;
        }
        let name = abs
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file")
            .to_owned();
        let copy = unused(
            self.root
                .join(conflicted_name(&name, &self.device, now_secs())),
        );
        let moved = async {
            tokio::fs::rename(&abs, &copy).await?;
            fsync_dir(&self.root).await?;
            if let Some(parent) = abs.parent() {
                fsync_dir(parent).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        if let Err(e) = moved.await {
            report.warnings.push(format!(
                "{path}: in a folder shared with you read-only, and it could not be set aside: {e}"
            ));
            return;
        }
        let rel = copy
            .strip_prefix(&self.root)
            .unwrap_or(&copy)
            .to_string_lossy()
            .into_owned();
        report.warnings.push(format!(
            "{path} is in a folder shared with you read-only: your version is kept as {rel}, \
             outside it"
        ));
        report.conflicts.push(rel.clone());
        self.fetch_again(path);
        self.mark_dirty(&rel);
    }

    fn mark_dirty(&self, path: &str) {
        if let Some(dirty) = &self.dirty {
            dirty.mark(path.to_owned());
        }
    }
}
