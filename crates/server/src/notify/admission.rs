//! Admission of new long polls. When an instance dies, its clients come
//! back at once to the others; each instance lets in at most `rate` new
//! polls a second (a token bucket holding one second's worth) and answers
//! the rest 503 with a `Retry-After` drawn evenly from one second to
//! `window`, so the returning crowd spreads out instead of arriving again
//! together. Only polls that will be held draw from it; and each user has
//! a small bucket of their own, checked first, so that one account cannot
//! spend everyone's share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use rand::Rng;

pub struct Admission {
    /// New polls a second; 0: no limit.
    rate: u32,
    window_secs: u64,
    bucket: Mutex<Bucket>,
    users: Mutex<HashMap<i64, Bucket>>,
}

/// New polls one user may open a second, and at once: a handful of
/// devices and tabs re-polling after each of a burst of changes stay
/// below, and it takes dozens of accounts to spend an instance's share.
const USER_RATE: f64 = 50.0;
const USER_BURST: f64 = 100.0;
/// Per-user buckets kept before the full (idle) ones are dropped.
const USERS_PRUNE_AT: usize = 100_000;

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
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Lets a new poll of `user` in, or answers the seconds to wait: one
    /// account opening polls faster than [`USER_RATE`] is refused alone.
    pub fn admit_user(&self, user: i64) -> Result<(), u64> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if users.len() >= USERS_PRUNE_AT {
            users.retain(|_, b| b.refill(now, USER_RATE, USER_BURST) < USER_BURST);
        }
        let b = users.entry(user).or_insert(Bucket {
            tokens: USER_BURST,
            at: now,
        });
        if b.refill(now, USER_RATE, USER_BURST) >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        Err(1)
    }

    /// Lets a new poll in, or answers the seconds it should wait.
    pub fn admit(&self) -> Result<(), u64> {
        if self.rate == 0 {
            return Ok(());
        }
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let rate = f64::from(self.rate);
        if b.refill(Instant::now(), rate, rate) >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        Err(rand::rng().random_range(1..=self.window_secs))
    }
}

impl Bucket {
    /// Adds what `rate` a second brought since the last look, up to
    /// `burst`; answers the tokens now.
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) -> f64 {
        let grown = now.duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + grown).min(burst);
        self.at = now;
        self.tokens
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
    fn one_user_cannot_spend_everyone_s_share() {
        let a = Admission::new(1000, 10);
        let mine = (0..1000).filter(|_| a.admit_user(1).is_ok()).count();
        assert!(
            (100..=110).contains(&mine),
            "{mine} of one user's polls admitted"
        );
        assert!(a.admit_user(2).is_ok(), "another user is still let in");
    }

    #[test]
    fn no_rate_means_no_limit() {
        let a = Admission::new(0, 10);
        assert!((0..10_000).all(|_| a.admit().is_ok()));
    }
}
