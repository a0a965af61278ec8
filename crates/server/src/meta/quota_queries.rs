//! Quotas: a child of `queries.rs`, compiled per backend with it.
//!
//! A user's usage is the logical size of every revision their namespaces
//! keep (current files, the trash, old revisions), moved by each change in
//! its own transaction ([`charge`]). Old revisions count because they are
//! what a user can free (and what the server frees for them): before a
//! change is refused for the quota, the oldest unpinned old revisions of
//! that user go, oldest first ([`make_room`]).

use super::*;

/// Revisions looked at per round when making room.
const ROOM_BATCH: i64 = 200;

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

    /// Whether `adding` more bytes fit `user_id`'s quota; see [`room`].
    pub async fn check_room(&self, user_id: i64, adding: u64) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        room(&mut conn, user_id, adding).await
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
/// until `needed` bytes are freed or none is left; returns the bytes freed.
async fn make_room(tx: &mut Tx, user: i64, needed: i64) -> Result<i64> {
    let mut freed = 0;
    let now = now_ms();
    while freed < needed {
        let oldest: Vec<(i64, String, i64, i64)> = sqlx::query_as(
            "SELECT r.namespace_id, r.node_id, r.rev, r.size FROM revisions r
             JOIN nodes n ON n.namespace_id = r.namespace_id AND n.id = r.node_id
             JOIN namespaces s ON s.id = r.namespace_id
             WHERE s.owner_user_id = $1 AND r.rev <> n.rev AND NOT r.pinned
             ORDER BY r.created_ms, r.rev
             LIMIT $2",
        )
        .bind(user)
        .bind(ROOM_BATCH)
        .fetch_all(&mut **tx)
        .await?;
        if oldest.is_empty() {
            break;
        }
        for (ns, node, rev, size) in oldest {
            if freed >= needed {
                break;
            }
            remove_revision(tx, ns, &node, rev, now).await?;
            freed += size;
        }
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

/// Deletes one revision and its block list and releases its blocks (the
/// caller moves the usage).
pub(super) async fn remove_revision(
    tx: &mut Tx,
    ns: i64,
    node: &str,
    rev: i64,
    now: i64,
) -> Result<()> {
    let ids = revision_block_ids(tx, ns, node, Some(rev)).await?;
    for sql in [
        "DELETE FROM revision_blocks WHERE namespace_id = $1 AND node_id = $2 AND rev = $3",
        "DELETE FROM revisions WHERE namespace_id = $1 AND node_id = $2 AND rev = $3",
    ] {
        sqlx::query(sql)
            .bind(ns)
            .bind(node)
            .bind(rev)
            .execute(&mut **tx)
            .await?;
    }
    release_refs(tx, &ids, now).await
}
