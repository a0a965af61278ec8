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
    // Reading a group and sending its blocks runs on its own task, a group
    // ahead of the commits: the disk, the CPU and the server's commit are
    // then busy at once instead of in turn. Commits stay one at a time and
    // in order, so two never race to make the same folder.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let (sender, all) = (remote.clone(), files.to_vec());
    let prepare = tokio::spawn(async move {
        let mut start = 0;
        while start < all.len() {
            let group = read_group(&all[start..]).await;
            let n = group.len();
            let sent = send_missing(&sender, &group).await.map(|()| group);
            if tx.send(sent).await.is_err() {
                break;
            }
            start += n;
        }
    });
    let mut results = Vec::with_capacity(files.len());
    let committed = async {
        while let Some(group) = rx.recv().await {
            let group = group?;
            let start = results.len();
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
        Ok::<(), ClientError>(())
    }
    .await;
    prepare.abort();
    committed?;
    if results.len() < files.len() {
        return Err(ClientError::Io(std::io::Error::other(
            "reading the files to upload stopped short",
        )));
    }
    Ok(results)
}

/// Reads the files at the head of `files`, as many as one group holds
/// (bounded in count and bytes). Each read succeeds or fails on its own.
async fn read_group(files: &[SmallFile]) -> Vec<Result<Vec<u8>, ClientError>> {
    let mut group = Vec::new();
    let mut bytes = 0;
    let mut names = 0;
    for f in files {
        let depth = tessera_proto::api::path_segments(&f.remote);
        if group.len() >= BATCH_FILES
            || bytes >= BATCH_BYTES
            || (!group.is_empty() && names + depth > tessera_proto::api::MAX_BATCH_SEGMENTS)
        {
            break;
        }
        names += depth;
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
    let mut packed = HashSet::new();
    let to_send: Vec<(BlockId, Vec<u8>)> = group
        .iter()
        .flatten()
        .filter(|data| !data.is_empty())
        .map(|data| (BlockId::of(data), data))
        .filter(|(id, _)| missing.contains(id) && packed.insert(*id))
        .map(|(id, data)| (id, data.clone()))
        .collect();
    if to_send.is_empty() {
        return Ok(());
    }
    // Compressing a group takes tens of milliseconds: off the reactor.
    let packs = tokio::task::spawn_blocking(move || {
        let mut packs = vec![Vec::new()];
        for (id, data) in to_send {
            let (codec, body) = tessera_proto::block::compress_or_raw(data, ZSTD_LEVEL);
            let fits = |pack: &Vec<u8>| {
                pack.is_empty()
                    || pack.len() + tessera_proto::pack::frame_len(body.len()) <= BATCH_BYTES
            };
            if packs.last().is_none_or(|p| !fits(p)) {
                packs.push(Vec::new());
            }
            if let Some(pack) = packs.last_mut() {
                tessera_proto::pack::encode_frame(pack, &id, codec, &body);
            }
        }
        packs
    })
    .await
    .map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
    for pack in packs.into_iter().filter(|p| !p.is_empty()) {
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
    crate::remote::item_answer(result)
}
