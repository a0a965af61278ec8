//! Metadata: users, tokens, namespaces, nodes, revisions, blocks, journal.
//!
//! The only module that speaks SQL. One schema and one set of queries serve
//! SQLite and PostgreSQL: `sqlite.rs` and `postgres.rs` each mount the same
//! query modules (`queries.rs` and its children) with `#[path]`, over their
//! own `Db` and `BEGIN`, so one SQL text runs on both (`$N` placeholders
//! work in SQLite too), and [`Meta`] dispatches to the one in use (the
//! `forward!` list below). Every user-visible change is one transaction
//! that also appends to the namespace's journal, and once it commits the
//! store publishes the namespace's new sequence number through the
//! [`Publisher`] it was opened with (`notify/publish.rs`).
//!
//! Invariants (beyond the journal's, in `queries.rs`):
//!
//! - Tables holding namespace data lead their keys with `namespace_id`, so
//!   the schema can later be distributed by namespace.
//! - A block's reference count changes in the same transaction as the
//!   revision that references it. A new block starts at zero with
//!   `zero_since_ms` set; collection waits out a grace period. Blocks named by
//!   a live upload session have no revision yet: collection must count
//!   `upload_blocks` and `upload_sessions.tail_block` as references.
//! - Tree walks refuse cycles. A move (or a restore from the trash) is
//!   refused when its destination folder is the node itself or lies below
//!   it, decided by walking the destination's ancestors by node id. Every
//!   walk (a node's path, the ancestor check, restore, purge, the zip) keeps
//!   the ids it has seen and stops at a repeat with `MetaError::Cycle`
//!   instead of looping inside a write transaction. Folders an older release
//!   let move into their own subtree are put back at the root at every start
//!   (`rescue_cut_off`), through the trash's restore so the journal tells
//!   every device.
//! - The server owns a file's identity. The content hash it stores and
//!   reports (ETag, `x-tessera-content-hash`, journal) is one it computed
//!   (simple upload, TUS) or verified: a block-protocol commit is checked
//!   before the write transaction by streaming its blocks through BLAKE3 (at
//!   most about one check per core; 429 after 30 s waiting), and a wrong
//!   claim is refused with 400. The check is skipped when a revision of the
//!   same namespace with the very same block list already carries a verified
//!   hash (`revisions.blocks_key`, migration 0005; kept for lists of several
//!   blocks, as a one-block file's hash is its block's id). A commit is "unchanged"
//!   only when its block list equals the current revision's.
//! - A commit's validation happens outside the write transaction, in batched
//!   queries (`BATCH` ids: 100 on SQLite, 500 on PostgreSQL), and the block count is capped by the size (at most
//!   `size / MIN_BLOCK + 1`; a batch names at most 4,000 blocks). Under the
//!   lock a commit re-checks its blocks in the same batches.
//! - Dedup is no oracle: `missing` and `commit` consult `user_blocks`, so a
//!   user learns a block exists only after uploading it or when it is in
//!   their own files.

use std::time::{SystemTime, UNIX_EPOCH};

use tessera_proto::api::{ChangeKind, UnknownChangeKind};
use tessera_proto::{BlockId, ContentHash, RemotePath};

use crate::notify::Publisher;

pub mod failover;
mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0} is a file, not a folder")]
    NotAFolder(String),
    #[error("{0} is a folder, not a file")]
    NotAFile(String),
    #[error("{path} changed: it is at revision {current_rev} now, not at the base you gave")]
    Conflict { path: String, current_rev: i64 },
    #[error("{} block(s) must be uploaded before this commit", .0.len())]
    MissingBlocks(Vec<BlockId>),
    #[error("{0}")]
    Invalid(String),
    /// The user may see the thing but not do this to it (a viewer's write,
    /// a member's try at what only the owner may do).
    #[error("{0}")]
    Forbidden(String),
    /// A move (or restore) would put a folder inside itself.
    #[error("{0}")]
    IntoItself(String),
    /// The stored tree is damaged: following parents comes back to a node
    /// already seen. Walks stop with this instead of looping.
    #[error("the folder tree is damaged: {0}")]
    Cycle(String),
    /// A stored journal entry has a kind this release does not know.
    #[error("the journal is damaged: {0}")]
    Journal(#[from] UnknownChangeKind),
    /// A change would take the owner past their quota.
    #[error(
        "over the storage quota: this needs {adding} more bytes and {used} of {quota} bytes are \
         in use; delete files or empty the trash, then retry"
    )]
    QuotaExceeded { used: u64, quota: u64, adding: u64 },
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://...")]
    BadUrl(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The database could not be reached or refused the work (down,
    /// failing over, read-only, out of connections): nothing was done.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database stopped answering while the call ran (its connection
    /// broke, or it took longer than the call timeout): a change may or
    /// may not have been made.
    #[error("the database stopped answering: {0}")]
    Interrupted(String),
    /// Another change met this one and it was undone whole (a deadlock
    /// the database broke, a serialization failure): nothing was done,
    /// and sending it again is safe.
    #[error("another change met this one: {0}")]
    Contended(String),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// A user's blocks by id: each one's plain length and where it is stored.
pub type UserBlocks = std::collections::HashMap<BlockId, (u64, BlockLoc)>;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub root_ns: i64,
}

/// Who a bearer token belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub user_id: i64,
    pub username: String,
    pub root_ns: i64,
    pub device: String,
    pub expires_ms: i64,
    pub last_seen_ms: Option<i64>,
}

