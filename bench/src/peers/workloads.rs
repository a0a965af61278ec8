//! The workloads' data, made once from real files on the machine, and how
//! each change lands in folder A and is recognised, complete, in folder B.
//!
//! A change lands at once: the large file and the tree of small files are
//! prepared beside A (same file system, not timed) and renamed into it, so
//! no tool sees a file half written by the bench. In B, every tool writes
//! a temporary name and renames, so a final name with the right size is
//! nearly always complete; the recognition is two-step all the same: a
//! cheap check (size, and the changed bytes) every poll, then a full
//! BLAKE3 comparison, and only a match ends the wait.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::pipeline::Walk;

/// Bytes of real data after the large file's, for the edits: 1 MiB
/// overwritten, 100 bytes inserted, 10 MiB appended. They come from the
/// same walk, so they are real data the file does not already hold (a
/// copy of another part of the file would let rsync and Syncthing find it
/// locally).
const PATCH: usize = 1 << 20;
const INSERT: usize = 100;
const APPEND: usize = 10 << 20;

pub const BIG_NAME: &str = "big.bin";
pub const SMALL_DIR: &str = "small";

/// Where the files of one part of a workload came from.
pub struct Source {
    pub root: PathBuf,
    pub files: usize,
    pub bytes: u64,
}

pub struct SmallFile {
    pub rel: PathBuf,
    pub len: u64,
    pub hash: blake3::Hash,
}

/// The data every run starts from, under the bench's temporary folder.
pub struct Corpus {
    pub big: PathBuf,
    pub big_size: u64,
    pub big_hash: blake3::Hash,
    pub big_sources: Vec<Source>,
    extra: Vec<u8>,
    pub small_root: PathBuf,
    pub small: Vec<SmallFile>,
    pub small_sources: Vec<Source>,
}

impl Corpus {
    /// The large file of `size` bytes from /usr/lib and /usr/share (not
    /// /usr/share/doc, which the small files use), and `files` small files
    /// from /usr/include and /usr/share/doc, each time from whichever
    /// folder has given fewer bytes so far.
    pub fn build(dir: &Path, size: u64, files: usize) -> Result<Corpus> {
        std::fs::create_dir_all(dir)?;
        let big = dir.join(BIG_NAME);
        let mut big_sources = sources(&["/usr/lib", "/usr/share"]);
        let mut walk = Balanced::new(&big_sources, &[Path::new("/usr/share/doc")]);
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&big)?);
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        let mut extra = Vec::with_capacity(PATCH + INSERT + APPEND);
        let want_extra = (PATCH + INSERT + APPEND) as u64;
        while written < size + want_extra {
            let Some((i, path)) = walk.next(&big_sources) else {
                bail!("found only {written} bytes of readable files for the large file");
            };
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let mut data = Vec::new();
            if file
                .take(size + want_extra - written)
                .read_to_end(&mut data)
                .is_err()
            {
                continue;
            }
            let into_big = (size.saturating_sub(written) as usize).min(data.len());
            out.write_all(&data[..into_big])?;
            hasher.update(&data[..into_big]);
            extra.extend_from_slice(&data[into_big..]);
            written += data.len() as u64;
            big_sources[i].files += usize::from(into_big > 0);
            big_sources[i].bytes += into_big as u64;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;

        let small_root = dir.join(SMALL_DIR);
        let mut small_sources = sources(&["/usr/include", "/usr/share/doc"]);
        let names = ["include", "doc"];
        let mut walk = Balanced::new(&small_sources, &[]);
        let mut small = Vec::with_capacity(files);
        while small.len() < files {
            let Some((i, path)) = walk.next(&small_sources) else {
                bail!("found only {} readable small files", small.len());
            };
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            let rel = Path::new(names[i]).join(path.strip_prefix(&small_sources[i].root)?);
            let to = small_root.join(&rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&to, &data).with_context(|| format!("writing {}", to.display()))?;
            small_sources[i].files += 1;
            small_sources[i].bytes += data.len() as u64;
            small.push(SmallFile {
                rel,
                len: data.len() as u64,
                hash: blake3::hash(&data),
            });
        }
        Ok(Corpus {
            big,
            big_size: size,
            big_hash: hasher.finalize(),
            big_sources,
            extra,
            small_root,
            small,
            small_sources,
        })
    }

    pub fn small_bytes(&self) -> u64 {
        self.small.iter().map(|f| f.len).sum()
    }

    /// The three edits of the large file, in the order they are made.
    pub fn edits(&self) -> [Edit; 3] {
        let e = &self.extra;
        [
            Edit::Overwrite {
                at: self.big_size / 2,
                data: e[..PATCH].to_vec(),
            },
            Edit::Insert {
                at: 4096.min(self.big_size),
                data: e[PATCH..PATCH + INSERT].to_vec(),
            },
            Edit::Append {
                data: e[PATCH + INSERT..].to_vec(),
            },
        ]
    }
}

