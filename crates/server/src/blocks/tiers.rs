//! The object stores behind the block store: the primary (hot) store, an
//! optional cold store for blocks of long-untouched files, and replicas.
//! The only code that speaks to an object store.
//!
//! - An object's name says its tier: names under `cold/` live in the cold
//!   store, all others in the primary.
//! - Replicas mirror every object by name, whichever its tier. A write is
//!   acknowledged only once the primary (or cold) store and every replica
//!   hold it; a delete removes every copy.
//! - Objects are created, never overwritten, with one exception: a damaged
//!   or missing copy is rewritten from a copy whose every recorded block
//!   was verified ([`Tiers::rewrite`]), so it holds the very bytes its
//!   original write put there.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::codec::BlockError;

/// Names of objects in the cold store start with this.
pub const COLD_PREFIX: &str = "cold/";

/// Which copy of an object to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    /// The primary store's, or the cold store's for a cold object.
    Main,
    /// Replica number `n`.
    Replica(usize),
}

pub struct Tiers {
    primary: Arc<dyn ObjectStore>,
    cold: Option<Arc<dyn ObjectStore>>,
    replicas: Vec<Arc<dyn ObjectStore>>,
}

impl Tiers {
    pub fn new(primary: Arc<dyn ObjectStore>) -> Self {
        Self {
            primary,
            cold: None,
            replicas: Vec::new(),
        }
    }

    pub fn with_cold(mut self, cold: Option<Arc<dyn ObjectStore>>) -> Self {
        self.cold = cold;
        self
    }

    pub fn with_replicas(mut self, replicas: Vec<Arc<dyn ObjectStore>>) -> Self {
        self.replicas = replicas;
        self
    }

