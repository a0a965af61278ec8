//! The accept loop: bounded connections, header and body read timeouts,
//! graceful shutdown.
//!
//! `axum::serve` has neither a header timeout nor a connection cap: a
//! client that sends half a request held its connection (and a file
//! descriptor) forever, and enough of them starved the whole server of
//! descriptors, health checks included. Here a connection needs a permit
//! before it is accepted, HTTP/1 headers must arrive within a deadline, and
//! a request body that sends nothing for a while fails.
//!
//! The figures: a connection needs a permit before it is accepted
//! (`max_connections`, default three quarters of the open-file limit;
//! reaching it is logged at most once a minute, and later connections wait
//! in the backlog); request headers must arrive within 30 s (the same timer
//! closes a keep-alive connection idle that long); a request body that sends
//! nothing for 60 s fails. HTTP/1 only, so the header timer starts at accept
//! even for a client that sends nothing. Other limits live where they are
//! enforced: file size (10 GiB by default, checked from `Content-Length` and
//! while reading), block bodies 16 MiB, JSON bodies 8 MiB (a login's 64 KiB),
//! per user 100 long polls (`notify::Presence`) and 1000 unfinished upload
//! sessions (`uploads`). Shutdown stops accepting, wakes long polls and waits
//! for requests in flight.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::timeout::RequestBodyTimeoutLayer;

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// How long requests under way may take to finish once accepting
    /// stops; then their connections are closed.
    pub shutdown_deadline: Duration,
}

/// At most one warning a minute that the cap is reached, so an overload
/// does not also flood the log.
const CAP_WARN_EVERY: Duration = Duration::from_secs(60);

/// Descriptors kept out of the automatic cap, for the database, blocks
/// being read and written, and the listener itself.
const FD_RESERVE_SHARE: u64 = 4;

/// The connection cap when none is configured: three quarters of the
/// process's open-file limit, so connections alone cannot exhaust it.
pub fn default_max_connections() -> usize {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let soft = limit.current.unwrap_or(65_536).min(1 << 20);
        (soft - soft / FD_RESERVE_SHARE).max(16) as usize
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the open connections to finish what they are
/// doing (idle ones close at once), at most `limits.shutdown_deadline`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let app = ServiceBuilder::new()
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .service(router);
    // HTTP/1 only: clients reach us over HTTP/1.1 (browsers speak HTTP/2
    // only over TLS, which a proxy in front terminates), and the automatic
    // version detection waits for bytes before any HTTP/1 timer starts, so
    // a connection that sent nothing at all was never timed out.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    // Closes the connections still open at the shutdown deadline.
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    let mut last_warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_warned.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until others close \
                         (raise max_connections, or the open-file limit, if this is normal load)"
                    );
                    last_warned = Some(Instant::now());
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let mut cut = cut_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = cut.wait_for(|cut| *cut) => {}
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            deadline = ?limits.shutdown_deadline,
            "requests still under way at the shutdown deadline: their connections are closed"
        );
        cut_tx.send_replace(true);
    }
    Ok(())
}

async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    // Out of descriptors, most likely: wait for some to be released rather
    // than spinning on accept.
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(250)).await;
}
