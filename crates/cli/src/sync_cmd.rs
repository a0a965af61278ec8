//! `tessera sync`, `tessera status`, `tessera conflicts`. The daemon
//! itself lives in `tessera_client::sync::daemon`; this file opens the
//! folder, turns signals into commands and prints the daemon's events.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tessera_client::Remote;
use tessera_client::sync::daemon::{self, Command, Control, Daemon, Event};
use tessera_client::sync::engine::selection::SELECTION_FILE;
use tessera_client::sync::engine::{CONFIRM_FILE, PAUSE_FILE, SyncError};
use tessera_client::sync::scan::STATE_DIR;
use tessera_client::sync::status::{StatusFile, SyncStatus, now_ms};
use tessera_client::sync::{Op, Report, Syncer};
use tokio::sync::mpsc;

use crate::{links, profile};

/// How often a daemon whose folder vanished before it opened looks for it
/// again (the daemon does the same once running).
const VANISHED_RETRY: Duration = Duration::from_secs(3);
/// How long `sync --allow-mass-delete` waits for a running sync to act.
const CONFIRM_WAIT: Duration = Duration::from_secs(120);

/// What `tessera sync` was asked to do.
pub struct SyncArgs<'a> {
    pub dir: &'a Path,
    pub once: bool,
    pub allow_mass_delete: bool,
    pub relink: bool,
    /// Server folders to keep here (selective sync); empty: as before.
    pub only: Vec<String>,
    /// Bandwidth limits to keep for the folder; `None`: as before.
    pub limit_up: Option<String>,
    pub limit_down: Option<String>,
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

/// Prints what the daemon says, as `tessera sync` always has.
fn print_event(event: Event) {
    match event {
        Event::Started { root } => println!("syncing {} (Ctrl-C to stop)", root.display()),
        Event::Synced(report) => print_report(&report),
        Event::Stuck(stuck) => print_stuck(&stuck),
        Event::Vanished(e) => eprintln!("{e}; waiting for it to come back"),
        Event::Back { root } => println!("{} is back; syncing again", root.display()),
        Event::Paused => println!("paused: nothing is synced until `tessera resume`"),
        Event::Resumed => println!("resumed: syncing again"),
        Event::Failed { error, retry_in } => eprintln!(
            "sync failed ({error}); retrying in {:.1} s",
            retry_in.as_secs_f64()
        ),
        Event::Offline { error, retry_in } => eprintln!(
            "lost the server ({error}); retrying in {:.1} s",
            retry_in.as_secs_f64()
        ),
        Event::ServerBackoff { .. } => {}
        Event::Stopping { why, grace: None } => eprintln!("{why}: stopping"),
        Event::Stopping {
            why,
            grace: Some(g),
        } => eprintln!(
            "{why}: stopping; letting the transfer in hand finish (up to {} s)",
            g.as_secs()
        ),
        Event::Abandoned => {
            eprintln!("abandoned the unfinished transfer; the next sync redoes it")
        }
        Event::Stopped { root } => println!("stopped syncing {}", root.display()),
    }
}

/// SIGINT (Ctrl-C) and SIGTERM as [`Command::Stop`], listened to from the
/// start: a signal that arrives while a round runs waits in the channel
/// until the daemon looks, instead of being lost between two `ctrl_c()`
/// futures.
fn signals() -> anyhow::Result<Control> {
    let (tx, rx) = mpsc::channel(4);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::spawn(async move {
            loop {
                let why = tokio::select! {
                    _ = int.recv() => "Ctrl-C",
                    _ = term.recv() => "SIGTERM",
                };
                if tx.send(Command::Stop(why.into())).await.is_err() {
                    return;
                }
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(Command::Stop("Ctrl-C".into())).await.is_err() {
                return;
            }
        }
    });
    Ok(Control::new(rx))
}

