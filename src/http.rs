//! The HTTP endpoint: Prometheus `/metrics` and `/healthz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of `jitgate_sever_seconds`, in seconds.
const SEVER_BUCKETS: [f64; 9] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct HttpState {
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
}

/// Installs the global Prometheus recorder and keeps its histograms fresh.
pub fn install_metrics(shutdown: CancellationToken) -> anyhow::Result<PrometheusHandle> {
    // Severing has a target (the client gone within 100 ms of the end):
    // buckets let a dashboard count the sessions that missed it.
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("jitgate_sever_seconds".into()),
            &SEVER_BUCKETS,
        )?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                () = shutdown.cancelled() => return,
            }
        }
    });
    Ok(handle)
}

pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .with_state(HttpState { metrics, ready });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP endpoint failed");
    }
}

async fn render_metrics(State(state): State<HttpState>) -> String {
    state.metrics.render()
}

async fn healthz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
