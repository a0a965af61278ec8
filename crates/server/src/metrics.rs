//! Metrics in the Prometheus text format, served at `GET /metrics`
//! (`api/mod.rs`). Every name is a constant here; `docs/OPERATIONS.md`
//! lists each with its meaning and labels.
//!
//! The `metrics` crate records into one recorder per process, installed by
//! the first server that starts ([`install`]); every server of the process
//! renders that one. A process normally runs one server; where it runs
//! several (the end-to-end tests), their counts add up.
//!
//! Labels never carry user data: a request is labelled with its route's
//! template (`/api/v1/blocks/{id}`, never the path it was called with, and
//! `unmatched` when no route took it), its method from a fixed list and its
//! status code; the other labels are worker names and outcomes. So the
//! number of series is bounded by the code, not by what clients send.
//!
//! Access: open on the main listener like `/healthz`, unless a metrics
//! token is set; then a scrape must send it as a bearer token.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use metrics::{
    Counter, Label, SharedString, Unit, counter, describe_counter, describe_gauge,
    describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::meta::Meta;
use crate::workers::{Step, WorkerError};

pub const HTTP_REQUESTS: &str = "tessera_http_requests_total";
pub const HTTP_DURATION: &str = "tessera_http_request_duration_seconds";
pub const HTTP_REQUEST_BYTES: &str = "tessera_http_request_body_bytes_total";
pub const HTTP_RESPONSE_BYTES: &str = "tessera_http_response_body_bytes_total";
pub const BLOCKS_STORED: &str = "tessera_blocks_stored_total";
pub const BLOCKS_STORED_BYTES: &str = "tessera_blocks_stored_bytes_total";
pub const BLOCKS_DEDUPLICATED: &str = "tessera_blocks_deduplicated_total";
pub const BLOCKS_DEDUPLICATED_BYTES: &str = "tessera_blocks_deduplicated_bytes_total";
pub const LONG_POLLS: &str = "tessera_long_polls_held";
pub const WORKER_RUNS: &str = "tessera_worker_runs_total";
pub const WORKER_DURATION: &str = "tessera_worker_run_duration_seconds";
pub const DB_POOL_CONNECTIONS: &str = "tessera_db_pool_connections";
pub const DB_POOL_MAX: &str = "tessera_db_pool_max_connections";
pub const DB_FAILOVERS: &str = "tessera_db_failovers_total";
pub const BUILD_INFO: &str = "tessera_build_info";

/// The route label of a request no route took: its path could name
/// anything, a user's file included.
pub const UNMATCHED: &str = "unmatched";

/// `Content-Type` of the text exposition format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram buckets, in seconds, for requests and worker steps alike: a
/// cheap request takes about a millisecond, a long poll a minute, a large
/// upload or a scrub step minutes.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Histograms keep raw samples until upkeep folds them into buckets; with
/// no exporter task of its own, the recorder needs this done for it.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

const WORKER_OUTCOMES: [&str; 3] = ["busy", "idle", "failed"];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder the first time; later calls return the
/// same handle. `None` when something else installed a recorder first (a
/// program embedding the server): metrics then go there.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(install_now).as_ref()
}

fn install_now() -> Option<PrometheusHandle> {
    let builder = match PrometheusBuilder::new().set_buckets(BUCKETS) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "metrics: bad histogram buckets");
            return None;
        }
    };
    let handle = match builder.install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: another recorder is installed; /metrics answers 503");
            return None;
        }
    };
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // Rendering folds the samples too; only memory between scrapes grows.
        tracing::warn!(error = %e, "metrics: no upkeep thread");
    }
    describe();
    // Series without labels exist from the start, so a rate or an alert
    // on them has a value before the first event.
    for name in [
        BLOCKS_STORED,
        BLOCKS_STORED_BYTES,
        BLOCKS_DEDUPLICATED,
        BLOCKS_DEDUPLICATED_BYTES,
        DB_FAILOVERS,
    ] {
        counter!(name).increment(0);
    }
    gauge!(LONG_POLLS).set(0.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Some(handle)
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status code."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from a request's arrival to its response headers, by route template, method and status code."
    );
    describe_counter!(
        HTTP_REQUEST_BYTES,
        Unit::Bytes,
        "Request body bytes the server read, by route template and method."
    );
    describe_counter!(
        HTTP_RESPONSE_BYTES,
        Unit::Bytes,
        "Response body bytes the server produced, by route template and method."
    );
    describe_counter!(
        BLOCKS_STORED,
        "Blocks written to the block store as new records (or as the repair of a damaged copy)."
    );
    describe_counter!(
        BLOCKS_STORED_BYTES,
        Unit::Bytes,
        "Uncompressed size of the blocks counted by tessera_blocks_stored_total."
    );
    describe_counter!(
        BLOCKS_DEDUPLICATED,
        "Blocks uploaded or cut from an upload that were already stored, so not stored again."
    );
    describe_counter!(
        BLOCKS_DEDUPLICATED_BYTES,
        Unit::Bytes,
        "Uncompressed size of the blocks counted by tessera_blocks_deduplicated_total."
    );
    describe_gauge!(
        LONG_POLLS,
        "Long polls (/api/v1/changes/poll) held open now."
    );
    describe_counter!(
        WORKER_RUNS,
        "Steps of background workers, by worker and outcome (busy: more work waits, idle, failed)."
    );
    describe_histogram!(
        WORKER_DURATION,
        Unit::Seconds,
        "Time a background worker's step took, by worker and outcome."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Connections of the metadata database pool, by state (idle, in_use), sampled at the scrape."
    );
    describe_gauge!(
        DB_POOL_MAX,
        "Connections the metadata database pool may open; requests wait for one when all are in use."
    );
    describe_counter!(
        DB_FAILOVERS,
        "Times the server found a new primary metadata database and moved its connections there."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which release runs."
    );
}

