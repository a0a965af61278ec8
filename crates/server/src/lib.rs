//! The Tessera server: HTTP API over a block store and a metadata store.

pub mod api;
pub mod auth;
pub mod blocks;
pub mod fsck;
pub mod ids;
pub mod instance;
pub mod listen;
pub mod meta;
pub mod metrics;
pub mod notify;
mod private;
pub mod proxy;
pub mod retention;
pub mod server;
pub mod turns;
pub mod uploads;
pub mod web;
pub mod workers;

pub use server::{Config, Running, ServeError, open_existing, start};
