//! The worker's operations endpoint: liveness, readiness and Prometheus
//! metrics, for the platform running it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use herald_worker::HealthState;
use tokio_util::sync::CancellationToken;

/// Binds the operations endpoint, so a taken port stops start-up at once.
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for metrics (HERALD_METRICS_LISTEN)"))
}

/// Serves `/healthz`, `/readyz` and `/metrics` for `worker` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    worker: Arc<herald_worker::Worker>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let address = listener
        .local_addr()
        .context("the metrics listener has no address")?;
    let ready = shutdown.clone();
    let health = worker.health().clone();
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move |State(worker): State<Arc<herald_worker::Worker>>| {
                let answer = readiness(&health.state(), ready.is_cancelled(), worker.waiting_for());
                async move { answer }
            }),
        )
        .route("/metrics", axum::routing::get(metrics))
        .with_state(worker);
    tracing::info!(%address, "worker metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("the metrics server failed")
}

/// `/readyz`: 200 while the worker runs with NATS connected and its index current; 503 with
/// the reason once it stops, has failed (a loop that must run ended), or `waiting_for` a
/// dependency.
fn readiness(
    state: &HealthState,
    shutting_down: bool,
    waiting_for: Option<String>,
) -> (StatusCode, String) {
    match state {
        HealthState::Running if !shutting_down => match waiting_for {
            None => (StatusCode::OK, "ok".to_owned()),
            Some(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("waiting: {reason}"),
            ),
        },
        HealthState::Running | HealthState::Stopping => {
            (StatusCode::SERVICE_UNAVAILABLE, "stopping".to_owned())
        }
        HealthState::Failed(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {reason}"))
        }
    }
}

async fn metrics(State(worker): State<Arc<herald_worker::Worker>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        worker.metrics_text(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_running_with_its_dependencies() {
        let check = |state: HealthState, shutting_down: bool, status: StatusCode, body: &str| {
            assert_eq!(
                readiness(&state, shutting_down, None),
                (status, body.to_owned()),
                "{state:?}"
            );
        };
        assert_eq!(
            readiness(
                &HealthState::Running,
                false,
                Some("NATS is not connected (disconnected)".to_owned())
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "waiting: NATS is not connected (disconnected)".to_owned()
            )
        );
        check(HealthState::Running, false, StatusCode::OK, "ok");
        check(
            HealthState::Running,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
        );
        check(
            HealthState::Stopping,
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
        );
        check(
            HealthState::Failed("the sender loop ended".to_owned()),
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "failed: the sender loop ended",
        );
    }
}
