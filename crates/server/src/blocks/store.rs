//! The block store: verifies, seals and stores blocks, and reads them back
//! verified. The only code that speaks to the object store.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tessera_proto::BlockId;

use super::codec::{self, BlockError, Codec};
use super::keys::KeyRing;
use crate::meta::{BlockLoc, Meta};

#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error("unsupported store URL `{0}`: use file:///PATH, s3://BUCKET[/PREFIX] or memory://")]
    Unsupported(String),
    #[error("cannot create store folder {0}: {1}")]
    Folder(String, std::io::Error),
    #[error("store: {0}")]
    Store(#[from] object_store::Error),
}

/// Opens the object store named by `url`. Local stores fsync every object.
pub fn open_object_store(url: &str) -> Result<Arc<dyn ObjectStore>, StoreUrlError> {
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(object_store::memory::InMemory::new()));
    }
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path).map_err(|e| StoreUrlError::Folder(path.to_owned(), e))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)?.with_fsync(true);
        return Ok(Arc::new(fs));
    }
    if url.starts_with("s3://") {
        let parsed =
            url::Url::parse(url).map_err(|_| StoreUrlError::Unsupported(url.to_owned()))?;
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .build()?;
        let prefix = parsed.path().trim_matches('/');
        if prefix.is_empty() {
            return Ok(Arc::new(s3));
        }
        return Ok(Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)));
    }
    Err(StoreUrlError::Unsupported(url.to_owned()))
}

#[derive(Clone)]
pub struct BlockStore {
    objects: Arc<dyn ObjectStore>,
    ring: Arc<KeyRing>,
    meta: Meta,
}

/// A block read back from storage, verified.
pub struct ReadBlock {
    pub codec: Codec,
    pub payload: Bytes,
    pub plain: Bytes,
}

impl BlockStore {
    pub fn new(objects: Arc<dyn ObjectStore>, ring: Arc<KeyRing>, meta: Meta) -> Self {
        Self {
            objects,
            ring,
            meta,
        }
    }

    /// Accepts a block a client sent as `codec` bytes that must hash to `id`.
    pub async fn put_upload(
        &self,
        user_id: i64,
        id: BlockId,
        codec: Codec,
        body: Bytes,
    ) -> Result<u64, BlockError> {
        let check = body.clone();
        let plain_len = tokio::task::spawn_blocking(move || -> Result<usize, BlockError> {
            let plain = codec::decompress(codec, &check)?;
            codec::verify(&id, &plain)?;
            Ok(plain.len())
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
            let (codec, payload) = codec::compress(&plain);
            (id, codec, payload, plain.len())
        })
        .await?;
        self.put_verified(user_id, id, codec, Bytes::from(payload), len)
            .await?;
        Ok((id, len as u64))
    }

    async fn put_verified(
        &self,
        user_id: i64,
        id: BlockId,
        codec: Codec,
        payload: Bytes,
        plain_len: usize,
    ) -> Result<(), BlockError> {
        // Global dedup: bytes already stored by anyone are not stored again;
        // the uploader has proven it holds them, so it may reference them.
        if self.meta.block_location(&id).await?.is_some() {
            self.meta.grant_block(user_id, &id).await?;
            return Ok(());
        }
        let ring = self.ring.clone();
        let sealed = tokio::task::spawn_blocking(move || {
            codec::seal(&id, codec, &payload, plain_len, &ring)
        })
        .await?;
        let object = self.ring.object_name(&id);
        let length = sealed.len() as u64;
        // Acknowledged only once stored (the local store fsyncs).
        self.objects
            .put(&ObjectPath::from(object.as_str()), PutPayload::from(sealed))
            .await?;
        let loc = BlockLoc {
            object,
            offset: 0,
            length,
        };
        self.meta
            .record_blocks(user_id, &[(id, loc, plain_len as u64)])
            .await?;
        Ok(())
    }

    /// Accepts many small blocks at once: each is verified, those not yet
    /// stored are sealed into one pack object (one write, one fsync), and
    /// all are recorded in one transaction. Returns each block's size.
    pub async fn put_pack(
        &self,
        user_id: i64,
        blocks: Vec<(BlockId, Codec, Bytes)>,
    ) -> Result<Vec<u64>, BlockError> {
        let verified = tokio::task::spawn_blocking(move || {
            blocks
                .into_iter()
                .map(|(id, codec, body)| {
                    let plain = codec::decompress(codec, &body)?;
                    codec::verify(&id, &plain)?;
                    Ok((id, codec, body, plain.len()))
                })
                .collect::<Result<Vec<_>, BlockError>>()
        })
        .await??;
        let sizes = verified.iter().map(|(_, _, _, len)| *len as u64).collect();
        let mut fresh: Vec<(BlockId, Codec, Bytes, usize)> = Vec::new();
        let mut known = Vec::new();
        for (id, codec, body, len) in verified {
            if self.meta.block_location(&id).await?.is_some()
                || fresh.iter().any(|(f, ..)| *f == id)
            {
                known.push(id);
            } else {
                fresh.push((id, codec, body, len));
            }
        }
        for id in &known {
            self.meta.grant_block(user_id, id).await?;
        }
        if fresh.is_empty() {
            return Ok(sizes);
        }
        let object = format!("packs/{}", uuid::Uuid::now_v7());
        let ring = self.ring.clone();
        let name = object.clone();
        let (pack, records) = tokio::task::spawn_blocking(move || {
            let mut pack = Vec::new();
            let mut records = Vec::new();
            for (id, codec, body, len) in fresh {
                let sealed = codec::seal(&id, codec, &body, len, &ring);
                let loc = BlockLoc {
                    object: name.clone(),
                    offset: pack.len() as u64,
                    length: sealed.len() as u64,
                };
                pack.extend_from_slice(&sealed);
                records.push((id, loc, len as u64));
            }
            (pack, records)
        })
        .await?;
        self.objects
            .put(&ObjectPath::from(object.as_str()), PutPayload::from(pack))
            .await?;
        self.meta.record_blocks(user_id, &records).await?;
        Ok(sizes)
    }

    /// Reads the block's bytes and opens them on a worker thread, keeping
    /// only what `keep` takes from (codec, payload, plaintext).
    async fn open_with<T: Send + 'static>(
        &self,
        id: BlockId,
        loc: &BlockLoc,
        keep: fn(Codec, Vec<u8>, Vec<u8>) -> T,
    ) -> Result<T, BlockError> {
        let stored = self
            .objects
            .get_range(
                &ObjectPath::from(loc.object.as_str()),
                loc.offset..loc.offset + loc.length,
            )
            .await?;
        let ring = self.ring.clone();
        let opened = tokio::task::spawn_blocking(move || {
            codec::open(&id, &stored, &ring).map(|(c, payload, plain)| keep(c, payload, plain))
        });
        opened.await?
    }

    /// Reads, decrypts, decompresses and verifies a block.
    pub async fn read(&self, id: BlockId, loc: &BlockLoc) -> Result<ReadBlock, BlockError> {
        self.open_with(id, loc, |codec, payload, plain| ReadBlock {
            codec,
            payload: Bytes::from(payload),
            plain: Bytes::from(plain),
        })
        .await
    }

    /// The verified plaintext alone: the stored and compressed copies are
    /// freed on the worker thread (downloads stream many of these).
    pub async fn read_plain(&self, id: BlockId, loc: &BlockLoc) -> Result<Bytes, BlockError> {
        self.open_with(id, loc, |_, _, plain| Bytes::from(plain))
            .await
    }
}
