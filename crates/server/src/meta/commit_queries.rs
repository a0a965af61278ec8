//! The commit path's queries: a child of `queries.rs`, compiled per backend
//! with it, sharing its imports and helpers. Block lists are read and
//! written in batches, so a commit's time under the write lock grows by
//! statements per few hundred blocks, not per block.

use super::*;

/// Ids per `IN (…)` list and rows per multi-row insert, set per backend
/// (`sqlite.rs`, `postgres.rs`): far below either one's limit on bound
/// parameters.
pub(super) use super::BATCH;

impl Store {
    /// Brings back folders an older release let move into their own
    /// subtree (cut off from the root by a cycle of parents, so invisible
    /// and not in the trash): each is put back at the root of its
    /// namespace under its own name (or `NAME (recovered)`, `NAME
    /// (recovered 2)`… when that is taken), through the trash's restore, so
    /// the journal tells every device. Left in the trash they would be
    /// purged for good when the trash expires. Returns how many. Walks only
    /// what the root does not reach. (`CROSS JOIN` keeps SQLite walking
    /// from each node reached to its children by index, not scanning every
    /// node for each one.)
    pub async fn rescue_cut_off(&self) -> Result<u64> {
        let cut: Vec<(i64, String)> = sqlx::query_as(
            "WITH RECURSIVE reach(namespace_id, id) AS (
                 SELECT namespace_id, id FROM nodes WHERE parent_id IS NULL
                 UNION
                 SELECT n.namespace_id, n.id FROM reach r CROSS JOIN nodes n
                 WHERE n.namespace_id = r.namespace_id AND n.parent_id = r.id
             ), up(namespace_id, start_id, cur) AS (
                 SELECT namespace_id, id, parent_id FROM nodes n
                 WHERE NOT EXISTS (SELECT 1 FROM reach r WHERE r.namespace_id = n.namespace_id AND r.id = n.id)
                 UNION
                 SELECT u.namespace_id, u.start_id, n.parent_id FROM up u CROSS JOIN nodes n
                 WHERE n.namespace_id = u.namespace_id AND n.id = u.cur AND u.cur <> u.start_id
             )
             SELECT namespace_id, start_id FROM up WHERE cur = start_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let now = now_ms();
        for (ns, id) in &cut {
            sqlx::query(
                "UPDATE nodes SET deleted_ms = $1, deleted_path = '/' || name,
                     parent_id = (SELECT r.id FROM nodes r WHERE r.namespace_id = $2 AND r.parent_id IS NULL)
                 WHERE namespace_id = $2 AND id = $3",
            )
            .bind(now)
            .bind(*ns)
            .bind(id)
            .execute(&self.pool)
            .await?;
            let (name,): (String,) =
                sqlx::query_as("SELECT name FROM nodes WHERE namespace_id = $1 AND id = $2")
                    .bind(*ns)
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?;
            let mut back = None;
            for n in 1..=100 {
                let spelled = match n {
                    1 => format!("/{name}"),
                    2 => format!("/{name} (recovered)"),
                    _ => format!("/{name} (recovered {})", n - 1),
                };
                let Ok(path) = RemotePath::parse(&spelled) else {
                    break;
                };
                match self
                    .restore_from_trash(*ns, id, Some(&path), "server")
                    .await
                {
                    Ok(_) => {
                        back = Some(path);
                        break;
                    }
                    Err(MetaError::AlreadyExists(_)) => continue,
                    Err(e) => {
                        tracing::warn!(ns, node = %id, error = %e, "could not put a recovered folder back");
                        break;
                    }
                }
            }
            match back {
                Some(path) => tracing::warn!(
                    ns, node = %id, %path,
                    "a folder an older release had moved inside itself is back at the root"
                ),
                None => tracing::warn!(
                    ns, node = %id,
                    "a folder an older release had moved inside itself is in the trash: restore it before the trash expires"
                ),
            }
        }
        Ok(cut.len() as u64)
    }

    /// Which of `ids` the user may reference, with each one's plain length
    /// and location. Unknown ids are simply absent.
    pub async fn user_blocks(
        &self,
        user_id: i64,
        ids: &[BlockId],
    ) -> Result<std::collections::HashMap<BlockId, (u64, BlockLoc)>> {
        let mut conn = self.pool.acquire().await?;
        user_block_rows(&mut conn, user_id, ids).await
    }

    /// The content hash of a revision of `ns` with exactly this block list
    /// (see [`blocks_key`]), if one was computed or verified by the server.
    pub async fn verified_hash(&self, ns: i64, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT content_hash FROM revisions WHERE namespace_id = $1 AND blocks_key = $2 LIMIT 1",
        )
        .bind(ns)
        .bind(&key[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(h,)| h))
    }
}

