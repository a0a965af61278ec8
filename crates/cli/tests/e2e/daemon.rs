//! The CLI and the sync daemon as a newcomer meets them: the real
//! `tessera` binary against a real server, signals sent to the real
//! process, lines counted as a user would see them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::process::{Serve, command, finish_async, said};
use crate::common::{Backend, TestServer};
use tessera_client::sync::Syncer;
use tessera_client::sync::daemon::{self, Command as DaemonCommand, Control, Event};
use tokio::sync::mpsc;

on_both_backends!(
    every_kind_of_change_made_under_a_running_sync_reaches_the_other_device,
    a_paused_mass_delete_is_said_once_and_confirmed_while_running,
    a_deletion_confirmed_on_one_device_is_applied_on_the_others,
    a_vanished_folder_is_not_filled_again,
    admin_user_add_refuses_a_folder_without_a_database,
    a_large_file_comes_down_while_it_uploads_and_a_dead_uploader_leaves_nothing_partial,
);

/// Runs `tessera ARGS` to the end, in `cwd` if given.
async fn run_in(cwd: Option<&Path>, cfg: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = command(cfg, args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    finish_async(c, stdin).await
}

async fn run(cfg: &Path, args: &[&str]) -> Output {
    run_in(None, cfg, args, None).await
}

async fn ok(cfg: &Path, args: &[&str]) -> String {
    let out = run(cfg, args).await;
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}",
        said(&out)
    );
    said(&out)
}

/// A device: its own config folder, logged in as admin, and a sync folder.
async fn device(s: &TestServer, name: &str) -> (PathBuf, PathBuf) {
    let cfg = s.scratch(&format!("{name}-cfg"));
    let out = run_in(
        None,
        &cfg,
        &[
            "login",
            "--server",
            &s.url,
            "--user",
            "admin",
            "--password-stdin",
            "--device",
            name,
        ],
        Some(&format!("{}\n", s.admin_password)),
    )
    .await;
    assert!(out.status.success(), "login: {}", said(&out));
    (cfg, s.scratch(name))
}

fn write_files(dir: &Path, sub: &str, n: usize) {
    let d = dir.join(sub);
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..n {
        std::fs::write(d.join(format!("file-{i:02}.txt")), format!("{sub} {i}")).unwrap();
    }
}

/// Deletes the files in `dir`, keeping the folder.
fn delete_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
}

/// Regular files under `dir`, without the client's state folder.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == ".tessera" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn count_files(dir: &Path) -> usize {
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    walk(dir)
}

