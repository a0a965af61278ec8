//! The sync daemon: keeps one folder in sync until told to stop. It runs a
//! round ([`Syncer::sync_once`]), then waits for whichever comes first: a
//! change on the server (a long poll of the journal), a change on disk (a
//! file watcher, debounced), a periodic rescan, or a command. Failures back
//! off with jitter; a folder that vanished (an unmounted disk) is waited
//! for, not refilled.
//!
//! A front end (the CLI, a desktop app, a test) drives it with
//! [`Command`]s through a [`Control`] and hears back typed [`Event`]s; it
//! prints or shows them as it likes. Nothing here writes to a terminal.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use rand::Rng;
use tokio::sync::mpsc;

use super::dirty::Dirty;
use super::engine::{CONFIRM_FILE, PAUSE_FILE, Report, SyncError, Syncer};
use super::scan::STATE_DIR;
use crate::remote::{ClientError, Remote};

/// How a daemon paces itself. The defaults are what `tessera sync` uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Rescan now and then even without events, in case the watcher
    /// missed one.
    pub rescan: Duration,
    /// How often a daemon whose folder vanished looks for it again.
    pub vanished_retry: Duration,
    /// How long a stop request lets the transfer in hand finish.
    pub stop_grace: Duration,
    /// How long a burst of writes on disk may settle before a scan.
    pub debounce: Duration,
    /// How long the server may hold one long poll, in seconds.
    pub poll_secs: u64,
    /// Carry out the deletions the mass-delete brake pauses, in the first
    /// round only (as a [`Command::ConfirmDeletes`] sent at start).
    pub allow_mass_delete: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_backoff: Duration::from_secs(60),
            rescan: Duration::from_secs(300),
            vanished_retry: Duration::from_secs(3),
            stop_grace: Duration::from_secs(3),
            debounce: Duration::from_millis(25),
            poll_secs: 60,
            allow_mass_delete: false,
        }
    }
}

/// What a front end can ask of a running daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stop, letting the transfer in hand finish for a moment; the text
    /// names the cause ("Ctrl-C", "SIGTERM") in the events that follow.
    Stop(String),
    /// Carry out the deletions the mass-delete brake paused, once.
    ConfirmDeletes,
    /// Sync now, as if something had changed.
    SyncNow,
}

/// What a daemon tells its front end.
#[derive(Debug)]
pub enum Event {
    /// Watching the folder; rounds follow.
    Started { root: PathBuf },
    /// A round finished.
    Synced(Report),
    /// What could not be synced (a paused mass deletion among them), when
    /// that differs from what was last said; empty once all went through.
    Stuck(Vec<String>),
    /// The folder or its sync state is gone (an unmounted disk?): nothing
    /// is synced until it is back. Said once.
    Vanished(SyncError),
    /// The vanished folder is back; syncing again.
    Back { root: PathBuf },
    /// A round failed; the next one starts after `retry_in`.
    Failed {
        error: SyncError,
        retry_in: Duration,
    },
    /// The long poll lost the server; it is asked again after `retry_in`.
    Offline {
        error: ClientError,
        retry_in: Duration,
    },
    /// The server asked to be left alone for `retry_in` (it is shutting
    /// down, or busy).
    ServerBackoff { retry_in: Duration },
    /// A stop was asked for; `grace` is how long the transfer in hand may
    /// still run, if one was running.
    Stopping {
        why: String,
        grace: Option<Duration>,
    },
    /// The transfer in hand did not finish within the grace and was
    /// dropped; the next sync redoes it.
    Abandoned,
    /// The daemon stopped; the folder's state is closed.
    Stopped { root: PathBuf },
    /// Syncing is paused (`tessera pause`): nothing is synced until resumed.
    Paused,
    /// Syncing resumed.
    Resumed,
}

/// The command side of a daemon. Made before the daemon so a front end can
/// also wait on it (for a vanished folder to come back, say) before a
/// folder is open; commands other than [`Command::Stop`] are kept until a
/// round can act on them.
pub struct Control {
    commands: mpsc::Receiver<Command>,
    /// A confirmation of paused deletions, for the next round.
    confirm: bool,
    /// Something asked for a round now.
    wake: bool,
}

