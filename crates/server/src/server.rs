//! Configuration, start-up and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::oneshot;

use crate::api::{AppState, Limits, router};
use crate::auth::{LoginLimiter, PasswordChecks, generate_password, hash_password};
use crate::blocks::keys::KeyError;
use crate::blocks::store::{StoreUrlError, open_object_store, probe_object_store};
use crate::blocks::tiers::Tiers;
use crate::blocks::{BlockStore, KeyRing, MasterKey};
use crate::listen::{ConnLimits, default_max_connections};
use crate::meta::{Meta, MetaError};
use crate::notify::{Hub, Presence, Publisher};
use crate::proxy::TrustedProxies;
use crate::workers::{
    Clock, Cold, Expired, Expiry, Gc, Leases, Recompress, Retention, Runner, SHUTDOWN_DEADLINE,
    Scrub, Worker,
};

pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 << 30;
/// Source code and text come out a tenth to a quarter smaller than at the
/// clients' fast levels, at about 30 MB/s of one core (docs/PERFORMANCE.md).
pub const DEFAULT_RECOMPRESS_LEVEL: i32 = 12;
/// Beyond 19, zstd's levels need hundreds of MiB a block and run at 1–2 MB/s.
pub const MAX_RECOMPRESS_LEVEL: i32 = 19;

/// How long a login waits for a free password check before it is refused.
const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(2);

fn password_check_wait() -> Duration {
    PASSWORD_CHECK_WAIT
}

