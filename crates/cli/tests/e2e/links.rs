//! Links: anyone holding one sees the file or folder it names, and nothing
//! else, until it expires or is revoked. Visitors are plain HTTP clients
//! with no account, no token and (unless a test gives them one) no cookie.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header;
use tessera_client::Remote;
use tessera_proto::api::{CreateLinkRequest, EntryKind, LinkInfo};

use crate::common::{Backend, TestServer, random_data};

on_both_backends!(
    a_file_link_shows_the_file_until_it_expires_or_is_revoked,
    a_folder_link_reaches_only_what_is_below_its_folder,
    a_password_link_asks_for_it_and_brakes_guessing,
    a_file_request_takes_files_and_shows_nothing,
    a_file_request_cannot_use_up_its_owners_upload_sessions
);

async fn put(r: &Remote, path: &str, bytes: &[u8]) {
    r.upload(path, None, reqwest::Body::from(bytes.to_vec()))
        .await
        .unwrap_or_else(|e| panic!("upload {path}: {e}"));
}

async fn link(r: &Remote, path: &str, expires: Option<u64>, password: Option<&str>) -> LinkInfo {
    r.create_link(&CreateLinkRequest {
        path: path.into(),
        expires_in_secs: expires,
        password: password.map(str::to_owned),
        upload_only: false,
    })
    .await
    .unwrap_or_else(|e| panic!("link to {path}: {e}"))
}

/// A visitor: no token, no cookies, redirects not followed.
fn visitor() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn address(s: &TestServer, l: &LinkInfo) -> String {
    format!("{}{}", s.url, l.url_path.as_deref().expect("the address"))
}

