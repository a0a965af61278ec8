//! `tessera serve` and `tessera admin`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tessera_server::Config;

/// HOST:PORT, the host a name (`localhost`) or an address.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bad = || format!("{text} is not HOST:PORT; give one like 127.0.0.1:8080 or localhost:8080");
    let mut found: Vec<SocketAddr> = text.to_socket_addrs().map_err(|_| bad())?.collect();
    // IPv4 first: `localhost` then answers where clients try first.
    found.sort_by_key(|a| !a.is_ipv4());
    found.into_iter().next().ok_or_else(bad)
}

#[derive(Args)]
pub struct ServeArgs {
    /// Where the database, blocks and master key live by default.
    #[arg(long, env = "TESSERA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address and port to listen on: 127.0.0.1:8080, 0.0.0.0:8080 (every interface) or localhost:8080.
    #[arg(long, env = "TESSERA_LISTEN", value_parser = listen_address)]
    listen: Option<SocketAddr>,
    /// sqlite://PATH or postgres://USER@HOST/DB
    #[arg(long, env = "TESSERA_DATABASE")]
    database: Option<String>,
    /// file:///PATH, s3://BUCKET[/PREFIX] or memory://
    #[arg(long, env = "TESSERA_STORE")]
    store: Option<String>,
    /// Largest file accepted, in bytes.
    #[arg(long, env = "TESSERA_MAX_FILE_SIZE")]
    max_file_size: Option<u64>,
    /// Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client.
    #[arg(long, env = "TESSERA_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<String>>,
    /// Open connections at most (0: three quarters of the open-file limit).
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a connection may take to send a request's headers.
    #[arg(long, env = "TESSERA_HEADER_TIMEOUT_SECS")]
    header_timeout_secs: Option<u64>,
    /// Seconds a request body may send nothing before it fails.
    #[arg(long, env = "TESSERA_BODY_TIMEOUT_SECS")]
    body_timeout_secs: Option<u64>,
    /// Seconds a PostgreSQL call (a commit included) may take before the request gets 503 (0: no limit).
    #[arg(long, env = "TESSERA_DB_TIMEOUT_SECS")]
    db_timeout_secs: Option<u64>,
    /// On SIGTERM, seconds to serve on while /readyz fails, so a load balancer stops sending requests first.
    #[arg(long, env = "TESSERA_DRAIN_SECS")]
    drain_secs: Option<u64>,
    /// Then, seconds requests under way have to finish before their connections are closed.
    #[arg(long, env = "TESSERA_SHUTDOWN_DEADLINE_SECS")]
    shutdown_deadline_secs: Option<u64>,
    /// Password checks running at once (0: one per core).
    #[arg(long, env = "TESSERA_MAX_PASSWORD_CHECKS")]
    max_password_checks: Option<usize>,
    /// Long polls one user may hold at once.
    #[arg(long, env = "TESSERA_MAX_POLLS_PER_USER")]
    max_polls_per_user: Option<usize>,
    /// New long polls let in a second (0: no limit); the rest get 503 with a spread Retry-After.
    #[arg(long, env = "TESSERA_MAX_NEW_POLLS_PER_SEC")]
    max_new_polls_per_sec: Option<u32>,
    /// Seconds over which refused polls are told to come back.
    #[arg(long, env = "TESSERA_POLL_RETRY_WINDOW_SECS")]
    poll_retry_window_secs: Option<u64>,
    /// Unfinished resumable uploads one user may hold.
    #[arg(long, env = "TESSERA_MAX_UPLOAD_SESSIONS_PER_USER")]
    max_upload_sessions_per_user: Option<usize>,
    /// Seconds a block without references waits before it is deleted.
    #[arg(long, env = "TESSERA_GC_GRACE_SECS")]
    gc_grace_secs: Option<u64>,
    /// Every revision younger than this many seconds is kept ([retention] keep_all_secs).
    #[arg(long, env = "TESSERA_RETENTION_KEEP_ALL_SECS")]
    retention_keep_all_secs: Option<u64>,
    /// Then the last revision of each day, for this many days ([retention] daily_days).
    #[arg(long, env = "TESSERA_RETENTION_DAILY_DAYS")]
    retention_daily_days: Option<u32>,
    /// Then the last of each week, for this many weeks ([retention] weekly_weeks).
    #[arg(long, env = "TESSERA_RETENTION_WEEKLY_WEEKS")]
    retention_weekly_weeks: Option<u32>,
    /// At most this many revisions per file, 0 for no limit ([retention] max_revisions).
    #[arg(long, env = "TESSERA_RETENTION_MAX_REVISIONS")]
    retention_max_revisions: Option<u32>,
    /// Where blocks of long-untouched files move: file:///PATH or s3://BUCKET[/PREFIX].
    #[arg(long, env = "TESSERA_COLD_STORE")]
    cold_store: Option<String>,
    /// Blocks used only by files untouched this many seconds move to the cold store.
    #[arg(long, env = "TESSERA_COLD_AFTER_SECS")]
    cold_after_secs: Option<u64>,
    /// Blocks stored this many seconds are recompressed in the background at --recompress-level.
    #[arg(long, env = "TESSERA_RECOMPRESS_AFTER_SECS")]
    recompress_after_secs: Option<u64>,
    /// The zstd level (1-19) blocks are recompressed at in the background; 0 turns that off.
    #[arg(long, env = "TESSERA_RECOMPRESS_LEVEL")]
    recompress_level: Option<i32>,
    /// Stores holding a copy of every block, written before an upload is acknowledged (comma-separated URLs).
    #[arg(long, env = "TESSERA_REPLICA_STORES", value_delimiter = ',')]
    replica_stores: Option<Vec<String>>,
    /// Every block is read back and verified once in this many seconds.
    #[arg(long, env = "TESSERA_SCRUB_INTERVAL_SECS")]
    scrub_interval_secs: Option<u64>,
    /// Bearer token a scrape of /metrics must send (unset: /metrics is open).
    /// On a shared machine prefer the environment variable: other users see flags.
    #[arg(long, env = "TESSERA_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// A TOML file with the same keys (data_dir, listen, database, store, max_file_size,
    /// master_key, trusted_proxies, max_connections, ...; see the README).
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(v) = self.data_dir {
            cfg.data_dir = v;
        }
        if let Some(v) = self.listen {
            cfg.listen = v;
        }
        if self.database.is_some() {
            cfg.database = self.database;
        }
        if self.store.is_some() {
            cfg.store = self.store;
        }
        if let Some(v) = self.max_file_size {
            cfg.max_file_size = v;
        }
        if let Some(v) = self.trusted_proxies {
            cfg.trusted_proxies = v.into_iter().filter(|p| !p.trim().is_empty()).collect();
        }
        if let Some(v) = self.max_connections {
            cfg.max_connections = v;
        }
        if let Some(v) = self.header_timeout_secs {
            cfg.header_timeout_secs = v;
        }
        if let Some(v) = self.body_timeout_secs {
            cfg.body_timeout_secs = v;
        }
        if let Some(v) = self.db_timeout_secs {
            cfg.db_timeout_secs = v;
        }
        if let Some(v) = self.drain_secs {
            cfg.drain_secs = v;
        }
        if let Some(v) = self.shutdown_deadline_secs {
            cfg.shutdown_deadline_secs = v;
        }
        if let Some(v) = self.max_password_checks {
            cfg.max_password_checks = v;
        }
        if let Some(v) = self.max_polls_per_user {
            cfg.max_polls_per_user = v;
        }
        if let Some(v) = self.max_new_polls_per_sec {
            cfg.max_new_polls_per_sec = v;
        }
        if let Some(v) = self.poll_retry_window_secs {
            cfg.poll_retry_window_secs = v;
        }
        if let Some(v) = self.max_upload_sessions_per_user {
            cfg.max_upload_sessions_per_user = v;
        }
        if let Some(v) = self.gc_grace_secs {
            cfg.gc_grace_secs = v;
        }
        if let Some(v) = self.retention_keep_all_secs {
            cfg.retention.keep_all_secs = v;
        }
        if let Some(v) = self.retention_daily_days {
            cfg.retention.daily_days = v;
        }
        if let Some(v) = self.retention_weekly_weeks {
            cfg.retention.weekly_weeks = v;
        }
        if let Some(v) = self.retention_max_revisions {
            cfg.retention.max_revisions = v;
        }
        if self.cold_store.is_some() {
            cfg.cold_store = self.cold_store;
        }
        if let Some(v) = self.cold_after_secs {
            cfg.cold_after_secs = v;
        }
        if let Some(v) = self.recompress_after_secs {
            cfg.recompress_after_secs = v;
        }
        if let Some(v) = self.recompress_level {
            cfg.recompress_level = v;
        }
        if let Some(v) = self.replica_stores {
            cfg.replica_stores = v.into_iter().filter(|s| !s.trim().is_empty()).collect();
        }
        if let Some(v) = self.scrub_interval_secs {
            cfg.scrub_interval_secs = v;
        }
        if self.metrics_token.is_some() {
            cfg.metrics_token = self.metrics_token;
        }
        if let Ok(key) = std::env::var("TESSERA_MASTER_KEY") {
            cfg.master_key = Some(key);
        }
        Ok(cfg)
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let mut running = tessera_server::start(config).await?;
    if let Some(pw) = &running.generated_admin_password {
        println!("Created user `admin` with password: {pw}");
        println!(
            "This password is shown only once. Log in with: tessera login --server {} --user admin",
            local_url(running.addr)
        );
    }
    if running.admin_password_not_applied {
        println!(
            "TESSERA_ADMIN_PASSWORD was not applied: it sets the password of the first account \
             of a new server only, and this server has accounts. The admin keeps their \
             password; change it with `tessera passwd` while signed in as admin."
        );
    }
    println!("Tessera is listening on http://{}", running.addr);
    let stop = running.shutdown_handle();
    tokio::select! {
        res = shutdown_signal() => {
            res?;
            tracing::info!("shutting down");
            if let Some(stop) = stop {
                let _ = stop.send(());
            }
            running.wait().await?;
        }
    }
    Ok(())
}

