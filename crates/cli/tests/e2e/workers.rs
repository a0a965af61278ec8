//! The background workers seen from outside: their status and run-now
//! over the admin API and `tessera admin workers`, for administrators only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common::process::{command, finish_async, said};
use crate::common::{Backend, TestServer};
use tessera_client::Remote;
use tessera_client::remote::WorkerState;
use tessera_proto::ErrorCode;

on_both_backends!(
    administrators_see_the_workers,
    others_are_refused,
    run_now_expires_the_trash_at_once,
    the_cli_shows_and_runs_workers,
);

/// A day: no worker runs on its own during a test.
const LONG_TTL: u64 = 24 * 3600;

async fn start(b: Backend) -> TestServer {
    TestServer::start_with(b, |c| {
        c.pending_ttl_secs = LONG_TTL;
        c.trash_ttl_secs = LONG_TTL;
    })
    .await
}

async fn admin(s: &TestServer) -> Remote {
    s.login("admin", &s.admin_password, "laptop").await
}

async fn administrators_see_the_workers(b: Backend) {
    let s = start(b).await;
    let list = admin(&s).await.workers().await.unwrap();
    let names: Vec<&str> = list.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gc",
            "pending",
            "recompress",
            "retention",
            "scrub",
            "trash",
            "uploads"
        ]
    );
    for w in &list {
        assert_eq!(w.state, WorkerState::Idle, "{w:?}");
        assert_eq!(
            (w.runs, w.last_run_ms, w.last_error.as_deref()),
            (0, None, None)
        );
        assert!(w.next_run_ms.is_some(), "{w:?}");
    }
    let ran = admin(&s).await.run_worker("pending").await.unwrap();
    assert_eq!(
        (ran.name.as_str(), ran.runs, ran.state),
        ("pending", 1, WorkerState::Idle)
    );
    assert!(ran.last_run_ms.is_some());
}

async fn others_are_refused(b: Backend) {
    let s = start(b).await;
    let alice = s.user("alice").await;
    for err in [
        alice.workers().await.unwrap_err(),
        alice.run_worker("trash").await.unwrap_err(),
    ] {
        assert_eq!(err.status(), Some(403), "{err}");
        assert!(err.to_string().contains("not an administrator"), "{err}");
    }
    let anon = Remote::new(&s.url, None).unwrap();
    assert_eq!(anon.workers().await.unwrap_err().status(), Some(401));
    assert_eq!(
        anon.run_worker("trash").await.unwrap_err().status(),
        Some(401)
    );
    let err = admin(&s).await.run_worker("compost").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    assert!(
        err.to_string()
            .contains("gc, pending, recompress, retention, scrub, trash, uploads"),
        "names the workers there are: {err}"
    );
}

async fn run_now_expires_the_trash_at_once(b: Backend) {
    let s = start(b).await;
    let alice = s.user("alice").await;
    alice.mkdir("/old").await.unwrap();
    alice.delete("/old").await.unwrap();
    let admin = admin(&s).await;
    // Not old enough yet: the step removes nothing.
    let ran = admin.run_worker("trash").await.unwrap();
    assert_eq!((ran.runs, ran.last_done), (1, 0));
    assert_eq!(alice.trash().await.unwrap().entries.len(), 1);
    s.config.clock.advance(Duration::from_secs(LONG_TTL + 1));
    let ran = admin.run_worker("trash").await.unwrap();
    assert_eq!((ran.runs, ran.last_done), (2, 1));
    assert!(alice.trash().await.unwrap().entries.is_empty());
}

async fn the_cli_shows_and_runs_workers(b: Backend) {
    let s = start(b).await;
    let cfg = s.scratch("cfg");
    let login = command(
        &cfg,
        &[
            "login",
            "--server",
            &s.url,
            "--user",
            "admin",
            "--password-stdin",
        ],
    );
    let out = finish_async(login, Some(&format!("{}\n", s.admin_password))).await;
    assert!(out.status.success(), "{}", said(&out));

    let out = finish_async(command(&cfg, &["admin", "workers"]), None).await;
    assert!(out.status.success(), "{}", said(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 8, "{table}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LAST ERROR"),
        "{table}"
    );
    assert!(
        lines[6].starts_with("trash") && lines[6].contains("never"),
        "{table}"
    );

    let out = finish_async(command(&cfg, &["admin", "workers", "run", "trash"]), None).await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains(" ago"), "{}", said(&out));
    let out = finish_async(command(&cfg, &["admin", "workers", "--json"]), None).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[5]["name"], "trash", "{json}");
    assert_eq!(json[5]["runs"], 1, "{json}");

    let out = finish_async(command(&cfg, &["admin", "workers", "run", "compost"]), None).await;
    assert!(!out.status.success());
    assert!(
        said(&out).contains("gc, pending, recompress, retention, scrub, trash, uploads"),
        "{}",
        said(&out)
    );

    // A user added with --admin may see them too; one added without may not.
    for (name, flag) in [("bob", true), ("carol", false)] {
        let data = s.data_dir();
        let mut args = vec!["admin", "user", "add", name, "--password-stdin"];
        args.extend(["--data-dir", data.to_str().unwrap()]);
        if let Some(db) = &s.config.database {
            args.extend(["--database", db]);
        }
        if flag {
            args.push("--admin");
        }
        let out = finish_async(command(&cfg, &args), Some("a-long-password\n")).await;
        assert!(out.status.success(), "{}", said(&out));
        let r = s.login(name, "a-long-password", "laptop").await;
        match r.workers().await {
            Ok(list) => assert!(flag, "{name} sees {list:?}"),
            Err(e) => assert!(!flag && e.status() == Some(403), "{name}: {e}"),
        }
    }
}
