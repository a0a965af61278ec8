//! Shared folders from the command line: share a folder of your own files
//! with another user (or change their role), list the shared folders
//! you have, take one back from its members, leave one shared with you.

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use tessera_client::Remote;
use tessera_proto::RemotePath;
use tessera_proto::api::{ShareInfo, ShareList, ShareRole};

use crate::client_cmd::print_json;
use crate::profile::{self, Profile};

/// What a member may do in a shared folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MemberRole {
    /// Reads and changes what is in it.
    Editor,
    /// Only reads.
    Viewer,
}

impl From<MemberRole> for ShareRole {
    fn from(role: MemberRole) -> Self {
        match role {
            MemberRole::Editor => ShareRole::Editor,
            MemberRole::Viewer => ShareRole::Viewer,
        }
    }
}

#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Any folder of your own can be shared, unless it is inside a shared folder or \
                  holds one. Remote paths start with `/`: a folder named \"list\" or \"help\" \
                  is shared as `/list` or `/help`."
)]
pub struct ShareArgs {
    /// The folder to share (/Team, /Work/2026).
    #[arg(required = true)]
    pub path: Option<String>,
    /// The user to share it with; sharing again with a member changes their role.
    #[arg(long, value_name = "USER", required = true)]
    pub with: Option<String>,
    /// What they may do: an editor reads and changes it, a viewer only reads.
    #[arg(long, value_enum, required = true)]
    pub role: Option<MemberRole>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<ShareCommand>,
}

#[derive(Subcommand)]
pub enum ShareCommand {
    /// List your shared folders: yours and those shared with you, with who has each.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct UnshareArgs {
    /// Your shared folder (as `tessera share list` shows it).
    pub path: String,
    /// Remove only this member; without it, everyone but you loses the folder.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Args)]
pub struct LeaveArgs {
    /// The folder shared with you (as `tessera share list` shows it).
    pub path: String,
}

/// The logged-in profile and a client for its server.
fn logged_in() -> anyhow::Result<(Profile, Remote)> {
    let p = profile::load()?;
    let remote = Remote::new(&p.server, Some(p.token.clone()))?;
    Ok((p, remote))
}

/// `a viewer`, `an editor`.
fn a(role: ShareRole) -> String {
    match role {
        ShareRole::Owner => "the owner".to_owned(),
        ShareRole::Editor => "an editor".to_owned(),
        ShareRole::Viewer => "a viewer".to_owned(),
    }
}

/// `owner: alice  members: bob (viewer), carol (editor)`.
fn who_has_it(s: &ShareInfo) -> String {
    let members: Vec<String> = s
        .members
        .iter()
        .filter(|m| m.role != ShareRole::Owner)
        .map(|m| format!("{} ({})", m.username, m.role.as_str()))
        .collect();
    let members = if members.is_empty() {
        "none".to_owned()
    } else {
        members.join(", ")
    };
    format!("owner: {}  members: {members}", s.owner)
}

/// The shared folder at `path` among `list`'s.
fn find<'a>(list: &'a ShareList, path: &str) -> anyhow::Result<&'a ShareInfo> {
    let want = RemotePath::parse(path).map_err(|e| anyhow!("{path}: {e}"))?;
    let mut inside = None;
    for s in &list.shares {
        let Ok(at) = RemotePath::parse(&s.path) else {
            continue;
        };
        if at == want {
            return Ok(s);
        }
        if want.starts_with(&at) {
            inside = Some(s);
        }
    }
    match inside {
        Some(s) => bail!(
            "{want} is inside the shared folder {}: name {} itself",
            s.path,
            s.path
        ),
        None => bail!("{want} is not a shared folder; `tessera share list` shows yours"),
    }
}

pub async fn share(args: ShareArgs) -> anyhow::Result<()> {
    match (args.command, args.path, args.with, args.role) {
        (Some(ShareCommand::List { json }), ..) => list(json).await,
        (None, Some(path), Some(with), Some(role)) => {
            share_with(&path, &with, role, args.json).await
        }
        _ => bail!("name the folder to share, --with whom and their --role"),
    }
}

async fn share_with(path: &str, with: &str, role: MemberRole, json: bool) -> anyhow::Result<()> {
    let (_, remote) = logged_in()?;
    let info = remote.share(path, with, role.into()).await?;
    if json {
        return print_json(&info);
    }
    let role = info
        .members
        .iter()
        .find(|m| m.username == with)
        .map_or_else(|| role.into(), |m| m.role);
    println!("{with} is now {} of {}", a(role), info.path);
    println!("{}  {}", info.path, who_has_it(&info));
    Ok(())
}

async fn list(json: bool) -> anyhow::Result<()> {
    let (_, remote) = logged_in()?;
    let list = remote.shares().await?;
    if json {
        return print_json(&list);
    }
    if list.shares.is_empty() {
        println!("no shared folders");
    }
    for s in &list.shares {
        println!("{}  you: {}  {}", s.path, s.role.as_str(), who_has_it(s));
    }
    Ok(())
}

pub async fn unshare(args: UnshareArgs) -> anyhow::Result<()> {
    let (_, remote) = logged_in()?;
    let list = remote.shares().await?;
    let s = find(&list, &args.path)?;
    if s.role != ShareRole::Owner {
        bail!(
            "{} is shared with you by {}: only they can change who has it; `tessera leave {}` \
             takes it out of your files",
            s.path,
            s.owner,
            s.path
        );
    }
    match args.user.as_deref() {
        Some(user) => {
            if !s.members.iter().any(|m| m.username == user) {
                bail!(
                    "{user} does not have {}; `tessera share list` shows who does",
                    s.path
                );
            }
            remote.remove_member(s.id, user).await?;
            println!("{user} no longer has {}", s.path);
        }
        None => {
            let others: Vec<&str> = s
                .members
                .iter()
                .filter(|m| m.role != ShareRole::Owner)
                .map(|m| m.username.as_str())
                .collect();
            remote.unshare(s.id).await?;
            if others.is_empty() {
                println!("{} is shared with no one else; it stays yours", s.path);
            } else {
                println!(
                    "{} is no longer shared: {} lost it; it stays in your files",
                    s.path,
                    others.join(", ")
                );
            }
        }
    }
    Ok(())
}

pub async fn leave(args: LeaveArgs) -> anyhow::Result<()> {
    let (me, remote) = logged_in()?;
    let list = remote.shares().await?;
    let s = find(&list, &args.path)?;
    if s.role == ShareRole::Owner {
        bail!(
            "you own {}: `tessera unshare {}` takes it from everyone else; it stays yours",
            s.path,
            s.path
        );
    }
    remote.remove_member(s.id, &me.username).await?;
    println!(
        "you left {} (shared by {}); it is no longer in your files",
        s.path, s.owner
    );
    Ok(())
}
