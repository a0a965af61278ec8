//! `tessera-bench cluster …`: figures of several server instances on one
//! database, measured against servers someone else started (see
//! `scripts/cluster-test.sh`), with the project's own client:
//!
//! - `wake`: a change committed through one instance wakes a long poll held
//!   on another (p50, p95);
//! - `herd`: many idle long polls held on one instance, which is then killed;
//!   the clients come back on the others with full-jitter backoff, obeying
//!   `Retry-After`, and the reconnections are counted second by second;
//! - `idle`: many idle long polls held on one instance, with its memory;
//! - `commits`: small files committed per second with packs and batch
//!   commits;
//! - `writes`: several clients upload and commit while something (a
//!   database failover) is done to the system, then every acknowledged file
//!   is read back.
//!
//! Each prints its figures; each fails (non-zero exit) only on a functional
//! fault: a lost acknowledged file, a poll that never woke, clients that
//! never came back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tessera_client::sync::daemon::backoff;
use tessera_client::{ClientError, Remote};
use tessera_proto::api::{BlockRef, CommitRequest};
use tessera_proto::block::CHUNKER;
use tessera_proto::{BlockId, ContentHash};

#[derive(clap::Subcommand)]
pub enum Command {
    /// A change through instance A wakes a long poll held on instance B.
    Wake(WakeArgs),
    /// Idle long polls held on one instance that is then killed: the reconnection curve.
    Herd(HerdArgs),
    /// Idle long polls held on one instance, with its resident memory.
    Idle(IdleArgs),
    /// Small files committed per second through one instance (packs and batch commits).
    Commits(CommitsArgs),
    /// Uploads and commits from several clients while a command disturbs the system.
    Writes(WritesArgs),
}

/// Who the bench logs in as.
#[derive(clap::Args, Clone)]
pub struct Account {
    #[arg(long, default_value = "admin")]
    user: String,
    #[arg(long, env = "TESSERA_BENCH_PASSWORD")]
    password: String,
}

#[derive(clap::Args)]
pub struct WakeArgs {
    /// The instance the changes go through.
    #[arg(long)]
    a: String,
    /// The instance holding the long poll.
    #[arg(long)]
    b: String,
    #[command(flatten)]
    account: Account,
    #[arg(long, default_value_t = 100)]
    changes: usize,
}

#[derive(clap::Args)]
pub struct HerdArgs {
    /// The instance that holds every poll and is then killed.
    #[arg(long)]
    hold: String,
    /// The instances the clients come back to (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    others: Vec<String>,
    /// Users `PREFIX0` … `PREFIX{N-1}`, all with the same password.
    #[arg(long, default_value = "herd")]
    user_prefix: String,
    #[arg(long, default_value_t = 200)]
    users: usize,
    #[arg(long, env = "TESSERA_BENCH_PASSWORD")]
    password: String,
    /// Long polls held in all.
    #[arg(long, default_value_t = 10_000)]
    polls: usize,
    /// The command that kills the holding instance (run with `sh -c`).
    #[arg(long)]
    kill_cmd: String,
    /// Longest wait for the polls to be held, and then for them to come back.
    #[arg(long, default_value_t = 90)]
    deadline_secs: u64,
}

#[derive(clap::Args)]
pub struct IdleArgs {
    #[arg(long)]
    url: String,
    /// The instance's process id, for its memory (`/proc/PID/status`).
    #[arg(long)]
    pid: u32,
    /// Users `PREFIX0` … `PREFIX{N-1}`, all with the same password (an
    /// instance lets one user open 50 new polls a second).
    #[arg(long, default_value = "idle")]
    user_prefix: String,
    #[arg(long, default_value_t = 200)]
    users: usize,
    #[arg(long, env = "TESSERA_BENCH_PASSWORD")]
    password: String,
    /// Numbers of polls held at which memory is read (comma-separated, rising).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    steps: Vec<usize>,
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
}

#[derive(clap::Args)]
pub struct CommitsArgs {
    #[arg(long)]
    url: String,
    #[command(flatten)]
    account: Account,
    #[arg(long, default_value_t = 20_000)]
    files: usize,
    /// Files per pack and batch commit.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Where the files go (a fresh folder each run).
    #[arg(long, default_value = "/bench-commits")]
    folder: String,
}

