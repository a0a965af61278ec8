//! The web UI: static files embedded in the binary (no build step), served
//! at `/`, and the security headers every response carries.
//!
//! Hand-written HTML, CSS and JavaScript modules under `crates/server/web/`
//! (no framework), embedded with rust-embed, also in debug builds, so what is
//! tested is what ships (`build.rs` makes any change under `web/` rebuild the
//! crate). Served at `/` and `/assets/…` with a strict
//! Content-Security-Policy (`default-src 'self'`, `blob:`/`data:` for
//! previews, never framed); every response carries
//! `X-Content-Type-Options: nosniff`.
//!
//! `app.js` holds the views (files, trash, revisions panel, dialogs,
//! keyboard), `api.js` the calls and the error messages people see, `tus.js`
//! a TUS client (8 MiB PATCHes, the upload URL kept in localStorage under
//! path+size+mtime for resuming, retries with backoff and full jitter; the
//! simple PUT for empty files or when the server has no TUS), `uploads.js`
//! the queue and progress tray, `live.js` the long poll (obeying `backoff`),
//! `preview.js` the previews.
//!
//! The browser signs in with `X-Tessera-Web: 1` and gets the device token as
//! an HttpOnly, SameSite=Strict cookie (`api/auth.rs`); `AuthUser` accepts
//! that cookie besides the bearer header, and a cookie-signed request other
//! than GET/HEAD without the header is 403, so other sites cannot forge
//! writes. Content reaches the page through `api/view.rs`: bytes typed from
//! the name only for safe kinds (images, PDF, audio, video; markup and code as
//! text/plain), everything else as an attachment, under a `sandbox` policy so
//! an uploaded page or SVG never runs script in the app's origin.
//!
//! Invariant: the UI uses only the public API; it adds no server state.
//! Anything it needs that other clients could use is an API route with a test
//! in the end-to-end module `web`; the browser tests (`scripts/web-test.sh`,
//! `tests/web/`) drive the real binary in Chromium.

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Assets;

/// The app's own pages: script, styles and fonts only from this origin;
/// previews come from the API (same origin) or from `blob:` URLs made in
/// the page. No inline script, no plugins, never framed by another site.
const APP_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; media-src 'self' blob:; frame-src 'self' blob:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// Routes of the web UI, to be merged into the app's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{*file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "webmanifest") => "application/manifest+json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn serve(file: &str, headers: &HeaderMap) -> Response {
    let Some(found) = Assets::get(file) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&found.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(file))],
            found.data.into_owned(),
        )
            .into_response()
    };
    let out = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    // Revalidated on each load (a cheap 304), so an upgraded server is
    // never paired with a cached old script.
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(APP_CSP),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// Added to every response: no type sniffing (an uploaded file is never
/// read as script or a page because of its bytes) and no framing by other
/// sites unless the response set its own policy.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let out = resp.headers_mut();
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !out.contains_key(header::CONTENT_SECURITY_POLICY) {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    resp
}
