//! End-to-end tests: the real server over HTTP, the project's client, real
//! files, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::{Backend, TestServer, mixed_data, no_progress, random_data};
use reqwest::{Method, StatusCode};
use tessera_client::transfer::{download_file, upload_file};
use tessera_client::{ClientError, Remote};
use tessera_proto::api::{BlockCodec, BlockRef, CommitRequest};
use tessera_proto::block::{CHUNKER, MIN_BLOCK};
use tessera_proto::{BlockId, ContentHash, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_backends!(
    round_trips_of_edge_sizes,
    round_trip_100_mib_mixed_data,
    simple_upload_and_ranges,
    revisions_and_restore,
    dedup_across_users_stores_once,
    delta_reupload_sends_only_changed_blocks,
    tampered_object_is_an_error_never_wrong_bytes,
    bad_paths_are_refused,
    size_limit_refuses_before_storing,
    interrupted_upload_leaves_nothing,
    wrong_hash_and_missing_blocks,
    stale_base_is_a_conflict,
    other_users_paths_and_blocks_are_404,
    auth_errors_and_rate_limit,
    folders_move_and_delete,
    small_files_travel_in_packs_and_batches,
    trash_lists_and_restores,
    trash_purges_and_expires,
);

fn code(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

async fn put_bytes(
    s: &TestServer,
    r: &Remote,
    path: &str,
    data: &[u8],
) -> tessera_client::transfer::UploadReport {
    let local = s.scratch(&format!("up-{}", blake3::hash(path.as_bytes()).to_hex()));
    std::fs::write(&local, data).unwrap();
    upload_file(r, &local, path, None, no_progress())
        .await
        .expect("upload")
}

async fn get_bytes(
    s: &TestServer,
    r: &Remote,
    path: &str,
    rev: Option<i64>,
) -> Result<Vec<u8>, ClientError> {
    let local = s.scratch("download.out");
    let _ = std::fs::remove_file(&local);
    download_file(r, path, rev, &local, no_progress()).await?;
    Ok(std::fs::read(&local).unwrap())
}

async fn round_trips_of_edge_sizes(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    for (i, len) in [
        0,
        1,
        MIN_BLOCK - 1,
        MIN_BLOCK,
        MIN_BLOCK + 1,
        3 * MIN_BLOCK + 7,
    ]
    .into_iter()
    .enumerate()
    {
        let data = mixed_data(len, i as u64);
        let path = format!("/sizes/f{len}.bin");
        let rep = put_bytes(&s, &r, &path, &data).await;
        assert_eq!(rep.size, len as u64);
        assert_eq!(rep.entry.content_hash, Some(ContentHash::of(&data)));
        assert_eq!(
            get_bytes(&s, &r, &path, None).await.unwrap(),
            data,
            "{len} bytes"
        );
    }
    assert_eq!(r.list("/sizes").await.unwrap().entries.len(), 6);
}

async fn round_trip_100_mib_mixed_data(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let data = mixed_data(100 << 20, 7);
    let rep = put_bytes(&s, &r, "/big/mixed.bin", &data).await;
    assert!(rep.blocks_total >= 100 / 16, "{} blocks", rep.blocks_total);
    assert!(
        rep.bytes_sent < data.len() as u64,
        "mixed data travels compressed"
    );
    let back = get_bytes(&s, &r, "/big/mixed.bin", None).await.unwrap();
    assert!(back == data, "100 MiB round trip differs");
    assert!(
        s.store_bytes().await < data.len() as u64,
        "stored compressed"
    );
}

async fn simple_upload_and_ranges(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let data = mixed_data(5 * MIN_BLOCK + 123, 3);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let e = r.upload("/simple.bin", None, body).await.unwrap();
    assert_eq!(e.size, Some(data.len() as u64));
    assert_eq!(e.content_hash, Some(ContentHash::of(&data)));
    assert_eq!(get_bytes(&s, &r, "/simple.bin", None).await.unwrap(), data);

    let get = |range: Option<&str>| {
        let mut req = r
            .request(Method::GET, "/files/content")
            .query(&[("path", "/simple.bin")]);
        if let Some(range) = range {
            req = req.header("range", range);
        }
        req.send()
    };
    let resp = get(Some("bytes=1048570-2097160")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        resp.headers()["content-range"].to_str().unwrap(),
        format!("bytes 1048570-2097160/{}", data.len())
    );
    assert_eq!(resp.bytes().await.unwrap(), &data[1_048_570..=2_097_160]);
    let resp = get(Some("bytes=-10")).await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), &data[data.len() - 10..]);
    let resp = get(Some(&format!("bytes={}-", data.len()))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let resp = get(None).await.unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", ContentHash::of(&data)));
    let resp = r
        .request(Method::GET, "/files/content")
        .query(&[("path", "/simple.bin")])
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
}

async fn revisions_and_restore(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let v1 = mixed_data(300_000, 1);
    let v2 = mixed_data(2 * MIN_BLOCK, 2);
    put_bytes(&s, &r, "/notes.txt", &v1).await;
    let rep = put_bytes(&s, &r, "/notes.txt", &v2).await;
    assert_eq!(rep.entry.rev, Some(2));
    let revs = r.revisions("/notes.txt").await.unwrap().revisions;
    assert_eq!(revs.iter().map(|r| r.rev).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(revs[1].content_hash, ContentHash::of(&v1));
    assert_eq!(get_bytes(&s, &r, "/notes.txt", Some(1)).await.unwrap(), v1);
    let e = r.restore("/notes.txt", 1).await.unwrap();
    assert_eq!(e.rev, Some(3));
    assert_eq!(get_bytes(&s, &r, "/notes.txt", None).await.unwrap(), v1);
    assert_eq!(
        get_bytes(&s, &r, "/notes.txt", Some(2)).await.unwrap(),
        v2,
        "old revisions stay"
    );
    let err = r.restore("/notes.txt", 9).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::NotFound));
    // Re-uploading identical content makes no new revision.
    let same = put_bytes(&s, &r, "/notes.txt", &v1).await;
    assert_eq!(same.entry.rev, Some(3));
}

