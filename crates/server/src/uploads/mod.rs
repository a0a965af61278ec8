//! Resumable uploads: sessions that take a file in pieces, across requests,
//! server restarts and instances.
//!
//! The stream is cut into blocks as it arrives and every complete block is
//! stored at once, exactly as a simple upload does. What a session must
//! remember between requests lives in the metadata store (offset, blocks so
//! far, saved hash state) and the block store (the bytes after the last cut,
//! kept as a block of their own), so any instance can continue it. An offset
//! is acknowledged only after it is durable. Memory: a few blocks per
//! request in flight, whatever the file size.

pub mod checksum;
pub mod running_hash;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tessera_proto::block::CHUNKER;
use tessera_proto::{BlockId, ContentHash, RemotePath};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::blocks::hash::SegmentHasher;
use crate::blocks::ingest::Cut;
use crate::blocks::{BlockError, BlockStore, Checkpoints, Ingest, IngestError};
use crate::meta::{Checkpoint, Meta, MetaError, NewRevision, NodeRow, UploadRow, now_ms};
use checksum::Checksum;

/// Blocks compressed and stored at once per request. One more is held
/// back (it may be the tail) and the cutter fills the next: two keeps a
/// request within the memory of a simple upload.
const PARALLEL: usize = 2;

/// Sessions whose in-memory state (hash, tail bytes) is kept between
/// requests; others are rebuilt from the stores when they continue.
const CACHED: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("no such upload session")]
    NotFound,
    #[error(
        "Upload-Offset is {given}, but the upload is at {actual}: ask with HEAD and continue from there"
    )]
    OffsetMismatch { given: u64, actual: u64 },
    #[error(
        "another request moved this upload on meanwhile: ask with HEAD and continue from there"
    )]
    Moved,
    #[error("the body goes past Upload-Length ({0} bytes); nothing past it was stored")]
    TooLong(u64),
    #[error("the body does not match Upload-Checksum; this piece was discarded")]
    ChecksumMismatch,
    #[error("the upload is complete already")]
    Complete,
    #[error(
        "this account already has {0} unfinished uploads, the most allowed: finish or end (DELETE) some first"
    )]
    TooManySessions(usize),
    #[error("the upload's stored state is damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<IngestError> for UploadError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Cut(e) => UploadError::Damaged(format!("cutting the stream: {e}")),
            IngestError::TooLarge(n) => UploadError::TooLong(n),
            IngestError::Moved => UploadError::Moved,
            IngestError::Block(e) => UploadError::Block(e),
            IngestError::Meta(e) => UploadError::Meta(e),
        }
    }
}

/// How the device of an upload through a link starts (`link <id>`).
pub const LINK_DEVICE: &str = "link ";

/// Who is uploading.
#[derive(Debug, Clone)]
pub struct Uploader {
    pub user_id: i64,
    pub ns: i64,
    pub device: String,
}

/// What a PATCH achieved.
pub enum Patched {
    /// Durable up to `offset`; more to come.
    Progress { offset: u64 },
    /// The last byte arrived and the file was committed.
    Done {
        offset: u64,
        node: Box<NodeRow>,
        path: RemotePath,
    },
}

/// Namespace and session id.
type SessionKey = (i64, String);

/// A session's state after its last request, to continue without
/// re-reading the stores.
struct Live {
    offset: u64,
    block_count: u64,
    hasher: SegmentHasher,
    tail: Bytes,
}

#[derive(Clone)]
pub struct Uploads {
    meta: Meta,
    blocks: BlockStore,
    cache: Arc<Mutex<Vec<(SessionKey, Live)>>>,
    max_open_per_user: usize,
}

impl Uploads {
    /// `max_open_per_user`: unfinished sessions one user may hold.
    pub fn new(meta: Meta, blocks: BlockStore, max_open_per_user: usize) -> Self {
        Self {
            meta,
            blocks,
            cache: Arc::default(),
            max_open_per_user,
        }
    }

