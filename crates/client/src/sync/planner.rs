//! The planner: `(local, remote, synced)` → operations.
//!
//! Rules, per path, with L, R, S its node in each tree ("changed" means
//! different content from S):
//! - neither changed: nothing;
//! - one side changed: carry the change to the other side;
//! - both changed to the same content: record it as synced;
//! - both changed differently: a conflict; the local bytes are kept as a
//!   conflicted copy, never dropped;
//! - a delete never wins over an edit: an edited file comes back.
//!
//! A folder is deleted on the other side only if nothing below it changed
//! there. A local delete plus a local create of the same content is a move,
//! and so is a remote node whose id shows up at a new path: moves travel as
//! moves, never as delete + upload.
//!
//! Operations come out as a [`Plan`]: steps in the order they must run,
//! one per [`Phase`]: folder creations (shallow first), then moves (into
//! folders that exist by then), then conflicted copies (so the transfers
//! see the disk as it will stay), then transfers, then records, then
//! deletions (deep first). The executor runs the steps as they come and
//! may run the operations within one step in any order (transfers run
//! side by side). A folder deleted on the server takes its contents with
//! it, so one delete stands for the whole subtree and it stays restorable
//! as one item from the trash.

use std::collections::{BTreeSet, HashMap};

use super::tree::{Node, NodeKind, Tree, depth, is_below, subtree};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Rename/move on the server, as the user did locally.
    MoveRemote {
        from: String,
        to: String,
    },
    /// Rename/move on disk, as happened on the server.
    MoveLocal {
        from: String,
        to: String,
    },
    CreateRemoteFolder {
        path: String,
    },
    CreateLocalFolder {
        path: String,
    },
    /// Send the local file; `base_rev` 0 means "must not exist".
    Upload {
        path: String,
        base_rev: i64,
    },
    /// Fetch the remote file; the executor first checks the disk still
    /// holds `local` (None: nothing there).
    Download {
        path: String,
        rev: i64,
        local: Option<Node>,
    },
    /// Both sides changed the file: keep local as a conflicted copy, upload
    /// it, then take the remote file at `path`.
    Conflict {
        path: String,
        remote_rev: i64,
    },
    /// Move a local file or folder to the local trash, if it still matches.
    DeleteLocal {
        path: String,
        expected: Node,
    },
    DeleteRemote {
        path: String,
    },
    /// Both sides agree now; record `node` as synced.
    MarkSynced {
        path: String,
        node: Node,
    },
    /// Gone on both sides; drop it from the synced tree.
    Forget {
        path: String,
    },
}

impl Op {
    /// The paths the operation reads or writes on either side.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Op::MoveRemote { from, to } | Op::MoveLocal { from, to } => vec![from, to],
            Op::CreateRemoteFolder { path }
            | Op::CreateLocalFolder { path }
            | Op::Upload { path, .. }
            | Op::Download { path, .. }
            | Op::Conflict { path, .. }
            | Op::DeleteLocal { path, .. }
            | Op::DeleteRemote { path }
            | Op::MarkSynced { path, .. }
            | Op::Forget { path } => vec![path],
        }
    }
}

/// The steps of a round, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Folder creations, shallow first, so later steps find their parents.
    Folders,
    /// Moves on either side, into folders that exist by then.
    Moves,
    /// Local bytes set aside as conflicted copies.
    Conflicts,
    /// Uploads and downloads; independent of each other.
    Transfers,
    /// Agreements recorded, nothing moved.
    Records,
    /// Deletions, deepest first, so a folder is empty when its turn comes.
    Deletes,
}

/// The operations of one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub phase: Phase,
    pub ops: Vec<Op>,
}

/// What to do, as steps in execution order (no step is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    fn from_ops(mut ops: Vec<Op>) -> Self {
        ops.sort_by_key(Op::rank);
        let mut steps: Vec<Step> = Vec::new();
        for op in ops {
            let phase = op.phase();
            match steps.last_mut() {
                Some(step) if step.phase == phase => step.ops.push(op),
                _ => steps.push(Step {
                    phase,
                    ops: vec![op],
                }),
            }
        }
        Self { steps }
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Every operation, in execution order.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.steps.iter().flat_map(|s| &s.ops)
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.steps.into_iter().flat_map(|s| s.ops).collect()
    }

    /// The operations of `phase` (none if the plan has no such step).
    pub fn phase(&self, phase: Phase) -> &[Op] {
        self.steps
            .iter()
            .find(|s| s.phase == phase)
            .map_or(&[], |s| s.ops.as_slice())
    }

    /// Drops the operations `keep` refuses, and any step left empty.
    pub fn retain(&mut self, keep: impl Fn(&Op) -> bool) {
        for step in &mut self.steps {
            step.ops.retain(&keep);
        }
        self.steps.retain(|s| !s.ops.is_empty());
    }
}

