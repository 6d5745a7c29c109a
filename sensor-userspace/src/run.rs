//! `vigil-sensor run`: load, attach, seed, then move events from the kernel to the sink until
//! SIGINT or SIGTERM, answering the control socket on the way.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use sensor_common::record::EventKind;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    control::{
        self, ControlError, GraphAnswer, GraphQuery, HookStatus, KindStatus, ProcessView, Request,
        Response, Status,
    },
    host::clock::BootClock,
    host::procfs,
    host::state::{StateDir, StateError},
    ingest::output::{JsonLines, OutputError},
    ingest::pipeline::{Discard, Pipeline, Sink},
    kernel::{
        loader::{self, LoadError, LoadOptions, Loaded},
        ringbuf::{KernelStats, RingError, RingReader},
    },
    model::graph::{Graph, GraphLimits},
    model::process_table::{ProcessTable, TableLimits},
    triage::detection::Detection,
};

/// How often exited processes age out and buffered output is flushed.
const TICK: Duration = Duration::from_millis(200);

/// Ticks between graph deltas to the controller (one a second).
const GRAPH_DELTA_TICKS: u64 = 5;

/// Deltas waiting for the uplink task; past this the uplink is stuck and they are counted lost.
const GRAPH_CHANNEL: usize = 256;

/// Hands the graph's changes since the last delta to the uplink.
fn send_delta<S: Sink>(
    pipeline: &mut Pipeline<S, Detection>,
    tx: &mpsc::Sender<Vec<u8>>,
    lost: &std::sync::atomic::AtomicU64,
) {
    use sensor_common::wire::Versioned as _;
    let delta = pipeline.graph.take_delta(&pipeline.table);
    if delta.upserted.is_empty() && delta.removed.is_empty() && delta.edges.is_empty() {
        return;
    }
    match delta.encode() {
        Ok(bytes) if bytes.len() <= sensor_common::protocol::MAX_FRAME / 2 => {
            if tx.try_send(bytes).is_err() {
                lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(bytes) => {
            tracing::warn!(
                bytes = bytes.len(),
                "a graph delta too large for one frame is dropped"
            );
            lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a graph delta"),
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub state: PathBuf,
    pub events_out: Option<PathBuf>,
    /// The schema of `events_out`.
    pub events_format: crate::triage::export::Format,
    pub ring_buffer_bytes: u32,
    /// How often the ring is drained when the kernel has not woken the sensor (the kernel
    /// wakes it only when the ring passes a quarter full): the bound on event latency.
    pub poll_interval: Duration,
    /// See `KernelConfig::coalesce_ms`.
    pub coalesce_ms: u32,
    pub btf: PathBuf,
    pub limits: TableLimits,
    pub graph_limits: GraphLimits,
    /// File names whose read-only opens are reported.
    pub sensitive_names: Vec<String>,
    /// Environment variables captured at exec.
    pub env_names: Vec<String>,
    /// Directories of rules to run; empty for the installed or shipped rules.
    pub rules: Vec<PathBuf>,
    /// The policy file; None for the policy shipped in the binary.
    pub policy: Option<PathBuf>,
    /// The cgroup v2 directory the network containment programs watch; None for the root of
    /// the cgroup v2 mount (the whole host).
    pub cgroup: Option<PathBuf>,
    /// The controller's replicas to report to, tried in turn (each stays reachable during
    /// isolation); empty: none.
    pub controllers: Vec<std::net::SocketAddr>,
    /// An enrollment token, used when the state directory holds no identity yet.
    pub enroll: Option<sensor_common::protocol::EnrollToken>,
    /// Watch only the processes of this cgroup subtree (one container, or one simulated
    /// host in tests); None for the whole machine.
    pub scope: Option<PathBuf>,
    /// The addresses this host is known by to its peers; empty for its interfaces'.
    pub addresses: Vec<std::net::IpAddr>,
    /// The bpffs directory enforcement is pinned under; None runs without pins.
    pub pin_dir: Option<PathBuf>,
    /// Where `/metrics` is served; None serves none.
    pub metrics: Option<std::net::SocketAddr>,
    /// Where alerts are also written for a SIEM, and in which schema.
    pub alerts_out: Option<(PathBuf, crate::triage::export::Format)>,
    /// Where alerts are POSTed (falcosidekick's input shape), and how many may wait.
    pub forward: Option<(String, usize)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "vigil-sensor run must be run as root (it loads eBPF programs); try: sudo vigil-sensor run ..."
    )]
    NotRoot,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot install the {0} handler: {1}")]
    Signal(&'static str, std::io::Error),
    #[error("reading the ring buffer failed: {0}")]
    RingRead(std::io::Error),
    #[error("cannot read the rule directory {path}: {source}")]
    Rules {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    AlertLog(#[from] crate::triage::alerts::AlertLogError),
    #[error(transparent)]
    Response(#[from] crate::act::ResponseError),
    #[error(transparent)]
    Blocklist(#[from] crate::act::blocklist::BlocklistError),
    #[error("refusing to start with an invalid policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Forward(#[from] crate::triage::forward::ForwardError),
}

/// Why a pushed policy was not put in force (the one in force stays).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("cannot keep the pushed policy in {}: {source}", .path.display())]
    Keep {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Sink for Box<dyn Sink + Send> {
    fn publish(&mut self, event: &crate::model::events::Event) {
        (**self).publish(event);
    }
    fn flush(&mut self) {
        (**self).flush();
    }
    fn wants_events(&self) -> bool {
        (**self).wants_events()
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones charge the memory cgroup
/// and ignore it. Raise it as far as allowed; if loading then fails with EPERM on an old
/// kernel, the load error says so.
fn raise_memlock() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_ok() {
        return;
    }
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((_, hard)) => {
            let r = setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard);
            tracing::debug!(
                hard,
                ok = r.is_ok(),
                "RLIMIT_MEMLOCK raised to its hard limit only"
            );
        }
        Err(e) => tracing::debug!(error = %e, "cannot read RLIMIT_MEMLOCK"),
    }
}

/// Alerts raised since start, by rule, severity and their incident's verdict.
#[derive(Default)]
struct AlertTally(
    BTreeMap<
        (
            String,
            crate::detect::rules::sigma::rule::Level,
            crate::triage::Verdict,
        ),
        u64,
    >,
);

impl AlertTally {
    /// Counts one alert of `rule`; an alert whose incident is gone counts as recorded.
    fn count(
        &mut self,
        rule: &crate::triage::alerts::RuleRef,
        verdict: Option<crate::triage::Verdict>,
    ) {
        let name = rule.id.clone().unwrap_or_else(|| rule.title.clone());
        let verdict = verdict.unwrap_or(crate::triage::Verdict::Record);
        *self.0.entry((name, rule.severity, verdict)).or_default() += 1;
    }

    fn counts(&self) -> Vec<control::AlertCount> {
        self.0
            .iter()
            .map(|((rule, severity, verdict), &count)| control::AlertCount {
                rule: rule.clone(),
                severity: *severity,
                verdict: *verdict,
                count,
            })
            .collect()
    }
}

/// The incidents held, by severity, verdict and status.
fn incident_counts<'a>(
    incidents: impl IntoIterator<Item = &'a crate::triage::incidents::Incident>,
) -> Vec<control::IncidentCount> {
    let mut by: BTreeMap<_, u64> = BTreeMap::new();
    for i in incidents {
        *by.entry((i.severity, i.decision.verdict, i.status))
            .or_default() += 1;
    }
    by.into_iter()
        .map(
            |((severity, verdict, status), count)| control::IncidentCount {
                severity,
                verdict,
                status,
                count,
            },
        )
        .collect()
}

/// The journal's records, by action (or settlement) and status, in the order first seen.
fn action_counts(records: &[crate::act::journal::Record]) -> Vec<control::ActionCount> {
    let mut counts: Vec<control::ActionCount> = Vec::new();
    for r in records {
        match counts
            .iter_mut()
            .find(|c| c.action == r.action && c.status == r.status)
        {
            Some(c) => c.count += 1,
            None => counts.push(control::ActionCount {
                action: r.action,
                status: r.status,
                count: 1,
            }),
        }
    }
    counts
}

struct Running {
    state: StateDir,
    policy: crate::policy::Policy,
    policy_path: Option<PathBuf>,
    rules_loaded: usize,
    /// The version of the pushed rule set in force, if that is what runs.
    rules_version: Option<String>,
    alerts_raised: u64,
    /// Alerts raised since start, by rule, severity and their incident's verdict.
    alert_tally: AlertTally,
    /// Rule sets and policies refused since start.
    load_failures: control::LoadFailures,
    /// The ring's fill at its last drain, kept for `status`.
    ring_fill: crate::kernel::ringbuf::RingFill,
    /// The controller's addresses and how the link stands, when the sensor reports to one.
    link: Option<(
        Vec<std::net::SocketAddr>,
        std::sync::Arc<crate::uplink::LinkGauges>,
    )>,
    alert_log: crate::triage::alerts::AlertLog,
    /// `--alerts-out`, when given.
    export: Option<crate::triage::export::AlertExport>,
    /// `--forward`, when given.
    forward: Option<crate::triage::forward::Forwarder>,
    responder: crate::act::Responder,
    loaded: Loaded,
    stats: KernelStats,
    started: Instant,
    ring_buffer_bytes: u32,
}

impl Running {
    /// The periodic upkeep: exited processes age out, the scope follows its cgroup, and the
    /// responder's waiting remediations run (all of them at `shutdown`).
    fn on_tick(&mut self, pipeline: &mut Daemon, shutdown: bool) {
        if !shutdown {
            pipeline.tick(BootClock::boot_now_ns());
            if let Some(scope) = pipeline.scope_mut() {
                scope.refresh();
            }
        }
        let detection = pipeline.observer();
        let records = self.responder.tick(
            shutdown,
            &self.policy,
            |id| detection.and_then(|d| d.incidents.get(id)),
            &pipeline.graph,
        );
        records.iter().for_each(log_action);
        let waiting = self.alert_log.stats().unwritten;
        if waiting > 0 {
            match self.alert_log.retry() {
                Ok(()) => tracing::warn!(
                    alerts = waiting,
                    "alerts that could not be written are written now"
                ),
                Err(e) => {
                    tracing::debug!(alerts = waiting, error = %e, "alerts still cannot be written")
                }
            }
        }
    }

    fn status<S: Sink>(&self, pipeline: &Pipeline<S, Detection>) -> Status {
        let events = EventKind::ALL
            .iter()
            .map(|&k| {
                let kc = self.stats.read(k);
                let received = pipeline.seen().get(k.name()).copied().unwrap_or(0);
                (
                    k.name().to_owned(),
                    KindStatus {
                        received,
                        dropped: kc.ring_full,
                        filtered: kc.filtered,
                        coalesced: kc.coalesced,
                    },
                )
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            hooks: self.loaded.attached.iter().map(HookStatus::from).collect(),
            skipped_hooks: self.loaded.skipped.iter().map(HookStatus::from).collect(),
            support: self.loaded.support.clone(),
            ring_buffer_bytes: self.ring_buffer_bytes,
            events,
            decode_errors: pipeline.decode_errors(),
            processes: pipeline.table.stats(),
            graph: pipeline.graph.stats(),
            rules_loaded: self.rules_loaded,
            rules_version: self.rules_version.clone(),
            alerts_raised: self.alerts_raised,
            signals: pipeline
                .observer()
                .map_or(0, |d| d.incidents.signals_seen()),
            exceptions: pipeline
                .observer()
                .map(|d| {
                    d.incidents.exception_counts(
                        i64::try_from(crate::host::clock::unix_now_ns() / 1_000_000_000)
                            .unwrap_or(0),
                    )
                })
                .unwrap_or_default(),
            incidents: pipeline
                .observer()
                .map_or(0, |d| d.incidents.incidents().len()),
            detection: pipeline
                .observer()
                .map(|d| d.detector.stats())
                .unwrap_or_default(),
            actions: self.responder.stats(),
            policy: self.policy_summary(),
            pins: self.loaded.pin_status.clone(),
            alert_log: self.alert_log.stats(),
            ring: self.ring_fill,
            alert_counts: self.alert_tally.counts(),
            incident_counts: pipeline
                .observer()
                .map(|d| incident_counts(d.incidents.incidents()))
                .unwrap_or_default(),
            action_counts: action_counts(self.responder.journal().records()),
            load_failures: self.load_failures,
            uplink: self.link.as_ref().map(|(addrs, g)| g.status(addrs)),
            forward: self
                .forward
                .as_ref()
                .map(crate::triage::forward::Forwarder::stats),
        }
    }

    // Long by design: one arm per control request, each a short call into the part that answers it.

    fn answer<S: Sink>(&mut self, pipeline: &mut Pipeline<S, Detection>, req: Request) -> Response {
        match req {
            Request::Incidents => {
                pipeline.with_model(|d, table, graph, clock| d.refresh(table, graph, clock));
                Response::Incidents {
                    incidents: pipeline
                        .observer()
                        .map(|d| d.incidents.incidents().to_vec())
                        .unwrap_or_default(),
                }
            }
            Request::Undo { id, by } => {
                match self
                    .responder
                    .undo(&id, by.as_deref().unwrap_or(LOCAL_OPERATOR))
                {
                    Ok(r) => {
                        log_action(&r);
                        Response::Actions { records: vec![r] }
                    }
                    Err(e) => Response::Error {
                        message: e.to_string(),
                    },
                }
            }
            Request::Release { by } => {
                let who = by.as_deref().unwrap_or(LOCAL_OPERATOR);
                let held = self.responder.in_force(crate::policy::Action::Isolate);
                if held.is_empty() {
                    return Response::NotIsolated;
                }
                let mut records = Vec::new();
                for id in held {
                    match self.responder.undo(&id, who) {
                        Ok(r) => {
                            log_action(&r);
                            records.push(r);
                        }
                        Err(e) => {
                            return Response::Error {
                                message: e.to_string(),
                            };
                        }
                    }
                }
                Response::Actions { records }
            }
            Request::Approve { incident, by } => self.settle(
                pipeline,
                &incident,
                true,
                by.as_deref().unwrap_or(LOCAL_OPERATOR),
            ),
            Request::Deny { incident, by } => self.settle(
                pipeline,
                &incident,
                false,
                by.as_deref().unwrap_or(LOCAL_OPERATOR),
            ),
            Request::FleetBlock { block, by } => {
                match self.responder.fleet_block(&block, &by, &pipeline.graph) {
                    Ok(r) => {
                        log_action(&r);
                        Response::Actions { records: vec![r] }
                    }
                    Err(e) => Response::Error {
                        message: e.to_string(),
                    },
                }
            }
            Request::Contain { order, reason, by } => self.contain(
                pipeline,
                order,
                &reason,
                by.as_deref().unwrap_or(LOCAL_OPERATOR),
            ),
            Request::ReloadPolicy => match self.reload_policy(pipeline) {
                Ok(summary) => Response::Policy(summary),
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            },
            Request::Graph { query } => self.graph_answer(pipeline, query),
            Request::Verify { indicators } => {
                let residue = |path: &str| self.responder.persistence_residue(path);
                let present = crate::triage::indicators::look(
                    &indicators,
                    &crate::triage::indicators::Host {
                        table: &pipeline.table,
                        proc_root: std::path::Path::new("/proc"),
                        residue: &residue,
                    },
                );
                tracing::info!(
                    looked_for = indicators.len(),
                    present = present.len(),
                    "verification asked for"
                );
                Response::Verified { present }
            }
            Request::SweepCandidates => {
                let mut paths = pipeline.graph.file_paths();
                paths.extend(pipeline.table.iter().filter_map(|p| p.exe.clone()));
                paths.sort_unstable();
                paths.dedup();
                Response::Paths { paths }
            }
            Request::PushRules { set, by } => self.push_rules(pipeline, &set, &by),
            Request::PushPolicy { text, by } => match self.push_policy(pipeline, &text, &by) {
                Ok(summary) => Response::Applied {
                    detail: format!(
                        "policy version {} ({:?}) in force",
                        summary.version, summary.mode
                    ),
                },
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            },
            Request::Status => Response::Status(Box::new(self.status(pipeline))),
            Request::Process { pid } => Response::Process {
                found: pipeline.table.live(pid).map(|p| ProcessView {
                    process: p.clone(),
                    ancestry: pipeline
                        .table
                        .ancestors(&p.key, usize::MAX)
                        .into_iter()
                        .cloned()
                        .collect(),
                }),
            },
        }
    }
}

/// Where a rule set the controller pushed is installed.
fn pushed_rules(state: &StateDir) -> PathBuf {
    state.path().join("pushed").join("rules")
}

/// Where a policy the controller pushed is kept.
fn pushed_policy(state: &StateDir) -> PathBuf {
    state.path().join("pushed").join("policy.toml")
}

/// Who asked, for requests from the local control socket.
const LOCAL_OPERATOR: &str = "operator (control socket)";

/// One log line per journal record, however it came about.
/// How long one turn of the event loop took, and what it did: a turn that holds the loop
/// longer than [`Turn::STALL`] delays every detection and response queued behind it, so it is
/// logged with what it was doing.
struct Turn {
    what: &'static str,
    started: Instant,
}

impl Turn {
    const STALL: Duration = Duration::from_millis(5);

    fn end(self) {
        let took = self.started.elapsed();
        if took >= Self::STALL {
            tracing::warn!(
                turn = self.what,
                took_ms = took.as_secs_f64() * 1e3,
                "event loop stalled"
            );
        }
    }
}

fn log_action(r: &crate::act::journal::Record) {
    tracing::warn!(
        action = %r.id,
        verb = ?r.action,
        target = %r.target,
        status = ?r.status,
        detail = %r.detail,
        incident = %r.incident,
        "response"
    );
}

impl Running {
    /// Carries out a containment a person ordered through the control socket.
    fn contain<S: Sink>(
        &mut self,
        pipeline: &Pipeline<S, Detection>,
        order: control::Order,
        reason: &str,
        who: &str,
    ) -> Response {
        use crate::{act::journal::Target, policy::Action};
        let tree = |pid: u32| {
            pipeline
                .table
                .live(pid)
                .map(|p| (p.key.pid, p.key.start, p.exe.clone()))
                .ok_or_else(|| format!("the sensor knows no live process {pid}"))
        };
        let planned = match order {
            control::Order::Isolate => Ok((Action::Isolate, self.responder.host_target())),
            control::Order::Block { dest, pid: None } => Ok((
                Action::BlockDestination,
                Target::Destination { dest, tree: None },
            )),
            control::Order::Block {
                dest,
                pid: Some(pid),
            } => tree(pid).map(|(pid, start, _)| {
                (
                    Action::BlockDestination,
                    Target::Destination {
                        dest,
                        tree: Some((pid, start)),
                    },
                )
            }),
            control::Order::Freeze { pid } => tree(pid)
                .map(|(pid, start, exe)| (Action::Freeze, Target::ProcessTree { pid, start, exe })),
            control::Order::Kill { pid } => tree(pid)
                .map(|(pid, start, exe)| (Action::Kill, Target::ProcessTree { pid, start, exe })),
            control::Order::Quarantine { path } => {
                if path.starts_with('/') {
                    Ok((Action::Quarantine, Target::File { path, id: None }))
                } else {
                    Err(format!("{path:?} is not an absolute path"))
                }
            }
        };
        let result = planned.and_then(|(action, target)| {
            self.responder
                .manual(action, target, who, reason, &self.policy, &pipeline.graph)
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(record) => {
                log_action(&record);
                Response::Actions {
                    records: vec![record],
                }
            }
            Err(message) => Response::Error { message },
        }
    }

    /// Approves (carries out) or denies the pending actions of `incident`.
    fn settle<S: Sink>(
        &mut self,
        pipeline: &Pipeline<S, Detection>,
        incident: &str,
        approve: bool,
        who: &str,
    ) -> Response {
        let Some(inc) = pipeline.observer().and_then(|d| d.incidents.get(incident)) else {
            return Response::Error {
                message: format!("no incident {incident}"),
            };
        };
        let records = self
            .responder
            .settle(inc, approve, who, &self.policy, &pipeline.graph);
        if records.is_empty() {
            Response::Error {
                message: format!("incident {incident} has no action awaiting approval"),
            }
        } else {
            Response::Actions { records }
        }
    }

    fn policy_summary(&self) -> crate::policy::PolicySummary {
        crate::policy::PolicySummary {
            version: self.policy.version,
            mode: self.policy.mode,
            source: self
                .policy_path
                .as_ref()
                .map_or_else(|| "built in".to_owned(), |p| p.display().to_string()),
        }
    }

    /// Puts a pushed rule set in force after checking it whole; the rules in force stay
    /// otherwise. The set is installed under `STATE/pushed/rules`, which later starts use.
    fn push_rules<S: Sink>(
        &mut self,
        pipeline: &mut Pipeline<S, Detection>,
        set: &crate::detect::rules::RuleSet,
        by: &str,
    ) -> Response {
        let report = match crate::detect::rules::validate_set(set) {
            Ok(r) => r,
            Err(refused) => {
                self.load_failures.rules += 1;
                tracing::error!(by, "{refused}; keeping the rules in force");
                return Response::Error {
                    message: refused.to_string(),
                };
            }
        };
        if let Err(e) = crate::detect::rules::install_set(set, &pushed_rules(&self.state)) {
            self.load_failures.rules += 1;
            let message = format!("cannot install rule set {}: {e}", set.version);
            tracing::error!(by, "{message}; keeping the rules in force");
            return Response::Error { message };
        }
        let loaded = report.loaded();
        if let Some(d) = pipeline.observer_mut() {
            d.detector.replace_rules(report.sigma, report.behaviour);
        }
        self.rules_loaded = loaded;
        self.rules_version = Some(set.version.clone());
        tracing::warn!(by, version = %set.version, loaded, "rule set pushed and in force");
        Response::Applied {
            detail: format!("rule set {} in force: {loaded} rules", set.version),
        }
    }

    /// Puts a pushed policy in force after checking it whole, and keeps it as
    /// `STATE/pushed/policy.toml` for later starts and SIGHUP; the policy in force stays
    /// otherwise.
    fn push_policy<S: Sink>(
        &mut self,
        pipeline: &mut Pipeline<S, Detection>,
        text: &str,
        by: &str,
    ) -> Result<crate::policy::PolicySummary, PushError> {
        let path = pushed_policy(&self.state);
        let next = crate::policy::Policy::parse(text, "the pushed policy").inspect_err(|e| {
            self.load_failures.policy += 1;
            tracing::error!(by, error = %e, "pushed policy refused; keeping the one in force");
        })?;
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                crate::host::durable::write_atomically(
                    &path,
                    text.as_bytes(),
                    0o600,
                    crate::host::durable::Flush::Now,
                )
            });
        if let Err(source) = written {
            return Err(PushError::Keep { path, source });
        }
        tracing::warn!(by, version = next.version, mode = ?next.mode, "policy pushed and in force");
        self.policy_path = Some(path);
        Ok(self.adopt_policy(pipeline, next))
    }

    /// Puts a checked policy in force everywhere it acts: the responder, the incident book
    /// (triage and escalation), and what `status` reports.
    fn adopt_policy<S: Sink>(
        &mut self,
        pipeline: &mut Pipeline<S, Detection>,
        policy: crate::policy::Policy,
    ) -> crate::policy::PolicySummary {
        self.responder.apply_policy(&policy);
        if let Some(d) = pipeline.observer_mut() {
            d.incidents.set_policy(policy.clone());
        }
        self.policy = policy;
        self.policy_summary()
    }

    /// Re-reads the policy file. A policy that fails any check is refused whole, with the key
    /// and the reason, and the one in force stays.
    fn reload_policy<S: Sink>(
        &mut self,
        pipeline: &mut Pipeline<S, Detection>,
    ) -> Result<crate::policy::PolicySummary, crate::policy::PolicyError> {
        let next = match &self.policy_path {
            Some(path) => crate::policy::Policy::load(path),
            None => crate::policy::Policy::shipped(),
        };
        match next {
            Ok(p) => {
                tracing::info!(version = p.version, mode = ?p.mode, "policy reloaded");
                Ok(self.adopt_policy(pipeline, p))
            }
            Err(e) => {
                self.load_failures.policy += 1;
                tracing::error!(error = %e, version = self.policy.version, "policy refused; keeping the one in force");
                Err(e)
            }
        }
    }

    /// Writes the alerts the pipeline raised since the last call, and logs each.
    fn record_alerts<S: Sink>(&mut self, pipeline: &mut Pipeline<S, Detection>) {
        let mut alerts = pipeline
            .observer_mut()
            .map(Detection::take_alerts)
            .unwrap_or_default();
        if alerts.is_empty() {
            return;
        }
        for a in &alerts {
            let f = &a.finding;
            tracing::warn!(
                alert = %f.id,
                rule = %f.rule.title,
                severity = ?f.rule.severity,
                risk = a.risk.score,
                incident = %a.incident,
                pid = f.process.pid,
                exe = f.process.exe.as_deref().unwrap_or("?"),
                "alert"
            );
        }
        // Decide and act first: the alerts and the journal are on disk before this returns,
        // and nothing else stands between detection and containment.
        for a in &mut alerts {
            let incident = pipeline
                .observer()
                .and_then(|d| d.incidents.get(&a.incident));
            self.alert_tally
                .count(&a.finding.rule, incident.map(|i| i.decision.verdict));
            let Some(incident) = incident else {
                continue;
            };
            let ctx = crate::act::Context {
                policy: &self.policy,
                incident,
                graph: &pipeline.graph,
            };
            for r in self.responder.on_alert(a, &ctx) {
                log_action(&r);
            }
            a.endpoints = crate::act::remote_endpoints(a, &ctx);
        }
        // After the response, off the path to containment: what each alert wrote or ran,
        // hashed for the controller's fleet blocks (a file the response moved into the vault
        // has the hash its journal record took).
        for a in &mut alerts {
            let journal = self.responder.journal();
            a.payloads = crate::triage::indicators::payloads(a, |path| {
                journal.records().iter().rev().find_map(|r| match &r.undo {
                    crate::act::journal::Undo::Restore { path: p, meta, .. } if p == path => {
                        Some(meta.sha256.clone())
                    }
                    _ => None,
                })
            });
        }
        self.alerts_raised += alerts.len() as u64;
        if let Err(e) = self.alert_log.append(&alerts) {
            tracing::error!(path = %self.alert_log.path().display(), error = %e, waiting = self.alert_log.stats().unwritten, "cannot write alerts: they are kept and retried");
        }
        if let Some(f) = &self.forward {
            f.send(&alerts);
        }
        if let Some(x) = &mut self.export {
            let incidents = pipeline
                .observer()
                .map(|d| d.incidents.incidents())
                .unwrap_or_default();
            x.write(&alerts, incidents);
        }
    }

    fn graph_answer<S: Sink>(
        &self,
        pipeline: &Pipeline<S, Detection>,
        query: GraphQuery,
    ) -> Response {
        use sensor_common::wire::Versioned as _;
        match query {
            GraphQuery::Tree { pid } => match pipeline.table.live(pid) {
                Some(p) => Response::Graph(GraphAnswer::Tree(
                    pipeline.graph.tree(&pipeline.table, &p.key),
                )),
                None => Response::Error {
                    message: format!("no live process {pid}"),
                },
            },
            GraphQuery::Executors { path } => Response::Graph(GraphAnswer::Processes {
                processes: pipeline.graph.executors(&path),
            }),
            GraphQuery::FirstWriter { path } => Response::Graph(GraphAnswer::Processes {
                processes: pipeline.graph.first_writer(&path).into_iter().collect(),
            }),
            GraphQuery::Snapshot => {
                let snap = pipeline.graph.snapshot(&pipeline.table);
                let path = self.state.path().join("graph.snapshot.msgpack");
                let written = snap
                    .encode()
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| std::fs::write(&path, bytes).map_err(|e| e.to_string()));
                match written {
                    Ok(()) => Response::Graph(GraphAnswer::Snapshot {
                        path: path.display().to_string(),
                        nodes: snap.nodes.len(),
                        edges: snap.edges.len(),
                    }),
                    Err(e) => Response::Error {
                        message: format!("cannot write the snapshot to {}: {e}", path.display()),
                    },
                }
            }
        }
    }
}

/// Attaches the network containment programs (isolation, destination blocks) to `cgroup`, by
/// default the cgroup v2 root. Without them the sensor still runs: those actions then fail,
/// each with its reason in the journal.
fn load_network(
    loaded: &mut Loaded,
    cgroup: Option<PathBuf>,
) -> Option<crate::act::netguard::KernelNetGuard> {
    let Some(cgroup) = cgroup.or_else(crate::host::cgroup::mount) else {
        tracing::error!(
            "no cgroup v2 mount in /proc/self/mounts: network containment is unavailable"
        );
        return None;
    };
    let programs = match loaded.load_network(&cgroup) {
        Ok(programs) => programs,
        Err(e) => {
            let detail = std::iter::successors(std::error::Error::source(&e), |e| e.source())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            tracing::error!(error = %e, %detail, "network containment is unavailable");
            return None;
        }
    };
    let pinner = loaded.pins.as_ref().map(crate::kernel::pins::Pins::pinner);
    match crate::act::netguard::KernelNetGuard::take(&mut loaded.ebpf, cgroup, programs, pinner) {
        Ok(net) => Some(net),
        Err(e) => {
            tracing::error!(error = %e, "network containment is unavailable");
            None
        }
    }
}

/// Takes over from what an earlier run left pinned: this run's links are attached and its
/// journal is folded over the adopted maps (in [`assemble`]), so the kernel's maps are
/// settled to what the journal holds and the earlier links are retired. Enforcement was in
/// force throughout: the earlier run's links until now, this run's from their attach.
fn adopt_pins(loaded: &mut Loaded, responder: &mut crate::act::Responder) {
    let Some(pins) = loaded.pins.as_mut() else {
        return;
    };
    let stale = responder.settle_adopted();
    let retired = pins.retire_previous();
    if let Some(status) = loaded.pin_status.as_mut() {
        status.adopted_links = retired;
    }
    tracing::info!(
        dir = %pins.dir().display(),
        adopted_maps = loaded.pin_status.as_ref().is_some_and(|s| s.adopted_maps),
        retired_links = retired,
        stale_entries = stale,
        "enforcement pinned; what an earlier run left in force was adopted"
    );
}

/// The policy in force at start, and the file it came from: what the controller pushed
/// last, when it still loads, wins over the one given (`--policy`), which wins over the
/// shipped one. Only a given policy that does not load stops the start.
fn policy_in_force(
    state: &StateDir,
    given: Option<&std::path::Path>,
) -> Result<(crate::policy::Policy, Option<PathBuf>), RunError> {
    let fallback = match given {
        Some(path) => crate::policy::Policy::load(path)?,
        None => crate::policy::Policy::shipped()?,
    };
    let pushed = pushed_policy(state);
    if !pushed.exists() {
        return Ok((fallback, given.map(std::path::Path::to_owned)));
    }
    match crate::policy::Policy::load(&pushed) {
        Ok(p) => {
            tracing::info!(path = %pushed.display(), "the policy the controller pushed is in force");
            Ok((p, Some(pushed)))
        }
        Err(e) => {
            tracing::error!(error = %e, "the pushed policy no longer loads; using the one given at start");
            Ok((fallback, given.map(std::path::Path::to_owned)))
        }
    }
}

/// The rule directories in force, by precedence: the set the controller pushed (when one is
/// installed), else those given (`--rules`), else the installed rules directory when it
/// exists. Empty: the rules built into the binary.
fn rule_dirs(
    pushed: Option<PathBuf>,
    given: &[PathBuf],
    installed: Option<PathBuf>,
) -> Vec<PathBuf> {
    match (pushed, given.is_empty(), installed) {
        (Some(p), _, _) => vec![p],
        (None, false, _) => given.to_vec(),
        (None, true, Some(i)) => vec![i],
        (None, true, None) => Vec::new(),
    }
}

/// Loads `dirs` (the built-in rules when there are none); a directory that cannot be read
/// stops the start, a rule that does not load is skipped with its reason.
fn load_rules(dirs: &[PathBuf]) -> Result<crate::detect::rules::LoadReport, RunError> {
    let mut rules = crate::detect::rules::LoadReport::default();
    if dirs.is_empty() {
        rules = crate::detect::rules::shipped();
        tracing::info!(
            loaded = rules.loaded(),
            of = rules.total,
            "built-in rules (deploy/rules) loaded"
        );
    }
    for dir in dirs {
        let report = crate::detect::rules::load_dir(dir).map_err(|source| RunError::Rules {
            path: dir.clone(),
            source,
        })?;
        tracing::info!(dir = %dir.display(), loaded = report.loaded(), of = report.total, "rules loaded");
        rules.merge(report);
    }
    for skipped in &rules.skipped {
        tracing::warn!("{skipped}");
    }
    Ok(rules)
}

/// The process table and the graph as /proc shows them now (within `scope`, if any).
fn seed_model(
    opts: &RunOptions,
    scope: Option<&crate::ingest::pipeline::Scope>,
    hostname: &str,
) -> (ProcessTable, Graph) {
    let mut table = ProcessTable::new(procfs::ticks_per_second(), opts.limits);
    let cg_mount = crate::host::cgroup::mount().unwrap_or_default();
    let proc_root = std::path::Path::new("/proc");
    table.seed(
        procfs::scan(proc_root)
            .into_iter()
            .filter(|p| scope.is_none_or(|s| s.holds_pid(p.pid, &cg_mount))),
    );
    tracing::info!(processes = table.len(), "process table seeded from /proc");
    let mut graph = Graph::new(hostname.to_owned(), opts.graph_limits);
    let sockets = procfs::net_sockets(proc_root);
    for p in table.iter() {
        let held: Vec<procfs::NetSocket> = procfs::socket_inodes(proc_root, p.key.pid)
            .iter()
            .filter_map(|inode| sockets.get(inode).cloned())
            .collect();
        graph.seed_process(p, &held);
    }
    tracing::info!(edges = graph.stats().edges, "graph seeded from /proc");
    (table, graph)
}

/// The daemon's pipeline: the model, with detection and triage observing it, writing events
/// to the configured sink.
type Daemon = Pipeline<Box<dyn Sink + Send>, Detection>;

pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RunError::NotRoot);
    }
    let state = StateDir::prepare(&opts.state)?;
    let (policy, policy_path) = policy_in_force(&state, opts.policy.as_deref())?;
    tracing::info!(version = policy.version, mode = ?policy.mode, "policy in force");
    let (mut pipeline, mut running, mut ring) = assemble(&opts, &state, policy, policy_path)?;

    let listener = control::bind(&state.control_socket())?;
    let (ctrl_tx, ctrl_rx) = mpsc::channel(16);
    let uplink = (!opts.controllers.is_empty())
        .then(|| Uplink::start(opts.controllers.clone(), &opts, &state, ctrl_tx.clone()));
    running.link = uplink
        .as_ref()
        .map(|u| (u.controllers.clone(), u.gauges.clone()));
    let metrics = match opts.metrics {
        Some(addr) => {
            let listener = crate::metrics::bind(addr).await?;
            tracing::info!(%addr, "serving /metrics");
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                ctrl_tx.clone(),
            )))
        }
        None => None,
    };
    let server = tokio::spawn(control::serve(listener, ctrl_tx));
    tracing::info!(
        state = %state.path().display(),
        hooks = running.loaded.attached.len(),
        "vigil-sensor running"
    );
    let result = event_loop(
        &mut ring,
        &mut pipeline,
        &mut running,
        ctrl_rx,
        uplink.as_ref(),
        opts.poll_interval,
    )
    .await;
    server.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    shut_down(&mut ring, &mut pipeline, running, uplink, &state).await;
    result
}

