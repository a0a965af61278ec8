//! Links: a file or folder shown to anyone who holds its link, no account
//! needed.
//!
//! - The owner creates (`POST /links`), lists (`GET /links`) and revokes
//!   (`DELETE /links/{id}`) links. A link names its node by id, so it
//!   follows renames and moves, and leads nowhere once the node is trashed.
//! - The token in the link (`/s/{token}`) is 128 random bits. Only its
//!   BLAKE3 hash is stored, so the owner sees the address once, at
//!   creation; logs name the route, never the token (`trace.rs`).
//! - A visitor gets a page (`GET /s/{token}`): a file to preview or
//!   download, or a folder to browse and download as a zip.
//!   `?download=1` streams a file (Range supported) or a folder's zip;
//!   `?path=/sub/dir` browses inside a folder link (the path is below the
//!   link's folder and cannot leave it).
//! - A password is asked in the page's form, which sets a cookie for this
//!   link alone (a MAC under a key derived from the stored password hash,
//!   so it dies with the password or the link), or given as HTTP Basic
//!   auth. Attempts go through the login brake, counted per link and per
//!   address, and through the bounded pool of password checks.
//! - An expired link answers 410 and an unknown or revoked one 404, each
//!   with a page that names nothing of what the link pointed to.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use tessera_proto::RemotePath;
use tessera_proto::api::{CreateLinkRequest, EntryKind, LinkInfo, LinkList};

use super::place;
use super::{ApiError, AppState, AuthUser, J};
use crate::meta::{LinkRow, NodeRow};

/// Links last at most this long when they expire at all.
const MAX_EXPIRY_SECS: u64 = 10 * 366 * 24 * 3600;
/// A password a link may have: long enough for a passphrase, short enough
/// that a check costs what a login does.
const MAX_PASSWORD_BYTES: usize = 1024;
/// How long a password given in the page is remembered by the browser.
const UNLOCK_MS: i64 = 12 * 3600 * 1000;
/// The prefix of link addresses.
pub const LINK_PREFIX: &str = "/s/";

/// A file request's page: its one script (`/assets/drop.js`, the upload
/// with progress) and requests back here only.
const UPLOAD_CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Most files one upload may be renamed through before it gives up: a
/// folder holding `name`, `name (1)` … `name (99)` is not a usual case.
const MOST_SUFFIXES: u32 = 100;

/// Pages and files behind links: styles from this origin only, no script
/// at all, forms only back here, never framed.
const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
media-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// A new link token (128 random bits, URL-safe base64) and its hash.
fn new_link_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = link_token_hash(&token);
    (token, hash)
}

fn link_token_hash(token: &str) -> [u8; 32] {
    blake3::derive_key("tessera link token v1", token.as_bytes())
}

fn info(row: &LinkRow, at: Option<(&NodeRow, &RemotePath)>, url_path: Option<String>) -> LinkInfo {
    LinkInfo {
        id: row.id.clone(),
        url_path,
        path: at.map(|(_, p)| p.to_string()),
        kind: at.map(|(n, _)| {
            if n.is_folder() {
                EntryKind::Folder
            } else {
                EntryKind::File
            }
        }),
        created_ms: row.created_ms,
        expires_ms: row.expires_ms,
        has_password: row.password_hash.is_some(),
        upload_only: row.upload_only,
    }
}

