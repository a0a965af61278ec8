//! Shared folders: an owner shares a folder with an editor and a viewer;
//! each has it at the top of their files, reads and (as they may) writes
//! it, follows it through the change journal, and loses it on removal.
//! Three users, real HTTP, real sync clients on disk, both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_client::Remote;
use tessera_client::sync::Syncer;
use tessera_proto::api::{ChangeKind, ShareRole};
use tessera_proto::error::ErrorCode;

use crate::common::{Backend, TestServer, names, random_data};

on_both_backends!(
    a_shared_folder_is_one_folder_for_all_its_members,
    the_journal_follows_shares_roles_and_removal,
    two_users_sync_a_shared_folder_and_removal_keeps_the_copies,
    a_viewers_changes_stay_on_their_device_as_copies_outside_the_folder,
    three_users_with_two_devices_each_share_change_roles_and_leave,
    what_was_under_way_or_trashed_before_a_share_stays_in_sight,
    a_folder_deep_in_ones_files_is_shared_and_each_member_places_it_where_they_like,
    a_moved_mount_point_syncs_in_its_new_place,
    shares_both_ways_at_once_all_land
);

async fn put(r: &Remote, path: &str, bytes: &[u8]) {
    r.upload(path, None, reqwest::Body::from(bytes.to_vec()))
        .await
        .unwrap_or_else(|e| panic!("upload {path}: {e}"));
}

async fn get(r: &Remote, path: &str) -> Vec<u8> {
    r.download(path, None)
        .await
        .unwrap_or_else(|e| panic!("download {path}: {e}"))
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Names at the top of a user's files, with the role of shared ones.
async fn top(r: &Remote) -> BTreeMap<String, Option<ShareRole>> {
    r.list("/")
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (e.name, e.shared))
        .collect()
}

/// Waits until the server shows a long poll held by one of `r`'s devices.
async fn holds_a_poll(r: &Remote) {
    let t = Instant::now();
    while !r
        .presence()
        .await
        .unwrap()
        .devices
        .iter()
        .any(|d| d.connections > 0)
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no long poll is held"
        );
        tokio::task::yield_now().await;
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn refused(e: tessera_client::ClientError) -> (u16, String) {
    match e {
        tessera_client::ClientError::Api {
            status, message, ..
        } => (status, message),
        other => panic!("not an API answer: {other}"),
    }
}