/// Loads and attaches the kernel programs, then builds what runs over them: the model seeded
/// from /proc (after attaching, so nothing that starts in between is missed), the rules in
/// force, the responder and the pipeline.
fn assemble(
    opts: &RunOptions,
    state: &StateDir,
    policy: crate::policy::Policy,
    policy_path: Option<PathBuf>,
) -> Result<(Daemon, Running, RingReader), RunError> {
    let sink: Box<dyn Sink + Send> = match &opts.events_out {
        Some(path) => match opts.events_format {
            crate::triage::export::Format::Vigil => Box::new(JsonLines::open(path)?),
            crate::triage::export::Format::Ocsf => {
                Box::new(crate::triage::ocsf::OcsfEvents::new(JsonLines::open(path)?))
            }
        },
        None => Box::new(Discard),
    };
    raise_memlock();
    let mut loaded = loader::load_and_attach(&LoadOptions {
        btf_path: opts.btf.clone(),
        ring_buffer_bytes: opts.ring_buffer_bytes,
        sensor_tgid: std::process::id(),
        sensitive_names: opts.sensitive_names.clone(),
        coalesce_ms: opts.coalesce_ms,
        env_names: opts.env_names.clone(),
        pin_dir: opts.pin_dir.clone(),
    })?;
    let ring = RingReader::take(&mut loaded.ebpf)?;
    let stats = KernelStats::take(&mut loaded.ebpf)?;

    let scope = opts.scope.clone().map(crate::ingest::pipeline::Scope::new);
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let (table, graph) = seed_model(opts, scope.as_ref(), &hostname);
    let (rules, rule_dirs, rules_version) = rules_in_force(opts, state)?;
    let rules_loaded = rules.loaded();
    let started_ns = BootClock::boot_now_ns();
    let me = crate::detect::SensorSelf::current(
        std::iter::once(state.path().to_owned())
            .chain(opts.policy.clone())
            .chain(rule_dirs)
            .chain(std::iter::once(PathBuf::from("/etc/vigil"))),
    );
    let hashes = crate::detect::BlockedHashes::default();
    let enforcer: Box<dyn crate::act::blocklist::Enforcer> = Box::new(
        crate::act::blocklist::KernelBlocklist::take(&mut loaded.ebpf)?,
    );
    let net = load_network(&mut loaded, opts.cgroup.clone());
    // Every program is loaded now: their ids, their maps' and the pinned links' are ours.
    me.add_bpf_objects(loader::own_objects());
    let mut responder = crate::act::Responder::open(
        state.path(),
        enforcer,
        net,
        hashes.clone(),
        me.clone(),
        started_ns,
    )?;
    responder.set_controllers(&opts.controllers);
    responder.apply_policy(&policy);
    adopt_pins(&mut loaded, &mut responder);
    let detector = crate::detect::Detector::new(
        rules.sigma,
        rules.behaviour,
        me,
        hashes,
        hostname.clone(),
        started_ns,
    );
    let incidents = crate::triage::incidents::IncidentBook::new(
        hostname,
        started_ns,
        policy.clone(),
        Some(state.path().join("incidents.json")),
    );
    let mut pipeline = Pipeline::new(
        table,
        graph,
        sink,
        BootClock::now(),
        Box::new(crate::ingest::interpret::ProcResolver),
    )
    .with_env_names(&opts.env_names)
    .with_observer(Detection::new(detector, incidents));
    if let Some(scope) = scope {
        tracing::info!(cgroup = ?opts.scope, "telemetry scoped to a cgroup subtree");
        pipeline = pipeline.with_scope(scope);
    }
    let running = Running {
        state: state.clone(),
        policy,
        policy_path,
        rules_loaded,
        rules_version,
        alerts_raised: 0,
        alert_tally: AlertTally::default(),
        load_failures: control::LoadFailures::default(),
        ring_fill: crate::kernel::ringbuf::RingFill::default(),
        link: None,
        alert_log: crate::triage::alerts::AlertLog::open(&state.path().join("alerts.jsonl"))?,
        forward: opts
            .forward
            .as_ref()
            .map(|(url, queue)| crate::triage::forward::Forwarder::start(url, *queue))
            .transpose()?,
        export: opts
            .alerts_out
            .as_ref()
            .map(|(path, format)| crate::triage::export::AlertExport::open(path, *format))
            .transpose()?,
        responder,
        loaded,
        stats,
        started: Instant::now(),
        ring_buffer_bytes: opts.ring_buffer_bytes,
    };
    Ok((pipeline, running, ring))
}

