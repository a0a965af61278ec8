//! Every change committed through [`Meta`] publishes exactly the sequence
//! number it reached, and only after it committed; a stored journal kind
//! this release does not know is refused. On SQLite always, on PostgreSQL
//! when TESSERA_TEST_POSTGRES names a cluster.

use std::sync::{Arc, Mutex};

use tessera_proto::{BlockId, ContentHash, RemotePath};

use super::{BlockLoc, Meta, MetaError, NewRevision, NodeRow, UserRow, now_ms};
use crate::notify::{Publish, Publisher};

#[derive(Default)]
struct Recorder(Mutex<Vec<(i64, i64)>>);

impl Publish for Recorder {
    fn publish(&self, ns: i64, seq: i64) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push((ns, seq));
        }
    }
}

impl Recorder {
    fn take(&self) -> Vec<(i64, i64)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Fixture {
    meta: Meta,
    url: String,
    seen: Arc<Recorder>,
    user: UserRow,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn open(url: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = url.unwrap_or_else(|| format!("sqlite://{}/m.db", dir.path().display()));
        let seen = Arc::new(Recorder::default());
        let meta = Meta::connect(&url, Publisher::custom(seen.clone()))
            .await
            .unwrap();
        let user = meta.create_user("ann", "x").await.unwrap();
        Self {
            meta,
            url,
            seen,
            user,
            _dir: dir,
        }
    }

    /// Asserts that what ran since the last check published exactly the
    /// namespace's current sequence number, once.
    async fn published_once(&self, what: &str) {
        let ns = self.user.root_ns;
        let seq = self.meta.journal_seq(ns).await.unwrap();
        assert_eq!(self.seen.take(), vec![(ns, seq)], "{what}");
    }

    fn revision(&self, path: &str, block: u8, size: u64) -> NewRevision {
        NewRevision {
            ns: self.user.root_ns,
            user_id: self.user.id,
            path: p(path),
            base_rev: None,
            size,
            content_hash: ContentHash([block; 32]),
            chunker: "test".into(),
            blocks: vec![(BlockId([block; 32]), size)],
            device: "laptop".into(),
        }
    }

    async fn store_block(&self, block: u8, size: u64) {
        self.store_block_for(self.user.id, block, size).await;
    }

    /// Records block `block` as stored by `user_id`.
    async fn store_block_for(&self, user_id: i64, block: u8, size: u64) {
        let loc = BlockLoc {
            object: format!("o{block}"),
            offset: 0,
            length: size,
        };
        self.meta
            .record_blocks(user_id, &[(BlockId([block; 32]), loc, size)])
            .await
            .unwrap();
    }
}

fn p(s: &str) -> RemotePath {
    RemotePath::parse(s).unwrap()
}

/// A fresh database on the test cluster, or `None` without one.
async fn fresh_postgres() -> Option<String> {
    let admin = std::env::var("TESSERA_TEST_POSTGRES").ok()?;
    let name = format!("tessera_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&name);
    Some(url.to_string())
}

async fn every_change_publishes_its_seq(f: Fixture) {
    let ns = f.user.root_ns;
    assert_eq!(f.seen.take(), vec![], "making a user journals nothing");

    f.meta.mkdir(ns, &p("/a"), "laptop").await.unwrap();
    f.published_once("mkdir").await;

    f.store_block(1, 5).await;
    assert_eq!(f.seen.take(), vec![], "storing blocks journals nothing");
    f.meta.commit(&f.revision("/a/f", 1, 5)).await.unwrap();
    f.published_once("commit").await;

    // The same block list again: no new revision, no entry, no wake-up.
    f.meta.commit(&f.revision("/a/f", 1, 5)).await.unwrap();
    assert_eq!(f.seen.take(), vec![], "an unchanged commit");

    f.store_block(2, 7).await;
    f.meta.commit(&f.revision("/a/f", 2, 7)).await.unwrap();
    f.published_once("second commit").await;
    f.meta.restore(ns, &p("/a/f"), 1, "laptop").await.unwrap();
    f.published_once("restore of a revision").await;

    f.meta
        .move_node(ns, &p("/a/f"), &p("/a/g"), "laptop")
        .await
        .unwrap();
    f.published_once("move").await;

    f.meta.delete(ns, &p("/a"), None, "laptop").await.unwrap();
    f.published_once("delete").await;
    let trashed = f.meta.trash(ns).await.unwrap();
    let [entry] = trashed.as_slice() else {
        panic!("one trash entry, not {trashed:?}");
    };
    // The folder and the file inside: two entries, one wake-up at the last.
    let before = f.meta.journal_seq(ns).await.unwrap();
    f.meta
        .restore_from_trash(ns, &entry.id, None, "laptop")
        .await
        .unwrap();
    assert_eq!(f.meta.journal_seq(ns).await.unwrap(), before + 2);
    f.published_once("restore from the trash").await;

    f.meta.delete(ns, &p("/a/g"), None, "laptop").await.unwrap();
    f.published_once("second delete").await;
    assert_eq!(f.meta.purge_trash(ns, None, None).await.unwrap(), 1);
    assert_eq!(f.seen.take(), vec![], "a purge journals nothing");

    // Short of blocks: the commit rolls back, the pending mark commits.
    let short = f.revision("/b", 3, 4);
    let err = f.meta.commit(&short).await.unwrap_err();
    assert!(matches!(err, MetaError::MissingBlocks(_)), "{err}");
    f.published_once("pending mark").await;
    let changed = f.meta.expire_pending(now_ms() + 1).await.unwrap();
    assert_eq!(changed, vec![ns]);
    f.published_once("expired pending mark").await;

    // A refused change publishes nothing.
    let err = f.meta.mkdir(ns, &p("/a"), "laptop").await.unwrap_err();
    assert!(matches!(err, MetaError::AlreadyExists(_)), "{err}");
    assert_eq!(f.seen.take(), vec![], "a refused mkdir");
}

async fn an_unknown_stored_kind_is_refused(f: Fixture) {
    let ns = f.user.root_ns;
    f.meta.mkdir(ns, &p("/a"), "laptop").await.unwrap();
    assert_eq!(f.meta.changes(ns, 0, 10).await.unwrap().len(), 1);
    let sql = "UPDATE journal SET kind = 'rename' WHERE namespace_id = $1";
    if f.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&f.url).await.unwrap();
        sqlx::query(sql).bind(ns).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
        sqlx::query(sql).bind(ns).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let err = f.meta.changes(ns, 0, 10).await.unwrap_err();
    assert!(
        matches!(&err, MetaError::Journal(k) if k.0 == "rename"),
        "{err}"
    );
}

#[tokio::test]
async fn sqlite_every_change_publishes_its_seq() {
    every_change_publishes_its_seq(Fixture::open(None).await).await;
}

#[tokio::test]
async fn postgres_every_change_publishes_its_seq() {
    if let Some(url) = fresh_postgres().await {
        every_change_publishes_its_seq(Fixture::open(Some(url)).await).await;
    }
}

#[tokio::test]
async fn sqlite_an_unknown_stored_kind_is_refused() {
    an_unknown_stored_kind_is_refused(Fixture::open(None).await).await;
}

#[tokio::test]
async fn postgres_an_unknown_stored_kind_is_refused() {
    if let Some(url) = fresh_postgres().await {
        an_unknown_stored_kind_is_refused(Fixture::open(Some(url)).await).await;
    }
}

/// Each stored block's reference count and whether it is stamped as
/// unreferenced, by the block's first byte.
async fn refcounts(f: &Fixture) -> Vec<(u8, i64, bool)> {
    let sql = "SELECT id, refcount, zero_since_ms FROM blocks ORDER BY id";
    let rows: Vec<(Vec<u8>, i64, Option<i64>)> = if f.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&f.url).await.unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    };
    rows.into_iter()
        .map(|(id, n, zero)| (id[0], n, zero.is_some()))
        .collect()
}