/// Server settings: command-line flags over a TOML file over defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`; default: SQLite in the data dir.
    pub database: Option<String>,
    /// `file:///PATH`, `s3://BUCKET[/PREFIX]` or `memory://`; default: a
    /// folder in the data dir.
    pub store: Option<String>,
    pub max_file_size: u64,
    /// 64 hex digits; default: the key file in the data dir (made at first start).
    pub master_key: Option<String>,
    /// How long a file may show as pending (upload under way) without its
    /// upload completing, in seconds.
    pub pending_ttl_secs: u64,
    /// How long deleted files stay in the trash before they are removed for
    /// good, in seconds; 0 keeps them until the user empties the trash.
    pub trash_ttl_secs: u64,
    /// A block without references is deleted only after this many seconds
    /// (an upload or commit that is about to use it has that long).
    pub gc_grace_secs: u64,
    /// Which old revisions of a file are kept.
    pub retention: crate::retention::Policy,
    /// Where blocks used only by long-untouched files move
    /// (`file:///PATH` or `s3://BUCKET[/PREFIX]`); none: they stay.
    pub cold_store: Option<String>,
    /// Blocks used only by files untouched this many seconds move to the
    /// cold store.
    pub cold_after_secs: u64,
    /// Blocks stored this many seconds are recompressed at
    /// `recompress_level` where that makes them smaller.
    pub recompress_after_secs: u64,
    /// The zstd level blocks are recompressed at in the background (1–19,
    /// higher taken as 19); 0 or less: they stay as the clients compressed
    /// them.
    pub recompress_level: i32,
    /// Stores that hold a copy of every object, written before an upload
    /// is acknowledged.
    pub replica_stores: Vec<String>,
    /// Every block is read back and verified once in this many seconds.
    pub scrub_interval_secs: u64,
    /// Reverse proxies (IPs or CIDRs) whose `X-Forwarded-For` names the
    /// client; from any other peer the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Open connections at most; 0: three quarters of the open-file limit.
    pub max_connections: usize,
    /// A connection that has not sent a request's headers within this many
    /// seconds is closed.
    pub header_timeout_secs: u64,
    /// A request body that sends nothing for this many seconds fails.
    pub body_timeout_secs: u64,
    /// Seconds a PostgreSQL call (a commit included) may take before the
    /// request fails as unavailable (503); 0: no limit.
    pub db_timeout_secs: u64,
    /// On shutdown, seconds to keep serving while `/readyz` fails, so that
    /// a load balancer stops sending requests here first (0: stop at once).
    pub drain_secs: u64,
    /// Then, seconds requests under way have to finish before they are cut.
    pub shutdown_deadline_secs: u64,
    /// Password checks (Argon2, ~19 MiB each) running at once; 0: one per core.
    pub max_password_checks: usize,
    /// How long a login waits for a free password check before 429 (not a
    /// setting: tests on slow machines lengthen it).
    #[serde(skip, default = "password_check_wait")]
    pub password_check_wait: Duration,
    /// Long polls one user may hold at once.
    pub max_polls_per_user: usize,
    /// New long polls an instance lets in a second (0: no limit); the rest
    /// get 503 with a Retry-After spread over `poll_retry_window_secs`.
    pub max_new_polls_per_sec: u32,
    pub poll_retry_window_secs: u64,
    /// Unfinished resumable upload sessions one user may hold.
    pub max_upload_sessions_per_user: usize,
    /// When set, `GET /metrics` answers only requests that send it as a
    /// bearer token; unset, the metrics are open like `/healthz`.
    pub metrics_token: Option<String>,
    /// The time the workers expire things by (not a setting: tests move
    /// it forward instead of waiting out a TTL).
    #[serde(skip)]
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("tessera-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: None,
            store: None,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            master_key: None,
            pending_ttl_secs: 24 * 3600,
            trash_ttl_secs: 30 * 24 * 3600,
            gc_grace_secs: 3600,
            retention: crate::retention::Policy::default(),
            cold_store: None,
            cold_after_secs: 90 * 24 * 3600,
            recompress_after_secs: 3600,
            recompress_level: DEFAULT_RECOMPRESS_LEVEL,
            replica_stores: Vec::new(),
            scrub_interval_secs: 30 * 24 * 3600,
            trusted_proxies: Vec::new(),
            max_connections: 0,
            header_timeout_secs: 30,
            body_timeout_secs: 60,
            db_timeout_secs: crate::meta::CALL_TIMEOUT.as_secs(),
            drain_secs: 0,
            shutdown_deadline_secs: 30,
            max_password_checks: 0,
            password_check_wait: PASSWORD_CHECK_WAIT,
            max_polls_per_user: 100,
            max_new_polls_per_sec: 2000,
            poll_retry_window_secs: 10,
            max_upload_sessions_per_user: 1000,
            metrics_token: None,
            clock: Clock::system(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data folder {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreUrlError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl Config {
    fn data_dir_abs(&self) -> Result<PathBuf, ServeError> {
        let err = |e| ServeError::DataDir(self.data_dir.display().to_string(), e);
        crate::private::private_dir(&self.data_dir).map_err(err)?;
        std::fs::canonicalize(&self.data_dir).map_err(err)
    }

    /// Makes the default database and blocks folder private before they
    /// are opened: SQLite gives its WAL and shared-memory files the mode
    /// of the database file, and files in a 0700 folder are out of reach.
    fn prepare_private_files(&self) -> Result<(), ServeError> {
        if self.database.is_none() {
            let db = self.data_dir_abs()?.join("meta.db");
            let err = |e| ServeError::DataDir(db.display().to_string(), e);
            crate::private::private_file(&db).map_err(err)?;
            for suffix in ["-wal", "-shm"] {
                let mut side = db.clone().into_os_string();
                side.push(suffix);
                let side = PathBuf::from(side);
                let err = |e| ServeError::DataDir(side.display().to_string(), e);
                crate::private::tighten_if_present(&side).map_err(err)?;
            }
        }
        if self.store.is_none() {
            let dir = self.data_dir_abs()?.join("blocks");
            crate::private::private_dir(&dir)
                .map_err(|e| ServeError::DataDir(dir.display().to_string(), e))?;
        }
        Ok(())
    }

    pub fn database_url(&self) -> Result<String, ServeError> {
        match &self.database {
            Some(url) => Ok(url.clone()),
            None => Ok(format!(
                "sqlite://{}",
                self.data_dir_abs()?.join("meta.db").display()
            )),
        }
    }

    /// The object stores: the main one, the cold one and the replicas.
    pub fn tiers(&self) -> Result<Tiers, ServeError> {
        let cold = match &self.cold_store {
            Some(url) => Some(open_object_store(url)?),
            None => None,
        };
        let replicas = self
            .replica_stores
            .iter()
            .map(|url| open_object_store(url))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tiers::new(open_object_store(&self.store_url()?)?)
            .with_cold(cold)
            .with_replicas(replicas))
    }

    /// Checks that every configured object store answers (see
    /// [`probe_object_store`]), so wrong settings stop the start.
    pub async fn probe_stores(&self) -> Result<(), ServeError> {
        let mut urls = vec![self.store_url()?];
        urls.extend(self.cold_store.iter().cloned());
        urls.extend(self.replica_stores.iter().cloned());
        for url in urls {
            probe_object_store(&url).await?;
        }
        Ok(())
    }

    /// The master key file in the data folder (when the configuration
    /// gives no key).
    pub fn master_key_file(&self) -> Result<PathBuf, ServeError> {
        Ok(self.data_dir_abs()?.join("master.key"))
    }

    pub fn store_url(&self) -> Result<String, ServeError> {
        match &self.store {
            Some(url) => Ok(url.clone()),
            None => Ok(format!(
                "file://{}",
                self.data_dir_abs()?.join("blocks").display()
            )),
        }
    }
}

/// Opens an existing installation's metadata and block store without
/// serving it, for the admin tools (fsck). Nothing is created: a missing
/// master key or database is an error. The store announces nothing.
pub async fn open_existing(config: &Config) -> Result<(Meta, BlockStore), ServeError> {
    let needs_dir =
        config.database.is_none() || config.master_key.is_none() || config.store.is_none();
    if needs_dir && !config.data_dir.is_dir() {
        return Err(ServeError::Other(format!(
            "no data folder at {}: give the server's data folder (--data-dir) or its \
             configuration (--config)",
            config.data_dir.display()
        )));
    }
    if config.database.is_none() {
        let db = config.data_dir_abs()?.join("meta.db");
        if !db.is_file() {
            return Err(ServeError::Other(format!(
                "no Tessera database at {}: give the server's data folder (--data-dir), its \
                 configuration (--config) or its database (--database)",
                db.display()
            )));
        }
    }
    let meta = Meta::connect(&config.database_url()?, Publisher::silent()).await?;
    let ring = Arc::new(key_ring(config, &meta, false).await?);
    config.probe_stores().await?;
    let tiers = config.tiers()?;
    Ok((meta.clone(), BlockStore::new(tiers, ring, meta)))
}

/// The data keys, unwrapped with the configured master key or the key file
/// in the data folder (made on a new installation when `create`).
async fn key_ring(config: &Config, meta: &Meta, create: bool) -> Result<KeyRing, ServeError> {
    Ok(match &config.master_key {
        Some(hex) => {
            KeyRing::load(meta, &MasterKey::from_hex(hex, "from the configuration")?).await?
        }
        None => crate::blocks::keys::open_ring(meta, &config.master_key_file()?, create).await?,
    })
}

/// A server that is listening.
pub struct Running {
    pub addr: SocketAddr,
    /// Set when this start created the first user with a generated password.
    pub generated_admin_password: Option<String>,
    /// Set when `TESSERA_ADMIN_PASSWORD` was given but not applied (the
    /// server had accounts already, and the admin's password differs).
    pub admin_password_not_applied: bool,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    meta: Meta,
    workers: Runner,
    /// Ends once the hub shuts down, clearing this instance's presence.
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the server stops (after `shutdown`, or on an error).
    pub async fn wait(self) -> Result<(), ServeError> {
        let res = self.task.await;
        self.workers.shutdown(SHUTDOWN_DEADLINE).await;
        let _ = self.heartbeat.await;
        self.meta.close().await;
        res.map_err(|e| ServeError::Other(e.to_string()))?
            .map_err(|e| ServeError::Other(e.to_string()))
    }

    /// Stops accepting, lets requests in flight finish, then returns.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait().await
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn workers(&self) -> crate::workers::Workers {
        self.workers.workers()
    }

    pub fn shutdown_handle(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

/// Opens the stores, makes the first user if there is none, and listens.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let proxies = TrustedProxies::parse(&config.trusted_proxies)
        .map_err(|e| ServeError::Other(e.to_string()))?;
    if config.metrics_token.as_deref() == Some("") {
        return Err(ServeError::Other(
            "metrics_token is empty: give a token, or leave it unset to serve /metrics openly"
                .into(),
        ));
    }
    // Installed before anything records: opening the stores counts already.
    let metrics = crate::metrics::install();
    config.prepare_private_files()?;
    config.probe_stores().await?;
    // The hub comes first: the store publishes into it from its first
    // commit on (even the repairs made while opening).
    let hub = Arc::new(Hub::default());
    let database_url = config.database_url()?;
    let publisher = Publisher::for_database(hub.clone(), &database_url);
    let meta = Meta::connect(&database_url, publisher.clone())
        .await?
        .with_call_timeout(
            (config.db_timeout_secs > 0).then(|| Duration::from_secs(config.db_timeout_secs)),
        );
    publisher.attach(&meta);
    let ring = Arc::new(key_ring(&config, &meta, true).await?);
    let blocks = BlockStore::new(config.tiers()?, ring, meta.clone());

    let bootstrap = bootstrap_admin(&meta).await?;
    let admin_password_not_applied = bootstrap == AdminBootstrap::NotApplied;
    let generated_admin_password = match bootstrap {
        AdminBootstrap::Generated(pw) => Some(pw),
        _ => None,
    };
    let instance: Arc<str> = crate::instance::instance_id().into();
    let leases = Leases::new(meta.clone(), instance.clone());
    let runner = Runner::start(workers(&config, &meta, &blocks), Some(leases));

    let parts = Parts {
        meta: &meta,
        blocks: &blocks,
        hub: &hub,
        runner: &runner,
        instance: &instance,
    };
    let state = app_state(&config, proxies, parts, metrics);
    let heartbeat = crate::instance::spawn_heartbeat(
        meta.clone(),
        state.presence.clone(),
        instance.clone(),
        hub.shutdown_signal(),
    );
    let stop_workers = runner.workers();
    let bound = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener.local_addr().map(|addr| (listener, addr)),
        Err(e) => Err(e),
    };
    let (listener, addr) = match bound {
        Ok(bound) => bound,
        Err(e) => {
            hub.shut_down();
            runner.shutdown(SHUTDOWN_DEADLINE).await;
            let _ = heartbeat.await;
            return Err(ServeError::Bind(config.listen, e));
        }
    };
    let (tx, rx) = oneshot::channel::<()>();
    let conn_limits = conn_limits(&config);
    let drain = Duration::from_secs(config.drain_secs);
    let app = router(state);
    let task = tokio::spawn(crate::listen::serve(
        listener,
        app,
        conn_limits,
        async move {
            let _ = rx.await;
            // `/readyz` fails from here on, and waiting long polls answer
            // now with the back-off hint instead of holding shutdown.
            hub.shut_down();
            // Workers end their steps while requests in flight finish.
            stop_workers.stop();
            if !drain.is_zero() {
                tracing::info!(?drain, "draining: serving on while the balancer notices");
                tokio::time::sleep(drain).await;
            }
        },
    ));
    tracing::info!(
        %addr,
        %instance,
        backend = meta.backend_name(),
        max_connections = conn_limits.max_connections,
        "listening"
    );
    Ok(Running {
        addr,
        generated_admin_password,
        admin_password_not_applied,
        shutdown: Some(tx),
        task,
        meta,
        workers: runner,
        heartbeat,
    })
}

/// The running parts request handlers reach.
struct Parts<'a> {
    meta: &'a Meta,
    blocks: &'a BlockStore,
    hub: &'a Arc<Hub>,
    runner: &'a Runner,
    instance: &'a Arc<str>,
}

/// What every request handler shares.
fn app_state(
    config: &Config,
    proxies: TrustedProxies,
    parts: Parts<'_>,
    metrics: Option<&'static metrics_exporter_prometheus::PrometheusHandle>,
) -> AppState {
    let Parts {
        meta,
        blocks,
        hub,
        runner,
        instance,
    } = parts;
    AppState {
        meta: meta.clone(),
        blocks: blocks.clone(),
        limits: Limits {
            max_file_size: config.max_file_size,
            // Sessions end with the pending mark they set (workers/).
            upload_ttl: std::time::Duration::from_secs(config.pending_ttl_secs),
            trash_ttl: (config.trash_ttl_secs > 0)
                .then(|| std::time::Duration::from_secs(config.trash_ttl_secs)),
        },
        limiter: Arc::new(LoginLimiter::with_defaults(meta.clone())),
        password_checks: Arc::new(PasswordChecks::new(
            config.max_password_checks,
            config.password_check_wait,
        )),
        hash_checks: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
        delta_turns: Arc::new(crate::turns::Turns::per_core()),
        search_turns: Arc::new(crate::turns::Turns::new(4, 1)),
        clock: config.clock.clone(),
        proxies: Arc::new(proxies),
        hub: hub.clone(),
        presence: Arc::new(Presence::new(config.max_polls_per_user)),
        poll_admission: Arc::new(crate::notify::Admission::new(
            config.max_new_polls_per_sec,
            config.poll_retry_window_secs,
        )),
        uploads: crate::uploads::Uploads::new(
            meta.clone(),
            blocks.clone(),
            config.max_upload_sessions_per_user,
        ),
        running_hashes: Default::default(),
        workers: runner.workers(),
        instance: instance.clone(),
        metrics: crate::metrics::Scrape::new(config.metrics_token.as_deref(), metrics),
    }
}

fn conn_limits(config: &Config) -> ConnLimits {
    ConnLimits {
        max_connections: match config.max_connections {
            0 => default_max_connections(),
            n => n,
        },
        header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
        body_timeout: Duration::from_secs(config.body_timeout_secs.max(1)),
        shutdown_deadline: Duration::from_secs(config.shutdown_deadline_secs),
    }
}

/// The background workers `config` asks for.
fn workers(config: &Config, meta: &Meta, blocks: &BlockStore) -> Vec<Box<dyn Worker>> {
    let expiry = |what, secs| -> Box<dyn Worker> {
        Box::new(Expiry {
            what,
            meta: meta.clone(),
            clock: config.clock.clone(),
            ttl: Duration::from_secs(secs),
        })
    };
    let mut list = vec![
        expiry(Expired::Pending, config.pending_ttl_secs),
        expiry(Expired::Uploads, config.pending_ttl_secs),
    ];
    if config.trash_ttl_secs > 0 {
        list.push(expiry(Expired::Trash, config.trash_ttl_secs));
    }
    list.push(Box::new(Gc {
        meta: meta.clone(),
        blocks: blocks.clone(),
        clock: config.clock.clone(),
        grace: Duration::from_secs(config.gc_grace_secs),
        last_sweep_ms: None,
    }));
    list.push(Box::new(Scrub::new(
        meta.clone(),
        blocks.clone(),
        Duration::from_secs(config.scrub_interval_secs.max(1)),
    )));
    if blocks.has_cold() {
        list.push(Box::new(Cold {
            meta: meta.clone(),
            blocks: blocks.clone(),
            clock: config.clock.clone(),
            after: Duration::from_secs(config.cold_after_secs),
        }));
    }
    if config.recompress_level > 0 {
        list.push(Box::new(Recompress {
            meta: meta.clone(),
            blocks: blocks.clone(),
            clock: config.clock.clone(),
            after: Duration::from_secs(config.recompress_after_secs),
            level: config.recompress_level.clamp(1, MAX_RECOMPRESS_LEVEL),
        }));
    }
    list.push(Box::new(Retention {
        meta: meta.clone(),
        clock: config.clock.clone(),
        policy: config.retention,
        cursor: None,
    }));
    for worker in &list {
        crate::metrics::worker_known(worker.name());
    }
    list
}

/// Creates `admin` on an empty installation. The password comes from
/// TESSERA_ADMIN_PASSWORD, else is generated and returned to be shown once.
/// What starting the server did about the first account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminBootstrap {
    /// Users existed, and `TESSERA_ADMIN_PASSWORD` was unset or matched.
    Existing,
    /// The first user `admin` was made with the password given.
    Created,
    /// The first user `admin` was made with this generated password.
    Generated(String),
    /// Users existed and `TESSERA_ADMIN_PASSWORD` differs from the stored
    /// password: it was not applied.
    NotApplied,
}

