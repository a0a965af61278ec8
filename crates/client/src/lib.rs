//! Tessera's client side: the HTTP remote and file transfers over the
//! block protocol. No terminal or argument parsing lives here.

pub mod remote;
pub mod sync;
pub mod transfer;

pub use remote::{ClientError, Remote};
