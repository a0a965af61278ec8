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

use tokio::sync::{mpsc, oneshot, watch};

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
            return Self(Arc::new(PgBridge::start(hub, database_url)));
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
    meta: Mutex<Option<oneshot::Sender<Meta>>>,
}

impl PgBridge {
    /// Starts the sending and listening tasks (on the current runtime).
    fn start(hub: Arc<Hub>, url: &str) -> Self {
        let (outbox, sending) = mpsc::unbounded_channel();
        let (meta, attached) = oneshot::channel();
        tokio::spawn(send_notices(url.to_owned(), sending, hub.shutdown_signal()));
        tokio::spawn(listen(url.to_owned(), hub.clone(), attached));
        Self {
            hub,
            outbox,
            meta: Mutex::new(Some(meta)),
        }
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
            let _ = tx.send(meta.clone());
        }
    }
}

/// Sends each change as a notice; a burst goes as the latest number per
/// namespace.
async fn send_notices(
    url: String,
    mut changes: mpsc::UnboundedReceiver<(i64, i64)>,
    mut stop: watch::Receiver<bool>,
) {
    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy(&url)
    {
        Ok(pool) => pool,
        Err(e) => {
            tracing::error!(error = %e, "cannot send change notices: other instances will not wake");
            return;
        }
    };
    loop {
        let first = tokio::select! {
            got = changes.recv() => got,
            _ = stop.changed() => None,
        };
        let Some((ns, seq)) = first else {
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
async fn listen(url: String, hub: Arc<Hub>, attached: oneshot::Receiver<Meta>) {
    let mut stop = hub.shutdown_signal();
    let meta = tokio::select! {
        meta = attached => meta.ok(),
        _ = stop.changed() => return,
    };
    loop {
        if *stop.borrow() {
            return;
        }
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => {
                    catch_up(&hub, meta.as_ref()).await;
                    relay(&mut listener, &hub, &mut stop).await;
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

/// Relays notices until the connection drops or the server stops.
async fn relay(
    listener: &mut sqlx::postgres::PgListener,
    hub: &Hub,
    stop: &mut watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            next = listener.try_recv() => next,
            _ = stop.changed() => return,
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