/// The rules to run (pushed, given, installed or shipped: see [`rule_dirs`]), the directories
/// they came from, and the pushed set's version when that is what runs.
fn rules_in_force(
    opts: &RunOptions,
    state: &StateDir,
) -> Result<
    (
        crate::detect::rules::LoadReport,
        Vec<PathBuf>,
        Option<String>,
    ),
    RunError,
> {
    let pushed_set = pushed_rules(state);
    let rules_version = crate::detect::rules::installed_version(&pushed_set);
    let installed = PathBuf::from(crate::detect::rules::INSTALLED_RULES_DIR);
    let dirs = rule_dirs(
        rules_version.is_some().then_some(pushed_set),
        &opts.rules,
        installed.is_dir().then_some(installed),
    );
    Ok((load_rules(&dirs)?, dirs, rules_version))
}

/// The link to the controller: its task, and the channel the loop sends graph deltas on.
struct Uplink {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    graph: mpsc::Sender<Vec<u8>>,
    /// Deltas the loop could not hand to the task (it was stuck), for the controller to know.
    lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
    controllers: Vec<std::net::SocketAddr>,
    gauges: std::sync::Arc<crate::uplink::LinkGauges>,
}

impl Uplink {
    fn start(
        controllers: Vec<std::net::SocketAddr>,
        opts: &RunOptions,
        state: &StateDir,
        ctrl: mpsc::Sender<control::Envelope>,
    ) -> Self {
        let (graph, rx) = mpsc::channel(GRAPH_CHANNEL);
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let gauges = std::sync::Arc::new(crate::uplink::LinkGauges::default());
        let task = tokio::spawn(crate::uplink::run(
            crate::uplink::UplinkOptions {
                controllers: controllers.clone(),
                token: opts.enroll.clone(),
                state: state.path().to_owned(),
                graph: rx,
                graph_lost: lost.clone(),
                addresses: opts.addresses.clone(),
                gauges: gauges.clone(),
            },
            ctrl,
            stopped,
        ));
        Self {
            stop,
            task,
            graph,
            lost,
            controllers,
            gauges,
        }
    }

