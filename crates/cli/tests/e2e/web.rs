//! What the web UI relies on from the server: the session cookie and its
//! anti-forgery header, the typed and sandboxed file view, zip downloads of
//! folders, and the embedded app with its security headers. (The browser
//! itself is driven by scripts/web-test.sh.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Backend, TestServer, random_data};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in as the web UI does and returns the session cookie pair.
async fn web_login(s: &TestServer, user: &str, password: &str) -> (String, HeaderMap) {
    let res = client()
        .post(format!("{}/api/v1/auth/login", s.url))
        .header("x-tessera-web", "1")
        .json(&serde_json::json!({"username": user, "password": password, "device": "Web browser"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let headers = res.headers().clone();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body["token"], "",
        "the token stays out of reach of page script"
    );
    let set = headers
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set.split(';').next().unwrap().to_owned();
    (pair, headers)
}

async fn put(s: &TestServer, cookie: &str, path: &str, data: Vec<u8>) {
    let res = client()
        .put(format!("{}/api/v1/files/content", s.url))
        .query(&[("path", path)])
        .header("cookie", cookie)
        .header("x-tessera-web", "1")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_needs_the_web_header_for_writes() {
    let s = TestServer::start(Backend::Sqlite).await;
    let bearer = s.user("alice").await;
    let (cookie, headers) = web_login(&s, "alice", "alice-password").await;
    let set = headers.get(SET_COOKIE).unwrap().to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let behind_tls = client()
        .post(format!("{}/api/v1/auth/login", s.url))
        .header("x-tessera-web", "1")
        .header("x-forwarded-proto", "https")
        .json(&serde_json::json!({"username": "alice", "password": "alice-password", "device": "Web browser"}))
        .send()
        .await
        .unwrap();
    let set = behind_tls.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
    let c = client();
    let list = format!("{}/api/v1/files/list?path=/", s.url);
    let res = c.get(&list).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "reads need only the cookie");

    let mkdir = format!("{}/api/v1/files/mkdir", s.url);
    let body = serde_json::json!({"path": "/made"});
    let res = c
        .post(&mkdir)
        .header("cookie", &cookie)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "forbidden");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-tessera-web")
    );
    let res = c
        .post(&mkdir)
        .header("cookie", &cookie)
        .header("x-tessera-web", "1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    // Bearer clients are unchanged: no extra header needed.
    bearer.mkdir("/by-bearer").await.unwrap();

    // A cookie holding something else is no session.
    let res = c
        .get(&list)
        .header("cookie", "tessera_session=00; other=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Logout revokes the token and clears the cookie.
    let res = c
        .post(format!("{}/api/v1/auth/logout", s.url))
        .header("cookie", &cookie)
        .header("x-tessera-web", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = res.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let res = c.get(&list).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    bearer.list("/").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_view_types_safe_content_and_sandboxes_the_rest() {
    let s = TestServer::start(Backend::Sqlite).await;
    s.user("alice").await;
    let (cookie, _) = web_login(&s, "alice", "alice-password").await;
    put(
        &s,
        &cookie,
        "/page.html",
        b"<script>alert(1)</script>".to_vec(),
    )
    .await;
    put(
        &s,
        &cookie,
        "/pic.svg",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
    )
    .await;
    put(&s, &cookie, "/tool.exe", b"MZ".to_vec()).await;
    put(&s, &cookie, "/doc.pdf", b"%PDF-1.4".to_vec()).await;
    let view = |path: &str, extra: &str| {
        client()
            .get(format!("{}/api/v1/files/view?path={path}{extra}", s.url))
            .header("cookie", &cookie)
    };
    let header = |r: &reqwest::Response, h: &str| {
        r.headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };

    let r = view("/page.html", "").send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert!(header(&r, "content-security-policy").starts_with("sandbox"));
    assert!(header(&r, "content-disposition").starts_with("inline"));

    let r = view("/pic.svg", "").send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "image/svg+xml");
    assert!(header(&r, "content-security-policy").starts_with("sandbox"));

    let r = view("/tool.exe", "").send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert!(header(&r, "content-disposition").starts_with("attachment; filename=\"tool.exe\""));

    let r = view("/doc.pdf", "").send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "application/pdf");
    assert!(!header(&r, "content-security-policy").contains("script"));

    let r = view("/page.html", "&download=1").send().await.unwrap();
    assert!(header(&r, "content-disposition").starts_with("attachment"));
    assert_eq!(header(&r, "content-type"), "application/octet-stream");

    // Ranges and revisions come through from the download route.
    put(&s, &cookie, "/page.html", b"second".to_vec()).await;
    let r = view("/page.html", "&rev=1")
        .header("range", "bytes=0-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.text().await.unwrap(), "<script>");
}

/// One entry of a zip's central directory, with its data read back.
struct ZipItem {
    name: String,
    data: Vec<u8>,
    zip64: bool,
}

fn u16_at(b: &[u8], i: usize) -> usize {
    u16::from_le_bytes([b[i], b[i + 1]]) as usize
}
fn u32_at(b: &[u8], i: usize) -> u64 {
    u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as u64
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
}

/// Reads a (stored, possibly Zip64) archive through its central directory.
fn read_zip(b: &[u8]) -> Vec<ZipItem> {
    let eocd = (0..=b.len() - 22)
        .rev()
        .find(|&i| u32_at(b, i) == 0x0605_4b50)
        .expect("end of central directory");
    let (mut count, mut cd) = (u16_at(b, eocd + 10) as u64, u32_at(b, eocd + 16));
    if count == 0xffff || cd == 0xffff_ffff {
        let loc = eocd - 20;
        assert_eq!(u32_at(b, loc), 0x0706_4b50, "zip64 locator");
        let z = u64_at(b, loc + 8) as usize;
        assert_eq!(u32_at(b, z), 0x0606_4b50, "zip64 end record");
        count = u64_at(b, z + 32);
        cd = u64_at(b, z + 48);
    }
    let mut items = Vec::new();
    let mut i = cd as usize;
    for _ in 0..count {
        assert_eq!(u32_at(b, i), 0x0201_4b50, "central directory entry");
        assert_eq!(u16_at(b, i + 10), 0, "stored");
        let (mut size, mut offset) = (u32_at(b, i + 20), u32_at(b, i + 42));
        let uncompressed = u32_at(b, i + 24);
        let (n, e, c) = (u16_at(b, i + 28), u16_at(b, i + 30), u16_at(b, i + 32));
        let name = String::from_utf8(b[i + 46..i + 46 + n].to_vec()).unwrap();
        let mut extra = &b[i + 46 + n..i + 46 + n + e];
        let mut zip64 = false;
        while extra.len() >= 4 {
            let (id, len) = (u16_at(extra, 0), u16_at(extra, 2));
            if id == 1 {
                zip64 = true;
                let mut f = &extra[4..4 + len];
                if uncompressed == 0xffff_ffff {
                    f = &f[8..];
                }
                if size == 0xffff_ffff {
                    size = u64_at(f, 0);
                    f = &f[8..];
                }
                if offset == 0xffff_ffff {
                    offset = u64_at(f, 0);
                }
            }
            extra = &extra[4 + len..];
        }
        let o = offset as usize;
        assert_eq!(u32_at(b, o), 0x0403_4b50, "local header of {name}");
        let start = o + 30 + u16_at(b, o + 26) + u16_at(b, o + 28);
        items.push(ZipItem {
            name,
            data: b[start..start + size as usize].to_vec(),
            zip64,
        });
        i += 46 + n + e + c;
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_zip_streams_every_file_in_order() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = s.user("alice").await;
    let (cookie, _) = web_login(&s, "alice", "alice-password").await;
    // Several blocks, so the entry is written block by block.
    let big = random_data(9 << 20, 7);
    put(&s, &cookie, "/Photos/big.bin", big.clone()).await;
    put(&s, &cookie, "/Photos/2026/é note.txt", b"hello".to_vec()).await;
    put(&s, &cookie, "/Photos/a.txt", Vec::new()).await;
    put(&s, &cookie, "/elsewhere.txt", b"not in the zip".to_vec()).await;
    r.mkdir("/Photos/empty").await.unwrap();

    let res = client()
        .get(format!("{}/api/v1/files/zip?path=/Photos", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/zip");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("Photos.zip")
    );
    let bytes = res.bytes().await.unwrap();
    let items = read_zip(&bytes);
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "big.bin", "2026/é note.txt", "empty/"]);
    assert!(items[0].data.is_empty());
    assert!(items[1].data == big, "big.bin comes back whole");
    assert_eq!(items[2].data, b"hello");
    assert!(
        items
            .iter()
            .filter(|i| !i.name.ends_with('/'))
            .all(|i| i.zip64),
        "streamed entries carry Zip64 sizes, so files over 4 GiB fit"
    );

    // The whole drive, and the errors a folder zip can meet.
    let all = client()
        .get(format!("{}/api/v1/files/zip?path=/", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let all = read_zip(&all.bytes().await.unwrap());
    assert!(all.iter().any(|i| i.name == "elsewhere.txt"));
    assert!(all.iter().any(|i| i.name == "Photos/big.bin"));
    for (path, status) in [
        ("/Photos/a.txt", StatusCode::CONFLICT),
        ("/nothing", StatusCode::NOT_FOUND),
    ] {
        let res = client()
            .get(format!("{}/api/v1/files/zip?path={path}", s.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_embedded_with_its_security_headers() {
    let s = TestServer::start(Backend::Sqlite).await;
    let c = client();
    let res = c.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let html = res.text().await.unwrap();
    assert!(html.contains("/assets/app.js"));

    let again = c
        .get(format!("{}/", s.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    for (asset, kind) in [
        ("app.js", "text/javascript"),
        ("tus.js", "text/javascript"),
        ("app.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let res = c
            .get(format!("{}/assets/{asset}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
        let t = res.headers()["content-type"].to_str().unwrap();
        assert!(t.starts_with(kind), "{asset}: {t}");
    }
    let missing = c
        .get(format!("{}/assets/nope.js", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // API answers carry nosniff too.
    let api = c
        .get(format!("{}/api/v1/files/list?path=/", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
}
