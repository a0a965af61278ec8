//! `tessera sync`, `tessera status`, `tessera conflicts`.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use notify::Watcher;
use rand::Rng;
use tessera_client::Remote;
use tessera_client::sync::engine::{CONFIRM_FILE, SyncError};
use tessera_client::sync::scan::STATE_DIR;
use tessera_client::sync::{Op, Report, Syncer};

use crate::{links, profile};

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Rescan now and then even without events, in case the watcher missed one.
const RESCAN: Duration = Duration::from_secs(300);
/// How often a daemon whose folder vanished looks for it again.
const VANISHED_RETRY: Duration = Duration::from_secs(3);
/// How long a stop request lets the transfer in hand finish.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long `sync --allow-mass-delete` waits for a running sync to act.
const CONFIRM_WAIT: Duration = Duration::from_secs(120);

/// What `tessera sync` was asked to do.
pub struct SyncArgs<'a> {
    pub dir: &'a Path,
    pub once: bool,
    pub allow_mass_delete: bool,
    pub relink: bool,
}

enum Opened {
    Ready(Box<Syncer>, Remote),
    /// Linked before, but the folder or its state is gone.
    Vanished(String),
}

/// Why `dir` cannot be synced, if it was linked here and its state is gone.
fn vanished(dir: &Path) -> anyhow::Result<Option<String>> {
    if dir.join(STATE_DIR).join("state.db").is_file() || !links::was_linked(dir)? {
        return Ok(None);
    }
    Ok(Some(format!(
        "{d} was synced on this computer, but it is gone or its sync state (.tessera) is: \
         is its disk mounted? Nothing was changed. If you removed it on purpose, run \
         `tessera sync {d} --relink` to sync it afresh",
        d = dir.display()
    )))
}

async fn open(dir: &Path, relink: bool) -> anyhow::Result<Opened> {
    let p = profile::load()?;
    let remote = Remote::new(&p.server, Some(p.token))?;
    if !relink && let Some(why) = vanished(dir)? {
        return Ok(Opened::Vanished(why));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let syncer = Syncer::open(dir, remote.clone(), &p.username, &p.device).await?;
    links::remember(syncer.root())?;
    Ok(Opened::Ready(Box::new(syncer), remote))
}

fn print_report(r: &Report) {
    let moved = if r.moved > 0 {
        format!(", {} moved", r.moved)
    } else {
        String::new()
    };
    let did = r.uploaded
        + r.downloaded
        + r.deleted_local
        + r.deleted_remote
        + r.moved
        + r.conflicts.len();
    if did > 0 {
        println!(
            "synced: {} up, {} down, {} deleted here, {} deleted on the server{moved}",
            r.uploaded, r.downloaded, r.deleted_local, r.deleted_remote
        );
    }
    for c in &r.conflicts {
        println!("conflict: kept your version as {c}");
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}

fn print_stuck(stuck: &[String]) {
    for s in stuck {
        eprintln!("not synced: {s}");
    }
}

/// Full-jitter exponential backoff: a random wait up to `base * 2^attempt`.
fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.min(6))
        .min(MAX_BACKOFF);
    Duration::from_millis(rand::rng().random_range(0..=cap.as_millis() as u64))
}

/// SIGINT (Ctrl-C) and SIGTERM, listened to from the start: a signal that
/// arrives while a round runs is kept until the loop looks, instead of
/// being lost between two `ctrl_c()` futures.
struct Stop {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                int: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for a stop request; names it.
    async fn requested(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "Ctrl-C",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }

    /// Sleeps; `true` if asked to stop meanwhile.
    async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            why = self.requested() => {
                eprintln!("{why}: stopping");
                true
            }
        }
    }

    /// Runs `work`; on a stop request lets it finish for a moment, then
    /// drops it. Dropping a round is as safe as a crash (downloads sit in
    /// `.tessera/tmp/` until verified; the trees are saved at the round's
    /// end). Returns the result if it finished, and whether to stop.
    async fn guard<F: Future>(&mut self, work: F) -> (Option<F::Output>, bool) {
        tokio::pin!(work);
        let why = tokio::select! {
            out = &mut work => return (Some(out), false),
            why = self.requested() => why,
        };
        eprintln!(
            "{why}: stopping; letting the transfer in hand finish (up to {} s)",
            STOP_GRACE.as_secs()
        );
        tokio::select! {
            out = &mut work => (Some(out), true),
            _ = tokio::time::sleep(STOP_GRACE) => {
                eprintln!("abandoned the unfinished transfer; the next sync redoes it");
                (None, true)
            }
            _ = self.requested() => {
                eprintln!("abandoned the unfinished transfer; the next sync redoes it");
                (None, true)
            }
        }
    }
}

