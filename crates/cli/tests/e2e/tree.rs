//! The tree's integrity and the commit path: a folder never moves into
//! itself, tree walks stop at a damaged tree instead of looping, the server
//! owns a file's identity, zip entry names extract safely everywhere, and a
//! long block list cannot hold the write lock. Real servers, both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::{Backend, TestServer, names};
use reqwest::StatusCode;
use tessera_client::{ClientError, Remote};
use tessera_proto::api::{BlockCodec, BlockRef, CommitRequest};
use tessera_proto::block::CHUNKER;
use tessera_proto::{BlockId, ContentHash, ErrorCode};

on_both_backends!(
    moving_a_folder_into_itself_is_refused,
    a_cycle_in_the_tree_stalls_no_writer,
    the_server_owns_a_files_identity,
    a_file_hashed_as_its_blocks_arrive_is_held_to_its_claim,
    numbered_blocks_sent_while_cutting_are_held_to_the_commits_claim,
    zip_entry_names_are_safe_everywhere,
    a_folder_cut_off_by_a_cycle_comes_back_at_the_root,
    a_block_list_longer_than_the_size_allows_is_refused,
    many_folders_are_made_in_one_request_each_on_its_own,
    a_batch_of_very_deep_paths_is_refused_before_it_holds_the_write_lock,
);

fn code(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

async fn put(r: &Remote, path: &str, bytes: &[u8]) {
    r.upload(path, None, reqwest::Body::from(bytes.to_vec()))
        .await
        .unwrap_or_else(|e| panic!("upload {path}: {e}"));
}

fn commit_of(path: &str, hash: ContentHash, blocks: &[&[u8]]) -> CommitRequest {
    CommitRequest {
        reuse: Vec::new(),
        path: path.into(),
        base_rev: None,
        size: blocks.iter().map(|b| b.len() as u64).sum(),
        content_hash: hash,
        chunker: CHUNKER.into(),
        blocks: blocks
            .iter()
            .map(|b| BlockRef {
                id: BlockId::of(b),
                size: b.len() as u64,
            })
            .collect(),
    }
}

/// A large upload's blocks are hashed as they arrive (after the early
/// commit that lists them), so the final commit reads nothing back: the
/// claim is still checked against exactly those bytes, whatever the
/// order the blocks came in, a block repeated in the list, or one the
/// server held before (from which the check reads back).
async fn a_file_hashed_as_its_blocks_arrive_is_held_to_its_claim(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let parts: Vec<Vec<u8>> = (0..6)
        .map(|i| crate::common::mixed_data(1 << 20, 40 + i))
        .collect();
    let send = async |r: &Remote, part: &[u8]| {
        r.put_block(&BlockId::of(part), BlockCodec::Raw, part.to_vec().into())
            .await
            .unwrap();
    };
    let whole = |list: &[&[u8]]| ContentHash::of(&list.concat());
    let download = async |path: &str| match r.download(path, None).await {
        Ok(resp) => Some(resp.bytes().await.unwrap().to_vec()),
        Err(_) => None,
    };

    // 0 1 1 2 3, sent out of order.
    let list: Vec<&[u8]> = vec![&parts[0], &parts[1], &parts[1], &parts[2], &parts[3]];
    let honest = commit_of("/big.bin", whole(&list), &list);
    let err = r.commit(&honest).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::MissingBlocks), "{err}");
    for i in [1, 0, 3, 2] {
        send(&r, &parts[i]).await;
    }
    assert_eq!(r.commit(&honest).await.unwrap().size, Some(5 << 20));
    assert_eq!(download("/big.bin").await, Some(list.concat()));

    // A forged claim: the blocks as they came say otherwise.
    let list: Vec<&[u8]> = vec![&parts[4], &parts[5]];
    let forged = commit_of("/forged.bin", whole(&[&parts[5], &parts[4]]), &list);
    let err = r.commit(&forged).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::MissingBlocks), "{err}");
    for part in &list {
        send(&r, part).await;
    }
    let err = r.commit(&forged).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("content_hash"), "{err}");
    assert_eq!(download("/forged.bin").await, None, "nothing was committed");

    // A new file whose middle block the server holds already: its blocks
    // up to there are hashed as they come, the rest read back.
    let fresh: Vec<Vec<u8>> = (0..3)
        .map(|i| crate::common::mixed_data(1 << 20, 50 + i))
        .collect();
    let list: Vec<&[u8]> = vec![&fresh[0], &parts[2], &fresh[1], &fresh[2]];
    let claim = commit_of("/other.bin", whole(&list), &list);
    let err = r.commit(&claim).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::MissingBlocks), "{err}");
    for part in &fresh {
        send(&r, part).await;
    }
    r.commit(&claim).await.unwrap();
    assert_eq!(download("/other.bin").await, Some(list.concat()));
}

