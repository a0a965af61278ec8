//! The SQLite backend: the shared queries over `sqlx::Sqlite`.

use super::Result;
use crate::notify::Publisher;

pub type Db = sqlx::Sqlite;

/// Take the write lock up front: a deferred read→write upgrade fails at
/// once with SQLITE_BUSY instead of waiting.
const BEGIN: &str = "BEGIN IMMEDIATE";
/// Rows read to decide a write are locked by `BEGIN IMMEDIATE` already.
const FOR_UPDATE: &str = "";

/// Ids per `IN (…)` list and rows per multi-row statement. SQLite finds
/// each bound parameter by walking the statement's list of them, so a
/// statement's binding costs the square of its parameters; with no round
/// trip to save, short statements are cheaper.
const BATCH: usize = 100;

/// Nodes whose name may hold a text, in the namespaces listed in $2
/// (comma-separated ids), at most $3: through the trigram index with $1 an
/// FTS5 phrase (three characters or more), else $1 is a LIKE pattern over
/// the names of those namespaces. The index spans every namespace, so the
/// matches are read as they come and the first $3 in these namespaces
/// end the search (no sort over all of them); callers sort and check each.
const NAME_SEARCH_INDEXED: &str = "
    SELECT n.namespace_id, n.id FROM node_names f JOIN nodes n ON n.rowid = f.rowid
    WHERE f.name MATCH $1 AND n.deleted_ms IS NULL
      AND n.namespace_id IN (SELECT value FROM json_each('[' || $2 || ']'))
    LIMIT $3";
const NAME_SEARCH_SHORT: &str = "
    SELECT n.namespace_id, n.id FROM nodes n
    WHERE n.namespace_id IN (SELECT value FROM json_each('[' || $2 || ']'))
      AND n.name LIKE $1 AND n.deleted_ms IS NULL
    LIMIT $3";

/// What $1 of the name search is for `text` (see [`NAME_SEARCH_INDEXED`]).
fn name_search(text: &str) -> (&'static str, String) {
    if text.chars().count() >= 3 {
        (
            NAME_SEARCH_INDEXED,
            format!("\"{}\"", text.replace('"', "\"\"")),
        )
    } else {
        // `_` stands for any one character: wildcards in the text match
        // more, never less, and the caller keeps only true matches.
        let pattern: String = text
            .chars()
            .map(|c| if matches!(c, '%' | '_') { '_' } else { c })
            .collect();
        (NAME_SEARCH_SHORT, format!("%{pattern}%"))
    }
}

// The same file is also mounted by the other backend, on purpose: one SQL
// text, compiled once per backend.
#[allow(clippy::duplicate_mod)]
#[path = "queries.rs"]
mod queries;

pub use queries::Store;

impl Store {
    pub async fn connect(url: &str, publisher: Publisher) -> Result<Self> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        use std::str::FromStr;
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let store = Self::new(pool, publisher);
        store.rescue_cut_off().await?;
        Ok(store)
    }
}