async fn a_shared_folder_is_one_folder_for_all_its_members(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let big = random_data(3 << 20, 5);
    put(&alice, "/Team/plan.txt", b"the plan").await;
    put(&alice, "/Team/sub/big.bin", &big).await;
    put(&alice, "/private.txt", b"alice only").await;
    bob.mkdir("/Team").await.unwrap();
    put(&bob, "/Team/bobs.txt", b"bob's own").await;

    let shared = alice
        .share("/Team", "bob", ShareRole::Editor)
        .await
        .unwrap();
    alice
        .share("/Team", "carol", ShareRole::Viewer)
        .await
        .unwrap();
    assert_eq!(shared.role, ShareRole::Owner);

    // Each has it at the top of their files; bob's own /Team keeps its name.
    assert_eq!(
        top(&alice).await,
        BTreeMap::from([
            ("Team".into(), Some(ShareRole::Owner)),
            ("private.txt".into(), None)
        ])
    );
    assert_eq!(
        top(&bob).await,
        BTreeMap::from([
            ("Team".into(), None),
            ("Team (2)".into(), Some(ShareRole::Editor))
        ])
    );
    assert_eq!(
        top(&carol).await,
        BTreeMap::from([("Team".into(), Some(ShareRole::Viewer))])
    );
    assert_eq!(get(&bob, "/Team (2)/plan.txt").await, b"the plan");
    assert_eq!(get(&bob, "/Team/bobs.txt").await, b"bob's own");
    assert_eq!(get(&carol, "/Team/sub/big.bin").await, big);

    // An editor's write is everyone's, and counts against the owner's
    // storage, not the editor's.
    let (alice_used, bob_used) = (
        alice.usage().await.unwrap().used_bytes,
        bob.usage().await.unwrap().used_bytes,
    );
    put(&bob, "/Team (2)/from-bob.txt", b"hello from bob").await;
    assert_eq!(alice.usage().await.unwrap().used_bytes, alice_used + 14);
    assert_eq!(bob.usage().await.unwrap().used_bytes, bob_used);
    // Through TUS too, and the folder comes down as a zip.
    let created = Remote::send(
        bob.request(reqwest::Method::POST, "/tus/")
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "5")
            .header(
                "Upload-Metadata",
                format!("path {}", b64("/Team (2)/by-tus.txt")),
            ),
    )
    .await
    .unwrap();
    let session = created.headers()["location"].to_str().unwrap().to_owned();
    let session = session.rsplit('/').next().unwrap().to_owned();
    let done = Remote::send(
        bob.request(reqwest::Method::PATCH, &format!("/tus/{session}"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body("tus!!"),
    )
    .await
    .unwrap();
    assert_eq!(
        done.headers()["tessera-path"],
        "%2FTeam%20%282%29%2Fby-tus.txt"
    );
    assert_eq!(get(&alice, "/Team/by-tus.txt").await, b"tus!!");
    // A link bob makes inside the folder lists under his name for it.
    let l = bob
        .create_link(&tessera_proto::api::CreateLinkRequest {
            path: "/Team (2)/plan.txt".into(),
            expires_in_secs: None,
            password: None,
            upload_only: false,
        })
        .await
        .unwrap();
    assert_eq!(l.path.as_deref(), Some("/Team (2)/plan.txt"));
    let listed = bob.links().await.unwrap().links;
    assert_eq!(listed[0].path.as_deref(), Some("/Team (2)/plan.txt"));
    let zip = Remote::send(
        bob.request(reqwest::Method::GET, "/files/zip")
            .query(&[("path", "/Team (2)")]),
    )
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    assert!(zip.starts_with(b"PK"), "not a zip");
    assert!(
        zip.windows(b"plan.txt".len()).any(|w| w == b"plan.txt"),
        "the zip lacks plan.txt"
    );
    assert_eq!(get(&alice, "/Team/from-bob.txt").await, b"hello from bob");
    assert_eq!(get(&carol, "/Team/from-bob.txt").await, b"hello from bob");
    bob.move_to("/Team (2)/from-bob.txt", "/Team (2)/sub/from-bob.txt")
        .await
        .unwrap();
    assert_eq!(
        get(&alice, "/Team/sub/from-bob.txt").await,
        b"hello from bob"
    );

    // Moves across the shared folder's edge take the files along, with
    // no bytes sent again.
    let stored = s.store_bytes().await;
    bob.move_to("/Team (2)/sub/from-bob.txt", "/from-bob.txt")
        .await
        .unwrap();
    assert_eq!(get(&bob, "/from-bob.txt").await, b"hello from bob");
    let e = alice
        .download("/Team/sub/from-bob.txt", None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    bob.move_to("/Team", "/Team (2)/from-bobs-folder")
        .await
        .unwrap();
    assert_eq!(
        get(&alice, "/Team/from-bobs-folder/bobs.txt").await,
        b"bob's own"
    );
    bob.mkdir("/Team").await.unwrap();
    assert_eq!(s.store_bytes().await, stored);

    // A viewer reads only: every write is a 403 that says why, and
    // nothing changes.
    let before = alice.list("/Team").await.unwrap().entries.len();
    let (status, message) = refused(
        carol
            .upload("/Team/x.txt", None, reqwest::Body::from("no"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(message.contains("read-only"), "{message}");
    for e in [
        carol.delete("/Team/plan.txt").await.unwrap_err(),
        carol.mkdir("/Team/new").await.unwrap_err(),
        carol
            .move_to("/Team/plan.txt", "/Team/plan2.txt")
            .await
            .unwrap_err(),
    ] {
        assert_eq!(refused(e).0, 403);
    }
    assert_eq!(alice.list("/Team").await.unwrap().entries.len(), before);
    assert_eq!(get(&alice, "/Team/plan.txt").await, b"the plan");

    // Nobody reaches past the shared folder into the owner's files.
    for (who, path) in [(&bob, "/private.txt"), (&carol, "/private.txt")] {
        let e = who.download(path, None).await.expect_err("refused");
        assert_eq!(e.code(), Some(ErrorCode::NotFound), "{path}");
    }

    // A member names the folder as they like; no one else sees it move.
    bob.move_to("/Team (2)", "/Alice team").await.unwrap();
    assert_eq!(get(&bob, "/Alice team/plan.txt").await, b"the plan");
    assert!(top(&alice).await.contains_key("Team"));
    // Into a folder of his own and back.
    bob.move_to("/Alice team", "/Team/inside").await.unwrap();
    assert_eq!(get(&bob, "/Team/inside/plan.txt").await, b"the plan");
    bob.move_to("/Team/inside", "/Alice team").await.unwrap();

    // Sharing what is not one's own, or inside a shared folder, is refused.
    let e = bob
        .share("/Alice team", "carol", ShareRole::Editor)
        .await
        .unwrap_err();
    assert_eq!(refused(e).0, 403);
    let (status, message) = refused(
        alice
            .share("/Team/sub", "carol", ShareRole::Editor)
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400);
    assert!(message.contains("cannot hold another"), "{message}");
    let e = alice
        .share("/Team", "nobody", ShareRole::Editor)
        .await
        .unwrap_err();
    assert_eq!(refused(e).0, 404);

    // The shares as each member lists them.
    let list = bob.shares().await.unwrap().shares;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].path, "/Alice team");
    assert_eq!(list[0].owner, "alice");
    let names: Vec<_> = list[0]
        .members
        .iter()
        .map(|m| (m.username.as_str(), m.role))
        .collect();
    assert_eq!(
        names,
        [
            ("alice", ShareRole::Owner),
            ("bob", ShareRole::Editor),
            ("carol", ShareRole::Viewer)
        ]
    );

    // A viewer made editor may write; an editor made viewer may not.
    let id = list[0].id;
    alice
        .set_share_role(id, "carol", ShareRole::Editor)
        .await
        .unwrap();
    // An upload bob began as an editor does not finish once he views.
    let begun = Remote::send(
        bob.request(reqwest::Method::POST, "/tus/")
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "4")
            .header(
                "Upload-Metadata",
                format!("path {}", b64("/Alice team/late.txt")),
            ),
    )
    .await
    .unwrap();
    let begun = begun.headers()["location"].to_str().unwrap().to_owned();
    let begun = begun.rsplit('/').next().unwrap().to_owned();
    alice
        .set_share_role(id, "bob", ShareRole::Viewer)
        .await
        .unwrap();
    let late = Remote::send(
        bob.request(reqwest::Method::PATCH, &format!("/tus/{begun}"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body("late"),
    )
    .await;
    assert!(late.is_err(), "a viewer finished an upload");
    assert_eq!(
        alice
            .download("/Team/late.txt", None)
            .await
            .expect_err("not there")
            .code(),
        Some(ErrorCode::NotFound)
    );
    put(&carol, "/Team/by-carol.txt", b"carol writes").await;
    let e = bob
        .upload("/Alice team/y.txt", None, reqwest::Body::from("no"))
        .await
        .unwrap_err();
    assert_eq!(refused(e).0, 403);
    // Only the owner changes who has it.
    let e = carol
        .set_share_role(id, "bob", ShareRole::Editor)
        .await
        .unwrap_err();
    assert_eq!(refused(e).0, 403);

    // Leaving, removing, unsharing: the folder is gone from the member's
    // files and stays whole with the owner.
    carol.remove_member(id, "carol").await.unwrap();
    assert!(top(&carol).await.is_empty());
    let e = carol.download("/Team/plan.txt", None).await.err().unwrap();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    alice.unshare(id).await.unwrap();
    assert_eq!(
        top(&bob).await,
        BTreeMap::from([("Team".into(), None), ("from-bob.txt".into(), None)])
    );
    assert_eq!(get(&alice, "/Team/by-carol.txt").await, b"carol writes");
    assert_eq!(get(&alice, "/Team/sub/big.bin").await, big);
    let e = alice.remove_member(id, "alice").await.unwrap_err();
    assert_eq!(refused(e).0, 400);

    // The owner deleting the shared folder takes it from everyone, into
    // the owner's trash, whole.
    alice
        .share("/Team", "carol", ShareRole::Editor)
        .await
        .unwrap();
    alice.delete("/Team").await.unwrap();
    assert!(top(&carol).await.is_empty());
    assert!(!top(&alice).await.contains_key("Team"));
    let trashed = alice.trash().await.unwrap().entries;
    let entry = trashed
        .iter()
        .find(|t| t.path == "/Team")
        .expect("in the trash");
    alice.restore_from_trash(&entry.id, None).await.unwrap();
    assert_eq!(get(&alice, "/Team/sub/big.bin").await, big);
    assert_eq!(top(&alice).await.get("Team"), Some(&None));
}

async fn the_journal_follows_shares_roles_and_removal(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    put(&alice, "/Team/a.txt", b"a").await;
    put(&alice, "/Team/deep/b.txt", b"b").await;
    let alice_before = alice.latest_cursor().await.unwrap();
    let start = bob.latest_cursor().await.unwrap();

    let id = alice
        .share("/Team", "bob", ShareRole::Editor)
        .await
        .unwrap()
        .id;
    // Bob's devices learn the whole folder from where they were.
    let page = bob.changes(Some(&start), None).await.unwrap();
    let seen: Vec<(ChangeKind, &str)> = page
        .changes
        .iter()
        .map(|c| (c.kind, c.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (ChangeKind::Mkdir, "/Team"),
            (ChangeKind::Commit, "/Team/a.txt"),
            (ChangeKind::Mkdir, "/Team/deep"),
            (ChangeKind::Commit, "/Team/deep/b.txt"),
        ]
    );
    // Alice's devices see nothing move: the same folder, the same ids.
    let mine = alice.changes(Some(&alice_before), None).await.unwrap();
    assert!(
        mine.changes
            .iter()
            .all(|c| c.kind == ChangeKind::Mkdir || c.kind == ChangeKind::Commit),
        "{:?}",
        mine.changes
    );

    // A commit in the shared folder wakes the other member's long poll.
    let cursor = page.cursor;
    let waiting = {
        let bob = bob.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = bob.poll(&cursor, 30).await.unwrap();
            (r.changes, t.elapsed())
        })
    };
    holds_a_poll(&bob).await;
    put(&alice, "/Team/new.txt", b"new").await;
    let (woke, took) = waiting.await.unwrap();
    assert!(woke && took < Duration::from_secs(10), "{woke} {took:?}");
    let page = bob.changes(Some(&cursor), None).await.unwrap();
    assert_eq!(page.changes.len(), 1, "{:?}", page.changes);
    assert_eq!(page.changes[0].path, "/Team/new.txt");
    assert_eq!(
        page.changes[0].content_hash,
        Some(tessera_proto::ContentHash::of(b"new"))
    );

    // Paging: one entry at a time still reads everything once.
    let mut all = Vec::new();
    let mut at = start.clone();
    loop {
        let p = bob.changes(Some(&at), Some(1)).await.unwrap();
        all.extend(p.changes.into_iter().map(|c| c.path));
        at = p.cursor;
        if !p.has_more {
            break;
        }
    }
    assert_eq!(
        all,
        [
            "/Team",
            "/Team/a.txt",
            "/Team/deep",
            "/Team/deep/b.txt",
            "/Team/new.txt"
        ]
    );

    // Removal reaches an offline device through its cursor.
    alice.remove_member(id, "bob").await.unwrap();
    let page = bob.changes(Some(&at), None).await.unwrap();
    let seen: Vec<(ChangeKind, &str)> = page
        .changes
        .iter()
        .map(|c| (c.kind, c.path.as_str()))
        .collect();
    assert_eq!(seen, [(ChangeKind::Delete, "/Team")]);
    // And what the shared folder does next is no longer told to bob.
    let after = page.cursor;
    put(&alice, "/Team/later.txt", b"later").await;
    let page = bob.changes(Some(&after), None).await.unwrap();
    assert!(page.changes.is_empty(), "{:?}", page.changes);
    // Shared again: the folder comes back whole.
    alice
        .share("/Team", "bob", ShareRole::Viewer)
        .await
        .unwrap();
    let page = bob.changes(Some(&after), None).await.unwrap();
    let paths: Vec<&str> = page.changes.iter().map(|c| c.path.as_str()).collect();
    assert!(paths.contains(&"/Team/later.txt"), "{paths:?}");
    assert!(paths.contains(&"/Team/a.txt"), "{paths:?}");
}

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".tessera" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

async fn syncer(s: &TestServer, user: &str, device: &str) -> (std::path::PathBuf, Syncer) {
    let remote = s.login(user, &format!("{user}-password"), device).await;
    let dir = s.scratch(&format!("{user}-{device}"));
    std::fs::create_dir_all(&dir).unwrap();
    let syncer = Syncer::open(&dir, remote, user, device).await.unwrap();
    (dir, syncer)
}

async fn round(syncer: &mut Syncer) {
    let r = syncer.sync_once().await.unwrap();
    assert!(r.stuck.is_empty(), "{:?}", r.stuck);
}

async fn two_users_sync_a_shared_folder_and_removal_keeps_the_copies(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let _bob = s.user("bob").await;
    let (a_dir, mut a) = syncer(&s, "alice", "laptop").await;
    let (b_dir, mut bsync) = syncer(&s, "bob", "desktop").await;
    std::fs::create_dir_all(a_dir.join("Team/docs")).unwrap();
    std::fs::write(a_dir.join("Team/docs/notes.txt"), b"v1").unwrap();
    let big = random_data(5 << 20, 9);
    std::fs::write(a_dir.join("Team/big.bin"), &big).unwrap();
    std::fs::write(a_dir.join("mine.txt"), b"alice only").unwrap();
    round(&mut a).await;

    let id = alice
        .share("/Team", "bob", ShareRole::Editor)
        .await
        .unwrap()
        .id;
    round(&mut a).await;
    round(&mut bsync).await;
    let got = files(&b_dir);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["Team/big.bin", "Team/docs/notes.txt"]
    );
    assert_eq!(got["Team/big.bin"], big);

    // Bob edits inside the shared folder; alice's device gets it, and her
    // own device had nothing to redo for the share itself.
    std::fs::write(b_dir.join("Team/docs/notes.txt"), b"v2 by bob").unwrap();
    std::fs::write(b_dir.join("Team/docs/added.txt"), b"added by bob").unwrap();
    round(&mut bsync).await;
    round(&mut a).await;
    let mine = files(&a_dir);
    assert_eq!(mine["Team/docs/notes.txt"], b"v2 by bob");
    assert_eq!(mine["Team/docs/added.txt"], b"added by bob");
    assert_eq!(mine["mine.txt"], b"alice only");

    // Both edit the same file: one wins, the other's edit is a conflicted
    // copy, nothing lost.
    std::fs::write(a_dir.join("Team/docs/notes.txt"), b"alice's take").unwrap();
    std::fs::write(b_dir.join("Team/docs/notes.txt"), b"bob's take").unwrap();
    round(&mut a).await;
    round(&mut bsync).await;
    round(&mut a).await;
    let mine = files(&a_dir);
    let theirs = files(&b_dir);
    let mine_shared: BTreeMap<_, _> = mine
        .iter()
        .filter(|(k, _)| k.starts_with("Team/"))
        .collect();
    let theirs_shared: BTreeMap<_, _> = theirs.iter().collect();
    assert_eq!(mine_shared, theirs_shared);
    let contents: Vec<&[u8]> = theirs.values().map(|v| v.as_slice()).collect();
    assert!(contents.contains(&&b"alice's take"[..]), "{theirs:?}");
    assert!(contents.contains(&&b"bob's take"[..]), "{theirs:?}");

    // Removed: bob's copies leave his folder for his local trash.
    alice.remove_member(id, "bob").await.unwrap();
    round(&mut bsync).await;
    assert!(files(&b_dir).is_empty(), "{:?}", files(&b_dir).keys());
    let trashed = files(&b_dir.join(".tessera/trash"));
    assert!(
        trashed.values().any(|v| v.as_slice() == big.as_slice()),
        "the local trash holds {:?}",
        trashed.keys()
    );
    // Alice keeps all of it.
    round(&mut a).await;
    assert_eq!(files(&a_dir)["Team/big.bin"], big);
}

async fn a_viewers_changes_stay_on_their_device_as_copies_outside_the_folder(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    put(&alice, "/Team/docs/notes.txt", b"v1").await;
    put(&alice, "/Team/keep.txt", b"keep me").await;
    alice
        .share("/Team", "bob", ShareRole::Viewer)
        .await
        .unwrap();
    let (dir, mut sync) = syncer(&s, "bob", "desktop").await;
    round(&mut sync).await;
    assert_eq!(files(&dir)["Team/docs/notes.txt"], b"v1");

    std::fs::write(dir.join("Team/docs/notes.txt"), b"bob's edit").unwrap();
    std::fs::write(dir.join("Team/new.txt"), b"bob's new file").unwrap();
    std::fs::remove_file(dir.join("Team/keep.txt")).unwrap();
    std::fs::create_dir(dir.join("Team/empty")).unwrap();
    // Bob's own folder, moved into the read-only one, goes back.
    std::fs::create_dir_all(dir.join("Mine")).unwrap();
    std::fs::write(dir.join("Mine/own.txt"), b"bob's own").unwrap();
    round(&mut sync).await;
    std::fs::rename(dir.join("Mine"), dir.join("Team/Mine")).unwrap();
    let r = sync.sync_once().await.unwrap();
    assert!(r.stuck.is_empty(), "{:?}", r.stuck);
    assert!(
        r.warnings.iter().any(|w| w.contains("read-only")),
        "{:?}",
        r.warnings
    );

    // The folder is the server's again; bob's versions sit outside it.
    let got = files(&dir);
    assert_eq!(got["Team/docs/notes.txt"], b"v1");
    assert_eq!(got["Team/keep.txt"], b"keep me");
    assert!(!got.contains_key("Team/new.txt"));
    assert_eq!(got["Mine/own.txt"], b"bob's own");
    assert!(!dir.join("Team/Mine").exists());
    assert_eq!(get(&bob, "/Mine/own.txt").await, b"bob's own");
    assert!(!dir.join("Team/empty").exists());
    let outside: BTreeMap<&String, &Vec<u8>> =
        got.iter().filter(|(k, _)| !k.contains('/')).collect();
    let kept: Vec<&[u8]> = outside.values().map(|v| v.as_slice()).collect();
    assert_eq!(outside.len(), 2, "{outside:?}");
    assert!(kept.contains(&&b"bob's edit"[..]) && kept.contains(&&b"bob's new file"[..]));
    assert!(
        outside
            .keys()
            .all(|k| k.contains("conflicted copy from desktop")),
        "{outside:?}"
    );
    // ...and went up as bob's own files, while alice's folder is as it was.
    for (name, bytes) in &outside {
        assert_eq!(&get(&bob, &format!("/{name}")).await, *bytes);
    }
    assert_eq!(get(&alice, "/Team/docs/notes.txt").await, b"v1");
    assert_eq!(get(&alice, "/Team/keep.txt").await, b"keep me");
    assert_eq!(names(&alice, "/Team").await, ["docs", "keep.txt"]);
    // A second run has nothing left to do.
    let again = sync.sync_once().await.unwrap();
    assert_eq!(again.uploaded + again.downloaded + again.conflicts.len(), 0);
}

/// Figures for docs/PERFORMANCE.md, not a check: how long after one commit
/// in a shared folder the long polls of 50 members' devices answer. Run
/// with `cargo test -p tessera --test e2e -- --ignored --nocapture fan_out_figures`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn fan_out_figures() {
    for b in [Backend::Sqlite, Backend::Postgres] {
        fan_out_on(b).await;
    }
}

