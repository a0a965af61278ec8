//! Streaming sync in a running daemon: a large new file another device
//! is still uploading is fetched into `.tessera/prefetch/` while it
//! uploads (`transfer::stream`), so that when its commit arrives the
//! download finds the file already there, checked and durable, and only
//! renames it into place. Nothing reaches the synced folder before the
//! commit: the commit goes through the usual plan and placement, and a
//! prefetched file is used only when the commit names its very hash.
//!
//! Only new paths are streamed: an edit of a file this device holds comes
//! down as patches against the blocks it already has, which costs far
//! fewer bytes than fetching every block of the new version ahead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tessera_proto::ContentHash;
use tessera_proto::block::CHUNKER;
use tokio::sync::watch;

use crate::remote::Remote;
use crate::transfer::Progress;
use crate::transfer::stream::fetch_pending;

/// Smaller files come down fast enough after their commit.
pub const MIN_STREAMED: u64 = 8 << 20;
/// Uploads fetched ahead at once.
const MOST_AT_ONCE: usize = 2;
/// A prefetched file no commit asked for is removed after this long.
const KEPT: Duration = Duration::from_secs(15 * 60);

/// What became of one prefetch: `None` while it runs, then whether the
/// file is there.
type Outcome = watch::Receiver<Option<bool>>;

/// The uploads a daemon fetches ahead; cheap to clone.
#[derive(Clone)]
pub struct Prefetches {
    dir: PathBuf,
    remote: Remote,
    progress: Progress,
    running: Arc<Mutex<HashMap<ContentHash, Outcome>>>,
    /// One per fetch under way, taken before its task starts.
    slots: Arc<tokio::sync::Semaphore>,
}

impl Prefetches {
    /// Fetches ahead into `dir` (emptied: a file left by an earlier run
    /// was never checked by this one).
    pub async fn new(dir: PathBuf, remote: Remote, progress: Progress) -> std::io::Result<Self> {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Self {
            dir,
            remote,
            progress,
            running: Arc::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(MOST_AT_ONCE)),
        })
    }

    fn running(&self) -> MutexGuard<'_, HashMap<ContentHash, Outcome>> {
        // The map stays whole whatever a panicking holder did.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn done_path(&self, hash: ContentHash) -> PathBuf {
        self.dir.join(hash.to_string())
    }

    /// Starts fetching the upload under way at `path` (a server path), if
    /// it is large enough to be worth it and not fetched already.
    pub fn start(&self, path: String) {
        // Taken here, not in the task: starts in a row see each other.
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            this.run(path).await;
            drop(slot);
        });
    }

    async fn run(&self, path: String) {
        let list = match self.remote.pending_list(&path).await {
            Ok(Some(list)) => list,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(path, error = %e, "cannot read the list of an upload under way");
                return;
            }
        };
        if list.size < MIN_STREAMED || list.chunker != CHUNKER {
            return;
        }
        let hash = list.content_hash;
        let (tx, rx) = watch::channel(None);
        {
            let mut running = self.running();
            if running.contains_key(&hash) {
                return;
            }
            running.insert(hash, rx);
        }
        self.prune().await;
        let part = self.dir.join(format!("{hash}.part"));
        tracing::info!(path, size = list.size, "fetching while it uploads");
        let ok = match fetch_pending(&self.remote, &list, &part, self.progress.clone()).await {
            Ok(()) => match tokio::fs::rename(&part, self.done_path(hash)).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(path, error = %e, "cannot keep a file fetched ahead");
                    false
                }
            },
            Err(e) => {
                tracing::info!(path, error = %e, "fetching ahead stopped; the file comes down after its commit");
                false
            }
        };
        if !ok {
            self.running().remove(&hash);
        }
        tx.send_replace(Some(ok));
    }

    /// Removes prefetched files no commit has asked for in a long while.
    async fn prune(&self) {
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else {
            return;
        };
        while let Ok(Some(e)) = entries.next_entry().await {
            let old = e
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > KEPT);
            let name = e.file_name().to_string_lossy().into_owned();
            if old && !name.ends_with(".part") {
                let _ = tokio::fs::remove_file(e.path()).await;
                if let Ok(hash) = name.parse::<ContentHash>() {
                    self.running().remove(&hash);
                }
            }
        }
    }

    /// Moves the file fetched ahead with content `hash` to `to`, waiting
    /// for a fetch still under way (the commit is in, so every block can
    /// be fetched now). False when there is none: the caller downloads.
    pub async fn take(&self, hash: ContentHash, to: &Path) -> bool {
        let outcome = self.running().get(&hash).cloned();
        let Some(mut outcome) = outcome else {
            return false;
        };
        let ok = matches!(
            outcome.wait_for(|o| o.is_some()).await.as_deref(),
            Ok(Some(true))
        );
        self.running().remove(&hash);
        ok && tokio::fs::rename(self.done_path(hash), to).await.is_ok()
    }
}
