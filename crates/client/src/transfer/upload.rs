//! Upload of one file, block by block, sending only what the server lacks;
//! a block that replaced one of the base revision goes as an rsync delta
//! against it when that is smaller (see `bases`).
//! An interrupted upload run again sends only what the server still
//! lacks, since the question is asked afresh.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tessera_proto::api::{BlockRef, CommitRequest, Entry, Reuse};
use tessera_proto::block::{CHUNKER, MIN_BLOCK, chunker};
use tessera_proto::{BlockId, ContentHash};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::bases::{overlapping_bases, with_offsets};
use super::{Progress, ZSTD_LEVEL, blocking_err};
use crate::remote::{ClientError, Remote};

/// Blocks uploaded at once.
pub const PARALLEL_UPLOADS: usize = 4;
/// Block bytes read for sending but not yet acknowledged. Blocks range from
/// 1 to 16 MiB, so a count of blocks alone would let memory swing sixteen-fold.
const UPLOAD_BUDGET: u32 = 24 << 20;

#[derive(Debug, Clone)]
pub struct UploadReport {
    pub entry: Entry,
    pub size: u64,
    pub blocks_total: usize,
    pub blocks_sent: usize,
    /// Block bytes sent, after compression.
    pub bytes_sent: u64,
    /// The file's blocks in order: id and plain length.
    pub blocks: Vec<(BlockId, u64)>,
}

struct Cut {
    blocks: Vec<(BlockId, u64)>,
    hash: ContentHash,
    size: u64,
}

/// Cuts and hashes the file in one read: the content hash runs on a
/// thread of its own beside the cutting and block hashing, so the pass
/// takes about the longer of the two rather than their sum.
fn cut_file(path: &Path) -> Result<Cut, ClientError> {
    let file = std::fs::File::open(path)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(2);
    std::thread::scope(|scope| {
        let content = scope.spawn(move || {
            let mut hasher = blake3::Hasher::new();
            for data in rx {
                hasher.update(&data);
            }
            ContentHash::from(hasher.finalize())
        });
        let mut blocks = Vec::new();
        let mut size = 0;
        let cut = || -> Result<(), ClientError> {
            for chunk in chunker(file) {
                let chunk =
                    chunk.map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
                let data = Arc::new(chunk.data);
                if tx.send(data.clone()).is_err() {
                    break;
                }
                blocks.push((BlockId::of(&data), chunk.length as u64));
                size += chunk.length as u64;
            }
            Ok(())
        };
        let cutting = cut();
        drop(tx);
        let hash = content
            .join()
            .map_err(|_| ClientError::Integrity("the content hash thread failed".into()))?;
        cutting?;
        Ok(Cut { blocks, hash, size })
    })
}

/// What a new version of a file is based on.
#[derive(Debug, Clone)]
pub struct Base {
    pub rev: i64,
    /// The base revision's blocks (id, length) in order, if the caller
    /// knows them; else they are asked of the server when they can help.
    /// A wrong list costs a retry, never a wrong file: the server checks
    /// every stretch it is told to reuse.
    pub blocks: Option<Vec<(BlockId, u64)>>,
}

/// Uploads `local` to `remote_path`, sending only blocks the server lacks.
pub async fn upload_file(
    remote: &Remote,
    local: &Path,
    remote_path: &str,
    base_rev: Option<i64>,
    progress: Progress,
) -> Result<UploadReport, ClientError> {
    let base = base_rev.map(|rev| Base { rev, blocks: None });
    upload_edit(remote, local, remote_path, base, progress).await
}

