//! The backup of docs/OPERATIONS.md, done to a serving installation and
//! restored: the database snapshot first (SQLite's `VACUUM INTO`, or
//! `pg_dump`), then the blocks and the master key, while files keep
//! changing and collection runs. The restored installation serves every
//! file as it was at the snapshot, and fsck finds nothing wrong.
//! SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crate::common::process::{command, finish_async, fresh_postgres, said};
use crate::common::{Backend, StoreView, TestServer, names, random_data, test_store_url};
use tessera_client::Remote;

on_both_backends!(a_backup_of_a_serving_installation_restores);

/// Where the blocks of an installation in `data` live: the folder in it,
/// or on an S3 run a prefix of the bucket.
fn blocks_of(data: &Path) -> (Option<String>, StoreView) {
    let url = test_store_url(data);
    let view = match &url {
        Some(url) => StoreView::of_url(url),
        None => StoreView::Folder(data.join("blocks")),
    };
    (url, view)
}

/// Copies every object (`rsync -a`, or a copy of the bucket's prefix).
async fn copy_store(from: &StoreView, to: &StoreView) {
    for name in from.objects().await {
        to.write(&name, &from.read(&name).await).await;
    }
}

fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn a_backup_of_a_serving_installation_restores(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let mut kept = Vec::new();
    for i in 0..5 {
        let path = format!("/doc{i}.bin");
        let data = random_data(50_000 + 200_000 * i, 40 + i as u64);
        alice
            .upload(&path, None, reqwest::Body::from(data.clone()))
            .await
            .unwrap();
        kept.push((path, data));
    }
    let backup = s.scratch("backup");
    std::fs::create_dir_all(&backup).unwrap();

    // 1. The database, as one consistent snapshot.
    match &s.config.database {
        None => {
            let live = format!("sqlite://{}", s.data_dir().join("meta.db").display());
            let pool = sqlx::SqlitePool::connect(&live).await.unwrap();
            let into = format!("VACUUM INTO '{}'", backup.join("meta.db").display());
            sqlx::query(sqlx::AssertSqlSafe(into))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Some(url) => {
            let dump = backup.join("tessera.dump");
            run(
                "pg_dump",
                &["--format=custom", "--file", dump.to_str().unwrap(), url],
            );
        }
    }
    // Meanwhile the installation goes on: a new file, a file deleted and
    // purged, and collection (whose grace outlasts the copy).
    alice
        .upload(
            "/after.bin",
            None,
            reqwest::Body::from(random_data(300_000, 99)),
        )
        .await
        .unwrap();
    alice.delete("/doc1.bin").await.unwrap();
    alice.purge_trash(None).await.unwrap();
    s.login("admin", &s.admin_password, "console")
        .await
        .run_worker("gc")
        .await
        .unwrap();

    // 2. The blocks, then the master key.
    let (_, backup_blocks) = blocks_of(&backup);
    copy_store(&s.store, &backup_blocks).await;
    std::fs::copy(s.data_dir().join("master.key"), backup.join("master.key")).unwrap();

    // Restore into a new data folder (and a new database).
    let restored = s.scratch("restored");
    std::fs::create_dir_all(&restored).unwrap();
    let (store, restored_blocks) = blocks_of(&restored);
    copy_store(&backup_blocks, &restored_blocks).await;
    std::fs::copy(backup.join("master.key"), restored.join("master.key")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&restored, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = restored.join("master.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let database = match &s.config.database {
        None => {
            std::fs::copy(backup.join("meta.db"), restored.join("meta.db")).unwrap();
            None
        }
        Some(_) => {
            let url = fresh_postgres().await;
            let dump = backup.join("tessera.dump");
            run(
                "pg_restore",
                &["--no-owner", "--dbname", &url, dump.to_str().unwrap()],
            );
            Some(url)
        }
    };
    let config = tessera_server::Config {
        data_dir: restored.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        database: database.clone(),
        store: store.clone(),
        ..tessera_server::Config::default()
    };
    let again = tessera_server::start(config).await.unwrap();
    let url = format!("http://{}", again.addr);
    let anon = Remote::new(&url, None).unwrap();
    let token = anon
        .login("alice", "alice-password", "laptop")
        .await
        .unwrap()
        .token;
    let alice = anon.with_token(token);
    for (path, data) in &kept {
        let got = alice
            .download(path, None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(got[..] == data[..], "{path} is restored as it was");
    }
    let names = names(&alice, "/").await;
    assert!(!names.contains(&"after.bin".to_owned()), "{names:?}");

    let mut args = vec!["admin", "fsck", "--data-dir", restored.to_str().unwrap()];
    if let Some(db) = &database {
        args.extend(["--database", db.as_str()]);
    }
    if let Some(store) = &store {
        args.extend(["--store", store.as_str()]);
    }
    let out = finish_async(command(&s.scratch("cfg"), &args), None).await;
    assert!(out.status.success(), "{}", said(&out));
    again.shutdown().await.unwrap();
}
