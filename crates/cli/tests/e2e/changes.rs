//! The change journal and long polling, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::common::{Backend, TestServer};
use tessera_proto::api::ChangeKind;
use tessera_proto::api::{BlockCodec, BlockRef, CommitRequest};
use tessera_proto::block::CHUNKER;
use tessera_proto::{BlockId, ContentHash, ErrorCode};

on_both_backends!(
    journal_lists_every_change_in_order,
    poll_wakes_on_change_and_times_out,
    uploads_under_way_show_as_pending_then_expire,
    every_kind_of_change_wakes_a_poll,
);

async fn journal_lists_every_change_in_order(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let empty = r.changes(None, None).await.unwrap();
    assert!(empty.changes.is_empty() && !empty.has_more);
    r.upload("/a/b.txt", None, reqwest::Body::from("one"))
        .await
        .unwrap();
    r.upload("/a/b.txt", None, reqwest::Body::from("two"))
        .await
        .unwrap();
    r.move_to("/a/b.txt", "/a/c.txt").await.unwrap();
    r.restore("/a/c.txt", 1).await.unwrap();
    r.delete("/a").await.unwrap();
    let all = r.changes(None, None).await.unwrap();
    let kinds: Vec<ChangeKind> = all.changes.iter().map(|c| c.kind).collect();
    use ChangeKind::*;
    assert_eq!(kinds, vec![Mkdir, Commit, Commit, Move, Restore, Delete]);
    let seqs: Vec<i64> = all.changes.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        (1..=6).collect::<Vec<_>>(),
        "gap-free sequence numbers"
    );
    assert_eq!(all.changes[3].old_path.as_deref(), Some("/a/b.txt"));
    assert_eq!(all.changes[3].path, "/a/c.txt");
    assert_eq!(all.changes[4].rev, Some(3));
    assert!(all.changes.iter().all(|c| c.device == "laptop"));
    // Paging from a cursor.
    let page1 = r.changes(None, Some(4)).await.unwrap();
    assert_eq!(page1.changes.len(), 4);
    assert!(page1.has_more);
    let page2 = r.changes(Some(&page1.cursor), Some(4)).await.unwrap();
    assert_eq!(
        page2.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert!(!page2.has_more);
    assert!(
        r.changes(Some(&page2.cursor), None)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
    assert_eq!(r.latest_cursor().await.unwrap(), page2.cursor);
    // A failed change leaves no journal entry.
    assert!(r.move_to("/nope", "/x").await.is_err());
    assert!(
        r.changes(Some(&page2.cursor), None)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
    // Bad and foreign cursors are refused.
    let err = r.changes(Some("garbage"), None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    let bob = s.user("bob").await;
    let err = bob.changes(Some(&page2.cursor), None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
}

async fn poll_wakes_on_change_and_times_out(b: Backend) {
    let s = TestServer::start(b).await;
    let phone = s.user("alice").await;
    let laptop = s.login("alice", "alice-password", "desk").await;
    let cursor = phone.latest_cursor().await.unwrap();

    // Nothing happens: the poll ends after its timeout with no news.
    let t = Instant::now();
    let idle = phone.poll(&cursor, 1).await.unwrap();
    assert!(!idle.changes);
    assert!(t.elapsed() >= Duration::from_secs(1));

    // A change by another device wakes a waiting poll.
    let waiter = {
        let phone = phone.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = phone.poll(&cursor, 30).await.unwrap();
            (r, t.elapsed())
        })
    };
    until_held(&laptop, 1).await;
    let online = laptop.presence().await.unwrap();
    assert_eq!(online.devices.len(), 1, "the polling phone is present");
    assert_eq!(online.devices[0].device, "laptop");
    laptop
        .upload("/new.txt", None, reqwest::Body::from("hi"))
        .await
        .unwrap();
    let (resp, waited) = waiter.await.unwrap();
    assert!(resp.changes);
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    println!("poll woke {waited:?} after it started");
    assert!(
        laptop.presence().await.unwrap().devices.is_empty(),
        "presence ends with the poll"
    );

    // Behind already: answers at once.
    let t = Instant::now();
    assert!(phone.poll(&cursor, 30).await.unwrap().changes);
    assert!(t.elapsed() < Duration::from_secs(2));

    // Shutdown ends a waiting poll promptly, with a backoff hint.
    let latest = phone.latest_cursor().await.unwrap();
    let waiter = {
        let phone = phone.clone();
        tokio::spawn(async move { phone.poll(&latest, 60).await })
    };
    until_held(&laptop, 1).await;
    let t = Instant::now();
    s.running.shutdown().await.unwrap();
    let resp = waiter.await.unwrap().unwrap();
    assert!(!resp.changes);
    assert!(resp.backoff.is_some());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
}

async fn uploads_under_way_show_as_pending_then_expire(b: Backend) {
    // An hour: expiry comes when the test moves the clock and runs it.
    let s = TestServer::start_with(b, |c| c.pending_ttl_secs = 3600).await;
    let laptop = s.user("alice").await;
    let phone = s.login("alice", "alice-password", "phone").await;
    let cursor = phone.latest_cursor().await.unwrap();
    let data = b"the bytes of a file on its way".to_vec();
    let id = BlockId::of(&data);
    let commit = |path: &str| CommitRequest {
        reuse: Vec::new(),
        path: path.into(),
        base_rev: Some(0),
        size: data.len() as u64,
        content_hash: ContentHash::of(&data),
        chunker: CHUNKER.into(),
        blocks: vec![BlockRef {
            id,
            size: data.len() as u64,
        }],
    };
    // The first commit finds its block missing: the file shows as pending,
    // and a device waiting on the journal hears of it.
    let waiter = {
        let phone = phone.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move { phone.poll(&cursor, 30).await })
    };
    until_held(&laptop, 1).await;
    let err = laptop.commit(&commit("/up/file.txt")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MissingBlocks));
    assert!(waiter.await.unwrap().unwrap().changes);
    let seen = phone.meta("/up/file.txt").await.unwrap();
    assert!(seen.pending, "listed as syncing");
    assert_eq!(seen.rev, Some(0));
    let listed = phone.list("/up").await.unwrap();
    assert!(listed.entries[0].pending);
    let kinds: Vec<ChangeKind> = phone
        .changes(Some(&cursor), None)
        .await
        .unwrap()
        .changes
        .iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(kinds, vec![ChangeKind::Mkdir, ChangeKind::Pending]);
    // The commit that finds every block flips it to uploaded.
    laptop
        .put_block(&id, BlockCodec::Raw, data.clone().into())
        .await
        .unwrap();
    let done = laptop.commit(&commit("/up/file.txt")).await.unwrap();
    assert!(!done.pending);
    assert_eq!(done.rev, Some(1));
    assert!(!phone.meta("/up/file.txt").await.unwrap().pending);

    // An upload that never completes stops showing after the TTL.
    let other = b"never finished".to_vec();
    let mut never = commit("/up/never.txt");
    never.blocks = vec![BlockRef {
        id: BlockId::of(&other),
        size: other.len() as u64,
    }];
    never.size = other.len() as u64;
    never.content_hash = ContentHash::of(&other);
    assert!(laptop.commit(&never).await.is_err());
    assert!(phone.meta("/up/never.txt").await.unwrap().pending);
    s.config.clock.advance(Duration::from_secs(3601));
    let admin = s.login("admin", &s.admin_password, "laptop").await;
    assert_eq!(admin.run_worker("pending").await.unwrap().last_done, 1);
    let gone = phone.meta("/up/never.txt").await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::NotFound), "{gone}");
    let last = phone.changes(Some(&cursor), None).await.unwrap().changes;
    assert_eq!(
        last.last().map(|c| c.kind),
        Some(ChangeKind::PendingExpired)
    );
    // The finished file is untouched.
    assert_eq!(phone.meta("/up/file.txt").await.unwrap().rev, Some(1));
}

