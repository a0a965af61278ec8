//! The queries shared by both backends. `sqlite.rs` and `postgres.rs` each
//! mount this file (and its child modules) with `#[path]`, so it is compiled
//! once per backend against that backend's `Db` and `BEGIN`. The SQL is
//! written to mean the same on SQLite and PostgreSQL.
//!
//! This file holds `Store`, the journal `Writer` and the helpers the
//! queries share; the queries themselves are in one child module per table
//! family (users, blocks, tree, revisions, journal, uploads, commits).

use sqlx::{Pool, Transaction};
use tessera_proto::api::ChangeKind;
use tessera_proto::path::fold_name;

use super::{BATCH, BEGIN, Db, FOR_UPDATE};
use crate::meta::{
    AccountRow, BlockLoc, Collected, DeviceRow, JournalRow, LinkRow, MetaError, Moved, NewRevision,
    NodeRow, PendingList, Recorded, Result, RevisionBlock, RevisionBlockRow, RevisionRow,
    SearchHit, StoredJournalRow, TokenRow, TrashRow, UserBlocks, UserRow, now_ms,
};
use crate::notify::Publisher;
use tessera_proto::{BlockId, ContentHash, RemotePath};

type Conn = <Db as sqlx::Database>::Connection;
type Tx = Transaction<'static, Db>;

pub struct Store {
    pool: Pool<Db>,
    /// Told of every journal change once it has committed ([`Writer::commit`]).
    publisher: Publisher,
}

macro_rules! node_cols {
    () => {
        "namespace_id, id, parent_id, name, kind, rev, size, content_hash, modified_ms, pending_ms"
    };
}

// Declared after `node_cols!` so they can use it. As children of this
// module they reach `Store`'s pool and the private helpers here; what one
// child needs from another (`commit_in`, the commit path's helpers) is
// `pub(super)`.
#[allow(clippy::duplicate_mod)]
#[path = "accounts.rs"]
mod accounts;

#[path = "batch_queries.rs"]
mod batch_queries;

#[path = "blocks.rs"]
mod blocks;
#[allow(clippy::duplicate_mod)]
#[path = "cluster_queries.rs"]
mod cluster_queries;
#[allow(clippy::duplicate_mod)]
#[path = "commit_queries.rs"]
mod commit_queries;
#[allow(clippy::duplicate_mod)]
#[path = "fsck_queries.rs"]
mod fsck_queries;
#[allow(clippy::duplicate_mod)]
#[path = "gc_queries.rs"]
mod gc_queries;
#[allow(clippy::duplicate_mod)]
#[path = "journal.rs"]
mod journal;
#[allow(clippy::duplicate_mod)]
#[path = "links_queries.rs"]
mod links_queries;
#[allow(clippy::duplicate_mod)]
#[path = "quota_queries.rs"]
mod quota_queries;
#[allow(clippy::duplicate_mod)]
#[path = "revisions.rs"]
mod revisions;
#[allow(clippy::duplicate_mod)]
#[path = "search_queries.rs"]
mod search_queries;

#[path = "share_queries.rs"]
mod share_queries;
#[allow(clippy::duplicate_mod)]
#[path = "tree.rs"]
mod tree;
#[allow(clippy::duplicate_mod)]
#[path = "upload_queries.rs"]
mod upload_queries;
#[allow(clippy::duplicate_mod)]
#[path = "users.rs"]
mod users;

use commit_queries::{
    insert_revision_blocks, release_refs, revision_block_ids, revision_blocks_key, take_refs,
    user_block_rows,
};

/// A new node id (see [`crate::ids::new_id`]).
fn new_id() -> String {
    crate::ids::new_id()
}

fn map_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> MetaError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => MetaError::AlreadyExists(what()),
        _ => MetaError::Db(e),
    }
}

