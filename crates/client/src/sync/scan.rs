//! Scanning the local folder into a tree, hashing only files whose `stat`
//! changed since they were last hashed.
//!
//! Trees are keyed by the server's spelling (NFC); a name spelled otherwise
//! on disk (NFD, as macOS writes accents) is kept in a `Spelling` map, and
//! the engine reaches every path on disk through it (`Syncer::disk`), so a
//! download into a folder named in NFD lands in it and no second spelling
//! ever appears. Two local spellings of one NFC name: the NFC one takes part,
//! the other is skipped with a warning.

use std::path::{Path, PathBuf};

use tessera_proto::ContentHash;
use unicode_normalization::UnicodeNormalization;

use super::state::{Stat, StatCache};
use super::tree::{Node, NodeKind, Tree, is_below};

/// The client's own folder inside a synced folder; never synced.
pub const STATE_DIR: &str = ".tessera";
pub const IGNORE_FILE: &str = ".tesseraignore";

/// Temporary and lock files of common editors and systems.
fn built_in_ignored(name: &str) -> bool {
    name == STATE_DIR
        || name == ".DS_Store"
        || name == "Thumbs.db"
        || name == "desktop.ini"
        || name.starts_with(".~lock.")
        || name.starts_with("~$")
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with(".crdownload")
        || name.ends_with(".tessera-part")
}

#[derive(Clone)]
pub struct Scan {
    /// Keyed by the server's spelling of each path (NFC).
    pub tree: Tree,
    pub cache: StatCache,
    /// Local spelling of every path whose bytes on disk differ from its
    /// NFC key (decomposed accents, as macOS writes them).
    pub spelling: Spelling,
    pub warnings: Vec<String>,
}

/// NFC relative path → relative path as spelled on disk, for the paths
/// that differ; every other path is spelled on disk as its key.
pub type Spelling = std::collections::BTreeMap<String, String>;

/// Where the file or folder with NFC key `rel` lives on disk, relative to
/// the root: its own entry in `spelling`, else its parent's spelling with
/// the NFC name (so a download into a folder named in NFD lands in it).
pub fn local_rel(spelling: &Spelling, rel: &str) -> String {
    if let Some(local) = spelling.get(rel) {
        return local.clone();
    }
    match rel.rsplit_once('/') {
        Some((parent, name)) if !spelling.is_empty() => {
            format!("{}/{name}", local_rel(spelling, parent))
        }
        _ => rel.to_owned(),
    }
}

#[cfg(unix)]
pub fn stat_of(meta: &std::fs::Metadata) -> Stat {
    use std::os::unix::fs::MetadataExt;
    Stat {
        size: meta.len(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        inode: meta.ino(),
    }
}

#[cfg(not(unix))]
pub fn stat_of(meta: &std::fs::Metadata) -> Stat {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    Stat {
        size: meta.len(),
        mtime_ns,
        inode: 0,
    }
}

pub fn hash_file(path: &Path) -> std::io::Result<ContentHash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().into())
}

/// The hash of the file at `abs` (cached under `key`), from the cache when
/// `stat` is unchanged.
pub fn current_hash(
    abs: &Path,
    key: &str,
    cache: &StatCache,
) -> std::io::Result<Option<(Stat, ContentHash)>> {
    let meta = match std::fs::symlink_metadata(abs) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let stat = stat_of(&meta);
    if let Some((cached, hash)) = cache.get(key)
        && *cached == stat
    {
        return Ok(Some((stat, *hash)));
    }
    Ok(Some((stat, hash_file(abs)?)))
}

/// One entry found on disk, before names that are one on the server are
/// settled.
struct Found {
    nfc: String,
    local: String,
    kind: Kind,
}

enum Kind {
    Folder,
    File,
}

/// A walk of `at` (the synced folder or a folder inside it) with the rules
/// of the synced folder: the ignore files in `at` and below, `above` (those
/// of the folders between the synced folder and `at`), the built-in names,
/// no links.
fn walker(
    at: &Path,
    max_depth: Option<usize>,
    above: Vec<ignore::gitignore::Gitignore>,
) -> ignore::Walk {
    ignore::WalkBuilder::new(at)
        .standard_filters(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(false)
        .max_depth(max_depth)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            e.depth() == 0
                || !(e.file_name().to_str().is_some_and(built_in_ignored)
                    || above
                        .iter()
                        .any(|g| g.matched(e.path(), is_dir).is_ignore()))
        })
        .build()
}

