//! The block store: verifies, seals and stores blocks, and reads them back
//! verified, from a replica when the main copy is damaged (which it then
//! repairs). Objects are reached through [`Tiers`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};
use tessera_proto::BlockId;
use tessera_proto::pack::{MAX_FRAME_PLAIN, MAX_PACK_PLAIN};

use super::codec::{self, BlockError, Codec};
use super::keys::KeyRing;
use super::tiers::{COLD_PREFIX, Copy, Probed, Tiers};
use crate::meta::{BlockLoc, Meta, Recorded};

#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error("unsupported store URL `{0}`: use file:///PATH, s3://BUCKET[/PREFIX] or memory://")]
    Unsupported(String),
    #[error("cannot create store folder {0}: {1}")]
    Folder(String, std::io::Error),
    #[error("store: {0}")]
    Store(#[from] object_store::Error),
    #[error(
        "AWS_ENDPOINT {0} is plain HTTP: set AWS_ALLOW_HTTP=true to allow that (only on a \
         trusted network), or use https"
    )]
    PlainHttp(String),
    #[error("object store {url}: {problem}")]
    Unusable { url: String, problem: Probed },
    #[error(
        "object store {url}: no AWS_ACCESS_KEY_ID is set, and no other source of credentials \
         answered (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY): {problem}"
    )]
    NoCredentials { url: String, problem: Probed },
}

/// How requests to an S3 store are retried. Stores answer 500/503
/// (`SlowDown`) under load and connections drop; a retry a moment later
/// usually succeeds, and failing instead would fail the client's whole
/// upload. Backoff with jitter from 100 ms, doubling to 5 s, at most 8
/// retries and 2 minutes from the first attempt: long enough to ride out
/// a store restarting, short enough that a retry still carries a valid
/// signature (a request is signed once and sent again as it is; object_store
/// advises staying under 5 minutes) and that a client is not held past
/// its own patience.
fn store_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 8,
        retry_timeout: Duration::from_secs(120),
    }
}

/// The start's probe retries little: a wrong setting should be reported
/// in seconds, not after the minutes a request in service may take.
fn probe_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    }
}

/// Client timeouts unless the environment sets them (`AWS_TIMEOUT`,
/// `AWS_CONNECT_TIMEOUT`). A connection that takes 5 s is not coming; a
/// request may carry an object of up to 80 MiB (a cold pack, see
/// `workers/cold.rs`), which at 1 MB/s takes well over a minute, so the
/// whole request gets 3 minutes instead of object_store's default 30 s,
/// under which a slow uplink would fail every large write.
const S3_TIMEOUTS: [(ClientConfigKey, &str, &str); 2] = [
    (ClientConfigKey::ConnectTimeout, "AWS_CONNECT_TIMEOUT", "5s"),
    (ClientConfigKey::Timeout, "AWS_TIMEOUT", "180s"),
];

/// Opens the object store named by `url`. Local stores fsync every object.
/// An S3 store takes its credentials, region and endpoint from the `AWS_*`
/// environment (docs/OPERATIONS.md) and nothing is sent until it is used:
/// [`probe_object_store`] checks the settings.
pub fn open_object_store(url: &str) -> Result<Arc<dyn ObjectStore>, StoreUrlError> {
    open_with(url, store_retry())
}

fn open_with(url: &str, retry: RetryConfig) -> Result<Arc<dyn ObjectStore>, StoreUrlError> {
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(object_store::memory::InMemory::new()));
    }
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path).map_err(|e| StoreUrlError::Folder(path.to_owned(), e))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)?.with_fsync(true);
        return Ok(Arc::new(fs));
    }
    if is_remote(url) {
        let parsed =
            url::Url::parse(url).map_err(|_| StoreUrlError::Unsupported(url.to_owned()))?;
        let mut builder = AmazonS3Builder::from_env().with_url(url).with_retry(retry);
        for (key, env, value) in S3_TIMEOUTS {
            if std::env::var_os(env).is_none() {
                builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
            }
        }
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        let allow_http = builder
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| {
                matches!(
                    v.to_ascii_lowercase().as_str(),
                    "1" | "true" | "on" | "yes" | "y"
                )
            });
        // object_store would only say "builder error" at the first request.
        if let Some(endpoint) = endpoint.filter(|e| e.starts_with("http://"))
            && !allow_http
        {
            return Err(StoreUrlError::PlainHttp(endpoint));
        }
        let s3 = builder.build()?;
        let prefix = parsed.path().trim_matches('/');
        if prefix.is_empty() {
            return Ok(Arc::new(s3));
        }
        return Ok(Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)));
    }
    Err(StoreUrlError::Unsupported(url.to_owned()))
}

/// A store reached over the network (the others are checked by opening).
fn is_remote(url: &str) -> bool {
    url.starts_with("s3://")
}

/// Checks that the store named by `url` answers with these settings, so a
/// wrong credential, bucket or endpoint stops the server at start with a
/// message naming the setting, not at the first upload. Local stores pass.
pub async fn probe_object_store(url: &str) -> Result<(), StoreUrlError> {
    if !is_remote(url) {
        return Ok(());
    }
    let store = open_with(url, probe_retry())?;
    let url = url.to_owned();
    super::tiers::probe(store.as_ref())
        .await
        .map_err(|problem| match std::env::var_os("AWS_ACCESS_KEY_ID") {
            // Without keys object_store asks the instance's metadata
            // service, whose failure reads like anything but that.
            None => StoreUrlError::NoCredentials { url, problem },
            Some(_) => StoreUrlError::Unusable { url, problem },
        })
}

