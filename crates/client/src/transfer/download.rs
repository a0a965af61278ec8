//! Downloads of one file: streamed whole, or assembled from blocks local
//! files already hold plus the blocks fetched. Either way the bytes land
//! in a file other than the target and are hash-checked before anything
//! is renamed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tessera_proto::api::BlockListResponse;
use tessera_proto::block::{MAX_BLOCK, chunker};
use tessera_proto::{BlockId, ContentHash};
use tokio::io::AsyncWriteExt;

use super::{Progress, blocking_err, fsync_parent};
use crate::remote::{ClientError, Download, Remote};

#[derive(Debug, Clone)]
pub struct DownloadReport {
    pub rev: i64,
    pub size: u64,
    pub content_hash: ContentHash,
}

fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id());
    target.with_file_name(format!(".{name}.{nonce:x}.tessera-part"))
}

/// Streams the rest of `body` into `file`, feeding `hasher`, and pushes
/// what is written to the disk as it goes ([`Writeback`]); returns the
/// bytes written. What arrived before an error stays written.
pub(super) async fn write_body(
    body: &mut Download,
    file: &mut tokio::fs::File,
    hasher: &mut blake3::Hasher,
    progress: &Progress,
) -> Result<u64, ClientError> {
    let mut written = 0u64;
    let mut writeback = Writeback::new();
    let streamed = async {
        while let Some(chunk) = body.chunk().await? {
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
            written += chunk.len() as u64;
            progress(chunk.len() as u64);
            writeback.wrote(file, chunk.len() as u64).await?;
        }
        Ok::<_, ClientError>(())
    }
    .await;
    // Whatever stopped the stream, the sync under way is waited for: its
    // handle shares the file (and a part file's lock), and its failure is
    // what tells the caller the file's bytes are in doubt.
    writeback.finish().await?;
    streamed.map(|()| written)
}

/// A sync of a file being written failed. The kernel reports such a
/// failure once and may drop the pages it could not write, so the file's
/// bytes are in doubt even if a later sync succeeds: it must not be kept
/// (a resumable download's part is discarded, not resumed).
#[derive(Debug, thiserror::Error)]
#[error("could not write the download to the disk: {0}")]
pub(super) struct NotDurable(std::io::Error);

/// `e` as the error of a failed sync ([`NotDurable`]).
pub(super) fn not_durable(e: std::io::Error) -> ClientError {
    ClientError::Io(std::io::Error::new(e.kind(), NotDurable(e)))
}

/// Whether `e` is a failed sync's ([`NotDurable`]).
pub(super) fn is_not_durable(e: &ClientError) -> bool {
    matches!(e, ClientError::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<NotDurable>()))
}

/// Downloads `remote_path` (revision `rev`, or the current one) to `local`.
pub async fn download_file(
    remote: &Remote,
    remote_path: &str,
    rev: Option<i64>,
    local: &Path,
    progress: Progress,
) -> Result<DownloadReport, ClientError> {
    let tmp = temp_beside(local);
    let got = download_into(remote, remote_path, rev, &tmp, progress).await?;
    let placed = async {
        tokio::fs::rename(&tmp, local).await?;
        fsync_parent(local).await
    }
    .await;
    if let Err(e) = placed {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e.into());
    }
    Ok(got)
}

/// Streams `remote_path` (revision `rev`, or the current one) into a new
/// file `out`, checks the content hash and fsyncs it. `out` is removed if
/// anything fails; renaming it into place is the caller's part.
pub async fn download_into(
    remote: &Remote,
    remote_path: &str,
    rev: Option<i64>,
    out: &Path,
    progress: Progress,
) -> Result<DownloadReport, ClientError> {
    let mut body = remote.content(remote_path, rev).await?;
    let (expected, rev) = (body.content_hash, body.rev);
    let result = async {
        let mut file = tokio::fs::File::create(out).await?;
        let mut hasher = blake3::Hasher::new();
        let size = write_body(&mut body, &mut file, &mut hasher, &progress).await?;
        file.flush().await?;
        let got = ContentHash::from(hasher.finalize());
        if got != expected {
            return Err(ClientError::Integrity(format!(
                "{remote_path} arrived damaged (hash {got}, expected {expected}); nothing was written"
            )));
        }
        file.sync_all().await?;
        Ok(DownloadReport {
            rev,
            size,
            content_hash: got,
        })
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(out).await;
    }
    result
}

