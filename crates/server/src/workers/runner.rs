//! One task per worker, their statuses in one shared map, run-now, and a
//! shutdown that waits at most a deadline. With [`Leases`], a worker's
//! periodic steps run only while this instance holds its lease; a run-now
//! runs here whoever holds it (an admin asked this instance).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::lease::{LEASE, Leases};
use super::{Step, Worker, WorkerError, WorkerState, WorkerStatus};
use crate::meta::now_ms;

/// How long shutdown waits for the workers to end their steps.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The first wait after a failed step; it doubles with each failure in a
/// row, up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

struct Slot {
    status: watch::Sender<WorkerStatus>,
    wake: Notify,
    /// Steps begun; `status.runs` counts the ones that ended.
    started: AtomicU64,
    /// A run-now is waiting: the next step runs without the lease.
    asked: AtomicBool,
}

struct Inner {
    slots: BTreeMap<&'static str, Slot>,
    stop: watch::Sender<bool>,
    leases: Option<Leases>,
}

/// The running workers as the API sees them: statuses and run-now.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no worker named `{name}`: the workers are {known}")]
    Unknown { name: String, known: String },
    #[error("the server is shutting down")]
    Stopped,
}

impl Workers {
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        let slots = self.inner.slots.values();
        slots.map(|s| s.status.borrow().clone()).collect()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.inner.slots.keys().copied().collect()
    }

    /// Tells every worker to stop after its current step.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Runs a step of `name` now (after the one under way, if any) and
    /// answers the status after it.
    pub async fn run_now(&self, name: &str) -> Result<WorkerStatus, RunError> {
        let slot = self
            .inner
            .slots
            .get(name)
            .ok_or_else(|| RunError::Unknown {
                name: name.to_owned(),
                known: self.names().join(", "),
            })?;
        let mut status = slot.status.subscribe();
        let mut stop = self.inner.stop.subscribe();
        if *stop.borrow() {
            return Err(RunError::Stopped);
        }
        // The first step to begin from here on.
        let target = slot.started.load(Ordering::SeqCst) + 1;
        slot.asked.store(true, Ordering::SeqCst);
        slot.wake.notify_one();
        tokio::select! {
            ended = status.wait_for(|s| s.runs >= target) => {
                ended.map(|s| s.clone()).map_err(|_| RunError::Stopped)
            }
            _ = stop.wait_for(|stopped| *stopped) => Err(RunError::Stopped),
        }
    }
}

/// Runs the workers, each on its own task, until [`Runner::shutdown`].
pub struct Runner {
    workers: Workers,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Runner {
    /// Runs `list`; with `leases`, each worker's periodic steps only while
    /// this instance holds its lease.
    pub fn start(list: Vec<Box<dyn Worker>>, leases: Option<Leases>) -> Self {
        Self::start_with_backoff(list, leases, BACKOFF_BASE)
    }

    fn start_with_backoff(
        list: Vec<Box<dyn Worker>>,
        leases: Option<Leases>,
        backoff: Duration,
    ) -> Self {
        let mut slots = BTreeMap::new();
        let mut kept = Vec::new();
        for worker in list {
            let name = worker.name();
            if slots.contains_key(name) {
                tracing::error!(
                    worker = name,
                    "two workers have this name: the second is not run"
                );
                continue;
            }
            let mut status = WorkerStatus::new(name);
            status.next_run_ms = Some(now_ms().saturating_add(millis(worker.wait())));
            let slot = Slot {
                status: watch::Sender::new(status),
                wake: Notify::new(),
                started: AtomicU64::new(0),
                asked: AtomicBool::new(false),
            };
            slots.insert(name, slot);
            kept.push(worker);
        }
        let inner = Arc::new(Inner {
            slots,
            stop: watch::Sender::new(false),
            leases,
        });
        let tasks = kept
            .into_iter()
            .map(|w| (w.name(), tokio::spawn(drive(w, inner.clone(), backoff))))
            .collect();
        Self {
            workers: Workers { inner },
            tasks,
        }
    }

    pub fn workers(&self) -> Workers {
        self.workers.clone()
    }

    /// Stops the workers, waiting at most `deadline` for the steps under
    /// way; a worker still in its step then is aborted, and logged.
    pub async fn shutdown(self, deadline: Duration) {
        self.workers.stop();
        let end = tokio::time::Instant::now() + deadline;
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(end, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(worker = name, error = %e, "worker task failed"),
                Err(_) => {
                    task.abort();
                    tracing::warn!(
                        worker = name,
                        ?deadline,
                        "worker did not stop within the shutdown deadline: aborted"
                    );
                }
            }
        }
        if let Some(leases) = &self.workers.inner.leases {
            leases.release().await;
        }
    }
}

