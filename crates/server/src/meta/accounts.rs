//! Accounts as an administrator handles them: listed, disabled, deleted
//! (kept whole for the trash period, restorable), purged after it, and a
//! password set for someone who lost theirs. A child of `queries.rs`,
//! compiled once per backend with it.
//!
//! A restore and a purge race on one row: the purge first marks the row
//! (`purge_begun_ms`, only while it is still deleted) and a restore clears
//! the deletion only while that mark is unset, so exactly one of them wins.

use super::*;

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

    /// Purges a deleted account whose deletion is older than `cutoff_ms`:
    /// its shared folders are taken from their members, it leaves those of
    /// others, and every file, revision and trash entry of its own goes,
    /// releasing their blocks to collection. One transaction a namespace;
    /// run again after a crash, it goes on where it stopped. False when
    /// the account is not (or no longer) due.
    pub async fn purge_deleted(&self, user_id: i64, cutoff_ms: i64) -> Result<bool> {
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
            return Ok(false);
        }
        let (root_ns,): (i64,) = sqlx::query_as("SELECT root_ns FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        let mut namespaces = vec![root_ns];
        for m in self.mounts_of(user_id).await? {
            if m.owned() {
                self.unshare(user_id, m.namespace_id, "").await?;
                namespaces.push(m.namespace_id);
            } else {
                match self.unmount(user_id, m.namespace_id, user_id, "").await {
                    Ok(()) | Err(MetaError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for ns in namespaces {
            self.purge_namespace(ns).await?;
        }
        let mut tx = self.begin().await?;
        for table in ["tokens", "links", "mounts", "user_blocks"] {
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
        Ok(true)
    }

    /// Every node of `ns` but its root, in the trash or not, for good.
    async fn purge_namespace(&self, ns: i64) -> Result<()> {
        let mut w = Writer::begin(self, ns, "").await?;
        let tops: Vec<(String,)> = sqlx::query_as(
            "SELECT n.id FROM nodes n JOIN namespaces s ON s.id = n.namespace_id
             WHERE n.namespace_id = $1 AND n.id <> s.root_node_id
               AND (n.parent_id = s.root_node_id OR n.deleted_ms IS NOT NULL)",
        )
        .bind(ns)
        .fetch_all(&mut *w.tx)
        .await?;
        for (top,) in &tops {
            purge_subtree(&mut w.tx, ns, top, w.now).await?;
        }
        w.commit().await?;
        Ok(())
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
    let (others,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM users
         WHERE is_admin AND id <> $1 AND disabled_ms IS NULL AND deleted_ms IS NULL",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
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
