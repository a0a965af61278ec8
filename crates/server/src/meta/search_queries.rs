//! Search by name across the namespaces a user reaches: a child of
//! `queries.rs`, compiled per backend with it. Each backend finds
//! candidates through its own trigram index (`NAME_SEARCH` in `sqlite.rs`
//! and `postgres.rs`); here they get their paths, lose those inside a
//! trashed folder, and are checked against the text itself.

use std::collections::HashMap;

use super::*;
use commit_queries::{BATCH, placeholders};

/// More levels than a valid path has (two bytes a level at least).
const MAX_DEPTH: usize = tessera_proto::path::MAX_PATH_BYTES / 2;

/// A node's place in its tree: parent, name, whether it is in the trash.
type Link = (Option<String>, String, bool);

impl Store {
    /// Up to `limit` live nodes of `namespaces` whose name holds `text`
    /// (ignoring case), shortest names first, each with its path in its
    /// namespace; and whether there were more.
    pub async fn search_names(
        &self,
        namespaces: &[i64],
        text: &str,
        limit: usize,
    ) -> Result<(Vec<SearchHit>, bool)> {
        let needle = text.to_lowercase();
        if needle.is_empty() || namespaces.is_empty() {
            return Ok((Vec::new(), false));
        }
        let (sql, pattern) = super::super::name_search(text);
        let list = namespaces
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // More than asked for: some lie in trashed folders, and a short
        // text's scan matches a little more than it should.
        let want = i64::try_from(limit.saturating_mul(4).saturating_add(20)).unwrap_or(i64::MAX);
        let found: Vec<(i64, String)> = sqlx::query_as(sql)
            .bind(pattern)
            .bind(list)
            .bind(want)
            .fetch_all(&self.pool)
            .await?;
        let mut conn = self.pool.acquire().await?;
        let mut by_ns: HashMap<i64, Vec<String>> = HashMap::new();
        for (ns, id) in &found {
            by_ns.entry(*ns).or_default().push(id.clone());
        }
        let mut nodes: HashMap<(i64, String), NodeRow> = HashMap::new();
        let mut links: HashMap<(i64, String), Link> = HashMap::new();
        for (ns, ids) in &by_ns {
            for chunk in ids.chunks(BATCH) {
                let sql = format!(
                    concat!(
                        "SELECT ",
                        node_cols!(),
                        ", deleted_ms FROM nodes WHERE namespace_id = $1 AND id IN ({})"
                    ),
                    placeholders(2, chunk.len())
                );
                let mut q = sqlx::query_as::<_, NodeRowDeleted>(sqlx::AssertSqlSafe(sql)).bind(ns);
                for id in chunk {
                    q = q.bind(id);
                }
                for row in q.fetch_all(&mut *conn).await? {
                    let key = (*ns, row.node.id.clone());
                    links.insert(
                        key.clone(),
                        (
                            row.node.parent_id.clone(),
                            row.node.name.clone(),
                            row.deleted_ms.is_some(),
                        ),
                    );
                    nodes.insert(key, row.node);
                }
            }
        }
        load_ancestors(&mut conn, &mut links).await?;
        // Every candidate read: there may be more than were looked at.
        let mut more = found.len() as i64 >= want;
        let mut found = found;
        found.sort_by_cached_key(|key| {
            nodes
                .get(key)
                .map(|n| (n.name.chars().count(), n.name.clone()))
        });
        let mut hits = Vec::new();
        for (ns, id) in found {
            let Some(node) = nodes.remove(&(ns, id.clone())) else {
                continue;
            };
            if !node.name.to_lowercase().contains(&needle) {
                continue;
            }
            let Some(path) = path_of(&links, ns, &id) else {
                continue;
            };
            if hits.len() == limit {
                more = true;
                break;
            }
            hits.push(SearchHit { ns, node, path });
        }
        Ok((hits, more))
    }
}

#[derive(sqlx::FromRow)]
struct NodeRowDeleted {
    #[sqlx(flatten)]
    node: NodeRow,
    deleted_ms: Option<i64>,
}

/// Fetches, level by level, every ancestor of the nodes in `links` not
/// known yet: one query a level and namespace, however many results.
async fn load_ancestors(conn: &mut Conn, links: &mut HashMap<(i64, String), Link>) -> Result<()> {
    // Deeper than any valid path: a damaged tree does not loop for ever.
    for _ in 0..=MAX_DEPTH {
        let mut wanted: HashMap<i64, Vec<String>> = HashMap::new();
        for ((ns, _), (parent, _, _)) in links.iter() {
            if let Some(p) = parent
                && !links.contains_key(&(*ns, p.clone()))
            {
                wanted.entry(*ns).or_default().push(p.clone());
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        for (ns, mut ids) in wanted {
            ids.sort();
            ids.dedup();
            for chunk in ids.chunks(BATCH) {
                let sql = format!(
                    "SELECT id, parent_id, name, deleted_ms FROM nodes
                     WHERE namespace_id = $1 AND id IN ({})",
                    placeholders(2, chunk.len())
                );
                let mut q = sqlx::query_as::<_, (String, Option<String>, String, Option<i64>)>(
                    sqlx::AssertSqlSafe(sql),
                )
                .bind(ns);
                for id in chunk {
                    q = q.bind(id);
                }
                let rows = q.fetch_all(&mut *conn).await?;
                for id in chunk {
                    // One that is not there ends its chain as if trashed.
                    links
                        .entry((ns, id.clone()))
                        .or_insert((None, String::new(), true));
                }
                for (id, parent, name, deleted) in rows {
                    links.insert((ns, id), (parent, name, deleted.is_some()));
                }
            }
        }
    }
    Ok(())
}

/// The path of node `id` in `ns` from the known links; none when it or a
/// folder above it is in the trash (or the chain is broken).
fn path_of(links: &HashMap<(i64, String), Link>, ns: i64, id: &str) -> Option<RemotePath> {
    let mut names = Vec::new();
    let mut at = id.to_owned();
    for _ in 0..=MAX_DEPTH {
        let (parent, name, trashed) = links.get(&(ns, at))?;
        if *trashed {
            return None;
        }
        match parent {
            None => {
                names.reverse();
                return RemotePath::parse(&format!("/{}", names.join("/"))).ok();
            }
            Some(p) => {
                names.push(name.clone());
                at = p.clone();
            }
        }
    }
    None
}