/// `sync --allow-mass-delete` on a folder a running sync holds: asks that
/// sync to carry out the paused deletions and waits for it.
async fn confirm_to_running(dir: &Path, control: &mut Control) -> anyhow::Result<()> {
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
        if let Some(why) = control.sleep(Duration::from_millis(100)).await {
            eprintln!("{why}: stopping");
            let _ = std::fs::remove_file(&flag);
            anyhow::bail!("not confirmed: the deletions stay paused");
        }
    }
    let stuck = StatusFile::read(&state_dir)
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

/// What opening the folder came to.
enum Start {
    Open(Box<Syncer>, Remote),
    /// Another process syncs the folder and was asked to confirm.
    Confirmed,
    /// Stopped while waiting for the folder.
    Stopped,
}

/// Opens the folder; a daemon waits for a vanished one to come back.
async fn start(args: &SyncArgs<'_>, control: &mut Control) -> anyhow::Result<Start> {
    let dir = args.dir;
    let mut said_vanished = false;
    loop {
        let opened = match open(dir, args.relink).await {
            Ok(o) => o,
            Err(e)
                if args.allow_mass_delete
                    && matches!(e.downcast_ref::<SyncError>(), Some(SyncError::Busy(_))) =>
            {
                confirm_to_running(dir, control).await?;
                return Ok(Start::Confirmed);
            }
            Err(e) => return Err(e),
        };
        match opened {
            Opened::Ready(s, r) => return Ok(Start::Open(s, r)),
            Opened::Vanished(why) if args.once => anyhow::bail!(why),
            Opened::Vanished(why) => {
                if !said_vanished {
                    eprintln!("{why}; waiting for it to come back");
                    said_vanished = true;
                }
                if let Some(why) = control.sleep(VANISHED_RETRY).await {
                    eprintln!("{why}: stopping");
                    return Ok(Start::Stopped);
                }
            }
        }
    }
}

pub async fn sync(args: SyncArgs<'_>) -> anyhow::Result<()> {
    if args.once && paused_since(args.dir).is_some() {
        anyhow::bail!(
            "{} is paused: `tessera resume {}` first; nothing was synced",
            args.dir.display(),
            args.dir.display()
        );
    }
    let mut control = signals()?;
    let (syncer, remote) = match start(&args, &mut control).await? {
        Start::Open(s, r) => (s, r),
        Start::Confirmed | Start::Stopped => return Ok(()),
    };
    let config = daemon::Config {
        allow_mass_delete: args.allow_mass_delete,
        ..daemon::Config::default()
    };
    if !args.only.is_empty() {
        let mut only = Vec::new();
        for folder in &args.only {
            only.push(on_server(&remote, folder).await?);
        }
        set_selection(
            args.dir,
            &tessera_client::sync::engine::selection::Selection {
                only,
                except: Vec::new(),
            },
        )?;
    }
    if args.limit_up.is_some() || args.limit_down.is_some() {
        set_limits(args.dir, args.limit_up, args.limit_down)?;
    }
    let daemon = Daemon::new(syncer, remote, config, control, print_event);
    if !args.once {
        return Ok(daemon.run().await?);
    }
    let dir = args.dir;
    let Some(report) = daemon.once().await? else {
        anyhow::bail!(
            "stopped before {} was in sync; run again to finish",
            dir.display()
        );
    };
    print_report(&report);
    print_stuck(&report.stuck);
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
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Prints the progress of a sync running on `dir` right now, if one is.
fn print_running(dir: &Path, running: Option<&SyncStatus>) -> bool {
    let fresh = running.is_some_and(|s| now_ms() - s.updated_ms < 10_000);
    let Some(s) = running.filter(|s| fresh && s.state == "syncing") else {
        return false;
    };
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
    true
}

/// Prints what a sync of `dir` would do now.
fn print_pending(dir: &Path, ops: &[Op], warnings: &[String]) {
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
        return;
    }
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

/// `tessera pause DIR`: a running sync finishes its round and waits; a
/// later one starts paused.
pub fn pause(dir: &Path) -> anyhow::Result<()> {
    let state = linked_state(dir)?;
    let file = state.join(PAUSE_FILE);
    if file.exists() {
        println!("{} is already paused", dir.display());
        return Ok(());
    }
    std::fs::write(&file, now_ms().to_string())
        .with_context(|| format!("writing {}", file.display()))?;
    println!(
        "paused {}: changes wait until `tessera resume {}` (a round under way finishes first)",
        dir.display(),
        dir.display()
    );
    Ok(())
}

pub fn resume(dir: &Path) -> anyhow::Result<()> {
    let file = linked_state(dir)?.join(PAUSE_FILE);
    match std::fs::remove_file(&file) {
        Ok(()) => println!("resumed {}", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{} was not paused", dir.display());
        }
        Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
    }
    Ok(())
}

/// The sync state folder of a linked folder.
fn linked_state(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let state = dir.join(STATE_DIR);
    if !state.join("state.db").is_file() {
        anyhow::bail!(
            "{} is not a synced folder: run `tessera sync {}` first",
            dir.display(),
            dir.display()
        );
    }
    Ok(state)
}

/// Since when `dir`'s sync is paused, if it is.
fn paused_since(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(STATE_DIR).join(PAUSE_FILE)).ok()?;
    Some(text.trim().parse().unwrap_or(0))
}

