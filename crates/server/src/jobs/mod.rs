//! Background work of the server. Each job is a loop that stops with the
//! server; retention and garbage collection will join here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::meta::{Meta, now_ms};
use crate::notify::Hub;

/// Runs `work` every `every` until the server shuts down.
fn spawn_every<F, Fut>(hub: &Hub, every: Duration, mut work: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut stop = hub.shutdown_signal();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            work().await;
        }
    })
}

/// Ends pending marks whose upload never finished, and upload sessions
/// idle as long, every `ttl / 2` (between 1 s and 1 min). The store wakes
/// the namespaces that changed.
pub fn spawn_pending_expiry(
    meta: Meta,
    hub: Arc<Hub>,
    ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    let every = (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    spawn_every(&hub, every, move || {
        let meta = meta.clone();
        async move {
            let cutoff = now_ms() - ttl.as_millis() as i64;
            // What the sessions stored stays unreferenced (collectable).
            if let Err(e) = meta.expire_uploads(cutoff).await {
                tracing::warn!(error = %e, "expiring upload sessions failed");
            }
            if let Err(e) = meta.expire_pending(cutoff).await {
                tracing::warn!(error = %e, "expiring pending uploads failed");
            }
        }
    })
}

/// Removes trash entries older than `ttl`, every `ttl / 10` (between 1 s
/// and 1 h). Nothing in the trash is visible in the tree, so no client needs
/// waking.
pub fn spawn_trash_expiry(meta: Meta, hub: Arc<Hub>, ttl: Duration) -> tokio::task::JoinHandle<()> {
    let every = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    spawn_every(&hub, every, move || {
        let meta = meta.clone();
        async move {
            let cutoff = now_ms() - ttl.as_millis() as i64;
            match meta.expire_trash(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired trash entries"),
                Err(e) => tracing::warn!(error = %e, "expiring the trash failed"),
            }
        }
    })
}