impl Store {
    pub(super) fn new(pool: Pool<Db>, publisher: Publisher) -> Self {
        Self { pool, publisher }
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    // Only PostgreSQL's is handed out (to the change notices).
    #[allow(dead_code)]
    pub fn pool(&self) -> &Pool<Db> {
        &self.pool
    }

    pub fn pool_stats(&self) -> crate::meta::PoolStats {
        let size = self.pool.size();
        crate::meta::PoolStats {
            size,
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(size),
            max: self.pool.options().get_max_connections(),
        }
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin_with(BEGIN).await?)
    }
}

/// One user-visible change: a transaction that holds the namespace's
/// journal row, so journal sequence numbers are gap-free and changes to one
/// namespace apply one at a time. It ends with [`Writer::commit`], which
/// publishes what it journaled, or is dropped (rolled back, nothing said).
struct Writer {
    tx: Tx,
    ns: i64,
    device: String,
    now: i64,
    /// The namespace's journal position when the change began.
    first: i64,
    /// The sequence number of the last entry this change journaled.
    seq: Option<i64>,
    /// Folders this change has looked up or made, by path: a batch of
    /// commits into a few folders walks each path once. Only valid while
    /// the change neither moves nor deletes folders, and emptied when a
    /// savepoint rolls back.
    folders: std::collections::HashMap<String, NodeRow>,
    /// Journal entries not written yet.
    entries: Vec<Entry>,
    /// Other namespaces this change journals in (sharing a folder writes
    /// to the owner's, the folder's and the member's journals at once):
    /// each one's position when first locked and its last entry.
    others: std::collections::BTreeMap<i64, (i64, i64)>,
    /// Which users have a quota, as looked up by this change.
    quotas: std::collections::HashMap<i64, bool>,
    /// A user's blocks looked up once for a whole batch of commits (a
    /// block collected meanwhile is still caught when its reference is
    /// taken).
    blocks: Option<(i64, UserBlocks)>,
    /// The mount points in the files of the user whose own files `ns`
    /// holds, looked up once by [`Writer::not_a_mount_point`].
    mount_points: Option<Vec<String>>,
    publisher: Publisher,
}

/// Journal rows a statement (12 values each): few enough that binding
/// stays cheap on SQLite (see `batch_queries::ROWS`).
const JOURNAL_ROWS: usize = 50;

/// A journal entry a change has made, written when it commits.
struct Entry {
    ns: i64,
    seq: i64,
    kind: ChangeKind,
    node_id: String,
    path: String,
    old_path: Option<String>,
    rev: Option<i64>,
    node_kind: String,
    size: Option<i64>,
    content_hash: Option<Vec<u8>>,
}

/// A journal entry describing `node` as a change left it.
fn entry(
    ns: i64,
    seq: i64,
    kind: ChangeKind,
    node: &NodeRow,
    path: &str,
    old_path: Option<&str>,
) -> Entry {
    let file = !node.is_folder();
    Entry {
        ns,
        seq,
        kind,
        node_id: node.id.clone(),
        path: path.to_owned(),
        old_path: old_path.map(str::to_owned),
        rev: file.then_some(node.rev),
        node_kind: node.kind.clone(),
        size: file.then_some(node.size),
        content_hash: if file {
            node.content_hash.clone()
        } else {
            None
        },
    }
}

/// See [`Writer::mark`].
#[derive(Clone, Copy)]
struct Mark {
    seq: Option<i64>,
    entries: usize,
}

impl Writer {
    async fn begin(store: &Store, ns: i64, device: &str) -> Result<Self> {
        Self::begin_all(store, ns, &[], device).await
    }

