//! Login, logout and the extractor that finds the caller: a bearer token,
//! or the web UI's session cookie holding the same kind of device token.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use tessera_proto::api::{LoginRequest, LoginResponse};

use super::{ApiError, AppState, J};
use crate::auth::{new_token, token_hash};
use crate::meta::now_ms;

/// Device tokens live this long; logging in again issues a new one.
const TOKEN_LIFETIME_MS: i64 = 90 * 24 * 3600 * 1000;

/// User names are at most this long (as `tessera admin user add` enforces).
pub(super) const MAX_USERNAME_BYTES: usize = 64;

/// What a login refused for lack of a free password check is told to wait.
pub(super) const BUSY_RETRY_SECS: u64 = 1;

/// A new password hashed for storing, in the same bounded pool as the
/// checks (Argon2 takes memory); 429 when the pool stays full.
pub(super) async fn hash_new_password(
    state: &AppState,
    password: String,
) -> Result<String, ApiError> {
    state
        .password_checks
        .hash(password)
        .await
        .map_err(|busy| ApiError::Throttled(busy.to_string(), BUSY_RETRY_SECS))?
        .map_err(ApiError::internal)
}

/// The web UI's session cookie. HttpOnly, so script in the page never sees
/// the token; SameSite=Strict, so other sites' pages do not send it.
pub const SESSION_COOKIE: &str = "tessera_session";

/// Header the web UI adds to every request. A cookie-authenticated write
/// without it is refused: a form on another site can make the browser send
/// the cookie (were SameSite ever relaxed or bypassed) but cannot add a
/// custom header without a CORS preflight, which this server never grants.
pub const WEB_HEADER: &str = tessera_proto::headers::WEB;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The values of the cookies named `name` the request carries.
pub(super) fn cookie_values<'h>(
    headers: &'h HeaderMap,
    name: &'h str,
) -> impl Iterator<Item = &'h str> + 'h {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(n, _)| *n == name)
        .map(|(_, value)| value.trim())
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie_values(headers, SESSION_COOKIE).find(|v| !v.is_empty())
}

fn is_web(headers: &HeaderMap) -> bool {
    headers
        .get(WEB_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// How stale a device's "last seen" may grow before a request of its
/// writes it again.
const LAST_SEEN_EVERY_MS: i64 = 5 * 60 * 1000;

/// The user a valid bearer token (or web session cookie) belongs to.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: i64,
    pub username: String,
    pub ns: i64,
    pub device: String,
    token_hash: [u8; 32],
}

impl AuthUser {
    /// The hash of the token this request came with: its device's key.
    pub(super) fn token_hash(&self) -> &[u8; 32] {
        &self.token_hash
    }

    /// The signed-in user as the metadata names users (no password hash).
    pub fn row(&self) -> crate::meta::UserRow {
        crate::meta::UserRow {
            id: self.user_id,
            username: self.username.clone(),
            password_hash: String::new(),
            root_ns: self.ns,
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match bearer(&parts.headers) {
            Some(t) => t,
            None => {
                let t = session_cookie(&parts.headers).ok_or(ApiError::Unauthorized)?;
                let safe = parts.method == Method::GET || parts.method == Method::HEAD;
                if !safe && !is_web(&parts.headers) {
                    return Err(ApiError::Forbidden(format!(
                        "a request signed in by the web session cookie must carry the header `{WEB_HEADER}: 1`"
                    )));
                }
                t
            }
        };
        // Looked up by hash: the stored value is not the secret, and the
        // token's 256 bits make guessing a hash prefix worthless.
        let hash = token_hash(token);
        let row = state
            .meta
            .token(&hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let now = now_ms();
        if row.expires_ms <= now {
            return Err(ApiError::Unauthorized);
        }
        // "Last seen" to within a few minutes: one write a device a while,
        // not one a request.
        // In the background, and best effort: a busy database must not
        // hold up or fail the request for a date shown in a list.
        if row
            .last_seen_ms
            .is_none_or(|seen| now - seen > LAST_SEEN_EVERY_MS)
        {
            let meta = state.meta.clone();
            tokio::spawn(async move {
                if let Err(e) = meta.touch_token(&hash, now, now - LAST_SEEN_EVERY_MS).await {
                    tracing::debug!(error = %e, "last seen not noted");
                }
            });
        }
        Ok(AuthUser {
            user_id: row.user_id,
            username: row.username,
            ns: row.root_ns,
            device: row.device,
            token_hash: hash,
        })
    }
}

/// `password` checked as `username`'s through the login brake (a failure
/// counts against the name and the address, wherever it is asked): the
/// user when it matches.
pub(super) async fn check_password(
    state: &AppState,
    username: &str,
    address: &str,
    password: String,
) -> Result<Option<crate::meta::UserRow>, ApiError> {
    let attempt = state
        .limiter
        .attempt(username, address)
        .await?
        .map_err(ApiError::RateLimited)?;
    let user = state.meta.user_by_name(username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = match state.password_checks.verify(password, stored).await {
        Ok(ok) => ok,
        Err(busy) => {
            attempt.not_checked().await?;
            tracing::warn!(%address, "password checks at their limit: refused");
            return Err(ApiError::Throttled(busy.to_string(), BUSY_RETRY_SECS));
        }
    };
    match user.filter(|_| ok) {
        Some(user) => {
            attempt.succeeded().await?;
            Ok(Some(user))
        }
        None => {
            attempt.failed().await?;
            Ok(None)
        }
    }
}

/// True when the browser reached us over https (directly or through a
/// proxy that says so): the cookie is then marked Secure, so it never
/// travels over plain http. A false claim can only add the flag.
pub(super) fn over_https(headers: &HeaderMap) -> bool {
    let says = |name: &str, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with(prefix))
    };
    says("x-forwarded-proto", "https") || says("origin", "https://")
}

pub(super) fn session_cookie_header(
    value: &str,
    max_age_secs: i64,
    secure: bool,
) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    ))
    .map_err(ApiError::internal)
}

