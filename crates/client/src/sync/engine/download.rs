//! The download pipeline: fetch → stage → re-check → place. Every file
//! that comes down takes it, whichever way its bytes are fetched:
//! - a batch: small files (one block each, whose id is the file's hash),
//!   a group at a time in one request;
//! - one by one: larger files, side by side, each taking the blocks local
//!   files already hold from disk and fetching the rest.
//!
//! Either way the bytes are staged in `.tessera/tmp/`, hash-checked and
//! made durable; then each file is placed only if the disk still holds
//! what the plan saw there, the folders that received files are made
//! durable, and only then are the files recorded as synced. On Linux a
//! batch is made durable by one `syncfs` for all its files, and the
//! folders by one more, rather than an fsync for each file and folder.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use tessera_proto::api::BlockListResponse;
use tessera_proto::{BlockId, ContentHash};

use super::super::error::OpError;
use super::super::prefetch::Prefetches;
use super::super::scan::{self, STATE_DIR};
use super::super::state::{BlockIndex, Stat};
use super::super::tree::{Node, NodeKind};
use super::disk::{Flush, flush_at_once, fsync_dir, put_in_place, stage_bytes};
use super::{Report, Syncer, rel_to_remote};
use crate::remote::Remote;
use crate::transfer::bases::overlapping_bases;
use crate::transfer::{LocalSite, Progress, download_assembling, sites_in_file};

/// Small files written and fsynced at once when they come down.
const PARALLEL_FSYNCS: usize = 16;
/// Large files fetched at once.
const PARALLEL_FETCHES: usize = 3;
/// Bounds of one batch of small files: count, and bytes held in memory.
const BATCH_FILES: usize = 1000;
const BATCH_BYTES: u64 = 8 << 20;

/// A file to bring down: its path, the revision, and what the disk held
/// there when the plan was made (`None`: nothing).
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    pub path: String,
    pub rev: i64,
    pub local: Option<Node>,
}

/// A download fetched into `.tessera/tmp/`, checked and fsynced, not yet
/// in place.
struct Staged {
    want: Wanted,
    tmp: PathBuf,
    content_hash: ContentHash,
    rev: i64,
    size: u64,
    /// Plain bytes fetched from the server, and taken from local files.
    fetched: u64,
    reused: u64,
    /// The file's blocks (id, length) for the local block index. Left
    /// empty for batched small files: their one block is found again by
    /// their content hash, and a transaction per small file costs more
    /// than the hint is worth.
    blocks: Vec<(BlockId, u64)>,
}

/// What a fetch did with one file.
type Outcome = (Wanted, Result<Staged, OpError>);

impl Syncer {
    /// Brings down small files a batch at a time.
    pub(super) async fn download_batched(
        &mut self,
        wanted: Vec<Wanted>,
        report: &mut Report,
        stuck: &mut Vec<String>,
    ) {
        let mut rest = wanted.as_slice();
        while !rest.is_empty() {
            let mut end = 0;
            let mut bytes = 0;
            while end < rest.len() && end < BATCH_FILES && bytes < BATCH_BYTES {
                bytes += self.remote_size(&rest[end].path);
                end += 1;
            }
            let (group, tail) = rest.split_at(end);
            rest = tail;
            let fetched = self.fetch_batch(group).await;
            self.place_all(fetched, report, stuck).await;
        }
    }

    /// Brings down files one by one, several fetched side by side.
    pub(super) async fn download_each(
        &mut self,
        wanted: Vec<Wanted>,
        report: &mut Report,
        stuck: &mut Vec<String>,
    ) {
        let mut outcomes = Vec::new();
        let mut fetches = Vec::new();
        for w in wanted {
            // Nothing is fetched for a file already changed here.
            match self.unchanged(&w.path, w.local.as_ref()) {
                Ok(()) => fetches.push(self.fetch_one(w)),
                Err(e) => outcomes.push((w, Err(e))),
            }
        }
        let fetched: Vec<Outcome> = futures::stream::iter(fetches)
            .buffered(PARALLEL_FETCHES)
            .collect()
            .await;
        outcomes.extend(fetched);
        self.place_all(outcomes, report, stuck).await;
    }

    fn remote_size(&self, path: &str) -> u64 {
        self.remote_tree.get(path).and_then(|n| n.size).unwrap_or(0)
    }

    fn staging_path(&self) -> PathBuf {
        self.root
            .join(STATE_DIR)
            .join("tmp")
            .join(format!("dl-{}", rand::random::<u64>()))
    }

