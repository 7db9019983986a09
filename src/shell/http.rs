//! `/metrics`, `/healthz`, `/readyz` and `/explain/NAMESPACE/NAME`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::leader_election::LeaseHealth;

#[derive(Clone)]
pub struct HealthState {
    pub registry: Arc<Registry>,
    /// Set once the caches hold a full list of nodes and pods.
    pub ready: Arc<AtomicBool>,
    /// Why no replica can lead, while that lasts (with leader election).
    pub lease: Option<LeaseHealth>,
    /// Where `/explain` questions go (the scheduling loop).
    pub explain: Option<tokio::sync::mpsc::Sender<super::explain::ExplainRequest>>,
}

async fn metrics(State(s): State<HealthState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(s): State<HealthState>) -> impl IntoResponse {
    if let Some(why) = s.lease.as_ref().and_then(|health| health.borrow().clone()) {
        return (StatusCode::SERVICE_UNAVAILABLE, why.to_string());
    }
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced".to_string())
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HealthState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let explain =
        Router::new().route("/explain/{*target}", get(super::explain::handle)).with_state(state.explain.clone());
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(explain);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