/// The URL a client on this computer reaches the server at (a wildcard
/// listen address is no address to connect to).
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Manage users.
    User {
        #[command(subcommand)]
        command: crate::users_cmd::UserCommand,
    },
    /// Show the server's background workers, or run one now (as the logged-in administrator).
    Workers {
        #[command(subcommand)]
        command: Option<crate::admin_cmd::WorkersCommand>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Show or set a user's storage quota (as the logged-in administrator).
    Quota {
        #[command(subcommand)]
        command: crate::admin_cmd::QuotaCommand,
    },
    /// Check the database and the block store (it may run beside the server); non-zero exit on problems.
    Fsck {
        #[command(flatten)]
        install: crate::fsck_cmd::InstallArgs,
        /// Fix what can be fixed (counts, orphans to collection, damaged marks, broken sessions).
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the master key file's key and re-wrap every data key under it (crash-safe: run it again after a crash).
    RotateMasterKey {
        #[command(flatten)]
        install: crate::fsck_cmd::InstallArgs,
    },
}

pub async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::User { command } => crate::users_cmd::run(command).await,
        AdminCommand::Workers { command, json } => crate::admin_cmd::workers(command, json).await,
        AdminCommand::Quota { command } => crate::admin_cmd::quota(command).await,
        AdminCommand::Fsck {
            install,
            repair,
            json,
        } => crate::fsck_cmd::fsck(install, repair, json).await,
        AdminCommand::RotateMasterKey { install } => {
            crate::fsck_cmd::rotate_master_key(install).await
        }
    }
}