/// Uploads `local` as a new version of `base`: blocks the base revision
/// has are neither asked about nor listed again, and each changed block
/// goes as a delta against the block it replaced when that is smaller.
pub async fn upload_edit(
    remote: &Remote,
    local: &Path,
    remote_path: &str,
    base: Option<Base>,
    progress: Progress,
) -> Result<UploadReport, ClientError> {
    let path = local.to_path_buf();
    let cut = tokio::task::spawn_blocking(move || cut_file(&path))
        .await
        .map_err(blocking_err)??;
    let ids: Vec<BlockId> = cut.blocks.iter().map(|(id, _)| *id).collect();
    let base_blocks = base_blocks(remote, remote_path, base.as_ref(), &cut).await;
    let in_base: HashSet<BlockId> = base_blocks.iter().map(|(id, _)| *id).collect();
    let mut seen = HashSet::new();
    let ask: Vec<BlockId> = ids
        .iter()
        .filter(|id| !in_base.contains(id) && seen.insert(**id))
        .copied()
        .collect();
    let mut missing: HashSet<BlockId> = remote.missing(&ask).await?.into_iter().collect();
    let refs = |blocks: &[(BlockId, u64)]| -> Vec<BlockRef> {
        blocks
            .iter()
            .map(|&(id, size)| BlockRef { id, size })
            .collect()
    };
    let all = refs(&cut.blocks);
    let (reuse, listed) = if base_blocks.is_empty() {
        (Vec::new(), all.clone())
    } else {
        // A run of one block costs about what listing it does.
        Reuse::find(&refs(&base_blocks), &all, 2)
    };
    let mut req = CommitRequest {
        path: remote_path.to_owned(),
        base_rev: base.as_ref().map(|b| b.rev),
        size: cut.size,
        content_hash: cut.hash,
        chunker: CHUNKER.to_owned(),
        blocks: listed,
        reuse,
    };
    let report = |entry, blocks_sent, bytes_sent| UploadReport {
        entry,
        size: cut.size,
        blocks_total: cut.blocks.len(),
        blocks_sent,
        bytes_sent,
        blocks: cut.blocks.clone(),
    };
    if !missing.is_empty() {
        // Committing before the blocks are up marks the file as pending on
        // the server (other devices see it syncing) and fails early on a
        // stale base or the size limit, before any block is sent.
        match commit(remote, &mut req, &all).await {
            Err(ClientError::Api {
                code: tessera_proto::ErrorCode::MissingBlocks,
                ..
            }) => {}
            Err(e) => return Err(e),
            Ok(entry) => return Ok(report(entry, 0, 0)),
        }
    }
    // Each changed block can go as a delta against the block it replaced.
    let bases = overlapping_bases(&cut.blocks, &with_offsets(&base_blocks), |id| {
        missing.contains(id)
    });
    let (mut blocks_sent, mut bytes_sent) = (0, 0);
    // A block this account held can be collected by the server between
    // the question and the commit (it was unreferenced for the whole grace
    // period), or a base list told by the caller may be out of date: the
    // commit then names the blocks, and they are sent.
    let mut attempt = 0;
    loop {
        if !missing.is_empty() {
            let (blocks, bytes) =
                send_blocks(remote, local, &cut, missing, &bases, progress.clone()).await?;
            blocks_sent += blocks;
            bytes_sent += bytes;
        }
        match commit(remote, &mut req, &all).await {
            Err(ClientError::Api {
                code: tessera_proto::ErrorCode::MissingBlocks,
                ..
            }) if attempt < 2 => {
                attempt += 1;
                missing = remote.missing(&ids).await?.into_iter().collect();
            }
            answer => return Ok(report(answer?, blocks_sent, bytes_sent)),
        }
    }
}

/// Commits `req`; if the server cannot reuse the stretches it names (the
/// base revision is gone, the list told was stale), commits again with
/// every block listed, and keeps it so from then on.
async fn commit(
    remote: &Remote,
    req: &mut CommitRequest,
    all: &[BlockRef],
) -> Result<Entry, ClientError> {
    match remote.commit(req).await {
        Err(ClientError::Api {
            code: tessera_proto::ErrorCode::BadRequest,
            message,
            ..
        }) if !req.reuse.is_empty() => {
            tracing::debug!(path = %req.path, %message, "listing every block");
            req.reuse.clear();
            req.blocks = all.to_vec();
            remote.commit(req).await
        }
        answer => answer,
    }
}

