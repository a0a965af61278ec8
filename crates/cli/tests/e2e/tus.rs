//! Resumable uploads over TUS 1.0.0, spoken by hand over real HTTP, on
//! SQLite and PostgreSQL: pieces, restarts, broken-off bodies, bad input,
//! concurrent uploads of one path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Backend, TestServer, names};
use base64::Engine;
use reqwest::{Method, StatusCode};
use tessera_client::Remote;

on_both_backends!(
    pieces_resume_and_commit,
    bad_input_changes_nothing,
    broken_off_body_keeps_what_arrived_and_survives_a_restart,
    concurrent_uploads_of_one_path_become_conflicted_copies,
    empty_file_and_termination,
    abandoned_sessions_expire,
    another_instance_continues_an_upload,
    racing_requests_on_one_session_cannot_both_win,
);

const V: &str = "1.0.0";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn meta(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", b64(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `/api/v1/tus/ID` → the path `Remote::request` takes.
fn rel(location: &str) -> String {
    location
        .strip_prefix(tessera_proto::API_PREFIX)
        .unwrap()
        .to_owned()
}

async fn create(r: &Remote, length: u64, metadata: &str) -> reqwest::Response {
    r.request(Method::POST, "/tus/")
        .header("Tus-Resumable", V)
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", metadata)
        .send()
        .await
        .unwrap()
}

async fn create_ok(r: &Remote, length: u64, metadata: &str) -> String {
    let resp = create(r, length, metadata).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["tus-resumable"], V);
    rel(resp.headers()["location"].to_str().unwrap())
}

async fn head(r: &Remote, at: &str) -> reqwest::Response {
    r.request(Method::HEAD, at)
        .header("Tus-Resumable", V)
        .send()
        .await
        .unwrap()
}

async fn offset(r: &Remote, at: &str) -> u64 {
    let resp = head(r, at).await;
    assert_eq!(resp.status(), StatusCode::OK);
    header_u64(&resp, "upload-offset")
}

fn header_u64(resp: &reqwest::Response, name: &str) -> u64 {
    resp.headers()[name].to_str().unwrap().parse().unwrap()
}

async fn patch(
    r: &Remote,
    at: &str,
    offset: u64,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    r.request(Method::PATCH, at)
        .header("Tus-Resumable", V)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
}

fn sha1_b64(data: &[u8]) -> String {
    use sha1::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(data))
}

async fn download(r: &Remote, path: &str) -> Vec<u8> {
    let resp = Remote::send(
        r.request(Method::GET, "/files/content")
            .query(&[("path", path)]),
    )
    .await
    .unwrap();
    resp.bytes().await.unwrap().to_vec()
}

// Long on purpose: one upload in pieces, with the checks between pieces
// that a TUS client relies on.
async fn pieces_resume_and_commit(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;

    // Discovery needs no credentials.
    let anon = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/api/v1/tus/", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), StatusCode::NO_CONTENT);
    assert_eq!(anon.headers()["tus-version"], V);
    let ext = anon.headers()["tus-extension"].to_str().unwrap();
    for e in ["creation", "expiration", "termination", "checksum"] {
        assert!(ext.contains(e), "{ext}");
    }
    assert!(anon.headers().contains_key("tus-max-size"));

    // 40 MiB in three uneven pieces, each with a checksum, HEAD in between.
    let data = crate::common::random_data(40 << 20, 11);
    let at = create_ok(
        &r,
        data.len() as u64,
        &meta(&[("filename", "video.bin"), ("folder", "/media")]),
    )
    .await;
    let listed = r.list("/media").await.unwrap().entries;
    assert!(
        listed.iter().any(|e| e.name == "video.bin" && e.pending),
        "{listed:?}"
    );
    assert_eq!(offset(&r, &at).await, 0);
    // The session says when it ends if left idle (24 h by default).
    let expires = head(&r, &at).await.headers()["upload-expires"]
        .to_str()
        .unwrap()
        .to_owned();
    let expires = httpdate::parse_http_date(&expires).unwrap();
    let ahead = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        ahead > std::time::Duration::from_secs(23 * 3600),
        "{ahead:?}"
    );
    let cuts = [0usize, 7 << 20, (7 << 20) + 12_345, 40 << 20];
    let mut last = None;
    for w in cuts.windows(2) {
        let piece = data[w[0]..w[1]].to_vec();
        let resp = r
            .request(Method::PATCH, &at)
            .header("Tus-Resumable", V)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", w[0].to_string())
            .header("Upload-Checksum", format!("sha1 {}", sha1_b64(&piece)))
            .body(piece)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(header_u64(&resp, "upload-offset"), w[1] as u64);
        assert_eq!(offset(&r, &at).await, w[1] as u64);
        last = Some(resp);
    }
    let last = last.unwrap();
    assert_eq!(last.headers()["tessera-path"], "%2Fmedia%2Fvideo.bin");
    assert_eq!(last.headers()["tessera-rev"], "1");
    assert_eq!(download(&r, "/media/video.bin").await, data);
    let entry = r.list("/media").await.unwrap().entries.remove(0);
    assert!(!entry.pending);
    assert_eq!(
        entry.content_hash,
        Some(tessera_proto::ContentHash::of(&data))
    );
    assert_eq!(entry.size, Some(data.len() as u64));
    // A retried final PATCH gets the same answer; HEAD reports completion.
    let again = patch(&r, &at, data.len() as u64, Vec::new()).await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_eq!(again.headers()["tessera-rev"], "1");
    assert_eq!(offset(&r, &at).await, data.len() as u64);

    // An edit by TUS with base_rev: revision 2, same blocks reused.
    let before = s.store_bytes().await;
    let mut edited = data.clone();
    edited[20 << 20] ^= 1;
    let at = create_ok(
        &r,
        edited.len() as u64,
        &meta(&[("path", "/media/video.bin"), ("base_rev", "1")]),
    )
    .await;
    let resp = patch(&r, &at, 0, edited.clone()).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(resp.headers()["tessera-rev"], "2");
    assert_eq!(download(&r, "/media/video.bin").await, edited);
    let grown = s.store_bytes().await - before;
    assert!(grown < 20 << 20, "an edit stored {grown} bytes");
}