async fn fan_out_on(b: Backend) {
    const MEMBERS: usize = 50;
    const ROUNDS: usize = 20;
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    put(&alice, "/Team/start.txt", b"start").await;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let name = format!("member{i:02}");
        let r = s.user(&name).await;
        alice
            .share("/Team", &name, ShareRole::Viewer)
            .await
            .unwrap();
        members.push(r);
    }
    let mut woke = Vec::new();
    let mut commits = Vec::new();
    for round in 0..ROUNDS {
        let mut waits = Vec::new();
        for m in &members {
            let cursor = m.latest_cursor().await.unwrap();
            let m = m.clone();
            waits.push(tokio::spawn(async move {
                let r = m.poll(&cursor, 60).await.unwrap();
                (r.changes, Instant::now())
            }));
        }
        // Every poll parked before the commit.
        for m in &members {
            holds_a_poll(m).await;
        }
        let t0 = Instant::now();
        put(&alice, &format!("/Team/f{round}.txt"), b"new").await;
        commits.push(t0.elapsed());
        for w in waits {
            let (changed, at) = w.await.unwrap();
            assert!(changed);
            woke.push(at.saturating_duration_since(t0));
        }
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!(
        "{b:?}: {MEMBERS} members' polls after one upload into a shared folder ({ROUNDS} rounds): \
         answered p50 {:?}, p95 {:?}, max {:?} after the upload began; the upload took p50 {:?}",
        pct(&mut woke, 0.5),
        pct(&mut woke, 0.95),
        pct(&mut woke, 1.0),
        pct(&mut commits, 0.5),
    );
}

