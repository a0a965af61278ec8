//! `tessera-bench pipeline`: each stage of the block pipeline, timed alone
//! on one thread over a buffer of real files, then the whole write and read
//! paths block by block.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::Read;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use tessera_client::transfer::ZSTD_LEVEL as CLIENT_LEVEL;
use tessera_proto::BlockId;
use tessera_proto::block::{CHUNKER, chunker};
use tessera_server::blocks::codec::{self, ZSTD_LEVEL as SERVER_LEVEL};
use tessera_server::blocks::{Codec, KeyRing, MasterKey};
use tessera_server::meta::Meta;

use crate::mb_per_s;

#[derive(clap::Args)]
pub struct Args {
    /// MiB of real data to measure on.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Folder to read files from, recursively (repeatable; default: /usr/lib and /usr/share).
    #[arg(long)]
    source: Vec<PathBuf>,
    /// Runs of each stage; the fastest is kept.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

struct Stage {
    name: String,
    time: Duration,
    mb_per_s: f64,
}

pub fn run(args: Args) -> Result<()> {
    let roots = if args.source.is_empty() {
        vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/share")]
    } else {
        args.source.clone()
    };
    let target = args.mib << 20;
    let (buf, taken) = load_corpus(&roots, target)?;
    let total = buf.len() as u64;
    let ring = key_ring()?;
    let runs = args.runs.max(1);
    let mut stages = Vec::new();
    let mut record = |name: String, time: Duration| {
        stages.push(Stage {
            name,
            time,
            mb_per_s: mb_per_s(total, time),
        })
    };

    // (a) Cut points only.
    let (t, blocks) = best(runs, || {
        chunker(&buf[..])
            .map(|c| {
                c.map(|c| c.offset as usize..c.offset as usize + c.length)
                    .map_err(|e| anyhow!("chunking: {e}"))
            })
            .collect::<Result<Vec<Range<usize>>>>()
    })?;
    record("FastCDC cut points".into(), t);

    // (b) Block ids.
    let (t, ids) = best(runs, || {
        Ok(blocks
            .iter()
            .map(|r| BlockId::of(&buf[r.clone()]))
            .collect::<Vec<_>>())
    })?;
    record("BLAKE3 block ids".into(), t);

    // (c) Compression: what the client sends, and what the server makes of
    // plain uploads. Both keep a block raw when zstd does not shrink it.
    let (t, client_payloads) = best(runs, || {
        blocks
            .iter()
            .map(|r| {
                let plain = &buf[r.clone()];
                Ok(match zstd::bulk::compress(plain, CLIENT_LEVEL)? {
                    z if z.len() < plain.len() => (Codec::Zstd, z),
                    _ => (Codec::Raw, plain.to_vec()),
                })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    record(format!("zstd level {CLIENT_LEVEL} (client)"), t);
    let (t, server_payloads) = best(runs, || {
        Ok(blocks
            .iter()
            .map(|r| codec::compress(&buf[r.clone()]))
            .collect::<Vec<_>>())
    })?;
    record(format!("zstd level {SERVER_LEVEL} (server)"), t);
    let payload_bytes = |p: &[(Codec, Vec<u8>)]| p.iter().map(|(_, z)| z.len() as u64).sum::<u64>();
    let client_stored = payload_bytes(&client_payloads);
    let server_stored = payload_bytes(&server_payloads);
    drop(server_payloads);

    // The server's check of an uploaded block: decompress, re-hash.
    let (t, ()) = best(runs, || {
        for ((codec, payload), id) in client_payloads.iter().zip(&ids) {
            let plain = codec::decompress(*codec, payload)?;
            codec::verify(id, &plain)?;
        }
        Ok(())
    })?;
    record("upload check: unzstd + BLAKE3".into(), t);

    // (d) Seal the client's payloads, as the server stores them.
    let (t, sealed) = best(runs, || {
        Ok(client_payloads
            .iter()
            .zip(&ids)
            .zip(&blocks)
            .map(|(((codec, payload), id), r)| codec::seal(id, *codec, payload, r.len(), &ring))
            .collect::<Result<Vec<_>, _>>()?)
    })?;
    record("seal (AES-256-GCM)".into(), t);
    drop(client_payloads);

    // (e) Open: decrypt, decompress, verify.
    let (t, ()) = best(runs, || {
        for (id, stored) in ids.iter().zip(&sealed) {
            black_box(codec::open(id, stored, &ring)?);
        }
        Ok(())
    })?;
    record("open (decrypt+unzstd+verify)".into(), t);

    // (f) End to end, block by block.
    let (t, ()) = best(runs, || {
        for chunk in chunker(&buf[..]) {
            let chunk = chunk.map_err(|e| anyhow!("chunking: {e}"))?;
            let id = BlockId::of(&chunk.data);
            let (codec, payload) = match zstd::bulk::compress(&chunk.data, CLIENT_LEVEL)? {
                z if z.len() < chunk.data.len() => (Codec::Zstd, z),
                _ => (Codec::Raw, chunk.data),
            };
            black_box(codec::seal(&id, codec, &payload, chunk.length, &ring)?);
        }
        Ok(())
    })?;
    record("write: cut+hash+zstd3+seal".into(), t);
    let (t, ()) = best(runs, || {
        for chunk in chunker(&buf[..]) {
            let chunk = chunk.map_err(|e| anyhow!("chunking: {e}"))?;
            let id = BlockId::of(&chunk.data);
            let (codec, payload) = match zstd::bulk::compress(&chunk.data, CLIENT_LEVEL)? {
                z if z.len() < chunk.data.len() => (Codec::Zstd, z),
                _ => (Codec::Raw, chunk.data),
            };
            let plain = codec::decompress(codec, &payload)?;
            codec::verify(&id, &plain)?;
            black_box(codec::seal(&id, codec, &payload, chunk.length, &ring)?);
        }
        Ok(())
    })?;
    record("write + upload check".into(), t);
    let (t, hash) = best(runs, || {
        let mut file = blake3::Hasher::new();
        for (id, stored) in ids.iter().zip(&sealed) {
            match codec::open(id, stored, &ring)? {
                codec::Opening::Whole(_, _, plain) => file.update(&plain),
                codec::Opening::Delta(_) => bail!("the write path sealed a delta"),
            };
        }
        Ok(file.finalize())
    })?;
    if hash != blake3::hash(&buf) {
        bail!("the read path returned different bytes");
    }
    record("read: open + file hash".into(), t);

    let ratio = |stored: u64| total as f64 / stored.max(1) as f64;
    if args.json {
        let out = json!({
            "benchmark": "pipeline",
            "input_bytes": total,
            "sources": roots.iter().zip(&taken).map(|(root, t)| json!({
                "folder": root,
                "files": t.files,
                "bytes": t.bytes,
            })).collect::<Vec<_>>(),
            "chunker": CHUNKER,
            "blocks": blocks.len(),
            "runs": runs,
            "threads": 1,
            "compression": {
                "client_level": CLIENT_LEVEL,
                "client_payload_bytes": client_stored,
                "client_ratio": ratio(client_stored),
                "server_level": SERVER_LEVEL,
                "server_payload_bytes": server_stored,
                "server_ratio": ratio(server_stored),
            },
            "stages": stages.iter().map(|s| json!({
                "stage": s.name,
                "seconds": s.time.as_secs_f64(),
                "mb_per_s": s.mb_per_s,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let sources = roots
        .iter()
        .zip(&taken)
        .map(|(root, t)| {
            format!(
                "{} ({} files, {:.1} MB)",
                root.display(),
                t.files,
                t.bytes as f64 / 1e6
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "input: {:.1} MB of real files: {sources}",
        total as f64 / 1e6
    );
    println!(
        "{} blocks (avg {:.2} MB); best of {runs} runs per stage, 1 thread",
        blocks.len(),
        total as f64 / 1e6 / blocks.len().max(1) as f64,
    );
    println!(
        "compression ratio: level {CLIENT_LEVEL} {:.3} ({client_stored} bytes), level {SERVER_LEVEL} {:.3} ({server_stored} bytes)",
        ratio(client_stored),
        ratio(server_stored)
    );
    println!();
    println!("{:<32} {:>10} {:>10}", "stage", "seconds", "MB/s");
    for s in &stages {
        println!(
            "{:<32} {:>10.3} {:>10.1}",
            s.name,
            s.time.as_secs_f64(),
            s.mb_per_s
        );
    }
    Ok(())
}

/// Runs `f` `runs` times; returns the shortest time and the last result.
fn best<T>(runs: u32, mut f: impl FnMut() -> Result<T>) -> Result<(Duration, T)> {
    let mut fastest = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let out = black_box(f()?);
        fastest = fastest.min(start.elapsed());
        last = Some(out);
    }
    last.map(|out| (fastest, out)).context("no run")
}

/// A key ring as the server would load it, over a throwaway SQLite database.
fn key_ring() -> Result<KeyRing> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/m.db", dir.path().display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let meta = Meta::connect(&url, tessera_server::notify::Publisher::silent()).await?;
        let master = MasterKey::from_hex(&"11".repeat(32), "bench")?;
        Ok(KeyRing::load(&meta, &master).await?)
    })
}

/// What one source folder gave to the buffer.
#[derive(Clone, Copy, Default)]
struct Taken {
    files: usize,
    bytes: u64,
}

/// Concatenates regular files up to `target` bytes, each time from the root
/// that has given the fewest bytes so far, so that large libraries do not
/// crowd out the smaller text and data files.
fn load_corpus(roots: &[PathBuf], target: usize) -> Result<(Vec<u8>, Vec<Taken>)> {
    let mut walks: Vec<Option<Walk>> = roots.iter().cloned().map(Walk::new).map(Some).collect();
    let mut taken = vec![Taken::default(); roots.len()];
    let mut buf = Vec::with_capacity(target);
    while buf.len() < target {
        let Some(root) = (0..roots.len())
            .filter(|i| walks[*i].is_some())
            .min_by_key(|i| taken[*i].bytes)
        else {
            bail!(
                "found only {} bytes of readable files, {target} wanted",
                buf.len()
            );
        };
        let Some(path) = walks[root].as_mut().and_then(Iterator::next) else {
            walks[root] = None;
            continue;
        };
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let before = buf.len();
        match file.take((target - before) as u64).read_to_end(&mut buf) {
            Ok(n) => {
                taken[root].files += usize::from(n > 0);
                taken[root].bytes += n as u64;
            }
            Err(_) => buf.truncate(before),
        }
    }
    Ok((buf, taken))
}

/// Regular files under a folder, depth first in name order; symbolic links
/// and unreadable folders are skipped.
pub(crate) struct Walk {
    dirs: Vec<PathBuf>,
    files: VecDeque<PathBuf>,
}

impl Walk {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            dirs: vec![root],
            files: VecDeque::new(),
        }
    }
}

impl Iterator for Walk {
    type Item = PathBuf;

    fn next(&mut self) -> Option<PathBuf> {
        loop {
            if let Some(file) = self.files.pop_front() {
                return Some(file);
            }
            let dir = self.dirs.pop()?;
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
            entries.sort_by_key(|e| e.file_name());
            let mut subdirs = Vec::new();
            for entry in entries {
                match entry.file_type() {
                    Ok(t) if t.is_dir() => subdirs.push(entry.path()),
                    Ok(t) if t.is_file() => self.files.push_back(entry.path()),
                    _ => {}
                }
            }
            self.dirs.extend(subdirs.into_iter().rev());
        }
    }
}
