//! A PostgreSQL database on several hosts, one of them the primary: the
//! libpq form `postgres://USER@h1:p1,h2:p2/DB?target_session_attrs=read-write`
//! that pg_auto_failover and Patroni hand out. sqlx connects to one host,
//! so the pool points at whichever host answers `pg_is_in_recovery()` with
//! false, and a watcher probes it every second. When the primary dies or
//! is demoted, the watcher finds the promoted host and re-points the pool;
//! connections made before that are dropped as they come back to the pool,
//! so none keeps talking to a host that now refuses writes (SQLSTATE 25006).
//! Requests meanwhile fail as unavailable (503 with Retry-After).

use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{ConnectOptions, Connection};

use super::MetaError;

/// How often the pool's host is asked whether it is still the primary.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A host that takes longer to connect and answer is passed over.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Every this many probes, every host is asked for its timeline.
const SURVEY_EVERY: u32 = 5;

/// The hosts of a database URL, each as its own connect options; one entry
/// for an ordinary URL.
pub fn hosts(url: &str) -> Result<Vec<PgConnectOptions>, MetaError> {
    let bad = |why: &str| MetaError::BadUrl(format!("{}: {why}", redact(url)));
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("no scheme"));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, host_list) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (Some(user), hosts),
        None => (None, authority),
    };
    let listed: Vec<&str> = host_list.split(',').collect();
    if listed.len() < 2 {
        return Ok(vec![PgConnectOptions::from_str(url)?]);
    }
    if listed.iter().any(|h| h.trim().is_empty()) {
        return Err(bad("an empty host in the host list"));
    }
    // sqlx does not know target_session_attrs: the primary is found here.
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("target_session_attrs="))
        .collect();
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    listed
        .iter()
        .map(|host| {
            let user = user.map(|u| format!("{u}@")).unwrap_or_default();
            let one = format!("{scheme}://{user}{}{path}{query}", host.trim());
            PgConnectOptions::from_str(&one).map_err(MetaError::from)
        })
        .collect()
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Which host is the primary, and since when.
pub struct Failover {
    hosts: Vec<PgConnectOptions>,
    current: Mutex<Current>,
    /// Times the pool moved to another host.
    moves: AtomicU64,
}

struct Current {
    host: usize,
    since: Instant,
}

impl Failover {
    pub fn new(hosts: Vec<PgConnectOptions>) -> Self {
        Self {
            hosts,
            current: Mutex::new(Current {
                host: 0,
                since: Instant::now(),
            }),
            moves: AtomicU64::new(0),
        }
    }

    /// Whether the URL named more than one host.
    pub fn has_standbys(&self) -> bool {
        self.hosts.len() > 1
    }

    /// Times the pool moved to another host since the start.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// Finds the primary and makes it current; its connect options.
    pub async fn primary(&self) -> Result<PgConnectOptions, MetaError> {
        if !self.has_standbys() {
            return self
                .hosts
                .first()
                .cloned()
                .ok_or_else(|| MetaError::BadUrl("no host".into()));
        }
        match self.find().await {
            Some(i) => {
                self.point_at(i);
                Ok(self.hosts[i].clone())
            }
            None => Err(MetaError::Unavailable(
                "no host of the database answers as its primary (read-write): check that \
                 PostgreSQL runs and that one node is promoted"
                    .into(),
            )),
        }
    }

    /// A connection made at `age` before now was made for the current
    /// primary (not for one the pool has since left).
    pub fn is_current(&self, age: Duration) -> bool {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Instant::now()
            .checked_sub(age)
            .is_none_or(|made| made >= current.since)
    }

    fn point_at(&self, host: usize) -> bool {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.host == host {
            return false;
        }
        current.host = host;
        current.since = Instant::now();
        true
    }

    /// The primary among the hosts: up, not in recovery, and on the newest
    /// timeline. An old primary that comes back after its standby was
    /// promoted also answers "not in recovery" (nothing demoted it), but
    /// it is a timeline behind; the current host wins a tie.
    async fn find(&self) -> Option<usize> {
        let current = self.current.lock().map(|c| c.host).unwrap_or(0);
        let probes = self.hosts.iter().map(primary_timeline);
        let timelines = futures::future::join_all(probes).await;
        let mut best: Option<(u32, bool, usize)> = None;
        for (i, timeline) in timelines.into_iter().enumerate() {
            if let Some(t) = timeline {
                let rank = (t, i == current, usize::MAX - i);
                if best.is_none_or(|b| rank > b) {
                    best = Some(rank);
                }
            }
        }
        best.map(|(_, _, inv)| usize::MAX - inv)
    }

