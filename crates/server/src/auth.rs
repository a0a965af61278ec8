//! Passwords, device tokens and the brake on guessing.

use std::collections::HashMap;
use std::sync::Mutex;
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

/// Counts failed logins per key (an account, an address) in a sliding
/// window; past the limit the key is refused until the window passes.
pub struct LoginLimiter {
    window: Duration,
    per_account: u32,
    per_address: u32,
    seen: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(Duration::from_secs(15 * 60), 10, 50)
    }
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

    fn keys(account: &str, address: &str) -> [(String, bool); 2] {
        [
            (format!("u:{account}"), true),
            (format!("a:{address}"), false),
        ]
    }

    /// `Err(seconds to wait)` when either key is over its limit.
    pub fn check(&self, account: &str, address: &str) -> Result<(), u64> {
        let Ok(seen) = self.seen.lock() else {
            return Ok(());
        };
        for (key, is_account) in Self::keys(account, address) {
            let limit = if is_account {
                self.per_account
            } else {
                self.per_address
            };
            if let Some((since, n)) = seen.get(&key) {
                let age = since.elapsed();
                if *n >= limit && age < self.window {
                    return Err((self.window - age).as_secs().max(1));
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, account: &str, address: &str) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let window = self.window;
        if seen.len() > 100_000 {
            seen.retain(|_, (since, _)| since.elapsed() < window);
        }
        for (key, _) in Self::keys(account, address) {
            let entry = seen.entry(key).or_insert((Instant::now(), 0));
            if entry.0.elapsed() >= window {
                *entry = (Instant::now(), 0);
            }
            entry.1 += 1;
        }
    }

    pub fn succeeded(&self, account: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(&format!("u:{account}"));
        }
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
            assert!(l.check("bob", "1.2.3.4").is_ok());
            l.failed("bob", "1.2.3.4");
        }
        assert!(
            l.check("bob", "9.9.9.9").is_err(),
            "account limit applies from any address"
        );
        assert!(l.check("carol", "1.2.3.4").is_ok());
        l.failed("carol", "1.2.3.4");
        l.failed("dave", "1.2.3.4");
        assert!(
            l.check("erin", "1.2.3.4").is_err(),
            "address limit applies to any account"
        );
        l.succeeded("bob");
        assert!(l.check("bob", "9.9.9.9").is_ok());
    }
}