async fn dedup_across_users_stores_once(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let data = random_data(20 << 20, 11);
    put_bytes(&s, &alice, "/a.bin", &data).await;
    let after_alice = s.store_bytes().await;
    assert!(after_alice >= data.len() as u64);
    // Bob is told every block is missing (no oracle), uploads them...
    let rep = put_bytes(&s, &bob, "/b.bin", &data).await;
    assert_eq!(rep.blocks_sent, rep.blocks_total);
    // ...and they are not stored twice (his copies go after the answers).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.store_bytes().await != after_alice && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.store_bytes().await,
        after_alice,
        "same blocks stored once across users"
    );
    assert_eq!(get_bytes(&s, &bob, "/b.bin", None).await.unwrap(), data);
    // A second upload by the same user sends nothing.
    let again = put_bytes(&s, &bob, "/c.bin", &data).await;
    assert_eq!(again.blocks_sent, 0);
}

async fn delta_reupload_sends_only_changed_blocks(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let mut data = random_data(64 << 20, 5);
    let first = put_bytes(&s, &r, "/big.bin", &data).await;
    let mid = data.len() / 2;
    data[mid..mid + (1 << 20)].copy_from_slice(&random_data(1 << 20, 6));
    let second = put_bytes(&s, &r, "/big.bin", &data).await;
    println!(
        "delta: {} blocks, re-put sent {} blocks / {} bytes of {}",
        first.blocks_total,
        second.blocks_sent,
        second.bytes_sent,
        data.len()
    );
    assert!(
        second.blocks_sent <= 2,
        "sent {} blocks",
        second.blocks_sent
    );
    assert!(second.bytes_sent <= 32 << 20);
    assert_eq!(get_bytes(&s, &r, "/big.bin", None).await.unwrap(), data);
}