#[derive(Clone)]
pub struct BlockStore {
    tiers: Arc<Tiers>,
    ring: Arc<KeyRing>,
    meta: Meta,
}

/// A block read back from storage, verified.
pub struct ReadBlock {
    /// How it may be sent: as stored, or, for a block stored as a delta,
    /// compressed afresh on its own.
    pub codec: Codec,
    pub payload: Bytes,
    pub plain: Bytes,
}

/// A block opened and verified, as the readers below get it.
struct Opened {
    plain: Vec<u8>,
    stored: Stored,
}

enum Stored {
    Whole(Codec, Vec<u8>),
    Delta(codec::Pending),
}

impl Opened {
    /// The block in a form that opens on its own: as stored when whole,
    /// compressed afresh (at the fast level) when stored as a delta.
    fn sendable(self) -> (Codec, Vec<u8>, Vec<u8>) {
        match self.stored {
            Stored::Whole(codec, payload) => (codec, payload, self.plain),
            Stored::Delta(_) => {
                let (codec, payload) = codec::compress(self.plain.as_slice());
                (codec, payload, self.plain)
            }
        }
    }
}

/// A new object being filled with sealed blocks copied from elsewhere
/// (compaction, recompression, cold moves, deltas stored whole), and the
/// record moves that will point at it.
struct NewPack {
    object: String,
    bytes: Vec<u8>,
    moved: Vec<crate::meta::Moved>,
}

impl NewPack {
    fn new(object: String) -> Self {
        Self {
            object,
            bytes: Vec::new(),
            moved: Vec::new(),
        }
    }

    /// Appends the sealed copy of `id`, whose record is now at `from`.
    fn add(&mut self, id: BlockId, from: BlockLoc, sealed: &[u8]) {
        let to = BlockLoc {
            object: self.object.clone(),
            offset: self.bytes.len() as u64,
            length: sealed.len() as u64,
        };
        self.bytes.extend_from_slice(sealed);
        self.moved.push(crate::meta::Moved { id, from, to });
    }
}

/// Whether a read may follow a delta to its base. A base is always stored
/// whole, so a base's own read may not: a read follows at most one link.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Follow it, recording damage found in the base.
    Follow,
    /// Follow it, changing nothing (the consistency check's reads).
    FollowUnmarked,
    WholeOnly,
}

impl BlockStore {
    pub fn new(tiers: Tiers, ring: Arc<KeyRing>, meta: Meta) -> Self {
        Self {
            tiers: Arc::new(tiers),
            ring,
            meta,
        }
    }

    /// Accepts a block a client sent as `codec` bytes that must hash to `id`.
    /// `verified` is handed the plain bytes once they hash to `id`, on the
    /// blocking thread that checked them, before the block is stored.
    pub async fn put_upload(
        &self,
        user_id: i64,
        id: BlockId,
        codec: Codec,
        body: Bytes,
        verified: impl FnOnce(Bytes) + Send + 'static,
    ) -> Result<u64, BlockError> {
        let check = body.clone();
        let plain_len = tokio::task::spawn_blocking(move || -> Result<usize, BlockError> {
            let plain = codec::decompress(codec, &check)?;
            codec::verify(&id, &plain)?;
            let len = plain.len();
            verified(Bytes::from(plain));
            Ok(len)
        })
        .await??;
        self.put_verified(user_id, id, codec, body, plain_len)
            .await?;
        Ok(plain_len as u64)
    }

    /// Stores a block the server cut itself (simple upload). Returns its id.
    pub async fn put_plain(
        &self,
        user_id: i64,
        plain: Vec<u8>,
    ) -> Result<(BlockId, u64), BlockError> {
        let (id, codec, payload, len) = tokio::task::spawn_blocking(move || {
            let id = BlockId::of(&plain);
            let len = plain.len();
            let (codec, payload) = codec::compress(plain);
            (id, codec, payload, len)
        })
        .await?;
        self.put_verified(user_id, id, codec, Bytes::from(payload), len)
            .await?;
        Ok((id, len as u64))
    }

    /// A name no other write uses: objects are never overwritten, so a
    /// record always names exactly the bytes its own write put there.
    fn fresh_name(&self, id: &BlockId) -> String {
        format!("{}.{}", self.ring.object_name(id), crate::ids::new_id())
    }

    /// Creates `object` (and its replicas), failing rather than replacing
    /// anything there.
    async fn create(&self, object: &str, bytes: Vec<u8>) -> Result<(), BlockError> {
        self.tiers.create(object, bytes).await
    }

    async fn put_verified(
        &self,
        user_id: i64,
        id: BlockId,
        codec: Codec,
        payload: Bytes,
        plain_len: usize,
    ) -> Result<(), BlockError> {
        // Bytes this user already holds, soundly stored, need no work; that
        // tells the user nothing about anyone else.
        if self.meta.missing_blocks(user_id, &[id]).await?.is_empty() {
            crate::metrics::blocks_deduplicated(1, plain_len as u64);
            return Ok(());
        }
        // Otherwise the work is the same whether or not someone else holds
        // the block (seal, write a new object, fsync, record), so the time
        // taken does not tell; a copy the record did not take is settled
        // after the answer.
        let ring = self.ring.clone();
        let sealed = tokio::task::spawn_blocking(move || {
            codec::seal(&id, codec, &payload, plain_len, &ring)
        })
        .await??;
        let object = self.fresh_name(&id);
        let loc = BlockLoc {
            object: object.clone(),
            offset: 0,
            length: sealed.len() as u64,
        };
        self.create(&object, sealed).await?;
        let written = vec![(id, loc, plain_len as u64)];
        let recorded = self.meta.record_blocks(user_id, &written).await?;
        count_recorded(&written, &recorded);
        self.settle_later(user_id, object, written, recorded);
        Ok(())
    }

