//! `tessera admin user ...`: accounts, through the signed-in
//! administrator's session, or on the server's database directly with
//! `--data-dir` or `--database` (on the server machine, with or without
//! the server running; the way back in for a lost admin password).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use tessera_client::Remote;
use tessera_proto::api::{Account, AccountState};
use tessera_server::meta::Meta;

use crate::profile;
use crate::serve_cmd::read_password;

/// Where the accounts are: the server's data directly, when given.
#[derive(Args, Clone, Default)]
pub struct Direct {
    /// Work on the server's data folder directly (on the server machine;
    /// the server may be running) instead of through the signed-in
    /// administrator's session.
    #[arg(long, env = "TESSERA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Work on the server's database directly (a PostgreSQL URL, or
    /// sqlite:PATH) instead of through the signed-in administrator's session.
    #[arg(long, env = "TESSERA_DATABASE")]
    pub database: Option<String>,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// List the accounts: state, storage used, devices, last seen.
    List {
        #[command(flatten)]
        direct: Direct,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create an account.
    Add {
        /// The account's name.
        name: String,
        /// Read the password from standard input instead of asking.
        #[arg(long)]
        password_stdin: bool,
        /// Make the user an administrator (the first user always is one).
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        direct: Direct,
    },
    /// Stop an account from signing in and sign out its devices; its files
    /// and shares stay as they are.
    Disable {
        /// The account's name.
        name: String,
        #[command(flatten)]
        direct: Direct,
    },
    /// Let a disabled account sign in again.
    Enable {
        /// The account's name.
        name: String,
        #[command(flatten)]
        direct: Direct,
    },
    /// Delete an account: it can no longer sign in, and its files are kept
    /// for the server's trash period, restorable with `restore`, then
    /// purged.
    Delete {
        /// The account's name.
        name: String,
        /// Purge its files now instead; nothing can bring them back.
        #[arg(long)]
        now: bool,
        /// Do not ask before purging with --now.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        direct: Direct,
    },
    /// Bring back a deleted account whose files are not purged yet.
    Restore {
        /// The account's name.
        name: String,
        #[command(flatten)]
        direct: Direct,
    },
    /// Set an account's password (one who lost theirs, or a lost admin
    /// password with --data-dir on the server machine); its devices are
    /// signed out.
    ResetPassword {
        /// The account's name.
        name: String,
        /// Read the new password from standard input instead of asking.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        direct: Direct,
    },
}

/// The accounts, reached one of two ways.
enum Accounts {
    Remote(Remote),
    /// The store and its URL (without a password).
    Direct(Meta, String),
}

impl Accounts {
    async fn open(direct: Direct) -> anyhow::Result<Self> {
        if direct.data_dir.is_none() && direct.database.is_none() {
            let p = profile::load().map_err(|_| {
                anyhow::anyhow!(
                    "not logged in: log in as an administrator with `tessera login`, or on the \
                     server machine work on its data directly with --data-dir DIR"
                )
            })?;
            return Ok(Self::Remote(Remote::new(&p.server, Some(p.token))?));
        }
        let data_dir = direct
            .data_dir
            .unwrap_or_else(|| PathBuf::from("tessera-data"));
        let (meta, url) = crate::serve_cmd::open_database(data_dir, direct.database).await?;
        Ok(Self::Direct(meta, url))
    }

    async fn close(self) {
        if let Self::Direct(meta, _) = self {
            meta.close().await;
        }
    }

    async fn find(meta: &Meta, name: &str) -> anyhow::Result<Account> {
        meta.accounts()
            .await?
            .into_iter()
            .find(|a| a.username == name)
            .map(|a| a.view(None))
            .ok_or_else(|| anyhow::anyhow!("there is no user named {name}"))
    }

    async fn list(&self) -> anyhow::Result<Vec<Account>> {
        Ok(match self {
            Self::Remote(r) => r.users().await?.users,
            Self::Direct(meta, _) => meta
                .accounts()
                .await?
                .into_iter()
                .map(|a| a.view(None))
                .collect(),
        })
    }

    async fn add(&self, name: &str, password: String, admin: bool) -> anyhow::Result<Account> {
        tessera_server::api::check_username(name).map_err(anyhow::Error::msg)?;
        Ok(match self {
            Self::Remote(r) => r.add_user(name, &password, admin).await?,
            Self::Direct(meta, _) => {
                let hash = hash(password).await?;
                meta.create_user_as(name, &hash, admin).await?;
                Self::find(meta, name).await?
            }
        })
    }

    /// Disables or enables; how many devices were signed out.
    async fn set_disabled(&self, name: &str, disabled: bool) -> anyhow::Result<u64> {
        Ok(match (self, disabled) {
            (Self::Remote(r), true) => r.disable_user(name).await?.signed_out,
            (Self::Remote(r), false) => {
                r.enable_user(name).await?;
                0
            }
            (Self::Direct(meta, _), _) => meta.set_disabled(name, disabled).await?,
        })
    }

    /// The account as deleted, or none when purged now.
    async fn delete(&self, name: &str, now: bool) -> anyhow::Result<Option<Account>> {
        Ok(match self {
            Self::Remote(r) => r.delete_user(name, now).await?,
            Self::Direct(meta, _) => {
                meta.delete_account(name).await?;
                let account = Self::find(meta, name).await?;
                if now {
                    let id = meta
                        .accounts()
                        .await?
                        .into_iter()
                        .find(|a| a.username == name)
                        .map(|a| a.id)
                        .ok_or_else(|| anyhow::anyhow!("there is no user named {name}"))?;
                    if !meta.purge_account(id, i64::MAX).await? {
                        bail!("{name} was restored meanwhile: nothing was purged");
                    }
                    None
                } else {
                    Some(account)
                }
            }
        })
    }