/// Who may scrape, and what to render.
#[derive(Clone)]
pub struct Scrape {
    /// The metrics token's hash, when one is set: hashes compare in
    /// constant time and whatever their lengths.
    token: Option<blake3::Hash>,
    handle: Option<&'static PrometheusHandle>,
}

impl Scrape {
    pub fn new(token: Option<&str>, handle: Option<&'static PrometheusHandle>) -> Self {
        Self {
            token: token.map(|t| blake3::hash(t.as_bytes())),
            handle,
        }
    }

    /// Whether the request may read the metrics.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| blake3::hash(given.trim().as_bytes()) == *expected)
    }

    /// The exposition text, with the database pool sampled now; `None`
    /// when this process has no recorder of its own.
    pub fn render(&self, meta: &Meta) -> Option<String> {
        let handle = self.handle?;
        let pool = meta.pool_stats();
        gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(pool.idle);
        gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set(pool.size.saturating_sub(pool.idle));
        gauge!(DB_POOL_MAX).set(pool.max);
        Some(handle.render())
    }
}

/// Counts and times each request, and counts its body bytes as they
/// stream. Runs inside the router (`Router::layer`), where the matched
/// route is known.
pub async fn track(req: Request, next: Next) -> Response {
    let began = Instant::now();
    let route: SharedString = match req.extensions().get::<MatchedPath>() {
        Some(path) => Arc::<str>::from(path.as_str()).into(),
        None => UNMATCHED.into(),
    };
    let method = method_label(req.method());
    let by_route = [
        Label::new("method", method),
        Label::new("route", route.clone()),
    ];
    let req = req.map(|body| {
        Body::new(Counted::new(
            body,
            counter!(HTTP_REQUEST_BYTES, by_route.iter()),
        ))
    });
    let resp = next.run(req).await;
    let labels = [
        Label::new("method", method),
        Label::new("route", route),
        Label::new("status", resp.status().as_u16().to_string()),
    ];
    counter!(HTTP_REQUESTS, labels.iter()).increment(1);
    histogram!(HTTP_DURATION, labels.iter()).record(began.elapsed());
    resp.map(|body| {
        Body::new(Counted::new(
            body,
            counter!(HTTP_RESPONSE_BYTES, by_route.iter()),
        ))
    })
}

/// A method as a label: any other method would be a label value a client
/// chooses.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A body that adds the length of each data frame to a counter as it
/// passes, and otherwise is its inner body (size hint included, so
/// `Content-Length` stays).
struct Counted {
    inner: Body,
    bytes: Counter,
}

impl Counted {
    fn new(inner: Body, bytes: Counter) -> Self {
        Self { inner, bytes }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.increment(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Blocks that became new records: `count` of them, `bytes` uncompressed.
pub fn blocks_stored(count: u64, bytes: u64) {
    counter!(BLOCKS_STORED).increment(count);
    counter!(BLOCKS_STORED_BYTES).increment(bytes);
}

/// Blocks that arrived but were stored already.
pub fn blocks_deduplicated(count: u64, bytes: u64) {
    counter!(BLOCKS_DEDUPLICATED).increment(count);
    counter!(BLOCKS_DEDUPLICATED_BYTES).increment(bytes);
}

/// A long poll held open: counted while this lives.
pub struct PollHeld(());

impl PollHeld {
    pub fn begin() -> Self {
        gauge!(LONG_POLLS).increment(1.0);
        Self(())
    }
}

impl Drop for PollHeld {
    fn drop(&mut self) {
        gauge!(LONG_POLLS).decrement(1.0);
    }
}

/// Shows every outcome of `worker` at zero before its first step, so a
/// rate of failures exists before the first failure.
pub fn worker_known(worker: &'static str) {
    for outcome in WORKER_OUTCOMES {
        counter!(WORKER_RUNS, "worker" => worker, "outcome" => outcome).increment(0);
    }
}

/// One step of `worker` ended with `outcome` after `took`.
pub fn worker_ran(worker: &'static str, outcome: &Result<Step, WorkerError>, took: Duration) {
    let outcome = match outcome {
        Ok(Step::Busy { .. }) => "busy",
        Ok(Step::Idle { .. }) => "idle",
        Err(_) => "failed",
    };
    counter!(WORKER_RUNS, "worker" => worker, "outcome" => outcome).increment(1);
    histogram!(WORKER_DURATION, "worker" => worker, "outcome" => outcome).record(took);
}

/// The server moved to a new primary metadata database.
pub fn db_failover() {
    counter!(DB_FAILOVERS).increment(1);
}
