//! Which devices of a user hold a long poll right now. A small registry
//! with RAII guards, so a dropped connection leaves it by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Presence {
    live: Mutex<HashMap<(i64, String), u32>>,
}

pub struct PresenceGuard {
    presence: Arc<Presence>,
    key: (i64, String),
}

impl Presence {
    pub fn enter(self: &Arc<Self>, user_id: i64, device: &str) -> PresenceGuard {
        let key = (user_id, device.to_owned());
        if let Ok(mut live) = self.live.lock() {
            *live.entry(key.clone()).or_insert(0) += 1;
        }
        PresenceGuard {
            presence: self.clone(),
            key,
        }
    }

    /// The devices of `user_id` online now, with their connection counts.
    pub fn devices(&self, user_id: i64) -> Vec<(String, u32)> {
        let Ok(live) = self.live.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(String, u32)> = live
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
        if let Ok(mut live) = self.presence.live.lock()
            && let Some(n) = live.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.key);
            }
        }
    }
}
