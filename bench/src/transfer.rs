//! `tessera-bench transfer`: one large file up and down by every path —
//! `tessera put` (block protocol) and `tessera get`, and with curl a simple
//! PUT, a TUS upload and a GET — against a real server on loopback, with
//! wall time and peak resident memory of the client and the server, next to
//! `cp` + `sync` on the same disk.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;

use crate::mb_per_s;

const PASSWORD: &str = "benchpass123";
const RUN: usize = 1 << 20;
const GNU_TIME: &str = "/usr/bin/time";

#[derive(clap::Args)]
pub struct Args {
    /// GiB of test data (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    gib: f64,
    /// The tessera binary (default: target/release/tessera in the workspace).
    #[arg(long = "bin")]
    bin: Option<PathBuf>,
    /// Where to make the temporary folder (default: the system temp folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One timed step: wall time and peak resident memory in KiB.
struct Step {
    name: &'static str,
    time: Duration,
    client_kib: Option<u64>,
    server_kib: Option<u64>,
}

pub fn run(args: Args) -> Result<()> {
    let bin = match args.bin {
        Some(bin) => bin,
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release/tessera")
            .canonicalize()
            .context(
                "no target/release/tessera in the workspace: run `cargo build --release -p tessera` or pass --bin",
            )?,
    };
    if args.gib <= 0.0 {
        bail!("--gib must be positive");
    }
    let size = (args.gib * (1u64 << 30) as f64) as u64;
    let tmp = match &args.dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("tessera-bench-")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new()
            .prefix("tessera-bench-")
            .tempdir()?,
    };
    let root = tmp.path();
    let input = root.join("bench.bin");
    let output = root.join("out.bin");
    let copy = root.join("copy.bin");
    let cfg = root.join("cfg");
    let data = root.join("data");

    eprintln!("writing {size} bytes of test data to {}", input.display());
    write_test_file(&input, size)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let url = format!("http://{addr}");