async fn visit(url: &str, query: &[(&str, &str)]) -> (StatusCode, String) {
    let resp = visitor().get(url).query(query).send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

async fn fetch(url: &str, query: &[(&str, &str)]) -> (StatusCode, Vec<u8>) {
    let resp = visitor().get(url).query(query).send().await.unwrap();
    let status = resp.status();
    (status, resp.bytes().await.unwrap().to_vec())
}

async fn a_file_link_shows_the_file_until_it_expires_or_is_revoked(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let content = random_data(300_000, 7);
    put(&alice, "/docs/report.pdf", &content).await;
    put(&alice, "/docs/other-secret.txt", b"not shared").await;

    let l = link(&alice, "/docs/report.pdf", Some(3600), None).await;
    assert_eq!(l.path.as_deref(), Some("/docs/report.pdf"));
    assert_eq!(l.kind, Some(EntryKind::File));
    let token = l.url_path.as_deref().unwrap().trim_start_matches("/s/");
    assert!(token.len() >= 22, "a short token: {token}");
    let url = address(&s, &l);

    let (status, page) = visit(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("report.pdf") && page.contains("Download"),
        "{page}"
    );
    assert!(!page.contains("other-secret"), "{page}");

    let resp = visitor()
        .get(&url)
        .query(&[("download", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let disposition = resp.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment") && disposition.contains("report.pdf"));
    assert!(resp.bytes().await.unwrap() == content[..]);
    let part = visitor()
        .get(&url)
        .query(&[("download", "1")])
        .header(header::RANGE, "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert!(part.bytes().await.unwrap() == content[1000..2000]);

    // The link follows its file through a move and a rename.
    alice.move_to("/docs", "/papers").await.unwrap();
    alice
        .move_to("/papers/report.pdf", "/papers/final.pdf")
        .await
        .unwrap();
    let (status, body) = fetch(&url, &[("download", "1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == content);
    let listed = alice.links().await.unwrap().links;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path.as_deref(), Some("/papers/final.pdf"));
    assert!(
        listed[0].url_path.is_none(),
        "the address is shown only once"
    );

    // Another user neither sees nor revokes it.
    assert!(bob.links().await.unwrap().links.is_empty());
    let e = bob.revoke_link(&l.id).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert_eq!(visit(&url, &[]).await.0, StatusCode::OK);

    // Bad requests change nothing.
    for (path, expires, password) in [
        ("/nowhere.txt", None, None),
        ("/papers/final.pdf", Some(0), None),
        ("/papers/final.pdf", None, Some("")),
        ("../etc/passwd", None, None),
    ] {
        let e = alice
            .create_link(&CreateLinkRequest {
                path: path.into(),
                expires_in_secs: expires,
                password: password.map(str::to_owned),
                upload_only: false,
            })
            .await
            .unwrap_err();
        assert!(matches!(e.status(), Some(400 | 404)), "{path}: {e}");
    }
    assert_eq!(alice.links().await.unwrap().links.len(), 1);

    // Revoked: 404, and the page names nothing.
    let kept = link(&alice, "/papers/final.pdf", None, None).await;
    alice.revoke_link(&kept.id).await.unwrap();
    let (status, page) = visit(&address(&s, &kept), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!page.contains("final.pdf"), "{page}");
    assert_eq!(
        fetch(&address(&s, &kept), &[("download", "1")]).await.0,
        StatusCode::NOT_FOUND
    );
    // A made-up token is the same 404.
    let (status, made_up) = visit(&format!("{}/s/AAAAAAAAAAAAAAAAAAAAAA", s.url), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(made_up, page);

    // Expired: 410, naming nothing.
    s.config.clock.advance(Duration::from_secs(3601));
    let (status, page) = visit(&url, &[]).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(
        !page.contains("final.pdf") && !page.contains("papers"),
        "{page}"
    );
    assert_eq!(fetch(&url, &[("download", "1")]).await.0, StatusCode::GONE);

    // A file in the trash takes its links with it.
    let live = link(&alice, "/papers/final.pdf", None, None).await;
    assert_eq!(visit(&address(&s, &live), &[]).await.0, StatusCode::OK);
    alice.delete("/papers").await.unwrap();
    assert_eq!(
        visit(&address(&s, &live), &[]).await.0,
        StatusCode::NOT_FOUND
    );
    let listed = alice.links().await.unwrap().links;
    assert!(listed.iter().all(|l| l.path.is_none()), "{listed:?}");
}

async fn a_folder_link_reaches_only_what_is_below_its_folder(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.user("alice").await;
    put(&alice, "/share/a.txt", b"alpha").await;
    put(&alice, "/share/sub/b.txt", b"beta").await;
    put(&alice, "/share/<b onclick='x'>x.txt", b"markup").await;
    put(&alice, "/shared-not.txt", b"outside").await;
    put(&alice, "/secret.txt", b"secret").await;

    let l = link(&alice, "/share", None, None).await;
    assert_eq!(l.kind, Some(EntryKind::Folder));
    let url = address(&s, &l);
    let (status, page) = visit(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("a.txt") && page.contains("sub/"), "{page}");
    assert!(
        !page.contains("secret") && !page.contains("shared-not"),
        "{page}"
    );
    assert!(!page.contains("<b onclick"), "a name is markup: {page}");
    assert!(
        page.contains("&lt;b onclick=&#39;x&#39;&gt;x.txt"),
        "{page}"
    );

    let (status, page) = visit(&url, &[("path", "/sub")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("b.txt") && !page.contains("a.txt"), "{page}");
    let (status, body) = fetch(&url, &[("path", "/sub/b.txt"), ("download", "1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"beta");

    // Nothing outside the folder, however it is asked.
    for path in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/secret.txt",
        "../secret.txt",
        "//secret.txt",
    ] {
        for query in [
            vec![("path", path)],
            vec![("path", path), ("download", "1")],
        ] {
            let (status, body) = fetch(&url, &query).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(!String::from_utf8_lossy(&body).contains("secret"), "{path}");
        }
    }

    let (status, zip) = fetch(&url, &[("download", "1")]).await;
    assert_eq!(status, StatusCode::OK);
    let mut names: Vec<String> = crate::tree::read_zip(&zip)
        .into_iter()
        .filter(|i| !i.name.ends_with('/'))
        .map(|i| i.name)
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("a.txt")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("sub/b.txt")), "{names:?}");
    assert!(names.iter().all(|n| !n.contains("secret")), "{names:?}");

    // A file link has no inside.
    let file = link(&alice, "/share/a.txt", None, None).await;
    let (status, _) = fetch(
        &address(&s, &file),
        &[("path", "/a.txt"), ("download", "1")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn a_password_link_asks_for_it_and_brakes_guessing(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.user("alice").await;
    put(&alice, "/private/plan.txt", b"the plan").await;
    put(&alice, "/private/other.txt", b"other").await;
    let l = link(&alice, "/private/plan.txt", None, Some("open sesame")).await;
    assert!(l.has_password);
    let other = link(&alice, "/private/other.txt", None, Some("another one")).await;
    let url = address(&s, &l);

    let resp = visitor().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        !resp.headers().contains_key(header::WWW_AUTHENTICATE),
        "a browser would pop up its own prompt over the form"
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains("type=\"password\""), "{page}");
    assert!(!page.contains("plan.txt"), "{page}");
    assert_eq!(
        fetch(&url, &[("download", "1")]).await.0,
        StatusCode::UNAUTHORIZED
    );

    // HTTP Basic for programs.
    let right = visitor()
        .get(&url)
        .query(&[("download", "1")])
        .basic_auth("", Some("open sesame"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(right.bytes().await.unwrap(), &b"the plan"[..]);
    // Failed logins under a user name that spells the link's brake key
    // do not lock the link.
    for _ in 0..11 {
        let e = Remote::new(&s.url, None)
            .unwrap()
            .login(&format!("link:{}", l.id), "wrong", "probe")
            .await
            .unwrap_err();
        assert!(matches!(e.status(), Some(401 | 429)), "{e}");
    }
    // A program that gives the right password each time is never braked.
    for _ in 0..15 {
        let again = visitor()
            .get(&url)
            .query(&[("download", "1")])
            .basic_auth("", Some("open sesame"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }
    let wrong = visitor()
        .get(&url)
        .query(&[("download", "1")])
        .basic_auth("", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().contains_key(header::WWW_AUTHENTICATE));

    // The form: a wrong password says so; the right one sets a cookie for
    // this link alone.
    let form = |pw: &'static str| {
        visitor()
            .post(&url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!("password={}", pw.replace(' ', "+")))
            .send()
    };
    let resp = form("nope").await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("not right"));
    let resp = form("open sesame").await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookie = resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = visitor()
        .get(&url)
        .header(header::COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("plan.txt"));
    let elsewhere = visitor()
        .get(address(&s, &other))
        .header(header::COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    // A forged cookie opens nothing.
    let (name, value) = pair.split_once('=').unwrap();
    let (until, _) = value.split_once('.').unwrap();
    let forged = format!("{name}={until}.{}", "0".repeat(64));
    let resp = visitor()
        .get(&url)
        .header(header::COOKIE, forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Guessing meets the brake: within a dozen wrong guesses the link
    // answers 429, and then even the right password waits.
    let mut braked = false;
    for _ in 0..12 {
        let resp = form("still guessing").await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key(header::RETRY_AFTER));
            braked = true;
            break;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(braked, "a dozen wrong guesses went unbraked");
    assert_eq!(
        form("open sesame").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // The other link's visitors are not held back by this one's guesser
    // beyond the per-address brake.
    let resp = visitor()
        .get(address(&s, &other))
        .query(&[("download", "1")])
        .basic_auth("", Some("another one"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

async fn request_link(r: &Remote, path: &str, password: Option<&str>) -> LinkInfo {
    r.create_link(&CreateLinkRequest {
        path: path.into(),
        expires_in_secs: None,
        password: password.map(str::to_owned),
        upload_only: true,
    })
    .await
    .unwrap_or_else(|e| panic!("file request for {path}: {e}"))
}

async fn send(url: &str, name: &str, body: &'static [u8]) -> (StatusCode, serde_json::Value) {
    let resp = visitor()
        .put(format!("{url}/upload"))
        .query(&[("name", name)])
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn content(r: &Remote, path: &str) -> Vec<u8> {
    let resp = Remote::send(
        r.request(reqwest::Method::GET, "/files/content")
            .query(&[("path", path)]),
    )
    .await
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    resp.bytes().await.unwrap().to_vec()
}

async fn a_file_request_takes_files_and_shows_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.user("alice").await;
    put(&alice, "/inbox/report.pdf", b"alice's own").await;
    let l = request_link(&alice, "/inbox", None).await;
    assert!(l.upload_only);
    let url = address(&s, &l);

    let (status, page) = visit(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("type=\"file\""), "{page}");
    assert!(
        !page.contains("report") && !page.contains("inbox"),
        "{page}"
    );
    for query in [
        vec![("download", "1")],
        vec![("path", "/report.pdf")],
        vec![("path", "/report.pdf"), ("download", "1")],
        vec![("inline", "1")],
    ] {
        let (status, body) = fetch(&url, &query).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{query:?}");
        assert!(
            !String::from_utf8_lossy(&body).contains("alice"),
            "{query:?}"
        );
    }

    // Taken names get a number; nothing is replaced.
    let (status, answer) = send(&url, "report.pdf", b"from a visitor").await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["name"], "report (1).pdf");
    let (_, answer) = send(&url, "report.pdf", b"and another").await;
    assert_eq!(answer["name"], "report (2).pdf");
    let (_, answer) = send(&url, "notes", b"no extension").await;
    assert_eq!(answer["name"], "notes");
    assert_eq!(content(&alice, "/inbox/report.pdf").await, b"alice's own");
    assert_eq!(
        content(&alice, "/inbox/report (1).pdf").await,
        b"from a visitor"
    );
    assert_eq!(
        content(&alice, "/inbox/report (2).pdf").await,
        b"and another"
    );

    // Names that would leave the folder are refused, and store nothing.
    let before = alice.list("/inbox").await.unwrap().entries.len();
    for name in ["../escape.txt", "a/b.txt", "..", "", "."] {
        let (status, _) = send(&url, name, b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}");
    }
    let resp = visitor()
        .put(format!("{url}/upload"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(alice.list("/inbox").await.unwrap().entries.len(), before);
    assert!(
        alice
            .list("/")
            .await
            .unwrap()
            .entries
            .iter()
            .all(|e| e.path != "/escape.txt")
    );

    // A link to view takes no uploads; a file cannot be a file request.
    let view = link(&alice, "/inbox", None, None).await;
    let (status, _) = send(&address(&s, &view), "x.txt", b"x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let e = alice
        .create_link(&CreateLinkRequest {
            path: "/inbox/report.pdf".into(),
            expires_in_secs: None,
            password: None,
            upload_only: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");

    // With a password: none, no upload; the right one as Basic auth, in.
    let guarded = request_link(&alice, "/inbox", Some("drop it here")).await;
    let gurl = address(&s, &guarded);
    assert_eq!(send(&gurl, "p.txt", b"p").await.0, StatusCode::UNAUTHORIZED);
    let resp = visitor()
        .put(format!("{gurl}/upload"))
        .query(&[("name", "p.txt")])
        .basic_auth("", Some("drop it here"))
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // TUS, resumable: the session lives under the link, its answers name
    // nothing of the folder, and a taken name gets the next number.
    let tus = |method: reqwest::Method, url: String| {
        visitor()
            .request(method, url)
            .header("Tus-Resumable", "1.0.0")
    };
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let created = tus(reqwest::Method::POST, format!("{url}/tus/"))
        .header("Upload-Length", "10")
        .header("Upload-Metadata", format!("filename {}", b64("report.pdf")))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let session = created.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        session.starts_with(l.url_path.as_deref().unwrap()),
        "{session}"
    );
    let session = format!("{}{session}", s.url);
    let part = |offset: &str, body: &'static str| {
        tus(reqwest::Method::PATCH, session.clone())
            .header("Upload-Offset", offset)
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send()
    };
    assert_eq!(
        part("0", "01234").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let head = tus(reqwest::Method::HEAD, session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["upload-offset"], "5");
    let done = part("5", "56789").await.unwrap();
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    assert!(
        !done.headers().contains_key("tessera-path"),
        "the answer names the folder"
    );
    assert_eq!(
        content(&alice, "/inbox/report (3).pdf").await,
        b"0123456789"
    );
    // The owner's own sessions are out of a link's reach.
    let own = Remote::send(
        alice
            .request(reqwest::Method::POST, "/tus/")
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "4")
            .header("Upload-Metadata", format!("path {}", b64("/inbox/own.bin"))),
    )
    .await
    .unwrap();
    let own_id = own.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let reach = tus(reqwest::Method::HEAD, format!("{url}/tus/{own_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reach.status(), StatusCode::NOT_FOUND);
    let end = tus(reqwest::Method::DELETE, format!("{url}/tus/{own_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(end.status(), StatusCode::NOT_FOUND);

    // Revoked: no more uploads.
    alice.revoke_link(&l.id).await.unwrap();
    assert_eq!(
        send(&url, "late.txt", b"late").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(
        alice
            .list("/inbox")
            .await
            .unwrap()
            .entries
            .iter()
            .all(|e| e.name != "late.txt")
    );
}

async fn a_file_request_cannot_use_up_its_owners_upload_sessions(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_upload_sessions_per_user = 2).await;
    let alice = s.user("alice").await;
    alice.mkdir("/inbox").await.unwrap();
    let url = address(&s, &request_link(&alice, "/inbox", None).await);
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = visitor()
            .post(format!("{url}/tus/"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "100")
            .header(
                "Upload-Metadata",
                format!("filename {}", b64(&format!("f{i}"))),
            )
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // The owner's own uploads still start.
    for i in 0..2 {
        let own = Remote::send(
            alice
                .request(reqwest::Method::POST, "/tus/")
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", "100")
                .header(
                    "Upload-Metadata",
                    format!("path {}", b64(&format!("/own{i}.bin"))),
                ),
        )
        .await;
        assert!(own.is_ok(), "{own:?}");
    }
}
