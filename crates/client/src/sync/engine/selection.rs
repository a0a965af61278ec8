//! Selective sync: which server folders this device keeps (`tessera sync
//! DIR --only /Work --only /Photos/2026`, changed later with `tessera
//! selective DIR`). No selection keeps everything.
//!
//! A selection is the folders kept (`only`; none: everything) and, inside
//! them, the ones left out (`except`), so what appears later anywhere else
//! in a kept folder still comes. A path is kept when it lies in a kept
//! folder and in no exception, or is a folder above a kept one (`Photos`
//! for `Photos/2026`: only what leads to the selection). Everything else
//! is out of sight on both sides: never fetched, never sent, never taken
//! as deleted. Three rules keep that safe:
//!
//! - **Unselecting** a folder forgets it as synced, then moves its synced
//!   files into the local trash, so nothing on the server changes, and
//!   selecting it again fetches it afresh. The engine does it, under the
//!   folder's lock, once the folder is in sync under the selection applied
//!   so far (`selected.applied`), so edits made here go up first; what the
//!   server does not have as it is stays in place, unsynced. A running
//!   sync picks a new wanted selection (`selected`) up by itself, and
//!   follows a selected folder moved on the server.
//! - **A folder above the selection, or holding an exception,** holds
//!   server content this device does not have: deleting or moving it here is not carried to the
//!   server (that would take the unselected content along); it comes back
//!   and the user is told why.
//! - **Something made here outside the selection** is selected and sent
//!   when the server has nothing at its place (a new folder of the user's
//!   own); when it has (an unselected folder of the same name), it stays
//!   here unsynced, and the user is told how to select it. A file moved
//!   here into such a place is not deleted on the server either (its only
//!   live copy would be the unsynced one here): it comes back where it
//!   was, and the user is told how to move it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_proto::ContentHash;

use super::super::planner::{Op, Plan};
use super::super::tree::{Tree, is_below};
use super::{Report, SyncError, Syncer, remove_subtree};

/// The selection wanted, as `tessera selective` writes it (JSON: the
/// folders kept and, inside them, the ones left out, without the leading
/// `/`).
pub const SELECTION_FILE: &str = "selected";
/// The selection the engine last carried out.
const APPLIED_FILE: &str = "selected.applied";

/// Which server folders (or files) a device keeps: those in `only` (all
/// when it is empty), less those in `except` and what they hold. Whatever
/// else appears inside a kept folder later comes too.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    #[serde(default)]
    pub only: Vec<String>,
    #[serde(default)]
    pub except: Vec<String>,
}

/// The file as written: the selection, or a plain list (`only`), as
/// written before exceptions existed.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Stored {
    Selection(Selection),
    Only(Vec<String>),
}

impl Selection {
    /// Keeps everything.
    pub fn is_everything(&self) -> bool {
        self.only.is_empty() && self.except.is_empty()
    }

    /// NFC (the server's spelling), no slashes at the ends, sorted,
    /// nothing inside another entry of its list, and no exception outside
    /// what `only` keeps.
    pub fn normalized(&self) -> Selection {
        let only = normalize(&self.only);
        let kept = Selection {
            only: only.clone(),
            except: Vec::new(),
        };
        let except = normalize(&self.except)
            .into_iter()
            .filter(|e| kept.keeps(e))
            .collect();
        Selection { only, except }
    }

    /// Whether `path` is kept.
    pub fn keeps(&self, path: &str) -> bool {
        let in_only = self.only.is_empty()
            || self
                .only
                .iter()
                .any(|f| path == f || is_below(path, f) || is_below(f, path));
        in_only && !self.except.iter().any(|e| path == e || is_below(path, e))
    }

    /// Whether `path` is kept but holds server content this device lacks:
    /// a folder above the `only` folders, or one holding an exception.
    fn partial(&self, path: &str) -> bool {
        if !self.keeps(path) {
            return false;
        }
        let above_only = !self.only.is_empty()
            && !self.only.iter().any(|f| path == f || is_below(path, f))
            && self.only.iter().any(|f| is_below(f, path));
        above_only || self.except.iter().any(|e| is_below(e, path))
    }

