//! `/metrics`: the sensor's status in the Prometheus (OpenMetrics) text format, served on
//! `--metrics ADDR` (off by default).
//!
//! Nothing is counted twice: every scrape asks the event loop for its [`Status`], as
//! `vigil-sensor status` does, and renders that. Names are prefixed `vigil_`; counters end in
//! `_total`. Where Falco or Tetragon count the same thing, the meaning is theirs: events
//! received per kind, dropped by the kernel for a full ring (Falco's `n_drops`), filtered in
//! the kernel, and coalesced repeats.

use std::{net::SocketAddr, time::Duration};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::control::{Envelope, Request, Response, Status};

/// How long a scrape waits for the event loop.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The content type of what [`render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

type Labels = Vec<(&'static str, String)>;

/// A metric's label value from the enum's own serialized name (`high`, `contain`, `kill`).
fn label<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "unknown".to_owned(),
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One scrape's registry: metrics are made from the status, registered, then encoded.
struct Scrape(Registry);

impl Scrape {
    fn new() -> Self {
        Self(Registry::with_prefix("vigil"))
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        self.0.register(name, help, c);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        let g = Gauge::<i64>::default();
        g.set(gauge_value(value));
        self.0.register(name, help, g);
    }

    fn counters(
        &mut self,
        name: &str,
        help: &str,
        values: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let f = Family::<Labels, Counter<u64>>::default();
        for (labels, v) in values {
            f.get_or_create(&labels).inc_by(v);
        }
        self.0.register(name, help, f);
    }

    fn gauges(&mut self, name: &str, help: &str, values: impl IntoIterator<Item = (Labels, u64)>) {
        let f = Family::<Labels, Gauge<i64>>::default();
        for (labels, v) in values {
            f.get_or_create(&labels).inc_by(gauge_value(v));
        }
        self.0.register(name, help, f);
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0)?;
        Ok(out)
    }
}

// Long by design: one line a metric, in the order of `status`.

