//! Quotas: usage follows every change in its own transaction, an upload
//! over the quota is refused with 507 `quota_exceeded` before anything is
//! stored (simple PUT, TUS creation, the block protocol), old revisions
//! make room first (oldest unpinned first), and only administrators set
//! quotas, over the API and `tessera admin quota`. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use reqwest::Method;

use crate::common::process::{command, finish_async, said};
use crate::common::{Backend, TestServer, names, no_progress, random_data};
use tessera_client::{ClientError, Remote};
use tessera_proto::ErrorCode;

on_both_backends!(
    a_restore_at_the_quota_makes_room_from_older_revisions,
    open_resumable_uploads_count_against_the_quota,
    usage_follows_every_change,
    an_upload_over_the_quota_is_refused_and_stores_nothing,
    old_revisions_make_room_before_a_refusal,
    only_administrators_set_quotas,
);

async fn admin(s: &TestServer) -> Remote {
    s.login("admin", &s.admin_password, "console").await
}

async fn put(r: &Remote, path: &str, data: &[u8]) -> Result<(), ClientError> {
    r.upload(path, None, reqwest::Body::from(data.to_vec()))
        .await
        .map(|_| ())
}

async fn used(r: &Remote) -> u64 {
    r.usage().await.unwrap().used_bytes
}

fn is_over_quota(e: &ClientError) -> bool {
    e.status() == Some(507) && e.code() == Some(ErrorCode::QuotaExceeded)
}

/// Making room never takes the revision the change itself writes: a
/// restore at the limit makes room from the revision it replaces, and the
/// file reads back as restored.
async fn a_restore_at_the_quota_makes_room_from_older_revisions(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let v1 = random_data(300_000, 1);
    let v2 = random_data(300_000, 2);
    put(&alice, "/doc", &v1).await.unwrap();
    put(&alice, "/doc", &v2).await.unwrap();
    let revs: Vec<i64> = alice
        .revisions("/doc")
        .await
        .unwrap()
        .revisions
        .iter()
        .map(|r| r.rev)
        .collect();
    let (first, second) = (revs[1], revs[0]);
    alice.pin("/doc", first, true).await.unwrap();
    admin(&s)
        .await
        .set_quota("alice", Some(600_000))
        .await
        .unwrap();
    let restored = alice.restore("/doc", first).await.unwrap();
    let got = alice
        .download("/doc", None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got[..] == v1[..], "the file reads back as restored");
    let mut left: Vec<i64> = alice
        .revisions("/doc")
        .await
        .unwrap()
        .revisions
        .iter()
        .map(|r| r.rev)
        .collect();
    left.sort();
    assert_eq!(
        left,
        [first, restored.rev.unwrap()],
        "the replaced {second} made room"
    );
    assert_eq!(used(&alice).await, 600_000);
}

/// Sessions left open cannot together store more than the quota.
async fn open_resumable_uploads_count_against_the_quota(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    admin(&s)
        .await
        .set_quota("alice", Some(1_000_000))
        .await
        .unwrap();
    let create = |name: &str| {
        let meta = format!(
            "path {}",
            base64::engine::general_purpose::STANDARD.encode(name)
        );
        alice
            .request(Method::POST, "/tus/")
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "600000")
            .header("Upload-Metadata", meta)
            .send()
    };
    assert_eq!(create("/one.bin").await.unwrap().status().as_u16(), 201);
    assert_eq!(
        create("/two.bin").await.unwrap().status().as_u16(),
        507,
        "the first session's length is taken"
    );
}

async fn usage_follows_every_change(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    assert_eq!(used(&alice).await, 0);
    put(&alice, "/a.bin", &random_data(100_000, 1))
        .await
        .unwrap();
    assert_eq!(used(&alice).await, 100_000);
    // A new version: the old one is kept, and counts.
    put(&alice, "/a.bin", &random_data(50_000, 2))
        .await
        .unwrap();
    assert_eq!(used(&alice).await, 150_000);
    // The same bytes again make no revision.
    put(&alice, "/a.bin", &random_data(50_000, 2))
        .await
        .unwrap();
    assert_eq!(used(&alice).await, 150_000);
    let first = alice.revisions("/a.bin").await.unwrap().revisions;
    let oldest = first.iter().map(|r| r.rev).min().unwrap();
    alice.restore("/a.bin", oldest).await.unwrap();
    assert_eq!(used(&alice).await, 250_000);
    alice.mkdir("/d").await.unwrap();
    alice.move_to("/a.bin", "/d/a.bin").await.unwrap();
    assert_eq!(used(&alice).await, 250_000, "a move changes nothing");
    // The trash counts until it is emptied.
    alice.delete("/d").await.unwrap();
    assert_eq!(used(&alice).await, 250_000);
    alice.purge_trash(None).await.unwrap();
    assert_eq!(used(&alice).await, 0);
    // Another user's usage is their own.
    let bob = s.user("bob").await;
    put(&bob, "/b.bin", &random_data(70_000, 3)).await.unwrap();
    assert_eq!((used(&alice).await, used(&bob).await), (0, 70_000));
}

