//! A download that survives interruption: the bytes gather in a part file
//! under a fixed name, with a note of the ETag they belong to, so a later
//! run asks only for the rest.

use std::path::{Path, PathBuf};

use tessera_proto::ContentHash;
use tokio::io::AsyncWriteExt;

use super::download::{is_not_durable, not_durable, write_body};
use super::{DownloadReport, Progress, blocking_err, fsync_parent};
use crate::remote::{ClientError, Download, Remote};

/// Where a resumable download of `target` keeps its bytes, and where it
/// notes what they are a part of. Both names end in `part` so folder sync
/// ignores them, and differ in what precedes it, so no target's part can be
/// another's note.
pub fn part_paths(target: &Path) -> (PathBuf, PathBuf) {
    let name = target.file_name().unwrap_or_default();
    // Names near the 255-byte limit leave no room for the suffixes.
    let stem = if name.len() > 200 {
        let hash = blake3::hash(name.as_encoded_bytes()).to_hex();
        std::ffi::OsString::from(&hash[..32])
    } else {
        name.to_owned()
    };
    let named = |suffix: &str| {
        let mut n = std::ffi::OsString::from(".");
        n.push(&stem);
        n.push(suffix);
        target.with_file_name(n)
    };
    (named(".tessera-part"), named(".tessera-etag.part"))
}

/// What the bytes of a part file are a prefix of.
#[derive(Debug, Clone, PartialEq)]
struct PartOf {
    etag: String,
    hash: ContentHash,
    size: u64,
}

impl PartOf {
    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let part = PartOf {
            etag: lines.next()?.to_owned(),
            hash: lines.next()?.parse().ok()?,
            size: lines.next()?.parse().ok()?,
        };
        (!part.etag.is_empty()).then_some(part)
    }

    fn render(&self) -> String {
        format!("{}\n{}\n{}\n", self.etag, self.hash.to_hex(), self.size)
    }
}

/// What a resumable download did.
#[derive(Debug, Clone)]
pub struct ResumeReport {
    pub download: DownloadReport,
    /// Bytes kept from an earlier, interrupted run.
    pub resumed: u64,
    /// Bytes that came over the network this run.
    pub fetched: u64,
}

/// Downloads `remote_path` (revision `rev`, or the current one) to `local`,
/// continuing an earlier interrupted run if the server still serves the
/// same content. The bytes gather in the part file (see [`part_paths`]),
/// which an interruption leaves for the next run; the whole file's hash is
/// checked before it is renamed to `local`, and a part that fails the check
/// is removed, so the next run starts over.
pub async fn download_resumable(
    remote: &Remote,
    remote_path: &str,
    rev: Option<i64>,
    local: &Path,
    progress: Progress,
) -> Result<ResumeReport, ClientError> {
    let (part, note) = part_paths(local);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part)?;
    // Two runs appending to one part would interleave their bytes.
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ClientError::Io(std::io::Error::other(format!(
                "{} is being downloaded by another process",
                local.display()
            ))));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    let mut held = Part {
        path: part.clone(),
        note: note.clone(),
        file: tokio::fs::File::from_std(file),
    };
    let mut result = resume_into(remote, remote_path, rev, local, &mut held, true, &progress).await;
    if let Err(ClientError::Api { status: 416, .. }) = result {
        // The server refused the range it had agreed to serve: start over.
        result = resume_into(remote, remote_path, rev, local, &mut held, false, &progress).await;
    }
    let empty = held
        .file
        .metadata()
        .await
        .map(|m| m.len() == 0)
        .unwrap_or(false);
    drop(held);
    match &result {
        Err(ClientError::Integrity(_)) => discard_part(&part, &note).await,
        Err(e) if is_not_durable(e) => discard_part(&part, &note).await,
        // An empty part holds nothing worth resuming (the request failed
        // before any byte arrived).
        Err(_) if empty => discard_part(&part, &note).await,
        _ => {}
    }
    result
}

async fn discard_part(part: &Path, note: &Path) {
    let _ = tokio::fs::remove_file(note).await;
    let _ = tokio::fs::remove_file(part).await;
}

/// Hashes the first `len` bytes of `path` without holding them in memory.
async fn hash_prefix(path: &Path, len: u64) -> Result<blake3::Hasher, ClientError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<blake3::Hasher, ClientError> {
        use std::io::Read;
        let mut hasher = blake3::Hasher::new();
        let mut reader = std::fs::File::open(&path)?.take(len);
        let mut buf = vec![0u8; 1 << 20];
        let mut seen = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            seen += n as u64;
        }
        if seen != len {
            return Err(ClientError::Integrity(format!(
                "{} shrank while it was being resumed",
                path.display()
            )));
        }
        Ok(hasher)
    })
    .await
    .map_err(blocking_err)?
}