/// A waiting poll wakes within a moment for every kind of change, not only
/// for new content: the store publishes every commit, whichever handler
/// made it. Prints how long each took to wake the poll (docs/PERFORMANCE.md).
// Long on purpose: one held poll per kind of change, in a row, so the
// list of kinds reads as a table.
async fn every_kind_of_change_wakes_a_poll(b: Backend) {
    let s = TestServer::start(b).await;
    let phone = s.user("alice").await;
    let laptop = s.login("alice", "alice-password", "desk").await;
    laptop
        .upload("/a.txt", None, reqwest::Body::from("one"))
        .await
        .unwrap();
    laptop
        .upload("/a.txt", None, reqwest::Body::from("two"))
        .await
        .unwrap();
    // A TUS upload under way; its last piece is one of the changes below.
    let tus_at = tus_create(&laptop, "/tus.txt", 5).await;
    type Change = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    type Act = Box<dyn Fn(tessera_client::Remote) -> Change>;
    let changes: Vec<(&str, Act)> = vec![
        (
            "upload",
            Box::new(|r| {
                Box::pin(async move {
                    r.upload("/b.txt", None, reqwest::Body::from("bee"))
                        .await
                        .map(drop)
                        .unwrap()
                })
            }),
        ),
        (
            "mkdir",
            Box::new(|r| Box::pin(async move { r.mkdir("/f").await.map(drop).unwrap() })),
        ),
        (
            "move",
            Box::new(|r| {
                Box::pin(async move { r.move_to("/a.txt", "/f/a.txt").await.map(drop).unwrap() })
            }),
        ),
        (
            "rename",
            Box::new(|r| {
                Box::pin(async move { r.move_to("/f/a.txt", "/f/c.txt").await.map(drop).unwrap() })
            }),
        ),
        (
            "restore",
            Box::new(|r| {
                Box::pin(async move { r.restore("/f/c.txt", 1).await.map(drop).unwrap() })
            }),
        ),
        (
            "delete",
            Box::new(|r| Box::pin(async move { r.delete("/f").await.unwrap() })),
        ),
        (
            "trash restore",
            Box::new(|r| {
                Box::pin(async move {
                    let id = r.trash().await.unwrap().entries[0].id.clone();
                    r.restore_from_trash(&id, None).await.map(drop).unwrap()
                })
            }),
        ),
        (
            "tus completion",
            Box::new(move |r| {
                let at = tus_at.clone();
                Box::pin(async move {
                    let resp = r
                        .request(reqwest::Method::PATCH, &at)
                        .header("Tus-Resumable", "1.0.0")
                        .header("Content-Type", "application/offset+octet-stream")
                        .header("Upload-Offset", "0")
                        .body("12345")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), reqwest::StatusCode::NO_CONTENT);
                    assert_eq!(resp.headers()["tessera-rev"], "1");
                })
            }),
        ),
    ];
    for (what, change) in changes {
        // The last round's poll has left, so the count below is this one's.
        until_held(&laptop, 0).await;
        let cursor = phone.latest_cursor().await.unwrap();
        let waiter = {
            let phone = phone.clone();
            tokio::spawn(async move {
                let r = phone.poll(&cursor, 30).await.unwrap();
                (r, Instant::now())
            })
        };
        until_held(&laptop, 1).await;
        let began = Instant::now();
        change(laptop.clone()).await;
        let took = began.elapsed();
        let (resp, answered) = waiter.await.unwrap();
        let woke = answered.duration_since(began);
        assert!(resp.changes, "{what}");
        assert!(
            woke < Duration::from_secs(5),
            "{what} woke the poll after {woke:?}"
        );
        // The wake-up is published before the change's response is sent,
        // so the poll can answer first: the difference is signed.
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "wake latency {b:?} {what}: change {:.1} ms, poll answered at {:.1} ms ({:+.1} ms from the change's response)",
            ms(took),
            ms(woke),
            ms(woke) - ms(took),
        );
    }
}

