//! The publish point: where a committed change to a namespace's journal is
//! announced.
//!
//! The metadata store holds a [`Publisher`] and calls it from one place,
//! the journal writer's commit, after the transaction has committed and
//! with the sequence number that transaction reached. Nothing else
//! announces changes: a handler cannot forget to, and a change that rolled
//! back is never announced.
//!
//! The server asks [`Publisher::for_database`] for its publisher. Today
//! that is the in-process one, feeding the [`Hub`] that long polls wait
//! on. With several server instances on one PostgreSQL database, a bridge
//! is a second implementation of [`Publish`] in this file, which
//! `for_database` returns for a `postgres:` URL: its `publish` hands
//! `(ns, seq)` over a channel to a task that runs
//! `SELECT pg_notify('tessera_journal', 'ns:seq')`, and a second task
//! holds a `LISTEN tessera_journal` connection (reconnecting when it drops,
//! then waking every namespace's polls so none misses a notice sent
//! meanwhile) and calls [`Hub::publish`] for every notice, its own
//! included. `Hub::publish` keeps the highest sequence number, so
//! duplicates and reordering are harmless. Nothing outside this file
//! changes.

use std::sync::Arc;

use super::Hub;

/// Something that learns of committed changes. Called on the committing
/// task right after the commit: it must not block.
pub trait Publish: Send + Sync + 'static {
    /// Announces that `ns`'s journal reached `seq`.
    fn publish(&self, ns: i64, seq: i64);
}

/// The publisher the metadata store is built with.
#[derive(Clone)]
pub struct Publisher(Arc<dyn Publish>);

impl Publisher {
    /// The publisher for a server whose store is at `database_url`: the
    /// one place that chooses how changes travel (see the module doc).
    pub fn for_database(hub: Arc<Hub>, _database_url: &str) -> Self {
        Self::in_process(hub)
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