    /// Begins a change in `ns` that also journals in, or must hold still,
    /// the namespaces `also`. Every lock is taken here, in the order of the
    /// namespaces' ids: two changes that need the same namespaces then
    /// wait for one another, instead of each holding one the other needs
    /// (which PostgreSQL would end by failing one of them).
    async fn begin_all(store: &Store, ns: i64, also: &[i64], device: &str) -> Result<Self> {
        let mut order: Vec<i64> = also.iter().copied().chain([ns]).collect();
        order.sort_unstable();
        order.dedup();
        let mut tx = store.begin().await?;
        let mut firsts = std::collections::BTreeMap::new();
        // A change's time never comes before the last change to the same
        // namespaces, though it was made by an instance whose clock is
        // behind: emptying the trash "up to the newest deletion shown"
        // relies on a later deletion being later. A clock far ahead drags
        // later changes along until the others catch up, which errs on the
        // side of keeping (trash and old revisions expire later).
        let wall = now_ms();
        let mut now = wall;
        for id in order {
            let (first, last_ms) = lock_journal(&mut tx, id).await?;
            if let Some(last) = last_ms {
                let after = last.saturating_add(1);
                if after > wall + CLOCK_SKEW_SAID_MS {
                    clock_behind(after - wall);
                }
                now = now.max(after);
            }
            firsts.insert(id, first);
        }
        let first = firsts.remove(&ns).unwrap_or_default();
        Ok(Self {
            tx,
            ns,
            device: device.to_owned(),
            now,
            first,
            seq: None,
            folders: Default::default(),
            entries: Vec::new(),
            others: firsts.into_iter().map(|(id, f)| (id, (f, f))).collect(),
            quotas: Default::default(),
            blocks: None,
            mount_points: None,
            publisher: store.publisher.clone(),
        })
    }

