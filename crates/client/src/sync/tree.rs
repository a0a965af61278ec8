//! One tree: relative paths (`a/b.txt`, NFC, `/`-separated) to nodes.

use std::collections::BTreeMap;

use tessera_proto::ContentHash;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    File,
    Folder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Content hash of a file; `None` for folders.
    pub hash: Option<ContentHash>,
    /// Server revision (remote and synced trees).
    pub rev: Option<i64>,
    /// Server id, stable across moves (remote and synced trees).
    pub id: Option<String>,
    /// File size in bytes, when known.
    pub size: Option<u64>,
}

impl Node {
    pub fn file(hash: ContentHash) -> Self {
        Self {
            kind: NodeKind::File,
            hash: Some(hash),
            rev: None,
            id: None,
            size: None,
        }
    }

    pub fn folder() -> Self {
        Self {
            kind: NodeKind::Folder,
            hash: None,
            rev: None,
            id: None,
            size: None,
        }
    }

    pub fn with_rev(mut self, rev: i64) -> Self {
        self.rev = Some(rev);
        self
    }

    pub fn with_size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    pub fn with_id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }

    /// Same kind and content: what "unchanged" means between trees
    /// (revisions and ids are the server's bookkeeping, not content).
    pub fn same_content(&self, other: &Node) -> bool {
        self.kind == other.kind && self.hash == other.hash
    }
}

pub type Tree = BTreeMap<String, Node>;

/// The entry at `dir` (if any) and every entry below it. Those below are
/// read from `dir/` on: a sibling such as `dir-2` or `dir.txt` sorts
/// between `dir` and `dir/…`, so the range cannot start at `dir` itself.
pub fn subtree<'a, V>(
    tree: &'a std::collections::BTreeMap<String, V>,
    dir: &str,
) -> impl Iterator<Item = (&'a String, &'a V)> {
    let prefix = format!("{dir}/");
    tree.get_key_value(dir).into_iter().chain(
        tree.range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix)),
    )
}

/// True if `path` lies strictly below folder `dir`.
pub fn is_below(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

pub fn depth(path: &str) -> usize {
    path.bytes().filter(|b| *b == b'/').count()
}