/// One worker's loop: wait (the worker's wait, a back-off, or nothing when
/// busy; a run-now cuts it short), step, record, until told to stop.
async fn drive(mut worker: Box<dyn Worker>, inner: Arc<Inner>, backoff: Duration) {
    let name = worker.name();
    let Some(slot) = inner.slots.get(name) else {
        return;
    };
    let mut stop = inner.stop.subscribe();
    // The first step comes after one wait: a start does not rush the work.
    let mut pause = worker.wait();
    loop {
        let next = now_ms().saturating_add(millis(pause));
        slot.status.send_modify(|s| s.next_run_ms = Some(next));
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = slot.wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        let asked = slot.asked.swap(false, Ordering::SeqCst);
        let mut holder = None;
        // Held through the step and the wait after it.
        let hold = worker.wait().saturating_add(LEASE);
        if let Some(leases) = &inner.leases {
            match leases.take(name, hold).await {
                Ok(None) => holder = Some(leases.holder().to_owned()),
                Ok(Some(other)) if !asked => {
                    standby(slot, other);
                    pause = worker.wait();
                    continue;
                }
                // Asked for here: it runs here, whoever holds the lease.
                Ok(Some(_)) => holder = Some(leases.holder().to_owned()),
                Err(e) if !asked => {
                    let failed = Err(WorkerError::Other(format!("the worker's lease: {e}")));
                    pause = record(slot, name, failed, worker.wait(), backoff);
                    continue;
                }
                Err(_) => {}
            }
        }
        slot.started.fetch_add(1, Ordering::SeqCst);
        slot.status.send_modify(|s| {
            s.state = WorkerState::Busy;
            s.next_run_ms = None;
            s.holder = holder;
        });
        // A panicking step is a failed step: the worker carries on.
        let step = AssertUnwindSafe(worker.step()).catch_unwind();
        let outcome = match renewing(step, inner.leases.as_ref(), name, hold).await {
            Ok(result) => result,
            Err(_) => Err(WorkerError::Other("the step panicked".into())),
        };
        pause = record(slot, name, outcome, worker.wait(), backoff);
    }
}

/// Another instance holds the worker's lease and runs it.
fn standby(slot: &Slot, holder: String) {
    slot.status.send_modify(|s| {
        s.state = WorkerState::Standby;
        s.holder = Some(holder);
    });
}

/// Awaits `step`, renewing the worker's lease meanwhile so that a long
/// step does not let it lapse.
async fn renewing<T>(
    step: impl std::future::Future<Output = T>,
    leases: Option<&Leases>,
    name: &str,
    hold: Duration,
) -> T {
    let Some(leases) = leases else {
        return step.await;
    };
    tokio::pin!(step);
    loop {
        tokio::select! {
            out = &mut step => return out,
            _ = tokio::time::sleep(LEASE / 3) => match leases.take(name, hold).await {
                Ok(None) => {}
                Ok(Some(other)) => tracing::warn!(
                    worker = name,
                    holder = other,
                    "another instance holds this worker's lease: both run it this once"
                ),
                Err(e) => tracing::warn!(worker = name, error = %e, "the worker's lease was not renewed"),
            },
        }
    }
}

