//! A folder as one zip download, streamed: entries are written as their
//! blocks are read, in order, so memory holds one block and the zip
//! central directory (a few dozen bytes per entry) whatever the sizes.
//!
//! Entries are stored (not deflated), with Zip64, written block by block
//! through a bounded pipe; a failure part way aborts the body rather than
//! ending it, so no truncated zip looks whole.
//!
//! Entry names are made safe to extract on Windows, macOS and Linux, name by
//! name: `\ / : * ? " < > |` and control characters become `_`, so do
//! trailing dots and spaces (`..\..\evil.bat` → `.._.._evil.bat`,
//! `C:win.txt` → `C_win.txt`, `trailing.` → `trailing_`); a Windows device
//! name (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`, also with
//! an extension, any case) gets a leading `_` (`aux.tar.gz` →
//! `_aux.tar.gz`); names of one folder that would then meet (also ignoring
//! case, as Windows and macOS compare) get ` (2)`, ` (3)`… before the
//! extension, in listing order. No entry can leave the extraction folder: no
//! `..` segment, no absolute path, no drive letter.

use std::collections::HashSet;

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTimeBuilder, ZipEntryBuilder};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{AsyncWriteExt, StreamExt};
use tessera_proto::RemotePath;
use tessera_proto::api::PathQuery;
use tokio::io::DuplexStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::{ApiError, AppState, AuthUser, Q};
use crate::meta::{MountRow, NodeRow};

/// Bytes buffered between the zip writer and the response body.
const PIPE_BYTES: usize = 256 << 10;
/// Size of the body's pieces (the default 4 KiB makes many tiny frames).
const READ_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
enum ZipError {
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error(transparent)]
    Block(#[from] crate::blocks::BlockError),
    #[error(transparent)]
    Zip(#[from] async_zip::error::ZipError),
    #[error(transparent)]
    Path(#[from] tessera_proto::PathError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the folder tree is damaged: folder {0} is inside itself")]
    Cycle(String),
}

#[utoipa::path(get, path = "/api/v1/files/zip", params(PathQuery), responses((status = 200, content_type = "application/zip", description = "the folder and everything in it, streamed (Zip64, stored)"), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a file")), security(("bearer" = [])))]
pub async fn folder(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<PathQuery>,
) -> Result<Response, ApiError> {
    let path = RemotePath::parse(&q.path)?;
    let places = super::place::Places::of(&state, &user).await?;
    let at = places.read(&path)?;
    let name = if path.is_root() {
        "Tessera".to_owned()
    } else {
        let node = state
            .meta
            .resolve(at.ns, &at.path)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("{path} does not exist")))?;
        if !node.is_folder() {
            return Err(ApiError::NotAFolder(path.to_string()));
        }
        path.name().unwrap_or(&node.name).to_owned()
    };
    // The shared folders mounted in the user's own folders go in too,
    // where the user has them.
    let mounts = if at.mount.is_none() {
        places.mounts().to_vec()
    } else {
        Vec::new()
    };
    zip_response(state, at.ns, at.path, &name, mounts)
}

