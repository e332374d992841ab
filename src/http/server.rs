//! The HTTP server: hyper's HTTP/1.1 connections under the axum router, with bounds against slow and
//! greedy clients (an unauthenticated client must not be able to hold file descriptors or memory):
//!
//! - the request line and headers must arrive within the header timeout, counted from the moment
//!   the connection waits for a request, so it is also the idle (keep-alive) timeout (hyper's
//!   `header_read_timeout`); the connection is then closed;
//! - the body must arrive whole within the body timeout, counted from the end of the headers
//!   ([`read_body_within`]; 408 otherwise), and be at most [`MAX_BODY_BYTES`] (413);
//! - the request line and headers are at most [`MAX_HEAD_BYTES`] (hyper's read buffer; 431), and
//!   a URL at most [`MAX_URL_BYTES`] (414);
//! - at most `max_connections` connections are served at once; more wait in the listen backlog
//!   until one closes.
//!
//! Every error, including those hyper answers by itself, is problem details ([`hyper_errors`]).
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Args;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::hyper_errors::ProblemsForHyperErrors;
use crate::admin::problem::Problem;

/// Request bodies over this size are refused with 413 (the admin API's bodies are small JSON).
pub const MAX_BODY_BYTES: usize = crate::admin::api::MAX_BODY_BYTES;
/// The request line and headers together: hyper's read buffer, so also the memory a connection can
/// make the server hold before it has sent a whole request head (a bearer token is at most 16 KiB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longer URLs (path and query) are refused with 414; no route needs more than a few hundred bytes.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// How long a shutdown waits for requests in progress before it closes their connections: longer
/// than an admin write waits for the policies topic (30 s), so that a write is answered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(35);

/// Limits of the HTTP server (health, metrics and the admin API), from flags and
/// `AUTOCLAIM_HTTP_*` environment variables.
#[derive(Args, Clone, Copy, Debug)]
pub struct HttpLimits {
    /// HTTP: time a client has to send a request's line and headers, counted from when the
    /// connection opens or has been answered (so an idle keep-alive connection is closed after it
    /// too). The connection is closed when it runs out.
    #[arg(
        long = "http-header-timeout",
        env = "AUTOCLAIM_HTTP_HEADER_TIMEOUT",
        value_parser = positive_duration,
        default_value = "10s"
    )]
    pub header_timeout: Duration,
    /// HTTP: time a client has to send a request's whole body, counted from the end of its
    /// headers; 408 when it runs out.
    #[arg(
        long = "http-body-timeout",
        env = "AUTOCLAIM_HTTP_BODY_TIMEOUT",
        value_parser = positive_duration,
        default_value = "30s"
    )]
    pub body_timeout: Duration,
    /// HTTP: connections served at once; further ones wait (in the listen backlog) until one
    /// closes.
    #[arg(
        long = "http-max-connections",
        env = "AUTOCLAIM_HTTP_MAX_CONNECTIONS",
        default_value = "1024"
    )]
    pub max_connections: NonZeroUsize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: NonZeroUsize::new(1024).expect("not zero"),
        }
    }
}

fn positive_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Serves `router` on a bound listener until `shutdown` completes, then lets requests in progress
/// finish (at most [`SHUTDOWN_GRACE`]).
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = with_server_rules(router, limits);
    let connections = Arc::new(Semaphore::new(limits.max_connections.get()));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    tokio::pin!(shutdown);
    loop {
        // The permit is taken before accepting, so a connection over the limit stays in the
        // backlog (queued by the kernel) rather than being accepted and then starved.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "HTTP: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(ProblemsForHyperErrors::new(stream));
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            // Errors are the client's (a reset, a header timeout): nothing to do but close.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP: requests still in progress at shutdown were cut off");
    }
    Ok(())
}

/// What holds for every route: problem details for unknown paths and methods, the URL and body
/// limits and the body deadline.
fn with_server_rules(router: Router, limits: HttpLimits) -> Router {
    router
        .fallback(|| async {
            Problem::not_found("no such endpoint; the admin API is described at /v1/openapi.json")
        })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            limits.body_timeout,
            read_body_within,
        ))
}

/// Reads the whole body (at most [`MAX_BODY_BYTES`]) within `timeout` before the route sees the
/// request. A whole-body deadline, not one between reads: a client sending a byte now and then
/// would otherwise hold the connection for as long as it likes.
async fn read_body_within(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let url_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if url_bytes > MAX_URL_BYTES {
        return closing(Problem::uri_too_long(MAX_URL_BYTES));
    }
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return closing(Problem::too_large(MAX_BODY_BYTES));
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, MAX_BODY_BYTES).collect();
    let bytes = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return closing(Problem::too_large(MAX_BODY_BYTES))
        }
        Ok(Err(e)) => {
            return closing(Problem::bad_request(format!("cannot read the body: {e}")));
        }
        Err(_) => return closing(Problem::body_timeout(timeout)),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A refusal after which the connection is closed: the rest of the body is not read.
fn closing(problem: Problem) -> Response {
    let mut response = problem.into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_must_be_more_than_zero() {
        assert_eq!(positive_duration("1s"), Ok(Duration::from_secs(1)));
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("soon").is_err());
    }
}
