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
use super::tree::{Node, Tree, is_below};

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

/// Walks `root` (blocking; run it off async threads).
pub fn scan(root: &Path, old: &StatCache) -> Scan {
    let mut warnings = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_str().is_some_and(built_in_ignored))
        .build();
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
