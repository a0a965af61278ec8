//! Background work of the server. A [`Worker`] does its work one step at a
//! time and says how long to wait before the next; one [`Runner`] runs them
//! all, keeps their status for the admin API, runs one at once when asked,
//! and stops them within a deadline on shutdown.

mod clock;
mod cold;
mod expiry;
mod gc;
mod lease;
mod recompress;
mod retention;
mod runner;
mod scrub;

use std::time::Duration;

use futures::future::BoxFuture;

pub use clock::Clock;
pub use cold::Cold;
pub use expiry::{Expired, Expiry};
pub use gc::Gc;
pub use lease::{LEASE, Leases};
pub use recompress::Recompress;
pub use retention::Retention;
pub use runner::{RunError, Runner, SHUTDOWN_DEADLINE, Workers};
pub use scrub::Scrub;

use crate::meta::MetaError;

/// What a step left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More work is waiting: step again soon.
    Busy { done: u64 },
    /// Nothing is left for now: wait [`Worker::wait`] (or a run-now).
    Idle { done: u64 },
}

impl Step {
    /// Items the step handled.
    pub fn done(self) -> u64 {
        match self {
            Step::Busy { done } | Step::Idle { done } => done,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Other(String),
}

/// One kind of background work. A step should end within seconds so the
/// worker stops promptly on shutdown; a long job is many steps.
pub trait Worker: Send + 'static {
    /// A short lower-case name, unique among the workers (`trash`).
    fn name(&self) -> &'static str;

    /// Does one step of work.
    fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>>;

    /// How long to wait after a step that left nothing to do.
    fn wait(&self) -> Duration;
}

pub use tessera_proto::api::{WorkerState, WorkerStatus, WorkersResponse};
