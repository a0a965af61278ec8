//! The one way bytes become stored blocks. [`Ingest`] cuts a byte stream
//! with the shared chunker (`tessera_proto::block`, so the server names the
//! same blocks a client would), hashes it (block ids and the content hash),
//! and has the block store compress, seal, store and record each block. The
//! simple upload, resumable sessions and the block routes all go through
//! it. A session's stream keeps its last piece back (the tail the next
//! request continues from) and is made durable every 64 MiB.
//!
//! Cutting and hashing stay in file order; compressing, sealing and
//! storing run for a few blocks at once on their own tasks. Memory: a few
//! blocks, whatever the file size.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tessera_proto::block::chunker_async;
use tessera_proto::{BlockId, ContentHash};
use tokio::io::AsyncRead;

use super::codec::Codec;
use super::hash::SegmentHasher;
use super::{BlockError, BlockStore};
use crate::meta::{Checkpoint, Meta, MetaError};

/// A session's request makes its progress durable every this many bytes,
/// so a crash in the middle of a 10 GiB PATCH loses at most this much.
pub const CHECKPOINT_EVERY: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The stream failed before its end.
    #[error("{0}")]
    Cut(std::io::Error),
    #[error("the stream is longer than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("another request moved this upload on meanwhile")]
    Moved,
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// One user's way into the block store.
pub struct Ingest {
    blocks: BlockStore,
    user_id: i64,
    hasher: SegmentHasher,
    /// Bytes at the start of the next stream that the hasher has seen
    /// already (a resumed session's tail).
    hashed_ahead: u64,
    limit: Option<u64>,
    parallel: usize,
}

/// What [`Ingest::cut`] stored, in file order. For a session, only the
/// blocks since its last checkpoint.
pub struct Cut {
    pub blocks: Vec<(BlockId, u64)>,
    /// A session's last piece, not stored: the tail, unless the file ends.
    pub held: Option<Vec<u8>>,
}

impl Ingest {
    pub fn new(blocks: BlockStore, user_id: i64) -> Self {
        Self {
            blocks,
            user_id,
            hasher: SegmentHasher::new(),
            hashed_ahead: 0,
            limit: None,
            parallel: 3,
        }
    }

    /// Continues a session whose content hash stands at `hasher`; the next
    /// stream starts with the `tail_len` bytes the hasher already saw.
    pub fn resume(blocks: BlockStore, user_id: i64, hasher: SegmentHasher, tail_len: u64) -> Self {
        Self {
            hasher,
            hashed_ahead: tail_len,
            ..Self::new(blocks, user_id)
        }
    }

    /// Refuses streams longer than `max` bytes.
    pub fn limit(mut self, max: u64) -> Self {
        self.limit = Some(max);
        self
    }

