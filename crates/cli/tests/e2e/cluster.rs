//! Several instances on one PostgreSQL database and one store: what one
//! instance knows, every other sees. The login brake counts guesses made
//! through any of them, a device holding a poll on one is present on all,
//! and each background worker runs on one instance at a time, moving to
//! another when its instance stops.

use std::time::{Duration, Instant};

use futures::StreamExt;

use reqwest::StatusCode;
use tessera_proto::api::WorkerState;
use tessera_server::Running;

use crate::common::{Backend, TestServer};

/// A second instance beside `a`, on its database and store.
async fn beside(a: &TestServer) -> (Running, String) {
    let mut second = a.config.clone();
    second.listen = "127.0.0.1:0".parse().unwrap();
    let b = tessera_server::start(second).await.unwrap();
    let url = format!("http://{}", b.addr);
    (b, url)
}

/// alice, logged in on the instance at `url` as her phone.
async fn phone_on(url: &str) -> tessera_client::Remote {
    let anon = tessera_client::Remote::new(url, None).unwrap();
    let login = anon
        .login("alice", "alice-password", "phone")
        .await
        .unwrap();
    anon.with_token(login.token)
}

type Polled = Result<tessera_proto::api::PollResponse, tessera_client::ClientError>;

/// A long poll of `r` from its present position, under way.
async fn hold_poll(r: &tessera_client::Remote) -> tokio::task::JoinHandle<Polled> {
    let cursor = r.latest_cursor().await.unwrap();
    let r = r.clone();
    tokio::spawn(async move { r.poll(&cursor, 30).await })
}

/// Asks `/readyz` at `url` until it answers 503 `draining`, before
/// `deadline` (the instance still serves meanwhile).
async fn until_draining(url: &str, deadline: Instant) {
    loop {
        let resp = reqwest::get(format!("{url}/readyz")).await.unwrap();
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(resp.text().await.unwrap(), "draining");
            return;
        }
        assert!(Instant::now() < deadline, "never draining");
    }
}

async fn login_status(url: &str, user: &str, password: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{url}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": user, "password": password, "device": "d"}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Ten wrong passwords spread over two instances reach the account's
/// limit of ten: each instance counting its own let twenty through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_through_two_instances_meet_one_brake() {
    let a = TestServer::start(Backend::Postgres).await;
    let (b, b_url) = beside(&a).await;
    a.user("alice").await;
    for i in 0..10 {
        let url = if i % 2 == 0 { &a.url } else { &b_url };
        assert_eq!(
            login_status(url, "alice", "wrong").await,
            StatusCode::UNAUTHORIZED,
            "guess {i}"
        );
    }
    for url in [&a.url, &b_url] {
        assert_eq!(
            login_status(url, "alice", "alice-password").await,
            StatusCode::TOO_MANY_REQUESTS,
            "the eleventh attempt, through either instance, waits out the window"
        );
    }
    b.shutdown().await.unwrap();
}

/// A device holding a long poll on B is listed by A's `/presence`, and
/// leaves A's list once its poll ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_held_on_one_instance_is_present_on_another() {
    let a = TestServer::start(Backend::Postgres).await;
    let (b, b_url) = beside(&a).await;
    let on_a = a.user("alice").await;
    let on_b = phone_on(&b_url).await;
    let poll = hold_poll(&on_b).await;
    let seen = until(&on_a, |devices| devices == [("phone".to_owned(), 1)]).await;
    println!("a poll on B was present on A after {seen:?}");
    // A change ends the poll; the device then leaves A's list too.
    on_a.upload("/x.txt", None, reqwest::Body::from("x"))
        .await
        .unwrap();
    assert!(poll.await.unwrap().unwrap().changes);
    until(&on_a, |devices| devices.is_empty()).await;
    b.shutdown().await.unwrap();
}