    /// Keeps `path` too: exceptions inside it go, and it joins `only` when
    /// that does not keep it already. Refused (false) when an exception
    /// above it leaves it out: that one must go first.
    pub fn include(&mut self, path: &str) -> bool {
        if self.except.iter().any(|e| is_below(path, e)) {
            return false;
        }
        self.except.retain(|e| !(e == path || is_below(e, path)));
        if !self.keeps(path) {
            self.only.push(path.to_owned());
        }
        *self = self.normalized();
        true
    }

    /// Stops keeping `path`: out of `only` when it is one of them,
    /// otherwise an exception. False when nothing would be kept.
    pub fn exclude(&mut self, path: &str) -> bool {
        let mut next = self.clone();
        if next.only.iter().any(|f| f == path || is_below(f, path)) {
            next.only.retain(|f| !(f == path || is_below(f, path)));
            if next.only.is_empty() {
                return false;
            }
        } else if next.keeps(path) {
            next.except.push(path.to_owned());
        }
        *self = next.normalized();
        true
    }

    /// `from` moved to `to` on the server: entries follow. Whether any did.
    fn follow(&mut self, from: &str, to: &str) -> bool {
        let mut changed = false;
        for list in [&mut self.only, &mut self.except] {
            for f in list.iter_mut() {
                if f == from || is_below(f, from) {
                    *f = format!("{to}{}", &f[from.len()..]);
                    changed = true;
                }
            }
        }
        changed
    }
}

/// The selection in `file` under `state_dir`; everything when there is
/// none.
pub fn read(state_dir: &Path, file: &str) -> Result<Selection, SyncError> {
    match std::fs::read_to_string(state_dir.join(file)) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(Stored::Selection(s)) => Ok(s.normalized()),
            Ok(Stored::Only(only)) => Ok(Selection {
                only,
                except: Vec::new(),
            }
            .normalized()),
            Err(e) => Err(SyncError::Io(std::io::Error::other(format!(
                "{} is damaged ({e}): set the selection again with `tessera selective`",
                state_dir.join(file).display()
            )))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Selection::default()),
        Err(e) => Err(e.into()),
    }
}

/// Writes a selection, normalized, durably: write, fsync, rename.
pub fn write(state_dir: &Path, file: &str, selection: &Selection) -> Result<(), SyncError> {
    use std::io::Write;
    let path = state_dir.join(file);
    let tmp = state_dir.join(format!("{file}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(
        serde_json::to_string_pretty(&selection.normalized())
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Sorted, deduplicated, NFC, without slashes at the ends, and without
/// entries inside another.
fn normalize(folders: &[String]) -> Vec<String> {
    use unicode_normalization::UnicodeNormalization;
    let mut out: Vec<String> = folders
        .iter()
        .map(|f| f.trim_matches('/').nfc().collect::<String>())
        .filter(|f| !f.is_empty())
        .collect();
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|f| !all.iter().any(|g| is_below(f, g)));
    out
}

/// The topmost paths of `tree` that `selection` leaves out.
fn topmost_left_out<'a>(tree: &'a Tree, selection: &Selection) -> Vec<&'a String> {
    let mut out: Vec<&String> = Vec::new();
    for path in tree.keys() {
        if !selection.keeps(path) && !out.iter().any(|o| is_below(path, o)) {
            out.push(path);
        }
    }
    out
}

impl Syncer {
    fn state_dir(&self) -> std::path::PathBuf {
        self.root.join(super::STATE_DIR)
    }

    /// The selection this round plans with: the one applied, which a
    /// wanted one replaces at once when it only adds, and otherwise once
    /// the folder is in sync under it ([`Syncer::apply_selection`]), so
    /// edits made here in a folder being unselected go up first. Read once
    /// a round, so every step of the round sees the same one.
    pub(super) fn load_selection(&mut self) -> Result<(), SyncError> {
        let dir = self.state_dir();
        let want = read(&dir, SELECTION_FILE)?;
        let applied = match std::fs::metadata(dir.join(APPLIED_FILE)) {
            Ok(_) => read(&dir, APPLIED_FILE)?,
            // Nothing synced yet: the first selection takes effect at once.
            Err(_) if self.synced.is_empty() => want.clone(),
            // Synced before selections were kept: everything was.
            Err(_) => Selection::default(),
        };
        let only_adds = topmost_left_out(&self.synced, &want)
            .into_iter()
            .all(|p| !applied.keeps(p));
        if want != applied && only_adds && self.lock.is_some() {
            write(&dir, APPLIED_FILE, &want)?;
            self.selected = want;
        } else {
            self.selected = applied;
        }
        Ok(())
    }