pub(super) async fn user_block_rows(
    conn: &mut Conn,
    user_id: i64,
    ids: &[BlockId],
) -> Result<std::collections::HashMap<BlockId, (u64, BlockLoc)>> {
    let mut unique: Vec<BlockId> = ids.to_vec();
    unique.sort_unstable_by_key(|id| id.0);
    unique.dedup();
    let mut out = std::collections::HashMap::with_capacity(unique.len());
    for chunk in unique.chunks(BATCH) {
        let list = placeholders(2, chunk.len());
        let sql = format!(
            "SELECT b.id, b.plain_len, b.object, b.obj_offset, b.obj_length FROM blocks b
             JOIN user_blocks ub ON ub.block_id = b.id
             WHERE ub.user_id = $1 AND b.damaged_ms IS NULL AND b.id IN ({list})"
        );
        let mut q = sqlx::query_as::<_, (Vec<u8>, i64, String, i64, i64)>(sqlx::AssertSqlSafe(sql))
            .bind(user_id);
        for id in chunk {
            q = q.bind(&id.0[..]);
        }
        for (id, plain, object, offset, length) in q.fetch_all(&mut *conn).await? {
            if let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) {
                out.insert(BlockId(id), (plain as u64, loc((object, offset, length))));
            }
        }
    }
    Ok(out)
}

/// The key of a stored revision's block list: kept since migration 0005,
/// computed from its rows for older revisions.
pub(super) async fn revision_blocks_key(
    conn: &mut Conn,
    ns: i64,
    node: &str,
    rev: i64,
) -> Result<Option<[u8; 32]>> {
    let row: Option<(Option<Vec<u8>>, String)> = sqlx::query_as(
        "SELECT blocks_key, chunker FROM revisions WHERE namespace_id = $1 AND node_id = $2 AND rev = $3",
    )
    .bind(ns)
    .bind(node)
    .bind(rev)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((key, chunker)) = row else {
        return Ok(None);
    };
    if let Some(key) = key.as_deref().and_then(|k| <[u8; 32]>::try_from(k).ok()) {
        return Ok(Some(key));
    }
    let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
        "SELECT block_id, size FROM revision_blocks WHERE namespace_id = $1 AND node_id = $2 AND rev = $3
         ORDER BY idx",
    )
    .bind(ns)
    .bind(node)
    .bind(rev)
    .fetch_all(&mut *conn)
    .await?;
    let mut blocks = Vec::with_capacity(rows.len());
    for (id, size) in rows {
        let id = <[u8; 32]>::try_from(id.as_slice())
            .map_err(|_| MetaError::Invalid("stored block id is not 32 bytes".into()))?;
        blocks.push((BlockId(id), size as u64));
    }
    Ok(Some(crate::meta::blocks_key(
        &crate::meta::loaded_chunker(chunker),
        &blocks,
    )))
}

