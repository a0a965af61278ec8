//! The sync state of one folder, in `DIR/.tessera/state.db` (SQLite):
//! the remote tree with its journal cursor, the synced tree, and a cache of
//! file hashes keyed by what `stat` says, so unchanged files are not read
//! again. Trees are saved at the end of each round (the rows that changed),
//! in one transaction: the three-tree rules make a crash between a change and its
//! save harmless (both sides then agree, and the planner records it).
//!
//! The schema has a version (`PRAGMA user_version`); `State::open` applies
//! the missing steps of `MIGRATIONS` in order, each in one `BEGIN IMMEDIATE`
//! transaction with the version bump. Version 1 is the format from before
//! versions (those databases say 0). A database newer than this build is
//! refused untouched (`StateError::Newer`), never used.

use std::path::Path;
use std::str::FromStr;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tessera_proto::{BlockId, ContentHash};

use super::tree::{Node, NodeKind, Tree};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("sync state database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("sync state is damaged: {0}")]
    Damaged(String),
    #[error(
        "{file} was written by a newer version of tessera (sync state version {found}; this \
         version knows up to {known}); nothing was changed: sync this folder with the newer \
         tessera"
    )]
    Newer {
        file: String,
        found: i64,
        known: i64,
    },
}

/// What `stat` said about a file when it was last hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

pub type StatCache = std::collections::HashMap<String, (Stat, ContentHash)>;

pub struct State {
    pool: SqlitePool,
    saved: tokio::sync::Mutex<Saved>,
}

/// The schema, one step per version: `MIGRATIONS[i]` brings a database
/// from version `i` to `i + 1`, and the version is SQLite's
/// `PRAGMA user_version`, moved in the same transaction as the step.
///
/// Version 1 is the format written before versions were kept (those
/// databases say 0 and already hold these tables, hence `IF NOT EXISTS`:
/// for them the step only records the version). Later steps assume the
/// version before them exactly, and are only ever appended.
const MIGRATIONS: &[&str] = &[V1];