async fn bootstrap_admin(meta: &Meta) -> Result<AdminBootstrap, ServeError> {
    let given = std::env::var("TESSERA_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    if meta.user_count().await? > 0 {
        let Some(given) = given else {
            return Ok(AdminBootstrap::Existing);
        };
        // The variable only seeds a new server: say so when it would have
        // changed something, rather than leave the admin to guess.
        let stored = meta.user_by_name("admin").await?.map(|u| u.password_hash);
        let same = tokio::task::spawn_blocking(move || {
            stored.is_some_and(|hash| crate::auth::verify_password(&given, &hash))
        })
        .await
        .map_err(|e| ServeError::Other(e.to_string()))?;
        if same {
            return Ok(AdminBootstrap::Existing);
        }
        tracing::warn!(
            "TESSERA_ADMIN_PASSWORD was not applied: it only sets the password of the first \
             account a new server makes, and this one has accounts already"
        );
        return Ok(AdminBootstrap::NotApplied);
    }
    let (password, generated) = match given {
        Some(p) => (p, false),
        None => (generate_password(), true),
    };
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| ServeError::Other(e.to_string()))?
        .map_err(|e| ServeError::Other(e.to_string()))?;
    match meta.create_user("admin", &hash).await {
        Ok(_) if generated => Ok(AdminBootstrap::Generated(password)),
        Ok(_) => Ok(AdminBootstrap::Created),
        // Another instance made it first.
        Err(MetaError::AlreadyExists(_)) => Ok(AdminBootstrap::Existing),
        Err(e) => Err(e.into()),
    }
}