    /// Accepts many small blocks at once: each is verified (within the
    /// pack's caps), those the user does not hold are sealed into one pack
    /// object (one write, one fsync), and all are recorded in one
    /// transaction. Returns each block's size.
    pub async fn put_pack(
        &self,
        user_id: i64,
        blocks: Vec<(BlockId, Codec, Bytes)>,
    ) -> Result<Vec<u64>, BlockError> {
        let verified = tokio::task::spawn_blocking(move || {
            let mut inflated = 0usize;
            blocks
                .into_iter()
                .map(|(id, codec, body)| {
                    let plain = codec::decompress_capped(codec, &body, MAX_FRAME_PLAIN).map_err(
                        |e| match e {
                            BlockError::TooLarge => BlockError::PackFrameTooLarge(id),
                            other => other,
                        },
                    )?;
                    inflated += plain.len();
                    if inflated > MAX_PACK_PLAIN {
                        return Err(BlockError::PackTooLarge);
                    }
                    codec::verify(&id, &plain)?;
                    Ok((id, codec, body, plain.len()))
                })
                .collect::<Result<Vec<_>, BlockError>>()
        })
        .await??;
        let sizes = verified.iter().map(|(_, _, _, len)| *len as u64).collect();
        let ids: Vec<BlockId> = verified.iter().map(|(id, ..)| *id).collect();
        let missing: HashSet<BlockId> = self
            .meta
            .missing_blocks(user_id, &ids)
            .await?
            .into_iter()
            .collect();
        let (needed, held): (Vec<_>, Vec<_>) = verified
            .into_iter()
            .partition(|(id, ..)| missing.contains(id));
        let held_bytes = held.iter().map(|(.., len)| *len as u64).sum();
        crate::metrics::blocks_deduplicated(held.len() as u64, held_bytes);
        if needed.is_empty() {
            return Ok(sizes);
        }
        let object = format!("packs/{}", crate::ids::new_id());
        let ring = self.ring.clone();
        let name = object.clone();
        let (pack, records) = tokio::task::spawn_blocking(move || {
            let mut pack = Vec::new();
            let mut records = Vec::new();
            for (id, codec, body, len) in needed {
                let sealed = codec::seal(&id, codec, &body, len, &ring)?;
                let loc = BlockLoc {
                    object: name.clone(),
                    offset: pack.len() as u64,
                    length: sealed.len() as u64,
                };
                pack.extend_from_slice(&sealed);
                records.push((id, loc, len as u64));
            }
            Ok::<_, BlockError>((pack, records))
        })
        .await??;
        self.create(&object, pack).await?;
        let recorded = self.meta.record_blocks(user_id, &records).await?;
        count_recorded(&records, &recorded);
        self.settle_later(user_id, object, records, recorded);
        Ok(sizes)
    }