/// References follow revisions, one per use (a block used twice in a file
/// counts twice): taken by commits and restores, released by a purge, which
/// stamps what it leaves unreferenced for collection.
async fn references_follow_revisions(f: Fixture) {
    let ns = f.user.root_ns;
    f.store_block(1, 5).await;
    f.store_block(2, 5).await;
    assert_eq!(refcounts(&f).await, vec![(1, 0, true), (2, 0, true)]);

    let mut twice = f.revision("/f", 1, 15);
    twice.blocks = vec![
        (BlockId([1; 32]), 5),
        (BlockId([1; 32]), 5),
        (BlockId([2; 32]), 5),
    ];
    f.meta.commit(&twice).await.unwrap();
    assert_eq!(refcounts(&f).await, vec![(1, 2, false), (2, 1, false)]);

    f.meta.commit(&f.revision("/f", 2, 5)).await.unwrap();
    assert_eq!(refcounts(&f).await, vec![(1, 2, false), (2, 2, false)]);

    f.meta.restore(ns, &p("/f"), 1, "laptop").await.unwrap();
    assert_eq!(refcounts(&f).await, vec![(1, 4, false), (2, 3, false)]);

    f.meta.delete(ns, &p("/f"), None, "laptop").await.unwrap();
    assert_eq!(f.meta.purge_trash(ns, None, None).await.unwrap(), 1);
    assert_eq!(refcounts(&f).await, vec![(1, 0, true), (2, 0, true)]);
}

#[tokio::test]
async fn sqlite_references_follow_revisions() {
    references_follow_revisions(Fixture::open(None).await).await;
}

#[tokio::test]
async fn postgres_references_follow_revisions() {
    if let Some(url) = fresh_postgres().await {
        references_follow_revisions(Fixture::open(Some(url)).await).await;
    }
}

/// A batch item that journaled something (a new parent folder) and then
/// failed rolls its entries back: the batch publishes only what stayed, so
/// the next change's number is new to the hub and wakes the polls.
async fn a_failed_batch_item_publishes_nothing_it_rolled_back(f: Fixture) {
    let ns = f.user.root_ns;
    f.store_block(1, 5).await;
    let mut stale = f.revision("/new/f", 1, 5);
    stale.base_rev = Some(5);
    let out = f.meta.commit_many(&[stale]).await.unwrap();
    assert!(matches!(out[0], Err(MetaError::Conflict { .. })), "{out:?}");
    assert_eq!(f.meta.journal_seq(ns).await.unwrap(), 0);
    assert_eq!(f.seen.take(), vec![], "a batch that kept nothing");

    let good = f.revision("/a", 1, 5);
    let mut stale = f.revision("/new/g", 1, 5);
    stale.base_rev = Some(5);
    f.meta.commit_many(&[good, stale]).await.unwrap();
    f.published_once("a batch with one item kept").await;
}

#[tokio::test]
async fn sqlite_a_failed_batch_item_publishes_nothing_it_rolled_back() {
    a_failed_batch_item_publishes_nothing_it_rolled_back(Fixture::open(None).await).await;
}

#[tokio::test]
async fn postgres_a_failed_batch_item_publishes_nothing_it_rolled_back() {
    if let Some(url) = fresh_postgres().await {
        a_failed_batch_item_publishes_nothing_it_rolled_back(Fixture::open(Some(url)).await).await;
    }
}

/// Runs each named scenario on SQLite, and on PostgreSQL when the test
/// cluster is there.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::Fixture::open(None).await).await;
                }
                #[tokio::test]
                async fn postgres() {
                    if let Some(url) = super::fresh_postgres().await {
                        super::$name(super::Fixture::open(Some(url)).await).await;
                    }
                }
            }
        )*
    };
}