#[derive(clap::Args)]
pub struct WritesArgs {
    #[arg(long)]
    url: String,
    #[command(flatten)]
    account: Account,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds of writes before the command runs.
    #[arg(long, default_value_t = 3)]
    before_secs: u64,
    /// The disturbance (run with `sh -c`), e.g. killing the database primary.
    #[arg(long)]
    kill_cmd: String,
    /// Once writes are acknowledged again, seconds to go on writing.
    #[arg(long, default_value_t = 3)]
    after_secs: u64,
    /// Longest wait for writes to come back.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
    #[arg(long, default_value = "/failover")]
    folder: String,
}

pub fn run(cmd: Command) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            Command::Wake(a) => wake(a).await,
            Command::Herd(a) => herd(a).await,
            Command::Idle(a) => idle(a).await,
            Command::Commits(a) => commits(a).await,
            Command::Writes(a) => writes(a).await,
        }
    })
}

async fn login(url: &str, user: &str, password: &str, device: &str) -> Result<Remote> {
    let anon = Remote::new(url, None)?;
    let token = anon
        .login(user, password, device)
        .await
        .with_context(|| format!("logging in as {user} at {url}"))?
        .token;
    Ok(Remote::new(url, Some(token))?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Polls `f` until it returns true, or fails after `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let t = Instant::now();
    loop {
        if f().await? {
            return Ok(());
        }
        if t.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn shell(cmd: &str) -> Result<()> {
    let status = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !status.success() {
        bail!("`{cmd}` failed: {status}");
    }
    Ok(())
}

// ---------------------------------------------------------------- wake

async fn wake(args: WakeArgs) -> Result<()> {
    let Account { user, password } = &args.account;
    let a = login(&args.a, user, password, "wake-writer").await?;
    let b = login(&args.b, user, password, "wake-listener").await?;
    let mut from_send = Vec::with_capacity(args.changes);
    let mut from_answer = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        let cursor = b.latest_cursor().await?;
        let poller = b.clone();
        let poll = tokio::spawn(async move {
            let r = poller.poll(&cursor, 30).await;
            (r, Instant::now())
        });
        // The poll is held once B lists the device as present.
        until("the poll on B", Duration::from_secs(10), || async {
            Ok(b.presence()
                .await?
                .devices
                .iter()
                .any(|d| d.device == "wake-listener" && d.connections > 0))
        })
        .await?;
        let body = format!("change {i}\n").into_bytes();
        let sent = Instant::now();
        a.upload(&format!("/cluster-wake/{i}.txt"), None, body.into())
            .await?;
        let answered = Instant::now();
        let (polled, woke) = tokio::time::timeout(Duration::from_secs(30), poll)
            .await
            .context("the poll on B did not wake within 30 s")??;
        if !polled?.changes {
            bail!("the poll on B returned without the change {i}");
        }
        from_send.push(woke - sent);
        from_answer.push(woke.saturating_duration_since(answered));
    }
    from_send.sort();
    from_answer.sort();
    println!(
        "wake-up across instances, {} changes through A, poll held on B:",
        args.changes
    );
    for (what, v) in [
        ("commit sent -> poll answered", &from_send),
        ("commit answered -> poll answered", &from_answer),
    ] {
        println!(
            "  {what:<34} p50 {:.1} ms   p95 {:.1} ms   max {:.1} ms",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.95)),
            ms(v[v.len() - 1])
        );
    }
    println!(
        "wake p95 {:.1} ms",
        ms(percentile(&from_send, 0.95)).max(0.0)
    );
    Ok(())
}

// ---------------------------------------------------------------- polls held

/// What each poller is doing, shared with the conductor.
struct Poller {
    /// When the request now outstanding was sent (ms since the start), or
    /// `u64::MAX` while waiting between requests.
    since_ms: AtomicU64,
}

const WAITING: u64 = u64::MAX;

/// Events, in ms since the start, for the curve.
#[derive(Default)]
struct Log {
    sent: Vec<u64>,
    refused: Vec<u64>,
    failed: Vec<u64>,
}

struct Pollers {
    start: Instant,
    stop: AtomicBool,
    pollers: Vec<Poller>,
    log: Mutex<Log>,
}

impl Pollers {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            stop: AtomicBool::new(false),
            pollers: (0..n)
                .map(|_| Poller {
                    since_ms: AtomicU64::new(WAITING),
                })
                .collect(),
            log: Mutex::new(Log::default()),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn record(&self, f: impl FnOnce(&mut Log)) {
        if let Ok(mut log) = self.log.lock() {
            f(&mut log);
        }
    }

    /// Pollers `range` whose request has been outstanding at least
    /// `settled` (an admitted poll is held; a refused one is answered at
    /// once).
    fn held(&self, range: std::ops::Range<usize>, settled: Duration) -> usize {
        let now = self.now_ms();
        let settled = settled.as_millis() as u64;
        self.pollers[range]
            .iter()
            .filter(|p| {
                let s = p.since_ms.load(Ordering::Relaxed);
                s != WAITING && now.saturating_sub(s) >= settled
            })
            .count()
    }

    /// The latest time a poller sent the request it now holds.
    fn last_since(&self) -> u64 {
        self.pollers
            .iter()
            .map(|p| p.since_ms.load(Ordering::Relaxed))
            .filter(|s| *s != WAITING)
            .max()
            .unwrap_or(0)
    }
}

/// One client keeping a long poll open as the sync daemon does: after a
/// lost connection it waits a full-jitter backoff and comes back on
/// another instance; told `Retry-After`, it waits that plus a little jitter.
async fn keep_polling(
    me: usize,
    shared: Arc<Pollers>,
    remotes: Vec<Remote>,
    cursor: String,
    mut at: usize,
) {
    let max = Duration::from_secs(60);
    let mut failures = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        let now = shared.now_ms();
        shared.pollers[me].since_ms.store(now, Ordering::Relaxed);
        shared.record(|l| l.sent.push(now));
        let answer = poll_once(&remotes[at], &cursor).await;
        shared.pollers[me]
            .since_ms
            .store(WAITING, Ordering::Relaxed);
        let wait = match answer {
            Ok(Polled::Answered(backoff_secs)) => {
                failures = 0;
                backoff_secs.map(|s| Duration::from_secs(s) + backoff(0, max))
            }
            Ok(Polled::Refused(told)) => {
                let t = shared.now_ms();
                shared.record(|l| l.refused.push(t));
                Some(told + backoff(0, max))
            }
            Err(_) => {
                let t = shared.now_ms();
                shared.record(|l| l.failed.push(t));
                failures += 1;
                // Instance 0 is the one killed: come back on another.
                if remotes.len() > 1 {
                    at = 1 + rand::rng().random_range(0..remotes.len() - 1);
                }
                Some(backoff(failures, max))
            }
        };
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
    }
}

/// What one long poll came to.
enum Polled {
    /// Answered (a change, the timeout, or shutdown with its back-off hint).
    Answered(Option<u64>),
    /// Refused with 503 and `Retry-After`.
    Refused(Duration),
}

/// One long poll of 300 s, seen as the server answered it: `Remote::poll`
/// would wait out a 503's `Retry-After` and ask again by itself, and the
/// curve counts each refusal.
async fn poll_once(remote: &Remote, cursor: &str) -> Result<Polled> {
    let resp = remote
        .request("GET".parse()?, "/changes/poll")
        .query(&[("cursor", cursor)])
        .query(&[("timeout", 300)])
        .send()
        .await?;
    if resp.status().as_u16() == 503 {
        let told = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .context("503 without Retry-After")?;
        return Ok(Polled::Refused(Duration::from_secs(told)));
    }
    if !resp.status().is_success() {
        bail!("poll answered {}", resp.status());
    }
    let p: tessera_proto::api::PollResponse = resp.json().await?;
    Ok(Polled::Answered(p.backoff))
}

/// Per-second counts of `events` (ms) from `from` (ms) on.
fn per_second(events: &[u64], from: u64, seconds: usize) -> Vec<usize> {
    let mut bins = vec![0; seconds];
    for e in events.iter().filter(|e| **e >= from) {
        let i = ((e - from) / 1000) as usize;
        if i < seconds {
            bins[i] += 1;
        }
    }
    bins
}

async fn herd(args: HerdArgs) -> Result<()> {
    if args.users == 0 || args.polls == 0 {
        bail!("--users and --polls must be positive");
    }
    let deadline = Duration::from_secs(args.deadline_secs);
    // One remote per user and instance; its clones share connections.
    let mut per_user = Vec::new();
    for u in 0..args.users {
        let name = format!("{}{u}", args.user_prefix);
        let token = token_of(&args.hold, &name, &args.password).await?;
        let mut remotes = vec![Remote::new(&args.hold, Some(token.clone()))?];
        for url in &args.others {
            remotes.push(Remote::new(url, Some(token.clone()))?);
        }
        let cursor = remotes[0].latest_cursor().await?;
        per_user.push((remotes, cursor));
    }
    let shared = Pollers::new(args.polls);
    let mut tasks = tokio::task::JoinSet::new();
    let t_fill = Instant::now();
    for i in 0..args.polls {
        let (remotes, cursor) = &per_user[i % args.users];
        tasks.spawn(keep_polling(
            i,
            shared.clone(),
            remotes.clone(),
            cursor.clone(),
            0,
        ));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let all = 0..args.polls;
    until("polls held on the first instance", deadline, || async {
        Ok(shared.held(all.clone(), Duration::from_secs(1)) == args.polls)
    })
    .await?;
    println!(
        "herd: {} long polls held on {} ({} users) after {:.1} s",
        args.polls,
        args.hold,
        args.users,
        t_fill.elapsed().as_secs_f64()
    );
    let killed = shared.now_ms();
    shell(&args.kill_cmd)?;
    // Settled: every client holds a poll again, sent after the kill.
    let back = until("clients back on the other instances", deadline, || async {
        let s = shared.last_since();
        Ok(s > killed
            && shared.held(all.clone(), Duration::from_secs(1)) == args.polls
            && shared.pollers.iter().all(|p| {
                let s = p.since_ms.load(Ordering::Relaxed);
                s != WAITING && s > killed
            }))
    })
    .await;
    shared.stop.store(true, Ordering::Relaxed);
    let settle_ms = shared.last_since().saturating_sub(killed);
    let held_now = shared.held(all.clone(), Duration::from_secs(1));
    tasks.abort_all();
    let log = shared
        .log
        .lock()
        .map_err(|_| anyhow::anyhow!("log poisoned"))?;
    let seconds = (settle_ms / 1000 + 2) as usize;
    // A reconnection is a poll request that was then held: the last one
    // each client sent.
    let finals: Vec<u64> = shared
        .pollers
        .iter()
        .map(|p| p.since_ms.load(Ordering::Relaxed))
        .filter(|s| *s != WAITING && *s > killed)
        .collect();
    let held = per_second(&finals, killed, seconds);
    let sent = per_second(&log.sent, killed, seconds);
    let refused = per_second(&log.refused, killed, seconds);
    let failed = per_second(&log.failed, killed, seconds);
    println!(
        "after the kill, per second: requests sent, refused with 503 Retry-After, failed to connect, polls held again"
    );
    println!("  second      sent   refused    failed      held");
    for s in 0..seconds {
        println!(
            "  {s:>6} {:>9} {:>9} {:>9} {:>9}",
            sent[s], refused[s], failed[s], held[s]
        );
    }
    println!(
        "herd: {} of {} clients back, peak {} reconnections/s, settled {:.1} s after the kill",
        finals.len(),
        args.polls,
        held.iter().max().unwrap_or(&0),
        settle_ms as f64 / 1000.0
    );
    drop(log);
    back?;
    if held_now != args.polls {
        bail!("{held_now} of {} polls held at the end", args.polls);
    }
    Ok(())
}

async fn token_of(url: &str, user: &str, password: &str) -> Result<String> {
    Ok(Remote::new(url, None)?
        .login(user, password, "herd")
        .await?
        .token)
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

async fn idle(args: IdleArgs) -> Result<()> {
    if args.users == 0 {
        bail!("--users must be positive");
    }
    let mut per_user = Vec::new();
    for u in 0..args.users {
        let name = format!("{}{u}", args.user_prefix);
        let remote = login(&args.url, &name, &args.password, "idle").await?;
        let cursor = remote.latest_cursor().await?;
        per_user.push((remote, cursor));
    }
    let most = args.steps.iter().copied().max().unwrap_or(0);
    let shared = Pollers::new(most);
    let deadline = Duration::from_secs(args.deadline_secs);
    let (rss0, hwm0) = memory(args.pid)?;
    println!(
        "idle polls on one instance: before, VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        rss0 as f64 / 1024.0,
        hwm0 as f64 / 1024.0
    );
    println!("  polls held   VmRSS MiB   VmHWM MiB   KiB per poll (RSS over the start)");
    let mut tasks = tokio::task::JoinSet::new();
    let mut spawned = 0;
    let t = Instant::now();
    let mut last = (0, 0.0);
    for &step in &args.steps {
        while spawned < step {
            let (remote, cursor) = &per_user[spawned % args.users];
            tasks.spawn(keep_polling(
                spawned,
                shared.clone(),
                vec![remote.clone()],
                cursor.clone(),
                0,
            ));
            spawned += 1;
            if spawned.is_multiple_of(200) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        until("polls held", deadline, || async {
            Ok(shared.held(0..step, Duration::from_secs(1)) == step)
        })
        .await?;
        let (rss, hwm) = memory(args.pid)?;
        let per = (rss.saturating_sub(rss0)) as f64 / step as f64;
        println!(
            "  {step:>10} {:>11.1} {:>11.1} {:>12.1}",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            per
        );
        last = (step, hwm as f64 / 1024.0);
    }
    shared.stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    println!(
        "idle: {} polls held in {:.1} s, peak RSS {:.1} MiB",
        last.0,
        t.elapsed().as_secs_f64(),
        last.1
    );
    Ok(())
}

// ---------------------------------------------------------------- commits

/// The commit of a one-block small file.
fn commit_of(path: String, data: &[u8]) -> CommitRequest {
    let id = BlockId::of(data);
    CommitRequest {
        reuse: Vec::new(),
        path,
        base_rev: None,
        size: data.len() as u64,
        content_hash: ContentHash(id.0),
        chunker: CHUNKER.to_owned(),
        blocks: vec![BlockRef {
            id,
            size: data.len() as u64,
        }],
    }
}

/// Sends the blocks of `files` in one pack and commits them in one batch;
/// answers each file's outcome.
async fn send_batch(
    remote: &Remote,
    files: &[(String, Vec<u8>)],
) -> Result<Vec<Result<(), String>>, ClientError> {
    Ok(send_batch_timed(remote, files).await?.0)
}

/// Outcomes per file, and the time the pack and the commit took.
type Timed = (Vec<Result<(), String>>, (Duration, Duration));

async fn send_batch_timed(
    remote: &Remote,
    files: &[(String, Vec<u8>)],
) -> Result<Timed, ClientError> {
    let mut pack = Vec::new();
    for (_, data) in files {
        let (codec, body) = tessera_proto::block::compress_or_raw(
            data.as_slice(),
            tessera_client::transfer::ZSTD_LEVEL,
        );
        tessera_proto::pack::encode_frame(&mut pack, &BlockId::of(data), codec, &body);
    }
    let t = Instant::now();
    remote.put_pack(pack).await?;
    let packed = t.elapsed();
    let commits = files.iter().map(|(p, d)| commit_of(p.clone(), d)).collect();
    let t = Instant::now();
    let answer = remote.commit_batch(commits).await?;
    let committed = t.elapsed();
    let results = answer
        .results
        .into_iter()
        .map(|r| match (r.entry, r.error) {
            (Some(_), _) => Ok(()),
            (None, Some(e)) => Err(e.message),
            (None, None) => Err("empty answer".into()),
        })
        .collect();
    Ok((results, (packed, committed)))
}

fn small_file(rng: &mut impl RngCore, i: usize) -> Vec<u8> {
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    format!("small file {i} {}\n", hex_of(&salt)).into_bytes()
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn commits(args: CommitsArgs) -> Result<()> {
    let Account { user, password } = &args.account;
    let remote = login(&args.url, user, password, "commits").await?;
    let mut rng = rand::rng();
    let run = hex_of(&rng.random::<[u8; 4]>());
    let batch = args.batch.max(1);
    let mut files = Vec::with_capacity(args.files);
    for i in 0..args.files {
        let path = format!("{}/{run}/d{:03}/f{i:06}.txt", args.folder, i % 100);
        files.push((path, small_file(&mut rng, i)));
    }
    // The folders first, so the timed part is the files alone.
    for d in 0..100.min(args.files) {
        remote
            .mkdir(&format!("{}/{run}/d{d:03}", args.folder))
            .await?;
    }
    let t = Instant::now();
    let mut failed = 0;
    let (mut packing, mut committing) = (Duration::ZERO, Duration::ZERO);
    for chunk in files.chunks(batch) {
        let (results, times) = send_batch_timed(&remote, chunk).await?;
        failed += results.iter().filter(|r| r.is_err()).count();
        packing += times.0;
        committing += times.1;
    }
    let took = t.elapsed();
    if failed > 0 {
        bail!("{failed} of {} commits failed", args.files);
    }
    println!(
        "commits: {} small files through {} in {:.2} s ({} a batch): {:.0} files/s",
        args.files,
        args.url,
        took.as_secs_f64(),
        batch,
        args.files as f64 / took.as_secs_f64()
    );
    println!(
        "  of which packs sent {:.2} s, batch commits {:.2} s ({:.0} commits/s)",
        packing.as_secs_f64(),
        committing.as_secs_f64(),
        args.files as f64 / committing.as_secs_f64().max(1e-9)
    );
    Ok(())
}

// ---------------------------------------------------------------- writes

/// One acknowledged file: where, what, and when the answer came.
struct Acked {
    path: String,
    hash: blake3::Hash,
    at_ms: u64,
}

#[derive(Default)]
struct Tally {
    acked: Vec<Acked>,
    /// Failed requests by status ("503", "500", "connection", …), with the
    /// times they were answered.
    failures: Vec<(String, u64)>,
}

fn kind_of(e: &ClientError) -> String {
    match e.status() {
        Some(s) => s.to_string(),
        None => match e {
            ClientError::Unreachable { .. } => "unreachable".into(),
            ClientError::Http(_) => "connection lost".into(),
            _ => "other".into(),
        },
    }
}

async fn writer(
    me: usize,
    remote: Remote,
    folder: String,
    start: Instant,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut n = 0usize;
    let now = || start.elapsed().as_millis() as u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        // Alternately a simple upload of a few KiB to a few hundred, and a
        // batch of five small files in one pack and one commit.
        let outcome: Vec<(String, Vec<u8>, Result<(), ClientError>)> = if n.is_multiple_of(2) {
            let path = format!("{folder}/c{me}/put{n:06}.bin");
            let mut data = vec![0u8; rng.random_range(4 << 10..300 << 10)];
            rng.fill_bytes(&mut data);
            let r = remote
                .upload(&path, None, data.clone().into())
                .await
                .map(|_| ());
            vec![(path, data, r)]
        } else {
            let files: Vec<(String, Vec<u8>)> = (0..5)
                .map(|k| {
                    (
                        format!("{folder}/c{me}/batch{n:06}-{k}.txt"),
                        small_file(&mut rng, n * 10 + k),
                    )
                })
                .collect();
            match send_batch(&remote, &files).await {
                Ok(results) => files
                    .into_iter()
                    .zip(results)
                    .map(|((p, d), r)| {
                        let r = r.map_err(|m| ClientError::Integrity(format!("refused: {m}")));
                        (p, d, r)
                    })
                    .collect(),
                Err(e) => {
                    let kind = kind_of(&e);
                    let wait = e.retry_after();
                    if let Ok(mut t) = tally.lock() {
                        t.failures.push((kind, now()));
                    }
                    pause(wait).await;
                    continue;
                }
            }
        };
        let mut wait = None;
        if let Ok(mut t) = tally.lock() {
            for (path, data, r) in outcome {
                match r {
                    Ok(()) => t.acked.push(Acked {
                        path,
                        hash: blake3::hash(&data),
                        at_ms: now(),
                    }),
                    Err(e) => {
                        wait = wait.or(e.retry_after()).or(Some(Duration::ZERO));
                        t.failures.push((kind_of(&e), now()));
                    }
                }
            }
        }
        if let Some(w) = wait {
            pause(Some(w)).await;
        }
    }
}

/// After a failure: what the server said (at most 2 s here, to see the
/// window), or a short full-jitter backoff.
async fn pause(told: Option<Duration>) {
    let d = match told {
        Some(t) if t > Duration::ZERO => t.min(Duration::from_secs(2)) + backoff(0, t / 4),
        _ => backoff(0, Duration::from_millis(200)),
    };
    tokio::time::sleep(d).await;
}

async fn writes(args: WritesArgs) -> Result<()> {
    let Account { user, password } = &args.account;
    let run = hex_of(&rand::rng().random::<[u8; 4]>());
    let folder = format!("{}/{run}", args.folder);
    let mut remotes = Vec::new();
    for c in 0..args.clients {
        let r = login(&args.url, user, password, &format!("writer{c}")).await?;
        r.mkdir(&format!("{folder}/c{c}")).await?;
        remotes.push(r);
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for (c, r) in remotes.iter().enumerate() {
        tasks.spawn(writer(
            c,
            r.clone(),
            folder.clone(),
            start,
            stop.clone(),
            tally.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_secs(args.before_secs)).await;
    let acked_before = tally.lock().map(|t| t.acked.len()).unwrap_or(0);
    let killed = start.elapsed().as_millis() as u64;
    let kill_cmd = args.kill_cmd.clone();
    tokio::task::spawn_blocking(move || shell(&kill_cmd)).await??;
    println!(
        "writes: {} clients, {acked_before} files acknowledged before the disturbance",
        args.clients
    );
    // Writes are back once a request sent after the kill is acknowledged.
    let deadline = Duration::from_secs(args.deadline_secs);
    let resumed = until("writes acknowledged again", deadline, || async {
        let t = tally
            .lock()
            .map_err(|_| anyhow::anyhow!("tally poisoned"))?;
        Ok(t.acked.iter().filter(|a| a.at_ms > killed).count() > args.clients * 5)
    })
    .await;
    if resumed.is_ok() {
        tokio::time::sleep(Duration::from_secs(args.after_secs)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("writers still running"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("tally poisoned"))?;
    // The window: the longest time without an acknowledgement around the
    // disturbance.
    let mut times: Vec<u64> = tally.acked.iter().map(|a| a.at_ms).collect();
    times.sort();
    let mut window = (killed, killed);
    let mut prev = times.iter().rev().find(|t| **t <= killed).copied();
    for &t in times.iter().filter(|t| **t > killed) {
        let p = prev.unwrap_or(killed);
        if t - p > window.1 - window.0 {
            window = (p, t);
        }
        prev = Some(t);
    }
    let mut statuses: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (kind, at) in &tally.failures {
        let e = statuses.entry(kind.as_str()).or_default();
        if *at >= window.0 && *at <= window.1 {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    if !times.iter().any(|t| *t > killed) {
        println!(
            "writes: {} acknowledged in all, none after the disturbance at {:.2} s: writes did not resume",
            tally.acked.len(),
            killed as f64 / 1000.0
        );
    } else {
        println!(
            "writes: {} acknowledged in all; write-unavailability window {:.2} s (last ack {:.2} s → first ack {:.2} s after the start; kill at {:.2} s)",
            tally.acked.len(),
            (window.1 - window.0) as f64 / 1000.0,
            window.0 as f64 / 1000.0,
            window.1 as f64 / 1000.0,
            killed as f64 / 1000.0
        );
    }
    for (kind, (inside, outside)) in &statuses {
        println!("  failed with {kind}: {inside} in the window, {outside} outside");
    }
    // Every acknowledged file, read back byte for byte (a read refused
    // while the database settles is asked again).
    let reader = &remotes[0];
    let mut lost: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let give_up = Instant::now() + Duration::from_secs(90);
    for a in &tally.acked {
        if let Some(why) = read_back(reader, a, give_up).await {
            lost.entry(why).or_default().push(a.path.clone());
        }
    }
    let lost_count: usize = lost.values().map(Vec::len).sum();
    println!(
        "writes: {} acknowledged files read back, {lost_count} lost or different",
        tally.acked.len(),
    );
    for (why, paths) in &lost {
        println!(
            "  {why}: {} files, e.g. {}",
            paths.len(),
            paths[..paths.len().min(3)].join(", ")
        );
    }
    let non_503: usize = statuses
        .iter()
        .filter(|(k, _)| **k != "503")
        .map(|(_, (inside, _))| inside)
        .sum();
    println!("writes: {non_503} failures in the window were not 503");
    resumed?;
    if lost_count > 0 {
        bail!("{lost_count} acknowledged files lost");
    }
    Ok(())
}

/// Reads an acknowledged file back: `None` when it is there byte for byte,
/// else what is wrong. Answers meaning "not now" (503, a lost connection)
/// are asked again until `give_up`.
async fn read_back(reader: &Remote, a: &Acked, give_up: Instant) -> Option<String> {
    loop {
        let why = match reader.download(&a.path, None).await {
            Ok(resp) => match resp.bytes().await {
                Ok(b) if blake3::hash(&b) == a.hash => return None,
                Ok(b) => return Some(format!("different content ({} bytes)", b.len())),
                Err(e) => format!("body cut: {e}"),
            },
            Err(e) if matches!(e.status(), Some(s) if s != 503) => {
                return Some(format!("HTTP {}", kind_of(&e)));
            }
            Err(e) => kind_of(&e),
        };
        if Instant::now() > give_up {
            return Some(format!("unreadable until the reads gave up ({why})"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
