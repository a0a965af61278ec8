//! `GET /metrics`: what a Prometheus scrape of a real `tessera serve`
//! sees after uploads, listings, a held long poll and a worker run, and
//! that a metrics token keeps it private.
//!
//! Each test runs the binary as its own process: the metrics recorder is
//! one per process, and in this test binary many servers share one, so
//! only a server of its own gives exact counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::process::{Serve, Served};
use crate::common::{Backend, login_token, random_data};

on_both_backends!(
    requests_blocks_and_polls_are_counted,
    workers_and_the_database_pool_are_shown
);

/// A file name no label may ever carry.
const SECRET: &str = "secret-plans-Zq9x";

/// One sample: metric name and labels.
type Series = (String, BTreeMap<String, String>);

/// A scrape: its samples, and the `# HELP` and `# TYPE` lines by name.
struct Scrape {
    text: String,
    samples: BTreeMap<Series, f64>,
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let mut samples = BTreeMap::new();
        let mut help = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
                help.insert(name.to_owned(), text.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("a TYPE line has a kind");
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
                None => (series, BTreeMap::new()),
            };
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            samples.insert((name.to_owned(), labels), value);
        }
        Scrape {
            text,
            samples,
            help,
            types,
        }
    }

    /// The value of the series with exactly these labels, if present.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Like [`Scrape::get`], for a series that must be there.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in:\n{}", self.text))
    }

    /// The sum over every series of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// How much the series grew since `before` (where it may not exist
    /// yet); it must exist now.
    fn grew(&self, before: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels) - before.get(name, labels).unwrap_or(0.0)
    }
}

/// `a="x",b="y\"z"` as a map.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('"'), "a label value is quoted: {text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape in {text}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

