//! Resumable upload sessions. A child of `queries.rs`, so it shares
//! `Store`, `Writer` and the helpers there.

use super::*;
use crate::meta::{Checkpoint, UploadRow};

impl Store {
    pub async fn create_upload(&self, u: &UploadRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO upload_sessions (namespace_id, id, user_id, path, base_rev, length, upload_offset,
                 block_count, tail_block, tail_len, hash_state, metadata, device, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, NULL, 0, $7, $8, $9, $10, $10)",
        )
        .bind(u.namespace_id)
        .bind(&u.id)
        .bind(u.user_id)
        .bind(&u.path)
        .bind(u.base_rev)
        .bind(u.length)
        .bind(&u.hash_state)
        .bind(&u.metadata)
        .bind(&u.device)
        .bind(u.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sessions of `ns` not yet completed.
    /// Unfinished sessions of `ns` whose device starts with `prefix` (or,
    /// when `among` is false, does not).
    pub async fn open_uploads(&self, ns: i64, prefix: &str, among: bool) -> Result<i64> {
        let pattern = format!("{}%", prefix.replace(['%', '_', '\\'], ""));
        let (n,): (i64,) = sqlx::query_as(if among {
            "SELECT COUNT(*) FROM upload_sessions
             WHERE namespace_id = $1 AND done_path IS NULL AND device LIKE $2"
        } else {
            "SELECT COUNT(*) FROM upload_sessions
             WHERE namespace_id = $1 AND done_path IS NULL AND device NOT LIKE $2"
        })
        .bind(ns)
        .bind(pattern)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    pub async fn upload(&self, ns: i64, id: &str) -> Result<Option<UploadRow>> {
        Ok(sqlx::query_as(
            "SELECT namespace_id, id, user_id, path, base_rev, length, upload_offset, block_count, tail_block,
                    tail_len, hash_state, metadata, device, created_ms, updated_ms, done_path, done_rev
             FROM upload_sessions WHERE namespace_id = $1 AND id = $2",
        )
        .bind(ns)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The blocks stored so far, in file order: id and length.
    pub async fn upload_blocks(&self, ns: i64, id: &str) -> Result<Vec<(BlockId, u64)>> {
        let mut conn = self.pool.acquire().await?;
        session_blocks(&mut conn, ns, id).await
    }

    /// Makes `c` the session's durable state if it is still at `c.from`.
    /// Returns false when another request moved it meanwhile.
    pub async fn checkpoint_upload(&self, ns: i64, id: &str, c: &Checkpoint) -> Result<bool> {
        let mut tx = self.begin().await?;
        if !advance(&mut tx, ns, id, c).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Completes the session: its last blocks and the file's revision in
    /// one transaction. A base revision that is no longer current lands the
    /// file as a conflicted copy beside it. Returns the new node and where
    /// it landed, or `None` when another request moved the session meanwhile.
    pub async fn finish_upload(
        &self,
        ns: i64,
        id: &str,
        c: &Checkpoint,
        new: &NewRevision,
    ) -> Result<Option<(NodeRow, RemotePath)>> {
        let mut w = Writer::begin(self, ns, &new.device).await?;
        // A role taken away while the upload ran wins over it.
        share_queries::may_write(&mut w.tx, new.user_id, ns).await?;
        if !advance(&mut w.tx, ns, id, c).await? {
            w.tx.rollback().await?;
            return Ok(None);
        }
        let mut target = new.path.clone();
        if let Some(base) = new.base_rev
            && let Some(node) = resolve(&mut w.tx, ns, &new.path).await?
            && !node.is_folder()
            && node.rev != base
            && node.content_hash.as_deref() != Some(&new.content_hash.0[..])
        {
            target = free_conflict_path(&mut w.tx, ns, &new.path, &new.device, w.now).await?;
        }
        let blocks = session_blocks(&mut w.tx, ns, id).await?;
        let rev = NewRevision {
            path: target.clone(),
            base_rev: None,
            blocks,
            ..new.clone()
        };
        let node = Self::commit_in(&mut w, &rev).await?;
        sqlx::query(
            "UPDATE upload_sessions SET done_path = $1, done_rev = $2, tail_block = NULL, tail_len = 0
             WHERE namespace_id = $3 AND id = $4",
        )
        .bind(target.as_str())
        .bind(node.rev)
        .bind(ns)
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        sqlx::query("DELETE FROM upload_blocks WHERE namespace_id = $1 AND session_id = $2")
            .bind(ns)
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(Some((node, target)))
    }

    /// Ends a session (TUS termination, or expiry). Its blocks stay
    /// unreferenced. If it was the last unfinished upload to its path, the
    /// file stops showing as syncing. Returns false if there was no session.
    pub async fn delete_upload(&self, ns: i64, id: &str) -> Result<bool> {
        let mut w = Writer::begin(self, ns, "server").await?;
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT path, done_path FROM upload_sessions WHERE namespace_id = $1 AND id = $2",
        )
        .bind(ns)
        .bind(id)
        .fetch_optional(&mut *w.tx)
        .await?;
        let Some((path, done)) = row else {
            w.tx.rollback().await?;
            return Ok(false);
        };
        sqlx::query("DELETE FROM upload_blocks WHERE namespace_id = $1 AND session_id = $2")
            .bind(ns)
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("DELETE FROM upload_sessions WHERE namespace_id = $1 AND id = $2")
            .bind(ns)
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        let (others,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM upload_sessions WHERE namespace_id = $1 AND path = $2 AND done_path IS NULL",
        )
        .bind(ns)
        .bind(&path)
        .fetch_one(&mut *w.tx)
        .await?;
        if done.is_none()
            && others == 0
            && let Ok(target) = RemotePath::parse(&path)
            && let Some(node) = resolve(&mut w.tx, ns, &target).await?
            && node.pending_ms.is_some()
        {
            end_pending(&mut w, &node, &path).await?;
        }
        w.commit().await?;
        Ok(true)
    }

    /// Ends sessions untouched since `cutoff_ms` (finished or not). Returns
    /// the namespaces that had some.
    pub async fn expire_uploads(&self, cutoff_ms: i64) -> Result<Vec<i64>> {
        let old: Vec<(i64, String)> =
            sqlx::query_as("SELECT namespace_id, id FROM upload_sessions WHERE updated_ms < $1 ORDER BY namespace_id")
                .bind(cutoff_ms)
                .fetch_all(&self.pool)
                .await?;
        let mut changed = Vec::new();
        for (ns, id) in old {
            if self.delete_upload(ns, &id).await? {
                changed.push(ns);
            }
        }
        changed.dedup();
        Ok(changed)
    }
}

/// The blocks a session stored, in file order: id and length.
async fn session_blocks(conn: &mut Conn, ns: i64, id: &str) -> Result<Vec<(BlockId, u64)>> {
    let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
        "SELECT block_id, size FROM upload_blocks WHERE namespace_id = $1 AND session_id = $2 ORDER BY idx",
    )
    .bind(ns)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(b, size)| {
            let id = BlockId::from_slice(&b)
                .ok_or_else(|| MetaError::Invalid("a stored block id is damaged".into()))?;
            Ok((id, size as u64))
        })
        .collect()
}

/// Moves the session from `c.from` to `c.to`, appending its new blocks.
async fn advance(tx: &mut Tx, ns: i64, id: &str, c: &Checkpoint) -> Result<bool> {
    let moved = sqlx::query(
        "UPDATE upload_sessions SET upload_offset = $1, block_count = block_count + $2, tail_block = $3,
             tail_len = $4, hash_state = $5, updated_ms = $6
         WHERE namespace_id = $7 AND id = $8 AND upload_offset = $9 AND block_count = $10 AND done_path IS NULL",
    )
    .bind(c.to as i64)
    .bind(c.new_blocks.len() as i64)
    .bind(c.tail.map(|(t, _)| t.0.to_vec()))
    .bind(c.tail.map_or(0, |(_, len)| len as i64))
    .bind(&c.hash_state)
    .bind(now_ms())
    .bind(ns)
    .bind(id)
    .bind(c.from as i64)
    .bind(c.first_idx as i64)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(false);
    }
    // The session names these blocks from now on; collection must not
    // have taken them since they were recorded.
    let mut named: Vec<BlockId> = c.new_blocks.iter().map(|(b, _)| *b).collect();
    named.extend(c.tail.map(|(t, _)| t));
    gc_queries::hold_blocks(tx, &named, now_ms()).await?;
    let mut idx = c.first_idx as i64;
    for chunk in c.new_blocks.chunks(commit_queries::BATCH) {
        // $1, $2 are shared; each row adds idx, block_id, size.
        let values = (0..chunk.len())
            .map(|i| {
                let p = 3 + 3 * i;
                format!("($1, $2, ${p}, ${}, ${})", p + 1, p + 2)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO upload_blocks (namespace_id, session_id, idx, block_id, size) VALUES {values}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ns).bind(id);
        for (block, size) in chunk {
            q = q.bind(idx).bind(&block.0[..]).bind(*size as i64);
            idx += 1;
        }
        q.execute(&mut **tx).await?;
    }
    Ok(true)
}

/// `NAME (conflicted copy from DEVICE DATE TIME).EXT` beside `path`, with
/// ` (2)`, ` (3)`… when that is taken too.
async fn free_conflict_path(
    tx: &mut Tx,
    ns: i64,
    path: &RemotePath,
    device: &str,
    now: i64,
) -> Result<RemotePath> {
    let (Some(parent), Some(name)) = (path.parent(), path.name()) else {
        return Err(MetaError::Invalid("a file cannot be stored at /".into()));
    };
    let base = tessera_proto::path::conflicted_name(name, device, now / 1000);
    for n in 1..1000 {
        let candidate = if n == 1 {
            base.clone()
        } else {
            tessera_proto::path::numbered_name(&base, n)
        };
        let p = parent
            .join(&candidate)
            .map_err(|e| MetaError::Invalid(e.to_string()))?;
        if resolve(tx, ns, &p).await?.is_none() {
            return Ok(p);
        }
    }
    Err(MetaError::AlreadyExists(format!(
        "no free name for a conflicted copy of {path}"
    )))
}
