//! Two-way folder sync. Three trees describe one synced folder: *remote*
//! (the server as of the journal cursor), *local* (the last scan of the
//! disk) and *synced* (the merge base: what both agreed on last). The
//! planner (pure, no IO) compares them and says what to do; the engine
//! pulls the journal, scans, and carries the plan out.
//!
//! Invariants:
//!
//! - The planner does no IO; the executor re-checks the disk against the plan
//!   before replacing, moving or removing anything, and removes files only
//!   into `.tessera/trash/`.
//! - Sync never renames or removes a local file to make room for a server
//!   name, and never downloads over a local file of another spelling: in a
//!   folder that ignores case, a server name that clashes is left out and
//!   listed (`case.rs`), not fetched.
//! - A crash anywhere in a round is harmless: the trees are saved at the end
//!   of the round, and on the next run a change that landed on both sides
//!   appears as "both changed alike", which the planner records without
//!   moving bytes.
//! - The remote tree is the server's tree at the cursor and changes only by
//!   pulling the journal (every round pulls before it plans); what this
//!   device did is recorded at once in the synced tree alone. Applying its
//!   own operations to the remote tree as well broke when an answer was lost:
//!   the journal's replay of that operation then ran onto a tree a later
//!   operation had already changed (found by the network faults of the
//!   randomized test).
//! - A round refuses to run when the folder or its `.tessera/state.db` is
//!   missing (`SyncError::Vanished`), checked before and after the scan: a
//!   scan of an unmounted disk must not become deletions, and nothing is
//!   written onto the disk underneath.
//! - A running daemon scans only where its watcher saw changes
//!   (`dirty.rs`, `scan::rescan`), plus where its own round wrote; a whole
//!   scan comes first, after lost events, on a timer, and whenever a plan
//!   from a partial scan would delete or move anything on the server: that
//!   something is missing from disk is only ever concluded from a look at
//!   all of it.
//! - Skips (case clashes, two spellings of one name, unreadable entries) go
//!   into `Report::skipped`; `Report::warnings` holds only those not reported
//!   before, so a daemon prints each once per change. `sync --once` and
//!   `status` never say "in sync" while anything is skipped.

pub mod brake;
pub mod case;
pub mod daemon;
pub mod dirty;
pub mod engine;
pub mod error;
pub mod planner;
pub mod prefetch;
pub mod scan;
pub mod state;
pub mod status;
pub mod tree;

pub use engine::{Report, SyncError, Syncer};
pub use planner::{Op, Phase, Plan, Step, plan};
pub use tree::{Node, NodeKind, Tree};
