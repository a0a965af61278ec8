//! Bandwidth limits, up and down (`tessera sync --limit-up 2MB/s
//! --limit-down 10MB/s`), for everything this process sends or receives.
//!
//! Each direction is a schedule: a request of `n` bytes may start once the
//! ones before it have had their time at the rate (`n / rate` each). Bytes
//! are counted as they travel (compressed blocks as compressed): a request
//! body before it is sent, an answer by its length before it is read, so
//! TCP holds the sender back meanwhile. Bursts are a request long; over a
//! few requests the rate is the limit. Limits can change at any time (a
//! running sync reads them again as soon as its settings file changes),
//! and requests waiting their turn then book again under the new limit.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Bytes a second, up and down; `None` is no limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<u64>,
}

struct Lane {
    rate: Option<u64>,
    /// When the next request may start.
    free_at: Option<Instant>,
    /// Counts rate changes: a request waiting its turn under an old rate
    /// books again under the new one.
    generation: u64,
}

impl Lane {
    const fn new() -> Self {
        Self {
            rate: None,
            free_at: None,
            generation: 0,
        }
    }

    /// When a request of `n` bytes may start, booking its time.
    fn book(&mut self, n: u64) -> Option<Instant> {
        let rate = self.rate.filter(|r| *r > 0)?;
        let now = Instant::now();
        let start = self.free_at.map_or(now, |t| t.max(now));
        self.free_at = Some(start + Duration::from_secs_f64(n as f64 / rate as f64));
        Some(start)
    }
}

static UP: Mutex<Lane> = Mutex::new(Lane::new());
static DOWN: Mutex<Lane> = Mutex::new(Lane::new());

/// Sets this process's limits.
pub fn set(limits: Limits) {
    for (lane, rate) in [(&UP, limits.up), (&DOWN, limits.down)] {
        let mut lane = lane.lock().unwrap_or_else(|e| e.into_inner());
        if lane.rate != rate {
            lane.rate = rate;
            // A new rate starts now, not after what the old one booked.
            lane.free_at = None;
            lane.generation += 1;
        }
    }
}

pub fn current() -> Limits {
    let rate = |lane: &Mutex<Lane>| lane.lock().unwrap_or_else(|e| e.into_inner()).rate;
    Limits {
        up: rate(&UP),
        down: rate(&DOWN),
    }
}

/// How often a request waiting its turn looks for a changed rate.
const RECHECK: Duration = Duration::from_millis(200);
/// Less than this, a timer is not worth setting.
const TICK: Duration = Duration::from_millis(2);

async fn wait(lane: &Mutex<Lane>, n: u64) {
    let book = || {
        let mut lane = lane.lock().unwrap_or_else(|e| e.into_inner());
        (lane.book(n), lane.generation)
    };
    let (mut start, mut generation) = book();
    while let Some(at) = start {
        // A turn due within a timer's tick is taken now: the schedule
        // keeps what it was owed, so later turns wait it out, and small
        // pieces at a high rate are not held to one a tick.
        if at <= Instant::now() + TICK {
            return;
        }
        tokio::time::sleep_until(at.min(Instant::now() + RECHECK)).await;
        let now = lane.lock().unwrap_or_else(|e| e.into_inner()).generation;
        if now != generation {
            // The limit changed (`tessera limits` while this waited): its
            // turn under the new one, which may be at once.
            (start, generation) = book();
        }
    }
}

/// Waits until `n` bytes may be sent.
pub async fn up(n: u64) {
    wait(&UP, n).await;
}

/// Waits until `n` bytes may be received.
pub async fn down(n: u64) {
    wait(&DOWN, n).await;
}

/// A synced folder's limits, kept in its sync state (`tessera sync
/// --limit-up`, `tessera limits`): read again by a running sync whenever
/// the file changes.
pub const LIMITS_FILE: &str = "limits";

/// The limits saved in `state_dir`; none when there are none (or they
/// cannot be read: a sync is never stopped by its speed setting).
pub fn load(state_dir: &std::path::Path) -> Limits {
    std::fs::read_to_string(state_dir.join(LIMITS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Saves `limits` in `state_dir` (write, fsync, rename).
pub fn save(state_dir: &std::path::Path, limits: Limits) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = state_dir.join(format!("{LIMITS_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(
        serde_json::to_string(&limits)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(tmp, state_dir.join(LIMITS_FILE))
}

/// The slowest rate accepted, in bytes a second.
const MIN_RATE: u64 = 10_000;

/// `2MB/s`, `500KiB/s`, `10MB` (a second implied), or `0`/`none` for no
/// limit, as bytes a second.
pub fn parse(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") || t == "0" {
        return Ok(None);
    }
    let size = t.strip_suffix("/s").unwrap_or(t);
    let bad = || format!("{text}: give a rate like 2MB/s or 500KiB/s (0 or none: no limit)");
    let bytes = parse_size(size).ok_or_else(bad)?;
    // Slower than this, a request of one block would outlast the server's
    // patience: say so rather than stall.
    if bytes < MIN_RATE {
        return Err(format!(
            "{text}: the slowest limit is 10KB/s (0 or none: no limit)"
        ));
    }
    Ok(Some(bytes))
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * unit;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_as_people_write_them() {
        assert_eq!(parse("2MB/s"), Ok(Some(2_000_000)));
        assert_eq!(parse("500KiB/s"), Ok(Some(512_000)));
        assert_eq!(parse("1.5mb"), Ok(Some(1_500_000)));
        assert_eq!(parse("none"), Ok(None));
        assert_eq!(parse("0"), Ok(None));
        assert!(parse("fast").is_err());
        assert!(parse("-1MB/s").is_err());
        assert!(parse("1b/s").is_err(), "too slow to finish a block");
        assert!(parse("0.5").is_err(), "not a rate of nothing");
    }

    #[test]
    fn requests_are_spaced_by_their_size_at_the_rate() {
        let mut lane = Lane::new();
        assert_eq!(lane.book(1_000), None, "no limit, no wait");
        lane.rate = Some(1_000);
        let first = lane.book(500).unwrap();
        let second = lane.book(500).unwrap();
        let third = lane.book(1).unwrap();
        assert!(second.duration_since(first) >= Duration::from_millis(499));
        assert!(third.duration_since(first) >= Duration::from_millis(999));
    }

    /// A request waiting its turn under a slow limit goes at once when the
    /// limit is lifted, without waiting out what it had booked.
    #[tokio::test]
    async fn a_lifted_limit_frees_the_requests_waiting_under_it() {
        set(Limits {
            up: Some(10_000),
            down: None,
        });
        up(10_000).await; // books the next second
        let begun = Instant::now();
        let waiting = tokio::spawn(up(100_000)); // would go in a second, for ten
        let later = tokio::spawn(up(10_000)); // after those ten seconds
        // Both have booked their turns: the lane is taken 12 s ahead.
        let booked = || {
            UP.lock()
                .unwrap_or_else(|e| e.into_inner())
                .free_at
                .is_some_and(|t| t > begun + Duration::from_millis(11_500))
        };
        while !booked() {
            assert!(
                begun.elapsed() < Duration::from_secs(5),
                "the requests never booked"
            );
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished() && !later.is_finished());
        set(Limits::default());
        waiting.await.unwrap();
        later.await.unwrap();
        // Under the old limit: twelve seconds.
        assert!(
            begun.elapsed() < Duration::from_secs(5),
            "{:?}",
            begun.elapsed()
        );
    }
}