impl Op {
    pub fn phase(&self) -> Phase {
        use Op::*;
        match self {
            CreateRemoteFolder { .. } | CreateLocalFolder { .. } => Phase::Folders,
            MoveRemote { .. } | MoveLocal { .. } => Phase::Moves,
            Conflict { .. } => Phase::Conflicts,
            Upload { .. } | Download { .. } => Phase::Transfers,
            MarkSynced { .. } | Forget { .. } => Phase::Records,
            DeleteLocal { .. } | DeleteRemote { .. } => Phase::Deletes,
        }
    }

    /// Where the operation lands: its path, or a move's target.
    fn path(&self) -> &str {
        use Op::*;
        match self {
            MoveRemote { to, .. } | MoveLocal { to, .. } => to,
            CreateRemoteFolder { path }
            | CreateLocalFolder { path }
            | Upload { path, .. }
            | Download { path, .. }
            | Conflict { path, .. }
            | DeleteLocal { path, .. }
            | DeleteRemote { path }
            | MarkSynced { path, .. }
            | Forget { path } => path,
        }
    }

    fn rank(&self) -> (Phase, usize, String) {
        let phase = self.phase();
        let d = depth(self.path());
        // Deletions run deepest first; everything else shallow first.
        let d = if phase == Phase::Deletes {
            usize::MAX - d
        } else {
            d
        };
        (phase, d, self.path().to_owned())
    }
}

fn changed(a: Option<&Node>, base: Option<&Node>) -> bool {
    match (a, base) {
        (None, None) => false,
        (Some(a), Some(b)) => !a.same_content(b),
        _ => true,
    }
}

/// True if anything at or below `dir` differs between `side` and `synced`.
fn subtree_changed(dir: &str, side: &Tree, synced: &Tree) -> bool {
    let below =
        |t: &Tree| -> BTreeSet<String> { subtree(t, dir).map(|(p, _)| p.clone()).collect() };
    let paths: BTreeSet<String> = below(side).union(&below(synced)).cloned().collect();
    paths
        .iter()
        .filter(|p| p.as_str() != dir)
        .any(|p| changed(side.get(p), synced.get(p)))
}

/// True if something below `dir` on `side` is new or changed since it
/// was synced (not merely gone).
fn subtree_added(dir: &str, side: &Tree, synced: &Tree) -> bool {
    subtree(side, dir)
        .filter(|(p, _)| p.as_str() != dir)
        .any(|(p, n)| changed(Some(n), synced.get(p)))
}

/// The three trees the planner compares.
#[derive(Clone, Copy)]
struct Trees<'a> {
    local: &'a Tree,
    remote: &'a Tree,
    synced: &'a Tree,
}

pub fn plan(local: &Tree, remote: &Tree, synced: &Tree) -> Plan {
    let t = Trees {
        local,
        remote,
        synced,
    };
    let mut ops = Vec::new();
    let mut handled: BTreeSet<String> = BTreeSet::new();
    remote_moves(t, &mut ops, &mut handled);
    local_folder_moves(t, &mut ops, &mut handled);
    local_file_moves(t, &mut ops, &mut handled);
    let paths: BTreeSet<&String> = local
        .keys()
        .chain(remote.keys())
        .chain(synced.keys())
        .collect();
    for path in paths {
        if !handled.contains(path) {
            ops.extend(decide(path, t));
        }
    }
    collapse_folder_deletes(t, &mut ops);
    defer_below_kind_changes(t, &mut ops);
    Plan::from_ops(ops)
}

/// Where a file becomes a folder or a folder a file, this round only
/// removes the old one; what else lies below the path waits for the next
/// round, when the path is free on both sides.
fn defer_below_kind_changes(t: Trees, ops: &mut Vec<Op>) {
    let kind = |tree: &Tree, p: &str| tree.get(p).map(|n| n.kind);
    let changing: Vec<String> = ops
        .iter()
        .filter_map(|o| match o {
            Op::DeleteRemote { path } | Op::DeleteLocal { path, .. } => {
                let (l, r) = (kind(t.local, path), kind(t.remote, path));
                (l.is_some() && r.is_some() && l != r).then(|| path.clone())
            }
            _ => None,
        })
        .collect();
    if changing.is_empty() {
        return;
    }
    // Removals below go with the old one (deepest first); the rest waits.
    ops.retain(|o| {
        matches!(
            o,
            Op::DeleteLocal { .. } | Op::DeleteRemote { .. } | Op::Forget { .. }
        ) || !o
            .paths()
            .iter()
            .any(|p| changing.iter().any(|c| is_below(p, c)))
    });
}

