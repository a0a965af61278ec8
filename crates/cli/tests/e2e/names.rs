//! Names exactly as the user has them: the server keeps names NFC and
//! case-sensitive (as Linux does), on SQLite and PostgreSQL, and a database
//! made before this rule keeps its data when migrated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::process::{command, fresh_postgres, said};
use crate::common::{Backend, TestServer, names, no_progress};
use tessera_client::sync::Syncer;
use tessera_client::transfer::{download_file, upload_file};
use tessera_client::{ClientError, Remote};
use tessera_proto::ErrorCode;

on_both_backends!(
    names_differing_only_in_case_are_distinct,
    migration_keeps_data_and_allows_case_twins,
    linux_folder_with_case_twins_and_nfd_names_syncs_whole,
    skips_are_reported_once_and_the_folder_is_not_in_sync,
);

async fn put(s: &TestServer, r: &Remote, path: &str, data: &[u8]) -> tessera_proto::api::Entry {
    let local = s.scratch(&format!("up-{}", blake3::hash(path.as_bytes()).to_hex()));
    std::fs::write(&local, data).unwrap();
    upload_file(r, &local, path, None, no_progress())
        .await
        .expect("upload")
        .entry
}

async fn get(s: &TestServer, r: &Remote, path: &str) -> Result<Vec<u8>, ClientError> {
    let local = s.scratch("download.out");
    let _ = std::fs::remove_file(&local);
    download_file(r, path, None, &local, no_progress()).await?;
    Ok(std::fs::read(&local).unwrap())
}

async fn names_differing_only_in_case_are_distinct(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;

    // Two files of a Linux tree whose names differ only in case.
    let upper = put(&s, &r, "/include/xt_DSCP.h", b"target DSCP").await;
    let lower = put(&s, &r, "/include/xt_dscp.h", b"match dscp").await;
    assert_ne!(upper.id, lower.id, "two files, not two revisions of one");
    assert_eq!(lower.rev, Some(1));
    assert_eq!(names(&r, "/include").await, ["xt_DSCP.h", "xt_dscp.h"]);
    assert_eq!(
        get(&s, &r, "/include/xt_DSCP.h").await.unwrap(),
        b"target DSCP"
    );
    assert_eq!(
        get(&s, &r, "/include/xt_dscp.h").await.unwrap(),
        b"match dscp"
    );
    // A spelling that does not exist is not found, whatever its case.
    assert_eq!(
        r.meta("/include/XT_DSCP.H").await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );

    // Folders too; the same exact name is still taken.
    r.mkdir("/Docs").await.unwrap();
    r.mkdir("/docs").await.unwrap();
    assert_eq!(
        r.mkdir("/Docs").await.unwrap_err().code(),
        Some(ErrorCode::AlreadyExists)
    );
    put(&s, &r, "/Docs/Index.html", b"upper").await;
    put(&s, &r, "/Docs/index.html", b"lower").await;
    assert_eq!(names(&r, "/Docs").await, ["Index.html", "index.html"]);
    assert!(names(&r, "/docs").await.is_empty());

    // A case-only rename works, and a move onto the other twin is refused.
    r.move_to("/Docs/Index.html", "/Docs/INDEX.html")
        .await
        .unwrap();
    assert_eq!(names(&r, "/Docs").await, ["INDEX.html", "index.html"]);
    assert_eq!(
        r.move_to("/Docs/INDEX.html", "/Docs/index.html")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::AlreadyExists)
    );

    // A trashed name comes back beside its case twin.
    r.delete("/include/xt_dscp.h").await.unwrap();
    put(&s, &r, "/include/XT_dscp.h", b"third").await;
    let trashed = r.trash().await.unwrap().entries;
    assert_eq!(trashed.len(), 1);
    r.restore_from_trash(&trashed[0].id, None).await.unwrap();
    assert_eq!(
        names(&r, "/include").await,
        ["XT_dscp.h", "xt_DSCP.h", "xt_dscp.h"]
    );

    // NFC: the decomposed and composed spellings are one name.
    put(&s, &r, "/cafe\u{301}.txt", b"x").await;
    let e = r.meta("/caf\u{e9}.txt").await.unwrap();
    assert_eq!(e.name, "caf\u{e9}.txt");
    let again = put(&s, &r, "/caf\u{e9}.txt", b"y").await;
    assert_eq!(again.rev, Some(2), "the same file under either spelling");
}