enum Heard {
    Stop(String),
    Wake,
}

impl Control {
    pub fn new(commands: mpsc::Receiver<Command>) -> Self {
        Self {
            commands,
            confirm: false,
            wake: false,
        }
    }

    /// The next command that needs an answer now. A front end that drops
    /// its sender has gone away: that stops the daemon too.
    async fn next(&mut self) -> Heard {
        match self.commands.recv().await {
            Some(Command::Stop(why)) => Heard::Stop(why),
            Some(Command::ConfirmDeletes) => {
                self.confirm = true;
                self.wake = true;
                Heard::Wake
            }
            Some(Command::SyncNow) => {
                self.wake = true;
                Heard::Wake
            }
            None => Heard::Stop("the controller went away".into()),
        }
    }

    /// Waits for a stop request and names it.
    pub async fn stopped(&mut self) -> String {
        loop {
            if let Heard::Stop(why) = self.next().await {
                return why;
            }
        }
    }

    /// Sleeps for `d`, or less if a command wants a round now. Returns why,
    /// if asked to stop meanwhile.
    pub async fn sleep(&mut self, d: Duration) -> Option<String> {
        tokio::select! {
            _ = tokio::time::sleep(d) => None,
            heard = self.next() => match heard {
                Heard::Stop(why) => Some(why),
                Heard::Wake => None,
            },
        }
    }

    /// Runs `work`; on a stop request lets it finish for `grace`, then
    /// drops it. Dropping a round is as safe as a crash (downloads sit in
    /// `.tessera/tmp/` until verified; the trees are saved at the round's
    /// end). Returns the result if it finished, and whether to stop.
    async fn guard<F: Future>(
        &mut self,
        work: F,
        grace: Duration,
        emit: &mut impl FnMut(Event),
    ) -> (Option<F::Output>, bool) {
        tokio::pin!(work);
        let why = tokio::select! {
            out = &mut work => return (Some(out), false),
            why = self.stopped() => why,
        };
        emit(Event::Stopping {
            why,
            grace: Some(grace),
        });
        tokio::select! {
            out = &mut work => (Some(out), true),
            _ = tokio::time::sleep(grace) => {
                emit(Event::Abandoned);
                (None, true)
            }
            _ = self.stopped() => {
                emit(Event::Abandoned);
                (None, true)
            }
        }
    }
}

/// Full-jitter exponential backoff: a random wait up to
/// `1 s * 2^attempt`, never more than `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let cap = Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.min(6))
        .min(max);
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=cap_ms))
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("watching {0} for changes: {1}")]
    Watch(String, #[source] notify::Error),
    /// The server no longer takes this device's sign-in: it was revoked,
    /// a password change signed it out, or it expired. Retrying cannot
    /// help, so the sync stops and says so.
    #[error(
        "this device was signed out of {server} (revoked from another device, signed out by a \
         password change, or expired); syncing of {root} stopped with nothing lost: sign in \
         again with `tessera login --server {server}`, then run `tessera sync {root}`"
    )]
    SignedOut { server: String, root: String },
}

/// A 401: the server no longer knows this device's token.
fn signed_out(e: &ClientError) -> bool {
    e.status() == Some(401)
}

/// Whether to go on after a step.
enum Flow {
    Go,
    Stop,
}

/// Keeps one open folder in sync; see the module's documentation.
pub struct Daemon<E: FnMut(Event)> {
    syncer: Box<Syncer>,
    remote: Remote,
    config: Config,
    control: Control,
    emit: E,
    /// Where the watcher saw changes, for the next scan.
    dirty: Arc<Dirty>,
    /// Wakes the loop when something changed on disk.
    changed_tx: mpsc::Sender<()>,
    changed: mpsc::Receiver<()>,
    /// Rounds failed in a row, for the backoff.
    failures: u32,
    vanished: bool,
    /// The stuck list last told, so each is said once.
    said: Vec<String>,
    /// When the next whole scan is due whatever the watcher says. A
    /// deadline kept across waits: a timer started afresh in each wait
    /// would never fire while the server answers long polls sooner.
    next_rescan: tokio::time::Instant,
    /// The server refused this device's sign-in: stop for good.
    signed_out: bool,
    /// The pause was said and not yet lifted.
    paused: bool,
}