/// A link to the file or folder at `path`. The answer holds the link's
/// address, which is shown only this once.
#[utoipa::path(post, path = "/api/v1/links", request_body = CreateLinkRequest, responses((status = 201, body = LinkInfo, description = "the link; url_path is its address, shown only in this answer"), (status = 400, body = tessera_proto::ErrorBody, description = "a bad path, expiry or password"), (status = 404, body = tessera_proto::ErrorBody, description = "nothing is at the path")), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<CreateLinkRequest>,
) -> Result<(StatusCode, Json<LinkInfo>), ApiError> {
    let path = RemotePath::parse(&req.path)?;
    let expires_ms = match req.expires_in_secs {
        None => None,
        Some(0) => {
            return Err(ApiError::BadRequest(
                "expires_in_secs must be at least 1; leave it out for a link that does not expire"
                    .into(),
            ));
        }
        Some(s) if s > MAX_EXPIRY_SECS => {
            return Err(ApiError::BadRequest(format!(
                "expires_in_secs may be at most {MAX_EXPIRY_SECS} (ten years); leave it out for \
                 a link that does not expire"
            )));
        }
        Some(s) => Some(state.clock.now_ms() + s as i64 * 1000),
    };
    if req
        .password
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > MAX_PASSWORD_BYTES)
    {
        return Err(ApiError::BadRequest(format!(
            "a link's password must be 1 to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let at = if req.upload_only {
        place::write(&state, &user, &path).await?
    } else {
        place::read(&state, &user, &path).await?
    };
    let node = state
        .meta
        .resolve(at.ns, &at.path)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{path} does not exist")))?;
    // Hashed in a slot of the bounded pool (~19 MiB each), after the cheap
    // checks.
    let password_hash = match req.password {
        None => None,
        Some(p) => Some(
            state
                .password_checks
                .hash(p)
                .await
                .map_err(|busy| ApiError::Throttled(busy.to_string(), 1))?
                .map_err(ApiError::internal)?,
        ),
    };
    if req.upload_only && path.is_root() {
        return Err(ApiError::BadRequest(
            "a file request takes files into a folder: make one (say /Inbox) and ask for files \
             there"
                .into(),
        ));
    }
    if req.upload_only && !node.is_folder() {
        return Err(ApiError::BadRequest(format!(
            "{path} is a file: an upload-only link takes files into a folder"
        )));
    }
    let (token, hash) = new_link_token();
    let row = LinkRow {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.user_id,
        namespace_id: at.ns,
        node_id: node.id.clone(),
        password_hash,
        upload_only: req.upload_only,
        created_ms: state.clock.now_ms(),
        expires_ms,
    };
    state.meta.create_link(&row, &hash).await?;
    tracing::info!(link = %row.id, "link created");
    let url_path = Some(format!("{LINK_PREFIX}{token}"));
    Ok((
        StatusCode::CREATED,
        Json(info(&row, Some((&node, &path)), url_path)),
    ))
}

/// Your links, newest first, with where each leads now.
#[utoipa::path(get, path = "/api/v1/links", responses((status = 200, body = LinkList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<LinkList>, ApiError> {
    let rows = state.meta.links_of(user.user_id).await?;
    let places = super::place::Places::of(&state, &user).await?;
    let mut links = Vec::with_capacity(rows.len());
    for row in rows {
        // Where it is in the user's files: their own, or under a shared
        // folder's mount; nowhere once they no longer have that folder.
        let mount = places
            .mounts()
            .iter()
            .find(|m| m.namespace_id == row.namespace_id);
        let at = if row.namespace_id == user.ns || mount.is_some() {
            match state.meta.live_node(row.namespace_id, &row.node_id).await? {
                Some((node, inner)) => {
                    let shown = match mount {
                        Some(m) if inner.is_root() => RemotePath::root().join(&m.name)?,
                        Some(m) => RemotePath::parse(&format!("/{}{inner}", m.name))?,
                        None => inner,
                    };
                    Some((node, shown))
                }
                None => None,
            }
        } else {
            None
        };
        links.push(info(&row, at.as_ref().map(|(n, p)| (n, p)), None));
    }
    Ok(Json(LinkList { links }))
}

/// Revokes one of your links: it answers 404 from now on.
#[utoipa::path(delete, path = "/api/v1/links/{id}", params(("id" = String, Path, description = "the link's id")), responses((status = 204, description = "revoked"), (status = 404, body = tessera_proto::ErrorBody, description = "you have no link with this id")), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.meta.delete_link(user.user_id, &id).await? {
        return Err(ApiError::NotFound(format!("you have no link {id}")));
    }
    tracing::info!(link = %id, "link revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// What a visitor asks of a link.
#[derive(Debug, Default, Deserialize)]
pub struct VisitQuery {
    /// Inside a folder link: a path below the link's folder.
    #[serde(default)]
    path: Option<String>,
    /// 1: the file itself, or the folder as a zip.
    #[serde(default)]
    download: Option<u8>,
    /// 1: the file shown in the browser when its kind is safe to show.
    #[serde(default)]
    inline: Option<u8>,
}

/// Why a visit ends before the content: each is a page.
enum Stop {
    NotFound,
    Expired,
    Locked { wrong: bool, basic: bool },
    Busy(u64),
    Api(ApiError),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(_) | ApiError::NotAFile(_) | ApiError::NotAFolder(_) => {
                Stop::NotFound
            }
            other => Stop::Api(other),
        }
    }
}

