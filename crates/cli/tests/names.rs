//! Names exactly as the user has them: the server keeps names NFC and
//! case-sensitive (as Linux does), on SQLite and PostgreSQL, and a database
//! made before this rule keeps its data when migrated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestServer, no_progress};
use tessera_client::transfer::{download_file, upload_file};
use tessera_client::{ClientError, Remote};
use tessera_proto::ErrorCode;

on_both_backends!(
    names_differing_only_in_case_are_distinct,
    migration_keeps_data_and_allows_case_twins,
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

async fn names(r: &Remote, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = r
        .list(dir)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names
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

/// A new, empty database on the test cluster.
async fn fresh_postgres() -> String {
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