/// The status as metrics, in the OpenMetrics text format.
pub fn render(s: &Status) -> Result<String, std::fmt::Error> {
    let mut m = Scrape::new();
    m.gauges(
        "build_info",
        "The sensor's version (always 1)",
        [(vec![("version", s.version.clone())], 1)],
    );
    m.gauge(
        "uptime_seconds",
        "Seconds since the sensor started",
        s.uptime_secs,
    );
    m.gauge(
        "hooks_attached",
        "Kernel programs attached",
        s.hooks.len() as u64,
    );

    let kinds = |f: fn(&crate::control::KindStatus) -> u64| {
        s.events
            .iter()
            .map(move |(k, v)| (vec![("kind", k.clone())], f(v)))
            .collect::<Vec<_>>()
    };
    m.counters(
        "events_received",
        "Kernel records userspace received, per event kind",
        kinds(|k| k.received),
    );
    m.counters(
        "events_dropped",
        "Records the kernel dropped because the ring buffer was full, per event kind",
        kinds(|k| k.dropped),
    );
    m.counters(
        "events_filtered",
        "Events the kernel filtered on purpose (the sensor's own, out of scope), per kind",
        kinds(|k| k.filtered),
    );
    m.counters(
        "events_coalesced",
        "Repeats the kernel folded into the records it delivered, per event kind",
        kinds(|k| k.coalesced),
    );
    m.counter(
        "event_decode_errors",
        "Kernel records that did not decode",
        s.decode_errors,
    );
    m.gauge(
        "ring_buffer_size_bytes",
        "Size of the kernel's event ring buffer",
        u64::from(s.ring_buffer_bytes),
    );
    m.gauge(
        "ring_buffer_fill_bytes",
        "Bytes the ring held at its last drain",
        s.ring.last_bytes,
    );
    m.gauge(
        "ring_buffer_fill_peak_bytes",
        "Most bytes the ring held at one drain since start",
        s.ring.peak_bytes,
    );

    m.gauges(
        "processes",
        "Processes in the sensor's table",
        [
            (vec![("state", "live".to_owned())], s.processes.live as u64),
            (
                vec![("state", "exited".to_owned())],
                s.processes.exited as u64,
            ),
        ],
    );
    m.gauge(
        "graph_nodes",
        "Nodes of the host's entity graph",
        s.graph.nodes as u64,
    );
    m.gauge(
        "graph_edges",
        "Edges of the host's entity graph",
        s.graph.edges as u64,
    );
    m.counter(
        "graph_edges_evicted",
        "Graph edges dropped, oldest first, to stay under the cap",
        s.graph.edges_evicted,
    );

    m.gauges(
        "rules_loaded",
        "Rules in force, per engine",
        [
            (
                vec![("engine", "sigma".to_owned())],
                s.detection.sigma_rules as u64,
            ),
            (
                vec![("engine", "behaviour".to_owned())],
                s.detection.behaviour_rules as u64,
            ),
        ],
    );
    if let Some(v) = &s.rules_version {
        m.gauges(
            "rules_info",
            "The pushed rule set in force (always 1)",
            [(vec![("version", v.clone())], 1)],
        );
    }
    m.gauge(
        "policy_version",
        "Version of the policy in force",
        s.policy.version,
    );
    m.gauges(
        "policy_info",
        "The policy in force: its mode and where it came from (always 1)",
        [(
            vec![
                ("mode", label(&s.policy.mode)),
                ("source", s.policy.source.clone()),
            ],
            1,
        )],
    );
    m.counters(
        "load_failures",
        "Rule sets and policies refused since start; what was in force stayed",
        [
            (vec![("what", "rules".to_owned())], s.load_failures.rules),
            (vec![("what", "policy".to_owned())], s.load_failures.policy),
        ],
    );

    m.counters(
        "rule_matches",
        "Alerts raised since start, per rule and severity",
        s.alert_counts.iter().map(|a| {
            (
                vec![("rule", a.rule.clone()), ("severity", label(&a.severity))],
                a.count,
            )
        }),
    );
    let mut by_decision: Vec<(Labels, u64)> = Vec::new();
    for a in &s.alert_counts {
        let labels = vec![
            ("severity", label(&a.severity)),
            ("decision", label(&a.verdict)),
        ];
        match by_decision.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, n)) => *n += a.count,
            None => by_decision.push((labels, a.count)),
        }
    }
    m.counters(
        "alerts",
        "Alerts raised since start, per severity and the decision on their incident",
        by_decision,
    );
    m.counter(
        "signals",
        "Low-level matches recorded as signals, not alerts",
        s.signals,
    );
    m.gauges(
        "incidents",
        "Incidents held, per severity, decision and status",
        s.incident_counts.iter().map(|i| {
            (
                vec![
                    ("severity", label(&i.severity)),
                    ("decision", label(&i.verdict)),
                    ("status", label(&i.status)),
                ],
                i.count,
            )
        }),
    );
    m.gauge(
        "alerts_unwritten",
        "Alerts waiting to be written to the log (a full disk)",
        s.alert_log.unwritten as u64,
    );
    m.counter(
        "alerts_log_dropped",
        "Alerts dropped because too many waited to be written",
        s.alert_log.dropped,
    );

    m.counters(
        "actions",
        "Actions in the journal, per action and status",
        s.action_counts.iter().map(|a| {
            (
                vec![("action", label(&a.action)), ("status", label(&a.status))],
                a.count,
            )
        }),
    );
    m.gauge(
        "actions_in_force",
        "Actions in force now (blocks, isolation, quarantine)",
        s.actions.in_force as u64,
    );
    m.gauge(
        "approvals_pending",
        "Actions waiting for a person's approval",
        s.actions.pending as u64,
    );
    m.counter(
        "actions_unjournaled",
        "Actions refused or rolled back because the journal could not be written",
        s.actions.unjournaled,
    );
    m.counter(
        "enforcement_repaired",
        "Entries of the enforcement maps another process changed, put back",
        s.actions.repaired,
    );

    if let Some(u) = &s.uplink {
        m.gauge(
            "uplink_connected",
            "1 while the link to the controller is up",
            u64::from(u.connected),
        );
        m.counter(
            "uplink_sessions",
            "Sessions the controller welcomed since start",
            u.sessions,
        );
        m.gauge(
            "uplink_spool_deltas",
            "Graph deltas spooled, waiting for the controller's acknowledgement",
            u.spooled_deltas,
        );
        m.gauge(
            "uplink_spool_bytes",
            "Bytes of graph deltas spooled",
            u.spooled_bytes,
        );
        m.counter(
            "uplink_graph_deltas_dropped",
            "Graph deltas dropped before the controller had them",
            u.graph_deltas_dropped,
        );
    }
    if let Some(f) = &s.forward {
        m.counter(
            "forward_delivered",
            "Alerts delivered to --forward",
            f.delivered,
        );
        m.counter(
            "forward_failures",
            "Attempts to deliver to --forward that failed (each retry counts)",
            f.failed_attempts,
        );
        m.counter(
            "forward_given_up",
            "Alerts given up after every attempt to --forward failed",
            f.given_up,
        );
        m.counter(
            "forward_dropped",
            "Alerts the full --forward queue could not take",
            f.dropped,
        );
        m.gauge("forward_queue", "Alerts waiting for --forward", f.queued);
    }
    m.encode()
}

/// Asks the event loop for its status; None when it is gone or did not answer in time.
async fn status(ctrl: &mpsc::Sender<Envelope>) -> Option<Status> {
    let (tx, rx) = oneshot::channel();
    ctrl.send((Request::Status, tx)).await.ok()?;
    match tokio::time::timeout(ANSWER_WITHIN, rx).await {
        Ok(Ok(Response::Status(s))) => Some(*s),
        _ => None,
    }
}

async fn scrape(
    axum::extract::State(ctrl): axum::extract::State<mpsc::Sender<Envelope>>,
) -> axum::response::Response {
    use axum::{http::StatusCode, response::IntoResponse as _};
    let Some(s) = status(&ctrl).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the sensor's event loop did not answer\n",
        )
            .into_response();
    };
    match render(&s) {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

/// Binds `addr`: a port taken is an error at start, not a sensor without metrics.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, MetricsError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ctrl: mpsc::Sender<Envelope>) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(ctrl);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics server stopped");
    }
}