impl<E: FnMut(Event)> Daemon<E> {
    /// A daemon for the folder `syncer` holds, talking to `remote`,
    /// commanded through `control` and telling `emit` what happens.
    pub fn new(
        syncer: Box<Syncer>,
        remote: Remote,
        config: Config,
        control: Control,
        emit: E,
    ) -> Self {
        let (changed_tx, changed) = mpsc::channel(1);
        let mut control = control;
        control.confirm |= config.allow_mass_delete;
        let mut syncer = syncer;
        let dirty = Arc::new(Dirty::default());
        syncer.follow(dirty.clone());
        let next_rescan = tokio::time::Instant::now() + config.rescan;
        Self {
            next_rescan,
            dirty,
            syncer,
            remote,
            config,
            control,
            emit,
            changed_tx,
            changed,
            failures: 0,
            vanished: false,
            said: Vec::new(),
            signed_out: false,
            paused: false,
        }
    }

    /// One sync until nothing is left to do, as `tessera sync --once`:
    /// `None` if a stop request cut it short.
    pub async fn once(mut self) -> Result<Option<Report>, SyncError> {
        self.apply_limits();
        let (done, _) = self.round().await;
        self.syncer.close().await;
        done.transpose()
    }

    /// Syncs until asked to stop.
    pub async fn run(mut self) -> Result<(), DaemonError> {
        let mut watcher = Some(self.watch()?);
        let root = self.syncer.root().to_path_buf();
        if let Err(e) = self.syncer.stream_uploads().await {
            // Files then come down after their commit, as in `--once`.
            tracing::warn!(error = %e, "cannot fetch files while they upload");
        }
        (self.emit)(Event::Started { root: root.clone() });
        while let Flow::Go = self.step(&mut watcher).await? {}
        drop(watcher);
        self.syncer.close().await;
        (self.emit)(Event::Stopped { root: root.clone() });
        if self.signed_out {
            return Err(DaemonError::SignedOut {
                server: self.remote.server().trim_end_matches('/').to_owned(),
                root: root.display().to_string(),
            });
        }
        Ok(())
    }

    /// One `sync_once` under the stop guard, carrying a pending
    /// confirmation of paused deletions (kept for the next round if this
    /// one did not get through).
    async fn round(&mut self) -> (Option<Result<Report, SyncError>>, bool) {
        let confirm = std::mem::take(&mut self.control.confirm);
        self.syncer.allow_mass_delete = confirm;
        let out = self
            .control
            .guard(
                self.syncer.sync_once(),
                self.config.stop_grace,
                &mut self.emit,
            )
            .await;
        self.syncer.allow_mass_delete = false;
        if !matches!(out.0, Some(Ok(_))) {
            self.control.confirm |= confirm;
        }
        out
    }

    /// A round, then the wait before the next.
    async fn step(
        &mut self,
        watcher: &mut Option<notify::RecommendedWatcher>,
    ) -> Result<Flow, DaemonError> {
        self.apply_limits();
        if self.is_paused() {
            return Ok(self.wait_paused().await);
        }
        if std::mem::take(&mut self.paused) {
            (self.emit)(Event::Resumed);
            self.dirty.mark_all();
        }
        let (done, stopping) = self.round().await;
        let pause = match done {
            None => return Ok(Flow::Stop),
            Some(Ok(report)) => {
                self.finished(report, watcher)?;
                None
            }
            Some(Err(e @ SyncError::Vanished(_))) => {
                if !self.vanished {
                    self.vanished = true;
                    *watcher = None;
                    (self.emit)(Event::Vanished(e));
                }
                Some(self.config.vanished_retry)
            }
            Some(Err(SyncError::Remote(e))) if signed_out(&e) => {
                self.signed_out = true;
                return Ok(Flow::Stop);
            }
            Some(Err(error)) => {
                self.failures += 1;
                let retry_in = backoff(self.failures, self.config.max_backoff);
                (self.emit)(Event::Failed { error, retry_in });
                Some(retry_in)
            }
        };
        if stopping {
            return Ok(Flow::Stop);
        }
        Ok(match pause {
            Some(d) => self.pause(d).await,
            None => self.wait().await,
        })
    }

