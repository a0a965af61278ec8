//! The sync engine's pure core. Three trees describe one synced folder:
//! *remote* (the server as of the journal cursor), *local* (the last scan
//! of the disk) and *synced* (the merge base: what both agreed on last).
//! The planner compares them path by path and says what to do; it does no
//! IO, so every rule is tested with tables.

pub mod planner;
pub mod tree;

pub use planner::{Op, plan};
pub use tree::{Node, NodeKind, Tree};