/// Remote moves: a synced id that now lives at another remote path, with
/// the old path untouched locally.
fn remote_moves(t: Trees, ops: &mut Vec<Op>, handled: &mut BTreeSet<String>) {
    let Trees {
        local,
        remote,
        synced,
    } = t;
    let remote_by_id: HashMap<&str, &str> = remote
        .iter()
        .filter_map(|(p, n)| n.id.as_deref().map(|id| (id, p.as_str())))
        .collect();
    for (old, s) in synced {
        let Some(id) = s.id.as_deref() else { continue };
        let Some(new) = remote_by_id.get(id).copied() else {
            continue;
        };
        if new == old || remote.contains_key(old) || local.contains_key(new) {
            continue;
        }
        if local.get(old).is_some_and(|l| l.same_content(s)) && !handled.contains(old) {
            ops.push(Op::MoveLocal {
                from: old.clone(),
                to: new.to_owned(),
            });
            handled.insert(old.clone());
            handled.insert(new.to_owned());
            if s.kind == NodeKind::Folder {
                mark_subtree(old, synced, handled);
                mark_subtree(new, remote, handled);
            }
        }
    }
}

/// Local folder moves: a synced folder gone from here, and a new folder
/// here holding exactly what it held, while nothing changed inside it on
/// the server. One move carries the whole subtree.
fn local_folder_moves(t: Trees, ops: &mut Vec<Op>, handled: &mut BTreeSet<String>) {
    let Trees {
        local,
        remote,
        synced,
    } = t;
    let new_folders: Vec<&String> = local
        .iter()
        .filter(|(p, n)| {
            n.kind == NodeKind::Folder && !synced.contains_key(*p) && !remote.contains_key(*p)
        })
        .map(|(p, _)| p)
        .collect();
    for (old, s) in synced {
        if s.kind != NodeKind::Folder
            || local.contains_key(old)
            || handled.contains(old)
            || !remote.get(old).is_some_and(|r| r.kind == NodeKind::Folder)
            || subtree_changed(old, remote, synced)
        {
            continue;
        }
        let before = contents(old, synced);
        if let Some(new) = new_folders.iter().find(|n| {
            !handled.contains(n.as_str()) && !is_below(n, old) && contents(n, local) == before
        }) {
            ops.push(Op::MoveRemote {
                from: old.clone(),
                to: (*new).clone(),
            });
            mark_subtree(old, synced, handled);
            mark_subtree(old, remote, handled);
            mark_subtree(new, local, handled);
        }
    }
}

/// Local moves of files: deleted here, created there with the same bytes,
/// while the server still has the old path as synced.
fn local_file_moves(t: Trees, ops: &mut Vec<Op>, handled: &mut BTreeSet<String>) {
    let Trees {
        local,
        remote,
        synced,
    } = t;
    let mut created_by_hash: HashMap<_, Vec<&String>> = HashMap::new();
    for (p, l) in local {
        if l.kind == NodeKind::File && !synced.contains_key(p) && !remote.contains_key(p) {
            created_by_hash.entry(l.hash).or_default().push(p);
        }
    }
    for (old, s) in synced {
        if s.kind != NodeKind::File || local.contains_key(old) || handled.contains(old) {
            continue;
        }
        if !remote.get(old).is_some_and(|r| r.same_content(s)) {
            continue;
        }
        if let Some(candidates) = created_by_hash.get_mut(&s.hash)
            && let Some(new) = candidates.pop()
        {
            ops.push(Op::MoveRemote {
                from: old.clone(),
                to: new.clone(),
            });
            handled.insert(old.clone());
            handled.insert(new.clone());
        }
    }
}

fn rev_of(n: Option<&Node>) -> i64 {
    n.and_then(|n| n.rev).unwrap_or(0)
}

/// What to do at one path no move took care of.
fn decide(path: &str, t: Trees) -> Option<Op> {
    let (l, r, s) = (t.local.get(path), t.remote.get(path), t.synced.get(path));
    match (changed(l, s), changed(r, s)) {
        (false, false) => None,
        (true, false) => carry_local(path, t),
        (false, true) => carry_remote(path, t),
        (true, true) => Some(both_changed(path, l, r)),
    }
}

