//! Whole-file transfers.
//!
//! Upload is two passes over the file so memory stays flat whatever its
//! size: first cut and hash every block, ask the server which it lacks, then
//! cut again and send only those (compressed, several in flight), then
//! commit the block list. An interrupted upload run again sends only what
//! the server still lacks, since the question is asked afresh.
//!
//! Download streams into a temporary file beside the target, checks the
//! content hash, fsyncs and renames: the target path never holds a partial
//! or wrong file. [`download_resumable`] keeps that file under a fixed name
//! with the ETag it belongs to, so a later run asks only for the rest.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tessera_proto::api::{BlockCodec, BlockListResponse, BlockRef, CommitRequest, Entry};
use tessera_proto::block::{CHUNKER, MAX_BLOCK, chunker};
use tessera_proto::{BlockId, ContentHash};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::remote::{ClientError, Remote};

/// zstd level for blocks the client sends.
pub const ZSTD_LEVEL: i32 = 3;
/// Blocks uploaded at once.
pub const PARALLEL_UPLOADS: usize = 4;
/// Block bytes read for sending but not yet acknowledged. Blocks range from
/// 1 to 16 MiB, so a count of blocks alone would let memory swing sixteen-fold.
const UPLOAD_BUDGET: u32 = 24 << 20;

pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

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

fn cut_file(path: &Path) -> Result<Cut, ClientError> {
    let file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut blocks = Vec::new();
    let mut size = 0;
    for chunk in chunker(file) {
        let chunk = chunk.map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
        hasher.update(&chunk.data);
        blocks.push((BlockId::of(&chunk.data), chunk.length as u64));
        size += chunk.length as u64;
    }
    Ok(Cut {
        blocks,
        hash: hasher.finalize().into(),
        size,
    })
}

fn blocking_err(e: tokio::task::JoinError) -> ClientError {
    ClientError::Io(std::io::Error::other(e.to_string()))
}