    /// After the answer: for each block whose new copy the record did not
    /// take, checks the recorded copy. A sound one keeps its place and the
    /// new copy goes (the whole object, once none of its blocks is used); a
    /// damaged one is replaced by the new copy. Copies left by a crash or a
    /// failed delete are never referenced; a sweep of the store can take
    /// them.
    fn settle_later(
        &self,
        user_id: i64,
        object: String,
        written: Vec<(BlockId, BlockLoc, u64)>,
        recorded: Vec<Recorded>,
    ) {
        let mut used = false;
        let mut lost = Vec::new();
        for (block, outcome) in written.into_iter().zip(recorded) {
            match outcome {
                Recorded::Stored => used = true,
                Recorded::Repaired(old) => {
                    used = true;
                    self.remove_later(old);
                }
                Recorded::Existing => lost.push(block),
            }
        }
        if lost.is_empty() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            for (id, ours, plain_len) in lost {
                match store
                    .keep_ours_if_theirs_is_damaged(user_id, id, &ours, plain_len)
                    .await
                {
                    Ok(kept) => used |= kept,
                    Err(e) => {
                        // Not knowing, keep the copy: it is only unused space.
                        tracing::warn!(block = %id, error = %e, "could not check a stored block");
                        used = true;
                    }
                }
            }
            if !used && let Err(e) = store.tiers.delete(&object).await {
                tracing::warn!(%object, error = %e, "could not remove an unused object");
            }
        });
    }

    /// Reads the recorded copy of `id`; if it is damaged, records `ours`
    /// in its place. True if `ours` is now in use.
    async fn keep_ours_if_theirs_is_damaged(
        &self,
        user_id: i64,
        id: BlockId,
        ours: &BlockLoc,
        plain_len: u64,
    ) -> Result<bool, BlockError> {
        let Some(theirs) = self.meta.block_location(&id).await? else {
            return Ok(false);
        };
        if theirs == *ours {
            return Ok(true);
        }
        match self.open_with(id, &theirs, |_| (), Link::Follow).await {
            Ok(()) => return Ok(false),
            Err(e) if is_damage(&e) => {}
            Err(e) => return Err(e),
        }
        // `open_with` marked it damaged: replace it (unless another upload
        // just did).
        let recorded = self
            .meta
            .record_blocks(user_id, &[(id, ours.clone(), plain_len)])
            .await?;
        Ok(match recorded.first() {
            Some(Recorded::Repaired(old)) => {
                let old = old.clone();
                self.remove_later(old);
                true
            }
            Some(Recorded::Stored) => true,
            Some(Recorded::Existing) | None => false,
        })
    }

    /// Deletes a replaced copy once nothing refers to it. A slice of a pack
    /// stays with its pack (its neighbours are in use).
    fn remove_later(&self, old: BlockLoc) {
        if is_pack(&old.object) {
            return;
        }
        let tiers = self.tiers.clone();
        tokio::spawn(async move {
            if let Err(e) = tiers.delete(&old.object).await {
                tracing::warn!(object = %old.object, error = %e, "could not remove a replaced object");
            }
        });
    }

    /// Reads the block's bytes and opens them on a worker thread, keeping
    /// only what `keep` takes.
    async fn open_unmarked<T: Send + 'static>(
        &self,
        id: BlockId,
        loc: &BlockLoc,
        keep: fn(Opened) -> T,
        link: Link,
    ) -> Result<T, BlockError> {
        let main = self.open_copy(id, loc, Copy::Main, keep, link).await;
        let Err(damage) = &main else {
            return main;
        };
        if !is_damage(damage) {
            return main;
        }
        for n in 0..self.tiers.replica_count() {
            if let Ok(opened) = self.open_copy(id, loc, Copy::Replica(n), keep, link).await {
                tracing::warn!(block = %id, object = %loc.object, error = %damage, replica = n,
                    "read a block from a replica: the main copy is damaged");
                self.repair_later(loc.object.clone(), Copy::Main, Copy::Replica(n));
                return Ok(opened);
            }
        }
        main
    }

    /// Reads one copy of a block and opens it on a worker thread; a block
    /// stored as a delta is then rebuilt from its base.
    async fn open_copy<T: Send + 'static>(
        &self,
        id: BlockId,
        loc: &BlockLoc,
        copy: Copy,
        keep: fn(Opened) -> T,
        link: Link,
    ) -> Result<T, BlockError> {
        let stored = self
            .tiers
            .get_range(&loc.object, copy, loc.offset..loc.offset + loc.length)
            .await?;
        let ring = self.ring.clone();
        let opened = tokio::task::spawn_blocking(move || {
            Ok::<_, BlockError>(match codec::open(&id, &stored, &ring)? {
                codec::Opening::Whole(codec, payload, plain) => Ok(keep(Opened {
                    plain,
                    stored: Stored::Whole(codec, payload),
                })),
                codec::Opening::Delta(pending) => Err(pending),
            })
        })
        .await??;
        let pending = match opened {
            Ok(kept) => return Ok(kept),
            Err(pending) => pending,
        };
        if link == Link::WholeOnly {
            return Err(BlockError::NestedDelta(id));
        }
        let base = self
            .base_plain(id, pending.base(), link == Link::Follow)
            .await?;
        tokio::task::spawn_blocking(move || {
            let plain = pending.finish(&id, &base)?;
            Ok(keep(Opened {
                plain,
                stored: Stored::Delta(pending),
            }))
        })
        .await?
    }

    /// The verified plaintext of `base`, which block `id` is stored as a
    /// delta against (damage found in it recorded if `mark`). A base that
    /// is gone or damaged makes `id` damaged too: it cannot be read until
    /// its bytes, or the base's, are uploaded again.
    fn base_plain(
        &self,
        id: BlockId,
        base: BlockId,
        mark: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, BlockError>> + Send + '_>>
    {
        Box::pin(async move {
            let Some(loc) = self.meta.block_location(&base).await? else {
                return Err(BlockError::Corrupt(
                    id,
                    "the block its delta is against is gone",
                ));
            };
            let read = if mark {
                self.open_with(base, &loc, |o| o.plain, Link::WholeOnly)
                    .await
            } else {
                self.open_unmarked(base, &loc, |o| o.plain, Link::WholeOnly)
                    .await
            };
            read.map_err(|e| {
                if is_damage(&e) {
                    BlockError::Corrupt(id, "the block its delta is against is damaged")
                } else {
                    e
                }
            })
        })
    }

    /// After the answer: rewrites the `bad` copy of `object` from `good`.
    fn repair_later(&self, object: String, bad: Copy, good: Copy) {
        let store = self.clone();
        tokio::spawn(async move {
            match store.repair(&object, bad, good).await {
                Ok(true) => tracing::info!(%object, ?bad, "repaired a damaged copy"),
                Ok(false) => {}
                Err(e) => tracing::warn!(%object, error = %e, "could not repair a damaged copy"),
            }
        });
    }

    /// Rewrites the `bad` copy of `object` with the `good` one if every
    /// block recorded in it opens there. True if it did.
    pub async fn repair(&self, object: &str, bad: Copy, good: Copy) -> Result<bool, BlockError> {
        let named = self.meta.blocks_in(object).await?;
        // An object nobody names any more (moved, collected) is not
        // brought back.
        if named.is_empty() {
            return Ok(false);
        }
        let whole = self.tiers.get(object, good).await?;
        for (id, loc) in named {
            let slice = usize::try_from(loc.offset)
                .ok()
                .zip(usize::try_from(loc.offset + loc.length).ok())
                .and_then(|(a, b)| whole.get(a..b).map(Bytes::copy_from_slice));
            let Some(slice) = slice else {
                return Ok(false);
            };
            let ring = self.ring.clone();
            // A block stored as a delta is sound here when it
            // authenticates: these are the bytes that were sealed.
            let sound =
                tokio::task::spawn_blocking(move || codec::open(&id, &slice, &ring).is_ok())
                    .await?;
            if !sound {
                return Ok(false);
            }
        }
        self.tiers.rewrite(object, bad, whole).await?;
        Ok(true)
    }

    /// Reads and verifies a block; damage found is recorded, so that the
    /// block counts as missing until someone uploads its bytes again. A
    /// block that compaction moved after the caller looked up its place is
    /// read from where it is now.
    async fn open_with<T: Send + 'static>(
        &self,
        id: BlockId,
        loc: &BlockLoc,
        keep: fn(Opened) -> T,
        link: Link,
    ) -> Result<T, BlockError> {
        let mut opened = self.open_unmarked(id, loc, keep, link).await;
        let mut loc = loc.clone();
        if let Err(BlockError::Store(object_store::Error::NotFound { .. })) = &opened
            && let Some(now) = self.meta.block_location(&id).await?
            && now != loc
        {
            loc = now;
            opened = self.open_unmarked(id, &loc, keep, link).await;
        }
        let loc = &loc;
        if let Err(e) = &opened
            && is_damage(e)
        {
            tracing::error!(block = %id, object = %loc.object, error = %e, "stored block is damaged");
            if let Err(m) = self.meta.mark_block_damaged(&id, loc).await {
                tracing::warn!(block = %id, error = %m, "could not mark a damaged block");
            }
        }
        opened
    }

    /// Reads, decrypts, decompresses and verifies a block.
    pub async fn read(&self, id: BlockId, loc: &BlockLoc) -> Result<ReadBlock, BlockError> {
        self.open_with(
            id,
            loc,
            |opened| {
                let (codec, payload, plain) = opened.sendable();
                ReadBlock {
                    codec,
                    payload: Bytes::from(payload),
                    plain: Bytes::from(plain),
                }
            },
            Link::Follow,
        )
        .await
    }

    /// The block as it may be sent (codec and payload), verified; the
    /// plaintext is freed on the worker thread.
    pub async fn read_payload(
        &self,
        id: BlockId,
        loc: &BlockLoc,
    ) -> Result<(Codec, Bytes), BlockError> {
        self.open_with(
            id,
            loc,
            |opened| {
                let (codec, payload, ..) = opened.sendable();
                (codec, Bytes::from(payload))
            },
            Link::Follow,
        )
        .await
    }

    /// The verified plaintext alone: the stored and compressed copies are
    /// freed on the worker thread (downloads stream many of these).
    pub async fn read_plain(&self, id: BlockId, loc: &BlockLoc) -> Result<Bytes, BlockError> {
        self.open_with(id, loc, |opened| Bytes::from(opened.plain), Link::Follow)
            .await
    }
}

