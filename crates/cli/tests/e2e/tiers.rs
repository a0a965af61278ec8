//! Copies and tiers: every object is in each replica before its upload is
//! acknowledged; bit rot in any copy is found by the scrub and repaired
//! from a sound copy, and a download never returns wrong bytes; blocks of
//! long-untouched files move to the cold store, which then serves them.
//! SQLite and PostgreSQL. The main store is the suite's (a folder, or S3);
//! the replica and the cold store are folders on every run, so that a test
//! can put a file in a replica's way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use crate::common::process::{command, finish_async, said};
use crate::common::{Backend, StoreView, TestServer, random_data};
use tessera_client::Remote;
use tessera_client::transfer::{SmallFile, upload_small_files};

on_both_backends!(
    an_upload_is_in_every_replica_before_it_is_acknowledged,
    scrub_finds_and_repairs_every_flipped_byte,
    blocks_of_untouched_files_move_to_the_cold_store,
);

fn replica_dir(s: &TestServer) -> PathBuf {
    s.dir.path().join("replica")
}

fn replica(s: &TestServer) -> StoreView {
    StoreView::Folder(replica_dir(s))
}

/// A server whose one replica is a folder beside its data folder.
async fn with_replica(b: Backend) -> TestServer {
    TestServer::start_with(b, |c| {
        let replica = c.data_dir.parent().unwrap().join("replica");
        c.replica_stores = vec![format!("file://{}", replica.display())];
        c.scrub_interval_secs = 3600;
    })
    .await
}

async fn admin(s: &TestServer) -> Remote {
    s.login("admin", &s.admin_password, "console").await
}

async fn fetch(r: &Remote, path: &str) -> Option<Vec<u8>> {
    let resp = r.download(path, None).await.ok()?;
    resp.bytes().await.ok().map(|b| b.to_vec())
}

/// Uploads a large file and a folder of small (packed) files.
async fn upload_some(s: &TestServer, alice: &Remote) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..6 {
        let path = if i == 0 {
            "/big.bin".to_owned()
        } else {
            format!("/f{i}.bin")
        };
        let data = random_data(200_000 + 100_000 * i, i as u64 + 1);
        alice
            .upload(&path, None, reqwest::Body::from(data.clone()))
            .await
            .unwrap();
        files.push((path, data));
    }
    let local = s.scratch("small");
    std::fs::create_dir_all(&local).unwrap();
    let mut list = Vec::new();
    for i in 0..30 {
        let data = random_data(5_000 + i, 100 + i as u64);
        let path = local.join(format!("f{i}"));
        std::fs::write(&path, &data).unwrap();
        list.push(SmallFile {
            local: path,
            remote: format!("/small/f{i}"),
            base_rev: None,
        });
        files.push((format!("/small/f{i}"), data));
    }
    for r in upload_small_files(alice, &list).await.unwrap() {
        r.unwrap();
    }
    files
}

async fn an_upload_is_in_every_replica_before_it_is_acknowledged(b: Backend) {
    let s = with_replica(b).await;
    let alice = s.user("alice").await;
    upload_some(&s, &alice).await;
    let main = s.store_objects().await;
    assert!(main.len() >= 7, "{main:?}");
    assert_eq!(replica(&s).objects().await, main);
    for name in &main {
        assert!(
            s.store.read(name).await == replica(&s).read(name).await,
            "{name}: the replica holds the same bytes"
        );
    }

    // A replica that cannot take the write fails the upload, and nothing
    // shows.
    let blocked = replica_dir(&s).join("blocks");
    std::fs::rename(&blocked, replica_dir(&s).join("moved")).unwrap();
    std::fs::write(&blocked, b"in the way").unwrap();
    let err = alice
        .upload("/x.bin", None, reqwest::Body::from(random_data(300_000, 9)))
        .await
        .unwrap_err();
    assert!(err.status().is_some_and(|s| s >= 500), "{err}");
    assert!(
        alice
            .list("/")
            .await
            .unwrap()
            .entries
            .iter()
            .all(|e| e.name != "x.bin")
    );
    std::fs::remove_file(&blocked).unwrap();
    std::fs::rename(replica_dir(&s).join("moved"), &blocked).unwrap();
    let data = random_data(300_000, 9);
    alice
        .upload("/x.bin", None, reqwest::Body::from(data.clone()))
        .await
        .unwrap();
    assert!(
        fetch(&alice, "/x.bin").await.unwrap() == data,
        "x.bin reads back"
    );
}

