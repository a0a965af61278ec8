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

impl Cut {
    fn report(&self, entry: Entry, blocks_sent: usize, bytes_sent: u64) -> UploadReport {
        UploadReport {
            entry,
            size: self.size,
            blocks_total: self.blocks.len(),
            blocks_sent,
            bytes_sent,
            blocks: self.blocks.clone(),
        }
    }
}

/// Cuts and hashes the file in one read: the content hash runs on a
/// thread of its own beside the cutting and block hashing, so the pass
/// takes about the longer of the two rather than their sum.
fn cut_file(path: &Path) -> Result<Cut, ClientError> {
    cut_with(path, |_| Ok(()))
}

/// A block as the cut finds it.
struct Piece {
    seq: u32,
    id: BlockId,
    offset: u64,
    data: Arc<Vec<u8>>,
}

/// [`cut_file`], handing each block to `each` as it is cut.
fn cut_with(
    path: &Path,
    mut each: impl FnMut(Piece) -> Result<(), ClientError>,
) -> Result<Cut, ClientError> {
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
            for (seq, chunk) in chunker(file).enumerate() {
                let chunk =
                    chunk.map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
                let data = Arc::new(chunk.data);
                if tx.send(data.clone()).is_err() {
                    break;
                }
                let id = BlockId::of(&data);
                blocks.push((id, chunk.length as u64));
                let offset = size;
                size += chunk.length as u64;
                let seq = u32::try_from(seq)
                    .map_err(|_| ClientError::Integrity("too many blocks in one file".into()))?;
                each(Piece {
                    seq,
                    id,
                    offset,
                    data,
                })?;
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
    // A new file: no base, or revision 0 (nothing may be there yet).
    let new_file = match &base {
        None => Some(None),
        Some(Base { rev: 0, blocks }) if blocks.as_ref().is_none_or(Vec::is_empty) => Some(Some(0)),
        Some(_) => None,
    };
    if let Some(base_rev) = new_file
        && sends_while_cutting(remote, local).await
    {
        return upload_new(remote, local, remote_path, base_rev, progress).await;
    }
    upload_edit_asking(remote, local, remote_path, base, progress).await
}

/// [`upload_edit`] that cuts the whole file first, then asks the server
/// which blocks it lacks, commits early and sends them.
async fn upload_edit_asking(
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
    let report = |entry, blocks_sent, bytes_sent| cut.report(entry, blocks_sent, bytes_sent);
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

/// Whether a new file goes up while it is cut ([`upload_new`]): a file of
/// several blocks that fits the server's size limit and the account's
/// quota as they stand. Anything else takes the path that asks the server
/// first, so a refusal comes before any block is sent.
async fn sends_while_cutting(remote: &Remote, local: &Path) -> bool {
    let Ok(len) = tokio::fs::metadata(local).await.map(|m| m.len()) else {
        return false;
    };
    if len <= 2 * MIN_BLOCK as u64 {
        return false;
    }
    match tokio::join!(remote.info(), remote.usage()) {
        (Ok(info), Ok(usage)) => {
            len <= info.max_file_size
                && usage
                    .quota_bytes
                    .is_none_or(|q| usage.used_bytes.saturating_add(len) <= q)
        }
        _ => false,
    }
}

/// A block just cut, on its way to the server: its bytes while they fit
/// the memory budget, else where it is in the file (read again, and checked
/// against its id, when it is sent).
struct CutBlock {
    seq: u32,
    id: BlockId,
    offset: u64,
    len: u64,
    data: Option<(Arc<Vec<u8>>, OwnedSemaphorePermit)>,
}

/// Uploads a new file while it is being cut: each block goes up as soon
/// as it is cut and the server says it lacks it, numbered in an upload of
/// its own name, so the server hashes the file as the blocks come and the
/// commit reads nothing back. The cut never waits for the network (what
/// does not fit the memory budget is read again when it is sent), so the
/// early commit, which shows the file as syncing and lets other devices
/// fetch it as it comes, follows the cut as soon as it would otherwise.
async fn upload_new(
    remote: &Remote,
    local: &Path,
    remote_path: &str,
    base_rev: Option<i64>,
    progress: Progress,
) -> Result<UploadReport, ClientError> {
    let upload = format!("{:032x}", rand::random::<u128>());
    // Places in the file are small; the bytes are bounded by the budget.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<CutBlock>();
    let budget = Arc::new(Semaphore::new(UPLOAD_BUDGET as usize));
    let path = local.to_path_buf();
    let cut_budget = budget.clone();
    let cutter = tokio::task::spawn_blocking(move || cut_and_hand_over(&path, tx, &cut_budget));
    let source = Source {
        path: local.to_path_buf(),
        budget,
    };
    let mut sending = std::pin::pin!(send_as_cut(remote, rx, &upload, &source, progress.clone()));
    let mut early = std::pin::pin!(async {
        let cut = cutter.await.map_err(blocking_err)??;
        let req = CommitRequest {
            path: remote_path.to_owned(),
            base_rev,
            size: cut.size,
            content_hash: cut.hash,
            chunker: CHUNKER.to_owned(),
            blocks: cut
                .blocks
                .iter()
                .map(|&(id, size)| BlockRef { id, size })
                .collect(),
            reuse: Vec::new(),
        };
        // Shows the file as syncing and fails early on a refusal; it
        // lands when every block is there already.
        match remote.commit_upload(&req, &upload).await {
            Ok(entry) => Ok::<_, ClientError>((cut, req, Some(entry))),
            Err(ClientError::Api {
                code: tessera_proto::ErrorCode::MissingBlocks,
                ..
            }) => Ok((cut, req, None)),
            Err(e) => Err(e),
        }
    });
    // A refusal of the early commit, or a failed send, ends both; so does
    // an early commit that landed (every block was there): what is still
    // being sent is not needed.
    let ((blocks_sent, bytes_sent), (cut, req, landed)) = tokio::select! {
        sent = sending.as_mut() => {
            let sent = sent?;
            (sent, early.await?)
        }
        early_done = early.as_mut() => match early_done? {
            done @ (_, _, Some(_)) => ((0, 0), done),
            done => (sending.await?, done),
        },
    };
    let report = |entry, blocks_sent, bytes_sent| cut.report(entry, blocks_sent, bytes_sent);
    if let Some(entry) = landed {
        return Ok(report(entry, blocks_sent, bytes_sent));
    }
    match remote.commit_upload(&req, &upload).await {
        Err(ClientError::Api {
            code: tessera_proto::ErrorCode::MissingBlocks,
            ..
        }) => {
            // Collected meanwhile, or a send the server lost: the path
            // that reads the file again and asks first.
            tracing::debug!(
                path = remote_path,
                "blocks missing after the upload: sending them again"
            );
            // Progress was told once already.
            let base = base_rev.map(|rev| Base { rev, blocks: None });
            let quiet: Progress = Arc::new(|_| {});
            let again = upload_edit_asking(remote, local, remote_path, base, quiet).await?;
            Ok(UploadReport {
                blocks_sent: blocks_sent + again.blocks_sent,
                bytes_sent: bytes_sent + again.bytes_sent,
                ..again
            })
        }
        answer => Ok(report(answer?, blocks_sent, bytes_sent)),
    }
}

/// The cutting side of [`upload_new`], on a blocking thread: one read of
/// the file cuts it and hashes it ([`cut_with`]), and hands each block
/// over, with its bytes while the memory budget has room.
fn cut_and_hand_over(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<CutBlock>,
    budget: &Arc<Semaphore>,
) -> Result<Cut, ClientError> {
    let mut in_memory = true;
    cut_with(path, |piece| {
        let len = piece.data.len() as u64;
        // Once the budget is short, every later block is read again when
        // sent: blocks in memory always come first, so a send waiting for
        // the budget never waits on one behind it.
        let permit = if in_memory {
            budget
                .clone()
                .try_acquire_many_owned(budget_share(len))
                .ok()
        } else {
            None
        };
        in_memory &= permit.is_some();
        let block = CutBlock {
            seq: piece.seq,
            id: piece.id,
            offset: piece.offset,
            len,
            data: permit.map(|p| (piece.data, p)),
        };
        // A closed channel: the sender stopped on an error, which it reports.
        tx.send(block)
            .map_err(|_| ClientError::Integrity("the upload stopped".into()))
    })
}

/// The file a new upload reads, and the memory its blocks in flight may
/// take.
#[derive(Clone)]
struct Source {
    path: std::path::PathBuf,
    budget: Arc<Semaphore>,
}

/// A block's share of the memory budget.
fn budget_share(len: u64) -> u32 {
    u32::try_from(len).map_or(UPLOAD_BUDGET, |n| n.min(UPLOAD_BUDGET))
}

/// Block `id`, `len` bytes at `offset` of `path`, read again: it must
/// still hash to its id, so what goes up is the version the cut hashed.
fn read_again(path: &Path, offset: u64, len: u64, id: BlockId) -> Result<Vec<u8>, ClientError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    if file.read_exact(&mut data).is_err() || BlockId::of(&data) != id {
        return Err(ClientError::Integrity(format!(
            "{} changed while it was being uploaded; try again",
            path.display()
        )));
    }
    Ok(data)
}

/// The sending side of [`upload_new`]: asks which of the blocks cut so far
/// the server lacks (a few at a time) and sends those, numbered, several
/// in flight. Returns the count and bytes sent.
async fn send_as_cut(
    remote: &Remote,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<CutBlock>,
    upload: &str,
    source: &Source,
    progress: Progress,
) -> Result<(usize, u64), ClientError> {
    let upload: Arc<str> = Arc::from(upload);
    let pace = Arc::new(Pace::new());
    let mut seen = HashSet::new();
    // Whether every block before the next one went up numbered: after the
    // first that does not (a repeat, or one the server holds) the server's
    // running hash stops there, so the rest go unnumbered and are not
    // held for it.
    let mut numbering = true;
    let mut queue: std::collections::VecDeque<(CutBlock, bool)> = Default::default();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let (mut sent, mut bytes) = (0usize, 0u64);
    let mut open = true;
    loop {
        while in_flight.len() < PARALLEL_UPLOADS {
            let Some((block, numbered)) = queue.pop_front() else {
                break;
            };
            in_flight.push(send_numbered(
                remote.clone(),
                block,
                source.clone(),
                numbered.then(|| upload.clone()),
                pace.clone(),
                progress.clone(),
            ));
        }
        if !open && in_flight.is_empty() && queue.is_empty() {
            return Ok((sent, bytes));
        }
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                bytes += done?;
                sent += 1;
            }
            first = rx.recv(), if open && queue.len() < PARALLEL_UPLOADS => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut batch = vec![first];
                while batch.len() < PARALLEL_UPLOADS * 2 {
                    match rx.try_recv() {
                        Ok(b) => batch.push(b),
                        Err(_) => break,
                    }
                }
                // A block repeated in the file goes up once.
                let (ask, repeats): (Vec<CutBlock>, Vec<CutBlock>) =
                    batch.into_iter().partition(|b| seen.insert(b.id));
                let ids: Vec<BlockId> = ask.iter().map(|b| b.id).collect();
                let missing: HashSet<BlockId> = remote.missing(&ids).await?.into_iter().collect();
                let (send, held): (Vec<CutBlock>, Vec<CutBlock>) =
                    ask.into_iter().partition(|b| missing.contains(&b.id));
                let first_skip = repeats.iter().chain(&held).map(|b| b.seq).min();
                for b in repeats.iter().chain(&held) {
                    progress(b.len);
                }
                for b in send {
                    let numbered = numbering && first_skip.is_none_or(|skip| b.seq < skip);
                    queue.push_back((b, numbered));
                }
                numbering &= first_skip.is_none();
            }
        }
    }
}