/// Polls `/presence` through `r` until `want` holds of its devices; answers
/// how long that took.
async fn until(r: &tessera_client::Remote, want: impl Fn(&[(String, u32)]) -> bool) -> Duration {
    let began = Instant::now();
    loop {
        let devices: Vec<(String, u32)> = r
            .presence()
            .await
            .unwrap()
            .devices
            .into_iter()
            .map(|d| (d.device, d.connections))
            .collect();
        if want(&devices) {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "presence still {devices:?} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With two instances, each worker steps on one of them while the other
/// stands by naming it; stopping that instance hands its workers over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_runs_on_one_instance_and_moves_when_it_stops() {
    // A two-second pending TTL makes the expiry workers step every second.
    let a = TestServer::start_with(Backend::Postgres, |c| c.pending_ttl_secs = 2).await;
    let (b, _) = beside(&a).await;
    let worker = "pending";
    let status = |r: &Running| {
        r.workers()
            .statuses()
            .into_iter()
            .find(|w| w.name == worker)
            .unwrap()
    };
    // Wait until both have taken their turn: one ran, the other stood by.
    let began = Instant::now();
    let (ran, stood, b_holds) = loop {
        let (sa, sb) = (status(&a.running), status(&b));
        match (sa.state, sb.state) {
            (WorkerState::Standby, _) if sb.runs > 0 => break (sb, sa, true),
            (_, WorkerState::Standby) if sa.runs > 0 => break (sa, sb, false),
            _ => {}
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "no split after 30 s: {sa:?} / {sb:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stood.runs, 0, "the standby never stepped: {stood:?}");
    assert_eq!(stood.holder, ran.holder, "the standby names the holder");
    assert!(ran.holder.is_some());
    // Stop the instance that runs it; the other takes over.
    let survivor = if b_holds {
        b.shutdown().await.unwrap();
        a.running
    } else {
        a.running.shutdown().await.unwrap();
        b
    };
    let began = Instant::now();
    loop {
        let s = status(&survivor);
        if s.runs > 0 && s.state != WorkerState::Standby {
            assert_ne!(s.holder, ran.holder, "now held by the survivor");
            println!(
                "the {worker} worker moved after its instance stopped: {:?}",
                began.elapsed()
            );
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the worker did not move off the stopped instance: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    survivor.shutdown().await.unwrap();
}

/// A body sending `chunks` pieces of 1 KiB, one every `every`.
fn slow_body(chunks: usize, every: Duration) -> reqwest::Body {
    let stream = futures::stream::unfold(0, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok::<_, std::io::Error>(vec![b'a'; 1024]), i + 1))
    });
    reqwest::Body::wrap_stream(stream)
}

/// On shutdown an instance drains: `/readyz` fails while it still serves,
/// long polls end at once with the back-off hint, a request under way
/// finishes, and one that would never end is cut at the deadline, leaving
/// no file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_cuts_what_is_left_at_the_deadline() {
    let (drain, deadline) = (1, 3);
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.drain_secs = drain;
        c.shutdown_deadline_secs = deadline;
    })
    .await;
    let alice = s.user("alice").await;
    let url = s.url.clone();
    let cursor = alice.latest_cursor().await.unwrap();
    let poll = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.poll(&cursor, 60).await })
    };
    until(&alice, |d| d.len() == 1).await;
    let slow = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let body = slow_body(20, Duration::from_millis(100));
            alice.upload("/slow.bin", None, body).await
        })
    };
    let stalled = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let first = futures::stream::iter([Ok::<_, std::io::Error>(vec![b'b'; 10])]);
            let body = reqwest::Body::wrap_stream(first.chain(futures::stream::pending()));
            alice.upload("/stalled.bin", None, body).await
        })
    };
    let began = Instant::now();
    let restarting = tokio::spawn(s.restart());
    let answer = poll.await.unwrap().unwrap();
    assert!(
        !answer.changes && answer.backoff.is_some(),
        "the poll ended with the back-off hint: {answer:?}"
    );
    let poll_ended = began.elapsed();
    // Still serving, but not ready.
    until_draining(&url, began + Duration::from_secs(drain)).await;
    let entry = slow.await.unwrap().expect("the upload under way finished");
    assert_eq!(entry.size, Some(20 * 1024));
    assert!(
        stalled.await.unwrap().is_err(),
        "the stalled upload was cut"
    );
    let s = restarting.await.unwrap();
    let took = began.elapsed();
    println!("drain: the poll ended after {poll_ended:?}, the restart took {took:?}");
    assert!(
        took < Duration::from_secs(drain + deadline + 10),
        "shutdown waited past its deadline: {took:?}"
    );
    let got = alice.download("/slow.bin", None).await.unwrap();
    assert_eq!(got.bytes().await.unwrap().len(), 20 * 1024);
    let gone = alice.download("/stalled.bin", None).await;
    assert!(gone.is_err(), "no part of the cut upload is visible");
    drop(s);
}