    /// Blocks stored at once (each holds a block in memory).
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// Bytes hashed so far: the file's length once the stream has ended.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    pub fn content_hash(&self) -> ContentHash {
        ContentHash::from(self.hasher.finalize())
    }

    pub fn into_hasher(self) -> SegmentHasher {
        self.hasher
    }

    /// Cuts `reader` to its end and stores every block. With `session`,
    /// the last piece is held back and stored blocks are made durable
    /// as they pile up. A failure leaves stored blocks unreferenced.
    pub async fn cut<R: AsyncRead + Unpin>(
        &mut self,
        reader: R,
        mut session: Option<&mut Checkpoints>,
    ) -> Result<Cut, IngestError> {
        let hold_last = session.is_some();
        let mut cdc = chunker_async(reader);
        let chunks = cdc.as_stream();
        futures::pin_mut!(chunks);
        let mut inflight = FuturesOrdered::new();
        let mut stored = Vec::new();
        let mut held = None;
        while let Some(chunk) = chunks.next().await {
            let data = chunk
                .map_err(|e| IngestError::Cut(std::io::Error::other(e)))?
                .data;
            self.hash(&data)?;
            let ready = if hold_last {
                held.replace(data)
            } else {
                Some(data)
            };
            if let Some(data) = ready {
                inflight.push_back(self.spawn_store(data));
            }
            while inflight.len() >= self.parallel {
                if let Some(block) = inflight.next().await {
                    stored.push(block?);
                }
            }
            if let Some(s) = session.as_deref_mut() {
                s.maybe_checkpoint(&mut stored, &self.hasher).await?;
            }
        }
        while let Some(block) = inflight.next().await {
            stored.push(block?);
        }
        Ok(Cut {
            blocks: stored,
            held,
        })
    }

    /// Stores one block cut here (a session's last piece).
    pub async fn store(&self, plain: Vec<u8>) -> Result<(BlockId, u64), BlockError> {
        self.blocks.put_plain(self.user_id, plain).await
    }

    /// Accepts a block a client cut, sent as `codec` bytes that must hash
    /// to `id`, handing its verified plain bytes to `verified`. Returns its
    /// plain size.
    pub async fn client_block(
        &self,
        id: BlockId,
        codec: Codec,
        body: Bytes,
        verified: impl FnOnce(Bytes) + Send + 'static,
    ) -> Result<u64, BlockError> {
        self.blocks
            .put_upload(self.user_id, id, codec, body, verified)
            .await
    }

    /// Accepts many small client blocks as one stored pack.
    pub async fn client_pack(
        &self,
        blocks: Vec<(BlockId, Codec, Bytes)>,
    ) -> Result<Vec<u64>, BlockError> {
        self.blocks.put_pack(self.user_id, blocks).await
    }

    /// Feeds the content hash, skipping what a resumed session saw already.
    fn hash(&mut self, data: &[u8]) -> Result<(), IngestError> {
        let skip = self.hashed_ahead.min(data.len() as u64);
        self.hashed_ahead -= skip;
        let new = data.get(skip as usize..).unwrap_or_default();
        if let Some(max) = self.limit
            && self.hasher.len() + new.len() as u64 > max
        {
            return Err(IngestError::TooLarge(max));
        }
        // Hashing a block takes milliseconds: off the reactor where the
        // runtime allows it.
        let hasher = &mut self.hasher;
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| hasher.update(new))
            }
            _ => hasher.update(new),
        }
        Ok(())
    }

    /// Stores on a task of its own, so storing goes on while the next
    /// block is cut.
    fn spawn_store(&self, data: Vec<u8>) -> StoreTask {
        let blocks = self.blocks.clone();
        let user_id = self.user_id;
        StoreTask(tokio::spawn(async move {
            blocks.put_plain(user_id, data).await
        }))
    }
}

/// A block being stored; dropping it (the request went away) stops it.
struct StoreTask(tokio::task::JoinHandle<Result<(BlockId, u64), BlockError>>);

impl Future for StoreTask {
    type Output = Result<(BlockId, u64), BlockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.map_err(BlockError::from).and_then(|r| r))
    }
}

impl Drop for StoreTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A resumable session's durable progress, moved on as its blocks are
/// stored.
pub struct Checkpoints {
    meta: Meta,
    ns: i64,
    id: String,
    /// The session's durable offset.
    pub durable: u64,
    /// Its durable block count.
    pub block_count: u64,
    /// Where the first block not yet durable starts.
    at: u64,
    /// Off when nothing of the request may be kept before its end (a
    /// checksum covers the whole body).
    enabled: bool,
}

impl Checkpoints {
    /// A session durable up to `durable` with `block_count` blocks, whose
    /// unstored tail is `tail_len` bytes.
    pub fn new(
        meta: Meta,
        ns: i64,
        id: &str,
        durable: u64,
        block_count: u64,
        tail_len: u64,
    ) -> Self {
        Self {
            meta,
            ns,
            id: id.to_owned(),
            durable,
            block_count,
            at: durable - tail_len,
            enabled: true,
        }
    }

    /// Keeps everything for the end of the request.
    pub fn only_at_end(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// The session's state at `to`: `stored` blocks appended, `tail`
    /// (stored separately) after them, the hash saved as far as it is final.
    pub fn at_end(
        &self,
        to: u64,
        stored: Vec<(BlockId, u64)>,
        tail: Option<(BlockId, u64)>,
        hasher: &SegmentHasher,
    ) -> Checkpoint {
        Checkpoint {
            from: self.durable,
            to,
            first_idx: self.block_count,
            new_blocks: stored,
            tail,
            hash_state: hasher.saved(to),
        }
    }

    /// Makes the blocks stored so far durable once enough have piled up
    /// (with no tail: the offset is a block's end).
    async fn maybe_checkpoint(
        &mut self,
        stored: &mut Vec<(BlockId, u64)>,
        hasher: &SegmentHasher,
    ) -> Result<(), IngestError> {
        let bytes: u64 = stored.iter().map(|(_, len)| len).sum();
        if !self.enabled || bytes < CHECKPOINT_EVERY {
            return Ok(());
        }
        let to = self.at + bytes;
        let c = self.at_end(to, std::mem::take(stored), None, hasher);
        if !self.meta.checkpoint_upload(self.ns, &self.id, &c).await? {
            return Err(IngestError::Moved);
        }
        self.durable = to;
        self.at = to;
        self.block_count += c.new_blocks.len() as u64;
        Ok(())
    }
}
