//! Collection's queries: a child of `queries.rs`, compiled per backend with
//! it. Which blocks nobody needs, which objects nobody names, and moving
//! live blocks out of mostly empty packs.
//!
//! Race safety rests on two rules. Every path that starts to rely on an
//! existing block (a commit's references, an upload's dedup, a resumable
//! session's checkpoint) updates the block's row in its own transaction and
//! fails when the row is gone ([`hold_blocks`], `take_refs`); and
//! collection deletes a row only by a statement that re-checks, on the row
//! as it stands, that it has no references and has been unreferenced for
//! the whole grace period. On PostgreSQL the row lock orders the two; on
//! SQLite one writer at a time does.

use super::*;
use commit_queries::{BATCH, placeholders};

impl Store {
    /// Removes the records of up to `limit` blocks that have had no
    /// reference since before `cutoff_ms` and that no upload session and no
    /// block stored as a delta (as its base) names, with
    /// every user's claim to them, and dooms the objects left without
    /// a record (a pack once its last block goes). One transaction.
    pub async fn collect_blocks(&self, cutoff_ms: i64, limit: i64) -> Result<Collected> {
        let mut tx = self.begin().await?;
        // The outer conditions are evaluated again on each row as it is
        // deleted: a reference taken since the inner select saves it.
        let gone: Vec<(Vec<u8>, String, i64)> = sqlx::query_as(
            "DELETE FROM blocks
             WHERE id IN (
                 SELECT b.id FROM blocks b
                 WHERE b.refcount <= 0 AND b.zero_since_ms IS NOT NULL AND b.zero_since_ms <= $1
                   AND NOT EXISTS (SELECT 1 FROM upload_blocks ub WHERE ub.block_id = b.id)
                   AND NOT EXISTS (SELECT 1 FROM upload_sessions us WHERE us.tail_block = b.id)
                   AND NOT EXISTS (SELECT 1 FROM blocks d WHERE d.base = b.id AND d.level IS NOT NULL)
                 ORDER BY b.zero_since_ms
                 LIMIT $2)
               AND refcount <= 0 AND zero_since_ms IS NOT NULL AND zero_since_ms <= $1
               AND NOT EXISTS (
                   SELECT 1 FROM blocks d WHERE d.base = blocks.id AND d.level IS NOT NULL)
             RETURNING id, object, obj_length",
        )
        .bind(cutoff_ms)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Collected {
            blocks: gone.len() as u64,
            ..Collected::default()
        };
        let mut freed: std::collections::BTreeMap<String, i64> = Default::default();
        let mut ids = Vec::with_capacity(gone.len());
        for (id, object, length) in gone {
            out.bytes += length.max(0) as u64;
            *freed.entry(object).or_default() += length;
            ids.push(id);
        }
        for chunk in ids.chunks(BATCH) {
            let sql = format!(
                "DELETE FROM user_blocks WHERE block_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(&id[..]);
            }
            q.execute(&mut *tx).await?;
        }
        let now = now_ms();
        for (object, bytes) in freed {
            if doom_if_unnamed(&mut tx, &object, now).await? {
                out.doomed += 1;
            } else if is_pack(&object) {
                add_freed(&mut tx, &object, bytes).await?;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Objects doomed at or before `before_ms`, oldest first.
    pub async fn doomed_objects(&self, before_ms: i64, limit: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT object FROM doomed_objects WHERE since_ms <= $1 ORDER BY since_ms, object LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(o,)| o).collect())
    }

    /// Forgets doomed objects once they are deleted from the store.
    pub async fn forget_doomed(&self, objects: &[String]) -> Result<()> {
        for chunk in objects.chunks(BATCH) {
            let sql = format!(
                "DELETE FROM doomed_objects WHERE object IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for o in chunk {
                q = q.bind(o);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Of `objects` (found in the store, old enough that no write of them
    /// is still under way), dooms those no block record names: copies a
    /// crash left between their write and their record, or whose cleanup
    /// failed. Returns how many.
    pub async fn doom_orphans(&self, objects: &[String]) -> Result<u64> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let mut doomed = 0;
        for chunk in objects.chunks(BATCH) {
            let sql = format!(
                "SELECT DISTINCT object FROM blocks WHERE object IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(sql));
            for o in chunk {
                q = q.bind(o);
            }
            let named: std::collections::HashSet<String> = q
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|(o,)| o)
                .collect();
            for object in chunk.iter().filter(|o| !named.contains(*o)) {
                doomed += doom(&mut tx, object, now).await?;
            }
        }
        tx.commit().await?;
        Ok(doomed)
    }

    /// Packs whose collected bytes outweigh their recorded (live) ones,
    /// emptiest first, each with its live bytes. Packs still mostly used
    /// are not listed, so they never hide the ones to compact.
    pub async fn packs_with_freed_space(&self, limit: i64) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT object, live FROM (
                 SELECT p.object, p.freed_bytes,
                     CAST(COALESCE((SELECT SUM(b.obj_length) FROM blocks b WHERE b.object = p.object), 0) AS BIGINT) AS live
                 FROM pack_freed p) c
             WHERE live < freed_bytes
             ORDER BY live, object LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(o, live)| (o, live.max(0) as u64))
            .collect())
    }

    /// The blocks recorded in `object`, by offset.
    pub async fn blocks_in(&self, object: &str) -> Result<Vec<(BlockId, BlockLoc)>> {
        let rows: Vec<(Vec<u8>, String, i64, i64)> = sqlx::query_as(
            "SELECT id, object, obj_offset, obj_length FROM blocks WHERE object = $1 ORDER BY obj_offset",
        )
        .bind(object)
        .fetch_all(&self.pool)
        .await?;
        Ok(located(rows))
    }

    /// Points each moved block at its new place, if it is still where it
    /// was (compared and swapped: collection or a repair may have got there
    /// first), and dooms `old` once nothing names it. The new object's
    /// slices that no record took count as freed. One transaction.
    pub async fn move_blocks(&self, old: &str, new: &str, moved: &[Moved]) -> Result<u64> {
        let mut tx = self.begin().await?;
        let taken = move_pack(&mut tx, old, new, moved).await?;
        tx.commit().await?;
        Ok(taken)
    }

    /// The object of the oldest sound block still stored as it arrived
    /// and stored before `cutoff_ms`: the next one to recompress.
    pub async fn next_to_recompress(&self, cutoff_ms: i64) -> Result<Option<String>> {
        Ok(sqlx::query_as::<_, (String,)>(
            "SELECT object FROM blocks
             WHERE level IS NULL AND created_ms <= $1 AND damaged_ms IS NULL AND refcount > 0
             ORDER BY created_ms LIMIT 1",
        )
        .bind(cutoff_ms)
        .fetch_optional(&self.pool)
        .await?
        .map(|(o,)| o))
    }

    /// Records that `old`'s blocks are done at zstd `level`: those in
    /// `moved` now in `new` (as [`Store::move_blocks`] does, in the same
    /// transaction), or, without `new`, every block in `old` where it is
    /// (recompressing them did not pay), their noted bases cleared. Each
    /// `(block, base)` of `bases` was written as a delta against `base`: it
    /// moves only if `base` is still in use, sound and stored whole and no
    /// block is stored as a delta against `block` (a delta's base is read
    /// whole, so a read follows one link); its row then names the base,
    /// which keeps the base from collection. A block that may not move
    /// stays where it is, its note cleared, to be stored whole next time.
    pub async fn recompressed(
        &self,
        old: &str,
        new: Option<&str>,
        moved: &[Moved],
        bases: &[(BlockId, BlockId)],
        level: i32,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        let done = match new {
            Some(new) => {
                let mut kept = Vec::with_capacity(bases.len());
                let mut refused = std::collections::HashSet::new();
                for (block, base) in bases {
                    if may_be_delta(&mut tx, block, base).await? {
                        kept.push((block, base));
                    } else {
                        refused.insert(*block);
                    }
                }
                let (moving, staying): (Vec<Moved>, Vec<Moved>) = moved
                    .iter()
                    .cloned()
                    .partition(|m| !refused.contains(&m.id));
                let taken = move_pack(&mut tx, old, new, &moving).await?;
                let unused: i64 = staying.iter().map(|m| m.to.length as i64).sum();
                if taken > 0 && unused > 0 {
                    add_freed(&mut tx, new, unused).await?;
                }
                for m in &staying {
                    sqlx::query("UPDATE blocks SET base = NULL WHERE id = $1 AND level IS NULL")
                        .bind(&m.id.0[..])
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("UPDATE blocks SET level = $1, base = NULL WHERE object = $2")
                    .bind(level)
                    .bind(new)
                    .execute(&mut *tx)
                    .await?;
                for (block, base) in kept {
                    sqlx::query("UPDATE blocks SET base = $2 WHERE id = $1 AND object = $3")
                        .bind(&block.0[..])
                        .bind(&base.0[..])
                        .bind(new)
                        .execute(&mut *tx)
                        .await?;
                }
                taken
            }
            None => sqlx::query(
                "UPDATE blocks SET level = $1, base = NULL
                 WHERE object = $2 AND level IS NULL AND damaged_ms IS NULL",
            )
            .bind(level)
            .bind(old)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        tx.commit().await?;
        Ok(done)
    }

    /// For each block recorded in `object` that may be stored as a delta,
    /// the block it may be stored against, and where that one is: the base
    /// its commit noted or, when that one is stored as a delta, the block
    /// that one is against; if it is in use, sound and stored whole, and
    /// no block is stored as a delta against the block. A base more than
    /// twice the block's size is no base: reading a delta reads its base
    /// too, and a fetch is budgeted by the sizes of the blocks asked for,
    /// so this keeps a read's work within three times that. Nor is a block
    /// in the cold tier, which is priced for data left alone.
    pub async fn delta_bases_in(&self, object: &str) -> Result<Vec<(BlockId, BlockId, BlockLoc)>> {
        let rows: Vec<BaseRow> = sqlx::query_as(
            "SELECT d.id, c.id, c.object, c.obj_offset, c.obj_length FROM blocks d
             JOIN blocks h ON h.id = d.base
             JOIN blocks c ON c.id = CASE WHEN h.level IS NOT NULL AND h.base IS NOT NULL
                                          THEN h.base ELSE h.id END
             WHERE d.object = $1 AND d.level IS NULL AND c.id <> d.id
               AND c.refcount > 0 AND c.damaged_ms IS NULL
               AND NOT (c.level IS NOT NULL AND c.base IS NOT NULL)
               AND c.plain_len <= 2 * d.plain_len AND c.object NOT LIKE 'cold/%'
               AND NOT EXISTS (SELECT 1 FROM blocks x WHERE x.base = d.id AND x.level IS NOT NULL)",
        )
        .bind(object)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, base, object, offset, length)| {
                let (id, base) = (
                    crate::meta::digest(Some(&id))?,
                    crate::meta::digest(Some(&base))?,
                );
                Some((BlockId(id), BlockId(base), loc((object, offset, length))))
            })
            .collect())
    }

