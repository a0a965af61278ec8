//! TUS 1.0.0 resumable uploads at `/api/v1/tus/`: core, creation,
//! expiration, termination and checksum. The work is done by `crate::uploads`; this file
//! speaks the protocol's headers and statuses.
//!
//! `Upload-Metadata` names the target: `path` (the full path), or
//! `filename` (or `name`) with an optional `folder`; `base_rev` makes the
//! upload an edit of that revision (if the file moved on meanwhile, it lands
//! as a conflicted copy beside it). The PATCH that completes the upload
//! commits the file and answers with `Tessera-Path` and `Tessera-Rev`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::TryStreamExt;
use tessera_proto::RemotePath;
use tessera_proto::error::{ErrorBody, ErrorCode, ErrorDetail};

use super::files::{drain, idle_timeout};
use super::place::{self, Places};
use super::{ApiError, AppState, AuthUser};
use crate::meta::UploadRow;
use crate::uploads::checksum::{ALGORITHMS, Checksum};
use crate::uploads::{Patched, UploadError, Uploader};

const VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,expiration,termination,checksum";
const OFFSET_TYPE: &str = "application/offset+octet-stream";

/// An error in TUS terms: the status the protocol asks for, a JSON body
/// saying what to do, and the `Tus-Resumable` header.
pub struct TusError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl TusError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }
}

impl From<ApiError> for TusError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let detail = e.detail();
        Self {
            status,
            code: detail.code,
            message: detail.message,
        }
    }
}

impl From<UploadError> for TusError {
    fn from(e: UploadError) -> Self {
        let message = e.to_string();
        match e {
            UploadError::NotFound => Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message),
            UploadError::OffsetMismatch { .. } | UploadError::Moved | UploadError::Complete => {
                Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
            }
            UploadError::TooLong(_) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, message)
            }
            UploadError::ChecksumMismatch => Self::new(
                // 460: the checksum extension's "Checksum Mismatch".
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                ErrorCode::HashMismatch,
                message,
            ),
            UploadError::TooManySessions(_) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                message,
            ),
            UploadError::Damaged(_) => ApiError::internal(message).into(),
            UploadError::Block(b) => ApiError::from(b).into(),
            UploadError::Meta(m) => ApiError::from(m).into(),
        }
    }
}

impl IntoResponse for TusError {
    fn into_response(self) -> Response {
        let message = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(detail = %self.message, "upload failed");
            "internal server error; the server log has the details".to_owned()
        } else {
            self.message
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message,
                current_rev: None,
                missing: Vec::new(),
            },
        };
        (
            self.status,
            [(tus_resumable(), HeaderValue::from_static(VERSION))],
            axum::Json(body),
        )
            .into_response()
    }
}

fn tus_resumable() -> HeaderName {
    HeaderName::from_static("tus-resumable")
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, TusError> {
    text(headers, name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| TusError::bad(format!("{name} must be a non-negative integer")))
        })
        .transpose()
}

/// Every request but OPTIONS must speak our version.
fn check_version(headers: &HeaderMap) -> Result<(), TusError> {
    match text(headers, "tus-resumable").as_deref() {
        Some(VERSION) => Ok(()),
        _ => Err(TusError::new(
            StatusCode::PRECONDITION_FAILED,
            ErrorCode::BadRequest,
            format!("send Tus-Resumable: {VERSION}; no other version is supported"),
        )),
    }
}

fn header_value(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (value optional).
fn parse_metadata(raw: &str) -> Result<Vec<(String, String)>, TusError> {
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.splitn(2, ' ');
        let key = parts.next().unwrap_or_default().to_owned();
        let value = match parts.next() {
            Some(v) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map_err(|_| {
                        TusError::bad(format!("Upload-Metadata: `{key}` is not base64"))
                    })?;
                String::from_utf8(bytes)
                    .map_err(|_| TusError::bad(format!("Upload-Metadata: `{key}` is not UTF-8")))?
            }
            None => String::new(),
        };
        out.push((key, value));
    }
    Ok(out)
}

