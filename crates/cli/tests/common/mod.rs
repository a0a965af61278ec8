//! Test harness: a real server on a random loopback port, over SQLite or
//! PostgreSQL, with a file block store in a temporary folder, driven over
//! HTTP by the project's client.

#![allow(dead_code)]

pub mod process;
pub mod relay;

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        let mut config = Config {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().expect("addr"),
            database,
            ..Config::default()
        };
        tweak(&mut config);
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

    /// Bytes in the block store's folder.
    pub fn store_bytes(&self) -> u64 {
        dir_bytes(&self.data_dir().join("blocks"))
    }

    pub fn store_objects(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.data_dir().join("blocks"), &mut out);
        out
    }

    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
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