/// The process's peak resident memory (VmHWM), in MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Sharing a large folder: the time the share takes (it moves the folder
/// into its namespace and journals every file there in one transaction),
/// the member's first full read of it from the journal, and the peak
/// memory of the process (server and clients are one process here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn large_share_figures() {
    let files: usize = std::env::var("TESSERA_SHARE_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for b in [Backend::Sqlite, Backend::Postgres] {
        large_share_on(b, files).await;
    }
}

async fn large_share_on(b: Backend, files: usize) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    put(&alice, "/seed.txt", b"one small file, many times").await;
    let list = alice.block_list("/seed.txt", None).await.unwrap();
    let t = Instant::now();
    let mut batch = Vec::new();
    for i in 0..files {
        batch.push(tessera_proto::api::CommitRequest {
            path: format!("/Big/d{:03}/f{i:06}.txt", i / 100 % 1000),
            base_rev: None,
            size: list.entry.size.unwrap_or(0),
            content_hash: list.entry.content_hash.unwrap(),
            chunker: list.chunker.clone(),
            blocks: list.blocks.clone(),
            reuse: Vec::new(),
        });
        if batch.len() == 500 || i + 1 == files {
            for r in alice
                .commit_batch(std::mem::take(&mut batch))
                .await
                .unwrap()
                .results
            {
                assert!(r.error.is_none(), "{:?}", r.error);
            }
        }
    }
    let made = t.elapsed();
    let before = peak_mib();
    let t = Instant::now();
    alice.share("/Big", "bob", ShareRole::Viewer).await.unwrap();
    let shared = t.elapsed();
    let t = Instant::now();
    let (mut cursor, mut seen) = (None, 0usize);
    loop {
        let page = bob.changes(cursor.as_deref(), None).await.unwrap();
        seen += page
            .changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Commit)
            .count();
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    let read = t.elapsed();
    assert_eq!(seen, files);
    println!(
        "{b:?}: {files} files committed in {made:.1?}; shared in {shared:.2?}; the member's \
         first read of the journal {read:.2?}; peak memory {before:.0} MiB before the share, \
         {:.0} MiB after",
        peak_mib()
    );
}

