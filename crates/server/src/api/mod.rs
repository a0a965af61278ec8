//! The HTTP API: routes, extractors, one file per resource.

mod account;
mod accounts;
pub use accounts::check_username;
mod admin;
mod auth;
mod blocks;
mod changes;
mod deltas;
pub mod error;
mod files;
mod links;
mod openapi;
mod place;
mod search;
mod shares;
mod trace;
mod trash;
mod tus;
mod view;
mod zip;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use tessera_proto::api::ServerInfo;
use tessera_proto::block::{AVG_BLOCK, CHUNKER, MAX_BLOCK, MIN_BLOCK};

pub use auth::AuthUser;
pub use error::ApiError;

use crate::auth::{LoginLimiter, PasswordChecks};
use crate::blocks::BlockStore;
use crate::meta::Meta;
use crate::notify::{Hub, Presence};

#[derive(Clone)]
pub struct AppState {
    pub meta: Meta,
    pub blocks: BlockStore,
    pub limits: Limits,
    pub limiter: Arc<LoginLimiter>,
    pub password_checks: Arc<PasswordChecks>,
    /// Commits whose content hash is being checked (about one per core).
    pub hash_checks: Arc<tokio::sync::Semaphore>,
    /// Delta and patch work, a pool of its own with a cap per user.
    pub delta_turns: Arc<crate::turns::Turns>,
    /// Searches by name: a few at once, one per user.
    pub search_turns: Arc<crate::turns::Turns>,
    /// The time links expire by (tests move it).
    pub clock: crate::workers::Clock,
    pub proxies: Arc<crate::proxy::TrustedProxies>,
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    /// Lets new long polls in at a bounded rate.
    pub poll_admission: Arc<crate::notify::Admission>,
    /// This instance's name among those on the same database.
    pub instance: Arc<str>,
    pub uploads: crate::uploads::Uploads,
    /// Block-protocol uploads hashed as their blocks arrive.
    pub running_hashes: crate::uploads::running_hash::RunningHashes,
    pub workers: crate::workers::Workers,
    pub metrics: crate::metrics::Scrape,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file_size: u64,
    /// How long an upload session may stay idle before it ends.
    pub upload_ttl: std::time::Duration,
    /// How long the trash keeps what is deleted (a deleted account too);
    /// none: until emptied by hand.
    pub trash_ttl: Option<std::time::Duration>,
}

/// Query string, with a JSON error saying what is wrong with it.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Q<T>(pub T);

/// JSON body, with a JSON error saying what is wrong with it.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct J<T>(pub T);

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge("request body is too large".into())
        } else {
            ApiError::BadRequest(e.body_text())
        }
    }
}

/// JSON request bodies: a commit of a 10 GiB file lists ~2,600 blocks.
const JSON_LIMIT: usize = 8 << 20;