/// Beyond its rate of new polls an instance answers 503 with a
/// Retry-After spread over the window, which the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_polls_beyond_the_rate_are_told_when_to_come_back() {
    let (rate, window) = (5, 4);
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.max_new_polls_per_sec = rate;
        c.poll_retry_window_secs = window;
    })
    .await;
    // Four users, ten polls each: within each user's own share, beyond the
    // instance's.
    let api = format!("{}/api/v1", s.url);
    let mut users = Vec::new();
    for name in ["ann", "ben", "cat", "dan"] {
        let remote = s.user(name).await;
        let cursor = remote.latest_cursor().await.unwrap();
        // Raw requests: the client library would wait and retry by itself.
        let token = crate::common::login_token(&api, name, &format!("{name}-password"), "d").await;
        users.push((remote, cursor, token));
    }
    let http = reqwest::Client::new();
    let polls = users.iter().flat_map(|(_, cursor, token)| {
        let http = http.clone();
        let url = format!("{}/api/v1/changes/poll", s.url);
        (0..10).map(move |_| {
            http.get(&url)
                .query(&[("cursor", cursor.as_str()), ("timeout", "1")])
                .bearer_auth(token)
                .send()
        })
    });
    let answers = futures::future::join_all(polls).await;
    let mut admitted = 0;
    let mut waits = Vec::new();
    for a in answers {
        let a = a.unwrap();
        if a.status().is_success() {
            admitted += 1;
            continue;
        }
        assert_eq!(a.status(), StatusCode::SERVICE_UNAVAILABLE);
        let wait: u64 = a
            .headers()
            .get("retry-after")
            .expect("a 503 says when to come back")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=window).contains(&wait), "retry after {wait} s");
        let body: serde_json::Value = a.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        waits.push(wait);
    }
    // One second's worth (and what refilled meanwhile), not all forty.
    // (A poll answered at once, there being changes, would not count.)
    assert!(
        (rate as usize..20).contains(&admitted),
        "{admitted} polls admitted"
    );
    waits.sort();
    waits.dedup();
    assert!(waits.len() > 1, "the waits are spread: {waits:?}");
    // The client library obeys: a poll turned away comes back when told
    // and is answered.
    let burst = users
        .iter()
        .flat_map(|(remote, cursor, _)| (0..5).map(move |_| remote.poll(cursor, 1)));
    let polled = futures::future::join_all(burst).await;
    assert!(
        polled.iter().all(|p| p.is_ok()),
        "every poll answered in the end: {:?}",
        polled
            .iter()
            .filter_map(|p| p.as_ref().err())
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
}

/// A change committed through an instance while it drains still wakes a
/// poll held on another instance (the notices went quiet with the drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_during_a_drain_still_wakes_other_instances() {
    let a = TestServer::start_with(Backend::Postgres, |c| c.drain_secs = 3).await;
    let (b, b_url) = beside(&a).await;
    let on_a = a.user("alice").await;
    let on_b = phone_on(&b_url).await;
    let poll = hold_poll(&on_b).await;
    until(&on_b, |d| d.len() == 1).await;
    let url = a.url.clone();
    let stopping = tokio::spawn(a.running.shutdown());
    // A drains: not ready, still serving.
    until_draining(&url, Instant::now() + Duration::from_secs(3)).await;
    let began = Instant::now();
    on_a.upload("/during-drain.txt", None, reqwest::Body::from("x"))
        .await
        .expect("a draining instance still serves");
    let answer = poll.await.unwrap().unwrap();
    assert!(answer.changes, "the poll on B woke: {answer:?}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "woken by the change, not by its timeout: {:?}",
        began.elapsed()
    );
    stopping.await.unwrap().unwrap();
    b.shutdown().await.unwrap();
}
