//! `tessera-bench peers`: Tessera beside rsync and Syncthing on the same
//! workloads, on loopback, with the bytes each moves counted by relays of
//! the bench's own.
//!
//! - W1: a large file (1 GiB of real files) lands in A; time until B holds it.
//! - W2: 10,000 real small files land in A; time until B holds them all.
//! - W3a/b/c: in the W1 file, 1 MiB overwritten mid-file, 100 bytes
//!   inserted near the start, 10 MiB appended: time and bytes.
//! - W4: a 100-byte file created in A, beside the 10,000 files: time until
//!   it is in B, p50 and p95 over several files.
//!
//! Every tool starts from nothing for each run (W3 follows W1, W4 follows
//! W2 within a run), runs rotate the order of the tools so that drift in
//! the machine's load spreads over all three, and each figure is the
//! median of the runs. Times run from the moment the change lands in A to
//! the first poll that finds B complete; bytes from the moment it lands
//! until the relays have been quiet for half a second after.

mod load;
mod procs;
mod relay;
mod report;
mod tools;
mod workloads;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use procs::{check_stop, nap};
use tools::{Bytes, Kind, Peer, Tools};
use workloads::{BIG_NAME, Corpus, Expect, SMALL_DIR, SmallArrivals};

/// Polls of B for the large workloads, and for W4's single small file,
/// whose times are tens of milliseconds.
const POLL: Duration = Duration::from_millis(20);
const POLL_FAST: Duration = Duration::from_millis(2);
/// The relays are quiet when nothing moved for this long.
const QUIET: Duration = Duration::from_millis(500);
const QUIET_LIMIT: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Args {
    /// Runs of every workload for every tool; figures are their medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Workloads to report (comma-separated: W1,W2,W3a,W3b,W3c,W4). W3
    /// needs W1's file and W4 needs W2's files, so those run too.
    #[arg(long, value_delimiter = ',', default_value = "W1,W2,W3a,W3b,W3c,W4")]
    workloads: Vec<Workload>,
    /// Size of W1's file (e.g. 1GiB, 64MiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    size: u64,
    /// Small files in W2.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Files timed one after another in W4, each run.
    #[arg(long, default_value_t = 10)]
    w4_files: usize,
    /// Tools to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "rsync,syncthing,tessera")]
    tools: Vec<Kind>,
    /// The tessera binary (default: target/release/tessera in the workspace).
    #[arg(long)]
    bin: Option<PathBuf>,
    #[arg(long, default_value = "rsync")]
    rsync: PathBuf,
    #[arg(long, default_value = "syncthing")]
    syncthing: PathBuf,
    /// Syncthing's fsWatcherDelayS for the shared folder (10 is its default).
    #[arg(long, default_value_t = 10)]
    syncthing_watch_delay: u32,
    /// Where to make the temporary folder (default: the system's).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The file the results are added to.
    #[arg(long, default_value = "docs/PERFORMANCE.md")]
    doc: PathBuf,
    /// Print the results without adding them to the doc.
    #[arg(long)]
    no_doc: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Workload {
    W1,
    W2,
    W3a,
    W3b,
    W3c,
    W4,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::W1,
        Workload::W2,
        Workload::W3a,
        Workload::W3b,
        Workload::W3c,
        Workload::W4,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3a => "W3a",
            Workload::W3b => "W3b",
            Workload::W3c => "W3c",
            Workload::W4 => "W4",
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s}: not one of W1, W2, W3a, W3b, W3c, W4"))
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("{s}: not a size"))?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return Err(format!("{s}: units are B, KiB, MiB, GiB")),
    };
    let size = (num * unit as f64) as u64;
    if size < 2 << 20 {
        return Err(format!("{s}: at least 2 MiB"));
    }
    Ok(size)
}