async fn tampered_object_is_an_error_never_wrong_bytes(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let data = mixed_data(200_000, 9);
    put_bytes(&s, &r, "/t.bin", &data).await;
    let objects = s.store_objects().await;
    assert_eq!(objects.len(), 1);
    s.store.damage(&objects[0]).await;

    let target = s.scratch("tampered.out");
    let err = download_file(&r, "/t.bin", None, &target, no_progress())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500), "{err}");
    assert!(!target.exists(), "no file appears at the target");
    let id = BlockId::of(&data);
    assert!(r.get_block(&id).await.is_err());
}

async fn bad_paths_are_refused(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let long_name = format!("/{}", "n".repeat(256));
    let long_path = "/abcdefgh".repeat(500);
    for bad in [
        "/a/../b",
        "/./x",
        "/a//b",
        "/nul\0byte",
        "/line\nbreak",
        &long_name,
        &long_path,
        "",
    ] {
        let err = r.mkdir(bad).await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::InvalidPath), "{bad:?}: {err}");
        let body = reqwest::Body::from("x");
        let err = r.upload(bad, None, body).await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::InvalidPath), "{bad:?}: {err}");
    }
    assert!(
        r.list("/").await.unwrap().entries.is_empty(),
        "nothing was created"
    );
    put_bytes(&s, &r, "/file.txt", b"x").await;
    let err = r.mkdir("/file.txt/sub").await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::NotAFolder));
    let err = r.list("/file.txt").await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::NotAFolder));
}

async fn size_limit_refuses_before_storing(b: Backend) {
    let s = TestServer::start_with(b, |c| c.max_file_size = 3 << 20).await;
    let r = s.user("alice").await;
    let data = random_data(5 << 20, 1);
    // Declared length over the limit: refused before any byte is stored.
    let err = r
        .upload("/big.bin", None, reqwest::Body::from(data.clone()))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::TooLarge), "{err}");
    assert_eq!(s.store_bytes().await, 0);
    // No declared length: refused once the limit is passed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(65_536).map(|c| Ok(c.to_vec())).collect();
    let err = r
        .upload(
            "/big.bin",
            None,
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::TooLarge), "{err}");
    // The block protocol too.
    let local = s.scratch("big.bin");
    std::fs::write(&local, &data).unwrap();
    let err = upload_file(&r, &local, "/big.bin", None, no_progress())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::TooLarge), "{err}");
    assert_eq!(
        code(&r.meta("/big.bin").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
}

async fn interrupted_upload_leaves_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let data = random_data(3 << 20, 2);
    let mut parts: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(65_536).map(|c| Ok(c.to_vec())).collect();
    parts.push(Err(std::io::Error::other("connection lost")));
    let err = r
        .upload(
            "/cut.bin",
            None,
            reqwest::Body::wrap_stream(futures::stream::iter(parts)),
        )
        .await
        .unwrap_err();
    println!("interrupted upload: {err}");
    assert_eq!(
        code(&r.meta("/cut.bin").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    // A body shorter than its Content-Length, then the connection closes.
    let mut conn = tokio::net::TcpStream::connect(s.running.addr)
        .await
        .unwrap();
    let token = crate::common::login_token(
        &format!("{}{}", s.url, tessera_proto::API_PREFIX),
        "alice",
        "alice-password",
        "raw",
    )
    .await;
    let request = format!(
        "PUT /api/v1/files/content?path=/short.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 1000\r\n\r\nonly this"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_string(&mut answer),
    )
    .await;
    assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");
    assert_eq!(
        code(&r.meta("/short.bin").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
}

async fn wrong_hash_and_missing_blocks(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let block = b"real block".to_vec();
    let wrong_id = BlockId::of(b"another block");
    let err = r
        .put_block(&wrong_id, BlockCodec::Raw, block.clone().into())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::HashMismatch), "{err}");
    assert_eq!(r.missing(&[wrong_id]).await.unwrap(), vec![wrong_id]);
    assert_eq!(s.store_bytes().await, 0, "refused bytes are not stored");
    let err = r
        .put_block(&BlockId::of(&block), BlockCodec::Zstd, block.clone().into())
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some(ErrorCode::BadRequest),
        "not a zstd frame: {err}"
    );

    let id = BlockId::of(&block);
    let commit = |blocks: Vec<BlockRef>, size: u64| CommitRequest {
        reuse: Vec::new(),
        path: "/c.txt".into(),
        base_rev: None,
        size,
        content_hash: ContentHash::of(&block),
        chunker: CHUNKER.into(),
        blocks,
    };
    let err = r
        .commit(&commit(vec![BlockRef { id, size: 10 }], 10))
        .await
        .unwrap_err();
    match &err {
        ClientError::Api {
            code: ErrorCode::MissingBlocks,
            missing,
            ..
        } => assert_eq!(missing, &vec![id]),
        other => panic!("expected missing_blocks, got {other}"),
    }
    r.put_block(&id, BlockCodec::Raw, block.clone().into())
        .await
        .unwrap();
    let err = r
        .commit(&commit(vec![BlockRef { id, size: 11 }], 11))
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some(ErrorCode::BadRequest),
        "wrong block size: {err}"
    );
    let mut bad_chunker = commit(vec![BlockRef { id, size: 10 }], 10);
    bad_chunker.chunker = "fixed-4M".into();
    assert_eq!(
        code(&r.commit(&bad_chunker).await.unwrap_err()),
        Some(ErrorCode::BadRequest)
    );
    let e = r
        .commit(&commit(vec![BlockRef { id, size: 10 }], 10))
        .await
        .unwrap();
    assert_eq!(e.rev, Some(1));
    assert_eq!(get_bytes(&s, &r, "/c.txt", None).await.unwrap(), block);
}