    /// Up to `limit` sound, referenced blocks outside the cold store that
    /// only files untouched since `cutoff_ms` use (live, in the trash, or
    /// as old revisions), and no upload session names.
    pub async fn cold_candidates(
        &self,
        cutoff_ms: i64,
        limit: i64,
    ) -> Result<Vec<(BlockId, BlockLoc)>> {
        let rows: Vec<(Vec<u8>, String, i64, i64)> = sqlx::query_as(
            "SELECT b.id, b.object, b.obj_offset, b.obj_length FROM blocks b
             WHERE b.object NOT LIKE 'cold/%' AND b.refcount > 0 AND b.damaged_ms IS NULL
               AND NOT EXISTS (
                   SELECT 1 FROM revision_blocks rb
                   JOIN nodes n ON n.namespace_id = rb.namespace_id AND n.id = rb.node_id
                   WHERE rb.block_id = b.id AND n.modified_ms > $1)
               AND NOT EXISTS (SELECT 1 FROM upload_blocks ub WHERE ub.block_id = b.id)
               AND NOT EXISTS (SELECT 1 FROM upload_sessions us WHERE us.tail_block = b.id)
             ORDER BY b.object, b.obj_offset
             LIMIT $2",
        )
        .bind(cutoff_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(located(rows))
    }

    /// Points blocks copied into `new` at their new place (compared and
    /// swapped), and frees their old places: an object left without a
    /// record is doomed, a pack counts the bytes as freed. `new` is doomed
    /// if no record took it. One transaction. Returns the blocks moved.
    pub async fn relocate_blocks(&self, new: &str, moved: &[Moved]) -> Result<u64> {
        self.relocate(new, moved, false).await
    }

    /// As [`Store::relocate_blocks`], for blocks that were stored as deltas
    /// and are now copied whole: each one that moves names no base any
    /// more and is as it arrived for the recompression, with, of those that
    /// had the same base, the newest noted as the others' next base.
    pub async fn stored_whole(&self, new: &str, moved: &[Moved]) -> Result<u64> {
        self.relocate(new, moved, true).await
    }

    async fn relocate(&self, new: &str, moved: &[Moved], whole: bool) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut taken = 0u64;
        let mut freed: std::collections::BTreeMap<String, i64> = Default::default();
        // Of the deltas against one base, the newest: the others may be
        // stored as deltas against it in turn.
        let mut newest: std::collections::BTreeMap<Vec<u8>, (i64, Vec<u8>)> = Default::default();
        let mut others: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for m in moved {
            let was: Option<(Option<Vec<u8>>, i64)> = if whole {
                sqlx::query_as("SELECT base, created_ms FROM blocks WHERE id = $1")
                    .bind(&m.id.0[..])
                    .fetch_optional(&mut *tx)
                    .await?
            } else {
                None
            };
            if swap_location(&mut tx, m).await? {
                taken += 1;
                *freed.entry(m.from.object.clone()).or_default() += m.from.length as i64;
                if !whole {
                    continue;
                }
                sqlx::query("UPDATE blocks SET base = NULL, level = NULL WHERE id = $1")
                    .bind(&m.id.0[..])
                    .execute(&mut *tx)
                    .await?;
                if let Some((Some(base), created)) = was {
                    // A read that looked the block up before this still
                    // finds its old copy, a delta, for the grace period:
                    // its base waits as long.
                    sqlx::query(
                        "UPDATE blocks SET zero_since_ms = $2 WHERE id = $1 AND refcount <= 0",
                    )
                    .bind(&base)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                    let id = m.id.0.to_vec();
                    match newest.get_mut(&base) {
                        Some(top) if top.0 >= created => others.push((base, id)),
                        Some(top) => {
                            let older = std::mem::replace(top, (created, id));
                            others.push((base, older.1));
                        }
                        None => {
                            newest.insert(base, (created, id));
                        }
                    }
                }
            }
        }
        // Noted as their base, for the recompression: the notes hold
        // nothing back, and are checked again when they are used.
        for (base, id) in others {
            if let Some((_, top)) = newest.get(&base) {
                sqlx::query("UPDATE blocks SET base = $2 WHERE id = $1 AND level IS NULL")
                    .bind(&id)
                    .bind(top)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let now = now_ms();
        for (object, bytes) in freed {
            if !doom_if_unnamed(&mut tx, &object, now).await? && is_pack(&object) {
                add_freed(&mut tx, &object, bytes).await?;
            }
        }
        if taken == 0 {
            doom(&mut tx, new, now).await?;
        }
        tx.commit().await?;
        Ok(taken)
    }

    /// Up to `limit` blocks in use, stored as deltas against a block that
    /// has had no reference since before `cutoff_ms`: to be stored whole,
    /// so that their base can be collected.
    pub async fn deltas_on_unused_bases(
        &self,
        cutoff_ms: i64,
        limit: i64,
    ) -> Result<Vec<(BlockId, BlockLoc)>> {
        let rows: Vec<(Vec<u8>, String, i64, i64)> = sqlx::query_as(
            "SELECT d.id, d.object, d.obj_offset, d.obj_length FROM blocks b
             JOIN blocks d ON d.base = b.id
             WHERE b.refcount <= 0 AND b.zero_since_ms IS NOT NULL AND b.zero_since_ms <= $1
               AND d.level IS NOT NULL AND d.refcount > 0 AND d.damaged_ms IS NULL
             ORDER BY b.zero_since_ms, d.id
             LIMIT $2",
        )
        .bind(cutoff_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(located(rows))
    }

    /// Forgets a pack's freed bytes (it cannot be compacted now, for
    /// example because a block in it is damaged; its next collection
    /// brings it back).
    pub async fn forget_pack_freed(&self, object: &str) -> Result<()> {
        sqlx::query("DELETE FROM pack_freed WHERE object = $1")
            .bind(object)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Points each moved block at its new place, if it is still where it was
/// (compared and swapped), and dooms `old` once nothing names it; the new
/// object's slices that no record took count as freed. Returns the blocks
/// moved.
async fn move_pack(tx: &mut Tx, old: &str, new: &str, moved: &[Moved]) -> Result<u64> {
    let mut lost = 0i64;
    let mut taken = 0u64;
    for m in moved {
        if swap_location(tx, m).await? {
            taken += 1;
        } else {
            lost += m.to.length as i64;
        }
    }
    let now = now_ms();
    sqlx::query("DELETE FROM pack_freed WHERE object = $1")
        .bind(old)
        .execute(&mut **tx)
        .await?;
    doom_if_unnamed(tx, old, now).await?;
    if taken == 0 {
        doom(tx, new, now).await?;
    } else if lost > 0 {
        add_freed(tx, new, lost).await?;
    }
    Ok(taken)
}

/// Points a moved block's record at its new place if it is still where
/// the move found it. True if it did.
async fn swap_location(tx: &mut Tx, m: &Moved) -> Result<bool> {
    let swapped = sqlx::query(
        "UPDATE blocks SET object = $2, obj_offset = $3, obj_length = $4
         WHERE id = $1 AND object = $5 AND obj_offset = $6",
    )
    .bind(&m.id.0[..])
    .bind(&m.to.object)
    .bind(m.to.offset as i64)
    .bind(m.to.length as i64)
    .bind(&m.from.object)
    .bind(m.from.offset as i64)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(swapped == 1)
}

/// A block, the base it may be stored against, and where that one is.
type BaseRow = (Vec<u8>, Vec<u8>, String, i64, i64);

/// Whether `block` may be recorded as a delta against `base`, at the
/// moment of recording: `base` is in use, sound and stored whole, and no
/// block is stored as a delta against `block`. Both rows are locked first,
/// in the order of their ids, so that collection cannot take the base
/// meanwhile and two recordings at once (a run-now beside the lease
/// holder's step) cannot chain a delta onto a delta: whichever comes
/// second sees the first's outcome.
async fn may_be_delta(tx: &mut Tx, block: &BlockId, base: &BlockId) -> Result<bool> {
    if block == base {
        return Ok(false);
    }
    let mut rows = [block, base];
    rows.sort();
    for id in rows {
        sqlx::query("UPDATE blocks SET refcount = refcount WHERE id = $1")
            .bind(&id.0[..])
            .execute(&mut **tx)
            .await?;
    }
    let sound_base: Option<(i64,)> = sqlx::query_as(
        "SELECT CAST(1 AS BIGINT) FROM blocks
         WHERE id = $1 AND refcount > 0 AND damaged_ms IS NULL
           AND NOT (level IS NOT NULL AND base IS NOT NULL)",
    )
    .bind(&base.0[..])
    .fetch_optional(&mut **tx)
    .await?;
    if sound_base.is_none() {
        return Ok(false);
    }
    let leaned_on: Option<(i64,)> = sqlx::query_as(
        "SELECT CAST(1 AS BIGINT) FROM blocks WHERE base = $1 AND level IS NOT NULL LIMIT 1",
    )
    .bind(&block.0[..])
    .fetch_optional(&mut **tx)
    .await?;
    Ok(leaned_on.is_none())
}

/// Packs hold many blocks, in the main store or the cold one.
pub(super) fn is_pack(object: &str) -> bool {
    object.starts_with("packs/") || object.starts_with("cold/packs/")
}

/// Dooms `object` if no block record names it. True if it did.
async fn doom_if_unnamed(tx: &mut Tx, object: &str, now: i64) -> Result<bool> {
    let named: Option<(i64,)> =
        sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM blocks WHERE object = $1 LIMIT 1")
            .bind(object)
            .fetch_optional(&mut **tx)
            .await?;
    if named.is_some() {
        return Ok(false);
    }
    sqlx::query("DELETE FROM pack_freed WHERE object = $1")
        .bind(object)
        .execute(&mut **tx)
        .await?;
    Ok(doom(tx, object, now).await? > 0)
}

async fn doom(tx: &mut Tx, object: &str, now: i64) -> Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO doomed_objects (object, since_ms) VALUES ($1, $2) ON CONFLICT (object) DO NOTHING",
    )
    .bind(object)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

async fn add_freed(tx: &mut Tx, object: &str, bytes: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO pack_freed (object, freed_bytes) VALUES ($1, $2)
         ON CONFLICT (object) DO UPDATE SET freed_bytes = pack_freed.freed_bytes + $2",
    )
    .bind(object)
    .bind(bytes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes `ids` safe from collection for another grace period, in `tx`:
/// an unreferenced block's clock starts again. Fails with
/// [`MetaError::MissingBlocks`] (naming them) if any has been collected,
/// so the caller's transaction rolls back and its client sends them again.
pub(super) async fn hold_blocks(tx: &mut Tx, ids: &[BlockId], now: i64) -> Result<()> {
    let mut unique: Vec<[u8; 32]> = ids.iter().map(|id| id.0).collect();
    unique.sort_unstable();
    unique.dedup();
    let mut held = 0u64;
    for chunk in unique.chunks(BATCH) {
        let sql = format!(
            "UPDATE blocks SET zero_since_ms = CASE WHEN refcount <= 0 THEN $1 ELSE zero_since_ms END
             WHERE id IN ({})",
            placeholders(2, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for id in chunk {
            q = q.bind(&id[..]);
        }
        held += q.execute(&mut **tx).await?.rows_affected();
    }
    if held == unique.len() as u64 {
        return Ok(());
    }
    Err(MetaError::MissingBlocks(
        absent(tx, &unique)
            .await?
            .into_iter()
            .map(BlockId)
            .collect(),
    ))
}

/// Which of `ids` have no block record.
pub(super) async fn absent(tx: &mut Tx, ids: &[[u8; 32]]) -> Result<Vec<[u8; 32]>> {
    let mut present = std::collections::HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(BATCH) {
        let sql = format!(
            "SELECT id FROM blocks WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (Vec<u8>,)>(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(&id[..]);
        }
        for (id,) in q.fetch_all(&mut **tx).await? {
            present.insert(id);
        }
    }
    Ok(ids
        .iter()
        .filter(|id| !present.contains(&id[..]))
        .copied()
        .collect())
}