/// One timed change: from landing in A to complete in B, and the bytes
/// through the relays meanwhile and until they were quiet again.
#[derive(Clone, Copy)]
pub struct Sample {
    pub time: Duration,
    pub bytes: Bytes,
}

/// One tool's run of the workloads.
pub struct Run {
    pub kind: Kind,
    pub samples: BTreeMap<Workload, Sample>,
    pub w4: Vec<Sample>,
    pub error: Option<String>,
    pub problems: Vec<String>,
    pub window: (Instant, Instant),
}

pub fn run(args: Args) -> Result<()> {
    if args.runs == 0 || args.files == 0 || args.w4_files == 0 || args.tools.is_empty() {
        bail!("--runs, --files, --w4-files and --tools need at least one");
    }
    let tools = Tools {
        tessera: tessera_bin(args.bin.as_deref())?,
        rsync: args.rsync.clone(),
        syncthing: args.syncthing.clone(),
        watch_delay_s: args.syncthing_watch_delay,
    };
    if !args.no_doc && !args.doc.is_file() {
        bail!(
            "{}: no such file (run from the workspace, pass --doc, or --no-doc)",
            args.doc.display()
        );
    }
    let versions = versions(&tools, &args.tools)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    procs::catch_signals(rt.handle())?;

    let started = Instant::now();
    let sampler = load::Sampler::start();
    let load_before = load::loadavg();
    let tmp = match &args.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("tessera-peers-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new()
            .prefix("tessera-peers-")
            .tempdir()?,
    };
    eprintln!(
        "building the workloads from real files in {}",
        tmp.path().display()
    );
    let corpus = Corpus::build(&tmp.path().join("corpus"), args.size, args.files)?;
    eprintln!(
        "W1: {} bytes from {} files; W2: {} files, {} bytes ({:.0} s)",
        corpus.big_size,
        corpus.big_sources.iter().map(|s| s.files).sum::<usize>(),
        corpus.small.len(),
        corpus.small_bytes(),
        started.elapsed().as_secs_f64()
    );

    let want = |w: Workload| args.workloads.contains(&w);
    let plan = Plan {
        big: want(Workload::W1)
            || want(Workload::W3a)
            || want(Workload::W3b)
            || want(Workload::W3c),
        edits: [Workload::W3a, Workload::W3b, Workload::W3c].map(want),
        small: want(Workload::W2) || want(Workload::W4),
        w4: want(Workload::W4),
        w4_files: args.w4_files,
        size: args.size,
    };
    let mut runs = Vec::new();
    for round in 0..args.runs {
        for k in 0..args.tools.len() {
            let kind = args.tools[(round + k) % args.tools.len()];
            eprintln!(
                "[{:>4.0} s] run {} of {}: {}",
                started.elapsed().as_secs_f64(),
                round + 1,
                args.runs,
                kind.label()
            );
            let run = one_run(kind, round, &plan, &corpus, &tools, tmp.path(), rt.handle());
            check_stop()?;
            if let Some(e) = &run.error {
                eprintln!("  {} failed: {e}", kind.label());
            }
            runs.push(run);
        }
    }
    let load_after = load::loadavg();
    let elapsed = started.elapsed();
    drop(tmp);

    let report = report::Report {
        args: &args,
        corpus: &corpus,
        runs: &runs,
        versions,
        load_before,
        load_after,
        samples: sampler.samples(),
        busiest: sampler.busiest(5),
        cores: sampler.cores,
        elapsed,
    };
    let text = report.markdown();
    println!("{text}");
    if !args.no_doc {
        report::add_to_doc(&args.doc, &text)?;
        eprintln!("added to {}", args.doc.display());
    }
    Ok(())
}

/// What each run does, from the workloads asked for.
struct Plan {
    big: bool,
    edits: [bool; 3],
    small: bool,
    w4: bool,
    w4_files: usize,
    size: u64,
}