/// Where the upload goes, and the revision it edits, from its metadata.
fn target(meta: &[(String, String)]) -> Result<(RemotePath, Option<i64>), TusError> {
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let path = match (get("path"), get("filename").or(get("name"))) {
        (Some(p), _) => RemotePath::parse(p),
        (None, Some(name)) => {
            RemotePath::parse(get("folder").unwrap_or("/")).and_then(|folder| folder.join(name))
        }
        (None, None) => {
            return Err(TusError::bad(
                "Upload-Metadata must name the target: `path`, or `filename` with an optional `folder`",
            ));
        }
    }
    .map_err(|e| TusError::from(ApiError::from(e)))?;
    if path.is_root() {
        return Err(TusError::bad("a file cannot be uploaded as /"));
    }
    let base_rev = match get("base_rev") {
        Some(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .map_err(|_| TusError::bad("Upload-Metadata: base_rev must be an integer"))?,
        ),
        _ => None,
    };
    Ok((path, base_rev))
}

fn who(user: &AuthUser) -> Uploader {
    Uploader {
        user_id: user.user_id,
        ns: user.ns,
        device: user.device.clone(),
    }
}

/// Whose sessions a request reaches, and what its answers may say: a
/// signed-in user reaches their own and is told where files land; a file
/// request's visitor reaches only the sessions of that link and is told
/// nothing of the folder.
pub(super) struct Scope {
    pub who: Uploader,
    /// Where session URLs start (`/api/v1/tus`, `/s/{token}/tus`).
    pub base: String,
    /// Only sessions whose device is this (a link's), when set.
    pub only_device: Option<String>,
    /// Whether answers carry `Tessera-Path`.
    pub show_path: bool,
    /// The mount point of the shared folder the sessions lie in, which
    /// answers put before the path inside it.
    pub mount: Option<String>,
}

impl Scope {
    fn of(user: &AuthUser) -> Self {
        Scope {
            who: who(user),
            base: format!("{}/tus", tessera_proto::API_PREFIX),
            only_device: None,
            show_path: true,
            mount: None,
        }
    }

    /// The scope of a signed-in user's session `id`: in their own files,
    /// or in a shared folder they write to.
    async fn of_session(state: &AppState, user: &AuthUser, id: &str) -> Result<Self, TusError> {
        let mut scope = Scope::of(user);
        if state
            .meta
            .upload(user.ns, id)
            .await
            .map_err(ApiError::from)?
            .is_some()
        {
            return Ok(scope);
        }
        for m in Places::of(state, user).await?.mounts() {
            // A folder the user may only view takes no upload, even one
            // begun while they could write there.
            if !m.writable() {
                continue;
            }
            let row = state
                .meta
                .upload(m.namespace_id, id)
                .await
                .map_err(ApiError::from)?;
            if row.is_some_and(|r| r.user_id == user.user_id) {
                scope.who.ns = m.namespace_id;
                scope.mount = Some(m.name.clone());
                break;
            }
        }
        Ok(scope)
    }

    /// The session `id`, if this scope reaches it.
    async fn session(&self, state: &AppState, id: &str) -> Result<UploadRow, TusError> {
        let row = state.uploads.session(self.who.ns, id).await?;
        if row.user_id != self.who.user_id {
            // Another member's session in a shared folder.
            return Err(UploadError::NotFound.into());
        }
        match &self.only_device {
            Some(d) if *d != row.device => Err(UploadError::NotFound.into()),
            _ => Ok(row),
        }
    }

    fn add_result(&self, headers: &mut HeaderMap, path: &str, rev: i64) {
        if self.show_path {
            match &self.mount {
                Some(m) => add_result(headers, &format!("/{m}{path}"), rev),
                None => add_result(headers, path, rev),
            }
        }
    }
}

/// Discovery: what this server supports. No credentials needed.
#[utoipa::path(options, path = "/api/v1/tus/", responses((status = 204, description = "what this server supports", headers(("Tus-Version" = String), ("Tus-Extension" = String), ("Tus-Max-Size" = u64, description = "the largest file, in bytes"), ("Tus-Checksum-Algorithm" = String)))))]
pub async fn options(State(state): State<AppState>) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (tus_resumable(), HeaderValue::from_static(VERSION)),
            (
                HeaderName::from_static("tus-version"),
                HeaderValue::from_static(VERSION),
            ),
            (
                HeaderName::from_static("tus-extension"),
                HeaderValue::from_static(EXTENSIONS),
            ),
            (
                HeaderName::from_static("tus-max-size"),
                header_value(state.limits.max_file_size),
            ),
            (
                HeaderName::from_static("tus-checksum-algorithm"),
                HeaderValue::from_static(ALGORITHMS),
            ),
        ],
    )
        .into_response()
}

