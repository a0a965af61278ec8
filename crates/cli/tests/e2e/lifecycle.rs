//! The storage lifecycle seen from outside: collection frees what nobody
//! needs once its grace period has passed (and nothing a live file, the
//! trash or a kept revision needs), packs are compacted, orphans a crash
//! left are swept, and the retention schedule thins old revisions but
//! never a pinned one. SQLite and PostgreSQL, with the worker clock moved
//! instead of waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common::{Backend, TestServer, no_progress, random_data};
use tessera_client::Remote;
use tessera_client::transfer::{SmallFile, upload_file, upload_small_files};
use tessera_proto::BlockId;

on_both_backends!(
    collection_returns_the_store_to_its_baseline,
    mostly_empty_packs_are_compacted,
    collection_racing_uploads_of_the_same_content_loses_nothing,
    an_object_a_crash_left_behind_is_swept,
    retention_thins_old_revisions_but_keeps_pinned_ones,
    stored_text_is_recompressed_smaller_in_the_background,
    a_damaged_block_stays_put_while_its_pack_is_recompressed,
    an_edited_file_is_stored_as_a_delta_against_its_last_version,
);

const GRACE: u64 = 3600;

async fn start(b: Backend) -> TestServer {
    TestServer::start_with(b, |c| {
        c.gc_grace_secs = GRACE;
        c.trash_ttl_secs = 30 * 24 * 3600;
    })
    .await
}

async fn admin(s: &TestServer) -> Remote {
    s.login("admin", &s.admin_password, "console").await
}

async fn put(r: &Remote, path: &str, data: &[u8]) {
    r.upload(path, None, reqwest::Body::from(data.to_vec()))
        .await
        .unwrap_or_else(|e| panic!("upload {path}: {e}"));
}