/// A fresh database migrated up to `version` (inclusive) only.
async fn database_at(b: Backend, dir: &std::path::Path, version: i64) -> String {
    let (url, sub) = match b {
        Backend::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.join("old.db").display()),
            "sqlite",
        ),
        Backend::Postgres => (fresh_postgres().await, "postgres"),
    };
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/migrations")
        .join(sub);
    let mut migrator = sqlx::migrate::Migrator::new(migrations).await.unwrap();
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            for sql in old_tree_sql() {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            for sql in old_tree_sql() {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
    }
    url
}

/// A user whose tree was written under the old rule (keys folded to
/// lowercase): folders `/Photos/Summer`, and a trashed `/photos`.
fn old_tree_sql() -> Vec<String> {
    let hash = tessera_server::auth::hash_password("alice-password").unwrap();
    let ns = "(SELECT id FROM namespaces WHERE root_node_id = 'old-root')";
    let node = |id: &str, parent: &str, name: &str, deleted: &str| {
        let (deleted_ms, deleted_path) = if deleted.is_empty() {
            ("NULL".to_owned(), "NULL".to_owned())
        } else {
            ("2".to_owned(), format!("'{deleted}'"))
        };
        format!(
            "INSERT INTO nodes (namespace_id, id, parent_id, name, name_key, kind, modified_ms, deleted_ms, deleted_path) \
             VALUES ({ns}, '{id}', {parent}, '{name}', '{}', 'folder', 1, {deleted_ms}, {deleted_path})",
            name.to_lowercase()
        )
    };
    let stmts = [
        "INSERT INTO namespaces (root_node_id, journal_seq) VALUES ('old-root', 0)".to_owned(),
        format!(
            "INSERT INTO users (username, password_hash, root_ns, created_ms) VALUES ('alice', '{hash}', {ns}, 1)"
        ),
        "UPDATE namespaces SET owner_user_id = (SELECT id FROM users WHERE username = 'alice')"
            .to_owned(),
        node("old-root", "NULL", "", ""),
        node("photos", "'old-root'", "Photos", ""),
        node("summer", "'photos'", "Summer", ""),
        node("old", "'old-root'", "photos", "/photos"),
    ];
    stmts.to_vec()
}

async fn migration_keeps_data_and_allows_case_twins(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_at(b, dir.path(), 2).await;
    let config = tessera_server::Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        database: Some(url),
        ..tessera_server::Config::default()
    };
    let running = tessera_server::start(config)
        .await
        .expect("migrates and starts");
    let url = format!("http://{}", running.addr);
    let r = Remote::new(&url, None).unwrap();
    let token = r
        .login("alice", "alice-password", "laptop")
        .await
        .unwrap()
        .token;
    let r = r.with_token(token);

    // The old tree is all there, under its exact names.
    assert_eq!(names(&r, "/").await, ["Photos"]);
    assert_eq!(names(&r, "/Photos").await, ["Summer"]);
    assert_eq!(
        r.meta("/photos").await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    // Names that differ only in case are now both allowed, old and new.
    r.mkdir("/photos").await.unwrap();
    r.mkdir("/Photos/summer").await.unwrap();
    assert_eq!(names(&r, "/").await, ["Photos", "photos"]);
    assert_eq!(names(&r, "/Photos").await, ["Summer", "summer"]);
    assert_eq!(
        r.mkdir("/Photos/Summer").await.unwrap_err().code(),
        Some(ErrorCode::AlreadyExists)
    );
    // The trashed `/photos` cannot come back over the live one, but can
    // beside it.
    let trashed = r.trash().await.unwrap().entries;
    assert_eq!(trashed.len(), 1);
    assert_eq!(
        r.restore_from_trash(&trashed[0].id, None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::AlreadyExists)
    );
    r.delete("/photos").await.unwrap();
    r.restore_from_trash(&trashed[0].id, None).await.unwrap();
    assert_eq!(names(&r, "/").await, ["Photos", "photos"]);
    running.shutdown().await.unwrap();
}

