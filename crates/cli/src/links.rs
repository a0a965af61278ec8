//! The folders this user linked for sync, kept beside the profile.
//!
//! A folder's sync state lives inside it (`.tessera/`), so a folder that
//! vanished (an unmounted disk, leaving an empty mount point) looks like a
//! folder never synced. This list outside the folder tells the two apart:
//! a folder on it without its state is refused instead of being filled
//! again on the disk underneath.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::profile;

fn file() -> anyhow::Result<PathBuf> {
    Ok(profile::dir()?.join("linked-folders.json"))
}

fn load() -> anyhow::Result<BTreeSet<PathBuf>> {
    let path = file()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged: remove it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The spellings under which `dir` may have been recorded: as given, made
/// absolute, and with symbolic links resolved while it exists.
fn spellings(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())];
    if let Ok(real) = std::fs::canonicalize(dir) {
        out.push(real);
    }
    out
}

/// Whether `dir` was linked for sync on this computer.
pub fn was_linked(dir: &Path) -> anyhow::Result<bool> {
    let known = load()?;
    Ok(spellings(dir).iter().any(|p| known.contains(p)))
}

/// Notes `dir` (canonical) as linked.
pub fn remember(dir: &Path) -> anyhow::Result<()> {
    let mut known = load()?;
    if !known.insert(dir.to_path_buf()) {
        return Ok(());
    }
    let path = file()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(&known)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Forgets `dir` as linked (under every spelling it may have).
pub fn forget(dir: &Path) -> anyhow::Result<()> {
    let mut known = load()?;
    let before = known.len();
    for p in spellings(dir) {
        known.remove(&p);
    }
    if known.len() == before {
        return Ok(());
    }
    let path = file()?;
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(&known)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