async fn fetch(r: &Remote, path: &str) -> Vec<u8> {
    r.download(path, None)
        .await
        .unwrap_or_else(|e| panic!("download {path}: {e}"))
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Runs `gc` now and answers what it did.
async fn gc(s: &TestServer) -> u64 {
    admin(s).await.run_worker("gc").await.unwrap().last_done
}

async fn objects_under(s: &TestServer, prefix: &str) -> Vec<String> {
    s.store_objects()
        .await
        .into_iter()
        .filter(|name| name.starts_with(&format!("{prefix}/")))
        .collect()
}

/// Writes `count` small files of random bytes under `dir` on disk, for
/// the packed upload.
fn small_files(s: &TestServer, dir: &str, count: usize) -> Vec<(SmallFile, Vec<u8>)> {
    let local = s.scratch(dir);
    std::fs::create_dir_all(&local).unwrap();
    (0..count)
        .map(|i| {
            let data = random_data(8 * 1024 + i, 1000 + i as u64);
            let path = local.join(format!("f{i}"));
            std::fs::write(&path, &data).unwrap();
            let file = SmallFile {
                local: path,
                remote: format!("/{dir}/f{i}"),
                base_rev: None,
            };
            (file, data)
        })
        .collect()
}

async fn collection_returns_the_store_to_its_baseline(b: Backend) {
    let s = start(b).await;
    let alice = s.user("alice").await;
    let keep = random_data(2 << 20, 1);
    put(&alice, "/keep.bin", &keep).await;
    let trashed = random_data(1 << 20, 3);
    put(&alice, "/trashed.bin", &trashed).await;
    alice.delete("/trashed.bin").await.unwrap();
    let baseline = s.store_bytes().await;

    put(&alice, "/big.bin", &random_data(8 << 20, 2)).await;
    let files = small_files(&s, "small", 200);
    let list: Vec<SmallFile> = files.iter().map(|(f, _)| f.clone()).collect();
    for r in upload_small_files(&alice, &list).await.unwrap() {
        r.unwrap();
    }
    let grown = s.store_bytes().await;
    assert!(grown > baseline + (9 << 20), "{baseline} → {grown}");

    alice.delete("/big.bin").await.unwrap();
    alice.delete("/small").await.unwrap();
    for entry in alice.trash().await.unwrap().entries {
        if entry.path != "/trashed.bin" {
            alice.purge_trash(Some(&entry.id)).await.unwrap();
        }
    }
    // Within the grace period nothing goes.
    assert_eq!(gc(&s).await, 0);
    assert_eq!(s.store_bytes().await, grown);

    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    let done = gc(&s).await;
    assert!(done > 200, "collected and deleted: {done}");
    let after = s.store_bytes().await;
    assert!(
        after.abs_diff(baseline) * 50 <= baseline,
        "the store is back within 2% of {baseline} bytes: {after}"
    );
    assert!(
        objects_under(&s, "packs").await.is_empty(),
        "every pack went"
    );
    assert_eq!(fetch(&alice, "/keep.bin").await, keep);
    assert_eq!(s.running.meta().unreferenced_blocks().await.unwrap(), 0);
    // A second pass finds nothing left to do.
    assert_eq!(gc(&s).await, 0);
    // The trash kept what it holds.
    let id = alice.trash().await.unwrap().entries[0].id.clone();
    alice.restore_from_trash(&id, None).await.unwrap();
    assert_eq!(fetch(&alice, "/trashed.bin").await, trashed);
    // The same bytes uploaded again are stored again, and read back whole.
    let again = random_data(8 << 20, 2);
    put(&alice, "/big.bin", &again).await;
    assert_eq!(fetch(&alice, "/big.bin").await, again);
}

async fn mostly_empty_packs_are_compacted(b: Backend) {
    let s = start(b).await;
    let alice = s.user("alice").await;
    let files = small_files(&s, "small", 100);
    let list: Vec<SmallFile> = files.iter().map(|(f, _)| f.clone()).collect();
    for r in upload_small_files(&alice, &list).await.unwrap() {
        r.unwrap();
    }
    let packs_before = objects_under(&s, "packs").await;
    assert!(!packs_before.is_empty(), "small files travel in packs");
    let before = s.store_bytes().await;
    // Three files in four go.
    for (f, _) in files.iter().filter(|(f, _)| !f.remote.ends_with('0')) {
        if !f.remote.ends_with('4') && !f.remote.ends_with('8') {
            alice.delete(&f.remote).await.unwrap();
        }
    }
    alice.purge_trash(None).await.unwrap();
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    // The old packs are doomed now and deleted a pass later.
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    let packs_after = objects_under(&s, "packs").await;
    assert!(
        packs_after.iter().all(|p| !packs_before.contains(p)),
        "every mostly empty pack was rewritten: {packs_before:?} → {packs_after:?}"
    );
    let after = s.store_bytes().await;
    assert!(
        after * 100 < before * 40,
        "the store shrank to about the live share: {before} → {after}"
    );
    for (f, data) in &files {
        let kept = f.remote.ends_with('0') || f.remote.ends_with('4') || f.remote.ends_with('8');
        if kept {
            assert_eq!(&fetch(&alice, &f.remote).await, data, "{}", f.remote);
        }
    }
}

/// Long on purpose: rounds of uploads race the collector for a while,
/// then every file is read.
async fn collection_racing_uploads_of_the_same_content_loses_nothing(b: Backend) {
    // A grace of a second: blocks purged a moment ago are fair game, so
    // collection meets the other user's uploads of the same bytes.
    let s = TestServer::start_with(b, |c| c.gc_grace_secs = 1).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let rounds = 6u64;
    let content = |round: u64, i: u64| random_data(100_000 + i as usize, 100 * round + i);
    let dying = Duration::from_millis(1200);

    let users = async {
        for round in 0..rounds {
            // Alice's copies go: their blocks die a second later...
            for i in 0..5 {
                put(&alice, &format!("/a{round}/{i}"), &content(round, i)).await;
            }
            alice.delete(&format!("/a{round}")).await.unwrap();
            alice.purge_trash(None).await.unwrap();
            tokio::time::sleep(dying).await;
            // ...while Bob uploads the same bytes.
            for i in 0..5 {
                put(&bob, &format!("/b{round}/{i}"), &content(round, i)).await;
            }
            // Bob's own copy goes too, and comes back from a block he
            // still holds a claim to (so his client sends nothing first).
            bob.delete(&format!("/b{round}/0")).await.unwrap();
            bob.purge_trash(None).await.unwrap();
            tokio::time::sleep(dying).await;
            let local = s.scratch(&format!("b{round}-0"));
            std::fs::write(&local, content(round, 0)).unwrap();
            upload_file(&bob, &local, &format!("/b{round}/0"), None, no_progress())
                .await
                .unwrap();
        }
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let collector = async {
        let admin = admin(&s).await;
        let mut passes = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            admin.run_worker("gc").await.unwrap();
            passes += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        passes
    };
    let users = async {
        users.await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let ((), passes) = tokio::join!(users, collector);
    assert!(passes > 10, "the collector ran throughout: {passes} passes");
    tokio::time::sleep(dying).await;
    gc(&s).await;
    for round in 0..rounds {
        for i in 0..5 {
            let path = format!("/b{round}/{i}");
            assert_eq!(fetch(&bob, &path).await, content(round, i), "{path}");
        }
    }
}

async fn an_object_a_crash_left_behind_is_swept(b: Backend) {
    let s = start(b).await;
    let alice = s.user("alice").await;
    let keep = random_data(300_000, 3);
    put(&alice, "/keep.bin", &keep).await;
    let live = s.store_objects().await;
    // What a crash between an object's write and its record leaves: an
    // object nobody names. One from two hours ago, one from just now.
    let (old, young) = ("blocks/zz/orphan-old", "blocks/zz/orphan-young");
    s.store.write(old, &random_data(50_000, 4)).await;
    s.store.write(young, &random_data(50_000, 5)).await;
    let age = Duration::from_secs(2 * 3600);
    let dated = s.store.backdate(old, age);
    if !dated {
        // An S3 object keeps the time of its write: the worker clock
        // moves instead, which ages both, so only the old one is judged.
        println!("on S3 the young orphan is not checked: its time cannot be set");
        s.config.clock.advance(age);
    }

    // Swept objects are deleted a grace period after they are found.
    gc(&s).await;
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    assert!(
        !s.store.exists(old).await,
        "an old object nobody names is swept"
    );
    if dated {
        assert!(
            s.store.exists(young).await,
            "a young one may be a write under way"
        );
    }
    for object in &live {
        assert!(s.store.exists(object).await, "{object} is named and stays");
    }
    assert_eq!(fetch(&alice, "/keep.bin").await, keep);
}

async fn retention_thins_old_revisions_but_keeps_pinned_ones(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.gc_grace_secs = GRACE;
        c.retention.keep_all_secs = 3600;
        c.retention.daily_days = 0;
        c.retention.weekly_weeks = 0;
    })
    .await;
    let alice = s.user("alice").await;
    let versions: Vec<Vec<u8>> = (0..5).map(|i| random_data(400_000, 60 + i)).collect();
    for v in &versions {
        put(&alice, "/doc.bin", v).await;
    }
    let revs = alice.revisions("/doc.bin").await.unwrap().revisions;
    assert_eq!(revs.len(), 5);
    let second = revs.iter().map(|r| r.rev).min().unwrap() + 1;
    let pinned = alice.pin("/doc.bin", second, true).await.unwrap();
    assert!(pinned.pinned);
    let err = alice.pin("/doc.bin", 999, true).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");

    // Within the hour every revision stays.
    let ran = admin(&s).await.run_worker("retention").await.unwrap();
    assert_eq!(ran.last_done, 0);
    let before = s.store_bytes().await;

    s.config.clock.advance(Duration::from_secs(2 * 3600));
    let ran = admin(&s).await.run_worker("retention").await.unwrap();
    assert_eq!(
        ran.last_done, 3,
        "all but the current and the pinned revision go"
    );
    let left = alice.revisions("/doc.bin").await.unwrap().revisions;
    let mut kept: Vec<(i64, bool)> = left.iter().map(|r| (r.rev, r.pinned)).collect();
    kept.sort();
    let current = revs.iter().map(|r| r.rev).max().unwrap();
    assert_eq!(kept, [(second, true), (current, false)]);

    // Every revision still listed restores.
    alice.restore("/doc.bin", second).await.unwrap();
    assert_eq!(fetch(&alice, "/doc.bin").await, versions[1]);

    // The blocks only the removed revisions used are freed.
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    let after = s.store_bytes().await;
    assert!(
        after + 3 * 390_000 <= before,
        "three revisions' blocks are freed: {before} → {after}"
    );
    // Unpinned, it goes at the next pass (it is no longer current).
    alice.pin("/doc.bin", second, false).await.unwrap();
    admin(&s).await.run_worker("retention").await.unwrap();
    let left: Vec<i64> = alice
        .revisions("/doc.bin")
        .await
        .unwrap()
        .revisions
        .iter()
        .map(|r| r.rev)
        .collect();
    assert!(!left.contains(&second), "{left:?}");
}

/// This project's own sources: real text, a few hundred files, each
/// content once (a block shared by two files would blur what a test counts).
fn source_files() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    let mut seen = std::collections::HashSet::new();
    found
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .filter(|data| seen.insert(data.clone()))
        .collect()
}

