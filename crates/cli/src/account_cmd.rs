//! The signed-in account from the command line: change its password, list
//! its devices, sign one out.

use anyhow::bail;
use clap::{Args, Subcommand};
use tessera_client::Remote;
use tessera_proto::api::DeviceList;

use crate::client_cmd::print_json;
use crate::profile;
use crate::serve_cmd::read_password;

#[derive(Args)]
pub struct PasswdArgs {
    /// Read the current password, then the new one, one a line, from
    /// standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Sign out this device too (every other one always is).
    #[arg(long)]
    pub sign_out_here: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub command: Option<DevicesCommand>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum DevicesCommand {
    /// Sign a device out: its next request is refused, and a sync running
    /// there stops.
    Revoke {
        /// The device's id, from `tessera devices`.
        id: String,
    },
}

fn remote() -> anyhow::Result<Remote> {
    let p = profile::load()?;
    Ok(Remote::new(&p.server, Some(p.token.clone()))?)
}

pub async fn passwd(args: PasswdArgs) -> anyhow::Result<()> {
    let signed_in = profile::load()?;
    let remote = Remote::new(&signed_in.server, Some(signed_in.token.clone()))?;
    let current = read_password(args.password_stdin, "Current password: ")?;
    let new = read_password(args.password_stdin, "New password: ")?;
    if !args.password_stdin && read_password(false, "New password again: ")? != new {
        bail!("the two new passwords differ: nothing was changed");
    }
    let done = remote
        .change_password(&current, &new, args.sign_out_here)
        .await?;
    let others = match done.signed_out {
        0 => "no other device was signed in".to_owned(),
        1 => "1 device was signed out".to_owned(),
        n => format!("{n} devices were signed out"),
    };
    if args.sign_out_here {
        // Forgotten only if it is still the sign-in used here (not one
        // made meanwhile from another terminal).
        if profile::load().is_ok_and(|now| now.token == signed_in.token) {
            profile::remove()?;
        }
        println!("password changed; {others}, this one included: sign in again");
    } else {
        println!("password changed; {others}");
    }
    Ok(())
}

pub async fn devices(args: DevicesArgs) -> anyhow::Result<()> {
    let remote = remote()?;
    match args.command {
        Some(DevicesCommand::Revoke { id }) => {
            remote.revoke_device(&id).await?;
            println!("device {id} is signed out");
        }
        None => {
            let list = remote.devices().await?;
            if args.json {
                print_json(&list)?;
            } else {
                print_devices(&list);
            }
        }
    }
    Ok(())
}

fn print_devices(list: &DeviceList) {
    println!(
        "{:<16}  {:<24}  {:<16}  {:<8}  CLIENT",
        "ID", "NAME", "LAST SEEN", "SYNCING"
    );
    for d in &list.devices {
        let seen = d
            .last_seen_ms
            .map(crate::client_cmd::when)
            .unwrap_or_else(|| "-".into());
        let name = if d.current {
            format!("{} (this one)", d.name)
        } else {
            d.name.clone()
        };
        println!(
            "{:<16}  {:<24}  {:<16}  {:<8}  {}",
            d.id,
            name,
            seen,
            if d.polls > 0 { "yes" } else { "no" },
            d.client.as_deref().unwrap_or("-")
        );
    }
}
