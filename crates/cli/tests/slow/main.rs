//! Slow end-to-end tests: processes killed at random points and
//! randomized sync rounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod lifecycle_kill;
mod sync_random;
mod tus_kill;