/// Opens a TUS session for `path`; returns the path to PATCH.
async fn tus_create(r: &tessera_client::Remote, path: &str, length: u64) -> String {
    use base64::Engine;
    let name = base64::engine::general_purpose::STANDARD.encode(path);
    let resp = r
        .request(reqwest::Method::POST, "/tus/")
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", format!("path {name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap();
    location
        .strip_prefix(tessera_proto::API_PREFIX)
        .unwrap()
        .to_owned()
}

/// Waits until the server holds exactly `n` long polls of the user's
/// (presence counts them), so a change made next is one a poll must be
/// woken for, not one it finds at once on arrival.
async fn until_held(r: &tessera_client::Remote, n: u32) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let held: u32 = r
            .presence()
            .await
            .unwrap()
            .devices
            .iter()
            .map(|d| d.connections)
            .sum();
        if held == n {
            return;
        }
        assert!(
            Instant::now() < until,
            "{held} long polls held, not {n}, after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two instances on one PostgreSQL database and one store: a change made
/// through one wakes a long poll held on the other (LISTEN/NOTIFY), and
/// the wake-up latency over 100 changes is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_instance_wakes_a_poll_on_another() {
    let a = TestServer::start(Backend::Postgres).await;
    let mut second = a.config.clone();
    second.listen = "127.0.0.1:0".parse().unwrap();
    let b = tessera_server::start(second).await.unwrap();
    let writer = a.user("alice").await;
    let anon = tessera_client::Remote::new(&format!("http://{}", b.addr), None).unwrap();
    let token = anon
        .login("alice", "alice-password", "phone")
        .await
        .unwrap()
        .token;
    let reader = anon.with_token(token);
    let mut took = Vec::new();
    for i in 0..100 {
        let cursor = reader.latest_cursor().await.unwrap();
        let poll = {
            let reader = reader.clone();
            tokio::spawn(async move {
                let answer = reader.poll(&cursor, 10).await;
                (answer, Instant::now())
            })
        };
        // The poll is waiting on instance B before the change is made on A.
        until_held(&reader, 1).await;
        writer
            .upload(&format!("/n{i}.txt"), None, reqwest::Body::from("x"))
            .await
            .unwrap();
        let done = Instant::now();
        let (answer, woke) = poll.await.unwrap();
        assert!(
            answer.unwrap().changes,
            "change {i} woke the poll on the other instance"
        );
        // After the writer's answer (zero if the poll woke first).
        took.push(woke.saturating_duration_since(done));
    }
    took.sort();
    println!(
        "wake-up across instances after the change's answer: p50 {:?}, p95 {:?}, max {:?}",
        took[49], took[94], took[99]
    );
    b.shutdown().await.unwrap();
}
