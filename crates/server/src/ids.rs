//! Names the server makes up: node ids and the unique part of object
//! names. Both are stored often (a node id several times a file, an object
//! name twice a block), so they are written short.

/// Lowercase base32 in ASCII order: digits first (no name reads as a
/// command-line option), then letters without i, l, o and u.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new unique id: a UUIDv7 (time first, so new rows land at the end of
/// the indexes they key) in 26 characters of [`ALPHABET`] instead of the
/// 36 of hyphenated hex, still sorting in the order they were made.
pub fn new_id() -> String {
    let n = uuid::Uuid::now_v7().as_u128();
    (1..=26u32)
        .map(|i| {
            // The last character holds the 3 bits left, shifted up.
            let v = match 128u32.checked_sub(5 * i) {
                Some(shift) => n >> shift,
                None => n << (5 * i - 128),
            };
            char::from(ALPHABET[(v & 31) as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_unique_and_sort_as_they_were_made() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 26, "{id}");
            assert!(id.bytes().all(|b| ALPHABET.contains(&b)), "{id}");
        }
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
    }

    #[test]
    fn every_bit_of_the_uuid_is_kept() {
        // 26 characters of 5 bits hold 130 bits: the 128 of the uuid and
        // two zero bits at the end.
        let id = new_id();
        let last = ALPHABET
            .iter()
            .position(|&c| c == id.as_bytes()[25])
            .unwrap_or(99);
        assert_eq!(last & 3, 0, "{id}");
    }
}
