//! The controller's Prometheus metrics: what it counts as it goes (records and graph edges
//! merged, hunt, sweep and commit durations), and the gauges read at each scrape (hosts by
//! state, store size, notifier deliveries), rendered together in the OpenMetrics text format.
//!
//! The counters are process-wide, like the default registry of most Prometheus clients: every
//! layer counts into [`live`] without threading a handle through, and [`render`] registers
//! them (shared, not copied) with the scrape's gauges. Names are prefixed `vigil_`.

use std::sync::LazyLock;

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The content type of what [`render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// What the controller counts as it runs.
#[derive(Clone, Debug)]
pub struct Live {
    /// Sensor records stored, by stream (`alerts`, `actions`).
    pub records: Family<Labels, Counter>,
    pub deltas: Counter,
    pub edges: Counter,
    /// Seconds per group commit of graph deltas.
    pub commit_seconds: Histogram,
    pub hunt_seconds: Histogram,
    pub sweep_seconds: Histogram,
    /// Graph-history edges dropped by retention.
    pub history_pruned: Counter,
}

/// Buckets from 1 ms to about 65 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

static LIVE: LazyLock<Live> = LazyLock::new(|| Live {
    records: Family::default(),
    deltas: Counter::default(),
    edges: Counter::default(),
    commit_seconds: seconds(),
    hunt_seconds: seconds(),
    sweep_seconds: seconds(),
    history_pruned: Counter::default(),
});

/// The process's counters.
pub fn live() -> &'static Live {
    &LIVE
}

/// Counts one record of `stream` stored.
pub fn record_stored(stream: &str) {
    live()
        .records
        .get_or_create(&vec![("stream", stream.to_owned())])
        .inc();
}

/// What a scrape reads from the server's state at that moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Enrolled hosts connected now, enrolled but not connected, and revoked.
    pub connected: u64,
    pub offline: u64,
    pub revoked: u64,
    /// Hosts whose sensor reports its network isolated.
    pub isolated: u64,
    /// What the store holds on disk, in bytes ([`crate::store::Store::size_bytes`]).
    pub store_bytes: u64,
    /// Per notification target: deliveries, failed attempts, dead letters.
    pub notifier: Vec<(String, crate::services::notify::Counts)>,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, v: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// The live counters and `snapshot`'s gauges, in the OpenMetrics text format.
pub fn render(snapshot: &Snapshot) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("vigil");
    let l = live().clone();
    r.register(
        "records_merged",
        "Sensor records (alerts, actions) stored, per stream",
        l.records,
    );
    r.register(
        "graph_deltas_merged",
        "Graph deltas from sensors committed to the store",
        l.deltas,
    );
    r.register(
        "graph_edges_merged",
        "Graph edges from sensors committed to the store",
        l.edges,
    );
    r.register(
        "graph_commit_duration_seconds",
        "Seconds per group commit of graph deltas",
        l.commit_seconds,
    );
    r.register(
        "hunt_duration_seconds",
        "Seconds per hunt over the fleet's graphs and history",
        l.hunt_seconds,
    );
    r.register(
        "sweep_duration_seconds",
        "Seconds per hash sweep, until every connected host answered",
        l.sweep_seconds,
    );
    r.register(
        "history_edges_pruned",
        "Graph-history edges dropped by retention",
        l.history_pruned,
    );
    let hosts = Family::<Labels, Gauge<i64>>::default();
    for (state, n) in [
        ("connected", snapshot.connected),
        ("offline", snapshot.offline),
        ("revoked", snapshot.revoked),
    ] {
        hosts
            .get_or_create(&vec![("state", state.to_owned())])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    r.register("hosts", "Enrolled hosts, per state", hosts);
    gauge(
        &mut r,
        "hosts_isolated",
        "Hosts whose sensor reports its network isolated",
        snapshot.isolated,
    );
    gauge(
        &mut r,
        "store_size_bytes",
        "Bytes the store holds on disk (the embedded database and its log, or the PostgreSQL database)",
        snapshot.store_bytes,
    );
    let delivered = Family::<Labels, Counter>::default();
    let failed = Family::<Labels, Counter>::default();
    let dead = Family::<Labels, Counter>::default();
    for (target, c) in &snapshot.notifier {
        let labels = vec![("target", target.clone())];
        delivered.get_or_create(&labels).inc_by(c.delivered);
        failed.get_or_create(&labels).inc_by(c.failed);
        dead.get_or_create(&labels).inc_by(c.dead_letters);
    }
    r.register(
        "notifications_delivered",
        "Notifications delivered, per target",
        delivered,
    );
    r.register(
        "notification_failures",
        "Notification attempts that failed (each retry counts), per target",
        failed,
    );
    r.register(
        "notification_dead_letters",
        "Notifications given up after every attempt failed, per target",
        dead,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_values_and_the_snapshot_are_rendered_under_their_names() {
        record_stored("alerts");
        live().edges.inc_by(7);
        live().hunt_seconds.observe(0.25);
        let text = render(&Snapshot {
            connected: 3,
            offline: 1,
            notifier: vec![(
                "pager".to_owned(),
                crate::services::notify::Counts {
                    delivered: 2,
                    failed: 5,
                    dead_letters: 1,
                },
            )],
            ..Snapshot::default()
        })
        .unwrap_or_default();
        for line in [
            "vigil_records_merged_total{stream=\"alerts\"} ",
            "vigil_hosts{state=\"connected\"} 3",
            "vigil_hosts{state=\"offline\"} 1",
            "vigil_notification_failures_total{target=\"pager\"} 5",
            "vigil_hunt_duration_seconds_count ",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("vigil_graph_edges_merged_total ")
                    && l.split(' ').nth(1).and_then(|v| v.parse::<u64>().ok()) >= Some(7)),
            "{text}"
        );
    }
}