/// Blocks sent numbered in an upload of the client's naming (while it is
/// still cutting the file) are hashed as they come; the commit naming the
/// upload is held to its claim, and to its own list: numbered blocks in
/// another order than the list count for nothing.
async fn numbered_blocks_sent_while_cutting_are_held_to_the_commits_claim(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let parts: Vec<Vec<u8>> = (0..4)
        .map(|i| crate::common::mixed_data(1 << 20, 60 + i))
        .collect();
    let list: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let send = async |name: &str, order: &[usize]| {
        for &i in order {
            let part = &parts[i];
            r.put_block_numbered(
                &BlockId::of(part),
                BlockCodec::Raw,
                part.to_vec().into(),
                Some((name, i as u32)),
            )
            .await
            .unwrap();
        }
    };
    let whole = ContentHash::of(&list.concat());
    // A name that is not one, or a number without a name: 400.
    for query in ["?upload=short&seq=0", "?seq=0"] {
        let resp = r
            .request(
                reqwest::Method::PUT,
                &format!("/blocks/{}{query}", BlockId::of(&parts[0])),
            )
            .body(parts[0].clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    send("first-upload-0001", &[1, 0, 3, 2]).await;
    let forged = commit_of("/a.bin", ContentHash::of(&parts[0]), &list);
    let err = r
        .commit_upload(&forged, "first-upload-0001")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("content_hash"), "{err}");
    let honest = commit_of("/a.bin", whole, &list);
    assert_eq!(
        r.commit_upload(&honest, "first-upload-0001")
            .await
            .unwrap()
            .size,
        Some(4 << 20)
    );
    // Numbered 0 1 2 3, committed as 1 0 2 3 with the honest hash of that
    // order: the digest does not match, the server reads back, it lands.
    let other: Vec<Vec<u8>> = (0..2)
        .map(|i| crate::common::mixed_data(1 << 20, 70 + i))
        .collect();
    for (i, part) in other.iter().enumerate() {
        r.put_block_numbered(
            &BlockId::of(part),
            BlockCodec::Raw,
            part.to_vec().into(),
            Some(("second-upload-002", i as u32)),
        )
        .await
        .unwrap();
    }
    let swapped: Vec<&[u8]> = vec![&other[1], &other[0]];
    let claim = commit_of("/b.bin", ContentHash::of(&swapped.concat()), &swapped);
    r.commit_upload(&claim, "second-upload-002").await.unwrap();
    let got = r
        .download("/b.bin", None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, swapped.concat());
}

async fn moving_a_folder_into_itself_is_refused(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    put(&r, "/Photos/a/b/pic.jpg", b"pixels").await;
    let photos = r.meta("/Photos").await.unwrap().id;

    // Other case and exact case, a direct child and deeper.
    for to in [
        "/photos/sub",
        "/Photos/sub",
        "/PHOTOS/A/b/c",
        "/Photos/a/b/c",
        "/photos",
    ] {
        let parent = to.rsplit_once('/').map(|(p, _)| p).unwrap_or("/");
        let parent = if parent.is_empty() { "/" } else { parent };
        let result = r.move_to("/Photos", to).await;
        if to == "/photos" {
            // Not inside itself: a rename (checked below), so put it back.
            result.unwrap_or_else(|e| panic!("case-only rename: {e}"));
            r.move_to("/photos", "/Photos").await.unwrap();
            continue;
        }
        let err = result.expect_err(to);
        match r.meta(parent).await {
            // The destination's folder is /Photos itself or inside it.
            Ok(_) => {
                assert_eq!(err.status(), Some(409), "{to}: {err}");
                assert_eq!(code(&err), Some(ErrorCode::Conflict), "{to}: {err}");
                assert!(err.to_string().contains("inside"), "{to}: {err}");
            }
            // With exact names another spelling names no folder at all.
            Err(_) => assert_eq!(err.status(), Some(404), "{to}: {err}"),
        }
        let root = r.list("/").await.unwrap();
        assert!(
            root.entries
                .iter()
                .any(|e| e.name == "Photos" && e.id == photos),
            "{to}: Photos is still at the top: {:?}",
            root.entries
        );
        assert_eq!(
            r.meta("/Photos/a/b/pic.jpg").await.unwrap().size,
            Some(6),
            "{to}"
        );
        assert!(r.trash().await.unwrap().entries.is_empty(), "{to}");
    }

    // A case-only rename of a folder keeps working.
    let e = r.move_to("/Photos", "/PHOTOS").await.unwrap();
    assert_eq!(
        (e.name.as_str(), e.id.as_str()),
        ("PHOTOS", photos.as_str())
    );
    let root = r.list("/").await.unwrap();
    assert_eq!(
        root.entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["PHOTOS"]
    );
    r.meta("/PHOTOS/a/b/pic.jpg").await.unwrap();
}

/// Runs one statement on the server's own database, as damage from an
/// older release would have left it.
async fn damage(s: &TestServer, sql: &str) {
    use sqlx::Connection;
    let url = s.config.database_url().unwrap();
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

/// Marks `path` pending: a commit naming a block the server lacks.
async fn pending(r: &Remote, path: &str, seed: &[u8]) {
    let err = r
        .commit(&commit_of(path, ContentHash::of(seed), &[seed]))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::MissingBlocks), "{err}");
    assert!(r.meta(path).await.unwrap().pending);
}

