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

pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
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
    let remote_path = &into_folder(&r, remote_path, local).await?;
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

/// Where a copy of `local` named `remote_path` goes: into the folder when
/// it names one (an existing folder, or a path ending in `/`), as `cp`.
pub(crate) async fn into_folder(
    r: &Remote,
    remote_path: &str,
    local: &Path,
) -> anyhow::Result<String> {
    let name = || {
        local
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .with_context(|| format!("{} has no usable file name", local.display()))
    };
    if remote_path.ends_with('/') {
        return Ok(format!("{remote_path}{}", name()?));
    }
    match r.meta(remote_path).await {
        Ok(e) if e.kind == EntryKind::Folder => {
            Ok(format!("{}/{}", e.path.trim_end_matches('/'), name()?))
        }
        Ok(_) => Ok(remote_path.to_owned()),
        Err(e) if e.status() == Some(404) => Ok(remote_path.to_owned()),
        Err(e) => Err(e.into()),
    }
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

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn when(ms: i64) -> String {
    let (y, m, d, hh, mm, _) = tessera_client::sync::engine::civil(ms.div_euclid(1000));
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

pub async fn ls(remote_path: &str, json: bool) -> anyhow::Result<()> {
    let remote = remote()?;
    // A file is shown as its own entry, as `ls FILE` does.
    if !remote_path.trim_end_matches('/').is_empty() {
        let entry = remote.meta(remote_path).await?;
        if entry.kind == EntryKind::File {
            if json {
                return print_json(&entry);
            }
            print_entry(&entry);
            return Ok(());
        }
    }
    let list = remote.list(remote_path).await?;
    if json {
        return print_json(&list);
    }
    for e in &list.entries {
        print_entry(e);
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

fn print_entry(e: &tessera_proto::api::Entry) {
    match e.kind {
        EntryKind::Folder => match e.shared {
            Some(role) => println!(
                "{:>12}  {}  {}/  (shared, {})",
                "-",
                when(e.modified_ms),
                e.name,
                role.as_str()
            ),
            None => println!("{:>12}  {}  {}/", "-", when(e.modified_ms), e.name),
        },
        EntryKind::File => println!(
            "{:>12}  {}  {}",
            e.size.unwrap_or(0),
            when(e.modified_ms),
            e.name
        ),
    }
}

pub async fn usage(json: bool) -> anyhow::Result<()> {
    let usage = remote()?.usage().await?;
    if json {
        return print_json(&usage);
    }
    println!("{}", crate::admin_cmd::usage_line(&usage));
    Ok(())
}

/// `30m`, `12h`, `7d` (or plain seconds) as seconds.
fn parse_expiry(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], Some(c)),
        _ => (text, None),
    };
    let n: u64 = number.parse().ok().filter(|n| *n > 0).with_context(|| {
        format!("--expires {text}: give a number of minutes, hours or days, like 30m, 12h or 7d")
    })?;
    let unit = match unit {
        None | Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        Some('w') => 7 * 86_400,
        Some(_) => bail!("--expires {text}: the unit must be s, m, h, d or w (like 7d)"),
    };
    n.checked_mul(unit)
        .with_context(|| format!("--expires {text} is too far away"))
}

fn link_when(ms: i64) -> String {
    let (y, mo, d, h, mi, _) = tessera_proto::path::civil(ms / 1000);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

pub async fn link_create(
    remote_path: &str,
    expires: Option<&str>,
    password_stdin: bool,
    upload_only: bool,
    json: bool,
) -> anyhow::Result<()> {
    let expires_in_secs = expires.map(parse_expiry).transpose()?;
    // read_password refuses an empty line.
    let password = password_stdin
        .then(|| read_password(true, ""))
        .transpose()?;
    let r = remote()?;
    let link = r
        .create_link(&tessera_proto::api::CreateLinkRequest {
            path: remote_path.to_owned(),
            expires_in_secs,
            password,
            upload_only,
        })
        .await?;
    let url = format!(
        "{}{}",
        r.server().trim_end_matches('/'),
        link.url_path.as_deref().unwrap_or_default()
    );
    if json {
        let mut value = serde_json::to_value(&link)?;
        value["url"] = serde_json::Value::String(url);
        return print_json(&value);
    }
    println!("{url}");
    let mut notes = Vec::new();
    if let Some(ms) = link.expires_ms {
        notes.push(format!("expires {}", link_when(ms)));
    }
    if link.has_password {
        notes.push("needs its password".to_owned());
    }
    if link.upload_only {
        notes.push("takes uploads only".to_owned());
    }
    notes.push(format!("revoke with `tessera link revoke {}`", link.id));
    eprintln!("{}", notes.join("; "));
    Ok(())
}

pub async fn link_list(json: bool) -> anyhow::Result<()> {
    let links = remote()?.links().await?;
    if json {
        return print_json(&links);
    }
    if links.links.is_empty() {
        println!("no links");
    }
    for l in &links.links {
        let what = l.path.as_deref().unwrap_or("(in the trash: leads nowhere)");
        let mut notes = vec![format!("made {}", link_when(l.created_ms))];
        if let Some(ms) = l.expires_ms {
            notes.push(format!("expires {}", link_when(ms)));
        }
        if l.has_password {
            notes.push("password".to_owned());
        }
        if l.upload_only {
            notes.push("upload only".to_owned());
        }
        println!("{}  {what}  ({})", l.id, notes.join(", "));
    }
    Ok(())
}

pub async fn link_revoke(id: &str) -> anyhow::Result<()> {
    match remote()?.revoke_link(id).await {
        Ok(()) => {
            println!("link {id} revoked");
            Ok(())
        }
        Err(e) if e.status() == Some(404) => {
            bail!("you have no link {id}; `tessera link list` shows your links")
        }
        Err(e) => Err(e.into()),
    }
}

/// The entry at `path`, or none when nothing is there.
pub(crate) async fn entry_at(
    r: &Remote,
    path: &str,
) -> anyhow::Result<Option<tessera_proto::api::Entry>> {
    match r.meta(path).await {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The folder holding `path` ("/" at the top).
fn parent_of(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((parent, _)) => parent,
    }
}

pub async fn mkdir(remote_path: &str, parents: bool) -> anyhow::Result<()> {
    let r = remote()?;
    match entry_at(&r, remote_path).await? {
        Some(e) if e.kind == EntryKind::Folder && parents => return Ok(()),
        Some(e) if e.kind == EntryKind::Folder => bail!("{} already exists", e.path),
        Some(e) => bail!("{} is a file", e.path),
        None => {}
    }
    if !parents {
        let parent = parent_of(remote_path);
        match entry_at(&r, parent).await? {
            Some(e) if e.kind == EntryKind::Folder => {}
            Some(_) => bail!("{parent} is a file"),
            None => bail!("{parent} does not exist: create it first, or give -p"),
        }
    }
    let e = r.mkdir(remote_path).await?;
    println!("{}/", e.path);
    Ok(())
}

pub async fn mv(from: &str, to: &str, overwrite: bool) -> anyhow::Result<()> {
    let r = remote()?;
    let source = entry_at(&r, from)
        .await?
        .with_context(|| format!("{from} does not exist"))?;
    let target = match entry_at(&r, to).await? {
        // Into an existing folder, as mv does.
        Some(e) if e.kind == EntryKind::Folder => {
            let into = format!("{}/{}", e.path.trim_end_matches('/'), source.name);
            let there = entry_at(&r, &into).await?;
            (into, there)
        }
        there => (to.to_owned(), there),
    };
    let (to, there) = target;
    if let Some(there) = there {
        if there.id == source.id {
            bail!(
                "{from} and {} are the same file: nothing to move",
                there.path
            );
        }
        if !overwrite {
            bail!(
                "{} already exists: give --overwrite to replace it",
                there.path
            );
        }
        if there.kind == EntryKind::Folder || source.kind == EntryKind::Folder {
            bail!(
                "--overwrite replaces a file by a file; {} is a folder",
                there.path
            );
        }
        return replace(&r, &source, &there).await;
    }
    let e = r.move_to(from, &to).await?;
    println!("{from} -> {}", e.path);
    Ok(())
}

/// Makes `source`'s content the next revision of `target` (its blocks are
/// on the server already: nothing is uploaded), then trashes `source`. If
/// the second step fails, both files are there; nothing is lost.
async fn replace(
    r: &Remote,
    source: &tessera_proto::api::Entry,
    target: &tessera_proto::api::Entry,
) -> anyhow::Result<()> {
    let list = r.block_list(&source.path, source.rev).await?;
    let content_hash = list.entry.content_hash.with_context(|| {
        format!(
            "{} is still uploading: try again once it is done",
            source.path
        )
    })?;
    let e = r
        .commit(&tessera_proto::api::CommitRequest {
            path: target.path.clone(),
            base_rev: target.rev,
            size: list.entry.size.unwrap_or(0),
            content_hash,
            chunker: list.chunker,
            blocks: list.blocks,
            reuse: Vec::new(),
        })
        .await?;
    // Only the revision whose content moved: one saved meanwhile stays.
    if let Err(e) = r.delete_at(&source.path, list.entry.rev).await {
        bail!(
            "{} now holds the content of {} (rev {}), but {} was not removed ({e}); \
             remove it by hand if it is no longer wanted",
            target.path,
            source.path,
            list.entry.rev.unwrap_or(0),
            source.path
        );
    }
    println!(
        "{} -> {} (rev {}; the content it replaced is rev {})",
        source.path,
        e.path,
        e.rev.unwrap_or(0),
        target.rev.unwrap_or(0)
    );
    Ok(())
}

pub async fn find(text: &str, limit: Option<usize>, json: bool) -> anyhow::Result<()> {
    let found = remote()?.search(text, limit).await?;
    if json {
        return print_json(&found);
    }
    for e in &found.entries {
        match e.kind {
            EntryKind::Folder => println!("{:>12}  {}  {}/", "-", when(e.modified_ms), e.path),
            EntryKind::File => println!(
                "{:>12}  {}  {}",
                e.size.unwrap_or(0),
                when(e.modified_ms),
                e.path
            ),
        }
    }
    if found.entries.is_empty() {
        eprintln!("nothing's name holds {text:?}");
    } else if found.more {
        eprintln!("more match: give a longer text, or --limit");
    }
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
    println!(
        "{:>5}  {:<19}  {:>12}  {:<12}  {:<20}  NOTE",
        "REV", "SAVED (UTC)", "SIZE", "HASH", "DEVICE"
    );
    for r in &revs.revisions {
        let (y, mo, d, h, mi, s) =
            tessera_client::sync::engine::civil(r.created_ms.div_euclid(1000));
        let hash = r.content_hash.to_string();
        println!(
            "{:>5}  {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}  {:>12}  {:<12}  {:<20}  {}",
            r.rev,
            r.size,
            hash.get(..12).unwrap_or(&hash),
            r.device,
            if r.pinned { "pinned" } else { "" }
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

/// Restores by id, or by the path the item had (the latest deleted
/// there, when there are several).
pub async fn trash_restore(item: &str, to: Option<&str>) -> anyhow::Result<()> {
    let r = remote()?;
    let id = if item.starts_with('/') {
        let trash = r.trash().await?;
        let wanted = item.trim_end_matches('/');
        let found: Vec<_> = trash
            .entries
            .iter()
            .filter(|e| e.path.trim_end_matches('/') == wanted)
            .collect();
        let newest = found.iter().max_by_key(|e| e.deleted_ms).with_context(|| {
            format!("nothing that was at {item} is in the trash; `tessera trash` lists it")
        })?;
        if found.len() > 1 {
            eprintln!(
                "{} items deleted from {item} are in the trash; restoring the latest (deleted {}); give an id from `tessera trash` for another",
                found.len(),
                when(newest.deleted_ms)
            );
        }
        newest.id.clone()
    } else {
        item.to_owned()
    };
    let e = r.restore_from_trash(&id, to).await?;
    println!("{} restored", e.path);
    Ok(())
}

/// Empties the trash, once confirmed: what is there cannot come back.
pub async fn trash_empty(yes: bool) -> anyhow::Result<()> {
    let r = remote()?;
    let mut upto = None;
    if !yes {
        let shown = r.trash().await?.entries;
        let n = shown.len();
        upto = shown.iter().map(|e| e.deleted_ms).max();
        if n == 0 {
            println!("the trash is empty");
            return Ok(());
        }
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            bail!(
                "emptying the trash cannot be undone: give --yes to confirm; nothing was removed"
            );
        }
        eprint!("Remove the {n} items in the trash for good? Nothing can bring them back. [y/N] ");
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not confirmed: nothing was removed");
        }
    }
    // Only what was counted above: something deleted meanwhile on another
    // device stays, since nobody was asked about it.
    r.purge_trash_upto(None, upto).await?;
    // Counted by time, not by what is left: entries of folders shared
    // with this account stay in its list, as before (only their owner
    // empties them).
    let left = match upto {
        Some(upto) => r
            .trash()
            .await?
            .entries
            .iter()
            .filter(|e| e.deleted_ms > upto)
            .count(),
        None => 0,
    };
    if left == 0 {
        println!("trash emptied");
    } else {
        println!(
            "trash emptied of what was asked about; {left} item{} deleted since then stay{}",
            if left == 1 { "" } else { "s" },
            if left == 1 { "s" } else { "" }
        );
    }
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
