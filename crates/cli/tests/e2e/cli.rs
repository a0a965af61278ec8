//! The `tessera` binary as a user runs it: serve, admin, login, put, get,
//! ls, mkdir, mv, rm, revisions, restore, logout, links, shared folders.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Output, Stdio};

use crate::common::process::{Serve, Served, command, finish};

/// A process killed when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tessera(cfg: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    finish(command(cfg, args), stdin)
}

fn ok(cfg: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = tessera(cfg, args, stdin);
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A server in `dir/data` and the admin logged in with config `cfg`.
fn serve_logged_in(dir: &Path, cfg: &Path) -> Served {
    let data = dir.join("data");
    let server = Serve::new(&data).start();
    let (url, password) = (server.url(), server.password.clone());
    ok(
        cfg,
        &[
            "login",
            "--server",
            &url,
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some(&format!("{password}\n")),
    );
    server
}

#[test]
// Long on purpose: a user's first session, in the order they meet it.
fn a_user_session_from_first_start_to_logout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("cfg");
    let served = Serve::new(&data).start();
    let (listen, password) = (served.listen.clone(), served.password.clone());
    let key = data.join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let server = format!("http://{listen}");
    let bad = tessera(
        &cfg,
        &[
            "login",
            "--server",
            &server,
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some("nope\n"),
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("credentials"));
    ok(
        &cfg,
        &[
            "login",
            "--server",
            &server,
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some(&format!("{password}\n")),
    );

    // A second user, added while the server runs.
    ok(
        &cfg,
        &[
            "admin",
            "user",
            "add",
            "carol",
            "--password-stdin",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        Some("carol-secret-1\n"),
    );

    let file = dir.path().join("report.txt");
    std::fs::write(&file, "first draft\n").unwrap();
    let out = ok(
        &cfg,
        &["put", file.to_str().unwrap(), "/work/report.txt"],
        None,
    );
    assert!(out.contains("rev 1"), "{out}");
    std::fs::write(&file, "second draft\n").unwrap();
    ok(
        &cfg,
        &["put", file.to_str().unwrap(), "/work/report.txt"],
        None,
    );
    let stale = tessera(
        &cfg,
        &[
            "put",
            "--base-rev",
            "1",
            file.to_str().unwrap(),
            "/work/report.txt",
        ],
        None,
    );
    assert!(!stale.status.success());

    let listing: serde_json::Value =
        serde_json::from_str(&ok(&cfg, &["ls", "/work", "--json"], None)).unwrap();
    assert_eq!(listing["entries"][0]["name"], "report.txt");
    assert_eq!(listing["entries"][0]["rev"], 2);
    let revs: serde_json::Value = serde_json::from_str(&ok(
        &cfg,
        &["revisions", "/work/report.txt", "--json"],
        None,
    ))
    .unwrap();
    assert_eq!(revs["revisions"].as_array().unwrap().len(), 2);

    let back = dir.path().join("back.txt");
    ok(
        &cfg,
        &[
            "get",
            "/work/report.txt",
            back.to_str().unwrap(),
            "--rev",
            "1",
        ],
        None,
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "first draft\n");
    ok(&cfg, &["restore", "/work/report.txt", "--rev", "1"], None);
    ok(
        &cfg,
        &["get", "/work/report.txt", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("report.txt")).unwrap(),
        "first draft\n"
    );

    ok(&cfg, &["mkdir", "/archive"], None);
    ok(
        &cfg,
        &["mv", "/work/report.txt", "/archive/report.txt"],
        None,
    );
    ok(&cfg, &["rm", "/work"], None);
    let root = ok(&cfg, &["ls"], None);
    assert!(
        root.contains("archive/") && !root.contains("work/"),
        "{root}"
    );
    let missing = tessera(
        &cfg,
        &["get", "/work/report.txt", back.to_str().unwrap()],
        None,
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));

    ok(&cfg, &["logout"], None);
    let after = tessera(&cfg, &["ls"], None);
    assert!(String::from_utf8_lossy(&after.stderr).contains("not logged in"));
    ok(
        &cfg,
        &[
            "login",
            "--server",
            &server,
            "--user",
            "carol",
            "--password-stdin",
        ],
        Some("carol-secret-1\n"),
    );
    assert_eq!(ok(&cfg, &["ls"], None), "", "carol sees only her own files");
}

#[test]
fn sync_command_carries_changes_live() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let _server = serve_logged_in(dir.path(), &cfg);
    let a = dir.path().join("A");
    let b = dir.path().join("B");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("first.txt"), "from A").unwrap();
    let out = ok(&cfg, &["sync", a.to_str().unwrap(), "--once"], None);
    assert!(out.contains("in sync"), "{out}");
    // B runs continuously: it fetches what exists, then follows along.
    let follower = command(&cfg, &["sync", b.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _follower = Killed(follower);
    let wait_for = |path: &Path, want: &str| {
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_secs(20) {
            if std::fs::read_to_string(path).is_ok_and(|s| s == want) {
                return t.elapsed();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{} never became {want:?}", path.display());
    };
    wait_for(&b.join("first.txt"), "from A");
    let second = tessera(&cfg, &["sync", b.to_str().unwrap(), "--once"], None);
    assert!(
        !second.status.success(),
        "a second sync on a busy folder is refused"
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("another `tessera sync` is running"));
    let look = ok(&cfg, &["status", b.to_str().unwrap()], None);
    assert!(
        look.contains("in sync") || look.contains("syncing"),
        "{look}"
    );
    // A change made through another device arrives without any command in B.
    std::fs::write(a.join("second.txt"), "live").unwrap();
    ok(&cfg, &["sync", a.to_str().unwrap(), "--once"], None);
    let took = wait_for(&b.join("second.txt"), "live");
    println!("propagation to a running sync client: {took:?}");
    // A local edit in B is picked up by its watcher and reaches A.
    std::fs::write(b.join("first.txt"), "edited in B").unwrap();
    let t = std::time::Instant::now();
    loop {
        ok(&cfg, &["sync", a.to_str().unwrap(), "--once"], None);
        if std::fs::read_to_string(a.join("first.txt")).is_ok_and(|s| s == "edited in B") {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "B's edit never reached A"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        ok(&cfg, &["conflicts", a.to_str().unwrap()], None).trim(),
        format!("no conflicted copies in {}", a.display())
    );
    let status = ok(&cfg, &["status", a.to_str().unwrap()], None);
    assert!(status.contains("is in sync"), "{status}");
}

#[test]
fn links_are_made_listed_and_revoked_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let _server = serve_logged_in(dir.path(), &cfg);
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "shared notes\n").unwrap();
    ok(&cfg, &["put", file.to_str().unwrap(), "/notes.txt"], None);

    let bad = tessera(
        &cfg,
        &["link", "create", "/notes.txt", "--expires", "soon"],
        None,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("7d"));
    let missing = tessera(&cfg, &["link", "create", "/absent.txt"], None);
    assert!(!missing.status.success());

    let url = ok(
        &cfg,
        &["link", "create", "/notes.txt", "--expires", "7d"],
        None,
    )
    .trim()
    .to_owned();
    assert!(url.starts_with("http://") && url.contains("/s/"), "{url}");
    assert_eq!(
        http_get(&format!("{url}?download=1")),
        (200, "shared notes\n".to_owned())
    );

    let guarded = ok(
        &cfg,
        &["link", "create", "/notes.txt", "--password-stdin", "--json"],
        Some("a long passphrase\n"),
    );
    let guarded: serde_json::Value = serde_json::from_str(&guarded).unwrap();
    assert_eq!(guarded["has_password"], true);
    assert_eq!(http_get(guarded["url"].as_str().unwrap()).0, 401);

    let listed = ok(&cfg, &["link", "list"], None);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("/notes.txt") && listed.contains("expires"),
        "{listed}"
    );
    let id = guarded["id"].as_str().unwrap();
    ok(&cfg, &["link", "revoke", id], None);
    let again = tessera(&cfg, &["link", "revoke", id], None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("link list"));
    assert_eq!(http_get(guarded["url"].as_str().unwrap()).0, 404);
    assert_eq!(ok(&cfg, &["link", "list"], None).lines().count(), 1);
}

#[test]
fn folders_are_shared_listed_and_left_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("cfg");
    let server = serve_logged_in(dir.path(), &admin);
    let data = dir.path().join("data");
    let login = |name: &str| {
        let password = format!("{name}-secret-1");
        ok(
            &admin,
            &[
                "admin",
                "user",
                "add",
                name,
                "--password-stdin",
                "--data-dir",
                data.to_str().unwrap(),
            ],
            Some(&format!("{password}\n")),
        );
        let cfg = dir.path().join(format!("cfg-{name}"));
        ok(
            &cfg,
            &[
                "login",
                "--server",
                &server.url(),
                "--user",
                name,
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        );
        cfg
    };
    let (alice, bob) = (login("alice"), login("bob"));
    let shares = |cfg: &Path| -> Vec<serde_json::Value> {
        let list: serde_json::Value =
            serde_json::from_str(&ok(cfg, &["share", "list", "--json"], None)).unwrap();
        list["shares"].as_array().unwrap().clone()
    };
    let refused = |cfg: &Path, args: &[&str], says: &str| {
        let out = tessera(cfg, args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "tessera {args:?} was not refused");
        assert!(stderr.contains(says), "tessera {args:?}: {stderr}");
    };
    let file = dir.path().join("plan.txt");
    std::fs::write(&file, "the plan\n").unwrap();
    ok(
        &alice,
        &["put", file.to_str().unwrap(), "/Team/plan.txt"],
        None,
    );
    assert_eq!(shares(&alice), Vec::<serde_json::Value>::new());
    assert_eq!(ok(&alice, &["share", "list"], None), "no shared folders\n");

    let said = ok(
        &alice,
        &["share", "/Team", "--with", "bob", "--role", "viewer"],
        None,
    );
    assert!(said.contains("bob is now a viewer of /Team"), "{said}");
    assert!(said.contains("bob (viewer)"), "{said}");
    let mine = shares(&alice);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["path"], "/Team");
    assert_eq!(mine[0]["role"], "owner");
    assert_eq!(mine[0]["owner"], "alice");
    assert_eq!(
        mine[0]["members"],
        serde_json::json!([
            {"username": "alice", "role": "owner"},
            {"username": "bob", "role": "viewer"},
        ])
    );
    let listed = ok(&alice, &["share", "list"], None);
    assert!(
        listed.contains("/Team") && listed.contains("bob (viewer)"),
        "{listed}"
    );
    let theirs = shares(&bob);
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["path"], "/Team");
    assert_eq!(theirs[0]["role"], "viewer");
    assert_eq!(theirs[0]["owner"], "alice");
    let got = dir.path().join("bob-plan.txt");
    ok(
        &bob,
        &["get", "/Team/plan.txt", got.to_str().unwrap()],
        None,
    );
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "the plan\n");

    // What is not theirs to do is refused, saying why.
    refused(
        &bob,
        &["share", "/Team", "--with", "admin", "--role", "editor"],
        "only its owner can share it",
    );
    refused(&bob, &["unshare", "/Team"], "tessera leave /Team");
    refused(&alice, &["leave", "/Team"], "tessera unshare /Team");
    refused(
        &bob,
        &["leave", "/Elsewhere"],
        "/Elsewhere is not a shared folder; `tessera share list` shows yours",
    );
    refused(
        &alice,
        &["share", "/Team", "--with", "nobody", "--role", "viewer"],
        "nobody",
    );

    // Sharing again changes the role; the leading slash may be left out.
    let said = ok(
        &alice,
        &["share", "Team", "--with", "bob", "--role", "editor"],
        None,
    );
    assert!(said.contains("bob is now an editor of /Team"), "{said}");
    assert_eq!(shares(&bob)[0]["role"], "editor");
    assert_eq!(shares(&alice)[0]["members"][1]["role"], "editor");

    let said = ok(&bob, &["leave", "/Team"], None);
    assert!(said.contains("you left /Team"), "{said}");
    assert_eq!(shares(&bob), Vec::<serde_json::Value>::new());
    assert!(!ok(&bob, &["ls"], None).contains("Team"));
    refused(&bob, &["leave", "/Team"], "not a shared folder");
    assert_eq!(
        shares(&alice)[0]["members"],
        serde_json::json!([{"username": "alice", "role": "owner"}])
    );

    ok(
        &alice,
        &["share", "/Team", "--with", "bob", "--role", "viewer"],
        None,
    );
    assert_eq!(shares(&bob)[0]["role"], "viewer");
    let said = ok(&alice, &["unshare", "/Team", "--user", "bob"], None);
    assert!(said.contains("bob no longer has /Team"), "{said}");
    assert_eq!(shares(&bob), Vec::<serde_json::Value>::new());
    refused(
        &alice,
        &["unshare", "/Team", "--user", "bob"],
        "bob does not have /Team",
    );

    // Unsharing takes it from every member; the owner keeps it as it was.
    ok(
        &alice,
        &["share", "/Team", "--with", "bob", "--role", "editor"],
        None,
    );
    let said = ok(&alice, &["unshare", "/Team"], None);
    assert!(said.contains("bob lost it"), "{said}");
    assert_eq!(shares(&bob), Vec::<serde_json::Value>::new());
    let back = dir.path().join("alice-plan.txt");
    ok(
        &alice,
        &["get", "/Team/plan.txt", back.to_str().unwrap()],
        None,
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "the plan\n");
}

