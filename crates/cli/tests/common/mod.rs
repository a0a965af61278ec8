//! Test harness: a real server on a random loopback port, over SQLite or
//! PostgreSQL, with a file block store in a temporary folder (or, when
//! `TESSERA_TEST_S3` names a bucket, a prefix of its own in that S3 bucket:
//! `scripts/s3-test.sh`), driven over HTTP by the project's client.

#![allow(dead_code)]

pub mod process;
pub mod relay;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::{Rng, RngCore, SeedableRng};
use tessera_client::Remote;
use tessera_client::transfer::Progress;
use tessera_server::{Config, Running};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed `async fn name(Backend)` as one test per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

pub struct TestServer {
    pub running: Running,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub admin_password: String,
    pub config: Config,
    /// The main block store, as the test inspects it.
    pub store: StoreView,
}

/// The block store for a server whose data folder is `data`: none (the
/// folder in it), or with `TESSERA_TEST_S3=s3://BUCKET` a prefix in that
/// bucket named after the folder, so tests never meet each other's
/// objects and a restarted server finds its own. The credentials and the
/// endpoint come from the `AWS_*` environment, as for `tessera serve`.
pub fn test_store_url(data: &Path) -> Option<String> {
    let bucket = std::env::var("TESSERA_TEST_S3")
        .ok()
        .filter(|b| !b.is_empty())?;
    let tag = blake3::hash(data.as_os_str().as_encoded_bytes()).to_hex();
    Some(format!("{}/t{}", bucket.trim_end_matches('/'), &tag[..16]))
}

