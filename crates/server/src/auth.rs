//! Passwords, device tokens and the brake on guessing.
//!
//! The login brake ([`LoginLimiter`]) counts attempts per account (10) and
//! per client address (50) in a 15-minute window, in the database, so every
//! instance counts the same attempts; past the limit the answer is 429 with
//! `Retry-After`. An attempt counts from the moment it is let in, before its
//! password is checked (it holds a guard that records a failure unless the
//! check succeeds), so a burst of parallel guesses, even spread over several
//! instances, cannot all pass the check before the first failure is
//! recorded. A success forgives only the failures recorded before it began,
//! not those racing it.
//!
//! Password checks (Argon2, ~19 MiB each) run at most one per core
//! ([`PasswordChecks`]), each slot reusing its Argon2 memory (a fresh
//! allocation per check stayed resident); a login that waits 2 s for a turn
//! gets 429 with `Retry-After` and is not counted. Names over 64 bytes are
//! refused before any of this. The client address is the peer's, or, when
//! the peer is in `trusted_proxies`, the nearest untrusted hop of
//! `X-Forwarded-For` (`proxy.rs`). Tokens are stored as their BLAKE3 hash,
//! looked up by hash, and expire after 90 days.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rand::RngCore;

use crate::meta::{Meta, MetaError, now_ms};

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
/// the window passes. The counts live in the database, so every instance
/// brakes the same guesses. An attempt counts from the moment it is let in,
/// before its password is checked: counting only answered failures let a
/// burst of parallel guesses all through before the first was recorded.
pub struct LoginLimiter {
    meta: Meta,
    window: Duration,
    per_account: u32,
    per_address: u32,
}

/// One login attempt let in by the limiter. It counts as a failure unless
/// it ends otherwise ([`Attempt::succeeded`], [`Attempt::not_checked`]); a
/// request dropped midway included.
#[must_use]
pub struct Attempt {
    meta: Meta,
    /// The address's key, then the account's (the order every attempt
    /// locks them in).
    keys: [String; 2],
    /// The account's failures when this attempt began: a success forgives
    /// these, not those of attempts that raced with it.
    failed_before: i64,
    ended: bool,
}

impl LoginLimiter {
    /// 10 attempts per account and 50 per address in 15 minutes.
    pub fn with_defaults(meta: Meta) -> Self {
        Self::new(meta, LOGIN_WINDOW, 10, 50)
    }

    pub fn new(meta: Meta, window: Duration, per_account: u32, per_address: u32) -> Self {
        Self {
            meta,
            window,
            per_account,
            per_address,
        }
    }

    /// Lets an attempt in and counts it, or `Ok(Err(seconds to wait))` when
    /// the account or the address is at its limit.
    pub async fn attempt(
        &self,
        account: &str,
        address: &str,
    ) -> Result<Result<Attempt, u64>, MetaError> {
        self.attempt_on(format!("u:{account}"), address).await
    }

    /// [`attempt`](Self::attempt) at a link's password: counted per link,
    /// under keys no user name can reach.
    pub async fn link_attempt(
        &self,
        link_id: &str,
        address: &str,
    ) -> Result<Result<Attempt, u64>, MetaError> {
        self.attempt_on(format!("l:{link_id}"), address).await
    }

    async fn attempt_on(
        &self,
        secret_key: String,
        address: &str,
    ) -> Result<Result<Attempt, u64>, MetaError> {
        let keys = [format!("a:{address}"), secret_key];
        let limits = [
            (keys[0].clone(), i64::from(self.per_address)),
            (keys[1].clone(), i64::from(self.per_account)),
        ];
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        match self.meta.login_begin(&limits, window_ms, now_ms()).await? {
            Err(wait_ms) => Ok(Err(u64::try_from(wait_ms.max(0))
                .unwrap_or(0)
                .div_ceil(1000)
                .max(1))),
            Ok(failed_before) => Ok(Ok(Attempt {
                meta: self.meta.clone(),
                keys,
                failed_before: failed_before.get(1).copied().unwrap_or(0),
                ended: false,
            })),
        }
    }
}

/// The window of [`LoginLimiter::with_defaults`].
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

impl Attempt {
    /// The password was right: the account's earlier failures are forgiven.
    pub async fn succeeded(mut self) -> Result<(), MetaError> {
        let forgive = -self.failed_before;
        self.end([0, forgive]).await
    }

    /// The password was never checked: the attempt does not count.
    pub async fn not_checked(mut self) -> Result<(), MetaError> {
        self.end([0, 0]).await
    }

    /// The password was wrong.
    pub async fn failed(mut self) -> Result<(), MetaError> {
        self.end([1, 1]).await
    }

    /// Records the end; until it is recorded, a drop (the request gone,
    /// the database failing) records a failure instead.
    async fn end(&mut self, deltas: [i64; 2]) -> Result<(), MetaError> {
        let ends = [
            (self.keys[0].clone(), deltas[0]),
            (self.keys[1].clone(), deltas[1]),
        ];
        self.meta.login_end(&ends).await?;
        self.ended = true;
        Ok(())
    }
}

impl Drop for Attempt {
    /// A request dropped midway counts as a failure, recorded on its own
    /// task (a drop cannot wait).
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let meta = self.meta.clone();
        let ends = [(self.keys[0].clone(), 1), (self.keys[1].clone(), 1)];
        runtime.spawn(async move {
            if let Err(e) = meta.login_end(&ends).await {
                tracing::warn!(error = %e, "a dropped login attempt was not recorded");
            }
        });
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

    /// `password` hashed for storing, in a slot like any check: hashing
    /// needs the same memory, and a burst of requests that set passwords
    /// must not hold more of it than the checks may.
    pub async fn hash(&self, password: String) -> Result<Result<String, HashError>, Busy> {
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        let hashed = tokio::task::spawn_blocking(move || {
            let hashed = hash_password(&password);
            drop(permit);
            hashed
        })
        .await;
        Ok(hashed.unwrap_or_else(|e| Err(HashError(e.to_string()))))
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