/// Puts a step's outcome in the status; returns how long to wait next.
fn record(
    slot: &Slot,
    name: &str,
    outcome: Result<Step, WorkerError>,
    wait: Duration,
    backoff: Duration,
) -> Duration {
    let mut pause = wait;
    slot.status.send_modify(|s| {
        s.runs += 1;
        s.last_run_ms = Some(now_ms());
        match &outcome {
            Ok(step) => {
                s.last_done = step.done();
                s.last_error = None;
                s.failures = 0;
                s.state = match step {
                    Step::Busy { .. } => {
                        pause = Duration::ZERO;
                        WorkerState::Busy
                    }
                    Step::Idle { .. } => WorkerState::Idle,
                };
            }
            Err(e) => {
                s.last_done = 0;
                s.last_error = Some(e.to_string());
                s.failures += 1;
                s.state = WorkerState::Failed;
                pause = backoff_after(backoff, s.failures);
                tracing::warn!(worker = name, error = %e, failures = s.failures, "worker step failed");
            }
        }
    });
    pause
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `base` doubled for each failure after the first, at most [`BACKOFF_MAX`].
fn backoff_after(base: Duration, failures: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16) as u32;
    base.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Instant;

    use futures::future::BoxFuture;

    use super::*;

    /// Steps as `script` says, in turn; `None` never returns.
    struct Scripted {
        name: &'static str,
        wait: Duration,
        script: Vec<Option<Result<Step, &'static str>>>,
        at: usize,
    }

    impl Scripted {
        fn new(name: &'static str, wait: Duration) -> Self {
            Self {
                name,
                wait,
                script: Vec::new(),
                at: 0,
            }
        }

        fn then(mut self, step: Option<Result<Step, &'static str>>) -> Self {
            self.script.push(step);
            self
        }
    }

    impl Worker for Scripted {
        fn name(&self) -> &'static str {
            self.name
        }

        fn step(&mut self) -> BoxFuture<'_, Result<Step, WorkerError>> {
            let next = self
                .script
                .get(self.at)
                .cloned()
                .unwrap_or(Some(Ok(Step::Idle { done: 0 })));
            self.at += 1;
            async move {
                match next {
                    None => futures::future::pending().await,
                    Some(r) => r.map_err(|e| WorkerError::Other(e.into())),
                }
            }
            .boxed()
        }

        fn wait(&self) -> Duration {
            self.wait
        }
    }

    async fn until(
        workers: &Workers,
        name: &str,
        fact: impl Fn(&WorkerStatus) -> bool,
    ) -> WorkerStatus {
        let mut rx = workers.inner.slots[name].status.subscribe();
        let seen = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| fact(s)))
            .await
            .expect("the status comes to pass within 10 s")
            .expect("the worker is there");
        seen.clone()
    }

    #[tokio::test]
    async fn a_worker_that_never_returns_is_cut_at_the_deadline() {
        let stuck = Scripted::new("stuck", Duration::from_millis(1)).then(None);
        let calm = Scripted::new("calm", Duration::from_secs(3600));
        let runner = Runner::start(vec![Box::new(stuck), Box::new(calm)], None);
        let workers = runner.workers();
        until(&workers, "stuck", |s| s.state == WorkerState::Busy).await;
        let t = Instant::now();
        runner.shutdown(Duration::from_millis(300)).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "returned after {took:?}"
        );
        assert!(took < Duration::from_secs(5), "returned after {took:?}");
        assert!(matches!(
            workers.run_now("calm").await,
            Err(RunError::Stopped)
        ));
    }

    #[tokio::test]
    async fn a_failing_worker_shows_its_error_and_keeps_going() {
        let flaky = Scripted::new("flaky", Duration::from_millis(1))
            .then(Some(Err("the disk is on fire")))
            .then(Some(Err("the disk is on fire")))
            .then(Some(Ok(Step::Idle { done: 7 })));
        let runner =
            Runner::start_with_backoff(vec![Box::new(flaky)], None, Duration::from_millis(10));
        let workers = runner.workers();
        let failed = until(&workers, "flaky", |s| s.failures == 2).await;
        assert_eq!(failed.state, WorkerState::Failed);
        assert_eq!(failed.last_error.as_deref(), Some("the disk is on fire"));
        let back = until(&workers, "flaky", |s| s.runs >= 3).await;
        assert_eq!(back.last_error, None);
        assert_eq!(back.failures, 0);
        assert_eq!(back.runs, 3);
        assert_eq!(back.last_done, 7);
        runner.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn run_now_wakes_an_idle_worker() {
        let sleepy = Scripted::new("sleepy", Duration::from_secs(3600))
            .then(Some(Ok(Step::Idle { done: 3 })));
        let runner = Runner::start(vec![Box::new(sleepy)], None);
        let workers = runner.workers();
        let before = workers.statuses();
        assert_eq!(before[0].runs, 0);
        assert!(before[0].next_run_ms.is_some());
        let t = Instant::now();
        let after = tokio::time::timeout(Duration::from_secs(10), workers.run_now("sleepy"))
            .await
            .expect("run-now answers")
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!((after.runs, after.last_done), (1, 3));
        assert_eq!(after.state, WorkerState::Idle);
        let again = workers.run_now("sleepy").await.unwrap();
        assert_eq!(again.runs, 2);
        match workers.run_now("nope").await {
            Err(RunError::Unknown { known, .. }) => assert_eq!(known, "sleepy"),
            other => panic!("{other:?}"),
        }
        runner.shutdown(Duration::from_secs(1)).await;
    }

    #[test]
    fn back_off_doubles_up_to_its_cap() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff_after(base, 1), base);
        assert_eq!(backoff_after(base, 3), base * 4);
        assert_eq!(backoff_after(base, 60), BACKOFF_MAX);
    }
}