/// Syncs every device twice over (changes travel one hop a pass).
async fn settle(devices: &mut [(&str, std::path::PathBuf, Syncer)]) {
    for _ in 0..2 {
        for (_, _, sync) in devices.iter_mut() {
            round(sync).await;
        }
    }
}

fn team_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files(dir)
        .into_iter()
        .filter(|(k, _)| k.starts_with("Team/"))
        .collect()
}

// Long on purpose: one story across six devices, each step starting from
// the state the previous one left.
async fn three_users_with_two_devices_each_share_change_roles_and_leave(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let _bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let mut devices = Vec::new();
    for (user, device) in [
        ("alice", "laptop"),
        ("alice", "phone"),
        ("bob", "desktop"),
        ("bob", "laptop"),
        ("carol", "desktop"),
        ("carol", "phone"),
    ] {
        let (dir, sync) = syncer(&s, user, device).await;
        devices.push((user, dir, sync));
    }
    let dir = |i: usize, d: &[(&str, std::path::PathBuf, Syncer)]| d[i].1.clone();
    std::fs::create_dir_all(dir(0, &devices).join("Team")).unwrap();
    std::fs::write(dir(0, &devices).join("Team/a.txt"), b"alice wrote").unwrap();
    std::fs::write(dir(0, &devices).join("private.txt"), b"alice only").unwrap();
    round(&mut devices[0].2).await;
    let id = alice
        .share("/Team", "bob", ShareRole::Editor)
        .await
        .unwrap()
        .id;
    alice
        .share("/Team", "carol", ShareRole::Viewer)
        .await
        .unwrap();
    settle(&mut devices).await;
    let want = BTreeMap::from([("Team/a.txt".to_owned(), b"alice wrote".to_vec())]);
    for (user, d, _) in &devices {
        assert_eq!(team_of(d), want, "{user} at {}", d.display());
        assert_eq!(files(d).contains_key("private.txt"), *user == "alice");
    }

    // Bob edits on one device and adds on the other: everyone has both.
    std::fs::write(dir(2, &devices).join("Team/a.txt"), b"bob edited").unwrap();
    std::fs::write(dir(3, &devices).join("Team/b.txt"), b"bob added").unwrap();
    settle(&mut devices).await;
    let want = BTreeMap::from([
        ("Team/a.txt".to_owned(), b"bob edited".to_vec()),
        ("Team/b.txt".to_owned(), b"bob added".to_vec()),
    ]);
    for (user, d, _) in &devices {
        assert_eq!(team_of(d), want, "{user}");
    }

    // Carol, a viewer, edits on her phone: her version stays hers, outside
    // the folder, on both her devices; the folder is unchanged for all.
    std::fs::write(dir(5, &devices).join("Team/a.txt"), b"carol's try").unwrap();
    settle(&mut devices).await;
    for (user, d, _) in &devices {
        assert_eq!(team_of(d), want, "{user}");
        let copies = files(d)
            .into_iter()
            .filter(|(k, v)| !k.contains('/') && v.as_slice() == b"carol's try")
            .count();
        assert_eq!(copies, usize::from(*user == "carol"), "{user}");
    }

    // Made an editor, carol's next edit reaches everyone.
    alice
        .set_share_role(id, "carol", ShareRole::Editor)
        .await
        .unwrap();
    std::fs::write(dir(4, &devices).join("Team/a.txt"), b"carol edits now").unwrap();
    settle(&mut devices).await;
    for (user, d, _) in &devices {
        assert_eq!(team_of(d)["Team/a.txt"], b"carol edits now", "{user}");
    }

    // Bob leaves by deleting the folder on his laptop: both his devices
    // lose it (to the local trash), the others keep it.
    std::fs::remove_dir_all(dir(3, &devices).join("Team")).unwrap();
    settle(&mut devices).await;
    for (user, d, _) in &devices {
        assert_eq!(team_of(d).is_empty(), *user == "bob", "{user}");
    }
    assert!(
        files(&dir(2, &devices).join(".tessera/trash"))
            .values()
            .any(|v| v.as_slice() == b"carol edits now"),
        "bob's desktop trashed its copy"
    );

    // Carol is removed: her devices lose it; alice's keep every version.
    alice.remove_member(id, "carol").await.unwrap();
    settle(&mut devices).await;
    for (user, d, _) in &devices {
        assert_eq!(team_of(d).is_empty(), *user != "alice", "{user}");
    }
    assert!(carol.shares().await.unwrap().shares.is_empty());
    let revs = alice.revisions("/Team/a.txt").await.unwrap().revisions;
    assert_eq!(revs.len(), 3, "alice, bob and carol each wrote a version");
}