async fn a_cycle_in_the_tree_stalls_no_writer(b: Backend) {
    let s = TestServer::start_with(b, |c| c.pending_ttl_secs = 3600).await;
    let r = s.user("alice").await;
    r.mkdir("/Photos/sub").await.unwrap();
    pending(&r, "/Photos/sub/half.jpg", b"never uploaded").await;
    pending(&r, "/elsewhere.bin", b"not uploaded either").await;
    // What the case-variant move used to leave: a folder its own parent.
    damage(&s, "UPDATE nodes SET parent_id = id WHERE name = 'Photos'").await;

    // The expiry worker meets the cycle when it builds the pending file's path.
    s.config.clock.advance(Duration::from_secs(3601));
    let admin = s.login("admin", &s.admin_password, "laptop").await;
    let ran = tokio::time::timeout(Duration::from_secs(15), admin.run_worker("pending")).await;
    let ran = ran.expect("the expiry step ends").unwrap();
    let t = Instant::now();
    let made = tokio::time::timeout(Duration::from_secs(15), r.mkdir("/Other")).await;
    println!("mkdir beside a damaged tree: {:?}", t.elapsed());
    made.expect("a write beside a damaged tree is not held up")
        .unwrap();
    // The damage stops no other pending mark from ending.
    assert_eq!(ran.last_error, None, "{ran:?}");
    assert_eq!(ran.last_done, 1, "{ran:?}");
    assert!(r.meta("/elsewhere.bin").await.is_err());
    // Purging and listing still end.
    r.delete("/Other").await.unwrap();
    let purge = tokio::time::timeout(Duration::from_secs(15), r.purge_trash(None)).await;
    purge.expect("purge ends").unwrap();
    let stop = tokio::time::timeout(Duration::from_secs(15), s.running.shutdown()).await;
    stop.expect("the server stops").unwrap();
}