/// Where a purge of a deleted account stands after one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeStep {
    /// Not deleted (restored meanwhile), or not yet due.
    NotDue,
    /// More to do: call again.
    More,
    /// Purged; the name is free.
    Done,
}

/// A node a name search found, with its path in its namespace.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub ns: i64,
    pub node: NodeRow,
    pub path: RemotePath,
}

/// An account as an administrator sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: i64,
    pub username: String,
    pub is_admin: bool,
    pub created_ms: i64,
    pub disabled_ms: Option<i64>,
    pub deleted_ms: Option<i64>,
    pub purge_begun_ms: Option<i64>,
    pub used_bytes: i64,
    pub quota_bytes: Option<i64>,
    /// Signed-in devices.
    pub devices: i64,
    pub last_seen_ms: Option<i64>,
}

impl AccountRow {
    /// As the API shows it, purged `trash_ttl_ms` after its deletion (if
    /// the trash is emptied by age).
    pub fn view(self, trash_ttl_ms: Option<i64>) -> tessera_proto::api::Account {
        use tessera_proto::api::AccountState;
        let state = match (self.purge_begun_ms, self.deleted_ms, self.disabled_ms) {
            (Some(_), ..) => AccountState::Purging,
            (None, Some(_), _) => AccountState::Deleted,
            (None, None, Some(_)) => AccountState::Disabled,
            (None, None, None) => AccountState::Active,
        };
        tessera_proto::api::Account {
            purge_after_ms: self
                .deleted_ms
                .zip(trash_ttl_ms)
                .map(|(at, ttl)| at.saturating_add(ttl)),
            name: self.username,
            admin: self.is_admin,
            state,
            created_ms: self.created_ms,
            deleted_ms: self.deleted_ms,
            used_bytes: self.used_bytes.max(0) as u64,
            quota_bytes: self.quota_bytes.map(|q| q.max(0) as u64),
            devices: self.devices.max(0) as u64,
            last_seen_ms: self.last_seen_ms,
        }
    }
}

/// A signed-in device: one token, as its owner sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRow {
    pub token_hash: Vec<u8>,
    pub device: String,
    pub client: Option<String>,
    pub created_ms: i64,
    pub last_seen_ms: Option<i64>,
    pub expires_ms: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeRow {
    pub namespace_id: i64,
    pub id: String,
    pub parent_id: Option<String>,
    pub name: String,
    pub kind: String,
    pub rev: i64,
    pub size: i64,
    pub content_hash: Option<Vec<u8>>,
    pub modified_ms: i64,
    /// Set while an upload is under way.
    pub pending_ms: Option<i64>,
}

impl NodeRow {
    pub fn is_folder(&self) -> bool {
        self.kind == "folder"
    }
    pub fn content_hash(&self) -> Option<ContentHash> {
        digest(self.content_hash.as_deref()).map(ContentHash)
    }
}

