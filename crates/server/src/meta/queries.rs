//! The queries shared by both backends. `sqlite.rs` and `postgres.rs` each
//! mount this file (and its child modules) with `#[path]`, so it is compiled
//! once per backend against that backend's `Db` and `BEGIN`. The SQL is
//! written to mean the same on SQLite and PostgreSQL.

use sqlx::{Pool, Transaction};
use tessera_proto::path::fold_name;

use super::{BEGIN, Db};
use crate::meta::{
    BlockLoc, JournalRow, MetaError, NewRevision, NodeRow, Recorded, Result, RevisionBlock,
    RevisionBlockRow, RevisionRow, TokenRow, TrashRow, UserRow, now_ms,
};
use tessera_proto::{BlockId, RemotePath};

type Conn = <Db as sqlx::Database>::Connection;
type Tx = Transaction<'static, Db>;

pub struct Store {
    pool: Pool<Db>,
}

macro_rules! node_cols {
    () => {
        "namespace_id, id, parent_id, name, kind, rev, size, content_hash, modified_ms, pending_ms"
    };
}

// Declared after `node_cols!` so they can use it. As children of this
// module they reach `Store`'s pool and the private helpers here.
#[allow(clippy::duplicate_mod)]
#[path = "commit_queries.rs"]
mod commit_queries;
#[allow(clippy::duplicate_mod)]
#[path = "upload_queries.rs"]
mod upload_queries;

use commit_queries::{insert_revision_blocks, revision_blocks_key, user_block_rows};

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn map_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> MetaError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => MetaError::AlreadyExists(what()),
        _ => MetaError::Db(e),
    }
}