/// The folder at `path` of `ns` and everything in it as a zip named
/// `name`.zip, streamed, with the shared folders `mounts` where they are
/// mounted in it (`ns` being their member's own files).
pub(super) fn zip_response(
    state: AppState,
    ns: i64,
    path: RemotePath,
    name: &str,
    mounts: Vec<MountRow>,
) -> Result<Response, ApiError> {
    let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
    let task = tokio::spawn(write_zip(
        state,
        ns,
        path.clone(),
        mounts,
        writer.compat_write(),
    ));
    // The body ends with an error if writing failed, so the client sees a
    // broken download instead of a short zip that looks complete.
    let tail = futures::stream::once(async move {
        let failure = match task.await {
            Ok(Ok(())) => return None,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(%path, error = %failure, "zip download failed part way");
        Some(Err(std::io::Error::other(failure)))
    })
    .filter_map(futures::future::ready);
    let body = tokio_util::io::ReaderStream::with_capacity(reader, READ_BYTES).chain(tail);
    let disposition = super::view::disposition("attachment", &format!("{name}.zip"));
    let mut resp = Body::from_stream(body).into_response();
    let out = resp.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    out.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(ApiError::internal)?,
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// A folder the walk is to enter: where it is, in which namespace, and
/// its name in the zip.
struct Pending {
    ns: i64,
    folder: RemotePath,
    /// Where the member sees it, for a folder of their own files (mounts
    /// are found by it); `None` inside a shared folder.
    shown: Option<RemotePath>,
    prefix: String,
    modified_ms: i64,
}

/// Walks the folder depth first (one folder's listing in memory at a time
/// per level) and writes each file's current revision block by block.
/// Entry names go through [`portable_names`].
async fn write_zip(
    state: AppState,
    ns: i64,
    root: RemotePath,
    mounts: Vec<MountRow>,
    out: Compat<DuplexStream>,
) -> Result<(), ZipError> {
    let mut zip = ZipFileWriter::new(out);
    let mut stack = vec![Pending {
        ns,
        shown: Some(root.clone()),
        folder: root,
        prefix: String::new(),
        modified_ms: 0,
    }];
    // Listing goes by path, so it cannot meet a cycle; the check keeps it so.
    let mut seen = HashSet::new();
    while let Some(Pending {
        ns,
        folder,
        shown,
        prefix,
        modified_ms,
    }) = stack.pop()
    {
        let mut children: Vec<(NodeRow, Option<&MountRow>)> = Vec::new();
        let here: Vec<&MountRow> = match &shown {
            Some(at) => mounts
                .iter()
                .filter(|m| m.point().parent().as_ref() == Some(at))
                .collect(),
            None => Vec::new(),
        };
        for child in state.meta.list(ns, &folder).await? {
            // A mount of the same name hides it, as in a listing.
            if !here
                .iter()
                .any(|m| m.point().name() == Some(child.name.as_str()))
            {
                children.push((child, None));
            }
        }
        for m in here {
            if let Some(mut top) = state
                .meta
                .resolve(m.namespace_id, &RemotePath::root())
                .await?
            {
                top.name = m.point().name().unwrap_or_default().to_owned();
                children.push((top, Some(m)));
            }
        }
        if children.is_empty() && !prefix.is_empty() {
            let entry = ZipEntryBuilder::new(prefix.clone().into(), Compression::Stored)
                .unix_permissions(0o755)
                .last_modification_date(zip_date(modified_ms));
            zip.write_entry_whole(entry, &[]).await?;
        }
        let names = portable_names(children.iter().map(|(c, _)| c.name.as_str()));
        // A folder's files first, then its subfolders, each in listing order.
        let mut subfolders = Vec::new();
        for ((child, mount), name) in children.into_iter().zip(names) {
            let child_name = format!("{prefix}{name}");
            if let Some(m) = mount {
                subfolders.push(Pending {
                    ns: m.namespace_id,
                    folder: RemotePath::root(),
                    shown: None,
                    prefix: format!("{child_name}/"),
                    modified_ms: child.modified_ms,
                });
                continue;
            }
            let child_path = folder.join(&child.name)?;
            if child.is_folder() {
                if !seen.insert(child.id.clone()) {
                    return Err(ZipError::Cycle(child_path.to_string()));
                }
                subfolders.push(Pending {
                    ns,
                    shown: shown.as_ref().map(|s| s.join(&child.name)).transpose()?,
                    folder: child_path,
                    prefix: format!("{child_name}/"),
                    modified_ms: child.modified_ms,
                });
                continue;
            }
            // Files still being uploaded have no complete content yet.
            if child.rev == 0 {
                continue;
            }
            let (_, rev, blocks) = state.meta.file_revision(ns, &child_path, None).await?;
            let entry = ZipEntryBuilder::new(child_name.into(), Compression::Stored)
                .unix_permissions(0o644)
                .last_modification_date(zip_date(rev.created_ms));
            let mut w = zip.write_entry_stream(entry).await?;
            for b in blocks {
                let plain = state.blocks.read_plain(b.id, &b.loc).await?;
                w.write_all(&plain).await?;
            }
            w.close().await?;
        }
        stack.extend(subfolders.into_iter().rev());
    }
    let mut out = zip.close().await?;
    out.close().await?;
    Ok(())
}

/// Characters Windows refuses in a name (and `/`, `\` that any extractor
/// may take for a separator).
const UNSAFE: &[char] = &['\\', '/', ':', '*', '?', '"', '<', '>', '|'];

/// Windows device names, reserved with any extension.
const RESERVED: &[&str] = &[
    "CON",
    "PRN",
    "AUX",
    "NUL",
    "COM0",
    "COM1",
    "COM2",
    "COM3",
    "COM4",
    "COM5",
    "COM6",
    "COM7",
    "COM8",
    "COM9",
    "COM\u{b9}",
    "COM\u{b2}",
    "COM\u{b3}",
    "LPT0",
    "LPT1",
    "LPT2",
    "LPT3",
    "LPT4",
    "LPT5",
    "LPT6",
    "LPT7",
    "LPT8",
    "LPT9",
    "LPT\u{b9}",
    "LPT\u{b2}",
    "LPT\u{b3}",
];

/// One name as every common file system extracts it, inside the target
/// folder: unsafe and control characters become `_`, so do trailing dots
/// and spaces (Windows drops them), and a reserved device name gets a
/// leading `_`.
fn portable_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_control() || UNSAFE.contains(&c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let kept = out.trim_end_matches(['.', ' ']).len();
    let trailing = out.len() - kept;
    out.truncate(kept);
    out.extend(std::iter::repeat_n('_', trailing));
    let stem = out.split('.').next().unwrap_or("").trim_end_matches(' ');
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        out.insert(0, '_');
    }
    out
}

/// The names of one folder's entries, made portable and kept apart: two
/// that would land on one file (also ignoring case, as Windows and macOS
/// compare) get ` (2)`, ` (3)`… before the extension, in listing order.
fn portable_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut taken = HashSet::new();
    // Where each base's numbering stopped: many names clashing on one base
    // cost one try each, not a count from 2 every time.
    let mut next: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    names
        .map(|name| {
            let base = portable_name(name);
            let mut candidate = base.clone();
            let n = next.entry(base.to_lowercase()).or_insert(2);
            while !taken.insert(candidate.to_lowercase()) {
                candidate = tessera_proto::path::numbered_name(&base, *n as u64);
                *n += 1;
            }
            candidate
        })
        .collect()
}

