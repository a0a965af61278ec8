//! The block store's integrity and its defences against cheap requests:
//! racing uploads of one block, repair of a damaged block by a new upload,
//! pack bombs, `/blocks/fetch` memory (measured on the real binary), and
//! dedup's timing seen from outside, and the server cutting exactly as the
//! client does. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::common::process::{Serve, vm_hwm_kib};
use crate::common::{Backend, TestServer, mixed_data, random_data};
use bytes::Bytes;
use tessera_client::{ClientError, Remote};
use tessera_proto::BlockId;
use tessera_proto::api::BlockCodec;
use tessera_proto::block::MAX_BLOCK;
use tessera_server::blocks::codec;

on_both_backends!(
    fetch_is_capped_by_what_reading_costs,
    a_commit_never_references_a_damaged_block,
    racing_uploads_in_two_encodings_leave_every_block_readable,
    a_damaged_block_is_repaired_by_the_next_upload,
    pack_bombs_are_refused_before_they_cost,
    fetch_checks_the_total_first_and_streams,
    dedup_takes_as_long_as_a_fresh_upload,
    every_upload_path_cuts_as_the_client_does,
);

fn status(e: &ClientError) -> Option<u16> {
    e.status()
}

fn zstd_of(plain: &[u8]) -> Vec<u8> {
    let (c, z) = codec::compress(plain);
    assert_eq!(c, codec::Codec::Zstd, "test data compresses");
    z
}