    /// Refuses `path` as the place of a new or moved node of this change's
    /// namespace when it is a shared folder's mount point there: the API
    /// leads that path into the mount, so a node of the user's own at it
    /// would be hidden, and their devices would take it for the mount. A
    /// change planned before the mount moved there meets this.
    async fn not_a_mount_point(&mut self, path: &RemotePath) -> Result<()> {
        if self.mount_points.is_none() {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT m.name FROM mounts m JOIN users u ON u.id = m.user_id
                 WHERE u.root_ns = $1",
            )
            .bind(self.ns)
            .fetch_all(&mut *self.tx)
            .await?;
            self.mount_points = Some(rows.into_iter().map(|(n,)| format!("/{n}")).collect());
        }
        if self
            .mount_points
            .as_ref()
            .is_some_and(|points| points.iter().any(|p| p == path.as_str()))
        {
            return Err(MetaError::AlreadyExists(format!(
                "{path} is a shared folder now: send the change again"
            )));
        }
        Ok(())
    }

    /// Whether this change holds the lock of `ns`.
    fn holds(&self, ns: i64) -> bool {
        ns == self.ns || self.others.contains_key(&ns)
    }

    /// Commits the change and, once it is durable, publishes the
    /// namespace's new sequence number. Returns it, or `None` when the
    /// change journaled nothing (then nothing is published).
    async fn commit(mut self) -> Result<Option<i64>> {
        self.write_entries().await?;
        let mut moved: Vec<(i64, i64)> = self.seq.map(|seq| (self.ns, seq)).into_iter().collect();
        moved.extend(
            self.others
                .iter()
                .filter(|(_, (first, last))| last > first)
                .map(|(ns, (_, last))| (*ns, *last)),
        );
        for (ns, seq) in &moved {
            sqlx::query("UPDATE namespaces SET journal_seq = $1 WHERE id = $2")
                .bind(seq)
                .bind(ns)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        for (ns, seq) in moved {
            self.publisher.publish(ns, seq);
        }
        Ok(self.seq)
    }

    /// Locks the journal of `ns` for this change, beside its own.
    async fn join(&mut self, ns: i64) -> Result<()> {
        if ns == self.ns || self.others.contains_key(&ns) {
            return Ok(());
        }
        let (first, _) = lock_journal(&mut self.tx, ns).await?;
        self.others.insert(ns, (first, first));
        Ok(())
    }

    /// Like [`Writer::event`], in the journal of another namespace.
    async fn event_in(
        &mut self,
        ns: i64,
        kind: ChangeKind,
        node: &NodeRow,
        path: &str,
        old_path: Option<&str>,
    ) -> Result<i64> {
        if ns == self.ns {
            self.event(kind, node, path, old_path);
            return Ok(self.seq.unwrap_or(self.first));
        }
        self.join(ns).await?;
        let Some(at) = self.others.get_mut(&ns) else {
            return Err(MetaError::NotFound(format!(
                "namespace {ns} does not exist"
            )));
        };
        at.1 += 1;
        let seq = at.1;
        self.entries
            .push(entry(ns, seq, kind, node, path, old_path));
        Ok(seq)
    }

    /// Appends one journal entry describing `node` as this change left it.
    /// Entries are written together when the change commits.
    fn event(&mut self, kind: ChangeKind, node: &NodeRow, path: &str, old_path: Option<&str>) {
        let seq = self.seq.unwrap_or(self.first) + 1;
        self.entries
            .push(entry(self.ns, seq, kind, node, path, old_path));
        self.seq = Some(seq);
    }

    /// Whether `user` has a quota, asked once a change.
    async fn has_quota(&mut self, user: i64) -> Result<bool> {
        if let Some(known) = self.quotas.get(&user) {
            return Ok(*known);
        }
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT quota_bytes FROM users WHERE id = $1")
                .bind(user)
                .fetch_optional(&mut *self.tx)
                .await?;
        let has = matches!(row, Some((Some(_),)));
        self.quotas.insert(user, has);
        Ok(has)
    }

    /// Where the change stands, to go back to when a savepoint rolls back.
    fn mark(&self) -> Mark {
        Mark {
            seq: self.seq,
            entries: self.entries.len(),
        }
    }

    /// Forgets what the change did since `mark`, after its savepoint rolled
    /// back: the journal entries, and the folders looked up or made.
    fn back_to(&mut self, mark: Mark) {
        self.seq = mark.seq;
        self.entries.truncate(mark.entries);
        self.folders.clear();
    }

    /// Writes the entries gathered so far once there are many, so a change
    /// that journals a whole folder holds few of them at a time. Only for
    /// a change that sets no savepoint: rolling back to one would not take
    /// back rows written meanwhile.
    async fn write_some(&mut self) -> Result<()> {
        if self.entries.len() >= 20 * JOURNAL_ROWS {
            self.write_entries().await?;
            self.entries.clear();
        }
        Ok(())
    }

    /// Writes the journal entries, many rows a statement.
    async fn write_entries(&mut self) -> Result<()> {
        const COLS: usize = 12;
        for chunk in self.entries.chunks(JOURNAL_ROWS) {
            let values = (0..chunk.len())
                .map(|i| {
                    let cols = (1..=COLS)
                        .map(|c| format!("${}", i * COLS + c))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({cols})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO journal (namespace_id, seq, kind, node_id, path, old_path, rev, node_kind, size, content_hash, device, created_ms)
                 VALUES {values}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(e.ns)
                    .bind(e.seq)
                    .bind(e.kind.as_str())
                    .bind(&e.node_id)
                    .bind(&e.path)
                    .bind(&e.old_path)
                    .bind(e.rev)
                    .bind(&e.node_kind)
                    .bind(e.size)
                    .bind(&e.content_hash)
                    .bind(&self.device)
                    .bind(self.now);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// The folder at `path` if there is one, without creating anything.
    async fn find_folder(&mut self, path: &RemotePath) -> Result<Option<NodeRow>> {
        if let Some(hit) = self.folders.get(path.as_str()) {
            return Ok(Some(hit.clone()));
        }
        let mut cur = self.root_folder().await?;
        let mut at = RemotePath::root();
        for seg in path.segments() {
            at = at
                .join(seg)
                .map_err(|e| MetaError::Invalid(e.to_string()))?;
            if let Some(hit) = self.folders.get(at.as_str()) {
                cur = hit.clone();
                continue;
            }
            match child(&mut self.tx, self.ns, &cur.id, seg).await? {
                Some(n) if n.is_folder() => {
                    self.folders.insert(at.to_string(), n.clone());
                    cur = n;
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    async fn root_folder(&mut self) -> Result<NodeRow> {
        if let Some(hit) = self.folders.get("/") {
            return Ok(hit.clone());
        }
        let node = root(&mut self.tx, self.ns).await?;
        self.folders.insert("/".into(), node.clone());
        Ok(node)
    }

    /// The folder at `path`, creating it and any missing parent.
    async fn ensure_folder(&mut self, path: &RemotePath) -> Result<NodeRow> {
        if let Some(hit) = self.folders.get(path.as_str()) {
            return Ok(hit.clone());
        }
        let mut cur = self.root_folder().await?;
        let mut at = RemotePath::root();
        for seg in path.segments() {
            at = at
                .join(seg)
                .map_err(|e| MetaError::Invalid(e.to_string()))?;
            if let Some(hit) = self.folders.get(at.as_str()) {
                cur = hit.clone();
                continue;
            }
            cur = match child(&mut self.tx, self.ns, &cur.id, seg).await? {
                Some(n) if n.is_folder() => n,
                Some(_) => return Err(MetaError::NotAFolder(at.to_string())),
                None => {
                    // A change begun before the folder was shared (or
                    // a mount moved here) would land out of sight.
                    self.not_a_mount_point(&at).await?;
                    let node = NodeRow {
                        namespace_id: self.ns,
                        id: new_id(),
                        parent_id: Some(cur.id.clone()),
                        name: seg.to_owned(),
                        kind: "folder".into(),
                        rev: 0,
                        size: 0,
                        content_hash: None,
                        modified_ms: self.now,
                        pending_ms: None,
                    };
                    insert_node(&mut self.tx, &node).await?;
                    self.event(ChangeKind::Mkdir, &node, at.as_str(), None);
                    node
                }
            };
            self.folders.insert(at.to_string(), cur.clone());
        }
        Ok(cur)
    }
}

/// Ends the pending mark of `node` at `path`: a file that never had content
/// goes away, one that had keeps its last revision.
async fn end_pending(w: &mut Writer, node: &NodeRow, path: &str) -> Result<()> {
    let sql = if node.rev == 0 {
        "DELETE FROM nodes WHERE namespace_id = $1 AND id = $2"
    } else {
        "UPDATE nodes SET pending_ms = NULL WHERE namespace_id = $1 AND id = $2"
    };
    sqlx::query(sql)
        .bind(w.ns)
        .bind(&node.id)
        .execute(&mut *w.tx)
        .await?;
    w.event(ChangeKind::PendingExpired, node, path, None);
    Ok(())
}

/// Deletes `root` and every node below it that was live when `root` was
/// trashed (nodes trashed on their own keep their own trash entries), with
/// their revisions, releasing the block references those held.
async fn purge_subtree(tx: &mut Tx, ns: i64, root: &str, now: i64) -> Result<()> {
    let mut queue = vec![root.to_owned()];
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = queue.pop() {
        // A damaged tree (a node below itself) is purged, not walked forever.
        if !seen.insert(id.clone()) {
            tracing::warn!(ns, node = %id, "purge met a node below itself");
            continue;
        }
        let children: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM nodes WHERE namespace_id = $1 AND parent_id = $2 AND deleted_ms IS NULL",
        )
        .bind(ns)
        .bind(&id)
        .fetch_all(&mut **tx)
        .await?;
        queue.extend(children.into_iter().map(|(c,)| c));
        // Only what this transaction deletes is released and uncharged.
        let ids = quota_queries::delete_block_lists(tx, ns, &id, None).await?;
        release_refs(tx, &ids, now).await?;
        let sizes: Vec<(i64,)> = sqlx::query_as(
            "DELETE FROM revisions WHERE namespace_id = $1 AND node_id = $2 RETURNING size",
        )
        .bind(ns)
        .bind(&id)
        .fetch_all(&mut **tx)
        .await?;
        let kept: i64 = sizes.iter().map(|(s,)| s).sum();
        quota_queries::charge(tx, ns, -kept).await?;
        sqlx::query("DELETE FROM nodes WHERE namespace_id = $1 AND id = $2")
            .bind(ns)
            .bind(&id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn blocks_of(new: &NewRevision) -> Vec<BlockId> {
    new.blocks.iter().map(|(id, _)| *id).collect()
}

/// Block rows (id, object, offset, length) as ids and places; a stored id
/// that is not 32 bytes is skipped.
fn located(rows: Vec<(Vec<u8>, String, i64, i64)>) -> Vec<(BlockId, BlockLoc)> {
    rows.into_iter()
        .filter_map(|(id, object, offset, length)| {
            let id = <[u8; 32]>::try_from(id.as_slice()).ok()?;
            Some((BlockId(id), loc((object, offset, length))))
        })
        .collect()
}

/// Stored block ids, one per row; a malformed one is an error.
fn block_ids(rows: Vec<(Vec<u8>,)>) -> Result<Vec<BlockId>> {
    rows.into_iter()
        .map(|(b,)| {
            <[u8; 32]>::try_from(b.as_slice())
                .map(BlockId)
                .map_err(|_| MetaError::Invalid("a stored block id is not 32 bytes".into()))
        })
        .collect()
}

fn loc((object, offset, length): (String, i64, i64)) -> BlockLoc {
    BlockLoc {
        object,
        offset: offset as u64,
        length: length as u64,
    }
}

/// How far ahead of this instance's clock the last change may be before
/// the log says the clocks disagree.
const CLOCK_SKEW_SAID_MS: i64 = 5 * 60 * 1000;

/// Says once that a change was stamped far ahead of this instance's clock.
fn clock_behind(by_ms: i64) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            ahead_ms = by_ms,
            "a change was stamped more than five minutes ahead of this instance's clock; \
             later changes follow it, so check every instance's clock (NTP)"
        );
    }
}

/// Takes the lock of `ns`'s journal row for the rest of the transaction
/// (a no-op update: PostgreSQL locks the row; SQLite's IMMEDIATE
/// transaction already holds the database's write lock) and returns where
/// the journal stands. Held to the end, the lock lets a change count its
/// journal entries itself and write the new position once, at commit.
/// Locks the journal of `ns`: its position, and when its last entry was
/// made (none when it has none kept).
async fn lock_journal(tx: &mut Tx, ns: i64) -> Result<(i64, Option<i64>)> {
    let (first,): (i64,) = sqlx::query_as(
        "UPDATE namespaces SET journal_seq = journal_seq WHERE id = $1 RETURNING journal_seq",
    )
    .bind(ns)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| MetaError::NotFound(format!("namespace {ns} does not exist")))?;
    // A statement of its own, after the lock: on PostgreSQL one that
    // waited for the lock sees the rest of the database as it was when it
    // began, without the entry of the change it waited for.
    let last: Option<(i64,)> =
        sqlx::query_as("SELECT created_ms FROM journal WHERE namespace_id = $1 AND seq = $2")
            .bind(ns)
            .bind(first)
            .fetch_optional(&mut **tx)
            .await?;
    Ok((first, last.map(|(t,)| t)))
}

async fn insert_node(conn: &mut Conn, n: &NodeRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO nodes (namespace_id, id, parent_id, name, name_key, kind, rev, size, content_hash, modified_ms, pending_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(n.namespace_id)
    .bind(&n.id)
    .bind(&n.parent_id)
    .bind(&n.name)
    .bind(fold_name(&n.name))
    .bind(&n.kind)
    .bind(n.rev)
    .bind(n.size)
    .bind(&n.content_hash)
    .bind(n.modified_ms)
    .bind(n.pending_ms)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_unique(e, || format!("{} already exists in its folder", n.name)))?;
    Ok(())
}

/// The parent of node `id`: `None` for the root, or when the node is gone.
async fn parent_of(conn: &mut Conn, ns: i64, id: &str) -> Result<Option<(Option<String>, String)>> {
    Ok(
        sqlx::query_as("SELECT parent_id, name FROM nodes WHERE namespace_id = $1 AND id = $2")
            .bind(ns)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// True when `id` is `folder` or one of its ancestors. Walks up by id and
/// refuses a cycle rather than looping.
async fn is_within(conn: &mut Conn, ns: i64, folder: &str, id: &str) -> Result<bool> {
    let mut seen = std::collections::HashSet::new();
    let mut cur = Some(folder.to_owned());
    while let Some(at) = cur {
        if at == id {
            return Ok(true);
        }
        if !seen.insert(at.clone()) {
            return Err(MetaError::Cycle(format!("{at} is its own ancestor")));
        }
        cur = parent_of(conn, ns, &at).await?.and_then(|(p, _)| p);
    }
    Ok(false)
}

/// The path of a live node, walking up its parents. A cycle is refused.
async fn node_path(conn: &mut Conn, ns: i64, node: &NodeRow) -> Result<String> {
    let mut names = vec![node.name.clone()];
    let mut seen = std::collections::HashSet::from([node.id.clone()]);
    let mut parent = node.parent_id.clone();
    while let Some(pid) = parent {
        if !seen.insert(pid.clone()) {
            return Err(MetaError::Cycle(format!("{} is its own ancestor", node.id)));
        }
        let Some((next, name)) = parent_of(conn, ns, &pid).await? else {
            break;
        };
        if next.is_some() {
            names.push(name);
        }
        parent = next;
    }
    names.reverse();
    Ok(format!("/{}", names.join("/")))
}

async fn root(conn: &mut Conn, ns: i64) -> Result<NodeRow> {
    sqlx::query_as(concat!(
        "SELECT ",
        node_cols!(),
        " FROM nodes WHERE namespace_id = $1 AND parent_id IS NULL"
    ))
    .bind(ns)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| MetaError::NotFound(format!("namespace {ns} does not exist")))
}

async fn child(conn: &mut Conn, ns: i64, parent: &str, name: &str) -> Result<Option<NodeRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        node_cols!(),
        " FROM nodes WHERE namespace_id = $1 AND parent_id = $2 AND name = $3 AND deleted_ms IS NULL"
    ))
    .bind(ns)
    .bind(parent)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?)
}

async fn resolve(conn: &mut Conn, ns: i64, path: &RemotePath) -> Result<Option<NodeRow>> {
    let mut cur = root(conn, ns).await?;
    for seg in path.segments() {
        if !cur.is_folder() {
            return Ok(None);
        }
        match child(conn, ns, &cur.id, seg).await? {
            Some(n) => cur = n,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

async fn existing(conn: &mut Conn, ns: i64, path: &RemotePath) -> Result<NodeRow> {
    resolve(conn, ns, path)
        .await?
        .ok_or_else(|| MetaError::NotFound(format!("{path} does not exist")))
}

async fn existing_file(conn: &mut Conn, ns: i64, path: &RemotePath) -> Result<NodeRow> {
    let node = existing(conn, ns, path).await?;
    if node.is_folder() {
        return Err(MetaError::NotAFile(path.to_string()));
    }
    Ok(node)
}

async fn revision(conn: &mut Conn, ns: i64, node: &str, rev: i64) -> Result<Option<RevisionRow>> {
    let row: Option<RevisionRow> = sqlx::query_as(
        "SELECT rev, size, content_hash, chunker, device, created_ms, pinned FROM revisions
         WHERE namespace_id = $1 AND node_id = $2 AND rev = $3",
    )
    .bind(ns)
    .bind(node)
    .bind(rev)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(RevisionRow::loaded))
}