async fn a_folder_cut_off_by_a_cycle_comes_back_at_the_root(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    put(&r, "/Photos/a/pic.jpg", b"pixels").await;
    put(&r, "/Loop/x.txt", b"x").await;
    r.mkdir("/Loop/Back").await.unwrap();
    // What older releases left: a folder its own parent, and a pair of
    // folders each inside the other.
    damage(&s, "UPDATE nodes SET parent_id = id WHERE name = 'Photos'").await;
    damage(
        &s,
        "UPDATE nodes SET parent_id = (SELECT id FROM nodes WHERE name = 'Back') WHERE name = 'Loop'",
    )
    .await;
    assert!(r.list("/").await.unwrap().entries.is_empty());

    let s = s.restart().await;
    assert_eq!(
        names(&r, "/").await,
        ["Back", "Loop", "Photos"],
        "the cut-off folders are back at the root, not left in a trash that expires"
    );
    assert!(r.trash().await.unwrap().entries.is_empty());
    assert_eq!(
        r.meta("/Photos/a/pic.jpg").await.unwrap().size,
        Some(6),
        "back with its contents"
    );
    r.meta("/Loop/x.txt").await.unwrap();
    r.meta("/Back").await.unwrap();
    // A second start finds nothing more to rescue.
    let s = s.restart().await;
    assert!(r.trash().await.unwrap().entries.is_empty());
    drop(s);
}

async fn download_identity(r: &Remote, path: &str) -> (String, String) {
    let resp = r.download(path, None).await.unwrap();
    let h = resp.headers();
    (
        h["etag"].to_str().unwrap().trim_matches('"').to_owned(),
        h["x-tessera-content-hash"].to_str().unwrap().to_owned(),
    )
}

