//! The engine's work on the synced folder's disk: checking a file still
//! holds what the plan saw, staging downloads, putting them in place,
//! trash and conflict names.

use std::path::{Path, PathBuf};

use super::super::error::OpError;
use super::super::scan::current_hash;
use super::super::state::StatCache;
use super::super::tree::{Node, NodeKind};

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `path`, or if something is there already, `stem (2).ext`, `stem (3).ext`…
/// so that a rename never replaces a file (two conflicts in one second, or
/// the same path trashed twice in one second).
pub(super) fn unused(path: PathBuf) -> PathBuf {
    if std::fs::symlink_metadata(&path).is_err() {
        return path;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name.as_str(), ""),
    };
    (2..)
        .map(|n| path.with_file_name(format!("{stem} ({n}){ext}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or(path)
}

/// Removes trash batches (folders named by the Unix second they were made)
/// older than `cutoff`.
pub(super) async fn purge_trash(trash: &Path, cutoff: i64) {
    let Ok(mut rd) = tokio::fs::read_dir(trash).await else {
        return;
    };
    while let Ok(Some(e)) = rd.next_entry().await {
        let made = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok());
        if made.is_some_and(|t| t < cutoff)
            && let Err(err) = tokio::fs::remove_dir_all(e.path()).await
        {
            tracing::warn!(path = %e.path().display(), error = %err, "cannot empty old trash");
        }
    }
}

pub(super) async fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// Whether `abs` (the file or folder at `rel`) still holds `expected`;
/// `None` expects nothing there.
pub(super) fn holds(
    abs: &Path,
    rel: &str,
    expected: Option<&Node>,
    cache: &StatCache,
) -> std::io::Result<bool> {
    match expected {
        None => Ok(std::fs::symlink_metadata(abs).is_err()),
        Some(n) if n.kind == NodeKind::Folder => Ok(abs.is_dir()),
        Some(n) => Ok(current_hash(abs, rel, cache)?.map(|(_, h)| h) == n.hash),
    }
}

/// [`holds`], with anything else being [`OpError::ChangedMeanwhile`].
pub(super) fn unchanged(
    abs: &Path,
    rel: &str,
    expected: Option<&Node>,
    cache: &StatCache,
) -> Result<(), OpError> {
    if holds(abs, rel, expected, cache)? {
        Ok(())
    } else {
        Err(OpError::ChangedMeanwhile)
    }
}

/// Writes `data` to the new file `tmp` and fsyncs it.
pub(super) async fn stage_bytes(tmp: PathBuf, data: Vec<u8>, fsync: bool) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        if fsync { f.sync_all() } else { Ok(()) }
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// Whether [`Flush`] can make many files durable at once; if not, each
/// file and folder is fsynced on its own. `syncfs` reports the writeback
/// errors of the whole file system only from Linux 5.8 on; before that it
/// says nothing of a write that failed, so it vouches for nothing.
pub(super) fn flush_at_once() -> bool {
    static AT_ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AT_ONCE.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            let uname = rustix::system::uname();
            reports_writeback_errors(&uname.release().to_string_lossy())
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    })
}

/// Whether a Linux release string (`6.1.0-18-amd64`) is 5.8 or later.
fn reports_writeback_errors(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (5, 8)
}

/// Makes everything written on one file system durable, file data and
/// names alike, in one call (`syncfs`): for a batch of small downloads
/// that is one wait for the disk instead of one per file and folder.
///
/// It is opened *before* the writes it vouches for: the kernel reports to
/// `syncfs` only the writeback errors that happened since its descriptor
/// was opened, and background writeback may fail a write at any moment
/// after it was made.
pub(super) struct Flush(std::fs::File);

