//! The SQLite backend: the shared queries over `sqlx::Sqlite`.

use super::Result;
use crate::notify::Publisher;

pub type Db = sqlx::Sqlite;

/// Take the write lock up front: a deferred read→write upgrade fails at
/// once with SQLITE_BUSY instead of waiting.
const BEGIN: &str = "BEGIN IMMEDIATE";

/// Ids per `IN (…)` list and rows per multi-row statement. SQLite finds
/// each bound parameter by walking the statement's list of them, so a
/// statement's binding costs the square of its parameters; with no round
/// trip to save, short statements are cheaper.
const BATCH: usize = 100;

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