impl From<crate::meta::MetaError> for Stop {
    fn from(e: crate::meta::MetaError) -> Self {
        Stop::from(ApiError::from(e))
    }
}

impl IntoResponse for Stop {
    fn into_response(self) -> Response {
        let (status, title, body) = match self {
            Stop::NotFound => (
                StatusCode::NOT_FOUND,
                "Link not found",
                "<p>This link does not exist. It may have been revoked, or what it \
                 pointed to was deleted. Ask whoever sent it for a new one.</p>"
                    .to_owned(),
            ),
            Stop::Expired => (
                StatusCode::GONE,
                "Link expired",
                "<p>This link has expired. Ask whoever sent it for a new one.</p>".to_owned(),
            ),
            Stop::Locked { wrong, basic } => {
                let mut resp = page(
                    StatusCode::UNAUTHORIZED,
                    "Password needed",
                    &password_form(wrong),
                );
                // Only to a visitor who sent Basic auth: a browser shown the
                // form must not also pop up its own password prompt.
                if basic {
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"tessera link\", charset=\"UTF-8\""),
                    );
                }
                return resp;
            }
            Stop::Busy(secs) => {
                let mut resp = page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts",
                    "<p>Too many wrong passwords. Wait a while, then try again.</p>",
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return resp;
            }
            Stop::Api(e) => return e.into_response(),
        };
        page(status, title, &body)
    }
}

fn password_form(wrong: bool) -> String {
    let note = if wrong {
        "<p class=\"error\" role=\"alert\">That password is not right.</p>"
    } else {
        ""
    };
    format!(
        "<p>This link is protected by a password.</p>{note}\
         <form method=\"post\" class=\"unlock\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required autofocus \
         autocomplete=\"current-password\">\
         <button type=\"submit\">Open</button></form>"
    )
}

/// HTML text with `&`, `<`, `>`, `"` and `'` escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query value, percent-encoded.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    page_with(status, title, body, PAGE_CSP, "")
}

fn page_with(
    status: StatusCode,
    title: &str,
    body: &str,
    csp: &'static str,
    head: &str,
) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{} · Tessera</title><link rel=\"stylesheet\" href=\"/assets/link.css\">{head}</head>\
         <body><main class=\"link\"><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    );
    let mut resp = (status, html).into_response();
    let out = resp.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The link behind `token`, live and not expired.
async fn open(state: &AppState, token: &str) -> Result<LinkRow, Stop> {
    // Anything that is not a token of ours is simply not found.
    if token.is_empty() || token.len() > 64 {
        return Err(Stop::NotFound);
    }
    let link = state
        .meta
        .link_by_token(&link_token_hash(token))
        .await?
        .ok_or(Stop::NotFound)?;
    if link.expires_ms.is_some_and(|at| at <= state.clock.now_ms()) {
        return Err(Stop::Expired);
    }
    Ok(link)
}

/// The unlock cookie's name for one link.
fn cookie_name(link: &LinkRow) -> String {
    format!("tessera_link_{}", link.id.replace('-', ""))
}

fn unlock_mac(link: &LinkRow, hash: &str, until_ms: i64) -> blake3::Hash {
    let key = blake3::derive_key("tessera link unlock v1", hash.as_bytes());
    blake3::keyed_hash(&key, format!("{}.{until_ms}", link.id).as_bytes())
}

fn has_unlock(link: &LinkRow, hash: &str, headers: &HeaderMap, now_ms: i64) -> bool {
    super::auth::cookie_values(headers, &cookie_name(link))
        .filter_map(|v| v.split_once('.'))
        .any(|(until, mac)| {
            // `blake3::Hash` compares in constant time.
            let given = blake3::Hash::from_hex(mac);
            until.parse::<i64>().is_ok_and(|until| {
                until > now_ms && given.is_ok_and(|g| g == unlock_mac(link, hash, until))
            })
        })
}

/// The password of an `Authorization: Basic` header (any user name).
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    Some(
        text.split_once(':')
            .map_or(text.clone(), |(_, p)| p.to_owned()),
    )
}

