//! Quotas: a child of `queries.rs`, compiled per backend with it.
//!
//! A user's usage is the logical size of every revision their namespaces
//! keep (current files, the trash, old revisions), moved by each change in
//! its own transaction ([`charge`]). Old revisions count because they are
//! what a user can free (and what the server frees for them): before a
//! change is refused for the quota, the oldest unpinned old revisions of
//! that user go, oldest first ([`make_room`]).

use super::*;

/// Old revisions one change may remove to make room.
const ROOM_MOST: i64 = 1000;

impl Store {
    /// A user's usage and quota (None: no limit), in bytes.
    pub async fn usage(&self, user_id: i64) -> Result<(u64, Option<u64>)> {
        let row: Option<(i64, Option<i64>)> =
            sqlx::query_as("SELECT used_bytes, quota_bytes FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        let (used, quota) =
            row.ok_or_else(|| MetaError::NotFound(format!("no user with id {user_id}")))?;
        Ok((used.max(0) as u64, quota.map(|q| q.max(0) as u64)))
    }

    /// Sets (or with `None` lifts) a user's quota.
    pub async fn set_quota(&self, username: &str, quota: Option<u64>) -> Result<()> {
        let set = sqlx::query("UPDATE users SET quota_bytes = $1 WHERE username = $2")
            .bind(quota.map(|q| i64::try_from(q).unwrap_or(i64::MAX)))
            .bind(username)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if set == 0 {
            return Err(MetaError::NotFound(format!("no user named {username}")));
        }
        Ok(())
    }

    /// Whether `adding` more bytes fit `user_id`'s quota, besides what
    /// their unfinished resumable uploads have declared (so many sessions
    /// left open cannot store more than the quota); see [`room`].
    pub async fn check_room(&self, user_id: i64, adding: u64) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let (open,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT) FROM upload_sessions
             WHERE user_id = $1 AND done_path IS NULL",
        )
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
        room(
            &mut conn,
            user_id,
            adding.saturating_add(open.max(0) as u64),
        )
        .await
    }
}

/// Whether `adding` more bytes fit `user_id`'s quota, counting the old
/// revisions that would make room. Checked before anything is stored; the
/// change itself is charged in its transaction ([`charge`]).
pub(super) async fn room(conn: &mut Conn, user_id: i64, adding: u64) -> Result<()> {
    let row: Option<(i64, Option<i64>)> =
        sqlx::query_as("SELECT used_bytes, quota_bytes FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((used, Some(quota))) = row else {
        return Ok(());
    };
    let adding = i64::try_from(adding).unwrap_or(i64::MAX);
    if used.saturating_add(adding) <= quota {
        return Ok(());
    }
    let (freeable,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(r.size), 0) AS BIGINT) FROM revisions r
         JOIN nodes n ON n.namespace_id = r.namespace_id AND n.id = r.node_id
         JOIN namespaces s ON s.id = r.namespace_id
         WHERE s.owner_user_id = $1 AND r.rev <> n.rev AND NOT r.pinned",
    )
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    if used.saturating_sub(freeable).saturating_add(adding) <= quota {
        return Ok(());
    }
    Err(over(used, quota, adding))
}

fn over(used: i64, quota: i64, adding: i64) -> MetaError {
    MetaError::QuotaExceeded {
        used: used.max(0) as u64,
        quota: quota.max(0) as u64,
        adding: adding.max(0) as u64,
    }
}

/// Moves the usage of `ns`'s owner by `delta` bytes. Growth past the
/// owner's quota first removes their oldest unpinned old revisions, and
/// fails with [`MetaError::QuotaExceeded`] (the caller's transaction rolls
/// back) if that is not enough.
pub(super) async fn charge(tx: &mut Tx, ns: i64, delta: i64) -> Result<()> {
    if delta == 0 {
        return Ok(());
    }
    let row: Option<(i64, i64, Option<i64>)> = sqlx::query_as(
        "UPDATE users SET used_bytes = used_bytes + $1
         WHERE id = (SELECT owner_user_id FROM namespaces WHERE id = $2)
         RETURNING id, used_bytes, quota_bytes",
    )
    .bind(delta)
    .bind(ns)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((user, used, Some(quota))) = row else {
        return Ok(());
    };
    if delta < 0 || used <= quota {
        return Ok(());
    }
    let freed = make_room(tx, user, used - quota).await?;
    if used - freed > quota {
        return Err(over(used - delta - freed, quota, delta));
    }
    Ok(())
}

/// Removes `user`'s oldest unpinned old revisions (never a current one)
/// until `needed` bytes are freed, none is left, or [`ROOM_MOST`] went (a
/// change may not hold the write lock for an unbounded clean-up: beyond
/// that the change is refused, and the retention schedule thins the rest);
/// returns the bytes freed.
async fn make_room(tx: &mut Tx, user: i64, needed: i64) -> Result<i64> {
    let oldest: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT r.namespace_id, r.node_id, r.rev FROM revisions r
         JOIN nodes n ON n.namespace_id = r.namespace_id AND n.id = r.node_id
         JOIN namespaces s ON s.id = r.namespace_id
         WHERE s.owner_user_id = $1 AND r.rev <> n.rev AND NOT r.pinned
         ORDER BY r.created_ms, r.rev
         LIMIT $2",
    )
    .bind(user)
    .bind(ROOM_MOST)
    .fetch_all(&mut **tx)
    .await?;
    let now = now_ms();
    let mut freed = 0;
    for (ns, node, rev) in oldest {
        if freed >= needed {
            break;
        }
        freed += remove_revision(tx, ns, &node, rev, now).await?.unwrap_or(0);
    }
    if freed > 0 {
        sqlx::query("UPDATE users SET used_bytes = used_bytes - $1 WHERE id = $2")
            .bind(freed)
            .bind(user)
            .execute(&mut **tx)
            .await?;
        tracing::info!(
            user,
            freed,
            "removed old revisions to stay within the quota"
        );
    }
    Ok(freed)
}

/// Deletes one unpinned revision and its block list and releases the
/// blocks it deleted; returns the revision's size, or `None` if it was
/// pinned or already gone (another transaction removed it: its blocks are
/// that one's to release). The caller moves the usage.
pub(super) async fn remove_revision(
    tx: &mut Tx,
    ns: i64,
    node: &str,
    rev: i64,
    now: i64,
) -> Result<Option<i64>> {
    let size: Option<(i64,)> = sqlx::query_as(
        "DELETE FROM revisions
         WHERE namespace_id = $1 AND node_id = $2 AND rev = $3 AND NOT pinned
         RETURNING size",
    )
    .bind(ns)
    .bind(node)
    .bind(rev)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((size,)) = size else {
        return Ok(None);
    };
    let ids = delete_block_lists(tx, ns, node, Some(rev)).await?;
    release_refs(tx, &ids, now).await?;
    Ok(Some(size))
}

/// Deletes the block lists of a node's revisions (of `rev` alone, or of
/// all) and answers the ids it deleted, one per use.
pub(super) async fn delete_block_lists(
    tx: &mut Tx,
    ns: i64,
    node: &str,
    rev: Option<i64>,
) -> Result<Vec<BlockId>> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "DELETE FROM revision_blocks
         WHERE namespace_id = $1 AND node_id = $2 AND ($3 IS NULL OR rev = $3)
         RETURNING block_id",
    )
    .bind(ns)
    .bind(node)
    .bind(rev)
    .fetch_all(&mut **tx)
    .await?;
    block_ids(rows)
}