/// A plain GET, as a visitor with no account makes it: status and body.
fn http_get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::get(url).await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

#[test]
fn devices_are_listed_and_signed_out_and_the_password_changed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("cfg");
    let server = serve_logged_in(dir.path(), &admin);
    let data = dir.path().join("data");
    ok(
        &admin,
        &[
            "admin",
            "user",
            "add",
            "carol",
            "--password-stdin",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        Some("carol-secret-1\n"),
    );
    let login = |device: &str, password: &str| -> std::path::PathBuf {
        let cfg = dir.path().join(format!("cfg-{device}"));
        ok(
            &cfg,
            &[
                "login",
                "--server",
                &server.url(),
                "--user",
                "carol",
                "--device",
                device,
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        );
        cfg
    };
    let (laptop, phone) = (
        login("laptop", "carol-secret-1"),
        login("phone", "carol-secret-1"),
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(&laptop, &["devices", "--json"], None)).unwrap();
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "{list}");
    let me = devices.iter().find(|d| d["current"] == true).unwrap();
    assert_eq!(me["name"], "laptop");
    let table = ok(&laptop, &["devices"], None);
    assert!(table.contains("laptop (this one)"), "{table}");
    assert!(table.contains("phone"), "{table}");

    // The phone is signed out from the laptop; its next command says so.
    let phone_id = devices.iter().find(|d| d["name"] == "phone").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let said = ok(&laptop, &["devices", "revoke", &phone_id], None);
    assert!(said.contains("signed out"), "{said}");
    let out = tessera(&phone, &["ls", "/"], None);
    assert!(!out.status.success());

    // A wrong current password changes nothing; the right one does, and
    // signs every other device out.
    let phone = login("phone", "carol-secret-1");
    let out = tessera(
        &laptop,
        &["passwd", "--password-stdin"],
        Some("not-the-password\nnew-secret-22\n"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("current password is wrong"), "{stderr}");
    let said = ok(
        &laptop,
        &["passwd", "--password-stdin"],
        Some("carol-secret-1\nnew-secret-22\n"),
    );
    assert!(said.contains("1 device was signed out"), "{said}");
    assert!(!tessera(&phone, &["ls", "/"], None).status.success());
    ok(&laptop, &["ls", "/"], None);
    login("tablet", "new-secret-22");
}

#[test]
fn a_running_sync_on_a_revoked_device_stops_at_once_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("cfg");
    let server = serve_logged_in(dir.path(), &laptop);
    let phone = dir.path().join("cfg-phone");
    ok(
        &phone,
        &[
            "login",
            "--server",
            &server.url(),
            "--user",
            "admin",
            "--device",
            "phone",
            "--password-stdin",
        ],
        Some(&format!("{}\n", server.password)),
    );
    let folder = dir.path().join("A");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("kept.txt"), "mine").unwrap();
    let daemon = command(&phone, &["sync", folder.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Killed(daemon);
    // Wait until the daemon synced and sits in its long poll.
    let t = std::time::Instant::now();
    while !ok(&laptop, &["ls", "/"], None).contains("kept.txt") {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The phone's long poll is held: the server lists it as syncing.
    let phone_entry = || -> serde_json::Value {
        let list: serde_json::Value =
            serde_json::from_str(&ok(&laptop, &["devices", "--json"], None)).unwrap();
        list["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "phone")
            .unwrap()
            .clone()
    };
    while phone_entry()["polls"].as_u64().unwrap_or(0) == 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "the phone never held a long poll"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let list = serde_json::json!({ "devices": [phone_entry()] });
    let id = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "phone")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&laptop, &["devices", "revoke", &id], None);
    let revoked = std::time::Instant::now();
    // Its long poll is ended by the revocation, not by its timeout (60 s),
    // and the daemon stops instead of retrying for ever.
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(20),
            "the sync on the revoked device still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    println!(
        "a revoked device's sync stopped {:?} after",
        revoked.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(3),
        "the exit status a service manager does not restart"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(daemon.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("this device was signed out"), "{stderr}");
    assert!(stderr.contains("tessera login"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(folder.join("kept.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn an_administrator_manages_accounts_through_the_server_and_on_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("cfg");
    let server = serve_logged_in(dir.path(), &admin);
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let said = ok(
        &admin,
        &["admin", "user", "add", "dave", "--password-stdin"],
        Some("dave-secret-1\n"),
    );
    assert!(said.contains("Created user `dave`"), "{said}");
    let dave = dir.path().join("cfg-dave");
    let login = |password: &str| {
        tessera(
            &dave,
            &[
                "login",
                "--server",
                &server.url(),
                "--user",
                "dave",
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        )
    };
    assert!(login("dave-secret-1").status.success());
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "dave's notes").unwrap();
    ok(&dave, &["put", file.to_str().unwrap(), "/notes.txt"], None);
    let link = ok(&dave, &["link", "create", "/notes.txt"], None)
        .trim()
        .to_owned();
    let link = format!("{link}?download=1");
    assert_eq!(http_get(&link).0, 200);
    let state = |cfg: &Path, extra: &[&str]| -> String {
        let mut args = vec!["admin", "user", "list", "--json"];
        args.extend(extra);
        let list: serde_json::Value = serde_json::from_str(&ok(cfg, &args, None)).unwrap();
        list["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "dave")
            .map_or("none".to_owned(), |u| {
                u["state"].as_str().unwrap().to_owned()
            })
    };
    assert_eq!(state(&admin, &[]), "active");
    let table = ok(&admin, &["admin", "user", "list"], None);
    assert!(
        table.contains("admin (admin)") && table.contains("dave"),
        "{table}"
    );

    // Only administrators manage accounts; nobody locks themselves out.
    let out = tessera(&dave, &["admin", "user", "list"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not an administrator"), "{stderr}");
    // Said for people: no status codes or internal names.
    assert!(
        !stderr.contains("HTTP") && !stderr.contains("Forbidden"),
        "{stderr}"
    );
    let out = tessera(&admin, &["admin", "user", "delete", "admin"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signed in as"));

    // Disabled: signed out at once, and told why at the next sign-in.
    let said = ok(&admin, &["admin", "user", "disable", "dave"], None);
    assert!(said.contains("1 device was signed out"), "{said}");
    assert!(!tessera(&dave, &["ls", "/"], None).status.success());
    let out = login("dave-secret-1");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("disabled"));
    assert_eq!(
        http_get(&link).0,
        404,
        "a disabled account's links lead nowhere"
    );
    ok(&admin, &["admin", "user", "enable", "dave"], None);
    assert!(login("dave-secret-1").status.success());
    assert_eq!(http_get(&link).0, 200);

    // A password set for someone who lost theirs.
    ok(
        &admin,
        &[
            "admin",
            "user",
            "reset-password",
            "dave",
            "--password-stdin",
        ],
        Some("dave-secret-2\n"),
    );
    assert!(!tessera(&dave, &["ls", "/"], None).status.success());
    assert!(!login("dave-secret-1").status.success());
    assert!(login("dave-secret-2").status.success());

    // Deleted: out, but kept whole until the trash period ends.
    let said = ok(&admin, &["admin", "user", "delete", "dave"], None);
    assert!(said.contains("kept until"), "{said}");
    assert!(said.contains("tessera admin user restore dave"), "{said}");
    assert_eq!(state(&admin, &[]), "deleted");
    let out = login("dave-secret-2");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is deleted"));
    ok(&admin, &["admin", "user", "restore", "dave"], None);
    assert!(login("dave-secret-2").status.success());
    assert!(ok(&dave, &["ls", "/"], None).contains("notes.txt"));

    // On the server machine, with no session: purged now only when
    // confirmed; the name is then free again.
    let out = tessera(
        &admin,
        &[
            "admin",
            "user",
            "delete",
            "dave",
            "--now",
            "--data-dir",
            data,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(state(&admin, &["--data-dir", data]), "active");
    let said = ok(
        &admin,
        &[
            "admin",
            "user",
            "delete",
            "dave",
            "--now",
            "--yes",
            "--data-dir",
            data,
        ],
        None,
    );
    assert!(said.contains("purged"), "{said}");
    assert_eq!(state(&admin, &["--data-dir", data]), "none");
    assert!(!tessera(&dave, &["ls", "/"], None).status.success());
    ok(
        &admin,
        &[
            "admin",
            "user",
            "add",
            "dave",
            "--password-stdin",
            "--data-dir",
            data,
        ],
        Some("dave-secret-3\n"),
    );
    assert!(login("dave-secret-3").status.success());
    assert!(!ok(&dave, &["ls", "/"], None).contains("notes.txt"));

    // A lost admin password, recovered on the server machine.
    ok(
        &admin,
        &[
            "admin",
            "user",
            "reset-password",
            "admin",
            "--password-stdin",
            "--data-dir",
            data,
        ],
        Some("admin-secret-9\n"),
    );
    assert!(!tessera(&admin, &["ls", "/"], None).status.success());
    ok(
        &admin,
        &[
            "login",
            "--server",
            &server.url(),
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some("admin-secret-9\n"),
    );
    ok(&admin, &["admin", "user", "list"], None);
}

#[test]
fn the_client_copies_and_moves_as_cp_and_mv_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let _server = serve_logged_in(dir.path(), &cfg);
    let file = dir.path().join("report.txt");
    std::fs::write(&file, "the report\n").unwrap();

    // mkdir wants its parent unless -p; -p is quiet about what exists.
    let out = tessera(&cfg, &["mkdir", "/a/b"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/a does not exist") && stderr.contains("-p"),
        "{stderr}"
    );
    assert!(!stderr.contains("HTTP"), "{stderr}");
    ok(&cfg, &["mkdir", "-p", "/a/b"], None);
    ok(&cfg, &["mkdir", "-p", "/a/b"], None);
    assert!(!tessera(&cfg, &["mkdir", "/a/b"], None).status.success());

    // put into a folder, and ls of a file shows its entry.
    ok(&cfg, &["put", file.to_str().unwrap(), "/a/b"], None);
    let entry: serde_json::Value =
        serde_json::from_str(&ok(&cfg, &["ls", "/a/b/report.txt", "--json"], None)).unwrap();
    assert_eq!(entry["path"], "/a/b/report.txt");
    assert_eq!(entry["size"], 11);
    assert!(ok(&cfg, &["ls", "/a/b/report.txt"], None).contains("report.txt"));

    // mv into an existing folder; onto a file only with --overwrite, and
    // the replaced content stays as a revision.
    ok(&cfg, &["mkdir", "/c"], None);
    ok(&cfg, &["mv", "/a/b/report.txt", "/c"], None);
    assert!(ok(&cfg, &["ls", "/c"], None).contains("report.txt"));
    let draft = dir.path().join("draft.txt");
    std::fs::write(&draft, "a better report\n").unwrap();
    ok(&cfg, &["put", draft.to_str().unwrap(), "/draft.txt"], None);
    let out = tessera(&cfg, &["mv", "/draft.txt", "/c/report.txt"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--overwrite"));
    let out = tessera(&cfg, &["mv", "--overwrite", "/c/report.txt", "/c"], None);
    assert!(!out.status.success(), "a file moved onto itself");
    assert!(String::from_utf8_lossy(&out.stderr).contains("same file"));
    ok(
        &cfg,
        &["mv", "--overwrite", "/draft.txt", "/c/report.txt"],
        None,
    );
    let back = dir.path().join("back.txt");
    ok(
        &cfg,
        &["get", "/c/report.txt", back.to_str().unwrap()],
        None,
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "a better report\n");
    let revs = ok(&cfg, &["revisions", "/c/report.txt"], None);
    let lines: Vec<&str> = revs.lines().collect();
    assert!(
        lines[0].starts_with("  REV") && lines[0].contains("DEVICE"),
        "{revs}"
    );
    assert_eq!(lines.len(), 3, "{revs}");
    // Seconds, a short hash, the device.
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(first[2].len(), 8, "hh:mm:ss: {revs}");
    assert_eq!(first[4].len(), 12, "a short hash: {revs}");
    assert!(!ok(&cfg, &["ls", "/"], None).contains("draft.txt"));

    // Trees, both ways, one bar each.
    let tree = dir.path().join("photos");
    std::fs::create_dir_all(tree.join("2026/empty")).unwrap();
    std::fs::write(tree.join("top.txt"), "top").unwrap();
    std::fs::write(tree.join("2026/big.bin"), vec![7u8; 3 << 20]).unwrap();
    for i in 0..30 {
        std::fs::write(tree.join(format!("2026/{i}.txt")), format!("photo {i}")).unwrap();
    }
    let said = ok(&cfg, &["put", "-r", tree.to_str().unwrap(), "/c"], None);
    assert!(said.contains("32 files"), "{said}");
    let listed = ok(&cfg, &["ls", "/c/photos/2026"], None);
    assert!(
        listed.contains("empty/") && listed.contains("big.bin"),
        "{listed}"
    );
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    ok(
        &cfg,
        &["get", "-r", "/c/photos", restored.to_str().unwrap()],
        None,
    );
    let got = restored.join("photos");
    assert_eq!(
        std::fs::read(got.join("2026/big.bin")).unwrap(),
        vec![7u8; 3 << 20]
    );
    assert_eq!(
        std::fs::read_to_string(got.join("2026/29.txt")).unwrap(),
        "photo 29"
    );
    assert!(got.join("2026/empty").is_dir());
    assert!(
        !tessera(&cfg, &["put", file.to_str().unwrap(), "-r", "/x"], None)
            .status
            .success()
    );

    // The trash: restored by path; emptied only when confirmed.
    ok(&cfg, &["rm", "/c/photos"], None);
    ok(&cfg, &["trash", "restore", "/c/photos"], None);
    assert!(ok(&cfg, &["ls", "/c"], None).contains("photos/"));
    ok(&cfg, &["rm", "/c/photos"], None);
    let out = tessera(&cfg, &["trash", "empty"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(ok(&cfg, &["trash"], None).contains("/c/photos"));
    ok(&cfg, &["trash", "empty", "--yes"], None);
    assert!(!ok(&cfg, &["trash"], None).contains("/c/photos"));
}

#[test]
fn the_server_listens_on_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let served = Serve::new(&dir.path().join("data"))
        .listen("localhost:0")
        .start();
    assert!(
        served.url().starts_with("http://127.0.0.1:"),
        "{}",
        served.url()
    );
    assert_eq!(http_get(&format!("{}/healthz", served.url())).0, 200);
}

/// Waits up to 20 s for `cond`, saying what did not happen.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "{what} did not happen"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_synced_folder_is_paused_resumed_restored_from_its_trash_and_unlinked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let server = serve_logged_in(dir.path(), &cfg);
    let folder = dir.path().join("A");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("one.txt"), "first").unwrap();
    let a = folder.to_str().unwrap();
    ok(&cfg, &["sync", a, "--once"], None);
    let log = dir.path().join("sync.log");
    let said = dir.path().join("sync.out");
    let daemon = command(
        &cfg,
        &[
            "sync",
            a,
            "--log-file",
            log.to_str().unwrap(),
            "--log-level",
            "info",
        ],
    )
    .stdout(std::fs::File::create(&said).unwrap())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut daemon = Killed(daemon);
    let on_server = |name: &str| ok(&cfg, &["ls", "/"], None).contains(name);
    let printed = |text: &str| std::fs::read_to_string(&said).unwrap().contains(text);
    eventually("the daemon starting", || printed("syncing"));

    // Paused: a change waits here; resumed, it goes.
    ok(&cfg, &["pause", a], None);
    eventually("the pause being heard", || printed("paused"));
    std::fs::write(folder.join("two.txt"), "second").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!on_server("two.txt"), "a paused folder sent a change");
    assert!(ok(&cfg, &["status", a], None).contains("is paused"));
    let out = tessera(&cfg, &["sync", a, "--once"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tessera resume"));
    ok(&cfg, &["resume", a], None);
    eventually("the change sent after resume", || on_server("two.txt"));

    // Deleted elsewhere: it goes to the local trash, and back by name.
    ok(&cfg, &["rm", "/one.txt"], None);
    eventually("the local copy trashed", || {
        !folder.join("one.txt").exists()
    });
    let trash = ok(&cfg, &["trash", "--local", a], None);
    assert!(trash.contains("one.txt"), "{trash}");
    ok(&cfg, &["trash", "--local", a, "restore", "one.txt"], None);
    assert_eq!(
        std::fs::read_to_string(folder.join("one.txt")).unwrap(),
        "first"
    );
    eventually("the restored file sent again", || on_server("one.txt"));

    // The log: timestamps and paths, no colour codes.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("two.txt"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with("20") && line.contains('T'),
        "a timestamp first: {line}"
    );

    // Unlink is refused while a sync runs there; then the files stay and
    // the server keeps everything.
    let out = tessera(&cfg, &["unlink", a], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"));
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();

    // Offline: status says what waits instead of failing.
    std::fs::write(folder.join("three.txt"), "third").unwrap();
    drop(server);
    let out = ok(&cfg, &["status", a], None);
    assert!(
        out.contains("offline") && out.contains("1 change waiting"),
        "{out}"
    );

    ok(&cfg, &["unlink", a], None);
    assert!(!folder.join(".tessera").exists());
    assert_eq!(
        std::fs::read_to_string(folder.join("two.txt")).unwrap(),
        "second"
    );
    let out = tessera(&cfg, &["status", a], None);
    assert!(!out.status.success());
}

#[test]
fn a_device_keeps_only_the_folders_selected_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let _server = serve_logged_in(dir.path(), &cfg);
    let src = dir.path().join("src.txt");
    for (path, text) in [
        ("/Work/a.txt", "work"),
        ("/Work/sub/b.txt", "deeper work"),
        ("/Photos/2025/old.jpg", "old"),
        ("/Photos/2026/new.jpg", "new"),
        ("/Music/song.mp3", "song"),
    ] {
        std::fs::write(&src, text).unwrap();
        ok(&cfg, &["put", src.to_str().unwrap(), path], None);
    }
    let b = dir.path().join("B");
    let bs = b.to_str().unwrap();
    ok(
        &cfg,
        &[
            "sync",
            bs,
            "--once",
            "--only",
            "/Work",
            "--only",
            "/Photos/2026",
        ],
        None,
    );
    assert!(b.join("Work/sub/b.txt").is_file());
    assert!(b.join("Photos/2026/new.jpg").is_file());
    assert!(!b.join("Photos/2025").exists() && !b.join("Music").exists());

    // Made here outside the selection: a new folder of one's own is
    // selected and sent; one where the server has an unselected folder
    // stays here and is explained.
    std::fs::create_dir_all(b.join("Notes")).unwrap();
    std::fs::write(b.join("Notes/n.txt"), "note").unwrap();
    std::fs::create_dir_all(b.join("Music")).unwrap();
    std::fs::write(b.join("Music/mine.txt"), "mine").unwrap();
    // Until then the folder is not wholly in sync, and each sync says why.
    let sync = || {
        let out = tessera(&cfg, &["sync", bs, "--once"], None);
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let told = sync();
    assert!(
        told.contains("/Music here is not synced") && told.contains("--add /Music"),
        "{told}"
    );
    assert!(ok(&cfg, &["ls", "/Notes"], None).contains("n.txt"));
    assert!(!ok(&cfg, &["ls", "/Music"], None).contains("mine.txt"));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&cfg, &["selective", bs, "--json"], None)).unwrap();
    assert_eq!(
        shown["only"],
        serde_json::json!(["/Notes", "/Photos/2026", "/Work"])
    );

    // A file moved here into that unselected folder is not deleted on the
    // server (the only live copy would be the one here, unsynced): it
    // stays there, comes back here, and the user is told how to move it.
    std::fs::rename(b.join("Work/a.txt"), b.join("Music/moved.txt")).unwrap();
    let told = sync();
    assert!(
        told.contains("/Work/a.txt was moved here to /Music/moved.txt")
            && told.contains("--add /Music"),
        "{told}"
    );
    assert!(ok(&cfg, &["ls", "/Work"], None).contains("a.txt"));
    sync();
    assert_eq!(
        std::fs::read_to_string(b.join("Work/a.txt")).unwrap(),
        "work"
    );
    // A deleted folder that a file was moved out of is kept whole (what
    // was moved with it may be empty or edited); a copy that was outside
    // before holds nothing back.
    std::fs::create_dir_all(b.join("Work/f")).unwrap();
    std::fs::write(b.join("Work/f/one.txt"), "one!").unwrap();
    std::fs::write(b.join("Work/f/two.txt"), "two!").unwrap();
    std::fs::write(b.join("Work/copy.txt"), "mine").unwrap();
    sync();
    std::fs::rename(b.join("Work/f/one.txt"), b.join("Music/one.txt")).unwrap();
    std::fs::remove_dir_all(b.join("Work/f")).unwrap();
    std::fs::remove_file(b.join("Work/copy.txt")).unwrap();
    let told = sync();
    assert!(told.contains("/Work/f/one.txt was moved here"), "{told}");
    let f = ok(&cfg, &["ls", "/Work/f"], None);
    assert!(f.contains("one.txt") && f.contains("two.txt"), "{f}");
    assert!(!ok(&cfg, &["ls", "/Work"], None).contains("copy.txt"));
    sync();
    assert_eq!(
        std::fs::read_to_string(b.join("Work/f/one.txt")).unwrap(),
        "one!"
    );
    assert!(b.join("Work/f/two.txt").is_file());
    // Held once: deleting what came back deletes it on the server.
    std::fs::remove_dir_all(b.join("Work/f")).unwrap();
    sync();
    assert!(!tessera(&cfg, &["ls", "/Work/f"], None).status.success());
    std::fs::remove_file(b.join("Music/one.txt")).unwrap();

    // A folder above the selection deleted here is not deleted on the
    // server (it holds /Photos/2025): it comes back.
    std::fs::remove_dir_all(b.join("Photos")).unwrap();
    let told = sync();
    assert!(told.contains("not synced to this device"), "{told}");
    assert!(ok(&cfg, &["ls", "/Photos/2025"], None).contains("old.jpg"));
    sync();
    assert!(b.join("Photos/2026/new.jpg").is_file(), "it came back");

    // Unselected: what was made here goes up first; then the copy here
    // goes to the local trash, and the server keeps it. A folder inside a
    // selected one is taken out level by level.
    std::fs::write(b.join("Photos/2026/fresh.jpg"), "made here").unwrap();
    let out = tessera(&cfg, &["selective", bs, "--remove", "/Nowhere"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing at /Nowhere"));
    ok(
        &cfg,
        &[
            "selective",
            bs,
            "--remove",
            "/Photos/2026",
            "--remove",
            "/Work/sub",
        ],
        None,
    );
    sync();
    assert!(
        ok(&cfg, &["ls", "/Photos/2026"], None).contains("fresh.jpg"),
        "a file made here before its folder was unselected reached the server"
    );
    assert!(!b.join("Photos").exists() && !b.join("Work/sub").exists());
    assert!(b.join("Work/a.txt").is_file());
    assert!(ok(&cfg, &["ls", "/Photos/2026"], None).contains("new.jpg"));
    assert!(ok(&cfg, &["ls", "/Work/sub"], None).contains("b.txt"));
    assert!(ok(&cfg, &["trash", "--local", bs], None).contains("Photos/2026/new.jpg"));
    // What appears later in a kept folder comes, though part of it is left out.
    std::fs::write(&src, "newer work").unwrap();
    ok(
        &cfg,
        &["put", src.to_str().unwrap(), "/Work/new/n.txt"],
        None,
    );
    sync();
    assert!(b.join("Work/new/n.txt").is_file());
    assert!(!b.join("Work/sub").exists());

    // A selected folder moved on the server: the selection follows it.
    ok(&cfg, &["mv", "/Work", "/Job"], None);
    sync();
    assert!(b.join("Job/a.txt").is_file() && !b.join("Work").exists());
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&cfg, &["selective", bs, "--json"], None)).unwrap();
    assert_eq!(
        shown["only"],
        serde_json::json!(["/Job", "/Notes"]),
        "{shown}"
    );
    assert_eq!(shown["except"], serde_json::json!(["/Job/sub"]), "{shown}");
    assert!(!b.join("Job/sub").exists());

    // Everything again: all comes down, and the local file in Music goes up.
    ok(&cfg, &["selective", bs, "--all"], None);
    ok(&cfg, &["sync", bs, "--once"], None);
    assert!(b.join("Photos/2025/old.jpg").is_file());
    assert!(b.join("Job/sub/b.txt").is_file());
    assert_eq!(
        std::fs::read_to_string(b.join("Music/song.mp3")).unwrap(),
        "song"
    );
    assert!(ok(&cfg, &["ls", "/Music"], None).contains("mine.txt"));
}

#[test]
fn a_synced_folder_keeps_its_bandwidth_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let _server = serve_logged_in(dir.path(), &cfg);
    let folder = dir.path().join("A");
    std::fs::create_dir_all(&folder).unwrap();
    let a = folder.to_str().unwrap();
    ok(&cfg, &["sync", a, "--once"], None);
    let out = tessera(&cfg, &["limits", a, "--up", "fast"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("like 2MB/s"));

    // 24 MB that does not compress, sent at 4 MB/s: whatever the blocks,
    // all but the largest (16 MiB at most) wait their turn at the rate.
    let data = crate::common::random_data(24_000_000, 7);
    std::fs::write(folder.join("big.bin"), &data).unwrap();
    let t = std::time::Instant::now();
    ok(&cfg, &["sync", a, "--once", "--limit-up", "4MB/s"], None);
    let took = t.elapsed();
    println!("24 MB up at a 4 MB/s limit took {took:?}");
    assert!(took >= std::time::Duration::from_millis(1500), "{took:?}");
    let shown = ok(&cfg, &["limits", a], None);
    assert!(
        shown.contains("up 4.0 MB/s") && shown.contains("down no limit"),
        "{shown}"
    );
    let shown = ok(
        &cfg,
        &["limits", a, "--up", "none", "--down", "10MB/s"],
        None,
    );
    assert!(
        shown.contains("up no limit") && shown.contains("down 10.0 MB/s"),
        "{shown}"
    );
}

/// Small files come down in streamed groups, whose length is not known
/// ahead: the download limit holds for them too.
#[test]
fn small_files_coming_down_keep_to_the_download_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let _server = serve_logged_in(dir.path(), &cfg);
    let a = dir.path().join("A");
    std::fs::create_dir_all(&a).unwrap();
    // 4 MB that does not compress, in 40 small files.
    for i in 0..40u64 {
        let data = crate::common::random_data(100_000, i);
        std::fs::write(a.join(format!("f{i}.bin")), data).unwrap();
    }
    ok(&cfg, &["sync", a.to_str().unwrap(), "--once"], None);
    let b = dir.path().join("B");
    std::fs::create_dir_all(&b).unwrap();
    let t = std::time::Instant::now();
    ok(
        &cfg,
        &[
            "sync",
            b.to_str().unwrap(),
            "--once",
            "--limit-down",
            "1MB/s",
        ],
        None,
    );
    let took = t.elapsed();
    println!("4 MB of small files down at a 1 MB/s limit took {took:?}");
    assert_eq!(
        std::fs::read_dir(&b).unwrap().count(),
        41,
        "40 files and the state"
    );
    assert!(took >= std::time::Duration::from_millis(2500), "{took:?}");
}

/// A limit changed while a large file goes up applies at once, not after
/// the upload: 60 MB at 1 MB/s would take a minute.
#[test]
fn a_limit_lifted_while_a_file_goes_up_applies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let _server = serve_logged_in(dir.path(), &cfg);
    let folder = dir.path().join("A");
    std::fs::create_dir_all(&folder).unwrap();
    let a = folder.to_str().unwrap();
    ok(&cfg, &["sync", a, "--once", "--limit-up", "1MB/s"], None);
    let said = dir.path().join("sync.out");
    let daemon = command(&cfg, &["sync", a])
        .stdout(std::fs::File::create(&said).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Killed(daemon);
    let printed = |text: &str| std::fs::read_to_string(&said).unwrap().contains(text);
    eventually("the daemon starting", || printed("syncing"));

    std::fs::write(
        folder.join("big.bin"),
        crate::common::random_data(60_000_000, 11),
    )
    .unwrap();
    let entry = || -> Option<serde_json::Value> {
        let out = tessera(&cfg, &["ls", "/big.bin", "--json"], None);
        serde_json::from_slice(&out.stdout).ok()
    };
    eventually("the upload under way", || {
        entry().is_some_and(|e| e["pending"] == true)
    });
    ok(&cfg, &["limits", a, "--up", "none"], None);
    eventually("the upload done soon after the limit went", || {
        entry().is_some_and(|e| e["pending"] != true && e["rev"].as_i64() >= Some(1))
    });
}

#[test]
fn an_admin_password_given_to_a_server_with_accounts_is_said_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Serve::new(&data).admin_password("first-secret-1").start();
    assert!(
        !first.banner.iter().any(|l| l.contains("not applied")),
        "{:?}",
        first.banner
    );
    drop(first);

    // Started again with another password: it says so, and the stored one
    // still signs in.
    let again = Serve::new(&data).admin_password("second-secret-2").start();
    assert!(
        again
            .banner
            .iter()
            .any(|l| l.contains("TESSERA_ADMIN_PASSWORD was not applied")),
        "{:?}",
        again.banner
    );
    let cfg = dir.path().join("cfg");
    let login = |password: &str| {
        tessera(
            &cfg,
            &[
                "login",
                "--server",
                &again.url(),
                "--user",
                "admin",
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        )
    };
    assert!(!login("second-secret-2").status.success());
    assert!(login("first-secret-1").status.success());
    drop(again);

    // The same password as stored, or none: nothing to say.
    for served in [
        Serve::new(&data).admin_password("first-secret-1").start(),
        Serve::new(&data).start(),
    ] {
        assert!(
            !served.banner.iter().any(|l| l.contains("not applied")),
            "{:?}",
            served.banner
        );
    }
}

#[test]
fn the_server_log_in_a_file_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("TESSERA_LOG", "info")
        .env("TESSERA_ADMIN_PASSWORD", "log-test-secret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("Tessera is listening on ")
                .map(str::to_owned)
        })
        .expect("the server started");
    // A failed sign-in is logged.
    let cfg = dir.path().join("cfg");
    let out = tessera(
        &cfg,
        &[
            "login",
            "--server",
            &url,
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some("wrong-password\n"),
    );
    assert!(!out.status.success());
    let _ = child.kill();
    let _ = child.wait();
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("failed login"), "{written}");
    assert!(!written.contains('\u{1b}'), "{written:?}");
}