    /// Opens a session for `length` bytes to `path`, and shows the file as
    /// syncing. An empty file is committed at once.
    pub async fn create(
        &self,
        who: &Uploader,
        path: &RemotePath,
        base_rev: Option<i64>,
        length: u64,
        metadata: &str,
    ) -> Result<(String, Option<Patched>), UploadError> {
        if let Some(node) = self.meta.resolve(who.ns, path).await?
            && node.is_folder()
        {
            return Err(MetaError::NotAFile(path.to_string()).into());
        }
        // Each session holds a row, a pending mark and stored blocks until
        // it ends. Two creates racing may pass together: the cap is a bound
        // on abuse, not an exact count.
        // Sessions that visitors open through the owner's file requests
        // count apart, so they can never use up the owner's own.
        let through_links = who.device.starts_with(LINK_DEVICE);
        let open = self
            .meta
            .open_uploads(who.ns, LINK_DEVICE, through_links)
            .await?;
        if usize::try_from(open).unwrap_or(usize::MAX) >= self.max_open_per_user {
            return Err(UploadError::TooManySessions(self.max_open_per_user));
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        let now = now_ms();
        let row = UploadRow {
            namespace_id: who.ns,
            id: id.clone(),
            user_id: who.user_id,
            path: path.to_string(),
            base_rev,
            length: length as i64,
            upload_offset: 0,
            block_count: 0,
            tail_block: None,
            tail_len: 0,
            hash_state: Vec::new(),
            metadata: metadata.to_owned(),
            device: who.device.clone(),
            created_ms: now,
            updated_ms: now,
            done_path: None,
            done_rev: None,
        };
        self.meta.create_upload(&row).await?;
        if length == 0 {
            let empty = Checkpoint {
                from: 0,
                to: 0,
                first_idx: 0,
                new_blocks: Vec::new(),
                tail: None,
                hash_state: Vec::new(),
            };
            let done = self.finish(who, &row, empty, &SegmentHasher::new()).await?;
            return Ok((id, Some(done)));
        }
        self.meta
            .mark_upload_pending(&self.revision(who, path, base_rev, length, ContentHash([0; 32])))
            .await?;
        Ok((id, None))
    }

    pub async fn session(&self, ns: i64, id: &str) -> Result<UploadRow, UploadError> {
        self.meta.upload(ns, id).await?.ok_or(UploadError::NotFound)
    }

    /// Ends a session; its stored blocks become collectable.
    pub async fn terminate(&self, ns: i64, id: &str) -> Result<(), UploadError> {
        self.forget(ns, id);
        if self.meta.delete_upload(ns, id).await? {
            Ok(())
        } else {
            Err(UploadError::NotFound)
        }
    }

    /// Appends `body` at `offset`. Progress is durable when this returns;
    /// if the body breaks off, what arrived is kept (unless a checksum was
    /// given, which a partial body cannot match).
    pub async fn patch<S>(
        &self,
        who: &Uploader,
        id: &str,
        offset: u64,
        body: S,
        checksum: Option<Checksum>,
    ) -> Result<Patched, UploadError>
    where
        S: futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let (row, live) = self.continue_at(who, id, offset).await?;
        let length = row.length as u64;
        let tail_len = live.tail.len() as u64;
        let mut points = Checkpoints::new(
            self.meta.clone(),
            who.ns,
            id,
            live.offset,
            live.block_count,
            tail_len,
        );
        if checksum.is_some() {
            points = points.only_at_end();
        }
        let (tap, body) = Tap::new(body, checksum, length - live.offset);
        let reader = std::io::Cursor::new(live.tail).chain(body);
        let mut ingest = Ingest::resume(self.blocks.clone(), who.user_id, live.hasher, tail_len)
            .parallel(PARALLEL);
        let cut = ingest.cut(reader, Some(&mut points)).await;
        let tap = std::mem::take(&mut *lock(&tap));
        if tap.too_long {
            // Keep what was stored in checkpoints; refuse the rest.
            return Err(UploadError::TooLong(length));
        }
        let cut = cut?;
        if let Some(c) = tap.checksum
            && (tap.interrupted || !c.matches())
        {
            return Err(UploadError::ChecksumMismatch);
        }
        let end = row.upload_offset as u64 + tap.received;
        if end == length {
            self.forget(who.ns, id);
            return self.complete(who, &row, &points, cut, ingest).await;
        }
        self.keep_progress(who, id, &points, cut, end, ingest.into_hasher())
            .await
    }