fn digest(raw: Option<&[u8]>) -> Option<[u8; 32]> {
    raw.and_then(|b| <[u8; 32]>::try_from(b).ok())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevisionRow {
    pub rev: i64,
    pub size: i64,
    pub content_hash: Vec<u8>,
    pub chunker: String,
    pub device: String,
    pub created_ms: i64,
    /// Kept whatever the retention schedule says.
    pub pinned: bool,
}

impl RevisionRow {
    /// The row with its chunker named again ([`loaded_chunker`]).
    fn loaded(self) -> Self {
        Self {
            chunker: loaded_chunker(self.chunker),
            ..self
        }
    }

    pub fn content_hash(&self) -> ContentHash {
        ContentHash(digest(Some(&self.content_hash)).unwrap_or([0; 32]))
    }
}

/// A journal entry as stored: its kind still a name.
#[derive(Debug, Clone, sqlx::FromRow)]
struct StoredJournalRow {
    seq: i64,
    kind: String,
    node_id: String,
    path: String,
    old_path: Option<String>,
    rev: Option<i64>,
    node_kind: String,
    size: Option<i64>,
    content_hash: Option<Vec<u8>>,
    device: String,
    created_ms: i64,
}

#[derive(Debug, Clone)]
pub struct JournalRow {
    pub seq: i64,
    pub kind: ChangeKind,
    pub node_id: String,
    pub path: String,
    pub old_path: Option<String>,
    pub rev: Option<i64>,
    pub node_kind: String,
    pub size: Option<i64>,
    pub content_hash: Option<Vec<u8>>,
    pub device: String,
    pub created_ms: i64,
}

impl TryFrom<StoredJournalRow> for JournalRow {
    type Error = MetaError;

    fn try_from(r: StoredJournalRow) -> Result<Self> {
        Ok(Self {
            seq: r.seq,
            kind: r.kind.parse()?,
            node_id: r.node_id,
            path: r.path,
            old_path: r.old_path,
            rev: r.rev,
            node_kind: r.node_kind,
            size: r.size,
            content_hash: r.content_hash,
            device: r.device,
            created_ms: r.created_ms,
        })
    }
}

impl JournalRow {
    pub fn content_hash(&self) -> Option<ContentHash> {
        digest(self.content_hash.as_deref()).map(ContentHash)
    }
}

/// A trashed node.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrashRow {
    pub id: String,
    pub kind: String,
    pub size: i64,
    pub deleted_ms: i64,
    pub deleted_path: Option<String>,
}

/// Where a block's stored bytes are: a whole object or a slice of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLoc {
    pub object: String,
    pub offset: u64,
    pub length: u64,
}

/// What one pass of collection removed from the metadata.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Block records removed.
    pub blocks: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Objects no record names any more, now waiting to be deleted.
    pub doomed: u64,
}

/// A block of a pack that compaction copies: where it is, where it goes.
#[derive(Debug, Clone)]
pub struct Moved {
    pub id: BlockId,
    pub from: BlockLoc,
    pub to: BlockLoc,
}

/// A file revision or upload session that uses a block, for reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockUse {
    pub owner: String,
    /// The file's path (where it was, for one in the trash), or the
    /// upload session's target.
    pub path: String,
    /// None for an upload session.
    pub rev: Option<i64>,
    pub in_trash: bool,
}

/// A block whose recorded reference count is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongCount {
    pub id: BlockId,
    pub recorded: i64,
    pub actual: i64,
}

/// An unfinished upload session that names a block with no record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Dangling {
    pub namespace_id: i64,
    pub id: String,
    pub path: String,
    pub owner: String,
}

/// What recording a freshly written copy of a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The block was new: the record names the new copy.
    Stored,
    /// The block was known damaged: the record now names the new copy, and
    /// the damaged one (here) is no longer referenced.
    Repaired(BlockLoc),
    /// A sound copy was recorded first (as far as anyone knows): the new
    /// copy is not referenced.
    Existing,
}

/// One block of a revision, in file order, with where it is stored.
#[derive(Debug, Clone)]
pub struct RevisionBlock {
    pub id: BlockId,
    pub file_offset: u64,
    pub size: u64,
    pub loc: BlockLoc,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct RevisionBlockRow {
    block_id: Vec<u8>,
    file_offset: i64,
    size: i64,
    object: String,
    obj_offset: i64,
    obj_length: i64,
}

impl RevisionBlockRow {
    fn into_block(self) -> Result<RevisionBlock> {
        let id = digest(Some(&self.block_id))
            .map(BlockId)
            .ok_or_else(|| MetaError::Invalid("stored block id is not 32 bytes".into()))?;
        Ok(RevisionBlock {
            id,
            file_offset: self.file_offset as u64,
            size: self.size as u64,
            loc: BlockLoc {
                object: self.object,
                offset: self.obj_offset as u64,
                length: self.obj_length as u64,
            },
        })
    }
}

/// A resumable upload session (see `upload_queries.rs`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UploadRow {
    pub namespace_id: i64,
    pub id: String,
    pub user_id: i64,
    pub path: String,
    pub base_rev: Option<i64>,
    pub length: i64,
    pub upload_offset: i64,
    pub block_count: i64,
    pub tail_block: Option<Vec<u8>>,
    pub tail_len: i64,
    /// Saved chaining values of the content hash (`blocks::hash`).
    pub hash_state: Vec<u8>,
    /// The client's Upload-Metadata, echoed back.
    pub metadata: String,
    pub device: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub done_path: Option<String>,
    pub done_rev: Option<i64>,
}

