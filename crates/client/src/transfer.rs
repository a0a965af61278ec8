//! Whole-file transfers.
//!
//! Upload is two passes over the file so memory stays flat whatever its
//! size: first cut and hash every block, ask the server which it lacks, then
//! cut again and send only those (compressed, several in flight), then
//! commit the block list. Download streams into a temporary file beside the
//! target, checks the content hash, fsyncs and renames: the target path
//! never holds a partial or wrong file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tessera_proto::api::{BlockCodec, BlockRef, CommitRequest, Entry};
use tessera_proto::block::{CHUNKER, chunker};
use tessera_proto::{BlockId, ContentHash};
use tokio::io::AsyncWriteExt;

use crate::remote::{ClientError, Remote};

/// zstd level for blocks the client sends.
pub const ZSTD_LEVEL: i32 = 3;
/// Blocks uploaded at once.
pub const PARALLEL_UPLOADS: usize = 4;

pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct UploadReport {
    pub entry: Entry,
    pub size: u64,
    pub blocks_total: usize,
    pub blocks_sent: usize,
    /// Block bytes sent, after compression.
    pub bytes_sent: u64,
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

    let (tx, rx) = tokio::sync::mpsc::channel::<(BlockId, BlockCodec, Bytes)>(PARALLEL_UPLOADS);
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
            let (codec, body) = match zstd::bulk::compress(&chunk.data, ZSTD_LEVEL) {
                Ok(z) if z.len() < chunk.data.len() => (BlockCodec::Zstd, z),
                _ => (BlockCodec::Raw, chunk.data),
            };
            if tx.blocking_send((id, codec, Bytes::from(body))).is_err() {
                break; // the uploader stopped on an error; it reports it
            }
        }
        Ok(())
    });

    let sizes: std::collections::HashMap<BlockId, u64> = cut.blocks.iter().copied().collect();
    let sent = tokio_stream_from(rx)
        .map(|(id, codec, body)| {
            let remote = remote.clone();
            let progress = progress.clone();
            let plain = sizes.get(&id).copied().unwrap_or(0);
            async move {
                let len = body.len() as u64;
                remote.put_block(&id, codec, body).await?;
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
    let entry = remote.commit(&req).await?;
    Ok(UploadReport {
        entry,
        size: cut.size,
        blocks_total: cut.blocks.len(),
        blocks_sent,
        bytes_sent,
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

/// Downloads `remote_path` (revision `rev`, or the current one) to `local`.
pub async fn download_file(
    remote: &Remote,
    remote_path: &str,
    rev: Option<i64>,
    local: &Path,
    progress: Progress,
) -> Result<DownloadReport, ClientError> {
    let resp = remote.download(remote_path, rev).await?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let expected: ContentHash = header("x-tessera-content-hash")
        .and_then(|h| h.parse().ok())
        .ok_or_else(|| ClientError::Integrity("server sent no content hash".into()))?;
    let rev = header("x-tessera-rev")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
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