/// A batch whose middle item fails after making a folder: the others are
/// kept, the folder goes with the failed item and is made again (once) by
/// a later item, and the journal says exactly that, numbered without gaps.
async fn a_failed_item_takes_its_folder_and_entries_with_it(f: Fixture) {
    let ns = f.user.root_ns;
    f.store_block(1, 5).await;
    let mut stale = f.revision("/y/b", 1, 5);
    stale.base_rev = Some(3);
    let batch = [
        f.revision("/x/a", 1, 5),
        stale,
        f.revision("/y/c", 1, 5),
        f.revision("/x/d", 1, 5),
    ];
    let out = f.meta.commit_many(&batch).await.unwrap();
    let failed: Vec<bool> = out.iter().map(Result::is_err).collect();
    assert_eq!(failed, [false, true, false, false], "{out:?}");
    let journal: Vec<(i64, String)> = f
        .meta
        .changes(ns, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.path))
        .collect();
    let want = [(1, "/x"), (2, "/x/a"), (3, "/y"), (4, "/y/c"), (5, "/x/d")];
    let want: Vec<(i64, String)> = want.iter().map(|(s, p)| (*s, p.to_string())).collect();
    assert_eq!(journal, want);
    assert_eq!(f.meta.journal_seq(ns).await.unwrap(), 5);
    let names = |rows: Vec<NodeRow>| rows.into_iter().map(|n| n.name).collect::<Vec<_>>();
    assert_eq!(names(f.meta.list(ns, &p("/")).await.unwrap()), ["x", "y"]);
    assert_eq!(names(f.meta.list(ns, &p("/y")).await.unwrap()), ["c"]);
    assert_eq!(names(f.meta.list(ns, &p("/x")).await.unwrap()), ["a", "d"]);
    f.published_once("one batch, one notice").await;
}

/// A batch of new files into new folders, written set by set, leaves what
/// item-by-item commits leave: the files with their first revision and
/// block list, the folders, the references, the usage, the journal in
/// order; and one file already there sends the batch item by item.
async fn a_batch_of_new_files_is_written_whole(f: Fixture) {
    let ns = f.user.root_ns;
    f.store_block(1, 5).await;
    f.store_block(2, 7).await;
    let mut two = f.revision("/b/two", 2, 12);
    two.blocks = vec![(BlockId([2; 32]), 7), (BlockId([1; 32]), 5)];
    let batch = [
        f.revision("/a/one", 1, 5),
        two,
        f.revision("/a/three", 1, 5),
    ];
    let out = f.meta.commit_many(&batch).await.unwrap();
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    let journal: Vec<(i64, String)> = f
        .meta
        .changes(ns, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.path))
        .collect();
    let want = [
        (1, "/a"),
        (2, "/b"),
        (3, "/a/one"),
        (4, "/b/two"),
        (5, "/a/three"),
    ];
    let want: Vec<(i64, String)> = want.iter().map(|(s, p)| (*s, p.to_string())).collect();
    assert_eq!(journal, want);
    let (node, rev, blocks) = f.meta.file_revision(ns, &p("/b/two"), None).await.unwrap();
    assert_eq!((node.rev, rev.size, node.size), (1, 12, 12));
    let listed: Vec<(u8, u64, u64)> = blocks
        .iter()
        .map(|b| (b.id.0[0], b.file_offset, b.size))
        .collect();
    assert_eq!(listed, [(2, 0, 7), (1, 7, 5)]);
    assert_eq!(refcounts(&f).await, vec![(1, 3, false), (2, 1, false)]);
    assert_eq!(f.meta.usage(f.user.id).await.unwrap().0, 22);
    f.published_once("one batch, one notice").await;

    // "/a/one" exists now: item by item, and it gains no revision.
    let again = [f.revision("/a/one", 1, 5), f.revision("/a/four", 1, 5)];
    let out = f.meta.commit_many(&again).await.unwrap();
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(
        f.meta.journal_seq(ns).await.unwrap(),
        6,
        "only /a/four is new"
    );
    assert_eq!(f.meta.usage(f.user.id).await.unwrap().0, 27);
}

on_both!(
    a_write_into_a_shared_folder_is_checked_against_the_role_it_lands_under,
    a_sign_in_checked_against_a_password_changed_meanwhile_makes_no_session,
    nothing_of_ones_own_lands_on_a_mount_point,
    a_deleted_account_is_kept_restorable_then_purged_whole,
    two_administrators_disabling_each_other_at_once_leave_one,
    a_batch_of_new_files_is_written_whole,
    a_failed_item_takes_its_folder_and_entries_with_it,
    collection_waits_out_the_grace_and_spares_sessions,
    a_block_recorded_again_starts_its_grace_again,
    retention_never_drops_the_current_or_a_pinned_revision,
    a_deletion_after_one_stamped_by_a_clock_ahead_is_still_later,
    a_delta_is_never_recorded_against_a_delta,
);

/// Block `b`'s record moved from `o{b}` into `new` at offset 0.
fn moved(b: u8, new: &str) -> super::Moved {
    super::Moved {
        id: BlockId([b; 32]),
        from: BlockLoc {
            object: format!("o{b}"),
            offset: 0,
            length: 5,
        },
        to: BlockLoc {
            object: new.into(),
            offset: 0,
            length: 3,
        },
    }
}

/// Records block `b` as rewritten into `n{b}` as a delta against `base`;
/// answers how many blocks moved.
async fn record_delta(f: &Fixture, b: u8, base: u8) -> u64 {
    let new = format!("n{b}");
    let bases = [(BlockId([b; 32]), BlockId([base; 32]))];
    f.meta
        .recompressed(&format!("o{b}"), Some(&new), &[moved(b, &new)], &bases, 12)
        .await
        .unwrap()
}

/// Base ids suggested for blocks 1..=7 (none if no base may be used).
async fn bases(f: &Fixture) -> Vec<Option<u8>> {
    let mut out = Vec::new();
    for b in 1..=7u8 {
        let id = BlockId([b; 32]);
        let at = f.meta.block_location(&id).await.unwrap().unwrap();
        let found = f.meta.delta_bases_in(&at.object).await.unwrap();
        out.push(
            found
                .iter()
                .find(|(block, ..)| *block == id)
                .map(|(_, base, _)| base.0[0]),
        );
    }
    out
}

