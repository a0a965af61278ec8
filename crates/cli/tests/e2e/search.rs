//! Search by name: what a user finds is what is in their files now
//! (renames, moves, the trash and shares included, never another user's),
//! through real HTTP on both backends; and how long a search over many
//! names takes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tessera_client::Remote;
use tessera_proto::api::ShareRole;

use crate::common::{Backend, TestServer};

on_both_backends!(a_search_finds_what_is_there_now_and_only_that);

async fn put(r: &Remote, path: &str, bytes: &[u8]) {
    r.upload(path, None, reqwest::Body::from(bytes.to_vec()))
        .await
        .unwrap_or_else(|e| panic!("upload {path}: {e}"));
}

async fn found(r: &Remote, text: &str) -> Vec<String> {
    let mut paths: Vec<String> = r
        .search(text, None)
        .await
        .unwrap_or_else(|e| panic!("search {text}: {e}"))
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    paths.sort();
    paths
}

async fn a_search_finds_what_is_there_now_and_only_that(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    put(&alice, "/Work/Quarterly Report.pdf", b"q").await;
    put(&alice, "/Work/2026/report-draft.txt", b"d").await;
    put(&alice, "/Photos/beach.jpg", b"b").await;
    put(&alice, "/odd/100%_done.txt", b"o").await;
    put(&bob, "/bobs report.txt", b"bob's").await;

    // Any case, any part of the name, folders too; never bob's.
    assert_eq!(
        found(&alice, "REPORT").await,
        ["/Work/2026/report-draft.txt", "/Work/Quarterly Report.pdf"]
    );
    assert_eq!(found(&alice, "work").await, ["/Work"]);
    // Shorter than the index's trigrams, and wildcard characters, as text.
    assert_eq!(found(&alice, "ch").await, ["/Photos/beach.jpg"]);
    assert_eq!(found(&alice, "%_").await, ["/odd/100%_done.txt"]);
    assert_eq!(found(&alice, "0%").await, ["/odd/100%_done.txt"]);
    assert!(found(&alice, "r_port").await.is_empty());

    // Renames and moves are found under their new name and place at once.
    alice
        .move_to("/Work/2026/report-draft.txt", "/Photos/final-notes.txt")
        .await
        .unwrap();
    assert_eq!(
        found(&alice, "report").await,
        ["/Work/Quarterly Report.pdf"]
    );
    assert_eq!(found(&alice, "notes").await, ["/Photos/final-notes.txt"]);
    // What is in the trash, or inside a trashed folder, is not found.
    alice.delete("/Photos").await.unwrap();
    assert!(found(&alice, "beach").await.is_empty());
    assert!(found(&alice, "notes").await.is_empty());
    let trash = alice.trash().await.unwrap();
    alice
        .restore_from_trash(&trash.entries[0].id, None)
        .await
        .unwrap();
    assert_eq!(found(&alice, "beach").await, ["/Photos/beach.jpg"]);
    alice.delete("/Photos/beach.jpg").await.unwrap();
    alice.purge_trash(None).await.unwrap();
    assert!(found(&alice, "beach").await.is_empty());

    // A folder shared with bob: found by him at his mount point's path.
    let shared = alice
        .share("/Work", "bob", ShareRole::Viewer)
        .await
        .unwrap();
    assert_eq!(
        found(&bob, "report").await,
        ["/Work/Quarterly Report.pdf", "/bobs report.txt"]
    );
    let hits = bob.search("work", None).await.unwrap().entries;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].shared, Some(ShareRole::Viewer));
    bob.move_to("/Work", "/From Alice").await.unwrap();
    assert_eq!(
        found(&bob, "quarterly").await,
        ["/From Alice/Quarterly Report.pdf"]
    );
    alice.unshare(shared.id).await.unwrap();
    assert_eq!(found(&bob, "report").await, ["/bobs report.txt"]);

    // Bad input is refused plainly.
    let err = alice.search("   ", None).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    let err = alice.search(&"x".repeat(300), None).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    // A limit is kept, and says there is more.
    for i in 0..5 {
        put(&alice, &format!("/many/item-{i}.txt"), b"m").await;
    }
    let some = alice.search("item-", Some(3)).await.unwrap();
    assert_eq!(some.entries.len(), 3);
    assert!(some.more);
}

/// Search over many names: `TESSERA_SEARCH_NAMES` files (100,000 unless
/// told) in 1,000 folders, then searches of a rare, a common and a short
/// text; prints the median and worst of 20 each. Run with `--ignored
/// --nocapture`.
#[tokio::test]
#[ignore = "a benchmark: prints figures"]
async fn search_figures() {
    let names: usize = std::env::var("TESSERA_SEARCH_NAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for b in [Backend::Sqlite, Backend::Postgres] {
        search_on(b, names).await;
    }
}

async fn search_on(b: Backend, names: usize) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    put(&alice, "/seed.txt", b"one small file, many times").await;
    let list = alice.block_list("/seed.txt", None).await.unwrap();
    let words = [
        "invoice", "holiday", "report", "notes", "scan", "draft", "photo",
    ];
    let mut batch = Vec::new();
    for i in 0..names {
        batch.push(tessera_proto::api::CommitRequest {
            path: format!(
                "/Archive/d{:03}/{}-{i:06}.txt",
                i / 100 % 1000,
                words[i % words.len()]
            ),
            base_rev: None,
            size: list.entry.size.unwrap_or(0),
            content_hash: list.entry.content_hash.unwrap(),
            chunker: list.chunker.clone(),
            blocks: list.blocks.clone(),
            reuse: Vec::new(),
        });
        if batch.len() == 500 || i + 1 == names {
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
    for text in ["042042", "invoice", "ho"] {
        let mut took: Vec<Duration> = Vec::new();
        let mut n = 0;
        for _ in 0..20 {
            let t = Instant::now();
            n = alice.search(text, None).await.unwrap().entries.len();
            took.push(t.elapsed());
        }
        took.sort();
        println!(
            "search {b:?} over {names} names for {text:?} ({n} shown): median {:.1} ms, worst {:.1} ms",
            took[took.len() / 2].as_secs_f64() * 1e3,
            took[took.len() - 1].as_secs_f64() * 1e3
        );
    }
}