/// Uploads `local` to `remote_path`, sending only blocks the server lacks.
pub async fn upload_file(
    remote: &Remote,
    local: &Path,
    remote_path: &str,
    base_rev: Option<i64>,
    progress: Progress,
) -> Result<UploadReport, ClientError> {
    let path = local.to_path_buf();
    let cut = tokio::task::spawn_blocking(move || cut_file(&path))
        .await
        .map_err(blocking_err)??;
    let ids: Vec<BlockId> = cut.blocks.iter().map(|(id, _)| *id).collect();
    let missing: HashSet<BlockId> = remote.missing(&ids).await?.into_iter().collect();
    let req = CommitRequest {
        path: remote_path.to_owned(),
        base_rev,
        size: cut.size,
        content_hash: cut.hash,
        chunker: CHUNKER.to_owned(),
        blocks: cut
            .blocks
            .iter()
            .map(|(id, size)| BlockRef {
                id: *id,
                size: *size,
            })
            .collect(),
    };
    if !missing.is_empty() {
        // Committing before the blocks are up marks the file as pending on
        // the server (other devices see it syncing) and fails early on a
        // stale base or the size limit, before any block is sent.
        match remote.commit(&req).await {
            Err(ClientError::Api {
                code: tessera_proto::ErrorCode::MissingBlocks,
                ..
            }) => {}
            Err(e) => return Err(e),
            Ok(entry) => {
                return Ok(UploadReport {
                    entry,
                    size: cut.size,
                    blocks_total: cut.blocks.len(),
                    blocks_sent: 0,
                    bytes_sent: 0,
                    blocks: cut.blocks,
                });
            }
        }
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<(BlockId, BlockCodec, Bytes, OwnedSemaphorePermit)>(
        PARALLEL_UPLOADS,
    );
    let budget = Arc::new(Semaphore::new(UPLOAD_BUDGET as usize));
    let runtime = tokio::runtime::Handle::current();
    let path = local.to_path_buf();
    let expected = cut.blocks.clone();
    let to_send = missing.clone();
    let report = progress.clone();
    let producer = tokio::task::spawn_blocking(move || -> Result<(), ClientError> {
        let mut sent = HashSet::new();
        let file = std::fs::File::open(&path)?;
        for (i, chunk) in chunker(file).enumerate() {
            let chunk = chunk.map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
            let id = BlockId::of(&chunk.data);
            if expected.get(i).map(|(e, _)| *e) != Some(id) {
                return Err(ClientError::Integrity(format!(
                    "{} changed while it was being uploaded; try again",
                    path.display()
                )));
            }
            if !to_send.contains(&id) || !sent.insert(id) {
                report(chunk.length as u64);
                continue;
            }
            let want = u32::try_from(chunk.length).map_or(UPLOAD_BUDGET, |n| n.min(UPLOAD_BUDGET));
            let Ok(permit) = runtime.block_on(budget.clone().acquire_many_owned(want)) else {
                break;
            };
            let (codec, body) = tessera_proto::block::compress_or_raw(chunk.data, ZSTD_LEVEL);
            if tx
                .blocking_send((id, codec, Bytes::from(body), permit))
                .is_err()
            {
                break; // the uploader stopped on an error; it reports it
            }
        }
        Ok(())
    });

    let sizes: std::collections::HashMap<BlockId, u64> = cut.blocks.iter().copied().collect();
    let sent = tokio_stream_from(rx)
        .map(|(id, codec, body, permit)| {
            let remote = remote.clone();
            let progress = progress.clone();
            let plain = sizes.get(&id).copied().unwrap_or(0);
            async move {
                let len = body.len() as u64;
                remote.put_block(&id, codec, body).await?;
                // Held until the server has the block: the budget bounds
                // bytes not yet acknowledged, not bytes handed to the socket.
                drop(permit);
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
    let (blocks_sent, bytes_sent) = sent?;
    produced?;

    let entry = remote.commit(&req).await?;
    Ok(UploadReport {
        entry,
        size: cut.size,
        blocks_total: cut.blocks.len(),
        blocks_sent,
        bytes_sent,
        blocks: cut.blocks,
    })
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

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

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The content hash and revision a download answer says it carries.
fn served(resp: &reqwest::Response) -> Result<(ContentHash, i64), ClientError> {
    let expected: ContentHash = header(resp, "x-tessera-content-hash")
        .and_then(|h| h.parse().ok())
        .ok_or_else(|| ClientError::Integrity("server sent no content hash".into()))?;
    let rev = header(resp, "x-tessera-rev")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    Ok((expected, rev))
}

/// Downloads `remote_path` (revision `rev`, or the current one) to `local`.
pub async fn download_file(
    remote: &Remote,
    remote_path: &str,
    rev: Option<i64>,
    local: &Path,
    progress: Progress,
) -> Result<DownloadReport, ClientError> {
    let resp = remote.download(remote_path, rev).await?;
    let (expected, rev) = served(&resp)?;
    let tmp = temp_beside(local);
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
            size += chunk.len() as u64;
            progress(chunk.len() as u64);
        }
        file.flush().await?;
        let got = ContentHash::from(hasher.finalize());
        if got != expected {
            return Err(ClientError::Integrity(format!(
                "{remote_path} arrived damaged (hash {got}, expected {expected}); nothing was written"
            )));
        }
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, local).await?;
        if let Some(dir) = local.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            tokio::fs::File::open(dir).await?.sync_all().await?;
        }
        Ok(DownloadReport { rev, size, content_hash: got })
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Where a resumable download of `target` keeps its bytes, and where it
/// notes what they are a part of. Both names end in `part` so folder sync
/// ignores them, and differ in what precedes it, so no target's part can be
/// another's note.
pub fn part_paths(target: &Path) -> (PathBuf, PathBuf) {
    let name = target.file_name().unwrap_or_default();
    // Names near the 255-byte limit leave no room for the suffixes.
    let stem = if name.len() > 200 {
        let hash = blake3::hash(name.as_encoded_bytes()).to_hex();
        std::ffi::OsString::from(&hash[..32])
    } else {
        name.to_owned()
    };
    let named = |suffix: &str| {
        let mut n = std::ffi::OsString::from(".");
        n.push(&stem);
        n.push(suffix);
        target.with_file_name(n)
    };
    (named(".tessera-part"), named(".tessera-etag.part"))
}

/// What the bytes of a part file are a prefix of.
#[derive(Debug, Clone, PartialEq)]
struct PartOf {
    etag: String,
    hash: ContentHash,
    size: u64,
}

impl PartOf {
    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let part = PartOf {
            etag: lines.next()?.to_owned(),
            hash: lines.next()?.parse().ok()?,
            size: lines.next()?.parse().ok()?,
        };
        (!part.etag.is_empty()).then_some(part)
    }

    fn render(&self) -> String {
        format!("{}\n{}\n{}\n", self.etag, self.hash.to_hex(), self.size)
    }
}

/// What a resumable download did.
#[derive(Debug, Clone)]
pub struct ResumeReport {
    pub download: DownloadReport,
    /// Bytes kept from an earlier, interrupted run.
    pub resumed: u64,
    /// Bytes that came over the network this run.
    pub fetched: u64,
}

/// Downloads `remote_path` (revision `rev`, or the current one) to `local`,
/// continuing an earlier interrupted run if the server still serves the
/// same content. The bytes gather in the part file (see [`part_paths`]),
/// which an interruption leaves for the next run; the whole file's hash is
/// checked before it is renamed to `local`, and a part that fails the check
/// is removed, so the next run starts over.
pub async fn download_resumable(
    remote: &Remote,
    remote_path: &str,
    rev: Option<i64>,
    local: &Path,
    progress: Progress,
) -> Result<ResumeReport, ClientError> {
    let (part, note) = part_paths(local);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part)?;
    // Two runs appending to one part would interleave their bytes.
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ClientError::Io(std::io::Error::other(format!(
                "{} is being downloaded by another process",
                local.display()
            ))));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    let mut held = Part {
        path: part.clone(),
        note: note.clone(),
        file: tokio::fs::File::from_std(file),
    };
    let mut result = resume_into(remote, remote_path, rev, local, &mut held, true, &progress).await;
    if let Err(ClientError::Api { status: 416, .. }) = result {
        // The server refused the range it had agreed to serve: start over.
        result = resume_into(remote, remote_path, rev, local, &mut held, false, &progress).await;
    }
    let empty = held
        .file
        .metadata()
        .await
        .map(|m| m.len() == 0)
        .unwrap_or(false);
    drop(held);
    match &result {
        Err(ClientError::Integrity(_)) => discard_part(&part, &note).await,
        // An empty part holds nothing worth resuming (the request failed
        // before any byte arrived).
        Err(_) if empty => discard_part(&part, &note).await,
        _ => {}
    }
    result
}