impl Flush {
    /// Opens the file system holding `dir`; call before writing.
    pub(super) async fn open(dir: &Path) -> std::io::Result<Flush> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).map(Flush))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Flushes the file system; an error means some write since [`open`]
    /// may not be on disk.
    ///
    /// [`open`]: Flush::open
    pub(super) async fn run(self) -> std::io::Result<()> {
        tokio::task::spawn_blocking(move || {
            #[cfg(target_os = "linux")]
            {
                rustix::fs::syncfs(&self.0)?;
                Ok(())
            }
            #[cfg(not(target_os = "linux"))]
            {
                self.0.sync_all()
            }
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

/// Renames the staged (fsynced) file `tmp` to `target` if `still` says the
/// disk holds there what the plan saw; otherwise, or if the rename fails,
/// `tmp` goes and `target` is left as it is. Returns the folder the file
/// landed in, which the caller fsyncs.
pub(super) async fn put_in_place(
    tmp: &Path,
    target: &Path,
    still: impl FnOnce() -> Result<(), OpError>,
) -> Result<PathBuf, OpError> {
    let placed = async {
        still()?;
        let parent = target
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        tokio::fs::create_dir_all(&parent).await?;
        tokio::fs::rename(tmp, target).await?;
        Ok(parent)
    }
    .await;
    if placed.is_err() {
        let _ = tokio::fs::remove_file(tmp).await;
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::ContentHash;

    #[tokio::test]
    async fn old_trash_is_purged_and_recent_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_secs();
        for t in [now - 31 * 86_400, now - 86_400, now] {
            let d = dir.path().join(t.to_string()).join("sub");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f.txt"), b"x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("not-a-batch")).unwrap();
        purge_trash(dir.path(), now - super::super::TRASH_DAYS * 86_400).await;
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            (now - 86_400).to_string(),
            now.to_string(),
            "not-a-batch".into(),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn renames_never_land_on_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a (conflicted copy).txt");
        assert_eq!(unused(p.clone()), p);
        std::fs::write(&p, b"1").unwrap();
        let second = unused(p.clone());
        assert_eq!(second, dir.path().join("a (conflicted copy) (2).txt"));
        std::fs::write(&second, b"2").unwrap();
        assert_eq!(unused(p), dir.path().join("a (conflicted copy) (3).txt"));
    }

    /// A download planned over one version of a file lands only if the
    /// file is still that version: an edit made while it came down stays
    /// on disk as it is, and the answer says the next round retries.
    #[tokio::test]
    async fn a_file_changed_meanwhile_is_kept_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (target, tmp) = (dir.path().join("a.txt"), dir.path().join("staged"));
        std::fs::write(&target, b"planned over").unwrap();
        let planned = Node::file(ContentHash::of(b"planned over"));
        std::fs::write(&target, b"edited meanwhile").unwrap();
        stage_bytes(tmp.clone(), b"from the server".to_vec(), true)
            .await
            .unwrap();
        let cache = StatCache::default();
        let err = put_in_place(&tmp, &target, || {
            unchanged(&target, "a.txt", Some(&planned), &cache)
        })
        .await
        .unwrap_err();
        assert!(matches!(err, OpError::ChangedMeanwhile), "{err:?}");
        assert!(err.will_retry());
        assert_eq!(std::fs::read(&target).unwrap(), b"edited meanwhile");
        assert!(!tmp.exists(), "the staged file is cleared");

        // Unchanged since planned: it lands.
        let now = Node::file(ContentHash::of(b"edited meanwhile"));
        stage_bytes(tmp.clone(), b"from the server".to_vec(), true)
            .await
            .unwrap();
        let parent = put_in_place(&tmp, &target, || {
            unchanged(&target, "a.txt", Some(&now), &cache)
        })
        .await
        .unwrap();
        assert_eq!(parent, dir.path());
        assert_eq!(std::fs::read(&target).unwrap(), b"from the server");
    }

    #[tokio::test]
    async fn a_file_created_meanwhile_where_none_was_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (target, tmp) = (dir.path().join("new.txt"), dir.path().join("staged"));
        stage_bytes(tmp.clone(), b"from the server".to_vec(), true)
            .await
            .unwrap();
        std::fs::write(&target, b"made here meanwhile").unwrap();
        let cache = StatCache::default();
        let err = put_in_place(&tmp, &target, || {
            unchanged(&target, "new.txt", None, &cache)
        })
        .await
        .unwrap_err();
        assert!(matches!(err, OpError::ChangedMeanwhile));
        assert_eq!(std::fs::read(&target).unwrap(), b"made here meanwhile");
    }
}

#[cfg(test)]
mod flush_tests {
    use super::reports_writeback_errors;

    #[test]
    fn syncfs_is_trusted_from_linux_5_8() {
        for (release, trusted) in [
            ("6.1.0-18-amd64", true),
            ("5.8.0", true),
            ("5.15.153.1-microsoft-standard-WSL2", true),
            ("5.4.0-150-generic", false),
            ("4.19.0", false),
            ("", false),
        ] {
            assert_eq!(reports_writeback_errors(release), trusted, "{release}");
        }
    }
}
