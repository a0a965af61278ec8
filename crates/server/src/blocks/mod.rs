//! Blocks at rest: the codec (compress, encrypt, verify), the keys, and the
//! only code that speaks to the object store.

pub mod codec;
pub mod keys;
pub mod store;

pub use codec::{BlockError, Codec};
pub use keys::{KeyRing, MasterKey};
pub use store::BlockStore;