pub async fn status(dir: &Path) -> anyhow::Result<()> {
    if let Some(why) = vanished(dir)? {
        anyhow::bail!(why);
    }
    if let Some(since) = paused_since(dir) {
        println!(
            "{} is paused (since {}): `tessera resume {}` to sync again",
            dir.display(),
            crate::client_cmd::when(since),
            dir.display()
        );
        return Ok(());
    }
    let running = StatusFile::read(&dir.join(STATE_DIR));
    if print_running(dir, running.as_ref()) {
        return Ok(());
    }
    let p = profile::load()?;
    let remote = Remote::new(&p.server, Some(p.token.clone()))?;
    let mut syncer = Syncer::open_read_only(dir, remote.clone(), &p.username, &p.device).await?;
    let (ops, warnings) = match syncer.pending().await {
        Ok(pending) => pending,
        // Out of reach: say what waits here instead of failing.
        Err(SyncError::Remote(e)) if e.unreachable() => {
            let waiting = syncer.pending_here().await;
            syncer.close().await;
            let n = waiting?.len();
            let what = match n {
                0 => "no changes waiting".to_owned(),
                1 => "1 change waiting".to_owned(),
                n => format!("{n} changes waiting"),
            };
            println!(
                "{}: offline (cannot reach {}), {what}",
                dir.display(),
                p.server
            );
            return Ok(());
        }
        Err(e) => {
            syncer.close().await;
            return Err(e.into());
        }
    };
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
    print_pending(dir, &ops, &warnings);
    if let Ok(usage) = remote.usage().await {
        println!("{}", crate::admin_cmd::usage_line(&usage));
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
            if e.file_name() == STATE_DIR {
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

#[derive(clap::Args)]
pub struct SelectiveArgs {
    /// The synced folder.
    dir: std::path::PathBuf,
    /// Keep this server folder here too (repeat for more).
    #[arg(long, value_name = "/FOLDER")]
    add: Vec<String>,
    /// Stop keeping this server folder here: its local copy goes to the local trash; the server keeps it.
    #[arg(long, value_name = "/FOLDER")]
    remove: Vec<String>,
    /// Keep everything again.
    #[arg(long, conflicts_with_all = ["add", "remove"])]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Writes the wanted selection of `dir` (a running sync carries it out).
fn set_selection(
    dir: &Path,
    selection: &tessera_client::sync::engine::selection::Selection,
) -> anyhow::Result<()> {
    let state = linked_state(dir)?;
    tessera_client::sync::engine::selection::write(&state, SELECTION_FILE, selection)?;
    Ok(())
}

/// `tessera selective DIR [--add /F]... [--remove /F]... [--all]`.
pub async fn selective(args: SelectiveArgs) -> anyhow::Result<()> {
    use tessera_client::sync::engine::selection::{Selection, read};
    let dir = args.dir.as_path();
    let state = linked_state(dir)?;
    let before = read(&state, SELECTION_FILE)?;
    let mut wanted = if args.all {
        Selection::default()
    } else {
        before.clone()
    };
    if !args.add.is_empty() || !args.remove.is_empty() {
        let p = profile::load()?;
        let remote = Remote::new(&p.server, Some(p.token))?;
        for folder in &args.add {
            let folder = on_server(&remote, folder).await?;
            if !wanted.include(&folder) {
                anyhow::bail!(
                    "/{folder} lies in a folder left out of this device: add that one first; \
                     nothing was changed"
                );
            }
        }
        for folder in &args.remove {
            let folder = on_server(&remote, folder).await?;
            if !wanted.exclude(&folder) {
                anyhow::bail!(
                    "that would leave nothing selected: give --all to keep everything, or \
                     `tessera unlink {}` to stop syncing the folder; nothing was changed",
                    dir.display()
                );
            }
        }
    }
    // A running sync may have selected folders made there while the
    // server was asked (it adds them to the file): kept, not overwritten.
    let now = read(&state, SELECTION_FILE)?;
    for added in now.only.iter().filter(|f| !before.only.contains(f)) {
        wanted.include(added);
    }
    let wanted = wanted.normalized();
    if wanted != now {
        set_selection(dir, &wanted)?;
    }
    let slash = |v: &[String]| -> Vec<String> { v.iter().map(|f| format!("/{f}")).collect() };
    if args.json {
        return crate::client_cmd::print_json(
            &serde_json::json!({ "only": slash(&wanted.only), "except": slash(&wanted.except) }),
        );
    }
    if wanted.only.is_empty() {
        println!("{} keeps everything on the server", dir.display());
    } else {
        println!("{} keeps only:", dir.display());
        for f in slash(&wanted.only) {
            println!("  {f}");
        }
    }
    if !wanted.except.is_empty() {
        println!("except (and new things elsewhere come too):");
        for f in slash(&wanted.except) {
            println!("  {f}");
        }
    }
    if wanted != before {
        println!(
            "Once the folder is in sync, a running sync carries this out; what is no longer \
             kept moves to the local trash here and stays on the server."
        );
    }
    Ok(())
}

/// `path` as the server spells it (without the leading `/`), or an error
/// naming it when the server has nothing there.
async fn on_server(remote: &Remote, path: &str) -> anyhow::Result<String> {
    let wanted = format!("/{}", path.trim_matches('/'));
    match remote.meta(&wanted).await {
        Ok(e) => Ok(e.path.trim_start_matches('/').to_owned()),
        Err(e) if e.status() == Some(404) => {
            anyhow::bail!("the server has nothing at {wanted}; nothing was changed")
        }
        Err(e) => Err(e.into()),
    }
}

/// Changes the saved limits given, keeping the others; returns them all.
fn set_limits(
    dir: &Path,
    up: Option<String>,
    down: Option<String>,
) -> anyhow::Result<tessera_client::transfer::limit::Limits> {
    use tessera_client::transfer::limit;
    let state = linked_state(dir)?;
    let mut limits = limit::load(&state);
    if let Some(up) = up {
        limits.up = limit::parse(&up).map_err(anyhow::Error::msg)?;
    }
    if let Some(down) = down {
        limits.down = limit::parse(&down).map_err(anyhow::Error::msg)?;
    }
    limit::save(&state, limits)
        .with_context(|| format!("saving the limits of {}", dir.display()))?;
    Ok(limits)
}

/// `tessera limits DIR [--up RATE] [--down RATE]`.
pub fn limits(dir: &Path, up: Option<String>, down: Option<String>) -> anyhow::Result<()> {
    let limits = if up.is_some() || down.is_some() {
        set_limits(dir, up, down)?
    } else {
        tessera_client::transfer::limit::load(&linked_state(dir)?)
    };
    let shown = |rate: Option<u64>| {
        rate.map_or("no limit".to_owned(), |r| {
            format!("{}/s", bytesize::ByteSize::b(r).display().si())
        })
    };
    println!(
        "{}: up {}, down {}",
        dir.display(),
        shown(limits.up),
        shown(limits.down)
    );
    Ok(())
}
