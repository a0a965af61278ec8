//! A synced folder's own affairs, done on this computer alone: `tessera
//! unlink DIR` (the folder stops being synced; its files stay) and the
//! local trash (`tessera trash --local DIR`), where sync puts what it
//! removes or replaces here, in batches named by the second they were made
//! (`.tessera/trash/<secs>/<path>`), kept 30 days.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tessera_client::sync::scan::STATE_DIR;

use crate::client_cmd::when;

fn state_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let state = dir.join(STATE_DIR);
    if !state.join("state.db").is_file() {
        bail!(
            "{} is not a synced folder (it has no {STATE_DIR}/ sync state)",
            dir.display()
        );
    }
    Ok(state)
}

/// Holds the folder's sync lock, or says a sync runs there.
fn lock(state: &Path, dir: &Path) -> anyhow::Result<std::fs::File> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join("lock"))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "a `tessera sync` is running on {}: stop it first; nothing was changed",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Detaches `dir` from its account: its sync state goes (the local trash
/// with it, after saying so), its files stay as they are, and nothing on
/// the server changes. Syncing it again later starts afresh.
pub fn unlink(dir: &Path, yes: bool) -> anyhow::Result<()> {
    let state = state_dir(dir)?;
    let held = lock(&state, dir)?;
    let trashed = trash_items(&state)?.len();
    // The local trash may hold the only copy of something: not lost
    // without being asked.
    if trashed > 0 && !yes {
        bail!(
            "the local trash of {d} holds {trashed} items (`tessera trash --local {d}`), which \
             unlinking removes: restore what you need, then run it again with --yes; nothing \
             was changed",
            d = dir.display()
        );
    }
    // Renamed aside first: the folder is unlinked at once, whatever the
    // removal then meets.
    let aside = dir.join(format!("{STATE_DIR}.unlinked-{}", std::process::id()));
    std::fs::rename(&state, &aside)
        .with_context(|| format!("cannot remove {}", state.display()))?;
    drop(held);
    std::fs::remove_dir_all(&aside)
        .with_context(|| format!("cannot remove {}", aside.display()))?;
    crate::links::forget(dir)?;
    println!(
        "{} is no longer synced; its files stay here, and nothing changed on the server.",
        dir.display()
    );
    if trashed > 0 {
        println!("Its local trash ({trashed} items) went with its sync state.");
    }
    Ok(())
}

/// One thing in the local trash: its batch, its path in the folder, and
/// whether it is a folder.
struct Trashed {
    batch: i64,
    path: String,
    folder: bool,
}

/// Everything in the local trash, newest batch first: each file, and each
/// folder that is empty (one trashed with its contents shows as them).
fn trash_items(state: &Path) -> anyhow::Result<Vec<Trashed>> {
    let mut out = Vec::new();
    let Ok(batches) = std::fs::read_dir(state.join("trash")) else {
        return Ok(out);
    };
    for b in batches {
        let b = b?;
        let Some(batch) = b.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
            continue;
        };
        let mut stack = vec![(b.path(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let mut empty = true;
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                empty = false;
                let name = e.file_name().to_string_lossy().into_owned();
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if e.file_type()?.is_dir() {
                    stack.push((e.path(), path));
                } else {
                    out.push(Trashed {
                        batch,
                        path,
                        folder: false,
                    });
                }
            }
            if empty && !rel.is_empty() {
                out.push(Trashed {
                    batch,
                    path: rel,
                    folder: true,
                });
            }
        }
    }
    out.sort_by(|a, b| b.batch.cmp(&a.batch).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

pub fn trash_list(dir: &Path, json: bool) -> anyhow::Result<()> {
    let state = state_dir(dir)?;
    let items = trash_items(&state)?;
    if json {
        let list: Vec<_> = items
            .iter()
            .map(|t| {
                serde_json::json!({
                    "path": t.path, "folder": t.folder, "trashed_ms": t.batch * 1000
                })
            })
            .collect();
        return crate::client_cmd::print_json(&serde_json::json!({ "entries": list }));
    }
    if items.is_empty() {
        println!("the local trash of {} is empty", dir.display());
    }
    for t in &items {
        let slash = if t.folder { "/" } else { "" };
        println!("{}  {}{slash}", when(t.batch * 1000), t.path);
    }
    Ok(())
}

/// Puts back the latest trashed copy of `path` (a file, or a folder with
/// what it held) where it was, or beside it when that name is taken. The
/// sync takes it as a change made here.
pub fn trash_restore(dir: &Path, path: &str) -> anyhow::Result<()> {
    let state = state_dir(dir)?;
    let wanted = path.trim_matches('/');
    if wanted.is_empty()
        || wanted
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        bail!("{path}: give the path the item had in the folder, like Photos/beach.jpg");
    }
    let mut batches: Vec<i64> = trash_items(&state)?
        .into_iter()
        .filter(|t| t.path == wanted || t.path.starts_with(&format!("{wanted}/")))
        .map(|t| t.batch)
        .collect();
    batches.sort_unstable();
    let batch = batches.pop().with_context(|| {
        format!(
            "nothing that was at {wanted} is in the local trash of {}",
            dir.display()
        )
    })?;
    let from = state.join("trash").join(batch.to_string()).join(wanted);
    let mut to = dir.join(wanted);
    if std::fs::symlink_metadata(&to).is_ok() {
        let stem = to
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        to = to.with_file_name(format!("{stem} (restored)"));
        if std::fs::symlink_metadata(&to).is_ok() {
            bail!(
                "{} and {} both exist: move one away first",
                dir.join(wanted).display(),
                to.display()
            );
        }
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&from, &to)
        .with_context(|| format!("cannot move {} back to {}", from.display(), to.display()))?;
    println!("restored {} (trashed {})", to.display(), when(batch * 1000));
    Ok(())
}