/// `sync --allow-mass-delete` on a folder a running sync holds: asks that
/// sync to carry out the paused deletions and waits for it.
async fn confirm_to_running(dir: &Path, stop: &mut Stop) -> anyhow::Result<()> {
    let state_dir = dir.join(STATE_DIR);
    let flag = state_dir.join(CONFIRM_FILE);
    std::fs::write(&flag, b"").with_context(|| format!("writing {}", flag.display()))?;
    println!(
        "asked the sync running on {} to carry out the paused deletions",
        dir.display()
    );
    let t = std::time::Instant::now();
    while flag.exists() {
        if t.elapsed() > CONFIRM_WAIT {
            let _ = std::fs::remove_file(&flag);
            anyhow::bail!(
                "the sync running on {} did not answer within {} s; stop it and run \
                 `tessera sync {} --once --allow-mass-delete`",
                dir.display(),
                CONFIRM_WAIT.as_secs(),
                dir.display()
            );
        }
        if stop.sleep(Duration::from_millis(100)).await {
            let _ = std::fs::remove_file(&flag);
            anyhow::bail!("not confirmed: the deletions stay paused");
        }
    }
    let stuck = tessera_client::sync::status::StatusFile::read(&state_dir)
        .map(|s| s.stuck)
        .unwrap_or_default();
    if stuck.is_empty() {
        println!("done: {} is in sync", dir.display());
        Ok(())
    } else {
        print_stuck(&stuck);
        anyhow::bail!("{} item(s) could not be synced", stuck.len())
    }
}