/// The server's metadata store, opened directly (`tessera admin user
/// ... --data-dir`), and its URL. Refuses a SQLite file that is not there:
/// connecting would create an empty database no server reads.
pub async fn open_database(
    data_dir: PathBuf,
    database: Option<String>,
) -> anyhow::Result<(tessera_server::meta::Meta, String)> {
    let sqlite = match &database {
        None => Some(data_dir.join(SQLITE_FILE)),
        Some(url) => sqlite_file(url),
    };
    if let Some(path) = sqlite
        && !path.is_file()
    {
        bail!(
            "no Tessera database at {}: give the server's data folder with --data-dir (or its \
             database with --database); nothing was created",
            path.display()
        );
    }
    let cfg = Config {
        data_dir,
        database,
        ..Config::default()
    };
    let url = cfg.database_url()?;
    let meta =
        tessera_server::meta::Meta::connect(&url, tessera_server::notify::Publisher::silent())
            .await?;
    Ok((meta, without_password(&url)))
}

/// The server's SQLite database inside its data folder (`Config::database_url`).
const SQLITE_FILE: &str = "meta.db";

/// The file a `sqlite:` URL names, if it is one.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// `url` without the password it may carry, for printing.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or(user);
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

pub fn read_password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let pw = line.trim_end_matches(['\n', '\r']).to_owned();
        if pw.is_empty() {
            bail!("no password on standard input");
        }
        Ok(pw)
    } else {
        Ok(rpassword::prompt_password(prompt)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_printed_without_passwords() {
        assert_eq!(
            without_password("postgres://tessera:s3cret@db.lan:5432/tessera"),
            "postgres://tessera@db.lan:5432/tessera"
        );
        assert_eq!(
            without_password("postgres://tessera@db.lan/tessera"),
            "postgres://tessera@db.lan/tessera"
        );
        assert_eq!(
            without_password("sqlite:///srv/tessera/meta.db"),
            "sqlite:///srv/tessera/meta.db"
        );
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite:///srv/t/meta.db?mode=rwc"),
            Some(PathBuf::from("/srv/t/meta.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:meta.db"),
            Some(PathBuf::from("meta.db"))
        );
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn the_banner_gives_an_address_to_connect_to() {
        assert_eq!(
            local_url("0.0.0.0:9000".parse().unwrap()),
            "http://127.0.0.1:9000"
        );
        assert_eq!(local_url("[::]:9000".parse().unwrap()), "http://[::1]:9000");
        assert_eq!(
            local_url("192.168.1.5:8080".parse().unwrap()),
            "http://192.168.1.5:8080"
        );
    }
}