async fn what_was_under_way_or_trashed_before_a_share_stays_in_sight(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    // An older /Team, trashed whole, and the /Team that gets shared.
    put(&alice, "/Team/gone.txt", b"old team").await;
    alice.delete("/Team").await.unwrap();
    put(&alice, "/Team/plan.txt", b"plan").await;
    put(&alice, "/Team/old.txt", b"trashed before").await;
    alice.delete("/Team/old.txt").await.unwrap();
    // An upload into the folder is under way when it is shared.
    let created = Remote::send(
        alice
            .request(reqwest::Method::POST, "/tus/")
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "5")
            .header("Upload-Metadata", format!("path {}", b64("/Team/late.bin"))),
    )
    .await
    .unwrap();
    let session = created.headers()["location"].to_str().unwrap().to_owned();
    let session = session.rsplit('/').next().unwrap().to_owned();
    alice
        .share("/Team", "bob", ShareRole::Viewer)
        .await
        .unwrap();

    Remote::send(
        alice
            .request(reqwest::Method::PATCH, &format!("/tus/{session}"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body("late!"),
    )
    .await
    .unwrap();
    assert_eq!(get(&alice, "/Team/late.bin").await, b"late!");
    assert_eq!(get(&bob, "/Team/late.bin").await, b"late!");

    // The older /Team cannot come back under the shared folder's name,
    // where it would be out of sight; elsewhere it can.
    let old = alice
        .trash()
        .await
        .unwrap()
        .entries
        .into_iter()
        .find(|t| t.path == "/Team")
        .expect("the older /Team is in the trash");
    let (status, message) = refused(alice.restore_from_trash(&old.id, None).await.unwrap_err());
    assert_eq!(status, 409);
    assert!(message.contains("shared folder"), "{message}");
    alice
        .restore_from_trash(&old.id, Some("/Old team"))
        .await
        .unwrap();
    assert_eq!(get(&alice, "/Old team/gone.txt").await, b"old team");
    // What was trashed inside the folder before is listed and restored
    // where it was, inside it.
    let inside = alice
        .trash()
        .await
        .unwrap()
        .entries
        .into_iter()
        .find(|t| t.path.ends_with("old.txt"))
        .expect("old.txt is in the trash");
    assert_eq!(inside.path, "/Team/old.txt");
    alice.restore_from_trash(&inside.id, None).await.unwrap();
    assert_eq!(get(&bob, "/Team/old.txt").await, b"trashed before");

    // A name that is as long as a name may be still fits with a number.
    let long = "n".repeat(255);
    alice.mkdir(&format!("/{long}")).await.unwrap();
    bob.mkdir(&format!("/{long}")).await.unwrap();
    alice
        .share(&format!("/{long}"), "bob", ShareRole::Editor)
        .await
        .unwrap();
    let names = top(&bob).await;
    assert_eq!(names.len(), 3, "{:?}", names.keys());
    assert!(names.keys().all(|n| n.len() <= 255));

    // A file request cannot take files into the top of one's files, where
    // a name could fall under a shared folder's.
    let e = alice
        .create_link(&tessera_proto::api::CreateLinkRequest {
            path: "/".into(),
            expires_in_secs: None,
            password: None,
            upload_only: true,
        })
        .await
        .unwrap_err();
    assert_eq!(refused(e).0, 400);
}

/// Names in a folder of a user's files, with the role of shared ones.
async fn names_in(r: &Remote, path: &str) -> BTreeMap<String, Option<ShareRole>> {
    r.list(path)
        .await
        .unwrap_or_else(|e| panic!("list {path}: {e}"))
        .entries
        .into_iter()
        .map(|e| (e.name, e.shared))
        .collect()
}

async fn a_folder_deep_in_ones_files_is_shared_and_each_member_places_it_where_they_like(
    b: Backend,
) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    put(&alice, "/Work/2026/Team/plan.txt", b"the plan").await;
    put(&alice, "/Work/2026/notes.txt", b"alice's notes").await;
    alice
        .share("/Work/2026/Team", "bob", ShareRole::Editor)
        .await
        .unwrap();

    // The owner keeps it where it was; the member gets it at the top.
    assert_eq!(
        names_in(&alice, "/Work/2026").await,
        BTreeMap::from([
            ("Team".into(), Some(ShareRole::Owner)),
            ("notes.txt".into(), None)
        ])
    );
    assert_eq!(
        alice.shares().await.unwrap().shares[0].path,
        "/Work/2026/Team"
    );
    assert_eq!(get(&alice, "/Work/2026/Team/plan.txt").await, b"the plan");
    assert_eq!(
        top(&bob).await,
        BTreeMap::from([("Team".into(), Some(ShareRole::Editor))])
    );

    // Bob moves his mount point into a folder of his; alice's stays put.
    bob.mkdir("/Projects").await.unwrap();
    let cursor = bob.latest_cursor().await.unwrap();
    let moved = bob.move_to("/Team", "/Projects/Team").await.unwrap();
    assert_eq!(moved.shared, Some(ShareRole::Editor));
    assert_eq!(
        names_in(&bob, "/Projects").await,
        BTreeMap::from([("Team".into(), Some(ShareRole::Editor))])
    );
    assert!(!top(&bob).await.contains_key("Team"));
    put(&bob, "/Projects/Team/from-bob.txt", b"bob was here").await;
    assert_eq!(
        get(&alice, "/Work/2026/Team/from-bob.txt").await,
        b"bob was here"
    );
    assert_eq!(bob.shares().await.unwrap().shares[0].path, "/Projects/Team");
    let page = bob.changes(Some(&cursor), None).await.unwrap();
    let seen: Vec<(ChangeKind, &str, Option<&str>)> = page
        .changes
        .iter()
        .map(|c| (c.kind, c.path.as_str(), c.old_path.as_deref()))
        .collect();
    assert!(
        seen.contains(&(ChangeKind::Move, "/Projects/Team", Some("/Team"))),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(_, p, _)| *p == "/Projects/Team/from-bob.txt"),
        "{seen:?}"
    );

    // A move of his folder carries the mount along.
    bob.move_to("/Projects", "/Archive").await.unwrap();
    assert_eq!(
        get(&bob, "/Archive/Team/from-bob.txt").await,
        b"bob was here"
    );
    assert_eq!(bob.shares().await.unwrap().shares[0].path, "/Archive/Team");

    // A zip of his files, or of the folder holding it, has it where he
    // put it.
    put(&bob, "/Archive/own.txt", b"bob's own").await;
    for (path, inside) in [("/", "Archive/"), ("/Archive", "")] {
        let resp = Remote::send(
            bob.request(reqwest::Method::GET, "/files/zip")
                .query(&[("path", path)]),
        )
        .await
        .unwrap();
        let items = crate::tree::read_zip(&resp.bytes().await.unwrap());
        let entries: BTreeMap<String, Vec<u8>> =
            items.into_iter().map(|i| (i.name, i.data)).collect();
        assert_eq!(
            entries
                .get(&format!("{inside}Team/from-bob.txt"))
                .map(Vec::as_slice),
            Some(&b"bob was here"[..]),
            "{path}: {:?}",
            entries.keys()
        );
        assert_eq!(
            entries.get(&format!("{inside}own.txt")).map(Vec::as_slice),
            Some(&b"bob's own"[..]),
            "{path}: {:?}",
            entries.keys()
        );
    }

    // It cannot go into another shared folder, nor into itself, nor onto
    // something that exists.
    put(&bob, "/Own/keep.txt", b"bob's").await;
    bob.share("/Own", "alice", ShareRole::Viewer).await.unwrap();
    let (status, message) = refused(bob.move_to("/Archive/Team", "/Own/Team").await.unwrap_err());
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("cannot hold another"), "{message}");
    let (status, _) = refused(
        bob.move_to("/Archive/Team", "/Archive/Team/inner")
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 409);
    bob.mkdir("/Taken").await.unwrap();
    let (status, _) = refused(bob.move_to("/Archive/Team", "/Taken").await.unwrap_err());
    assert_eq!(status, 409);
    // Nor does a folder of his holding it go into a shared folder, or get
    // shared itself: say why.
    let (status, message) = refused(bob.move_to("/Archive", "/Own/Archive").await.unwrap_err());
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("/Archive/Team"), "{message}");
    let (status, message) = refused(
        bob.share("/Archive", "alice", ShareRole::Viewer)
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("holds the shared folder /Archive/Team"),
        "{message}"
    );
    // A mkdir at the mount point's path leads into it: nothing is hidden
    // under it.
    let (status, _) = refused(bob.mkdir("/Archive/Team").await.unwrap_err());
    assert_eq!(status, 409);

    // Deleting the folder around it lifts the shared folder to the top:
    // it never goes to the trash with it, and alice loses nothing.
    bob.mkdir("/Team").await.unwrap();
    bob.delete("/Archive").await.unwrap();
    assert_eq!(
        top(&bob).await,
        BTreeMap::from([
            ("Own".into(), Some(ShareRole::Owner)),
            ("Taken".into(), None),
            ("Team".into(), None),
            ("Team (2)".into(), Some(ShareRole::Editor))
        ])
    );
    assert_eq!(get(&bob, "/Team (2)/plan.txt").await, b"the plan");
    assert_eq!(get(&alice, "/Work/2026/Team/plan.txt").await, b"the plan");

    // Alice moves her folder holding it; bob's mount does not change.
    alice.move_to("/Work", "/Old work").await.unwrap();
    assert_eq!(
        get(&alice, "/Old work/2026/Team/from-bob.txt").await,
        b"bob was here"
    );
    assert_eq!(get(&bob, "/Team (2)/plan.txt").await, b"the plan");

    // The owner's delete of the mount point puts it in her trash, in the
    // folder it was in, named as she named it.
    alice
        .move_to("/Old work/2026/Team", "/Old work/Team 2026")
        .await
        .unwrap();
    alice.delete("/Old work/Team 2026").await.unwrap();
    assert!(!top(&bob).await.contains_key("Team (2)"));
    let trash = alice.trash().await.unwrap();
    let item = trash
        .entries
        .iter()
        .find(|i| i.path == "/Old work/Team 2026")
        .unwrap_or_else(|| panic!("{:?}", trash.entries));
    alice.restore_from_trash(&item.id, None).await.unwrap();
    assert_eq!(
        get(&alice, "/Old work/Team 2026/plan.txt").await,
        b"the plan"
    );
}