/// Creation: a new session for `Upload-Length` bytes.
#[utoipa::path(post, path = "/api/v1/tus/", params(("Tus-Resumable" = super::openapi::TusVersion, Header, description = "the protocol version: 1.0.0"), ("Upload-Length" = u64, Header, description = "the size of the file in bytes"), ("Upload-Metadata" = Option<String>, Header, description = "comma-separated `key base64(value)` pairs: `path`, or `filename` with an optional `folder`; optional `base_rev`")), responses((status = 201, description = "the session; an empty file is committed at once (then Tessera-Path and Tessera-Rev)", headers(("Location" = String, description = "the session's URL"), ("Upload-Expires" = String))), (status = 404, body = tessera_proto::ErrorBody, description = "the folder does not exist"), (status = 409, body = tessera_proto::ErrorBody, description = "the path is taken by a folder, or is below a file"), (status = 412, body = tessera_proto::ErrorBody, description = "Tus-Resumable is not 1.0.0"), (status = 413, body = tessera_proto::ErrorBody, description = "Upload-Length is over the server's limit"), (status = 429)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<Response, TusError> {
    let mut scope = Scope::of(&user);
    let length = creation_length(&state, &scope, &headers).await?;
    let raw_meta = text(&headers, "upload-metadata").unwrap_or_default();
    let (path, base_rev) = target(&parse_metadata(&raw_meta)?)?;
    let at = place::write(&state, &user, &path).await?;
    let inner = at.file()?.clone();
    scope.who.ns = at.ns;
    scope.mount = at.mount.map(|m| m.name);
    let response = start(&state, &scope, &inner, base_rev, length, &raw_meta).await?;
    tracing::info!(user = %user.username, %path, length, "upload session created");
    Ok(response)
}