    /// Carries out a wanted selection that takes something away, once the
    /// folder is in sync under the applied one; true if it did. Each file
    /// no longer kept is first forgotten as synced, durably, with the new
    /// selection recorded (a crash after that leaves a copy here, never a
    /// deletion); then a file still as synced moves to the local trash,
    /// and anything else there (changed since, never synced, ignored)
    /// stays in place, unsynced, and is reported. Only with the lock.
    pub(super) async fn apply_selection(&mut self, report: &mut Report) -> Result<bool, SyncError> {
        if self.lock.is_none() {
            return Ok(false);
        }
        let dir = self.state_dir();
        let want = read(&dir, SELECTION_FILE)?;
        if want == self.selected {
            return Ok(false);
        }
        let dropped: Vec<String> = topmost_left_out(&self.synced, &want)
            .into_iter()
            .filter(|p| self.selected.keeps(p))
            .cloned()
            .collect();
        let mut forgotten: Vec<(String, super::super::tree::Node)> = Vec::new();
        for top in &dropped {
            forgotten.extend(
                self.synced
                    .iter()
                    .filter(|(p, _)| *p == top || is_below(p, top))
                    .map(|(p, n)| (p.clone(), n.clone())),
            );
            remove_subtree(&mut self.synced, top);
        }
        self.save().await?;
        write(&dir, APPLIED_FILE, &want)?;
        self.selected = want;
        self.last_scan = None;
        // Deepest first: files, then the folders they leave empty.
        forgotten.sort_by_key(|(p, _)| std::cmp::Reverse(super::super::tree::depth(p)));
        let mut stayed = 0usize;
        for (path, node) in &forgotten {
            let abs = self.disk(path);
            if std::fs::symlink_metadata(&abs).is_err() {
                continue;
            }
            if node.kind == super::super::tree::NodeKind::Folder {
                if std::fs::remove_dir(&abs).is_err() {
                    stayed += 1;
                }
                continue;
            }
            let as_synced = self.unchanged(path, Some(node)).is_ok();
            if !as_synced || self.to_trash(path, &abs).await.is_err() {
                stayed += 1;
            }
        }
        for top in &dropped {
            tracing::info!(path = %top, "no longer selected: its synced files went to the local trash");
            let mut said = format!(
                "/{top} is no longer synced to this device: its files are on the server, and \
                 their copies here are in the local trash (`tessera trash --local {}`)",
                self.root.display()
            );
            if stayed > 0 {
                said.push_str(&format!(
                    "; {stayed} item(s) there that the server does not have as they are stay \
                     in place, unsynced"
                ));
            }
            report.warnings.push(said);
        }
        Ok(true)
    }

    /// Follows a move on the server of a selected folder, or of one above
    /// the selection, so the selection keeps naming what it named. Only
    /// with the lock; the next round reads it.
    pub(super) fn follow_move(&mut self, from: &str, to: &str) -> Result<(), SyncError> {
        if self.lock.is_none() || self.selected.is_everything() {
            return Ok(());
        }
        let dir = self.state_dir();
        for file in [SELECTION_FILE, APPLIED_FILE] {
            let mut sel = read(&dir, file)?;
            if sel.follow(from, to) {
                tracing::info!(%from, %to, "a selected folder moved on the server: the selection follows");
                write(&dir, file, &sel)?;
            }
        }
        // This round keeps both places, so the planner sees the move and
        // moves the copy here; the next round reads the new one alone.
        let mut moved = self.selected.clone();
        if moved.follow(from, to) {
            // What was left out stays out, at both places.
            self.selected.only.extend(moved.only);
            self.selected.except.extend(moved.except);
            self.selected = self.selected.normalized();
        }
        Ok(())
    }