/// The ignore rules that reach into `at` from the folders above it, up to
/// the synced folder `root`. `None` if one of them lets a name back in
/// (`!name`): which rule wins then depends on their order, which only a
/// whole scan keeps.
fn rules_above(root: &Path, at: &Path) -> Option<Vec<ignore::gitignore::Gitignore>> {
    let mut rules = Vec::new();
    let mut dir = at.parent();
    while let Some(d) = dir {
        if !d.starts_with(root) {
            break;
        }
        let file = d.join(IGNORE_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                if lets_back_in(&text) {
                    return None;
                }
                let mut b = ignore::gitignore::GitignoreBuilder::new(d);
                if b.add(&file).is_some() {
                    return None;
                }
                rules.push(b.build().ok()?);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
        dir = d.parent();
    }
    Some(rules)
}

/// Whether ignore rules `text` let a name back in (`!name`).
fn lets_back_in(text: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with('!'))
}

/// Whether the ignore file in `dir`, if any, lets a name back in, or
/// cannot be read: in either case only a whole scan applies the rules in
/// the order they take effect.
fn rules_here_need_whole_scan(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join(IGNORE_FILE)) {
        Ok(text) => lets_back_in(&text),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Whether the folder `at`, inside the synced folder `root`, holds no file
/// the sync carries: only ignored files and empty folders. `false` when
/// unsure (an unreadable entry, a rule that lets a name back in).
/// Blocking.
pub fn holds_only_ignored(root: &Path, at: &Path) -> bool {
    walk_found(root, at, None)
        .is_some_and(|found| found.iter().all(|f| matches!(f.kind, Kind::Folder)))
}

/// Each entry of a folder: path inside it, whether a folder, size, mtime.
pub type Listing = Vec<(PathBuf, bool, u64, Option<std::time::SystemTime>)>;

/// Everything in the folder `at`, ignored or not: each entry's path inside
/// it, with its kind, size and modification time. Two listings that are
/// equal mean nothing was added, removed or written in between. `None` if
/// part of it cannot be read. Blocking.
pub fn contents(at: &Path) -> Option<Listing> {
    let mut seen = Vec::new();
    let walk = ignore::WalkBuilder::new(at)
        .standard_filters(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for entry in walk {
        let entry = entry.ok()?;
        if entry.depth() == 0 {
            continue;
        }
        let meta = entry.metadata().ok()?;
        let rel = entry.path().strip_prefix(at).ok()?.to_path_buf();
        seen.push((rel, meta.is_dir(), meta.len(), meta.modified().ok()));
    }
    Some(seen)
}

/// Walks `root` (blocking; run it off async threads).
pub fn scan(root: &Path, old: &StatCache) -> Scan {
    let mut warnings = Vec::new();
    let walker = walker(root, None, Vec::new());
    let mut found = Vec::new();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                warnings.push(format!("cannot read part of the folder: {e}"));
                continue;
            }
        };
        if let Some(f) = found_entry(root, &entry, &mut warnings) {
            found.push(f);
        }
    }
    let found = settle_spellings(found, &mut warnings);
    let mut tree = Tree::new();
    let mut cache = StatCache::new();
    let mut spelling = Spelling::new();
    for Found { nfc, local, kind } in found {
        match kind {
            Kind::Folder => {
                tree.insert(nfc.clone(), Node::folder());
            }
            Kind::File => match current_hash(&root.join(&local), &nfc, old) {
                Ok(Some((stat, hash))) => {
                    cache.insert(nfc.clone(), (stat, hash));
                    tree.insert(nfc.clone(), Node::file(hash).with_size(stat.size));
                }
                Ok(None) => continue,
                Err(e) => {
                    warnings.push(format!("skipped {local}: {e}"));
                    continue;
                }
            },
        }
        if local != nfc {
            spelling.insert(nfc, local);
        }
    }
    Scan {
        tree,
        cache,
        spelling,
        warnings,
    }
}