/// Collection's side of the store: deleting what nobody names, finding
/// what a crash left behind, and rewriting mostly empty packs.
impl BlockStore {
    /// Deletes `objects`; one already gone counts as deleted.
    pub async fn delete_objects(&self, objects: &[String]) -> Result<(), BlockError> {
        for object in objects {
            self.tiers.delete(object).await?;
        }
        Ok(())
    }

    /// Dooms the objects in the store that were last written before
    /// `before_ms` and that no block record names. Streams the listing in
    /// batches, so memory does not grow with the store. Returns how many.
    pub async fn doom_orphans(&self, before_ms: i64) -> Result<u64, BlockError> {
        let mut listing = self.tiers.list_all().try_chunks(500);
        let mut doomed = 0;
        while let Some(found) = listing.try_next().await.map_err(|e| e.1)? {
            let names: Vec<String> = found
                .into_iter()
                .filter(|f| f.last_modified.timestamp_millis() <= before_ms)
                .map(|f| f.location.to_string())
                .filter(|name| is_ours(name))
                .collect();
            if !names.is_empty() {
                doomed += self.meta.doom_orphans(&names).await?;
            }
        }
        Ok(doomed)
    }

    /// The size of a stored object.
    pub async fn object_size(&self, object: &str) -> Result<u64, BlockError> {
        self.tiers.size(object).await
    }

    /// Copies the sound blocks recorded in pack `object` into a new pack
    /// (sealed bytes as they are, each verified first) and points their
    /// records there; the old pack is doomed once nothing names it. A
    /// damaged block stays where it is (and is marked). Returns the blocks
    /// moved.
    pub async fn compact_pack(&self, object: &str) -> Result<u64, BlockError> {
        let blocks = self.meta.blocks_in(object).await?;
        // A cold pack stays cold.
        let tier = if object.starts_with(COLD_PREFIX) {
            COLD_PREFIX
        } else {
            ""
        };
        let mut pack = NewPack::new(format!("{tier}packs/{}", crate::ids::new_id()));
        for (id, from) in blocks {
            let sealed = match self.read_sealed(id, &from).await {
                Ok(sealed) => sealed,
                Err(e) if is_damage(&e) => continue,
                Err(e) => return Err(e),
            };
            pack.add(id, from, &sealed);
        }
        if pack.moved.is_empty() {
            // Nothing sound to keep: collection of its damaged blocks (or
            // their repair) frees it later.
            self.meta.forget_pack_freed(object).await?;
            return Ok(0);
        }
        self.create(&pack.object, pack.bytes).await?;
        Ok(self
            .meta
            .move_blocks(object, &pack.object, &pack.moved)
            .await?)
    }