/// A step of an upload session from offset `from` to `to`.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub from: u64,
    pub to: u64,
    /// Index the first new block gets (the session's block count before).
    pub first_idx: u64,
    pub new_blocks: Vec<(BlockId, u64)>,
    /// The bytes after the last cut, stored as a block: id and length.
    pub tail: Option<(BlockId, u64)>,
    pub hash_state: Vec<u8>,
}

/// A new file revision made of blocks the user has uploaded.
#[derive(Debug, Clone)]
pub struct NewRevision {
    pub ns: i64,
    pub user_id: i64,
    pub path: RemotePath,
    pub base_rev: Option<i64>,
    pub size: u64,
    pub content_hash: ContentHash,
    pub chunker: String,
    pub blocks: Vec<(BlockId, u64)>,
    pub device: String,
}

/// A link to a node (see `links_queries.rs`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkRow {
    pub id: String,
    pub user_id: i64,
    pub namespace_id: i64,
    pub node_id: String,
    pub password_hash: Option<String>,
    /// Takes uploads into its folder and shows nothing (a file request).
    pub upload_only: bool,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
}

/// A shared folder as one member has it (see `share_queries.rs`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MountRow {
    pub user_id: i64,
    /// The shared folder's namespace.
    pub namespace_id: i64,
    /// Where it is in this member's files: its path without the leading
    /// `/` (the member's own folders may hold it, never another mount).
    pub name: String,
    /// `owner`, `editor` or `viewer`.
    pub role: String,
    /// Where the member's root journal says the mount was made.
    pub mount_seq: i64,
    /// The shared folder's node (the root of its namespace).
    pub root_id: String,
    pub owner_id: i64,
}

impl MountRow {
    /// The mount point as a path of the member's files.
    pub fn point(&self) -> RemotePath {
        RemotePath::parse(&self.name).unwrap_or_else(|_| RemotePath::root())
    }
    /// Whether `path` is the mount point or lies inside it.
    pub fn holds(&self, path: &RemotePath) -> bool {
        let point = self.point();
        !point.is_root() && path.starts_with(&point)
    }
    pub fn writable(&self) -> bool {
        self.role != "viewer"
    }
    pub fn owned(&self) -> bool {
        self.role == "owner"
    }
}

/// One member of a shared folder.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: i64,
    pub username: String,
    pub role: String,
}

/// The block list an upload under way announced with its first commit.
#[derive(Debug, Clone)]
pub struct PendingList {
    pub size: u64,
    pub content_hash: ContentHash,
    pub chunker: String,
    pub blocks: Vec<(BlockId, u64)>,
}

/// A revision's chunker as its row keeps it: the one every commit uses
/// (`proto::block::CHUNKER`, 29 bytes) as the empty string, others as they
/// are (rows from before this form keep the name).
pub fn stored_chunker(chunker: &str) -> &str {
    if chunker == tessera_proto::block::CHUNKER {
        ""
    } else {
        chunker
    }
}

/// A chunker as [`stored_chunker`] kept it, named again.
pub fn loaded_chunker(stored: String) -> String {
    if stored.is_empty() {
        tessera_proto::block::CHUNKER.to_owned()
    } else {
        stored
    }
}

/// The key a new revision row keeps: none for a list of one block (or
/// none), whose content hash is its block's id, so it needs no key to be
/// trusted, and whose key is cheap to compute from its one row when a
/// commit compares lists. A tree of small files keeps a tenth less.
pub fn stored_blocks_key(key: &[u8; 32], blocks: &[(BlockId, u64)]) -> Option<Vec<u8>> {
    (blocks.len() > 1).then(|| key.to_vec())
}

