//! Passwords, device tokens and the brake on guessing.
//!
//! The login brake ([`LoginLimiter`]) counts attempts per account (10) and
//! per client address (50) in a 15-minute window, in memory; past the limit
//! the answer is 429 with `Retry-After`. An attempt counts from the moment it
//! is let in, before its password is checked (it holds a guard that records a
//! failure unless the check succeeds), so a burst of parallel guesses cannot
//! all pass the check before the first failure is recorded. A success
//! forgives only the failures recorded before it began, not those racing it.
//!
//! Password checks (Argon2, ~19 MiB each) run at most one per core
//! ([`PasswordChecks`]), each slot reusing its Argon2 memory (a fresh
//! allocation per check stayed resident); a login that waits 2 s for a turn
//! gets 429 with `Retry-After` and is not counted. Names over 64 bytes are
//! refused before any of this. The client address is the peer's, or, when
//! the peer is in `trusted_proxies`, the nearest untrusted hop of
//! `X-Forwarded-For` (`proxy.rs`). With several instances each counts its
//! own. Tokens are stored as their BLAKE3 hash, looked up by hash, and expire
//! after 90 days.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rand::RngCore;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Argon2id with the crate's defaults (~25 ms here): call off async threads.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash of a password nobody has, checked when the user does not exist so
/// that a login takes as long whether or not the name is known.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("tessera-no-such-user").unwrap_or_default())
}

/// A new device token (256 random bits, hex) and the hash that is stored.
pub fn new_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// A random password for the first admin when none is given.
pub fn generate_password() -> String {
    let mut raw = [0u8; 15];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// Counts login attempts per key (an account, an address) in a window
/// that starts at the first one; past the limit the key is refused until
/// the window passes. An attempt counts from the moment it is let in, before
/// its password is checked: counting only answered failures let a burst of
/// parallel guesses all through before the first was recorded.
pub struct LoginLimiter {
    window: Duration,
    per_account: u32,
    per_address: u32,
    seen: Mutex<HashMap<String, Count>>,
}

#[derive(Debug)]
struct Count {
    since: Instant,
    /// Attempts that failed in this window.
    failed: u32,
    /// Attempts let in and not yet answered.
    in_flight: u32,
}

/// Drops per-key entries once the map is this large, keeping live ones.
const LIMITER_PRUNE_AT: usize = 100_000;

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(Duration::from_secs(15 * 60), 10, 50)
    }
}

/// One login attempt let in by the limiter. It counts as a failure unless
/// [`Attempt::succeeded`] is called (a request dropped midway included).
#[must_use]
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    account: String,
    address: String,
    /// The account's failures when this attempt began: a success forgives
    /// these, not those of attempts that raced with it.
    failed_before: u32,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    /// Refused before the password was checked (the server was busy).
    NotChecked,
}

impl LoginLimiter {
    pub fn new(window: Duration, per_account: u32, per_address: u32) -> Self {
        Self {
            window,
            per_account,
            per_address,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, address: &str) -> [String; 2] {
        [format!("u:{account}"), format!("a:{address}")]
    }

    /// Lets an attempt in and counts it, or `Err(seconds to wait)` when the
    /// account or the address is at its limit.
    pub fn attempt(&self, account: &str, address: &str) -> Result<Attempt<'_>, u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > LIMITER_PRUNE_AT {
            let window = self.window;
            seen.retain(|_, c| c.in_flight > 0 || c.since.elapsed() < window);
        }
        let [account_key, address_key] = Self::keys(account, address);
        for (key, limit) in [
            (&account_key, self.per_account),
            (&address_key, self.per_address),
        ] {
            if let Some(c) = seen.get_mut(key) {
                let age = c.since.elapsed();
                if age >= self.window {
                    c.since = Instant::now();
                    c.failed = 0;
                } else if c.failed + c.in_flight >= limit {
                    return Err((self.window - age).as_secs().max(1));
                }
            }
        }
        let mut failed_before = 0;
        for key in [account_key, address_key] {
            let is_account = key.starts_with("u:");
            let c = seen.entry(key).or_insert_with(|| Count {
                since: Instant::now(),
                failed: 0,
                in_flight: 0,
            });
            c.in_flight += 1;
            if is_account {
                failed_before = c.failed;
            }
        }
        Ok(Attempt {
            limiter: self,
            account: account.to_owned(),
            address: address.to_owned(),
            failed_before,
            outcome: Outcome::Failed,
        })
    }

    fn finish(&self, a: &Attempt<'_>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let [account_key, address_key] = Self::keys(&a.account, &a.address);
        for key in [account_key, address_key] {
            let is_account = key.starts_with("u:");
            let Some(c) = seen.get_mut(&key) else {
                continue;
            };
            c.in_flight = c.in_flight.saturating_sub(1);
            match a.outcome {
                Outcome::Failed => c.failed += 1,
                Outcome::Succeeded if is_account => {
                    c.failed = c.failed.saturating_sub(a.failed_before);
                }
                Outcome::Succeeded | Outcome::NotChecked => {}
            }
            if c.failed == 0 && c.in_flight == 0 {
                seen.remove(&key);
            }
        }
    }
}