    fn send_delta(&self, pipeline: &mut Daemon) {
        send_delta(pipeline, &self.graph, &self.lost);
    }

    /// Sends the graph's last changes (for the spool) and waits, bounded, for the task.
    async fn close(self, pipeline: &mut Daemon) {
        self.send_delta(pipeline);
        let _ = self.stop.send(());
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            tracing::warn!("the uplink did not close in time");
        }
    }
}

/// Moves events from the ring through the pipeline, answers the control socket, and keeps
/// time (ageing, remediations, graph deltas) until SIGINT or SIGTERM. Each turn that takes
/// longer than [`Turn::STALL`] is logged.
async fn event_loop(
    ring: &mut RingReader,
    pipeline: &mut Daemon,
    running: &mut Running,
    mut ctrl_rx: mpsc::Receiver<control::Envelope>,
    uplink: Option<&Uplink>,
    poll_interval: Duration,
) -> Result<(), RunError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| RunError::Signal("SIGINT", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| RunError::Signal("SIGTERM", e))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| RunError::Signal("SIGHUP", e))?;
    let mut tick = tokio::time::interval(TICK);
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks = 0u64;
    let mut watchdog = Watchdog::ready();
    loop {
        // Each turn is timed from the moment its branch fires, not from the wait.
        let turn = tokio::select! {
            ready = ring.wait_ready() => {
                let started = Instant::now();
                ready.map_err(RunError::RingRead)?;
                // Output is flushed on the tick (or when its buffer fills), not per batch.
                ring.drain_now(|bytes| pipeline.ingest(bytes));
                running.record_alerts(pipeline);
                Turn { what: "ring", started }
            }
            Some((req, reply)) = ctrl_rx.recv() => {
                let started = Instant::now();
                // Bring the table up to date before answering about it.
                ring.drain_now(|bytes| pipeline.ingest(bytes));
                pipeline.flush();
                running.ring_fill = ring.fill();
                let _ = reply.send(running.answer(pipeline, req));
                running.record_alerts(pipeline);
                Turn { what: "control request", started }
            }
            _ = poll.tick() => {
                let started = Instant::now();
                ring.drain_now(|bytes| pipeline.ingest(bytes));
                running.record_alerts(pipeline);
                Turn { what: "poll", started }
            }
            _ = tick.tick() => {
                let started = Instant::now();
                ticks += 1;
                ring.drain_now(|bytes| pipeline.ingest(bytes));
                running.on_tick(pipeline, false);
                watchdog.pet();
                if let Some(u) = uplink
                    && ticks.is_multiple_of(GRAPH_DELTA_TICKS)
                {
                    u.send_delta(pipeline);
                }
                Turn { what: "tick", started }
            }
            _ = sighup.recv() => {
                let started = Instant::now();
                // A refused policy is logged; the one in force stays.
                let _ = running.reload_policy(pipeline);
                Turn { what: "policy reload", started }
            }
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
        };
        turn.end();
    }
}

