//! The tree of nodes: listing, folders, commits of new revisions, moves,
//! deletes and the trash. A child of `queries.rs`, compiled once per
//! backend with it.

use super::*;

impl Store {
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
        w.commit().await?;
        Ok(node)
    }

    /// Makes each folder of `paths` (and its parents) in one transaction;
    /// each path succeeds or fails on its own, as [`Store::mkdir`] would.
    /// A failure never leaves a write behind: a folder on the way that is
    /// a file is found before anything below it is made.
    pub async fn mkdir_many(
        &self,
        ns: i64,
        paths: &[RemotePath],
        device: &str,
    ) -> Result<Vec<Result<NodeRow>>> {
        let mut w = Writer::begin(self, ns, device).await?;
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            if path.is_root() {
                out.push(Err(MetaError::AlreadyExists("/ exists".into())));
                continue;
            }
            if resolve(&mut w.tx, ns, path).await?.is_some() {
                out.push(Err(MetaError::AlreadyExists(format!(
                    "{path} already exists"
                ))));
                continue;
            }
            match w.ensure_folder(path).await {
                Ok(node) => out.push(Ok(node)),
                Err(MetaError::Db(e)) => return Err(MetaError::Db(e)),
                Err(e) => out.push(Err(e)),
            }
        }
        w.commit().await?;
        Ok(out)
    }

    pub async fn commit(&self, new: &NewRevision) -> Result<NodeRow> {
        let mut w = Writer::begin(self, new.ns, &new.device).await?;
        share_queries::may_write(&mut w.tx, new.user_id, new.ns).await?;
        match Self::commit_in(&mut w, new).await {
            Ok(node) => {
                w.commit().await?;
                Ok(node)
            }
            Err(MetaError::MissingBlocks(missing)) => {
                // Not all blocks are here yet: the upload is under way. Show
                // the file as pending, so other devices see it syncing.
                w.tx.rollback().await?;
                self.mark_upload_pending(new).await?;
                Err(MetaError::MissingBlocks(missing))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn mark_upload_pending(&self, new: &NewRevision) -> Result<()> {
        let (Some(parent), Some(name)) = (new.path.parent(), new.path.name()) else {
            return Ok(());
        };
        let mut w = Writer::begin(self, new.ns, &new.device).await?;
        share_queries::may_write(&mut w.tx, new.user_id, new.ns).await?;
        let parent = w.ensure_folder(&parent).await?;
        let node = match child(&mut w.tx, new.ns, &parent.id, name).await? {
            Some(n) if n.is_folder() => return Ok(()),
            Some(n) if n.pending_ms.is_some() => {
                // Another upload of the same path: the newest list is the
                // one to stream; the mark itself stays as it was.
                save_pending_list(&mut w.tx, &n, new, w.now).await?;
                w.commit().await?;
                return Ok(());
            }
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
                w.not_a_mount_point(&new.path).await?;
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
        save_pending_list(&mut w.tx, &node, new, w.now).await?;
        w.event(ChangeKind::Pending, &node, new.path.as_str(), None);
        w.commit().await?;
        Ok(())
    }

    /// The block list announced by the upload under way at `path`, if the
    /// file there is still pending.
    pub async fn pending_list(&self, ns: i64, path: &RemotePath) -> Result<PendingList> {
        let mut conn = self.pool.acquire().await?;
        let none = || MetaError::NotFound(format!("no upload is under way at {path}"));
        let node = existing_file(&mut conn, ns, path).await?;
        if node.pending_ms.is_none() {
            return Err(none());
        }
        let row: Option<(i64, Vec<u8>, String, Vec<u8>)> = sqlx::query_as(
            "SELECT size, content_hash, chunker, blocks FROM pending_lists WHERE namespace_id = $1 AND node_id = $2",
        )
        .bind(ns)
        .bind(&node.id)
        .fetch_optional(&mut *conn)
        .await?;
        let (size, hash, chunker, blocks) = row.ok_or_else(none)?;
        let (Ok(hash), Some(blocks)) = (
            <[u8; 32]>::try_from(hash.as_slice()),
            decode_block_list(&blocks),
        ) else {
            // Only ever a hint: a damaged row means nothing to stream.
            tracing::warn!(ns, node = %node.id, "a pending block list is damaged: ignored");
            return Err(none());
        };
        Ok(PendingList {
            size: size as u64,
            content_hash: ContentHash(hash),
            chunker,
            blocks,
        })
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
            w.commit().await?;
            changed.push(ns);
        }
        // Lists whose upload committed or was given up on.
        sqlx::query(
            "DELETE FROM pending_lists WHERE NOT EXISTS (SELECT 1 FROM nodes n
               WHERE n.namespace_id = pending_lists.namespace_id AND n.id = pending_lists.node_id
                 AND n.pending_ms IS NOT NULL AND n.deleted_ms IS NULL)",
        )
        .execute(&self.pool)
        .await?;
        changed.sort();
        changed.dedup();
        Ok(changed)
    }

    pub(super) async fn commit_in(w: &mut Writer, new: &NewRevision) -> Result<NodeRow> {
        let ns = new.ns;
        let path = &new.path;
        let name = path
            .name()
            .ok_or_else(|| MetaError::Invalid("a file cannot be stored at /".into()))?;

        let parent_path = path
            .parent()
            .ok_or_else(|| MetaError::Invalid("a file cannot be stored at /".into()))?;
        let current = match w.find_folder(&parent_path).await? {
            Some(parent) => child(&mut w.tx, ns, &parent.id, name).await?,
            None => None,
        };
        // Refused for the quota before the client sends any block; the
        // same content again adds nothing.
        let same = current.as_ref().is_some_and(|n| {
            !n.is_folder()
                && n.size == new.size as i64
                && n.content_hash.as_deref() == Some(&new.content_hash.0[..])
        });
        // Without a quota there is nothing to check (and the charge at the
        // end enforces one set meanwhile).
        if !same && w.has_quota(new.user_id).await? {
            quota_queries::room(&mut w.tx, new.user_id, new.size).await?;
        }
        check_blocks(w, new).await?;
        let key = crate::meta::blocks_key(&new.chunker, &new.blocks);

        // A folder made here is new and empty: `current` stays right.
        let parent = w.ensure_folder(&parent_path).await?;
        let now = w.now;
        let node = match current {
            Some(node) if node.is_folder() => {
                return Err(MetaError::NotAFile(path.to_string()));
            }
            Some(node) => {
                let (node, changed) = next_revision(w, new, node, &key).await?;
                if !changed {
                    return Ok(node);
                }
                node
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
                w.not_a_mount_point(path).await?;
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
        insert_revision(w, new, &node, &key).await?;
        insert_revision_blocks(&mut w.tx, ns, &node.id, node.rev, &new.blocks).await?;
        w.event(ChangeKind::Commit, &node, path.as_str(), None);
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
        w.not_a_mount_point(to).await?;
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
        if node.is_folder() {
            share_queries::carry_mounts(&mut w.tx, ns, from, to).await?;
        }
        w.event(ChangeKind::Move, &node, to.as_str(), Some(from.as_str()));
        let now = w.now;
        w.commit().await?;
        Ok(NodeRow {
            parent_id: Some(parent.id),
            name: to_name.to_owned(),
            modified_ms: now,
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
        if node.is_folder() {
            share_queries::lift_mounts(&mut w, path).await?;
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
        w.event(ChangeKind::Delete, &node, path.as_str(), None);
        w.commit().await?;
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
    /// when `id` is `None`; of those, only what was deleted at or before
    /// `deleted_upto_ms` if given (what the user was shown, or what has
    /// expired: something deleted meanwhile, or restored and deleted again,
    /// stays). A folder goes with everything that was inside it when it
    /// was deleted. Their revisions go too, and the blocks they held lose
    /// those references (a block left with none becomes collectable).
    /// Returns how many trash entries were removed.
    pub async fn purge_trash(
        &self,
        ns: i64,
        id: Option<&str>,
        deleted_upto_ms: Option<i64>,
    ) -> Result<u64> {
        let mut w = Writer::begin(self, ns, "").await?;
        let roots: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM nodes WHERE namespace_id = $1 AND deleted_ms IS NOT NULL
             AND ($2 IS NULL OR id = $2) AND ($3 IS NULL OR deleted_ms <= $3)",
        )
        .bind(ns)
        .bind(id)
        .bind(deleted_upto_ms)
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
        w.commit().await?;
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
            match self.purge_trash(ns, Some(&id), Some(cutoff_ms - 1)).await {
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
        w.not_a_mount_point(&target).await?;
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
        let node: NodeRow = sqlx::query_as(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE namespace_id = $1 AND id = $2"
        ))
        .bind(ns)
        .bind(id)
        .fetch_one(&mut *w.tx)
        .await?;
        journal_subtree(&mut w, ns, &node, &target).await?;
        w.commit().await?;
        Ok((node, target))
    }
}

/// Journals a restored node and its live contents, parents before
/// children, so every device learns the whole subtree came back.
async fn journal_subtree(
    w: &mut Writer,
    ns: i64,
    node: &NodeRow,
    target: &RemotePath,
) -> Result<()> {
    let mut queue = std::collections::VecDeque::from([(node.clone(), target.clone())]);
    let mut seen = std::collections::HashSet::new();
    while let Some((n, path)) = queue.pop_front() {
        if !seen.insert(n.id.clone()) {
            return Err(MetaError::Cycle(format!("{} is below itself", n.id)));
        }
        let kind = if n.is_folder() {
            ChangeKind::Mkdir
        } else {
            ChangeKind::Restore
        };
        w.event(kind, &n, path.as_str(), None);
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
    Ok(())
}

/// The blocks of `new`, checked again under the lock (callers outside
/// checked them already, in batches, but blocks are only known for sure
/// here): all held by the user, each of the size the commit says, adding
/// up to the file's size.
pub(super) async fn check_blocks(w: &mut Writer, new: &NewRevision) -> Result<()> {
    let looked_up;
    let known = match &w.blocks {
        Some((user, known)) if *user == new.user_id => known,
        _ => {
            looked_up = user_block_rows(&mut w.tx, new.user_id, &blocks_of(new)).await?;
            &looked_up
        }
    };
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
    Ok(())
}

/// Moves the existing file `node` to its next revision, unless its base is
/// stale (a conflict) or `new` holds the very same block list as now (no
/// new revision, no event: a matching hash claim is not enough); says
/// whether it moved.
async fn next_revision(
    w: &mut Writer,
    new: &NewRevision,
    node: NodeRow,
    key: &[u8; 32],
) -> Result<(NodeRow, bool)> {
    let (ns, path, now) = (new.ns, &new.path, w.now);
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
    if node.rev > 0 && revision_blocks_key(&mut w.tx, ns, &node.id, node.rev).await? == Some(*key) {
        return Ok((node, false));
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
    Ok((
        NodeRow {
            rev: node.rev + 1,
            size: new.size as i64,
            content_hash: Some(new.content_hash.0.to_vec()),
            modified_ms: now,
            pending_ms: None,
            ..node
        },
        true,
    ))
}

/// The revision row of `node`'s new revision. Every caller computed or
/// verified the content hash, so a revision of several blocks carries the
/// key that marks it trusted (one of a single block needs none).
async fn insert_revision(
    w: &mut Writer,
    new: &NewRevision,
    node: &NodeRow,
    key: &[u8; 32],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO revisions (namespace_id, node_id, rev, size, content_hash, chunker, device, created_ms, blocks_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new.ns)
    .bind(&node.id)
    .bind(node.rev)
    .bind(new.size as i64)
    .bind(&new.content_hash.0[..])
    .bind(crate::meta::stored_chunker(&new.chunker))
    .bind(&new.device)
    .bind(w.now)
    .bind(crate::meta::stored_blocks_key(key, &new.blocks))
    .execute(&mut *w.tx)
    .await?;
    quota_queries::charge(&mut w.tx, new.ns, new.size as i64).await
}

/// Stores (or replaces) the block list an upload announced for `node`.
async fn save_pending_list(
    conn: &mut Conn,
    node: &NodeRow,
    new: &NewRevision,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO pending_lists (namespace_id, node_id, size, content_hash, chunker, blocks, since_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (namespace_id, node_id) DO UPDATE SET size = excluded.size,
           content_hash = excluded.content_hash, chunker = excluded.chunker,
           blocks = excluded.blocks, since_ms = excluded.since_ms",
    )
    .bind(node.namespace_id)
    .bind(&node.id)
    .bind(new.size as i64)
    .bind(&new.content_hash.0[..])
    .bind(&new.chunker)
    .bind(encode_block_list(&new.blocks))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const LISTED_BLOCK: usize = 32 + 8;

fn encode_block_list(blocks: &[(BlockId, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * LISTED_BLOCK);
    for (id, size) in blocks {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&size.to_le_bytes());
    }
    out
}

fn decode_block_list(raw: &[u8]) -> Option<Vec<(BlockId, u64)>> {
    if !raw.len().is_multiple_of(LISTED_BLOCK) {
        return None;
    }
    raw.chunks_exact(LISTED_BLOCK)
        .map(|c| {
            let id = <[u8; 32]>::try_from(&c[..32]).ok()?;
            let size = u64::from_le_bytes(<[u8; 8]>::try_from(&c[32..]).ok()?);
            Some((BlockId(id), size))
        })
        .collect()
}
