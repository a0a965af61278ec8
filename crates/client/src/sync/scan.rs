//! Scanning the local folder into a tree, hashing only files whose `stat`
//! changed since they were last hashed.

use std::path::{Path, PathBuf};

use tessera_proto::ContentHash;
use unicode_normalization::UnicodeNormalization;

use super::state::{Stat, StatCache};
use super::tree::{Node, Tree};

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
    pub tree: Tree,
    pub cache: StatCache,
    pub warnings: Vec<String>,
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

/// The hash of the file at `rel`, from the cache when `stat` is unchanged.
pub fn current_hash(
    root: &Path,
    rel: &str,
    cache: &StatCache,
) -> std::io::Result<Option<(Stat, ContentHash)>> {
    let abs = root.join(rel);
    let meta = match std::fs::symlink_metadata(&abs) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let stat = stat_of(&meta);
    if let Some((cached, hash)) = cache.get(rel)
        && *cached == stat
    {
        return Ok(Some((stat, *hash)));
    }
    Ok(Some((stat, hash_file(&abs)?)))
}

/// Walks `root` (blocking; run it off async threads).
pub fn scan(root: &Path, old: &StatCache) -> Scan {
    let mut tree = Tree::new();
    let mut cache = StatCache::new();
    let mut warnings = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(false)
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_str().is_some_and(built_in_ignored))
        .build();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                warnings.push(format!("cannot read part of the folder: {e}"));
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(rel_str) = rel.to_str() else {
            warnings.push(format!(
                "skipped {}: the name is not valid UTF-8",
                entry.path().display()
            ));
            continue;
        };
        let rel_str = rel_str.replace(std::path::MAIN_SEPARATOR, "/");
        let nfc: String = rel_str.nfc().collect();
        if nfc != rel_str {
            warnings.push(format!(
                "skipped {rel_str}: rename it to its NFC (composed) spelling"
            ));
            continue;
        }
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            tree.insert(nfc, Node::folder());
        } else if ft.is_file() {
            match current_hash(root, &nfc, old) {
                Ok(Some((stat, hash))) => {
                    cache.insert(nfc.clone(), (stat, hash));
                    tree.insert(nfc, Node::file(hash).with_size(stat.size));
                }
                Ok(None) => {}
                Err(e) => warnings.push(format!("skipped {nfc}: {e}")),
            }
        } else if ft.is_symlink() {
            warnings.push(format!("skipped {nfc}: symbolic links are not synced"));
        } else {
            warnings.push(format!("skipped {nfc}: not a regular file or folder"));
        }
    }
    Scan {
        tree,
        cache,
        warnings,
    }
}

pub fn abs(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}
