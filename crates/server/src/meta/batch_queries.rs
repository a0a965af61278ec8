//! Batches of commits, as many small files arrive: one transaction, each
//! item standing alone. A batch of files that are all new, into folders
//! the batch can make, is written set by set (a few statements for the
//! whole batch); anything else goes item by item. A child of `queries.rs`,
//! compiled once per backend with it.

use super::commit_queries::{take_refs, user_block_rows};
use super::tree::check_blocks;
use super::*;

/// Rows a statement in the set-wise writes. Binding a parameter costs
/// SQLite time in proportion to the statement's parameters (it looks each
/// name up in a list), so a statement of thousands costs more than the
/// round trips it saves; 50 rows of up to 11 values is past the point
/// where fewer statements pay.
const ROWS: usize = 50;

impl Store {
    /// Many commits of one namespace in one transaction. Each item stands
    /// alone: one that fails leaves no trace and does not stop the others.
    /// A database failure fails the whole batch.
    pub async fn commit_many(&self, news: &[NewRevision]) -> Result<Vec<Result<NodeRow>>> {
        // Items rarely fail, and a savepoint each costs two statements an
        // item: try the batch without them first, and only when an item
        // fails go through it again with them.
        if let Some(out) = self.commit_each(news, false).await? {
            return Ok(out);
        }
        Ok(self.commit_each(news, true).await?.unwrap_or_default())
    }