async fn scrape(served: &Served) -> Scrape {
    let resp = reqwest::get(format!("{}/metrics", served.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    Scrape::parse(resp.text().await.unwrap())
}

const PASSWORD: &str = "metrics-admin-password";

async fn serve(b: Backend, dir: &tempfile::TempDir, args: &[&str]) -> Served {
    let data = dir.path().join("data");
    let mut serve = Serve::new(&data).backend(b).await.admin_password(PASSWORD);
    for a in args {
        serve = serve.arg(a);
    }
    serve.start()
}

const REQUESTS: &str = "tessera_http_requests_total";
const DURATION: &str = "tessera_http_request_duration_seconds";

async fn requests_blocks_and_polls_are_counted(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(b, &dir, &[]).await;
    let base = format!("{}/api/v1", served.url());
    let token = login_token(&base, "admin", PASSWORD, "metrics").await;
    let http = reqwest::Client::new();
    let before = scrape(&served).await;

    // The same bytes under two names: stored once, deduplicated once.
    let data = random_data(300 << 10, 7);
    for name in [format!("/{SECRET}.txt"), format!("/copy-of-{SECRET}.txt")] {
        let resp = http
            .put(format!("{base}/files/content"))
            .query(&[("path", name.as_str())])
            .bearer_auth(&token)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }
    let mut listed = 0;
    for _ in 0..3 {
        let resp = http
            .get(format!("{base}/files/list"))
            .query(&[("path", "/")])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains(SECRET));
        listed += body.len();
    }
    // A path no route has, naming the file: counted without its path.
    let resp = http
        .get(format!("{base}/files/{SECRET}.txt"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let after = scrape(&served).await;
    let put = [
        ("method", "PUT"),
        ("route", "/api/v1/files/content"),
        ("status", "201"),
    ];
    let list = [
        ("method", "GET"),
        ("route", "/api/v1/files/list"),
        ("status", "200"),
    ];
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(after.grew(&before, REQUESTS, &put), 2.0);
    assert_eq!(after.grew(&before, REQUESTS, &list), 3.0);
    assert_eq!(after.grew(&before, REQUESTS, &unmatched), 1.0);
    for labels in [&put, &list] {
        let count = format!("{DURATION}_count");
        assert_eq!(
            after.grew(&before, &count, labels),
            after.grew(&before, REQUESTS, labels),
            "one latency observation per request: {labels:?}"
        );
        let mut inf = labels.to_vec();
        inf.push(("le", "+Inf"));
        assert_eq!(
            after.grew(&before, &format!("{DURATION}_bucket"), &inf),
            after.grew(&before, REQUESTS, labels),
        );
        let sum = after.grew(&before, &format!("{DURATION}_sum"), labels);
        assert!(sum > 0.0 && sum < 60.0, "{labels:?} took {sum} s in all");
    }
    // Body bytes as they streamed: both uploads in, the listings out.
    let by_route = |route| [("method", "PUT"), ("route", route)];
    assert_eq!(
        after.grew(
            &before,
            "tessera_http_request_body_bytes_total",
            &by_route("/api/v1/files/content")
        ),
        (2 * data.len()) as f64
    );
    assert_eq!(
        after.grew(
            &before,
            "tessera_http_response_body_bytes_total",
            &[("method", "GET"), ("route", "/api/v1/files/list")]
        ),
        listed as f64
    );
    // One block (300 KiB is under the 1 MiB minimum), stored once.
    assert_eq!(after.grew(&before, "tessera_blocks_stored_total", &[]), 1.0);
    assert_eq!(
        after.grew(&before, "tessera_blocks_stored_bytes_total", &[]),
        data.len() as f64
    );
    assert_eq!(
        after.grew(&before, "tessera_blocks_deduplicated_total", &[]),
        1.0
    );
    assert_eq!(
        after.grew(&before, "tessera_blocks_deduplicated_bytes_total", &[]),
        data.len() as f64
    );
    // No label anywhere names the file, the raw path or the query.
    for line in after.text.lines() {
        assert!(!line.contains(SECRET), "a metric names a file: {line}");
    }
    for (name, labels) in after.samples.keys() {
        if let Some(route) = labels.get("route") {
            assert!(
                route == "unmatched" || route.starts_with('/'),
                "{name}: route {route}"
            );
        }
    }

    // A held long poll is seen while it waits, and leaves with it.
    let polls = "tessera_long_polls_held";
    assert_eq!(after.value(polls, &[]), 0.0);
    let latest: serde_json::Value = http
        .get(format!("{base}/changes/latest"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cursor = latest["cursor"].as_str().unwrap().to_owned();
    let poll = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tokio::spawn(async move {
            http.get(format!("{base}/changes/poll"))
                .query(&[("cursor", cursor.as_str()), ("timeout", "60")])
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        })
    };
    wait_for_presence(&http, &base, &token, 1).await;
    let held = scrape(&served).await;
    assert_eq!(held.value(polls, &[]), 1.0);
    let poll_route = [
        ("method", "GET"),
        ("route", "/api/v1/changes/poll"),
        ("status", "200"),
    ];
    assert_eq!(
        held.get(REQUESTS, &poll_route),
        None,
        "a poll is counted when it answers"
    );
    let resp = http
        .post(format!("{base}/files/mkdir"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"path": "/woken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let answer = poll.await.unwrap();
    assert_eq!(answer["changes"], true, "{answer}");
    let done = scrape(&served).await;
    assert_eq!(done.value(polls, &[]), 0.0);
    assert_eq!(done.value(REQUESTS, &poll_route), 1.0);
}

/// Waits until `n` long polls of the user are held (presence counts them).
async fn wait_for_presence(http: &reqwest::Client, base: &str, token: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p: serde_json::Value = http
            .get(format!("{base}/presence"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let held: u64 = p["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["connections"].as_u64().unwrap())
            .sum();
        if held == n {
            return;
        }
        assert!(Instant::now() < deadline, "{held} polls held, not {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn workers_and_the_database_pool_are_shown(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(b, &dir, &[]).await;
    let base = format!("{}/api/v1", served.url());
    let token = login_token(&base, "admin", PASSWORD, "metrics").await;
    let before = scrape(&served).await;
    let ran: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/admin/workers/pending/run"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ran["state"], "idle", "{ran}");
    let after = scrape(&served).await;
    let runs = "tessera_worker_runs_total";
    let idle = [("outcome", "idle"), ("worker", "pending")];
    assert!(after.grew(&before, runs, &idle) >= 1.0);
    assert_eq!(
        after.sum(runs, &[("worker", "pending")]),
        after.sum(
            "tessera_worker_run_duration_seconds_count",
            &[("worker", "pending")]
        ),
        "one duration per run"
    );
    assert_eq!(
        after.value(
            "tessera_worker_runs_total",
            &[("outcome", "failed"), ("worker", "pending")]
        ),
        0.0,
        "outcomes are known before they happen, so a zero is shown"
    );

    let max = match b {
        Backend::Sqlite => 8.0,
        Backend::Postgres => 16.0,
    };
    assert_eq!(after.value("tessera_db_pool_max_connections", &[]), max);
    let idle = after.value("tessera_db_pool_connections", &[("state", "idle")]);
    let busy = after.value("tessera_db_pool_connections", &[("state", "in_use")]);
    assert!(idle + busy >= 1.0 && idle + busy <= max, "{idle} + {busy}");

    // Registered before any failover, so alerts can use it from the start.
    assert_eq!(after.value("tessera_db_failovers_total", &[]), 0.0);
    assert_eq!(
        after.value(
            "tessera_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Every family has its HELP and TYPE, and only Tessera's own are shown.
    let families: std::collections::BTreeSet<String> = after
        .samples
        .keys()
        .map(|(name, _)| family(name, &after.types))
        .collect();
    for name in &families {
        assert!(name.starts_with("tessera_"), "{name}");
        assert!(
            after.help.get(name).is_some_and(|h| !h.is_empty()),
            "no HELP for {name}"
        );
        let kind = &after.types[name];
        if name.ends_with("_total") {
            assert_eq!(kind, "counter", "{name}");
        }
        if name.ends_with("_seconds") {
            assert_eq!(kind, "histogram", "{name}");
        }
    }
    for name in [
        REQUESTS,
        DURATION,
        "tessera_http_request_body_bytes_total",
        "tessera_http_response_body_bytes_total",
        "tessera_blocks_stored_total",
        "tessera_blocks_stored_bytes_total",
        "tessera_blocks_deduplicated_total",
        "tessera_blocks_deduplicated_bytes_total",
        "tessera_long_polls_held",
        "tessera_worker_runs_total",
        "tessera_worker_run_duration_seconds",
        "tessera_db_pool_connections",
        "tessera_db_pool_max_connections",
        "tessera_db_failovers_total",
    ] {
        assert!(after.help.contains_key(name), "{name} is not described");
    }
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum` and
/// `_count` belong to the histogram).
fn family(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_token_keeps_metrics_private() {
    let dir = tempfile::tempdir().unwrap();
    let token = "scrape-token-0123456789";
    let served = serve(Backend::Sqlite, &dir, &["--metrics-token", token]).await;
    let url = format!("{}/metrics", served.url());
    let http = reqwest::Client::new();
    let without = http.get(&url).send().await.unwrap();
    assert_eq!(without.status(), 401);
    assert_eq!(without.headers()["www-authenticate"], "Bearer");
    let body = without.text().await.unwrap();
    assert!(!body.contains("tessera_"), "{body}");
    for wrong in ["scrape-token-0123456788", "scrape-token", ""] {
        let resp = http.get(&url).bearer_auth(wrong).send().await.unwrap();
        assert_eq!(resp.status(), 401, "token {wrong:?}");
    }
    let resp = http.get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("# TYPE tessera_http_requests_total counter"),
        "{text}"
    );
    // The refused scrapes were requests too, counted as such.
    let scrape = Scrape::parse(text);
    assert_eq!(
        scrape.value(
            REQUESTS,
            &[("method", "GET"), ("route", "/metrics"), ("status", "401")]
        ),
        4.0
    );
    // Health checks stay open.
    let health = http
        .get(format!("{}/healthz", served.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
