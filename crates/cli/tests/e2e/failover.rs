//! The server on a PostgreSQL database named by several hosts, reached
//! through cables this test can cut: it starts on whichever host answers
//! as the primary, moves its pool to another host when its host dies, and
//! answers 503 with Retry-After, never 500 and never a false success, while
//! no host answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::{Backend, TestServer, names};

/// A TCP cable to PostgreSQL that can be cut (open connections close, new
/// ones are dropped at once) and mended.
struct Cable {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Cable {
    async fn start(upstream: SocketAddr) -> Arc<Cable> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let cable = Arc::new(Cable { addr, cut });
        let state = cable.cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *state.borrow() {
                    continue;
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        cable
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn mend(&self) {
        self.cut.send_replace(false);
    }
}

/// The test cluster's address, from TESSERA_TEST_POSTGRES.
fn cluster_addr() -> SocketAddr {
    let url = url::Url::parse(&std::env::var("TESSERA_TEST_POSTGRES").unwrap()).unwrap();
    let host = url.host_str().unwrap();
    format!("{host}:{}", url.port().unwrap_or(5432))
        .parse()
        .unwrap()
}

/// A port where nothing listens.
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// The test database's URL with its host replaced by `hosts`.
fn through(database: &str, hosts: &str) -> String {
    let url = url::Url::parse(database).unwrap();
    format!(
        "postgres://{}@{hosts}{}?target_session_attrs=read-write",
        url.username(),
        url.path()
    )
}

/// Uploads until one is acknowledged; every refusal on the way must be a
/// 503 that says when to retry. Answers how many were refused and the
/// time until the acknowledgement.
async fn upload_until_ok(r: &tessera_client::Remote, path: &str) -> (usize, Duration) {
    let began = Instant::now();
    let mut refused = 0;
    loop {
        match r
            .upload(path, None, reqwest::Body::from(path.to_owned()))
            .await
        {
            Ok(_) => return (refused, began.elapsed()),
            Err(e) => {
                assert_eq!(
                    e.status(),
                    Some(503),
                    "only 503 while the database is away: {e}"
                );
                let wait = e.retry_after().expect("a 503 says when to retry");
                refused += 1;
                // As a client should: come back when the server said.
                tokio::time::sleep(wait).await;
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "no acknowledgement within 60 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_follows_the_primary_across_hosts_and_outages_answer_503() {
    let pg = cluster_addr();
    let (one, two) = (Cable::start(pg).await, Cable::start(pg).await);
    let dead = dead_port().await;
    let hosts = format!(
        "127.0.0.1:{dead},127.0.0.1:{},127.0.0.1:{}",
        one.addr.port(),
        two.addr.port()
    );
    // The first host is down: the server starts on the second.
    let s = TestServer::start_with(Backend::Postgres, |c| {
        let database = c.database.clone().unwrap();
        c.database = Some(through(&database, &hosts));
    })
    .await;
    let alice = s.user("alice").await;
    alice
        .upload("/before.txt", None, reqwest::Body::from("before"))
        .await
        .unwrap();

    // Its host dies: the pool moves to the third.
    one.cut();
    let (refused, took) = upload_until_ok(&alice, "/during.txt").await;
    println!("host lost: {refused} requests answered 503, writes back after {took:?}");
    assert_eq!(s.running.meta().failovers(), 1, "the pool moved once");

    // No host at all: 503 for a body that cannot be sent again; a request
    // that can waits as Retry-After says and is answered once a host is
    // back.
    two.cut();
    let once = futures::stream::iter([Ok::<_, std::io::Error>(b"x".to_vec())]);
    let err = alice
        .upload("/nowhere.txt", None, reqwest::Body::wrap_stream(once))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(err.retry_after().is_some(), "{err}");
    let listing = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.list("/").await })
    };
    one.mend();
    listing
        .await
        .unwrap()
        .expect("the listing is answered once a host is back");
    let (refused, took) = upload_until_ok(&alice, "/after.txt").await;
    println!("all hosts lost then one back: {refused} more 503s, writes back after {took:?}");
    two.mend();

    assert_eq!(
        names(&alice, "/").await,
        ["after.txt", "before.txt", "during.txt"],
        "every acknowledged upload is there, and the refused one is not"
    );
}