    async fn restore(&self, name: &str) -> anyhow::Result<()> {
        match self {
            Self::Remote(r) => {
                r.restore_user(name).await?;
            }
            Self::Direct(meta, _) => meta.restore_account(name).await?,
        }
        Ok(())
    }

    async fn reset_password(&self, name: &str, password: String) -> anyhow::Result<u64> {
        Ok(match self {
            Self::Remote(r) => r.reset_password(name, &password).await?.signed_out,
            Self::Direct(meta, _) => {
                let hash = hash(password).await?;
                meta.reset_password(name, &hash).await?
            }
        })
    }
}

async fn hash(password: String) -> anyhow::Result<String> {
    Ok(
        tokio::task::spawn_blocking(move || tessera_server::auth::hash_password(&password))
            .await??,
    )
}

/// A new password, read and checked as the server checks it.
fn new_password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    let password = read_password(from_stdin, prompt)?;
    if password.chars().count() < 8 {
        bail!("the password must have at least 8 characters");
    }
    if !from_stdin && read_password(false, "Again: ")? != password {
        bail!("the two passwords differ: nothing was changed");
    }
    Ok(password)
}

pub async fn run(command: UserCommand) -> anyhow::Result<()> {
    use UserCommand::*;
    let direct = match &command {
        List { direct, .. }
        | Add { direct, .. }
        | Disable { direct, .. }
        | Enable { direct, .. }
        | Delete { direct, .. }
        | Restore { direct, .. }
        | ResetPassword { direct, .. } => direct.clone(),
    };
    // Asked before anything is opened or changed.
    if let Delete {
        name,
        now: true,
        yes: false,
        ..
    } = &command
    {
        confirm(
            &format!(
                "Delete {name} and purge all of their files now? Nothing can bring them back. \
             Type the name to confirm: "
            ),
            name,
        )?;
    }
    let accounts = Accounts::open(direct).await?;
    let done = act(&accounts, command).await;
    accounts.close().await;
    done
}

async fn act(accounts: &Accounts, command: UserCommand) -> anyhow::Result<()> {
    use UserCommand::*;
    match command {
        List { json, .. } => {
            let list = accounts.list().await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "users": list }))?
                );
            } else {
                print!("{}", table(&list));
            }
        }
        Add {
            name,
            password_stdin,
            admin,
            ..
        } => {
            let password = new_password(password_stdin, "Password for the new user: ")?;
            let made = accounts.add(&name, password, admin).await?;
            let what = if made.admin { "administrator" } else { "user" };
            match accounts {
                Accounts::Direct(_, url) => println!("Created {what} `{name}` in {url}"),
                Accounts::Remote(r) => println!("Created {what} `{name}` on {}", r.server()),
            }
        }
        Disable { name, .. } => {
            let n = accounts.set_disabled(&name, true).await?;
            println!(
                "Disabled {name}: they can no longer sign in; {} signed out. Their files stay.",
                devices(n)
            );
        }
        Enable { name, .. } => {
            accounts.set_disabled(&name, false).await?;
            println!("Enabled {name}: they can sign in again.");
        }
        Delete { name, now, .. } => match accounts.delete(&name, now).await? {
            None => println!("Deleted {name} and purged their files."),
            Some(a) => match a.purge_after_ms {
                Some(at) => println!(
                    "Deleted {name}: they can no longer sign in. Their files are kept until {} \
                     and can be brought back until then with `tessera admin user restore {name}`.",
                    when(at)
                ),
                None => println!(
                    "Deleted {name}: they can no longer sign in. Their files are kept until \
                     purged (`tessera admin user delete {name} --now`); bring them back with \
                     `tessera admin user restore {name}`."
                ),
            },
        },
        Restore { name, .. } => {
            accounts.restore(&name).await?;
            println!("Restored {name}: they can sign in again, with their files as they were.");
        }
        ResetPassword {
            name,
            password_stdin,
            ..
        } => {
            let password = new_password(password_stdin, &format!("New password for {name}: "))?;
            let n = accounts.reset_password(&name, password).await?;
            println!("Set {name}'s password; {} signed out.", devices(n));
        }
    }
    Ok(())
}

fn devices(n: u64) -> String {
    match n {
        1 => "1 device was".to_owned(),
        n => format!("{n} devices were"),
    }
}

use crate::client_cmd::when;

/// Asks for the name before something that cannot be undone.
fn confirm(question: &str, name: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("this cannot be undone: give --yes to confirm; nothing was changed");
    }
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != name {
        bail!("not confirmed: nothing was changed");
    }
    Ok(())
}

fn table(list: &[Account]) -> String {
    let mut out = format!(
        "{:<20} {:<9} {:>10} {:>10} {:>7}  {}\n",
        "NAME", "STATE", "USED", "QUOTA", "DEVICES", "LAST SEEN"
    );
    for a in list {
        let state = match a.state {
            AccountState::Active => "active",
            AccountState::Disabled => "disabled",
            AccountState::Deleted => "deleted",
            AccountState::Purging => "purging",
        };
        let name = if a.admin {
            format!("{} (admin)", a.name)
        } else {
            a.name.clone()
        };
        let size = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
        let seen = a
            .last_seen_ms
            .map(crate::client_cmd::when)
            .unwrap_or_else(|| "-".to_owned());
        out.push_str(&format!(
            "{name:<20} {state:<9} {:>10} {:>10} {:>7}  {seen}\n",
            size(a.used_bytes),
            a.quota_bytes.map_or("-".to_owned(), size),
            a.devices,
        ));
    }
    out
}