/// Runs `recompress` until a step finds nothing left. (Steps after a busy
/// one run on their own, so what each did is not added up here.)
async fn recompress_all(s: &TestServer) {
    let admin = admin(s).await;
    for _ in 0..1000 {
        let ran = admin.run_worker("recompress").await.unwrap();
        assert_eq!(ran.last_error, None, "{ran:?}");
        if ran.state == tessera_client::remote::WorkerState::Idle {
            return;
        }
    }
    panic!("recompress never ran out of work");
}

async fn stored_text_is_recompressed_smaller_in_the_background(b: Backend) {
    let s = start(b).await;
    let alice = s.user("alice").await;
    let sources = source_files();
    let big: Vec<u8> = sources.concat();
    assert!(big.len() > 1 << 20, "{}", big.len());
    put(&alice, "/all.rs", &big).await;
    let noise = random_data(1 << 20, 5);
    put(&alice, "/noise.bin", &noise).await;
    let local = s.scratch("src");
    std::fs::create_dir_all(&local).unwrap();
    let mut small = Vec::new();
    for (i, data) in sources.iter().take(200).enumerate() {
        let path = local.join(format!("f{i}.rs"));
        std::fs::write(&path, data).unwrap();
        small.push(SmallFile {
            local: path,
            remote: format!("/src/f{i}.rs"),
            base_rev: None,
        });
    }
    for r in upload_small_files(&alice, &small).await.unwrap() {
        r.unwrap();
    }
    let mut files = vec![
        ("/all.rs".to_owned(), big),
        ("/noise.bin".to_owned(), noise),
    ];
    files.extend(
        small
            .iter()
            .map(|f| f.remote.clone())
            .zip(sources.iter().take(200).cloned()),
    );
    let objects = s.store_objects().await;
    let before = s.store_bytes().await;

    // Blocks stored a moment ago are left alone.
    recompress_all(&s).await;
    assert_eq!(s.store_objects().await, objects);

    s.config.clock.advance(Duration::from_secs(3601));
    recompress_all(&s).await;
    for (path, data) in &files {
        assert!(&fetch(&alice, path).await == data, "{path} reads back");
    }
    // The old objects go after the grace period.
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    gc(&s).await;
    let after = s.store_bytes().await;
    eprintln!("recompressed: {before} → {after} bytes");
    // The noise is stored raw and stays as it is: the text shrinks.
    let text = before - (1 << 20);
    assert!(
        before.saturating_sub(after) > text / 10,
        "the text's share of the store shrank by a tenth or more: {before} → {after}"
    );
    // Every object of text was rewritten: source code packed at the
    // clients' level 3 shrinks by about 8% at level 12, well over the 3%
    // an object must gain to be rewritten.
    let now = s.store_objects().await;
    let kept: Vec<&String> = now.iter().filter(|o| objects.contains(o)).collect();
    assert_eq!(
        kept.len(),
        1,
        "only the noise's object stays as it was: {kept:?}"
    );
    for (path, data) in &files {
        assert!(&fetch(&alice, path).await == data, "{path} reads back");
    }
    // Everything is done: nothing is rewritten twice.
    recompress_all(&s).await;
    assert_eq!(s.store_objects().await, now);
}