/// A commit notes, on each new block, the one it replaced; a delta is
/// recorded only against a block stored whole, never onto a block that a
/// delta already leans on, whichever of two steps planned at once records
/// first; and collection keeps a base while a delta names it.
async fn a_delta_is_never_recorded_against_a_delta(f: Fixture) {
    for b in 1..=7 {
        f.store_block(b, 5).await;
    }
    // Versions of /f: 1, 2, 3; of /g: 5, 6, 7.
    for b in [1, 2, 3] {
        f.meta.commit(&f.revision("/f", b, 5)).await.unwrap();
    }
    for b in [5, 6, 7] {
        f.meta.commit(&f.revision("/g", b, 5)).await.unwrap();
    }
    let noted = [None, Some(1), Some(2), None, None, Some(5), Some(6)];
    assert_eq!(bases(&f).await, noted);

    // 2 becomes a delta against 1; then 3, planned against 2 at the same
    // time, may not: it stays where it was, its note cleared.
    assert_eq!(record_delta(&f, 2, 1).await, 1);
    assert_eq!(
        record_delta(&f, 3, 2).await,
        0,
        "3 may not lean on the delta 2"
    );
    let loc = f.meta.block_location(&BlockId([3; 32])).await.unwrap();
    assert_eq!(loc.map(|l| l.object).as_deref(), Some("o3"));

    // The other order: 7 leans on 6 first; 6 may then not become a delta.
    assert_eq!(record_delta(&f, 7, 6).await, 1);
    assert_eq!(
        record_delta(&f, 6, 5).await,
        0,
        "6 may not become a delta: 7 leans on it"
    );
    assert_eq!(
        bases(&f).await,
        [None, None, None, None, None, None, None],
        "nothing left to do: 2 and 7 are deltas, 3 and 6 were cleared"
    );

    // Nothing referenced any more: the deltas go first, their bases after.
    raw(&f, "UPDATE blocks SET refcount = 0, zero_since_ms = 0").await;
    let first = f.meta.collect_blocks(now_ms(), 100).await.unwrap();
    let left: Vec<u8> = refcounts(&f).await.iter().map(|r| r.0).collect();
    assert_eq!((first.blocks, left), (5, vec![1, 6]), "the bases stay");
    let second = f.meta.collect_blocks(now_ms(), 100).await.unwrap();
    assert_eq!(second.blocks, 2);
    assert!(refcounts(&f).await.is_empty());
}

/// Several instances share a database but not a clock. Emptying the trash
/// "up to the newest deletion shown" must spare what was deleted after
/// that, though the deletion shown came from an instance whose clock runs
/// a minute ahead of the one that deleted next.
async fn a_deletion_after_one_stamped_by_a_clock_ahead_is_still_later(f: Fixture) {
    let ns = f.user.root_ns;
    f.meta.mkdir(ns, &p("/a"), "laptop").await.unwrap();
    f.meta.delete(ns, &p("/a"), None, "laptop").await.unwrap();
    // What is in the trash was deleted by an instance whose clock runs a
    // minute ahead, then an hour ahead; this one deletes next.
    for (deleted, journaled, next) in [
        (
            "UPDATE nodes SET deleted_ms = deleted_ms + 60000 WHERE deleted_ms IS NOT NULL",
            "UPDATE journal SET created_ms = created_ms + 60000",
            "/b",
        ),
        (
            "UPDATE nodes SET deleted_ms = deleted_ms + 3600000 WHERE deleted_ms IS NOT NULL",
            "UPDATE journal SET created_ms = created_ms + 3600000",
            "/c",
        ),
    ] {
        raw(&f, deleted).await;
        raw(&f, journaled).await;
        let shown = f.meta.trash(ns).await.unwrap();
        let upto = shown.iter().map(|e| e.deleted_ms).max().unwrap();

        f.meta.mkdir(ns, &p(next), "laptop").await.unwrap();
        f.meta.delete(ns, &p(next), None, "laptop").await.unwrap();
        assert_eq!(f.meta.purge_trash(ns, None, Some(upto)).await.unwrap(), 1);
        let left: Vec<Option<String>> = f
            .meta
            .trash(ns)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.deleted_path)
            .collect();
        assert_eq!(left, [Some(next.to_owned())]);
    }
}

