//! The storage lifecycle killed at random points: rounds of uploads,
//! deletions and purges, each ending with `tessera serve` killed (SIGKILL)
//! while collection, pack compaction, a cold move or the recompression runs
//! and an upload is under way, or with `tessera admin rotate-master-key`
//! killed mid-way.
//! After every kill the server starts again, `tessera admin fsck` finds
//! nothing wrong, and every live file reads back byte for byte.
//!
//! `TESSERA_LIFECYCLE_KILLS` sets the number of kills (default 32);
//! `TESSERA_LIFECYCLE_SEED` replays a run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use tessera_client::Remote;
use tessera_client::transfer::{SmallFile, upload_small_files};

use crate::common::process::{Serve, Served, command, finish_async, said};

const PASSWORD: &str = "lifecycle-kill-password";

fn start(data: &Path, cold: &Path) -> Served {
    Serve::new(data)
        .admin_password(PASSWORD)
        .arg("--gc-grace-secs")
        .arg("0")
        .arg("--cold-store")
        .arg(&format!("file://{}", cold.display()))
        .arg("--cold-after-secs")
        .arg("1")
        .arg("--recompress-after-secs")
        .arg("0")
        .start()
}

async fn login(served: &Served) -> Remote {
    let anon = Remote::new(&served.url(), None).unwrap();
    let resp = anon.login("admin", PASSWORD, "kill-test").await.unwrap();
    anon.with_token(resp.token)
}

async fn fsck_is_clean(cfg: &Path, data: &Path, cold: &Path, round: usize) {
    // The cold store comes from a configuration file, as an operator's would.
    let config = cfg.join("server.toml");
    std::fs::create_dir_all(cfg).unwrap();
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\ncold_store = \"file://{}\"\n",
            data.display(),
            cold.display()
        ),
    )
    .unwrap();
    let cmd = command(
        cfg,
        &["admin", "fsck", "--config", config.to_str().unwrap()],
    );
    let out = finish_async(cmd, None).await;
    assert!(out.status.success(), "round {round}: {}", said(&out));
}

/// Words in lines: text that zstd's higher levels shrink by a fifth more
/// than level 1, so the recompression rewrites it.
fn text_of(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma",
        "omega", "tau",
    ];
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        for _ in 0..rng.random_range(3..10) {
            v.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
            v.push(b' ');
        }
        v.extend_from_slice(format!("{}\n", rng.random_range(0..1000)).as_bytes());
    }
    v.truncate(len);
    v
}