impl Attempt<'_> {
    /// The password was right: the account's earlier failures are forgiven.
    pub fn succeeded(mut self) {
        self.outcome = Outcome::Succeeded;
    }

    /// The password was never checked: the attempt does not count.
    pub fn not_checked(mut self) {
        self.outcome = Outcome::NotChecked;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.limiter.finish(self);
    }
}

/// Bounds the password checks running at once. Each Argon2 check needs
/// about 19 MiB; without a bound, a burst of logins (no account needed)
/// grew the server by a gibibyte. Checks beyond the bound wait a short
/// while for a turn, then are refused. Each slot keeps its Argon2 memory:
/// allocated afresh per check, the freed 19 MiB stayed resident in the
/// allocator, about once per thread that had run a check.
pub struct PasswordChecks {
    slots: Arc<tokio::sync::Semaphore>,
    memory: Arc<Mutex<Vec<Vec<argon2::Block>>>>,
    wait: Duration,
}

/// `password` against a stored PHC string, in `memory` (grown as needed).
fn verify_in(password: &str, stored: &str, memory: &mut Vec<argon2::Block>) -> bool {
    use argon2::password_hash::phc::{Output, PasswordHash};
    use argon2::{Algorithm, Params, Version};
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm.as_str()),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    if argon
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            &mut memory[..blocks],
        )
        .is_err()
    {
        return false;
    }
    // `Output` compares in constant time.
    Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// Every slot stayed busy for the whole wait.
#[derive(Debug, thiserror::Error)]
#[error("the server is busy checking other passwords: retry in a moment")]
pub struct Busy;

impl PasswordChecks {
    /// `slots` of 0 means one per core.
    pub fn new(slots: usize, wait: Duration) -> Self {
        let slots = if slots == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            slots
        };
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            memory: Arc::default(),
            wait,
        }
    }

    /// Whether `password` matches `hash` (or, with no hash, the same work
    /// against a dummy, so the time does not tell whether a name exists).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, Busy> {
        // The permit travels with the check: a client that hangs up does
        // not free the slot while its Argon2 still runs.
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        let pool = self.memory.clone();
        let mut memory = pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let checked = tokio::task::spawn_blocking(move || {
            let ok = match &hash {
                Some(hash) => verify_in(&password, hash, &mut memory),
                None => {
                    let _ = verify_in(&password, dummy_hash(), &mut memory);
                    false
                }
            };
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(memory);
            drop(permit);
            ok
        })
        .await;
        Ok(checked.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_tokens_differ() {
        let h = hash_password("s3cret").unwrap();
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3creT", &h));
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), ha);
    }

    #[test]
    fn limiter_blocks_after_limit_and_success_resets_account() {
        let l = LoginLimiter::new(Duration::from_secs(60), 3, 5);
        for _ in 0..3 {
            drop(l.attempt("bob", "1.2.3.4").unwrap());
        }
        assert!(
            l.attempt("bob", "9.9.9.9").is_err(),
            "account limit applies from any address"
        );
        drop(l.attempt("carol", "1.2.3.4").unwrap());
        drop(l.attempt("dave", "1.2.3.4").unwrap());
        assert!(
            l.attempt("erin", "1.2.3.4").is_err(),
            "address limit applies to any account"
        );
        let l = LoginLimiter::new(Duration::from_secs(60), 3, 50);
        drop(l.attempt("bob", "1.2.3.4").unwrap());
        drop(l.attempt("bob", "1.2.3.4").unwrap());
        l.attempt("bob", "1.2.3.4").unwrap().succeeded();
        assert!(l.attempt("bob", "9.9.9.9").is_ok());
    }

    #[test]
    fn attempts_count_before_they_are_answered() {
        let l = LoginLimiter::new(Duration::from_secs(60), 3, 50);
        let held: Vec<_> = (0..3)
            .map(|_| l.attempt("bob", "1.2.3.4").unwrap())
            .collect();
        assert!(
            l.attempt("bob", "1.2.3.4").is_err(),
            "three attempts in flight fill a limit of three"
        );
        drop(held);
        assert!(l.attempt("bob", "1.2.3.4").is_err());
    }

    #[test]
    fn a_success_keeps_failures_that_raced_with_it() {
        let l = LoginLimiter::new(Duration::from_secs(60), 3, 50);
        let right = l.attempt("bob", "1.2.3.4").unwrap();
        let wrong: Vec<_> = (0..2)
            .map(|_| l.attempt("bob", "6.6.6.6").unwrap())
            .collect();
        drop(wrong);
        right.succeeded();
        drop(l.attempt("bob", "6.6.6.6").unwrap());
        assert!(
            l.attempt("bob", "6.6.6.6").is_err(),
            "the two failures that raced the success still count"
        );
    }

    #[tokio::test]
    async fn password_checks_beyond_the_slots_are_refused() {
        let checks = PasswordChecks::new(1, Duration::from_millis(1));
        let hash = hash_password("pw").unwrap();
        assert!(
            !checks
                .verify("pW".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!checks.verify("pw".into(), None).await.unwrap());
        let (first, second) = tokio::join!(
            checks.verify("pw".into(), Some(hash.clone())),
            checks.verify("pw".into(), Some(hash.clone())),
        );
        assert!(first.unwrap());
        assert!(second.is_err(), "the one slot was taken for the whole wait");
        assert!(checks.verify("pw".into(), Some(hash)).await.unwrap());
    }
}