    /// [`Store::commit_many`] with a savepoint an item (`isolated`), or
    /// with none, giving up (`None`, nothing written) at the first item
    /// that fails.
    async fn commit_each(
        &self,
        news: &[NewRevision],
        isolated: bool,
    ) -> Result<Option<Vec<Result<NodeRow>>>> {
        let Some(first) = news.first() else {
            return Ok(Some(Vec::new()));
        };
        let mut w = Writer::begin(self, first.ns, &first.device).await?;
        let writers: std::collections::BTreeSet<(i64, i64)> =
            news.iter().map(|n| (n.user_id, n.ns)).collect();
        for (user, ns) in writers {
            // Refused whole, item by item: the API commits a batch one
            // namespace at a time, and the others stand.
            match super::share_queries::may_write(&mut w.tx, user, ns).await {
                Ok(()) => {}
                Err(MetaError::Forbidden(why)) => {
                    return Ok(Some(
                        news.iter()
                            .map(|_| Err(MetaError::Forbidden(why.clone())))
                            .collect(),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        // The blocks of the whole batch, looked up once under the lock.
        let ids: Vec<BlockId> = news
            .iter()
            .filter(|n| n.user_id == first.user_id)
            .flat_map(blocks_of)
            .collect();
        let known = user_block_rows(&mut w.tx, first.user_id, &ids).await?;
        w.blocks = Some((first.user_id, known));
        if !isolated {
            match Self::commit_fresh(&mut w, news).await {
                Ok(Some(nodes)) => {
                    w.commit().await?;
                    return Ok(Some(nodes.into_iter().map(Ok).collect()));
                }
                Ok(None) => {}
                Err(MetaError::Db(e)) => return Err(MetaError::Db(e)),
                Err(_) => {
                    w.tx.rollback().await?;
                    return Ok(None);
                }
            }
        }
        let mut out = Vec::with_capacity(news.len());
        for new in news {
            let mark = w.mark();
            if isolated {
                sqlx::query("SAVEPOINT item").execute(&mut *w.tx).await?;
            }
            match Self::commit_in(&mut w, new).await {
                Ok(node) => {
                    if isolated {
                        sqlx::query("RELEASE SAVEPOINT item")
                            .execute(&mut *w.tx)
                            .await?;
                    }
                    out.push(Ok(node));
                }
                Err(MetaError::Db(e)) => return Err(MetaError::Db(e)),
                // Rolled back before the batch runs again item by item,
                // which must wait for this transaction's lock.
                Err(_) if !isolated => {
                    w.tx.rollback().await?;
                    return Ok(None);
                }
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT item")
                        .execute(&mut *w.tx)
                        .await?;
                    sqlx::query("RELEASE SAVEPOINT item")
                        .execute(&mut *w.tx)
                        .await?;
                    // The item's journal entries and folders went with it.
                    w.back_to(mark);
                    out.push(Err(e));
                }
            }
        }
        w.commit().await?;
        Ok(Some(out))
    }

    /// The whole batch at once, when every item is a new file of the
    /// batch's user (who has no quota to check item by item) at a path
    /// nothing holds yet and no other item names. `None` (nothing written
    /// but the folders, which the item-by-item path finds again) when the
    /// batch is not such a one; an error fails the batch, which is then
    /// run again item by item.
    async fn commit_fresh(w: &mut Writer, news: &[NewRevision]) -> Result<Option<Vec<NodeRow>>> {
        let Some(first) = news.first() else {
            return Ok(Some(Vec::new()));
        };
        let plain = news.iter().all(|n| {
            n.ns == first.ns && n.user_id == first.user_id && n.base_rev.unwrap_or(0) == 0
        });
        if !plain || w.has_quota(first.user_id).await? {
            return Ok(None);
        }
        // Each file's folder (made where missing) and folded name.
        let mut places = Vec::with_capacity(news.len());
        let mut taken = std::collections::HashSet::new();
        for new in news {
            let (Some(parent), Some(name)) = (new.path.parent(), new.path.name()) else {
                return Ok(None);
            };
            let folder = w.ensure_folder(&parent).await?;
            if !taken.insert((folder.id.clone(), fold_name(name))) {
                return Ok(None);
            }
            w.not_a_mount_point(&new.path).await?;
            places.push((folder.id, name));
        }
        if any_taken(w, &taken).await? {
            return Ok(None);
        }
        let mut nodes = Vec::with_capacity(news.len());
        for (new, (parent, name)) in news.iter().zip(&places) {
            check_blocks(w, new).await?;
            nodes.push(NodeRow {
                namespace_id: new.ns,
                id: new_id(),
                parent_id: Some(parent.clone()),
                name: (*name).to_owned(),
                kind: "file".into(),
                rev: 1,
                size: new.size as i64,
                content_hash: Some(new.content_hash.0.to_vec()),
                modified_ms: w.now,
                pending_ms: None,
            });
        }
        insert_nodes(w, &nodes).await?;
        insert_revisions(w, news, &nodes).await?;
        insert_block_lists(w, news, &nodes).await?;
        let uses: Vec<BlockId> = news.iter().flat_map(blocks_of).collect();
        take_refs(&mut w.tx, &uses).await?;
        let total: i64 = news.iter().map(|n| n.size as i64).sum();
        quota_queries::charge(&mut w.tx, first.ns, total).await?;
        for (new, node) in news.iter().zip(&nodes) {
            w.event(ChangeKind::Commit, node, new.path.as_str(), None);
        }
        Ok(Some(nodes))
    }
}

/// Whether a live node already holds any of these (folder id, folded
/// name) places.
async fn any_taken(
    w: &mut Writer,
    places: &std::collections::HashSet<(String, String)>,
) -> Result<bool> {
    let mut by_folder: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (folder, key) in places {
        by_folder.entry(folder).or_default().push(key);
    }
    for (folder, keys) in by_folder {
        for chunk in keys.chunks(ROWS) {
            let sql = format!(
                "SELECT COUNT(*) FROM nodes WHERE namespace_id = $1 AND parent_id = $2
                 AND deleted_ms IS NULL AND name_key IN ({})",
                commit_queries::placeholders(3, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(sql))
                .bind(w.ns)
                .bind(folder);
            for key in chunk {
                q = q.bind(*key);
            }
            let (n,) = q.fetch_one(&mut *w.tx).await?;
            if n > 0 {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// `($a, $a+1, …)` rows of `cols` parameters each, numbered from 1.
fn rows(n: usize, cols: usize) -> String {
    (0..n)
        .map(|i| {
            let row = (1..=cols)
                .map(|c| format!("${}", i * cols + c))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({row})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn insert_nodes(w: &mut Writer, nodes: &[NodeRow]) -> Result<()> {
    for chunk in nodes.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO nodes (namespace_id, id, parent_id, name, name_key, kind, rev, size, content_hash, modified_ms, pending_ms)
             VALUES {}",
            rows(chunk.len(), 11)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for n in chunk {
            q = q
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
                .bind(n.pending_ms);
        }
        q.execute(&mut *w.tx)
            .await
            .map_err(|e| map_unique(e, || "a file of the batch already exists".into()))?;
    }
    Ok(())
}

/// The first revision of each new file, marked trusted by its block list's
/// key when it has several blocks (every content hash was checked before
/// the transaction).
async fn insert_revisions(w: &mut Writer, news: &[NewRevision], nodes: &[NodeRow]) -> Result<()> {
    let items: Vec<(&NewRevision, &NodeRow)> = news.iter().zip(nodes).collect();
    for chunk in items.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO revisions (namespace_id, node_id, rev, size, content_hash, chunker, device, created_ms, blocks_key)
             VALUES {}",
            rows(chunk.len(), 9)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (new, node) in chunk {
            let key = crate::meta::blocks_key(&new.chunker, &new.blocks);
            q = q
                .bind(new.ns)
                .bind(&node.id)
                .bind(node.rev)
                .bind(new.size as i64)
                .bind(new.content_hash.0.to_vec())
                .bind(crate::meta::stored_chunker(&new.chunker))
                .bind(&new.device)
                .bind(w.now)
                .bind(crate::meta::stored_blocks_key(&key, &new.blocks));
        }
        q.execute(&mut *w.tx).await?;
    }
    Ok(())
}

/// The block lists of the new files' first revisions.
async fn insert_block_lists(w: &mut Writer, news: &[NewRevision], nodes: &[NodeRow]) -> Result<()> {
    let mut listed = Vec::new();
    for (new, node) in news.iter().zip(nodes) {
        let mut offset = 0u64;
        for (idx, (id, size)) in new.blocks.iter().enumerate() {
            listed.push((
                new.ns,
                &node.id,
                node.rev,
                idx as i64,
                id,
                offset as i64,
                *size as i64,
            ));
            offset += size;
        }
    }
    for chunk in listed.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO revision_blocks (namespace_id, node_id, rev, idx, block_id, file_offset, size) VALUES {}",
            rows(chunk.len(), 7)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (ns, node, rev, idx, id, offset, size) in chunk {
            q = q
                .bind(*ns)
                .bind(*node)
                .bind(*rev)
                .bind(*idx)
                .bind(&id.0[..])
                .bind(*offset)
                .bind(*size);
        }
        q.execute(&mut *w.tx).await?;
    }
    if let Some(first) = news.first()
        && super::commit_queries::is_shared(&mut w.tx, first.ns).await?
    {
        for (new, node) in news.iter().zip(nodes) {
            super::commit_queries::grant_to_members(&mut w.tx, new.ns, &node.id, node.rev).await?;
        }
    }
    Ok(())
}
