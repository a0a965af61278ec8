//! Two-way folder sync. Three trees describe one synced folder: *remote*
//! (the server as of the journal cursor), *local* (the last scan of the
//! disk) and *synced* (the merge base: what both agreed on last). The
//! planner (pure, no IO) compares them and says what to do; the engine
//! pulls the journal, scans, and carries the plan out.

pub mod brake;
pub mod case;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod planner;
pub mod scan;
pub mod state;
pub mod status;
pub mod tree;

pub use engine::{Report, SyncError, Syncer};
pub use planner::{Op, Phase, Plan, Step, plan};
pub use tree::{Node, NodeKind, Tree};
