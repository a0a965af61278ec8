//! One cheap request must not hurt everyone: the login brake and the cap on
//! password checks, header and body timeouts, the connection cap, per-user
//! caps on long polls and upload sessions, and a private data folder.
//! Real servers on loopback, real HTTP, real sockets and files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::process::{Serve, vm_hwm_kib};
use crate::common::{Backend, TestServer};
use reqwest::{Method, StatusCode};

on_both_backends!(
    parallel_wrong_passwords_are_braked_before_they_are_checked,
    a_success_does_not_forgive_failures_racing_it,
    forwarded_for_is_read_only_from_trusted_proxies,
    overlong_usernames_are_refused_before_any_work,
    long_polls_per_user_are_capped,
    upload_sessions_per_user_are_capped,
);

async fn login_as(
    url: &str,
    user: &str,
    password: &str,
    forwarded: Option<&str>,
) -> reqwest::Response {
    let client = reqwest::Client::new();
    let mut req = client
        .post(format!("{url}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": user, "password": password, "device": "d"}));
    if let Some(ip) = forwarded {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

async fn make_user(s: &TestServer, name: &str, password: &str) {
    let hash = tessera_server::auth::hash_password(password).unwrap();
    s.running.meta().create_user(name, &hash).await.unwrap();
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .expect("a 429 says when to retry")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Statuses of `n` logins sent at once.
async fn burst(url: &str, user: &str, password: &str, n: usize) -> Vec<StatusCode> {
    let all = (0..n).map(|_| login_as(url, user, password, None));
    let answers = futures::future::join_all(all).await;
    answers
        .iter()
        .map(|r| {
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                assert!(retry_after(r) >= 1);
            }
            r.status()
        })
        .collect()
}

fn count(statuses: &[StatusCode], which: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == which).count()
}

async fn parallel_wrong_passwords_are_braked_before_they_are_checked(backend: Backend) {
    let s = TestServer::start(backend).await;
    make_user(&s, "bob", "bob-password").await;
    let statuses = burst(&s.url, "bob", "wrong", 80).await;
    let checked = count(&statuses, StatusCode::UNAUTHORIZED);
    let braked = count(&statuses, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(checked + braked, 80, "{statuses:?}");
    assert!(
        checked <= 10,
        "80 parallel wrong passwords: {checked} were checked (401), the account allows 10"
    );
    let resp = login_as(&s.url, "bob", "bob-password", None).await;
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the account stays braked, even for the right password"
    );
}

async fn a_success_does_not_forgive_failures_racing_it(backend: Backend) {
    // Two checks at a time, so the owner's check waits behind the guesses.
    // A long wait for a turn: on a slow machine the owner's check may wait
    // behind all eight guesses, and that wait is not what is tested here.
    let s = TestServer::start_with(backend, |c| {
        c.max_password_checks = 2;
        c.password_check_wait = Duration::from_secs(60);
    })
    .await;
    make_user(&s, "bob", "bob-password").await;
    // Eight wrong guesses in flight while the owner logs in.
    let wrong = burst(&s.url, "bob", "wrong", 8);
    let right = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        login_as(&s.url, "bob", "bob-password", None).await
    };
    let (statuses, right) = futures::join!(wrong, right);
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(count(&statuses, StatusCode::UNAUTHORIZED), 8);
    // The success forgives only failures recorded before it began (the
    // owner's request arrives while the first checks still run, so none or
    // a few: on a loaded machine its start can slip behind three or four);
    // the ones that raced it still count, so the limit of ten is nearly
    // full. Wiping them all let eight or more further guesses in.
    let mut checked = 0;
    while login_as(&s.url, "bob", "wrong", None).await.status() == StatusCode::UNAUTHORIZED {
        checked += 1;
        assert!(checked <= 10, "the brake never engaged");
    }
    println!("guesses checked after the owner's login: {checked}");
    assert!(
        checked <= 6,
        "{checked} more guesses were checked: the failures racing a success must not be wiped out by it"
    );
}

