//! `tessera sync`, `tessera status`, `tessera conflicts`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use notify::Watcher;
use rand::Rng;
use tessera_client::Remote;
use tessera_client::sync::{Op, Report, Syncer};

use crate::profile;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Rescan now and then even without events, in case the watcher missed one.
const RESCAN: Duration = Duration::from_secs(300);

async fn open(dir: &Path) -> anyhow::Result<(Syncer, Remote)> {
    let p = profile::load()?;
    let remote = Remote::new(&p.server, Some(p.token))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let syncer = Syncer::open(dir, remote.clone(), &p.username, &p.device).await?;
    Ok((syncer, remote))
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
    for s in &r.stuck {
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

pub async fn sync(dir: &Path, once: bool, allow_mass_delete: bool) -> anyhow::Result<()> {
    let (mut syncer, remote) = open(dir).await?;
    syncer.allow_mass_delete = allow_mass_delete;
    if once {
        let report = syncer.sync_once().await?;
        print_report(&report);
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
    let state_dir = syncer.root().join(tessera_client::sync::scan::STATE_DIR);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev.paths.iter().any(|p| !p.starts_with(&state_dir))
        {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(syncer.root(), notify::RecursiveMode::Recursive)?;
    println!("syncing {} (Ctrl-C to stop)", syncer.root().display());

    let mut failures = 0u32;
    loop {
        match syncer.sync_once().await {
            Ok(report) => {
                failures = 0;
                print_report(&report);
            }
            Err(e) => {
                failures += 1;
                let wait = backoff(failures);
                eprintln!("sync failed ({e}); retrying in {:.1} s", wait.as_secs_f64());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        let cursor = syncer.cursor().unwrap_or_default().to_owned();
        tokio::select! {
            polled = remote.poll(&cursor, 60) => match polled {
                Ok(p) => {
                    if let Some(secs) = p.backoff {
                        tokio::time::sleep(Duration::from_secs(secs) + backoff(0)).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures);
                    eprintln!("lost the server ({e}); retrying in {:.1} s", wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                }
            },
            _ = events.recv() => {
                // Let a burst of writes settle before scanning.
                tokio::time::sleep(Duration::from_millis(25)).await;
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(RESCAN) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(watcher);
    syncer.close().await;
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub async fn status(dir: &Path) -> anyhow::Result<()> {
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
    if let Some(s) = &running {
        for reason in &s.stuck {
            println!("last sync could not: {reason}");
        }
    }
    let p = profile::load()?;
    let remote = Remote::new(&p.server, Some(p.token))?;
    let mut syncer = Syncer::open_read_only(dir, remote, &p.username, &p.device).await?;
    let (ops, warnings) = syncer.pending().await?;
    syncer.close().await;
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
