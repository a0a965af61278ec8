//! The time the workers compute their cutoffs from.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::meta::now_ms;

/// The system clock, plus an offset that only tests move: a test advances
/// it past a TTL and runs the worker now instead of waiting out the TTL.
/// Clones share the offset, so the clock in a test's `Config` moves the
/// running server's.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// The time `ago` before now: a worker's cutoff.
    pub fn ago_ms(&self, ago: Duration) -> i64 {
        self.now_ms()
            .saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
    }

    /// Moves this clock (and its clones) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_move_together() {
        let clock = Clock::system();
        let copy = clock.clone();
        let before = copy.now_ms();
        clock.advance(Duration::from_secs(3600));
        assert!(copy.now_ms() >= before + 3_600_000);
    }
}
