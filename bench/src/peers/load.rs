//! How busy the machine was during the run, apart from the bench: once a
//! second, the load average, and the CPU time of the whole machine
//! (`/proc/stat`) less that of the bench and every process descending
//! from it (`/proc/PID/stat`). What is left is everyone else's, which is
//! what makes a figure noisy; the busiest other programs are named.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::procs;

/// Clock ticks a second in `/proc`: USER_HZ, 100 on Linux whatever the
/// kernel's own tick rate.
const USER_HZ: f64 = 100.0;

pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

#[derive(Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub load1: f64,
    /// Cores kept busy by processes other than the bench's, on average
    /// over the second before.
    pub others: f64,
}

#[derive(Default)]
struct Shared {
    samples: Vec<Sample>,
    /// CPU seconds of other programs, by name.
    by_name: HashMap<String, f64>,
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
    pub cores: usize,
}

impl Sampler {
    pub fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (s, sh) = (stop.clone(), shared.clone());
        let thread = std::thread::spawn(move || sample(&s, &sh));
        Sampler {
            stop,
            shared,
            thread: Some(thread),
            cores,
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.shared
            .lock()
            .map(|s| s.samples.clone())
            .unwrap_or_default()
    }

    /// The other programs that used the most CPU, with their CPU seconds.
    pub fn busiest(&self, n: usize) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = self
            .shared
            .lock()
            .map(|s| s.by_name.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(n);
        v
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Mean of the `others` of the samples taken between `from` and `to`.
pub fn others_between(samples: &[Sample], from: Instant, to: Instant) -> Option<f64> {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .map(|s| s.others)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn sample(stop: &AtomicBool, shared: &Mutex<Shared>) {
    let me = std::process::id();
    let mut last_machine = machine();
    let mut last_procs = processes();
    let mut last_ours = descendants(&last_procs, me);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
        let now = processes();
        let ours_now = descendants(&now, me);
        let current = machine();
        let (Some((busy0, total0, cpus)), Some((busy1, total1, _))) = (last_machine, current)
        else {
            (last_machine, last_procs, last_ours) = (current, now, ours_now);
            continue;
        };
        // The bench's CPU time: its processes' own, and what their
        // children used, which lands in the parent's line when it reaps
        // them (rsync's daemon forks per connection). A process counted
        // alive last time and reaped since is in its parent's line whole,
        // so what was counted of it before comes off.
        let mut ours: i64 = 0;
        let mut others_by_name: Vec<(String, u64)> = Vec::new();
        for p in now.values() {
            let last = last_procs.get(&p.pid);
            let d = p.ticks.saturating_sub(last.map_or(0, |b| b.ticks));
            if ours_now.contains(&p.pid) {
                let dc = p
                    .children
                    .saturating_sub(last.map_or(p.children, |b| b.children));
                ours += (d + dc) as i64;
            } else if d > 0 {
                others_by_name.push((p.name.clone(), d));
            }
        }
        for p in last_procs.values() {
            if !now.contains_key(&p.pid) && last_ours.contains(&p.pid) {
                ours -= (p.ticks + p.children) as i64;
            }
        }
        let total = total1.saturating_sub(total0).max(1) as f64;
        let busy = busy1.saturating_sub(busy0) as f64;
        let others = ((busy - ours.max(0) as f64) / total * cpus as f64).max(0.0);
        if let Ok(mut s) = shared.lock() {
            s.samples.push(Sample {
                at: Instant::now(),
                load1: loadavg()[0],
                others,
            });
            for (name, d) in others_by_name {
                *s.by_name.entry(name).or_default() += d as f64 / USER_HZ;
            }
        }
        (last_machine, last_procs, last_ours) = (current, now, ours_now);
    }
}

/// Busy and total ticks of all CPUs, and how many CPUs.
fn machine() -> Option<(u64, u64, usize)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let first = text.lines().next()?;
    let v: Vec<u64> = first
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user).
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    let total: u64 = v.iter().take(8).sum();
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((busy, total, cpus.max(1)))
}

/// The bench and every process descending from it.
fn descendants(all: &HashMap<u32, ProcStat>, me: u32) -> HashSet<u32> {
    let parents = all.values().map(|p| (p.pid, p.parent)).collect();
    procs::family(&parents, me)
}

struct ProcStat {
    pid: u32,
    parent: u32,
    name: String,
    /// Its own user and system time.
    ticks: u64,
    /// That of its children it has reaped.
    children: u64,
}

fn processes() -> HashMap<u32, ProcStat> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some(p) = parse_stat(pid, &text) {
            out.insert(pid, p);
        }
    }
    out
}

/// `/proc/PID/stat`: the name is in parentheses and may hold spaces, so
/// the fields are counted from the last `)`.
fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        parent: n(1)? as u32,
        name,
        ticks: n(11)? + n(12)?,
        children: n(13)? + n(14)?,
    })
}
