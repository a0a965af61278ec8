//! The journal: a namespace's numbered list of changes. A child of
//! `queries.rs`, compiled once per backend with it.

use super::*;
use commit_queries::{BATCH, placeholders};

impl Store {
    /// The journal positions of `namespaces` (those that exist).
    pub async fn journal_seqs(&self, namespaces: &[i64]) -> Result<Vec<(i64, i64)>> {
        let mut out = Vec::with_capacity(namespaces.len());
        for chunk in namespaces.chunks(BATCH) {
            let sql = format!(
                "SELECT id, journal_seq FROM namespaces WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(sql));
            for ns in chunk {
                q = q.bind(*ns);
            }
            out.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(out)
    }

    pub async fn journal_seq(&self, ns: i64) -> Result<i64> {
        let (seq,): (i64,) = sqlx::query_as("SELECT journal_seq FROM namespaces WHERE id = $1")
            .bind(ns)
            .fetch_one(&self.pool)
            .await?;
        Ok(seq)
    }

    /// Entries after `after`, oldest first. An entry whose stored kind is
    /// unknown fails the read: guessing would send clients a wrong change.
    pub async fn changes(&self, ns: i64, after: i64, limit: i64) -> Result<Vec<JournalRow>> {
        let rows: Vec<StoredJournalRow> = sqlx::query_as(
            "SELECT seq, kind, node_id, path, old_path, rev, node_kind, size, content_hash, device, created_ms FROM journal
             WHERE namespace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(ns)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(JournalRow::try_from).collect()
    }
}