    pub fn has_cold(&self) -> bool {
        self.cold.is_some()
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    fn main_for(&self, object: &str) -> Result<&Arc<dyn ObjectStore>, BlockError> {
        if object.starts_with(COLD_PREFIX) {
            self.cold.as_ref().ok_or_else(|| {
                BlockError::Config(format!(
                    "{object} is in the cold store, and no cold_store is configured"
                ))
            })
        } else {
            Ok(&self.primary)
        }
    }

    fn store(&self, object: &str, copy: Copy) -> Result<&Arc<dyn ObjectStore>, BlockError> {
        match copy {
            Copy::Main => self.main_for(object),
            Copy::Replica(n) => self
                .replicas
                .get(n)
                .ok_or_else(|| BlockError::Config(format!("there is no replica {n}"))),
        }
    }

    /// Every store a copy of `object` belongs in.
    fn all_for(&self, object: &str) -> Result<Vec<&Arc<dyn ObjectStore>>, BlockError> {
        let mut all = vec![self.main_for(object)?];
        all.extend(self.replicas.iter());
        Ok(all)
    }

    /// Creates `object` in its store and every replica, failing rather than
    /// replacing anything. Acknowledged once all hold it (local stores
    /// fsync).
    pub async fn create(&self, object: &str, bytes: Vec<u8>) -> Result<(), BlockError> {
        let bytes = Bytes::from(bytes);
        let path = ObjectPath::from(object);
        let writes = self.all_for(object)?.into_iter().map(|store| {
            let (path, bytes) = (&path, &bytes);
            async move {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                match store.put_opts(path, bytes.clone().into(), opts).await {
                    Ok(_) => Ok(()),
                    // A create sent again because its answer was lost (a
                    // dropped connection is retried) meets what its first
                    // attempt wrote. Names are never reused, so the same
                    // bytes there are that attempt's; anything else is a
                    // real clash.
                    Err(clash @ object_store::Error::AlreadyExists { .. }) => {
                        let there = store.get(path).await?.bytes().await?;
                        if there == *bytes {
                            Ok(())
                        } else {
                            Err(BlockError::Store(clash))
                        }
                    }
                    Err(e) => Err(BlockError::Store(e)),
                }
            }
        });
        futures::future::try_join_all(writes).await?;
        Ok(())
    }

    /// Replaces one copy of `object` with bytes verified elsewhere.
    pub async fn rewrite(&self, object: &str, copy: Copy, bytes: Bytes) -> Result<(), BlockError> {
        let store = self.store(object, copy)?;
        store
            .put(&ObjectPath::from(object), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    pub async fn get_range(
        &self,
        object: &str,
        copy: Copy,
        range: Range<u64>,
    ) -> Result<Bytes, BlockError> {
        Ok(self
            .store(object, copy)?
            .get_range(&ObjectPath::from(object), range)
            .await?)
    }

    pub async fn get(&self, object: &str, copy: Copy) -> Result<Bytes, BlockError> {
        Ok(self
            .store(object, copy)?
            .get(&ObjectPath::from(object))
            .await?
            .bytes()
            .await?)
    }

    pub async fn size(&self, object: &str) -> Result<u64, BlockError> {
        Ok(self
            .main_for(object)?
            .head(&ObjectPath::from(object))
            .await?
            .size)
    }

    /// Deletes every copy of `object`; copies already gone count as deleted.
    pub async fn delete(&self, object: &str) -> Result<(), BlockError> {
        let path = ObjectPath::from(object);
        // A cold object whose store is no longer configured cannot be
        // deleted there; its replicas still can.
        let mut stores: Vec<&Arc<dyn ObjectStore>> = self.replicas.iter().collect();
        if let Ok(main) = self.main_for(object) {
            stores.push(main);
        }
        for store in stores {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Every object of every store (primary, cold, replicas), one store
    /// after another; an object held by several stores comes once per
    /// store. Streams the listings.
    pub fn list_all(&self) -> BoxStream<'static, Result<ObjectMeta, BlockError>> {
        let mut listings = vec![self.primary.list(None)];
        if let Some(cold) = &self.cold {
            let prefix = ObjectPath::from(COLD_PREFIX.trim_end_matches('/'));
            listings.push(cold.list(Some(&prefix)));
        }
        listings.extend(self.replicas.iter().map(|r| r.list(None)));
        futures::stream::iter(listings)
            .flatten()
            .map_err(BlockError::from)
            .boxed()
    }
}

/// Why a store cannot be used, as far as its answers tell.
#[derive(Debug, thiserror::Error)]
pub enum Probed {
    #[error(
        "cannot connect (check AWS_ENDPOINT, and AWS_ALLOW_HTTP=true for a plain-HTTP \
         endpoint): {0}"
    )]
    Unreachable(object_store::Error),
    #[error(
        "the credentials were refused (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY): {0}"
    )]
    Credentials(object_store::Error),
    #[error("the bucket was not found (create it, or fix the bucket in the store URL): {0}")]
    NoBucket(object_store::Error),
    #[error("listing failed: {0}")]
    Failed(object_store::Error),
}

/// Lists the first object of `store` (one cheap request). When that
/// fails, a HEAD of a name that need not exist tells why: object_store
/// reports a failed listing as text only, but a HEAD's status as a typed
/// error (403: credentials; 404 where the listing failed: no bucket).
pub async fn probe(store: &dyn ObjectStore) -> Result<(), Probed> {
    let listed = store.list(None).next().await;
    let Some(Err(listing)) = listed else {
        return Ok(());
    };
    if cannot_connect(&listing) {
        return Err(Probed::Unreachable(listing));
    }
    match store.head(&ObjectPath::from("tessera-probe")).await {
        Err(
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. },
        ) => Err(Probed::Credentials(listing)),
        Err(object_store::Error::NotFound { .. }) => Err(Probed::NoBucket(listing)),
        _ => Err(Probed::Failed(listing)),
    }
}

/// True if the request never reached the store (refused, timed out).
fn cannot_connect(e: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(http) = c.downcast_ref::<HttpError>() {
            return matches!(http.kind(), HttpErrorKind::Connect | HttpErrorKind::Timeout);
        }
        cause = c.source();
    }
    false
}