async fn discard_part(part: &Path, note: &Path) {
    let _ = tokio::fs::remove_file(note).await;
    let _ = tokio::fs::remove_file(part).await;
}

/// Hashes the first `len` bytes of `path` without holding them in memory.
async fn hash_prefix(path: &Path, len: u64) -> Result<blake3::Hasher, ClientError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<blake3::Hasher, ClientError> {
        use std::io::Read;
        let mut hasher = blake3::Hasher::new();
        let mut reader = std::fs::File::open(&path)?.take(len);
        let mut buf = vec![0u8; 1 << 20];
        let mut seen = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            seen += n as u64;
        }
        if seen != len {
            return Err(ClientError::Integrity(format!(
                "{} shrank while it was being resumed",
                path.display()
            )));
        }
        Ok(hasher)
    })
    .await
    .map_err(blocking_err)?
}

/// An open, locked part file and the paths of it and its note.
struct Part {
    path: PathBuf,
    note: PathBuf,
    file: tokio::fs::File,
}

async fn resume_into(
    remote: &Remote,
    remote_path: &str,
    rev: Option<i64>,
    local: &Path,
    held_part: &mut Part,
    resume: bool,
    progress: &Progress,
) -> Result<ResumeReport, ClientError> {
    use tokio::io::AsyncSeekExt;

    let Part {
        path: part,
        note,
        file,
    } = held_part;
    let (part, note) = (part.as_path(), note.as_path());

    let held = file.metadata().await?.len();
    let known = if resume && held > 0 {
        tokio::fs::read_to_string(note)
            .await
            .ok()
            .and_then(|t| PartOf::parse(&t))
    } else {
        None
    };
    // A complete part still asks for its last byte: that is how we learn
    // whether the server serves the same content.
    let from = known
        .filter(|k| k.size > 0)
        .map(|k| (held.min(k.size - 1), k));
    let resp = match &from {
        Some((offset, k)) => {
            remote
                .download_from(remote_path, rev, *offset, &k.etag)
                .await?
        }
        None => remote.download(remote_path, rev).await?,
    };
    let (expected, rev) = served(&resp)?;
    let etag = header(&resp, "etag");

    let (mut hasher, offset) = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
        let Some((offset, k)) = from else {
            return Err(ClientError::Integrity(format!(
                "{remote_path}: the server sent a part that was not asked for"
            )));
        };
        let range = header(&resp, "content-range").unwrap_or_default();
        if !range.starts_with(&format!("bytes {offset}-"))
            || etag.as_deref() != Some(k.etag.as_str())
            || expected != k.hash
        {
            return Err(ClientError::Integrity(format!(
                "{remote_path}: the server answered a different range or content than asked \
                 ({range}); the partial download was removed"
            )));
        }
        file.set_len(offset).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let hasher = hash_prefix(part, offset).await?;
        progress(offset);
        (hasher, offset)
    } else {
        // Anything held is of other content (or there is no note saying
        // what it is): begin again, noting first what the bytes will be.
        let _ = tokio::fs::remove_file(note).await;
        file.set_len(0).await?;
        file.seek(std::io::SeekFrom::Start(0)).await?;
        if let (Some(etag), Some(size)) = (etag, resp.content_length()) {
            let k = PartOf {
                etag,
                hash: expected,
                size,
            };
            tokio::fs::write(note, k.render()).await?;
        }
        (blake3::Hasher::new(), 0)
    };

    let mut fetched = 0u64;
    let mut body = resp.bytes_stream();
    let streamed = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
            fetched += chunk.len() as u64;
            progress(chunk.len() as u64);
        }
        Ok::<(), ClientError>(())
    }
    .await;
    // Whatever arrived stays in the part for the next run.
    file.flush().await?;
    streamed?;

    let got = ContentHash::from(hasher.finalize());
    if got != expected {
        return Err(ClientError::Integrity(format!(
            "{remote_path} arrived damaged (hash {got}, expected {expected}); the partial \
             download was removed, so the next run starts over"
        )));
    }
    file.sync_all().await?;
    tokio::fs::rename(part, local).await?;
    let _ = tokio::fs::remove_file(note).await;
    if let Some(dir) = local.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        tokio::fs::File::open(dir).await?.sync_all().await?;
    }
    Ok(ResumeReport {
        download: DownloadReport {
            rev,
            size: offset + fetched,
            content_hash: got,
        },
        resumed: offset,
        fetched,
    })
}

