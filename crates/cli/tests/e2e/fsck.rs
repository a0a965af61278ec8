//! `tessera admin fsck` against a serving installation: clean when all is
//! well; a damaged object (naming the file and revision that use it), a
//! wrong reference count and an object nobody names are found (non-zero
//! exit); `--repair` fixes what can be fixed and says what it cannot; a new
//! upload of the damaged bytes makes the store clean again. A download of
//! the damaged file fails rather than returning wrong bytes. SQLite and
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::Duration;

use crate::common::process::{command, finish_async, said};
use crate::common::{Backend, TestServer, random_data};

on_both_backends!(fsck_finds_and_repairs_what_is_wrong);

/// Runs `tessera admin fsck` on the installation of `s`.
pub(crate) async fn fsck(s: &TestServer, extra: &[&str]) -> Output {
    let install = s.install_args();
    let mut args = vec!["admin", "fsck"];
    args.extend(install.iter().map(String::as_str));
    args.extend(extra);
    finish_async(command(&s.scratch("cfg"), &args), None).await
}

/// Runs one statement on the server's database directly.
async fn raw(s: &TestServer, sql: &'static str) {
    match &s.config.database {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let url = format!("sqlite://{}", s.data_dir().join("meta.db").display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

async fn fsck_finds_and_repairs_what_is_wrong(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let big = random_data(1 << 20, 1);
    alice
        .upload("/a.bin", None, reqwest::Body::from(big.clone()))
        .await
        .unwrap();
    let out = fsck(&s, &[]).await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("no problems found"), "{}", said(&out));

    // Damage: one stored block of /a.bin, one wrong count, one object a
    // crash left two hours ago.
    let objects = s.store_objects().await;
    let victim = objects
        .iter()
        .find(|name| name.starts_with("blocks/"))
        .unwrap()
        .clone();
    let mid = s.store.read(&victim).await.len() / 2;
    s.store.flip(&victim, mid, 0x40).await;
    raw(
        &s,
        "UPDATE blocks SET refcount = refcount + 5 WHERE id = (SELECT id FROM blocks ORDER BY id LIMIT 1)",
    )
    .await;
    let (dir, _) = victim.rsplit_once('/').unwrap();
    let orphan = format!("{dir}/left-by-a-crash");
    s.store.write(&orphan, b"nobody names me").await;
    // An S3 object cannot be dated back: there it is too young to judge.
    let old = s.store.backdate(&orphan, Duration::from_secs(7200));

    let out = fsck(&s, &[]).await;
    let text = said(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("1 damaged or missing blocks"), "{text}");
    assert!(
        text.contains("alice /a.bin rev 1"),
        "names the file: {text}"
    );
    assert!(text.contains("1 wrong reference counts"), "{text}");
    if old {
        assert!(text.contains("1 stored objects"), "{text}");
    } else {
        assert!(text.contains("1 recent objects not judged"), "{text}");
    }
    assert!(text.contains("run with --repair"), "{text}");

    // Never wrong bytes: the download fails.
    let got = match alice.download("/a.bin", None).await {
        Ok(resp) => resp.bytes().await.map(|b| b.to_vec()).ok(),
        Err(_) => None,
    };
    assert_ne!(got.as_deref(), Some(&big[..]), "the damage is not hidden");
    if let Some(got) = got {
        assert!(got.len() < big.len(), "a download stops at the damage");
    }

    let out = fsck(&s, &["--repair"]).await;
    let text = said(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("[fixed]"), "{text}");
    assert!(text.contains("[marked damaged]"), "{text}");
    assert_eq!(text.contains("handed to collection"), old, "{text}");
    assert!(text.contains("not fixed: 1 block(s)"), "{text}");

    // What repair fixed stays fixed; the lost block waits for its bytes.
    let out = fsck(&s, &[]).await;
    let text = said(&out);
    assert!(!text.contains("wrong reference counts"), "{text}");
    assert!(!text.contains("objects ("), "{text}");
    assert!(text.contains("1 damaged or missing blocks"), "{text}");

    // The same bytes uploaded again repair it.
    alice
        .upload("/again.bin", None, reqwest::Body::from(big.clone()))
        .await
        .unwrap();
    let back = alice
        .download("/a.bin", None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&back[..], &big[..]);
    // The replaced copy is removed after the answer.
    for _ in 0..100 {
        if !s.store.exists(&victim).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = fsck(&s, &[]).await;
    assert!(out.status.success(), "{}", said(&out));
}