/// The service manager's watchdog (`WatchdogSec=` in the unit, `sd_notify(3)`): petted from
/// the event loop's tick, so a loop that stalls (not only a process that dies) is restarted.
/// Without a service manager asking for it, it does nothing.
struct Watchdog {
    every: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    /// Says the sensor is ready, and reads the watchdog's interval.
    fn ready() -> Self {
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "cannot tell the service manager the sensor is ready");
        }
        let every = sd_notify::watchdog_enabled().map(|timeout| timeout / 2);
        if let Some(e) = every {
            tracing::info!(
                every_ms = e.as_millis() as u64,
                "service manager watchdog on"
            );
        }
        Self {
            every,
            last: Instant::now(),
        }
    }

    fn pet(&mut self) {
        let Some(every) = self.every else { return };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }
}

/// Drains what is left, runs the remediations still waiting for their writer (now, not
/// never), closes the uplink and detaches every program.
async fn shut_down(
    ring: &mut RingReader,
    pipeline: &mut Daemon,
    mut running: Running,
    uplink: Option<Uplink>,
    state: &StateDir,
) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    ring.drain_now(|bytes| pipeline.ingest(bytes));
    running.record_alerts(pipeline);
    running.on_tick(pipeline, true);
    if let Some(u) = uplink {
        u.close(pipeline).await;
    }
    pipeline.flush();
    let _ = std::fs::remove_file(state.control_socket());
    if let Some(pins) = &running.loaded.pins {
        if running.responder.holds_enforcement() {
            tracing::info!(dir = %pins.dir().display(), "enforcement in force stays pinned while no sensor runs");
        } else {
            pins.remove_all();
        }
    }
    tracing::info!("detaching");
    drop(running); // detaches every program that is not pinned
    tracing::info!("detached; vigil-sensor stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn a_pushed_rule_set_wins_then_the_given_dirs_then_the_installed_dir() {
        let given = [p("/a"), p("/b")];
        assert_eq!(
            rule_dirs(Some(p("/pushed")), &given, Some(p("/etc/vigil/rules"))),
            [p("/pushed")]
        );
        assert_eq!(rule_dirs(None, &given, Some(p("/etc/vigil/rules"))), given);
        assert_eq!(
            rule_dirs(None, &[], Some(p("/etc/vigil/rules"))),
            [p("/etc/vigil/rules")]
        );
        assert!(rule_dirs(None, &[], None).is_empty(), "the built-in rules");
    }

    #[test]
    fn a_pushed_policy_wins_unless_it_no_longer_loads() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = StateDir::prepare(d.path()).expect("state");
        let given = d.path().join("given.toml");
        std::fs::write(
            &given,
            crate::policy::DEFAULT_POLICY.replace("version = 1", "version = 7"),
        )
        .expect("write");
        let (policy, from) = policy_in_force(&state, Some(&given)).expect("given");
        assert_eq!(
            (policy.version, from.as_deref()),
            (7, Some(given.as_path()))
        );

        let pushed = pushed_policy(&state);
        std::fs::create_dir_all(pushed.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &pushed,
            crate::policy::DEFAULT_POLICY.replace("version = 1", "version = 9"),
        )
        .expect("write");
        let (policy, from) = policy_in_force(&state, Some(&given)).expect("pushed");
        assert_eq!((policy.version, from), (9, Some(pushed.clone())));

        std::fs::write(&pushed, "version = [").expect("write");
        let (policy, _) = policy_in_force(&state, Some(&given)).expect("falls back");
        assert_eq!(
            policy.version, 7,
            "a pushed policy that no longer loads is passed over"
        );

        let (policy, from) = policy_in_force(&state, None).expect("shipped");
        assert_eq!((policy.version, from), (1, None));
        std::fs::write(&given, "mode = \"sometimes\"").expect("write");
        assert!(
            policy_in_force(&state, Some(&given)).is_err(),
            "a bad given policy stops the start"
        );
    }
}
