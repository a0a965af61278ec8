//! The results as one markdown entry: what ran, how busy the machine was,
//! the table of medians with ratios, bytes by direction, and whatever
//! went wrong; added under its own section of docs/PERFORMANCE.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::load::{self, Sample as LoadSample};
use super::tools::{Bytes, Kind};
use super::workloads::{Corpus, Source};
use super::{Args, Run, Sample, Workload};

pub const SECTION: &str = "## Beside rsync and Syncthing (`tessera-bench peers`)";

pub struct Report<'a> {
    pub args: &'a Args,
    pub corpus: &'a Corpus,
    pub runs: &'a [Run],
    pub versions: Vec<String>,
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub samples: Vec<LoadSample>,
    pub busiest: Vec<(String, f64)>,
    pub cores: usize,
    pub elapsed: Duration,
}

/// The figures of one tool for one row: a value per successful run.
struct Cell {
    values: Vec<f64>,
    of: usize,
}

impl Cell {
    fn median(&self) -> Option<f64> {
        median(&self.values)
    }
}

impl Report<'_> {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### {}\n", now());
        // Paths inside the workspace are shown relative to it, as a
        // reader would type them.
        let here = std::env::current_dir()
            .map(|d| format!("{}/", d.display()))
            .unwrap_or_default();
        let command: Vec<String> = std::env::args()
            .skip(1)
            .map(|a| match a.strip_prefix(&here) {
                Some(rel) if !here.is_empty() => rel.to_owned(),
                _ => a,
            })
            .collect();
        let _ = writeln!(
            s,
            "`tessera-bench {}`: {} run{} of each tool, {:.1} minutes in all. {}.\n",
            command.join(" "),
            self.args.runs,
            if self.args.runs == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64() / 60.0,
            self.versions.join("; ")
        );
        let c = self.corpus;
        let _ = writeln!(
            s,
            "W1: {} bytes from {} files ({}). W2: {} files, {:.1} MB ({}). W4: {} files of 100 bytes a run.\n",
            group(c.big_size),
            group(c.big_sources.iter().map(|x| x.files as u64).sum()),
            sources(&c.big_sources),
            group(c.small.len() as u64),
            c.small_bytes() as f64 / 1e6,
            sources(&c.small_sources),
            self.args.w4_files,
        );
        s.push_str(&self.load_text());
        s.push('\n');
        s.push_str(&self.table());
        s.push('\n');
        s.push_str(&self.directions());
        s.push_str(&self.troubles());
        s
    }

    fn load_text(&self) -> String {
        let loads: Vec<f64> = self.samples.iter().map(|x| x.load1).collect();
        let others: Vec<f64> = self.samples.iter().map(|x| x.others).collect();
        let lo = loads.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let mut by_tool = Vec::new();
        for kind in &self.args.tools {
            let v: Vec<f64> = self
                .runs
                .iter()
                .filter(|r| r.kind == *kind)
                .filter_map(|r| load::others_between(&self.samples, r.window.0, r.window.1))
                .collect();
            if !v.is_empty() {
                by_tool.push(format!("{} {:.2}", kind.label(), mean(&v)));
            }
        }
        let busiest: Vec<String> = self
            .busiest
            .iter()
            .filter(|(_, secs)| *secs >= 1.0)
            .map(|(name, secs)| format!("{name} ({secs:.0} s)"))
            .collect();
        format!(
            "The machine ({} cores): load average over 1 minute {:.2} before and {:.2} after, \
             {:.2}–{:.2} while it ran (median {:.2}). CPU used by programs other than the bench and \
             the tools it ran, sampled every second: {:.2} cores on average, {:.2} at the 90th \
             percentile, {:.2} at most; on average during each tool's runs: {}. Busiest of them \
             (CPU time): {}.\n",
            self.cores,
            self.load_before[0],
            self.load_after[0],
            lo,
            hi,
            median(&loads).unwrap_or(f64::NAN),
            mean(&others),
            percentile(&others, 0.9).unwrap_or(f64::NAN),
            others.iter().copied().fold(0.0, f64::max),
            by_tool.join(", "),
            if busiest.is_empty() {
                "none above a second".to_owned()
            } else {
                busiest.join(", ")
            }
        )
    }

    fn cell(&self, kind: Kind, f: &dyn Fn(&Run) -> Option<f64>) -> Cell {
        let runs: Vec<&Run> = self.runs.iter().filter(|r| r.kind == kind).collect();
        Cell {
            values: runs.iter().filter_map(|r| f(r)).collect(),
            of: runs.len(),
        }
    }

    fn shown(&self) -> Vec<Kind> {
        [Kind::Rsync, Kind::Syncthing, Kind::Tessera]
            .into_iter()
            .filter(|k| self.args.tools.contains(k))
            .collect()
    }

    fn table(&self) -> String {
        let mut s = String::new();
        let kinds = self.shown();
        let others: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|k| *k != Kind::Tessera)
            .collect();
        let tessera = kinds.contains(&Kind::Tessera);
        let _ = write!(s, "| Workload |");
        for k in &kinds {
            let _ = write!(s, " {} |", k.label());
        }
        if tessera {
            for k in &others {
                let _ = write!(s, " Tessera/{} |", k.label());
            }
        }
        s.push_str("\n|---|");
        let n = kinds.len() + if tessera { others.len() } else { 0 };
        s.push_str(&"---:|".repeat(n));
        s.push('\n');

        let time = |w: Workload| move |r: &Run| r.samples.get(&w).map(|x| x.time.as_secs_f64());
        let up = |w: Workload| move |r: &Run| r.samples.get(&w).map(|x| x.bytes.up() as f64);
        let down = |w: Workload| move |r: &Run| r.samples.get(&w).map(|x| x.bytes.down() as f64);
        let w4_time = |p: f64| {
            move |r: &Run| {
                let v: Vec<f64> = r.w4.iter().map(|x| x.time.as_secs_f64()).collect();
                percentile(&v, p)
            }
        };
        let w4_up = |r: &Run| median(&r.w4.iter().map(|x| x.bytes.up() as f64).collect::<Vec<_>>());
        let w4_down = |r: &Run| {
            median(
                &r.w4
                    .iter()
                    .map(|x| x.bytes.down() as f64)
                    .collect::<Vec<_>>(),
            )
        };

        for w in Workload::ALL {
            if !self.args.workloads.contains(&w) {
                continue;
            }
            if w == Workload::W4 {
                self.time_row(&mut s, "W4 p50", &kinds, &others, &w4_time(0.5));
                self.time_row(&mut s, "W4 p95", &kinds, &others, &w4_time(0.95));
                self.bytes_row(&mut s, "W4 bytes a file", &kinds, &others, &w4_up, &w4_down);
                continue;
            }
            let what = match w {
                Workload::W1 => format!("W1 {} file", size(self.corpus.big_size)),
                Workload::W2 => format!("W2 {} files", group(self.corpus.small.len() as u64)),
                Workload::W3a => "W3a 1 MiB overwritten".into(),
                Workload::W3b => "W3b 100 B inserted".into(),
                Workload::W3c => "W3c 10 MiB appended".into(),
                Workload::W4 => String::new(),
            };
            self.time_row(&mut s, &format!("{what}: time"), &kinds, &others, &time(w));
            self.bytes_row(
                &mut s,
                &format!("{what}: bytes"),
                &kinds,
                &others,
                &up(w),
                &down(w),
            );
        }
        s.push_str(
            "\nTimes: median of the runs (lowest–highest). Bytes: median of the runs, counted \
             at the relays, both directions; for rsync and Syncthing on their one connection \
             between A and B, for Tessera ↑ on A's connection to the server and ↓ on B's. A \
             ratio below 1 favours Tessera; for bytes it is Tessera's ↑ and ↓ each against the \
             other's one connection.\n",
        );
        s
    }

    fn time_row(
        &self,
        s: &mut String,
        label: &str,
        kinds: &[Kind],
        others: &[Kind],
        f: &dyn Fn(&Run) -> Option<f64>,
    ) {
        let _ = write!(s, "| {label} |");
        for k in kinds {
            let c = self.cell(*k, f);
            let text = match c.median() {
                None => "failed".to_owned(),
                Some(m) => {
                    let lo = c.values.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = c.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let mut t = secs(m);
                    if c.values.len() > 1 {
                        let _ = write!(t, " ({}–{})", secs(lo), secs(hi));
                    }
                    if c.values.len() < c.of {
                        let _ = write!(t, ", {} of {} runs", c.values.len(), c.of);
                    }
                    t
                }
            };
            let _ = write!(s, " {text} |");
        }
        if kinds.contains(&Kind::Tessera) {
            let t = self.cell(Kind::Tessera, f).median();
            for k in others {
                let o = self.cell(*k, f).median();
                let _ = write!(s, " {} |", ratio(t, o));
            }
        }
        s.push('\n');
    }

    fn bytes_row(
        &self,
        s: &mut String,
        label: &str,
        kinds: &[Kind],
        others: &[Kind],
        up: &dyn Fn(&Run) -> Option<f64>,
        down: &dyn Fn(&Run) -> Option<f64>,
    ) {
        let _ = write!(s, "| {label} |");
        for k in kinds {
            let u = self.cell(*k, up).median();
            let text = match (k, u) {
                (_, None) => "failed".to_owned(),
                (Kind::Tessera, Some(u)) => {
                    let d = self.cell(*k, down).median().unwrap_or(f64::NAN);
                    format!("↑ {} ↓ {}", bytes(u), bytes(d))
                }
                (_, Some(u)) => bytes(u),
            };
            let _ = write!(s, " {text} |");
        }
        if kinds.contains(&Kind::Tessera) {
            let tu = self.cell(Kind::Tessera, up).median();
            let td = self.cell(Kind::Tessera, down).median();
            for k in others {
                let o = self.cell(*k, up).median();
                let _ = write!(s, " ↑ {} ↓ {} |", ratio(tu, o), ratio(td, o));
            }
        }
        s.push('\n');
    }

    /// Medians of each direction on each relay, W4 per file.
    fn directions(&self) -> String {
        let mut s = String::from(
            "Bytes by direction (medians; rsync and Syncthing: A→B / B→A; Tessera: A→server / \
             server→A, then B→server / server→B):\n\n| Workload |",
        );
        let kinds = self.shown();
        for k in &kinds {
            let _ = write!(s, " {} |", k.label());
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(kinds.len()));
        s.push('\n');
        for w in Workload::ALL {
            if !self.args.workloads.contains(&w) {
                continue;
            }
            let _ = write!(s, "| {} |", w.name());
            for k in &kinds {
                let part = |f: fn(&Bytes) -> u64| {
                    self.cell(*k, &|r: &Run| {
                        if w == Workload::W4 {
                            median(&r.w4.iter().map(|x| f(&x.bytes) as f64).collect::<Vec<_>>())
                        } else {
                            r.samples.get(&w).map(|x: &Sample| f(&x.bytes) as f64)
                        }
                    })
                    .median()
                };
                let ao = part(|b| b.a_out);
                let ai = part(|b| b.a_in);
                let text = match (ao, ai) {
                    (Some(ao), Some(ai)) if *k == Kind::Tessera => format!(
                        "{} / {}, {} / {}",
                        bytes(ao),
                        bytes(ai),
                        bytes(part(|b| b.b_out).unwrap_or(f64::NAN)),
                        bytes(part(|b| b.b_in).unwrap_or(f64::NAN)),
                    ),
                    (Some(ao), Some(ai)) => format!("{} / {}", bytes(ao), bytes(ai)),
                    _ => "failed".into(),
                };
                let _ = write!(s, " {text} |");
            }
            s.push('\n');
        }
        s
    }

    fn troubles(&self) -> String {
        let mut s = String::new();
        for (i, r) in self.runs.iter().enumerate() {
            let n = i / self.args.tools.len() + 1;
            if let Some(e) = &r.error {
                let _ = writeln!(s, "- {} run {n} failed: {}", r.kind.label(), one_line(e));
            }
            if !r.problems.is_empty() {
                let first: Vec<String> = r
                    .problems
                    .iter()
                    .take(3)
                    .map(|p| format!("`{}`", one_line(p).replace('`', "'")))
                    .collect();
                let _ = writeln!(
                    s,
                    "- {} run {n}: {} log line{} reporting trouble; the first: {}",
                    r.kind.label(),
                    r.problems.len(),
                    if r.problems.len() == 1 { "" } else { "s" },
                    first.join(", ")
                );
            }
        }
        if s.is_empty() {
            "\nNo run failed, and no tool logged an error or a warning.\n".into()
        } else {
            format!("\nWhat went wrong:\n\n{s}")
        }
    }
}

