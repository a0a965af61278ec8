//! Which block of the older version a new block most likely replaced, so
//! it can travel as a delta against it.
//!
//! Content-defined cuts fall again where they fell before a short way past
//! an edit, so a changed block of the new version covers about the same
//! stretch of the file as the old block it grew from: the old block that
//! overlaps it most is the best base. The guess costs nothing to be wrong
//! about: a poor base only makes a larger delta, and the sender keeps
//! whichever of delta and whole block is smaller.

use std::collections::HashMap;

use tessera_proto::BlockId;

/// For each block of `new` (id and length, in file order) that `wanted`
/// accepts, the block of `old` (id, offset and length, in any order)
/// overlapping the most bytes of the same stretch, if any overlaps and it
/// is not the block itself.
pub fn overlapping_bases(
    new: &[(BlockId, u64)],
    old: &[(BlockId, u64, u64)],
    wanted: impl Fn(&BlockId) -> bool,
) -> HashMap<BlockId, BlockId> {
    let mut old: Vec<(BlockId, u64, u64)> = old.to_vec();
    old.sort_by_key(|&(_, offset, _)| offset);
    let mut bases = HashMap::new();
    let mut start = 0u64;
    for &(id, len) in new {
        let end = start + len;
        if wanted(&id) && !bases.contains_key(&id) {
            // The first old block ending past `start`, then every one
            // starting before `end`.
            let first = old.partition_point(|&(_, o, l)| o + l <= start);
            let best = old[first..]
                .iter()
                .take_while(|&&(_, o, _)| o < end)
                .map(|&(old_id, o, l)| (old_id, end.min(o + l) - start.max(o)))
                .filter(|&(old_id, overlap)| old_id != id && overlap > 0)
                .max_by_key(|&(_, overlap)| overlap);
            if let Some((base, _)) = best {
                bases.insert(id, base);
            }
        }
        start = end;
    }
    bases
}

/// Offsets for a list of (id, length) blocks in file order.
pub fn with_offsets(blocks: &[(BlockId, u64)]) -> Vec<(BlockId, u64, u64)> {
    let mut at = 0;
    blocks
        .iter()
        .map(|&(id, len)| {
            let placed = (id, at, len);
            at += len;
            placed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlockId {
        BlockId::of(&[n])
    }

    #[test]
    fn each_changed_block_takes_the_old_block_it_overlaps_most() {
        // old: A[0,100) B[100,250) C[250,300)
        let old = with_offsets(&[(id(1), 100), (id(2), 150), (id(3), 50)]);
        // new: A[0,100) B'[100,240) C'[240,400): an edit shortened B, and
        // C grew by an append.
        let new = [(id(1), 100), (id(12), 140), (id(13), 160)];
        let bases = overlapping_bases(&new, &old, |b| *b != id(1));
        assert_eq!(bases.get(&id(12)), Some(&id(2)));
        // C' [240,400) overlaps B by 10 and C by 50.
        assert_eq!(bases.get(&id(13)), Some(&id(3)));
        assert_eq!(bases.get(&id(1)), None, "unchanged blocks are not wanted");
    }

    #[test]
    fn blocks_past_the_old_end_have_no_base() {
        let old = with_offsets(&[(id(1), 100)]);
        let new = [(id(11), 100), (id(12), 100)];
        let bases = overlapping_bases(&new, &old, |_| true);
        assert_eq!(bases.get(&id(11)), Some(&id(1)));
        assert_eq!(bases.get(&id(12)), None);
        assert!(overlapping_bases(&new, &[], |_| true).is_empty());
    }
}
