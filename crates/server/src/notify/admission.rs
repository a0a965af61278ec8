//! Admission of new long polls. When an instance dies, its clients come
//! back at once to the others; each instance lets in at most `rate` new
//! polls a second (a token bucket holding one second's worth) and answers
//! the rest 503 with a `Retry-After` drawn evenly from one second to
//! `window`, so the returning crowd spreads out instead of arriving again
//! together.

use std::sync::Mutex;
use std::time::Instant;

use rand::Rng;

pub struct Admission {
    /// New polls a second; 0: no limit.
    rate: u32,
    window_secs: u64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Admission {
    pub fn new(rate: u32, window_secs: u64) -> Self {
        Self {
            rate,
            window_secs: window_secs.max(1),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(rate),
                at: Instant::now(),
            }),
        }
    }

    /// Lets a new poll in, or answers the seconds it should wait.
    pub fn admit(&self) -> Result<(), u64> {
        if self.rate == 0 {
            return Ok(());
        }
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let rate = f64::from(self.rate);
        let refill = now.duration_since(b.at).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        Err(rand::rng().random_range(1..=self.window_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_the_rate_is_spread_over_the_window() {
        let a = Admission::new(100, 10);
        let answers: Vec<Result<(), u64>> = (0..1000).map(|_| a.admit()).collect();
        let admitted = answers.iter().filter(|r| r.is_ok()).count();
        // One second's worth, and what refilled while the loop ran.
        assert!((100..=110).contains(&admitted), "{admitted} admitted");
        let mut per_second = [0u32; 11];
        for r in &answers {
            if let Err(secs) = r {
                assert!((1..=10).contains(secs), "retry after {secs} s");
                per_second[*secs as usize] += 1;
            }
        }
        // ~90 a second: none of the ten seconds gets the crowd.
        let busiest = per_second.iter().max().copied().unwrap_or(0);
        assert!(busiest < 150, "retries per second {per_second:?}");
    }

    #[test]
    fn no_rate_means_no_limit() {
        let a = Admission::new(0, 10);
        assert!((0..10_000).all(|_| a.admit().is_ok()));
    }
}