/// Checks a password given for `link`, through the brake and the bounded
/// pool of checks.
async fn check_password(
    state: &AppState,
    link: &LinkRow,
    hash: &str,
    password: String,
    address: &str,
) -> Result<bool, Stop> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Ok(false);
    }
    let attempt = state
        .limiter
        .link_attempt(&link.id, address)
        .await?
        .map_err(Stop::Busy)?;
    match state
        .password_checks
        .verify(password, Some(hash.to_owned()))
        .await
    {
        Ok(true) => {
            attempt.succeeded().await?;
            Ok(true)
        }
        Ok(false) => {
            attempt.failed().await?;
            tracing::info!(link = %link.id, %address, "wrong link password");
            Ok(false)
        }
        Err(_) => {
            attempt.not_checked().await?;
            Err(Stop::Busy(1))
        }
    }
}

/// A visit: the page, the file or the zip, once the link is open to the
/// visitor.
#[utoipa::path(get, path = "/s/{token}", params(("token" = String, Path, description = "the link's token"), ("path" = Option<String>, Query, description = "inside a folder link: a path below it"), ("download" = Option<u8>, Query, description = "1: the file, or the folder as a zip"), ("inline" = Option<u8>, Query, description = "1: the file shown in the browser when safe")), responses((status = 200, description = "the page (text/html), the file, or the zip"), (status = 206, description = "a byte range of the file"), (status = 401, description = "the link needs its password (a form, or HTTP Basic auth)"), (status = 404, description = "no such link, or it was revoked"), (status = 410, description = "the link has expired"), (status = 429, description = "too many wrong passwords")))]
pub async fn visit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    query: Result<axum::extract::Query<VisitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let q = query.map(|q| q.0).unwrap_or_default();
    match serve_visit(&state, peer, &token, &q, &headers).await {
        Ok(resp) => resp,
        Err(stop) => stop.into_response(),
    }
}

/// Lets the visitor in: no password, the unlock cookie, or the password as
/// HTTP Basic auth.
async fn admit(
    state: &AppState,
    peer: SocketAddr,
    link: &LinkRow,
    headers: &HeaderMap,
) -> Result<(), Stop> {
    let Some(hash) = &link.password_hash else {
        return Ok(());
    };
    if has_unlock(link, hash, headers, state.clock.now_ms()) {
        return Ok(());
    }
    let Some(given) = basic_password(headers) else {
        return Err(Stop::Locked {
            wrong: false,
            basic: false,
        });
    };
    let address = state.proxies.client(peer.ip(), headers).to_string();
    if !check_password(state, link, hash, given, &address).await? {
        return Err(Stop::Locked {
            wrong: true,
            basic: true,
        });
    }
    Ok(())
}

async fn serve_visit(
    state: &AppState,
    peer: SocketAddr,
    token: &str,
    q: &VisitQuery,
    headers: &HeaderMap,
) -> Result<Response, Stop> {
    let link = open(state, token).await?;
    admit(state, peer, &link, headers).await?;
    let (root, root_path) = state
        .meta
        .live_node(link.namespace_id, &link.node_id)
        .await?
        .ok_or(Stop::NotFound)?;
    if link.upload_only {
        // A file request shows nothing of the folder, not even its name.
        if q.path.is_some() || q.download.is_some() || q.inline.is_some() || !root.is_folder() {
            return Err(Stop::NotFound);
        }
        return Ok(upload_page());
    }
    let (node, path, inside) = match q.path.as_deref().filter(|p| *p != "/") {
        None => (root.clone(), root_path.clone(), RemotePath::root()),
        Some(_) if !root.is_folder() => return Err(Stop::NotFound),
        Some(sub) => {
            let inside = RemotePath::parse(sub).map_err(|_| Stop::NotFound)?;
            let full = if root_path.is_root() {
                inside.clone()
            } else {
                RemotePath::parse(&format!("{root_path}{inside}")).map_err(|_| Stop::NotFound)?
            };
            let node = state
                .meta
                .resolve(link.namespace_id, &full)
                .await?
                .ok_or(Stop::NotFound)?;
            (node, full, inside)
        }
    };
    let name = if node.parent_id.is_none() {
        "Files".to_owned()
    } else {
        node.name.clone()
    };
    if node.is_folder() {
        if q.download == Some(1) {
            let mut resp = super::zip::zip_response(
                state.clone(),
                link.namespace_id,
                path,
                &name,
                Vec::new(),
            )?;
            resp.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            return Ok(resp);
        }
        let entries = state.meta.list(link.namespace_id, &path).await?;
        return Ok(folder_page(&name, &inside, &entries));
    }
    if q.download == Some(1) || q.inline == Some(1) {
        let resp =
            super::files::file_response(state, link.namespace_id, &path, None, headers).await?;
        // A PDF shown inline runs in the browser's viewer without the
        // sandbox: someone else's PDF only ever comes down as a file.
        let inline = q.inline == Some(1) && !name.to_ascii_lowercase().ends_with(".pdf");
        let mut resp = super::view::typed(resp, &name, inline)?;
        resp.headers_mut().insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        return Ok(resp);
    }
    if node.content_hash().is_none() {
        // Still uploading its first version: nothing to show yet.
        return Err(Stop::NotFound);
    }
    Ok(file_page(&name, &inside, &node))
}

