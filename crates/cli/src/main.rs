//! `tessera`: the server, the admin tool and the command-line client in one
//! binary.

mod account_cmd;
mod admin_cmd;
mod client_cmd;
mod copy_cmd;
mod fsck_cmd;
mod links;
mod local_cmd;
mod profile;
mod serve_cmd;
mod share_cmd;
mod sync_cmd;
mod users_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tessera", version, about = "Self-hosted file storage and sync")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Append the log to this file instead of writing it to standard error.
    #[arg(long, global = true, env = "TESSERA_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// How much to log: error, warn, info, debug or trace, or a filter such as
    /// info,tessera_server=debug (default: TESSERA_LOG, else info).
    #[arg(long, global = true)]
    log_level: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SQLite and a local folder unless told otherwise).
    Serve(Box<serve_cmd::ServeArgs>),
    /// Administer a server's database directly.
    Admin {
        #[command(subcommand)]
        command: serve_cmd::AdminCommand,
    },
    /// Log in to a server; the device token is kept in the config folder.
    Login {
        /// The server's URL (default: the one logged in to last, else http://127.0.0.1:8080).
        #[arg(long, env = "TESSERA_SERVER")]
        server: Option<String>,
        /// Your user name on the server.
        #[arg(long)]
        user: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Name of this device (default: the host name).
        #[arg(long)]
        device: Option<String>,
    },
    /// Revoke this device's token and forget it.
    Logout,
    /// Upload a local file (into REMOTE if it is a folder, as cp does), or a folder with -r.
    Put {
        /// The local file, or folder with -r.
        local: PathBuf,
        /// Where it goes: a file path, or an existing folder (or one ending in /) to put it into.
        remote: String,
        /// Copy a folder and everything in it.
        #[arg(short, long)]
        recursive: bool,
        /// Fail instead of overwriting if the remote file is not at this revision (0: must not exist).
        #[arg(long)]
        base_rev: Option<i64>,
    },
    /// Download a file (into LOCAL if it is a folder), or a folder with -r.
    Get {
        /// The file on the server, or folder with -r.
        remote: String,
        /// Where it goes: a file path, or an existing local folder to put it into.
        local: PathBuf,
        /// Copy a folder and everything in it.
        #[arg(short, long)]
        recursive: bool,
        /// Download this revision instead of the current one (see `tessera revisions`).
        #[arg(long)]
        rev: Option<i64>,
    },
    /// List a folder, or show one file's entry.
    Ls {
        /// The folder (or file) on the server.
        #[arg(default_value = "/")]
        remote: String,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Create a folder; its parent must exist unless -p is given.
    Mkdir {
        /// The folder to create.
        remote: String,
        /// Make missing parents too, and say nothing if the folder already exists.
        #[arg(short, long)]
        parents: bool,
    },
    /// Move or rename a file or folder (into TO if it is an existing folder, as mv does).
    Mv {
        /// What to move.
        from: String,
        /// The new path, or an existing folder to move it into.
        to: String,
        /// Replace a file already at TO; its old content stays as a revision.
        #[arg(long)]
        overwrite: bool,
    },
    /// Find files and folders whose name holds TEXT, in any case, across your files and those shared with you.
    Find {
        /// The text to look for in names.
        text: String,
        /// At most this many results (default 50, at most 200).
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a file or folder (to the trash).
    Rm {
        /// What to delete.
        remote: String,
    },
    /// Show how much storage this account uses, and its quota.
    Usage {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a file's revisions, or pin one so the retention schedule keeps it.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Revisions {
        /// The file on the server.
        #[arg(required = true)]
        remote: Option<String>,
        /// Print JSON (with full content hashes).
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<RevisionsCommand>,
    },
    /// Keep a local folder in two-way sync with your account.
    Sync {
        /// The local folder to keep in sync.
        dir: PathBuf,
        /// Sync until nothing is left to do, then exit (non-zero if something could not be synced).
        #[arg(long)]
        once: bool,
        /// Carry out a large deletion that sync paused (also while another `tessera sync` runs there).
        #[arg(long)]
        allow_mass_delete: bool,
        /// Sync a folder afresh whose sync state is gone (it was removed or moved on purpose).
        #[arg(long)]
        relink: bool,
        /// Send at most this fast, like 2MB/s (0: no limit); kept for the folder, see `tessera limits`.
        #[arg(long, value_name = "RATE")]
        limit_up: Option<String>,
        /// Receive at most this fast, like 10MB/s (0: no limit); kept for the folder.
        #[arg(long, value_name = "RATE")]
        limit_down: Option<String>,
        /// Keep only these server folders on this device (repeat for more); see `tessera selective`.
        #[arg(long, value_name = "/FOLDER")]
        only: Vec<String>,
    },
    /// Show or change a synced folder's bandwidth limits (a running sync follows at once).
    Limits {
        /// The synced folder.
        dir: PathBuf,
        /// Send at most this fast, like 2MB/s (0 or none: no limit).
        #[arg(long, value_name = "RATE")]
        up: Option<String>,
        /// Receive at most this fast, like 10MB/s (0 or none: no limit).
        #[arg(long, value_name = "RATE")]
        down: Option<String>,
    },
    /// Show or change which server folders this device keeps (selective sync).
    Selective(sync_cmd::SelectiveArgs),
    /// Show whether a synced folder is in sync and what is pending.
    Status {
        /// The synced folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Pause a synced folder's sync (a running sync finishes its round, then waits).
    Pause {
        /// The synced folder.
        dir: PathBuf,
    },
    /// Resume a paused folder's sync.
    Resume {
        /// The synced folder.
        dir: PathBuf,
    },
    /// Stop syncing a folder: its files stay here, and nothing changes on the server.
    Unlink {
        /// The synced folder.
        dir: PathBuf,
        /// Also when its local trash holds something (it goes with the sync state).
        #[arg(long)]
        yes: bool,
    },
    /// List the conflicted copies in a synced folder.
    Conflicts {
        /// The synced folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// List the trash, put things back, or remove them for good.
    Trash {
        #[command(subcommand)]
        command: Option<TrashCommand>,
        /// The local trash of this synced folder instead (what sync removed or replaced here; kept 30 days).
        #[arg(long, value_name = "DIR")]
        local: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make an old revision the current one (as a new revision).
    Restore {
        /// The file on the server.
        remote: String,
        /// The revision to bring back (see `tessera revisions`).
        #[arg(long)]
        rev: i64,
    },
    /// Links that let anyone who has them view a file or folder.
    Link {
        #[command(subcommand)]
        command: LinkCommand,
    },
    /// Share a folder with another user (or change their role), or list your shared folders.
    Share(share_cmd::ShareArgs),
    /// Take your shared folder from everyone else (it stays yours), or from one member.
    Unshare(share_cmd::UnshareArgs),
    /// Leave a folder shared with you: it is no longer in your files.
    Leave(share_cmd::LeaveArgs),
    /// Change your password; every other device of yours is signed out.
    Passwd(account_cmd::PasswdArgs),
    /// List your signed-in devices, or sign one out.
    Devices(account_cmd::DevicesArgs),
}

#[derive(Subcommand)]
enum LinkCommand {
    /// Make a link to a file or folder and print its address (shown only once).
    Create {
        /// The file or folder on the server.
        remote: String,
        /// When it stops working: a number of minutes, hours or days (30m, 12h, 7d).
        #[arg(long)]
        expires: Option<String>,
        /// Protect it with a password, read from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// A file request: visitors upload into the folder and see nothing in it.
        #[arg(long)]
        upload_only: bool,
        /// Print JSON (with the address).
        #[arg(long)]
        json: bool,
    },
    /// List your links.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a link by its id (from `tessera link list`).
    Revoke {
        /// The link's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum RevisionsCommand {
    /// Keep a revision whatever the retention schedule says.
    Pin {
        /// The file on the server.
        remote: String,
        /// The revision to keep.
        #[arg(long)]
        rev: i64,
    },
    /// Let the retention schedule decide about a revision again.
    Unpin {
        /// The file on the server.
        remote: String,
        /// The revision.
        #[arg(long)]
        rev: i64,
    },
}

#[derive(Subcommand)]
enum TrashCommand {
    /// Put a trashed file or folder back (where it was, or at --to).
    Restore {
        /// Its id from `tessera trash`, or the path it had (the latest deleted there).
        item: String,
        /// Put it here instead.
        #[arg(long)]
        to: Option<String>,
    },
    /// Remove one trashed item for good.
    Purge {
        /// Its id from `tessera trash`.
        id: String,
    },
    /// Remove everything in the trash for good (asks first).
    Empty {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// Transfers allocate and free buffers of up to 16 MiB at a high rate, on
/// many threads. glibc gives each thread its own arena and keeps freed
/// memory there, so the resident size drifts far above what is live (a
/// server streaming one file peaked above 200 MiB with ~60 MiB in use).
/// Two arenas keep it near the live size at the same speed.
/// `MALLOC_ARENA_MAX` in the environment still wins, for experiments.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists; mallopt only adjusts allocator parameters.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Logs with their time and fields, to standard error or `--log-file`.
fn start_logging(cli: &Cli) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match &cli.log_level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| {
            format!("--log-level {level}: {e}; give error, warn, info, debug or trace")
        })?,
        None => EnvFilter::try_from_env("TESSERA_LOG")
            .unwrap_or_else(|_| EnvFilter::new("info,notify=warn")),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match &cli.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            logs.with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .init();
        }
        // Colours only for a person at a terminal: escape codes in a log
        // file or a pipe are noise to whoever reads it next.
        None => logs
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if let Err(e) = start_logging(&cli) {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The status and code stay in the log for whoever debugs.
            tracing::debug!(error = %format!("{e:#}"), "command failed");
            match signed_out(&e) {
                Some(what_to_do) => eprintln!("error: {what_to_do}"),
                None => eprintln!("error: {}", for_people(&e)),
            }
            // A service manager must not restart a sync whose device was
            // signed out (the user unit's RestartPreventExitStatus).
            if matches!(
                e.downcast_ref::<tessera_client::sync::daemon::DaemonError>(),
                Some(tessera_client::sync::daemon::DaemonError::SignedOut { .. })
            ) {
                return std::process::ExitCode::from(SIGNED_OUT_EXIT);
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The exit status of a sync stopped because its device was signed out.
const SIGNED_OUT_EXIT: u8 = 3;

/// The error's chain as a person reads it: a server's refusal is its
/// message, without the HTTP status and code names.
fn for_people(e: &anyhow::Error) -> String {
    use tessera_client::ClientError;
    use tessera_client::sync::engine::SyncError;
    let said = |c: &ClientError| match c {
        ClientError::Api { message, .. } => Some(message.clone()),
        _ => None,
    };
    e.chain()
        .map(|cause| {
            cause
                .downcast_ref::<ClientError>()
                .and_then(said)
                .or_else(|| match cause.downcast_ref::<SyncError>() {
                    Some(SyncError::Remote(c)) => said(c),
                    _ => None,
                })
                .unwrap_or_else(|| cause.to_string())
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// A refused token (revoked, expired, or from a reset server) gets the
/// command that fixes it instead of the server's generic words.
fn signed_out(e: &anyhow::Error) -> Option<String> {
    use tessera_client::ClientError;
    use tessera_client::sync::engine::SyncError;
    let client =
        e.downcast_ref::<ClientError>()
            .or_else(|| match e.downcast_ref::<SyncError>() {
                Some(SyncError::Remote(c)) => Some(c),
                _ => None,
            })?;
    if client.code() != Some(tessera_proto::ErrorCode::Unauthorized) {
        return None;
    }
    let p = profile::load().ok()?;
    Some(format!(
        "{} no longer accepts this device's login (signed out elsewhere, or expired): run \
         `tessera login --user {}`",
        p.server, p.username
    ))
}

async fn run(command: Command) -> anyhow::Result<()> {
    use client_cmd as c;
    match command {
        Command::Serve(args) => serve_cmd::serve(*args).await,
        Command::Admin { command } => serve_cmd::admin(command).await,
        Command::Login {
            server,
            user,
            password_stdin,
            device,
        } => c::login(server, &user, password_stdin, device).await,
        Command::Logout => c::logout().await,
        Command::Put {
            local,
            remote,
            recursive,
            base_rev,
        } => match recursive {
            true => copy_cmd::put_tree(&local, &remote).await,
            false => c::put(&local, &remote, base_rev).await,
        },
        Command::Get {
            remote,
            local,
            recursive,
            rev,
        } => match recursive {
            true => copy_cmd::get_tree(&remote, &local).await,
            false => c::get(&remote, &local, rev).await,
        },
        Command::Ls { remote, json } => c::ls(&remote, json).await,
        Command::Mkdir { remote, parents } => c::mkdir(&remote, parents).await,
        Command::Mv {
            from,
            to,
            overwrite,
        } => c::mv(&from, &to, overwrite).await,
        Command::Rm { remote } => c::rm(&remote).await,
        Command::Find { text, limit, json } => c::find(&text, limit, json).await,
        Command::Revisions {
            remote,
            json,
            command,
        } => match (command, remote) {
            (Some(RevisionsCommand::Pin { remote, rev }), _) => c::pin(&remote, rev, true).await,
            (Some(RevisionsCommand::Unpin { remote, rev }), _) => c::pin(&remote, rev, false).await,
            (None, Some(remote)) => c::revisions(&remote, json).await,
            (None, None) => anyhow::bail!("name the file whose revisions to list"),
        },
        Command::Restore { remote, rev } => c::restore(&remote, rev).await,
        Command::Unlink { dir, yes } => local_cmd::unlink(&dir, yes),
        Command::Pause { dir } => sync_cmd::pause(&dir),
        Command::Resume { dir } => sync_cmd::resume(&dir),
        Command::Trash {
            command,
            json,
            local: Some(dir),
        } => match command {
            None => local_cmd::trash_list(&dir, json),
            Some(TrashCommand::Restore { item, to: None }) => local_cmd::trash_restore(&dir, &item),
            Some(TrashCommand::Restore { to: Some(_), .. }) => {
                anyhow::bail!("--to is for the server's trash: a local item goes back where it was")
            }
            Some(TrashCommand::Purge { .. } | TrashCommand::Empty { .. }) => anyhow::bail!(
                "the local trash empties itself after 30 days; to free the space now, remove {}",
                dir.join(tessera_client::sync::scan::STATE_DIR)
                    .join("trash")
                    .display()
            ),
        },
        Command::Trash {
            command,
            json,
            local: None,
        } => match command {
            None => c::trash_list(json).await,
            Some(TrashCommand::Restore { item, to }) => {
                c::trash_restore(&item, to.as_deref()).await
            }
            Some(TrashCommand::Purge { id }) => c::trash_purge(Some(&id)).await,
            Some(TrashCommand::Empty { yes }) => c::trash_empty(yes).await,
        },
        Command::Sync {
            dir,
            once,
            allow_mass_delete,
            relink,
            only,
            limit_up,
            limit_down,
        } => {
            sync_cmd::sync(sync_cmd::SyncArgs {
                dir: &dir,
                once,
                allow_mass_delete,
                relink,
                only,
                limit_up,
                limit_down,
            })
            .await
        }
        Command::Limits { dir, up, down } => sync_cmd::limits(&dir, up, down),
        Command::Selective(args) => sync_cmd::selective(args).await,
        Command::Status { dir } => sync_cmd::status(&dir).await,
        Command::Usage { json } => c::usage(json).await,
        Command::Link { command } => match command {
            LinkCommand::Create {
                remote,
                expires,
                password_stdin,
                upload_only,
                json,
            } => {
                c::link_create(
                    &remote,
                    expires.as_deref(),
                    password_stdin,
                    upload_only,
                    json,
                )
                .await
            }
            LinkCommand::List { json } => c::link_list(json).await,
            LinkCommand::Revoke { id } => c::link_revoke(&id).await,
        },
        Command::Share(args) => share_cmd::share(args).await,
        Command::Unshare(args) => share_cmd::unshare(args).await,
        Command::Leave(args) => share_cmd::leave(args).await,
        Command::Passwd(args) => account_cmd::passwd(args).await,
        Command::Devices(args) => account_cmd::devices(args).await,
        Command::Conflicts { dir } => sync_cmd::conflicts(&dir),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command says what it is for in `--help`.
    #[test]
    fn every_option_in_help_has_a_description() {
        fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            for arg in cmd.get_arguments() {
                let auto = matches!(arg.get_id().as_str(), "help" | "version");
                if !auto && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    out.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                undescribed(sub, &path, out);
            }
        }
        let mut out = Vec::new();
        undescribed(&super::Cli::command(), "", &mut out);
        assert!(out.is_empty(), "arguments without a description: {out:#?}");
    }
}
