//! Streaming sync: fetching a file while another device is still
//! uploading it. The uploader's first commit announces the block list (the
//! file shows as pending); each block can be fetched as soon as it is
//! stored, so the receiver fetches them in order, waiting for each one the
//! uploader has not sent yet, and the two transfers overlap instead of
//! adding up.
//!
//! The bytes go to a file of the caller's choosing, never to the target:
//! the file is complete only once every block is in and the whole-file
//! hash matches the announced one, and it is used only when the commit
//! names that very hash. An uploader that stops (killed, offline) stalls
//! the wait; after [`STALL`] with no block, or once the server no longer
//! shows the upload as pending, the fetch gives up and removes its file.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use tessera_proto::api::PendingListResponse;
use tessera_proto::{BlockId, ContentHash, ErrorCode};
use tokio::io::AsyncWriteExt;

use super::Progress;
use super::download::Writeback;
use crate::remote::{ClientError, Remote};

/// How long to wait for the next block before giving up on the upload.
pub const STALL: Duration = Duration::from_secs(60);
/// Blocks asked for at once: enough to keep up with an uploader that
/// sends several side by side.
const PARALLEL_WAITS: usize = 4;
/// Longest pause between two asks for a block not there yet.
const MOST_PAUSE: Duration = Duration::from_millis(250);
/// How often a wait checks that the upload is still under way.
const RECHECK: Duration = Duration::from_secs(5);

/// Fetches the file `list` announces into `out`, block by block as the
/// uploader stores them, checks the whole file against the announced hash
/// and makes it durable. On any failure `out` is removed.
pub async fn fetch_pending(
    remote: &Remote,
    list: &PendingListResponse,
    out: &Path,
    progress: Progress,
) -> Result<(), ClientError> {
    let result = async {
        let mut file = tokio::fs::File::create(out).await?;
        let mut hasher = blake3::Hasher::new();
        let jobs: Vec<_> = list
            .blocks
            .iter()
            .map(|b| arrival(remote.clone(), list.path.clone(), list.content_hash, b.id))
            .collect();
        let mut blocks = futures::stream::iter(jobs).buffered(PARALLEL_WAITS);
        let mut writeback = Writeback::new();
        let mut size = 0u64;
        while let Some(block) = blocks.next().await {
            let data = block?;
            hasher.update(&data);
            file.write_all(&data).await?;
            size += data.len() as u64;
            progress(data.len() as u64);
            writeback.wrote(&file, data.len() as u64).await?;
        }
        file.flush().await?;
        writeback.finish().await?;
        let got = ContentHash::from(hasher.finalize());
        if got != list.content_hash || size != list.size {
            return Err(ClientError::Integrity(format!(
                "{}: the announced blocks make {size} bytes hashing to {got}, not the announced \
                 {} bytes hashing to {}",
                list.path, list.size, list.content_hash
            )));
        }
        file.sync_all().await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(out).await;
    }
    result
}

/// Block `id` once the uploader has stored it (checked against its id).
async fn arrival(
    remote: Remote,
    path: String,
    hash: ContentHash,
    id: BlockId,
) -> Result<Vec<u8>, ClientError> {
    let started = tokio::time::Instant::now();
    let mut checked = started;
    let mut pause = Duration::from_millis(20);
    loop {
        match remote.get_block(&id).await {
            Ok(data) => return Ok(data),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {}
            Err(e) => return Err(e),
        }
        let now = tokio::time::Instant::now();
        if now - started > STALL {
            return Err(given_up(&path, "no block came for a while"));
        }
        if now - checked > RECHECK {
            checked = now;
            // Committed with other content, or given up on: this block
            // may never come.
            match remote.pending_list(&path).await? {
                Some(l) if l.content_hash == hash => {}
                _ => return Err(given_up(&path, "the upload is no longer under way")),
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MOST_PAUSE);
    }
}

fn given_up(path: &str, why: &str) -> ClientError {
    ClientError::Io(std::io::Error::other(format!(
        "stopped fetching {path} while it uploads: {why}"
    )))
}