/// Names a block list: BLAKE3 of the chunker tag, then each block's id and
/// size in order. Equal keys mean equal lists, hence equal bytes.
pub fn blocks_key(chunker: &str, blocks: &[(BlockId, u64)]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&(chunker.len() as u64).to_le_bytes());
    h.update(chunker.as_bytes());
    for (id, size) in blocks {
        h.update(&id.0);
        h.update(&size.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// Connections of the database pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    /// Open now, idle or in use.
    pub size: u32,
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// The metadata store in use, SQLite or PostgreSQL.
#[derive(Clone)]
pub struct Meta {
    backend: Backend,
    /// On PostgreSQL: the longest a call may take before it fails as
    /// unavailable, so a primary that lost its synchronous standby (its
    /// commits wait for ever) cannot hang requests.
    call_timeout: Option<std::time::Duration>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(std::sync::Arc<sqlite::Store>),
    Postgres(
        std::sync::Arc<postgres::Store>,
        std::sync::Arc<failover::Failover>,
    ),
}

/// The default of [`Meta::with_call_timeout`].
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Meta {
    /// Opens (creating if needed) and migrates the database at `url`.
    /// Every change committed through it is announced to `publisher`.
    pub async fn connect(url: &str, publisher: Publisher) -> Result<Self> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(std::sync::Arc::new(
                sqlite::Store::connect(url, publisher).await?,
            ))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let failover = std::sync::Arc::new(failover::Failover::new(failover::hosts(url)?));
            let store = postgres::Store::connect(&failover, publisher).await?;
            Backend::Postgres(std::sync::Arc::new(store), failover)
        } else {
            return Err(MetaError::BadUrl(url.to_owned()));
        };
        Ok(Self {
            backend,
            call_timeout: Some(CALL_TIMEOUT),
        })
    }

    /// Sets how long a call to PostgreSQL may take (None: no limit).
    pub fn with_call_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }

    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(..) => "postgres",
        }
    }

    /// Times the PostgreSQL pool moved to a newly promoted primary.
    pub fn failovers(&self) -> u64 {
        match &self.backend {
            Backend::Sqlite(_) => 0,
            Backend::Postgres(_, f) => f.moves(),
        }
    }

    /// The PostgreSQL pool (for the change notices), on that backend.
    pub fn pg_pool(&self) -> Option<sqlx::PgPool> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(s, _) => Some(s.pool().clone()),
        }
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s, _) => s.close().await,
        }
    }

    /// The connection pool as it is now, for the metrics.
    pub fn pool_stats(&self) -> PoolStats {
        match &self.backend {
            Backend::Sqlite(s) => s.pool_stats(),
            Backend::Postgres(s, _) => s.pool_stats(),
        }
    }

    pub async fn create_admin(&self, username: &str, password_hash: &str) -> Result<UserRow> {
        self.create_user_as(username, password_hash, true).await
    }
}

/// A PostgreSQL call's outcome: one that ran past `timeout`, or failed
/// because the database is down or failing over, is `Unavailable`.
async fn bounded<T>(
    timeout: Option<std::time::Duration>,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let outcome = match timeout {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                return Err(MetaError::Interrupted(format!(
                    "no answer within {} s",
                    limit.as_secs()
                )));
            }
        },
        None => call.await,
    };
    outcome.map_err(|e| match e {
        MetaError::Db(db) if failover::never_reached(&db) => MetaError::Unavailable(db.to_string()),
        MetaError::Db(db) if failover::rolled_back_for_another(&db) => {
            MetaError::Contended(db.to_string())
        }
        MetaError::Db(db) if failover::is_unavailable(&db) => {
            MetaError::Interrupted(db.to_string())
        }
        other => other,
    })
}

/// Writes `impl Meta` from a list of signatures: each method calls the
/// method of the same name on whichever backend is in use. Both backends
/// compile the same `queries.rs`, so a method missing from one cannot
/// slip through.
macro_rules! forward {
    ($(
        $(#[$attr:meta])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Meta {
            $(
                $(#[$attr])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match &self.backend {
                        Backend::Sqlite(s) => s.$name($($arg),*).await,
                        Backend::Postgres(s, _) => bounded(self.call_timeout, s.$name($($arg),*)).await,
                    }
                }
            )*
        }
    };
}

impl Meta {
    /// Purges a deleted account due before `cutoff_ms` whole, step by
    /// step (each step its own transaction and call); false when it is not
    /// deleted (restored meanwhile) or not due.
    pub async fn purge_account(&self, user_id: i64, cutoff_ms: i64) -> Result<bool> {
        loop {
            match self.purge_deleted(user_id, cutoff_ms).await? {
                PurgeStep::NotDue => return Ok(false),
                PurgeStep::More => {}
                PurgeStep::Done => return Ok(true),
            }
        }
    }
}

