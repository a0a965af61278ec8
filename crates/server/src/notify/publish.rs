//! The publish point: where a committed change to a namespace's journal is
//! announced.
//!
//! The metadata store holds a [`Publisher`] and calls it from one place,
//! the journal writer's commit, after the transaction has committed and
//! with the sequence number that transaction reached. Nothing else
//! announces changes: a handler cannot forget to, and a change that rolled
//! back is never announced.
//!
//! The server asks [`Publisher::for_database`] for its publisher. On
//! SQLite (one instance) that is the in-process one, feeding the [`Hub`]
//! that long polls wait on. On PostgreSQL, where several instances share
//! the database, it is the bridge ([`PgBridge`]): it wakes this process's
//! polls at once, and hands `(ns, seq)` to a task that runs
//! `SELECT pg_notify('tessera_journal', 'ns:seq')` (coalescing a burst to
//! the latest number per namespace); a second task holds a
//! `LISTEN tessera_journal` connection and publishes every notice into the
//! hub, its own included (`Hub::publish` keeps the highest number, so
//! duplicates and reordering are harmless). When that connection drops,
//! the task connects again and then reads the journal position of every
//! namespace someone waits on, so a notice sent meanwhile is not missed.
//! Both tasks end with the hub's shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Hub;
use crate::meta::Meta;

/// The PostgreSQL notification channel of journal changes.
const CHANNEL: &str = "tessera_journal";

/// Something that learns of committed changes. Called on the committing
/// task right after the commit: it must not block.
pub trait Publish: Send + Sync + 'static {
    /// Announces that `ns`'s journal reached `seq`.
    fn publish(&self, ns: i64, seq: i64);

    /// Given the store once it is open (publishers that read journal
    /// positions back use it).
    fn attach(&self, _meta: &Meta) {}
}

/// The publisher the metadata store is built with.
#[derive(Clone)]
pub struct Publisher(Arc<dyn Publish>);

impl Publisher {
    /// The publisher for a server whose store is at `database_url`: the
    /// one place that chooses how changes travel (see the module doc).
    pub fn for_database(hub: Arc<Hub>, database_url: &str) -> Self {
        if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
            return Self(Arc::new(PgBridge::start(hub)));
        }
        Self::in_process(hub)
    }

    /// Hands the publisher the store it publishes for, once that is open.
    pub fn attach(&self, meta: &Meta) {
        self.0.attach(meta)
    }

    /// Wakes this process's long polls through `hub`.
    pub fn in_process(hub: Arc<Hub>) -> Self {
        Self(Arc::new(InProcess(hub)))
    }

    /// Announces nothing: for tools that open the store with no server
    /// around it (user administration, benchmarks).
    pub fn silent() -> Self {
        Self(Arc::new(Silent))
    }

    /// Any other implementation (tests record what was published).
    pub fn custom(p: Arc<dyn Publish>) -> Self {
        Self(p)
    }

    pub fn publish(&self, ns: i64, seq: i64) {
        self.0.publish(ns, seq)
    }
}

struct InProcess(Arc<Hub>);

impl Publish for InProcess {
    fn publish(&self, ns: i64, seq: i64) {
        self.0.publish(ns, seq)
    }
}

/// Wakes this process's polls, and every other instance's through
/// PostgreSQL (see the module doc).
pub struct PgBridge {
    hub: Arc<Hub>,
    outbox: mpsc::UnboundedSender<(i64, i64)>,
    meta: Mutex<Option<watch::Sender<Option<Meta>>>>,
}

impl PgBridge {
    /// Starts the sending and listening tasks (on the current runtime).
    /// Both use the store's pool once it is attached: it follows the
    /// primary when the database fails over.
    fn start(hub: Arc<Hub>) -> Self {
        let (outbox, sending) = mpsc::unbounded_channel();
        let (meta, attached) = watch::channel(None);
        tokio::spawn(send_notices(
            attached.clone(),
            sending,
            hub.shutdown_signal(),
        ));
        tokio::spawn(listen(hub.clone(), attached));
        Self {
            hub,
            outbox,
            meta: Mutex::new(Some(meta)),
        }
    }
}

