//! This server process among the others on one database: its name, and a
//! heartbeat that shares which devices hold a long poll here (so any
//! instance can answer `/presence` for all) and forgets what dead
//! instances and old login counts left behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::LOGIN_WINDOW;
use crate::meta::{Meta, now_ms};
use crate::notify::Presence;

/// How often an instance says it is alive and shares its presence changes.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// An instance not heard from for this long no longer counts as present.
pub const ALIVE_MS: i64 = 10_000;
/// An instance not heard from for this long is forgotten.
const FORGET_MS: i64 = 5 * 60_000;
/// Heartbeats between two clean-ups.
const CLEAN_EVERY: u32 = 30;

/// This instance's name: host, process and a random part, so that an
/// operator can tell which machine holds a worker's lease and a restart
/// is a new instance.
pub fn instance_id() -> String {
    let random: u32 = rand::random();
    format!(
        "{}:{}:{:06x}",
        host_name(),
        std::process::id(),
        random & 0xff_ffff
    )
}

#[cfg(unix)]
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(not(unix))]
fn host_name() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "host".into())
}

/// Runs the heartbeat until `stop`, then forgets this instance's rows.
pub fn spawn_heartbeat(
    meta: Meta,
    presence: Arc<Presence>,
    instance: Arc<str>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut beats: u32 = 0;
        let mut shared = HashMap::new();
        loop {
            beat(&meta, &presence, &instance, &mut shared).await;
            if beats.is_multiple_of(CLEAN_EVERY) {
                clean(&meta).await;
            }
            beats = beats.wrapping_add(1);
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => break,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
        if let Err(e) = meta.forget_instances(&instance, now_ms() - FORGET_MS).await {
            tracing::warn!(error = %e, "this instance's presence was not cleared on stopping");
        }
    })
}

/// Says this instance is alive and shares the devices whose poll count
/// differs from what it last shared (a device between two polls at a beat
/// is not written twice); those are noted again if the database cannot be
/// reached.
async fn beat(
    meta: &Meta,
    presence: &Presence,
    instance: &str,
    shared: &mut HashMap<(i64, String), u32>,
) {
    let changes: Vec<(i64, String, u32)> = presence
        .take_changes()
        .into_iter()
        .filter(|(user, device, n)| {
            shared.get(&(*user, device.clone())).copied().unwrap_or(0) != *n
        })
        .collect();
    let rows: Vec<(i64, String, i64)> = changes
        .iter()
        .map(|(user, device, n)| (*user, device.clone(), i64::from(*n)))
        .collect();
    match meta.sync_presence(instance, now_ms(), &rows).await {
        Ok(()) => {
            for (user, device, n) in changes {
                if n == 0 {
                    shared.remove(&(user, device));
                } else {
                    shared.insert((user, device), n);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "presence not shared with the other instances");
            presence.mark_changed(changes.into_iter().map(|(u, d, _)| (u, d)));
        }
    }
}

/// Forgets instances gone for minutes and login counts whose window ended.
async fn clean(meta: &Meta) {
    let now = now_ms();
    if let Err(e) = meta.forget_instances("", now - FORGET_MS).await {
        tracing::warn!(error = %e, "dead instances not forgotten");
    }
    let window = i64::try_from(LOGIN_WINDOW.as_millis()).unwrap_or(i64::MAX);
    if let Err(e) = meta.prune_login_attempts(now - 2 * window).await {
        tracing::warn!(error = %e, "old login counts not pruned");
    }
}

/// The devices of `user_id` holding long polls on any live instance.
pub async fn presence_everywhere(
    meta: &Meta,
    presence: &Presence,
    instance: &str,
    user_id: i64,
) -> Result<Vec<(String, u32)>, crate::meta::MetaError> {
    let mut all: std::collections::BTreeMap<String, u32> =
        presence.devices(user_id).into_iter().collect();
    for (device, n) in meta
        .presence_elsewhere(user_id, instance, now_ms() - ALIVE_MS)
        .await?
    {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let entry = all.entry(device).or_insert(0);
        *entry = entry.saturating_add(n);
    }
    Ok(all.into_iter().collect())
}