    /// Fetches a group of small files in one request and stages each; if
    /// the request fails, each is fetched on its own instead, with its own
    /// error.
    async fn fetch_batch(&self, group: &[Wanted]) -> Vec<Outcome> {
        let mut ids: Vec<BlockId> = group
            .iter()
            .filter_map(|w| self.remote_tree.get(&w.path))
            .filter(|n| n.size != Some(0))
            .filter_map(|n| n.hash.map(|h| BlockId(h.0)))
            .collect();
        ids.sort();
        ids.dedup();
        let blocks: HashMap<BlockId, Vec<u8>> = match self.remote.fetch_blocks(&ids).await {
            Ok(b) => b.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "batch block fetch failed");
                let mut outcomes = Vec::new();
                for w in group {
                    outcomes.push(match self.unchanged(&w.path, w.local.as_ref()) {
                        Ok(()) => self.fetch_one(w.clone()).await,
                        Err(e) => (w.clone(), Err(e)),
                    });
                }
                return outcomes;
            }
        };
        let tmp = self.root.join(STATE_DIR).join("tmp");
        // Opened before any write, so it sees every writeback error since.
        let flush = match flush_at_once() {
            true => Some(Flush::open(&tmp).await),
            false => None,
        };
        let stages: Vec<_> = group
            .iter()
            .filter_map(|w| {
                let data = self.batched_bytes(w, &blocks)?;
                let staged = data.and_then(|d| {
                    self.unchanged(&w.path, w.local.as_ref())?;
                    Ok(d)
                });
                Some(self.stage_batched(w.clone(), staged))
            })
            .collect();
        let mut outcomes: Vec<Outcome> = futures::stream::iter(stages)
            .buffered(PARALLEL_FSYNCS)
            .collect()
            .await;
        if let Some(flush) = flush
            && outcomes.iter().any(|(_, o)| o.is_ok())
        {
            let flushed = match flush {
                Ok(flush) => flush.run().await,
                Err(e) => Err(e),
            };
            if let Err(e) = flushed {
                // Nothing staged can be vouched for: none is placed.
                let why = e.to_string();
                for (_, outcome) in &mut outcomes {
                    if let Ok(staged) = outcome {
                        let _ = tokio::fs::remove_file(&staged.tmp).await;
                        *outcome = Err(OpError::Io(std::io::Error::other(why.clone())));
                    }
                }
            }
        }
        outcomes
    }

    /// The bytes of a small file from a batch answer; `None` if the remote
    /// tree no longer has the file (the next round plans afresh).
    fn batched_bytes(
        &self,
        w: &Wanted,
        blocks: &HashMap<BlockId, Vec<u8>>,
    ) -> Option<Result<Vec<u8>, OpError>> {
        let node = self.remote_tree.get(&w.path)?;
        match (node.size, node.hash) {
            (Some(0), _) => Some(Ok(Vec::new())),
            (_, Some(h)) => Some(blocks.get(&BlockId(h.0)).cloned().ok_or_else(|| {
                OpError::Io(std::io::Error::other("the server did not send its block"))
            })),
            _ => None,
        }
    }

    /// Writes and fsyncs one file of a batch into `.tessera/tmp/`.
    fn stage_batched(
        &self,
        want: Wanted,
        data: Result<Vec<u8>, OpError>,
    ) -> impl std::future::Future<Output = Outcome> + use<> {
        let tmp = self.staging_path();
        let rev = self
            .remote_tree
            .get(&want.path)
            .and_then(|n| n.rev)
            .unwrap_or(want.rev);
        async move {
            let data = match data {
                Ok(d) => d,
                Err(e) => return (want, Err(e)),
            };
            let (size, content_hash) = (data.len() as u64, ContentHash::of(&data));
            if let Err(e) = stage_bytes(tmp.clone(), data, !flush_at_once()).await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return (want, Err(e.into()));
            }
            let staged = Staged {
                want: want.clone(),
                tmp,
                content_hash,
                rev,
                size,
                fetched: size,
                reused: 0,
                blocks: Vec::new(),
            };
            (want, Ok(staged))
        }
    }

    /// Fetches revision `rev` of one file into `.tessera/tmp/`, taking
    /// every block some local file holds (the older copy at its path, or
    /// any file the block index knows) from disk and fetching the rest.
    /// The synced folder is not touched.
    fn fetch_one(&self, want: Wanted) -> impl std::future::Future<Output = Outcome> + use<> {
        let remote = self.remote.clone();
        let root = self.root.clone();
        let index = self.state.block_index();
        let old = want
            .local
            .as_ref()
            .is_some_and(|n| n.kind == NodeKind::File)
            .then(|| self.disk(&want.path));
        let tmp = self.staging_path();
        let prefetch = self.prefetch.clone();
        let live = self.status.live();
        let progress: Progress = Arc::new(move |n| {
            live.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        });
        async move {
            let fetch = Fetch {
                remote: &remote,
                root: &root,
                index: &index,
                old: old.as_deref(),
                prefetch: prefetch.as_ref(),
                progress,
            };
            let staged = fetch.stage(&want, tmp).await;
            (want, staged)
        }
    }

    /// Places each staged file, fsyncs the folders that received one, then
    /// records those files as synced; reports what could not be done.
    async fn place_all(
        &mut self,
        outcomes: Vec<Outcome>,
        report: &mut Report,
        stuck: &mut Vec<String>,
    ) {
        let mut placed = Vec::new();
        let mut dirs = BTreeSet::new();
        let many = outcomes.iter().filter(|(_, o)| o.is_ok()).count() > 1;
        // Opened before the renames, so it sees every writeback error since.
        let flush = match flush_at_once() && many {
            true => Some(Flush::open(&self.root).await),
            false => None,
        };
        for (want, outcome) in outcomes {
            let done = match outcome {
                Ok(staged) => self.place(&staged).await.map(|placed| (staged, placed)),
                Err(e) => Err(e),
            };
            match done {
                Ok((staged, (dir, stat))) => {
                    dirs.insert(dir.clone());
                    placed.push((staged, dir, stat));
                }
                Err(e) => stuck.push(format!("download {}: {e}", want.path)),
            }
        }
        let mut unflushed = BTreeSet::new();
        if let Some(flush) = flush.filter(|_| dirs.len() > 1) {
            let flushed = match flush {
                Ok(flush) => flush.run().await,
                Err(e) => Err(e),
            };
            if let Err(e) = flushed {
                stuck.push(format!("flushing {}: {e}", self.root.display()));
                unflushed = dirs;
            }
        } else {
            for dir in dirs {
                if let Err(e) = fsync_dir(&dir).await {
                    stuck.push(format!("flushing {}: {e}", dir.display()));
                    unflushed.insert(dir);
                }
            }
        }
        for (staged, dir, stat) in placed {
            // Not recorded: the next round finds it in place and agrees.
            if !unflushed.contains(&dir) {
                self.record_download(staged, stat, report).await;
            }
        }
    }

    /// Re-checks the disk and renames one staged file into place; the
    /// folder it went into, and its stat taken right after the rename (an
    /// edit made later must not be cached as the downloaded content).
    async fn place(&self, staged: &Staged) -> Result<(PathBuf, Option<Stat>), OpError> {
        let want = &staged.want;
        let target = self.disk(&want.path);
        let dir = put_in_place(&staged.tmp, &target, || {
            self.unchanged(&want.path, want.local.as_ref())
        })
        .await?;
        let stat = match tokio::fs::symlink_metadata(&target).await {
            Ok(meta) => Some(scan::stat_of(&meta)),
            Err(e) => {
                tracing::warn!(path = want.path, error = %e, "cannot stat a file just placed");
                None
            }
        };
        Ok((dir, stat))
    }

    /// Notes a file now in place: its stat (taken when it was placed) for
    /// the next scan, the synced tree, the block index, the report.
    async fn record_download(&mut self, staged: Staged, stat: Option<Stat>, report: &mut Report) {
        let path = &staged.want.path;
        if let Some(stat) = stat {
            self.cache.insert(path.clone(), (stat, staged.content_hash));
        }
        let node = self.remote_tree.get(path).cloned().unwrap_or(Node {
            kind: NodeKind::File,
            hash: Some(staged.content_hash),
            rev: Some(staged.rev),
            id: None,
            size: Some(staged.size),
        });
        self.synced.insert(
            path.clone(),
            Node {
                hash: Some(staged.content_hash),
                ..node
            },
        );
        report.bytes_fetched += staged.fetched;
        report.bytes_reused += staged.reused;
        report.downloaded += 1;
        if !staged.blocks.is_empty() {
            self.index_file(path, &staged.blocks).await;
        }
    }

    /// Brings down one file through the whole pipeline.
    pub(super) async fn download_one(
        &mut self,
        want: Wanted,
        report: &mut Report,
    ) -> Result<(), OpError> {
        self.unchanged(&want.path, want.local.as_ref())?;
        let (_, staged) = self.fetch_one(want).await;
        let staged = staged?;
        let (dir, stat) = self.place(&staged).await?;
        fsync_dir(&dir).await?;
        self.record_download(staged, stat, report).await;
        Ok(())
    }
}

