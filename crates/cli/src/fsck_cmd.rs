//! `tessera admin fsck`: the consistency check, run on the server's
//! database and block store directly (beside a running server or not).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tessera_server::Config;
use tessera_server::fsck::{BadBlock, Report};

/// Where an installation is: its configuration file, or its data folder
/// (and database and store when they are not the defaults in it).
#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    /// The server's TOML configuration.
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// The server's data folder.
    #[arg(long, env = "TESSERA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The server's database, when not the one in its data folder.
    #[arg(long, env = "TESSERA_DATABASE")]
    database: Option<String>,
    /// The server's block store, when not the one in its data folder.
    #[arg(long, env = "TESSERA_STORE")]
    store: Option<String>,
}

impl InstallArgs {
    pub fn into_config(self) -> anyhow::Result<Config> {
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
        if self.database.is_some() {
            cfg.database = self.database;
        }
        if self.store.is_some() {
            cfg.store = self.store;
        }
        if let Ok(key) = std::env::var("TESSERA_MASTER_KEY") {
            cfg.master_key = Some(key);
        }
        Ok(cfg)
    }
}

/// Runs the check; fails (non-zero exit) when anything was wrong.
pub async fn fsck(install: InstallArgs, repair: bool, json: bool) -> anyhow::Result<()> {
    let config = install.into_config()?;
    let (meta, blocks) = tessera_server::open_existing(&config).await?;
    let report = tessera_server::fsck::run(&meta, &blocks, repair).await;
    meta.close().await;
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report, repair));
    }
    if report.clean() {
        return Ok(());
    }
    if repair && report.not_fixed.is_empty() {
        anyhow::bail!("problems were found and repaired; run fsck again to confirm");
    }
    anyhow::bail!("problems were found");
}

fn text(r: &Report, repair: bool) -> String {
    let mut out = format!(
        "checked {} blocks ({} bytes stored)\n",
        r.blocks_checked, r.bytes_checked
    );
    let bad = |out: &mut String, what: &str, list: &[BadBlock]| {
        if list.is_empty() {
            return;
        }
        out.push_str(&format!("{} {what}:\n", list.len()));
        for b in list {
            out.push_str(&format!(
                "  block {} ({}): {}{}\n",
                b.id,
                b.object.as_deref().unwrap_or("no object"),
                b.problem,
                if b.marked { " [marked damaged]" } else { "" }
            ));
            if b.used_by.is_empty() {
                out.push_str("    used by nothing\n");
            }
            for u in &b.used_by {
                let rev = u
                    .rev
                    .map_or_else(|| "upload session".to_owned(), |r| format!("rev {r}"));
                let trash = if u.in_trash { " (in the trash)" } else { "" };
                out.push_str(&format!("    {} {} {rev}{trash}\n", u.owner, u.path));
            }
        }
    };
    bad(&mut out, "damaged or missing blocks", &r.bad_blocks);
    bad(
        &mut out,
        "blocks named but not recorded",
        &r.unrecorded_blocks,
    );
    if !r.wrong_counts.is_empty() {
        out.push_str(&format!(
            "{} wrong reference counts:\n",
            r.wrong_counts.len()
        ));
        for c in &r.wrong_counts {
            out.push_str(&format!(
                "  block {}: recorded {}, used {}{}\n",
                c.id,
                c.recorded,
                c.actual,
                if c.fixed { " [fixed]" } else { "" }
            ));
        }
    }
    let u = &r.unnamed_objects;
    if u.count > 0 {
        out.push_str(&format!(
            "{} stored objects ({} bytes) no block names{}:\n",
            u.count,
            u.bytes,
            if repair {
                " [handed to collection: the gc worker deletes them]"
            } else {
                ""
            }
        ));
        for name in &u.sample {
            out.push_str(&format!("  {name}\n"));
        }
    }
    if u.recent > 0 {
        out.push_str(&format!(
            "{} recent objects not judged (a write may be under way)\n",
            u.recent
        ));
    }
    if !r.broken_sessions.is_empty() {
        out.push_str(&format!(
            "{} upload sessions name blocks that are not recorded:\n",
            r.broken_sessions.len()
        ));
        for s in &r.broken_sessions {
            out.push_str(&format!(
                "  {} {} (session {}){}\n",
                s.session.owner,
                s.session.path,
                s.session.id,
                if s.ended { " [ended]" } else { "" }
            ));
        }
    }
    for n in &r.not_fixed {
        out.push_str(&format!("not fixed: {n}\n"));
    }
    if r.clean() {
        out.push_str("no problems found\n");
    } else if !repair {
        out.push_str("run with --repair to fix what can be fixed\n");
    }
    out
}

/// `tessera admin rotate-master-key`: a new master key in the key file,
/// every data key re-wrapped under it (crash-safe; run it again after a
/// crash). `TESSERA_CRASH_AT` (`next-written` or `rewrapped`) ends the
/// process abruptly after that step, as a power cut would, for the tests
/// that prove a rotation cut short loses nothing.
pub async fn rotate_master_key(install: InstallArgs) -> anyhow::Result<()> {
    let config = install.into_config()?;
    if config.master_key.is_some() {
        anyhow::bail!(
            "the master key is given by the configuration (TESSERA_MASTER_KEY or master_key), \
             not by the key file: put a new key there yourself, or move the key into the data \
             folder's master.key (mode 600) and rotate that"
        );
    }
    let (meta, _) = tessera_server::open_existing(&config).await?;
    let path = config.master_key_file()?;
    let crash_at = std::env::var("TESSERA_CRASH_AT").ok();
    let rotated = tessera_server::blocks::keys::rotate(&meta, &path, |step| {
        use tessera_server::blocks::keys::RotationStep;
        let name = match step {
            RotationStep::NextWritten => "next-written",
            RotationStep::Rewrapped => "rewrapped",
        };
        if crash_at.as_deref() == Some(name) {
            std::process::abort();
        }
    })
    .await;
    meta.close().await;
    let n = rotated?;
    println!(
        "The master key in {} is new; {n} data key(s) are wrapped under it. The old key opens nothing now.",
        path.display()
    );
    Ok(())
}