/// With the header `x-tessera-web: 1` the token is set as the session
/// cookie instead of being returned (`token` is then empty).
#[utoipa::path(post, path = "/api/v1/auth/login", request_body = LoginRequest, responses((status = 200, body = LoginResponse), (status = 400, body = tessera_proto::ErrorBody, description = "the user name is empty or longer than 64 bytes"), (status = 401, body = tessera_proto::ErrorBody, description = "wrong username or password"), (status = 429, body = tessera_proto::ErrorBody, description = "too many attempts, or too many password checks at once: wait the seconds that Retry-After says")))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    J(req): J<LoginRequest>,
) -> Result<Response, ApiError> {
    // Checked before any work: a name is hashed, counted and logged below.
    if req.username.is_empty() || req.username.len() > MAX_USERNAME_BYTES {
        return Err(ApiError::BadRequest(format!(
            "username must be 1 to {MAX_USERNAME_BYTES} bytes"
        )));
    }
    if req.device.trim().is_empty() || req.device.len() > 200 {
        return Err(ApiError::BadRequest(
            "device must be a name of 1 to 200 bytes".into(),
        ));
    }
    let address = state.proxies.client(peer.ip(), &headers).to_string();
    let Some(user) = check_password(&state, &req.username, &address, req.password).await? else {
        tracing::info!(username = %req.username, %address, "failed login");
        return Err(ApiError::Unauthorized);
    };
    // Said only to whoever knows the password.
    if !state.meta.may_sign_in(user.id).await? {
        let what = if state.meta.is_deleted(user.id).await? {
            "deleted (an administrator can still restore it for a while)"
        } else {
            "disabled"
        };
        return Err(ApiError::Forbidden(format!(
            "the account {} is {what}: ask the server's administrator",
            user.username
        )));
    }
    let (token, hash) = new_token();
    // Shown to the user in their list of devices, on a terminal too: no
    // control characters.
    let device: String = req
        .device
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    // The program, as its User-Agent names it, kept short and printable.
    let client: Option<String> = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().filter(|c| !c.is_control()).take(200).collect());
    if !state
        .meta
        .insert_token(
            &hash,
            user.id,
            &device,
            client.as_deref(),
            now_ms() + TOKEN_LIFETIME_MS,
            &user.password_hash,
        )
        .await?
    {
        // The password changed while it was checked.
        return Err(ApiError::Unauthorized);
    }
    tracing::info!(username = %user.username, %device, "login");
    if is_web(&headers) {
        let cookie = session_cookie_header(&token, TOKEN_LIFETIME_MS / 1000, over_https(&headers))?;
        let body = LoginResponse {
            token: String::new(),
            username: user.username,
            device,
        };
        return Ok((AppendHeaders([(header::SET_COOKIE, cookie)]), Json(body)).into_response());
    }
    Ok((
        StatusCode::OK,
        Json(LoginResponse {
            token,
            username: user.username,
            device,
        }),
    )
        .into_response())
}

/// Revokes the token and clears the web session cookie, if any.
#[utoipa::path(post, path = "/api/v1/auth/logout", responses((status = 204, description = "token revoked")), security(("bearer" = [])))]
pub async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.meta.delete_token(&user.token_hash).await?;
    let clear = session_cookie_header("", 0, over_https(&headers))?;
    Ok((
        StatusCode::NO_CONTENT,
        AppendHeaders([(header::SET_COOKIE, clear)]),
    )
        .into_response())
}