async fn stale_base_is_a_conflict(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    put_bytes(&s, &r, "/doc.txt", b"one").await;
    put_bytes(&s, &r, "/doc.txt", b"two").await;
    let err = r
        .upload("/doc.txt", Some(1), reqwest::Body::from("three"))
        .await
        .unwrap_err();
    match err {
        ClientError::Api {
            status: 409,
            code: ErrorCode::Conflict,
            current_rev,
            ..
        } => {
            assert_eq!(current_rev, Some(2))
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let err = r
        .upload("/doc.txt", Some(0), reqwest::Body::from("three"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Conflict));
    assert_eq!(get_bytes(&s, &r, "/doc.txt", None).await.unwrap(), b"two");
    // A delete based on an old revision is refused too: it would discard an
    // edit its sender never saw.
    let err = r.delete_at("/doc.txt", Some(1)).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Conflict));
    assert_eq!(get_bytes(&s, &r, "/doc.txt", None).await.unwrap(), b"two");
    let e = r
        .upload("/doc.txt", Some(2), reqwest::Body::from("three"))
        .await
        .unwrap();
    assert_eq!(e.rev, Some(3));

    // Two writers from the same base: exactly one wins.
    let base = 3;
    let (a, b2) = tokio::join!(
        r.upload("/doc.txt", Some(base), reqwest::Body::from("from A")),
        r.upload("/doc.txt", Some(base), reqwest::Body::from("from B")),
    );
    assert_eq!([a.is_ok(), b2.is_ok()].iter().filter(|ok| **ok).count(), 1);
    assert_eq!(r.meta("/doc.txt").await.unwrap().rev, Some(4));
}