    /// Rewrites the sound blocks recorded in `object` compressed at zstd
    /// `level` where that makes them smaller (each read and verified,
    /// then sealed afresh), into a new object in the same tier, and
    /// points their records there; the old object is doomed once nothing
    /// names it. A block that is the next version of a block stored whole
    /// (the commit that brought it noted which, as its base) is stored as
    /// a delta against that block when that takes less than half the
    /// room. Each new copy is opened and checked before anything is
    /// written. When the whole object would shrink by less than 3%, its
    /// blocks are only recorded as done where they are. A crash before the
    /// records move leaves an unnamed object, which the sweep takes.
    /// Returns the blocks done.
    pub async fn recompress(&self, object: &str, level: i32) -> Result<u64, BlockError> {
        // The cold tier is priced for data left alone: its blocks are
        // recorded as done (level 0: as they are) without being read.
        if object.starts_with(COLD_PREFIX) {
            return Ok(self.meta.recompressed(object, None, &[], &[], 0).await?);
        }
        let blocks = self.meta.blocks_in(object).await?;
        let new_object = if is_pack(object) || blocks.len() > 1 {
            format!("packs/{}", crate::ids::new_id())
        } else {
            match blocks.first() {
                Some((id, _)) => self.fresh_name(id),
                None => return Ok(0),
            }
        };
        // A block of this object may be the base of another only if it
        // is not to become a delta itself in this very step.
        let candidates: std::collections::HashMap<BlockId, (BlockId, BlockLoc)> = self
            .meta
            .delta_bases_in(object)
            .await?
            .into_iter()
            .map(|(id, base, loc)| (id, (base, loc)))
            .collect();
        let mut pack = NewPack::new(new_object);
        let mut bases = Vec::new();
        let mut before = 0u64;
        for (id, from) in blocks {
            let block = match self.open_with(id, &from, |o| o, Link::Follow).await {
                Ok(block) => block,
                Err(e) if is_damage(&e) => continue,
                Err(e) => return Err(e),
            };
            let base = match (&block.stored, candidates.get(&id)) {
                (Stored::Whole(..), Some((base, loc))) if !candidates.contains_key(base) => {
                    self.base_for_delta(id, *base, loc).await
                }
                _ => None,
            };
            let ring = self.ring.clone();
            let (sealed, base) =
                tokio::task::spawn_blocking(move || reseal(id, block, base, level, &ring))
                    .await??;
            if let Some(base) = base {
                bases.push((id, base));
            }
            before += from.length;
            pack.add(id, from, &sealed);
        }
        if pack.moved.is_empty() {
            return Ok(0);
        }
        if (pack.bytes.len() as u64).saturating_mul(100) > before.saturating_mul(97) {
            return Ok(self
                .meta
                .recompressed(object, None, &[], &[], level)
                .await?);
        }
        self.create(&pack.object, pack.bytes).await?;
        Ok(self
            .meta
            .recompressed(object, Some(&pack.object), &pack.moved, &bases, level)
            .await?)
    }

    /// Stores `blocks`, each stored as a delta, whole again (read through
    /// their base and verified, compressed on their own at the fast level,
    /// sealed afresh and checked) in a new pack in the tier each was in,
    /// and points their records there (compared and swapped), so that
    /// their bases, no longer used by any revision, can be collected. A
    /// block that does not read now stays where it is (a damaged one is
    /// marked), to be tried again. Returns the blocks moved.
    pub async fn store_whole(&self, blocks: &[(BlockId, BlockLoc)]) -> Result<u64, BlockError> {
        let (cold, main): (Vec<_>, Vec<_>) = blocks
            .iter()
            .cloned()
            .partition(|(_, loc)| loc.object.starts_with(COLD_PREFIX));
        let mut moved = 0;
        for (tier, blocks) in [("", main), (COLD_PREFIX, cold)] {
            moved += self.store_whole_in(tier, &blocks).await?;
        }
        Ok(moved)
    }

    async fn store_whole_in(
        &self,
        tier: &str,
        blocks: &[(BlockId, BlockLoc)],
    ) -> Result<u64, BlockError> {
        let mut pack = NewPack::new(format!("{tier}packs/{}", crate::ids::new_id()));
        for (id, from) in blocks {
            let id = *id;
            let plain = match self.read_plain(id, from).await {
                Ok(plain) => plain,
                Err(e) => {
                    tracing::warn!(block = %id, error = %e, "could not store a delta whole");
                    continue;
                }
            };
            let ring = self.ring.clone();
            let sealed = tokio::task::spawn_blocking(move || {
                let (codec, payload) = codec::compress(&plain[..]);
                let sealed = codec::seal(&id, codec, &payload, plain.len(), &ring)?;
                codec::open(&id, &sealed, &ring).map(|_| sealed)
            })
            .await??;
            pack.add(id, from.clone(), &sealed);
        }
        if pack.moved.is_empty() {
            return Ok(0);
        }
        self.create(&pack.object, pack.bytes).await?;
        Ok(self.meta.stored_whole(&pack.object, &pack.moved).await?)
    }