/// Only the local side changed at `path`.
fn carry_local(path: &str, t: Trees) -> Option<Op> {
    let (l, r, s) = (t.local.get(path), t.remote.get(path), t.synced.get(path));
    let p = path.to_owned();
    Some(match l {
        None => {
            let r = r.or(s);
            let folder = r.is_some_and(|n| n.kind == NodeKind::Folder);
            if r.is_none() || (folder && subtree_changed(path, t.remote, t.synced)) {
                return None;
            }
            Op::DeleteRemote { path: p }
        }
        Some(l) if l.kind == NodeKind::Folder => match r {
            Some(r) if r.kind == NodeKind::Folder => Op::MarkSynced {
                path: p,
                node: r.clone(),
            },
            // A file replaced here by a folder, the server's file being
            // the one last synced: it goes (into the server's trash) and
            // the folder follows next round.
            Some(_) => Op::DeleteRemote { path: p },
            None => Op::CreateRemoteFolder { path: p },
        },
        Some(_) => match r {
            // A folder replaced here by a file: the server's folder goes,
            // unless something inside it changed there meanwhile.
            Some(r) if r.kind == NodeKind::Folder => {
                if subtree_changed(path, t.remote, t.synced) {
                    Op::Conflict {
                        path: p,
                        remote_rev: 0,
                    }
                } else {
                    Op::DeleteRemote { path: p }
                }
            }
            _ => Op::Upload {
                path: p,
                base_rev: rev_of(r),
            },
        },
    })
}

/// Only the remote side changed at `path`.
fn carry_remote(path: &str, t: Trees) -> Option<Op> {
    let (l, r) = (t.local.get(path), t.remote.get(path));
    let p = path.to_owned();
    Some(match r {
        None => match l {
            Some(l) => {
                let folder = l.kind == NodeKind::Folder;
                // Gone from the server (or moved there, while the same
                // move here left something new at the old name): what was
                // added here beats the delete, so the folder is made again.
                if folder && subtree_added(path, t.local, t.synced) {
                    return Some(Op::CreateRemoteFolder { path: p });
                }
                if folder && subtree_changed(path, t.local, t.synced) {
                    return None;
                }
                Op::DeleteLocal {
                    path: p,
                    expected: l.clone(),
                }
            }
            None => Op::Forget { path: p },
        },
        Some(r) if r.kind == NodeKind::Folder => match l {
            Some(l) if l.kind == NodeKind::Folder => Op::MarkSynced {
                path: p,
                node: r.clone(),
            },
            // The server replaced the file by a folder, and the file here
            // is the one last synced: it goes to the local trash, and the
            // folder comes next round.
            Some(l) => Op::DeleteLocal {
                path: p,
                expected: l.clone(),
            },
            None => Op::CreateLocalFolder { path: p },
        },
        Some(r) => match l {
            Some(l) if l.kind == NodeKind::Folder => {
                if subtree_changed(path, t.local, t.synced) {
                    Op::Conflict {
                        path: p,
                        remote_rev: rev_of(Some(r)),
                    }
                } else {
                    Op::DeleteLocal {
                        path: p,
                        expected: l.clone(),
                    }
                }
            }
            _ => Op::Download {
                path: p,
                rev: rev_of(Some(r)),
                local: l.cloned(),
            },
        },
    })
}

/// Both sides changed at `path`.
fn both_changed(path: &str, l: Option<&Node>, r: Option<&Node>) -> Op {
    let p = path.to_owned();
    match (l, r) {
        (None, None) => Op::Forget { path: p },
        (Some(l), Some(r)) if l.same_content(r) => Op::MarkSynced {
            path: p,
            node: r.clone(),
        },
        // An edit beats a delete, on either side.
        (None, Some(r)) if r.kind == NodeKind::File => Op::Download {
            path: p,
            rev: rev_of(Some(r)),
            local: None,
        },
        (None, Some(_)) => Op::CreateLocalFolder { path: p },
        (Some(l), None) if l.kind == NodeKind::File => Op::Upload {
            path: p,
            base_rev: 0,
        },
        (Some(_), None) => Op::CreateRemoteFolder { path: p },
        (Some(_), Some(r)) => Op::Conflict {
            path: p,
            remote_rev: rev_of(Some(r)),
        },
    }
}

