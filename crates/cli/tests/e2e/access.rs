//! The access matrix, generated from the OpenAPI document: every operation,
//! asked by someone who has no business with the owner's things, naming the
//! owner's ids (paths, block ids, revisions, trash ids, upload sessions,
//! links, cursors) and then made-up ids of the same shape.
//!
//! - Without credentials, every signed-in operation answers 401.
//! - A stranger (another account) gets the same status and error code for
//!   the owner's ids as for made-up ones: nothing tells them the owner's
//!   things exist. Two strangers run the same operations in the same order,
//!   one with the owner's ids and one with made-up ids, so what each
//!   creates in their own account cannot make the answers differ.
//! - No answer to a stranger carries the owner's content or node ids.
//! - An editor of the owner's shared folder is a stranger to the rest of
//!   the owner's files: asked about the owner's things outside the folder,
//!   they get the stranger's answers, and they cannot change who has the
//!   folder.
//! - Afterwards the owner's tree, trash, revisions and links are as they
//!   were.
//!
//! An operation whose request body has no template here fails the test, so
//! a new route cannot slip past the matrix.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_client::Remote;
use tessera_proto::api::CreateLinkRequest;

use crate::common::{Backend, TestServer};

/// What a request names: the owner's things, or made-up ones alike.
#[derive(Debug, Clone)]
struct Ids {
    path: String,
    block: String,
    hash: String,
    size: u64,
    trash: String,
    upload: String,
    link: String,
    token: String,
    cursor: String,
    user: String,
    /// A shared folder's id.
    share: String,
    /// A signed-in device's id.
    device: String,
}

const CONTENT: &str = "alice's private words, never to be seen by others\n";
/// In a folder of alice's she shares with no one.
const PRIVATE: &str = "alice's own notes, shared with no one at all\n";

/// What `alice` keeps in `folder`: a file of two revisions holding
/// `content`, a trashed file, an upload under way and a link.
async fn things_in(alice: &Remote, folder: &str, content: &'static str) -> Ids {
    let put = |path: String, body: &'static str| async move {
        alice
            .upload(&path, None, reqwest::Body::from(body))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let file = format!("{folder}/f.txt");
    put(file.clone(), "first version\n").await;
    put(file.clone(), content).await;
    put(format!("{folder}/gone.txt"), "to the trash\n").await;
    alice.delete(&format!("{folder}/gone.txt")).await.unwrap();
    let trash = alice
        .trash()
        .await
        .unwrap()
        .entries
        .into_iter()
        .find(|t| t.path == format!("{folder}/gone.txt"))
        .unwrap()
        .id;
    let list = alice.block_list(&file, None).await.unwrap();
    let block = list.blocks[0].id.to_string();
    let hash = blake3::hash(content.as_bytes()).to_hex().to_string();
    let tus = Remote::send(
        alice
            .request(Method::POST, "/tus/")
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "10")
            .header(
                "Upload-Metadata",
                format!("path {}", b64(&format!("{folder}/tus.bin"))),
            ),
    )
    .await
    .unwrap();
    let upload = tus.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let link = alice
        .create_link(&CreateLinkRequest {
            path: folder.into(),
            expires_in_secs: None,
            password: None,
            upload_only: false,
        })
        .await
        .unwrap();
    let token = link.url_path.unwrap().trim_start_matches("/s/").to_owned();
    Ids {
        path: file,
        block,
        hash,
        size: content.len() as u64,
        trash,
        upload,
        link: link.id,
        token,
        cursor: alice.latest_cursor().await.unwrap(),
        user: "alice".into(),
        share: String::new(),
        device: alice
            .devices()
            .await
            .unwrap()
            .devices
            .into_iter()
            .find(|d| d.current)
            .unwrap()
            .id,
    }
}

async fn owner_ids(s: &TestServer, alice: &Remote) -> Ids {
    let mut ids = things_in(alice, "/a", CONTENT).await;
    // /a is shared with a fourth user (an editor), so strangers are asked
    // about a shared folder's things too.
    let _dave = s.user("dave").await;
    ids.share = alice
        .share("/a", "dave", tessera_proto::api::ShareRole::Editor)
        .await
        .unwrap()
        .id
        .to_string();
    ids.cursor = alice.latest_cursor().await.unwrap();
    ids
}