    /// The verified plaintext of `base`, which the metadata offers as the
    /// block `id` may be stored as a delta against (see
    /// `meta::Store::delta_bases_in`). A base that cannot be read now is no
    /// base.
    async fn base_for_delta(
        &self,
        id: BlockId,
        base: BlockId,
        loc: &BlockLoc,
    ) -> Option<(BlockId, Vec<u8>)> {
        match self
            .open_with(base, loc, |o| o.plain, Link::WholeOnly)
            .await
        {
            Ok(plain) => Some((base, plain)),
            Err(e) => {
                tracing::debug!(block = %id, %base, error = %e, "no delta: its base does not read");
                None
            }
        }
    }

    /// The stored (sealed) bytes of a block, after checking they open (a
    /// block stored as a delta, that they authenticate: they are the bytes
    /// sealed, which is what a copy needs).
    async fn read_sealed(&self, id: BlockId, loc: &BlockLoc) -> Result<Bytes, BlockError> {
        let stored = self
            .tiers
            .get_range(&loc.object, Copy::Main, loc.offset..loc.offset + loc.length)
            .await;
        let checked = match stored {
            Ok(stored) => {
                let ring = self.ring.clone();
                let bytes = stored.clone();
                tokio::task::spawn_blocking(move || codec::open(&id, &bytes, &ring).map(|_| ()))
                    .await?
                    .map(|()| stored)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &checked
            && is_damage(e)
        {
            tracing::error!(block = %id, object = %loc.object, error = %e, "stored block is damaged");
            self.meta.mark_block_damaged(&id, loc).await?;
        }
        checked
    }
}

/// The cold tier and the scrub: moving blocks of long-untouched files to
/// the cold store, and checking every copy of a block.
impl BlockStore {
    pub fn has_cold(&self) -> bool {
        self.tiers.has_cold()
    }

    /// Copies `blocks` (verified first) into one new object in the cold
    /// store and moves their records there; their old places are freed.
    /// A crash before the records move leaves an unnamed cold object (the
    /// sweep takes it); after, the old copies are doomed in the same
    /// transaction: every block is readable from one tier or the other.
    pub async fn move_cold(&self, blocks: &[(BlockId, BlockLoc)]) -> Result<u64, BlockError> {
        let mut pack = NewPack::new(format!("{COLD_PREFIX}packs/{}", crate::ids::new_id()));
        for (id, from) in blocks {
            let sealed = match self.read_sealed(*id, from).await {
                Ok(sealed) => sealed,
                Err(e) if is_damage(&e) => continue,
                Err(e) => return Err(e),
            };
            pack.add(*id, from.clone(), &sealed);
        }
        if pack.moved.is_empty() {
            return Ok(0);
        }
        self.tiers.create(&pack.object, pack.bytes).await?;
        Ok(self.meta.relocate_blocks(&pack.object, &pack.moved).await?)
    }

    /// Reads every copy of a block; a damaged copy is rewritten from a
    /// sound one. A block with no sound copy left is marked damaged (it
    /// counts as missing until its bytes are uploaded again).
    pub async fn scrub_block(&self, id: BlockId, loc: &BlockLoc) -> Result<Scrubbed, BlockError> {
        let mut copies = vec![Copy::Main];
        copies.extend((0..self.tiers.replica_count()).map(Copy::Replica));
        let mut sound = Vec::new();
        let mut bad = Vec::new();
        for copy in copies {
            match self.open_copy(id, loc, copy, |_| (), Link::Follow).await {
                Ok(()) => sound.push(copy),
                Err(e) if is_damage(&e) => bad.push(copy),
                Err(e) => return Err(e),
            }
        }
        if bad.is_empty() {
            return Ok(Scrubbed::Sound);
        }
        let Some(&good) = sound.first() else {
            self.meta.mark_block_damaged(&id, loc).await?;
            return Ok(Scrubbed::Lost);
        };
        let mut repaired = 0;
        for copy in bad {
            if self.repair(&loc.object, copy, good).await? {
                repaired += 1;
            }
        }
        Ok(if repaired > 0 {
            Scrubbed::Repaired(repaired)
        } else {
            Scrubbed::Unrepaired
        })
    }
}

/// What scrubbing one block found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrubbed {
    Sound,
    /// This many damaged copies were rewritten from a sound one.
    Repaired(u32),
    /// A copy is damaged and could not be rewritten (another block of its
    /// object is damaged in every sound copy); reads still find a sound
    /// copy.
    Unrepaired,
    /// No sound copy is left.
    Lost,
}

/// The consistency check's side of the store: verifying without marking,
/// and listing what no record names.
impl BlockStore {
    /// Reads and verifies a block, changing nothing (damage is not marked).
    pub async fn verify(&self, id: BlockId, loc: &BlockLoc) -> Result<(), BlockError> {
        self.open_unmarked(id, loc, |_| (), Link::FollowUnmarked)
            .await
    }

    /// Records that the stored copy of `id` at `loc` is damaged.
    pub async fn mark_damaged(&self, id: &BlockId, loc: &BlockLoc) -> Result<(), BlockError> {
        self.meta.mark_block_damaged(id, loc).await?;
        Ok(())
    }

