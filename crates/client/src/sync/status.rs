//! What a running sync is doing, written to `.tessera/status.json` so that
//! `tessera status` (another process) can show honest progress.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncStatus {
    /// `syncing` while a round runs, `idle` after it.
    pub state: String,
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// When the current round started, ms since the Unix epoch.
    pub started_ms: i64,
    /// When this status was written.
    pub updated_ms: i64,
    /// What the last round could not do, and why.
    pub stuck: Vec<String>,
}

impl SyncStatus {
    /// Bytes a second since the round started.
    pub fn rate(&self) -> f64 {
        let secs = (self.updated_ms - self.started_ms) as f64 / 1000.0;
        if secs <= 0.0 {
            0.0
        } else {
            self.bytes_done as f64 / secs
        }
    }

    /// Estimated time left at the current rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (rate > 0.0).then(|| {
            Duration::from_secs_f64(self.bytes_total.saturating_sub(self.bytes_done) as f64 / rate)
        })
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Publishes a round's progress: a ticker rewrites the file twice a
/// second (write-then-rename, so readers never see half a file), adding the
/// bytes the transfer in flight has moved so far.
pub struct StatusFile {
    path: PathBuf,
    status: Arc<Mutex<SyncStatus>>,
    /// Bytes moved by the transfer in flight; folded into `bytes_done` when
    /// it completes.
    live: Arc<AtomicU64>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

fn write_file(path: &Path, status: &Mutex<SyncStatus>, live: u64) {
    let Ok(mut snapshot) = status.lock().map(|s| s.clone()) else {
        return;
    };
    snapshot.bytes_done =
        (snapshot.bytes_done + live).min(snapshot.bytes_total.max(snapshot.bytes_done));
    snapshot.updated_ms = now_ms();
    let tmp = path.with_extension("tmp");
    let ok = serde_json::to_vec(&snapshot)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        tracing::debug!(error = %e, "cannot write the sync status file");
    }
}

impl StatusFile {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("status.json"),
            status: Arc::default(),
            live: Arc::default(),
            ticker: None,
        }
    }

    pub fn read(state_dir: &Path) -> Option<SyncStatus> {
        let text = std::fs::read_to_string(state_dir.join("status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// A counter the transfer in flight adds its bytes to.
    pub fn live(&self) -> Arc<AtomicU64> {
        self.live.clone()
    }

    pub fn start_round(&mut self, files_total: u64, bytes_total: u64) {
        if let Ok(mut s) = self.status.lock() {
            *s = SyncStatus {
                state: "syncing".into(),
                files_total,
                bytes_total,
                started_ms: now_ms(),
                ..SyncStatus::default()
            };
        }
        self.live.store(0, Ordering::Relaxed);
        write_file(&self.path, &self.status, 0);
        let (path, status, live) = (self.path.clone(), self.status.clone(), self.live.clone());
        if let Some(old) = self.ticker.replace(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                write_file(&path, &status, live.load(Ordering::Relaxed));
            }
        })) {
            old.abort();
        }
    }

    /// Records finished transfers.
    pub fn progress(&self, files: u64, bytes: u64) {
        self.live.store(0, Ordering::Relaxed);
        if let Ok(mut s) = self.status.lock() {
            s.files_done += files;
            s.bytes_done += bytes;
        }
    }

    pub fn end_round(&mut self, stuck: &[String]) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Ok(mut s) = self.status.lock() {
            s.state = "idle".into();
            s.stuck = stuck.to_vec();
        }
        write_file(&self.path, &self.status, 0);
    }
}

impl Drop for StatusFile {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}