async fn a_moved_mount_point_syncs_in_its_new_place(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    put(&alice, "/Team/doc.txt", b"shared doc").await;
    alice
        .share("/Team", "bob", ShareRole::Viewer)
        .await
        .unwrap();
    let (dir, mut sync) = syncer(&s, "bob", "laptop").await;
    round(&mut sync).await;
    assert_eq!(files(&dir)["Team/doc.txt"], b"shared doc");

    // Moved on his device, even as a viewer: the mount moves, nothing is
    // set aside, and the server agrees.
    std::fs::create_dir_all(dir.join("Shared with me")).unwrap();
    std::fs::rename(dir.join("Team"), dir.join("Shared with me/Team")).unwrap();
    let r = sync.sync_once().await.unwrap();
    assert!(r.stuck.is_empty(), "{:?}", r.stuck);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    round(&mut sync).await;
    assert_eq!(
        files(&dir),
        BTreeMap::from([("Shared with me/Team/doc.txt".into(), b"shared doc".to_vec())])
    );
    assert_eq!(
        bob.shares().await.unwrap().shares[0].path,
        "/Shared with me/Team"
    );

    // Alice's next edit arrives there.
    put(&alice, "/Team/doc.txt", b"shared doc, v2").await;
    round(&mut sync).await;
    assert_eq!(
        files(&dir)["Shared with me/Team/doc.txt"],
        b"shared doc, v2"
    );

    // Moved on the server (from another device), it moves here.
    bob.move_to("/Shared with me/Team", "/Team").await.unwrap();
    round(&mut sync).await;
    assert_eq!(
        files(&dir),
        BTreeMap::from([("Team/doc.txt".into(), b"shared doc, v2".to_vec())])
    );
}