fn sources(roots: &[&str]) -> Vec<Source> {
    roots
        .iter()
        .map(|r| Source {
            root: PathBuf::from(r),
            files: 0,
            bytes: 0,
        })
        .collect()
}

/// Walks several folders at once, taking the next file from whichever has
/// given the fewest bytes so far, so large libraries do not crowd out
/// text and data files.
struct Balanced {
    walks: Vec<Option<Walk>>,
    skip: Vec<PathBuf>,
}

impl Balanced {
    fn new(roots: &[Source], skip: &[&Path]) -> Self {
        Balanced {
            walks: roots
                .iter()
                .map(|s| Some(Walk::new(s.root.clone())))
                .collect(),
            skip: skip.iter().map(|p| p.to_path_buf()).collect(),
        }
    }

    fn next(&mut self, taken: &[Source]) -> Option<(usize, PathBuf)> {
        loop {
            let i = (0..self.walks.len())
                .filter(|i| self.walks[*i].is_some())
                .min_by_key(|i| taken[*i].bytes)?;
            match self.walks[i].as_mut().and_then(Iterator::next) {
                None => self.walks[i] = None,
                Some(p) if self.skip.iter().any(|s| p.starts_with(s)) => {}
                Some(p) => return Some((i, p)),
            }
        }
    }
}

/// A change to the large file in A.
pub enum Edit {
    Overwrite { at: u64, data: Vec<u8> },
    Insert { at: u64, data: Vec<u8> },
    Append { data: Vec<u8> },
}

/// What B's copy must look like once an edit has arrived.
pub struct Expect {
    pub len: u64,
    /// Bytes at an offset that differ from before: the cheap check.
    pub probe: (u64, Vec<u8>),
    pub hash: blake3::Hash,
}

/// An edit ready to be made at once.
pub struct Prepared {
    edit: Edit,
    /// The whole new file, for an insertion (which rewrites the file).
    staged: Option<PathBuf>,
}

impl Edit {
    /// Works out the new content from `file` as it is now, and for an
    /// insertion writes it in `stage` (same file system as `file`).
    pub fn prepare(self, file: &Path, stage: &Path) -> Result<(Prepared, Expect)> {
        let old_len = std::fs::metadata(file)?.len();
        let mut staged = match &self {
            Edit::Insert { .. } => {
                let path = stage.join(BIG_NAME);
                Some((path.clone(), BufWriter::new(File::create(&path)?)))
            }
            _ => None,
        };
        let mut hasher = blake3::Hasher::new();
        let mut sink = |bytes: &[u8]| -> Result<()> {
            hasher.update(bytes);
            if let Some((_, out)) = staged.as_mut() {
                out.write_all(bytes)?;
            }
            Ok(())
        };
        let mut src = File::open(file)?;
        let (len, probe) = match &self {
            Edit::Overwrite { at, data } => {
                copy_n(&mut src, *at, &mut sink)?;
                sink(data)?;
                src.seek(SeekFrom::Start(at + data.len() as u64))?;
                copy_n(&mut src, u64::MAX, &mut sink)?;
                (old_len.max(at + data.len() as u64), (*at, data.clone()))
            }
            Edit::Insert { at, data } => {
                copy_n(&mut src, *at, &mut sink)?;
                sink(data)?;
                copy_n(&mut src, u64::MAX, &mut sink)?;
                (old_len + data.len() as u64, (*at, data.clone()))
            }
            Edit::Append { data } => {
                copy_n(&mut src, u64::MAX, &mut sink)?;
                sink(data)?;
                (old_len + data.len() as u64, (old_len, data.clone()))
            }
        };
        let staged = match staged {
            Some((path, out)) => {
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                Some(path)
            }
            None => None,
        };
        let expect = Expect {
            len,
            probe,
            hash: hasher.finalize(),
        };
        Ok((Prepared { edit: self, staged }, expect))
    }
}