/// Runs one statement on the fixture's database directly.
async fn raw(f: &Fixture, sql: &'static str) {
    if f.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&f.url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

/// Blocks unreferenced for less than the grace stay; after it, those an
/// upload session names (as a block or as its tail) stay too, and the rest
/// go with the objects that held them.
async fn collection_waits_out_the_grace_and_spares_sessions(f: Fixture) {
    let ns = f.user.root_ns;
    for b in 1..=3 {
        f.store_block(b, 5).await;
    }
    let hour = 3_600_000;
    let none = f.meta.collect_blocks(now_ms() - hour, 100).await.unwrap();
    assert_eq!(none.blocks, 0, "all are younger than the grace");

    let session = super::UploadRow {
        namespace_id: ns,
        id: "s1".into(),
        user_id: f.user.id,
        path: "/up".into(),
        base_rev: None,
        length: 10,
        upload_offset: 0,
        block_count: 0,
        tail_block: None,
        tail_len: 0,
        hash_state: vec![],
        metadata: String::new(),
        device: "laptop".into(),
        created_ms: now_ms(),
        updated_ms: now_ms(),
        done_path: None,
        done_rev: None,
    };
    f.meta.create_upload(&session).await.unwrap();
    let step = super::Checkpoint {
        from: 0,
        to: 6,
        first_idx: 0,
        new_blocks: vec![(BlockId([2; 32]), 5)],
        tail: Some((BlockId([3; 32]), 1)),
        hash_state: vec![],
    };
    assert!(f.meta.checkpoint_upload(ns, "s1", &step).await.unwrap());

    let gone = f.meta.collect_blocks(now_ms() + hour, 100).await.unwrap();
    assert_eq!((gone.blocks, gone.doomed), (1, 1), "{gone:?}");
    let left: Vec<u8> = refcounts(&f).await.iter().map(|r| r.0).collect();
    assert_eq!(left, [2, 3]);
    assert_eq!(
        f.meta.doomed_objects(now_ms() + hour, 10).await.unwrap(),
        ["o1"]
    );
    assert_eq!(
        f.meta
            .missing_blocks(f.user.id, &[BlockId([1; 32])])
            .await
            .unwrap(),
        [BlockId([1; 32])],
        "nobody holds a claim to a collected block"
    );
    f.meta.forget_doomed(&["o1".to_owned()]).await.unwrap();
    assert!(
        f.meta
            .doomed_objects(now_ms() + hour, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Uploading bytes that are stored but unreferenced (an old copy about to
/// be collected) restarts their grace: the commit on its way finds them.
async fn a_block_recorded_again_starts_its_grace_again(f: Fixture) {
    f.store_block(1, 5).await;
    raw(&f, "UPDATE blocks SET zero_since_ms = 0").await;
    f.store_block(1, 5).await;
    let gone = f.meta.collect_blocks(now_ms() - 60_000, 100).await.unwrap();
    assert_eq!(gone.blocks, 0, "the block was used again a moment ago");
    f.meta.commit(&f.revision("/f", 1, 5)).await.unwrap();
}

/// The schedule's choice is checked again where it is applied: the
/// current revision and pinned ones stay, and the blocks of those that go
/// lose their references.
async fn retention_never_drops_the_current_or_a_pinned_revision(f: Fixture) {
    let ns = f.user.root_ns;
    for b in 1..=3 {
        f.store_block(b, 5).await;
        let mut next = f.revision("/f", b, 5);
        next.base_rev = (b > 1).then_some(i64::from(b) - 1);
        f.meta.commit(&next).await.unwrap();
    }
    let (node, revs) = f.meta.revisions(ns, &p("/f")).await.unwrap();
    assert_eq!(revs.len(), 3);
    let first = revs.iter().map(|r| r.rev).min().unwrap();
    f.meta
        .pin_revision(ns, &p("/f"), first, true)
        .await
        .unwrap();
    let all: Vec<i64> = revs.iter().map(|r| r.rev).collect();
    let dropped = f.meta.drop_revisions(ns, &node.id, &all).await.unwrap();
    assert_eq!(dropped, 1, "only the middle revision goes");
    assert_eq!(
        refcounts(&f).await,
        [(1, 1, false), (2, 0, true), (3, 1, false)]
    );
    let ages = f.meta.revision_ages(ns, &node.id).await.unwrap();
    assert_eq!(
        ages.iter().map(|r| (r.rev, r.pinned)).collect::<Vec<_>>(),
        [(first, true), (node.rev, false)]
    );
}

/// On PostgreSQL a commit and collection really run at once: collection
/// deletes a block's record (and holds it) after the commit checked its
/// blocks and before it takes its references. The commit must then fail
/// as missing blocks (the client sends them again), never reference
/// nothing.
#[tokio::test]
async fn postgres_a_commit_racing_collection_is_refused() {
    let Some(url) = fresh_postgres().await else {
        return;
    };
    let f = Fixture::open(Some(url)).await;
    f.store_block(1, 5).await;
    let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
    let mut collector = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM blocks")
        .execute(&mut *collector)
        .await
        .unwrap();
    let meta = f.meta.clone();
    let rev = f.revision("/f", 1, 5);
    let commit = tokio::spawn(async move { meta.commit(&rev).await });
    // The commit checks its blocks (the deletion is not visible yet) and
    // waits for the row the collector holds: PostgreSQL shows the wait.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (waiting,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pg_locks WHERE NOT granted")
            .fetch_one(&pool)
            .await
            .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(!commit.is_finished(), "the commit waits for the row");
        assert!(
            std::time::Instant::now() < until,
            "the commit never waited for the row"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    collector.commit().await.unwrap();
    let out = commit.await.unwrap();
    assert!(
        matches!(&out, Err(MetaError::MissingBlocks(ids)) if ids == &[BlockId([1; 32])]),
        "{out:?}"
    );
    // At most the file shows as syncing, with no content yet.
    let node = f.meta.resolve(f.user.root_ns, &p("/f")).await.unwrap();
    assert!(
        node.as_ref()
            .is_none_or(|n| n.pending_ms.is_some() && n.content_hash.is_none()),
        "{node:?}"
    );
    pool.close().await;
}

on_both!(
    the_login_brake_counts_attempts_through_every_instance,
    login_attempts_count_before_they_are_answered,
    a_login_success_keeps_failures_that_raced_with_it,
    a_worker_lease_has_one_holder_until_it_lapses,
    presence_on_other_instances_is_seen_while_they_live,
);

/// A second connection to the fixture's database: another instance.
async fn other_instance(f: &Fixture) -> Meta {
    Meta::connect(&f.url, Publisher::custom(Arc::new(Recorder::default())))
        .await
        .unwrap()
}

fn limiter(meta: &Meta, per_account: u32, per_address: u32) -> crate::auth::LoginLimiter {
    let window = std::time::Duration::from_secs(60);
    crate::auth::LoginLimiter::new(meta.clone(), window, per_account, per_address)
}

async fn let_in(
    l: &crate::auth::LoginLimiter,
    account: &str,
    address: &str,
) -> crate::auth::Attempt {
    match l.attempt(account, address).await.unwrap() {
        Ok(a) => a,
        Err(wait) => panic!("{account} from {address} refused for {wait} s"),
    }
}

async fn refused(l: &crate::auth::LoginLimiter, account: &str, address: &str) -> bool {
    match l.attempt(account, address).await.unwrap() {
        Ok(a) => {
            a.not_checked().await.unwrap();
            false
        }
        Err(wait) => {
            assert!((1..=60).contains(&wait), "wait {wait} s");
            true
        }
    }
}

/// Guesses spread over two instances add up: each instance used to count
/// its own, so N instances let N times the limit through.
async fn the_login_brake_counts_attempts_through_every_instance(f: Fixture) {
    let other = other_instance(&f).await;
    let (a, b) = (limiter(&f.meta, 3, 5), limiter(&other, 3, 5));
    let_in(&a, "bob", "1.1.1.1").await.failed().await.unwrap();
    let_in(&b, "bob", "2.2.2.2").await.failed().await.unwrap();
    let_in(&a, "bob", "3.3.3.3").await.failed().await.unwrap();
    assert!(
        refused(&b, "bob", "4.4.4.4").await,
        "account limit across instances"
    );
    assert!(refused(&a, "bob", "5.5.5.5").await);
    // The address limit, over other accounts and both instances.
    for (i, name) in ["carol", "dave", "erin", "fred"].iter().enumerate() {
        let l = if i % 2 == 0 { &a } else { &b };
        let_in(l, name, "1.1.1.1").await.failed().await.unwrap();
    }
    assert!(
        refused(&b, "gina", "1.1.1.1").await,
        "address limit across instances"
    );
    // A password never checked does not count.
    let_in(&a, "hank", "6.6.6.6")
        .await
        .not_checked()
        .await
        .unwrap();
    let_in(&b, "hank", "6.6.6.6")
        .await
        .not_checked()
        .await
        .unwrap();
    let_in(&a, "hank", "6.6.6.6")
        .await
        .not_checked()
        .await
        .unwrap();
    assert!(!refused(&b, "hank", "6.6.6.6").await);
    // A success forgives the account's earlier failures.
    let_in(&a, "ivy", "7.7.7.7").await.failed().await.unwrap();
    let_in(&b, "ivy", "7.7.7.7").await.failed().await.unwrap();
    let_in(&a, "ivy", "7.7.7.7")
        .await
        .succeeded()
        .await
        .unwrap();
    assert!(
        !refused(&b, "ivy", "8.8.8.8").await,
        "the two failures forgiven"
    );
    let_in(&b, "ivy", "8.8.8.8").await.failed().await.unwrap();
    let_in(&a, "ivy", "8.8.8.8").await.failed().await.unwrap();
    let_in(&b, "ivy", "8.8.8.8").await.failed().await.unwrap();
    assert!(
        refused(&b, "ivy", "8.8.8.8").await,
        "3 failures after the success"
    );
    other.close().await;
}

async fn login_attempts_count_before_they_are_answered(f: Fixture) {
    let other = other_instance(&f).await;
    let (a, b) = (limiter(&f.meta, 3, 50), limiter(&other, 3, 50));
    let held = vec![
        let_in(&a, "bob", "1.2.3.4").await,
        let_in(&b, "bob", "1.2.3.4").await,
        let_in(&a, "bob", "1.2.3.4").await,
    ];
    assert!(
        refused(&b, "bob", "1.2.3.4").await,
        "three attempts in flight fill a limit of three"
    );
    // Requests dropped midway count as failures, recorded on their own.
    drop(held);
    let mut failed = 0;
    for _ in 0..200 {
        let rows: Vec<(i64, i64)> = sqlx_rows(
            &f,
            "SELECT failed, in_flight FROM login_attempts WHERE key = 'u:bob'",
        )
        .await;
        if rows == vec![(3, 0)] {
            failed = 3;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(failed, 3, "the dropped attempts were recorded as failures");
    assert!(refused(&a, "bob", "1.2.3.4").await);
    other.close().await;
}

/// Rows of a two-integer query, on either backend.
async fn sqlx_rows(f: &Fixture, sql: &'static str) -> Vec<(i64, i64)> {
    if f.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&f.url).await.unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    }
}

async fn a_login_success_keeps_failures_that_raced_with_it(f: Fixture) {
    let l = limiter(&f.meta, 3, 50);
    let right = let_in(&l, "bob", "1.2.3.4").await;
    let wrong = vec![
        let_in(&l, "bob", "6.6.6.6").await,
        let_in(&l, "bob", "6.6.6.6").await,
    ];
    for w in wrong {
        w.failed().await.unwrap();
    }
    right.succeeded().await.unwrap();
    let_in(&l, "bob", "6.6.6.6").await.failed().await.unwrap();
    assert!(
        refused(&l, "bob", "6.6.6.6").await,
        "the two failures that raced the success still count"
    );
}

async fn a_worker_lease_has_one_holder_until_it_lapses(f: Fixture) {
    let other = other_instance(&f).await;
    let now = now_ms();
    assert_eq!(
        f.meta.take_lease("gc", "a", now, now + 1000).await.unwrap(),
        None
    );
    assert_eq!(
        other.take_lease("gc", "b", now, now + 1000).await.unwrap(),
        Some("a".to_owned()),
        "a live lease is not taken"
    );
    assert_eq!(
        other
            .take_lease("scrub", "b", now, now + 1000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.meta
            .take_lease("gc", "a", now + 500, now + 1500)
            .await
            .unwrap(),
        None,
        "renewed"
    );
    assert_eq!(
        other
            .take_lease("gc", "b", now + 1200, now + 2200)
            .await
            .unwrap(),
        Some("a".to_owned()),
        "the renewal moved the lapse"
    );
    assert_eq!(
        other
            .take_lease("gc", "b", now + 1600, now + 2600)
            .await
            .unwrap(),
        None,
        "lapsed"
    );
    assert_eq!(
        f.meta
            .take_lease("gc", "a", now + 1700, now + 2700)
            .await
            .unwrap(),
        Some("b".to_owned())
    );
    other.release_leases("b").await.unwrap();
    assert_eq!(
        f.meta
            .take_lease("gc", "a", now + 1700, now + 2700)
            .await
            .unwrap(),
        None,
        "released"
    );
    assert_eq!(
        f.meta
            .take_lease("scrub", "a", now + 1700, now + 2700)
            .await
            .unwrap(),
        None
    );
    other.close().await;
}

async fn presence_on_other_instances_is_seen_while_they_live(f: Fixture) {
    let uid = f.user.id;
    let now = now_ms();
    let laptop = (uid, "laptop".to_owned(), 2);
    f.meta
        .sync_presence("i1", now, std::slice::from_ref(&laptop))
        .await
        .unwrap();
    f.meta
        .sync_presence(
            "i2",
            now,
            &[(uid, "laptop".into(), 1), (uid, "phone".into(), 1)],
        )
        .await
        .unwrap();
    let seen = f
        .meta
        .presence_elsewhere(uid, "i3", now - 1000)
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![("laptop".to_owned(), 3), ("phone".to_owned(), 1)]
    );
    let seen = f
        .meta
        .presence_elsewhere(uid, "i2", now - 1000)
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![("laptop".to_owned(), 2)],
        "an instance's own rows are left out"
    );
    assert_eq!(
        f.meta
            .presence_elsewhere(uid + 1, "i3", now - 1000)
            .await
            .unwrap(),
        vec![]
    );
    // i1 stops being seen: its devices no longer count.
    f.meta
        .sync_presence("i2", now + 5000, &[(uid, "phone".into(), 0)])
        .await
        .unwrap();
    let seen = f
        .meta
        .presence_elsewhere(uid, "i3", now + 1000)
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![("laptop".to_owned(), 1)],
        "the dead instance and the phone gone"
    );
    f.meta.forget_instances("i2", now + 1000).await.unwrap();
    assert_eq!(
        f.meta.presence_elsewhere(uid, "i3", 0).await.unwrap(),
        vec![],
        "both forgotten"
    );
}

/// The API checks a member's role before a write, but the owner may change
/// it while the write waits for the folder's lock: the write is checked
/// again under that lock, so nothing lands after the role forbids it.
async fn a_write_into_a_shared_folder_is_checked_against_the_role_it_lands_under(f: Fixture) {
    let bob = f.meta.create_user("bob", "x").await.unwrap();
    f.meta
        .mkdir(f.user.root_ns, &p("/Team"), "laptop")
        .await
        .unwrap();
    let mount = f
        .meta
        .share_folder(&f.user, &p("/Team"), &bob, "editor", "laptop")
        .await
        .unwrap();
    let ns = mount.namespace_id;
    f.store_block(7, 10).await;
    f.store_block_for(bob.id, 7, 10).await;
    let by_bob = |path: &str| NewRevision {
        ns,
        user_id: bob.id,
        ..f.revision(path, 7, 10)
    };
    f.meta.commit(&by_bob("/as-editor.txt")).await.unwrap();

    f.meta
        .set_role(f.user.id, ns, bob.id, "viewer", "laptop")
        .await
        .unwrap();
    let outcome = f.meta.commit(&by_bob("/as-viewer.txt")).await;
    assert!(
        matches!(outcome, Err(MetaError::Forbidden(_))),
        "{outcome:?}"
    );
    // A batch refuses each item: the API commits a batch one namespace at
    // a time, and the others stand.
    let outcomes = f
        .meta
        .commit_many(&[by_bob("/batch.txt"), by_bob("/batch-2.txt")])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2);
    for outcome in outcomes {
        assert!(
            matches!(outcome, Err(MetaError::Forbidden(_))),
            "{outcome:?}"
        );
    }
    f.meta
        .unmount(f.user.id, ns, bob.id, "laptop")
        .await
        .unwrap();
    let outcome = f.meta.commit(&by_bob("/removed.txt")).await;
    assert!(
        matches!(outcome, Err(MetaError::Forbidden(_))),
        "{outcome:?}"
    );
    let names: Vec<String> = f
        .meta
        .list(ns, &p("/"))
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["as-editor.txt"]);
}

/// A change planned before a mount point moved to a path cannot put a
/// node of the member's own there (it would be hidden behind the mount).
async fn nothing_of_ones_own_lands_on_a_mount_point(f: Fixture) {
    let bob = f.meta.create_user("bob", "x").await.unwrap();
    f.meta
        .mkdir(f.user.root_ns, &p("/Team"), "laptop")
        .await
        .unwrap();
    f.meta
        .share_folder(&f.user, &p("/Team"), &bob, "editor", "laptop")
        .await
        .unwrap();
    f.store_block_for(bob.id, 9, 10).await;
    let own = |path: &str| NewRevision {
        ns: bob.root_ns,
        user_id: bob.id,
        ..f.revision(path, 9, 10)
    };
    let outcome = f.meta.commit(&own("/Team")).await;
    assert!(
        matches!(outcome, Err(MetaError::AlreadyExists(_))),
        "{outcome:?}"
    );
    let outcomes = f.meta.commit_many(&[own("/Team")]).await.unwrap();
    assert!(
        matches!(outcomes[..], [Err(MetaError::AlreadyExists(_))]),
        "{outcomes:?}"
    );
    f.meta.commit(&own("/notes.txt")).await.unwrap();
    let outcome = f
        .meta
        .move_node(bob.root_ns, &p("/notes.txt"), &p("/Team"), "laptop")
        .await;
    assert!(
        matches!(outcome, Err(MetaError::AlreadyExists(_))),
        "{outcome:?}"
    );
    let names: Vec<String> = f
        .meta
        .list(bob.root_ns, &p("/"))
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["notes.txt"]);
}

/// A sign-in checks the password, then makes its token: a change of
/// password committed in between signs out every device, so the token is
/// not made. Two changes proved against one password: the second changes
/// nothing.
async fn a_sign_in_checked_against_a_password_changed_meanwhile_makes_no_session(f: Fixture) {
    let far = now_ms() + 60_000;
    assert!(
        f.meta
            .insert_token(&[1; 32], f.user.id, "laptop", None, far, "x")
            .await
            .unwrap()
    );
    // Changed from the laptop, which stays signed in.
    assert_eq!(
        f.meta
            .set_password(f.user.id, "y", "x", Some(&[1; 32]))
            .await
            .unwrap(),
        0
    );
    // A sign-in that checked the old password makes nothing.
    assert!(
        !f.meta
            .insert_token(&[2; 32], f.user.id, "phone", None, far, "x")
            .await
            .unwrap()
    );
    let devices: Vec<String> = f
        .meta
        .devices_of(f.user.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device)
        .collect();
    assert_eq!(devices, ["laptop"]);
    // A second change proved against the old password changes nothing.
    let outcome = f.meta.set_password(f.user.id, "z", "x", None).await;
    assert!(
        matches!(outcome, Err(MetaError::Forbidden(_))),
        "{outcome:?}"
    );
    // Nor one from a device signed out meanwhile.
    let outcome = f
        .meta
        .set_password(f.user.id, "z", "y", Some(&[9; 32]))
        .await;
    assert!(
        matches!(outcome, Err(MetaError::Forbidden(_))),
        "{outcome:?}"
    );
    assert!(f.meta.token(&[1; 32]).await.unwrap().is_some());
}

/// An administrator deletes an account: it cannot sign in, its files stay
/// until the purge (a restore brings it back whole), and the purge takes
/// its files and trash and it from the folders others shared with it,
/// while its shared folder passes, whole, to the member who uses it.
async fn a_deleted_account_is_kept_restorable_then_purged_whole(f: Fixture) {
    let bob = f.meta.create_user("bob", "x").await.unwrap();
    let carol = f.meta.create_user("carol", "x").await.unwrap();
    f.store_block_for(bob.id, 3, 10).await;
    let of_bob = |path: &str| NewRevision {
        ns: bob.root_ns,
        user_id: bob.id,
        ..f.revision(path, 3, 10)
    };
    f.meta.commit(&of_bob("/notes.txt")).await.unwrap();
    f.meta.commit(&of_bob("/old.txt")).await.unwrap();
    f.meta
        .delete(bob.root_ns, &p("/old.txt"), None, "laptop")
        .await
        .unwrap();
    f.meta
        .mkdir(bob.root_ns, &p("/Team"), "laptop")
        .await
        .unwrap();
    let team = f
        .meta
        .share_folder(&bob, &p("/Team"), &carol, "editor", "laptop")
        .await
        .unwrap();
    f.store_block_for(bob.id, 4, 10).await;
    f.meta
        .commit(&NewRevision {
            ns: team.namespace_id,
            user_id: bob.id,
            ..f.revision("/plan.txt", 4, 10)
        })
        .await
        .unwrap();
    f.meta
        .mkdir(f.user.root_ns, &p("/A"), "laptop")
        .await
        .unwrap();
    let a = f
        .meta
        .share_folder(&f.user, &p("/A"), &bob, "editor", "laptop")
        .await
        .unwrap();
    let far = now_ms() + 60_000;
    assert!(
        f.meta
            .insert_token(&[5; 32], bob.id, "laptop", None, far, "x")
            .await
            .unwrap()
    );

    let last = f.meta.delete_account("ann").await;
    assert!(matches!(last, Err(MetaError::Invalid(_))), "{last:?}");
    let when = f.meta.delete_account("bob").await.unwrap();
    assert!(!f.meta.may_sign_in(bob.id).await.unwrap());
    assert!(f.meta.token(&[5; 32]).await.unwrap().is_none());
    assert!(
        !f.meta
            .insert_token(&[6; 32], bob.id, "phone", None, far, "x")
            .await
            .unwrap(),
        "a deleted account signs in nowhere"
    );
    // Not due yet: nothing happens; a restore brings it all back.
    assert!(!f.meta.purge_account(bob.id, when).await.unwrap());
    f.meta.restore_account("bob").await.unwrap();
    assert!(f.meta.may_sign_in(bob.id).await.unwrap());
    let meta = &f.meta;
    let names = |ns| async move {
        meta.list(ns, &p("/"))
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(bob.root_ns).await, ["notes.txt"]);
    assert_eq!(names(team.namespace_id).await, ["plan.txt"]);
    assert_eq!(f.meta.mounts_of(bob.id).await.unwrap().len(), 2);
    assert_eq!(f.meta.mounts_of(carol.id).await.unwrap().len(), 1);

    f.meta.delete_account("bob").await.unwrap();
    assert_eq!(f.meta.deleted_before(i64::MAX).await.unwrap(), [bob.id]);
    let before = f.meta.unreferenced_blocks().await.unwrap();
    let carol_before = f.meta.usage(carol.id).await.unwrap().0;
    assert!(f.meta.purge_account(bob.id, i64::MAX).await.unwrap());
    assert!(names(bob.root_ns).await.is_empty());
    assert!(f.meta.trash(bob.root_ns).await.unwrap().is_empty());
    assert_eq!(
        f.meta.unreferenced_blocks().await.unwrap(),
        before + 1,
        "the block only bob's own files held is free for collection"
    );
    // The folder carol used is hers now, with what it holds.
    assert_eq!(names(team.namespace_id).await, ["plan.txt"]);
    let carols = f.meta.mounts_of(carol.id).await.unwrap();
    assert_eq!(carols.len(), 1);
    assert!(carols[0].owned());
    assert_eq!(f.meta.usage(carol.id).await.unwrap().0, carol_before + 10);
    assert!(
        f.meta
            .members(a.namespace_id)
            .await
            .unwrap()
            .iter()
            .all(|m| m.user_id != bob.id)
    );
    assert!(f.meta.deleted_before(i64::MAX).await.unwrap().is_empty());
    let gone = f.meta.restore_account("bob").await;
    assert!(matches!(gone, Err(MetaError::NotFound(_))), "{gone:?}");
    // The name is free for someone new.
    f.meta.create_user("bob", "y").await.unwrap();
    let listed: Vec<String> = f
        .meta
        .accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.username)
        .collect();
    assert_eq!(listed, ["ann", "bob", "carol"]);
}

/// The last administrator who can sign in is never disabled or deleted,
/// even when two administrators take each other out at the same moment.
async fn two_administrators_disabling_each_other_at_once_leave_one(f: Fixture) {
    f.meta.create_user_as("bob", "x", true).await.unwrap();
    let active = async || {
        f.meta
            .accounts()
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.is_admin && a.disabled_ms.is_none() && a.deleted_ms.is_none())
            .count()
    };
    assert_eq!(active().await, 2);
    for round in 0..20 {
        let (ann, bob) = if round % 2 == 0 {
            tokio::join!(
                f.meta.set_disabled("ann", true),
                f.meta.set_disabled("bob", true)
            )
        } else {
            let (a, b) = tokio::join!(
                f.meta.delete_account("ann"),
                f.meta.set_disabled("bob", true)
            );
            (a.map(|_| 0), b)
        };
        assert!(
            ann.is_err() || bob.is_err(),
            "round {round}: both went ahead"
        );
        assert_eq!(active().await, 1, "round {round}");
        let _ = f.meta.restore_account("ann").await;
        f.meta.set_disabled("ann", false).await.unwrap();
        f.meta.set_disabled("bob", false).await.unwrap();
        assert_eq!(active().await, 2);
    }
}