/// The scan `prev` brought up to date by looking again only where the
/// paths in `dirty` (relative, as the watcher reported them) say something
/// changed: each one's nearest folder in `prev` is listed again, with the
/// files in it checked as a scan checks them and new folders walked whole.
/// Folders listed again keep the subtrees of their unchanged subfolders.
///
/// `None` when only a whole scan can tell: an ignore file changed, a name
/// is not NFC or could not be read, the folder itself is gone, or the last
/// scan had warnings (a partial scan would drop those it did not
/// revisit).
pub fn rescan(
    root: &Path,
    prev: &Scan,
    dirty: &std::collections::BTreeSet<String>,
    old: &StatCache,
) -> Option<Scan> {
    if !prev.warnings.is_empty() || !prev.spelling.is_empty() {
        return None;
    }
    let mut folders = std::collections::BTreeSet::new();
    // A dirty path that is a folder may be a different folder now (one
    // renamed over it): its listing is walked whole, not kept.
    let mut renewed = std::collections::BTreeSet::new();
    for path in dirty {
        if path.rsplit('/').next() == Some(IGNORE_FILE) {
            return None;
        }
        if is_folder(&prev.tree, path) || root.join(path).is_dir() {
            renewed.insert(path.clone());
        }
        // A folder gone from disk is listed from the nearest one still
        // there, which drops it with everything it held.
        let mut folder = nearest_folder(&prev.tree, path);
        while !folder.is_empty() && !root.join(&folder).is_dir() {
            folder = nearest_folder(&prev.tree, &folder);
        }
        folders.insert(folder);
    }
    let mut tree = prev.tree.clone();
    let mut cache = old.clone();
    for folder in &folders {
        relist(root, folder, &mut tree, &mut cache, &renewed)?;
    }
    cache.retain(|path, _| tree.get(path).is_some_and(|n| n.kind == NodeKind::File));
    Some(Scan {
        tree,
        cache,
        spelling: Spelling::new(),
        warnings: Vec::new(),
    })
}

/// The folder of `tree` nearest above `path` ("" for the root).
fn nearest_folder(tree: &Tree, path: &str) -> String {
    let mut at = path;
    while let Some((parent, _)) = at.rsplit_once('/') {
        if is_folder(tree, parent) {
            return parent.to_owned();
        }
        at = parent;
    }
    String::new()
}