async fn the_server_owns_a_files_identity(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let (one, two): (&[u8], &[u8]) = (b"first version", b"second version, other bytes");
    for blk in [one, two] {
        r.put_block(&BlockId::of(blk), BlockCodec::Raw, blk.to_vec().into())
            .await
            .unwrap();
    }
    let forged = ContentHash([0x11; 32]);

    // A claim the blocks do not bear out is refused, and leaves nothing.
    let err = r
        .commit(&commit_of("/f.txt", forged, &[one]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("content_hash"), "{err}");
    assert!(r.meta("/f.txt").await.is_err(), "nothing was committed");

    let e = r
        .commit(&commit_of("/f.txt", ContentHash::of(one), &[one]))
        .await
        .unwrap();
    assert_eq!(e.rev, Some(1));
    let real = ContentHash::of(one).to_hex();
    assert_eq!(download_identity(&r, "/f.txt").await, (real.clone(), real));

    // A known block list with another hash: refused too (no re-read).
    let err = r
        .commit(&commit_of("/copy.txt", ContentHash::of(two), &[one]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");

    // An edit claiming the current hash with other blocks is not dropped
    // as "unchanged": it is refused, and the honest edit lands.
    let err = r
        .commit(&commit_of("/f.txt", ContentHash::of(one), &[two]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    let e = r
        .commit(&commit_of("/f.txt", ContentHash::of(two), &[two]))
        .await
        .unwrap();
    assert_eq!(e.rev, Some(2), "the edit is a new revision");
    let real = ContentHash::of(two).to_hex();
    assert_eq!(download_identity(&r, "/f.txt").await, (real.clone(), real));
    // The same block list again is the one case that is "unchanged".
    let e = r
        .commit(&commit_of("/f.txt", ContentHash::of(two), &[two]))
        .await
        .unwrap();
    assert_eq!(e.rev, Some(2));

    // The batch route checks each item the same way.
    let out = r
        .commit_batch(vec![
            commit_of("/b1.txt", forged, &[one]),
            commit_of("/b2.txt", ContentHash::of(two), &[two]),
        ])
        .await
        .unwrap();
    let err = out.results[0].error.as_ref().expect("forged item refused");
    assert_eq!(err.code, ErrorCode::BadRequest, "{}", err.message);
    assert!(out.results[1].entry.is_some(), "{:?}", out.results[1].error);
    assert!(r.meta("/b1.txt").await.is_err());
    let real = ContentHash::of(two).to_hex();
    assert_eq!(download_identity(&r, "/b2.txt").await, (real.clone(), real));
}

/// One entry of a zip's central directory, with its data read back.
pub(crate) struct ZipItem {
    pub(crate) name: String,
    pub(crate) data: Vec<u8>,
}

fn u16_at(b: &[u8], i: usize) -> usize {
    u16::from_le_bytes([b[i], b[i + 1]]) as usize
}
fn u32_at(b: &[u8], i: usize) -> u64 {
    u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as u64
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
}

/// Reads a (stored, possibly Zip64) archive through its central directory.
pub(crate) fn read_zip(b: &[u8]) -> Vec<ZipItem> {
    let eocd = (0..=b.len() - 22)
        .rev()
        .find(|&i| u32_at(b, i) == 0x0605_4b50)
        .expect("end of central directory");
    let (mut count, mut cd) = (u16_at(b, eocd + 10) as u64, u32_at(b, eocd + 16));
    if count == 0xffff || cd == 0xffff_ffff {
        let z = u64_at(b, eocd - 20 + 8) as usize;
        count = u64_at(b, z + 32);
        cd = u64_at(b, z + 48);
    }
    let mut items = Vec::new();
    let mut i = cd as usize;
    for _ in 0..count {
        assert_eq!(u32_at(b, i), 0x0201_4b50, "central directory entry");
        let (mut size, mut offset) = (u32_at(b, i + 20), u32_at(b, i + 42));
        let uncompressed = u32_at(b, i + 24);
        let (n, e, c) = (u16_at(b, i + 28), u16_at(b, i + 30), u16_at(b, i + 32));
        let name = String::from_utf8(b[i + 46..i + 46 + n].to_vec()).unwrap();
        let mut extra = &b[i + 46 + n..i + 46 + n + e];
        while extra.len() >= 4 {
            let (id, len) = (u16_at(extra, 0), u16_at(extra, 2));
            if id == 1 {
                let mut f = &extra[4..4 + len];
                if uncompressed == 0xffff_ffff {
                    f = &f[8..];
                }
                if size == 0xffff_ffff {
                    size = u64_at(f, 0);
                    f = &f[8..];
                }
                if offset == 0xffff_ffff {
                    offset = u64_at(f, 0);
                }
            }
            extra = &extra[4 + len..];
        }
        let o = offset as usize;
        let start = o + 30 + u16_at(b, o + 26) + u16_at(b, o + 28);
        items.push(ZipItem {
            name,
            data: b[start..start + size as usize].to_vec(),
        });
        i += 46 + n + e + c;
    }
    items
}

/// What Windows, macOS and Linux all extract as written, inside the
/// target folder.
fn assert_portable(name: &str) {
    let segs: Vec<&str> = name.strip_suffix('/').unwrap_or(name).split('/').collect();
    for seg in segs {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{name:?}");
        assert!(
            !seg.chars()
                .any(|c| c.is_control() || "\\:*?\"<>|".contains(c)),
            "{name:?}"
        );
        assert!(!seg.ends_with('.') && !seg.ends_with(' '), "{name:?}");
        let stem = seg
            .split('.')
            .next()
            .unwrap_or("")
            .trim_end()
            .to_ascii_uppercase();
        let reserved = ["CON", "PRN", "AUX", "NUL"].contains(&stem.as_str())
            || ((stem.starts_with("COM") || stem.starts_with("LPT"))
                && stem.len() == 4
                && stem.as_bytes()[3].is_ascii_digit());
        assert!(!reserved, "{name:?}");
    }
}

async fn zip_entry_names_are_safe_everywhere(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    // Each file holds its own name, so the test can tell where it went.
    let names = [
        "..\\..\\evil.bat",
        "C:win.txt",
        "CON",
        "aux.tar.gz",
        "com1.log",
        "what?.txt",
        "a<b>|\"*.txt",
        "trailing.",
        "trailing ",
        "a_b",
        "a:b",
        "fine.txt",
    ];
    for n in names {
        put(&r, &format!("/Stuff/{n}"), n.as_bytes()).await;
    }
    put(&r, "/Stuff/dir\\x:/inner.txt", b"inner").await;
    let resp = Remote::send(
        r.request(reqwest::Method::GET, "/files/zip")
            .query(&[("path", "/Stuff")]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let items = read_zip(&resp.bytes().await.unwrap());
    let mut seen = HashSet::new();
    for i in &items {
        assert_portable(&i.name);
        assert!(
            seen.insert(i.name.to_lowercase()),
            "two entries extract to one file: {:?}",
            i.name
        );
    }
    let entry = |n: &str| -> Vec<u8> {
        items
            .iter()
            .find(|i| i.name == n)
            .unwrap_or_else(|| {
                panic!(
                    "no entry {n:?} in {:?}",
                    items.iter().map(|i| &i.name).collect::<Vec<_>>()
                )
            })
            .data
            .clone()
    };
    // The mapping docs/ARCHITECTURE.md states.
    assert_eq!(entry(".._.._evil.bat"), b"..\\..\\evil.bat");
    assert_eq!(entry("C_win.txt"), b"C:win.txt");
    assert_eq!(entry("_CON"), b"CON");
    assert_eq!(entry("_aux.tar.gz"), b"aux.tar.gz");
    assert_eq!(entry("_com1.log"), b"com1.log");
    assert_eq!(entry("what_.txt"), b"what?.txt");
    assert_eq!(entry("a_b____.txt"), b"a<b>|\"*.txt");
    // Names that map alike stay apart, in listing order.
    let pair = |a: &str, b: &str| HashSet::from([entry(a), entry(b)]);
    assert_eq!(
        pair("trailing_", "trailing_ (2)"),
        HashSet::from([b"trailing.".to_vec(), b"trailing ".to_vec()])
    );
    assert_eq!(
        pair("a_b", "a_b (2)"),
        HashSet::from([b"a_b".to_vec(), b"a:b".to_vec()])
    );
    assert_eq!(entry("fine.txt"), b"fine.txt");
    assert_eq!(entry("dir_x_/inner.txt"), b"inner");
    assert_eq!(items.len(), names.len() + 1, "every file is in the zip");
}

async fn a_block_list_longer_than_the_size_allows_is_refused(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let bob = s.user("bob").await;
    // 95,000 ids nobody uploaded, adding up to a 10 MiB file.
    let n = 95_000u64;
    let size = 10u64 << 20;
    let blocks: Vec<BlockRef> = (0..n)
        .map(|i| BlockRef {
            id: BlockId::of(&i.to_le_bytes()),
            size: size / n + u64::from(i < size % n),
        })
        .collect();
    let req = CommitRequest {
        reuse: Vec::new(),
        path: "/many.bin".into(),
        base_rev: None,
        size,
        content_hash: ContentHash([7; 32]),
        chunker: CHUNKER.into(),
        blocks,
    };
    let t = Instant::now();
    let (err, worst) = while_writing(&bob, r.commit(&req)).await;
    println!(
        "commit of {n} unknown ids answered in {:?}; another user's slowest mkdir meanwhile: {worst:?}",
        t.elapsed()
    );
    let err = err.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("blocks"), "{err}");
    assert!(r.meta("/many.bin").await.is_err(), "nothing changed");
}

/// Runs `work` while `other` makes folders one after another; returns what
/// `work` gave and the slowest of those writes.
async fn while_writing<T>(
    other: &Remote,
    work: impl std::future::Future<Output = T>,
) -> (T, Duration) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let writes = async {
        let mut worst = Duration::ZERO;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t = Instant::now();
            other.mkdir(&format!("/meanwhile-{i}")).await.unwrap();
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worst
    };
    let work = async {
        let out = work.await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    };
    tokio::join!(work, writes)
}

/// Figures for docs/PERFORMANCE.md, not a check: what verifying a claimed
/// hash costs, and how long another user's write waits during the worst
/// legal commits. Run with
/// `cargo test -p tessera --test e2e -- --ignored --nocapture commit_figures`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn commit_figures() {
    for b in [Backend::Sqlite, Backend::Postgres] {
        commit_figures_on(b).await;
    }
}

// Long on purpose: one measured sequence of commits, printed as it goes.
async fn commit_figures_on(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let bob = s.user("bob").await;
    let mib = 256usize;
    let data = crate::common::random_data(mib << 20, 9);
    let t = Instant::now();
    put(&r, "/big.bin", &data).await;
    println!("{b:?}: simple upload of {mib} MiB: {:?}", t.elapsed());
    let t = Instant::now();
    let mut resp = r.download("/big.bin", None).await.unwrap();
    while resp.chunk().await.unwrap().is_some() {}
    println!("{b:?}: download of {mib} MiB: {:?}", t.elapsed());
    let list = r.block_list("/big.bin", None).await.unwrap().blocks;
    // The same blocks in reverse order: a file no revision has, so its
    // claim is checked by reading every block.
    let mut slices = Vec::new();
    let mut at = 0usize;
    for blk in &list {
        slices.push(&data[at..at + blk.size as usize]);
        at += blk.size as usize;
    }
    let mut h = blake3::Hasher::new();
    for sl in slices.iter().rev() {
        h.update(sl);
    }
    let req = CommitRequest {
        reuse: Vec::new(),
        path: "/reversed.bin".into(),
        base_rev: None,
        size: data.len() as u64,
        content_hash: ContentHash(*h.finalize().as_bytes()),
        chunker: CHUNKER.into(),
        blocks: list.iter().rev().cloned().collect(),
    };
    let t = Instant::now();
    let (done, worst) = while_writing(&bob, r.commit(&req)).await;
    done.unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{b:?}: commit verifying {mib} MiB ({} blocks): {secs:.2} s = {:.2} s/GiB; bob's slowest mkdir {worst:?}",
        list.len(),
        secs * 1024.0 / mib as f64
    );
    // Again under another name: the block list is known, nothing is read.
    let again = CommitRequest {
        reuse: Vec::new(),
        path: "/reversed-copy.bin".into(),
        ..req.clone()
    };
    let t = Instant::now();
    r.commit(&again).await.unwrap();
    println!("{b:?}: the same block list again: {:?}", t.elapsed());

    // The worst legal commits: 10 GiB (the default limit) in the most
    // blocks the size allows, first all unknown, then all one held block.
    let one: Vec<u8> = crate::common::random_data(1 << 20, 10);
    let id = BlockId::of(&one);
    r.put_block(&id, BlockCodec::Raw, one.clone().into())
        .await
        .unwrap();
    let n = 10u64 * 1024;
    let unknown = CommitRequest {
        reuse: Vec::new(),
        path: "/unknown.bin".into(),
        base_rev: None,
        size: n << 20,
        content_hash: ContentHash([3; 32]),
        chunker: CHUNKER.into(),
        blocks: (0..n)
            .map(|i| BlockRef {
                id: BlockId::of(&i.to_le_bytes()),
                size: 1 << 20,
            })
            .collect(),
    };
    let t = Instant::now();
    let (done, worst) = while_writing(&bob, r.commit(&unknown)).await;
    assert_eq!(code(&done.unwrap_err()), Some(ErrorCode::MissingBlocks));
    println!(
        "{b:?}: 10 GiB commit of {n} unknown blocks answered in {:?}; bob's slowest mkdir {worst:?}",
        t.elapsed()
    );
    let mut h = blake3::Hasher::new();
    for _ in 0..n {
        h.update(&one);
    }
    let repeated = CommitRequest {
        reuse: Vec::new(),
        path: "/repeated.bin".into(),
        content_hash: ContentHash(*h.finalize().as_bytes()),
        blocks: (0..n).map(|_| BlockRef { id, size: 1 << 20 }).collect(),
        ..unknown
    };
    let t = Instant::now();
    let (done, worst) = while_writing(&bob, r.commit(&repeated)).await;
    done.unwrap();
    println!(
        "{b:?}: 10 GiB commit of one held block {n} times: {:?}; bob's slowest mkdir {worst:?}",
        t.elapsed()
    );
}

/// A new tree's folders go up in one request and one transaction; each
/// path succeeds or fails on its own, like a single mkdir, and the journal
/// tells other devices of each folder made.
async fn many_folders_are_made_in_one_request_each_on_its_own(backend: Backend) {
    use tessera_proto::api::ChangeKind;
    let s = TestServer::start(backend).await;
    let alice = s.user("alice").await;
    alice.mkdir("/old").await.unwrap();
    put(&alice, "/note.txt", b"a file").await;
    let before = alice.changes(None, None).await.unwrap().cursor;
    let asked = [
        "/new",
        "/new/a/b",
        "/old",
        "/note.txt/under",
        "/new/a",
        "/x/y",
    ];
    let answers = alice
        .mkdir_many(asked.iter().map(|p| p.to_string()).collect())
        .await
        .unwrap();
    assert_eq!(answers.len(), asked.len());
    let codes: Vec<Option<ErrorCode>> = answers
        .iter()
        .map(|a| a.as_ref().err().and_then(code))
        .collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            Some(ErrorCode::AlreadyExists),
            Some(ErrorCode::NotAFolder),
            Some(ErrorCode::AlreadyExists),
            None,
        ]
    );
    for p in ["/new", "/new/a", "/new/a/b", "/x", "/x/y", "/old"] {
        let e = alice.meta(p).await.unwrap();
        assert_eq!(e.kind, tessera_proto::api::EntryKind::Folder, "{p}");
    }
    assert_eq!(
        alice.meta("/note.txt").await.unwrap().kind,
        tessera_proto::api::EntryKind::File
    );
    let made: Vec<String> = alice
        .changes(Some(&before), None)
        .await
        .unwrap()
        .changes
        .into_iter()
        .filter(|c| c.kind == ChangeKind::Mkdir)
        .map(|c| c.path)
        .collect();
    assert_eq!(made, ["/new", "/new/a", "/new/a/b", "/x", "/x/y"]);

    // Bad input changes nothing: a path that is not valid, or too many.
    let e = alice
        .mkdir_many(vec!["/fine".into(), "/../up".into()])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let e = alice
        .mkdir_many((0..1001).map(|i| format!("/many/{i}")).collect())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("at most 1000"), "{e}");
    assert!(alice.meta("/fine").await.is_err());
    assert!(alice.meta("/many").await.is_err());
    // Another account's tree is its own.
    let bob = s.user("bob").await;
    assert!(bob.meta("/new").await.is_err());
}