/// The password form's answer: on the right password, a cookie for this
/// link and back to the page.
#[utoipa::path(post, path = "/s/{token}", params(("token" = String, Path, description = "the link's token")), request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "password=…"), responses((status = 303, description = "the password is right: back to the page, with a cookie for this link"), (status = 401, description = "wrong password"), (status = 404, description = "no such link"), (status = 410, description = "the link has expired"), (status = 429, description = "too many wrong passwords")))]
pub async fn unlock(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serve_unlock(&state, peer, &token, &headers, &body).await {
        Ok(resp) => resp,
        Err(stop) => stop.into_response(),
    }
}

async fn serve_unlock(
    state: &AppState,
    peer: SocketAddr,
    token: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Stop> {
    let link = open(state, token).await?;
    let here = format!("{LINK_PREFIX}{token}");
    let Some(hash) = link.password_hash.clone() else {
        return Ok(see_other(&here, None));
    };
    let password = serde_urlencoded_password(body);
    let address = state.proxies.client(peer.ip(), headers).to_string();
    if !check_password(state, &link, &hash, password, &address).await? {
        return Err(Stop::Locked {
            wrong: true,
            basic: false,
        });
    }
    let until = state.clock.now_ms() + UNLOCK_MS;
    let secure = super::auth::over_https(headers);
    let cookie = format!(
        "{}={until}.{}; Path={LINK_PREFIX}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        cookie_name(&link),
        unlock_mac(&link, &hash, until).to_hex(),
        UNLOCK_MS / 1000,
        if secure { "; Secure" } else { "" }
    );
    Ok(see_other(&here, Some(cookie)))
}

fn serde_urlencoded_password(body: &[u8]) -> String {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let out = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        out.insert(header::LOCATION, v);
    }
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        out.insert(header::SET_COOKIE, v);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KB", "MB", "GB", "TB"];
    let mut size = bytes.max(0) as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < UNITS.len() {
        size /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// The query that names `inside` (a path below the link's folder).
fn at(inside: &RemotePath) -> String {
    if inside.is_root() {
        String::new()
    } else {
        format!("path={}&", enc(inside.as_str()))
    }
}

fn file_page(name: &str, inside: &RemotePath, node: &NodeRow) -> Response {
    let q = at(inside);
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map_or("", |(_, e)| e);
    let preview = match ext {
        "png" | "jpg" | "jpeg" | "gif" | "webp" | "avif" | "bmp" | "svg" => {
            format!(
                "<img class=\"preview\" src=\"?{q}inline=1\" alt=\"{}\">",
                esc(name)
            )
        }
        "mp4" | "m4v" | "webm" | "ogv" | "mov" => {
            format!(
                "<video class=\"preview\" controls preload=\"metadata\" src=\"?{q}inline=1\"></video>"
            )
        }
        "mp3" | "m4a" | "aac" | "ogg" | "oga" | "opus" | "wav" | "flac" | "weba" => {
            format!(
                "<audio class=\"preview\" controls preload=\"metadata\" src=\"?{q}inline=1\"></audio>"
            )
        }
        _ => String::new(),
    };
    let body = format!(
        "<p class=\"meta\">{}</p>{preview}<p class=\"actions\">\
         <a class=\"button\" href=\"?{q}download=1\" download>Download</a> \
         <a href=\"?{q}inline=1\">Open in the browser</a></p>",
        esc(&human_size(node.size))
    );
    page_titled(name, &body)
}

fn folder_page(name: &str, inside: &RemotePath, entries: &[NodeRow]) -> Response {
    let q = at(inside);
    let mut rows = String::new();
    if !inside.is_root() {
        let up = inside.parent().unwrap_or_else(RemotePath::root);
        rows.push_str(&format!(
            "<li class=\"up\"><a href=\"?{}\">↑ Up</a></li>",
            at(&up).trim_end_matches('&')
        ));
    }
    let mut shown: Vec<&NodeRow> = entries
        .iter()
        .filter(|e| e.is_folder() || e.content_hash().is_some())
        .collect();
    shown.sort_by(|a, b| {
        b.is_folder()
            .cmp(&a.is_folder())
            .then_with(|| a.name.cmp(&b.name))
    });
    for e in &shown {
        let Ok(child) = inside.join(&e.name) else {
            continue;
        };
        let cq = at(&child);
        if e.is_folder() {
            rows.push_str(&format!(
                "<li class=\"folder\"><a href=\"?{}\">{}/</a></li>",
                cq.trim_end_matches('&'),
                esc(&e.name)
            ));
        } else {
            rows.push_str(&format!(
                "<li class=\"file\"><a href=\"?{cq}download=1\" download>{}</a> \
                 <span class=\"size\">{}</span></li>",
                esc(&e.name),
                esc(&human_size(e.size))
            ));
        }
    }
    if shown.is_empty() {
        rows.push_str("<li class=\"empty\">This folder is empty.</li>");
    }
    let body = format!(
        "<p class=\"actions\"><a class=\"button\" href=\"?{q}download=1\" download>\
         Download all (zip)</a></p><ul class=\"entries\">{rows}</ul>"
    );
    page_titled(name, &body)
}

fn upload_page() -> Response {
    let body = "<p>Send files here. You will not see what is in the folder, and \
        nothing already there is replaced: a name that is taken gets a number.</p>\
        <form class=\"drop\" id=\"drop\">\
        <label for=\"files\">Choose files</label>\
        <input id=\"files\" name=\"files\" type=\"file\" multiple required>\
        <button type=\"submit\">Upload</button></form>\
        <ul class=\"entries\" id=\"sent\" aria-live=\"polite\"></ul>\
        <noscript><p>Uploading here needs JavaScript; from a terminal, send each file \
        with <code>curl -T FILE \"THIS-ADDRESS/upload?name=NAME\"</code>.</p></noscript>";
    page_with(
        StatusCode::OK,
        "Upload files",
        body,
        UPLOAD_CSP,
        "<script type=\"module\" src=\"/assets/drop.js\"></script>",
    )
}

/// Where a file request's upload goes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkUploadQuery {
    /// The file's name (no `/`); a name already taken gets a number.
    name: String,
}

/// A file sent through a file request (an upload-only link): stored in the
/// link's folder under `name`, or `name (1)` … when that is taken. Nothing
/// is replaced, and nothing of the folder is shown.
#[utoipa::path(put, path = "/s/{token}/upload", params(("token" = String, Path, description = "the link's token"), LinkUploadQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 201, body = tessera_proto::api::LinkUploadResponse), (status = 400, body = tessera_proto::ErrorBody, description = "a bad name, or a body cut short"), (status = 401, description = "the link needs its password"), (status = 403, body = tessera_proto::ErrorBody, description = "the link does not take uploads"), (status = 404, description = "no such link"), (status = 410, description = "the link has expired"), (status = 413, body = tessera_proto::ErrorBody), (status = 507, body = tessera_proto::ErrorBody, description = "the owner's storage is full")))]
pub async fn upload(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    query: Result<axum::extract::Query<LinkUploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    match serve_upload(&state, peer, &token, query, &headers, body).await {
        Ok(resp) => resp,
        Err(stop) => stop.into_response(),
    }
}

async fn serve_upload(
    state: &AppState,
    peer: SocketAddr,
    token: &str,
    query: Result<axum::extract::Query<LinkUploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Stop> {
    let link = open(state, token).await?;
    admit(state, peer, &link, headers).await?;
    if !link.upload_only {
        return Err(Stop::Api(ApiError::Forbidden(
            "this link does not take uploads".into(),
        )));
    }
    let name = query
        .map_err(|e| ApiError::BadRequest(format!("{}: give ?name=FILE-NAME", e.body_text())))?
        .0
        .name;
    let (folder, folder_path) = state
        .meta
        .live_node(link.namespace_id, &link.node_id)
        .await?
        .ok_or(Stop::NotFound)?;
    if !folder.is_folder() {
        return Err(Stop::NotFound);
    }
    let first = folder_path
        .join(&name)
        .map_err(|e| ApiError::BadRequest(format!("`{name}` cannot be a file name: {e}")))?;
    let stored = super::files::ingest_body(state, link.user_id, headers, body).await?;
    let mut path = first;
    for n in 1..=MOST_SUFFIXES {
        let new = crate::meta::NewRevision {
            ns: link.namespace_id,
            user_id: link.user_id,
            path: path.clone(),
            // 0: only where nothing is, so nothing is ever replaced.
            base_rev: Some(0),
            size: stored.size,
            content_hash: stored.content_hash,
            chunker: tessera_proto::block::CHUNKER.to_owned(),
            blocks: stored.blocks.clone(),
            device: link_device(&link),
        };
        match state.meta.commit(&new).await {
            Ok(node) => {
                tracing::info!(link = %link.id, size = stored.size, "file received through a link");
                let body = tessera_proto::api::LinkUploadResponse {
                    name: node.name,
                    size: stored.size,
                };
                return Ok((StatusCode::CREATED, Json(body)).into_response());
            }
            Err(
                crate::meta::MetaError::Conflict { .. }
                | crate::meta::MetaError::NotAFile(_)
                | crate::meta::MetaError::AlreadyExists(_),
            ) => {
                path = folder_path
                    .join(&tessera_proto::path::numbered_name(&name, u64::from(n)))
                    .map_err(|e| ApiError::BadRequest(format!("`{name}` is too long: {e}")))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Stop::Api(ApiError::AlreadyExists(format!(
        "{name} and {MOST_SUFFIXES} numbered names beside it are taken: rename the file"
    ))))
}

/// The device a link's uploads are recorded as: the owner sees which link
/// brought a file, and a link reaches only its own upload sessions.
fn link_device(link: &LinkRow) -> String {
    format!("{}{}", crate::uploads::LINK_DEVICE, link.id)
}

/// A file request's visitor, admitted, as a TUS scope over the link's
/// folder: the folder and its path, and whose sessions they reach.
async fn file_request(
    state: &AppState,
    peer: SocketAddr,
    token: &str,
    headers: &HeaderMap,
) -> Result<(RemotePath, super::tus::Scope), Stop> {
    let link = open(state, token).await?;
    admit(state, peer, &link, headers).await?;
    if !link.upload_only {
        return Err(Stop::Api(ApiError::Forbidden(
            "this link does not take uploads".into(),
        )));
    }
    let (folder, folder_path) = state
        .meta
        .live_node(link.namespace_id, &link.node_id)
        .await?
        .ok_or(Stop::NotFound)?;
    if !folder.is_folder() {
        return Err(Stop::NotFound);
    }
    let device = link_device(&link);
    let scope = super::tus::Scope {
        who: crate::uploads::Uploader {
            user_id: link.user_id,
            ns: link.namespace_id,
            device: device.clone(),
        },
        base: format!("{LINK_PREFIX}{token}/tus"),
        mount: None,
        only_device: Some(device),
        show_path: false,
    };
    Ok((folder_path, scope))
}

/// The first of `name`, `name (1)` … that nothing in `folder` holds. A
/// file that takes the name before the upload ends makes it a conflicted
/// copy instead: nothing is replaced either way.
async fn free_name(
    state: &AppState,
    ns: i64,
    folder: &RemotePath,
    name: &str,
) -> Result<RemotePath, Stop> {
    let bad = |e: tessera_proto::PathError| {
        Stop::Api(ApiError::BadRequest(format!(
            "`{name}` cannot be a file name: {e}"
        )))
    };
    let mut path = folder.join(name).map_err(bad)?;
    for n in 1..=MOST_SUFFIXES {
        if state.meta.resolve(ns, &path).await?.is_none() {
            return Ok(path);
        }
        path = folder
            .join(&tessera_proto::path::numbered_name(name, u64::from(n)))
            .map_err(bad)?;
    }
    Err(Stop::Api(ApiError::AlreadyExists(format!(
        "{name} and {MOST_SUFFIXES} numbered names beside it are taken: rename the file"
    ))))
}

fn answer(result: Result<Result<Response, super::tus::TusError>, Stop>) -> Response {
    match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(tus)) => tus.into_response(),
        Err(stop) => stop.into_response(),
    }
}

/// TUS creation through a file request: `Upload-Metadata` carries the
/// file's `filename` (or `name`); the session's URL is under this link.
#[utoipa::path(post, path = "/s/{token}/tus/", params(("token" = String, Path, description = "the link's token"), ("Tus-Resumable" = super::openapi::TusVersion, Header, description = "the protocol version: 1.0.0"), ("Upload-Length" = u64, Header, description = "the size of the file in bytes"), ("Upload-Metadata" = String, Header, description = "`filename base64(name)`")), responses((status = 201, description = "the session", headers(("Location" = String), ("Upload-Expires" = String))), (status = 400, body = tessera_proto::ErrorBody, description = "no file name, or a bad one"), (status = 401, description = "the link needs its password"), (status = 403, body = tessera_proto::ErrorBody, description = "the link does not take uploads"), (status = 404, description = "no such link"), (status = 410, description = "the link has expired"), (status = 413, body = tessera_proto::ErrorBody), (status = 507, body = tessera_proto::ErrorBody, description = "the owner's storage is full")))]
pub async fn tus_create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            let (folder, scope) = file_request(&state, peer, &token, &headers).await?;
            let length = match super::tus::creation_length(&state, &scope, &headers).await {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            let (raw, name) = match super::tus::metadata_value(&headers, &["filename", "name"]) {
                Ok(found) => found,
                Err(e) => return Ok(Err(e)),
            };
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                return Err(Stop::Api(ApiError::BadRequest(
                    "Upload-Metadata must carry the file's `filename`".into(),
                )));
            };
            let path = free_name(&state, scope.who.ns, &folder, &name).await?;
            Ok(super::tus::start(&state, &scope, &path, Some(0), length, &raw).await)
        }
        .await,
    )
}

