//! The PostgreSQL backend: the shared queries over `sqlx::Postgres`.

use super::Result;
use crate::notify::Publisher;

pub type Db = sqlx::Postgres;

const BEGIN: &str = "BEGIN";

// The same file is also mounted by the other backend, on purpose: one SQL
// text, compiled once per backend.
#[allow(clippy::duplicate_mod)]
#[path = "queries.rs"]
mod queries;

pub use queries::Store;

impl Store {
    pub async fn connect(url: &str, publisher: Publisher) -> Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let store = Self::new(pool, publisher);
        store.rescue_cut_off().await?;
        Ok(store)
    }
}