/// Files up to this size travel in batches ([`upload_small_files`]).
pub const SMALL_FILE: u64 = 256 << 10;
/// Raw bytes read for one batch: bounds memory whatever the file count.
const BATCH_BYTES: usize = 16 << 20;
const BATCH_FILES: usize = 500;

/// One small file to upload: local path, remote path, base revision.
pub struct SmallFile {
    pub local: PathBuf,
    pub remote: String,
    pub base_rev: Option<i64>,
}

/// Uploads many small files with few requests: one question about missing
/// blocks, packed block uploads, and one batch commit per group. Results
/// come back in input order, each file succeeding or failing on its own.
pub async fn upload_small_files(
    remote: &Remote,
    files: &[SmallFile],
) -> Result<Vec<Result<Entry, ClientError>>, ClientError> {
    let mut results = Vec::with_capacity(files.len());
    let mut start = 0;
    while start < files.len() {
        // Read a group of files, bounded in count and bytes.
        let mut group: Vec<Result<Vec<u8>, ClientError>> = Vec::new();
        let mut bytes = 0;
        while start + group.len() < files.len() && group.len() < BATCH_FILES && bytes < BATCH_BYTES
        {
            let f = &files[start + group.len()];
            let data = tokio::fs::read(&f.local).await.map_err(ClientError::from);
            let data = match data {
                Ok(d) if d.len() as u64 > SMALL_FILE => Err(ClientError::Integrity(format!(
                    "{} grew while it was being synced",
                    f.local.display()
                ))),
                other => other,
            };
            bytes += data.as_ref().map_or(0, Vec::len);
            group.push(data);
        }
        let ids: Vec<BlockId> = group
            .iter()
            .filter_map(|d| {
                d.as_ref()
                    .ok()
                    .filter(|d| !d.is_empty())
                    .map(|d| BlockId::of(d))
            })
            .collect();
        let missing: HashSet<BlockId> = remote.missing(&ids).await?.into_iter().collect();
        let mut pack = Vec::new();
        let mut packed = HashSet::new();
        for data in group.iter().flatten() {
            let id = BlockId::of(data);
            if data.is_empty() || !missing.contains(&id) || !packed.insert(id) {
                continue;
            }
            let (codec, body) = tessera_proto::block::compress_or_raw(data.as_slice(), ZSTD_LEVEL);
            if !pack.is_empty()
                && pack.len() + tessera_proto::pack::frame_len(body.len()) > BATCH_BYTES
            {
                remote.put_pack(std::mem::take(&mut pack)).await?;
            }
            tessera_proto::pack::encode_frame(&mut pack, &id, codec, &body);
        }
        if !pack.is_empty() {
            remote.put_pack(pack).await?;
        }
        let mut commits = Vec::new();
        for (i, data) in group.iter().enumerate() {
            if let Ok(data) = data {
                let f = &files[start + i];
                let id = BlockId::of(data);
                commits.push(CommitRequest {
                    path: f.remote.clone(),
                    base_rev: f.base_rev,
                    size: data.len() as u64,
                    // One block: the file's hash is the block's.
                    content_hash: ContentHash(id.0),
                    chunker: CHUNKER.to_owned(),
                    blocks: if data.is_empty() {
                        Vec::new()
                    } else {
                        vec![BlockRef {
                            id,
                            size: data.len() as u64,
                        }]
                    },
                });
            }
        }
        let mut answers = remote.commit_batch(commits).await?.results.into_iter();
        for data in group {
            results.push(match data {
                Err(e) => Err(e),
                Ok(_) => match answers.next() {
                    Some(tessera_proto::api::CommitResult { entry: Some(e), .. }) => Ok(e),
                    Some(tessera_proto::api::CommitResult { error: Some(e), .. }) => {
                        Err(ClientError::Api {
                            status: 0,
                            code: e.code,
                            message: e.message,
                            current_rev: e.current_rev,
                            missing: e.missing,
                        })
                    }
                    _ => Err(ClientError::Integrity(
                        "the server answered fewer commits than sent".into(),
                    )),
                },
            });
        }
        start = results.len();
    }
    Ok(results)
}

