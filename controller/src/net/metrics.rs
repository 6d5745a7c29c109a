//! `/metrics` on `serve --metrics ADDR` (plain HTTP, loopback unless told otherwise): the
//! controller's counters and, read at each scrape, its hosts, store size and notifier counts.

use std::net::SocketAddr;

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};

use super::server::Shared;
use crate::{metrics::Snapshot, services::HostLink as _};

/// Reads what a scrape shows now: hosts by state from the store and the live connections.
fn snapshot(s: &Shared) -> Result<Snapshot, crate::store::StoreError> {
    let (hosts, store_bytes) = {
        let store = crate::lock(&s.fleet.store);
        (store.hosts()?, store.size_bytes()?)
    };
    let mut snap = Snapshot {
        store_bytes,
        notifier: s.fleet.notifier.counts().into_iter().collect(),
        ..Snapshot::default()
    };
    for h in &hosts {
        if h.revoked {
            snap.revoked += 1;
        } else if s.hosts.is_connected(&h.id) {
            snap.connected += 1;
        } else {
            snap.offline += 1;
        }
        snap.isolated += u64::from(!h.revoked && h.report.isolated);
    }
    Ok(snap)
}

async fn scrape(State(s): State<Shared>) -> Response {
    let read = tokio::task::spawn_blocking(move || snapshot(&s)).await;
    let snap = match read {
        Ok(Ok(snap)) => snap,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "metrics: cannot read the store");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the store: {e}\n"),
            )
                .into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics: the scrape panicked");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    match crate::metrics::render(&snap) {
        Ok(body) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

/// Binds `addr` for [`serve`]: a port taken is an error at start.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, shared: Shared) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics server stopped");
    }
}