/// Where a file request's upload session stands.
#[utoipa::path(head, path = "/s/{token}/tus/{id}", params(("token" = String, Path, description = "the link's token"), ("id" = String, Path, description = "the upload session"), ("Tus-Resumable" = super::openapi::TusVersion, Header, description = "the protocol version: 1.0.0")), responses((status = 200, description = "where the session stands", headers(("Upload-Offset" = u64), ("Upload-Length" = u64))), (status = 401, description = "the link needs its password"), (status = 404, description = "no such link or session")))]
pub async fn tus_head(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            let (_, scope) = file_request(&state, peer, &token, &headers).await?;
            Ok(super::tus::head_in(&state, &scope, &id, &headers).await)
        }
        .await,
    )
}

/// Appends to a file request's upload session; the last byte stores the
/// file.
#[utoipa::path(patch, path = "/s/{token}/tus/{id}", params(("token" = String, Path, description = "the link's token"), ("id" = String, Path, description = "the upload session"), ("Tus-Resumable" = super::openapi::TusVersion, Header, description = "the protocol version: 1.0.0"), ("Upload-Offset" = u64, Header, description = "where these bytes start")), request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"), responses((status = 204, description = "stored", headers(("Upload-Offset" = u64))), (status = 400, body = tessera_proto::ErrorBody), (status = 401, description = "the link needs its password"), (status = 404, description = "no such link or session"), (status = 409, body = tessera_proto::ErrorBody, description = "Upload-Offset is not the session's offset"), (status = 413, body = tessera_proto::ErrorBody)))]
pub async fn tus_patch(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    answer(
        async {
            let (_, scope) = file_request(&state, peer, &token, &headers).await?;
            Ok(super::tus::patch_in(&state, &scope, &id, &headers, body).await)
        }
        .await,
    )
}

/// Ends a file request's upload session.
#[utoipa::path(delete, path = "/s/{token}/tus/{id}", params(("token" = String, Path, description = "the link's token"), ("id" = String, Path, description = "the upload session"), ("Tus-Resumable" = super::openapi::TusVersion, Header, description = "the protocol version: 1.0.0")), responses((status = 204, description = "the session ended"), (status = 401, description = "the link needs its password"), (status = 404, description = "no such link or session")))]
pub async fn tus_delete(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            let (_, scope) = file_request(&state, peer, &token, &headers).await?;
            Ok(super::tus::terminate_in(&state, &scope, &id, &headers).await)
        }
        .await,
    )
}

fn page_titled(name: &str, body: &str) -> Response {
    page(StatusCode::OK, name, body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn tokens_carry_128_bits_and_only_their_hash_is_kept() {
        let (a, ha) = new_link_token();
        let (b, hb) = new_link_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22, "{a}");
        assert_eq!(link_token_hash(&a), ha);
        assert_ne!(ha, hb);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn names_are_escaped_in_pages() {
        assert_eq!(
            esc("<img src=x onerror='a'>&\""),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
    }
}