/// `tessera sync DIR` running in the background, its lines collected.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(cfg: &Path, dir: &Path) -> Self {
        let mut child = command(cfg, &["sync", &dir.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Daemon { child, lines }
    }

    fn count(&self, what: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    async fn wait_for(&self, what: &str, within: Duration) {
        let t = Instant::now();
        while self.count(what) == 0 {
            assert!(
                t.elapsed() < within,
                "the daemon never said {what:?}; it said:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    async fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// CPU time the process has used so far (user + system), from
    /// /proc/PID/stat.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat(5); the list here starts at field 3.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        #[allow(unsafe_code)]
        // SAFETY: sysconf reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Regular files under `dir` with their contents.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap_or_default();
            (f, bytes)
        })
        .collect()
}

/// Two running daemons; on one device the user edits, creates nested
/// folders, renames a folder, deletes a file and a folder, replaces a file
/// by a folder and a folder by a file, and writes a file its ignore rules
/// leave out, one change after another. A running sync looks again only where the watcher saw
/// a change; after each change the other device holds exactly the same
/// files, and nothing the user kept is lost.
async fn every_kind_of_change_made_under_a_running_sync_reaches_the_other_device(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (cfg_a, a) = device(&s, "desk").await;
    let (cfg_b, b) = device(&s, "laptop").await;
    write_files(&a, "docs", 10);
    write_files(&a, "docs/old", 3);
    write_files(&a, "music", 4);
    std::fs::write(a.join(".tesseraignore"), "*.log\n").unwrap();
    std::fs::write(a.join("note.txt"), "first").unwrap();
    let _da = Daemon::start(&cfg_a, &a);
    let _db = Daemon::start(&cfg_b, &b);
    let same = || contents(&a) == contents(&b);
    wait_until("the first sync", Duration::from_secs(60), same).await;

    type Change = fn(&Path);
    let changes: [(&str, Change); 9] = [
        ("an edit", |a| {
            std::fs::write(a.join("docs/file-03.txt"), "edited").unwrap()
        }),
        ("nested new folders", |a| {
            write_files(a, "new/deeper/still", 2)
        }),
        ("a renamed folder", |a| {
            std::fs::rename(a.join("docs/old"), a.join("docs/older")).unwrap()
        }),
        ("a deleted file", |a| {
            std::fs::remove_file(a.join("music/file-01.txt")).unwrap()
        }),
        ("a deleted folder", |a| {
            std::fs::remove_dir_all(a.join("music")).unwrap()
        }),
        ("a file replaced by a folder", |a| {
            std::fs::remove_file(a.join("note.txt")).unwrap();
            write_files(a, "note.txt", 1);
        }),
        ("a folder replaced by a file", |a| {
            std::fs::remove_dir_all(a.join("docs/older")).unwrap();
            std::fs::write(a.join("docs/older"), "now a file").unwrap();
        }),
        ("an ignored file beside a new one", |a| {
            std::fs::write(a.join("new/debug.log"), "left out").unwrap();
            std::fs::write(a.join("new/kept.txt"), "kept").unwrap();
        }),
        ("an edit deep inside", |a| {
            std::fs::write(a.join("new/deeper/still/file-00.txt"), "deep edit").unwrap()
        }),
    ];
    for (what, change) in changes {
        change(&a);
        let want: Vec<_> = contents(&a)
            .into_iter()
            .filter(|(f, _)| !f.ends_with(".log"))
            .collect();
        wait_until(what, Duration::from_secs(30), || contents(&b) == want).await;
    }
    assert!(files(&b).contains(&"new/deeper/still/file-01.txt".to_string()));
    assert!(!files(&b).iter().any(|f| f.starts_with("music")));
    assert!(files(&b).contains(&"docs/older".to_string()));
    assert!(files(&b).contains(&"note.txt/file-00.txt".to_string()));
    assert!(
        !files(&a)
            .iter()
            .chain(&files(&b))
            .any(|f| f.contains("conflicted copy")),
        "replacing a file by a folder is no conflict"
    );
    assert!(
        files(&a).contains(&"new/debug.log".to_string()),
        "nothing of A's was removed"
    );
}

async fn a_paused_mass_delete_is_said_once_and_confirmed_while_running(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (cfg, dir) = device(&s, "laptop").await;
    write_files(&dir, "notes", 20);
    let d = dir.display().to_string();
    ok(&cfg, &["sync", &d, "--once"]).await;
    delete_files(&dir.join("notes"));

    let once = run(&cfg, &["sync", &d, "--once"]).await;
    assert!(!once.status.success(), "{}", said(&once));
    let advice = format!(
        "tessera sync {} --allow-mass-delete",
        dir.canonicalize().unwrap().display()
    );
    assert!(
        said(&once).contains(&advice),
        "the pause names a command that works: {}",
        said(&once)
    );

    let daemon = Daemon::start(&cfg, &dir);
    daemon.wait_for("is paused", Duration::from_secs(20)).await;
    let cpu_before = daemon.cpu();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = daemon.cpu() - cpu_before;
    let lines = daemon.count("is paused");
    println!("paused daemon over 3 s: {lines} pause line(s), {cpu:?} of CPU");
    assert_eq!(lines, 1, "said once:\n{}", daemon.text());

    let status = run(&cfg, &["status", &d]).await;
    assert!(
        !status.status.success(),
        "status exits non-zero while paused"
    );
    assert!(said(&status).contains("paused"), "{}", said(&status));

    // Confirmed while the daemon holds the folder.
    let confirm = run(&cfg, &["sync", &d, "--allow-mass-delete"]).await;
    assert!(confirm.status.success(), "{}", said(&confirm));
    let remote = s.login("admin", &s.admin_password, "check").await;
    let left = remote
        .list("/notes")
        .await
        .map(|l| l.entries.len())
        .unwrap_or(0);
    assert_eq!(left, 0, "the confirmed deletions reached the server");
    let status = run(&cfg, &["status", &d]).await;
    assert!(status.status.success(), "{}", said(&status));
    assert!(said(&status).contains("is in sync"), "{}", said(&status));

    // A later mass deletion is paused again: the confirmation was for one.
    // And a wiped folder counts by the files it held.
    write_files(&dir, "more", 20);
    let t = Instant::now();
    while !remote
        .list("/more")
        .await
        .is_ok_and(|l| l.entries.len() == 20)
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "new files never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_dir_all(dir.join("more")).unwrap();
    daemon
        .wait_for(
            "deleting 20 files on the server is paused",
            Duration::from_secs(20),
        )
        .await;
}

async fn a_deletion_confirmed_on_one_device_is_applied_on_the_others(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (cfg_a, a) = device(&s, "desk").await;
    let (cfg_b, b) = device(&s, "laptop").await;
    let (da, db) = (a.display().to_string(), b.display().to_string());
    write_files(&a, "photos", 30);
    ok(&cfg_a, &["sync", &da, "--once"]).await;
    ok(&cfg_b, &["sync", &db, "--once"]).await;
    assert_eq!(files(&b).len(), 30);

    delete_files(&a.join("photos"));
    assert!(!run(&cfg_a, &["sync", &da, "--once"]).await.status.success());
    ok(&cfg_a, &["sync", &da, "--once", "--allow-mass-delete"]).await;

    // The other device applies what was confirmed, into its local trash.
    let out = run(&cfg_b, &["sync", &db, "--once"]).await;
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(files(&b), Vec::<String>::new());
    assert_eq!(count_files(&b.join(".tessera/trash")), 30);

    // A deletion made with the CLI reaches a running daemon.
    write_files(&a, "docs", 25);
    ok(&cfg_a, &["sync", &da, "--once"]).await;
    let daemon = Daemon::start(&cfg_b, &b);
    wait_until("docs reaching the laptop", Duration::from_secs(30), || {
        files(&b).len() == 25
    })
    .await;
    ok(&cfg_a, &["rm", "/docs"]).await;
    wait_until(
        "the CLI's deletion reaching the daemon",
        Duration::from_secs(30),
        || files(&b).is_empty(),
    )
    .await;
    assert_eq!(daemon.count("paused"), 0, "{}", daemon.text());
    assert_eq!(count_files(&b.join(".tessera/trash")), 55);
}

async fn a_vanished_folder_is_not_filled_again(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (cfg, dir) = device(&s, "laptop").await;
    let d = dir.display().to_string();
    write_files(&dir, "music", 5);
    ok(&cfg, &["sync", &d, "--once"]).await;
    let remote = s.login("admin", &s.admin_password, "check").await;

    // The disk is unmounted: the folder is gone, or an empty mount point.
    let away = s.scratch("laptop-away");
    std::fs::rename(&dir, &away).unwrap();
    let out = run(&cfg, &["sync", &d, "--once"]).await;
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("mounted"), "{}", said(&out));
    assert!(!dir.exists(), "the folder was not recreated");
    let status = run(&cfg, &["status", &d]).await;
    assert!(!status.status.success());
    assert!(said(&status).contains("mounted"), "{}", said(&status));
    std::fs::create_dir(&dir).unwrap();
    let out = run(&cfg, &["sync", &d, "--once"]).await;
    assert!(!out.status.success(), "{}", said(&out));
    assert_eq!(count_files(&dir), 0, "the empty mount point stays empty");
    std::fs::remove_dir(&dir).unwrap();
    assert_eq!(remote.list("/music").await.unwrap().entries.len(), 5);

    // A running daemon whose folder goes away waits, and carries on when
    // the folder is back.
    std::fs::rename(&away, &dir).unwrap();
    let daemon = Daemon::start(&cfg, &dir);
    daemon.wait_for("syncing", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::rename(&dir, &away).unwrap();
    let new_file = s.scratch("new.txt");
    std::fs::write(&new_file, "made elsewhere").unwrap();
    ok(
        &cfg,
        &["put", &new_file.display().to_string(), "/music/new.txt"],
    )
    .await;
    daemon.wait_for("mounted", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!dir.exists(), "the daemon did not recreate the folder");
    assert_eq!(
        remote.list("/music").await.unwrap().entries.len(),
        6,
        "nothing was deleted on the server"
    );
    std::fs::rename(&away, &dir).unwrap();
    wait_until(
        "the new file arriving once the folder is back",
        Duration::from_secs(30),
        || dir.join("music/new.txt").is_file(),
    )
    .await;
    assert_eq!(files(&dir).len(), 6);
}

async fn admin_user_add_refuses_a_folder_without_a_database(backend: Backend) {
    let s = TestServer::start(backend).await;
    let elsewhere = s.scratch("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let cfg = s.scratch("cfg");
    let out = run_in(
        Some(&elsewhere),
        &cfg,
        &["admin", "user", "add", "carol", "--password-stdin"],
        Some("carol-secret-1\n"),
    )
    .await;
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("--data-dir"), "{}", said(&out));
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing was created"
    );

    let data = s.data_dir().display().to_string();
    let mut args = vec!["admin", "user", "add", "carol", "--password-stdin"];
    let database = s.config.database.clone();
    match &database {
        Some(url) => args.extend(["--database", url]),
        None => args.extend(["--data-dir", &data]),
    }
    let out = run_in(Some(&elsewhere), &cfg, &args, Some("carol-secret-1\n")).await;
    assert!(out.status.success(), "{}", said(&out));
    let want = match &database {
        Some(url) => url.rsplit('/').next().unwrap().to_owned(),
        None => s.data_dir().join("meta.db").display().to_string(),
    };
    assert!(
        said(&out).contains(&want),
        "names the database: {}",
        said(&out)
    );
    // The running server knows the new user.
    let out = run_in(
        None,
        &cfg,
        &[
            "login",
            "--server",
            &s.url,
            "--user",
            "carol",
            "--password-stdin",
        ],
        Some("carol-secret-1\n"),
    )
    .await;
    assert!(out.status.success(), "{}", said(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_and_sigterm_stop_the_daemon_and_say_so() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (cfg, dir) = device(&s, "laptop").await;
    write_files(&dir, "a", 3);
    ok(&cfg, &["sync", &dir.display().to_string(), "--once"]).await;
    for (name, sig) in [("SIGINT", libc::SIGINT), ("SIGTERM", libc::SIGTERM)] {
        let mut daemon = Daemon::start(&cfg, &dir);
        daemon.wait_for("syncing", Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        daemon.signal(sig);
        let status = daemon.exited_within(Duration::from_secs(5)).await;
        println!("{name}: stopped after {:?}", t.elapsed());
        let status = status.unwrap_or_else(|| panic!("{name} did not stop the daemon in 5 s"));
        assert!(status.success(), "{name}: {status:?}\n{}", daemon.text());
        daemon
            .wait_for("stopped syncing", Duration::from_secs(1))
            .await;
    }
}

/// Events until one matches `want`; panics with those seen if none does
/// within `within`.
async fn event_where(
    events: &mut mpsc::UnboundedReceiver<Event>,
    within: Duration,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if want(&e) => return e,
            Ok(Some(e)) => seen.push(format!("{e:?}")),
            Ok(None) | Err(_) => panic!("no such event; seen:\n{}", seen.join("\n")),
        }
    }
}

/// The daemon driven in-process, as another front end would drive it:
/// commands in, typed events out, no terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Long on purpose: one daemon driven through its commands in sequence,
// each answer awaited before the next command.
async fn a_front_end_drives_the_daemon_with_commands_and_hears_typed_events() {
    let s = TestServer::start(Backend::Sqlite).await;
    let remote = s.user("alice").await;
    let dir = s.scratch("desktop");
    write_files(&dir, "notes", 20);
    let syncer = Syncer::open(&dir, remote.clone(), "alice", "desktop")
        .await
        .unwrap();
    let (commands, rx) = mpsc::channel(4);
    let (tx, mut events) = mpsc::unbounded_channel();
    let config = daemon::Config::default();
    let grace = config.stop_grace;
    let d = daemon::Daemon::new(
        Box::new(syncer),
        remote.clone(),
        config,
        Control::new(rx),
        move |e| {
            let _ = tx.send(e);
        },
    );
    let running = tokio::spawn(d.run());
    let within = Duration::from_secs(30);
    event_where(&mut events, within, |e| matches!(e, Event::Started { .. })).await;
    let up = event_where(
        &mut events,
        within,
        |e| matches!(e, Event::Synced(r) if r.uploaded > 0),
    )
    .await;
    assert!(
        matches!(&up, Event::Synced(r) if r.uploaded == 20),
        "{up:?}"
    );

    // The watcher sees the files go; the brake pauses their deletion.
    delete_files(&dir.join("notes"));
    let Event::Stuck(stuck) = event_where(
        &mut events,
        within,
        |e| matches!(e, Event::Stuck(s) if !s.is_empty()),
    )
    .await
    else {
        unreachable!()
    };
    assert!(
        stuck[0].contains("deleting 20 files on the server is paused"),
        "{stuck:?}"
    );
    assert_eq!(remote.list("/notes").await.unwrap().entries.len(), 20);

    // Confirmed by command, not by file.
    commands.send(DaemonCommand::ConfirmDeletes).await.unwrap();
    let done = event_where(
        &mut events,
        within,
        |e| matches!(e, Event::Synced(r) if r.deleted_remote > 0),
    )
    .await;
    assert!(
        matches!(&done, Event::Synced(r) if r.deleted_remote == 20),
        "{done:?}"
    );
    event_where(
        &mut events,
        within,
        |e| matches!(e, Event::Stuck(s) if s.is_empty()),
    )
    .await;
    assert_eq!(remote.list("/notes").await.unwrap().entries.len(), 0);

    let t = Instant::now();
    commands
        .send(DaemonCommand::Stop("the test".into()))
        .await
        .unwrap();
    let stopping = event_where(&mut events, within, |e| matches!(e, Event::Stopping { .. })).await;
    assert!(
        matches!(&stopping, Event::Stopping { why, .. } if why == "the test"),
        "{stopping:?}"
    );
    event_where(&mut events, within, |e| matches!(e, Event::Stopped { .. })).await;
    let ended = tokio::time::timeout(grace + Duration::from_secs(2), running).await;
    println!("stopped by command after {:?}", t.elapsed());
    ended
        .expect("the daemon ends after Stopped")
        .unwrap()
        .unwrap();
}

/// A daemon whose server goes away backs off (never waiting longer than
/// its cap) and carries on when the server is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_backs_off_while_the_server_is_away_and_carries_on_when_it_returns() {
    let s = TestServer::start(Backend::Sqlite).await;
    let remote = s.user("alice").await;
    let dir = s.scratch("away");
    write_files(&dir, "a", 1);
    let syncer = Syncer::open(&dir, remote.clone(), "alice", "desktop")
        .await
        .unwrap();
    let (commands, rx) = mpsc::channel(4);
    let (tx, mut events) = mpsc::unbounded_channel();
    let config = daemon::Config {
        max_backoff: Duration::from_secs(2),
        ..daemon::Config::default()
    };
    let d = daemon::Daemon::new(
        Box::new(syncer),
        remote.clone(),
        config,
        Control::new(rx),
        move |e| {
            let _ = tx.send(e);
        },
    );
    let running = tokio::spawn(d.run());
    let within = Duration::from_secs(30);
    event_where(
        &mut events,
        within,
        |e| matches!(e, Event::Synced(r) if r.uploaded == 1),
    )
    .await;

    let TestServer {
        running: server,
        dir: _keep,
        config: server_config,
        ..
    } = s;
    let addr = server.addr;
    server.shutdown().await.unwrap();
    let failed = event_where(&mut events, within, |e| {
        matches!(e, Event::Failed { .. } | Event::Offline { .. })
    })
    .await;
    let (Event::Failed { retry_in, .. } | Event::Offline { retry_in, .. }) = failed else {
        unreachable!()
    };
    assert!(retry_in <= Duration::from_secs(2), "{retry_in:?}");
    std::fs::write(
        dir.join("while-away.txt"),
        "written while the server was away",
    )
    .unwrap();

    let mut again = server_config;
    again.listen = addr;
    let _server = tessera_server::start(again).await.unwrap();
    let t = Instant::now();
    event_where(
        &mut events,
        within,
        |e| matches!(e, Event::Synced(r) if r.uploaded == 1),
    )
    .await;
    println!("synced {:?} after the server came back", t.elapsed());
    assert!(remote.meta("/while-away.txt").await.is_ok());
    commands
        .send(DaemonCommand::Stop("the test".into()))
        .await
        .unwrap();
    event_where(&mut events, within, |e| matches!(e, Event::Stopped { .. })).await;
    running.await.unwrap().unwrap();
}

#[test]
fn login_remembers_the_server_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let data = dir.path().join("data");
    let server = Serve::new(&data).start();
    let (url, banner, password) = (server.url(), &server.banner, server.password.clone());
    let login = format!("tessera login --server {url} --user admin");
    let command = banner
        .iter()
        .find_map(|l| l.split_once("Log in with: ").map(|(_, c)| c.to_owned()))
        .unwrap_or_default();
    assert_eq!(command, login, "the banner's command names the server");

    let run = |args: &[&str], stdin: &str| {
        let mut child = command_sync(&cfg, args);
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // The banner's command, as printed.
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let mut first = args.clone();
    first.push("--password-stdin");
    let out = run(&first, &format!("{password}\n"));
    assert!(out.status.success(), "{}", said(&out));
    // Again, without --server: the saved server is used.
    let out = run(
        &["login", "--user", "admin", "--password-stdin"],
        &format!("{password}\n"),
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains(&url), "{}", said(&out));

    let wrong = run(
        &["login", "--user", "admin", "--password-stdin"],
        "nope-nope\n",
    );
    assert!(!wrong.status.success());
    let text = said(&wrong);
    assert!(text.contains("wrong user name or password"), "{text}");
    assert!(!text.contains("log in again"), "{text}");

    let listen = server.listen.clone();
    drop(server);
    let down = run(&["ls"], "");
    assert!(!down.status.success());
    let text = said(&down);
    assert_eq!(text.matches(&listen).count(), 1, "{text}");
    assert!(text.contains("start it"), "{text}");
}

fn command_sync(cfg: &Path, args: &[&str]) -> Child {
    command(cfg, args).spawn().unwrap()
}

/// A change the watcher never hears of (a write through a hard link from
/// outside the folder) is still found by the periodic whole scan, even
/// while the server answers every long poll sooner than the scan is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_watcher_missed_is_found_by_the_periodic_scan() {
    let s = TestServer::start(Backend::Sqlite).await;
    let remote = s.user("alice").await;
    let dir = s.scratch("unheard");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "first").unwrap();
    let outside = s.scratch("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::hard_link(dir.join("a.txt"), outside.join("a-link.txt")).unwrap();
    let syncer = Syncer::open(&dir, remote.clone(), "alice", "desktop")
        .await
        .unwrap();
    let (commands, rx) = mpsc::channel(4);
    let (tx, mut events) = mpsc::unbounded_channel();
    let config = daemon::Config {
        rescan: Duration::from_secs(3),
        poll_secs: 1,
        ..daemon::Config::default()
    };
    let d = daemon::Daemon::new(
        Box::new(syncer),
        remote.clone(),
        config,
        Control::new(rx),
        move |e| {
            let _ = tx.send(e);
        },
    );
    let running = tokio::spawn(d.run());
    let within = Duration::from_secs(30);
    event_where(
        &mut events,
        within,
        |e| matches!(e, Event::Synced(r) if r.uploaded == 1),
    )
    .await;

    std::fs::write(outside.join("a-link.txt"), "changed unseen").unwrap();
    let t = Instant::now();
    event_where(
        &mut events,
        within,
        |e| matches!(e, Event::Synced(r) if r.uploaded == 1),
    )
    .await;
    println!("found {:?} after the unheard write", t.elapsed());
    assert_eq!(
        remote.meta("/a.txt").await.unwrap().content_hash,
        Some(tessera_proto::ContentHash::of(b"changed unseen")),
        "the server holds the new content"
    );
    commands
        .send(DaemonCommand::Stop("the test".into()))
        .await
        .unwrap();
    event_where(&mut events, within, |e| matches!(e, Event::Stopped { .. })).await;
    running.await.unwrap().unwrap();
}

