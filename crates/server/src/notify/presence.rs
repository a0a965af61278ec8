//! Which devices of a user hold a long poll right now. A small registry
//! with RAII guards, so a dropped connection leaves it by itself. It also
//! caps the polls one user holds on this instance: each is an open
//! connection and a task here, and one account could otherwise hold any
//! number of them. The devices whose count changed are noted, so that
//! `instance.rs` can share only those with the other instances.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub struct Presence {
    live: Mutex<Live>,
    max_per_user: usize,
}

#[derive(Default)]
struct Live {
    devices: HashMap<(i64, String), u32>,
    per_user: HashMap<i64, usize>,
    /// Devices whose count changed since [`Presence::take_changes`].
    changed: HashSet<(i64, String)>,
}

pub struct PresenceGuard {
    presence: Arc<Presence>,
    key: (i64, String),
}

/// The user already holds as many polls as allowed.
#[derive(Debug, thiserror::Error)]
#[error(
    "this account already holds {0} long polls, the most allowed at once: close some clients or tabs"
)]
pub struct TooManyPolls(pub usize);

impl Default for Presence {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl Presence {
    pub fn new(max_per_user: usize) -> Self {
        Self {
            live: Mutex::default(),
            max_per_user,
        }
    }

    pub fn enter(
        self: &Arc<Self>,
        user_id: i64,
        device: &str,
    ) -> Result<PresenceGuard, TooManyPolls> {
        let key = (user_id, device.to_owned());
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let held = live.per_user.entry(user_id).or_insert(0);
        if *held >= self.max_per_user {
            return Err(TooManyPolls(self.max_per_user));
        }
        *held += 1;
        *live.devices.entry(key.clone()).or_insert(0) += 1;
        live.changed.insert(key.clone());
        Ok(PresenceGuard {
            presence: self.clone(),
            key,
        })
    }

    /// The devices whose poll count changed since the last call, with
    /// their counts now (0: gone).
    pub fn take_changes(&self) -> Vec<(i64, String, u32)> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let changed = std::mem::take(&mut live.changed);
        changed
            .into_iter()
            .map(|key| {
                let n = live.devices.get(&key).copied().unwrap_or(0);
                (key.0, key.1, n)
            })
            .collect()
    }

    /// Notes `keys` as changed again (their sharing failed).
    pub fn mark_changed(&self, keys: impl IntoIterator<Item = (i64, String)>) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.changed.extend(keys);
    }

    /// Polls held on this instance.
    pub fn held(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.per_user.values().sum()
    }

    /// The devices of `user_id` online here now, with their connection counts.
    pub fn devices(&self, user_id: i64) -> Vec<(String, u32)> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, u32)> = live
            .devices
            .iter()
            .filter(|((u, _), _)| *u == user_id)
            .map(|((_, d), n)| (d.clone(), *n))
            .collect();
        out.sort();
        out
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let mut live = self.presence.live.lock().unwrap_or_else(|e| e.into_inner());
        live.changed.insert(self.key.clone());
        if let Some(n) = live.devices.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                live.devices.remove(&self.key);
            }
        }
        let user = self.key.0;
        if let Some(n) = live.per_user.get_mut(&user) {
            *n -= 1;
            if *n == 0 {
                live.per_user.remove(&user);
            }
        }
    }
}