/// Waits (up to 30 s) until `done` holds; false if it never did.
async fn eventually(mut done: impl AsyncFnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn racing_uploads_in_two_encodings_leave_every_block_readable(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    // The CLI sends zstd, the web (through the server) may differ: the same
    // new block arrives in two encodings at the same moment.
    let blocks: Vec<Vec<u8>> = (0..12).map(|i| mixed_data(1 << 20, 100 + i)).collect();
    let mut puts = Vec::new();
    for plain in &blocks {
        let id = BlockId::of(plain);
        let raw = Bytes::from(plain.clone());
        let z = Bytes::from(zstd_of(plain));
        let (a, b) = (alice.clone(), bob.clone());
        puts.push(tokio::spawn(async move {
            a.put_block(&id, BlockCodec::Raw, raw).await
        }));
        puts.push(tokio::spawn(async move {
            b.put_block(&id, BlockCodec::Zstd, z).await
        }));
    }
    for p in puts {
        p.await.unwrap().expect("upload accepted");
    }
    let mut unreadable = 0;
    for plain in &blocks {
        let id = BlockId::of(plain);
        for who in [&alice, &bob] {
            match who.get_block(&id).await {
                Ok(got) => assert_eq!(&got, plain),
                Err(e) => {
                    println!("block {id}: {e}");
                    unreadable += 1;
                }
            }
        }
    }
    assert_eq!(unreadable, 0, "reads of raced blocks failed");
    // The losing copies are removed: one object per block remains.
    assert!(
        eventually(async || s.store_objects().await.len() == blocks.len()).await,
        "{} objects for {} blocks",
        s.store_objects().await.len(),
        blocks.len()
    );
}

async fn a_damaged_block_is_repaired_by_the_next_upload(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;

    // Damage found by a read: the owner is told to send the block again,
    // and that upload repairs it at once.
    let plain = mixed_data(300_000, 7);
    let id = BlockId::of(&plain);
    alice
        .put_block(&id, BlockCodec::Zstd, Bytes::from(zstd_of(&plain)))
        .await
        .unwrap();
    let objects = s.store_objects().await;
    assert_eq!(objects.len(), 1);
    s.store.damage(&objects[0]).await;
    let err = alice.get_block(&id).await.unwrap_err();
    assert_eq!(status(&err), Some(500), "{err}");
    assert_eq!(
        alice.missing(&[id]).await.unwrap(),
        vec![id],
        "a damaged block counts as missing, so clients send it again"
    );
    alice
        .put_block(&id, BlockCodec::Raw, Bytes::from(plain.clone()))
        .await
        .unwrap();
    assert_eq!(alice.get_block(&id).await.unwrap(), plain);
    assert!(alice.missing(&[id]).await.unwrap().is_empty());
    // The damaged object is gone; the repaired one is not the same file.
    assert!(
        eventually(async || {
            let now = s.store_objects().await;
            now.len() == 1 && now[0] != objects[0]
        })
        .await,
        "objects: {:?}",
        s.store_objects().await
    );

    // Damage nobody has read yet: another user's upload of the same bytes
    // is not deduplicated against the damaged copy.
    let plain = mixed_data(400_000, 8);
    let id = BlockId::of(&plain);
    let before = s.store_objects().await;
    alice
        .put_block(&id, BlockCodec::Zstd, Bytes::from(zstd_of(&plain)))
        .await
        .unwrap();
    let fresh: Vec<String> = s
        .store_objects()
        .await
        .into_iter()
        .filter(|o| !before.contains(o))
        .collect();
    assert_eq!(fresh.len(), 1);
    s.store.damage(&fresh[0]).await;
    bob.put_block(&id, BlockCodec::Raw, Bytes::from(plain.clone()))
        .await
        .unwrap();
    assert!(
        eventually(async || {
            alice.get_block(&id).await.is_ok_and(|g| g == plain)
                && bob.get_block(&id).await.is_ok_and(|g| g == plain)
        })
        .await,
        "the damaged block stays unreadable after a new upload of its bytes"
    );
    assert!(
        eventually(async || s.store_objects().await.len() == 2).await,
        "objects: {:?}",
        s.store_objects().await
    );
}

/// A pack frame of `plain`, zstd-compressed.
fn zstd_frame(out: &mut Vec<u8>, plain: &[u8]) {
    tessera_proto::pack::encode_frame(out, &BlockId::of(plain), BlockCodec::Zstd, &zstd_of(plain));
}

async fn pack_bombs_are_refused_before_they_cost(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let zeros = vec![0u8; MAX_BLOCK];

    // One small frame that inflates to 16 MiB, repeated.
    let mut frame = Vec::new();
    zstd_frame(&mut frame, &zeros);
    let mut bomb = Vec::new();
    while bomb.len() < 290_000 {
        bomb.extend_from_slice(&frame);
    }
    let t = Instant::now();
    let res = r.put_pack(bomb.clone()).await;
    println!(
        "pack bomb: {} bytes, {} frames of {} bytes each inflating to 16 MiB: answered in {:.3} s",
        bomb.len(),
        bomb.len() / frame.len(),
        frame.len(),
        t.elapsed().as_secs_f64()
    );
    let err = match res {
        Ok(p) => panic!(
            "a pack repeating one block was accepted ({} blocks)",
            p.blocks.len()
        ),
        Err(e) => e,
    };
    assert_eq!(status(&err), Some(400), "{err}");
    assert!(err.to_string().contains("more than once"), "{err}");

    // One frame larger than a small block.
    let err = r.put_pack(frame).await.unwrap_err();
    assert_eq!(status(&err), Some(413), "{err}");
    assert!(err.to_string().contains("PUT /api/v1/blocks/"), "{err}");

    // Distinct small blocks that together inflate past the pack's cap.
    let mut many = Vec::new();
    let small = tessera_proto::pack::MAX_FRAME_PLAIN;
    let count = tessera_proto::pack::MAX_PACK_PLAIN / small + 1;
    for i in 0..count {
        let mut plain = vec![0u8; small];
        plain[..8].copy_from_slice(&(i as u64).to_le_bytes());
        zstd_frame(&mut many, &plain);
    }
    let t = Instant::now();
    let err = r.put_pack(many).await.unwrap_err();
    println!(
        "{count} distinct 256 KiB blocks (inflating past the cap): refused in {:.3} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(status(&err), Some(413), "{err}");
    assert!(err.to_string().contains("fewer"), "{err}");

    // Nothing was stored, and an ordinary pack still goes through.
    assert!(s.store_objects().await.is_empty());
    assert_eq!(r.missing(&[BlockId::of(&zeros)]).await.unwrap().len(), 1);
    let mut ok = Vec::new();
    zstd_frame(&mut ok, &vec![1u8; 200_000]);
    zstd_frame(&mut ok, &vec![2u8; 200_000]);
    assert_eq!(r.put_pack(ok).await.unwrap().blocks.len(), 2);
}

// ---- the real binary, for memory ----

const PASSWORD: &str = "blocks-test-password";

fn reset_hwm(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

async fn fetch_checks_the_total_first_and_streams(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::new(&dir.path().join("data"))
        .backend(b)
        .await
        .admin_password(PASSWORD)
        .start();
    let (pid, url) = (server.pid(), server.url());
    let anon = Remote::new(&url, None).unwrap();
    let token = anon.login("admin", PASSWORD, "test").await.unwrap().token;
    let r = anon.with_token(token);
    // Incompressible 16 MiB blocks: each is stored, and sent, at full size.
    let blocks: Vec<Vec<u8>> = (0..3).map(|i| random_data(MAX_BLOCK, 30 + i)).collect();
    for plain in &blocks {
        r.put_block(
            &BlockId::of(plain),
            BlockCodec::Raw,
            Bytes::from(plain.clone()),
        )
        .await
        .unwrap();
    }
    let a = BlockId::of(&blocks[0]);

    // One block named 40 times.
    tokio::time::sleep(Duration::from_millis(200)).await;
    reset_hwm(pid);
    let base = vm_hwm_kib(pid);
    let res = r.fetch_blocks(&[a; 40]).await;
    let grew = vm_hwm_kib(pid).saturating_sub(base);
    println!(
        "fetch of one 16 MiB block named 40 times: server peak RSS {} MiB before, grew by {} MiB",
        base / 1024,
        grew / 1024
    );
    assert!(grew < 128 << 10, "the server grew by {} MiB", grew / 1024);
    let got = res.expect("a repeated id is answered once");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], (a, blocks[0].clone()));

    // Three distinct 16 MiB blocks: over the answer's cap, refused before
    // any is read.
    let ids: Vec<BlockId> = blocks.iter().map(|p| BlockId::of(p)).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    reset_hwm(pid);
    let base = vm_hwm_kib(pid);
    let err = r.fetch_blocks(&ids).await.unwrap_err();
    let grew = vm_hwm_kib(pid).saturating_sub(base);
    println!(
        "fetch of three 16 MiB blocks (over the cap): server peak RSS grew by {} MiB",
        grew / 1024
    );
    assert!(grew < 24 << 10, "the server grew by {} MiB", grew / 1024);
    assert_eq!(status(&err), Some(400), "{err}");
    assert!(err.to_string().contains("fewer"), "{err}");

    // What fits arrives in the order first asked.
    let small = random_data(1 << 20, 40);
    let s = BlockId::of(&small);
    r.put_block(&s, BlockCodec::Raw, Bytes::from(small.clone()))
        .await
        .unwrap();
    let got = r.fetch_blocks(&[s, a, s]).await.unwrap();
    assert_eq!(got, vec![(s, small), (a, blocks[0].clone())]);
}

/// A block known to be damaged counts as missing for a commit too, even
/// when the same block list was committed (and its hash checked) before:
/// the client is told to send it again, so the file is never made of bytes
/// that cannot be read.
async fn a_commit_never_references_a_damaged_block(b: Backend) {
    use tessera_proto::api::{BlockRef, CommitRequest};
    use tessera_proto::block::CHUNKER;
    use tessera_proto::error::ErrorCode;
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let plain = mixed_data(300_000, 9);
    let id = BlockId::of(&plain);
    alice
        .put_block(&id, BlockCodec::Zstd, Bytes::from(zstd_of(&plain)))
        .await
        .unwrap();
    let commit = |path: &str| CommitRequest {
        reuse: Vec::new(),
        path: path.into(),
        base_rev: None,
        size: plain.len() as u64,
        content_hash: tessera_proto::ContentHash::from(blake3::hash(&plain)),
        chunker: CHUNKER.into(),
        blocks: vec![BlockRef {
            id,
            size: plain.len() as u64,
        }],
    };
    alice.commit(&commit("/a.bin")).await.unwrap();
    let objects = s.store_objects().await;
    assert_eq!(objects.len(), 1);
    s.store.damage(&objects[0]).await;
    // A read finds the damage and records it.
    assert_eq!(status(&alice.get_block(&id).await.unwrap_err()), Some(500));
    let err = alice.commit(&commit("/b.bin")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MissingBlocks), "{err}");
}

