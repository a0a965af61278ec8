//! What the block store needs from an S3 server, checked against the one
//! `scripts/s3-test.sh` starts (SeaweedFS): a create-only put refuses a
//! second write of a name, and `tessera serve` with a wrong secret, a
//! missing bucket, an unreachable endpoint or a plain-HTTP endpoint not
//! allowed stops at once, non-zero, naming what to fix; writes the
//! network breaks are retried. Skipped, with a note, unless
//! `TESSERA_TEST_S3` names a bucket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::{Duration, Instant};

use tessera_server::blocks::BlockError;
use tessera_server::blocks::store::open_object_store;
use tessera_server::blocks::tiers::{Copy, Tiers};

use tessera_client::Remote;

use crate::common::process::{Serve, command, said};
use crate::common::relay::{Fault, Relay};
use crate::common::{random_data, test_store_url};

/// A store URL of its own on the suite's S3 server, or `None` (and a
/// note) when the suite runs without one.
fn s3_store(dir: &tempfile::TempDir) -> Option<String> {
    let url = test_store_url(dir.path());
    if url.is_none() {
        println!("skipped: TESSERA_TEST_S3 is not set (scripts/s3-test.sh sets it)");
    }
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_only_put_refuses_a_second_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = s3_store(&dir) else {
        return;
    };
    let tiers = Tiers::new(open_object_store(&url).unwrap());
    tiers.create("packs/once", b"first".to_vec()).await.unwrap();
    let err = tiers
        .create("packs/once", b"second".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BlockError::Store(object_store::Error::AlreadyExists { .. })
        ),
        "{err}"
    );
    assert_eq!(
        &tiers.get("packs/once", Copy::Main).await.unwrap()[..],
        b"first"
    );
}

/// `tessera serve` on `store` with `env` set, given 30 s to give up.
async fn serve(dir: &tempfile::TempDir, store: &str, env: &[(&str, &str)]) -> Output {
    let data = dir.path().join("data");
    let args = [
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--store",
        store,
    ];
    let mut cmd = command(&dir.path().join("cfg"), &args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_s3_settings_stop_the_start_naming_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = s3_store(&dir) else {
        return;
    };
    let bucket = url.trim_start_matches("s3://").split('/').next().unwrap();
    let missing = url.replacen(bucket, "no-such-bucket", 1);
    /// A start that must fail: on `store` with `env`, saying `says`.
    struct Case<'a> {
        what: &'a str,
        store: &'a str,
        env: &'a [(&'a str, &'a str)],
        says: &'a str,
    }
    let credentials = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
    let cases = [
        Case {
            what: "a wrong secret",
            store: &url,
            env: &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")],
            says: credentials,
        },
        Case {
            what: "an unknown access key",
            store: &url,
            env: &[("AWS_ACCESS_KEY_ID", "NOSUCHKEY")],
            says: credentials,
        },
        Case {
            what: "a missing bucket",
            store: &missing,
            env: &[],
            says: "the bucket was not found",
        },
        Case {
            what: "an unreachable endpoint",
            store: &url,
            env: &[("AWS_ENDPOINT", "http://127.0.0.1:1")],
            says: "cannot connect (check AWS_ENDPOINT",
        },
        Case {
            what: "a plain-HTTP endpoint not allowed",
            store: &url,
            env: &[("AWS_ALLOW_HTTP", "false")],
            says: "set AWS_ALLOW_HTTP=true",
        },
    ];
    for Case {
        what,
        store,
        env,
        says,
    } in cases
    {
        let started = Instant::now();
        let out = serve(&dir, store, env).await;
        let text = said(&out);
        assert!(!out.status.success(), "{what}: the server started: {text}");
        assert!(text.contains(says), "{what}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: it took {:?} to give up",
            started.elapsed()
        );
        println!("{what}: {}", text.lines().last().unwrap_or_default());
    }
    // The same settings put right, it serves.
    let served = Serve::new(&dir.path().join("data")).start();
    assert!(!served.listen.is_empty());
}

/// Writes to the store that the network breaks: a request reset before it
/// reaches the store is sent again; a create whose answer is lost is sent
/// again too, finds the object its first attempt wrote, and counts as
/// done. Either way the upload succeeds and reads back. (`tessera serve`
/// as a process, its endpoint a relay in front of the S3 server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_write_to_the_store_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    if s3_store(&dir).is_none() {
        return;
    }
    let endpoint = std::env::var("AWS_ENDPOINT").expect("AWS_ENDPOINT names the S3 server");
    let relay = Relay::start(&endpoint).await;
    let served = Serve::new(&dir.path().join("data"))
        .shell_prefix(&format!("export AWS_ENDPOINT={};", relay.url))
        .admin_password("a-long-password")
        .start();
    let anon = Remote::new(&served.url(), None).unwrap();
    let token = anon
        .login("admin", "a-long-password", "test")
        .await
        .unwrap()
        .token;
    let r = anon.with_token(token);
    for (i, fault) in [Fault::Reset, Fault::CutAnswer(0)].into_iter().enumerate() {
        relay.take_events();
        *relay.planned.lock().unwrap() = Some(("PUT ".to_owned(), fault));
        let data = random_data(300_000, i as u64);
        let path = format!("/f{i}.bin");
        r.upload(&path, None, reqwest::Body::from(data.clone()))
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        let events = relay.take_events();
        assert_eq!(events.len(), 1, "{fault:?}: the fault happened: {events:?}");
        let back = r
            .download(&path, None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(back[..] == data[..], "{fault:?}: {path} reads back");
    }
}

/// Objects of 16 MiB (the largest block) written create-only and read
/// back, through the code the server uses: to a folder (fsynced), then
/// to the S3 server. Prints MB/s for each; run by hand:
/// `scripts/s3-test.sh s3::object_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn object_throughput() {
    const OBJECTS: usize = 16;
    const SIZE: usize = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let Some(s3) = s3_store(&dir) else {
        return;
    };
    let folder = format!("file://{}", dir.path().join("blocks").display());
    let objects: Vec<Vec<u8>> = (0..OBJECTS).map(|i| random_data(SIZE, i as u64)).collect();
    let mb = (OBJECTS * SIZE) as f64 / 1e6;
    for (what, url) in [("folder", folder), ("S3", s3)] {
        let tiers = Tiers::new(open_object_store(&url).unwrap());
        let t = Instant::now();
        for (i, bytes) in objects.iter().enumerate() {
            tiers
                .create(&format!("blocks/{i}"), bytes.clone())
                .await
                .unwrap();
        }
        let write = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (i, bytes) in objects.iter().enumerate() {
            let back = tiers.get(&format!("blocks/{i}"), Copy::Main).await.unwrap();
            assert!(back[..] == bytes[..]);
        }
        let read = t.elapsed().as_secs_f64();
        println!(
            "{what}: {OBJECTS} objects of 16 MiB, one at a time: write {write:.2} s ({:.0} MB/s), \
             read {read:.2} s ({:.0} MB/s)",
            mb / write,
            mb / read
        );
    }
}