async fn a_damaged_block_stays_put_while_its_pack_is_recompressed(b: Backend) {
    let s = start(b).await;
    let alice = s.user("alice").await;
    let local = s.scratch("src");
    std::fs::create_dir_all(&local).unwrap();
    let mut files = Vec::new();
    for (i, data) in source_files().into_iter().take(40).enumerate() {
        let path = local.join(format!("f{i}.rs"));
        std::fs::write(&path, &data).unwrap();
        let file = SmallFile {
            local: path,
            remote: format!("/src/f{i}.rs"),
            base_rev: None,
        };
        files.push((file, data));
    }
    let list: Vec<SmallFile> = files.iter().map(|(f, _)| f.clone()).collect();
    for r in upload_small_files(&alice, &list).await.unwrap() {
        r.unwrap();
    }
    let packs = objects_under(&s, "packs").await;
    assert_eq!(packs.len(), 1, "{packs:?}");
    // Rot in the pack's first block.
    s.store.flip(&packs[0], 100, 0x20).await;

    s.config.clock.advance(Duration::from_secs(3601));
    recompress_all(&s).await;
    let mut lost = Vec::new();
    for (f, data) in &files {
        let got = alice.download(&f.remote, None).await;
        let whole = match got {
            Ok(resp) => resp.bytes().await.is_ok_and(|b| b[..] == data[..]),
            Err(_) => false,
        };
        if !whole {
            lost.push((f.remote.clone(), data.clone()));
        }
    }
    assert_eq!(lost.len(), 1, "only the damaged file fails: {lost:?}");
    let repacked = objects_under(&s, "packs").await;
    assert!(
        repacked.contains(&packs[0]) && repacked.len() == 2,
        "the sound blocks moved to a new pack, the damaged one stayed: {repacked:?}"
    );

    // The same bytes uploaded again repair the block; the repaired copy is
    // recompressed in its turn, and everything reads back.
    let (path, data) = &lost[0];
    put(&alice, "/again.rs", data).await;
    let copy: Vec<String> = s
        .store_objects()
        .await
        .into_iter()
        .filter(|o| !repacked.contains(o))
        .collect();
    assert_eq!(copy.len(), 1, "one new copy: {copy:?}");
    s.config.clock.advance(Duration::from_secs(3601));
    recompress_all(&s).await;
    // The copy it replaced goes after the grace period.
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    let after = s.store_objects().await;
    assert!(
        !after.contains(&copy[0]),
        "the repaired copy was rewritten: {copy:?} → {after:?}"
    );
    assert!(&fetch(&alice, path).await == data, "{path} reads back");
    for (f, data) in &files {
        assert!(&fetch(&alice, &f.remote).await == data, "{}", f.remote);
    }

    // Rot in that recompressed copy, found by a read and repaired by an
    // upload: the new copy is as it arrived, so it is recompressed again.
    let recompressed: Vec<String> = after
        .iter()
        .filter(|o| o.starts_with("blocks/") && !repaired_before(o, &repacked, &copy))
        .cloned()
        .collect();
    assert_eq!(recompressed.len(), 1, "{after:?}");
    s.store.flip(&recompressed[0], 100, 0x20).await;
    let read = alice.download(path, None).await;
    let whole = match read {
        Ok(resp) => resp.bytes().await.is_ok_and(|b| b[..] == data[..]),
        Err(_) => false,
    };
    assert!(!whole, "a damaged block never reads back");
    put(&alice, "/again2.rs", data).await;
    let third: Vec<String> = s
        .store_objects()
        .await
        .into_iter()
        .filter(|o| !after.contains(o))
        .collect();
    assert_eq!(third.len(), 1, "one new copy: {third:?}");
    s.config.clock.advance(Duration::from_secs(3601));
    recompress_all(&s).await;
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    assert!(
        !s.store_objects().await.contains(&third[0]),
        "the second repair was recompressed too"
    );
    assert!(&fetch(&alice, path).await == data, "{path} reads back");
}