fn data_of(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Long on purpose: one installation through many kills in turn, checked
// after each.
async fn lifecycle_work_survives_kill_9_at_random_points() {
    let kills: usize = std::env::var("TESSERA_LIFECYCLE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let seed: u64 = std::env::var("TESSERA_LIFECYCLE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().next_u64());
    println!("TESSERA_LIFECYCLE_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cold = dir.path().join("cold");
    let cfg = dir.path().join("cfg");
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut live: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut texts: Vec<String> = Vec::new();
    let mut next = 0usize;

    for round in 0..kills {
        let mut served = start(&data, &cold);
        let admin = login(&served).await;
        // Everything the last round left must be there, whole.
        for (path, want) in &live {
            let got = admin
                .download(path, None)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {path}: {e}"))
                .bytes()
                .await
                .unwrap();
            assert!(got[..] == want[..], "round {round}: {path} changed");
        }
        fsck_is_clean(&cfg, &data, &cold, round).await;

        // New files, some large, some small enough to travel in packs.
        for _ in 0..2 {
            let len = rng.random_range(1_000..1_500_000);
            let path = format!("/f{next}.bin");
            next += 1;
            let bytes = data_of(&mut rng, len);
            admin
                .upload(&path, None, reqwest::Body::from(bytes.clone()))
                .await
                .unwrap();
            live.insert(path, bytes);
        }
        let mut small = Vec::new();
        for _ in 0..rng.random_range(4..12) {
            let path = format!("/small/s{next}");
            next += 1;
            let len = rng.random_range(100..20_000);
            let bytes = if rng.random_bool(0.5) {
                texts.push(path.clone());
                text_of(&mut rng, len)
            } else {
                data_of(&mut rng, len)
            };
            let file = local.join(format!("s{next}"));
            std::fs::write(&file, &bytes).unwrap();
            small.push((
                SmallFile {
                    local: file,
                    remote: path,
                    base_rev: None,
                },
                bytes,
            ));
        }
        let list: Vec<SmallFile> = small.iter().map(|(f, _)| f.clone()).collect();
        for (r, (f, bytes)) in upload_small_files(&admin, &list)
            .await
            .unwrap()
            .into_iter()
            .zip(small)
        {
            r.unwrap();
            live.insert(f.remote, bytes);
        }
        // Edits of text files already there: the recompression stores the
        // new versions as deltas against the old ones.
        texts.retain(|p| live.contains_key(p));
        for path in texts.iter().rev().take(3) {
            let old = &live[path];
            let mid = old.len() / 2;
            let new = [&old[..mid], b"an edited line\n", &old[mid..]].concat();
            admin
                .upload(path, None, reqwest::Body::from(new.clone()))
                .await
                .unwrap();
            live.insert(path.clone(), new);
        }
        // Most of what is there goes, so collection and compaction have work.
        let paths: Vec<String> = live.keys().cloned().collect();
        for path in paths {
            if rng.random_bool(0.6) {
                admin.delete(&path).await.unwrap();
                live.remove(&path);
            }
        }
        admin.purge_trash(None).await.unwrap();
        // Past the one-second cold age of the real binary's wall clock, so
        // a cold move has blocks to move when the kill comes.
        tokio::time::sleep(Duration::from_millis(1100)).await;

        // The kill.
        let pause = Duration::from_millis(rng.random_range(0..60));
        match round % 5 {
            3 => {
                let data_arg = data.to_str().unwrap();
                let mut rotation = command(
                    &cfg,
                    &["admin", "rotate-master-key", "--data-dir", data_arg],
                )
                .spawn()
                .unwrap();
                tokio::time::sleep(pause).await;
                let _ = rotation.kill();
                let _ = rotation.wait();
                let _ = served.child.kill();
                let _ = served.child.wait();
            }
            kind => {
                let worker = match kind {
                    1 => "cold",
                    4 => "recompress",
                    _ => "gc",
                };
                let runner = admin.clone();
                let run = tokio::spawn(async move { runner.run_worker(worker).await });
                // An upload races the worker and the kill: if it answered,
                // it must be there after the restart.
                let path = format!("/racing{next}.bin");
                next += 1;
                let len = rng.random_range(1_000..800_000);
                let bytes = data_of(&mut rng, len);
                let uploader = admin.clone();
                let (p, b) = (path.clone(), bytes.clone());
                let upload =
                    tokio::spawn(
                        async move { uploader.upload(&p, None, reqwest::Body::from(b)).await },
                    );
                tokio::time::sleep(pause).await;
                let _ = served.child.kill();
                let _ = served.child.wait();
                let _ = run.await;
                if let Ok(Ok(_)) = upload.await {
                    live.insert(path, bytes);
                } else {
                    // Not acknowledged: it may or may not have landed.
                    let again = start(&data, &cold);
                    let check = login(&again).await;
                    if let Ok(resp) = check.download(&path, None).await
                        && let Ok(got) = resp.bytes().await
                    {
                        assert!(got[..] == bytes[..], "round {round}: {path} is partial");
                        live.insert(path, bytes);
                    }
                    drop(again);
                }
            }
        }
        drop(served);
    }

    // At the end: the recompression and collection finish whatever the
    // kills cut short (the edited files that are left end up as deltas).
    let served = start(&data, &cold);
    let admin = login(&served).await;
    for _ in 0..1000 {
        let ran = admin.run_worker("recompress").await.unwrap();
        assert_eq!(ran.last_error, None, "{ran:?}");
        if ran.state == tessera_client::remote::WorkerState::Idle {
            break;
        }
    }
    admin.run_worker("gc").await.unwrap();
    for (path, want) in &live {
        let got = admin
            .download(path, None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(got[..] == want[..], "{path} changed");
    }
    fsck_is_clean(&cfg, &data, &cold, kills).await;
}