/// What a delta download fetched.
#[derive(Debug, Clone)]
pub struct DeltaReport {
    pub download: DownloadReport,
    /// Plain bytes of blocks that came from the server, whole or patched.
    pub fetched: u64,
    /// Plain bytes reused from local files.
    pub reused: u64,
    /// Plain bytes of blocks rebuilt from a patch against a local block.
    pub patched: u64,
}

/// Where a block can be read locally: file, offset, length.
pub type LocalSite = (PathBuf, u64, u64);

/// Where each block of the local file `file` lies, cut by the same rules
/// as on the server. Empty if the file cannot be read.
pub async fn sites_in_file(file: &Path) -> Result<HashMap<BlockId, LocalSite>, ClientError> {
    let path = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let Ok(f) = std::fs::File::open(&path) else {
            return HashMap::new();
        };
        chunker(f)
            .map_while(Result::ok)
            .map(|c| {
                (
                    BlockId::of(&c.data),
                    (path.clone(), c.offset, c.length as u64),
                )
            })
            .collect()
    })
    .await
    .map_err(blocking_err)
}

/// Reads a block from a local site, if it still holds that block.
async fn read_site(id: BlockId, site: LocalSite) -> Result<Option<Vec<u8>>, ClientError> {
    tokio::task::spawn_blocking(move || -> Option<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let (path, offset, len) = site;
        if len > MAX_BLOCK as u64 {
            return None;
        }
        let mut f = std::fs::File::open(&path).ok()?;
        f.seek(SeekFrom::Start(offset)).ok()?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).ok()?;
        // The file may have changed since it was indexed.
        (BlockId::of(&buf) == id).then_some(buf)
    })
    .await
    .map_err(blocking_err)
}

/// Blocks fetched at once while assembling: enough to keep the link and a
/// core busy, bounded so memory stays at a few blocks (each ≤ 16 MiB).
const PARALLEL_FETCHES: usize = 4;

enum Source {
    Local,
    Patched,
    Fetched,
}

/// One block: from a local site that still holds it, else as a patch
/// against a local block it replaced (`base`), else whole.
async fn obtain(
    remote: Remote,
    id: BlockId,
    sites: Vec<LocalSite>,
    base: Option<(BlockId, LocalSite)>,
) -> Result<(Vec<u8>, Source), ClientError> {
    for site in sites {
        if let Some(data) = read_site(id, site).await? {
            return Ok((data, Source::Local));
        }
    }
    if let Some((base_id, site)) = base
        && let Some(old) = read_site(base_id, site).await?
    {
        match remote.get_block_patched(&id, &base_id, old).await {
            Ok(data) => return Ok((data, Source::Patched)),
            Err(e) => {
                tracing::debug!(block = %id, base = %base_id, error = %e, "patch failed: fetching the whole block");
            }
        }
    }
    Ok((remote.get_block(&id).await?, Source::Fetched))
}