    /// The session at `offset`, ready to take more: its row and state.
    async fn continue_at(
        &self,
        who: &Uploader,
        id: &str,
        offset: u64,
    ) -> Result<(UploadRow, Live), UploadError> {
        let row = self.session(who.ns, id).await?;
        if row.done_path.is_some() {
            return Err(UploadError::Complete);
        }
        let durable = row.upload_offset as u64;
        if offset != durable {
            return Err(UploadError::OffsetMismatch {
                given: offset,
                actual: durable,
            });
        }
        let live = match self.take_cached(who.ns, id, durable, row.block_count as u64) {
            Some(l) => l,
            None => self.rebuild(who, &row).await?,
        };
        Ok((row, live))
    }

    /// Makes a request that did not end the file durable: its blocks, and
    /// the piece after the last cut stored as the tail.
    async fn keep_progress(
        &self,
        who: &Uploader,
        id: &str,
        points: &Checkpoints,
        cut: Cut,
        end: u64,
        hasher: SegmentHasher,
    ) -> Result<Patched, UploadError> {
        let tail = Bytes::from(cut.held.unwrap_or_default());
        let tail_block = if tail.is_empty() {
            None
        } else {
            Some(self.blocks.put_plain(who.user_id, tail.to_vec()).await?)
        };
        let checkpoint = points.at_end(end, cut.blocks, tail_block, &hasher);
        let block_count = points.block_count + checkpoint.new_blocks.len() as u64;
        if !self.meta.checkpoint_upload(who.ns, id, &checkpoint).await? {
            return Err(UploadError::Moved);
        }
        self.put_cached(
            who.ns,
            id,
            Live {
                offset: end,
                block_count,
                hasher,
                tail,
            },
        );
        Ok(Patched::Progress { offset: end })
    }

    /// Ends a request that brought the last byte: stores the last piece
    /// and commits the file.
    async fn complete(
        &self,
        who: &Uploader,
        row: &UploadRow,
        points: &Checkpoints,
        cut: Cut,
        ingest: Ingest,
    ) -> Result<Patched, UploadError> {
        let mut blocks = cut.blocks;
        if let Some(data) = cut.held {
            blocks.push(ingest.store(data).await?);
        }
        let hasher = ingest.into_hasher();
        let c = Checkpoint {
            hash_state: Vec::new(),
            ..points.at_end(row.length as u64, blocks, None, &hasher)
        };
        self.finish(who, row, c, &hasher).await
    }

    /// Commits the file: the session's blocks with `c`'s last ones.
    async fn finish(
        &self,
        who: &Uploader,
        row: &UploadRow,
        c: Checkpoint,
        hasher: &SegmentHasher,
    ) -> Result<Patched, UploadError> {
        let path = RemotePath::parse(&row.path)
            .map_err(|e| UploadError::Damaged(format!("stored path: {e}")))?;
        let length = hasher.len();
        let content_hash = ContentHash::from(hasher.finalize());
        let new = self.revision(who, &path, row.base_rev, length, content_hash);
        match self.meta.finish_upload(who.ns, &row.id, &c, &new).await? {
            Some((node, path)) => Ok(Patched::Done {
                offset: length,
                node: Box::new(node),
                path,
            }),
            None => Err(UploadError::Moved),
        }
    }

    fn revision(
        &self,
        who: &Uploader,
        path: &RemotePath,
        base_rev: Option<i64>,
        size: u64,
        content_hash: ContentHash,
    ) -> NewRevision {
        NewRevision {
            ns: who.ns,
            user_id: who.user_id,
            path: path.clone(),
            base_rev,
            size,
            content_hash,
            chunker: CHUNKER.to_owned(),
            // The finishing transaction reads the session's blocks itself.
            blocks: Vec::new(),
            device: who.device.clone(),
        }
    }