/// A creation's `Upload-Length`, within the size limit and the quota.
pub(super) async fn creation_length(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
) -> Result<u64, TusError> {
    check_version(headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(TusError::bad(
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    let length = number(headers, "upload-length")?
        .ok_or_else(|| TusError::bad("send Upload-Length: the size of the file in bytes"))?;
    let limit = state.limits.max_file_size;
    if length > limit {
        return Err(super::files::too_large(limit).into());
    }
    state
        .meta
        .check_room(scope.who.user_id, length)
        .await
        .map_err(ApiError::from)?;
    Ok(length)
}

/// The session's metadata as sent, and the value of one of its keys.
pub(super) fn metadata_value(
    headers: &HeaderMap,
    keys: &[&str],
) -> Result<(String, Option<String>), TusError> {
    let raw = text(headers, "upload-metadata").unwrap_or_default();
    let found = parse_metadata(&raw)?
        .into_iter()
        .find(|(k, _)| keys.contains(&k.as_str()))
        .map(|(_, v)| v);
    Ok((raw, found))
}

/// Opens a session to `path` and answers the creation.
pub(super) async fn start(
    state: &AppState,
    scope: &Scope,
    path: &RemotePath,
    base_rev: Option<i64>,
    length: u64,
    raw_meta: &str,
) -> Result<Response, TusError> {
    let (id, done) = state
        .uploads
        .create(&scope.who, path, base_rev, length, raw_meta)
        .await?;
    let mut response = (
        StatusCode::CREATED,
        [
            (tus_resumable(), HeaderValue::from_static(VERSION)),
            (
                header::LOCATION,
                header_value(format!("{}/{id}", scope.base)),
            ),
        ],
    )
        .into_response();
    match done {
        Some(Patched::Done { path, node, .. }) => {
            scope.add_result(response.headers_mut(), path.as_str(), node.rev)
        }
        _ => add_expiry(response.headers_mut(), state, crate::meta::now_ms()),
    }
    Ok(response)
}

/// `Upload-Expires`: when a session last touched at `updated_ms` ends.
fn add_expiry(headers: &mut HeaderMap, state: &AppState, updated_ms: i64) {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(updated_ms.max(0) as u64)
        + state.limits.upload_ttl;
    headers.insert("upload-expires", header_value(httpdate::fmt_http_date(at)));
}

fn add_result(headers: &mut HeaderMap, path: &str, rev: i64) {
    // Paths may hold any Unicode: sent percent-encoded.
    let encoded = url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
    headers.insert("tessera-path", header_value(encoded.replace('+', "%20")));
    headers.insert("tessera-rev", header_value(rev));
}

/// Where a session stands. A finished one reports its full length.
#[utoipa::path(head, path = "/api/v1/tus/{id}", params(("id" = String, Path, description = "the upload session, as the creation's Location names it"), ("Tus-Resumable" = super::openapi::TusVersion, Header, description = "the protocol version: 1.0.0")), responses((status = 200, description = "where the session stands", headers(("Upload-Offset" = u64), ("Upload-Length" = u64), ("Upload-Metadata" = String), ("Upload-Expires" = String), ("Tessera-Path" = String, description = "once finished: the file's path, percent-encoded"), ("Tessera-Rev" = i64, description = "once finished: the file's revision"))), (status = 404, description = "no such session"), (status = 412, description = "Tus-Resumable is not 1.0.0")), security(("bearer" = [])))]
pub async fn head(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TusError> {
    head_in(
        &state,
        &Scope::of_session(&state, &user, &id).await?,
        &id,
        &headers,
    )
    .await
}

pub(super) async fn head_in(
    state: &AppState,
    scope: &Scope,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, TusError> {
    check_version(headers)?;
    let row = scope.session(state, id).await?;
    let mut response = (
        StatusCode::OK,
        [
            (tus_resumable(), HeaderValue::from_static(VERSION)),
            (
                HeaderName::from_static("upload-offset"),
                header_value(row.upload_offset),
            ),
            (
                HeaderName::from_static("upload-length"),
                header_value(row.length),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response();
    if !row.metadata.is_empty() {
        response
            .headers_mut()
            .insert("upload-metadata", header_value(&row.metadata));
    }
    match (&row.done_path, row.done_rev) {
        (Some(path), Some(rev)) => scope.add_result(response.headers_mut(), path, rev),
        _ => add_expiry(response.headers_mut(), state, row.updated_ms),
    }
    Ok(response)
}

/// Appends the body at `Upload-Offset`.
#[utoipa::path(patch, path = "/api/v1/tus/{id}", params(("id" = String, Path, description = "the upload session, as the creation's Location names it"), ("Tus-Resumable" = super::openapi::TusVersion, Header, description = "the protocol version: 1.0.0"), ("Upload-Offset" = u64, Header, description = "where these bytes start: the session's offset"), ("Upload-Checksum" = Option<String>, Header, description = "`ALGORITHM base64(digest)` of this body (sha1, sha256, md5, crc32)")), request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"), responses((status = 204, description = "stored; the last piece commits the file (then Tessera-Path and Tessera-Rev)", headers(("Upload-Offset" = u64), ("Upload-Expires" = String), ("Tessera-Path" = String), ("Tessera-Rev" = i64))), (status = 404, body = tessera_proto::ErrorBody, description = "no such session"), (status = 409, body = tessera_proto::ErrorBody, description = "Upload-Offset is not the session's offset, or the target changed"), (status = 412, body = tessera_proto::ErrorBody, description = "Tus-Resumable is not 1.0.0"), (status = 413, body = tessera_proto::ErrorBody, description = "the body goes past Upload-Length"), (status = 415, body = tessera_proto::ErrorBody, description = "the body is not application/offset+octet-stream"), (status = 422, body = tessera_proto::ErrorBody), (status = 460, body = tessera_proto::ErrorBody, description = "the body does not match Upload-Checksum")), security(("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    let scope = match Scope::of_session(&state, &user, &id).await {
        Ok(scope) => scope,
        Err(e) => {
            let stream = Box::pin(idle_timeout(
                body.into_data_stream().map_err(std::io::Error::other),
            ));
            drain(&mut tokio_util::io::StreamReader::new(stream)).await;
            return Err(e);
        }
    };
    patch_in(&state, &scope, &id, &headers, body).await
}

pub(super) async fn patch_in(
    state: &AppState,
    scope: &Scope,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    let stream = Box::pin(idle_timeout(
        body.into_data_stream().map_err(std::io::Error::other),
    ));
    let mut refused = tokio_util::io::StreamReader::new(stream);
    let checked = check_patch(state, scope, id, headers).await;
    let (offset, checksum, row) = match checked {
        Ok(v) => v,
        Err(e) => {
            drain(&mut refused).await;
            return Err(e);
        }
    };
    if let (Some(path), Some(rev)) = (&row.done_path, row.done_rev) {
        // A retry of the request that finished it: same answer.
        drain(&mut refused).await;
        if offset != row.length as u64 {
            return Err(UploadError::Complete.into());
        }
        let mut response = progress(row.length as u64);
        scope.add_result(response.headers_mut(), path, rev);
        return Ok(response);
    }
    let body = refused.into_inner();
    match state
        .uploads
        .patch(&scope.who, id, offset, body, checksum)
        .await?
    {
        Patched::Progress { offset } => {
            let mut response = progress(offset);
            add_expiry(response.headers_mut(), state, crate::meta::now_ms());
            Ok(response)
        }
        Patched::Done { offset, node, path } => {
            tracing::info!(device = %scope.who.device, rev = node.rev, "upload complete");
            let mut response = progress(offset);
            scope.add_result(response.headers_mut(), path.as_str(), node.rev);
            Ok(response)
        }
    }
}

/// What a PATCH's headers say (where its bytes start, their checksum), and
/// the session they are for, refused when they do not fit the session.
async fn check_patch(
    state: &AppState,
    scope: &Scope,
    id: &str,
    headers: &HeaderMap,
) -> Result<(u64, Option<Checksum>, UploadRow), TusError> {
    check_version(headers)?;
    let content_type = text(headers, "content-type").unwrap_or_default();
    if !content_type.eq_ignore_ascii_case(OFFSET_TYPE) {
        return Err(TusError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            format!("send the bytes as Content-Type: {OFFSET_TYPE}"),
        ));
    }
    let offset = number(headers, "upload-offset")?
        .ok_or_else(|| TusError::bad("send Upload-Offset: where these bytes start"))?;
    let checksum = text(headers, "upload-checksum")
        .map(|h| Checksum::parse(&h))
        .transpose()
        .map_err(|e| TusError::bad(e.to_string()))?;
    let row = scope.session(state, id).await?;
    let (done, length, durable) = (
        row.done_path.is_some(),
        row.length as u64,
        row.upload_offset as u64,
    );
    if offset != durable && !done {
        return Err(UploadError::OffsetMismatch {
            given: offset,
            actual: durable,
        }
        .into());
    }
    if let Some(declared) = number(headers, "content-length")?
        && offset.saturating_add(declared) > length
    {
        return Err(UploadError::TooLong(length).into());
    }
    Ok((offset, checksum, row))
}

fn progress(offset: u64) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (tus_resumable(), HeaderValue::from_static(VERSION)),
            (
                HeaderName::from_static("upload-offset"),
                header_value(offset),
            ),
        ],
    )
        .into_response()
}

/// Termination: the session ends; what it stored becomes collectable.
#[utoipa::path(delete, path = "/api/v1/tus/{id}", params(("id" = String, Path, description = "the upload session, as the creation's Location names it"), ("Tus-Resumable" = super::openapi::TusVersion, Header, description = "the protocol version: 1.0.0")), responses((status = 204, description = "the session ended"), (status = 404, body = tessera_proto::ErrorBody, description = "no such session"), (status = 412, body = tessera_proto::ErrorBody, description = "Tus-Resumable is not 1.0.0")), security(("bearer" = [])))]
pub async fn terminate(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TusError> {
    terminate_in(
        &state,
        &Scope::of_session(&state, &user, &id).await?,
        &id,
        &headers,
    )
    .await
}

pub(super) async fn terminate_in(
    state: &AppState,
    scope: &Scope,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, TusError> {
    check_version(headers)?;
    scope.session(state, id).await?;
    state.uploads.terminate(scope.who.ns, id).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(tus_resumable(), HeaderValue::from_static(VERSION))],
    )
        .into_response())
}
