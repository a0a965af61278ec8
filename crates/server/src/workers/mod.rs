//! Background work of the server. A [`Worker`] does its work one step at a
//! time and says how long to wait before the next; one [`Runner`] runs them
//! all, keeps their status for the admin API, runs one at once when asked,
//! and stops them within a deadline on shutdown. Garbage collection,
//! retention, scrub and cold-tier moves are to be workers too.

mod clock;
mod expiry;
mod runner;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;

pub use clock::Clock;
pub use expiry::{PendingExpiry, TrashExpiry, UploadExpiry};
pub use runner::{RunError, Runner, SHUTDOWN_DEADLINE, Workers};

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

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Waiting for its next run.
    Idle,
    /// In a step.
    Busy,
    /// Its last step failed; it will try again after a back-off.
    Failed,
}

/// A worker's status, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    /// Steps run since the server started.
    pub runs: u64,
    /// When the last step ended (ms since the Unix epoch).
    pub last_run_ms: Option<i64>,
    /// Items the last step handled.
    pub last_done: u64,
    /// Why the last step failed; cleared by the next success.
    pub last_error: Option<String>,
    /// Steps in a row that failed.
    pub failures: u64,
    /// When the next step is due (ms since the Unix epoch), while waiting.
    pub next_run_ms: Option<i64>,
}

impl WorkerStatus {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: WorkerState::Idle,
            runs: 0,
            last_run_ms: None,
            last_done: 0,
            last_error: None,
            failures: 0,
            next_run_ms: None,
        }
    }
}

/// The admin API's list of workers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkersResponse {
    pub workers: Vec<WorkerStatus>,
}
