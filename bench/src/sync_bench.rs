//! Sync figures with the release binary over loopback: propagation latency
//! between two running `tessera sync` clients, initial sync of many small
//! files, and bytes sent for small edits of a large file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

#[derive(clap::Args)]
pub struct Args {
    /// The tessera binary to measure.
    #[arg(long, default_value = "target/release/tessera")]
    bin: PathBuf,
    /// Edits timed for propagation latency.
    #[arg(long, default_value_t = 100)]
    edits: usize,
    /// Small files in the initial-sync run.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Size of the large file for the delta figures, in MiB.
    #[arg(long, default_value_t = 1024)]
    big_mib: usize,
    /// Small files both folders already hold when propagation is timed:
    /// what one change costs should not grow with them.
    #[arg(long, default_value_t = 0)]
    background: usize,
    /// Run only these figures (latency, small-files, delta); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    bin: PathBuf,
    root: tempfile::TempDir,
    _server: Proc,
}

impl Env {
    fn start(bin: &Path) -> Result<Self> {
        let root = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let server = Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(root.path().join("data"))
            .args(["--listen", &listen])
            .env("TESSERA_ADMIN_PASSWORD", "benchpass123")
            .env("TESSERA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = Proc(server);
        let t = Instant::now();
        while std::net::TcpStream::connect(&listen).is_err() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("server did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let env = Env {
            bin: bin.to_path_buf(),
            root,
            _server: server,
        };
        env.run(
            &[
                "login",
                "--server",
                &format!("http://{listen}"),
                "--user",
                "admin",
                "--password-stdin",
            ],
            Some("benchpass123\n"),
        )?;
        Ok(env)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("TESSERA_CONFIG_DIR", self.root.path().join("cfg"))
            .env("TESSERA_LOG", "warn");
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("tessera {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.root.path().join(name);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    fn follower(&self, dir: &Path) -> Result<Proc> {
        let dir = dir.to_str().context("path is not UTF-8")?;
        Ok(Proc(
            self.cmd(&["sync", dir])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn wait_for(path: &Path, want: &[u8], limit: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        if std::fs::read(path).is_ok_and(|b| b == want) {
            return Ok(());
        }
        if t.elapsed() > limit {
            bail!("{} did not arrive within {limit:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn latency(args: &Args) -> Result<()> {
    let env = Env::start(&args.bin)?;
    let a = env.dir("A")?;
    let b = env.dir("B")?;
    if args.background > 0 {
        write_small_files(&a.join("held"), args.background)?;
        for dir in [&a, &b] {
            env.run(&["sync", dir.to_str().context("utf-8")?, "--once"], None)?;
        }
    }
    let _fa = env.follower(&a)?;
    let _fb = env.follower(&b)?;
    std::thread::sleep(Duration::from_secs(1));
    let mut times = Vec::with_capacity(args.edits);
    for i in 0..args.edits {
        let content = format!("edit {i} {}\n", "x".repeat(200)).into_bytes();
        let t = Instant::now();
        std::fs::write(a.join("note.txt"), &content)?;
        wait_for(&b.join("note.txt"), &content, Duration::from_secs(30))?;
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "propagation, write in A -> complete file in B, {} edits, {} files held:",
        times.len(),
        args.background
    );
    println!(
        "  p50 {:.1} ms   p95 {:.1} ms   min {:.1} ms   max {:.1} ms",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.95)),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    Ok(())
}

fn small_files(args: &Args) -> Result<()> {
    let env = Env::start(&args.bin)?;
    let a = env.dir("A")?;
    let b = env.dir("B")?;
    let bytes = write_small_files(&a, args.files)?;
    let t = Instant::now();
    env.run(&["sync", a.to_str().context("utf-8")?, "--once"], None)?;
    let up = t.elapsed();
    let t = Instant::now();
    env.run(&["sync", b.to_str().context("utf-8")?, "--once"], None)?;
    let down = t.elapsed();
    println!(
        "initial sync of {} small files ({:.1} MB):",
        args.files,
        bytes as f64 / 1e6
    );
    for (what, d) in [("upload (A)", up), ("download (B)", down)] {
        println!(
            "  {what:<13} {:>7.1} s   {:>7.0} files/s",
            d.as_secs_f64(),
            args.files as f64 / d.as_secs_f64()
        );
    }
    Ok(())
}

/// Writes `files` small text files (500 B to 8 KB) into 100 folders under
/// `root`; returns their total size.
fn write_small_files(root: &Path, files: usize) -> Result<u64> {
    let mut rng = StdRng::seed_from_u64(7);
    let words = [
        "tessera", "sync", "block", "file", "the", "of", "and", "folder", "revision", "note",
    ];
    let mut bytes = 0u64;
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&dir)?;
        let len = rng.random_range(500..8000);
        let mut text = String::with_capacity(len);
        while text.len() < len {
            text.push_str(words[rng.random_range(0..words.len())]);
            text.push(if rng.random_range(0..12) == 0 {
                '\n'
            } else {
                ' '
            });
        }
        bytes += text.len() as u64;
        std::fs::write(dir.join(format!("f{i:05}.txt")), text)?;
    }
    Ok(bytes)
}

/// Parses "... sent N of M blocks, B bytes)" from `tessera put`.
fn sent(out: &str) -> Option<(u64, u64, u64)> {
    let rest = out.split("sent ").nth(1)?;
    let mut nums = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>());
    Some((nums.next()?.ok()?, nums.next()?.ok()?, nums.next()?.ok()?))
}

fn delta(args: &Args) -> Result<()> {
    let env = Env::start(&args.bin)?;
    let dir = env.dir("big")?;
    let path = dir.join("big.bin");
    let size = args.big_mib << 20;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut rng = StdRng::seed_from_u64(3);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..args.big_mib {
            rng.fill_bytes(&mut buf);
            f.write_all(&buf)?;
        }
        f.flush()?;
    }
    let p = path.to_str().context("utf-8")?;
    env.run(&["put", p, "/big.bin"], None)?;

    // 1 MiB overwritten in place, in the middle.
    {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.seek(SeekFrom::Start((size / 2) as u64))?;
        let mut patch = vec![0u8; 1 << 20];
        StdRng::seed_from_u64(4).fill_bytes(&mut patch);
        f.write_all(&patch)?;
    }
    let edit =
        sent(&env.run(&["put", p, "/big.bin"], None)?).context("no transfer figures from put")?;

    // 100 bytes inserted near the start (everything after shifts).
    {
        let data = std::fs::read(&path)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        out.write_all(&data[..4096])?;
        out.write_all(&[0x42; 100])?;
        out.write_all(&data[4096..])?;
        out.flush()?;
    }
    let insert =
        sent(&env.run(&["put", p, "/big.bin"], None)?).context("no transfer figures from put")?;
    println!(
        "bytes sent for small edits of a {} MiB file (incompressible):",
        args.big_mib
    );
    for (what, (blocks, total, bytes)) in [
        ("1 MiB in-place edit", edit),
        ("100-byte insert near start", insert),
    ] {
        println!(
            "  {what:<27} {blocks} of {total} blocks, {:.1} MiB ({:.2}% of the file)",
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 * 100.0 / size as f64
        );
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    if !args.bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p tessera` first",
            args.bin.display()
        );
    }
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    if wanted("latency") {
        latency(&args)?;
    }
    if wanted("small-files") {
        small_files(&args)?;
    }
    if wanted("delta") {
        delta(&args)?;
    }
    Ok(())
}