    /// Objects in the store that no block record names and that are not
    /// doomed already: those written before `before_ms` (count, bytes and
    /// the first `sample` names), and how many younger ones there are (a
    /// write may be under way). Streams the listing.
    pub async fn unnamed_objects(
        &self,
        before_ms: i64,
        sample: usize,
    ) -> Result<Unnamed, BlockError> {
        let mut out = Unnamed::default();
        let mut seen = std::collections::HashSet::new();
        let mut listing = self.tiers.list_all().try_chunks(500);
        while let Some(found) = listing.try_next().await.map_err(|e| e.1)? {
            let batch: Vec<(String, u64, bool)> = found
                .into_iter()
                .map(|f| {
                    let old = f.last_modified.timestamp_millis() <= before_ms;
                    (f.location.to_string(), f.size, old)
                })
                .filter(|(name, ..)| is_ours(name) && seen.insert(name.clone()))
                .collect();
            let names: Vec<String> = batch.iter().map(|(n, ..)| n.clone()).collect();
            let known = self.meta.known_objects(&names).await?;
            for (name, size, old) in batch {
                if known.contains(&name) {
                    continue;
                }
                if !old {
                    out.recent += 1;
                    continue;
                }
                out.count += 1;
                out.bytes += size;
                if out.sample.len() < sample {
                    out.sample.push(name);
                }
            }
        }
        Ok(out)
    }
}

/// What [`BlockStore::unnamed_objects`] found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Unnamed {
    pub count: u64,
    pub bytes: u64,
    pub sample: Vec<String>,
    /// Too young to judge: their record may be a moment away.
    pub recent: u64,
}

/// A stored delta must save at least this share of the whole block's
/// room: a delta costs a second read, and ties the block to its base.
const DELTA_PAYS: u64 = 2;

/// Seals `block` afresh for [`BlockStore::recompress`]: as a delta against
/// `base` when that pays, else compressed at `level` where that makes it
/// smaller; a block already stored as a delta keeps its frame. The new
/// copy is opened (and, against its base, rebuilt) before it is returned.
/// Returns the sealed bytes and the base they are a delta against.
fn reseal(
    id: BlockId,
    block: Opened,
    base: Option<(BlockId, Vec<u8>)>,
    level: i32,
    ring: &KeyRing,
) -> Result<(Vec<u8>, Option<BlockId>), BlockError> {
    let plain_len = block.plain.len();
    let (codec, payload) = match block.stored {
        Stored::Delta(pending) => {
            let sealed = codec::seal_delta(&id, &pending.base(), pending.frame(), plain_len, ring)?;
            // The frame rebuilt the block a moment ago: the copy need only
            // authenticate.
            codec::open(&id, &sealed, ring)?;
            return Ok((sealed, Some(pending.base())));
        }
        Stored::Whole(codec, payload) => {
            codec::squeeze(codec, Bytes::from(payload), &block.plain, level)
        }
    };
    if let Some((base, base_plain)) = base
        && let Ok(frame) = tessera_proto::delta::prefix_frame(&base_plain, &block.plain, level)
        && (frame.len() as u64).saturating_mul(DELTA_PAYS) < payload.len() as u64
    {
        let sealed = codec::seal_delta(&id, &base, &frame, plain_len, ring)?;
        match codec::open(&id, &sealed, ring)? {
            codec::Opening::Delta(pending) => pending.finish(&id, &base_plain)?,
            codec::Opening::Whole(..) => {
                return Err(BlockError::Corrupt(id, "a delta sealed as a whole block"));
            }
        };
        return Ok((sealed, Some(base)));
    }
    let sealed = codec::seal(&id, codec, &payload, plain_len, ring)?;
    codec::open(&id, &sealed, ring)?;
    Ok((sealed, None))
}

/// Objects holding many blocks: packs, in the main store or the cold one
/// (every object the cold store holds is a pack).
fn is_pack(name: &str) -> bool {
    name.starts_with("packs/") || name.starts_with(COLD_PREFIX)
}

/// Objects the block store writes: single blocks, packs, cold objects.
fn is_ours(name: &str) -> bool {
    name.starts_with("blocks/") || name.starts_with("packs/") || name.starts_with("cold/")
}

/// Counts written blocks as stored when their record took the new copy,
/// and as deduplicated when another upload recorded the block first.
fn count_recorded(written: &[(BlockId, BlockLoc, u64)], recorded: &[Recorded]) {
    let (mut stored, mut stored_bytes, mut known, mut known_bytes) = (0, 0, 0, 0);
    for ((.., plain_len), outcome) in written.iter().zip(recorded) {
        match outcome {
            Recorded::Stored | Recorded::Repaired(_) => {
                stored += 1;
                stored_bytes += plain_len;
            }
            Recorded::Existing => {
                known += 1;
                known_bytes += plain_len;
            }
        }
    }
    crate::metrics::blocks_stored(stored, stored_bytes);
    crate::metrics::blocks_deduplicated(known, known_bytes);
}

/// Errors that mean the stored copy itself is bad (not a passing fault).
pub fn is_damage(e: &BlockError) -> bool {
    matches!(
        e,
        // A key id no data key has is rot in the header, which the
        // authentication would have caught had it got that far.
        BlockError::Corrupt(..)
            | BlockError::UnknownKey(..)
            // A delta against a delta breaks the rule that a base is
            // whole: what a new upload of either block's bytes repairs.
            | BlockError::NestedDelta(..)
            | BlockError::Store(object_store::Error::NotFound { .. })
    )
}
