//! Many small files in few requests: one question about missing blocks,
//! packed block uploads, and one batch commit per group.

use std::collections::HashSet;
use std::path::PathBuf;

use tessera_proto::api::{BlockRef, CommitRequest, Entry};
use tessera_proto::block::CHUNKER;
use tessera_proto::{BlockId, ContentHash};

use super::ZSTD_LEVEL;
use crate::remote::{ClientError, Remote};

/// Files up to this size travel in batches ([`upload_small_files`]).
pub const SMALL_FILE: u64 = 256 << 10;
/// Raw bytes read for one batch: bounds memory whatever the file count.
const BATCH_BYTES: usize = 16 << 20;
const BATCH_FILES: usize = 500;

/// One small file to upload: local path, remote path, base revision.
#[derive(Debug, Clone)]
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
    while results.len() < files.len() {
        let start = results.len();
        let group = read_group(&files[start..]).await;
        send_missing(remote, &group).await?;
        let commits: Vec<CommitRequest> = group
            .iter()
            .zip(&files[start..])
            .filter_map(|(data, f)| data.as_ref().ok().map(|d| commit_of(f, d)))
            .collect();
        let mut answers = remote.commit_batch(commits).await?.results.into_iter();
        for data in group {
            results.push(match data {
                Err(e) => Err(e),
                Ok(_) => answer(answers.next()),
            });
        }
    }
    Ok(results)
}

/// Reads the files at the head of `files`, as many as one group holds
/// (bounded in count and bytes). Each read succeeds or fails on its own.
async fn read_group(files: &[SmallFile]) -> Vec<Result<Vec<u8>, ClientError>> {
    let mut group = Vec::new();
    let mut bytes = 0;
    for f in files {
        if group.len() >= BATCH_FILES || bytes >= BATCH_BYTES {
            break;
        }
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
    group
}

/// Sends, in packs, the blocks of `group` the server lacks.
async fn send_missing(
    remote: &Remote,
    group: &[Result<Vec<u8>, ClientError>],
) -> Result<(), ClientError> {
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
        if !pack.is_empty() && pack.len() + tessera_proto::pack::frame_len(body.len()) > BATCH_BYTES
        {
            remote.put_pack(std::mem::take(&mut pack)).await?;
        }
        tessera_proto::pack::encode_frame(&mut pack, &id, codec, &body);
    }
    if !pack.is_empty() {
        remote.put_pack(pack).await?;
    }
    Ok(())
}

/// The commit of a small file holding `data`: one block at most.
fn commit_of(f: &SmallFile, data: &[u8]) -> CommitRequest {
    let id = BlockId::of(data);
    CommitRequest {
        reuse: Vec::new(),
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
    }
}

/// One file's part of a batch commit answer.
fn answer(result: Option<tessera_proto::api::CommitResult>) -> Result<Entry, ClientError> {
    match result {
        Some(tessera_proto::api::CommitResult { entry: Some(e), .. }) => Ok(e),
        Some(tessera_proto::api::CommitResult { error: Some(e), .. }) => Err(ClientError::Api {
            status: 0,
            code: e.code,
            message: e.message,
            current_rev: e.current_rev,
            missing: e.missing,
            retry_after: None,
        }),
        _ => Err(ClientError::Integrity(
            "the server answered fewer commits than sent".into(),
        )),
    }
}
