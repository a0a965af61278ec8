//! Benchmarks for Tessera: the block pipeline stage by stage on real files,
//! and whole-file transfers over loopback with the release binary.
//!
//! Throughput is always in MB/s with 1 MB = 10^6 bytes, counted on the
//! plaintext bytes a stage handles, so the stages compare directly.

mod cluster;
mod metadata;
mod peers;
mod pipeline;
mod sync_bench;
mod transfer;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tessera-bench",
    about = "Measure Tessera's block pipeline and loopback transfers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Throughput of each block pipeline stage, single-threaded, on real files.
    Pipeline(pipeline::Args),
    /// put and get of one large file over loopback with the release binary.
    Transfer(transfer::Args),
    /// Sync figures: propagation latency, many small files, small edits of a large file.
    Sync(sync_bench::Args),
    /// Several instances on one database, started elsewhere (scripts/cluster-test.sh).
    #[command(subcommand)]
    Cluster(cluster::Command),
    /// Listings and metadata reads per second on PostgreSQL through 1 and several instances.
    Metadata(metadata::Args),
    /// Tessera beside rsync and Syncthing on loopback: times and bytes on the wire, W1–W4.
    Peers(peers::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Pipeline(args) => pipeline::run(args),
        Command::Transfer(args) => transfer::run(args),
        Command::Sync(args) => sync_bench::run(args),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Metadata(args) => metadata::run(args),
        Command::Peers(args) => peers::run(args),
    }
}

/// MB/s for `bytes` handled in `time`.
pub(crate) fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64().max(1e-9)
}