/// Lists `folder` again into `tree`: children gone from disk leave with
/// their subtrees, files are checked, new folders walked whole.
fn relist(
    root: &Path,
    folder: &str,
    tree: &mut Tree,
    cache: &mut StatCache,
    renewed: &std::collections::BTreeSet<String>,
) -> Option<()> {
    let at = if folder.is_empty() {
        root.to_path_buf()
    } else {
        root.join(folder)
    };
    if !std::fs::symlink_metadata(&at).ok()?.is_dir() {
        return None;
    }
    let listed = walk_found(root, &at, Some(1))?;
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let names: std::collections::BTreeSet<&str> = listed.iter().map(|f| f.nfc.as_str()).collect();
    let gone: Vec<String> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(k, _)| !k[prefix.len()..].contains('/') && !names.contains(k.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    for path in gone {
        drop_subtree(tree, &path);
    }
    for f in &listed {
        match f.kind {
            Kind::File => {
                if is_folder(tree, &f.nfc) {
                    drop_subtree(tree, &f.nfc);
                }
                let (stat, hash) = current_hash(&root.join(&f.local), &f.nfc, cache).ok()??;
                cache.insert(f.nfc.clone(), (stat, hash));
                tree.insert(f.nfc.clone(), Node::file(hash).with_size(stat.size));
            }
            Kind::Folder if is_folder(tree, &f.nfc) && !renewed.contains(&f.nfc) => {}
            Kind::Folder => {
                drop_subtree(tree, &f.nfc);
                tree.insert(f.nfc.clone(), Node::folder());
                for inner in walk_found(root, &root.join(&f.local), None)? {
                    match inner.kind {
                        Kind::Folder => {
                            tree.insert(inner.nfc, Node::folder());
                        }
                        Kind::File => {
                            let (stat, hash) =
                                current_hash(&root.join(&inner.local), &inner.nfc, cache)
                                    .ok()??;
                            cache.insert(inner.nfc.clone(), (stat, hash));
                            tree.insert(inner.nfc, Node::file(hash).with_size(stat.size));
                        }
                    }
                }
            }
        }
    }
    Some(())
}

fn is_folder(tree: &Tree, path: &str) -> bool {
    tree.get(path).is_some_and(|n| n.kind == NodeKind::Folder)
}

/// Removes `path` and everything below it (keys below a path sort
/// together, right after `path/`).
fn drop_subtree(tree: &mut Tree, path: &str) {
    tree.remove(path);
    let prefix = format!("{path}/");
    let below: Vec<String> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in below {
        tree.remove(&k);
    }
}

/// What a walk of `at` (below `root`) finds, `None` at the first thing only
/// a whole scan handles (an unreadable entry, a link or special file, a
/// name that is not NFC).
fn walk_found(root: &Path, at: &Path, max_depth: Option<usize>) -> Option<Vec<Found>> {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    if rules_here_need_whole_scan(at) {
        return None;
    }
    for entry in walker(at, max_depth, rules_above(root, at)?) {
        let entry = entry.ok()?;
        if entry.depth() == 0 {
            continue;
        }
        let f = found_entry(root, &entry, &mut warnings)?;
        if !warnings.is_empty() || f.nfc != f.local {
            return None;
        }
        if matches!(f.kind, Kind::Folder)
            && max_depth.is_none()
            && rules_here_need_whole_scan(entry.path())
        {
            return None;
        }
        found.push(f);
    }
    Some(found)
}

/// What the walk found at `entry`: a file or folder under its NFC name and
/// its name on disk; `None` (with a warning where the user should know) for
/// the root and for what is not synced.
fn found_entry(root: &Path, entry: &ignore::DirEntry, warnings: &mut Vec<String>) -> Option<Found> {
    if entry.depth() == 0 {
        return None;
    }
    let rel = entry.path().strip_prefix(root).ok()?;
    let Some(rel_str) = rel.to_str() else {
        warnings.push(format!(
            "skipped {}: the name is not valid UTF-8; rename it",
            entry.path().display()
        ));
        return None;
    };
    let local = rel_str.replace(std::path::MAIN_SEPARATOR, "/");
    let nfc: String = local.nfc().collect();
    let ft = entry.file_type()?;
    let kind = if ft.is_dir() {
        Kind::Folder
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        warnings.push(format!("skipped {local}: symbolic links are not synced"));
        return None;
    } else {
        warnings.push(format!("skipped {local}: not a regular file or folder"));
        return None;
    };
    Some(Found { nfc, local, kind })
}

/// Two local names that are one name on the server (the same once
/// composed, NFC): the one already spelled in NFC, or else the first, takes
/// part; the other, with everything inside it, is left alone with a
/// warning. Nothing on disk is renamed.
fn settle_spellings(found: Vec<Found>, warnings: &mut Vec<String>) -> Vec<Found> {
    use std::collections::btree_map::Entry;
    let mut owner: std::collections::BTreeMap<String, String> = Default::default();
    for f in &found {
        match owner.entry(f.nfc.clone()) {
            Entry::Vacant(v) => {
                v.insert(f.local.clone());
            }
            Entry::Occupied(mut o) => {
                if f.local == f.nfc {
                    o.insert(f.local.clone());
                }
            }
        }
    }
    let mut left_out: Vec<String> = Vec::new();
    let mut kept = Vec::with_capacity(found.len());
    for f in found {
        if left_out.iter().any(|d| is_below(&f.local, d)) {
            continue;
        }
        match owner.get(&f.nfc) {
            Some(o) if *o != f.local => {
                warnings.push(format!(
                    "skipped {}: {o} is the same name on the server (the same letters, \
                     composed and decomposed); rename one of them",
                    f.local
                ));
                left_out.push(f.local);
            }
            _ => kept.push(f),
        }
    }
    kept
}

pub fn abs(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;
    use std::fs;

    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, text).unwrap();
    }

    fn folder() -> (tempfile::TempDir, Scan) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a.txt", "a");
        write(root, "d1/x.txt", "x");
        write(root, "d1/sub/y.txt", "y");
        write(root, "d2/z.txt", "z");
        write(root, "d2/deep/w.txt", "w");
        write(root, ".tesseraignore", "*.log\n");
        let first = scan(root, &StatCache::new());
        (dir, first)
    }

    fn dirty(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    /// Every kind of change, each reported by the paths a watcher gives:
    /// looking only there finds what a whole scan finds.
    #[test]
    fn a_partial_scan_of_the_reported_paths_finds_what_a_whole_scan_finds() {
        let (dir, first) = folder();
        let root = dir.path();
        write(root, "d1/x.txt", "x, longer now");
        write(root, "d3/new/deep.txt", "new");
        fs::remove_dir_all(root.join("d2")).unwrap();
        fs::rename(root.join("d1/sub"), root.join("d1/sub2")).unwrap();
        write(root, "d1/skip.log", "ignored");
        write(
            root,
            "d3/new/also.log",
            "ignored by the rule of the folder above",
        );
        fs::remove_file(root.join("a.txt")).unwrap();
        write(root, "a.txt/inner.txt", "a file became a folder");
        let reported = dirty(&[
            "d1/x.txt",
            "d3",
            "d3/new",
            "d3/new/deep.txt",
            "d3/new/also.log",
            "d2/z.txt",
            "d2/deep/w.txt",
            "d2/deep",
            "d2",
            "d1/sub",
            "d1/sub2",
            "d1/skip.log",
            "a.txt",
            "a.txt/inner.txt",
        ]);
        let partial = rescan(root, &first, &reported, &first.cache).unwrap();
        let whole = scan(root, &first.cache);
        assert_eq!(partial.tree, whole.tree);
        assert_eq!(partial.cache, whole.cache);
        assert!(partial.tree.contains_key("d3/new/deep.txt"));
        assert!(!partial.tree.contains_key("d1/skip.log"));
        assert!(!partial.tree.contains_key("d3/new/also.log"));
        assert!(!partial.tree.contains_key("d2"));
    }

    /// A folder removed with everything in it, reported only by the paths
    /// inside it (deepest first, as they went).
    #[test]
    fn a_folder_gone_with_its_subfolders_is_dropped_whole() {
        let (dir, first) = folder();
        let root = dir.path();
        fs::remove_dir_all(root.join("d1")).unwrap();
        let partial = rescan(root, &first, &dirty(&["d1/sub/y.txt"]), &first.cache).unwrap();
        assert_eq!(partial.tree, scan(root, &first.cache).tree);
        assert!(!partial.tree.keys().any(|k| k.starts_with("d1")));
    }

    /// Only the reported places are looked at: a change nobody reported
    /// is not seen (the daemon's periodic whole scan finds it).
    #[test]
    fn nothing_reported_means_nothing_looked_at() {
        let (dir, first) = folder();
        write(dir.path(), "d2/z.txt", "changed, but not reported");
        let partial = rescan(dir.path(), &first, &BTreeSet::new(), &first.cache).unwrap();
        assert_eq!(partial.tree, first.tree);
    }

    /// What only a whole scan can settle is left to one.
    #[test]
    fn ignore_rules_or_odd_names_ask_for_a_whole_scan() {
        let (dir, first) = folder();
        let root = dir.path();
        write(root, "d1/.tesseraignore", "x.txt\n");
        assert!(rescan(root, &first, &dirty(&["d1/.tesseraignore"]), &first.cache).is_none());

        let (dir, _) = folder();
        let root = dir.path();
        write(root, ".tesseraignore", "*.log\n!keep.log\n");
        let first = scan(root, &StatCache::new());
        write(root, "d1/keep.log", "let back in");
        assert!(rescan(root, &first, &dirty(&["d1/keep.log"]), &first.cache).is_none());

        let (dir, first) = folder();
        let root = dir.path();
        write(root, "d1/cafe\u{301}.txt", "decomposed");
        assert!(rescan(root, &first, &dirty(&["d1/cafe\u{301}.txt"]), &first.cache).is_none());
    }

    /// A folder swapped for another under the same name (the old one
    /// renamed away, another renamed in), reported only by its own path:
    /// its listing is walked again, not kept from before.
    #[test]
    fn a_folder_replaced_in_place_is_walked_again() {
        let (dir, first) = folder();
        let root = dir.path();
        fs::rename(root.join("d1"), root.join("elsewhere")).unwrap();
        write(root, "other/fresh.txt", "fresh");
        fs::rename(root.join("other"), root.join("d1")).unwrap();
        fs::remove_dir_all(root.join("elsewhere")).unwrap();
        let partial = rescan(root, &first, &dirty(&["d1"]), &first.cache).unwrap();
        assert_eq!(partial.tree, scan(root, &first.cache).tree);
        assert!(partial.tree.contains_key("d1/fresh.txt"));
        assert!(!partial.tree.contains_key("d1/x.txt"));
    }

    /// A rule below that lets back in what a rule above leaves out wins in
    /// a whole scan; a partial scan must not decide otherwise.
    #[test]
    fn a_rule_below_that_lets_a_name_back_in_is_not_overruled() {
        let (dir, _) = folder();
        let root = dir.path();
        write(root, "d1/.tesseraignore", "!keep.log\n");
        let first = scan(root, &StatCache::new());
        write(root, "d1/keep.log", "let back in below");
        let whole = scan(root, &first.cache);
        assert!(whole.tree.contains_key("d1/keep.log"));
        if let Some(partial) = rescan(root, &first, &dirty(&["d1/keep.log"]), &first.cache) {
            assert_eq!(partial.tree, whole.tree);
        }
    }
}