// ---- the sync client ----

struct Device {
    dir: std::path::PathBuf,
    syncer: Syncer,
}

async fn device(s: &TestServer, name: &str) -> Device {
    let remote = s.login("alice", "alice-password", name).await;
    let dir = s.scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    let syncer = Syncer::open(&dir, remote, "alice", name).await.unwrap();
    Device { dir, syncer }
}

impl Device {
    /// One sync, which must leave nothing stuck or skipped.
    async fn sync(&mut self) {
        let r = self.syncer.sync_once().await.unwrap();
        assert!(r.stuck.is_empty(), "{}: {:?}", self.dir.display(), r.stuck);
        assert!(
            r.warnings.is_empty(),
            "{}: {:?}",
            self.dir.display(),
            r.warnings
        );
    }
    fn write(&self, rel: &str, data: &[u8]) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(rel)).unwrap()
    }
    /// The names in folder `rel`, as spelled on disk.
    fn names(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != ".tessera")
            .collect();
        names.sort();
        names
    }
}

const CAFE_NFD: &str = "Cafe\u{301}.txt";
const CAFE_NFC: &str = "Caf\u{e9}.txt";
const RESUME_NFD: &str = "Re\u{301}sume\u{301}";
const RESUME_NFC: &str = "R\u{e9}sum\u{e9}";

/// A Linux folder holding names that differ only in case and names in NFD
/// (as files copied from macOS are) syncs whole: the server keeps every
/// name (NFC), other devices get them all, and the first device keeps its
/// own spelling as changes come and go.
async fn linux_folder_with_case_twins_and_nfd_names_syncs_whole(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let mut a = device(&s, "linux").await;
    a.write("include/xt_DSCP.h", b"target DSCP");
    a.write("include/xt_dscp.h", b"match dscp");
    a.write("Docs/Index.html", b"upper");
    a.write("Docs/index.html", b"lower");
    a.write(CAFE_NFD, b"caf\xc3\xa9");
    a.write(&format!("{RESUME_NFD}/cv.txt"), b"cv");
    a.sync().await;

    assert_eq!(names(&r, "/include").await, ["xt_DSCP.h", "xt_dscp.h"]);
    assert_eq!(names(&r, "/Docs").await, ["Index.html", "index.html"]);
    assert_eq!(
        get(&s, &r, &format!("/{CAFE_NFC}")).await.unwrap(),
        "café".as_bytes()
    );
    assert_eq!(
        get(&s, &r, &format!("/{RESUME_NFC}/cv.txt")).await.unwrap(),
        b"cv"
    );

    let mut b2 = device(&s, "desktop").await;
    b2.sync().await;
    assert_eq!(b2.names("include"), ["xt_DSCP.h", "xt_dscp.h"]);
    assert_eq!(b2.read("include/xt_dscp.h"), b"match dscp");
    assert_eq!(b2.read("Docs/Index.html"), b"upper");
    assert_eq!(b2.read(CAFE_NFC), "café".as_bytes());
    assert_eq!(b2.read(&format!("{RESUME_NFC}/cv.txt")), b"cv");

    // Changes made elsewhere land in the first device's own spelling.
    b2.write(CAFE_NFC, b"edited");
    b2.write(&format!("{RESUME_NFC}/letter.txt"), b"letter");
    b2.sync().await;
    a.sync().await;
    a.sync().await;
    assert_eq!(a.read(CAFE_NFD), b"edited");
    assert_eq!(a.read(&format!("{RESUME_NFD}/letter.txt")), b"letter");
    let mut top = vec![
        CAFE_NFD.to_owned(),
        "Docs".into(),
        RESUME_NFD.to_owned(),
        "include".into(),
    ];
    top.sort();
    assert_eq!(a.names(""), top, "no second spelling appeared");

    // A deletion of the NFD file reaches the others.
    std::fs::remove_file(a.dir.join(CAFE_NFD)).unwrap();
    a.sync().await;
    b2.sync().await;
    assert!(!b2.dir.join(CAFE_NFC).exists());

    // A third device gets the same tree.
    let mut c = device(&s, "tablet").await;
    c.sync().await;
    assert_eq!(c.names("include"), ["xt_DSCP.h", "xt_dscp.h"]);
    assert_eq!(c.names(RESUME_NFC), ["cv.txt", "letter.txt"]);
}