/// A remote folder delete covers everything below it.
fn collapse_folder_deletes(t: Trees, ops: &mut Vec<Op>) {
    let Trees { remote, synced, .. } = t;
    let folder_deletes: Vec<String> = ops
        .iter()
        .filter_map(|o| match o {
            Op::DeleteRemote { path }
                if remote
                    .get(path)
                    .or(synced.get(path))
                    .is_some_and(|n| n.kind == NodeKind::Folder) =>
            {
                Some(path.clone())
            }
            _ => None,
        })
        .collect();
    ops.retain(|o| match o {
        Op::DeleteRemote { path } => !folder_deletes.iter().any(|d| is_below(path, d)),
        _ => true,
    });
}

/// What lies below `dir`: relative path → (kind, hash).
fn contents(dir: &str, tree: &Tree) -> Vec<(String, NodeKind, Option<tessera_proto::ContentHash>)> {
    subtree(tree, dir)
        .filter(|(p, _)| p.as_str() != dir)
        .map(|(p, n)| (p[dir.len()..].to_owned(), n.kind, n.hash))
        .collect()
}

fn mark_subtree(dir: &str, tree: &Tree, handled: &mut BTreeSet<String>) {
    for (p, _) in subtree(tree, dir) {
        handled.insert(p.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::ContentHash;

    fn h(s: &str) -> ContentHash {
        ContentHash::of(s.as_bytes())
    }

    fn f(content: &str) -> Node {
        Node::file(h(content))
    }

    fn rf(content: &str, rev: i64, id: &str) -> Node {
        Node::file(h(content)).with_rev(rev).with_id(id)
    }

    fn tree(entries: &[(&str, Node)]) -> Tree {
        entries
            .iter()
            .map(|(p, n)| ((*p).to_owned(), n.clone()))
            .collect()
    }

    fn s(p: &str) -> String {
        p.to_owned()
    }

    /// The plan's operations in execution order, for the cases that are
    /// about what is done rather than when.
    fn plan(local: &Tree, remote: &Tree, synced: &Tree) -> Vec<Op> {
        super::plan(local, remote, synced).into_ops()
    }

    #[test]
    fn steps_come_in_phase_order() {
        let synced = tree(&[
            ("gone", Node::folder().with_id("G")),
            ("gone/deep", Node::folder().with_id("GD")),
            ("gone/deep/x", rf("x", 1, "X")),
            ("moved", rf("m", 1, "M")),
            ("both", rf("b", 1, "B")),
            ("same", rf("s", 1, "S")),
            ("edited", rf("e", 1, "E")),
        ]);
        let local = tree(&[
            ("gone", Node::folder()),
            ("gone/deep", Node::folder()),
            ("gone/deep/x", f("x")),
            ("moved", f("m")),
            ("both", f("local")),
            ("same", f("s2")),
            ("edited", f("e")),
            ("new", Node::folder()),
            ("new/up", f("u")),
        ]);
        let remote = tree(&[
            ("moved-here", rf("m", 1, "M")),
            ("both", rf("remote", 2, "B")),
            ("same", rf("s2", 2, "S")),
            ("edited", rf("e2", 2, "E")),
        ]);
        let got = super::plan(&local, &remote, &synced);
        let phases: Vec<Phase> = got.steps.iter().map(|st| st.phase).collect();
        assert_eq!(
            phases,
            vec![
                Phase::Folders,
                Phase::Moves,
                Phase::Conflicts,
                Phase::Transfers,
                Phase::Records,
                Phase::Deletes,
            ]
        );
        assert_eq!(
            got.phase(Phase::Folders),
            [Op::CreateRemoteFolder { path: s("new") }]
        );
        assert_eq!(
            got.phase(Phase::Moves),
            [Op::MoveLocal {
                from: s("moved"),
                to: s("moved-here")
            }]
        );
        assert_eq!(
            got.phase(Phase::Transfers),
            [
                Op::Download {
                    path: s("edited"),
                    rev: 2,
                    local: Some(f("e"))
                },
                Op::Upload {
                    path: s("new/up"),
                    base_rev: 0
                },
            ]
        );
        // Deepest first, so each folder is empty when its turn comes.
        let deleted: Vec<&str> = got
            .phase(Phase::Deletes)
            .iter()
            .map(|o| match o {
                Op::DeleteLocal { path, .. } => path.as_str(),
                other => panic!("not a deletion: {other:?}"),
            })
            .collect();
        assert_eq!(deleted, ["gone/deep/x", "gone/deep", "gone"]);
        for step in &got.steps {
            assert!(step.ops.iter().all(|o| o.phase() == step.phase), "{step:?}");
        }
    }

    #[test]
    fn a_plan_without_its_deletions_loses_the_step() {
        let synced = tree(&[("a", rf("1", 1, "A")), ("b", rf("2", 1, "B"))]);
        let mut got = super::plan(&tree(&[("b", f("3"))]), &synced.clone(), &synced);
        assert_eq!(got.steps.len(), 2, "{got:?}");
        got.retain(|o| !matches!(o, Op::DeleteRemote { .. }));
        assert_eq!(got.steps.len(), 1);
        assert_eq!(got.steps[0].phase, Phase::Transfers);
        assert!(got.phase(Phase::Deletes).is_empty());
    }

    #[test]
    // Long on purpose: a table of cases, one per row.
    fn one_sided_changes_travel() {
        // (local, remote, synced) → ops
        let cases: Vec<(Tree, Tree, Tree, Vec<Op>)> = vec![
            // nothing changed
            (
                tree(&[("a", f("1"))]),
                tree(&[("a", rf("1", 1, "A"))]),
                tree(&[("a", rf("1", 1, "A"))]),
                vec![],
            ),
            // new local file
            (
                tree(&[("a", f("1"))]),
                tree(&[]),
                tree(&[]),
                vec![Op::Upload {
                    path: s("a"),
                    base_rev: 0,
                }],
            ),
            // local edit
            (
                tree(&[("a", f("2"))]),
                tree(&[("a", rf("1", 3, "A"))]),
                tree(&[("a", rf("1", 3, "A"))]),
                vec![Op::Upload {
                    path: s("a"),
                    base_rev: 3,
                }],
            ),
            // new remote file
            (
                tree(&[]),
                tree(&[("a", rf("1", 1, "A"))]),
                tree(&[]),
                vec![Op::Download {
                    path: s("a"),
                    rev: 1,
                    local: None,
                }],
            ),
            // remote edit
            (
                tree(&[("a", f("1"))]),
                tree(&[("a", rf("2", 2, "A"))]),
                tree(&[("a", rf("1", 1, "A"))]),
                vec![Op::Download {
                    path: s("a"),
                    rev: 2,
                    local: Some(f("1")),
                }],
            ),
            // local delete
            (
                tree(&[]),
                tree(&[("a", rf("1", 1, "A"))]),
                tree(&[("a", rf("1", 1, "A"))]),
                vec![Op::DeleteRemote { path: s("a") }],
            ),
            // remote delete
            (
                tree(&[("a", f("1"))]),
                tree(&[]),
                tree(&[("a", rf("1", 1, "A"))]),
                vec![Op::DeleteLocal {
                    path: s("a"),
                    expected: f("1"),
                }],
            ),
            // new folders both ways, created before their files
            (
                tree(&[("d", Node::folder()), ("d/x", f("x"))]),
                tree(&[("e", Node::folder().with_id("E"))]),
                tree(&[]),
                vec![
                    Op::CreateRemoteFolder { path: s("d") },
                    Op::CreateLocalFolder { path: s("e") },
                    Op::Upload {
                        path: s("d/x"),
                        base_rev: 0,
                    },
                ],
            ),
        ];
        for (i, (l, r, sy, want)) in cases.into_iter().enumerate() {
            assert_eq!(plan(&l, &r, &sy), want, "case {i}");
        }
    }

    #[test]
    fn both_sides_changed() {
        let base = tree(&[("a", rf("1", 1, "A"))]);
        // same edit on both sides: just record it
        assert_eq!(
            plan(
                &tree(&[("a", f("2"))]),
                &tree(&[("a", rf("2", 2, "A"))]),
                &base
            ),
            vec![Op::MarkSynced {
                path: s("a"),
                node: rf("2", 2, "A")
            }]
        );
        // different edits: a conflict, local bytes kept
        assert_eq!(
            plan(
                &tree(&[("a", f("L"))]),
                &tree(&[("a", rf("R", 2, "A"))]),
                &base
            ),
            vec![Op::Conflict {
                path: s("a"),
                remote_rev: 2
            }]
        );
        // deleted on both: forget
        assert_eq!(
            plan(&tree(&[]), &tree(&[]), &base),
            vec![Op::Forget { path: s("a") }]
        );
        // local delete vs remote edit: the edit comes back
        assert_eq!(
            plan(&tree(&[]), &tree(&[("a", rf("2", 2, "A"))]), &base),
            vec![Op::Download {
                path: s("a"),
                rev: 2,
                local: None
            }]
        );
        // remote delete vs local edit: the edit is uploaded again
        assert_eq!(
            plan(&tree(&[("a", f("2"))]), &tree(&[]), &base),
            vec![Op::Upload {
                path: s("a"),
                base_rev: 0
            }]
        );
        // both created the same new path with different bytes
        assert_eq!(
            plan(
                &tree(&[("n", f("L"))]),
                &tree(&[("n", rf("R", 1, "N"))]),
                &tree(&[])
            ),
            vec![Op::Conflict {
                path: s("n"),
                remote_rev: 1
            }]
        );
    }

    /// A file replaced by a folder (or the reverse) on one side only is
    /// no conflict: the old one goes first, then what replaced it comes,
    /// once the path is free.
    #[test]
    fn a_file_replaced_by_a_folder_on_one_side_replaces_it_on_the_other() {
        let file = tree(&[("n", rf("x", 1, "N"))]);
        let folder_here = tree(&[("n", Node::folder()), ("n/a", f("a"))]);
        assert_eq!(
            plan(&folder_here, &file, &file),
            vec![Op::DeleteRemote { path: s("n") }]
        );
        // Next round: the server's file is gone and forgotten.
        assert_eq!(
            plan(&folder_here, &tree(&[]), &tree(&[])),
            vec![
                Op::CreateRemoteFolder { path: s("n") },
                Op::Upload {
                    path: s("n/a"),
                    base_rev: 0
                }
            ]
        );
        let folder_there = tree(&[("n", Node::folder().with_id("D")), ("n/a", rf("a", 1, "A"))]);
        let local_file = tree(&[("n", f("x"))]);
        assert_eq!(
            plan(&local_file, &folder_there, &file),
            vec![Op::DeleteLocal {
                path: s("n"),
                expected: f("x")
            }]
        );

        // A folder replaced by a file, here and there.
        let synced = tree(&[("d", Node::folder().with_id("D")), ("d/x", rf("x", 1, "X"))]);
        assert_eq!(
            plan(&tree(&[("d", f("new"))]), &synced, &synced),
            vec![Op::DeleteRemote { path: s("d") }]
        );
        let local = tree(&[("d", Node::folder()), ("d/x", f("x"))]);
        assert_eq!(
            plan(&local, &tree(&[("d", rf("new", 1, "F"))]), &synced),
            vec![
                Op::DeleteLocal {
                    path: s("d/x"),
                    expected: f("x")
                },
                Op::DeleteLocal {
                    path: s("d"),
                    expected: Node::folder()
                }
            ]
        );
        // Something new inside the folder on the server: the folder stays
        // (the file here becomes a conflicted copy) and keeps the new file;
        // only what was deleted here goes.
        let mut remote = synced.clone();
        remote.insert(s("d/new"), rf("n", 1, "N"));
        assert_eq!(
            plan(&tree(&[("d", f("new"))]), &remote, &synced),
            vec![
                Op::Conflict {
                    path: s("d"),
                    remote_rev: 0
                },
                Op::Download {
                    path: s("d/new"),
                    rev: 1,
                    local: None
                },
                Op::DeleteRemote { path: s("d/x") }
            ]
        );
    }

    #[test]
    fn folder_deletes_spare_changed_contents() {
        let synced = tree(&[("d", Node::folder().with_id("D")), ("d/x", rf("x", 1, "X"))]);
        // Deleted locally, but the server has a new file inside: keep the folder.
        let remote = tree(&[
            ("d", Node::folder().with_id("D")),
            ("d/x", rf("x", 1, "X")),
            ("d/new", rf("n", 1, "N")),
        ]);
        let ops = plan(&tree(&[]), &remote, &synced);
        assert!(!ops.contains(&Op::DeleteRemote { path: s("d") }), "{ops:?}");
        assert!(
            ops.contains(&Op::Download {
                path: s("d/new"),
                rev: 1,
                local: None
            }),
            "{ops:?}"
        );
        // Deleted remotely, but edited locally inside: keep the local folder.
        let local = tree(&[("d", Node::folder()), ("d/x", f("edited"))]);
        let ops = plan(&local, &tree(&[]), &synced);
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::DeleteLocal { path, .. } if path == "d")),
            "{ops:?}"
        );
        assert!(
            ops.contains(&Op::Upload {
                path: s("d/x"),
                base_rev: 0
            }),
            "{ops:?}"
        );
        // Nothing changed inside: delete deepest first.
        let local = tree(&[("d", Node::folder()), ("d/x", f("x"))]);
        assert_eq!(
            plan(&local, &tree(&[]), &synced),
            vec![
                Op::DeleteLocal {
                    path: s("d/x"),
                    expected: f("x")
                },
                Op::DeleteLocal {
                    path: s("d"),
                    expected: Node::folder()
                },
            ]
        );
    }

    #[test]
    fn a_folder_renamed_here_is_one_move_there() {
        let synced = tree(&[
            ("docs", Node::folder().with_id("D")),
            ("docs/deep", Node::folder().with_id("E")),
            ("docs/deep/c.txt", rf("c", 1, "C")),
        ]);
        let local = tree(&[
            ("papers", Node::folder()),
            ("papers/deep", Node::folder()),
            ("papers/deep/c.txt", f("c")),
        ]);
        assert_eq!(
            plan(&local, &synced.clone(), &synced),
            vec![Op::MoveRemote {
                from: s("docs"),
                to: s("papers")
            }]
        );
        // Contents edited during the rename: no folder move, per-item work.
        let edited = tree(&[
            ("papers", Node::folder()),
            ("papers/deep", Node::folder()),
            ("papers/deep/c.txt", f("c2")),
        ]);
        assert!(
            !plan(&edited, &synced.clone(), &synced).contains(&Op::MoveRemote {
                from: s("docs"),
                to: s("papers")
            })
        );
    }

    #[test]
    fn a_folder_deleted_here_is_one_delete_there() {
        let synced = tree(&[
            ("d", Node::folder().with_id("D")),
            ("d/e", Node::folder().with_id("E")),
            ("d/e/x", rf("x", 1, "X")),
            ("keep", rf("k", 1, "K")),
        ]);
        let local = tree(&[("keep", f("k"))]);
        assert_eq!(
            plan(&local, &synced.clone(), &synced),
            vec![Op::DeleteRemote { path: s("d") }]
        );
    }

    #[test]
    fn moves_travel_as_moves() {
        let synced = tree(&[("old.txt", rf("c", 4, "F"))]);
        // Local rename: delete + create with the same bytes.
        assert_eq!(
            plan(&tree(&[("new.txt", f("c"))]), &synced.clone(), &synced),
            vec![Op::MoveRemote {
                from: s("old.txt"),
                to: s("new.txt")
            }]
        );
        // Remote rename: same id at another path.
        assert_eq!(
            plan(
                &tree(&[("old.txt", f("c"))]),
                &tree(&[("new.txt", rf("c", 4, "F"))]),
                &synced
            ),
            vec![Op::MoveLocal {
                from: s("old.txt"),
                to: s("new.txt")
            }]
        );
        // Remote folder rename carries its contents, no per-file work.
        let synced = tree(&[("a", Node::folder().with_id("D")), ("a/x", rf("x", 1, "X"))]);
        let remote = tree(&[("b", Node::folder().with_id("D")), ("b/x", rf("x", 1, "X"))]);
        let local = tree(&[("a", Node::folder()), ("a/x", f("x"))]);
        assert_eq!(
            plan(&local, &remote, &synced),
            vec![Op::MoveLocal {
                from: s("a"),
                to: s("b")
            }]
        );
    }
}