/// A fresh, empty PostgreSQL database on the cluster named by
/// TESSERA_TEST_POSTGRES (the test script starts one on loopback).
async fn fresh_postgres() -> String {
    let admin = std::env::var("TESSERA_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "TESSERA_TEST_POSTGRES is not set: run scripts/test.sh, which starts a \
             PostgreSQL cluster on loopback, or point it at one (postgres://USER@HOST:PORT/DB)"
        )
    });
    let name = format!("tessera_test_{:016x}", rand::rng().next_u64());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL cluster");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&admin).expect("TESSERA_TEST_POSTGRES is a URL");
    url.set_path(&name);
    url.to_string()
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_postgres().await),
        };
        let data_dir = dir.path().join("data");
        let mut config = Config {
            store: test_store_url(&data_dir),
            data_dir,
            listen: "127.0.0.1:0".parse().expect("addr"),
            database,
            ..Config::default()
        };
        tweak(&mut config);
        let store = StoreView::of(&config);
        let running = tessera_server::start(config.clone())
            .await
            .expect("server starts");
        let admin_password = running
            .generated_admin_password
            .clone()
            .expect("a new installation generates the admin password");
        let url = format!("http://{}", running.addr);
        TestServer {
            running,
            url,
            dir,
            admin_password,
            config,
            store,
        }
    }

    /// Stops the server and starts it again on the same stores and port,
    /// so clients keep their URL.
    pub async fn restart(self) -> Self {
        let TestServer {
            running,
            url,
            dir,
            admin_password,
            config,
            store,
        } = self;
        let addr = running.addr;
        running.shutdown().await.expect("server stops");
        let mut again = config.clone();
        again.listen = addr;
        let running = tessera_server::start(again).await.expect("server restarts");
        TestServer {
            running,
            url,
            dir,
            admin_password,
            config,
            store,
        }
    }

    /// Creates `name` and returns a client logged in as that user.
    pub async fn user(&self, name: &str) -> Remote {
        let password = format!("{name}-password");
        let hash = tessera_server::auth::hash_password(&password).expect("hash");
        self.running
            .meta()
            .create_user(name, &hash)
            .await
            .expect("create user");
        self.login(name, &password, "laptop").await
    }

    pub async fn login(&self, name: &str, password: &str, device: &str) -> Remote {
        let anon = Remote::new(&self.url, None).expect("client");
        let resp = anon.login(name, password, device).await.expect("login");
        anon.with_token(resp.token)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Bytes in the main block store.
    pub async fn store_bytes(&self) -> u64 {
        self.store.bytes().await
    }

    /// The names of the main block store's objects, sorted.
    pub async fn store_objects(&self) -> Vec<String> {
        self.store.objects().await
    }

    /// `--data-dir`, and `--database` and `--store` where the server has
    /// them: what `tessera admin …` needs to open this installation.
    pub fn install_args(&self) -> Vec<String> {
        let mut args = vec![
            "--data-dir".to_owned(),
            self.data_dir().display().to_string(),
        ];
        if let Some(db) = &self.config.database {
            args.extend(["--database".to_owned(), db.clone()]);
        }
        if let Some(store) = &self.config.store {
            args.extend(["--store".to_owned(), store.clone()]);
        }
        args
    }

    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A block store as a test sees it, object by name (`blocks/…`,
/// `packs/…`): a folder read and written directly, or an S3 store through
/// the client the server itself opens.
#[derive(Clone)]
pub enum StoreView {
    Folder(PathBuf),
    Remote(Arc<dyn ObjectStore>),
}

impl StoreView {
    /// The main store of `config`.
    pub fn of(config: &Config) -> Self {
        match &config.store {
            Some(url) => Self::of_url(url),
            None => StoreView::Folder(config.data_dir.join("blocks")),
        }
    }

    pub fn of_url(url: &str) -> Self {
        match url.strip_prefix("file://") {
            Some(path) => StoreView::Folder(PathBuf::from(path)),
            None => StoreView::Remote(
                tessera_server::blocks::store::open_object_store(url).expect("open the store"),
            ),
        }
    }

    pub fn is_folder(&self) -> bool {
        matches!(self, StoreView::Folder(_))
    }

    /// Every object's name, sorted.
    pub async fn objects(&self) -> Vec<String> {
        let mut names: Vec<String> = match self {
            StoreView::Folder(root) => {
                let mut files = Vec::new();
                walk(root, &mut files);
                files
                    .iter()
                    .map(|f| f.strip_prefix(root).unwrap().display().to_string())
                    .collect()
            }
            StoreView::Remote(store) => store
                .list(None)
                .map_ok(|meta| meta.location.to_string())
                .try_collect()
                .await
                .expect("list the store"),
        };
        names.sort();
        names
    }

    /// The bytes of every object together.
    pub async fn bytes(&self) -> u64 {
        match self {
            StoreView::Folder(root) => dir_bytes(root),
            StoreView::Remote(store) => store
                .list(None)
                .try_fold(0, |sum, meta| async move { Ok(sum + meta.size) })
                .await
                .expect("list the store"),
        }
    }

    pub async fn exists(&self, name: &str) -> bool {
        match self {
            StoreView::Folder(root) => root.join(name).exists(),
            StoreView::Remote(store) => match store.head(&ObjectPath::from(name)).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => panic!("head {name}: {e}"),
            },
        }
    }

    pub async fn read(&self, name: &str) -> Vec<u8> {
        match self {
            StoreView::Folder(root) => std::fs::read(root.join(name)).unwrap(),
            StoreView::Remote(store) => {
                let got = store.get(&ObjectPath::from(name)).await;
                let bytes = match got {
                    Ok(got) => got.bytes().await,
                    Err(e) => Err(e),
                };
                bytes
                    .unwrap_or_else(|e| panic!("read {name}: {e}"))
                    .to_vec()
            }
        }
    }

    /// Writes `name`, replacing what is there.
    pub async fn write(&self, name: &str, bytes: &[u8]) {
        match self {
            StoreView::Folder(root) => {
                let path = root.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            StoreView::Remote(store) => {
                store
                    .put(&ObjectPath::from(name), PutPayload::from(bytes.to_vec()))
                    .await
                    .unwrap_or_else(|e| panic!("write {name}: {e}"));
            }
        }
    }

    /// Flips a bit in the middle of `name`.
    pub async fn damage(&self, name: &str) {
        let len = self.read(name).await.len();
        self.flip(name, len / 2, 0x01).await;
    }

    /// Flips the bits of `mask` in one byte of `name` (at `at`, modulo its
    /// length): bit rot.
    pub async fn flip(&self, name: &str, at: usize, mask: u8) {
        let mut bytes = self.read(name).await;
        let at = at % bytes.len();
        bytes[at] ^= mask;
        self.write(name, &bytes).await;
    }

    /// Dates `name` back by `age`, as if written then. Only a folder can:
    /// an S3 object's time is the store's clock at its write (false).
    pub fn backdate(&self, name: &str, age: Duration) -> bool {
        let StoreView::Folder(root) = self else {
            return false;
        };
        std::fs::File::options()
            .write(true)
            .open(root.join(name))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - age)
            .unwrap();
        true
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

pub fn dir_bytes(dir: &Path) -> u64 {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

pub fn no_progress() -> Progress {
    Arc::new(|_| {})
}

/// Deterministic "real-looking" data: runs of text, of repeated records, of
/// zeros and of random bytes, so compression and chunking meet a mix.
pub fn mixed_data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let words = [
        "tessera ",
        "block ",
        "file ",
        "sync ",
        "revision ",
        "the ",
        "of ",
        "and ",
        "folder\n",
        "conflict ",
        "journal ",
        "1234 ",
        "{\"id\": ",
        "\"size\": 42}, ",
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let run = rng.random_range(4_096..262_144).min(len - out.len());
        match rng.random_range(0..4) {
            0 => {
                while out.len() < len && run > 0 {
                    let w = words[rng.random_range(0..words.len())];
                    out.extend_from_slice(w.as_bytes());
                    if out.len() % run < w.len() {
                        break;
                    }
                }
            }
            1 => out.resize(out.len() + run, 0),
            2 => {
                let start = out.len();
                out.resize(start + run, 0);
                rng.fill_bytes(&mut out[start..]);
            }
            _ => {
                let rec = format!(
                    "record {:08} value {:x}\n",
                    rng.random::<u32>(),
                    rng.random::<u64>()
                );
                for _ in 0..run / rec.len() {
                    out.extend_from_slice(rec.as_bytes());
                }
            }
        }
    }
    out.truncate(len);
    out
}

pub fn random_data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// The names in folder `dir`, sorted.
pub async fn names(r: &Remote, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = r
        .list(dir)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

/// A bearer token for `user`, from a login over plain HTTP at `base` (the
/// server's URL with the API prefix), for tests that speak HTTP by hand.
pub async fn login_token(base: &str, user: &str, password: &str, device: &str) -> String {
    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"username": user, "password": password, "device": device}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["token"].as_str().unwrap().to_owned()
}