/// An open, locked part file and the paths of it and its note.
struct Part {
    path: PathBuf,
    note: PathBuf,
    file: tokio::fs::File,
}

async fn resume_into(
    remote: &Remote,
    remote_path: &str,
    rev: Option<i64>,
    local: &Path,
    held: &mut Part,
    resume: bool,
    progress: &Progress,
) -> Result<ResumeReport, ClientError> {
    let len = held.file.metadata().await?.len();
    let known = if resume && len > 0 {
        tokio::fs::read_to_string(&held.note)
            .await
            .ok()
            .and_then(|t| PartOf::parse(&t))
    } else {
        None
    };
    // A complete part still asks for its last byte: that is how we learn
    // whether the server serves the same content.
    let from = known
        .filter(|k| k.size > 0)
        .map(|k| (len.min(k.size - 1), k));
    let mut body = match &from {
        Some((offset, k)) => {
            remote
                .content_from(remote_path, rev, *offset, &k.etag)
                .await?
        }
        None => remote.content(remote_path, rev).await?,
    };
    let (mut hasher, offset) = match body.range_start {
        Some(range) => continue_part(remote_path, held, &body, range, from, progress).await?,
        None => restart_part(held, &body).await?,
    };

    let streamed = write_body(&mut body, &mut held.file, &mut hasher, progress).await;
    // Whatever arrived stays in the part for the next run.
    held.file.flush().await?;
    let fetched = streamed?;

    let (expected, rev) = (body.content_hash, body.rev);
    let got = ContentHash::from(hasher.finalize());
    if got != expected {
        return Err(ClientError::Integrity(format!(
            "{remote_path} arrived damaged (hash {got}, expected {expected}); the partial \
             download was removed, so the next run starts over"
        )));
    }
    held.file.sync_all().await.map_err(not_durable)?;
    tokio::fs::rename(&held.path, local).await?;
    let _ = tokio::fs::remove_file(&held.note).await;
    fsync_parent(local).await?;
    Ok(ResumeReport {
        download: DownloadReport {
            rev,
            size: offset + fetched,
            content_hash: got,
        },
        resumed: offset,
        fetched,
    })
}

/// The server sent the rest of the content the part holds the start of:
/// checks it is the part asked for, and readies the part to go on.
async fn continue_part(
    remote_path: &str,
    held: &mut Part,
    body: &Download,
    range: Option<u64>,
    asked: Option<(u64, PartOf)>,
    progress: &Progress,
) -> Result<(blake3::Hasher, u64), ClientError> {
    use tokio::io::AsyncSeekExt;

    let Some((offset, k)) = asked else {
        return Err(ClientError::Integrity(format!(
            "{remote_path}: the server sent a part that was not asked for"
        )));
    };
    if range != Some(offset)
        || body.etag.as_deref() != Some(k.etag.as_str())
        || body.content_hash != k.hash
    {
        let range = range.map_or_else(|| "no range".to_owned(), |r| format!("from byte {r}"));
        return Err(ClientError::Integrity(format!(
            "{remote_path}: the server answered a different range or content than asked \
             ({range}); the partial download was removed"
        )));
    }
    held.file.set_len(offset).await?;
    held.file.seek(std::io::SeekFrom::Start(offset)).await?;
    let hasher = hash_prefix(&held.path, offset).await?;
    progress(offset);
    Ok((hasher, offset))
}

/// The server sent the whole file: anything held is of other content (or
/// there is no note saying what it is), so the part begins again, noting
/// first what its bytes will be.
async fn restart_part(
    held: &mut Part,
    body: &Download,
) -> Result<(blake3::Hasher, u64), ClientError> {
    use tokio::io::AsyncSeekExt;

    let _ = tokio::fs::remove_file(&held.note).await;
    held.file.set_len(0).await?;
    held.file.seek(std::io::SeekFrom::Start(0)).await?;
    if let (Some(etag), Some(size)) = (&body.etag, body.length) {
        let k = PartOf {
            etag: etag.clone(),
            hash: body.content_hash,
            size,
        };
        tokio::fs::write(&held.note, k.render()).await?;
    }
    Ok((blake3::Hasher::new(), 0))
}
