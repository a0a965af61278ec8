//! Folders on file systems that ignore case (macOS and Windows by default).
//!
//! The server keeps names exactly, so it may hold `xt_DSCP.h` and
//! `xt_dscp.h` side by side; such a folder can hold only one of them. Of
//! each group of server names that the folder sees as one, one takes part
//! in sync and the others are left on the server, listed as case clashes
//! (`tessera conflicts`). Nothing is downloaded over a local file of
//! another case, and no local file is renamed or removed to make room.
//!
//! Of the server names that such a folder sees as one, one takes part: the
//! one on disk under that spelling, else the one synced, else the one a
//! server-side case-only rename came from, else the first when nothing local
//! holds the name. The others, with their contents, are left out of the plan
//! and of the synced tree, and listed (`.tessera/case-clashes.json`,
//! `tessera conflicts`) with the `tessera mv` that resolves them. A local name
//! of another case syncs under its own name; a case-only rename on disk goes
//! through a temporary name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_proto::path::fold_name;

use super::scan::STATE_DIR;
use super::tree::{Tree, depth};

/// Where the clashes of the last round are kept for `tessera conflicts`.
const CLASHES_FILE: &str = "case-clashes.json";

/// A server path this folder cannot hold beside another of the same name
/// ignoring case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clash {
    /// The server's path left out here (relative, NFC).
    pub left_out: String,
    /// The name that holds its place in this folder.
    pub holder: String,
}

impl Clash {
    pub fn describe(&self) -> String {
        format!(
            "case clash: /{} on the server is not synced here, because this folder ignores \
             case and {} holds that name; rename one of them on the server \
             (`tessera mv /{} NEW-PATH`, or in the web UI) and both will sync",
            self.left_out, self.holder, self.left_out
        )
    }
}

/// True if the folder at `root` ignores case: its state folder answers to
/// another spelling of its name as the same file.
pub fn ignores_case(root: &Path) -> bool {
    same_entry(&root.join(STATE_DIR), &root.join(STATE_DIR.to_uppercase()))
}

/// True if both paths exist and name the same file (one file under two
/// spellings, in a folder that ignores case).
pub fn same_entry(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => same_file(&a, &b),
        _ => false,
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// A path as a folder that ignores case sees it.
fn fold_path(p: &str) -> String {
    p.split('/').map(fold_name).collect::<Vec<_>>().join("/")
}

/// The server paths (with everything below them) that cannot take part in
/// a folder that ignores case. Of each group of remote paths that fold to
/// one: the one present on disk under that exact spelling, else the one
/// last synced, else the one the local name was synced as (renamed on the
/// server), else (when no local file holds the name) the first by name,
/// is kept. A local file of another spelling keeps its place: it is
/// never downloaded over, and it syncs under its own name.
pub fn clashes(remote: &Tree, local: &Tree, synced: &Tree) -> Vec<Clash> {
    let mut local_by_fold: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for p in local.keys() {
        local_by_fold.entry(fold_path(p)).or_default().push(p);
    }
    // Shallow groups first, so a folder left out takes its contents along.
    let mut groups: BTreeMap<(usize, String), Vec<&str>> = BTreeMap::new();
    for p in remote.keys() {
        groups.entry((depth(p), fold_path(p))).or_default().push(p);
    }
    let mut left_out: BTreeSet<String> = BTreeSet::new();
    let mut found = Vec::new();
    let inside_left_out = |p: &str, left_out: &BTreeSet<String>| {
        let mut at = p;
        while let Some((parent, _)) = at.rsplit_once('/') {
            if left_out.contains(parent) {
                return true;
            }
            at = parent;
        }
        false
    };
    for ((_, fold), paths) in groups {
        let paths: Vec<&str> = paths
            .into_iter()
            .filter(|p| !inside_left_out(p, &left_out))
            .collect();
        let here = local_by_fold.get(&fold).map(Vec::as_slice).unwrap_or(&[]);
        // The node the local name was last synced as, when the server
        // renamed it changing only case.
        let renamed = |p: &str| {
            let id = remote.get(p).and_then(|n| n.id.as_ref());
            id.is_some()
                && here
                    .iter()
                    .any(|h| synced.get(*h).and_then(|n| n.id.as_ref()) == id)
        };
        let keep = paths
            .iter()
            .find(|p| here.contains(p))
            .or_else(|| paths.iter().find(|p| synced.contains_key(**p)))
            .or_else(|| paths.iter().find(|p| renamed(p)))
            .or_else(|| if here.is_empty() { paths.first() } else { None })
            .copied();
        for p in paths {
            if Some(p) == keep {
                continue;
            }
            let holder = keep.or_else(|| here.first().copied()).unwrap_or(p);
            left_out.insert(p.to_owned());
            found.push(Clash {
                left_out: p.to_owned(),
                holder: holder.to_owned(),
            });
        }
    }
    found
}

/// Keeps the clashes where `tessera conflicts` (another process) reads them.
pub fn save(root: &Path, clashes: &[Clash]) -> std::io::Result<()> {
    let path = root.join(STATE_DIR).join(CLASHES_FILE);
    if clashes.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(clashes)?)?;
    std::fs::rename(&tmp, &path)
}