async fn an_upload_over_the_quota_is_refused_and_stores_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    admin(&s)
        .await
        .set_quota("alice", Some(1_000_000))
        .await
        .unwrap();
    put(&alice, "/a.bin", &random_data(600_000, 1))
        .await
        .unwrap();
    let stored = s.store_bytes().await;

    // Simple upload.
    let err = put(&alice, "/b.bin", &random_data(600_000, 2))
        .await
        .unwrap_err();
    assert!(is_over_quota(&err), "{err}");
    assert_eq!(
        s.store_bytes().await,
        stored,
        "the simple upload stored nothing"
    );
    let text = err.to_string();
    assert!(
        text.contains("600000") && text.contains("1000000"),
        "the message has the numbers: {text}"
    );
    // Resumable upload: refused at creation, from the declared length.
    let name = base64::engine::general_purpose::STANDARD.encode("/c.bin");
    let resp = alice
        .request(Method::POST, "/tus/")
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "600000")
        .header("Upload-Metadata", format!("path {name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 507);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert_eq!(
        s.store_bytes().await,
        stored,
        "the resumable upload stored nothing"
    );
    // The block protocol: refused before any block is sent.
    let local = s.scratch("d.bin");
    std::fs::write(&local, random_data(600_000, 4)).unwrap();
    let err = tessera_client::transfer::upload_file(&alice, &local, "/d.bin", None, no_progress())
        .await
        .unwrap_err();
    assert!(is_over_quota(&err), "{err}");

    assert_eq!(s.store_bytes().await, stored, "nothing was stored");
    assert_eq!(names(&alice, "/").await, ["a.bin"]);
    assert_eq!(used(&alice).await, 600_000);
    // What fits still goes in.
    put(&alice, "/small.bin", &random_data(300_000, 5))
        .await
        .unwrap();
}

async fn old_revisions_make_room_before_a_refusal(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    admin(&s)
        .await
        .set_quota("alice", Some(1_000_000))
        .await
        .unwrap();
    put(&alice, "/doc", &random_data(300_000, 1)).await.unwrap();
    put(&alice, "/doc", &random_data(300_000, 2)).await.unwrap();
    put(&alice, "/doc", &random_data(300_000, 3)).await.unwrap();
    assert_eq!(used(&alice).await, 900_000);
    let revs: Vec<i64> = alice
        .revisions("/doc")
        .await
        .unwrap()
        .revisions
        .iter()
        .map(|r| r.rev)
        .collect();
    let (oldest, middle) = (revs[2], revs[1]);
    alice.pin("/doc", middle, true).await.unwrap();

    // 300 kB more: the oldest unpinned old revision goes to make room.
    put(&alice, "/new", &random_data(300_000, 4)).await.unwrap();
    assert_eq!(used(&alice).await, 900_000);
    let left: Vec<i64> = alice
        .revisions("/doc")
        .await
        .unwrap()
        .revisions
        .iter()
        .map(|r| r.rev)
        .collect();
    assert!(
        !left.contains(&oldest) && left.contains(&middle),
        "{left:?}"
    );

    // Only current files and a pinned revision are left: refused.
    let err = put(&alice, "/more", &random_data(300_000, 5))
        .await
        .unwrap_err();
    assert!(is_over_quota(&err), "{err}");
    assert_eq!(alice.revisions("/doc").await.unwrap().revisions.len(), 2);
}

async fn only_administrators_set_quotas(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let err = alice.set_quota("alice", None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(alice.quota("alice").await.unwrap_err().status(), Some(403));
    let anon = Remote::new(&s.url, None).unwrap();
    assert_eq!(anon.quota("alice").await.unwrap_err().status(), Some(401));
    let err = admin(&s).await.quota("nobody").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");

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
    let set = command(&cfg, &["admin", "quota", "set", "alice", "50GiB"]);
    let out = finish_async(set, None).await;
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(
        alice.usage().await.unwrap().quota_bytes,
        Some(50 << 30),
        "{}",
        said(&out)
    );
    let out = finish_async(command(&cfg, &["admin", "quota", "show", "alice"]), None).await;
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("alice: 0 B of 50.0 GiB used"), "{shown}");
    let out = finish_async(
        command(&cfg, &["admin", "quota", "set", "alice", "0"]),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(alice.usage().await.unwrap().quota_bytes, None);
    let out = finish_async(
        command(&cfg, &["admin", "quota", "set", "alice", "lots"]),
        None,
    )
    .await;
    assert!(!out.status.success(), "a size it cannot read is refused");
    let out = finish_async(command(&cfg, &["usage"]), None).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("admin: 0 B used, no quota"),
        "{}",
        said(&out)
    );
}
