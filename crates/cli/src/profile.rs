//! The logged-in profile: server URL and device token, kept in
//! TESSERA_CONFIG_DIR, else the user's config folder, readable by the owner
//! only.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub server: String,
    pub username: String,
    pub device: String,
    pub token: String,
}

pub(crate) fn dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("TESSERA_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    match dirs::config_dir() {
        Some(d) => Ok(d.join("tessera")),
        None => bail!("no config folder: set TESSERA_CONFIG_DIR"),
    }
}

fn file() -> anyhow::Result<PathBuf> {
    Ok(dir()?.join("profile.json"))
}

pub fn load() -> anyhow::Result<Profile> {
    let path = file()?;
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow::anyhow!("not logged in: run `tessera login --server URL --user NAME`")
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is damaged: log in again", path.display()))
}

pub fn save(profile: &Profile) -> anyhow::Result<()> {
    let dir = dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = file()?;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(profile)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

pub fn remove() -> anyhow::Result<()> {
    match std::fs::remove_file(file()?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "device".to_owned())
}