async fn forwarded_for_is_read_only_from_trusted_proxies(backend: Backend) {
    // Fifty failures from one address (the per-address limit), each for a
    // different name so the per-account limit plays no part.
    async fn fail_fifty(url: &str, from: &str) {
        for i in 0..50 {
            let resp = login_as(url, &format!("nobody{i}"), "x", Some(from)).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        }
    }
    let proxied = TestServer::start_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    fail_fifty(&proxied.url, "203.0.113.7").await;
    let same = login_as(&proxied.url, "nobody", "x", Some("203.0.113.7")).await;
    assert_eq!(same.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = login_as(&proxied.url, "nobody", "x", Some("198.51.100.1")).await;
    assert_eq!(
        other.status(),
        StatusCode::UNAUTHORIZED,
        "behind a trusted proxy, one client's failures must not brake another's"
    );

    // From a peer that is not a trusted proxy the header is the client's
    // own claim and changes nothing.
    let direct = TestServer::start(backend).await;
    fail_fifty(&direct.url, "203.0.113.7").await;
    let spoofed = login_as(&direct.url, "nobody", "x", Some("198.51.100.1")).await;
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
}

async fn overlong_usernames_are_refused_before_any_work(backend: Backend) {
    let s = TestServer::start(backend).await;
    let name = "n".repeat(65);
    let resp = login_as(&s.url, &name, "x", None).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("64 bytes"), "{message}");
    // A huge one is refused as well, without being read whole: the answer
    // (413) may come, and the connection close, before the client has
    // finished sending, which the client then sees as a broken pipe.
    let huge = serde_json::json!({"username": "n".repeat(4 << 20), "password": "x", "device": "d"});
    match reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", s.url))
        .json(&huge)
        .send()
        .await
    {
        Ok(resp) => assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let health = reqwest::get(format!("{}/healthz", s.url)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Refused names are not counted: the brake has nothing on them.
    for _ in 0..12 {
        let resp = login_as(&s.url, &name, "x", None).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
    // A name of exactly 64 bytes is a name like any other.
    let resp = login_as(&s.url, &"n".repeat(64), "x", None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

async fn long_polls_per_user_are_capped(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_polls_per_user = 3).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let cursor = alice.latest_cursor().await.unwrap();
    let held = {
        let alice = alice.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move {
            futures::future::join_all((0..3).map(|_| alice.poll(&cursor, 3))).await
        })
    };
    // Wait until the three polls are held (presence counts them).
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held: u32 = alice
            .presence()
            .await
            .unwrap()
            .devices
            .iter()
            .map(|d| d.connections)
            .sum();
        if held >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the three polls are held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = alice
        .request(Method::GET, "/changes/poll")
        .query(&[("cursor", cursor.as_str()), ("timeout", "3")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&resp) >= 1);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("long polls"),
        "{body}"
    );
    // Other users are not affected.
    let bob_cursor = bob.latest_cursor().await.unwrap();
    bob.poll(&bob_cursor, 1).await.unwrap();
    for answer in held.await.unwrap() {
        assert!(!answer.unwrap().changes);
    }
    // Once they ended, alice may poll again.
    alice.poll(&cursor, 1).await.unwrap();
}

async fn tus_create(r: &tessera_client::Remote, path: &str) -> reqwest::Response {
    use base64::Engine;
    let meta = format!(
        "path {}",
        base64::engine::general_purpose::STANDARD.encode(path)
    );
    r.request(Method::POST, "/tus/")
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .header("Upload-Metadata", meta)
        .send()
        .await
        .unwrap()
}

async fn upload_sessions_per_user_are_capped(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_upload_sessions_per_user = 3).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let mut sessions = Vec::new();
    for i in 0..3 {
        let resp = tus_create(&alice, &format!("/f{i}")).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        sessions.push(resp.headers()["location"].to_str().unwrap().to_owned());
    }
    let resp = tus_create(&alice, "/f3").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unfinished uploads"),
        "{body}"
    );
    assert!(
        alice.meta("/f3").await.is_err(),
        "a refused upload leaves nothing behind"
    );
    // Another user has caps of their own.
    assert_eq!(tus_create(&bob, "/b").await.status(), StatusCode::CREATED);
    // Finishing one session frees a place.
    let first = sessions[0]
        .strip_prefix(tessera_proto::API_PREFIX)
        .unwrap()
        .to_owned();
    let resp = alice
        .request(Method::PATCH, &first)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(vec![7u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        tus_create(&alice, "/f3").await.status(),
        StatusCode::CREATED
    );
    // Ending one (DELETE) does as well.
    let second = sessions[1]
        .strip_prefix(tessera_proto::API_PREFIX)
        .unwrap()
        .to_owned();
    let resp = alice
        .request(Method::DELETE, &second)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        tus_create(&alice, "/f4").await.status(),
        StatusCode::CREATED
    );
}

/// Reads until the server closes the connection; returns what came, or
/// None if it was still open after `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(String::from_utf8_lossy(&got).into_owned()),
        }
    }
    None
}