forward! {
    fn ping(&self) -> Result<()>;
    fn user_count(&self) -> Result<i64>;
    fn create_user(&self, username: &str, password_hash: &str) -> Result<UserRow>;
    /// A user who is an administrator when `admin` (the first user always is).
    fn create_user_as(&self, username: &str, password_hash: &str, admin: bool) -> Result<UserRow>;
    fn is_admin(&self, user_id: i64) -> Result<bool>;
    fn user_by_name(&self, username: &str) -> Result<Option<UserRow>>;
    /// Makes a token, unless the user's password hash is no longer
    /// `checked` (false then).
    fn insert_token(&self, hash: &[u8], user_id: i64, device: &str, client: Option<&str>, expires_ms: i64, checked: &str) -> Result<bool>;
    fn token(&self, hash: &[u8]) -> Result<Option<TokenRow>>;
    fn delete_token(&self, hash: &[u8]) -> Result<()>;
    /// Notes that the token was used at `now_ms`, if it was last noted
    /// before `before`.
    fn touch_token(&self, hash: &[u8], now_ms: i64, before: i64) -> Result<()>;
    /// The user's signed-in devices (unexpired tokens), newest first.
    fn devices_of(&self, user_id: i64) -> Result<Vec<DeviceRow>>;
    /// Signs out the user's device whose token hash is `hash`; false when
    /// the user has no such device.
    fn revoke_token(&self, user_id: i64, hash: &[u8]) -> Result<bool>;
    /// Sets the user's password hash, if it is still `checked`, and signs
    /// out every device of theirs but `keep` (which must still be signed
    /// in), in one transaction. Returns how many were signed out.
    fn set_password(&self, user_id: i64, password_hash: &str, checked: &str, keep: Option<&[u8]>) -> Result<u64>;
    /// Live nodes whose name holds a text; see `search_queries.rs`.
    fn search_names(&self, namespaces: &[i64], text: &str, limit: usize) -> Result<(Vec<SearchHit>, bool)>;
    /// Accounts as administrators handle them; see `accounts.rs`.
    fn accounts(&self) -> Result<Vec<AccountRow>>;
    fn may_sign_in(&self, user_id: i64) -> Result<bool>;
    fn is_deleted(&self, user_id: i64) -> Result<bool>;
    fn set_disabled(&self, username: &str, disabled: bool) -> Result<u64>;
    fn delete_account(&self, username: &str) -> Result<i64>;
    fn restore_account(&self, username: &str) -> Result<()>;
    fn reset_password(&self, username: &str, password_hash: &str) -> Result<u64>;
    fn deleted_before(&self, cutoff_ms: i64) -> Result<Vec<i64>>;
    fn purge_deleted(&self, user_id: i64, cutoff_ms: i64) -> Result<PurgeStep>;
    fn data_keys(&self) -> Result<Vec<(i64, Vec<u8>)>>;
    fn insert_data_key(&self, wrapped: &[u8]) -> Result<i64>;
    /// Re-wraps every data key in one transaction; see `users.rs`.
    fn rewrap_data_keys(&self, rows: &[(i64, Vec<u8>, Vec<u8>)]) -> Result<()>;
    fn missing_blocks(&self, user_id: i64, ids: &[BlockId]) -> Result<Vec<BlockId>>;
    fn block_location(&self, id: &BlockId) -> Result<Option<BlockLoc>>;
    fn user_block_location(&self, user_id: i64, id: &BlockId) -> Result<Option<BlockLoc>>;
    /// Records freshly written blocks and grants them to `user_id`, in one
    /// transaction. Each answer says whether the record took the new copy.
    fn record_blocks(
        &self,
        user_id: i64,
        blocks: &[(BlockId, BlockLoc, u64)],
    ) -> Result<Vec<Recorded>>;
    /// Marks the block damaged if it is still stored at `at`: it then
    /// counts as missing, and the next upload of its bytes replaces it.
    fn mark_block_damaged(&self, id: &BlockId, at: &BlockLoc) -> Result<bool>;
    /// Which of `ids` the user may reference: plain length and location.
    fn user_blocks(
        &self,
        user_id: i64,
        ids: &[BlockId],
    ) -> Result<std::collections::HashMap<BlockId, (u64, BlockLoc)>>;
    /// A server-computed or verified content hash of a revision of `ns`
    /// whose block list has `key` ([`blocks_key`]).
    fn verified_hash(&self, ns: i64, key: &[u8; 32]) -> Result<Option<Vec<u8>>>;
    fn resolve(&self, ns: i64, path: &RemotePath) -> Result<Option<NodeRow>>;
    fn list(&self, ns: i64, path: &RemotePath) -> Result<Vec<NodeRow>>;
    fn mkdir(&self, ns: i64, path: &RemotePath, device: &str) -> Result<NodeRow>;
    /// Many folders in one transaction; see `tree.rs`.
    fn mkdir_many(&self, ns: i64, paths: &[RemotePath], device: &str) -> Result<Vec<Result<NodeRow>>>;
    fn commit(&self, new: &NewRevision) -> Result<NodeRow>;
    /// Many commits in one transaction; see `tree.rs`.
    fn commit_many(&self, news: &[NewRevision]) -> Result<Vec<Result<NodeRow>>>;
    /// Ends pending marks older than `cutoff_ms`; see `tree.rs`.
    fn expire_pending(&self, cutoff_ms: i64) -> Result<Vec<i64>>;
    fn trash(&self, ns: i64) -> Result<Vec<TrashRow>>;
    fn create_upload(&self, u: &UploadRow) -> Result<()>;
    fn open_uploads(&self, ns: i64, prefix: &str, among: bool) -> Result<i64>;
    fn upload(&self, ns: i64, id: &str) -> Result<Option<UploadRow>>;
    fn upload_blocks(&self, ns: i64, id: &str) -> Result<Vec<(BlockId, u64)>>;
    fn checkpoint_upload(&self, ns: i64, id: &str, c: &Checkpoint) -> Result<bool>;
    /// Completes an upload session; see `upload_queries.rs`.
    fn finish_upload(
        &self,
        ns: i64,
        id: &str,
        c: &Checkpoint,
        new: &NewRevision,
    ) -> Result<Option<(NodeRow, RemotePath)>>;
    fn delete_upload(&self, ns: i64, id: &str) -> Result<bool>;
    fn expire_uploads(&self, cutoff_ms: i64) -> Result<Vec<i64>>;
    /// Shows the file at `new.path` as syncing (an upload has begun).
    fn mark_upload_pending(&self, new: &NewRevision) -> Result<()>;
    /// The block list the upload under way at `path` announced.
    fn pending_list(&self, ns: i64, path: &RemotePath) -> Result<PendingList>;
    /// Removes trash entries for good; see `tree.rs`.
    fn purge_trash(&self, ns: i64, id: Option<&str>, deleted_upto_ms: Option<i64>) -> Result<u64>;
    fn expire_trash(&self, cutoff_ms: i64) -> Result<u64>;
    fn unreferenced_blocks(&self) -> Result<i64>;
    /// A user's usage and quota in bytes; see `quota_queries.rs`.
    fn usage(&self, user_id: i64) -> Result<(u64, Option<u64>)>;
    fn set_quota(&self, username: &str, quota: Option<u64>) -> Result<()>;
    /// Whether `adding` bytes more fit the user's quota.
    fn check_room(&self, user_id: i64, adding: u64) -> Result<()>;
    /// State several instances share; see `cluster_queries.rs`.
    fn take_lease(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> Result<Option<String>>;
    fn release_leases(&self, holder: &str) -> Result<()>;
    fn login_begin(
        &self,
        keys: &[(String, i64)],
        window_ms: i64,
        now_ms: i64,
    ) -> Result<std::result::Result<Vec<i64>, i64>>;
    fn login_end(&self, ends: &[(String, i64)]) -> Result<()>;
    fn prune_login_attempts(&self, before_ms: i64) -> Result<u64>;
    fn sync_presence(&self, instance: &str, now_ms: i64, devices: &[(i64, String, i64)]) -> Result<()>;
    fn presence_elsewhere(&self, user_id: i64, except: &str, alive_since_ms: i64) -> Result<Vec<(String, i64)>>;
    fn forget_instances(&self, instance: &str, dead_before_ms: i64) -> Result<()>;
    /// Removes up to `limit` blocks unreferenced since `cutoff_ms`; see
    /// `gc_queries.rs`.
    fn collect_blocks(&self, cutoff_ms: i64, limit: i64) -> Result<Collected>;
    fn doomed_objects(&self, before_ms: i64, limit: i64) -> Result<Vec<String>>;
    fn forget_doomed(&self, objects: &[String]) -> Result<()>;
    fn doom_orphans(&self, objects: &[String]) -> Result<u64>;
    fn packs_with_freed_space(&self, limit: i64) -> Result<Vec<(String, u64)>>;
    fn blocks_in(&self, object: &str) -> Result<Vec<(BlockId, BlockLoc)>>;
    fn move_blocks(&self, old: &str, new: &str, moved: &[Moved]) -> Result<u64>;
    /// The background recompression's queries; see `gc_queries.rs`.
    fn next_to_recompress(&self, cutoff_ms: i64) -> Result<Option<String>>;
    fn recompressed(
        &self,
        old: &str,
        new: Option<&str>,
        moved: &[Moved],
        bases: &[(BlockId, BlockId)],
        level: i32,
    ) -> Result<u64>;
    fn delta_bases_in(&self, object: &str) -> Result<Vec<(BlockId, BlockId, BlockLoc)>>;
    fn forget_pack_freed(&self, object: &str) -> Result<()>;
    /// Blocks only long-untouched files use; see `gc_queries.rs`.
    fn cold_candidates(&self, cutoff_ms: i64, limit: i64) -> Result<Vec<(BlockId, BlockLoc)>>;
    fn relocate_blocks(&self, new: &str, moved: &[Moved]) -> Result<u64>;
    fn stored_whole(&self, new: &str, moved: &[Moved]) -> Result<u64>;
    fn deltas_on_unused_bases(&self, cutoff_ms: i64, limit: i64) -> Result<Vec<(BlockId, BlockLoc)>>;
    /// The consistency check's queries; see `fsck_queries.rs`.
    fn block_count(&self) -> Result<u64>;
    fn blocks_page(&self, after: Option<BlockId>, limit: i64) -> Result<Vec<(BlockId, BlockLoc)>>;
    fn block_uses(&self, id: &BlockId) -> Result<Vec<BlockUse>>;
    fn dangling_blocks(&self, limit: i64) -> Result<Vec<BlockId>>;
    fn wrong_refcounts(&self, limit: i64) -> Result<Vec<WrongCount>>;
    fn fix_refcount(&self, id: &BlockId) -> Result<()>;
    fn dangling_sessions(&self) -> Result<Vec<Dangling>>;
    fn known_objects(&self, objects: &[String]) -> Result<std::collections::HashSet<String>>;
    /// Restores a trashed node; see `tree.rs`.
    fn restore_from_trash(
        &self,
        ns: i64,
        id: &str,
        to: Option<&RemotePath>,
        device: &str,
    ) -> Result<(NodeRow, RemotePath)>;
    fn move_node(
        &self,
        ns: i64,
        from: &RemotePath,
        to: &RemotePath,
        device: &str,
    ) -> Result<NodeRow>;
    fn delete(&self, ns: i64, path: &RemotePath, base_rev: Option<i64>, device: &str) -> Result<()>;
    fn revisions(&self, ns: i64, path: &RemotePath) -> Result<(NodeRow, Vec<RevisionRow>)>;
    /// The node at `path`, one of its revisions (the current one when `rev`
    /// is `None`) and that revision's blocks in file order.
    fn file_revision(
        &self,
        ns: i64,
        path: &RemotePath,
        rev: Option<i64>,
    ) -> Result<(NodeRow, RevisionRow, Vec<RevisionBlock>)>;
    fn restore(&self, ns: i64, path: &RemotePath, rev: i64, device: &str) -> Result<NodeRow>;
    /// Pins (or unpins) a revision of the file at `path`.
    fn pin_revision(&self, ns: i64, path: &RemotePath, rev: i64, pinned: bool) -> Result<RevisionRow>;
    /// Files with more than one revision after `after` (by namespace and
    /// node id), with their current revision; see `revisions.rs`.
    fn files_with_history(&self, after: Option<(i64, String)>, limit: i64) -> Result<Vec<(i64, String, i64)>>;
    /// The revisions of one file, as the retention schedule sees them.
    fn revision_ages(&self, ns: i64, node: &str) -> Result<Vec<crate::retention::Rev>>;
    /// Removes old revisions of a file (never its current or a pinned one)
    /// and releases their blocks; returns how many went.
    fn drop_revisions(&self, ns: i64, node: &str, revs: &[i64]) -> Result<u64>;
    /// Links; see `links_queries.rs`.
    fn create_link(&self, link: &LinkRow, token_hash: &[u8]) -> Result<()>;
    fn link_by_token(&self, token_hash: &[u8]) -> Result<Option<LinkRow>>;
    fn links_of(&self, user_id: i64) -> Result<Vec<LinkRow>>;
    fn delete_link(&self, user_id: i64, id: &str) -> Result<bool>;
    /// A node of `ns` by id with its path, if it and every folder above it
    /// are live (not in the trash).
    fn live_node(&self, ns: i64, node_id: &str) -> Result<Option<(NodeRow, RemotePath)>>;
    /// Shared folders; see `share_queries.rs`.
    fn mounts_of(&self, user_id: i64) -> Result<Vec<MountRow>>;
    fn members(&self, ns: i64) -> Result<Vec<MemberRow>>;
    fn share_folder(&self, owner: &UserRow, path: &RemotePath, member: &UserRow, role: &str, device: &str) -> Result<MountRow>;
    fn set_role(&self, owner: i64, ns: i64, member: i64, role: &str, device: &str) -> Result<()>;
    fn unmount(&self, actor: i64, ns: i64, member: i64, device: &str) -> Result<()>;
    fn unshare(&self, owner: i64, ns: i64, device: &str) -> Result<u64>;
    fn delete_shared(&self, owner: &UserRow, ns: i64, device: &str) -> Result<()>;
    fn rename_mount(&self, user_id: i64, ns: i64, to: &RemotePath, device: &str) -> Result<()>;
    fn journal_seq(&self, ns: i64) -> Result<i64>;
    fn journal_seqs(&self, namespaces: &[i64]) -> Result<Vec<(i64, i64)>>;
    /// Journal entries of `ns` after sequence number `after`, oldest first.
    fn changes(&self, ns: i64, after: i64, limit: i64) -> Result<Vec<JournalRow>>;
}