    fn finished(
        &mut self,
        report: Report,
        watcher: &mut Option<notify::RecommendedWatcher>,
    ) -> Result<(), DaemonError> {
        self.failures = 0;
        if self.vanished {
            self.vanished = false;
            let root = self.syncer.root().to_path_buf();
            (self.emit)(Event::Back { root });
            *watcher = Some(self.watch()?);
        }
        let stuck = report.stuck.clone();
        (self.emit)(Event::Synced(report));
        if stuck != self.said {
            self.said = stuck.clone();
            (self.emit)(Event::Stuck(stuck));
        }
        Ok(())
    }

    /// The folder's bandwidth limits as saved now (they may change while
    /// the sync runs).
    fn apply_limits(&self) {
        let dir = self.syncer.root().join(STATE_DIR);
        crate::transfer::limit::set(crate::transfer::limit::load(&dir));
    }

    fn is_paused(&self) -> bool {
        self.syncer.root().join(STATE_DIR).join(PAUSE_FILE).exists()
    }

    /// Waits, paused, for the pause to go (the watcher sees the file
    /// removed) or a stop; a slow look now and then covers a missed event.
    async fn wait_paused(&mut self) -> Flow {
        if !std::mem::replace(&mut self.paused, true) {
            (self.emit)(Event::Paused);
        }
        tokio::select! {
            _ = self.changed.recv() => Flow::Go,
            _ = tokio::time::sleep(Duration::from_secs(5)) => Flow::Go,
            heard = self.control.next() => match heard {
                Heard::Stop(why) => {
                    (self.emit)(Event::Stopping { why, grace: None });
                    Flow::Stop
                }
                Heard::Wake => Flow::Go,
            },
        }
    }

    /// Sleeps `d` before the next round, unless asked to stop.
    async fn pause(&mut self, d: Duration) -> Flow {
        match self.control.sleep(d).await {
            Some(why) => {
                (self.emit)(Event::Stopping { why, grace: None });
                Flow::Stop
            }
            None => Flow::Go,
        }
    }

    /// Waits for a reason to sync again.
    async fn wait(&mut self) -> Flow {
        if std::mem::take(&mut self.control.wake) {
            return Flow::Go;
        }
        if tokio::time::Instant::now() >= self.next_rescan {
            self.rescan_now();
            return Flow::Go;
        }
        let cursor = self.syncer.cursor().unwrap_or_default().to_owned();
        tokio::select! {
            polled = self.remote.poll(&cursor, self.config.poll_secs) => match polled {
                Ok(p) => match p.backoff {
                    Some(secs) => {
                        let retry_in = Duration::from_secs(secs)
                            + backoff(0, self.config.max_backoff);
                        (self.emit)(Event::ServerBackoff { retry_in });
                        self.pause(retry_in).await
                    }
                    None => Flow::Go,
                },
                // The server said when to come back (too many clients
                // arriving at once, a failover): it spread its answers, so
                // obey it, with a little jitter of our own.
                Err(error) if error.retry_after().is_some() => {
                    let told = error.retry_after().unwrap_or_default();
                    let retry_in = told + backoff(0, self.config.max_backoff);
                    (self.emit)(Event::ServerBackoff { retry_in });
                    self.pause(retry_in).await
                }
                Err(error) if signed_out(&error) => {
                    self.signed_out = true;
                    Flow::Stop
                }
                Err(error) => {
                    self.failures += 1;
                    let retry_in = backoff(self.failures, self.config.max_backoff);
                    (self.emit)(Event::Offline { error, retry_in });
                    self.pause(retry_in).await
                }
            },
            _ = self.changed.recv() => {
                // Let a burst of writes settle before scanning.
                tokio::time::sleep(self.config.debounce).await;
                while self.changed.try_recv().is_ok() {}
                Flow::Go
            }
            _ = tokio::time::sleep_until(self.next_rescan) => {
                self.rescan_now();
                Flow::Go
            }
            heard = self.control.next() => match heard {
                Heard::Stop(why) => {
                    (self.emit)(Event::Stopping { why, grace: None });
                    Flow::Stop
                }
                Heard::Wake => {
                    self.dirty.mark_all();
                    Flow::Go
                }
            },
        }
    }