/// Assembles the revision described by `list` into `out`, taking each
/// block from a local site that still holds it, else as a patch against
/// the local block it replaced (`bases`), else fetching it whole
/// (compressed, as stored). Several blocks are on their way at once and
/// are written in order. The result is checked against the revision's
/// content hash.
pub async fn download_assembling(
    remote: &Remote,
    list: &BlockListResponse,
    sites: &HashMap<BlockId, Vec<LocalSite>>,
    bases: &HashMap<BlockId, (BlockId, LocalSite)>,
    out: &Path,
    progress: Progress,
) -> Result<DeltaReport, ClientError> {
    use futures::StreamExt;
    let remote_path = &list.entry.path;
    let rev = list.entry.rev.unwrap_or(0);
    let expected = list
        .entry
        .content_hash
        .ok_or_else(|| ClientError::Integrity(format!("{remote_path} has no content hash")))?;
    let result = async {
        let mut file = tokio::fs::File::create(out).await?;
        let mut hasher = blake3::Hasher::new();
        let mut report = DeltaReport {
            download: DownloadReport { rev, size: 0, content_hash: expected },
            fetched: 0,
            reused: 0,
            patched: 0,
        };
        // Owned futures, made up front: a stream borrowing through a
        // closure would not be `Send` for every lifetime.
        let jobs: Vec<_> = list
            .blocks
            .iter()
            .map(|b| {
                obtain(
                    remote.clone(),
                    b.id,
                    sites.get(&b.id).cloned().unwrap_or_default(),
                    bases.get(&b.id).cloned(),
                )
            })
            .collect();
        let mut blocks = futures::stream::iter(jobs).buffered(PARALLEL_FETCHES);
        let mut writeback = Writeback::new();
        while let Some(block) = blocks.next().await {
            let (data, source) = block?;
            let len = data.len() as u64;
            match source {
                Source::Local => report.reused += len,
                Source::Patched => {
                    report.patched += len;
                    report.fetched += len;
                }
                Source::Fetched => report.fetched += len,
            }
            hasher.update(&data);
            file.write_all(&data).await?;
            report.download.size += len;
            progress(len);
            writeback.wrote(&file, len).await?;
        }
        file.flush().await?;
        writeback.finish().await?;
        let got = ContentHash::from(hasher.finalize());
        if got != expected {
            return Err(ClientError::Integrity(format!(
                "{remote_path} assembled wrong (hash {got}, expected {expected}); nothing was written"
            )));
        }
        file.sync_all().await?;
        Ok(report)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(out).await;
    }
    result
}

/// Bytes written between two pushes of the file's data to the disk.
const WRITEBACK_EVERY: u64 = 64 << 20;

/// Pushes a large download's data to the disk while it is still arriving.
/// The kernel would hold gigabytes of dirty pages until the final fsync
/// and then write them all while the caller waits; a sync of what is
/// written so far, on its own thread every 64 MiB, overlaps that writing
/// with the transfer, so the final fsync has little left to do.
pub(super) struct Writeback {
    /// A handle of the file's own, taken at the first sync: a small
    /// download never needs one.
    file: Option<std::sync::Arc<std::fs::File>>,
    since: u64,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Writeback {
    pub(super) fn new() -> Self {
        Self {
            file: None,
            since: 0,
            running: None,
        }
    }

    /// Counts `len` more bytes written to `file`, and starts a sync of it
    /// when enough are.
    pub(super) async fn wrote(
        &mut self,
        file: &tokio::fs::File,
        len: u64,
    ) -> Result<(), ClientError> {
        self.since += len;
        if self.since < WRITEBACK_EVERY || self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return Ok(());
        }
        if let Some(done) = self.running.take() {
            done.await.map_err(blocking_err)?.map_err(not_durable)?;
        }
        let handle = match &self.file {
            Some(handle) => handle.clone(),
            None => {
                let handle = std::sync::Arc::new(file.try_clone().await?.into_std().await);
                self.file = Some(handle.clone());
                handle
            }
        };
        self.since = 0;
        self.running = Some(tokio::task::spawn_blocking(move || handle.sync_data()));
        Ok(())
    }

    /// Waits for a sync still running; the caller's own fsync follows.
    pub(super) async fn finish(mut self) -> Result<(), ClientError> {
        if let Some(done) = self.running.take() {
            done.await.map_err(blocking_err)?.map_err(not_durable)?;
        }
        self.file = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed sync is told apart from any other error on the disk, so
    /// a resumable download discards its part for it.
    #[test]
    fn a_failed_sync_is_told_apart_from_other_disk_errors() {
        let failed = not_durable(std::io::Error::other("EIO"));
        assert!(is_not_durable(&failed));
        assert!(
            failed
                .to_string()
                .contains("could not write the download to the disk")
        );
        assert!(!is_not_durable(&ClientError::Io(std::io::Error::other(
            "disk full"
        ))));
        assert!(!is_not_durable(&ClientError::Integrity("damaged".into())));
    }
}