/// A name that cannot be synced as it is (here two local spellings of one
/// NFC name) is reported once, not every round, and keeps the folder
/// from being called in sync: `sync --once` and `status` exit non-zero.
async fn skips_are_reported_once_and_the_folder_is_not_in_sync(b: Backend) {
    let s = TestServer::start(b).await;
    s.user("alice").await;
    let mut a = device(&s, "linux").await;
    a.write(CAFE_NFC, b"composed");
    a.write(CAFE_NFD, b"decomposed");
    let first = a.syncer.sync_once().await.unwrap();
    assert_eq!(first.warnings.len(), 1, "{:?}", first.warnings);
    assert!(first.warnings[0].contains(CAFE_NFD), "{:?}", first.warnings);
    let second = a.syncer.sync_once().await.unwrap();
    assert!(
        second.warnings.is_empty(),
        "reported again: {:?}",
        second.warnings
    );
    assert_eq!(second.skipped, first.warnings, "still skipped, and said so");
    let Device { dir, syncer } = a;
    syncer.close().await;

    // The binary, as a user runs it.
    let cfg = s.scratch("config");
    std::fs::create_dir_all(&cfg).unwrap();
    let anon = Remote::new(&s.url, None).unwrap();
    let token = anon
        .login("alice", "alice-password", "cli")
        .await
        .unwrap()
        .token;
    let profile = serde_json::json!({
        "server": s.url, "username": "alice", "device": "cli", "token": token,
    });
    std::fs::write(cfg.join("profile.json"), profile.to_string()).unwrap();
    let run = |args: &[&str]| {
        let out = command(&cfg, args).arg(&dir).output().unwrap();
        let text = said(&out);
        (out.status.success(), text)
    };
    let (ok, text) = run(&["sync", "--once"]);
    assert!(!ok, "sync --once succeeded with a name skipped: {text}");
    assert!(!text.contains("is in sync"), "{text}");
    assert!(text.contains(CAFE_NFD), "says what is skipped: {text}");
    let (ok, text) = run(&["status"]);
    assert!(!ok, "status succeeded with a name skipped: {text}");
    assert!(!text.contains("is in sync"), "{text}");
    assert!(text.contains(CAFE_NFD), "says what is skipped: {text}");
}

/// The daemon's default log carries no chatter from its dependencies: the
/// file watcher says "unable to remove watch descriptor" at INFO for every
/// folder removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_chatter_stays_out_of_the_default_log() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = s.user("alice").await;
    let cfg = s.scratch("config");
    std::fs::create_dir_all(&cfg).unwrap();
    let token = Remote::new(&s.url, None)
        .unwrap()
        .login("alice", "alice-password", "daemon")
        .await
        .unwrap()
        .token;
    let profile = serde_json::json!({
        "server": s.url, "username": "alice", "device": "daemon", "token": token,
    });
    std::fs::write(cfg.join("profile.json"), profile.to_string()).unwrap();
    let dir = s.scratch("folder");
    for sub in ["one", "two", "three"] {
        std::fs::create_dir_all(dir.join(sub).join("inner")).unwrap();
        std::fs::write(dir.join(sub).join("inner/f.txt"), sub).unwrap();
    }
    let log = s.scratch("daemon.log");
    let mut child = command(&cfg, &["sync"])
        .arg(&dir)
        .env_remove("TESSERA_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let until = |what: &'static str, f: &'static str, gone: bool| {
        let r = r.clone();
        async move {
            for _ in 0..200 {
                if r.meta(f).await.is_err() == gone {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("{what} did not happen within 10 s");
        }
    };
    until("the first sync", "/three/inner/f.txt", false).await;
    for sub in ["one", "two", "three"] {
        std::fs::remove_dir_all(dir.join(sub)).unwrap();
    }
    until("the deletion", "/three", true).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("watch descriptor"),
        "the default log carries the watcher's chatter:\n{text}"
    );
}
