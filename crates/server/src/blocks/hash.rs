//! A BLAKE3 hash that can stop and resume across processes.
//!
//! `blake3::Hasher` cannot be saved, but BLAKE3 is a tree: the input is cut
//! into aligned segments of `2^k` chunks, each hashed on its own into a
//! chaining value (32 bytes) that can be stored, and the root is merged from
//! those at the end. To resume, load the stored values and feed the bytes of
//! the unfinished segment again.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// Segment length: a power-of-two number of 1 KiB chunks. 16 MiB keeps the
/// saved state of a 10 GiB file at 20 KiB and what is re-read on resume at
/// most one segment.
pub const SEGMENT: u64 = 16 << 20;

pub struct SegmentHasher {
    segment: u64,
    done: Vec<ChainingValue>,
    current: blake3::Hasher,
    /// Bytes fed into `current`.
    in_current: u64,
}

impl SegmentHasher {
    pub fn new() -> Self {
        Self::with_segment(SEGMENT)
    }

    /// `segment` must be a power of two and at least one chunk (tests use
    /// small ones).
    pub fn with_segment(segment: u64) -> Self {
        debug_assert!(segment.is_power_of_two() && segment >= blake3::CHUNK_LEN as u64);
        Self {
            segment,
            done: Vec::new(),
            current: blake3::Hasher::new(),
            in_current: 0,
        }
    }

    /// Resumes from saved chaining values; the caller then feeds the bytes
    /// from [`Self::resume_offset`] on.
    pub fn resume(saved: &[u8]) -> Option<Self> {
        Self::resume_with_segment(saved, SEGMENT)
    }

    pub fn resume_with_segment(saved: &[u8], segment: u64) -> Option<Self> {
        if !saved.len().is_multiple_of(32) {
            return None;
        }
        let done: Vec<ChainingValue> = saved
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        let mut current = blake3::Hasher::new();
        current.set_input_offset(done.len() as u64 * segment);
        Some(Self {
            segment,
            done,
            current,
            in_current: 0,
        })
    }

    /// Where the bytes fed after [`Self::resume`] must start.
    pub fn resume_offset(&self) -> u64 {
        self.done.len() as u64 * self.segment + self.in_current
    }

    /// Total bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.resume_offset()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.in_current == self.segment {
                // A segment is closed only once input goes on past it: the
                // last segment of a file must stay open for the root.
                self.done.push(self.current.finalize_non_root());
                self.current = blake3::Hasher::new();
                self.current
                    .set_input_offset(self.done.len() as u64 * self.segment);
                self.in_current = 0;
            }
            let room = (self.segment - self.in_current) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.current.update(now);
            self.in_current += now.len() as u64;
            data = rest;
        }
    }

    /// The chaining values of the segments that no longer change, for
    /// saving; the first `n` of them cover the first `n * segment` bytes.
    pub fn saved(&self, up_to: u64) -> Vec<u8> {
        let n = ((up_to / self.segment) as usize).min(self.done.len());
        self.done[..n].concat()
    }

    pub fn finalize(&self) -> blake3::Hash {
        if self.done.is_empty() {
            return self.current.finalize();
        }
        let mut leaves = self.done.clone();
        leaves.push(self.current.finalize_non_root());
        let total = self.len();
        let (left, right) = self.split(&leaves, total);
        merge_subtrees_root(&left, &right, Mode::Hash)
    }

    /// Merges `leaves` (segments of `self.segment`, the last possibly
    /// shorter, `total` bytes in all) into the two children of their root.
    fn split(&self, leaves: &[ChainingValue], total: u64) -> (ChainingValue, ChainingValue) {
        let left_len = left_subtree_len(total);
        let n = (left_len / self.segment) as usize;
        (
            self.merge(&leaves[..n], left_len),
            self.merge(&leaves[n..], total - left_len),
        )
    }

    fn merge(&self, leaves: &[ChainingValue], total: u64) -> ChainingValue {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let (left, right) = self.split(leaves, total);
        merge_subtrees_non_root(&left, &right, Mode::Hash)
    }
}

impl Default for SegmentHasher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn equals_blake3_for_all_shapes() {
        for segment in [1024u64, 4096] {
            for len in [
                0, 1, 1023, 1024, 1025, 4095, 4096, 4097, 8192, 12288, 12289, 40_000, 65_536,
                70_001,
            ] {
                let input = data(len);
                let mut h = SegmentHasher::with_segment(segment);
                // Odd pieces, to cross segment ends mid-update.
                for piece in input.chunks(777) {
                    h.update(piece);
                }
                assert_eq!(
                    h.finalize(),
                    blake3::hash(&input),
                    "len {len} segment {segment}"
                );
            }
        }
    }

    #[test]
    fn resumes_from_saved_state() {
        let segment = 2048u64;
        let input = data(50_000);
        for stop in [0usize, 100, 2048, 2049, 10_000, 49_999, 50_000] {
            let mut first = SegmentHasher::with_segment(segment);
            first.update(&input[..stop]);
            let saved = first.saved(stop as u64);
            let mut second = SegmentHasher::resume_with_segment(&saved, segment).unwrap();
            let from = second.resume_offset() as usize;
            assert!(from <= stop);
            second.update(&input[from..]);
            assert_eq!(second.finalize(), blake3::hash(&input), "stop {stop}");
        }
        assert!(SegmentHasher::resume(&[0u8; 31]).is_none());
    }
}
