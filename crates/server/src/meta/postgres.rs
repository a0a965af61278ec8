//! The PostgreSQL backend: the shared queries over `sqlx::Postgres`.

use std::sync::Arc;

use super::Result;
use super::failover::Failover;
use crate::notify::Publisher;

pub type Db = sqlx::Postgres;

const BEGIN: &str = "BEGIN";
/// Locks the rows read to decide a write (and reads them again, as
/// committed, after waiting for another writer's lock); not their keys, so
/// rows that refer to them (a new device's token) need not wait.
const FOR_UPDATE: &str = " FOR NO KEY UPDATE";

/// Ids per `IN (…)` list and rows per multi-row statement: each statement
/// is a round trip, and PostgreSQL binds by position.
const BATCH: usize = 500;

/// Nodes whose name holds a text, in the namespaces listed in $2
/// (comma-separated ids), at most $3, through the trigram index led by the
/// namespace ($1: a LIKE pattern over lower-cased names): only these
/// namespaces' matches are read, and no more than asked for (no sort over
/// all of them). Callers sort and check each.
const NAME_SEARCH: &str = "
    SELECT n.namespace_id, n.id FROM nodes n
    WHERE lower(n.name) LIKE $1 AND n.deleted_ms IS NULL
      AND n.namespace_id = ANY(string_to_array($2, ',')::bigint[])
    LIMIT $3";

/// What $1 of the name search is for `text` (see [`NAME_SEARCH`]).
fn name_search(text: &str) -> (&'static str, String) {
    let mut pattern = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    (NAME_SEARCH, pattern)
}

// The same file is also mounted by the other backend, on purpose: one SQL
// text, compiled once per backend.
#[allow(clippy::duplicate_mod)]
#[path = "queries.rs"]
mod queries;

pub use queries::Store;

/// A request waits at most this long for a free connection: longer, and
/// the database is as good as unavailable (the answer is 503).
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Store {
    /// Connects to the primary among `failover`'s hosts and keeps the pool
    /// on whichever host is primary from then on (`failover.rs`).
    pub async fn connect(failover: &Arc<Failover>, publisher: Publisher) -> Result<Self> {
        let primary = failover.primary().await?;
        let current = failover.clone();
        let standbys = failover.has_standbys();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection begun for a host that was demoted meanwhile is
            // refused, so none talks to a standby.
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if standbys {
                        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                            .fetch_one(&mut *conn)
                            .await?;
                        if in_recovery {
                            return Err(sqlx::Error::Io(std::io::Error::other(
                                "connected to a standby, not the primary",
                            )));
                        }
                    }
                    Ok(())
                })
            })
            // A connection made for a host the pool has left is closed.
            .before_acquire(move |_conn, meta| {
                let keep = current.is_current(meta.age);
                Box::pin(async move { Ok(keep) })
            })
            .connect_with(primary)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        failover.clone().watch(pool.clone());
        let store = Self::new(pool, publisher);
        store.rescue_cut_off().await?;
        Ok(store)
    }
}
