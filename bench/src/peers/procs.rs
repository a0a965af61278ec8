//! The processes the bench starts, each in a process group of its own, so
//! that stopping one also stops what it forked (rsync's daemon forks per
//! connection), and stopped when its guard drops: on success, on error and
//! on a panic. A forked process may leave the group (Syncthing runs its
//! work in a child that makes a group of its own to lower its priority),
//! so whatever descends from the process is stopped too. SIGINT and
//! SIGTERM to the bench set a flag that every wait checks, so an
//! interrupted bench unwinds through the same guards instead of leaving
//! daemons behind.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

static STOP: AtomicBool = AtomicBool::new(false);

/// Turns SIGINT and SIGTERM into [`stopped`] errors in whatever waits.
pub fn catch_signals(rt: &tokio::runtime::Handle) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = rt.block_on(async { signal(SignalKind::interrupt()) })?;
    let mut term = rt.block_on(async { signal(SignalKind::terminate()) })?;
    rt.spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("stopping: cleaning up what the bench started");
        STOP.store(true, Ordering::SeqCst);
    });
    Ok(())
}

/// Fails once the bench has been asked to stop.
pub fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, unless the bench is stopping.
pub fn nap(d: Duration) -> Result<()> {
    check_stop()?;
    std::thread::sleep(d);
    check_stop()
}

/// Every process's parent, from `/proc`.
pub fn parents() -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let ppid = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|t| {
                t.get(t.rfind(')')? + 1..)?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            });
        if let Some(ppid) = ppid {
            out.insert(pid, ppid);
        }
    }
    out
}

/// `root` and every process descending from it.
pub fn family(parents: &HashMap<u32, u32>, root: u32) -> HashSet<u32> {
    let mut out = HashSet::from([root]);
    // Parents come before children only by chance: go round until
    // nothing is added.
    loop {
        let before = out.len();
        for (pid, ppid) in parents {
            if out.contains(ppid) {
                out.insert(*pid);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// A started process and its group, stopped when dropped.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `cmd` with its output in `log`, in a new process group.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Result<Proc> {
        Proc::spawn_with_input(name, cmd, log, None)
    }

    fn spawn_with_input(
        name: &str,
        mut cmd: Command,
        log: &Path,
        input: Option<&str>,
    ) -> Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let stdin = if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.stdin(stdin)
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let mut p = Proc {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
        };
        if let (Some(input), Some(mut pipe)) = (input, p.child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        Ok(p)
    }

    /// Fails, with the end of its log, if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, tail(&self.log));
        }
        Ok(())
    }

    /// Waits for the process to end by itself, within `limit`.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > limit {
                bail!("{} did not finish within {limit:?}", self.name);
            }
            nap(Duration::from_millis(2))?;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let leader = self.child.id();
        let family = family(&parents(), leader);
        let group = Pid::from_raw(leader as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left, the leader included.
        let _ = killpg(group, Signal::SIGKILL);
        for pid in family {
            if pid != leader {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end within `limit`, failing with its output if it
/// fails.
pub fn run(name: &str, cmd: Command, log: &Path, limit: Duration) -> Result<()> {
    run_inner(name, cmd, log, limit, None)
}

/// [`run`], with `input` on its standard input.
pub fn run_with_input(
    name: &str,
    cmd: Command,
    log: &Path,
    limit: Duration,
    input: &str,
) -> Result<()> {
    run_inner(name, cmd, log, limit, Some(input))
}

fn run_inner(
    name: &str,
    cmd: Command,
    log: &Path,
    limit: Duration,
    input: Option<&str>,
) -> Result<()> {
    let mut p = Proc::spawn_with_input(name, cmd, log, input)?;
    let status = p.wait(limit)?;
    if !status.success() {
        bail!("{name} failed ({status}):\n{}", tail(log));
    }
    Ok(())
}

/// The last lines of a log, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A loopback port free now (the usual small race with whoever binds it
/// next is accepted: nothing else on the machine is told to use it).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(p: &mut Proc, addr: SocketAddr, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        p.check_alive()?;
        if start.elapsed() > limit {
            bail!("{} did not listen on {addr} within {limit:?}", p.name);
        }
        nap(Duration::from_millis(50))?;
    }
    Ok(())
}
