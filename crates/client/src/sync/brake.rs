//! The mass-delete brake: a pure rule beside the planner. A plan that
//! would delete a large part of the folder on the server waits for the
//! user, because the usual cause is not a person deleting files but a disk
//! that was unmounted or a folder wiped by mistake, and the server's copy
//! is then the only one left.
//!
//! Only deletions this device's own scan found are braked
//! (`Op::DeleteRemote`). Deletions that come from the server were made by a
//! person (web UI, CLI) or already confirmed on the device that found them;
//! they are applied here into `.tessera/trash/`.
//!
//! A running sync takes a confirmation from another process as the file
//! `.tessera/confirm-deletes` (written by `tessera sync DIR
//! --allow-mass-delete`), which it honours for one round and then removes.

use super::planner::Op;
use super::tree::{NodeKind, Tree, subtree};

/// Deleting more files than this at once always waits, whatever the share
/// of the folder.
pub const MAX_FILES: usize = 1000;

/// Deleting this many files or fewer never waits: a person tidying up.
pub const FEW_FILES: usize = 10;

/// What the brake holds: how many synced files the plan would delete on
/// the server, out of how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paused {
    pub deleting: usize,
    pub files: usize,
}

/// Whether the deletions in `ops` must wait: more than [`MAX_FILES`], or
/// more than [`FEW_FILES`] and more than half of the synced files. A
/// deleted folder is one operation; it counts the files it held in
/// `synced`.
pub fn check(ops: &[Op], synced: &Tree) -> Option<Paused> {
    let files = synced.values().filter(|n| n.kind == NodeKind::File).count();
    let deleting: usize = ops
        .iter()
        .filter_map(|o| match o {
            Op::DeleteRemote { path } => Some(path),
            _ => None,
        })
        .map(|p| {
            subtree(synced, p)
                .filter(|(_, n)| n.kind == NodeKind::File)
                .count()
        })
        .sum();
    let too_many = deleting > MAX_FILES || (deleting > FEW_FILES && deleting * 2 > files);
    too_many.then_some(Paused { deleting, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::tree::Node;
    use tessera_proto::ContentHash;

    fn tree(files: &[&str], folders: &[&str]) -> Tree {
        let mut t = Tree::new();
        for f in folders {
            t.insert((*f).to_owned(), Node::folder());
        }
        for f in files {
            t.insert((*f).to_owned(), Node::file(ContentHash::of(f.as_bytes())));
        }
        t
    }

    fn delete(paths: &[String]) -> Vec<Op> {
        paths
            .iter()
            .map(|p| Op::DeleteRemote { path: p.clone() })
            .collect()
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}.txt")).collect()
    }

    #[test]
    fn the_rule_in_a_table() {
        // (synced files, files deleted one by one, paused?)
        let cases = [
            (20, 10, false), // a handful: never
            (20, 11, true),  // more than a handful and more than half
            (40, 20, false), // exactly half is not more than half
            (40, 21, true),
            (3000, 1000, false), // a third, and not over the cap
            (3000, 1001, true),  // over the cap, whatever the share
            (0, 0, false),
        ];
        for (total, deleted, paused) in cases {
            let all = names("f", total);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let synced = tree(&refs, &[]);
            let got = check(&delete(&all[..deleted]), &synced);
            assert_eq!(got.is_some(), paused, "{deleted} of {total}");
            if let Some(p) = got {
                assert_eq!(
                    p,
                    Paused {
                        deleting: deleted,
                        files: total
                    }
                );
            }
        }
    }

    #[test]
    fn a_deleted_folder_counts_the_files_it_held() {
        let inside: Vec<String> = names("photos/p", 30);
        let mut files: Vec<&str> = inside.iter().map(String::as_str).collect();
        files.push("notes.txt");
        files.push("photos2/kept.txt");
        let synced = tree(&files, &["photos", "photos2"]);
        let got = check(&delete(&["photos".to_owned()]), &synced);
        assert_eq!(
            got,
            Some(Paused {
                deleting: 30,
                files: 32
            })
        );
        // A sibling whose name starts the same is not inside it.
        assert_eq!(check(&delete(&["photos2".to_owned()]), &synced), None);
    }

    #[test]
    fn deletions_from_the_server_are_never_braked() {
        let all = names("f", 20);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let synced = tree(&refs, &[]);
        let ops: Vec<Op> = all
            .iter()
            .map(|p| Op::DeleteLocal {
                path: p.clone(),
                expected: Node::file(ContentHash::of(p.as_bytes())),
            })
            .collect();
        assert_eq!(check(&ops, &synced), None);
    }
}
