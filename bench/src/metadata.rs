//! `tessera-bench metadata`: folder listings and file metadata reads per
//! second on PostgreSQL, through one instance and through several sharing
//! the database, next to the same reads made straight against the
//! database. These decide whether a cache in front of the metadata
//! database would pay: a cache can only take away the database's share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::{Rng, RngCore};
use tessera_client::Remote;
use tessera_proto::RemotePath;
use tessera_server::meta::Meta;
use tessera_server::{Config, Running};

#[derive(clap::Args)]
pub struct Args {
    /// A PostgreSQL cluster to create a throwaway database in.
    #[arg(long, env = "TESSERA_TEST_POSTGRES")]
    database: String,
    /// The most instances to measure through (1 is always measured).
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Files in the listed folder.
    #[arg(long, default_value_t = 500)]
    files: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Concurrent readers.
    #[arg(long, default_value_t = 32)]
    clients: usize,
}

pub fn run(args: Args) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(args))
}

async fn measure(args: Args) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("tessera-bench-meta-")
        .tempdir()?;
    let url = fresh_database(&args.database).await?;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let config = |i: usize| Config {
        data_dir: tmp.path().join(format!("instance{i}")),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        database: Some(url.clone()),
        store: Some(format!("file://{}", tmp.path().join("blocks").display())),
        master_key: Some(hex::encode(key)),
        ..Config::default()
    };
    let mut servers: Vec<Running> = vec![tessera_server::start(config(0)).await?];
    let password = "bench-password";
    let hash = tessera_server::auth::hash_password(password)?;
    let user = servers[0].meta().create_user("bench", &hash).await?;
    let first = login(&servers[0], password).await?;
    first.mkdir("/d").await?;
    for i in 0..args.files {
        let body = format!("file {i}");
        first
            .upload(&format!("/d/f{i}.txt"), None, reqwest::Body::from(body))
            .await?;
    }
    for i in 1..args.instances.max(1) {
        servers.push(tessera_server::start(config(i)).await?);
    }
    println!(
        "metadata reads, {} files in the folder, {} readers, {} s each (PostgreSQL, one machine)",
        args.files, args.clients, args.secs
    );
    let mut counts = vec![1];
    if args.instances > 1 {
        counts.push(args.instances);
    }
    for n in counts {
        let mut remotes = Vec::new();
        for s in servers.iter().take(n) {
            remotes.push(login(s, password).await?);
        }
        let (lists, metas) = through_http(&remotes, &args).await;
        println!(
            "  through {n} instance(s): {:>7.0} listings/s, {:>7.0} metadata reads/s",
            lists, metas
        );
    }
    let meta = servers[0].meta().clone();
    let (lists, metas) = straight(&meta, user.root_ns, &args).await?;
    println!(
        "  straight to the database: {:>7.0} listings/s, {:>7.0} metadata reads/s",
        lists, metas
    );
    for s in servers {
        s.shutdown().await?;
    }
    Ok(())
}

async fn login(server: &Running, password: &str) -> Result<Remote> {
    let anon = Remote::new(&format!("http://{}", server.addr), None)?;
    let token = anon.login("bench", password, "bench").await?.token;
    Ok(anon.with_token(token))
}

/// Listings per second, then metadata reads per second, by `args.clients`
/// readers spread over `remotes`.
async fn through_http(remotes: &[Remote], args: &Args) -> (f64, f64) {
    (
        http_phase(remotes, args, true).await,
        http_phase(remotes, args, false).await,
    )
}

async fn http_phase(remotes: &[Remote], args: &Args, listing: bool) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(args.secs);
    let readers: Vec<_> = (0..args.clients)
        .map(|c| {
            let remote = remotes[c % remotes.len()].clone();
            let done = done.clone();
            let files = args.files.max(1);
            tokio::spawn(async move {
                while Instant::now() < until {
                    let ok = if listing {
                        remote.list("/d").await.is_ok()
                    } else {
                        let i = rand::rng().random_range(0..files);
                        remote.meta(&format!("/d/f{i}.txt")).await.is_ok()
                    };
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    futures_join(readers).await;
    done.load(Ordering::Relaxed) as f64 / args.secs as f64
}

/// The same reads as queries, with no HTTP, authentication or JSON.
async fn straight(meta: &Meta, ns: i64, args: &Args) -> Result<(f64, f64)> {
    Ok((
        straight_phase(meta, ns, args, true).await?,
        straight_phase(meta, ns, args, false).await?,
    ))
}

async fn straight_phase(meta: &Meta, ns: i64, args: &Args, listing: bool) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let folder = RemotePath::parse("/d").context("a path")?;
    let until = Instant::now() + Duration::from_secs(args.secs);
    let readers: Vec<_> = (0..args.clients)
        .map(|_| {
            let meta = meta.clone();
            let folder = folder.clone();
            let done = done.clone();
            let files = args.files.max(1);
            tokio::spawn(async move {
                while Instant::now() < until {
                    let ok = if listing {
                        meta.list(ns, &folder).await.is_ok()
                    } else {
                        let i = rand::rng().random_range(0..files);
                        match RemotePath::parse(&format!("/d/f{i}.txt")) {
                            Ok(path) => meta.resolve(ns, &path).await.is_ok(),
                            Err(_) => false,
                        }
                    };
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    futures_join(readers).await;
    Ok(done.load(Ordering::Relaxed) as f64 / args.secs as f64)
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// A new, empty database on the cluster at `admin`.
async fn fresh_database(admin: &str) -> Result<String> {
    use sqlx::Connection;
    let name = format!("tessera_bench_{:016x}", rand::rng().next_u64());
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .context("connecting to the PostgreSQL cluster")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let mut url = url::Url::parse(admin)?;
    url.set_path(&name);
    Ok(url.to_string())
}