/// Whether `object` was in the store before the recompression of the
/// repaired copy.
fn repaired_before(object: &str, repacked: &[String], copy: &[String]) -> bool {
    repacked.iter().chain(copy).any(|o| o == object)
}

/// A one-line edit of a text file: once recompressed, the new version is
/// stored as a delta against the old, and the two take less room than the
/// first took as it arrived. Once the old revisions are gone, the current
/// version is stored whole again and the old blocks go; damage to a base
/// is repaired by uploading the new version's bytes again.
async fn an_edited_file_is_stored_as_a_delta_against_its_last_version(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.gc_grace_secs = GRACE;
        c.trash_ttl_secs = 30 * 24 * 3600;
        c.retention.keep_all_secs = 3600;
        c.retention.daily_days = 0;
        c.retention.weekly_weeks = 0;
    })
    .await;
    let alice = s.user("alice").await;
    let baseline = s.store_bytes().await;
    let mut first: Vec<u8> = source_files().concat();
    first.truncate(200_000);
    put(&alice, "/notes.rs", &first).await;
    let one = s.store_bytes().await - baseline;
    let mid = first.len() / 2;
    let second = [
        &first[..mid],
        b"// a line inserted in the middle\n",
        &first[mid..],
    ]
    .concat();
    put(&alice, "/notes.rs", &second).await;
    let revs = alice.revisions("/notes.rs").await.unwrap().revisions;
    let old_rev = revs.iter().map(|r| r.rev).min().unwrap();

    s.config.clock.advance(Duration::from_secs(3601));
    recompress_all(&s).await;
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    gc(&s).await;
    let both = s.store_bytes().await - baseline;
    eprintln!("one version as it arrived: {one} bytes; both, recompressed: {both}");
    assert!(
        both < one * 9 / 10,
        "both versions take less room than the first did as it arrived: {one} → {both}"
    );
    assert!(fetch(&alice, "/notes.rs").await == second);
    let old = alice.download("/notes.rs", Some(old_rev)).await.unwrap();
    assert!(old.bytes().await.unwrap()[..] == first[..]);

    // A third version: its note names the second, itself a delta, so it is
    // stored against the first, which stays whole.
    let third = [
        &second[..1000],
        b"// and one near the top\n",
        &second[1000..],
    ]
    .concat();
    put(&alice, "/notes.rs", &third).await;
    s.config.clock.advance(Duration::from_secs(3601));
    recompress_all(&s).await;
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    gc(&s).await;
    let all = s.store_bytes().await - baseline;
    assert!(
        all < both + 2000,
        "the third version took {} bytes",
        all - both
    );
    let revs = alice.revisions("/notes.rs").await.unwrap().revisions;
    assert_eq!(revs.len(), 3);
    for (r, want) in numbers_sorted(&alice)
        .await
        .into_iter()
        .zip([&first, &second, &third])
    {
        let got = alice.download("/notes.rs", Some(r)).await.unwrap();
        assert!(got.bytes().await.unwrap()[..] == want[..], "revision {r}");
    }
    // Served whole, by every route that sends blocks, never as a delta.
    let (b2, b3) = (BlockId::of(&second), BlockId::of(&third));
    assert!(alice.get_block(&b3).await.unwrap() == third);
    let fetched = alice.fetch_blocks(&[b2, b3]).await.unwrap();
    assert_eq!(fetched.len(), 2);
    assert!(fetched[0] == (b2, second.clone()) && fetched[1] == (b3, third.clone()));
    let patched = alice
        .get_block_patched(&b3, &b2, second.clone())
        .await
        .unwrap();
    assert!(patched == third);
    // The consistency check reads every block, deltas through their base.
    let out = crate::fsck::fsck(&s, &[]).await;
    let said = crate::common::process::said(&out);
    assert!(
        out.status.success() && said.contains("no problems found"),
        "{said}"
    );

    // The first revision goes (the second is pinned). The two deltas are
    // stored whole again and the first version's block goes: the store
    // holds what the revisions use. The recompression then stores the
    // second version against the third.
    let second_rev = numbers_sorted(&alice).await[1];
    alice.pin("/notes.rs", second_rev, true).await.unwrap();
    s.config.clock.advance(Duration::from_secs(2 * 3600));
    let ran = admin(&s).await.run_worker("retention").await.unwrap();
    assert_eq!(ran.last_done, 1, "{ran:?}");
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    gc(&s).await;
    s.config.clock.advance(Duration::from_secs(3601));
    recompress_all(&s).await;
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    gc(&s).await;
    let revs = numbers_sorted(&alice).await;
    for (r, want) in revs.into_iter().zip([&second, &third]) {
        let got = alice.download("/notes.rs", Some(r)).await.unwrap();
        assert!(got.bytes().await.unwrap()[..] == want[..], "revision {r}");
    }
    let kept = s.store_bytes().await - baseline;
    assert!(
        kept < one,
        "{kept} bytes for the two versions the revisions still use"
    );
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    let objects = s.store_objects().await;
    assert_eq!(
        objects.len(),
        1,
        "the first version's block is gone; the other two are in one pack: {objects:?}"
    );
    alice.pin("/notes.rs", second_rev, false).await.unwrap();
    let ran = admin(&s).await.run_worker("retention").await.unwrap();
    assert_eq!(ran.last_done, 1, "{ran:?}");
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    gc(&s).await;
    assert!(fetch(&alice, "/notes.rs").await == third);

    // A fourth version, stored against the third. Rot in that base: the
    // current version no longer reads, and uploading its bytes again (any
    // device that holds it) stores it whole.
    let fourth = [&third[..5000], b"// and a fourth\n", &third[5000..]].concat();
    put(&alice, "/notes.rs", &fourth).await;
    s.config.clock.advance(Duration::from_secs(3601));
    recompress_all(&s).await;
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    gc(&s).await;
    gc(&s).await;
    let objects = s.store_objects().await;
    assert_eq!(objects.len(), 2, "{objects:?}");
    let mut sized = Vec::new();
    for o in &objects {
        sized.push((s.store.read(o).await.len(), o.clone()));
    }
    sized.sort();
    let (delta_len, _) = &sized[0];
    let (_, base) = &sized[1];
    assert!(*delta_len < 2000, "the edit is stored in {delta_len} bytes");
    s.store.damage(base).await;
    // Found through the third version's own read: the fourth, never read,
    // is then missing too, so the next upload of its bytes repairs it.
    let third_rev = numbers_sorted(&alice).await[0];
    let read = alice.download("/notes.rs", Some(third_rev)).await;
    let whole = match read {
        Ok(resp) => resp.bytes().await.is_ok_and(|b| b[..] == third[..]),
        Err(_) => false,
    };
    assert!(!whole, "a damaged block never reads back");
    let b4 = BlockId::of(&fourth);
    assert_eq!(alice.missing(&[b4]).await.unwrap(), [b4]);
    let read = alice.download("/notes.rs", None).await;
    let whole = match read {
        Ok(resp) => resp.bytes().await.is_ok_and(|b| b[..] == fourth[..]),
        Err(_) => false,
    };
    assert!(!whole, "a block whose base is damaged never reads back");
    put(&alice, "/again.rs", &fourth).await;
    assert!(alice.missing(&[b4]).await.unwrap().is_empty());
    assert!(fetch(&alice, "/notes.rs").await == fourth);
    assert!(fetch(&alice, "/again.rs").await == fourth);

    // The file goes: its blocks go too, the damaged base once nothing
    // leans on it.
    alice.delete("/notes.rs").await.unwrap();
    alice.delete("/again.rs").await.unwrap();
    alice.purge_trash(None).await.unwrap();
    s.config.clock.advance(Duration::from_secs(GRACE + 1));
    for _ in 0..3 {
        gc(&s).await;
        s.config.clock.advance(Duration::from_secs(GRACE + 1));
    }
    assert_eq!(
        s.store_bytes().await,
        baseline,
        "{:?}",
        s.store_objects().await
    );
}

/// The revisions of /notes.rs, oldest first.
async fn numbers_sorted(alice: &Remote) -> Vec<i64> {
    let revs = alice.revisions("/notes.rs").await.unwrap().revisions;
    let mut numbers: Vec<i64> = revs.iter().map(|r| r.rev).collect();
    numbers.sort();
    numbers
}