/// Blocks that compress to almost nothing still cost their plain size to
/// read (each is decompressed and re-hashed): a fetch is capped by that,
/// not by the few bytes stored.
async fn fetch_is_capped_by_what_reading_costs(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let mut ids = Vec::new();
    for i in 0..3u8 {
        let mut plain = vec![0u8; MAX_BLOCK];
        plain[0] = i;
        let id = BlockId::of(&plain);
        r.put_block(&id, BlockCodec::Zstd, Bytes::from(zstd_of(&plain)))
            .await
            .unwrap();
        ids.push(id);
    }
    let err = r.fetch_blocks(&ids).await.unwrap_err();
    assert_eq!(status(&err), Some(400), "{err}");
    assert!(err.to_string().contains("fewer"), "{err}");
    assert_eq!(r.fetch_blocks(&ids[..1]).await.unwrap().len(), 1);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn dedup_takes_as_long_as_a_fresh_upload(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let rounds = 8;
    let (mut fresh, mut known) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        // Alice stores a block; Bob uploads it (a guessed file someone
        // holds) and a block nobody holds, in turn (which goes first
        // alternates), each once the store is quiet again.
        let held = random_data(MAX_BLOCK, 1000 + i);
        let new = random_data(MAX_BLOCK, 2000 + i);
        alice
            .put_block(
                &BlockId::of(&held),
                BlockCodec::Raw,
                Bytes::from(held.clone()),
            )
            .await
            .unwrap();
        let mut order = [(&held, &mut known, 0), (&new, &mut fresh, 1)];
        if i % 2 == 1 {
            order.reverse();
        }
        for (plain, times, added) in order {
            let settled = s.store_objects().await.len() + added;
            let body = Bytes::from(plain.clone());
            let t = Instant::now();
            bob.put_block(&BlockId::of(plain), BlockCodec::Raw, body)
                .await
                .unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            // Bob's copy of Alice's block is removed after the answer.
            assert!(
                eventually(async || s.store_objects().await.len() == settled).await,
                "{} objects, {settled} expected",
                s.store_objects().await.len()
            );
        }
        assert_eq!(bob.get_block(&BlockId::of(&held)).await.unwrap(), held);
    }
    println!(
        "16 MiB block upload, median of {rounds}: held by someone else {:.1} ms \
         (min {:.1}, max {:.1}); held by nobody {:.1} ms (min {:.1}, max {:.1})",
        median(&mut known),
        known[0],
        known[known.len() - 1],
        median(&mut fresh),
        fresh[0],
        fresh[fresh.len() - 1],
    );
}