// Long on purpose: every bad input against one session, each followed by
// the check that nothing changed, so the list reads as a table.
async fn bad_input_changes_nothing(b: Backend) {
    let s = TestServer::start_with(b, |c| c.max_file_size = 1 << 20).await;
    let r = s.user("alice").await;
    let status = |resp: reqwest::Response| resp.status();

    // No version: 412. No length: 400. Over the limit: 413. No target: 400.
    let resp = r
        .request(Method::POST, "/tus/")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let resp = r
        .request(Method::POST, "/tus/")
        .header("Tus-Resumable", V)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Upload-Length")
    );
    assert_eq!(
        status(create(&r, (1 << 20) + 1, &meta(&[("path", "/big")])).await),
        413
    );
    assert_eq!(status(create(&r, 10, "").await), 400);
    assert_eq!(
        status(create(&r, 10, &meta(&[("path", "/../x")])).await),
        400
    );
    assert_eq!(status(create(&r, 10, "path !!!").await), 400);

    let data = crate::common::random_data(100_000, 3);
    let at = create_ok(&r, data.len() as u64, &meta(&[("path", "/a.bin")])).await;
    // Wrong offset: 409. Wrong type: 415. Bad checksum: 460, nothing kept.
    assert_eq!(status(patch(&r, &at, 5, data.clone()).await), 409);
    let resp = r
        .request(Method::PATCH, &at)
        .header("Tus-Resumable", V)
        .header("Content-Type", "application/octet-stream")
        .header("Upload-Offset", "0")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = r
        .request(Method::PATCH, &at)
        .header("Tus-Resumable", V)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header(
            "Upload-Checksum",
            format!("sha1 {}", sha1_b64(b"other bytes")),
        )
        .body(data[..50_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 460);
    assert_eq!(offset(&r, &at).await, 0);
    let resp = r
        .request(Method::PATCH, &at)
        .header("Tus-Resumable", V)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Upload-Checksum", "crc32 AAAA")
        .body(data[..10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Longer than Upload-Length, declared: 413 before reading.
    let mut long = data.clone();
    long.extend_from_slice(b"excess");
    assert_eq!(status(patch(&r, &at, 0, long.clone()).await), 413);
    // ...and undeclared (a stream): 413, and nothing past the length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        long.chunks(30_000).map(|c| Ok(c.to_vec())).collect();
    let resp = patch(
        &r,
        &at,
        0,
        reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(offset(&r, &at).await, 0);
    // Nothing the refused requests sent was committed: the file still
    // shows as syncing, without a revision.
    let a_bin = r.list("/").await.unwrap().entries.remove(0);
    assert_eq!(
        (a_bin.name.as_str(), a_bin.pending, a_bin.rev),
        ("a.bin", true, Some(0))
    );
    assert!(download_status(&r, "/a.bin").await == StatusCode::NOT_FOUND);

    // Another user's session does not exist for them.
    let bob = s.user("bob").await;
    assert_eq!(status(head(&bob, &at).await), 404);
    assert_eq!(status(patch(&bob, &at, 0, data.clone()).await), 404);
    let resp = bob
        .request(Method::DELETE, &at)
        .header("Tus-Resumable", V)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // No credentials: 401.
    let resp = reqwest::Client::new()
        .head(format!("{}{}{}", s.url, tessera_proto::API_PREFIX, at))
        .header("Tus-Resumable", V)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // The session still works after all that.
    assert_eq!(status(patch(&r, &at, 0, data.clone()).await), 204);
    assert_eq!(download(&r, "/a.bin").await, data);
}

async fn download_status(r: &Remote, path: &str) -> StatusCode {
    r.request(Method::GET, "/files/content")
        .query(&[("path", path)])
        .send()
        .await
        .unwrap()
        .status()
}

/// Sends a PATCH announcing `declared` bytes at offset 0 but carrying only
/// `body`, on a connection of its own that is then closed, and waits for
/// the server to close it too.
async fn send_then_close(s: &TestServer, at: &str, declared: usize, body: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = format!("{}{}", s.url, tessera_proto::API_PREFIX);
    let token = crate::common::login_token(&base, "alice", "alice-password", "raw").await;
    let head = format!(
        "PATCH {}{at} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTus-Resumable: {V}\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n\
         Content-Length: {declared}\r\n\r\n",
        tessera_proto::API_PREFIX,
        token
    );
    let mut conn = tokio::net::TcpStream::connect(s.running.addr)
        .await
        .unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        conn.read_to_end(&mut answer),
    )
    .await;
}

async fn broken_off_body_keeps_what_arrived_and_survives_a_restart(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let data = crate::common::random_data(30 << 20, 21);
    let at = create_ok(&r, data.len() as u64, &meta(&[("path", "/big.bin")])).await;

    // The connection breaks after 13 MiB: what arrived is kept. The bytes
    // go out on a raw connection that is then closed, so all 13 MiB surely
    // reached the server (an HTTP client aborting a body may drop what it
    // had not flushed yet).
    send_then_close(&s, &at, data.len(), &data[..13 << 20]).await;
    // The server notices the break a moment later.
    let mut got = 0;
    for _ in 0..100 {
        got = offset(&r, &at).await;
        if got > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(got, 13 << 20, "all that arrived is durable");

    // A restart forgets everything in memory; the session goes on.
    let s = s.restart().await;
    assert_eq!(offset(&r, &at).await, 13 << 20);
    let resp = patch(&r, &at, 13 << 20, data[13 << 20..20 << 20].to_vec()).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let s = s.restart().await;
    let resp = patch(&r, &at, 20 << 20, data[20 << 20..].to_vec()).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(resp.headers()["tessera-rev"], "1");
    assert_eq!(download(&r, "/big.bin").await, data);
    // The hash saved across the restarts is the file's.
    let entry = r.list("/").await.unwrap().entries.remove(0);
    assert_eq!(
        entry.content_hash,
        Some(tessera_proto::ContentHash::of(&data))
    );
    drop(s);
}

async fn concurrent_uploads_of_one_path_become_conflicted_copies(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let laptop_copy = s.login("alice", "alice-password", "desk").await;
    let first = create_ok(&r, 5, &meta(&[("path", "/notes.txt")])).await;
    assert_eq!(patch(&r, &first, 0, "first").await.status(), 204);
    // Two devices edit revision 1 at once.
    let a = create_ok(&r, 6, &meta(&[("path", "/notes.txt"), ("base_rev", "1")])).await;
    let b2 = create_ok(
        &laptop_copy,
        7,
        &meta(&[("path", "/notes.txt"), ("base_rev", "1")]),
    )
    .await;
    assert_eq!(patch(&laptop_copy, &b2, 0, "desk v2").await.status(), 204);
    let resp = patch(&r, &a, 0, "lap v2").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let landed = resp.headers()["tessera-path"].to_str().unwrap().to_owned();
    assert!(
        landed.contains("conflicted%20copy%20from%20laptop"),
        "{landed}"
    );
    let names = names(&r, "/").await;
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(download(&r, "/notes.txt").await, b"desk v2");
    let copy = names
        .iter()
        .find(|n| n.contains("conflicted copy"))
        .unwrap();
    assert_eq!(download(&r, &format!("/{copy}")).await, b"lap v2");
    // Without a base, uploads stack up as revisions: nothing is lost.
    let c = create_ok(&r, 3, &meta(&[("path", "/notes.txt")])).await;
    assert_eq!(patch(&r, &c, 0, "v3!").await.status(), 204);
    let revs = r.revisions("/notes.txt").await.unwrap().revisions;
    assert_eq!(revs.len(), 3);
}

async fn empty_file_and_termination(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    // An empty file is committed at creation.
    let resp = create(&r, 0, &meta(&[("path", "/empty.txt")])).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["tessera-rev"], "1");
    assert_eq!(download(&r, "/empty.txt").await, b"");
    // Termination ends a session; it is gone afterwards.
    let at = create_ok(&r, 10, &meta(&[("path", "/gone.txt")])).await;
    assert_eq!(patch(&r, &at, 0, "12345").await.status(), 204);
    let resp = r
        .request(Method::DELETE, &at)
        .header("Tus-Resumable", V)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&r, &at).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(patch(&r, &at, 5, "67890").await.status(), 404);
    // A cancelled new file stops showing as syncing: it is gone.
    assert!(
        r.list("/")
            .await
            .unwrap()
            .entries
            .iter()
            .all(|e| e.name != "gone.txt")
    );
    // A folder is no upload target.
    r.mkdir("/docs").await.unwrap();
    assert_eq!(
        create(&r, 3, &meta(&[("path", "/docs")])).await.status(),
        409
    );
}

async fn abandoned_sessions_expire(b: Backend) {
    // An hour: expiry comes when the test moves the clock and runs it.
    let s = TestServer::start_with(b, |c| c.pending_ttl_secs = 3600).await;
    let r = s.user("alice").await;
    let at = create_ok(&r, 10, &meta(&[("path", "/left.txt")])).await;
    assert_eq!(patch(&r, &at, 0, "12345").await.status(), 204);
    assert!(r.list("/").await.unwrap().entries[0].pending);
    s.config.clock.advance(std::time::Duration::from_secs(3601));
    let admin = s.login("admin", &s.admin_password, "laptop").await;
    assert_eq!(admin.run_worker("uploads").await.unwrap().last_done, 1);
    assert_eq!(head(&r, &at).await.status(), StatusCode::NOT_FOUND);
    // The pending mark of a file that never had content goes with it.
    admin.run_worker("pending").await.unwrap();
    assert!(r.list("/").await.unwrap().entries.is_empty());
    assert_eq!(patch(&r, &at, 5, "67890").await.status(), 404);
}

async fn another_instance_continues_an_upload(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    // A second instance on the same database and block store.
    let mut config = s.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let other = tessera_server::start(config).await.unwrap();
    let anon = Remote::new(&format!("http://{}", other.addr), None).unwrap();
    let login = anon
        .login("alice", "alice-password", "tablet")
        .await
        .unwrap();
    let r2 = anon.with_token(login.token);

    let data = crate::common::random_data(9 << 20, 31);
    let at = create_ok(&r, data.len() as u64, &meta(&[("path", "/shared.bin")])).await;
    assert_eq!(
        patch(&r, &at, 0, data[..5_000_000].to_vec()).await.status(),
        204
    );
    assert_eq!(offset(&r2, &at).await, 5_000_000);
    let resp = patch(&r2, &at, 5_000_000, data[5_000_000..].to_vec()).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(resp.headers()["tessera-rev"], "1");
    assert_eq!(download(&r, "/shared.bin").await, data);
    other.shutdown().await.unwrap();
}

async fn racing_requests_on_one_session_cannot_both_win(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.user("alice").await;
    let data = crate::common::random_data(12 << 20, 41);
    let other = crate::common::random_data(12 << 20, 42);
    let at = create_ok(&r, data.len() as u64, &meta(&[("path", "/race.bin")])).await;
    // Two requests from offset 0 at once, with different bytes.
    let (a, b2) = tokio::join!(
        patch(&r, &at, 0, data.clone()),
        patch(&r, &at, 0, other.clone())
    );
    let statuses = [a.status().as_u16(), b2.status().as_u16()];
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "exactly one wins: {statuses:?}"
    );
    assert!(
        statuses.contains(&409),
        "the other is told to ask again: {statuses:?}"
    );
    let got = download(&r, "/race.bin").await;
    assert!(
        got == data || got == other,
        "the file is one of the two, whole"
    );
    let entry = r.list("/").await.unwrap().entries.remove(0);
    assert_eq!(
        entry.content_hash,
        Some(tessera_proto::ContentHash::of(&got))
    );
}