    /// The state of a session that this instance has not seen last (after
    /// a restart, or when another instance took the previous request): the
    /// tail block, and the hash fed again from its last saved segment.
    async fn rebuild(&self, who: &Uploader, row: &UploadRow) -> Result<Live, UploadError> {
        let offset = row.upload_offset as u64;
        let tail = match &row.tail_block {
            Some(raw) => {
                let id = BlockId::from_slice(raw)
                    .ok_or_else(|| UploadError::Damaged("tail block id".into()))?;
                self.read_block(who.user_id, id).await?
            }
            None => Bytes::new(),
        };
        if tail.len() as u64 != row.tail_len as u64 {
            return Err(UploadError::Damaged("tail length".into()));
        }
        let mut hasher = SegmentHasher::resume(&row.hash_state)
            .ok_or_else(|| UploadError::Damaged("hash state".into()))?;
        let from = hasher.resume_offset();
        let tail_start = offset - tail.len() as u64;
        if from < tail_start {
            // Feed the stored blocks that hold [from, tail_start).
            let mut at = 0u64;
            for (id, len) in self.meta.upload_blocks(row.namespace_id, &row.id).await? {
                let end = at + len;
                if end > from && at < tail_start {
                    let data = self.read_block(who.user_id, id).await?;
                    let skip = from.saturating_sub(at) as usize;
                    hasher.update(data.get(skip..).unwrap_or_default());
                }
                at = end;
                if at >= tail_start {
                    break;
                }
            }
            if at != tail_start {
                return Err(UploadError::Damaged(
                    "stored blocks do not reach the tail".into(),
                ));
            }
        }
        let skip = from.saturating_sub(tail_start) as usize;
        hasher.update(tail.get(skip..).unwrap_or_default());
        if hasher.len() != offset {
            return Err(UploadError::Damaged(
                "hash state does not reach the offset".into(),
            ));
        }
        Ok(Live {
            offset,
            block_count: row.block_count as u64,
            hasher,
            tail,
        })
    }

    async fn read_block(&self, user_id: i64, id: BlockId) -> Result<Bytes, UploadError> {
        let loc = self
            .meta
            .user_block_location(user_id, &id)
            .await?
            .ok_or_else(|| UploadError::Damaged(format!("block {id} is gone")))?;
        Ok(self.blocks.read_plain(id, &loc).await?)
    }

    fn take_cached(&self, ns: i64, id: &str, offset: u64, block_count: u64) -> Option<Live> {
        let mut cache = self.cache.lock().ok()?;
        let i = cache.iter().position(|(k, _)| k.0 == ns && k.1 == id)?;
        let (_, live) = cache.remove(i);
        (live.offset == offset && live.block_count == block_count).then_some(live)
    }

    fn put_cached(&self, ns: i64, id: &str, live: Live) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|(k, _)| !(k.0 == ns && k.1 == id));
            if cache.len() >= CACHED {
                cache.remove(0);
            }
            cache.push(((ns, id.to_owned()), live));
        }
    }

    fn forget(&self, ns: i64, id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|(k, _)| !(k.0 == ns && k.1 == id));
        }
    }
}

/// What the request body has shown so far (the content hash is the
/// ingest's: it hashes what it cuts).
#[derive(Default)]
struct TapState {
    checksum: Option<Checksum>,
    received: u64,
    limit: u64,
    too_long: bool,
    interrupted: bool,
}

fn lock(tap: &Arc<Mutex<TapState>>) -> std::sync::MutexGuard<'_, TapState> {
    tap.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the body, hashing and counting it. A body that breaks off ends
/// here like one that finished (what arrived is kept); one that goes past
/// the upload's length stops with an error before the excess is used.
struct Tap<R> {
    inner: R,
    state: Arc<Mutex<TapState>>,
}

impl<S> Tap<tokio_util::io::StreamReader<S, Bytes>>
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    /// The body as a reader that stops past `limit` bytes, and what it
    /// shows (checked against `checksum`).
    fn new(body: S, checksum: Option<Checksum>, limit: u64) -> (Arc<Mutex<TapState>>, Self) {
        let state = Arc::new(Mutex::new(TapState {
            checksum,
            limit,
            ..TapState::default()
        }));
        let tap = Tap {
            inner: tokio_util::io::StreamReader::new(body),
            state: state.clone(),
        };
        (state, tap)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tap<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                tracing::info!(error = %e, "upload body broke off; keeping what arrived");
                lock(&self.state).interrupted = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => {
                let mut state = lock(&self.state);
                if state.interrupted {
                    buf.set_filled(before);
                    return Poll::Ready(Ok(()));
                }
                let new = &buf.filled()[before..];
                if state.received + new.len() as u64 > state.limit {
                    state.too_long = true;
                    return Poll::Ready(Err(std::io::Error::other(
                        "body longer than Upload-Length",
                    )));
                }
                state.received += new.len() as u64;
                if let Some(c) = state.checksum.as_mut() {
                    c.update(new);
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}