/// Writes the block list of revision `rev` of `node` and takes one
/// reference on each block per use.
pub(super) async fn insert_revision_blocks(
    tx: &mut Tx,
    ns: i64,
    node: &str,
    rev: i64,
    blocks: &[(BlockId, u64)],
) -> Result<()> {
    let mut offset = 0u64;
    for (n, chunk) in blocks.chunks(BATCH).enumerate() {
        // $1..$3 are shared; each row adds idx, block_id, file_offset, size.
        let values = (0..chunk.len())
            .map(|i| {
                let p = 4 + 4 * i;
                format!("($1, $2, $3, ${p}, ${}, ${}, ${})", p + 1, p + 2, p + 3)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO revision_blocks (namespace_id, node_id, rev, idx, block_id, file_offset, size) VALUES {values}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ns)
            .bind(node)
            .bind(rev);
        for (i, (id, size)) in chunk.iter().enumerate() {
            q = q
                .bind((n * BATCH + i) as i64)
                .bind(&id.0[..])
                .bind(offset as i64)
                .bind(*size as i64);
            offset += size;
        }
        q.execute(&mut **tx).await?;
    }
    add_refs(tx, blocks).await?;
    if rev > 1 {
        note_bases(tx, ns, node, rev).await?;
    }
    grant_to_members(tx, ns, node, rev).await
}

/// Notes, on each block of revision `rev` that is as it arrived and has no
/// note yet, the block at the same place in the file's previous revision
/// when that one differs: the block it most likely replaced, which the
/// `recompress` worker may store it as a delta against. The rows were
/// locked by this transaction's references a moment before.
async fn note_bases(tx: &mut Tx, ns: i64, node: &str, rev: i64) -> Result<()> {
    sqlx::query(
        "UPDATE blocks SET base = p.block_id
         FROM revision_blocks n, revision_blocks p
         WHERE n.namespace_id = $1 AND n.node_id = $2 AND n.rev = $3
           AND p.namespace_id = $1 AND p.node_id = $2 AND p.idx = n.idx
           AND p.rev = (SELECT MAX(r.rev) FROM revisions r
                        WHERE r.namespace_id = $1 AND r.node_id = $2 AND r.rev < $3)
           AND blocks.id = n.block_id AND p.block_id <> n.block_id
           AND blocks.level IS NULL AND blocks.base IS NULL",
    )
    .bind(ns)
    .bind(node)
    .bind(rev)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether anyone mounts `ns` (a shared folder's namespace).
pub(super) async fn is_shared(tx: &mut Tx, ns: i64) -> Result<bool> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT namespace_id FROM mounts WHERE namespace_id = $1 LIMIT 1")
            .bind(ns)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.is_some())
}

/// Lets every member of a shared folder fetch the blocks of a revision
/// stored there by any member (nothing for a namespace no one mounts).
pub(super) async fn grant_to_members(tx: &mut Tx, ns: i64, node: &str, rev: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_blocks (user_id, block_id)
         SELECT DISTINCT m.user_id, rb.block_id FROM mounts m
         JOIN revision_blocks rb ON rb.namespace_id = m.namespace_id
         WHERE m.namespace_id = $1 AND rb.node_id = $2 AND rb.rev = $3
         ON CONFLICT DO NOTHING",
    )
    .bind(ns)
    .bind(node)
    .bind(rev)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many times each block is used in `blocks`, grouped by that count,
/// so each statement can move a batch of ids by one amount (counting uses
/// in SQL per block made long files quadratic).
fn uses_by_count(blocks: &[BlockId]) -> std::collections::BTreeMap<i64, Vec<[u8; 32]>> {
    let mut uses: std::collections::BTreeMap<[u8; 32], i64> = Default::default();
    for id in blocks {
        *uses.entry(id.0).or_default() += 1;
    }
    let mut by_count: std::collections::BTreeMap<i64, Vec<[u8; 32]>> = Default::default();
    for (id, n) in uses {
        by_count.entry(n).or_default().push(id);
    }
    by_count
}

/// Takes one reference on each block per use in `blocks`.
async fn add_refs(tx: &mut Tx, blocks: &[(BlockId, u64)]) -> Result<()> {
    let ids: Vec<BlockId> = blocks.iter().map(|(id, _)| *id).collect();
    take_refs(tx, &ids).await
}

/// Takes one reference on each block per use in `ids`. Fails with
/// [`MetaError::MissingBlocks`] if collection removed any of them since
/// the caller checked (the caller's transaction then rolls back).
pub(super) async fn take_refs(tx: &mut Tx, ids: &[BlockId]) -> Result<()> {
    let by_count = uses_by_count(ids);
    let distinct: usize = by_count.values().map(Vec::len).sum();
    let mut taken = 0u64;
    for (n, ids) in &by_count {
        for chunk in ids.chunks(BATCH) {
            let sql = format!(
                "UPDATE blocks SET zero_since_ms = NULL, refcount = refcount + $1 WHERE id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(*n);
            for id in chunk {
                q = q.bind(&id[..]);
            }
            taken += q.execute(&mut **tx).await?.rows_affected();
        }
    }
    if taken == distinct as u64 {
        return Ok(());
    }
    let all: Vec<[u8; 32]> = by_count.into_values().flatten().collect();
    Err(MetaError::MissingBlocks(
        gc_queries::absent(tx, &all)
            .await?
            .into_iter()
            .map(BlockId)
            .collect(),
    ))
}

/// Releases one reference on each block per use in `ids`; a block left
/// without references is stamped `now`, from when collection may count its
/// grace period.
pub(super) async fn release_refs(tx: &mut Tx, ids: &[BlockId], now: i64) -> Result<()> {
    for (n, ids) in uses_by_count(ids) {
        for chunk in ids.chunks(BATCH) {
            let sql = format!(
                "UPDATE blocks SET refcount = refcount - $1,
                     zero_since_ms = CASE WHEN refcount - $1 <= 0 THEN $2 ELSE zero_since_ms END
                 WHERE id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(n).bind(now);
            for id in chunk {
                q = q.bind(&id[..]);
            }
            q.execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// The blocks of a node's revisions: of `rev` alone, or of all of them.
pub(super) async fn revision_block_ids(
    tx: &mut Tx,
    ns: i64,
    node: &str,
    rev: Option<i64>,
) -> Result<Vec<BlockId>> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT block_id FROM revision_blocks
         WHERE namespace_id = $1 AND node_id = $2 AND ($3 IS NULL OR rev = $3)",
    )
    .bind(ns)
    .bind(node)
    .bind(rev)
    .fetch_all(&mut **tx)
    .await?;
    block_ids(rows)
}

/// `$first, $first+1, …` for `n` bound values.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