/// A batch whose paths name more folders in all than the server makes
/// in one transaction is refused whole, before anything is looked up: 40
/// empty files 2,000 folders deep would otherwise make 80,000 folders
/// while every other writer waits.
async fn a_batch_of_very_deep_paths_is_refused_before_it_holds_the_write_lock(b: Backend) {
    use tessera_proto::api::MAX_BATCH_SEGMENTS;
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let deep = |i: usize| format!("/d{i}{}", "/a".repeat(1999));
    const { assert!(40 * 2000 > MAX_BATCH_SEGMENTS) };
    let empty = ContentHash::from(blake3::hash(b""));
    let commits: Vec<CommitRequest> = (0..40)
        .map(|i| commit_of(&format!("{}/empty", deep(i)), empty, &[]))
        .collect();
    let started = Instant::now();
    let e = r.commit_batch(commits).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("at most"), "{e}");
    let e = r.mkdir_many((0..40).map(deep).collect()).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        r.list("/").await.unwrap().entries.is_empty(),
        "nothing was made"
    );
    // A deep path within the bound still works.
    let fine: Vec<CommitRequest> = (0..3)
        .map(|i| commit_of(&format!("{}/empty", deep(i)), empty, &[]))
        .collect();
    let made = r.commit_batch(fine).await.unwrap();
    assert!(
        made.results.iter().all(|r| r.entry.is_some()),
        "{:?}",
        made.results
    );
}