    /// What was made here outside the selection: selected (and so sent)
    /// when the server has nothing there, otherwise reported in
    /// `warnings`. Only with the lock.
    pub(super) fn select_made_here(
        &mut self,
        local: &Tree,
        warnings: &mut Vec<String>,
    ) -> Result<(), SyncError> {
        if self.selected.is_everything() {
            return Ok(());
        }
        let mut added = Vec::new();
        for path in topmost_left_out(local, &self.selected) {
            if self.remote_tree.contains_key(path) || self.synced.contains_key(path) {
                warnings.push(format!(
                    "/{path} here is not synced: the server has a folder or file there that is \
                     not selected for this device (`tessera selective {} --add /{path}` syncs it)",
                    self.root.display()
                ));
            } else {
                added.push(path.clone());
            }
        }
        if added.is_empty() || self.lock.is_none() {
            return Ok(());
        }
        let dir = self.state_dir();
        for file in [SELECTION_FILE, APPLIED_FILE] {
            let mut sel = read(&dir, file)?;
            for path in &added {
                sel.include(path);
            }
            write(&dir, file, &sel)?;
        }
        for path in &added {
            tracing::info!(%path, "made here: added to the folders synced to this device");
            self.selected.include(path);
        }
        Ok(())
    }

    /// The three trees as the selection shows them; none when it keeps
    /// everything.
    pub(super) fn select_trees(&self, local: &Tree) -> Option<(Tree, Tree, Tree)> {
        if self.selected.is_everything() {
            return None;
        }
        let selection = &self.selected;
        let pick = |t: &Tree| -> Tree {
            t.iter()
                .filter(|(p, _)| selection.keeps(p))
                .map(|(p, n)| (p.clone(), n.clone()))
                .collect()
        };
        Some((pick(local), pick(&self.remote_tree), pick(&self.synced)))
    }

