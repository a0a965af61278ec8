//! Users, their bearer tokens, and the wrapped data keys. A child of
//! `queries.rs`, compiled once per backend with it.

use super::*;

impl Store {
    pub async fn user_count(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    pub async fn create_user(&self, username: &str, password_hash: &str) -> Result<UserRow> {
        self.create_user_as(username, password_hash, false).await
    }

    /// Creates a user, an administrator if `admin` or if it is the first.
    pub async fn create_user_as(
        &self,
        username: &str,
        password_hash: &str,
        admin: bool,
    ) -> Result<UserRow> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let root = new_id();
        let (ns,): (i64,) =
            sqlx::query_as("INSERT INTO namespaces (root_node_id) VALUES ($1) RETURNING id")
                .bind(&root)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO nodes (namespace_id, id, parent_id, name, name_key, kind, modified_ms)
             VALUES ($1, $2, NULL, '', '', 'folder', $3)",
        )
        .bind(ns)
        .bind(&root)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO users (username, password_hash, root_ns, created_ms, is_admin)
             VALUES ($1, $2, $3, $4, $5 OR NOT EXISTS (SELECT 1 FROM users)) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(ns)
        .bind(now)
        .bind(admin)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_unique(e, || format!("user {username} already exists")))?;
        sqlx::query("UPDATE namespaces SET owner_user_id = $1 WHERE id = $2")
            .bind(id)
            .bind(ns)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(UserRow {
            id,
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            root_ns: ns,
        })
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(
            "SELECT id, username, password_hash, root_ns FROM users
             WHERE username = $1 AND purged_ms IS NULL",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// False for a user who is not there.
    pub async fn is_admin(&self, user_id: i64) -> Result<bool> {
        let row: Option<(bool,)> = sqlx::query_as("SELECT is_admin FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some_and(|(admin,)| admin))
    }

    pub async fn insert_token(
        &self,
        hash: &[u8],
        user_id: i64,
        device: &str,
        client: Option<&str>,
        expires_ms: i64,
        checked: &str,
    ) -> Result<bool> {
        let now = now_ms();
        // Made only while the password is still the one checked: a change
        // committed meanwhile signed out every device, this one included.
        let made = sqlx::query(
            "INSERT INTO tokens (token_hash, user_id, device, created_ms, expires_ms, last_seen_ms, client)
             SELECT $1, id, $2, $3, $4, $3, $5 FROM users
             WHERE id = $6 AND password_hash = $7 AND disabled_ms IS NULL AND deleted_ms IS NULL",
        )
        .bind(hash)
        .bind(device)
        .bind(now)
        .bind(expires_ms)
        .bind(client)
        .bind(user_id)
        .bind(checked)
        .execute(&self.pool)
        .await?;
        Ok(made.rows_affected() == 1)
    }

    pub async fn token(&self, hash: &[u8]) -> Result<Option<TokenRow>> {
        Ok(sqlx::query_as(
            "SELECT t.user_id, u.username, u.root_ns, t.device, t.expires_ms, t.last_seen_ms
             FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND u.disabled_ms IS NULL AND u.deleted_ms IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn delete_token(&self, hash: &[u8]) -> Result<()> {
        sqlx::query("DELETE FROM tokens WHERE token_hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn touch_token(&self, hash: &[u8], now_ms: i64, before: i64) -> Result<()> {
        sqlx::query(
            "UPDATE tokens SET last_seen_ms = $1
             WHERE token_hash = $2 AND (last_seen_ms IS NULL OR last_seen_ms < $3)",
        )
        .bind(now_ms)
        .bind(hash)
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn devices_of(&self, user_id: i64) -> Result<Vec<DeviceRow>> {
        Ok(sqlx::query_as(
            "SELECT token_hash, device, client, created_ms, last_seen_ms, expires_ms FROM tokens
             WHERE user_id = $1 AND expires_ms > $2 ORDER BY created_ms DESC, device",
        )
        .bind(user_id)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn revoke_token(&self, user_id: i64, hash: &[u8]) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND token_hash = $2")
            .bind(user_id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        checked: &str,
        keep: Option<&[u8]>,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        // Only over the password the caller proved: of two changes at
        // once, the second finds it changed and changes nothing.
        let changed =
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
                .bind(password_hash)
                .bind(user_id)
                .bind(checked)
                .execute(&mut *tx)
                .await?;
        if changed.rows_affected() != 1 {
            return Err(MetaError::Forbidden(
                "the password was changed meanwhile: nothing was changed".into(),
            ));
        }
        if let Some(keep) = keep {
            let here: Option<(i64,)> =
                sqlx::query_as("SELECT user_id FROM tokens WHERE token_hash = $1")
                    .bind(keep)
                    .fetch_optional(&mut *tx)
                    .await?;
            if here.is_none() {
                return Err(MetaError::Forbidden(
                    "this device was signed out meanwhile: nothing was changed".into(),
                ));
            }
        }
        let keep = keep.map(<[u8]>::to_vec).unwrap_or_default();
        let gone = sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND token_hash <> $2")
            .bind(user_id)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone.rows_affected())
    }

    // ---- data keys ----

    pub async fn data_keys(&self) -> Result<Vec<(i64, Vec<u8>)>> {
        Ok(
            sqlx::query_as("SELECT id, wrapped FROM data_keys ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn insert_data_key(&self, wrapped: &[u8]) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO data_keys (wrapped, created_ms) VALUES ($1, $2) RETURNING id",
        )
        .bind(wrapped)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// Replaces every data key's wrapping at once (a master-key rotation):
    /// one transaction, each row compared with the wrapping it had, so the
    /// keys are all under the old master key or all under the new one.
    pub async fn rewrap_data_keys(&self, rows: &[(i64, Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, old, new) in rows {
            let changed =
                sqlx::query("UPDATE data_keys SET wrapped = $1 WHERE id = $2 AND wrapped = $3")
                    .bind(new)
                    .bind(id)
                    .bind(old)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if changed != 1 {
                return Err(MetaError::Invalid(format!(
                    "data key {id} changed while it was being re-wrapped: run the rotation again"
                )));
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