/// Milliseconds since the epoch as a zip (MS-DOS, UTC here) timestamp.
fn zip_date(ms: i64) -> async_zip::ZipDateTime {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    ZipDateTimeBuilder::new()
        .year(y as i32)
        .month(m)
        .day(d)
        .hour((rem / 3600) as u32)
        .minute((rem % 3600 / 60) as u32)
        .second((rem % 60) as u32)
        .build()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::{civil_from_days, portable_name, portable_names};

    #[test]
    fn portable_names_map_as_documented() {
        for (raw, safe) in [
            ("..\\..\\evil.bat", ".._.._evil.bat"),
            ("C:win.txt", "C_win.txt"),
            ("nul", "_nul"),
            ("Con .txt", "_Con .txt"),
            ("LPT\u{b9}", "_LPT\u{b9}"),
            ("console.txt", "console.txt"),
            ("end. .", "end___"),
            ("tab\there", "tab_here"),
            ("fine.txt", "fine.txt"),
        ] {
            assert_eq!(portable_name(raw), safe, "{raw:?}");
        }
        let names = portable_names(["a:b.txt", "a_b.txt", "A_B.txt", "x.", "x_"].into_iter());
        assert_eq!(
            names,
            ["a_b.txt", "a_b (2).txt", "A_B (3).txt", "x_", "x_ (2)"]
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
