//! The span every HTTP request runs in. Its fields have OpenTelemetry's
//! semantic-convention names (`http.request.method`, `http.route`,
//! `url.path`, `http.response.status_code`), so a tracing exporter added
//! later, or a log search today, finds them under the names other services
//! use. Events logged while a request is handled carry them.
//!
//! `http.route` is the route's template, as in the metrics. `url.path` is
//! the path without its query: files are named in the query
//! (`?path=/…`), which stays out of the logs.

use std::time::Duration;

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse,
    OnResponse, TraceLayer,
};
use tracing::Span;

pub type Layer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request<Body>) -> Span,
    DefaultOnRequest,
    fn(&Response<Body>, Duration, &Span),
    DefaultOnBodyChunk,
    DefaultOnEos,
    DefaultOnFailure,
>;

/// Must run inside the router (`Router::layer`), where the matched route
/// is known.
pub fn layer() -> Layer {
    TraceLayer::new_for_http()
        .make_span_with(make_span as fn(&Request<Body>) -> Span)
        .on_response(on_response as fn(&Response<Body>, Duration, &Span))
}

fn make_span(req: &Request<Body>) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    tracing::info_span!(
        "request",
        http.request.method = %req.method(),
        http.route = route,
        url.path = logged_path(req.uri().path()),
        http.response.status_code = tracing::field::Empty,
    )
}

/// The path as logged: a link's address is its secret, so only the
/// route's prefix of it is.
fn logged_path(path: &str) -> &str {
    if path.starts_with(super::links::LINK_PREFIX) {
        "/s/{token}"
    } else {
        path
    }
}

fn on_response(resp: &Response<Body>, latency: Duration, span: &Span) {
    span.record("http.response.status_code", resp.status().as_u16());
    DefaultOnResponse::default().on_response(resp, latency, span);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;
    use tracing_subscriber::fmt::format::FmtSpan;

    use super::*;

    /// What the subscriber writes, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What this thread logs from now on, until the guard drops.
    fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_span_events(FmtSpan::CLOSE)
            .with_ansi(false)
            .finish();
        (out, tracing::subscriber::set_default(subscriber))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_span_carries_the_conventional_fields() {
        let (out, _guard) = capture();
        let app: Router = Router::new()
            .route(
                "/files/{id}",
                get(|| async {
                    tracing::info!("inside");
                    (axum::http::StatusCode::IM_A_TEAPOT, "tea")
                }),
            )
            .layer(layer());
        let resp = app
            .oneshot(
                Request::get("/files/secret-name?path=/private.txt")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 418);
        // The span lives until the body has been sent.
        axum::body::to_bytes(resp.into_body(), 1 << 10)
            .await
            .unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let inside = text
            .lines()
            .find(|l| l.contains("inside"))
            .expect("the handler's event");
        for field in [
            "http.request.method=GET",
            "http.route=\"/files/{id}\"",
            "url.path=\"/files/secret-name\"",
        ] {
            assert!(inside.contains(field), "{field} missing: {inside}");
        }
        let closed = text
            .lines()
            .find(|l| l.contains("close"))
            .expect("the span's close");
        assert!(closed.contains("http.response.status_code=418"), "{closed}");
        assert!(!text.contains("private.txt"), "the query is logged: {text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_link_token_never_reaches_the_log() {
        let (out, _guard) = capture();
        let app: Router = Router::new()
            .route("/s/{token}", get(|| async { "page" }))
            .fallback(|| async { "none" })
            .layer(layer());
        for uri in ["/s/SeCrEtToKeN0123456789", "/s/SeCrEtToKeN0123456789/x"] {
            let resp = app
                .clone()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            axum::body::to_bytes(resp.into_body(), 1 << 10)
                .await
                .unwrap();
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("url.path=\"/s/{token}\""), "{text}");
        assert!(!text.contains("SeCrEt"), "the token is logged: {text}");
    }
}