fn made_up_ids(like: &Ids) -> Ids {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(rand::random_range(0..16), 16).unwrap())
            .collect()
    };
    Ids {
        path: "/zz/none.txt".into(),
        block: hex(64),
        hash: hex(64),
        size: like.size,
        trash: uuid_like(&hex(32)),
        upload: hex(like.upload.len()),
        link: uuid_like(&hex(32)),
        token: "Zz".repeat(11),
        // A cursor of the same shape, at a position nobody reached.
        cursor: like
            .cursor
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect(),
        user: "nobody-of-that-name".into(),
        share: (like.share.parse::<i64>().unwrap_or(0) + 1000).to_string(),
        device: hex(like.device.len()),
    }
}

fn uuid_like(h: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The JSON body an operation takes, naming `ids`; `None` for a schema
/// this test has no template for.
fn body_for(schema: &str, ids: &Ids) -> Option<Value> {
    let commit = json!({
        "path": ids.path, "base_rev": 1, "size": ids.size, "content_hash": ids.hash,
        "chunker": tessera_proto::block::CHUNKER,
        "blocks": [{"id": ids.block, "size": ids.size}],
    });
    Some(match schema {
        "QuotaRequest" => json!({"quota_bytes": 1}),
        "FetchBlocksRequest" | "MissingRequest" => json!({"ids": [ids.block]}),
        "CommitRequest" => commit,
        "CommitBatchRequest" => json!({"commits": [commit]}),
        "DeleteRequest" | "PathQuery" | "CreateLinkRequest" => json!({"path": ids.path}),
        "MkdirBatchRequest" => json!({"paths": [ids.path]}),
        "MoveRequest" => json!({"from": ids.path, "to": "/moved-here.txt"}),
        "PinRequest" => json!({"path": ids.path, "rev": 1, "pinned": true}),
        "RestoreRequest" => json!({"path": ids.path, "rev": 1}),
        "TrashPurgeRequest" | "TrashRestoreRequest" => json!({"id": ids.trash}),
        "ShareRequest" => json!({"path": ids.path, "with": ids.user, "role": "editor"}),
        "RoleRequest" => json!({"role": "editor"}),
        "NewAccount" => json!({"name": "intruder", "password": "taken-over-1", "admin": true}),
        "NewPassword" => json!({"password": "taken-over-1"}),
        "PasswordChange" => json!({"current_password": "a guess", "new_password": "taken over"}),
        _ => return None,
    })
}

/// The value of a query or header parameter.
fn param(name: &str, ids: &Ids) -> String {
    match name {
        "path" => ids.path.clone(),
        "rev" | "base_rev" => "1".into(),
        "base" => ids.block.clone(),
        "cursor" => ids.cursor.clone(),
        "limit" => "10".into(),
        "timeout" => "1".into(),
        "download" | "inline" => "1".into(),
        "now" => "true".into(),
        "codec" => "raw".into(),
        "name" => "sent.txt".into(),
        "Tus-Resumable" => "1.0.0".into(),
        "Upload-Length" => "10".into(),
        "Upload-Offset" => "0".into(),
        "Upload-Metadata" => format!("path {}", b64(&ids.path)),
        _ => String::new(),
    }
}

/// The route with its path parameters filled from `ids`.
fn fill(template: &str, ids: &Ids) -> String {
    let id = if template.contains("/blocks/") {
        &ids.block
    } else if template.contains("/tus/") {
        &ids.upload
    } else if template.contains("/shares/") {
        &ids.share
    } else if template.contains("/devices/") {
        &ids.device
    } else {
        &ids.link
    };
    template
        .replace("{id}", id)
        .replace("{token}", &ids.token)
        .replace(
            "{name}",
            if template.contains("/workers/") {
                "gc"
            } else {
                &ids.user
            },
        )
        .replace("{username}", &ids.user)
}

struct Asked {
    status: StatusCode,
    code: Option<String>,
    body: String,
}

async fn ask(
    who: &Remote,
    http: &reqwest::Client,
    method: &str,
    template: &str,
    op: &Value,
    ids: &Ids,
) -> Result<Asked, String> {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let path = fill(template, ids);
    let mut req = match path.strip_prefix(tessera_proto::API_PREFIX) {
        Some(rest) => who.request(method, rest),
        None => http.request(
            method,
            format!("{}{path}", who.server().trim_end_matches('/')),
        ),
    };
    let mut query = Vec::new();
    for p in op["parameters"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap();
        match p["in"].as_str() {
            Some("query") => query.push((name.to_owned(), param(name, ids))),
            Some("header") => req = req.header(name, param(name, ids)),
            _ => {}
        }
    }
    req = req.query(&query);
    if let Some(content) = op["requestBody"]["content"].as_object() {
        if let Some(json_body) = content.get("application/json") {
            let schema = json_body["schema"]["$ref"].as_str().unwrap_or_default();
            let name = schema.rsplit('/').next().unwrap_or_default();
            let body = body_for(name, ids).ok_or_else(|| format!("no template for {name}"))?;
            req = req.json(&body);
        } else if content.contains_key("application/offset+octet-stream") {
            req = req
                .header("Content-Type", "application/offset+octet-stream")
                .body("0123456789");
        } else if content.contains_key("application/x-www-form-urlencoded") {
            req = req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("password=guess");
        } else {
            req = req.body("not the bytes of any block");
        }
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    Ok(Asked { status, code, body })
}

/// A batch's answer (200, an outcome per item) in which no item went
/// through.
fn every_item_refused(body: &str) -> bool {
    body.contains("\"results\"") && !body.contains("\"entry\"")
}

/// What the owner has, to compare before and after.
async fn snapshot(alice: &Remote) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut folders = vec!["/".to_owned()];
    while let Some(f) = folders.pop() {
        for e in alice.list(&f).await.unwrap().entries {
            if e.kind == tessera_proto::api::EntryKind::Folder {
                folders.push(e.path.clone());
            }
            out.insert(
                e.path.clone(),
                format!("{:?} {:?} {:?} {}", e.rev, e.size, e.content_hash, e.id),
            );
        }
    }
    for t in alice.trash().await.unwrap().entries {
        out.insert(format!("trash {}", t.id), t.path);
    }
    let revs = alice.revisions("/a/f.txt").await.unwrap();
    out.insert(
        "revisions".into(),
        format!(
            "{:?}",
            revs.revisions
                .iter()
                .map(|r| (r.rev, r.pinned))
                .collect::<Vec<_>>()
        ),
    );
    for sh in alice.shares().await.unwrap().shares {
        let members: Vec<_> = sh.members.iter().map(|m| (&m.username, m.role)).collect();
        out.insert(
            format!("share {}", sh.id),
            format!("{} {members:?}", sh.path),
        );
    }
    for l in alice.links().await.unwrap().links {
        out.insert(format!("link {}", l.id), format!("{:?}", l.path));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_reaches_or_learns_of_anothers_things() {
    let s = TestServer::start(Backend::Sqlite).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let anonymous = Remote::new(&s.url, None).unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let real = owner_ids(&s, &alice).await;
    let fake = made_up_ids(&real);
    // Things of alice's outside the folder dave edits with her.
    let mut private = things_in(&alice, "/p", PRIVATE).await;
    private.share = real.share.clone();
    let dave = s.login("dave", "dave-password", "dave-laptop").await;
    // A member who was removed is a stranger again: frank read /a, then
    // lost it.
    let frank = s.user("frank").await;
    let share_id: i64 = real.share.parse().unwrap();
    alice
        .share("/a", "frank", tessera_proto::api::ShareRole::Viewer)
        .await
        .unwrap();
    assert!(frank.download("/a/f.txt", None).await.is_ok());
    alice.remove_member(share_id, "frank").await.unwrap();
    // A viewer reads the shared folder and may change none of it.
    let erin = s.user("erin").await;
    alice
        .share("/a", "erin", tessera_proto::api::ShareRole::Viewer)
        .await
        .unwrap();
    let secrets: Vec<String> = {
        let mut v = vec![CONTENT.trim().to_owned()];
        for p in ["/a", "/a/f.txt"] {
            v.push(alice.meta(p).await.unwrap().id);
        }
        v
    };
    let private_secrets: Vec<String> = {
        let mut v = vec![PRIVATE.trim().to_owned()];
        for p in ["/p", "/p/f.txt"] {
            v.push(alice.meta(p).await.unwrap().id);
        }
        v
    };
    let before = snapshot(&alice).await;
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let mut ops: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    // Logging out ends the stranger's own session: last.
    ops.sort_by_key(|(m, p, _)| (p == "/api/v1/auth/logout", p.clone(), m.clone()));

    let mut problems = Vec::new();
    let mut asked = 0;
    for (method, template, op) in &ops {
        let signed_in = op["security"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| !s.as_object().unwrap().is_empty()));
        let what = format!("{} {template}", method.to_uppercase());
        if signed_in {
            for ids in [&real, &fake] {
                match ask(&anonymous, &http, method, template, op, ids).await {
                    Ok(a) if a.status == StatusCode::UNAUTHORIZED => {}
                    Ok(a) => problems.push(format!(
                        "{what} without credentials: {} {}",
                        a.status, a.body
                    )),
                    Err(e) => problems.push(format!("{what}: {e}")),
                }
            }
            let (theirs, made_up, former, editor) = match (
                ask(&bob, &http, method, template, op, &real).await,
                ask(&carol, &http, method, template, op, &fake).await,
                ask(&frank, &http, method, template, op, &real).await,
                ask(&dave, &http, method, template, op, &private).await,
            ) {
                (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
                (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) => {
                    problems.push(format!("{what}: {e}"));
                    continue;
                }
            };
            // The editor knows the folder they share: its routes answer
            // them apart from a stranger, but change nothing of it.
            if template.starts_with("/api/v1/shares/") {
                if editor.status.is_success() {
                    problems.push(format!(
                        "{what} lets an editor change who has the folder: {} {}",
                        editor.status, editor.body
                    ));
                }
            } else if (editor.status, &editor.code) != (made_up.status, &made_up.code) {
                problems.push(format!(
                    "{what} tells an editor the owner's ids outside the shared folder from \
                     made-up ones: {} {:?} against {} {:?}",
                    editor.status, editor.code, made_up.status, made_up.code
                ));
            }
            if let Some(found) = private_secrets
                .iter()
                .find(|x| editor.body.contains(x.as_str()))
            {
                problems.push(format!(
                    "{what} shows an editor the owner's {found} outside the shared folder: {}",
                    editor.body
                ));
            }
            asked += 1;
            // The viewer names the shared folder's things by the same
            // paths (her mount is /a too).
            let writes = method != "get"
                && ["/api/v1/files/", "/api/v1/tus/", "/api/v1/trash/"]
                    .iter()
                    .any(|p| template.starts_with(p));
            match ask(&erin, &http, method, template, op, &real).await {
                // A batch answers 200 with an outcome per item: each must
                // be a refusal.
                Ok(a) if writes && a.status.is_success() && !every_item_refused(&a.body) => {
                    problems.push(format!(
                        "{what} lets a viewer change the shared folder: {} {}",
                        a.status, a.body
                    ))
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{what} as a viewer: {e}")),
            }
            for (who, answer) in [("a stranger", &theirs), ("a removed member", &former)] {
                if (answer.status, &answer.code) != (made_up.status, &made_up.code) {
                    problems.push(format!(
                        "{what} tells {who} the owner's ids from made-up ones: {} {:?} against \
                         {} {:?}",
                        answer.status, answer.code, made_up.status, made_up.code
                    ));
                }
                if let Some(found) = secrets.iter().find(|x| answer.body.contains(x.as_str())) {
                    problems.push(format!(
                        "{what} shows {who} the owner's {found}: {}",
                        answer.body
                    ));
                }
            }
        } else if template.starts_with("/s/") {
            // A link's token is the only key: a made-up one opens nothing.
            let a = ask(&anonymous, &http, method, template, op, &fake).await;
            match a {
                Ok(a) if a.status == StatusCode::NOT_FOUND => {}
                Ok(a) => problems.push(format!("{what} with a made-up token: {}", a.status)),
                Err(e) => problems.push(format!("{what}: {e}")),
            }
        }
    }
    assert!(asked >= 40, "only {asked} signed-in operations were asked");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The link still opens what it names, for anyone holding it.
    let visit = http
        .get(format!("{}/s/{}?path=/f.txt&download=1", s.url, real.token))
        .send()
        .await
        .unwrap();
    assert_eq!(visit.status(), StatusCode::OK);
    assert_eq!(visit.text().await.unwrap(), CONTENT);
    assert_eq!(
        snapshot(&alice).await,
        before,
        "a stranger or a viewer changed the owner's things"
    );
}