#[cfg(test)]
mod sibling_names {
    use super::*;
    use tessera_proto::ContentHash;

    fn file(c: &str) -> Node {
        Node::file(ContentHash::of(c.as_bytes()))
    }

    fn tree(entries: &[(&str, Node)]) -> Tree {
        entries
            .iter()
            .map(|(p, n)| ((*p).to_owned(), n.clone()))
            .collect()
    }

    /// `photos.zip` and `photos-2` sort between `photos` and `photos/…`:
    /// the look inside `photos` must not stop at them.
    #[test]
    fn a_folder_deleted_on_the_server_with_new_files_here_is_made_again() {
        let zip = file("zip").with_rev(1).with_id("Z");
        let synced = tree(&[
            ("photos", Node::folder().with_id("P")),
            ("photos/a.jpg", file("a").with_rev(1).with_id("A")),
            ("photos-2", Node::folder().with_id("P2")),
            ("photos.zip", zip.clone()),
        ]);
        let remote = tree(&[
            ("photos-2", Node::folder().with_id("P2")),
            ("photos.zip", zip.clone()),
        ]);
        let local = tree(&[
            ("photos", Node::folder()),
            ("photos/a.jpg", file("a")),
            ("photos/new.jpg", file("new")),
            ("photos-2", Node::folder()),
            ("photos.zip", file("zip")),
        ]);
        let ops = plan(&local, &remote, &synced).into_ops();
        assert!(
            ops.contains(&Op::CreateRemoteFolder {
                path: "photos".into()
            }),
            "{ops:?}"
        );
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::Upload { path, .. } if path == "photos/new.jpg")),
            "{ops:?}"
        );
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::DeleteLocal { path, .. } if path == "photos")),
            "{ops:?}"
        );
    }
}