/// Bytes of the `.part` files a daemon fetches ahead into.
fn prefetched(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join(".tessera/prefetch"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Streaming sync: the receiving device fetches a large new file's blocks
/// while the uploader is still sending them; an uploader that dies half
/// way leaves nothing at the target, and when the upload is taken up again
/// the file arrives whole, without coming down a second time.
async fn a_large_file_comes_down_while_it_uploads_and_a_dead_uploader_leaves_nothing_partial(
    backend: Backend,
) {
    use crate::common::relay::Relay;
    use crate::common::{login_token, no_progress, random_data};
    use std::sync::atomic::Ordering;
    use tessera_client::remote::Remote;
    use tessera_client::transfer::upload_file;

    let s = TestServer::start(backend).await;
    let size = 48usize << 20;
    let data = random_data(size, 7);
    let local = s.scratch("big-src").join("big.bin");
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    std::fs::write(&local, &data).unwrap();

    // The receiving device talks to the server through a relay that
    // counts what it fetches.
    let down = Relay::start(&s.url).await;
    let cfg_b = s.scratch("laptop-cfg");
    let b = s.scratch("laptop");
    let out = run_in(
        None,
        &cfg_b,
        &[
            "login",
            "--server",
            &down.url,
            "--user",
            "admin",
            "--password-stdin",
            "--device",
            "laptop",
        ],
        Some(&format!("{}\n", s.admin_password)),
    )
    .await;
    assert!(out.status.success(), "login: {}", said(&out));
    let daemon = Daemon::start(&cfg_b, &b);
    daemon.wait_for("syncing", Duration::from_secs(20)).await;
    let base = format!("{}/api/v1", s.url);
    let token = login_token(&base, "admin", &s.admin_password, "desk").await;
    let watcher = Remote::new(&s.url, Some(token.clone())).unwrap();
    // The receiver listens for changes before anything is uploaded.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !watcher
        .presence()
        .await
        .unwrap()
        .devices
        .iter()
        .any(|d| d.device == "laptop" && d.connections > 0)
    {
        assert!(
            Instant::now() < deadline,
            "the receiver never held a long poll"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    down.reset();

    // The uploader's link stops after half the file's blocks; it then
    // dies. Only block uploads are held: the commit that announces the
    // upload goes through whether or not it comes after the first half.
    let up = Relay::start(&s.url).await;
    let sender = Remote::new(&up.url, Some(token.clone())).unwrap();
    *up.up_limit_only.lock().unwrap() = Some("PUT /api/v1/blocks/".into());
    up.up_limit.store(size as u64 / 2, Ordering::SeqCst);
    let upload = {
        let local = local.clone();
        tokio::spawn(
            async move { upload_file(&sender, &local, "/big.bin", None, no_progress()).await },
        )
    };
    wait_until(
        "the receiver fetching blocks while the upload runs",
        Duration::from_secs(60),
        || prefetched(&b) >= size as u64 / 8,
    )
    .await;
    upload.abort();
    let _ = upload.await;
    // The server still shows the upload as under way, not committed.
    assert!(watcher.pending_list("/big.bin").await.unwrap().is_some());
    assert!(
        !b.join("big.bin").exists(),
        "nothing is at the target before the commit"
    );
    assert!(
        files(&b).is_empty(),
        "no partial file anywhere in the folder: {:?}",
        files(&b)
    );

    // The upload is taken up again (the blocks already stored are not
    // sent twice) and commits; the receiver completes the file.
    let resumed = Remote::new(&s.url, Some(token)).unwrap();
    let report = upload_file(&resumed, &local, "/big.bin", None, no_progress())
        .await
        .unwrap();
    assert!(
        report.bytes_sent < size as u64,
        "the resumed upload sent only the rest"
    );
    wait_until("the file arriving whole", Duration::from_secs(60), || {
        std::fs::read(b.join("big.bin")).is_ok_and(|got| got == data)
    })
    .await;
    let fetched = down.down.load(Ordering::SeqCst);
    assert!(
        fetched < size as u64 * 13 / 10,
        "the file came down once ({fetched} bytes for {size}), not again after its commit"
    );
    assert_eq!(prefetched(&b), 0, "nothing fetched ahead is left behind");
}
