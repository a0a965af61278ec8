//! The OpenAPI document at `/api/v1/openapi.json`, read as a generated
//! client reads it: every route, every status a route answers, and the two
//! ways to sign in. (`scripts/api-fuzz-test.sh` checks the same document
//! against a real server's answers.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Backend, TestServer};
use serde_json::Value;

/// Every route of `api::router()`, as (method, path). `/api/v1/tus` without
/// the slash is an alias of `/api/v1/tus/` and is described once.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/info"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/files/list"),
    ("get", "/api/v1/files/meta"),
    ("post", "/api/v1/files/mkdir"),
    ("post", "/api/v1/files/mkdir_batch"),
    ("post", "/api/v1/files/move"),
    ("post", "/api/v1/files/delete"),
    ("get", "/api/v1/files/content"),
    ("put", "/api/v1/files/content"),
    ("get", "/api/v1/files/view"),
    ("get", "/api/v1/files/zip"),
    ("get", "/api/v1/files/revisions"),
    ("post", "/api/v1/files/restore"),
    ("post", "/api/v1/files/pin"),
    ("get", "/api/v1/usage"),
    ("get", "/api/v1/admin/users/{name}/quota"),
    ("put", "/api/v1/admin/users/{name}/quota"),
    ("get", "/api/v1/search"),
    ("get", "/api/v1/admin/users"),
    ("post", "/api/v1/admin/users"),
    ("delete", "/api/v1/admin/users/{name}"),
    ("post", "/api/v1/admin/users/{name}/disable"),
    ("post", "/api/v1/admin/users/{name}/enable"),
    ("post", "/api/v1/admin/users/{name}/restore"),
    ("put", "/api/v1/admin/users/{name}/password"),
    ("get", "/api/v1/files/blocks"),
    ("get", "/api/v1/files/pending"),
    ("post", "/api/v1/files/commit"),
    ("post", "/api/v1/files/commit_batch"),
    ("post", "/api/v1/blocks/pack"),
    ("post", "/api/v1/blocks/missing"),
    ("post", "/api/v1/blocks/fetch"),
    ("get", "/api/v1/blocks/{id}"),
    ("put", "/api/v1/blocks/{id}"),
    ("get", "/api/v1/blocks/{id}/signature"),
    ("put", "/api/v1/blocks/{id}/delta"),
    ("get", "/api/v1/blocks/{id}/patch"),
    ("get", "/api/v1/changes"),
    ("get", "/api/v1/changes/latest"),
    ("get", "/api/v1/changes/poll"),
    ("get", "/api/v1/presence"),
    ("get", "/api/v1/devices"),
    ("delete", "/api/v1/devices/{id}"),
    ("post", "/api/v1/account/password"),
    ("get", "/api/v1/trash"),
    ("post", "/api/v1/trash/restore"),
    ("post", "/api/v1/trash/purge"),
    ("post", "/api/v1/tus/"),
    ("options", "/api/v1/tus/"),
    ("head", "/api/v1/tus/{id}"),
    ("patch", "/api/v1/tus/{id}"),
    ("delete", "/api/v1/tus/{id}"),
    ("options", "/api/v1/tus/{id}"),
    ("get", "/api/v1/admin/workers"),
    ("post", "/api/v1/admin/workers/{name}/run"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/links"),
    ("get", "/api/v1/links"),
    ("delete", "/api/v1/links/{id}"),
    ("post", "/api/v1/shares"),
    ("get", "/api/v1/shares"),
    ("delete", "/api/v1/shares/{id}"),
    ("put", "/api/v1/shares/{id}/members/{username}"),
    ("delete", "/api/v1/shares/{id}/members/{username}"),
    ("get", "/s/{token}"),
    ("post", "/s/{token}"),
    ("put", "/s/{token}/upload"),
    ("post", "/s/{token}/tus/"),
    ("head", "/s/{token}/tus/{id}"),
    ("patch", "/s/{token}/tus/{id}"),
    ("delete", "/s/{token}/tus/{id}"),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

async fn document() -> Value {
    let s = TestServer::start(Backend::Sqlite).await;
    let resp = reqwest::get(format!("{}/api/v1/openapi.json", s.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Every operation in the document, as (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(*method) {
                out.push((method.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn is_signed_in(op: &Value) -> bool {
    op["security"].as_array().is_some_and(|alternatives| {
        alternatives
            .iter()
            .any(|a| !a.as_object().unwrap().is_empty())
    })
}

/// The error answer's schema, followed through a `$ref` to a response.
fn error_schema(doc: &Value, answer: &Value) -> Option<String> {
    let answer = match answer["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next()?;
            &doc["components"]["responses"][name]
        }
        None => answer,
    };
    answer["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_route() {
    let doc = document().await;
    let mut missing = Vec::new();
    for (method, path) in ROUTES {
        if doc["paths"][*path][*method].is_null() {
            missing.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    // A parameter is in the path only where the route's template names it:
    // a query parameter described as a path one sends clients astray.
    let mut misplaced = Vec::new();
    for (method, path, op) in operations(&doc) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            let templated = path.contains(&format!("{{{name}}}"));
            if (p["in"] == "path") != templated {
                misplaced.push(format!("{method} {path}: {name} is in {}", p["in"]));
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "parameters in the wrong place: {misplaced:?}"
    );
    let documented = operations(&doc).len();
    assert_eq!(
        documented,
        ROUTES.len(),
        "the document describes operations the router does not have"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_names_both_ways_to_sign_in() {
    let doc = document().await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http", "{schemes}");
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["cookie"]["type"], "apiKey", "{schemes}");
    assert_eq!(schemes["cookie"]["in"], "cookie", "{schemes}");
    assert_eq!(schemes["cookie"]["name"], "tessera_session", "{schemes}");
    let mut one_way = Vec::new();
    for (method, path, op) in operations(&doc) {
        if !is_signed_in(&op) {
            continue;
        }
        let names: Vec<String> = op["security"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|a| a.as_object().unwrap().keys().cloned())
            .collect();
        if !(names.contains(&"bearer".to_owned()) && names.contains(&"cookie".to_owned())) {
            one_way.push(format!("{method} {path}: {names:?}"));
        }
    }
    assert!(
        one_way.is_empty(),
        "operations that do not accept both the bearer token and the cookie: {one_way:?}"
    );
    let login = &doc["paths"]["/api/v1/auth/login"]["post"];
    assert!(!is_signed_in(login), "login needs no credentials: {login}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_lists_its_error_answers() {
    let doc = document().await;
    let mut gaps = Vec::new();
    for (method, path, op) in operations(&doc) {
        let answers = op["responses"].as_object().expect("responses");
        let takes_input = op["parameters"].as_array().is_some_and(|p| !p.is_empty())
            || op["requestBody"].is_object();
        let writes = !matches!(method.as_str(), "get" | "head" | "options");
        let mut expected = vec!["500"];
        if takes_input {
            expected.push("400");
        }
        if op["requestBody"].is_object() {
            expected.push("413");
        }
        if is_signed_in(&op) {
            expected.push("401");
            if writes {
                expected.push("403");
            }
        }
        if path == "/api/v1/auth/login" {
            expected.push("429");
        }
        for status in expected {
            match answers.get(status) {
                None => gaps.push(format!("{method} {path}: no {status}")),
                // HEAD answers carry no body to describe.
                Some(_) if method == "head" => {}
                Some(answer) => {
                    let schema = error_schema(&doc, answer);
                    if schema.as_deref() != Some("#/components/schemas/ErrorBody") {
                        gaps.push(format!("{method} {path}: {status} is not an ErrorBody"));
                    }
                }
            }
        }
    }
    assert!(gaps.is_empty(), "missing error answers: {gaps:#?}");
}
