//! Blocks: which exist, where they are stored, which a user may reference,
//! and which are known to be damaged. A child of `queries.rs`, compiled
//! once per backend with it.

use super::*;
use commit_queries::{BATCH, placeholders};

impl Store {
    /// Which of `ids` the user may not reference yet (or only as damaged
    /// copies), each once, in the order asked.
    pub async fn missing_blocks(&self, user_id: i64, ids: &[BlockId]) -> Result<Vec<BlockId>> {
        let mut conn = self.pool.acquire().await?;
        let known = user_block_rows(&mut conn, user_id, ids).await?;
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        Ok(ids
            .iter()
            .filter(|id| !known.contains_key(id) && seen.insert(**id))
            .copied()
            .collect())
    }

    pub async fn block_location(&self, id: &BlockId) -> Result<Option<BlockLoc>> {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT object, obj_offset, obj_length FROM blocks WHERE id = $1")
                .bind(&id.0[..])
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(loc))
    }

    pub async fn user_block_location(
        &self,
        user_id: i64,
        id: &BlockId,
    ) -> Result<Option<BlockLoc>> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT b.object, b.obj_offset, b.obj_length FROM blocks b
             JOIN user_blocks ub ON ub.block_id = b.id
             WHERE ub.user_id = $1 AND b.id = $2",
        )
        .bind(user_id)
        .bind(&id.0[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(loc))
    }

    /// Records freshly written blocks and grants them to `user_id`, in one
    /// transaction. A block already recorded keeps its record unless it is
    /// marked damaged; then the new copy replaces it (compared and swapped
    /// on the location, so two repairs racing cannot both win). A few
    /// statements per batch of blocks, whatever the number.
    pub async fn record_blocks(
        &self,
        user_id: i64,
        blocks: &[(BlockId, BlockLoc, u64)],
    ) -> Result<Vec<Recorded>> {
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(blocks.len());
        for chunk in blocks.chunks(BATCH) {
            let mut stored = insert_new_blocks(&mut tx, chunk).await?;
            let ids: Vec<BlockId> = chunk.iter().map(|(id, ..)| *id).collect();
            let damaged = damaged_rows(&mut tx, &ids).await?;
            for (id, at, _) in chunk {
                // A block listed twice is new only the first time.
                let outcome = if stored.remove(&id.0) {
                    Recorded::Stored
                } else if let Some(old) = damaged.get(&id.0) {
                    replace_damaged(&mut tx, id, old, at).await?
                } else {
                    Recorded::Existing
                };
                out.push(outcome);
            }
            // A block recorded before starts a fresh grace period: the
            // commit or session that will reference it is on its way.
            gc_queries::hold_blocks(&mut tx, &ids, now_ms()).await?;
            grant_all(&mut tx, user_id, &ids).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn mark_block_damaged(&self, id: &BlockId, at: &BlockLoc) -> Result<bool> {
        let now = now_ms();
        let marked = sqlx::query(
            "UPDATE blocks SET damaged_ms = $4
             WHERE id = $1 AND object = $2 AND obj_offset = $3 AND damaged_ms IS NULL",
        )
        .bind(&id.0[..])
        .bind(&at.object)
        .bind(at.offset as i64)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if marked == 1 {
            // The blocks stored as deltas against it cannot be read either:
            // they count as missing too, so the next upload of their bytes
            // stores them whole.
            sqlx::query(
                "UPDATE blocks SET damaged_ms = $2
                 WHERE base = $1 AND level IS NOT NULL AND damaged_ms IS NULL",
            )
            .bind(&id.0[..])
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        Ok(marked == 1)
    }
}

/// Inserts the blocks not recorded yet; returns those it inserted. A new
/// block starts unreferenced: the collector may take it once its grace
/// period has passed unless a commit references it first.
async fn insert_new_blocks(
    tx: &mut Tx,
    blocks: &[(BlockId, BlockLoc, u64)],
) -> Result<std::collections::HashSet<[u8; 32]>> {
    // $1 is the time; each row adds id, object, offset, length, plain length.
    let values = (0..blocks.len())
        .map(|i| {
            let p = 2 + 5 * i;
            format!(
                "(${p}, ${}, ${}, ${}, ${}, 0, $1, $1)",
                p + 1,
                p + 2,
                p + 3,
                p + 4
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO blocks (id, object, obj_offset, obj_length, plain_len, refcount, zero_since_ms, created_ms)
         VALUES {values} ON CONFLICT (id) DO NOTHING RETURNING id"
    );
    let mut q = sqlx::query_as::<_, (Vec<u8>,)>(sqlx::AssertSqlSafe(sql)).bind(now_ms());
    for (id, at, plain_len) in blocks {
        q = q
            .bind(&id.0[..])
            .bind(&at.object)
            .bind(at.offset as i64)
            .bind(at.length as i64)
            .bind(*plain_len as i64);
    }
    Ok(q.fetch_all(&mut **tx)
        .await?
        .into_iter()
        .filter_map(|(id,)| <[u8; 32]>::try_from(id.as_slice()).ok())
        .collect())
}

/// The recorded copies of `ids` that are marked damaged.
async fn damaged_rows(
    tx: &mut Tx,
    ids: &[BlockId],
) -> Result<std::collections::HashMap<[u8; 32], BlockLoc>> {
    let sql = format!(
        "SELECT id, object, obj_offset, obj_length FROM blocks
         WHERE damaged_ms IS NOT NULL AND id IN ({})",
        placeholders(1, ids.len())
    );
    let mut q = sqlx::query_as::<_, (Vec<u8>, String, i64, i64)>(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(&id.0[..]);
    }
    Ok(q.fetch_all(&mut **tx)
        .await?
        .into_iter()
        .filter_map(|(id, object, offset, length)| {
            let id = <[u8; 32]>::try_from(id.as_slice()).ok()?;
            Some((id, loc((object, offset, length))))
        })
        .collect())
}

/// Points the damaged record `old` of `id` at the new copy `at`, unless
/// another repair got there first.
async fn replace_damaged(
    tx: &mut Tx,
    id: &BlockId,
    old: &BlockLoc,
    at: &BlockLoc,
) -> Result<Recorded> {
    let swapped = sqlx::query(
        "UPDATE blocks SET object = $2, obj_offset = $3, obj_length = $4, damaged_ms = NULL, level = NULL,
             base = NULL
         WHERE id = $1 AND object = $5 AND obj_offset = $6 AND damaged_ms IS NOT NULL",
    )
    .bind(&id.0[..])
    .bind(&at.object)
    .bind(at.offset as i64)
    .bind(at.length as i64)
    .bind(&old.object)
    .bind(old.offset as i64)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if swapped == 1 {
        // Deltas against it read again. One that is damaged in its own
        // bytes as well is found again by its next read or the scrub.
        sqlx::query(
            "UPDATE blocks SET damaged_ms = NULL
             WHERE base = $1 AND level IS NOT NULL AND damaged_ms IS NOT NULL",
        )
        .bind(&id.0[..])
        .execute(&mut **tx)
        .await?;
    }
    Ok(if swapped == 1 {
        Recorded::Repaired(old.clone())
    } else {
        Recorded::Existing
    })
}

/// Lets `user_id` reference `ids`.
async fn grant_all(tx: &mut Tx, user_id: i64, ids: &[BlockId]) -> Result<()> {
    let values = (0..ids.len())
        .map(|i| format!("($1, ${})", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO user_blocks (user_id, block_id) VALUES {values} ON CONFLICT DO NOTHING"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id);
    for id in ids {
        q = q.bind(&id.0[..]);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}
