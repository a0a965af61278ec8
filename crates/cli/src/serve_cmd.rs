//! `tessera serve` and `tessera admin`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tessera_server::Config;

#[derive(Args)]
pub struct ServeArgs {
    /// Where the database, blocks and master key live by default.
    #[arg(long, env = "TESSERA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "TESSERA_LISTEN")]
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
    /// Password checks running at once (0: one per core).
    #[arg(long, env = "TESSERA_MAX_PASSWORD_CHECKS")]
    max_password_checks: Option<usize>,
    /// Long polls one user may hold at once.
    #[arg(long, env = "TESSERA_MAX_POLLS_PER_USER")]
    max_polls_per_user: Option<usize>,
    /// Unfinished resumable uploads one user may hold.
    #[arg(long, env = "TESSERA_MAX_UPLOAD_SESSIONS_PER_USER")]
    max_upload_sessions_per_user: Option<usize>,
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
        if let Some(v) = self.max_password_checks {
            cfg.max_password_checks = v;
        }
        if let Some(v) = self.max_polls_per_user {
            cfg.max_polls_per_user = v;
        }
        if let Some(v) = self.max_upload_sessions_per_user {
            cfg.max_upload_sessions_per_user = v;
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
        println!("This password is shown only once. Log in with: tessera login --user admin");
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
        command: UserCommand,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Add {
        name: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, env = "TESSERA_DATA_DIR", default_value = "tessera-data")]
        data_dir: PathBuf,
        #[arg(long, env = "TESSERA_DATABASE")]
        database: Option<String>,
    },
}

pub async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    let AdminCommand::User {
        command:
            UserCommand::Add {
                name,
                password_stdin,
                data_dir,
                database,
            },
    } = command;
    if name.is_empty()
        || name.len() > 64
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        bail!("user names are 1 to 64 characters without spaces or control characters");
    }
    let password = read_password(password_stdin, "Password for the new user: ")?;
    if password.len() < 8 {
        bail!("the password must be at least 8 characters");
    }
    let cfg = Config {
        data_dir,
        database,
        ..Config::default()
    };
    let meta = tessera_server::meta::Meta::connect(&cfg.database_url()?).await?;
    let hash = tokio::task::spawn_blocking(move || tessera_server::auth::hash_password(&password))
        .await??;
    meta.create_user(&name, &hash).await?;
    meta.close().await;
    println!("Created user `{name}`");
    Ok(())
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
