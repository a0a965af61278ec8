//! `tessera put -r` and `tessera get -r`: whole folders, as `cp -r` copies
//! them, under one progress bar. Small files go up in batches (few
//! requests for many files); each file succeeds or fails on its own, and
//! the command fails at the end if any did, naming them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tessera_client::Remote;
use tessera_client::transfer::{
    SMALL_FILE, SmallFile, download_resumable, upload_file, upload_small_files,
};
use tessera_proto::api::EntryKind;

use crate::client_cmd::entry_at;

/// Small files sent per batch call, so the bar moves as they go.
const SMALL_GROUP: usize = 500;

fn remote() -> anyhow::Result<Remote> {
    let p = crate::profile::load()?;
    Ok(Remote::new(&p.server, Some(p.token))?)
}

/// `cp -r SRC DEST`: into DEST when it is an existing folder, else as DEST.
fn destination(dest: &str, exists_as_folder: bool, name: &str) -> String {
    let dest = dest.trim_end_matches('/');
    if exists_as_folder {
        format!("{dest}/{name}")
    } else if dest.is_empty() {
        "/".to_owned()
    } else {
        dest.to_owned()
    }
}

/// What a local tree holds: folders (relative, parents first) and files
/// (relative path, size).
struct Tree {
    folders: Vec<String>,
    files: Vec<(String, u64)>,
}

/// Walks a local tree; symbolic links are left out and said.
fn walk(root: &Path) -> anyhow::Result<Tree> {
    let (mut folders, mut files) = (Vec::new(), Vec::new());
    let mut queue = VecDeque::from([(root.to_path_buf(), String::new())]);
    while let Some((dir, rel)) = queue.pop_front() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                eprintln!("skipped {}: its name is not UTF-8", e.path().display());
                continue;
            };
            let path = format!("{rel}/{name}");
            let kind = e.file_type()?;
            if kind.is_dir() {
                folders.push(path.clone());
                queue.push_back((e.path(), path));
            } else if kind.is_file() {
                files.push((path, e.metadata()?.len()));
            } else {
                eprintln!(
                    "skipped {}: not a regular file or folder",
                    e.path().display()
                );
            }
        }
    }
    Ok(Tree { folders, files })
}

pub async fn put_tree(local: &Path, dest: &str) -> anyhow::Result<()> {
    if !local.is_dir() {
        bail!(
            "{} is not a folder; without -r, put copies a file",
            local.display()
        );
    }
    let r = remote()?;
    let name = local
        .canonicalize()?
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .unwrap_or_default();
    let into = matches!(entry_at(&r, dest).await?, Some(e) if e.kind == EntryKind::Folder);
    let top = destination(dest, into, &name);
    let Tree { folders, files } = walk(local)?;
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    let at = |rel: &str| format!("{}{rel}", top.trim_end_matches('/'));

    let mut made = vec![top.clone()];
    made.extend(folders.iter().map(|f| at(f)));
    for chunk in made.chunks(500) {
        for (path, done) in chunk.iter().zip(r.mkdir_many(chunk.to_vec()).await?) {
            done.with_context(|| format!("cannot create {path}"))?;
        }
    }

    let pb = crate::client_cmd::bar(total, "put");
    let mut failed = Vec::new();
    let (small, large): (Vec<_>, Vec<_>) = files.iter().partition(|(_, n)| *n <= SMALL_FILE);
    for group in small.chunks(SMALL_GROUP) {
        let batch: Vec<SmallFile> = group
            .iter()
            .map(|(rel, _)| SmallFile {
                local: local.join(rel.trim_start_matches('/')),
                remote: at(rel),
                base_rev: None,
            })
            .collect();
        let results = upload_small_files(&r, &batch).await?;
        for ((rel, size), result) in group.iter().zip(results) {
            pb.inc(*size);
            if let Err(e) = result {
                failed.push(format!("{}: {e}", at(rel)));
            }
        }
    }
    for (rel, _) in large {
        let p = pb.clone();
        let from = local.join(rel.trim_start_matches('/'));
        if let Err(e) = upload_file(&r, &from, &at(rel), None, Arc::new(move |n| p.inc(n))).await {
            failed.push(format!("{}: {e}", at(rel)));
        }
    }
    pb.finish_and_clear();
    report("put", files.len(), folders.len(), total, &top, &failed)
}

pub async fn get_tree(remote_path: &str, local: &Path) -> anyhow::Result<()> {
    let r = remote()?;
    let top = entry_at(&r, remote_path)
        .await?
        .with_context(|| format!("{remote_path} does not exist"))?;
    if top.kind != EntryKind::Folder {
        bail!("{remote_path} is a file; without -r, get copies a file");
    }
    let target: PathBuf = if local.is_dir() {
        local.join(safe_name(&top.name).unwrap_or("tessera"))
    } else {
        local.to_path_buf()
    };
    // The whole listing first, for the bar's total.
    let mut folders = vec![(top.path.clone(), target.clone())];
    let mut files = Vec::new();
    let mut i = 0;
    while let Some((folder, dir)) = folders.get(i).cloned() {
        i += 1;
        for e in r.list(&folder).await?.entries {
            let Some(name) = safe_name(&e.name) else {
                eprintln!("skipped {}: its name cannot be a local file name", e.path);
                continue;
            };
            match e.kind {
                EntryKind::Folder => folders.push((e.path.clone(), dir.join(name))),
                EntryKind::File => {
                    files.push((e.path.clone(), dir.join(name), e.size.unwrap_or(0)))
                }
            }
        }
    }
    for (_, dir) in &folders {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let total: u64 = files.iter().map(|(_, _, n)| n).sum();
    let pb = crate::client_cmd::bar(total, "get");
    let mut failed = Vec::new();
    for (path, to, _) in &files {
        let p = pb.clone();
        if let Err(e) = download_resumable(&r, path, None, to, Arc::new(move |n| p.inc(n))).await {
            failed.push(format!("{path}: {e}"));
        }
    }
    pb.finish_and_clear();
    report(
        "got",
        files.len(),
        folders.len() - 1,
        total,
        &target.display().to_string(),
        &failed,
    )
}

/// A server name as one local path component: never `..`, a separator or
/// anything that would step out of the folder being filled.
fn safe_name(name: &str) -> Option<&str> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0');
    (!bad).then_some(name)
}

fn report(
    verb: &str,
    files: usize,
    folders: usize,
    bytes: u64,
    to: &str,
    failed: &[String],
) -> anyhow::Result<()> {
    let done = files - failed.len();
    println!(
        "{verb} {done} files ({}) and {folders} folders: {to}",
        bytesize::ByteSize::b(bytes).display().iec()
    );
    if failed.is_empty() {
        return Ok(());
    }
    for f in failed {
        eprintln!("failed: {f}");
    }
    bail!(
        "{} of {files} files could not be copied (listed above)",
        failed.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_goes_into_an_existing_folder_or_becomes_the_destination() {
        assert_eq!(destination("/backup", true, "photos"), "/backup/photos");
        assert_eq!(destination("/backup/", false, "photos"), "/backup");
        assert_eq!(destination("/", true, "photos"), "/photos");
    }

    #[test]
    fn names_that_would_leave_the_folder_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\\b", "x\0"] {
            assert_eq!(safe_name(bad), None, "{bad:?}");
        }
        assert_eq!(safe_name("notes.txt"), Some("notes.txt"));
    }
}
