//! End-to-end tests: a real server on loopback, real HTTP, real files,
//! on SQLite and PostgreSQL. One binary, so the suite links once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod access;
mod account;
mod api;
mod backup;
mod blocks;
mod changes;
mod cli;
mod cluster;
mod daemon;
mod deltas;
mod failover;
mod fsck;
mod lifecycle;
mod limits;
mod links;
mod metrics;
mod names;
mod openapi;
mod quota;
mod resume;
mod rotation;
mod s3;
mod search;
mod shares;
mod sync;
mod tiers;
mod tree;
mod tus;
mod web;
mod workers;