const V1: &str = "
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS remote_tree (path TEXT PRIMARY KEY, kind TEXT NOT NULL, hash BLOB, rev INTEGER, id TEXT, size INTEGER);
CREATE TABLE IF NOT EXISTS synced_tree (path TEXT PRIMARY KEY, kind TEXT NOT NULL, hash BLOB, rev INTEGER, id TEXT, size INTEGER);
CREATE TABLE IF NOT EXISTS stat_cache (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, hash BLOB NOT NULL);
-- Where the blocks of large local files lie, so a download can take a block
-- from any local file that holds it. A hint only: every use re-hashes.
CREATE TABLE IF NOT EXISTS local_blocks (block_id BLOB NOT NULL, path TEXT NOT NULL, file_offset INTEGER NOT NULL, len INTEGER NOT NULL, PRIMARY KEY (block_id, path, file_offset));
CREATE INDEX IF NOT EXISTS local_blocks_path ON local_blocks(path);
";

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to the last of `steps`, each in a transaction of
/// its own. `BEGIN IMMEDIATE` takes the write lock before the version is
/// read, so a `tessera status` opening the folder while a sync does cannot
/// run a step twice. A database newer than `steps` is refused untouched:
/// this build does not know what the newer steps changed.
async fn migrate(pool: &SqlitePool, steps: &[&'static str], file: &Path) -> Result<(), StateError> {
    let known = steps.len() as i64;
    // Up to date is the usual case: no write lock for it, so opening a
    // folder a sync is writing to does not wait for the sync.
    let (found,): (i64,) = sqlx::query_as("PRAGMA user_version")
        .fetch_one(pool)
        .await?;
    if found == known {
        return Ok(());
    }
    loop {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let (found,): (i64,) = sqlx::query_as("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        if found > known {
            return Err(StateError::Newer {
                file: file.display().to_string(),
                found,
                known,
            });
        }
        let Some(step) = usize::try_from(found).ok().and_then(|i| steps.get(i)) else {
            return Ok(());
        };
        sqlx::raw_sql(*step).execute(&mut *tx).await?;
        // PRAGMA takes no bound parameters; the number is ours.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {}",
            found + 1
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
}

type NodeRow = (
    String,
    String,
    Option<Vec<u8>>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

fn hash_of(raw: Option<Vec<u8>>) -> Result<Option<ContentHash>, StateError> {
    raw.map(|b| {
        <[u8; 32]>::try_from(b.as_slice())
            .map(ContentHash)
            .map_err(|_| StateError::Damaged("a stored hash is not 32 bytes".into()))
    })
    .transpose()
}

impl State {
    /// Opens (creating if missing) `dir/state.db`, bringing it to
    /// [`SCHEMA_VERSION`] first.
    pub async fn open(dir: &Path) -> Result<Self, StateError> {
        let file = dir.join("state.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        if let Err(e) = migrate(&pool, MIGRATIONS, &file).await {
            pool.close().await;
            return Err(e);
        }
        Ok(Self {
            pool,
            saved: Default::default(),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    /// The local block index, as a handle that transfers can carry.
    pub fn block_index(&self) -> BlockIndex {
        BlockIndex {
            pool: self.pool.clone(),
        }
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StateError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.0))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), StateError> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn load(&self, table: &'static str) -> Result<Tree, StateError> {
        let sql = match table {
            "remote_tree" => "SELECT path, kind, hash, rev, id, size FROM remote_tree",
            _ => "SELECT path, kind, hash, rev, id, size FROM synced_tree",
        };
        let rows: Vec<NodeRow> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
        let mut tree = Tree::new();
        for (path, kind, hash, rev, id, size) in rows {
            let kind = if kind == "folder" {
                NodeKind::Folder
            } else {
                NodeKind::File
            };
            tree.insert(
                path,
                Node {
                    kind,
                    hash: hash_of(hash)?,
                    rev,
                    id,
                    size: size.map(|s| s as u64),
                },
            );
        }
        Ok(tree)
    }

    pub async fn remote_tree(&self) -> Result<Tree, StateError> {
        let tree = self.load("remote_tree").await?;
        self.saved.lock().await.remote = Some(tree.clone());
        Ok(tree)
    }

    pub async fn synced_tree(&self) -> Result<Tree, StateError> {
        let tree = self.load("synced_tree").await?;
        self.saved.lock().await.synced = Some(tree.clone());
        Ok(tree)
    }

    pub async fn stat_cache(&self) -> Result<StatCache, StateError> {
        let rows: Vec<(String, i64, i64, i64, Vec<u8>)> =
            sqlx::query_as("SELECT path, size, mtime_ns, inode, hash FROM stat_cache")
                .fetch_all(&self.pool)
                .await?;
        let mut out = StatCache::new();
        for (path, size, mtime_ns, inode, hash) in rows {
            let hash =
                hash_of(Some(hash))?.ok_or_else(|| StateError::Damaged("empty hash".into()))?;
            out.insert(
                path,
                (
                    Stat {
                        size: size as u64,
                        mtime_ns,
                        inode: inode as u64,
                    },
                    hash,
                ),
            );
        }
        self.saved.lock().await.cache = Some(out.clone());
        Ok(out)
    }

    /// Saves the remote tree with the cursor it is valid at, the synced
    /// tree and the stat cache, all or nothing. Only rows that differ from
    /// what this state last loaded or saved are written, so a round that
    /// changed one file costs the same in a folder of ten files or of a
    /// hundred thousand.
    pub async fn save(
        &self,
        remote: &Tree,
        cursor: Option<&str>,
        synced: &Tree,
        cache: &StatCache,
    ) -> Result<(), StateError> {
        let mut saved = self.saved.lock().await;
        let mut tx = self.pool.begin().await?;
        for (table, tree, before) in [
            ("remote_tree", remote, saved.remote.as_ref()),
            ("synced_tree", synced, saved.synced.as_ref()),
        ] {
            let (put, gone) = match before {
                Some(before) => diff(
                    tree,
                    |p| before.get(p),
                    before.keys(),
                    |p| tree.contains_key(p),
                ),
                None => {
                    clear(&mut tx, table).await?;
                    (tree.iter().collect(), Vec::new())
                }
            };
            remove_rows(&mut tx, table, &gone).await?;
            if table == "synced_tree" {
                // The block index forgets files that are no longer synced.
                match before {
                    Some(_) => remove_rows(&mut tx, "local_blocks", &gone).await?,
                    None => {
                        sqlx::query(
                            "DELETE FROM local_blocks WHERE path NOT IN (SELECT path FROM synced_tree)",
                        )
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            put_nodes(&mut tx, table, &put).await?;
        }
        let (put, gone) = match saved.cache.as_ref() {
            Some(before) => diff(
                cache,
                |p| before.get(p),
                before.keys(),
                |p| cache.contains_key(p),
            ),
            None => {
                clear(&mut tx, "stat_cache").await?;
                (cache.iter().collect(), Vec::new())
            }
        };
        remove_rows(&mut tx, "stat_cache", &gone).await?;
        put_stats(&mut tx, &put).await?;
        if let Some(c) = cursor {
            sqlx::query("INSERT INTO settings (key, value) VALUES ('cursor', $1) ON CONFLICT (key) DO UPDATE SET value = $1")
                .bind(c)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        *saved = Saved {
            remote: Some(remote.clone()),
            synced: Some(synced.clone()),
            cache: Some(cache.clone()),
        };
        Ok(())
    }
}

/// What the database holds, as last loaded or saved by this state; `None`
/// where unknown (that table is then written whole).
#[derive(Default)]
struct Saved {
    remote: Option<Tree>,
    synced: Option<Tree>,
    cache: Option<StatCache>,
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// Rows a statement when writing many. SQLite's cost to bind a parameter
/// grows with the statement's parameters, so thousands in one statement
/// cost more than the statements they save.
const ROWS: usize = 50;

/// The entries of `now` that are new or differ from before, and the paths
/// that were there before and are gone.
fn diff<'a, V: PartialEq + 'a, M>(
    now: M,
    before: impl Fn(&str) -> Option<&'a V>,
    before_keys: impl Iterator<Item = &'a String>,
    still_there: impl Fn(&str) -> bool,
) -> (Vec<(&'a String, &'a V)>, Vec<&'a String>)
where
    M: IntoIterator<Item = (&'a String, &'a V)>,
{
    let put = now
        .into_iter()
        .filter(|(path, v)| before(path) != Some(*v))
        .collect();
    let gone = before_keys.filter(|path| !still_there(path)).collect();
    (put, gone)
}

async fn clear(tx: &mut Tx, table: &'static str) -> Result<(), StateError> {
    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `?, ?, …` for `n` parameters.
fn params(n: usize) -> String {
    vec!["?"; n].join(", ")
}

async fn remove_rows(
    tx: &mut Tx,
    table: &'static str,
    paths: &[&String],
) -> Result<(), StateError> {
    for chunk in paths.chunks(ROWS) {
        let sql = format!(
            "DELETE FROM {table} WHERE path IN ({})",
            params(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for path in chunk {
            q = q.bind(path.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn put_nodes(
    tx: &mut Tx,
    table: &'static str,
    rows: &[(&String, &Node)],
) -> Result<(), StateError> {
    for chunk in rows.chunks(ROWS) {
        let values = vec![format!("({})", params(6)); chunk.len()].join(", ");
        let sql = format!(
            "INSERT OR REPLACE INTO {table} (path, kind, hash, rev, id, size) VALUES {values}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (path, n) in chunk {
            q = q
                .bind(path.as_str())
                .bind(if n.kind == NodeKind::Folder {
                    "folder"
                } else {
                    "file"
                })
                .bind(n.hash.map(|h| h.0.to_vec()))
                .bind(n.rev)
                .bind(n.id.as_deref())
                .bind(n.size.map(|s| s as i64));
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn put_stats(
    tx: &mut Tx,
    rows: &[(&String, &(Stat, ContentHash))],
) -> Result<(), StateError> {
    for chunk in rows.chunks(ROWS) {
        let values = vec![format!("({})", params(5)); chunk.len()].join(", ");
        let sql = format!(
            "INSERT OR REPLACE INTO stat_cache (path, size, mtime_ns, inode, hash) VALUES {values}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (path, (stat, hash)) in chunk {
            q = q
                .bind(path.as_str())
                .bind(stat.size as i64)
                .bind(stat.mtime_ns)
                .bind(stat.inode as i64)
                .bind(hash.0.to_vec());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Where a block lies in a local file: path relative to the synced folder,
/// offset, length.
pub type BlockSite = (String, u64, u64);

/// The local block index (see the `local_blocks` table).
#[derive(Clone)]
pub struct BlockIndex {
    pool: SqlitePool,
}

impl BlockIndex {
    /// Records that the file at `path` consists of `blocks` (id, length) in
    /// order, replacing what was known about it.
    pub async fn record(&self, path: &str, blocks: &[(BlockId, u64)]) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM local_blocks WHERE path = $1")
            .bind(path)
            .execute(&mut *tx)
            .await?;
        let mut offset = 0u64;
        for (id, len) in blocks {
            sqlx::query(
                "INSERT INTO local_blocks (block_id, path, file_offset, len) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&id.0[..])
            .bind(path)
            .bind(offset as i64)
            .bind(*len as i64)
            .execute(&mut *tx)
            .await?;
            offset += len;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The blocks (id, length) of the file at `path` in order, as last
    /// recorded; empty if none were.
    pub async fn blocks_of(&self, path: &str) -> Result<Vec<(BlockId, u64)>, StateError> {
        let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT block_id, len FROM local_blocks WHERE path = $1 ORDER BY file_offset",
        )
        .bind(path)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, len)| Some((BlockId(id.try_into().ok()?), len as u64)))
            .collect())
    }

    /// Forgets the blocks of every path that is not synced.
    pub async fn forget_unsynced(&self) -> Result<(), StateError> {
        sqlx::query("DELETE FROM local_blocks WHERE path NOT IN (SELECT path FROM synced_tree)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Where each of `ids` may be found locally (a few places at most each).
    pub async fn sites(
        &self,
        ids: &[BlockId],
    ) -> Result<std::collections::HashMap<BlockId, Vec<BlockSite>>, StateError> {
        let mut out = std::collections::HashMap::<BlockId, Vec<BlockSite>>::new();
        for id in ids {
            if out.contains_key(id) {
                continue;
            }
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT path, file_offset, len FROM local_blocks WHERE block_id = $1 LIMIT 4",
            )
            .bind(&id.0[..])
            .fetch_all(&self.pool)
            .await?;
            if !rows.is_empty() {
                out.insert(
                    *id,
                    rows.into_iter()
                        .map(|(p, o, l)| (p, o as u64, l as u64))
                        .collect(),
                );
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::Connection;

    use super::*;

    /// The schema exactly as releases before schema versions wrote it.
    const UNVERSIONED: &str = "
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS remote_tree (path TEXT PRIMARY KEY, kind TEXT NOT NULL, hash BLOB, rev INTEGER, id TEXT, size INTEGER);
CREATE TABLE IF NOT EXISTS synced_tree (path TEXT PRIMARY KEY, kind TEXT NOT NULL, hash BLOB, rev INTEGER, id TEXT, size INTEGER);
CREATE TABLE IF NOT EXISTS stat_cache (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, hash BLOB NOT NULL);
-- Where the blocks of large local files lie, so a download can take a block
-- from any local file that holds it. A hint only: every use re-hashes.
CREATE TABLE IF NOT EXISTS local_blocks (block_id BLOB NOT NULL, path TEXT NOT NULL, file_offset INTEGER NOT NULL, len INTEGER NOT NULL, PRIMARY KEY (block_id, path, file_offset));
CREATE INDEX IF NOT EXISTS local_blocks_path ON local_blocks(path);
INSERT INTO settings VALUES ('account', 'http://127.0.0.1:1 alice'), ('cursor', '42');
INSERT INTO remote_tree VALUES
  ('docs', 'folder', NULL, NULL, 'id-docs', NULL),
  ('docs/a.txt', 'file', X'0101010101010101010101010101010101010101010101010101010101010101', 3, 'id-a', 5);
INSERT INTO synced_tree VALUES
  ('docs', 'folder', NULL, NULL, 'id-docs', NULL),
  ('docs/a.txt', 'file', X'0101010101010101010101010101010101010101010101010101010101010101', 2, 'id-a', 5);
INSERT INTO stat_cache VALUES
  ('docs/a.txt', 5, 1700000000000000000, 77, X'0101010101010101010101010101010101010101010101010101010101010101');
INSERT INTO local_blocks VALUES
  (X'0202020202020202020202020202020202020202020202020202020202020202', 'docs/a.txt', 0, 5);
";

    async fn raw(dir: &Path) -> sqlx::SqliteConnection {
        let url = format!("sqlite://{}", dir.join("state.db").display());
        let opts = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        sqlx::SqliteConnection::connect_with(&opts).await.unwrap()
    }

    async fn version(conn: &mut sqlx::SqliteConnection) -> i64 {
        sqlx::query_as::<_, (i64,)>("PRAGMA user_version")
            .fetch_one(conn)
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn a_database_from_before_versions_is_upgraded_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = raw(dir.path()).await;
        sqlx::raw_sql(UNVERSIONED).execute(&mut conn).await.unwrap();
        assert_eq!(version(&mut conn).await, 0);
        conn.close().await.unwrap();

        let state = State::open(dir.path()).await.unwrap();
        let remote = state.remote_tree().await.unwrap();
        let synced = state.synced_tree().await.unwrap();
        let cache = state.stat_cache().await.unwrap();
        let sites = state.block_index().sites(&[BlockId([2; 32])]).await;
        let cursor = state.setting("cursor").await.unwrap();
        let account = state.setting("account").await.unwrap();
        state.close().await;

        assert_eq!(cursor.as_deref(), Some("42"));
        assert_eq!(account.as_deref(), Some("http://127.0.0.1:1 alice"));
        assert_eq!(remote.len(), 2);
        assert_eq!(remote["docs"].kind, NodeKind::Folder);
        let a = &remote["docs/a.txt"];
        assert_eq!(
            (a.kind, a.hash, a.rev, a.id.as_deref(), a.size),
            (
                NodeKind::File,
                Some(ContentHash([1; 32])),
                Some(3),
                Some("id-a"),
                Some(5)
            )
        );
        assert_eq!(synced["docs/a.txt"].rev, Some(2));
        let (stat, hash) = cache["docs/a.txt"];
        assert_eq!((stat.size, stat.inode), (5, 77));
        assert_eq!(hash, ContentHash([1; 32]));
        assert_eq!(
            sites.unwrap()[&BlockId([2; 32])],
            vec![("docs/a.txt".to_owned(), 0, 5)]
        );
        let mut conn = raw(dir.path()).await;
        assert_eq!(version(&mut conn).await, SCHEMA_VERSION);
    }

    /// The block index keeps what it knows of synced files, in order, and
    /// forgets paths that are not synced when asked.
    #[tokio::test]
    async fn the_block_index_forgets_paths_that_are_not_synced() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).await.unwrap();
        let mut synced = Tree::new();
        synced.insert("kept.bin".into(), Node::file(ContentHash([1; 32])));
        state
            .save(&Tree::new(), None, &synced, &StatCache::new())
            .await
            .unwrap();
        let index = state.block_index();
        let blocks = [(BlockId([3; 32]), 10), (BlockId([4; 32]), 5)];
        index.record("kept.bin", &blocks).await.unwrap();
        index
            .record("ghost.bin", &[(BlockId([5; 32]), 7)])
            .await
            .unwrap();
        index.forget_unsynced().await.unwrap();
        assert_eq!(index.blocks_of("kept.bin").await.unwrap(), blocks);
        assert!(index.blocks_of("ghost.bin").await.unwrap().is_empty());
        assert!(index.sites(&[BlockId([5; 32])]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_new_database_is_written_at_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).await.unwrap();
        let mut tree = Tree::new();
        tree.insert(
            "x".into(),
            Node {
                kind: NodeKind::Folder,
                hash: None,
                rev: None,
                id: Some("id-x".into()),
                size: None,
            },
        );
        state
            .save(&tree, Some("7"), &tree, &StatCache::new())
            .await
            .unwrap();
        state.close().await;
        let state = State::open(dir.path()).await.unwrap();
        assert_eq!(state.synced_tree().await.unwrap(), tree);
        assert_eq!(state.setting("cursor").await.unwrap().as_deref(), Some("7"));
        state.close().await;
        assert_eq!(version(&mut raw(dir.path()).await).await, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn a_database_from_a_newer_version_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        State::open(dir.path()).await.unwrap().close().await;
        let newer = SCHEMA_VERSION + 1;
        let mut conn = raw(dir.path()).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {newer}; CREATE TABLE from_the_future (x INTEGER);"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        let err = State::open(dir.path()).await.err().expect("refused");
        assert!(
            matches!(err, StateError::Newer { found, known, .. } if found == newer && known == SCHEMA_VERSION),
            "{err}"
        );
        let said = err.to_string();
        assert!(said.contains("newer version of tessera"), "{said}");
        assert!(said.contains("state.db"), "names the file: {said}");
        let mut conn = raw(dir.path()).await;
        assert_eq!(version(&mut conn).await, newer);
    }

    #[tokio::test]
    async fn steps_run_once_each_in_order_and_a_failed_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(opts).await.unwrap();
        let steps = [
            "CREATE TABLE t (x INTEGER)",
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (2)",
            "INSERT INTO t VALUES (3); INSERT INTO no_such_table VALUES (4)",
        ];
        let rows = |pool: SqlitePool| async move {
            let got: Vec<(i64,)> = sqlx::query_as("SELECT x FROM t ORDER BY rowid")
                .fetch_all(&pool)
                .await
                .unwrap();
            got.into_iter().map(|r| r.0).collect::<Vec<_>>()
        };
        migrate(&pool, &steps[..2], &file).await.unwrap();
        assert_eq!(rows(pool.clone()).await, [1]);
        migrate(&pool, &steps[..3], &file).await.unwrap();
        assert_eq!(rows(pool.clone()).await, [1, 2]);
        assert!(migrate(&pool, &steps, &file).await.is_err());
        assert_eq!(rows(pool.clone()).await, [1, 2]);
        let (v,): (i64,) = sqlx::query_as("PRAGMA user_version")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(v, 3);
    }

    fn tree_of(n: usize) -> Tree {
        (0..n)
            .map(|i| {
                let mut node = Node::file(ContentHash([i as u8; 32]));
                node.rev = Some(1);
                node.id = Some(format!("id-{i}"));
                node.size = Some(i as u64);
                (format!("d/f{i}"), node)
            })
            .collect()
    }

    fn cache_of(tree: &Tree) -> StatCache {
        tree.iter()
            .map(|(p, n)| {
                let stat = Stat {
                    size: n.size.unwrap_or(0),
                    mtime_ns: 1,
                    inode: 7,
                };
                (p.clone(), (stat, n.hash.unwrap_or(ContentHash([0; 32]))))
            })
            .collect()
    }

    async fn changes_so_far(state: &State) -> i64 {
        let (n,): (i64,) = sqlx::query_as("SELECT total_changes()")
            .fetch_one(&state.pool)
            .await
            .unwrap();
        n
    }

    /// A round that changed one file of many writes a handful of rows, not
    /// every row of every tree; what is saved reads back the same.
    #[tokio::test]
    async fn a_save_writes_only_what_changed_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).await.unwrap();
        let (mut remote, mut synced) = (
            state.remote_tree().await.unwrap(),
            state.synced_tree().await.unwrap(),
        );
        let mut cache = state.stat_cache().await.unwrap();
        remote.extend(tree_of(3000));
        synced.extend(tree_of(3000));
        cache.extend(cache_of(&synced));
        state
            .save(&remote, Some("c1"), &synced, &cache)
            .await
            .unwrap();
        state
            .block_index()
            .record("d/f5", &[(BlockId([9; 32]), 5)])
            .await
            .unwrap();

        // One file edited, one added, one removed.
        let before = changes_so_far(&state).await;
        for tree in [&mut remote, &mut synced] {
            tree.get_mut("d/f1").unwrap().rev = Some(2);
            tree.insert("d/new".into(), Node::file(ContentHash([7; 32])));
            tree.remove("d/f5");
        }
        cache.remove("d/f5");
        cache.insert("d/new".into(), cache_of(&synced)["d/new"]);
        state
            .save(&remote, Some("c2"), &synced, &cache)
            .await
            .unwrap();
        let written = changes_so_far(&state).await - before;
        assert!(
            written <= 12,
            "{written} rows written for three changed files"
        );

        state.close().await;
        let state = State::open(dir.path()).await.unwrap();
        assert_eq!(state.remote_tree().await.unwrap(), remote);
        assert_eq!(state.synced_tree().await.unwrap(), synced);
        assert_eq!(state.stat_cache().await.unwrap(), cache);
        assert_eq!(
            state.setting("cursor").await.unwrap().as_deref(),
            Some("c2")
        );
        let sites = state
            .block_index()
            .sites(&[BlockId([9; 32])])
            .await
            .unwrap();
        assert!(
            sites.is_empty(),
            "the removed file's blocks are forgotten: {sites:?}"
        );
    }
}