    let server_log = File::create(root.join("server.log"))?;
    let mut server = Server(
        Command::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(addr.to_string())
            .env("TESSERA_ADMIN_PASSWORD", PASSWORD)
            .env("TESSERA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(server_log.try_clone()?)
            .stderr(server_log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    let server_pid = server.0.id();
    wait_healthy(&mut server, addr, &root.join("server.log"))?;

    let client = Client {
        bin: &bin,
        cfg: &cfg,
        root,
    };
    client.login(&url)?;

    // The input was fsynced when written; settle anything else first.
    sync()?;
    let server_start_kib = vm_hwm(server_pid).ok();
    let put = client.timed(
        "put",
        [input.as_os_str(), OsStr::new("/bench.bin")],
        server_pid,
    )?;
    let stored = dir_bytes(&data.join("blocks"));
    let get = client.timed(
        "get",
        [OsStr::new("/bench.bin"), output.as_os_str()],
        server_pid,
    )?;
    if b3(&input)? != b3(&output)? {
        bail!("{} differs from {}", output.display(), input.display());
    }
    std::fs::remove_file(&output)?;

    // The same file by the other paths, with curl as the client: a simple
    // streamed PUT, a TUS upload in one PATCH, and a plain GET.
    let token = login_token(&url)?;
    let auth = format!("Authorization: Bearer {token}");
    let curl = Path::new("/usr/bin/curl");
    let simple_url = format!("{url}/api/v1/files/content?path=/simple.bin");
    let simple = client.timed_program(
        "PUT simple",
        curl,
        ["-sSf", "-o", "/dev/null", "-H", &auth, "-T"]
            .map(OsStr::new)
            .into_iter()
            .chain([input.as_os_str(), OsStr::new(&simple_url)]),
        server_pid,
    )?;
    let location = tus_create(&url, &token, size)?;
    let tus_url = format!("{url}{location}");
    let tus = client.timed_program(
        "TUS PATCH",
        curl,
        [
            "-sSf",
            "-o",
            "/dev/null",
            "-X",
            "PATCH",
            "-H",
            &auth,
            "-H",
            "Tus-Resumable: 1.0.0",
            "-H",
            "Upload-Offset: 0",
            "-H",
            "Content-Type: application/offset+octet-stream",
            "-T",
        ]
        .map(OsStr::new)
        .into_iter()
        .chain([input.as_os_str(), OsStr::new(&tus_url)]),
        server_pid,
    )?;
    let get_url = format!("{url}/api/v1/files/content?path=/tus.bin");
    let curl_get = client.timed_program(
        "GET curl",
        curl,
        ["-sSf", "-H", &auth, "-o"]
            .map(OsStr::new)
            .into_iter()
            .chain([output.as_os_str(), OsStr::new(&get_url)]),
        server_pid,
    )?;
    drop(server);
    if b3(&input)? != b3(&output)? {
        bail!("the TUS upload read back differs from {}", input.display());
    }
    // Room on the disk for the copy baseline (a 10 GiB run needs it).
    std::fs::remove_file(&output)?;
    std::fs::remove_dir_all(&data)?;
    // Twice: on this kind of disk the first write into just-freed space can
    // cost more than a rewrite; put and get write into fresh space too.
    let cp = copy_step("cp + sync", &input, &copy)?;
    std::fs::remove_file(&copy)?;
    let cp_again = copy_step("cp+sync #2", &input, &copy)?;

    let steps = [cp, cp_again, put, get, simple, tus, curl_get];
    let cp_time = steps[0].time.as_secs_f64();
    let kib_json = |k: Option<u64>| k.map_or(serde_json::Value::Null, |k| json!(k));
    if args.json {
        let out = json!({
            "benchmark": "transfer",
            "bytes": size,
            "stored_block_bytes": stored,
            "server_peak_kib_before_put": kib_json(server_start_kib),
            "steps": steps.iter().map(|s| json!({
                "step": s.name,
                "seconds": s.time.as_secs_f64(),
                "mb_per_s": mb_per_s(size, s.time),
                "time_vs_cp_sync": s.time.as_secs_f64() / cp_time,
                "client_peak_kib": kib_json(s.client_kib),
                "server_peak_kib": kib_json(s.server_kib),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mib = |k: Option<u64>| k.map_or("-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0));
    println!(
        "file: {size} bytes ({:.2} GiB, half random, half text, 1 MiB runs); blocks stored: {stored} bytes; \
         server peak RSS after start and login: {} MiB",
        size as f64 / (1u64 << 30) as f64,
        mib(server_start_kib)
    );
    println!();
    println!(
        "{:<11} {:>8} {:>8} {:>14} {:>16} {:>16}",
        "step", "seconds", "MB/s", "time/cp+sync", "client peak MiB", "server peak MiB"
    );
    for s in &steps {
        println!(
            "{:<11} {:>8.2} {:>8.1} {:>14.2} {:>16} {:>16}",
            s.name,
            s.time.as_secs_f64(),
            mb_per_s(size, s.time),
            s.time.as_secs_f64() / cp_time,
            mib(s.client_kib),
            mib(s.server_kib)
        );
    }
    Ok(())
}

/// The server process, killed when dropped (also on error paths).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_healthy(server: &mut Server, addr: SocketAddr, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.0.try_wait()? {
            bail!(
                "the server exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if healthy(addr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server did not answer /healthz within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    conn.write_all(request.as_bytes()).is_ok()
        && conn.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

struct Client<'a> {
    bin: &'a Path,
    cfg: &'a Path,
    root: &'a Path,
}

impl Client<'_> {
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("TESSERA_CONFIG_DIR", self.cfg)
            .env("TESSERA_LOG", "warn");
        cmd
    }

    fn login(&self, url: &str) -> Result<()> {
        let mut child = self
            .command(self.bin)
            .args([
                "login",
                "--server",
                url,
                "--user",
                "admin",
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "{PASSWORD}")?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "tessera login failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs `tessera <name> <args>`, timing it and taking the peak memory of
    /// the client and of the server (whose peak is reset first when the
    /// kernel allows it, so it covers this step alone).
    fn timed<'s>(
        &self,
        name: &'static str,
        args: impl IntoIterator<Item = &'s OsStr>,
        server_pid: u32,
    ) -> Result<Step> {
        let mut all = vec![OsStr::new(name)];
        all.extend(args);
        self.timed_program(name, self.bin, all, server_pid)
    }

    /// Runs `program args`, timing it and taking the peak memory of it and
    /// of the server.
    fn timed_program<'s>(
        &self,
        name: &'static str,
        program: &Path,
        args: impl IntoIterator<Item = &'s OsStr>,
        server_pid: u32,
    ) -> Result<Step> {
        let reset = reset_hwm(server_pid);
        let log_path = self.root.join(format!("{name}.log"));
        let log = File::create(&log_path)?;
        let mem_path = self.root.join(format!("{name}.mem"));
        let gnu_time = Path::new(GNU_TIME).exists();
        let mut cmd = if gnu_time {
            let mut cmd = self.command(Path::new(GNU_TIME));
            cmd.arg("-f")
                .arg("%M")
                .arg("-o")
                .arg(&mem_path)
                .arg(program);
            cmd
        } else {
            self.command(program)
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        let mut polled = 0;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if !gnu_time {
                polled = polled.max(vm_hwm(child.id()).unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let time = start.elapsed();
        if !status.success() {
            bail!(
                "{name} failed ({status}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        let client_kib = if gnu_time {
            std::fs::read_to_string(&mem_path)?
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
        } else {
            Some(polled).filter(|k| *k > 0)
        };
        let server_kib = vm_hwm(server_pid).ok();
        if !reset {
            eprintln!(
                "note: could not reset the server's peak memory; {name} shows it since start"
            );
        }
        Ok(Step {
            name,
            time,
            client_kib,
            server_kib,
        })
    }
}

/// A fresh token for the bench user, for the curl steps.
fn login_token(url: &str) -> Result<String> {
    let body = json!({"username": "admin", "password": PASSWORD, "device": "bench-curl"});
    let out = Command::new("curl")
        .args(["-sSf", "-H", "Content-Type: application/json", "-d"])
        .arg(body.to_string())
        .arg(format!("{url}/api/v1/auth/login"))
        .output()?;
    if !out.status.success() {
        bail!("login failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .context("the login answer has no token")
}

/// Opens a TUS session for `/tus.bin`; returns its Location.
fn tus_create(url: &str, token: &str, size: u64) -> Result<String> {
    use base64::Engine;
    let path = base64::engine::general_purpose::STANDARD.encode("/tus.bin");
    let out = Command::new("curl")
        .args(["-sSf", "-o", "/dev/null", "-D", "-", "-X", "POST"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-H", "Tus-Resumable: 1.0.0", "-H"])
        .arg(format!("Upload-Length: {size}"))
        .arg("-H")
        .arg(format!("Upload-Metadata: path {path}"))
        .arg(format!("{url}/api/v1/tus/"))
        .output()?;
    if !out.status.success() {
        bail!(
            "TUS creation failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .context("no Location in the TUS creation answer")
}

/// Times `cp input copy && sync`, starting from clean page cache state.
fn copy_step(name: &'static str, input: &Path, copy: &Path) -> Result<Step> {
    sync()?;
    let start = Instant::now();
    let status = Command::new("cp").arg(input).arg(copy).status()?;
    if !status.success() {
        bail!("cp failed: {status}");
    }
    sync()?;
    Ok(Step {
        name,
        time: start.elapsed(),
        client_kib: None,
        server_kib: None,
    })
}

/// Peak resident memory of a process so far, in KiB.
fn vm_hwm(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")
}

/// Resets a process's peak resident memory to its current size (Linux 4.0+).
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn sync() -> Result<()> {
    let status = Command::new("sync").status()?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    Ok(())
}

/// Writes `size` bytes alternating 1 MiB runs of seeded random bytes and of
/// log-like text records, streaming, then fsyncs.
fn write_test_file(path: &Path, size: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0x7e55e7a);
    let mut out = BufWriter::with_capacity(RUN, File::create(path)?);
    let mut run = vec![0u8; RUN];
    let mut record = 0u64;
    let mut written = 0u64;
    let mut random = true;
    while written < size {
        let n = (size - written).min(RUN as u64) as usize;
        if random {
            rng.fill_bytes(&mut run[..n]);
        } else {
            fill_text(&mut run[..n], &mut record, &mut rng);
        }
        out.write_all(&run[..n])?;
        written += n as u64;
        random = !random;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

fn fill_text(buf: &mut [u8], record: &mut u64, rng: &mut StdRng) {
    const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
    const VERBS: [&str; 4] = ["GET", "PUT", "POST", "DELETE"];
    let mut pos = 0;
    while pos < buf.len() {
        *record += 1;
        let line = format!(
            "{:010} 2026-03-{:02}T{:02}:{:02}:{:02}Z user={} {} /api/v1/files/content?path=/work/report-{}.pdf status={} bytes={}\n",
            record,
            rng.random_range(1..=28),
            rng.random_range(0..24),
            rng.random_range(0..60),
            rng.random_range(0..60),
            USERS[rng.random_range(0..USERS.len())],
            VERBS[rng.random_range(0..VERBS.len())],
            rng.random_range(0..5000),
            [200, 201, 204, 404][rng.random_range(0..4)],
            rng.random_range(0..50_000_000u64),
        );
        let n = line.len().min(buf.len() - pos);
        buf[pos..pos + n].copy_from_slice(&line.as_bytes()[..n]);
        pos += n;
    }
}

/// BLAKE3 of a file, streaming.
fn b3(path: &Path) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize())
}

/// Total size of the regular files under a folder.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