/// A login holds a name, a password and a device name: the body is read
/// before anything is checked, so it is kept small.
const LOGIN_LIMIT: usize = 64 << 10;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/info", get(info))
        .route(
            "/auth/login",
            post(auth::login).layer(DefaultBodyLimit::max(LOGIN_LIMIT)),
        )
        .route("/auth/logout", post(auth::logout))
        .route("/files/list", get(files::list))
        .route("/files/meta", get(files::meta))
        .route("/files/mkdir", post(files::mkdir))
        .route("/files/mkdir_batch", post(files::mkdir_batch))
        .route("/files/move", post(files::move_node))
        .route("/files/delete", post(files::delete))
        .route(
            "/files/content",
            get(files::download)
                .put(files::upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/files/view", get(view::view))
        .route("/files/zip", get(zip::folder))
        .route("/files/revisions", get(files::revisions))
        .route("/files/restore", post(files::restore))
        .route("/files/pin", post(files::pin))
        .route("/files/blocks", get(files::block_list))
        .route("/files/pending", get(files::pending_list))
        .route("/files/commit", post(files::commit))
        .route("/files/commit_batch", post(files::commit_batch))
        .route(
            "/blocks/pack",
            post(blocks::pack).layer(DefaultBodyLimit::max(tessera_proto::pack::MAX_PACK_BYTES)),
        )
        .route("/blocks/missing", post(blocks::missing))
        .route("/blocks/fetch", post(blocks::fetch))
        .route(
            "/blocks/{id}",
            get(blocks::download)
                .put(blocks::upload)
                .layer(DefaultBodyLimit::max(MAX_BLOCK + (1 << 16))),
        )
        .route("/blocks/{id}/signature", get(deltas::signature))
        .route("/blocks/{id}/patch", get(deltas::patch))
        .route(
            "/blocks/{id}/delta",
            put(deltas::upload).layer(DefaultBodyLimit::max(MAX_BLOCK + (1 << 20))),
        )
        .route("/changes", get(changes::list))
        .route("/changes/latest", get(changes::latest))
        .route("/changes/poll", get(changes::poll))
        .route("/presence", get(changes::presence))
        .route("/devices", get(account::devices))
        .route("/devices/{id}", delete(account::revoke))
        .route("/account/password", post(account::password))
        .route("/trash", get(trash::list))
        .route("/trash/restore", post(trash::restore))
        .route("/trash/purge", post(trash::purge))
        .route("/tus", post(tus::create).options(tus::options))
        .route("/tus/", post(tus::create).options(tus::options))
        .route(
            "/tus/{id}",
            axum::routing::head(tus::head)
                .patch(tus::patch)
                .delete(tus::terminate)
                .options(tus::options)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/admin/workers", get(admin::workers))
        .route("/admin/workers/{name}/run", post(admin::run_worker))
        .route(
            "/admin/users/{name}/quota",
            get(admin::quota).put(admin::set_quota),
        )
        .route("/usage", get(admin::own_usage))
        .route("/search", get(search::search))
        .route("/admin/users", get(accounts::list).post(accounts::add))
        .route(
            "/admin/users/{name}",
            axum::routing::delete(accounts::delete),
        )
        .route("/admin/users/{name}/disable", post(accounts::disable))
        .route("/admin/users/{name}/enable", post(accounts::enable))
        .route("/admin/users/{name}/restore", post(accounts::restore))
        .route(
            "/admin/users/{name}/password",
            axum::routing::put(accounts::reset_password),
        )
        .route("/links", post(links::create).get(links::list))
        .route("/links/{id}", axum::routing::delete(links::revoke))
        .route("/shares", post(shares::share).get(shares::list))
        .route("/shares/{id}", axum::routing::delete(shares::unshare))
        .route(
            "/shares/{id}/members/{username}",
            axum::routing::put(shares::set_role).delete(shares::remove),
        )
        .route("/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::NotFound("no such API route".into()) })
        .layer(DefaultBodyLimit::max(JSON_LIMIT));
    Router::new()
        .nest(tessera_proto::API_PREFIX, api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/s/{token}",
            get(links::visit)
                .post(links::unlock)
                .layer(DefaultBodyLimit::max(LOGIN_LIMIT)),
        )
        .route(
            "/s/{token}/upload",
            axum::routing::put(links::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/s/{token}/tus/", post(links::tus_create))
        .route(
            "/s/{token}/tus/{id}",
            axum::routing::head(links::tus_head)
                .patch(links::tus_patch)
                .delete(links::tus_delete)
                .layer(DefaultBodyLimit::disable()),
        )
        .merge(crate::web::router())
        .layer(axum::middleware::from_fn(crate::web::security_headers))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(trace::layer())
        .with_state(state)
}

#[utoipa::path(get, path = "/api/v1/info", responses((status = 200, body = ServerInfo)))]
async fn info(State(state): State<AppState>) -> Json<ServerInfo> {
    Json(ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        chunker: CHUNKER.to_owned(),
        min_block: MIN_BLOCK as u64,
        avg_block: AVG_BLOCK as u64,
        max_block: MAX_BLOCK as u64,
        max_file_size: state.limits.max_file_size,
    })
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    // A balancer stops sending requests here while the rest finish.
    if state.hub.is_shut_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    match state.meta.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// The Prometheus scrape. Outside the API (and its OpenAPI document) like
/// `/healthz`: it is for the operator's monitoring, not for clients.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.metrics.allows(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "send the metrics token as a bearer token\n",
        )
            .into_response();
    }
    match state.metrics.render(&state.meta) {
        Some(text) => ([(header::CONTENT_TYPE, crate::metrics::TEXT_FORMAT)], text).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are recorded elsewhere in this process\n",
        )
            .into_response(),
    }
}