    /// Probes the pool's host every second until the pool closes; when it
    /// is gone or in recovery, finds the new primary and re-points the pool.
    pub fn watch(self: std::sync::Arc<Self>, pool: PgPool) {
        if !self.has_standbys() {
            return;
        }
        tokio::spawn(async move {
            let mut warned = false;
            let mut ticks: u32 = 0;
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if pool.is_closed() {
                    return;
                }
                ticks = ticks.wrapping_add(1);
                let probe = sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()");
                let answer = tokio::time::timeout(PROBE_TIMEOUT, probe.fetch_one(&pool)).await;
                // Every few seconds every host is asked anyway: a host that
                // answers well may still be an old primary left behind.
                if matches!(answer, Ok(Ok(false))) && !ticks.is_multiple_of(SURVEY_EVERY) {
                    warned = false;
                    continue;
                }
                match self.find().await {
                    Some(i) if self.point_at(i) => {
                        pool.set_connect_options(self.hosts[i].clone());
                        self.moves.fetch_add(1, Ordering::Relaxed);
                        crate::metrics::db_failover();
                        tracing::warn!(
                            host = self.hosts[i].get_host(),
                            port = self.hosts[i].get_port(),
                            "the database primary moved: requests go to the new one"
                        );
                        warned = false;
                    }
                    Some(_) => {}
                    None if !warned => {
                        tracing::warn!("no database host answers as the primary: waiting for one");
                        warned = true;
                    }
                    None => {}
                }
            }
        });
    }
}

/// The timeline of the PostgreSQL at `opts` if it accepts writes (None: down,
/// slow, or a standby). A promotion starts a new timeline, whose number
/// leads the name of the WAL file being written.
async fn primary_timeline(opts: &PgConnectOptions) -> Option<u32> {
    let probe = async {
        let mut conn: PgConnection = opts.connect().await?;
        let (in_recovery, wal): (bool, Option<String>) = sqlx::query_as(
            "SELECT pg_is_in_recovery(),
                    CASE WHEN pg_is_in_recovery() THEN NULL
                         ELSE pg_walfile_name(pg_current_wal_lsn()) END",
        )
        .fetch_one(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>((!in_recovery).then_some(wal).flatten())
    };
    let wal = tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()?
        .ok()??;
    u32::from_str_radix(wal.get(..8)?, 16).ok()
}

/// Whether `e` says the work never reached the database or was refused
/// before anything was done: no connection to be had, a read-only
/// (demoted) primary, a server not accepting connections.
pub fn never_reached(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| matches!(&*code, "25006" | "57P03" | "53300" | "08001" | "08004")),
        _ => false,
    }
}

/// Whether `e` says PostgreSQL undid the transaction because of another
/// one (a deadlock it broke, 40P01; a serialization failure, 40001):
/// nothing of it was done.
pub fn rolled_back_for_another(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| matches!(&*code, "40P01" | "40001")),
        _ => false,
    }
}

/// Whether `e` says the database cannot be reached or written now (it is
/// down, failing over, read-only, or out of connections): worth a retry.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exceptions; 57P01-3: shutting down or not
            // yet accepting; 25006: read-only (a demoted primary); 53300:
            // too many connections.
            code.starts_with("08") || code.starts_with("57P0") || code == "25006" || code == "53300"
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_list_becomes_one_set_of_options_per_host() {
        let list = hosts(
            "postgres://tessera:pw@10.0.0.1:5433,db2.lan:6000/files?sslmode=disable&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].get_host(), list[0].get_port()), ("10.0.0.1", 5433));
        assert_eq!((list[1].get_host(), list[1].get_port()), ("db2.lan", 6000));
        for o in &list {
            assert_eq!(o.get_database(), Some("files"));
            assert_eq!(o.get_username(), "tessera");
        }
        let one = hosts("postgres://u@h:1/db").unwrap();
        assert_eq!(one.len(), 1);
        assert!(hosts("postgres://u@h1:1,,h2:2/db").is_err());
    }

    #[test]
    fn messages_never_show_the_password() {
        assert_eq!(
            redact("postgres://tessera:s3cret@h1:1,h2:2/db"),
            "postgres://tessera@h1:1,h2:2/db"
        );
    }
}
