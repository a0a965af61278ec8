//! The `tessera` binary as a user runs it: commands with their own
//! config folder, and `tessera serve` as a real process that a test can
//! kill, limit or measure.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use super::Backend;

pub const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// `tessera ARGS` with its profile in `cfg`, quiet logs, piped streams and
/// none of the caller's `TESSERA_*` settings that would point it elsewhere.
pub fn command(cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("TESSERA_CONFIG_DIR", cfg)
        .env("TESSERA_LOG", "warn")
        .env_remove("TESSERA_SERVER")
        .env_remove("TESSERA_DATA_DIR")
        .env_remove("TESSERA_DATABASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `cmd` to the end, feeding it `stdin`.
pub fn finish(mut cmd: Command, stdin: Option<&str>) -> Output {
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// [`finish`] off the async runtime, which may be serving the server the
/// command talks to.
pub async fn finish_async(cmd: Command, stdin: Option<&str>) -> Output {
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || finish(cmd, stdin.as_deref()))
        .await
        .unwrap()
}

/// Everything a command printed, both streams.
pub fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Peak resident memory of a process so far, in KiB.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A new, empty database on the test cluster.
pub async fn fresh_postgres() -> String {
    let admin = std::env::var("TESSERA_TEST_POSTGRES").expect("TESSERA_TEST_POSTGRES is set");
    let name = format!("tessera_test_{:016x}", rand::random::<u64>());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// `tessera serve` as its own process, killed when dropped.
pub struct Served {
    pub child: Child,
    /// `127.0.0.1:PORT`, as the server printed it.
    pub listen: String,
    /// The first start's admin password (the one given, or the one printed).
    pub password: String,
    /// What it printed up to saying where it listens.
    pub banner: Vec<String>,
}

impl Served {
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start `tessera serve`: on port 0 (the server says which port it
/// took, so no port is picked and released first), in `data`.
pub struct Serve<'a> {
    data: &'a Path,
    listen: String,
    database: Option<String>,
    store: Option<String>,
    password: Option<String>,
    shell_prefix: Option<String>,
    args: Vec<String>,
}

impl<'a> Serve<'a> {
    pub fn new(data: &'a Path) -> Self {
        Self {
            data,
            listen: "127.0.0.1:0".into(),
            database: None,
            store: super::test_store_url(data),
            password: None,
            shell_prefix: None,
            args: Vec::new(),
        }
    }

    /// On a fresh PostgreSQL database when `b` says so.
    pub async fn backend(mut self, b: Backend) -> Self {
        if let Backend::Postgres = b {
            self.database = Some(fresh_postgres().await);
        }
        self
    }

    /// A fixed address, for a server restarted where clients expect it.
    pub fn listen(mut self, listen: &str) -> Self {
        self.listen = listen.to_owned();
        self
    }

    pub fn admin_password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Shell words run before the server replaces the shell (`ulimit -n 64;`).
    pub fn shell_prefix(mut self, prefix: &str) -> Self {
        self.shell_prefix = Some(prefix.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn start(self) -> Served {
        let mut args = vec![
            "serve".to_owned(),
            "--data-dir".to_owned(),
            self.data.to_str().unwrap().to_owned(),
            "--listen".to_owned(),
            self.listen.clone(),
        ];
        if let Some(db) = &self.database {
            args.extend(["--database".to_owned(), db.clone()]);
        }
        if let Some(store) = &self.store {
            args.extend(["--store".to_owned(), store.clone()]);
        }
        args.extend(self.args.iter().cloned());
        let mut cmd = match &self.shell_prefix {
            Some(prefix) => {
                let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
                let mut c = Command::new("sh");
                c.args(["-c", &format!("{prefix} exec '{BIN}' {}", quoted.join(" "))]);
                c
            }
            None => {
                let mut c = Command::new(BIN);
                c.args(&args);
                c
            }
        };
        cmd.env("TESSERA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match &self.password {
            Some(pw) => cmd.env("TESSERA_ADMIN_PASSWORD", pw),
            None => cmd.env_remove("TESSERA_ADMIN_PASSWORD"),
        };
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut served = Served {
            child,
            listen: String::new(),
            password: self.password.unwrap_or_default(),
            banner: Vec::new(),
        };
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(pw) = line.strip_prefix("Created user `admin` with password: ") {
                served.password = pw.to_owned();
            }
            if let Some(url) = line.strip_prefix("Tessera is listening on http://") {
                served.listen = url.trim().to_owned();
                served.banner.push(line);
                return served;
            }
            served.banner.push(line);
        }
        panic!("the server did not start");
    }
}