impl Prepared {
    /// Makes the edit in `file`: written in place for an overwrite and an
    /// append, as editors and logs do; an insertion replaces the file.
    pub fn apply(self, file: &Path) -> Result<()> {
        match (&self.edit, self.staged) {
            (Edit::Insert { .. }, Some(staged)) => std::fs::rename(staged, file)?,
            (Edit::Overwrite { at, data }, _) => {
                let mut f = OpenOptions::new().write(true).open(file)?;
                f.seek(SeekFrom::Start(*at))?;
                f.write_all(data)?;
            }
            (Edit::Append { data }, _) => {
                OpenOptions::new()
                    .append(true)
                    .open(file)?
                    .write_all(data)?;
            }
            (Edit::Insert { .. }, None) => bail!("an insertion that was not staged"),
        }
        Ok(())
    }
}

fn copy_n(src: &mut File, mut n: u64, sink: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while n > 0 {
        let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        let got = src.read(&mut buf[..want])?;
        if got == 0 {
            break;
        }
        sink(&buf[..got])?;
        n -= got as u64;
    }
    Ok(())
}

/// Whether `file` has the expected size and bytes at the probe.
pub fn looks_done(file: &Path, expect: &Expect) -> bool {
    let Ok(meta) = std::fs::metadata(file) else {
        return false;
    };
    if meta.len() != expect.len {
        return false;
    }
    let (at, want) = &expect.probe;
    let mut got = vec![0u8; want.len()];
    File::open(file)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(*at))?;
            f.read_exact(&mut got)
        })
        .is_ok_and(|()| &got == want)
}

pub fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hasher.finalize())
}

/// Copies the large file beside A, flushed to disk, ready to be renamed in.
pub fn stage_big(corpus: &Corpus, stage: &Path) -> Result<PathBuf> {
    let to = stage.join(BIG_NAME);
    std::fs::copy(&corpus.big, &to)?;
    File::open(&to)?.sync_all()?;
    Ok(to)
}

/// Hard links of the small files beside A: they are never written to, and
/// linking takes a second where copying 10,000 files would take several.
pub fn stage_small(corpus: &Corpus, stage: &Path) -> Result<PathBuf> {
    let to = stage.join(SMALL_DIR);
    for f in &corpus.small {
        let dst = to.join(&f.rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::hard_link(corpus.small_root.join(&f.rel), &dst)
            .with_context(|| format!("linking {}", dst.display()))?;
    }
    Ok(to)
}

/// Tracks which small files have arrived in B, so each poll looks only at
/// those still missing.
pub struct SmallArrivals<'a> {
    corpus: &'a Corpus,
    root: PathBuf,
    pending: Vec<usize>,
}

impl<'a> SmallArrivals<'a> {
    pub fn new(corpus: &'a Corpus, b: &Path) -> Self {
        SmallArrivals {
            corpus,
            root: b.join(SMALL_DIR),
            pending: (0..corpus.small.len()).collect(),
        }
    }

    /// Whether every file is there with its size. A poll stops at the
    /// first file still missing, so it costs one look more than the files
    /// that arrived since the last: looking at all 10,000 every 20 ms
    /// would take CPU from the tool being timed.
    pub fn looks_done(&mut self) -> bool {
        while let Some(&i) = self.pending.last() {
            let f = &self.corpus.small[i];
            let there = std::fs::metadata(self.root.join(&f.rel)).is_ok_and(|m| m.len() == f.len);
            if !there {
                return false;
            }
            self.pending.pop();
        }
        true
    }

    /// Whether every file has its content; those that do not are looked at
    /// again by the next polls.
    pub fn verify(&mut self) -> bool {
        for (i, f) in self.corpus.small.iter().enumerate() {
            if hash_file(&self.root.join(&f.rel)).map_or(true, |h| h != f.hash) {
                self.pending.push(i);
            }
        }
        self.pending.is_empty()
    }

    pub fn missing(&self) -> usize {
        self.pending.len()
    }
}

/// The content of W4's `i`-th file of run `run`: 100 bytes of a real
/// file, after a marker that makes each one unique.
pub fn note(corpus: &Corpus, run: usize, i: usize) -> Result<Vec<u8>> {
    let mut text = format!("{run}.{i} ").into_bytes();
    let pick = &corpus.small[(run * 1000 + i) * 7919 % corpus.small.len()];
    let real = std::fs::read(corpus.small_root.join(&pick.rel))?;
    text.extend(real.iter().take(100 - text.len()));
    text.resize(100, b'\n');
    Ok(text)
}