pub async fn sync(args: SyncArgs<'_>) -> anyhow::Result<()> {
    let dir = args.dir;
    let mut stop = Stop::new()?;
    let mut said_vanished = false;
    let (mut syncer, remote) = loop {
        let opened = match open(dir, args.relink).await {
            Ok(o) => o,
            Err(e)
                if args.allow_mass_delete
                    && matches!(e.downcast_ref::<SyncError>(), Some(SyncError::Busy(_))) =>
            {
                return confirm_to_running(dir, &mut stop).await;
            }
            Err(e) => return Err(e),
        };
        match opened {
            Opened::Ready(s, r) => break (s, r),
            Opened::Vanished(why) if args.once => anyhow::bail!(why),
            Opened::Vanished(why) => {
                if !said_vanished {
                    eprintln!("{why}; waiting for it to come back");
                    said_vanished = true;
                }
                if stop.sleep(VANISHED_RETRY).await {
                    return Ok(());
                }
            }
        }
    };
    syncer.allow_mass_delete = args.allow_mass_delete;
    if args.once {
        let (done, _) = stop.guard(syncer.sync_once()).await;
        let Some(result) = done else {
            syncer.close().await;
            anyhow::bail!(
                "stopped before {} was in sync; run again to finish",
                dir.display()
            );
        };
        let report = result?;
        print_report(&report);
        print_stuck(&report.stuck);
        syncer.close().await;
        if !report.stuck.is_empty() {
            anyhow::bail!("{} item(s) could not be synced", report.stuck.len());
        }
        if !report.skipped.is_empty() {
            anyhow::bail!(
                "{} is not in sync: {} item(s) skipped (see the warnings above)",
                dir.display(),
                report.skipped.len()
            );
        }
        println!("{} is in sync", dir.display());
        return Ok(());
    }

    let (tx, mut events) = tokio::sync::mpsc::channel::<()>(1);
    let watch = |root: &Path| -> anyhow::Result<notify::RecommendedWatcher> {
        let state_dir = root.join(STATE_DIR);
        let confirm = state_dir.join(CONFIRM_FILE);
        let tx = tx.clone();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Reads (the scan opening folders) are no change: waking on
            // them made every round start the next.
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
                && ev
                    .paths
                    .iter()
                    .any(|p| !p.starts_with(&state_dir) || *p == confirm)
            {
                let _ = tx.try_send(());
            }
        })?;
        w.watch(root, notify::RecursiveMode::Recursive)?;
        Ok(w)
    };
    let mut watcher = Some(watch(syncer.root())?);
    println!("syncing {} (Ctrl-C to stop)", syncer.root().display());

    let mut failures = 0u32;
    let mut vanished = false;
    let mut said: Vec<String> = Vec::new();
    loop {
        let (done, stopping) = stop.guard(syncer.sync_once()).await;
        match done {
            Some(Ok(report)) => {
                failures = 0;
                // The confirmation given at start covers what was paused then.
                syncer.allow_mass_delete = false;
                if vanished {
                    vanished = false;
                    println!("{} is back; syncing again", syncer.root().display());
                    watcher = Some(watch(syncer.root())?);
                }
                print_report(&report);
                // Said once, and again only when it changes.
                if report.stuck != said {
                    print_stuck(&report.stuck);
                    said = report.stuck;
                }
            }
            Some(Err(e @ SyncError::Vanished(_))) => {
                if !vanished {
                    eprintln!("{e}; waiting for it to come back");
                    vanished = true;
                    watcher = None;
                }
                if stopping || stop.sleep(VANISHED_RETRY).await {
                    break;
                }
                continue;
            }
            Some(Err(e)) => {
                failures += 1;
                let wait = backoff(failures);
                eprintln!("sync failed ({e}); retrying in {:.1} s", wait.as_secs_f64());
                if stopping || stop.sleep(wait).await {
                    break;
                }
                continue;
            }
            None => break,
        }
        if stopping {
            break;
        }
        let cursor = syncer.cursor().unwrap_or_default().to_owned();
        tokio::select! {
            polled = remote.poll(&cursor, 60) => match polled {
                Ok(p) => {
                    if let Some(secs) = p.backoff
                        && stop.sleep(Duration::from_secs(secs) + backoff(0)).await
                    {
                        break;
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures);
                    eprintln!("lost the server ({e}); retrying in {:.1} s", wait.as_secs_f64());
                    if stop.sleep(wait).await {
                        break;
                    }
                }
            },
            _ = events.recv() => {
                // Let a burst of writes settle before scanning.
                tokio::time::sleep(Duration::from_millis(25)).await;
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(RESCAN) => {}
            why = stop.requested() => {
                eprintln!("{why}: stopping");
                break;
            }
        }
    }
    drop(watcher);
    let root = syncer.root().to_path_buf();
    syncer.close().await;
    println!("stopped syncing {}", root.display());
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub async fn status(dir: &Path) -> anyhow::Result<()> {
    if let Some(why) = vanished(dir)? {
        anyhow::bail!(why);
    }
    let state_dir = dir.join(tessera_client::sync::scan::STATE_DIR);
    let running = tessera_client::sync::status::StatusFile::read(&state_dir);
    let fresh = running
        .as_ref()
        .is_some_and(|s| tessera_client::sync::status::now_ms() - s.updated_ms < 10_000);
    if let Some(s) = running.as_ref().filter(|s| fresh && s.state == "syncing") {
        let eta = s.eta().map_or_else(
            || "unknown".to_owned(),
            |d| format!("{:.0} s", d.as_secs_f64().ceil()),
        );
        println!(
            "{} is syncing: {} of {} files, {:.1} of {:.1} MB, {:.1} MB/s, about {eta} left",
            dir.display(),
            s.files_done,
            s.files_total,
            mb(s.bytes_done),
            mb(s.bytes_total),
            mb(s.rate() as u64),
        );
        for reason in &s.stuck {
            println!("  not synced: {reason}");
        }
        return Ok(());
    }
    let p = profile::load()?;
    let remote = Remote::new(&p.server, Some(p.token))?;
    let mut syncer = Syncer::open_read_only(dir, remote, &p.username, &p.device).await?;
    let (ops, warnings) = syncer.pending().await?;
    let paused = syncer.paused(&ops);
    syncer.close().await;
    if let Some(s) = &running {
        for reason in s.stuck.iter().filter(|r| Some(*r) != paused.as_ref()) {
            println!("last sync could not: {reason}");
        }
    }
    if let Some(why) = paused {
        println!("{} is not in sync: {why}", dir.display());
        anyhow::bail!("deletions are paused in {}", dir.display());
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let count = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
    let up = count(|o| {
        matches!(
            o,
            Op::Upload { .. }
                | Op::CreateRemoteFolder { .. }
                | Op::MoveRemote { .. }
                | Op::DeleteRemote { .. }
        )
    });
    let down = count(|o| {
        matches!(
            o,
            Op::Download { .. }
                | Op::CreateLocalFolder { .. }
                | Op::MoveLocal { .. }
                | Op::DeleteLocal { .. }
        )
    });
    let conflicts = count(|o| matches!(o, Op::Conflict { .. }));
    if up + down + conflicts == 0 && warnings.is_empty() {
        println!("{} is in sync", dir.display());
    } else {
        println!(
            "{} is not in sync: {up} change(s) to send, {down} to fetch, {conflicts} conflict(s)",
            dir.display()
        );
        for op in ops
            .iter()
            .filter(|o| !matches!(o, Op::MarkSynced { .. } | Op::Forget { .. }))
            .take(20)
        {
            println!("  {}", tessera_client::sync::engine::describe(op));
        }
    }
    if !warnings.is_empty() {
        anyhow::bail!(
            "{} is not in sync: {} item(s) skipped (see the warnings above)",
            dir.display(),
            warnings.len()
        );
    }
    Ok(())
}

pub fn conflicts(dir: &Path) -> anyhow::Result<()> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if e.file_name() == tessera_client::sync::scan::STATE_DIR {
                continue;
            }
            if e.file_type()?.is_dir() {
                walk(root, &p, found)?;
            } else if e
                .file_name()
                .to_string_lossy()
                .contains(" (conflicted copy from ")
            {
                found.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found).with_context(|| format!("reading {}", dir.display()))?;
    found.sort();
    let clashes = tessera_client::sync::case::load(dir)
        .with_context(|| format!("reading the case clashes of {}", dir.display()))?;
    if found.is_empty() && clashes.is_empty() {
        println!("no conflicted copies in {}", dir.display());
    }
    for f in found {
        println!("{f}");
    }
    for c in clashes {
        println!("{}", c.describe());
    }
    Ok(())
}
