//! Blocks: the one way in (cut, hash, store), and blocks at rest: the codec
//! (compress, encrypt, verify), the keys, the block store and the object
//! stores behind it (main, cold, replicas).
//!
//! Invariants:
//!
//! - Only `tiers.rs` speaks to an object store, and every read verifies the
//!   hash: damage is an error, never wrong bytes. A read that finds the
//!   main copy damaged (authentication, hash or length fails, or the object
//!   is gone) reads a replica's and rewrites the main copy; with no sound
//!   copy it marks the block `damaged_ms`.
//! - Objects are never overwritten. Every write goes to a name of its own,
//!   created with `PutMode::Create`, so the record of a block (object, offset,
//!   length) always names exactly the bytes its own write put there. The one
//!   exception restores those very bytes: a damaged copy rewritten from a
//!   copy in which every recorded block of the object opens. Two
//!   uploads of the same new block racing each write their own object;
//!   `record_blocks` keeps the first (`ON CONFLICT DO NOTHING`, and the loser
//!   learns it lost), and the losing object is deleted after the answer.
//! - A block is recorded in the database only after its object is durably
//!   stored, so the metadata never points at nothing.
//! - A damaged block is never deduplicated against: it counts as missing for
//!   every user (`missing`, commits), and the next upload of its bytes
//!   replaces the record with its own copy (compared and swapped on the old
//!   location, so two repairs cannot both win). An upload whose copy lost to
//!   an existing record reads that record's copy after the answer and
//!   replaces it if it is damaged, so damage nobody has read yet is repaired
//!   too.
//! - Dedup is no oracle, in time either: an upload of a block the user does
//!   not hold does the same work whether or not anyone else stores it
//!   (verify, seal, write its own object, fsync, record); only after the
//!   answer is a duplicate copy checked against the stored one and deleted.
//!   A copy left behind by a crash between the write and the cleanup is
//!   referenced by nothing; a sweep of the store can take it. A block the
//!   user already holds soundly is skipped at once: that tells them nothing
//!   new.
//! - A cheap request cannot make the store do expensive work. A pack is
//!   refused (nothing stored) if it names a block twice (400), carries a
//!   block over 256 KiB before or after decompression, or inflates past
//!   32 MiB in all (413); decompression stops at the cap. `/blocks/fetch`
//!   answers each distinct block once, checks from the metadata before
//!   reading anything both the answer's size and what reading costs (32 MiB
//!   each, stored and plain), and streams the answer two blocks ahead.

pub mod aead;
pub mod codec;
pub mod hash;
pub mod ingest;
pub mod keys;
pub mod store;
pub mod tiers;

pub use codec::{BlockError, Codec};
pub use ingest::{Checkpoints, Ingest, IngestError};
pub use keys::{KeyRing, MasterKey};
pub use store::BlockStore;