/// The block list the server recorded for `path`.
async fn blocks_of(r: &Remote, path: &str) -> Vec<(BlockId, u64)> {
    let list = r.block_list(path, None).await.unwrap();
    assert_eq!(list.chunker, tessera_proto::block::CHUNKER);
    list.blocks.iter().map(|b| (b.id, b.size)).collect()
}

/// One TUS PATCH of `piece` at `offset`; the new offset.
async fn tus_patch(r: &Remote, at: &str, offset: u64, piece: &[u8]) -> u64 {
    let resp = r
        .request(reqwest::Method::PATCH, at)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(piece.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::NO_CONTENT);
    resp.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends `data` over TUS to `/tus.bin` in pieces that end mid-block, so
/// the session's tail is carried from request to request.
async fn tus_upload(r: &Remote, data: &[u8], pieces: &[usize]) {
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let created = r
        .request(reqwest::Method::POST, "/tus/")
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", format!("path {}", b64("/tus.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap();
    let at = location
        .strip_prefix(tessera_proto::API_PREFIX)
        .unwrap()
        .to_owned();
    let mut offset = 0usize;
    for &len in pieces.iter().chain([&usize::MAX]) {
        let end = offset.saturating_add(len).min(data.len());
        let next = tus_patch(r, &at, offset as u64, &data[offset..end]).await;
        assert_eq!(next, end as u64);
        offset = end;
        if offset == data.len() {
            break;
        }
    }
}

/// The same bytes make the same blocks whichever way they arrive: cut by
/// the client (`tessera put`'s upload), by the server from a simple PUT,
/// and by the server from a TUS session sent in pieces.
async fn every_upload_path_cuts_as_the_client_does(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    // About five blocks, compressible and not.
    let mut data = mixed_data(14 << 20, 21);
    data.extend_from_slice(&random_data(9 << 20, 22));
    let expected: Vec<(BlockId, u64)> = tessera_proto::block::chunker(&data[..])
        .map(|c| {
            let c = c.unwrap();
            (BlockId::of(&c.data), c.length as u64)
        })
        .collect();
    assert!(expected.len() >= 4, "{} blocks", expected.len());

    let local = s.scratch("client.bin");
    std::fs::write(&local, &data).unwrap();
    tessera_client::transfer::upload_file(
        &r,
        &local,
        "/client.bin",
        None,
        crate::common::no_progress(),
    )
    .await
    .unwrap();
    assert_eq!(blocks_of(&r, "/client.bin").await, expected, "client");

    r.upload("/put.bin", None, reqwest::Body::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(blocks_of(&r, "/put.bin").await, expected, "simple PUT");

    // Pieces of 3 MiB + 1 byte, then 7 MiB, then the rest: every request
    // ends inside a block.
    tus_upload(&r, &data, &[(3 << 20) + 1, 7 << 20]).await;
    assert_eq!(blocks_of(&r, "/tus.bin").await, expected, "TUS");
}

/// The metadata work of a 2,000-block file (about 8 GiB): asking which
/// blocks are missing, recording them, committing the list. Run by hand
/// for docs/PERFORMANCE.md:
/// `cargo test -p tessera --test e2e -- --ignored --nocapture metadata_of_2000_blocks`
async fn metadata_of_2000_blocks(b: Backend) {
    use tessera_server::meta::{BlockLoc, Meta, NewRevision};
    const N: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let url = match b {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display()),
        Backend::Postgres => crate::common::process::fresh_postgres().await,
    };
    let meta = Meta::connect(&url, tessera_server::notify::Publisher::silent())
        .await
        .unwrap();
    let user = meta.create_user("alice", "x").await.unwrap();
    let blocks: Vec<(BlockId, u64)> = (0..N)
        .map(|i| (BlockId::of(&(i as u64).to_le_bytes()), 4 << 20))
        .collect();
    let ids: Vec<BlockId> = blocks.iter().map(|(id, _)| *id).collect();
    let records: Vec<_> = blocks
        .iter()
        .map(|(id, len)| {
            let loc = BlockLoc {
                object: format!("objects/{id}"),
                offset: 0,
                length: *len,
            };
            (*id, loc, *len)
        })
        .collect();
    let t = Instant::now();
    assert_eq!(meta.missing_blocks(user.id, &ids).await.unwrap().len(), N);
    let missing = t.elapsed();
    let t = Instant::now();
    meta.record_blocks(user.id, &records).await.unwrap();
    let record = t.elapsed();
    let new = NewRevision {
        ns: user.root_ns,
        user_id: user.id,
        path: tessera_proto::RemotePath::parse("/big.bin").unwrap(),
        base_rev: None,
        size: blocks.iter().map(|(_, len)| len).sum(),
        content_hash: tessera_proto::ContentHash([7; 32]),
        chunker: tessera_proto::block::CHUNKER.to_owned(),
        blocks,
        device: "bench".into(),
    };
    let t = Instant::now();
    meta.commit(&new).await.unwrap();
    let commit = t.elapsed();
    println!(
        "{}: {N} blocks: missing {missing:.1?}, record {record:.1?}, commit {commit:.1?}",
        meta.backend_name()
    );
}

mod timing {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, run by hand"]
    async fn metadata_of_2000_blocks_sqlite() {
        super::metadata_of_2000_blocks(crate::common::Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, run by hand"]
    async fn metadata_of_2000_blocks_postgres() {
        super::metadata_of_2000_blocks(crate::common::Backend::Postgres).await
    }
}