fn one_run(
    kind: Kind,
    round: usize,
    plan: &Plan,
    corpus: &Corpus,
    tools: &Tools,
    parent: &Path,
    rt: &tokio::runtime::Handle,
) -> Run {
    let mut run = Run {
        kind,
        samples: BTreeMap::new(),
        w4: Vec::new(),
        error: None,
        problems: Vec::new(),
        window: (Instant::now(), Instant::now()),
    };
    match Peer::start(kind, tools, parent, rt) {
        Ok(mut peer) => {
            if let Err(e) = workloads(&mut peer, &mut run, round, plan, corpus) {
                run.error = Some(format!("{e:#}"));
            }
            run.problems.extend(peer.problems());
        }
        Err(e) => run.error = Some(format!("starting: {e:#}")),
    }
    run.window.1 = Instant::now();
    run
}

fn workloads(
    peer: &mut Peer,
    run: &mut Run,
    round: usize,
    plan: &Plan,
    corpus: &Corpus,
) -> Result<()> {
    quiet(peer, run)?;
    let mb = plan.size / 1_000_000;
    if plan.big {
        let staged = workloads::stage_big(corpus, &peer.stage)?;
        let b_file = peer.b.join(BIG_NAME);
        let a_file = peer.a.join(BIG_NAME);
        let tail = 4096.min(corpus.big_size);
        let mut probe = vec![0u8; tail as usize];
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&corpus.big)?;
            f.seek(SeekFrom::Start(corpus.big_size - tail))?;
            f.read_exact(&mut probe)?;
        }
        let expect = Expect {
            len: corpus.big_size,
            probe: (corpus.big_size - tail, probe),
            hash: corpus.big_hash,
        };
        let limit = Duration::from_secs(60 + mb / 5);
        let s = measure(
            peer,
            run,
            limit,
            POLL,
            || Ok(std::fs::rename(&staged, &a_file)?),
            &mut || big_done(&b_file, &expect),
        )
        .context("W1")?;
        record(run, Workload::W1, s);
        let names = [Workload::W3a, Workload::W3b, Workload::W3c];
        for (i, edit) in corpus.edits().into_iter().enumerate() {
            // Later edits apply to the file as the earlier ones left it,
            // so each is made, asked for or not.
            let (prepared, expect) = edit.prepare(&a_file, &peer.stage)?;
            next_second(&a_file)?;
            let a = a_file.clone();
            let limit = Duration::from_secs(60 + mb / 10);
            let s = measure(
                peer,
                run,
                limit,
                POLL,
                move || prepared.apply(&a),
                &mut || big_done(&b_file, &expect),
            )
            .with_context(|| names[i].name())?;
            if plan.edits[i] {
                record(run, names[i], s);
            }
        }
    }
    if plan.small {
        let staged = workloads::stage_small(corpus, &peer.stage)?;
        let a_dir = peer.a.join(SMALL_DIR);
        let mut arrivals = SmallArrivals::new(corpus, &peer.b);
        let r = measure(
            peer,
            run,
            Duration::from_secs(600),
            POLL,
            || Ok(std::fs::rename(&staged, &a_dir)?),
            &mut || arrivals.looks_done() && arrivals.verify(),
        );
        let s = r.with_context(|| format!("W2 ({} files not in B)", arrivals.missing()))?;
        record(run, Workload::W2, s);
    }
    if plan.w4 {
        for i in 0..plan.w4_files {
            let content = workloads::note(corpus, round, i)?;
            let name = format!("w4-{i}.txt");
            let (a, b) = (peer.a.join(&name), peer.b.join(&name));
            let c = content.clone();
            let s = measure(
                peer,
                run,
                Duration::from_secs(60),
                POLL_FAST,
                move || Ok(std::fs::write(&a, &c)?),
                &mut || std::fs::read(&b).is_ok_and(|got| got == content),
            )
            .with_context(|| format!("W4, file {i}"))?;
            eprintln!("  W4 {i}: {:.1} ms", s.time.as_secs_f64() * 1000.0);
            run.w4.push(s);
        }
    }
    peer.check_alive()
}

