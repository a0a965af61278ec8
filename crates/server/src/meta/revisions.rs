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
        let node = NodeRow {
            rev: new_rev,
            size: old.size,
            content_hash: Some(old.content_hash),
            modified_ms: now,
            ..node
        };
        w.event(ChangeKind::Restore, &node, path.as_str(), None)
            .await?;
        w.commit().await?;
        Ok(node)
    }
}
