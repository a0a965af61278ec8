//! Selective sync: which server folders this device keeps (`tessera sync
//! DIR --only /Work --only /Photos/2026`, changed later with `tessera
//! selective DIR`). No selection keeps everything.
//!
//! A path is kept when it lies in a selected folder, or is a folder above
//! one (`Photos` for `Photos/2026`: only what leads to the selection).
//! Everything else is out of sight on both sides: never fetched, never
//! sent, never taken as deleted. Three rules keep that safe:
//!
//! - **Unselecting** a folder moves its local copy into the local trash
//!   and forgets it as synced, so nothing on the server changes, and
//!   selecting it again fetches it afresh. The engine does it, under the
//!   folder's lock, at the start of a round after the wanted selection
//!   (`selected`) differs from the one applied (`selected.applied`); a
//!   running sync picks the change up by itself.
//! - **A folder above the selection** holds server content this device
//!   does not have: deleting or moving it here is not carried to the
//!   server (that would take the unselected content along); it comes back
//!   and the user is told why.
//! - **Something made here outside the selection** is selected and sent
//!   when the server has nothing at its place (a new folder of the user's
//!   own); when it has (an unselected folder of the same name), it stays
//!   here unsynced, and the user is told how to select it.

use std::path::Path;

use super::super::planner::{Op, Plan};
use super::super::tree::{Tree, is_below};
use super::{Report, SyncError, Syncer, remove_subtree};

/// The selection wanted, as `tessera selective` writes it (JSON, a list of
/// folders without the leading `/`).
pub const SELECTION_FILE: &str = "selected";
/// The selection the engine last carried out.
const APPLIED_FILE: &str = "selected.applied";

