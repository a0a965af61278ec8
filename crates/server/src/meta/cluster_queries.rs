//! State that several instances on one database share: a child of
//! `queries.rs`, compiled per backend with it. Worker leases, the login
//! brake's counts, and which devices hold a long poll on which instance.
//! On SQLite (one instance) the same tables serve, at the cost of a few
//! small writes.

use super::*;

impl Store {
    /// Takes or renews `name`'s lease for `holder` until `until_ms`, when it
    /// is free, lapsed (before `now_ms`) or already `holder`'s. Answers the
    /// other holder when it is not.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<String>> {
        // One statement: of two instances racing for a lapsed lease, the
        // row lock lets one update it and the other sees the new holder.
        let took = sqlx::query(
            "INSERT INTO worker_leases (name, holder, until_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
             WHERE worker_leases.holder = excluded.holder OR worker_leases.until_ms < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if took > 0 {
            return Ok(None);
        }
        let other: Option<(String,)> =
            sqlx::query_as("SELECT holder FROM worker_leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Some(other.map(|(h,)| h).unwrap_or_default()))
    }

    /// Gives up every lease `holder` has, so another instance need not
    /// wait for them to lapse.
    pub async fn release_leases(&self, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM worker_leases WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Lets a login attempt in under each `(key, limit)`, counting it as in
    /// flight, or refuses it with the milliseconds until the first full key's
    /// window ends. A key's window starts at its first attempt and lasts
    /// `window_ms`; an ended window starts afresh. Answers each key's
    /// failures before this attempt. One transaction; nothing is written
    /// for a refused attempt.
    pub async fn login_begin(
        &self,
        keys: &[(String, i64)],
        window_ms: i64,
        now_ms: i64,
    ) -> Result<std::result::Result<Vec<i64>, i64>> {
        let mut tx = self.begin().await?;
        let mut failed_before = Vec::with_capacity(keys.len());
        for (key, limit) in keys {
            let (since, failed, in_flight): (i64, i64, i64) = sqlx::query_as(
                "INSERT INTO login_attempts (key, since_ms, failed, in_flight) VALUES ($1, $2, 0, 0)
                 ON CONFLICT (key) DO UPDATE SET
                     since_ms = CASE WHEN login_attempts.since_ms <= $3
                                THEN excluded.since_ms ELSE login_attempts.since_ms END,
                     failed = CASE WHEN login_attempts.since_ms <= $3
                              THEN 0 ELSE login_attempts.failed END,
                     -- No attempt lasts a window: counts left in flight
                     -- then are from attempts that died unrecorded.
                     in_flight = CASE WHEN login_attempts.since_ms <= $3
                                 THEN 0 ELSE login_attempts.in_flight END
                 RETURNING since_ms, failed, in_flight",
            )
            .bind(key)
            .bind(now_ms)
            .bind(now_ms - window_ms)
            .fetch_one(&mut *tx)
            .await?;
            if failed + in_flight >= *limit {
                tx.rollback().await?;
                return Ok(Err((since + window_ms - now_ms).max(1)));
            }
            failed_before.push(failed);
        }
        for (key, _) in keys {
            sqlx::query("UPDATE login_attempts SET in_flight = in_flight + 1 WHERE key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(failed_before))
    }

    /// Ends an attempt [`login_begin`] let in: each key's count in flight
    /// drops by one and its failures move by the delta (a failure adds one,
    /// a success takes away what it forgives), never below zero.
    pub async fn login_end(&self, ends: &[(String, i64)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (key, delta) in ends {
            sqlx::query(
                "UPDATE login_attempts SET
                     in_flight = CASE WHEN in_flight > 0 THEN in_flight - 1 ELSE 0 END,
                     failed = CASE WHEN failed + $2 > 0 THEN failed + $2 ELSE 0 END
                 WHERE key = $1",
            )
            .bind(key)
            .bind(delta)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets login counts whose window began before `before_ms`.
    pub async fn prune_login_attempts(&self, before_ms: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM login_attempts WHERE since_ms < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Says that `instance` is alive at `now_ms` and sets how many polls
    /// each listed device holds on it (0: none, the row goes). One
    /// transaction.
    pub async fn sync_presence(
        &self,
        instance: &str,
        now_ms: i64,
        devices: &[(i64, String, i64)],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO instances (id, seen_ms) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms",
        )
        .bind(instance)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        for (user_id, device, polls) in devices {
            if *polls > 0 {
                sqlx::query(
                    "INSERT INTO presence (instance, user_id, device, polls) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (instance, user_id, device) DO UPDATE SET polls = excluded.polls",
                )
                .bind(instance)
                .bind(user_id)
                .bind(device)
                .bind(polls)
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query(
                    "DELETE FROM presence WHERE instance = $1 AND user_id = $2 AND device = $3",
                )
                .bind(instance)
                .bind(user_id)
                .bind(device)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The devices of `user_id` holding long polls on instances other than
    /// `except` that were alive at `alive_since_ms`, with their poll counts.
    pub async fn presence_elsewhere(
        &self,
        user_id: i64,
        except: &str,
        alive_since_ms: i64,
    ) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT p.device, CAST(SUM(p.polls) AS BIGINT) FROM presence p
             JOIN instances i ON i.id = p.instance
             WHERE p.user_id = $1 AND p.instance <> $2 AND i.seen_ms >= $3
             GROUP BY p.device ORDER BY p.device",
        )
        .bind(user_id)
        .bind(except)
        .bind(alive_since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets `instance` (it is stopping) and every instance not seen
    /// since `dead_before_ms`, with their presence rows.
    pub async fn forget_instances(&self, instance: &str, dead_before_ms: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM presence WHERE instance = $1 OR instance IN
                 (SELECT id FROM instances WHERE seen_ms < $2)",
        )
        .bind(instance)
        .bind(dead_before_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM instances WHERE id = $1 OR seen_ms < $2")
            .bind(instance)
            .bind(dead_before_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
