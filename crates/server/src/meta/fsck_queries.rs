//! The consistency check's queries (`tessera admin fsck`): a child of
//! `queries.rs`, compiled per backend with it. Read-only except the
//! repairs, each one short transaction, safe beside a running server.

use super::*;
use crate::meta::{BlockUse, Dangling, WrongCount};
use commit_queries::{BATCH, placeholders};

impl Store {
    pub async fn block_count(&self) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM blocks")
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    /// Block records in id order after `after`, with where they are stored.
    pub async fn blocks_page(
        &self,
        after: Option<BlockId>,
        limit: i64,
    ) -> Result<Vec<(BlockId, BlockLoc)>> {
        let after = after.map_or_else(Vec::new, |id| id.0.to_vec());
        let rows: Vec<(Vec<u8>, String, i64, i64)> = sqlx::query_as(
            "SELECT id, object, obj_offset, obj_length FROM blocks WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(located(rows))
    }

    /// Every file revision and upload session that uses `id`, named for
    /// people: owner, path (or where it was, in the trash) and revision.
    pub async fn block_uses(&self, id: &BlockId) -> Result<Vec<BlockUse>> {
        let mut conn = self.pool.acquire().await?;
        let revs: Vec<(i64, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT rb.namespace_id, rb.node_id, rb.rev, u.username FROM revision_blocks rb
             JOIN namespaces s ON s.id = rb.namespace_id
             LEFT JOIN users u ON u.id = s.owner_user_id
             WHERE rb.block_id = $1 ORDER BY rb.namespace_id, rb.node_id, rb.rev",
        )
        .bind(&id.0[..])
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(revs.len());
        for (ns, node_id, rev, owner) in revs {
            let node: Option<NodeRow> = sqlx::query_as(concat!(
                "SELECT ",
                node_cols!(),
                " FROM nodes WHERE namespace_id = $1 AND id = $2"
            ))
            .bind(ns)
            .bind(&node_id)
            .fetch_optional(&mut *conn)
            .await?;
            let trashed: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
                "SELECT deleted_ms, deleted_path FROM nodes WHERE namespace_id = $1 AND id = $2",
            )
            .bind(ns)
            .bind(&node_id)
            .fetch_optional(&mut *conn)
            .await?;
            let (path, in_trash) = match (node, trashed) {
                (_, Some((Some(_), Some(was)))) => (was, true),
                (Some(node), _) => (
                    node_path(&mut conn, ns, &node)
                        .await
                        .unwrap_or_else(|_| format!("(node {node_id})")),
                    false,
                ),
                (None, _) => (format!("(node {node_id})"), false),
            };
            out.push(BlockUse {
                owner: owner.unwrap_or_else(|| format!("namespace {ns}")),
                path,
                rev: Some(rev),
                in_trash,
            });
        }
        let sessions: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT us.path, u.username FROM upload_sessions us
             LEFT JOIN users u ON u.id = us.user_id
             WHERE us.tail_block = $1 OR EXISTS (
                 SELECT 1 FROM upload_blocks ub
                 WHERE ub.namespace_id = us.namespace_id AND ub.session_id = us.id AND ub.block_id = $1)",
        )
        .bind(&id.0[..])
        .fetch_all(&mut *conn)
        .await?;
        out.extend(sessions.into_iter().map(|(path, owner)| BlockUse {
            owner: owner.unwrap_or_default(),
            path,
            rev: None,
            in_trash: false,
        }));
        Ok(out)
    }

    /// Blocks that revisions name but that have no record at all.
    pub async fn dangling_blocks(&self, limit: i64) -> Result<Vec<BlockId>> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT DISTINCT rb.block_id FROM revision_blocks rb
             WHERE NOT EXISTS (SELECT 1 FROM blocks b WHERE b.id = rb.block_id)
             ORDER BY rb.block_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id,)| <[u8; 32]>::try_from(id.as_slice()).ok().map(BlockId))
            .collect())
    }

    /// Blocks whose reference count is not the number of revision entries
    /// that name them.
    pub async fn wrong_refcounts(&self, limit: i64) -> Result<Vec<WrongCount>> {
        let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(
            "SELECT b.id, b.refcount, CAST(COUNT(rb.block_id) AS BIGINT) FROM blocks b
             LEFT JOIN revision_blocks rb ON rb.block_id = b.id
             GROUP BY b.id, b.refcount
             HAVING b.refcount <> COUNT(rb.block_id)
             ORDER BY b.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, recorded, actual)| {
                let id = <[u8; 32]>::try_from(id.as_slice()).ok()?;
                Some(WrongCount {
                    id: BlockId(id),
                    recorded,
                    actual,
                })
            })
            .collect())
    }

    /// Sets a block's count to the revision entries naming it. The row is
    /// locked before counting, so a commit or purge under way is counted
    /// exactly once: its entries are either visible already, or it moves
    /// the count itself after this transaction.
    pub async fn fix_refcount(&self, id: &BlockId) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE blocks SET refcount = refcount WHERE id = $1")
            .bind(&id.0[..])
            .execute(&mut *tx)
            .await?;
        let (count,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM revision_blocks WHERE block_id = $1",
        )
        .bind(&id.0[..])
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE blocks SET refcount = $2,
                 zero_since_ms = CASE WHEN $2 <= 0 THEN COALESCE(zero_since_ms, $3) ELSE NULL END
             WHERE id = $1",
        )
        .bind(&id.0[..])
        .bind(count)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Unfinished upload sessions that name a block with no record.
    pub async fn dangling_sessions(&self) -> Result<Vec<Dangling>> {
        Ok(sqlx::query_as(
            "SELECT us.namespace_id, us.id, us.path, COALESCE(u.username, '') AS owner
             FROM upload_sessions us LEFT JOIN users u ON u.id = us.user_id
             WHERE us.done_path IS NULL AND (
                 (us.tail_block IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.id = us.tail_block))
                 OR EXISTS (SELECT 1 FROM upload_blocks ub
                            WHERE ub.namespace_id = us.namespace_id AND ub.session_id = us.id
                              AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.id = ub.block_id)))
             ORDER BY us.namespace_id, us.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Which of `objects` a block record names, or are doomed already.
    pub async fn known_objects(
        &self,
        objects: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut known = std::collections::HashSet::new();
        for chunk in objects.chunks(BATCH) {
            for table in ["blocks", "doomed_objects"] {
                let sql = format!(
                    "SELECT DISTINCT object FROM {table} WHERE object IN ({})",
                    placeholders(1, chunk.len())
                );
                let mut q = sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(sql));
                for o in chunk {
                    q = q.bind(o);
                }
                known.extend(q.fetch_all(&self.pool).await?.into_iter().map(|(o,)| o));
            }
        }
        Ok(known)
    }
}
