//! A file's revisions, and restoring an older one. A child of
//! `queries.rs`, compiled once per backend with it.

use super::*;

impl Store {
    pub async fn revisions(
        &self,
        ns: i64,
        path: &RemotePath,
    ) -> Result<(NodeRow, Vec<RevisionRow>)> {
        let mut conn = self.pool.acquire().await?;
        let node = existing_file(&mut conn, ns, path).await?;
        let revs: Vec<RevisionRow> = sqlx::query_as(
            "SELECT rev, size, content_hash, chunker, device, created_ms, pinned FROM revisions
             WHERE namespace_id = $1 AND node_id = $2 ORDER BY rev DESC",
        )
        .bind(ns)
        .bind(&node.id)
        .fetch_all(&mut *conn)
        .await?;
        Ok((node, revs.into_iter().map(RevisionRow::loaded).collect()))
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
        // Holds the old revision's row for the transaction, so retention
        // cannot remove it between here and the copy of its blocks.
        sqlx::query(
            "UPDATE revisions SET pinned = pinned WHERE namespace_id = $1 AND node_id = $2 AND rev = $3",
        )
        .bind(ns)
        .bind(&node.id)
        .bind(rev)
        .execute(&mut *w.tx)
        .await?;
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
        .bind(crate::meta::stored_chunker(&old.chunker))
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
        let ids = revision_block_ids(&mut w.tx, ns, &node.id, Some(new_rev)).await?;
        take_refs(&mut w.tx, &ids).await?;
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
        // Charged once the new revision is current: making room removes
        // only old revisions, never the one this restore just wrote.
        quota_queries::charge(&mut w.tx, ns, old.size).await?;
        let node = NodeRow {
            rev: new_rev,
            size: old.size,
            content_hash: Some(old.content_hash),
            modified_ms: now,
            ..node
        };
        w.event(ChangeKind::Restore, &node, path.as_str(), None);
        w.commit().await?;
        Ok(node)
    }

    pub async fn pin_revision(
        &self,
        ns: i64,
        path: &RemotePath,
        rev: i64,
        pinned: bool,
    ) -> Result<RevisionRow> {
        let mut tx = self.begin().await?;
        let node = existing_file(&mut tx, ns, path).await?;
        let changed = sqlx::query(
            "UPDATE revisions SET pinned = $1 WHERE namespace_id = $2 AND node_id = $3 AND rev = $4",
        )
        .bind(pinned)
        .bind(ns)
        .bind(&node.id)
        .bind(rev)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(MetaError::NotFound(format!("{path} has no revision {rev}")));
        }
        let row = revision(&mut tx, ns, &node.id, rev)
            .await?
            .ok_or_else(|| MetaError::NotFound(format!("{path} has no revision {rev}")))?;
        tx.commit().await?;
        Ok(row)
    }

    /// Files (live or in the trash) with more than one revision, in
    /// (namespace, node) order after `after`, each with its current
    /// revision number.
    pub async fn files_with_history(
        &self,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<(i64, String, i64)>> {
        let (after_ns, after_node) = after.unwrap_or((i64::MIN, String::new()));
        Ok(sqlx::query_as(
            "SELECT r.namespace_id, r.node_id, n.rev FROM revisions r
             JOIN nodes n ON n.namespace_id = r.namespace_id AND n.id = r.node_id
             WHERE r.namespace_id > $1 OR (r.namespace_id = $1 AND r.node_id > $2)
             GROUP BY r.namespace_id, r.node_id, n.rev
             HAVING COUNT(*) > 1
             ORDER BY r.namespace_id, r.node_id
             LIMIT $3",
        )
        .bind(after_ns)
        .bind(after_node)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn revision_ages(&self, ns: i64, node: &str) -> Result<Vec<crate::retention::Rev>> {
        let rows: Vec<(i64, i64, bool)> = sqlx::query_as(
            "SELECT rev, created_ms, pinned FROM revisions
             WHERE namespace_id = $1 AND node_id = $2 ORDER BY rev",
        )
        .bind(ns)
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(rev, created_ms, pinned)| crate::retention::Rev {
                rev,
                created_ms,
                pinned,
            })
            .collect())
    }

    /// Removes revisions `revs` of a file, except its current one and
    /// pinned ones (checked again here: a pin or a restore may have come
    /// since the schedule looked), and releases their blocks, in one
    /// transaction. Old revisions are history, not the tree: the journal
    /// does not change.
    pub async fn drop_revisions(&self, ns: i64, node: &str, revs: &[i64]) -> Result<u64> {
        let mut tx = self.begin().await?;
        let current: Option<(i64,)> =
            sqlx::query_as("SELECT rev FROM nodes WHERE namespace_id = $1 AND id = $2")
                .bind(ns)
                .bind(node)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((current,)) = current else {
            return Ok(0);
        };
        let now = now_ms();
        let mut dropped = 0;
        let mut freed = 0;
        for &rev in revs.iter().filter(|&&r| r != current) {
            // Pinned since the schedule looked, or removed by a quota's
            // clean-up: left alone.
            if let Some(size) = quota_queries::remove_revision(&mut tx, ns, node, rev, now).await? {
                freed += size;
                dropped += 1;
            }
        }
        quota_queries::charge(&mut tx, ns, -freed).await?;
        tx.commit().await?;
        Ok(dropped)
    }
}
