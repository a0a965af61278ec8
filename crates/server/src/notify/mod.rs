//! Wake-ups for long polls, and presence.
//!
//! Each namespace has a watch channel holding its latest journal sequence
//! number; the metadata store bumps it through [`Publisher`] (`publish.rs`)
//! after a change's transaction commits, and every poll waiting on that
//! namespace wakes. Waiting costs a task and a channel receiver, no CPU.
//! With several server instances on one PostgreSQL database the bump also
//! travels through LISTEN/NOTIFY into every instance's `Hub` (the bridge
//! in `publish.rs`).

pub mod admission;
pub mod presence;
pub mod publish;

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

pub use admission::Admission;
pub use presence::Presence;
pub use publish::{Publish, Publisher};

pub struct Hub {
    namespaces: Mutex<HashMap<i64, watch::Sender<i64>>>,
    shutdown: watch::Sender<bool>,
    /// The users whose sessions ended (a device revoked, a password
    /// changed, an account disabled): their held polls look again whether
    /// theirs still stands, so a signed-out device hears it at once, not
    /// at its timeout. Other users' polls are not woken.
    signed_out: tokio::sync::broadcast::Sender<i64>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            namespaces: Mutex::new(HashMap::new()),
            shutdown: watch::Sender::new(false),
            signed_out: tokio::sync::broadcast::Sender::new(256),
        }
    }
}

impl Hub {
    /// Announces that `ns`'s journal reached `seq`.
    pub fn publish(&self, ns: i64, seq: i64) {
        let Ok(mut map) = self.namespaces.lock() else {
            return;
        };
        let tx = map.entry(ns).or_insert_with(|| watch::Sender::new(0));
        tx.send_if_modified(|cur| {
            if seq > *cur {
                *cur = seq;
                true
            } else {
                false
            }
        });
        // Drop channels nobody listens to, so the map does not grow with
        // every namespace that ever changed.
        if map.len() > 10_000 {
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
    }

    pub fn subscribe(&self, ns: i64) -> Option<watch::Receiver<i64>> {
        let mut map = self.namespaces.lock().ok()?;
        Some(
            map.entry(ns)
                .or_insert_with(|| watch::Sender::new(0))
                .subscribe(),
        )
    }

    /// The namespaces someone waits on.
    pub fn watched(&self) -> Vec<i64> {
        let Ok(map) = self.namespaces.lock() else {
            return Vec::new();
        };
        map.iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(ns, _)| *ns)
            .collect()
    }

    /// Wakes every waiting poll so shutdown does not wait out their timeouts.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether the server is shutting down (or draining).
    pub fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Says that some of `user_id`'s sessions ended on this instance.
    pub fn sessions_ended(&self, user_id: i64) {
        // No poll listening is no error.
        let _ = self.signed_out.send(user_id);
    }

    pub fn sign_out_signal(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.signed_out.subscribe()
    }
}
