//! `tessera admin rotate-master-key` beside a serving installation: files
//! stay readable before and after a restart, the old key opens nothing,
//! and a rotation cut short after each of its steps (the process ends
//! abruptly there) leaves the store openable and is finished by running it
//! again or by the next start. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;

use crate::common::process::{command, finish_async, said};
use crate::common::{Backend, TestServer, random_data};
use tessera_client::Remote;

on_both_backends!(
    rotation_keeps_every_file_and_retires_the_old_key,
    a_rotation_cut_short_loses_nothing,
);

async fn tessera(s: &TestServer, args: &[&str], env: &[(&str, &str)]) -> Output {
    let install = s.install_args();
    let mut all = args.to_vec();
    all.extend(install.iter().map(String::as_str));
    let mut cmd = command(&s.scratch("cfg"), &all);
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish_async(cmd, None).await
}

fn key_file(s: &TestServer) -> String {
    std::fs::read_to_string(s.data_dir().join("master.key")).unwrap()
}

async fn fetch(r: &Remote, path: &str) -> Vec<u8> {
    r.download(path, None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

async fn rotation_keeps_every_file_and_retires_the_old_key(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let data = random_data(700_000, 1);
    alice
        .upload("/a.bin", None, reqwest::Body::from(data.clone()))
        .await
        .unwrap();
    let old = key_file(&s);

    let out = tessera(&s, &["admin", "rotate-master-key"], &[]).await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("opens nothing now"), "{}", said(&out));
    let new = key_file(&s);
    assert_ne!(old.trim(), new.trim());
    assert!(!s.data_dir().join("master.key.next").exists());
    assert_eq!(
        fetch(&alice, "/a.bin").await,
        data,
        "the running server reads on"
    );

    let s = s.restart().await;
    assert_eq!(fetch(&alice, "/a.bin").await, data, "and after a restart");
    let more = random_data(300_000, 2);
    alice
        .upload("/b.bin", None, reqwest::Body::from(more.clone()))
        .await
        .unwrap();
    assert_eq!(fetch(&alice, "/b.bin").await, more);

    // The old key opens nothing.
    let out = tessera(
        &s,
        &["admin", "fsck"],
        &[("TESSERA_MASTER_KEY", old.trim())],
    )
    .await;
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("wrong master key"), "{}", said(&out));
    let out = tessera(&s, &["admin", "fsck"], &[]).await;
    assert!(out.status.success(), "{}", said(&out));
}

/// Long on purpose: a rotation is cut short after each step, then the
/// store is opened, checked and read, and the rotation run again.
async fn a_rotation_cut_short_loses_nothing(b: Backend) {
    let mut s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let data = random_data(500_000, 3);
    alice
        .upload("/a.bin", None, reqwest::Body::from(data.clone()))
        .await
        .unwrap();
    for step in ["next-written", "rewrapped", "next-written", "rewrapped"] {
        let before = key_file(&s);
        let out = tessera(
            &s,
            &["admin", "rotate-master-key"],
            &[("TESSERA_CRASH_AT", step)],
        )
        .await;
        assert!(!out.status.success(), "cut short after {step}");
        assert!(
            s.data_dir().join("master.key.next").exists(),
            "the new key is kept beside the old after {step}"
        );
        // The store opens, with the old key or with the new one.
        s = s.restart().await;
        assert_eq!(fetch(&alice, "/a.bin").await, data, "after {step}");
        let out = tessera(&s, &["admin", "fsck"], &[]).await;
        assert!(out.status.success(), "after {step}: {}", said(&out));
        match step {
            // Nothing was re-wrapped: the old key is still the key.
            "next-written" => assert_eq!(key_file(&s), before),
            // Re-wrapped: the start finished the rename.
            _ => {
                assert_ne!(key_file(&s), before);
                assert!(!s.data_dir().join("master.key.next").exists());
            }
        }
        let out = tessera(&s, &["admin", "rotate-master-key"], &[]).await;
        assert!(
            out.status.success(),
            "run again after {step}: {}",
            said(&out)
        );
        s = s.restart().await;
        assert_eq!(fetch(&alice, "/a.bin").await, data);
    }
}