/// Waits until the clock is past the second of `file`'s modification
/// time. rsync's quick check compares whole seconds by default, so an
/// edit made within the second of the last sync, size unchanged, looks
/// like no change at all; edits in life come later than that, and every
/// tool gets the same wait (before the clock starts).
fn next_second(file: &Path) -> Result<()> {
    let mtime = std::fs::metadata(file)?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        <= mtime
    {
        nap(Duration::from_millis(20))?;
    }
    Ok(())
}

fn record(run: &mut Run, w: Workload, s: Sample) {
    eprintln!(
        "  {}: {:.2} s, up {} B, down {} B",
        w.name(),
        s.time.as_secs_f64(),
        s.bytes.up(),
        s.bytes.down()
    );
    run.samples.insert(w, s);
}

/// B's copy of the large file is complete: the cheap check first, then
/// the whole content.
fn big_done(b_file: &Path, expect: &Expect) -> bool {
    workloads::looks_done(b_file, expect)
        && workloads::hash_file(b_file).is_ok_and(|h| h == expect.hash)
}

/// Makes a change in A and waits for B to be complete. `done` may be
/// slow when it says yes (it then hashes everything), so the time is
/// taken when it starts: its first look found B complete.
fn measure(
    peer: &mut Peer,
    run: &mut Run,
    limit: Duration,
    poll: Duration,
    change: impl FnOnce() -> Result<()>,
    done: &mut dyn FnMut() -> bool,
) -> Result<Sample> {
    let before = peer.bytes();
    let start = Instant::now();
    change()?;
    peer.push(limit)?;
    let time = loop {
        let t = start.elapsed();
        if done() {
            break t;
        }
        if start.elapsed() > limit {
            bail!("{}: B not complete within {limit:?}", peer.kind.label());
        }
        peer.check_alive()?;
        nap(poll)?;
    };
    quiet(peer, run)?;
    Ok(Sample {
        time,
        bytes: peer.bytes().since(&before),
    })
}

/// Waits until nothing has moved through the relays for a while, so the
/// next change starts from rest and this one's bytes are all counted.
fn quiet(peer: &mut Peer, run: &mut Run) -> Result<()> {
    let start = Instant::now();
    let mut last = peer.bytes();
    let mut since = Instant::now();
    while since.elapsed() < QUIET {
        nap(Duration::from_millis(50))?;
        let now = peer.bytes();
        if now.up() + now.down() != last.up() + last.down() {
            (last, since) = (now, Instant::now());
        }
        if start.elapsed() > QUIET_LIMIT {
            run.problems.push(format!(
                "{}: traffic still moving {QUIET_LIMIT:?} after a change; went on",
                peer.kind.label()
            ));
            break;
        }
    }
    Ok(())
}

fn tessera_bin(bin: Option<&Path>) -> Result<PathBuf> {
    match bin {
        Some(b) => Ok(b.to_owned()),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release/tessera")
            .canonicalize()
            .context(
                "no target/release/tessera in the workspace: run `cargo build --release -p tessera` or pass --bin",
            ),
    }
}

/// The first line of each tool's `--version`, which also checks that it
/// is installed.
fn versions(tools: &Tools, kinds: &[Kind]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for kind in kinds {
        let bin = match kind {
            Kind::Tessera => &tools.tessera,
            Kind::Rsync => &tools.rsync,
            Kind::Syncthing => &tools.syncthing,
        };
        let o = Command::new(bin).arg("--version").output().with_context(|| {
            format!(
                "running {} --version: is it installed? (bench/peers.sh installs rsync and syncthing)",
                bin.display()
            )
        })?;
        let text = String::from_utf8_lossy(&o.stdout);
        let first = text.lines().next().unwrap_or("");
        out.push(first.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Ok(out)
}