async fn other_users_paths_and_blocks_are_404(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let data = mixed_data(100_000, 4);
    put_bytes(&s, &alice, "/private/secret.txt", &data).await;
    assert_eq!(
        code(&bob.meta("/private/secret.txt").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(
        code(&bob.list("/private").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    assert!(bob.list("/").await.unwrap().entries.is_empty());
    let id = BlockId::of(&data);
    let err = bob.get_block(&id).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::NotFound));
    assert_eq!(
        bob.missing(&[id]).await.unwrap(),
        vec![id],
        "no existence oracle"
    );
    // Bob cannot commit Alice's block without uploading it.
    let err = bob
        .commit(&CommitRequest {
            reuse: Vec::new(),
            path: "/stolen.txt".into(),
            base_rev: None,
            size: data.len() as u64,
            content_hash: ContentHash::of(&data),
            chunker: CHUNKER.into(),
            blocks: vec![BlockRef {
                id,
                size: data.len() as u64,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::MissingBlocks));
}

async fn auth_errors_and_rate_limit(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let anon = Remote::new(&s.url, None).unwrap();
    assert_eq!(
        code(&anon.list("/").await.unwrap_err()),
        Some(ErrorCode::Unauthorized)
    );
    let forged = Remote::new(&s.url, Some("00".repeat(32))).unwrap();
    assert_eq!(
        code(&forged.list("/").await.unwrap_err()),
        Some(ErrorCode::Unauthorized)
    );
    // The admin made on first start can log in with the printed password.
    let admin = s.login("admin", &s.admin_password, "console").await;
    admin.list("/").await.unwrap();
    // Logout revokes the token.
    r.logout().await.unwrap();
    assert_eq!(
        code(&r.list("/").await.unwrap_err()),
        Some(ErrorCode::Unauthorized)
    );
    // Wrong passwords: 401 without saying which part was wrong, then 429.
    let unknown = anon.login("nobody", "x", "d").await.unwrap_err();
    let wrong = anon.login("alice", "wrong", "d").await.unwrap_err();
    assert_eq!(unknown.to_string(), wrong.to_string());
    let mut limited = false;
    for _ in 0..12 {
        if let Err(e) = anon.login("alice", "wrong", "d").await
            && e.status() == Some(429)
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "repeated failures are rate-limited");
    let err = anon
        .login("alice", "alice-password", "d")
        .await
        .unwrap_err();
    assert_eq!(
        err.status(),
        Some(429),
        "even the right password waits out the lock"
    );
}

async fn folders_move_and_delete(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    put_bytes(&s, &r, "/a/b/c.txt", b"deep").await;
    let id = r.meta("/a/b/c.txt").await.unwrap().id;
    r.move_to("/a/b", "/a/renamed").await.unwrap();
    let moved = r.meta("/a/renamed/c.txt").await.unwrap();
    assert_eq!(moved.id, id, "ids survive moves");
    assert_eq!(
        code(&r.move_to("/a", "/a/renamed/inside").await.unwrap_err()),
        Some(ErrorCode::Conflict)
    );
    put_bytes(&s, &r, "/x.txt", b"x").await;
    assert_eq!(
        code(&r.move_to("/x.txt", "/a/renamed/c.txt").await.unwrap_err()),
        Some(ErrorCode::AlreadyExists)
    );
    assert_eq!(
        code(&r.move_to("/x.txt", "/nope/x.txt").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    r.move_to("/x.txt", "/X.txt").await.unwrap();
    assert_eq!(
        r.meta("/X.txt").await.unwrap().name,
        "X.txt",
        "case-only rename"
    );
    r.delete("/a").await.unwrap();
    assert_eq!(
        code(&r.meta("/a/renamed/c.txt").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(
        code(&r.delete("/a").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    // The name is free again.
    put_bytes(&s, &r, "/a/new.txt", b"new").await;
    let names: Vec<_> = r
        .list("/")
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["a", "X.txt"]);
    let counted = Arc::new(AtomicU64::new(0));
    let c = counted.clone();
    let local = s.scratch("progress.out");
    download_file(
        &r,
        "/a/new.txt",
        None,
        &local,
        Arc::new(move |n| {
            c.fetch_add(n, Ordering::Relaxed);
        }),
    )
    .await
    .unwrap();
    assert_eq!(counted.load(Ordering::Relaxed), 3);
}

/// A block store on a 3 MiB tmpfs: an upload that does not fit is refused
/// with 507 and leaves no file; a small one still succeeds afterwards.
/// A full disk is a folder's failure, so this store is a folder on any run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_507_and_changes_nothing() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n");
        assert!(!root, "running as root, yet a tmpfs could not be mounted");
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.path().to_path_buf());
    let store = format!("file://{}", mnt.path().display());
    let s = TestServer::start_with(Backend::Sqlite, |c| c.store = Some(store)).await;
    let r = s.user("alice").await;
    let local = s.scratch("big.bin");
    std::fs::write(&local, random_data(8 << 20, 3)).unwrap();
    let err = upload_file(&r, &local, "/big.bin", None, no_progress())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(507), "{err}");
    assert_eq!(code(&err), Some(ErrorCode::InsufficientStorage));
    let err = r
        .upload(
            "/big2.bin",
            None,
            reqwest::Body::from(random_data(8 << 20, 4)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(507), "{err}");
    // At most a "syncing" mark from the block-protocol attempt: no content.
    let entries = r.list("/").await.unwrap().entries;
    assert!(
        entries.iter().all(|e| e.pending && e.rev == Some(0)),
        "{entries:?}"
    );
    assert!(get_bytes(&s, &r, "/big.bin", None).await.is_err());
    let small = put_bytes(&s, &r, "/small.txt", b"still works").await;
    assert_eq!(small.entry.rev, Some(1));
    assert_eq!(
        get_bytes(&s, &r, "/small.txt", None).await.unwrap(),
        b"still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_the_routes() {
    let s = TestServer::start(Backend::Sqlite).await;
    let doc: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for route in [
        "/api/v1/auth/login",
        "/api/v1/files/content",
        "/api/v1/files/commit",
        "/api/v1/blocks/missing",
        "/api/v1/changes/poll",
        "/api/v1/trash",
        "/api/v1/trash/purge",
        "/api/v1/files/view",
        "/api/v1/files/zip",
    ] {
        assert!(
            doc["paths"][route].is_object(),
            "{route} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let health = reqwest::get(format!("{}/readyz", s.url)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let unknown = reqwest::get(format!("{}/api/v1/nope", s.url))
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

// Long on purpose: the requests counted across one scenario are the
// point, so it is told in one piece.
async fn small_files_travel_in_packs_and_batches(b: Backend) {
    use tessera_client::transfer::{SmallFile, upload_small_files};
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let mut files = Vec::new();
    for i in 0..300 {
        let local = s.scratch(&format!("small-{i}.txt"));
        std::fs::write(&local, format!("small file number {i}\n").repeat(i % 7 + 1)).unwrap();
        files.push(SmallFile {
            local,
            remote: format!("/many/f{i}.txt"),
            base_rev: Some(0),
        });
    }
    let empty = s.scratch("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    files.push(SmallFile {
        local: empty,
        remote: "/many/empty.txt".into(),
        base_rev: Some(0),
    });
    let results = upload_small_files(&r, &files).await.unwrap();
    assert!(
        results.iter().all(|r| r.is_ok()),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    assert_eq!(r.list("/many").await.unwrap().entries.len(), 301);
    assert_eq!(
        s.store_objects().await.len(),
        1,
        "300 small blocks in one packed object"
    );
    assert_eq!(
        get_bytes(&s, &r, "/many/f5.txt", None).await.unwrap(),
        "small file number 5\n".repeat(6).into_bytes()
    );
    assert_eq!(
        get_bytes(&s, &r, "/many/empty.txt", None).await.unwrap(),
        b""
    );
    // One batch, three outcomes: a stale base, a missing block, a success.
    let again = vec![
        SmallFile {
            local: files[1].local.clone(),
            remote: "/many/f1.txt".into(),
            base_rev: Some(0),
        },
        SmallFile {
            local: files[2].local.clone(),
            remote: "/many/new.txt".into(),
            base_rev: Some(0),
        },
    ];
    let results = upload_small_files(&r, &again).await.unwrap();
    assert_eq!(
        results[0].as_ref().unwrap_err().code(),
        Some(ErrorCode::Conflict)
    );
    assert!(results[1].is_ok());
    let block = b"never uploaded".to_vec();
    let resp = r
        .commit_batch(vec![CommitRequest {
            reuse: Vec::new(),
            path: "/many/ghost.txt".into(),
            base_rev: None,
            size: block.len() as u64,
            content_hash: ContentHash::of(&block),
            chunker: CHUNKER.into(),
            blocks: vec![BlockRef {
                id: BlockId::of(&block),
                size: block.len() as u64,
            }],
        }])
        .await
        .unwrap();
    assert_eq!(
        resp.results[0].error.as_ref().map(|e| e.code),
        Some(ErrorCode::MissingBlocks)
    );
    assert_eq!(
        code(&r.meta("/many/ghost.txt").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    // A pack with a block that does not match its id stores nothing.
    let before = s.store_bytes().await;
    let mut body = Vec::new();
    tessera_proto::pack::encode_frame(&mut body, &BlockId::of(b"good"), BlockCodec::Raw, b"good");
    tessera_proto::pack::encode_frame(
        &mut body,
        &BlockId::of(b"claimed"),
        BlockCodec::Raw,
        b"actual",
    );
    assert_eq!(
        code(&r.put_pack(body).await.unwrap_err()),
        Some(ErrorCode::HashMismatch)
    );
    assert_eq!(s.store_bytes().await, before);
    assert_eq!(r.missing(&[BlockId::of(b"good")]).await.unwrap().len(), 1);
    let err = r.put_pack(b"short".to_vec()).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadRequest));
    // Journal: one entry per file, still gap-free.
    let changes = r.changes(None, Some(10_000)).await.unwrap().changes;
    let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=changes.len() as i64).collect::<Vec<_>>());
}

async fn trash_lists_and_restores(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    put_bytes(&s, &r, "/docs/a.txt", b"alpha").await;
    put_bytes(&s, &r, "/docs/sub/b.txt", b"beta").await;
    put_bytes(&s, &r, "/c.txt", b"gamma").await;
    r.delete("/c.txt").await.unwrap();
    r.delete("/docs").await.unwrap();
    let trash = r.trash().await.unwrap().entries;
    assert_eq!(
        trash.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        vec!["/docs", "/c.txt"]
    );
    let cursor = r.latest_cursor().await.unwrap();
    // A folder comes back whole, and the journal says so entry by entry.
    let docs = trash.iter().find(|e| e.path == "/docs").unwrap();
    let back = r.restore_from_trash(&docs.id, None).await.unwrap();
    assert_eq!(back.path, "/docs");
    assert_eq!(
        get_bytes(&s, &r, "/docs/sub/b.txt", None).await.unwrap(),
        b"beta"
    );
    let paths: Vec<String> = r
        .changes(Some(&cursor), None)
        .await
        .unwrap()
        .changes
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(
        paths,
        vec!["/docs", "/docs/a.txt", "/docs/sub", "/docs/sub/b.txt"]
    );
    // A taken name is refused; another path works, creating its folders.
    put_bytes(&s, &r, "/c.txt", b"new c").await;
    let c = trash.iter().find(|e| e.path == "/c.txt").unwrap();
    assert_eq!(
        code(&r.restore_from_trash(&c.id, None).await.unwrap_err()),
        Some(ErrorCode::AlreadyExists)
    );
    r.restore_from_trash(&c.id, Some("/old/c.txt"))
        .await
        .unwrap();
    assert_eq!(
        get_bytes(&s, &r, "/old/c.txt", None).await.unwrap(),
        b"gamma"
    );
    assert_eq!(get_bytes(&s, &r, "/c.txt", None).await.unwrap(), b"new c");
    assert!(r.trash().await.unwrap().entries.is_empty());
    // Someone else's trash is not yours.
    r.delete("/old").await.unwrap();
    let id = r.trash().await.unwrap().entries[0].id.clone();
    let bob = s.user("bob").await;
    assert_eq!(
        code(&bob.restore_from_trash(&id, None).await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    assert!(bob.trash().await.unwrap().entries.is_empty());
}

async fn trash_purges_and_expires(b: Backend) {
    // A day: expiry comes when the test moves the clock and runs it.
    let s = TestServer::start_with(b, |c| c.trash_ttl_secs = 24 * 3600).await;
    let r = s.user("alice").await;
    let meta = s.running.meta();
    // Two files share a block: purging one must not free the other's.
    let shared = crate::common::random_data(300_000, 5);
    put_bytes(&s, &r, "/keep.bin", &shared).await;
    put_bytes(&s, &r, "/docs/a.bin", &shared).await;
    put_bytes(
        &s,
        &r,
        "/docs/b.bin",
        &crate::common::random_data(300_000, 6),
    )
    .await;
    put_bytes(
        &s,
        &r,
        "/docs/b.bin",
        &crate::common::random_data(300_000, 7),
    )
    .await;
    r.delete("/docs").await.unwrap();
    assert_eq!(meta.unreferenced_blocks().await.unwrap(), 0);
    let docs = r.trash().await.unwrap().entries[0].id.clone();
    // Neither one nor all, or both: a clear 400.
    let bad = r
        .request(reqwest::Method::POST, "/trash/purge")
        .json(&serde_json::json!({}));
    assert_eq!(bad.send().await.unwrap().status(), 400);
    // Another user cannot purge it.
    let bob = s.user("bob").await;
    assert_eq!(
        code(&bob.purge_trash(Some(&docs)).await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    r.purge_trash(Some(&docs)).await.unwrap();
    assert!(r.trash().await.unwrap().entries.is_empty());
    assert_eq!(
        code(&r.restore_from_trash(&docs, None).await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    // b.bin's two revisions held two blocks no one else uses; a.bin's block
    // lives on in keep.bin.
    assert_eq!(meta.unreferenced_blocks().await.unwrap(), 2);
    assert_eq!(get_bytes(&s, &r, "/keep.bin", None).await.unwrap(), shared);
    // Emptying what the user was shown leaves what was deleted since,
    // unseen (on another device, say).
    r.delete("/keep.bin").await.unwrap();
    let shown = r.trash().await.unwrap().entries;
    let upto = shown.iter().map(|e| e.deleted_ms).max();
    // The next deletion must be stamped after what was shown: the clock
    // moves on within a millisecond.
    while tessera_server::meta::now_ms() <= upto.unwrap() {
        tokio::task::yield_now().await;
    }
    put_bytes(&s, &r, "/late.txt", b"deleted after the question").await;
    r.delete("/late.txt").await.unwrap();
    r.purge_trash_upto(None, upto).await.unwrap();
    let left = r.trash().await.unwrap().entries;
    assert_eq!(
        left.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["/late.txt"]
    );
    // Emptying removes everything; expiry removes what is older than the TTL.
    r.purge_trash(None).await.unwrap();
    assert!(r.trash().await.unwrap().entries.is_empty());
    assert_eq!(
        meta.unreferenced_blocks().await.unwrap(),
        4,
        "and late.txt's"
    );
    put_bytes(&s, &r, "/old.txt", b"old").await;
    r.delete("/old.txt").await.unwrap();
    assert_eq!(r.trash().await.unwrap().entries.len(), 1);
    s.config
        .clock
        .advance(std::time::Duration::from_secs(24 * 3600 + 1));
    let admin = s.login("admin", &s.admin_password, "laptop").await;
    let ran = admin.run_worker("trash").await.unwrap();
    assert_eq!(ran.last_done, 1, "{ran:?}");
    assert!(r.trash().await.unwrap().entries.is_empty());
}
