//! Two-way sync between three devices of one user, through a real server,
//! on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{Backend, TestServer};
use tessera_client::sync::Syncer;

on_both_backends!(
    three_devices_converge,
    a_folder_renamed_alike_on_two_devices_then_made_again_syncs,
    a_folder_holding_ignored_files_gives_way_to_a_file_from_the_server
);

/// Every file (path → bytes) and folder (path → None) under `root`,
/// without the client's state folder.
fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".tessera" {
                continue;
            }
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

struct Device {
    dir: PathBuf,
    syncer: Syncer,
}

async fn device(s: &TestServer, name: &str) -> Device {
    let remote = s.login("alice", "alice-password", name).await;
    let dir = s.scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    let syncer = Syncer::open(&dir, remote, "alice", name).await.unwrap();
    Device { dir, syncer }
}

impl Device {
    async fn sync(&mut self) -> tessera_client::sync::Report {
        let r = self.syncer.sync_once().await.unwrap();
        assert!(r.stuck.is_empty(), "{}: {:?}", self.dir.display(), r.stuck);
        r
    }
    fn write(&self, rel: &str, data: &[u8]) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

async fn sync_all(devs: &mut [Device]) {
    for _ in 0..2 {
        for d in devs.iter_mut() {
            d.sync().await;
        }
    }
}

fn assert_converged(devs: &[Device]) -> BTreeMap<String, Option<Vec<u8>>> {
    let first = snapshot(&devs[0].dir);
    for d in &devs[1..] {
        let other = snapshot(&d.dir);
        assert_eq!(
            first.keys().collect::<Vec<_>>(),
            other.keys().collect::<Vec<_>>(),
            "{} and {} differ",
            devs[0].dir.display(),
            d.dir.display()
        );
        assert!(first == other, "contents differ between devices");
    }
    first
}

// Long on purpose: one story across three devices, each step starting
// from the state the previous one left.
async fn three_devices_converge(b: Backend) {
    let s = TestServer::start(b).await;
    let _ = s.user("alice").await;
    let mut devs = vec![
        device(&s, "laptop").await,
        device(&s, "desk").await,
        device(&s, "phone").await,
    ];

    // One syncer per folder: a second one is refused, a look is not.
    let again = s.login("alice", "alice-password", "laptop").await;
    let busy = Syncer::open(&devs[0].dir, again.clone(), "alice", "laptop").await;
    assert!(matches!(
        busy,
        Err(tessera_client::sync::SyncError::Busy(_))
    ));
    let mut look = Syncer::open_read_only(&devs[0].dir, again, "alice", "laptop")
        .await
        .unwrap();
    assert!(look.pending().await.unwrap().0.is_empty());
    assert!(
        look.sync_once().await.is_err(),
        "a read-only look never changes the folder"
    );
    look.close().await;

    // Creates: files, nested folders, an empty folder, an empty file.
    devs[0].write("a.txt", b"version 1");
    devs[0].write("docs/deep/b.txt", b"bee");
    devs[0].write("zero.bin", b"");
    std::fs::create_dir_all(devs[0].path("empty")).unwrap();
    devs[0].write("big.bin", &crate::common::mixed_data(3 << 20, 1));
    // Several files above the batch size: they travel side by side.
    for i in 0..4 {
        devs[0].write(
            &format!("media/clip{i}.bin"),
            &crate::common::random_data(300_000 + i * 1000, 20 + i as u64),
        );
    }
    sync_all(&mut devs).await;
    let tree = assert_converged(&devs);
    // The status a running client publishes for `tessera status`.
    let status =
        tessera_client::sync::status::StatusFile::read(&devs[1].dir.join(".tessera")).unwrap();
    assert_eq!(status.state, "idle");
    assert!(status.stuck.is_empty());
    assert_eq!(
        (status.files_done, status.bytes_done),
        (status.files_total, status.bytes_total)
    );
    assert_eq!(tree["empty"], None);
    assert_eq!(tree["zero.bin"], Some(vec![]));
    assert_eq!(tree["docs/deep/b.txt"], Some(b"bee".to_vec()));
    assert_eq!(
        tree["media/clip3.bin"],
        Some(crate::common::random_data(303_000, 23))
    );

    // Edit on one, rename on another, delete on the third.
    devs[1].write("a.txt", b"version 2");
    std::fs::rename(
        devs[2].path("docs/deep/b.txt"),
        devs[2].path("docs/deep/c.txt"),
    )
    .unwrap();
    std::fs::remove_file(devs[0].path("zero.bin")).unwrap();
    let moved_id = devs[2].syncer.pending().await.unwrap().0;
    assert!(
        moved_id
            .iter()
            .any(|op| matches!(op, tessera_client::sync::Op::MoveRemote { .. })),
        "a rename travels as a move: {moved_id:?}"
    );
    sync_all(&mut devs).await;
    let tree = assert_converged(&devs);
    assert_eq!(tree["a.txt"], Some(b"version 2".to_vec()));
    assert!(tree.contains_key("docs/deep/c.txt") && !tree.contains_key("docs/deep/b.txt"));
    assert!(!tree.contains_key("zero.bin"));
    // What sync deleted went to the local trash, not away.
    let trash = snapshot(&devs[1].dir.join(".tessera/trash"));
    assert!(trash.keys().any(|k| k.ends_with("zero.bin")), "{trash:?}");

    // Folder rename and folder delete.
    std::fs::rename(devs[0].path("docs"), devs[0].path("papers")).unwrap();
    let (ops, _) = devs[0].syncer.pending().await.unwrap();
    assert_eq!(
        ops,
        vec![tessera_client::sync::Op::MoveRemote {
            from: "docs".into(),
            to: "papers".into()
        }],
        "a folder rename is one move on the server"
    );
    std::fs::remove_dir(devs[1].path("empty")).unwrap();
    sync_all(&mut devs).await;
    let tree = assert_converged(&devs);
    assert!(tree.contains_key("papers/deep/c.txt") && !tree.contains_key("docs"));
    assert!(!tree.contains_key("empty"));
    // A folder deleted on one device and restored from the server's trash
    // comes back on every device.
    std::fs::remove_dir_all(devs[2].path("papers")).unwrap();
    sync_all(&mut devs).await;
    assert!(!assert_converged(&devs).contains_key("papers"));
    let web = s.login("alice", "alice-password", "web").await;
    let trashed = web.trash().await.unwrap().entries;
    let papers = trashed.iter().find(|e| e.path == "/papers").unwrap();
    web.restore_from_trash(&papers.id, None).await.unwrap();
    sync_all(&mut devs).await;
    assert_eq!(
        assert_converged(&devs)["papers/deep/c.txt"],
        Some(b"bee".to_vec())
    );

    // Concurrent edits: one conflicted copy, no content lost.
    devs[0].write("a.txt", b"laptop edit");
    devs[1].write("a.txt", b"desk edit");
    devs[0].sync().await;
    let r = devs[1].sync().await;
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    sync_all(&mut devs).await;
    let tree = assert_converged(&devs);
    let copies: Vec<_> = tree
        .keys()
        .filter(|k| k.contains("(conflicted copy from desk "))
        .collect();
    assert_eq!(copies.len(), 1, "{:?}", tree.keys().collect::<Vec<_>>());
    assert_eq!(
        tree["a.txt"],
        Some(b"laptop edit".to_vec()),
        "the first commit wins the path"
    );
    assert_eq!(
        tree[copies[0]],
        Some(b"desk edit".to_vec()),
        "the other edit survives as a copy"
    );

    // An edit inside a large file: the other devices fetch only the changed
    // block and take the rest from their own copy.
    let mut big = crate::common::random_data(24 << 20, 8);
    devs[0].write("large.bin", &big);
    sync_all(&mut devs).await;
    big[12 << 20..(12 << 20) + 100].copy_from_slice(&[7u8; 100]);
    devs[0].write("large.bin", &big);
    devs[0].sync().await;
    let r = devs[1].sync().await;
    assert_eq!(r.downloaded, 1);
    println!(
        "delta download: fetched {} bytes, reused {} of {}",
        r.bytes_fetched,
        r.bytes_reused,
        big.len()
    );
    assert!(
        r.bytes_fetched <= 2 * (16 << 20) && r.bytes_fetched < big.len() as u64 / 2,
        "{r:?}"
    );
    assert_eq!(r.bytes_fetched + r.bytes_reused, big.len() as u64);
    sync_all(&mut devs).await;
    assert_eq!(assert_converged(&devs)["large.bin"], Some(big.clone()));

    // A copy of a large file with a small change, in another folder: the
    // other devices take its blocks from the original they already hold.
    let mut copy = big.clone();
    copy[100..200].copy_from_slice(&[9u8; 100]);
    devs[0].write("copies/large copy.bin", &copy);
    devs[0].sync().await;
    let r = devs[1].sync().await;
    println!(
        "copy download: fetched {} bytes, reused {} of {}",
        r.bytes_fetched,
        r.bytes_reused,
        copy.len()
    );
    assert!(r.bytes_fetched < copy.len() as u64 / 2, "{r:?}");
    assert_eq!(r.bytes_fetched + r.bytes_reused, copy.len() as u64);
    sync_all(&mut devs).await;
    assert_eq!(assert_converged(&devs)["copies/large copy.bin"], Some(copy));

    // Offline catch-up: the phone misses several changes, then syncs.
    devs[0].write("while-away/1.txt", b"one");
    devs[0].sync().await;
    devs[1].write("while-away/2.txt", b"two");
    std::fs::remove_file(devs[1].path("big.bin")).unwrap();
    devs[1].sync().await;
    devs[2].sync().await;
    sync_all(&mut devs).await;
    let tree = assert_converged(&devs);
    assert!(tree.contains_key("while-away/1.txt") && tree.contains_key("while-away/2.txt"));
    assert!(!tree.contains_key("big.bin"));

    // A device whose folder changed during the round never loses that edit:
    // the server copy moved on, the local file was edited: conflict, not overwrite.
    devs[0].write("a.txt", b"laptop again");
    devs[0].sync().await;
    devs[2].write("a.txt", b"phone offline edit");
    devs[2].sync().await;
    sync_all(&mut devs).await;
    let tree = assert_converged(&devs);
    assert!(
        tree.values()
            .any(|v| v.as_deref() == Some(&b"phone offline edit"[..]))
    );
    assert!(
        tree.values()
            .any(|v| v.as_deref() == Some(&b"laptop again"[..]))
    );
}

/// Another device replaced a folder by a file; here the folder also holds
/// files the sync ignores. The file comes down, and the ignored files go
/// to the local trash, not lost and not in the way.
async fn a_folder_holding_ignored_files_gives_way_to_a_file_from_the_server(b: Backend) {
    let s = TestServer::start(b).await;
    s.user("alice").await;
    let mut here = device(&s, "laptop").await;
    let mut there = device(&s, "desk").await;
    here.write(".tesseraignore", b"*.log\n");
    here.write("d/a.txt", b"synced");
    here.write("d/build.log", b"ignored, kept only here");
    here.sync().await;
    there.sync().await;
    assert_eq!(std::fs::read(there.path("d/a.txt")).unwrap(), b"synced");

    std::fs::remove_dir_all(there.path("d")).unwrap();
    there.write("d", b"now a file");
    there.sync().await;
    for _ in 0..3 {
        here.sync().await;
    }
    assert_eq!(std::fs::read(here.path("d")).unwrap(), b"now a file");
    let trashed: Vec<_> = walk_files(&here.path(".tessera/trash"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "build.log"))
        .collect();
    assert_eq!(trashed.len(), 1, "the ignored file is in the local trash");
    assert_eq!(
        std::fs::read(&trashed[0]).unwrap(),
        b"ignored, kept only here"
    );
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Two devices rename the same folder to the same new name, one of them
/// offline; that one then makes a folder under the old name again (by
/// moving a file into it). Both names must end up on every device.
async fn a_folder_renamed_alike_on_two_devices_then_made_again_syncs(b: Backend) {
    let s = TestServer::start(b).await;
    let _ = s.user("alice").await;
    let mut one = device(&s, "one").await;
    let mut two = device(&s, "two").await;
    one.write("x/y/b.txt", b"b");
    one.write("x/d.bin", b"d");
    one.sync().await;
    two.sync().await;
    std::fs::rename(one.path("x/y"), one.path("x/y-moved")).unwrap();
    std::fs::rename(two.path("x/y"), two.path("x/y-moved")).unwrap();
    two.sync().await;
    std::fs::create_dir_all(one.path("x/y")).unwrap();
    std::fs::rename(one.path("x/d.bin"), one.path("x/y/c.md")).unwrap();
    let mut devs = [one, two];
    sync_all(&mut devs).await;
    let got = assert_converged(&devs);
    assert_eq!(
        got.get("x/y/c.md"),
        Some(&Some(b"d".to_vec())),
        "{:?}",
        got.keys()
    );
    assert_eq!(
        got.get("x/y-moved/b.txt"),
        Some(&Some(b"b".to_vec())),
        "{:?}",
        got.keys()
    );
}
