//! The HTTP surface of `autoclaim run`: liveness and readiness (metrics and the admin API join here),
//! and the server under them ([`serve_on`]: timeouts and limits against slow and greedy clients).
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::pipeline::processor::Health;

mod hyper_errors;
mod server;

pub use server::{serve_on, HttpLimits, MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_URL_BYTES};

pub fn router(health: Arc<Health>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
        .route(
            "/metrics",
            get(move || {
                let mut body = metrics.render();
                crate::telemetry::partition_gauges().render(&mut body);
                crate::telemetry::process::render(&mut body);
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
}

async fn healthz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "stuck: the processing loop has not come round (see the log)\n",
        )
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if !health.is_live() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the processing loop is stuck (see the log)\n",
        )
    } else if health.stalled.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: an owned partition is stalled (see the log)\n",
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: restoring state or not consuming\n",
        )
    }
}