/// The clashes the last sync of `root` found (none if it found none).
pub fn load(root: &Path) -> std::io::Result<Vec<Clash>> {
    match std::fs::read(root.join(STATE_DIR).join(CLASHES_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::tree::Node;
    use tessera_proto::ContentHash;

    fn tree(paths: &[&str]) -> Tree {
        let h = ContentHash::of(b"x");
        paths
            .iter()
            .map(|p| {
                let node = if p.ends_with('/') {
                    Node::folder()
                } else {
                    Node::file(h)
                };
                (p.trim_end_matches('/').to_owned(), node)
            })
            .collect()
    }

    fn left_out(c: &[Clash]) -> Vec<(&str, &str)> {
        c.iter()
            .map(|c| (c.left_out.as_str(), c.holder.as_str()))
            .collect()
    }

    #[test]
    fn of_two_server_names_the_one_on_disk_is_kept() {
        let remote = tree(&["xt_DSCP.h", "xt_dscp.h", "other.h"]);
        let none = Tree::new();
        // Nothing here yet: the first by name comes down, the other waits.
        assert_eq!(
            left_out(&clashes(&remote, &none, &none)),
            [("xt_dscp.h", "xt_DSCP.h")]
        );
        // The one on disk keeps its place, whichever it is.
        let local = tree(&["xt_dscp.h"]);
        assert_eq!(
            left_out(&clashes(&remote, &local, &none)),
            [("xt_DSCP.h", "xt_dscp.h")]
        );
        // The one synced before, when neither is on disk (deleted here).
        let synced = tree(&["xt_dscp.h"]);
        assert_eq!(
            left_out(&clashes(&remote, &none, &synced)),
            [("xt_DSCP.h", "xt_dscp.h")]
        );
    }

    #[test]
    fn a_local_file_of_another_case_is_never_downloaded_over() {
        let remote = tree(&["index.html"]);
        let local = tree(&["Index.html"]);
        assert_eq!(
            left_out(&clashes(&remote, &local, &Tree::new())),
            [("index.html", "Index.html")]
        );
        // A case-only rename made here is a move, not a clash.
        let synced = tree(&["index.html"]);
        assert!(clashes(&remote, &local, &synced).is_empty());
    }

    #[test]
    fn a_case_only_rename_on_the_server_is_a_move() {
        let h = ContentHash::of(b"x");
        let remote: Tree = [
            ("DOCS".to_owned(), Node::folder().with_id("d")),
            ("DOCS/INDEX.html".to_owned(), Node::file(h).with_id("i")),
        ]
        .into_iter()
        .collect();
        let synced: Tree = [
            ("Docs".to_owned(), Node::folder().with_id("d")),
            ("Docs/Index.html".to_owned(), Node::file(h).with_id("i")),
        ]
        .into_iter()
        .collect();
        let local = tree(&["Docs/", "Docs/Index.html"]);
        assert!(clashes(&remote, &local, &synced).is_empty());
    }

    #[test]
    fn a_folder_left_out_takes_its_contents() {
        let remote = tree(&["Docs/", "Docs/a.txt", "docs/", "docs/a.txt", "docs/b.txt"]);
        let local = tree(&["Docs/", "Docs/a.txt"]);
        assert_eq!(
            left_out(&clashes(&remote, &local, &Tree::new())),
            [("docs", "Docs")]
        );
    }

    #[test]
    fn names_that_differ_in_more_than_case_do_not_clash() {
        let remote = tree(&["a.txt", "b.txt", "A/", "A/x", "B/", "B/x"]);
        assert!(clashes(&remote, &Tree::new(), &Tree::new()).is_empty());
    }

    #[test]
    fn a_case_sensitive_folder_is_seen_as_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(STATE_DIR)).unwrap();
        // This test runs on Linux file systems, which keep case.
        assert!(!ignores_case(dir.path()));
    }
}
