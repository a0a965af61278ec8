//! Blocks: which exist, where they are stored, which a user may reference,
//! and which are known to be damaged. A child of `queries.rs`, compiled
//! once per backend with it.

use super::*;

impl Store {
    pub async fn missing_blocks(&self, user_id: i64, ids: &[BlockId]) -> Result<Vec<BlockId>> {
        let mut conn = self.pool.acquire().await?;
        let mut missing = Vec::new();
        for id in ids {
            if !user_has_block(&mut conn, user_id, id).await? && !missing.contains(id) {
                missing.push(*id);
            }
        }
        Ok(missing)
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
    /// on the location, so two repairs racing cannot both win).
    pub async fn record_blocks(
        &self,
        user_id: i64,
        blocks: &[(BlockId, BlockLoc, u64)],
    ) -> Result<Vec<Recorded>> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(blocks.len());
        for (id, at, plain_len) in blocks {
            // A new block starts unreferenced: the collector may take it once
            // its grace period has passed unless a commit references it first.
            let inserted = sqlx::query(
                "INSERT INTO blocks (id, object, obj_offset, obj_length, plain_len, refcount, zero_since_ms, created_ms)
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&id.0[..])
            .bind(&at.object)
            .bind(at.offset as i64)
            .bind(at.length as i64)
            .bind(*plain_len as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let outcome = if inserted == 1 {
                Recorded::Stored
            } else {
                let row: Option<(String, i64, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT object, obj_offset, obj_length, damaged_ms FROM blocks WHERE id = $1",
                )
                .bind(&id.0[..])
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    Some((object, offset, length, Some(_))) => {
                        let swapped = sqlx::query(
                            "UPDATE blocks SET object = $2, obj_offset = $3, obj_length = $4, damaged_ms = NULL
                             WHERE id = $1 AND object = $5 AND obj_offset = $6 AND damaged_ms IS NOT NULL",
                        )
                        .bind(&id.0[..])
                        .bind(&at.object)
                        .bind(at.offset as i64)
                        .bind(at.length as i64)
                        .bind(&object)
                        .bind(offset)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if swapped == 1 {
                            Recorded::Repaired(loc((object, offset, length)))
                        } else {
                            Recorded::Existing
                        }
                    }
                    _ => Recorded::Existing,
                }
            };
            grant(&mut tx, user_id, id).await?;
            out.push(outcome);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn mark_block_damaged(&self, id: &BlockId, at: &BlockLoc) -> Result<bool> {
        let marked = sqlx::query(
            "UPDATE blocks SET damaged_ms = $4
             WHERE id = $1 AND object = $2 AND obj_offset = $3 AND damaged_ms IS NULL",
        )
        .bind(&id.0[..])
        .bind(&at.object)
        .bind(at.offset as i64)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(marked == 1)
    }
}
