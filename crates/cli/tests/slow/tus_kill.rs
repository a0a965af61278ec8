//! A 1 GiB TUS upload to the real `tessera serve` process, killed with
//! SIGKILL at several points mid-body and restarted each time: every HEAD
//! after a restart reports a durable offset no further than what was sent,
//! the upload continues from there, and the file downloaded at the end
//! matches byte for byte.
//!
//! `TESSERA_TUS_KILL_MIB` sets the size (default 1024).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use rand::{RngCore, SeedableRng};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::common::process::Serve;

const PASSWORD: &str = "kill-test-password";

fn write_data(path: &Path, size: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        // Half random, half repetitive text, so blocks compress unevenly.
        if (left >> 20).is_multiple_of(2) {
            rng.fill_bytes(&mut buf[..n]);
        } else {
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = b"tessera resumable upload test line\n"[i % 35];
            }
        }
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
}

/// The file from `offset` as a request body that counts what it hands out.
async fn body_from(path: &Path, offset: u64, sent: Arc<AtomicU64>) -> reqwest::Body {
    let mut file = tokio::fs::File::open(path).await.unwrap();
    file.seek(std::io::SeekFrom::Start(offset)).await.unwrap();
    let stream = futures::stream::unfold(file, move |mut f| {
        let sent = sent.clone();
        async move {
            let mut buf = vec![0u8; 256 << 10];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                    Some((Ok::<_, std::io::Error>(buf), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Long on purpose: one upload killed at several points in turn, each
// round continuing where the last one's durable offset left it.
async fn tus_upload_survives_kill_9_at_several_points() {
    let mib: u64 = std::env::var("TESSERA_TUS_KILL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    write_data(&input, size);
    let data = dir.path().join("data");
    let mut server = Serve::new(&data).admin_password(PASSWORD).start();
    let listen = server.listen.clone();
    let base = format!("http://{listen}/api/v1");

    let http = reqwest::Client::new();
    let token = crate::common::login_token(&base, "admin", PASSWORD, "uploader").await;
    let req = |method: Method, url: &str| {
        http.request(method, url)
            .bearer_auth(&token)
            .header("Tus-Resumable", "1.0.0")
    };
    let path = base64::engine::general_purpose::STANDARD.encode("/big.bin");
    let created = req(Method::POST, &format!("{base}/tus/"))
        .header("Upload-Length", size.to_string())
        .header("Upload-Metadata", format!("path {path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let url = format!(
        "http://{listen}{}",
        created.headers()["location"].to_str().unwrap()
    );
    let head = || async {
        let resp = req(Method::HEAD, &url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };

    // Kill the server when the client has sent about 20%, 50% and 80%.
    let mut offset = 0;
    for point in [size / 5, size / 2, size * 4 / 5] {
        let sent = Arc::new(AtomicU64::new(0));
        let body = body_from(&input, offset, sent.clone()).await;
        let patch = req(Method::PATCH, &url)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(body)
            .send();
        let task = tokio::spawn(patch);
        while offset + sent.load(Ordering::Relaxed) < point {
            assert!(
                !task.is_finished(),
                "the upload ended before the kill point"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let reached = offset + sent.load(Ordering::Relaxed);
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let _ = task.await;
        server = Serve::new(&data)
            .admin_password(PASSWORD)
            .listen(&listen)
            .start();
        let durable = head().await;
        println!("killed at {reached} bytes sent; durable offset {durable}");
        assert!(durable >= offset, "the durable offset went back");
        assert!(durable <= reached, "more is durable than was sent");
        assert!(
            durable > offset,
            "no progress was kept across the kill (from {offset}, sent up to {reached})"
        );
        offset = durable;
    }

    let sent = Arc::new(AtomicU64::new(0));
    let done = req(Method::PATCH, &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(body_from(&input, offset, sent).await)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    assert_eq!(done.headers()["tessera-rev"], "1");

    // Byte for byte, streaming both sides.
    let mut resp = http
        .get(format!("{base}/files/content"))
        .query(&[("path", "/big.bin")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut local = std::fs::File::open(&input).unwrap();
    let mut at = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let mut want = vec![0u8; chunk.len()];
        local.read_exact(&mut want).unwrap();
        assert!(
            want == chunk.as_ref(),
            "the download differs near byte {at}"
        );
        at += chunk.len() as u64;
    }
    assert_eq!(at, size);
    drop(server);
}