/// Two users sharing with each other at the same moment, while each moves
/// and renames what they were given: every change lands (each one locks
/// the namespaces it touches in one order, so none waits on the other's
/// lock while holding one it needs).
async fn shares_both_ways_at_once_all_land(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    const N: usize = 12;
    for i in 0..N {
        put(&alice, &format!("/A{i}/a.txt"), b"alice's").await;
        put(&bob, &format!("/B{i}/b.txt"), b"bob's").await;
    }
    let mut calls = Vec::new();
    for i in 0..N {
        let (alice, bob) = (alice.clone(), bob.clone());
        calls.push(tokio::spawn(async move {
            let (a, b) = (format!("/A{i}"), format!("/B{i}"));
            let (from_a, from_b) = (format!("/from alice {i}"), format!("/from bob {i}"));
            let (x, y) = tokio::join!(
                alice.share(&a, "bob", ShareRole::Editor),
                bob.share(&b, "alice", ShareRole::Editor),
            );
            x.map_err(|e| format!("alice shares /A{i}: {e}"))?;
            y.map_err(|e| format!("bob shares /B{i}: {e}"))?;
            // Each renames what they were given while the other changes
            // their role in it.
            let (x, y, z, w) = tokio::join!(
                alice.move_to(&b, &from_b),
                bob.move_to(&a, &from_a),
                alice.share(&a, "bob", ShareRole::Viewer),
                bob.share(&b, "alice", ShareRole::Viewer),
            );
            x.map_err(|e| format!("alice moves /B{i}: {e}"))?;
            y.map_err(|e| format!("bob moves /A{i}: {e}"))?;
            z.map_err(|e| format!("alice changes bob's role in /A{i}: {e}"))?;
            w.map_err(|e| format!("bob changes alice's role in /B{i}: {e}"))?;
            Ok::<(), String>(())
        }));
    }
    let mut failed = Vec::new();
    for call in calls {
        if let Err(e) = call.await.unwrap() {
            failed.push(e);
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    let (mine, theirs) = (top(&alice).await, top(&bob).await);
    for i in 0..N {
        assert_eq!(mine[&format!("A{i}")], Some(ShareRole::Owner));
        assert_eq!(mine[&format!("from bob {i}")], Some(ShareRole::Viewer));
        assert_eq!(theirs[&format!("from alice {i}")], Some(ShareRole::Viewer));
    }
    assert_eq!(get(&alice, "/from bob 3/b.txt").await, b"bob's");
}