async fn scrub_finds_and_repairs_every_flipped_byte(b: Backend) {
    let s = with_replica(b).await;
    let alice = s.user("alice").await;
    let files = upload_some(&s, &alice).await;
    let names = s.store_objects().await;

    // Rot in the main copy of every other object, and in the replica's
    // copy of the rest.
    let mut flipped = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let copy = if i % 2 == 0 { &s.store } else { &replica(&s) };
        copy.flip(name, 97 * i + 13, 0x20).await;
        flipped.push(name.clone());
    }
    let ran = admin(&s).await.run_worker("scrub").await.unwrap();
    assert!(ran.last_done > 0, "{ran:?}");
    assert_eq!(ran.last_error, None);
    for name in &flipped {
        assert!(
            s.store.read(name).await == replica(&s).read(name).await,
            "{name} was repaired: both copies agree again"
        );
    }
    for (path, data) in &files {
        assert!(
            fetch(&alice, path).await.as_ref() == Some(data),
            "{path} reads back whole"
        );
    }
    let out = fsck(&s).await;
    assert!(out.status.success(), "{}", said(&out));

    // Rot in both copies of every single-block object: a download fails
    // (or stops short), and never answers wrong bytes.
    for name in names.iter().filter(|n| n.starts_with("blocks/")) {
        s.store.flip(name, 5, 0x20).await;
        replica(&s).flip(name, 5, 0x20).await;
    }
    for (path, data) in files.iter().filter(|(p, _)| !p.starts_with("/small/")) {
        let got = fetch(&alice, path).await;
        assert!(
            got.as_ref().is_none_or(|g| g.len() < data.len()),
            "{path}: a download of a lost block must fail"
        );
    }
    admin(&s).await.run_worker("scrub").await.unwrap();
    let out = fsck(&s).await;
    let text = said(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("alice /big.bin rev 1"), "{text}");
}

async fn fsck(s: &TestServer) -> Output {
    let install = s.install_args();
    let mut args = vec!["admin", "fsck"];
    args.extend(install.iter().map(String::as_str));
    finish_async(command(&s.scratch("cfg"), &args), None).await
}

async fn blocks_of_untouched_files_move_to_the_cold_store(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        let cold = c.data_dir.parent().unwrap().join("cold");
        c.cold_store = Some(format!("file://{}", cold.display()));
        c.cold_after_secs = 2;
        c.gc_grace_secs = 0;
    })
    .await;
    let cold = StoreView::Folder(s.dir.path().join("cold"));
    let alice = s.user("alice").await;
    let old = random_data(2 << 20, 7);
    alice
        .upload("/old.bin", None, reqwest::Body::from(old.clone()))
        .await
        .unwrap();
    let old2 = random_data(1 << 20, 9);
    alice
        .upload("/old2.bin", None, reqwest::Body::from(old2.clone()))
        .await
        .unwrap();
    // Age itself is the subject: a file's age is its modification time on
    // the wall clock, which the test clock does not move.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fresh = random_data(1 << 20, 8);
    alice
        .upload("/fresh.bin", None, reqwest::Body::from(fresh.clone()))
        .await
        .unwrap();
    let hot_before = s.store_bytes().await;

    let ran = admin(&s).await.run_worker("cold").await.unwrap();
    assert!(ran.last_done >= 1, "the old file's blocks moved: {ran:?}");
    admin(&s).await.run_worker("gc").await.unwrap();
    let hot_after = s.store_bytes().await;
    let cold_bytes = cold.bytes().await;
    assert!(
        hot_before - hot_after >= (old.len() + old2.len()) as u64 * 99 / 100,
        "the hot store shrank by what moved: {hot_before} → {hot_after}"
    );
    assert!(
        cold_bytes >= (old.len() + old2.len()) as u64,
        "{cold_bytes}"
    );
    assert!(hot_after >= fresh.len() as u64, "the fresh file stayed hot");

    assert!(
        fetch(&alice, "/old.bin").await.unwrap() == old,
        "the cold file reads back"
    );
    assert!(
        fetch(&alice, "/fresh.bin").await.unwrap() == fresh,
        "the hot one too"
    );
    // The same bytes again dedup against the cold copy.
    alice
        .upload("/copy.bin", None, reqwest::Body::from(old.clone()))
        .await
        .unwrap();
    assert!(
        fetch(&alice, "/copy.bin").await.unwrap() == old,
        "the copy reads back"
    );
    admin(&s).await.run_worker("gc").await.unwrap();
    assert!(
        s.store_bytes().await < hot_after + 64 * 1024,
        "nothing was stored twice: {hot_after} → {}",
        s.store_bytes().await
    );
    assert_eq!(cold.bytes().await, cold_bytes);

    // Rot in the cold pack's first block: that file fails to read (and
    // the block is marked), the other file in the pack reads on; the same
    // bytes uploaded again repair it, and the pack's other block stays.
    let pack = cold.objects().await.remove(0);
    assert!(pack.starts_with("cold/packs/"), "{pack}");
    cold.flip(&pack, 100, 0x20).await;
    let a = fetch(&alice, "/old.bin").await;
    let b = fetch(&alice, "/old2.bin").await;
    let (bad, good) = if a.as_ref() == Some(&old) {
        (&old2, &old)
    } else {
        (&old, &old2)
    };
    assert!(
        (a.as_ref() == Some(&old)) != (b.as_ref() == Some(&old2)),
        "exactly one of the two files reads"
    );
    alice
        .upload("/again.bin", None, reqwest::Body::from(bad.clone()))
        .await
        .unwrap();
    // What is checked is a deletion that must not come: it would come from
    // a task spawned after the answer, so there is no event to wait on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cold.exists(&pack).await,
        "the pack is kept: another block lives in it"
    );
    for (path, want) in [
        ("/old.bin", &old),
        ("/old2.bin", &old2),
        ("/again.bin", bad),
    ] {
        assert!(
            fetch(&alice, path).await.as_ref() == Some(want),
            "{path} reads back"
        );
    }
    let _ = good;
}