    /// Watches the folder; events wake [`Daemon::wait`].
    /// The safety net: a whole scan now and then, whatever the watcher
    /// said (it can miss events: a queue overflow, a write through a hard
    /// link from outside the folder).
    fn rescan_now(&mut self) {
        self.dirty.mark_all();
        self.next_rescan = tokio::time::Instant::now() + self.config.rescan;
    }

    fn watch(&self) -> Result<notify::RecommendedWatcher, DaemonError> {
        let root = self.syncer.root();
        let fail = |e| DaemonError::Watch(root.display().to_string(), e);
        // Events missed while there was no watcher are found by a whole scan.
        self.dirty.mark_all();
        let mut w = watcher(root, self.changed_tx.clone(), self.dirty.clone()).map_err(fail)?;
        w.watch(root, notify::RecursiveMode::Recursive)
            .map_err(fail)?;
        Ok(w)
    }
}

/// A watcher that signals `tx` on changes under `root` and marks where in
/// `dirty`, not counting the sync state's own writes (except a confirmation
/// of paused deletions, which only wakes).
fn watcher(
    root: &Path,
    tx: mpsc::Sender<()>,
    dirty: Arc<Dirty>,
) -> notify::Result<notify::RecommendedWatcher> {
    let root = root.to_path_buf();
    let state_dir = root.join(STATE_DIR);
    let confirm = state_dir.join(CONFIRM_FILE);
    let pause = state_dir.join(PAUSE_FILE);
    let selection = state_dir.join(super::engine::selection::SELECTION_FILE);
    let limits = state_dir.join(crate::transfer::limit::LIMITS_FILE);
    notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let ev = match res {
            Ok(ev) => ev,
            // Events may have been lost: look at everything.
            Err(_) => {
                dirty.mark_all();
                let _ = tx.try_send(());
                return;
            }
        };
        // Reads (the scan opening folders) are no change: waking on them
        // made every round start the next.
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        if ev.need_rescan() {
            dirty.mark_all();
        }
        let mut woke = false;
        for p in &ev.paths {
            if *p == limits {
                // At once, not after the round under way: a large upload
                // can take that round for minutes.
                crate::transfer::limit::set(crate::transfer::limit::load(&state_dir));
                woke = true;
            } else if *p == confirm || *p == pause || *p == selection {
                woke = true;
            } else if !p.starts_with(&state_dir) {
                woke = true;
                match p.strip_prefix(&root).ok().and_then(Path::to_str) {
                    Some(rel) => dirty.mark(rel.replace(std::path::MAIN_SEPARATOR, "/")),
                    None => dirty.mark_all(),
                }
            }
        }
        if woke || ev.need_rescan() {
            let _ = tx.try_send(());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_cap() {
        let max = Duration::from_secs(60);
        for attempt in 0..20 {
            let cap = Duration::from_secs(1 << attempt.min(6)).min(max);
            for _ in 0..50 {
                assert!(backoff(attempt, max) <= cap, "attempt {attempt}");
            }
        }
    }

    #[tokio::test]
    async fn commands_other_than_stop_are_kept_for_the_next_round() {
        let (tx, rx) = mpsc::channel(4);
        let mut control = Control::new(rx);
        tx.send(Command::ConfirmDeletes).await.ok();
        tx.send(Command::Stop("test".into())).await.ok();
        assert_eq!(control.stopped().await, "test");
        assert!(control.confirm && control.wake);
        drop(tx);
        assert_eq!(
            control.sleep(Duration::from_secs(60)).await.as_deref(),
            Some("the controller went away")
        );
    }
}
