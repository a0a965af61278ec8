//! The client commands: login, put, get, ls, mkdir, mv, rm, revisions,
//! restore.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_client::Remote;
use tessera_client::transfer::{download_resumable, upload_file};
use tessera_proto::api::EntryKind;

use crate::profile::{self, Profile};
use crate::serve_cmd::read_password;

fn remote() -> anyhow::Result<Remote> {
    let p = profile::load()?;
    Ok(Remote::new(&p.server, Some(p.token))?)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Where `login` goes without `--server`: the server of the last login.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

pub async fn login(
    server: Option<String>,
    user: &str,
    password_stdin: bool,
    device: Option<String>,
) -> anyhow::Result<()> {
    let server = server
        .or_else(|| profile::load().ok().map(|p| p.server))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let server = server.as_str();
    let remote = Remote::new(server, None)?;
    let password = read_password(
        password_stdin,
        &format!("Password for {user} at {server}: "),
    )?;
    let device = device.unwrap_or_else(profile::hostname);
    let resp = match remote.login(user, &password, &device).await {
        Ok(r) => r,
        Err(e) if e.code() == Some(tessera_proto::ErrorCode::Unauthorized) => {
            bail!(
                "wrong user name or password: {server} refused these credentials; check them and try again"
            )
        }
        Err(e) => return Err(e.into()),
    };
    profile::save(&Profile {
        server: server.to_owned(),
        username: resp.username.clone(),
        device: resp.device.clone(),
        token: resp.token,
    })?;
    println!(
        "Logged in to {server} as {} (device {})",
        resp.username, resp.device
    );
    Ok(())
}

pub async fn logout() -> anyhow::Result<()> {
    if let Ok(r) = remote() {
        // The token is forgotten locally even if the server cannot be reached.
        if let Err(e) = r.logout().await {
            eprintln!("warning: the server did not confirm the logout: {e}");
        }
    }
    profile::remove()?;
    println!("Logged out");
    Ok(())
}

pub async fn put(local: &Path, remote_path: &str, base_rev: Option<i64>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(local).with_context(|| format!("cannot read {}", local.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", local.display());
    }
    let r = remote()?;
    let pb = bar(meta.len(), "put");
    let p = pb.clone();
    let report = upload_file(
        &r,
        local,
        remote_path,
        base_rev,
        Arc::new(move |n| p.inc(n)),
    )
    .await?;
    pb.finish_and_clear();
    println!(
        "{} rev {} ({} bytes; sent {} of {} blocks, {} bytes)",
        report.entry.path,
        report.entry.rev.unwrap_or(0),
        report.size,
        report.blocks_sent,
        report.blocks_total,
        report.bytes_sent
    );
    Ok(())
}

pub async fn get(remote_path: &str, local: &Path, rev: Option<i64>) -> anyhow::Result<()> {
    let r = remote()?;
    let entry = r.meta(remote_path).await?;
    if entry.kind != EntryKind::File {
        bail!("{remote_path} is a folder; `get` downloads files");
    }
    let target = if local.is_dir() {
        local.join(&entry.name)
    } else {
        local.to_path_buf()
    };
    let pb = bar(entry.size.unwrap_or(0), "get");
    let p = pb.clone();
    let report =
        download_resumable(&r, remote_path, rev, &target, Arc::new(move |n| p.inc(n))).await?;
    pb.finish_and_clear();
    let resumed = if report.resumed > 0 {
        format!(
            "; resumed after {} bytes, fetched {}",
            report.resumed, report.fetched
        )
    } else {
        String::new()
    };
    println!(
        "{} rev {} -> {} ({} bytes{resumed})",
        entry.path,
        report.download.rev,
        target.display(),
        report.download.size
    );
    Ok(())
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn when(ms: i64) -> String {
    let (y, m, d, hh, mm, _) = tessera_client::sync::engine::civil(ms.div_euclid(1000));
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

pub async fn ls(remote_path: &str, json: bool) -> anyhow::Result<()> {
    let remote = remote()?;
    let list = remote.list(remote_path).await?;
    if json {
        return print_json(&list);
    }
    for e in &list.entries {
        match e.kind {
            EntryKind::Folder => println!("{:>12}  {}  {}/", "-", when(e.modified_ms), e.name),
            EntryKind::File => println!(
                "{:>12}  {}  {}",
                e.size.unwrap_or(0),
                when(e.modified_ms),
                e.name
            ),
        }
    }
    // A footer for people, not for pipes; an older server without /usage
    // still lists.
    if std::io::IsTerminal::is_terminal(&std::io::stdout())
        && let Ok(usage) = remote.usage().await
    {
        println!("{}", crate::admin_cmd::usage_line(&usage));
    }
    Ok(())
}

pub async fn usage(json: bool) -> anyhow::Result<()> {
    let usage = remote()?.usage().await?;
    if json {
        return print_json(&usage);
    }
    println!("{}", crate::admin_cmd::usage_line(&usage));
    Ok(())
}

pub async fn mkdir(remote_path: &str) -> anyhow::Result<()> {
    let e = remote()?.mkdir(remote_path).await?;
    println!("{}/", e.path);
    Ok(())
}

pub async fn mv(from: &str, to: &str) -> anyhow::Result<()> {
    let e = remote()?.move_to(from, to).await?;
    println!("{from} -> {}", e.path);
    Ok(())
}

pub async fn rm(remote_path: &str) -> anyhow::Result<()> {
    remote()?.delete(remote_path).await?;
    println!("{remote_path} moved to the trash");
    Ok(())
}

pub async fn revisions(remote_path: &str, json: bool) -> anyhow::Result<()> {
    let revs = remote()?.revisions(remote_path).await?;
    if json {
        return print_json(&revs);
    }
    for r in &revs.revisions {
        println!(
            "rev {:>4}  {}  {:>12}  {}  {}{}",
            r.rev,
            when(r.created_ms),
            r.size,
            r.content_hash,
            r.device,
            if r.pinned { "  pinned" } else { "" }
        );
    }
    Ok(())
}

pub async fn pin(remote_path: &str, rev: i64, pinned: bool) -> anyhow::Result<()> {
    let r = remote()?.pin(remote_path, rev, pinned).await?;
    if r.pinned {
        println!(
            "{remote_path} rev {} is pinned: it is kept until you unpin it",
            r.rev
        );
    } else {
        println!("{remote_path} rev {} is no longer pinned", r.rev);
    }
    Ok(())
}

pub async fn restore(remote_path: &str, rev: i64) -> anyhow::Result<()> {
    let e = remote()?.restore(remote_path, rev).await?;
    println!(
        "{} restored from rev {rev} as rev {}",
        e.path,
        e.rev.unwrap_or(0)
    );
    Ok(())
}

pub async fn trash_list(json: bool) -> anyhow::Result<()> {
    let trash = remote()?.trash().await?;
    if json {
        return print_json(&trash);
    }
    for e in &trash.entries {
        let size = e.size.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let slash = if e.kind == EntryKind::Folder { "/" } else { "" };
        println!(
            "{}  {}  {size:>12}  {}{slash}",
            e.id,
            when(e.deleted_ms),
            e.path
        );
    }
    Ok(())
}

pub async fn trash_restore(id: &str, to: Option<&str>) -> anyhow::Result<()> {
    let e = remote()?.restore_from_trash(id, to).await?;
    println!("{} restored", e.path);
    Ok(())
}

pub async fn trash_purge(id: Option<&str>) -> anyhow::Result<()> {
    remote()?.purge_trash(id).await?;
    match id {
        Some(id) => println!("{id} removed for good"),
        None => println!("trash emptied"),
    }
    Ok(())
}