/// The selection in `file` under `state_dir`; empty (everything) when
/// there is none.
pub fn read(state_dir: &Path, file: &str) -> Result<Vec<String>, SyncError> {
    match std::fs::read_to_string(state_dir.join(file)) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            SyncError::Io(std::io::Error::other(format!(
                "{} is damaged ({e}): set the selection again with `tessera selective`",
                state_dir.join(file).display()
            )))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Writes a selection (normalized: no slashes at the ends, sorted, no
/// folder inside another) durably: write, fsync, rename.
pub fn write(state_dir: &Path, file: &str, folders: &[String]) -> Result<(), SyncError> {
    use std::io::Write;
    let folders = normalize(folders);
    let path = state_dir.join(file);
    let tmp = state_dir.join(format!("{file}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(
        serde_json::to_string_pretty(&folders)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Sorted, deduplicated, without slashes at the ends, and without folders
/// inside another selected folder.
pub fn normalize(folders: &[String]) -> Vec<String> {
    let mut out: Vec<String> = folders
        .iter()
        .map(|f| f.trim_matches('/').to_owned())
        .filter(|f| !f.is_empty())
        .collect();
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|f| !all.iter().any(|g| is_below(f, g)));
    out
}

/// Whether `path` is kept under `selection`.
pub fn keeps(selection: &[String], path: &str) -> bool {
    selection.is_empty()
        || selection
            .iter()
            .any(|f| path == f || is_below(path, f) || is_below(f, path))
}

/// Whether `path` is kept only as a folder above the selection, not as a
/// part of it.
fn above_only(selection: &[String], path: &str) -> bool {
    !selection.is_empty()
        && !selection.iter().any(|f| path == f || is_below(path, f))
        && selection.iter().any(|f| is_below(f, path))
}

/// The topmost paths of `tree` that `selection` leaves out.
fn topmost_left_out<'a>(tree: &'a Tree, selection: &[String]) -> Vec<&'a String> {
    let mut out: Vec<&String> = Vec::new();
    for path in tree.keys() {
        if !keeps(selection, path) && !out.iter().any(|o| is_below(path, o)) {
            out.push(path);
        }
    }
    out
}

impl Syncer {
    fn state_dir(&self) -> std::path::PathBuf {
        self.root.join(super::STATE_DIR)
    }

    /// The selection wanted now.
    pub(super) fn selection(&self) -> Result<Vec<String>, SyncError> {
        read(&self.state_dir(), SELECTION_FILE).map(|s| normalize(&s))
    }

    /// Carries out a change of selection: what it no longer keeps goes to
    /// the local trash and is forgotten as synced. Only with the lock.
    pub(super) async fn apply_selection(&mut self, report: &mut Report) -> Result<(), SyncError> {
        if self.lock.is_none() {
            return Ok(());
        }
        let dir = self.state_dir();
        let want = self.selection()?;
        let applied = normalize(&read(&dir, APPLIED_FILE)?);
        if want == applied {
            return Ok(());
        }
        let dropped: Vec<String> = topmost_left_out(&self.synced, &want)
            .into_iter()
            .filter(|p| keeps(&applied, p))
            .cloned()
            .collect();
        for path in &dropped {
            let abs = self.disk(path);
            if std::fs::symlink_metadata(&abs).is_ok() {
                let trash = self.to_trash(path, &abs).await.map_err(|e| {
                    SyncError::Io(std::io::Error::other(format!(
                        "cannot move {path}, no longer selected, to the local trash: {e}"
                    )))
                })?;
                tracing::info!(%path, trash = %trash.display(), "no longer selected: moved to the local trash");
                report.warnings.push(format!(
                    "/{path} is no longer synced to this device: its copy here is in the local \
                     trash (`tessera trash --local {}`); it stays on the server",
                    self.root.display()
                ));
            }
            remove_subtree(&mut self.synced, path);
        }
        // What the disk held there is looked at afresh.
        self.last_scan = None;
        self.save().await?;
        write(&dir, APPLIED_FILE, &want)?;
        Ok(())
    }

    /// The three trees as the selection shows them, and what is made here
    /// outside it: selected when the server has nothing there, otherwise
    /// reported in `warnings`.
    pub(super) fn select_trees(
        &self,
        local: &Tree,
        remote: &Tree,
        synced: &Tree,
        warnings: &mut Vec<String>,
    ) -> Result<Option<(Tree, Tree, Tree)>, SyncError> {
        let mut selection = self.selection()?;
        if selection.is_empty() {
            return Ok(None);
        }
        let mut added = Vec::new();
        for path in topmost_left_out(local, &selection) {
            if remote.contains_key(path) || synced.contains_key(path) {
                warnings.push(format!(
                    "/{path} here is not synced: the server has a folder or file there that is \
                     not selected for this device (`tessera selective {} --add /{path}` syncs it)",
                    self.root.display()
                ));
            } else {
                added.push(path.clone());
            }
        }
        if !added.is_empty() && self.lock.is_some() {
            selection.extend(added.iter().cloned());
            let dir = self.state_dir();
            write(&dir, SELECTION_FILE, &selection)?;
            // Nothing to take away: the applied selection grows with it.
            let mut applied = read(&dir, APPLIED_FILE)?;
            applied.extend(added.iter().cloned());
            write(&dir, APPLIED_FILE, &applied)?;
            for path in &added {
                tracing::info!(%path, "made here: added to the folders synced to this device");
            }
        }
        let selection = normalize(&selection);
        let pick = |t: &Tree| -> Tree {
            t.iter()
                .filter(|(p, _)| keeps(&selection, p))
                .map(|(p, n)| (p.clone(), n.clone()))
                .collect()
        };
        Ok(Some((pick(local), pick(remote), pick(synced))))
    }

    /// Takes out of `plan` the deletions and moves of folders above the
    /// selection (they hold server content this device lacks) and forgets
    /// them as synced, so they come back; says why in `stuck`.
    pub(super) fn keep_folders_above_selection(
        &mut self,
        plan: &mut Plan,
        stuck: &mut Vec<String>,
    ) -> Result<(), SyncError> {
        let selection = self.selection()?;
        if selection.is_empty() {
            return Ok(());
        }
        let held = |op: &Op| match op {
            Op::DeleteRemote { path } | Op::MoveRemote { from: path, .. } => {
                above_only(&selection, path).then(|| path.clone())
            }
            _ => None,
        };
        let kept: Vec<String> = plan.ops().filter_map(held).collect();
        if kept.is_empty() {
            return Ok(());
        }
        plan.retain(|op| held(op).is_none());
        for path in kept {
            remove_subtree(&mut self.synced, &path);
            stuck.push(format!(
                "/{path} holds folders that are not synced to this device, so it was not \
                 deleted or moved on the server; it comes back here. Do it on another device, \
                 or select all of it first (`tessera selective {} --add /{path}`)",
                self.root.display()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn a_selection_keeps_its_folders_what_they_hold_and_the_way_to_them() {
        let sel = s(&["Work", "Photos/2026"]);
        for kept in [
            "Work",
            "Work/a.txt",
            "Photos",
            "Photos/2026",
            "Photos/2026/x.jpg",
        ] {
            assert!(keeps(&sel, kept), "{kept}");
        }
        for out in [
            "Photos/2025",
            "Photos/2025/y.jpg",
            "Music",
            "Workshop",
            "Photos/2026b",
        ] {
            assert!(!keeps(&sel, out), "{out}");
        }
        assert!(keeps(&[], "anything"), "no selection keeps everything");
        assert!(above_only(&sel, "Photos"));
        assert!(!above_only(&sel, "Photos/2026"));
        assert!(!above_only(&sel, "Work/sub"));
    }

    #[test]
    fn selections_are_normalized() {
        assert_eq!(
            normalize(&s(&["/Work/", "Work/Sub", "/Photos/2026", "", "/Work"])),
            s(&["Photos/2026", "Work"])
        );
    }
}