    /// Takes out of `plan` the deletions and moves of folders above the
    /// selection (they hold server content this device lacks) and forgets
    /// them as synced, so they come back; says why in `stuck`.
    pub(super) fn keep_folders_above_selection(
        &mut self,
        plan: &mut Plan,
        stuck: &mut Vec<String>,
    ) {
        let selection = self.selected.clone();
        if selection.is_everything() {
            return;
        }
        let held = |op: &Op| match op {
            Op::DeleteRemote { path } | Op::MoveRemote { from: path, .. } => {
                selection.partial(path).then(|| path.clone())
            }
            _ => None,
        };
        let kept: Vec<String> = plan.ops().filter_map(held).collect();
        if kept.is_empty() {
            return;
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
    }
}

/// How long a file new outside the selection may be where a file was
/// moved: a cut and paste (a copy, then a deletion) may take a few rounds.
const MOVE_WINDOW: Duration = Duration::from_secs(10 * 60);

impl Syncer {
    /// Takes out of `plan` the deletions of what was moved here into a
    /// place outside the selection where the server has something (an
    /// unselected folder of the same name): carried out, such a move would
    /// become a deletion on the server, leaving the only live copy here,
    /// unsynced. A deletion holding a moved file is kept back whole (a
    /// folder moved out is all there, empty files and edits included): it
    /// is forgotten as synced so it comes back here, and `warnings` says
    /// why.
    ///
    /// A move is known by its content: a file outside the selection that
    /// appeared recently (not seen by an earlier run, nor more than
    /// [`MOVE_WINDOW`] ago), with the content of a synced file (empty files
    /// say nothing). An older copy is no reason to keep anything, and a
    /// copy that kept a deletion back once does not again.
    pub(super) fn keep_moves_out_of_selection(
        &mut self,
        plan: &mut Plan,
        warnings: &mut Vec<String>,
    ) {
        if self.selected.is_everything() {
            return;
        }
        let Some(scan) = &self.last_scan else {
            return;
        };
        let selection = &self.selected;
        let mut seen: HashMap<(String, ContentHash), Option<Instant>> = scan
            .tree
            .iter()
            .filter(|(p, n)| n.size != Some(0) && !selection.keeps(p))
            .filter_map(|(p, n)| Some((p.clone(), n.hash?)))
            .map(|key| {
                let first = self
                    .outside_seen
                    .get(&key)
                    .copied()
                    .unwrap_or(Some(Instant::now()));
                (key, first)
            })
            .collect();
        let appeared: HashMap<ContentHash, &String> = seen
            .iter()
            .filter(|(_, first)| first.is_some_and(|t| t.elapsed() < MOVE_WINDOW))
            .map(|((p, h), _)| (*h, p))
            .collect();
        // The synced files whose content appeared outside, and where.
        let moved: BTreeMap<String, (String, ContentHash)> = self
            .synced
            .iter()
            .filter_map(|(p, n)| {
                let h = n.hash?;
                Some((p.clone(), ((*appeared.get(&h)?).clone(), h)))
            })
            .collect();
        let holds = |path: &str| {
            moved
                .range::<str, _>((Bound::Included(path), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(path))
                .any(|(p, _)| p == path || is_below(p, path))
        };
        let held: Vec<String> = plan
            .ops()
            .filter_map(|op| match op {
                Op::DeleteRemote { path } if holds(path) => Some(path.clone()),
                _ => None,
            })
            .collect();
        if !held.is_empty() {
            let kept: HashSet<&String> = held.iter().collect();
            plan.retain(|op| !matches!(op, Op::DeleteRemote { path } if kept.contains(path)));
        }
        for path in &held {
            for (file, (to, hash)) in moved
                .range::<str, _>((Bound::Included(path.as_str()), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(path.as_str()))
                .filter(|(p, _)| *p == path || is_below(p, path))
            {
                // Used once: a later deletion of what came back goes.
                seen.insert((to.clone(), *hash), None);
                // The folder left out that holds it, to name in the hint.
                let top = to
                    .match_indices('/')
                    .map(|(i, _)| &to[..i])
                    .find(|p| !self.selected.keeps(p))
                    .unwrap_or(to);
                warnings.push(format!(
                    "/{file} was moved here to /{to}, where the server has a folder that is not \
                     synced to this device; it was not deleted on the server and comes back here. \
                     Move it on the server, or select the folder first (`tessera selective {} --add /{top}`)",
                    self.root.display()
                ));
            }
            remove_subtree(&mut self.synced, path);
        }
        self.outside_seen = seen;
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
        let sel = Selection {
            only: s(&["Work", "Photos/2026"]),
            except: s(&["Work/old"]),
        };
        for kept in [
            "Work",
            "Work/a.txt",
            "Work/new/x",
            "Photos",
            "Photos/2026/x.jpg",
        ] {
            assert!(sel.keeps(kept), "{kept}");
        }
        for out in [
            "Photos/2025",
            "Music",
            "Workshop",
            "Photos/2026b",
            "Work/old",
            "Work/old/y",
        ] {
            assert!(!sel.keeps(out), "{out}");
        }
        assert!(
            Selection::default().keeps("anything"),
            "no selection keeps everything"
        );
        assert!(sel.partial("Photos"), "above the selection");
        assert!(sel.partial("Work"), "holds an exception");
        assert!(!sel.partial("Photos/2026"));
        assert!(!sel.partial("Work/new"));
    }

    #[test]
    fn removing_inside_a_kept_folder_leaves_the_rest_of_it_kept_as_it_grows() {
        let mut sel = Selection::default();
        assert!(sel.exclude("Photos/2025"));
        assert!(sel.keeps("Photos/2026") && sel.keeps("Anything/new"));
        assert!(!sel.keeps("Photos/2025/a.jpg"));
        // Back in: the exception goes.
        assert!(sel.include("Photos/2025"));
        assert!(sel.is_everything());
        // The last kept folder cannot go.
        let mut only = Selection {
            only: s(&["Work"]),
            except: Vec::new(),
        };
        assert!(!only.exclude("Work"));
        // Inside an exception, the exception must go first.
        let mut sel = Selection {
            only: Vec::new(),
            except: s(&["Photos"]),
        };
        assert!(!sel.include("Photos/2026"));
    }

    #[test]
    fn selections_are_normalized_and_follow_moves() {
        let mut sel = Selection {
            only: s(&["/Work/", "Work/Sub", "/Photos/2026", "", "/Work"]),
            except: s(&["Work/a", "Music/b", "Work/a/c"]),
        }
        .normalized();
        assert_eq!(sel.only, s(&["Photos/2026", "Work"]));
        assert_eq!(
            sel.except,
            s(&["Work/a"]),
            "exceptions outside what is kept go"
        );
        assert!(sel.follow("Work", "Job"));
        assert_eq!(sel.normalized().only, s(&["Job", "Photos/2026"]));
        assert_eq!(sel.except, s(&["Job/a"]));
        assert!(!sel.follow("Music", "Audio"));
    }
}