/// Adds `entry` at the end of the section, which is made at the end of the
/// file the first time.
pub fn add_to_doc(path: &Path, entry: &str) -> Result<()> {
    let doc =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let new = match doc.find(SECTION) {
        Some(at) => {
            let after = at + SECTION.len();
            let end = doc[after..]
                .find("\n## ")
                .map_or(doc.len(), |i| after + i + 1);
            format!(
                "{}\n\n{}\n{}",
                doc[..end].trim_end(),
                entry.trim_end(),
                if end < doc.len() {
                    format!("\n{}", &doc[end..])
                } else {
                    String::new()
                }
            )
        }
        None => format!("{}\n\n{SECTION}\n\n{}\n", doc.trim_end(), entry.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

fn now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "date unknown".into())
}

fn sources(list: &[Source]) -> String {
    list.iter()
        .map(|x| {
            format!(
                "{}: {} files, {:.1} MB",
                x.root.display(),
                group(x.files as u64),
                x.bytes as f64 / 1e6
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn median(v: &[f64]) -> Option<f64> {
    percentile(v, 0.5)
}

/// Nearest-rank percentile (the middle of two for an even-length median).
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if p == 0.5 && v.len().is_multiple_of(2) {
        let i = v.len() / 2;
        return Some((v[i - 1] + v[i]) / 2.0);
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    Some(v[i.min(v.len() - 1)])
}

fn ratio(t: Option<f64>, o: Option<f64>) -> String {
    match (t, o) {
        (Some(t), Some(o)) if o > 0.0 => {
            let r = t / o;
            if r >= 10.0 {
                format!("{r:.0}")
            } else {
                format!("{r:.2}")
            }
        }
        _ => "–".into(),
    }
}

fn secs(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.0} ms", s * 1000.0)
    }
}

/// MB and GB are 10^6 and 10^9 bytes, as everywhere in this file.
fn bytes(b: f64) -> String {
    if b.is_nan() {
        "–".into()
    } else if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn size(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

/// 1234567 as "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line.to_owned()
    }
}