/// What a delta download fetched.
#[derive(Debug, Clone)]
pub struct DeltaReport {
    pub download: DownloadReport,
    /// Plain bytes of blocks fetched from the server.
    pub fetched: u64,
    /// Plain bytes reused from the local file.
    pub reused: u64,
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

/// Assembles the revision described by `list` into `out`, taking each
/// block from a local site that still holds it and fetching only the rest.
/// The result is checked against the revision's content hash.
pub async fn download_assembling(
    remote: &Remote,
    list: &BlockListResponse,
    sites: &HashMap<BlockId, Vec<LocalSite>>,
    out: &Path,
) -> Result<DeltaReport, ClientError> {
    let remote_path = &list.entry.path;
    let rev = list.entry.rev.unwrap_or(0);
    let expected = list
        .entry
        .content_hash
        .ok_or_else(|| ClientError::Integrity(format!("{remote_path} has no content hash")))?;
    let result = async {
        let mut file = tokio::fs::File::create(out).await?;
        let mut hasher = blake3::Hasher::new();
        let (mut fetched, mut reused, mut size) = (0u64, 0u64, 0u64);
        for b in &list.blocks {
            let mut local = None;
            for site in sites.get(&b.id).into_iter().flatten() {
                local = read_site(b.id, site.clone()).await?;
                if local.is_some() {
                    break;
                }
            }
            let data = match local {
                Some(d) => {
                    reused += d.len() as u64;
                    d
                }
                None => {
                    let d = remote.get_block(&b.id).await?;
                    fetched += d.len() as u64;
                    d
                }
            };
            hasher.update(&data);
            file.write_all(&data).await?;
            size += data.len() as u64;
        }
        file.flush().await?;
        let got = ContentHash::from(hasher.finalize());
        if got != expected {
            return Err(ClientError::Integrity(format!(
                "{remote_path} assembled wrong (hash {got}, expected {expected}); nothing was written"
            )));
        }
        file.sync_all().await?;
        Ok(DeltaReport { download: DownloadReport { rev, size, content_hash: got }, fetched, reused })
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(out).await;
    }
    result
}