fn host(url: &str) -> &str {
    url.strip_prefix("http://").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Long on purpose: every kind of stalled client against one server,
// whose open descriptors are what the test watches.
async fn half_sent_headers_and_stalled_bodies_are_closed() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.header_timeout_secs = 1;
        c.body_timeout_secs = 1;
    })
    .await;
    let addr = host(&s.url).to_owned();
    let (headers, body) = tokio::task::spawn_blocking(move || {
        let mut half = TcpStream::connect(&addr).unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut stalled = TcpStream::connect(&addr).unwrap();
        stalled
            .write_all(
                b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{\"username\":",
            )
            .unwrap();
        let silent = TcpStream::connect(&addr).unwrap();
        let headers = read_until_closed(&mut half, Duration::from_secs(10));
        let body = read_until_closed(&mut stalled, Duration::from_secs(10));
        let mut silent = silent;
        let nothing = read_until_closed(&mut silent, Duration::from_secs(10));
        assert!(
            nothing.is_some(),
            "a connection that sends nothing stays open"
        );
        (headers, body)
    })
    .await
    .unwrap();
    assert!(
        headers.is_some(),
        "a connection that never finished its headers stays open"
    );
    let body = body.expect("a request whose body stalled stays open");
    println!("stalled body answered: {:?}", body.lines().next());

    // A long poll holds its request past both timeouts and still answers.
    let alice = s.user("alice").await;
    let cursor = alice.latest_cursor().await.unwrap();
    let started = Instant::now();
    let answer = alice.poll(&cursor, 3).await.unwrap();
    assert!(!answer.changes);
    println!("a 3 s long poll answered after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_place() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.max_connections = 4;
        c.header_timeout_secs = 30;
    })
    .await;
    let addr = host(&s.url).to_owned();
    let healthz = format!("{}/healthz", s.url);
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let waiting = tokio::time::timeout(Duration::from_secs(1), client.get(&healthz).send()).await;
    assert!(
        waiting.is_err(),
        "with 4 connections open and a cap of 4, a fifth is not served"
    );
    idle.pop();
    let served = tokio::time::timeout(Duration::from_secs(10), client.get(&healthz).send())
        .await
        .expect("once a connection closes, the waiting one is served")
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    drop(idle);
    // Shutdown still completes with connections open.
    let started = Instant::now();
    let _held = TcpStream::connect(&addr).unwrap();
    s.running.shutdown().await.unwrap();
    println!(
        "shutdown with an idle connection took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_does_not_grow_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let served = Serve::new(&dir.path().join("data")).start();
    let url = served.url();
    let before = vm_hwm_kib(served.pid());
    // Unknown names, no account needed: each is checked against the dummy.
    let all = (0..60).map(|i| {
        let url = url.clone();
        async move { login_as(&url, &format!("nobody{i}"), "x", None).await }
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(all)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    let after = vm_hwm_kib(served.pid());
    let grown_mib = (after.saturating_sub(before)) / 1024;
    println!(
        "60 parallel logins: VmHWM {} -> {} MiB (+{grown_mib} MiB); 401: {}, 429: {}",
        before / 1024,
        after / 1024,
        count(&statuses, StatusCode::UNAUTHORIZED),
        count(&statuses, StatusCode::TOO_MANY_REQUESTS)
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Each Argon2 check holds about 19 MiB; 60 at once held over a GiB.
    assert!(
        grown_mib < 300,
        "60 parallel logins grew the server's peak memory by {grown_mib} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_cannot_starve_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let served = Serve::new(&dir.path().join("data"))
        .shell_prefix("ulimit -n 96 &&")
        .arg("--header-timeout-secs")
        .arg("2")
        .start();
    let listen = served.listen.clone();
    let addr = listen.clone();
    let healthy = tokio::task::spawn_blocking(move || {
        // More half-sent requests than the server has descriptors.
        let _held: Vec<TcpStream> = (0..110)
            .filter_map(|_| {
                let mut c = TcpStream::connect(&addr).ok()?;
                c.write_all(b"GET /healthz HTTP/1.1\r\n").ok()?;
                Some(c)
            })
            .collect();
        let started = Instant::now();
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answer = read_until_closed(&mut c, Duration::from_secs(30));
        (answer, started.elapsed())
    })
    .await
    .unwrap();
    let (answer, took) = healthy;
    let answer = answer.expect("/healthz answered within 30 s");
    println!("/healthz behind 110 half-sent requests answered after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_is_private() {
    use std::os::unix::fs::PermissionsExt;
    // The default blocks folder's mode is checked, so it is used on any run.
    let s = TestServer::start_with(Backend::Sqlite, |c| c.store = None).await;
    s.user("alice").await;
    let data = s.data_dir();
    let check = |data: &Path| {
        let octal = |p: &Path| format!("{:o}", mode(p));
        assert_eq!(octal(data), "700", "data folder");
        assert_eq!(octal(&data.join("blocks")), "700", "blocks folder");
        for f in ["meta.db", "meta.db-wal", "meta.db-shm", "master.key"] {
            assert_eq!(octal(&data.join(f)), "600", "{f}");
        }
    };
    check(&data);
    // An installation made with loose modes is tightened at start.
    let loose =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    loose(&data, 0o755);
    loose(&data.join("blocks"), 0o755);
    for f in ["meta.db", "meta.db-wal", "meta.db-shm"] {
        loose(&data.join(f), 0o644);
    }
    let s = s.restart().await;
    check(&s.data_dir());
    s.login("alice", "alice-password", "phone").await;
}