/// The store once it is attached, or None if the server stops first.
async fn attached_meta(
    attached: &mut watch::Receiver<Option<Meta>>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Meta> {
    tokio::select! {
        meta = attached.wait_for(|m| m.is_some()) => meta.ok().and_then(|m| m.clone()),
        _ = stop.wait_for(|stopped| *stopped) => None,
    }
}

impl Publish for PgBridge {
    fn publish(&self, ns: i64, seq: i64) {
        self.hub.publish(ns, seq);
        // Only fails once the sending task has ended (shutdown).
        let _ = self.outbox.send((ns, seq));
    }

    fn attach(&self, meta: &Meta) {
        if let Ok(mut slot) = self.meta.lock()
            && let Some(tx) = slot.take()
        {
            tx.send_replace(Some(meta.clone()));
        }
    }
}

/// Sends each change as a notice; a burst goes as the latest number per
/// namespace.
async fn send_notices(
    mut attached: watch::Receiver<Option<Meta>>,
    mut changes: mpsc::UnboundedReceiver<(i64, i64)>,
    mut stop: watch::Receiver<bool>,
) {
    // Changes published before the store is attached wait in the channel.
    let Some(pool) = attached_meta(&mut attached, &mut stop)
        .await
        .and_then(|m| m.pg_pool())
    else {
        return;
    };
    // The channel holds the store, which holds this task's sender.
    drop(attached);
    // Changes committed while the instance drains still wake the others:
    // this ends when the pool closes (the server has stopped), not when
    // the hub shuts down.
    let mut closed = std::pin::pin!(pool.close_event());
    loop {
        let next = tokio::select! {
            next = changes.recv() => next,
            _ = &mut closed => None,
        };
        let Some((ns, seq)) = next else {
            return;
        };
        let mut latest = HashMap::from([(ns, seq)]);
        while let Ok((ns, seq)) = changes.try_recv() {
            let at = latest.entry(ns).or_insert(seq);
            *at = (*at).max(seq);
        }
        for (ns, seq) in latest {
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(format!("{ns}:{seq}"))
                .execute(&pool)
                .await
            {
                tracing::warn!(ns, seq, error = %e, "could not send a change notice");
            }
        }
    }
}

/// Publishes every notice into the hub; after each (re)connection, catches
/// up with the journal of every namespace someone waits on.
async fn listen(hub: Arc<Hub>, mut attached: watch::Receiver<Option<Meta>>) {
    let mut stop = hub.shutdown_signal();
    let Some(meta) = attached_meta(&mut attached, &mut stop).await else {
        return;
    };
    let Some(pool) = meta.pg_pool() else {
        return;
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let moves = meta.failovers();
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => {
                    catch_up(&hub, Some(&meta)).await;
                    relay(&mut listener, &hub, &mut stop, || meta.failovers() != moves).await;
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for change notices"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect to listen for change notices"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Relays notices until the connection drops, the database fails over
/// (`moved`: a demoted primary still answers, but hears no notices), or the
/// server stops.
async fn relay(
    listener: &mut sqlx::postgres::PgListener,
    hub: &Hub,
    stop: &mut watch::Receiver<bool>,
    moved: impl Fn() -> bool,
) {
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let next = tokio::select! {
            next = listener.try_recv() => next,
            _ = stop.changed() => return,
            _ = check.tick() => {
                if moved() {
                    tracing::info!("the database failed over: listening on the new primary");
                    return;
                }
                continue;
            }
        };
        match next {
            Ok(Some(notice)) => {
                let parsed = notice
                    .payload()
                    .split_once(':')
                    .and_then(|(ns, seq)| Some((ns.parse().ok()?, seq.parse().ok()?)));
                match parsed {
                    Some((ns, seq)) => hub.publish(ns, seq),
                    None => tracing::warn!(
                        payload = notice.payload(),
                        "a change notice that is not ns:seq"
                    ),
                }
            }
            // The connection dropped: notices sent meanwhile are lost, so
            // the caller connects again and catches up.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "lost the change notices connection");
                return;
            }
        }
    }
}

async fn catch_up(hub: &Hub, meta: Option<&Meta>) {
    let Some(meta) = meta else {
        return;
    };
    let watched = hub.watched();
    if watched.is_empty() {
        return;
    }
    match meta.journal_seqs(&watched).await {
        Ok(seqs) => {
            for (ns, seq) in seqs {
                hub.publish(ns, seq);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not catch up with the journal"),
    }
}

struct Silent;

impl Publish for Silent {
    fn publish(&self, _ns: i64, _seq: i64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_publishing_wakes_a_subscriber() {
        let hub = Arc::new(Hub::default());
        let publisher = Publisher::in_process(hub.clone());
        let Some(mut rx) = hub.subscribe(7) else {
            panic!("the hub has no channel for namespace 7");
        };
        publisher.publish(7, 3);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 3);
    }
}