/// The base revision's blocks: as told, else asked of the server for a
/// file of more than one block (for one block, the list saves nothing).
async fn base_blocks(
    remote: &Remote,
    remote_path: &str,
    base: Option<&Base>,
    cut: &Cut,
) -> Vec<(BlockId, u64)> {
    match base {
        Some(Base {
            blocks: Some(blocks),
            ..
        }) => blocks.clone(),
        // Revision 0 is a new file: no earlier version to edit.
        Some(Base { rev, blocks: None }) if *rev > 0 && cut.size > MIN_BLOCK as u64 => {
            match remote.block_list(remote_path, Some(*rev)).await {
                Ok(list) => list.blocks.iter().map(|b| (b.id, b.size)).collect(),
                Err(e) => {
                    tracing::debug!(path = remote_path, rev, error = %e, "no block list of the base revision");
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    }
}

/// A block read for sending, holding its share of the memory budget until
/// the server has it.
struct Outgoing {
    id: BlockId,
    body: Body,
    permit: OwnedSemaphorePermit,
}

enum Body {
    /// Whole: compressed by the sender, so several compress at once.
    Plain(Vec<u8>),
    /// Plain, to be sent as a delta against the base if that is smaller.
    Edited { plain: Vec<u8>, base: BlockId },
}

/// Cuts the file again and sends the blocks in `missing`, several in
/// flight; the blocks must come out as `cut` found them. Returns the count
/// and bytes sent (compressed blocks and deltas).
async fn send_blocks(
    remote: &Remote,
    local: &Path,
    cut: &Cut,
    missing: HashSet<BlockId>,
    bases: &HashMap<BlockId, BlockId>,
    progress: Progress,
) -> Result<(usize, u64), ClientError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Outgoing>(PARALLEL_UPLOADS);
    let path = local.to_path_buf();
    let expected = cut.blocks.clone();
    let report = progress.clone();
    let runtime = tokio::runtime::Handle::current();
    let bases_for_reader = bases.clone();
    let producer = tokio::task::spawn_blocking(move || {
        read_blocks(
            &path,
            &expected,
            &missing,
            &bases_for_reader,
            tx,
            &report,
            &runtime,
        )
    });

    let sizes: HashMap<BlockId, u64> = cut.blocks.iter().copied().collect();
    let pace = Arc::new(Pace::new());
    let sent = tokio_stream_from(rx)
        .map(|out| {
            let remote = remote.clone();
            let progress = progress.clone();
            let plain = sizes.get(&out.id).copied().unwrap_or(0);
            let pace = pace.clone();
            async move {
                let len = match out.body {
                    Body::Plain(plain) => {
                        let level = pace.level();
                        let (codec, body) = tokio::task::spawn_blocking(move || {
                            tessera_proto::block::compress_or_raw(plain, level)
                        })
                        .await
                        .map_err(blocking_err)?;
                        let len = body.len() as u64;
                        remote.put_block(&out.id, codec, Bytes::from(body)).await?;
                        pace.sent(len);
                        len
                    }
                    Body::Edited { plain, base } => {
                        send_edited(&remote, out.id, base, plain).await?
                    }
                };
                // The permit is held until the server has the block: the
                // budget bounds bytes not yet acknowledged, not bytes handed
                // to the socket.
                drop(out.permit);
                progress(plain);
                Ok::<u64, ClientError>(len)
            }
        })
        .buffer_unordered(PARALLEL_UPLOADS)
        .try_fold((0usize, 0u64), |(n, bytes), len| async move {
            Ok((n + 1, bytes + len))
        })
        .await;
    let produced = producer.await.map_err(blocking_err)?;
    let sent = sent?;
    produced?;
    Ok(sent)
}

/// zstd level while the server takes blocks faster than `SLOW_LINK`: on
/// a fast link compression is what everything waits for, and level 1 runs
/// about twice as fast as level 3 for about a tenth more bytes (a 1 GiB
/// file of real files: 8.8-9.5 s against 10.6-11.6 s device to device on
/// loopback, 454 against 403 MB).
const FAST_LINK_LEVEL: i32 = 1;
/// Compressed bytes a second below which the link, not the CPU, is what
/// an upload waits for, and the default level's smaller output pays.
const SLOW_LINK: u64 = 20_000_000;
/// Bytes sent before the pace is trusted.
const PACE_AFTER: u64 = 8 << 20;

/// The pace at which the server takes this upload's blocks, measured from
/// the first block sent, which chooses the zstd level of the next ones.
struct Pace {
    start: std::time::Instant,
    bytes: std::sync::atomic::AtomicU64,
}

impl Pace {
    fn new() -> Self {
        Self {
            start: std::time::Instant::now(),
            bytes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn sent(&self, len: u64) {
        self.bytes
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    }

    fn level(&self) -> i32 {
        let bytes = self.bytes.load(std::sync::atomic::Ordering::Relaxed);
        level_for(bytes, self.start.elapsed().as_secs_f64())
    }
}

/// The zstd level after `bytes` went up in `secs`.
fn level_for(bytes: u64, secs: f64) -> i32 {
    if bytes < PACE_AFTER || bytes as f64 >= SLOW_LINK as f64 * secs {
        FAST_LINK_LEVEL
    } else {
        ZSTD_LEVEL
    }
}

/// Sends an edited block as a delta against `base` when that is smaller
/// than the block compressed, else whole. Any trouble with the delta (no
/// signature, a refusal) falls back to the whole block. Returns bytes sent.
async fn send_edited(
    remote: &Remote,
    id: BlockId,
    base: BlockId,
    plain: Vec<u8>,
) -> Result<u64, ClientError> {
    let signature = match remote.block_signature(&base).await {
        Ok(sig) => Some(sig),
        Err(e) => {
            tracing::debug!(block = %id, base = %base, error = %e, "no signature: sending the whole block");
            None
        }
    };
    let signature_len = signature.as_ref().map_or(0, |s| s.len() as u64);
    let ((codec, whole), delta) = tokio::task::spawn_blocking(move || {
        let delta = signature
            .and_then(|sig| tessera_proto::delta::delta(&sig, &plain).ok())
            .map(|d| tessera_proto::block::compress_or_raw(d, ZSTD_LEVEL));
        (
            tessera_proto::block::compress_or_raw(plain, ZSTD_LEVEL),
            delta,
        )
    })
    .await
    .map_err(blocking_err)?;
    if let Some((delta_codec, delta)) = delta
        && delta.len() < whole.len()
    {
        let len = delta.len() as u64;
        match remote
            .put_block_delta(&id, &base, delta_codec, Bytes::from(delta))
            .await
        {
            Ok(_) => return Ok(signature_len + len),
            Err(e) => {
                tracing::warn!(block = %id, base = %base, error = %e, "delta refused: sending the whole block");
            }
        }
    }
    let len = whole.len() as u64;
    remote.put_block(&id, codec, Bytes::from(whole)).await?;
    Ok(signature_len + len)
}

/// The producer side of [`send_blocks`], on a blocking thread: reads and
/// compresses each block to send, within the memory budget.
fn read_blocks(
    path: &Path,
    expected: &[(BlockId, u64)],
    to_send: &HashSet<BlockId>,
    bases: &HashMap<BlockId, BlockId>,
    tx: tokio::sync::mpsc::Sender<Outgoing>,
    progress: &Progress,
    runtime: &tokio::runtime::Handle,
) -> Result<(), ClientError> {
    use std::io::{Read, Seek, SeekFrom};
    let budget = Arc::new(Semaphore::new(UPLOAD_BUDGET as usize));
    let mut sent = HashSet::new();
    let mut file = std::fs::File::open(path)?;
    // Only the blocks to send are read again, where the first pass found
    // them; each must still hash to its id, so what goes up is exactly
    // the version the first pass hashed.
    let mut offset = 0u64;
    for &(id, len) in expected {
        let at = offset;
        offset += len;
        if !to_send.contains(&id) || !sent.insert(id) {
            progress(len);
            continue;
        }
        let want = u32::try_from(len).map_or(UPLOAD_BUDGET, |n| n.min(UPLOAD_BUDGET));
        let Ok(permit) = runtime.block_on(budget.clone().acquire_many_owned(want)) else {
            break;
        };
        let mut data = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(at))?;
        let read = file.read_exact(&mut data);
        if read.is_err() || BlockId::of(&data) != id {
            return Err(ClientError::Integrity(format!(
                "{} changed while it was being uploaded; try again",
                path.display()
            )));
        }
        let body = match bases.get(&id) {
            Some(&base) => Body::Edited { plain: data, base },
            None => Body::Plain(data),
        };
        let out = Outgoing { id, body, permit };
        if tx.blocking_send(out).is_err() {
            break; // the uploader stopped on an error; it reports it
        }
    }
    Ok(())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_link_buys_smaller_blocks_with_cpu() {
        // Loopback or a LAN: the fast level.
        assert_eq!(level_for(400 << 20, 4.0), FAST_LINK_LEVEL);
        // 100 Mbit/s: compression pays.
        assert_eq!(level_for(60 << 20, 5.0), ZSTD_LEVEL);
        // Too little sent to tell.
        assert_eq!(level_for(1 << 20, 5.0), FAST_LINK_LEVEL);
    }
}
