//! Turns at CPU-heavy work, shared fairly between users: a bounded pool
//! (about one turn per core) of which one user may hold only a few at a
//! time, so one account's burst of cheap requests queues behind itself
//! and never takes every turn from the others.
//!
//! A turn is owned (`'static`), so it can move into the blocking task that
//! does the work and is given back only when that work ends, not when the
//! request that started it is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Users = Arc<Mutex<HashMap<i64, Arc<Semaphore>>>>;

/// A bounded pool of turns with a cap per user.
pub struct Turns {
    pool: Arc<Semaphore>,
    per_user: usize,
    users: Users,
}

/// One turn; given back when dropped.
#[must_use]
pub struct Turn {
    user_id: i64,
    users: Users,
    mine: Option<OwnedSemaphorePermit>,
    _pool: OwnedSemaphorePermit,
}

/// No turn came free within the wait.
#[derive(Debug, thiserror::Error)]
#[error("no turn came free within {0:?}")]
pub struct Busy(pub Duration);

impl Turns {
    /// `size` turns in all, at most `per_user` of them held by one user.
    pub fn new(size: usize, per_user: usize) -> Self {
        Turns {
            pool: Arc::new(Semaphore::new(size.max(1))),
            per_user: per_user.clamp(1, size.max(1)),
            users: Arc::default(),
        }
    }

    /// The usual shape: one turn per core, half of them for one user.
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Turns::new(cores, cores / 2)
    }

    /// Waits up to `wait` for a turn of `user_id`'s own, then one of the
    /// pool's. The user's queue is waited on first, so a user's waiters
    /// beyond their cap never stand in the pool's queue before others.
    pub async fn take(&self, user_id: i64, wait: Duration) -> Result<Turn, Busy> {
        let queue = self
            .users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(user_id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
            .clone();
        let taken = tokio::time::timeout(wait, async {
            let mine = queue.clone().acquire_owned().await.ok()?;
            let pool = self.pool.clone().acquire_owned().await.ok()?;
            Some((mine, pool))
        })
        .await;
        drop(queue);
        match taken {
            Ok(Some((mine, pool))) => Ok(Turn {
                user_id,
                users: self.users.clone(),
                mine: Some(mine),
                _pool: pool,
            }),
            _ => {
                forget_idle(&self.users, user_id);
                Err(Busy(wait))
            }
        }
    }

    /// Turns free in the pool now.
    pub fn free(&self) -> usize {
        self.pool.available_permits()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.mine.take());
        forget_idle(&self.users, self.user_id);
    }
}

/// Drops a user's queue once nobody holds or waits for it, so the map
/// does not grow with every user ever seen.
fn forget_idle(users: &Users, user_id: i64) {
    let mut users = users.lock().unwrap_or_else(PoisonError::into_inner);
    if users
        .get(&user_id)
        .is_some_and(|queue| Arc::strong_count(queue) == 1)
    {
        users.remove(&user_id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn one_user_cannot_take_every_turn() {
        let turns = Turns::new(4, 2);
        let a1 = turns.take(1, SHORT).await.unwrap();
        let _a2 = turns.take(1, SHORT).await.unwrap();
        assert!(
            turns.take(1, SHORT).await.is_err(),
            "a third turn for one user"
        );
        let _b1 = turns.take(2, SHORT).await.unwrap();
        let _b2 = turns.take(2, SHORT).await.unwrap();
        assert!(turns.take(3, SHORT).await.is_err(), "the pool is full");
        drop(a1);
        let _c = turns.take(3, SHORT).await.unwrap();
    }

    #[tokio::test]
    async fn a_turn_is_held_until_the_work_that_owns_it_ends() {
        let turns = Turns::new(1, 1);
        let turn = turns.take(1, SHORT).await.unwrap();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let work = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            wait.recv().ok();
        });
        assert_eq!(turns.free(), 0);
        assert!(turns.take(2, SHORT).await.is_err());
        go.send(()).unwrap();
        work.await.unwrap();
        assert_eq!(turns.free(), 1);
        let _next = turns.take(2, SHORT).await.unwrap();
    }

    #[tokio::test]
    async fn idle_users_are_forgotten() {
        let turns = Turns::new(2, 1);
        for user in 0..100 {
            drop(turns.take(user, SHORT).await.unwrap());
        }
        let held = turns.take(7, SHORT).await.unwrap();
        assert!(turns.take(7, SHORT).await.is_err());
        assert_eq!(turns.users.lock().unwrap().len(), 1);
        drop(held);
        assert!(turns.users.lock().unwrap().is_empty());
    }
}