impl Store {
    pub(super) fn new(pool: Pool<Db>) -> Self {
        Self { pool }
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin_with(BEGIN).await?)
    }

    // ---- users and tokens ----

    pub async fn user_count(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    pub async fn create_user(&self, username: &str, password_hash: &str) -> Result<UserRow> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let root = new_id();
        let (ns,): (i64,) =
            sqlx::query_as("INSERT INTO namespaces (root_node_id) VALUES ($1) RETURNING id")
                .bind(&root)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO nodes (namespace_id, id, parent_id, name, name_key, kind, modified_ms)
             VALUES ($1, $2, NULL, '', '', 'folder', $3)",
        )
        .bind(ns)
        .bind(&root)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO users (username, password_hash, root_ns, created_ms)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(ns)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_unique(e, || format!("user {username} already exists")))?;
        sqlx::query("UPDATE namespaces SET owner_user_id = $1 WHERE id = $2")
            .bind(id)
            .bind(ns)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(UserRow {
            id,
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            root_ns: ns,
        })
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(
            "SELECT id, username, password_hash, root_ns FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn insert_token(
        &self,
        hash: &[u8],
        user_id: i64,
        device: &str,
        expires_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (token_hash, user_id, device, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(user_id)
        .bind(device)
        .bind(now_ms())
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn token(&self, hash: &[u8]) -> Result<Option<TokenRow>> {
        Ok(sqlx::query_as(
            "SELECT t.user_id, u.username, u.root_ns, t.device, t.expires_ms
             FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn delete_token(&self, hash: &[u8]) -> Result<()> {
        sqlx::query("DELETE FROM tokens WHERE token_hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- data keys ----

    pub async fn data_keys(&self) -> Result<Vec<(i64, Vec<u8>)>> {
        Ok(
            sqlx::query_as("SELECT id, wrapped FROM data_keys ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn insert_data_key(&self, wrapped: &[u8]) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO data_keys (wrapped, created_ms) VALUES ($1, $2) RETURNING id",
        )
        .bind(wrapped)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    // ---- blocks ----

    pub async fn missing_blocks(&self, user_id: i64, ids: &[BlockId]) -> Result<Vec<BlockId>> {
        let mut conn = self.pool.acquire().await?;
        let mut missing = Vec::new();
        for id in ids {
            if !user_has_block(&mut conn, user_id, id).await? && !missing.contains(id) {
                missing.push(*id);
            }
        }
        Ok(missing)
    }

    pub async fn block_location(&self, id: &BlockId) -> Result<Option<BlockLoc>> {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT object, obj_offset, obj_length FROM blocks WHERE id = $1")
                .bind(&id.0[..])
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(loc))
    }

    pub async fn user_block_location(
        &self,
        user_id: i64,
        id: &BlockId,
    ) -> Result<Option<BlockLoc>> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT b.object, b.obj_offset, b.obj_length FROM blocks b
             JOIN user_blocks ub ON ub.block_id = b.id
             WHERE ub.user_id = $1 AND b.id = $2",
        )
        .bind(user_id)
        .bind(&id.0[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(loc))
    }

    /// Records freshly written blocks and grants them to `user_id`, in one
    /// transaction. A block already recorded keeps its record unless it is
    /// marked damaged; then the new copy replaces it (compared and swapped
    /// on the location, so two repairs racing cannot both win).
    pub async fn record_blocks(
        &self,
        user_id: i64,
        blocks: &[(BlockId, BlockLoc, u64)],
    ) -> Result<Vec<Recorded>> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(blocks.len());
        for (id, at, plain_len) in blocks {
            // A new block starts unreferenced: the collector may take it once
            // its grace period has passed unless a commit references it first.
            let inserted = sqlx::query(
                "INSERT INTO blocks (id, object, obj_offset, obj_length, plain_len, refcount, zero_since_ms, created_ms)
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&id.0[..])
            .bind(&at.object)
            .bind(at.offset as i64)
            .bind(at.length as i64)
            .bind(*plain_len as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let outcome = if inserted == 1 {
                Recorded::Stored
            } else {
                let row: Option<(String, i64, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT object, obj_offset, obj_length, damaged_ms FROM blocks WHERE id = $1",
                )
                .bind(&id.0[..])
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    Some((object, offset, length, Some(_))) => {
                        let swapped = sqlx::query(
                            "UPDATE blocks SET object = $2, obj_offset = $3, obj_length = $4, damaged_ms = NULL
                             WHERE id = $1 AND object = $5 AND obj_offset = $6 AND damaged_ms IS NOT NULL",
                        )
                        .bind(&id.0[..])
                        .bind(&at.object)
                        .bind(at.offset as i64)
                        .bind(at.length as i64)
                        .bind(&object)
                        .bind(offset)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if swapped == 1 {
                            Recorded::Repaired(loc((object, offset, length)))
                        } else {
                            Recorded::Existing
                        }
                    }
                    _ => Recorded::Existing,
                }
            };
            grant(&mut tx, user_id, id).await?;
            out.push(outcome);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn mark_block_damaged(&self, id: &BlockId, at: &BlockLoc) -> Result<bool> {
        let marked = sqlx::query(
            "UPDATE blocks SET damaged_ms = $4
             WHERE id = $1 AND object = $2 AND obj_offset = $3 AND damaged_ms IS NULL",
        )
        .bind(&id.0[..])
        .bind(&at.object)
        .bind(at.offset as i64)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(marked == 1)
    }

    // ---- the tree ----

    pub async fn resolve(&self, ns: i64, path: &RemotePath) -> Result<Option<NodeRow>> {
        let mut conn = self.pool.acquire().await?;
        resolve(&mut conn, ns, path).await
    }

    pub async fn list(&self, ns: i64, path: &RemotePath) -> Result<Vec<NodeRow>> {
        let mut conn = self.pool.acquire().await?;
        let dir = existing(&mut conn, ns, path).await?;
        if !dir.is_folder() {
            return Err(MetaError::NotAFolder(path.to_string()));
        }
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE namespace_id = $1 AND parent_id = $2 AND deleted_ms IS NULL
              ORDER BY name_key, name"
        ))
        .bind(ns)
        .bind(&dir.id)
        .fetch_all(&mut *conn)
        .await?)
    }

    pub async fn mkdir(&self, ns: i64, path: &RemotePath, device: &str) -> Result<NodeRow> {
        if path.is_root() {
            return Err(MetaError::AlreadyExists("/ exists".into()));
        }
        let mut w = Writer::begin(self, ns, device).await?;
        if resolve(&mut w.tx, ns, path).await?.is_some() {
            return Err(MetaError::AlreadyExists(format!("{path} already exists")));
        }
        let node = w.ensure_folder(path).await?;
        w.tx.commit().await?;
        Ok(node)
    }

    pub async fn commit(&self, new: &NewRevision) -> Result<NodeRow> {
        let mut w = Writer::begin(self, new.ns, &new.device).await?;
        match Self::commit_in(&mut w, new).await {
            Ok(node) => {
                w.tx.commit().await?;
                Ok(node)
            }
            Err(MetaError::MissingBlocks(missing)) => {
                // Not all blocks are here yet: the upload is under way. Show
                // the file as pending, so other devices see it syncing.
                w.tx.rollback().await?;
                self.mark_pending(new).await?;
                Err(MetaError::MissingBlocks(missing))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn mark_pending(&self, new: &NewRevision) -> Result<()> {
        let (Some(parent), Some(name)) = (new.path.parent(), new.path.name()) else {
            return Ok(());
        };
        let mut w = Writer::begin(self, new.ns, &new.device).await?;
        let parent = w.ensure_folder(&parent).await?;
        let node = match child(&mut w.tx, new.ns, &parent.id, name).await? {
            Some(n) if n.is_folder() => return Ok(()),
            Some(n) if n.pending_ms.is_some() => return Ok(()),
            Some(n) => {
                sqlx::query("UPDATE nodes SET pending_ms = $1 WHERE namespace_id = $2 AND id = $3")
                    .bind(w.now)
                    .bind(new.ns)
                    .bind(&n.id)
                    .execute(&mut *w.tx)
                    .await?;
                NodeRow {
                    pending_ms: Some(w.now),
                    ..n
                }
            }
            None => {
                let node = NodeRow {
                    namespace_id: new.ns,
                    id: new_id(),
                    parent_id: Some(parent.id.clone()),
                    name: name.to_owned(),
                    kind: "file".into(),
                    rev: 0,
                    size: new.size as i64,
                    content_hash: None,
                    modified_ms: w.now,
                    pending_ms: Some(w.now),
                };
                insert_node(&mut w.tx, &node).await?;
                node
            }
        };
        w.event("pending", &node, new.path.as_str(), None).await?;
        w.tx.commit().await?;
        Ok(())
    }

    /// Ends pending marks older than `cutoff_ms`: a file that never had
    /// content goes away, one that had keeps its last revision. Returns the
    /// namespaces that changed.
    pub async fn expire_pending(&self, cutoff_ms: i64) -> Result<Vec<i64>> {
        let stale: Vec<(i64, String)> = sqlx::query_as(
            "SELECT namespace_id, id FROM nodes WHERE pending_ms IS NOT NULL AND pending_ms < $1 AND deleted_ms IS NULL",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut changed = Vec::new();
        for (ns, id) in stale {
            let mut w = Writer::begin(self, ns, "server").await?;
            let node: Option<NodeRow> = sqlx::query_as(concat!(
                "SELECT ",
                node_cols!(),
                " FROM nodes WHERE namespace_id = $1 AND id = $2 AND pending_ms IS NOT NULL AND pending_ms < $3"
            ))
            .bind(ns)
            .bind(&id)
            .bind(cutoff_ms)
            .fetch_optional(&mut *w.tx)
            .await?;
            let Some(node) = node else { continue };
            let path = match node_path(&mut w.tx, ns, &node).await {
                Ok(p) => p,
                // One damaged entry must not stop the others expiring.
                Err(MetaError::Cycle(why)) => {
                    tracing::error!(ns, node = %node.id, %why, "pending mark left: its path cannot be built");
                    continue;
                }
                Err(e) => return Err(e),
            };
            end_pending(&mut w, &node, &path).await?;
            w.tx.commit().await?;
            changed.push(ns);
        }
        changed.sort();
        changed.dedup();
        Ok(changed)
    }

    /// Many commits of one namespace in one transaction. Each item stands
    /// alone (a savepoint each): one that fails leaves no trace and does not
    /// stop the others. A database failure fails the whole batch.
    pub async fn commit_many(&self, news: &[NewRevision]) -> Result<Vec<Result<NodeRow>>> {
        let Some(first) = news.first() else {
            return Ok(Vec::new());
        };
        let mut w = Writer::begin(self, first.ns, &first.device).await?;
        let mut out = Vec::with_capacity(news.len());
        for new in news {
            sqlx::query("SAVEPOINT item").execute(&mut *w.tx).await?;
            match Self::commit_in(&mut w, new).await {
                Ok(node) => {
                    sqlx::query("RELEASE SAVEPOINT item")
                        .execute(&mut *w.tx)
                        .await?;
                    out.push(Ok(node));
                }
                Err(MetaError::Db(e)) => return Err(MetaError::Db(e)),
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT item")
                        .execute(&mut *w.tx)
                        .await?;
                    sqlx::query("RELEASE SAVEPOINT item")
                        .execute(&mut *w.tx)
                        .await?;
                    out.push(Err(e));
                }
            }
        }
        w.tx.commit().await?;
        Ok(out)
    }

    async fn commit_in(w: &mut Writer, new: &NewRevision) -> Result<NodeRow> {
        let ns = new.ns;
        let path = &new.path;
        let name = path
            .name()
            .ok_or_else(|| MetaError::Invalid("a file cannot be stored at /".into()))?;

        // Callers outside checked this already; checked again here (in
        // batches) because blocks are only known under the lock.
        let known = user_block_rows(&mut w.tx, new.user_id, &blocks_of(new)).await?;
        let mut missing = Vec::new();
        let mut listed = std::collections::HashSet::new();
        let mut total = 0u64;
        for (id, size) in &new.blocks {
            match known.get(id) {
                None => {
                    if listed.insert(*id) {
                        missing.push(*id)
                    }
                }
                Some((len, _)) if len != size => {
                    return Err(MetaError::Invalid(format!(
                        "block {id} is {len} bytes, not {size} as the commit says"
                    )));
                }
                Some(_) => {}
            }
            total += size;
        }
        if !missing.is_empty() {
            return Err(MetaError::MissingBlocks(missing));
        }
        if total != new.size {
            return Err(MetaError::Invalid(format!(
                "the blocks add up to {total} bytes, but the commit says the file is {} bytes",
                new.size
            )));
        }
        let key = crate::meta::blocks_key(&new.chunker, &new.blocks);

        let parent = match path.parent() {
            Some(p) => w.ensure_folder(&p).await?,
            None => return Err(MetaError::Invalid("a file cannot be stored at /".into())),
        };
        let current = child(&mut w.tx, ns, &parent.id, name).await?;
        let now = w.now;
        let node = match current {
            Some(node) if node.is_folder() => {
                return Err(MetaError::NotAFile(path.to_string()));
            }
            Some(node) => {
                if let Some(base) = new.base_rev
                    && base != node.rev
                {
                    return Err(MetaError::Conflict {
                        path: path.to_string(),
                        current_rev: node.rev,
                    });
                }
                // Only the very same block list is "unchanged": no new
                // revision, no event. A matching hash claim is not enough.
                if node.rev > 0
                    && revision_blocks_key(&mut w.tx, ns, &node.id, node.rev).await? == Some(key)
                {
                    return Ok(node);
                }
                sqlx::query(
                    "UPDATE nodes SET rev = rev + 1, size = $1, content_hash = $2, modified_ms = $3, pending_ms = NULL
                     WHERE namespace_id = $4 AND id = $5",
                )
                .bind(new.size as i64)
                .bind(&new.content_hash.0[..])
                .bind(now)
                .bind(ns)
                .bind(&node.id)
                .execute(&mut *w.tx)
                .await?;
                NodeRow {
                    rev: node.rev + 1,
                    size: new.size as i64,
                    content_hash: Some(new.content_hash.0.to_vec()),
                    modified_ms: now,
                    pending_ms: None,
                    ..node
                }
            }
            None => {
                if let Some(base) = new.base_rev
                    && base != 0
                {
                    return Err(MetaError::Conflict {
                        path: path.to_string(),
                        current_rev: 0,
                    });
                }
                let node = NodeRow {
                    namespace_id: ns,
                    id: new_id(),
                    parent_id: Some(parent.id.clone()),
                    name: name.to_owned(),
                    kind: "file".into(),
                    rev: 1,
                    size: new.size as i64,
                    content_hash: Some(new.content_hash.0.to_vec()),
                    modified_ms: now,
                    pending_ms: None,
                };
                insert_node(&mut w.tx, &node).await?;
                node
            }
        };
        // Every caller computed or verified the content hash, so the
        // revision carries the key that marks it trusted.
        sqlx::query(
            "INSERT INTO revisions (namespace_id, node_id, rev, size, content_hash, chunker, device, created_ms, blocks_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(ns)
        .bind(&node.id)
        .bind(node.rev)
        .bind(new.size as i64)
        .bind(&new.content_hash.0[..])
        .bind(&new.chunker)
        .bind(&new.device)
        .bind(now)
        .bind(&key[..])
        .execute(&mut *w.tx)
        .await?;
        insert_revision_blocks(&mut w.tx, ns, &node.id, node.rev, &new.blocks).await?;
        w.event("commit", &node, path.as_str(), None).await?;
        Ok(node)
    }

    pub async fn move_node(
        &self,
        ns: i64,
        from: &RemotePath,
        to: &RemotePath,
        device: &str,
    ) -> Result<NodeRow> {
        let (Some(_), Some(to_name), Some(to_parent)) = (from.name(), to.name(), to.parent())
        else {
            return Err(MetaError::Invalid(
                "the root folder cannot be moved or replaced".into(),
            ));
        };
        let mut w = Writer::begin(self, ns, device).await?;
        let node = existing(&mut w.tx, ns, from).await?;
        let parent = existing(&mut w.tx, ns, &to_parent).await?;
        if !parent.is_folder() {
            return Err(MetaError::NotAFolder(to_parent.to_string()));
        }
        // By id, not by spelling: `/photos/sub` names a folder inside
        // `/Photos` whenever the two resolve to the same node.
        if is_within(&mut w.tx, ns, &parent.id, &node.id).await? {
            return Err(MetaError::IntoItself(format!(
                "cannot move {from} to {to}: that is inside {from} itself; choose a folder outside it"
            )));
        }
        if let Some(other) = child(&mut w.tx, ns, &parent.id, to_name).await?
            && other.id != node.id
        {
            return Err(MetaError::AlreadyExists(format!("{to} already exists")));
        }
        sqlx::query(
            "UPDATE nodes SET parent_id = $1, name = $2, name_key = $3, modified_ms = $4
             WHERE namespace_id = $5 AND id = $6",
        )
        .bind(&parent.id)
        .bind(to_name)
        .bind(fold_name(to_name))
        .bind(w.now)
        .bind(ns)
        .bind(&node.id)
        .execute(&mut *w.tx)
        .await?;
        w.event("move", &node, to.as_str(), Some(from.as_str()))
            .await?;
        w.tx.commit().await?;
        Ok(NodeRow {
            parent_id: Some(parent.id),
            name: to_name.to_owned(),
            modified_ms: w.now,
            ..node
        })
    }

    pub async fn delete(
        &self,
        ns: i64,
        path: &RemotePath,
        base_rev: Option<i64>,
        device: &str,
    ) -> Result<()> {
        if path.is_root() {
            return Err(MetaError::Invalid(
                "the root folder cannot be deleted".into(),
            ));
        }
        let mut w = Writer::begin(self, ns, device).await?;
        let node = existing(&mut w.tx, ns, path).await?;
        if let Some(base) = base_rev
            && !node.is_folder()
            && base != node.rev
        {
            return Err(MetaError::Conflict {
                path: path.to_string(),
                current_rev: node.rev,
            });
        }
        sqlx::query(
            "UPDATE nodes SET deleted_ms = $1, deleted_path = $2 WHERE namespace_id = $3 AND id = $4",
        )
        .bind(w.now)
        .bind(path.as_str())
        .bind(ns)
        .bind(&node.id)
        .execute(&mut *w.tx)
        .await?;
        w.event("delete", &node, path.as_str(), None).await?;
        w.tx.commit().await?;
        Ok(())
    }

    /// What is in the trash: nodes deleted themselves (their contents come
    /// back with them), newest first.
    pub async fn trash(&self, ns: i64) -> Result<Vec<TrashRow>> {
        Ok(sqlx::query_as(
            "SELECT id, kind, size, deleted_ms, deleted_path FROM nodes
             WHERE namespace_id = $1 AND deleted_ms IS NOT NULL ORDER BY deleted_ms DESC, id",
        )
        .bind(ns)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes trashed nodes for good: the one with `id`, or every one
    /// when `id` is `None`. A folder goes with everything that was inside it
    /// when it was deleted. Their revisions go too, and the blocks they held
    /// lose those references (a block left with none becomes collectable).
    /// Returns how many trash entries were removed.
    pub async fn purge_trash(&self, ns: i64, id: Option<&str>) -> Result<u64> {
        let mut w = Writer::begin(self, ns, "").await?;
        let roots: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM nodes WHERE namespace_id = $1 AND deleted_ms IS NOT NULL AND ($2 IS NULL OR id = $2)",
        )
        .bind(ns)
        .bind(id)
        .fetch_all(&mut *w.tx)
        .await?;
        if roots.is_empty()
            && let Some(id) = id
        {
            return Err(MetaError::NotFound(format!(
                "nothing with id {id} is in the trash"
            )));
        }
        for (root,) in &roots {
            purge_subtree(&mut w.tx, ns, root, w.now).await?;
        }
        w.tx.commit().await?;
        Ok(roots.len() as u64)
    }

    /// Purges trash entries deleted before `cutoff_ms`, one namespace per
    /// transaction. Returns how many were removed.
    pub async fn expire_trash(&self, cutoff_ms: i64) -> Result<u64> {
        let old: Vec<(i64, String)> = sqlx::query_as(
            "SELECT namespace_id, id FROM nodes WHERE deleted_ms IS NOT NULL AND deleted_ms < $1
             ORDER BY namespace_id",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut removed = 0;
        for (ns, id) in old {
            match self.purge_trash(ns, Some(&id)).await {
                Ok(n) => removed += n,
                // Restored or purged meanwhile.
                Err(MetaError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Blocks no revision refers to any more (candidates for collection).
    pub async fn unreferenced_blocks(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM blocks WHERE refcount <= 0 AND zero_since_ms IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// Puts a trashed node back at `to` (its old path when `None`),
    /// creating missing parent folders. The journal gets an entry for the
    /// node and everything inside it, so clients see the whole tree return.
    pub async fn restore_from_trash(
        &self,
        ns: i64,
        id: &str,
        to: Option<&RemotePath>,
        device: &str,
    ) -> Result<(NodeRow, RemotePath)> {
        let mut w = Writer::begin(self, ns, device).await?;
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT deleted_path FROM nodes WHERE namespace_id = $1 AND id = $2 AND deleted_ms IS NOT NULL",
        )
        .bind(ns)
        .bind(id)
        .fetch_optional(&mut *w.tx)
        .await?;
        let Some((old_path,)) = row else {
            return Err(MetaError::NotFound(format!(
                "nothing with id {id} is in the trash"
            )));
        };
        let target = match (to, old_path) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => {
                RemotePath::parse(&p).map_err(|e| MetaError::Invalid(e.to_string()))?
            }
            (None, None) => return Err(MetaError::Invalid("give a path to restore it to".into())),
        };
        let (Some(parent_path), Some(name)) = (target.parent(), target.name()) else {
            return Err(MetaError::Invalid("nothing can be restored as /".into()));
        };
        let parent = w.ensure_folder(&parent_path).await?;
        if is_within(&mut w.tx, ns, &parent.id, id).await? {
            return Err(MetaError::IntoItself(format!(
                "cannot restore into {parent_path}: it is inside the restored folder itself"
            )));
        }
        if child(&mut w.tx, ns, &parent.id, name).await?.is_some() {
            return Err(MetaError::AlreadyExists(format!(
                "{target} exists: restore to another path"
            )));
        }
        sqlx::query(
            "UPDATE nodes SET deleted_ms = NULL, deleted_path = NULL, parent_id = $1, name = $2, name_key = $3
             WHERE namespace_id = $4 AND id = $5",
        )
        .bind(&parent.id)
        .bind(name)
        .bind(fold_name(name))
        .bind(ns)
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        // The node and its live contents, parents before children.
        let node: NodeRow = sqlx::query_as(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE namespace_id = $1 AND id = $2"
        ))
        .bind(ns)
        .bind(id)
        .fetch_one(&mut *w.tx)
        .await?;
        let mut queue = std::collections::VecDeque::from([(node.clone(), target.clone())]);
        let mut seen = std::collections::HashSet::new();
        while let Some((n, path)) = queue.pop_front() {
            if !seen.insert(n.id.clone()) {
                return Err(MetaError::Cycle(format!("{} is below itself", n.id)));
            }
            let kind = if n.is_folder() { "mkdir" } else { "restore" };
            w.event(kind, &n, path.as_str(), None).await?;
            if n.is_folder() {
                let children: Vec<NodeRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    node_cols!(),
                    " FROM nodes WHERE namespace_id = $1 AND parent_id = $2 AND deleted_ms IS NULL ORDER BY name_key, name"
                ))
                .bind(ns)
                .bind(&n.id)
                .fetch_all(&mut *w.tx)
                .await?;
                for c in children {
                    let p = path
                        .join(&c.name)
                        .map_err(|e| MetaError::Invalid(e.to_string()))?;
                    queue.push_back((c, p));
                }
            }
        }
        w.tx.commit().await?;
        Ok((node, target))
    }

    pub async fn revisions(
        &self,
        ns: i64,
        path: &RemotePath,
    ) -> Result<(NodeRow, Vec<RevisionRow>)> {
        let mut conn = self.pool.acquire().await?;
        let node = existing_file(&mut conn, ns, path).await?;
        let revs = sqlx::query_as(
            "SELECT rev, size, content_hash, chunker, device, created_ms FROM revisions
             WHERE namespace_id = $1 AND node_id = $2 ORDER BY rev DESC",
        )
        .bind(ns)
        .bind(&node.id)
        .fetch_all(&mut *conn)
        .await?;
        Ok((node, revs))
    }

    pub async fn file_revision(
        &self,
        ns: i64,
        path: &RemotePath,
        rev: Option<i64>,
    ) -> Result<(NodeRow, RevisionRow, Vec<RevisionBlock>)> {
        let mut conn = self.pool.acquire().await?;
        let node = existing_file(&mut conn, ns, path).await?;
        let rev = rev.unwrap_or(node.rev);
        let revision = revision(&mut conn, ns, &node.id, rev)
            .await?
            .ok_or_else(|| MetaError::NotFound(format!("{path} has no revision {rev}")))?;
        let rows: Vec<RevisionBlockRow> = sqlx::query_as(
            "SELECT rb.block_id, rb.file_offset, rb.size, b.object, b.obj_offset, b.obj_length
             FROM revision_blocks rb JOIN blocks b ON b.id = rb.block_id
             WHERE rb.namespace_id = $1 AND rb.node_id = $2 AND rb.rev = $3 ORDER BY rb.idx",
        )
        .bind(ns)
        .bind(&node.id)
        .bind(rev)
        .fetch_all(&mut *conn)
        .await?;
        let blocks = rows
            .into_iter()
            .map(RevisionBlockRow::into_block)
            .collect::<Result<_>>()?;
        Ok((node, revision, blocks))
    }

    pub async fn restore(
        &self,
        ns: i64,
        path: &RemotePath,
        rev: i64,
        device: &str,
    ) -> Result<NodeRow> {
        let mut w = Writer::begin(self, ns, device).await?;
        let node = existing_file(&mut w.tx, ns, path).await?;
        let old = revision(&mut w.tx, ns, &node.id, rev)
            .await?
            .ok_or_else(|| MetaError::NotFound(format!("{path} has no revision {rev}")))?;
        let new_rev = node.rev + 1;
        let now = w.now;
        // The old revision's key comes along: the same blocks, the same
        // (trusted or not) hash.
        sqlx::query(
            "INSERT INTO revisions (namespace_id, node_id, rev, size, content_hash, chunker, device, created_ms, blocks_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                     (SELECT blocks_key FROM revisions WHERE namespace_id = $1 AND node_id = $2 AND rev = $9))",
        )
        .bind(ns)
        .bind(&node.id)
        .bind(new_rev)
        .bind(old.size)
        .bind(&old.content_hash)
        .bind(&old.chunker)
        .bind(device)
        .bind(now)
        .bind(rev)
        .execute(&mut *w.tx)
        .await?;
        sqlx::query(
            "INSERT INTO revision_blocks (namespace_id, node_id, rev, idx, block_id, file_offset, size)
             SELECT namespace_id, node_id, $1, idx, block_id, file_offset, size FROM revision_blocks
             WHERE namespace_id = $2 AND node_id = $3 AND rev = $4",
        )
        .bind(new_rev)
        .bind(ns)
        .bind(&node.id)
        .bind(rev)
        .execute(&mut *w.tx)
        .await?;
        sqlx::query(
            "UPDATE blocks SET zero_since_ms = NULL, refcount = refcount + (
                 SELECT COUNT(*) FROM revision_blocks rb
                 WHERE rb.namespace_id = $1 AND rb.node_id = $2 AND rb.rev = $3 AND rb.block_id = blocks.id)
             WHERE id IN (SELECT block_id FROM revision_blocks
                          WHERE namespace_id = $1 AND node_id = $2 AND rev = $3)",
        )
        .bind(ns)
        .bind(&node.id)
        .bind(new_rev)
        .execute(&mut *w.tx)
        .await?;
        sqlx::query(
            "UPDATE nodes SET rev = $1, size = $2, content_hash = $3, modified_ms = $4
             WHERE namespace_id = $5 AND id = $6",
        )
        .bind(new_rev)
        .bind(old.size)
        .bind(&old.content_hash)
        .bind(now)
        .bind(ns)
        .bind(&node.id)
        .execute(&mut *w.tx)
        .await?;
        let node = NodeRow {
            rev: new_rev,
            size: old.size,
            content_hash: Some(old.content_hash),
            modified_ms: now,
            ..node
        };
        w.event("restore", &node, path.as_str(), None).await?;
        w.tx.commit().await?;
        Ok(node)
    }

    pub async fn journal_seq(&self, ns: i64) -> Result<i64> {
        let (seq,): (i64,) = sqlx::query_as("SELECT journal_seq FROM namespaces WHERE id = $1")
            .bind(ns)
            .fetch_one(&self.pool)
            .await?;
        Ok(seq)
    }
}

impl Store {
    pub async fn changes(&self, ns: i64, after: i64, limit: i64) -> Result<Vec<JournalRow>> {
        Ok(sqlx::query_as(
            "SELECT seq, kind, node_id, path, old_path, rev, node_kind, size, content_hash, device, created_ms FROM journal
             WHERE namespace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(ns)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// One user-visible change: a transaction that holds the namespace's
/// journal row, so journal sequence numbers are gap-free and changes to one
/// namespace apply one at a time.
struct Writer {
    tx: Tx,
    ns: i64,
    device: String,
    now: i64,
}

impl Writer {
    async fn begin(store: &Store, ns: i64, device: &str) -> Result<Self> {
        let mut tx = store.begin().await?;
        // A no-op update takes the namespace row's lock (PostgreSQL); SQLite's
        // IMMEDIATE transaction already holds the database's write lock.
        sqlx::query("UPDATE namespaces SET journal_seq = journal_seq WHERE id = $1")
            .bind(ns)
            .execute(&mut *tx)
            .await?;
        Ok(Self {
            tx,
            ns,
            device: device.to_owned(),
            now: now_ms(),
        })
    }

    /// Appends one journal entry describing `node` as this change left it.
    async fn event(
        &mut self,
        kind: &str,
        node: &NodeRow,
        path: &str,
        old_path: Option<&str>,
    ) -> Result<i64> {
        let (seq,): (i64,) = sqlx::query_as(
            "UPDATE namespaces SET journal_seq = journal_seq + 1 WHERE id = $1 RETURNING journal_seq",
        )
        .bind(self.ns)
        .fetch_one(&mut *self.tx)
        .await?;
        let file = !node.is_folder();
        sqlx::query(
            "INSERT INTO journal (namespace_id, seq, kind, node_id, path, old_path, rev, node_kind, size, content_hash, device, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(self.ns)
        .bind(seq)
        .bind(kind)
        .bind(&node.id)
        .bind(path)
        .bind(old_path)
        .bind(file.then_some(node.rev))
        .bind(&node.kind)
        .bind(file.then_some(node.size))
        .bind(if file { node.content_hash.clone() } else { None })
        .bind(&self.device)
        .bind(self.now)
        .execute(&mut *self.tx)
        .await?;
        Ok(seq)
    }

    /// The folder at `path`, creating it and any missing parent.
    async fn ensure_folder(&mut self, path: &RemotePath) -> Result<NodeRow> {
        let mut cur = root(&mut self.tx, self.ns).await?;
        let mut at = RemotePath::root();
        for seg in path.segments() {
            at = at
                .join(seg)
                .map_err(|e| MetaError::Invalid(e.to_string()))?;
            cur = match child(&mut self.tx, self.ns, &cur.id, seg).await? {
                Some(n) if n.is_folder() => n,
                Some(_) => return Err(MetaError::NotAFolder(at.to_string())),
                None => {
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
                    self.event("mkdir", &node, at.as_str(), None).await?;
                    node
                }
            };
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
    w.event("pending_expired", node, path, None).await?;
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
        sqlx::query(
            "UPDATE blocks SET
                 refcount = refcount - (SELECT COUNT(*) FROM revision_blocks rb
                     WHERE rb.namespace_id = $1 AND rb.node_id = $2 AND rb.block_id = blocks.id),
                 zero_since_ms = CASE WHEN refcount - (SELECT COUNT(*) FROM revision_blocks rb
                     WHERE rb.namespace_id = $1 AND rb.node_id = $2 AND rb.block_id = blocks.id) <= 0
                     THEN $3 ELSE zero_since_ms END
             WHERE id IN (SELECT block_id FROM revision_blocks WHERE namespace_id = $1 AND node_id = $2)",
        )
        .bind(ns)
        .bind(&id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        for sql in [
            "DELETE FROM revision_blocks WHERE namespace_id = $1 AND node_id = $2",
            "DELETE FROM revisions WHERE namespace_id = $1 AND node_id = $2",
        ] {
            sqlx::query(sql)
                .bind(ns)
                .bind(&id)
                .execute(&mut **tx)
                .await?;
        }
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

fn loc((object, offset, length): (String, i64, i64)) -> BlockLoc {
    BlockLoc {
        object,
        offset: offset as u64,
        length: length as u64,
    }
}

/// True if the user may reference the block and it is not known damaged
/// (a damaged block counts as missing, so clients send its bytes again).
async fn user_has_block(conn: &mut Conn, user_id: i64, id: &BlockId) -> Result<bool> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT ub.user_id FROM user_blocks ub JOIN blocks b ON b.id = ub.block_id
             WHERE ub.user_id = $1 AND ub.block_id = $2 AND b.damaged_ms IS NULL",
    )
    .bind(user_id)
    .bind(&id.0[..])
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

async fn grant(conn: &mut Conn, user_id: i64, id: &BlockId) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_blocks (user_id, block_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(&id.0[..])
    .execute(&mut *conn)
    .await?;
    Ok(())
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
    Ok(sqlx::query_as(
        "SELECT rev, size, content_hash, chunker, device, created_ms FROM revisions
         WHERE namespace_id = $1 AND node_id = $2 AND rev = $3",
    )
    .bind(ns)
    .bind(node)
    .bind(rev)
    .fetch_optional(&mut *conn)
    .await?)
}