/// What fetching one file needs, held apart from the syncer so that
/// several fetches run side by side.
struct Fetch<'a> {
    remote: &'a Remote,
    root: &'a Path,
    index: &'a BlockIndex,
    /// The older copy of the file on disk, if there is one.
    old: Option<&'a Path>,
    /// Files fetched while they were uploaded, when a daemon runs.
    prefetch: Option<&'a Prefetches>,
    progress: Progress,
}

impl Fetch<'_> {
    async fn stage(&self, want: &Wanted, tmp: PathBuf) -> Result<Staged, OpError> {
        let remote_path = rel_to_remote(&want.path);
        let list = self.remote.block_list(&remote_path, Some(want.rev)).await?;
        let blocks: Vec<(BlockId, u64)> = list.blocks.iter().map(|b| (b.id, b.size)).collect();
        if let (Some(prefetch), Some(hash)) = (self.prefetch, list.entry.content_hash)
            && prefetch.take(hash, &tmp).await
        {
            // Fetched while it uploaded, checked against this very hash
            // and made durable: only its placing is left.
            let size = list.entry.size.unwrap_or(0);
            return Ok(Staged {
                want: want.clone(),
                tmp,
                content_hash: hash,
                rev: list.entry.rev.unwrap_or(want.rev),
                size,
                fetched: size,
                reused: 0,
                blocks,
            });
        }
        let (sites, old_layout) = self.local_sites(&want.path, &list).await;
        // A block found nowhere locally can come as a patch against the
        // block of the older copy it replaced.
        let bases: HashMap<BlockId, (BlockId, LocalSite)> = overlapping_bases(
            &blocks,
            &old_layout
                .iter()
                .map(|(id, (_, offset, len))| (*id, *offset, *len))
                .collect::<Vec<_>>(),
            |id| !sites.contains_key(id),
        )
        .into_iter()
        .filter_map(|(id, base)| Some((id, (base, old_layout.get(&base)?.clone()))))
        .collect();
        let d = download_assembling(
            self.remote,
            &list,
            &sites,
            &bases,
            &tmp,
            self.progress.clone(),
        )
        .await?;
        let (got, fetched, reused) = (d.download, d.fetched, d.reused);
        Ok(Staged {
            want: want.clone(),
            tmp,
            content_hash: got.content_hash,
            rev: got.rev,
            size: got.size,
            fetched,
            reused,
            blocks,
        })
    }

    /// Where each block of the older copy `old` (at `path`) lies: as the
    /// block index recorded it when that copy was synced (a download is
    /// planned only while the copy is unchanged since), else cut again.
    /// Either way each block is re-hashed when it is read.
    async fn old_layout(
        &self,
        path: &str,
        old: &Path,
    ) -> Result<HashMap<BlockId, LocalSite>, crate::remote::ClientError> {
        if let Ok(blocks) = self.index.blocks_of(path).await
            && !blocks.is_empty()
        {
            let mut at = 0;
            let mut layout = HashMap::new();
            for (id, len) in blocks {
                layout.entry(id).or_insert((old.to_path_buf(), at, len));
                at += len;
            }
            return Ok(layout);
        }
        sites_in_file(old).await
    }

    /// Every local place that may hold a block of `list`: the older copy
    /// at the same path (cut again, as it may have changed) and whatever
    /// the block index knows. Each site is re-hashed when it is read.
    /// Also returns where each block of the older copy lies.
    async fn local_sites(
        &self,
        path: &str,
        list: &BlockListResponse,
    ) -> (
        HashMap<BlockId, Vec<LocalSite>>,
        HashMap<BlockId, LocalSite>,
    ) {
        let ids: Vec<BlockId> = list.blocks.iter().map(|b| b.id).collect();
        let mut sites: HashMap<BlockId, Vec<LocalSite>> = HashMap::new();
        let mut in_old = HashMap::new();
        if let Some(old) = self.old
            && let Ok(found) = self.old_layout(path, old).await
        {
            in_old = found;
            for id in &ids {
                if let Some(site) = in_old.get(id) {
                    sites.entry(*id).or_default().push(site.clone());
                }
            }
        }
        match self.index.sites(&ids).await {
            Ok(found) => {
                for (id, places) in found {
                    let entry = sites.entry(id).or_default();
                    entry.extend(
                        places
                            .into_iter()
                            .map(|(p, o, l)| (self.root.join(p), o, l)),
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the local block index"),
        }
        (sites, in_old)
    }
}
