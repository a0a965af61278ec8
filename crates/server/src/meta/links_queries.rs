//! Links to a node, for visitors without an account: a child of
//! `queries.rs`, compiled per backend with it. A link is found by the hash
//! of its token (the token is never stored) and names its node by id, so
//! it follows renames and moves; it leads nowhere once the node or a
//! folder above it is in the trash. A link into a shared folder leads
//! somewhere only while its maker still has the folder (and, for a file
//! request, may still write to it), and while its maker's account is
//! neither disabled nor deleted.

use super::*;

macro_rules! link_cols {
    () => {
        "id, user_id, namespace_id, node_id, password_hash, upload_only, created_ms, expires_ms"
    };
}

impl Store {
    pub async fn create_link(&self, link: &LinkRow, token_hash: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO links (id, token_hash, user_id, namespace_id, node_id, password_hash,
                                upload_only, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&link.id)
        .bind(token_hash)
        .bind(link.user_id)
        .bind(link.namespace_id)
        .bind(&link.node_id)
        .bind(&link.password_hash)
        .bind(link.upload_only)
        .bind(link.created_ms)
        .bind(link.expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn link_by_token(&self, token_hash: &[u8]) -> Result<Option<LinkRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            link_cols!(),
            " FROM links WHERE token_hash = $1
              AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = links.user_id
                              AND (u.disabled_ms IS NOT NULL OR u.deleted_ms IS NOT NULL))
              AND (namespace_id = (SELECT root_ns FROM users WHERE id = links.user_id)
                   OR EXISTS (SELECT 1 FROM mounts m
                              WHERE m.user_id = links.user_id
                                AND m.namespace_id = links.namespace_id
                                AND (NOT links.upload_only OR m.role <> 'viewer')))"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The user's links, newest first.
    pub async fn links_of(&self, user_id: i64) -> Result<Vec<LinkRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            link_cols!(),
            " FROM links WHERE user_id = $1 ORDER BY created_ms DESC, id DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes one of the user's links; false if they have none by that id.
    pub async fn delete_link(&self, user_id: i64, id: &str) -> Result<bool> {
        let gone = sqlx::query("DELETE FROM links WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(gone.rows_affected() > 0)
    }

    pub async fn live_node(&self, ns: i64, node_id: &str) -> Result<Option<(NodeRow, RemotePath)>> {
        let mut conn = self.pool.acquire().await?;
        let node: Option<NodeRow> = sqlx::query_as(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE namespace_id = $1 AND id = $2 AND deleted_ms IS NULL"
        ))
        .bind(ns)
        .bind(node_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(node) = node else {
            return Ok(None);
        };
        // Up the parents: a trashed folder above takes the node with it.
        let mut names = Vec::new();
        let mut seen = std::collections::HashSet::from([node.id.clone()]);
        let (mut parent, mut name) = (node.parent_id.clone(), node.name.clone());
        while let Some(pid) = parent {
            names.push(name);
            if !seen.insert(pid.clone()) {
                return Err(MetaError::Cycle(format!("{} is its own ancestor", node.id)));
            }
            let above: Option<(Option<String>, String, Option<i64>)> = sqlx::query_as(
                "SELECT parent_id, name, deleted_ms FROM nodes WHERE namespace_id = $1 AND id = $2",
            )
            .bind(ns)
            .bind(&pid)
            .fetch_optional(&mut *conn)
            .await?;
            match above {
                Some((next, n, None)) => (parent, name) = (next, n),
                _ => return Ok(None),
            }
        }
        names.reverse();
        let path = RemotePath::parse(&format!("/{}", names.join("/")))
            .map_err(|e| MetaError::Cycle(format!("node {} has no valid path: {e}", node.id)))?;
        Ok(Some((node, path)))
    }
}
