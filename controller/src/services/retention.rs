//! Keeping the graph history within its bounds: the oldest partitions are dropped once
//! they pass the window or the cap the operator set (`serve --history-days`,
//! `--history-max-edges`), and what went is logged and counted in the store.

use std::time::Duration;

use crate::store::{Retention, SharedStore};

/// How often the bounds are checked.
pub const EVERY: Duration = Duration::from_secs(60);

/// The lease on pruning ([`crate::store::Store::lease`]).
pub const LEASE: &str = "retention";

/// Applies `keep` now and every [`EVERY`], for as long as the server runs.
pub async fn run(store: SharedStore, keep: Retention) {
    if keep == Retention::default() {
        return;
    }
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let store = store.clone();
        // Replicas sharing a store prune it one at a time: the lease's holder.
        let pass = tokio::task::spawn_blocking(move || {
            let mut s = crate::lock(&store);
            if !s.lease(LEASE)? {
                return Ok(crate::store::Pruned::default());
            }
            s.prune_history(keep, crate::now_ns())
        })
        .await;
        match pass {
            Ok(Ok(p)) if p.dropped > 0 => {
                crate::metrics::live().history_pruned.inc_by(p.dropped);
                tracing::info!(
                    dropped = p.dropped,
                    dropped_total = p.dropped_total,
                    kept = p.kept,
                    "graph history past its bounds dropped, oldest first"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot prune the graph history"),
            Err(e) => tracing::error!(error = %e, "the history prune panicked"),
        }
    }
}
