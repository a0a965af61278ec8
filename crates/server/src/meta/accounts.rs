//! Accounts as an administrator handles them: listed, disabled, deleted
//! (kept whole for the trash period, restorable), purged after it, and a
//! password set for someone who lost theirs. A child of `queries.rs`,
//! compiled once per backend with it.
//!
//! A restore and a purge race on one row: the purge first marks the row
//! (`purge_begun_ms`, only while it is still deleted) and a restore clears
//! the deletion only while that mark is unset, so exactly one of them wins.

use super::*;
use crate::meta::PurgeStep;

/// Nodes purged in one transaction.
const PURGE_BATCH: i64 = 1000;

/// The name a purged account's row keeps: control characters, which no
/// account name may hold, so the name it had is free again.
fn tombstone(id: i64) -> String {
    format!("\u{1}purged-{id}")
}

impl Store {
    /// Every account not purged, by name.
    pub async fn accounts(&self) -> Result<Vec<AccountRow>> {
        Ok(sqlx::query_as(
            "SELECT u.id, u.username, u.is_admin, u.created_ms, u.disabled_ms, u.deleted_ms,
                    u.purge_begun_ms, u.used_bytes, u.quota_bytes,
                    (SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id AND t.expires_ms > $1)
                        AS devices,
                    (SELECT MAX(t.last_seen_ms) FROM tokens t WHERE t.user_id = u.id)
                        AS last_seen_ms
             FROM users u WHERE u.purged_ms IS NULL ORDER BY u.username",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether the account was deleted (and not restored).
    pub async fn is_deleted(&self, user_id: i64) -> Result<bool> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM users WHERE id = $1 AND deleted_ms IS NOT NULL")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// Whether the user may sign in: false for a disabled or deleted one,
    /// or one who is not there.
    pub async fn may_sign_in(&self, user_id: i64) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM users WHERE id = $1 AND disabled_ms IS NULL AND deleted_ms IS NULL",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Disables or enables the account named `username`. Disabling signs
    /// out every device of it; returns how many.
    pub async fn set_disabled(&self, username: &str, disabled: bool) -> Result<u64> {
        let mut tx = self.begin().await?;
        let (id, _, deleted) = account(&mut tx, username).await?;
        if deleted {
            return Err(MetaError::Invalid(format!(
                "{username} is deleted: restore the account first"
            )));
        }
        if disabled {
            keep_an_admin(&mut tx, id).await?;
        }
        sqlx::query(
            "UPDATE users SET disabled_ms = CASE WHEN $1 THEN COALESCE(disabled_ms, $2) END
             WHERE id = $3",
        )
        .bind(disabled)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let out = if disabled {
            sign_out_all(&mut tx, id).await?
        } else {
            0
        };
        tx.commit().await?;
        Ok(out)
    }

    /// Deletes the account named `username`: it can no longer sign in,
    /// its devices are signed out, and its files stay as they are until a
    /// purge ([`Store::purge_deleted`]). Returns when it was deleted (the
    /// first time, if it already was).
    pub async fn delete_account(&self, username: &str) -> Result<i64> {
        let mut tx = self.begin().await?;
        let (id, _, _) = account(&mut tx, username).await?;
        keep_an_admin(&mut tx, id).await?;
        let now = now_ms();
        sqlx::query(
            "UPDATE users SET deleted_ms = COALESCE(deleted_ms, $1),
                              disabled_ms = COALESCE(disabled_ms, $1)
             WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sign_out_all(&mut tx, id).await?;
        let (when,): (i64,) = sqlx::query_as("SELECT deleted_ms FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(when)
    }

    /// Undoes a deletion not yet being purged: the account signs in again
    /// with its files as they were.
    pub async fn restore_account(&self, username: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let (id, _, deleted) = account(&mut tx, username).await?;
        if !deleted {
            return Err(MetaError::Invalid(format!("{username} is not deleted")));
        }
        let done = sqlx::query(
            "UPDATE users SET deleted_ms = NULL, disabled_ms = NULL
             WHERE id = $1 AND purge_begun_ms IS NULL",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(MetaError::Invalid(format!(
                "{username}'s files are being purged: the account can no longer be restored"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets the account's password (an administrator's reset) and signs
    /// out every device of it; returns how many.
    pub async fn reset_password(&self, username: &str, password_hash: &str) -> Result<u64> {
        let mut tx = self.begin().await?;
        let (id, _, _) = account(&mut tx, username).await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let out = sign_out_all(&mut tx, id).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Accounts deleted before `cutoff_ms` whose purge has not finished.
    pub async fn deleted_before(&self, cutoff_ms: i64) -> Result<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM users
             WHERE deleted_ms IS NOT NULL AND deleted_ms < $1 AND purged_ms IS NULL ORDER BY id",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// One bounded step of purging a deleted account whose deletion is
    /// older than `cutoff_ms`; call again while it answers
    /// [`PurgeStep::More`]. Its shared folders that others still use pass
    /// to one of them (an editor first, the longest-standing), with what
    /// they hold; it leaves the folders others shared with it; then its
    /// files, revisions and trash go, up to [`PURGE_BATCH`] nodes a step
    /// (one transaction each, so a large account neither holds the
    /// database nor outlasts a call's timeout), releasing their blocks to
    /// collection; last, its sessions, links, uploads and journals, and
    /// its name. A crash between steps is picked up where it stopped.
    pub async fn purge_deleted(&self, user_id: i64, cutoff_ms: i64) -> Result<PurgeStep> {
        let begun = sqlx::query(
            "UPDATE users SET purge_begun_ms = COALESCE(purge_begun_ms, $1)
             WHERE id = $2 AND deleted_ms IS NOT NULL AND deleted_ms < $3 AND purged_ms IS NULL",
        )
        .bind(now_ms())
        .bind(user_id)
        .bind(cutoff_ms)
        .execute(&self.pool)
        .await?;
        if begun.rows_affected() != 1 {
            return Ok(PurgeStep::NotDue);
        }
        for m in self.mounts_of(user_id).await? {
            if m.owned() {
                self.hand_on(user_id, m.namespace_id).await?;
            } else {
                match self.unmount(user_id, m.namespace_id, user_id, "").await {
                    Ok(()) | Err(MetaError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let owned: Vec<(i64,)> =
            sqlx::query_as("SELECT id FROM namespaces WHERE owner_user_id = $1 ORDER BY id")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        for (ns,) in &owned {
            if self.purge_some(*ns).await? > 0 {
                return Ok(PurgeStep::More);
            }
        }
        let mut tx = self.begin().await?;
        for (ns,) in &owned {
            for table in [
                "journal",
                "pending_lists",
                "upload_blocks",
                "upload_sessions",
                "links",
            ] {
                let sql = format!("DELETE FROM {table} WHERE namespace_id = $1");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(ns)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for table in [
            "tokens",
            "links",
            "mounts",
            "user_blocks",
            "upload_sessions",
        ] {
            let sql = format!("DELETE FROM {table} WHERE user_id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE users SET username = $1, password_hash = '', purged_ms = $2, used_bytes = 0
             WHERE id = $3",
        )
        .bind(tombstone(user_id))
        .bind(now_ms())
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PurgeStep::Done)
    }

    /// Passes the shared folder `ns` of the departing `owner` to the member
    /// who has had it longest, an editor before a viewer, with the bytes it
    /// holds counted to them; a folder no one else has stays to be purged.
    async fn hand_on(&self, owner: i64, ns: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        let heir: Option<(i64,)> = sqlx::query_as(
            "SELECT user_id FROM mounts WHERE namespace_id = $1 AND user_id <> $2
             ORDER BY CASE role WHEN 'editor' THEN 0 ELSE 1 END, created_ms, user_id LIMIT 1",
        )
        .bind(ns)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((heir,)) = heir else {
            return Ok(());
        };
        let (bytes,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM revisions WHERE namespace_id = $1",
        )
        .bind(ns)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET used_bytes = used_bytes - $1 WHERE id = $2")
            .bind(bytes)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE users SET used_bytes = used_bytes + $1 WHERE id = $2")
            .bind(bytes)
            .bind(heir)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE namespaces SET owner_user_id = $1 WHERE id = $2")
            .bind(heir)
            .bind(ns)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE mounts SET role = 'owner' WHERE namespace_id = $1 AND user_id = $2")
            .bind(ns)
            .bind(heir)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM mounts WHERE namespace_id = $1 AND user_id = $2")
            .bind(ns)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(
            ns,
            from = owner,
            to = heir,
            "a deleted account's shared folder passed to a member"
        );
        Ok(())
    }

    /// Purges up to [`PURGE_BATCH`] nodes of `ns` that hold nothing (in
    /// the trash or not; never the root), in one transaction; how many.
    async fn purge_some(&self, ns: i64) -> Result<usize> {
        let mut w = Writer::begin(self, ns, "").await?;
        let leaves: Vec<(String,)> = sqlx::query_as(
            "SELECT n.id FROM nodes n JOIN namespaces s ON s.id = n.namespace_id
             WHERE n.namespace_id = $1 AND n.id <> s.root_node_id
               AND NOT EXISTS (SELECT 1 FROM nodes c
                               WHERE c.namespace_id = n.namespace_id AND c.parent_id = n.id)
             LIMIT $2",
        )
        .bind(ns)
        .bind(PURGE_BATCH)
        .fetch_all(&mut *w.tx)
        .await?;
        for (leaf,) in &leaves {
            purge_subtree(&mut w.tx, ns, leaf, w.now).await?;
        }
        w.commit().await?;
        Ok(leaves.len())
    }
}

/// The account named `username` that is not purged: id, admin, deleted.
async fn account(tx: &mut Tx, username: &str) -> Result<(i64, bool, bool)> {
    let row: Option<(i64, bool, Option<i64>)> = sqlx::query_as(
        "SELECT id, is_admin, deleted_ms FROM users WHERE username = $1 AND purged_ms IS NULL",
    )
    .bind(username)
    .fetch_optional(&mut **tx)
    .await?;
    let (id, admin, deleted) =
        row.ok_or_else(|| MetaError::NotFound(format!("there is no user named {username}")))?;
    Ok((id, admin, deleted.is_some()))
}

/// Refuses to take the last administrator who can sign in out of service.
async fn keep_an_admin(tx: &mut Tx, id: i64) -> Result<()> {
    // The administrators who can sign in, locked: two administrators
    // disabling each other at once must not both go ahead on PostgreSQL,
    // where each would otherwise count the other as still there.
    // Only constants go into the text.
    let active: Vec<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM users
         WHERE is_admin AND disabled_ms IS NULL AND deleted_ms IS NULL
         ORDER BY id{FOR_UPDATE}"
    )))
    .fetch_all(&mut **tx)
    .await?;
    let others = active.iter().filter(|(a,)| *a != id).count();
    let (admin,): (bool,) = sqlx::query_as("SELECT is_admin FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    if admin && others == 0 {
        return Err(MetaError::Invalid(
            "this is the last administrator who can sign in: add another first \
             (`tessera admin user add NAME --admin`)"
                .into(),
        ));
    }
    Ok(())
}

async fn sign_out_all(tx: &mut Tx, id: i64) -> Result<u64> {
    Ok(sqlx::query("DELETE FROM tokens WHERE user_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}