/// Compresses and sends one block cut by [`upload_new`], as number
/// `block.seq` of `upload` if given. Returns the bytes sent.
async fn send_numbered(
    remote: Remote,
    block: CutBlock,
    source: Source,
    upload: Option<Arc<str>>,
    pace: Arc<Pace>,
    progress: Progress,
) -> Result<u64, ClientError> {
    let CutBlock {
        seq,
        id,
        offset,
        len: plain_len,
        data,
    } = block;
    let (data, permit) = match data {
        Some((data, permit)) => (Some(data), permit),
        None => {
            let permit = source
                .budget
                .clone()
                .acquire_many_owned(budget_share(plain_len))
                .await
                .map_err(|_| ClientError::Integrity("the upload stopped".into()))?;
            (None, permit)
        }
    };
    let level = pace.level();
    let path = source.path.clone();
    let (codec, body) = tokio::task::spawn_blocking(move || {
        let plain = match data {
            Some(data) => Arc::try_unwrap(data).unwrap_or_else(|shared| (*shared).clone()),
            None => read_again(&path, offset, plain_len, id)?,
        };
        Ok::<_, ClientError>(tessera_proto::block::compress_or_raw(plain, level))
    })
    .await
    .map_err(blocking_err)??;
    let len = body.len() as u64;
    let number = upload.as_deref().map(|name| (name, seq));
    remote
        .put_block_numbered(&id, codec, Bytes::from(body), number)
        .await?;
    pace.sent(len);
    // Held until the server has the block (see `send_blocks`).
    drop(permit);
    progress(plain_len);
    Ok(len)
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
