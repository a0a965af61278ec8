//! Blocks: the one way in (cut, hash, store), and blocks at rest: the codec
//! (compress, encrypt, verify), the keys, and the only code that speaks to
//! the object store.

pub mod codec;
pub mod hash;
pub mod ingest;
pub mod keys;
pub mod store;

pub use codec::{BlockError, Codec};
pub use ingest::{Checkpoints, Ingest, IngestError};
pub use keys::{KeyRing, MasterKey};
pub use store::BlockStore;
