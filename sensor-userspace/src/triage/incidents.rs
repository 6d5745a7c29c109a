//! Incidents: findings on the same causal chain joined into one, each with its story.
//!
//! A finding's chain is its process and that process's ancestors up to (not including) a
//! session boundary: pid 1, a kernel thread, or a service manager, login or remote-access
//! daemon, cron or a container shim. A finding whose chain shares a process with an open
//! incident's joins it; otherwise it opens a new one. The root cause is the highest process
//! on the chain that has a finding of its own or touched the network (it came in, or went
//! out, over it). The story is read from the graph below the root cause.

use std::path::{Path, PathBuf};

use ahash::{HashSet, HashSetExt};
use sensor_common::wire::{EdgeKind, Endpoint, NodeId};
use serde::{Deserialize, Serialize};

use crate::{
    detect::rules::sigma::rule::Level,
    host::clock::BootClock,
    model::graph::Graph,
    model::process_table::{ProcessKey, ProcessTable},
    policy::Policy,
    triage::alerts::{Alert, Finding},
    triage::{self, Context, Decision},
};

/// Executables that start sessions or services: a causal chain stops below them.
const BOUNDARIES: &[&str] = &[
    "systemd",
    "init",
    "sshd",
    "sshd-session",
    "login",
    "agetty",
    "cron",
    "crond",
    "atd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "tmux: server",
    "screen",
];

/// How many processes and moments a story holds at most.
const MAX_STORY_PROCESSES: usize = 256;
const MAX_TIMELINE: usize = 512;
/// Most incidents kept; the oldest go first.
const MAX_INCIDENTS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
}

/// A process as a story names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoryProcess {
    pub pid: u32,
    pub start: u64,
    pub exe: Option<String>,
    pub cmdline: String,
    pub euid: Option<u32>,
    /// Generations below the root cause.
    pub depth: usize,
    pub exited: bool,
    /// Ids of this process's alerts.
    pub alerts: Vec<String>,
}

/// One moment of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moment {
    pub time_ns: u64,
    pub pid: u32,
    /// `exec`, `wrote`, `connected`... or `alert`.
    pub what: String,
    /// What it was done to, or the alert's rule.
    pub target: String,
    pub ok: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlastRadius {
    pub processes: usize,
    pub files_written: usize,
    pub endpoints: usize,
    /// Effective uids the tree ran as.
    pub users: Vec<u32>,
}

/// What happened, from the root cause down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Story {
    pub root_cause: StoryProcess,
    /// The root cause and its descendants, depth first.
    pub tree: Vec<StoryProcess>,
    pub timeline: Vec<Moment>,
    pub files_written: Vec<String>,
    pub connections: Vec<String>,
    pub children: usize,
    pub blast_radius: BlastRadius,
}

/// An alert as its incident lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub alert: String,
    pub time_ns: u64,
    pub rule_id: Option<String>,
    pub rule: String,
    pub pid: u32,
    pub start: u64,
    pub risk: u8,
}

/// A low-level match (an informational or low Sigma rule) recorded on the graph's process:
/// it raises the risk of the incident it joins, and never alerts or acts alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub time_ns: u64,
    pub rule_id: Option<String>,
    pub rule: String,
    pub author: Option<String>,
    pub pid: u32,
    pub start: u64,
}

/// Signals kept for joining later alerts, and how long.
const MAX_SIGNALS: usize = 4096;
const SIGNAL_WINDOW_NS: u64 = 15 * 60 * 1_000_000_000;

/// What becomes of a finding before triage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    /// An exception of the policy suppresses it (its index there): counted, nothing else.
    Suppressed(usize),
    /// A low-level match: a signal, not an alert.
    Signal,
    /// An alert: triaged, joined to an incident, decided.
    Alert,
}

/// Counts of what the policy's exceptions suppressed, for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionCount {
    pub rule: String,
    pub reason: String,
    pub suppressed: u64,
    pub expired: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub host: String,
    pub status: Status,
    pub opened_ns: u64,
    pub updated_ns: u64,
    /// The highest risk of its alerts.
    pub risk: u8,
    pub severity: Level,
    pub techniques: Vec<String>,
    /// Its first [`MAX_MEMBERS`] alerts.
    pub alerts: Vec<Member>,
    /// Alerts that joined after the first [`MAX_MEMBERS`]: counted (and in the alert log),
    /// not kept here, so a payload retried in a loop cannot make every later alert cost more.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_alerts: u64,
    pub decision: Decision,
    pub story: Story,
    /// Low-level signals on its chains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<Signal>,
    /// Processes on the incident's chains.
    #[serde(skip)]
    chain: HashSet<ProcessKey>,
    /// The root cause's identity.
    pub root: ProcessKey,
    /// The story is older than the last alert.
    #[serde(skip)]
    stale: bool,
}

/// Most alerts an incident lists; the rest are counted (`more_alerts`).
pub const MAX_MEMBERS: usize = 256;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Incident {
    /// Takes in one alert of `actor` whose root cause is `top`: the root moves up when `top`
    /// is above it, the chain is kept (and pinned in the table), and risk, severity and
    /// techniques rise to the alert's. The story is re-read from the graph on the next tick
    /// (or when asked for), off the path from detection to response.
    fn absorb(
        &mut self,
        finding: &Finding,
        actor: ProcessKey,
        top: ProcessKey,
        chain: &[ProcessKey],
        risk: u8,
        table: &mut ProcessTable,
    ) {
        if self.alerts.is_empty() || table.ancestors(&self.root, 64).iter().any(|a| a.key == top) {
            self.root = top;
        }
        for k in chain {
            if self.chain.insert(*k) {
                table.pin(*k);
            }
        }
        if self.alerts.len() < MAX_MEMBERS {
            self.alerts.push(Member {
                alert: finding.id.clone(),
                time_ns: finding.time_ns,
                rule_id: finding.rule.id.clone(),
                rule: finding.rule.title.clone(),
                pid: actor.pid,
                start: actor.start,
                risk,
            });
        } else {
            self.more_alerts += 1;
        }
        self.updated_ns = self.updated_ns.max(finding.time_ns);
        self.risk = self.risk.max(risk);
        self.severity = self.severity.max(finding.rule.severity);
        for t in &finding.rule.technique {
            if !self.techniques.contains(t) {
                self.techniques.push(t.clone());
            }
        }
        self.stale = true;
    }

    fn has_persistence(&self, persistence: &HashSet<String>) -> bool {
        self.alerts.iter().any(|m| persistence.contains(&m.alert))
    }
}

/// The alert's root cause: the highest process on its chain with a finding of the incident
/// or an edge off the host (loopback traffic stays on the host, so it makes no root cause).
fn root_cause(
    inc: &Incident,
    chain: &[ProcessKey],
    actor: ProcessKey,
    graph: &Graph,
) -> ProcessKey {
    chain
        .iter()
        .rev()
        .find(|k| {
            **k == actor
                || graph.off_host(k)
                || inc
                    .alerts
                    .iter()
                    .any(|m| m.pid == k.pid && m.start == k.start)
        })
        .copied()
        .unwrap_or(actor)
}

/// Signals seen on `chain` within [`SIGNAL_WINDOW_NS`] before `now_ns` join the incident.
fn join_signals(
    inc: &mut Incident,
    signals: &std::collections::VecDeque<Signal>,
    chain: &[ProcessKey],
    now_ns: u64,
) {
    let on_chain: Vec<Signal> = signals
        .iter()
        .filter(|s| {
            now_ns.saturating_sub(s.time_ns) <= SIGNAL_WINDOW_NS
                && chain.iter().any(|k| k.pid == s.pid && k.start == s.start)
        })
        .filter(|s| !inc.signals.contains(s))
        .cloned()
        .collect();
    inc.signals.extend(on_chain);
}

/// Every incident of this sensor run, saved to `STATE/incidents.json` on each change.
pub struct IncidentBook {
    incidents: Vec<Incident>,
    host: String,
    id_prefix: String,
    next: u64,
    policy: Policy,
    path: Option<PathBuf>,
    persistence_alerts: HashSet<String>,
    dirty: bool,
    /// Recent signals, oldest first.
    signals: std::collections::VecDeque<Signal>,
    signals_seen: u64,
    /// Matches each of the policy's exceptions suppressed (same order).
    suppressed: Vec<u64>,
    /// Saves `path` off the event loop (None without a path).
    writer: Option<Writer>,
    last_save: Option<std::time::Instant>,
}

impl Drop for IncidentBook {
    /// What changed since the last save is written as the sensor stops (its writer thread,
    /// dropped after this, finishes the write).
    fn drop(&mut self) {
        if self.dirty {
            self.save();
        }
    }
}

/// How often `incidents.json` is written at most.
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn is_boundary(table: &ProcessTable, key: &ProcessKey) -> bool {
    if key.pid <= 1 {
        return true;
    }
    let Some(p) = table.get(key) else {
        return false;
    };
    if p.ppid == 2 || p.key.pid == 2 {
        return true; // kernel threads and what they start
    }
    let name = p.exe.as_deref().map(basename).unwrap_or(p.comm.as_str());
    BOUNDARIES.contains(&name) || BOUNDARIES.contains(&p.comm.as_str())
}

/// `actor` and its ancestors below the first session boundary, nearest first.
fn chain(table: &ProcessTable, actor: ProcessKey) -> Vec<ProcessKey> {
    let mut out = vec![actor];
    for a in table.ancestors(&actor, 64) {
        if is_boundary(table, &a.key) {
            break;
        }
        out.push(a.key);
    }
    out
}

fn endpoint_text(ep: &Endpoint) -> String {
    match ep {
        Endpoint::Inet { protocol, addr } => format!("{protocol} {addr}"),
        Endpoint::Unix { path } => format!("unix {path}"),
    }
}

fn story_process(
    table: &ProcessTable,
    key: ProcessKey,
    depth: usize,
    alerts: &[Member],
) -> StoryProcess {
    let p = table.get(&key);
    StoryProcess {
        pid: key.pid,
        start: key.start,
        exe: p.and_then(|p| p.exe.clone()),
        cmdline: p.map(|p| p.argv.join(" ")).unwrap_or_default(),
        euid: p.map(|p| p.euid),
        depth,
        exited: p.is_none_or(|p| p.exit.is_some()),
        alerts: alerts
            .iter()
            .filter(|m| m.pid == key.pid && m.start == key.start)
            .map(|m| m.alert.clone())
            .collect(),
    }
}

/// Reads the story below `root` from the graph.
// Long by design: the story's parts in the order they are shown: chain, tree, files, connections, timeline.
pub fn story(
    root: ProcessKey,
    alerts: &[Member],
    table: &ProcessTable,
    graph: &Graph,
    clock: &BootClock,
) -> Story {
    // Depth-first tree with depths, from the graph's child links.
    let mut tree = Vec::new();
    let mut stack = vec![(root, 0usize)];
    let mut seen = HashSet::new();
    // Each descendant under its parent, in one pass (a tree of thousands of processes below a
    // long-lived root is read in linear time, not once per process shown).
    let mut children: ahash::HashMap<ProcessKey, Vec<ProcessKey>> = ahash::HashMap::default();
    for c in graph.descendants(&root) {
        if let Some(parent) = table.get(&c).and_then(|p| p.parent) {
            children.entry(parent).or_default().push(c);
        }
    }
    while let Some((k, d)) = stack.pop() {
        if !seen.insert(k) || tree.len() >= MAX_STORY_PROCESSES {
            continue;
        }
        tree.push(story_process(table, k, d, alerts));
        let mut kids = children.remove(&k).unwrap_or_default();
        kids.sort_by_key(|c| std::cmp::Reverse(c.start));
        stack.extend(kids.into_iter().map(|c| (c, d + 1)));
    }
    let (mut files, mut conns, mut users) = (Vec::new(), Vec::new(), Vec::new());
    let mut timeline = Vec::new();
    for sp in &tree {
        let key = ProcessKey {
            pid: sp.pid,
            start: sp.start,
        };
        if let Some(u) = sp.euid
            && !users.contains(&u)
        {
            users.push(u);
        }
        for (boot_ns, kind, to, ok) in graph.activity(&key) {
            let target = match &to {
                NodeId::File(p) => p.clone(),
                NodeId::Endpoint(ep) => endpoint_text(ep),
                NodeId::Process(p) => format!("pid {}", p.pid),
                NodeId::User(u) => format!("uid {u}"),
                NodeId::Host => "host".into(),
            };
            match (kind, ok) {
                (EdgeKind::RanAs, _) => continue,
                (EdgeKind::Wrote | EdgeKind::Created, true) if !files.contains(&target) => {
                    files.push(target.clone());
                }
                (EdgeKind::Connected | EdgeKind::Accepted, true) if !conns.contains(&target) => {
                    conns.push(target.clone());
                }
                _ => {}
            }
            let what = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            timeline.push(Moment {
                time_ns: clock.to_unix_ns(boot_ns),
                pid: sp.pid,
                what,
                target,
                ok,
            });
        }
    }
    for m in alerts {
        timeline.push(Moment {
            time_ns: m.time_ns,
            pid: m.pid,
            what: "alert".into(),
            target: m.rule.clone(),
            ok: true,
        });
    }
    timeline.sort_by_key(|m| m.time_ns);
    if timeline.len() > MAX_TIMELINE {
        let cut = timeline.len() - MAX_TIMELINE;
        timeline.drain(..cut);
    }
    let root_cause = tree
        .first()
        .cloned()
        .unwrap_or_else(|| story_process(table, root, 0, alerts));
    Story {
        children: tree.iter().filter(|p| p.depth == 1).count(),
        blast_radius: BlastRadius {
            processes: tree.len(),
            files_written: files.len(),
            endpoints: conns.len(),
            users,
        },
        root_cause,
        tree,
        timeline,
        files_written: files,
        connections: conns,
    }
}

impl IncidentBook {
    /// The book of this host, with the incidents saved at `path` by earlier runs read back
    /// (so their pending actions can still be approved or denied, and a new incident does
    /// not overwrite them). A file that cannot be read is moved aside, named in the log, and
    /// the sensor starts with none.
    pub fn new(host: String, started_ns: u64, policy: Policy, path: Option<PathBuf>) -> Self {
        let earlier = path
            .as_deref()
            .map(|p| read_back(p, started_ns))
            .unwrap_or_default();
        Self {
            incidents: earlier,
            host,
            id_prefix: format!("{started_ns:x}"),
            next: 0,
            policy,
            persistence_alerts: HashSet::new(),
            dirty: false,
            signals: std::collections::VecDeque::new(),
            signals_seen: 0,
            suppressed: Vec::new(),
            writer: path.clone().map(Writer::spawn),
            path,
            last_save: None,
        }
    }

    /// Whether `finding` is suppressed by an exception, is a signal, or is an alert.
    pub fn screen(&mut self, finding: &Finding) -> Screen {
        let subject = crate::policy::ExceptionSubject {
            rule_id: finding.rule.id.as_deref(),
            rule_title: &finding.rule.title,
            exe: finding.process.exe.as_deref(),
            parent_exe: finding
                .process
                .ancestry
                .first()
                .and_then(|p| p.exe.as_deref()),
            cmdline: &finding.process.cmdline,
            paths: finding.entities.iter().map(String::as_str).collect(),
        };
        let now = i64::try_from(finding.time_ns / 1_000_000_000).unwrap_or(i64::MAX);
        if let Some(ix) = self.policy.exception_for(&subject, now) {
            if self.suppressed.len() < self.policy.exceptions.len() {
                self.suppressed.resize(self.policy.exceptions.len(), 0);
            }
            self.suppressed[ix] += 1;
            return Screen::Suppressed(ix);
        }
        if finding.rule.is_signal_only() {
            Screen::Signal
        } else {
            Screen::Alert
        }
    }

    /// Records a low-level match: kept to raise the risk of alerts on its chain later, and
    /// joined at once to an open incident its chain runs through (whose risk it raises).
    pub fn signal(&mut self, finding: &Finding) {
        let actor = ProcessKey {
            pid: finding.process.pid,
            start: finding.process.start,
        };
        let sig = Signal {
            time_ns: finding.time_ns,
            rule_id: finding.rule.id.clone(),
            rule: finding.rule.title.clone(),
            author: finding.rule.author.clone(),
            pid: actor.pid,
            start: actor.start,
        };
        self.signals_seen += 1;
        while self.signals.len() >= MAX_SIGNALS
            || self
                .signals
                .front()
                .is_some_and(|s| finding.time_ns.saturating_sub(s.time_ns) > SIGNAL_WINDOW_NS)
        {
            self.signals.pop_front();
        }
        self.signals.push_back(sig.clone());
        // Only an incident whose chain runs through the signal's own process: a long-lived
        // ancestor they share (a CI runner, a terminal's shell) does not make the look-around
        // of one child part of another child's incident.
        if let Some(inc) = self
            .incidents
            .iter_mut()
            .find(|i| i.status == Status::Open && i.chain.contains(&actor))
        {
            let new_rule = !inc.signals.iter().any(|s| s.rule == sig.rule);
            inc.signals.push(sig);
            if new_rule && inc.signals.len() <= 3 {
                inc.risk = inc.risk.saturating_add(5).min(100);
                inc.decision = triage::decide(&self.policy, inc.risk);
            }
            inc.updated_ns = inc.updated_ns.max(finding.time_ns);
            self.dirty = true;
        }
    }

    /// Signals recorded since the sensor started.
    pub fn signals_seen(&self) -> u64 {
        self.signals_seen
    }

    /// What each exception of the policy in force suppressed.
    pub fn exception_counts(&self, now_unix: i64) -> Vec<ExceptionCount> {
        self.policy
            .exceptions
            .iter()
            .enumerate()
            .map(|(i, x)| ExceptionCount {
                rule: x.rule.clone(),
                reason: x.reason.clone(),
                suppressed: self.suppressed.get(i).copied().unwrap_or(0),
                expired: x.expires_unix().is_some_and(|t| now_unix >= t),
            })
            .collect()
    }

    pub fn set_policy(&mut self, policy: Policy) {
        if policy.exceptions != self.policy.exceptions {
            self.suppressed.clear();
        }
        self.policy = policy;
    }

    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.incidents.iter().find(|i| i.id == id)
    }

    /// Scores `finding`, joins it to its incident (or opens one), decides, and pins the
    /// incident's processes so its story outlives the retention window.
    pub fn triage(
        &mut self,
        finding: Finding,
        table: &mut ProcessTable,
        graph: &Graph,
        clock: &BootClock,
    ) -> Alert {
        let actor = ProcessKey {
            pid: finding.process.pid,
            start: finding.process.start,
        };
        let chain = chain(table, actor);
        if finding.rule.is_persistence_or_privilege() {
            self.persistence_alerts.insert(finding.id.clone());
        }
        let ix = self.incident_for(&chain, actor, &finding, table, graph, clock);
        let top = root_cause(&self.incidents[ix], &chain, actor, graph);
        let persistence = self.incidents[ix].has_persistence(&self.persistence_alerts);
        join_signals(
            &mut self.incidents[ix],
            &self.signals,
            &chain,
            finding.time_ns,
        );
        let inc = &mut self.incidents[ix];
        // What counts as the same attack for spread and signals: the alert's root cause and
        // what descends from it. Siblings that merely share a long-lived ancestor above it (a
        // CI runner, a terminal's shell) are in the incident but not in this finding's story.
        let related =
            |k: ProcessKey| k == top || table.ancestors(&k, 64).iter().any(|a| a.key == top);
        let spread = inc
            .alerts
            .iter()
            .map(|m| ProcessKey {
                pid: m.pid,
                start: m.start,
            })
            .filter(|k| *k != actor && related(*k))
            .collect::<HashSet<_>>()
            .len();
        let signals = inc
            .signals
            .iter()
            .filter(|s| {
                related(ProcessKey {
                    pid: s.pid,
                    start: s.start,
                })
            })
            .count();
        let risk = triage::score(
            &finding.rule,
            self.policy.asset.criticality,
            &Context {
                privileged: finding.process.euid == 0,
                network_facing: chain.iter().any(|k| graph.network_facing(k)),
                persistence: persistence || finding.rule.is_persistence_or_privilege(),
                spread,
                signals,
            },
        );
        inc.absorb(&finding, actor, top, &chain, risk.score, table);
        inc.decision = triage::decide(&self.policy, inc.risk);
        let alert = Alert {
            incident: inc.id.clone(),
            risk,
            finding,
            payloads: Vec::new(),
            endpoints: Vec::new(),
        };
        // Saved on the next tick, off the path from detection to response.
        self.dirty = true;
        alert
    }

    /// The open incident whose chain shares a process with `chain`, else a new one (the
    /// oldest is dropped past [`MAX_INCIDENTS`]).
    fn incident_for(
        &mut self,
        chain: &[ProcessKey],
        actor: ProcessKey,
        finding: &Finding,
        table: &mut ProcessTable,
        graph: &Graph,
        clock: &BootClock,
    ) -> usize {
        if let Some(ix) = self
            .incidents
            .iter()
            .position(|i| i.status == Status::Open && chain.iter().any(|k| i.chain.contains(k)))
        {
            return ix;
        }
        self.next += 1;
        if self.incidents.len() >= MAX_INCIDENTS {
            let gone = self.incidents.remove(0);
            for k in &gone.chain {
                table.unpin(k);
            }
        }
        let decision = triage::decide(&self.policy, 0);
        self.incidents.push(Incident {
            id: format!("inc-{}-{}", self.id_prefix, self.next),
            host: self.host.clone(),
            status: Status::Open,
            opened_ns: finding.time_ns,
            updated_ns: finding.time_ns,
            risk: 0,
            severity: finding.rule.severity,
            techniques: Vec::new(),
            alerts: Vec::new(),
            more_alerts: 0,
            decision,
            story: story(actor, &[], table, graph, clock),
            signals: Vec::new(),
            chain: HashSet::new(),
            root: actor,
            stale: true,
        });
        self.incidents.len() - 1
    }

    /// Re-reads every open incident's story from the graph (for `incidents`).
    pub fn refresh(&mut self, table: &ProcessTable, graph: &Graph, clock: &BootClock) {
        for inc in &mut self.incidents {
            inc.story = story(inc.root, &inc.alerts, table, graph, clock);
        }
    }

    /// Brings stale stories up to date and saves, if anything changed since the last save.
    pub fn save_if_changed(&mut self, table: &ProcessTable, graph: &Graph, clock: &BootClock) {
        // At most once a second: while alerts stream in, each save's sync would share the
        // file system's commits with the journal's, on the path from detection to response.
        if !self.dirty || self.last_save.is_some_and(|t| t.elapsed() < SAVE_EVERY) {
            return;
        }
        self.dirty = false;
        self.last_save = Some(std::time::Instant::now());
        for inc in self.incidents.iter_mut().filter(|i| i.stale) {
            inc.story = story(inc.root, &inc.alerts, table, graph, clock);
            inc.stale = false;
        }
        self.save();
    }

    /// Writes `STATE/incidents.json` (write, sync, rename: never half a file), on the
    /// writer thread when there is one.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let bytes = match serde_json::to_vec(&self.incidents) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize incidents");
                return;
            }
        };
        let queued = match self.writer.as_ref().and_then(|w| w.tx.as_ref()) {
            Some(tx) => tx.send(bytes),
            None => Err(std::sync::mpsc::SendError(bytes)),
        };
        if let Err(std::sync::mpsc::SendError(bytes)) = queued
            && let Err(e) = write_atomically(path, &bytes)
        {
            tracing::error!(path = %path.display(), error = %e, "cannot save incidents");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut text = Vec::with_capacity(bytes.len() + 1);
    text.extend_from_slice(bytes);
    text.push(b'\n');
    crate::host::durable::write_atomically(path, &text, 0o600, crate::host::durable::Flush::Now)
}

/// Writes `incidents.json` on a thread of its own, so the sync never holds up the event loop
/// between a detection and its response: the newest content wins. Dropping it writes what is
/// still queued and waits for it.
struct Writer {
    tx: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn spawn(path: PathBuf) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("vigil-incidents".into())
            .spawn(move || {
                while let Ok(mut bytes) = rx.recv() {
                    // Only the newest of what queued up meanwhile is worth writing.
                    while let Ok(newer) = rx.try_recv() {
                        bytes = newer;
                    }
                    if let Err(e) = write_atomically(&path, &bytes) {
                        tracing::error!(path = %path.display(), error = %e, "cannot save incidents");
                    }
                }
            })
            .ok();
        Self {
            tx: thread.is_some().then_some(tx),
            thread,
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The incidents saved at `path`; an unreadable file is renamed aside (`.unreadable-<ns>`)
/// rather than overwritten by the next save.
fn read_back(path: &Path, started_ns: u64) -> Vec<Incident> {
    match read(path) {
        Ok(earlier) => {
            if !earlier.is_empty() {
                tracing::info!(path = %path.display(), incidents = earlier.len(), "incidents of earlier runs read back");
            }
            earlier
        }
        Err(e) => {
            let aside = path.with_extension(format!("json.unreadable-{started_ns:x}"));
            match std::fs::rename(path, &aside) {
                Ok(()) => {
                    tracing::error!(path = %path.display(), kept = %aside.display(), error = %e, "the saved incidents cannot be read: kept aside, starting with none")
                }
                Err(re) => {
                    tracing::error!(path = %path.display(), error = %e, rename_error = %re, "the saved incidents cannot be read, nor moved aside")
                }
            }
            Vec::new()
        }
    }
}

/// Reads a saved `incidents.json`.
pub fn read(path: &Path) -> std::io::Result<Vec<Incident>> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// An incident for a person: the story as a tree, then the timeline.
/// One line of the process tree as shown: a process, or uneventful exited helpers folded
/// into a count (the names of their programs, a few).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeRow<'a> {
    Process(&'a StoryProcess),
    Folded {
        depth: usize,
        count: usize,
        names: Vec<String>,
    },
}

/// What a process did that makes it part of the story: anything but being spawned, running
/// its image and running as its user; a write to a device (`2>/dev/null`) is nothing.
fn eventful_pids(story: &Story) -> HashSet<u32> {
    story
        .timeline
        .iter()
        .filter(|m| {
            !matches!(m.what.as_str(), "spawned" | "executed" | "ran_as")
                && !m.target.starts_with("/dev/")
        })
        .map(|m| m.pid)
        .collect()
}

/// The process tree as a person reads it: the chain from the root cause to each process
/// that alerted, acted (wrote, connected, changed something) or still runs, with the
/// exited helpers that did nothing folded under their parent into one count.
pub fn readable_tree(story: &Story) -> Vec<TreeRow<'_>> {
    let eventful = eventful_pids(story);
    let tree = &story.tree;
    // Each process's parent, from the depth-first order and the depths.
    let mut parent = vec![None; tree.len()];
    let mut chain: Vec<usize> = Vec::new();
    for (i, p) in tree.iter().enumerate() {
        chain.truncate(p.depth);
        parent[i] = chain.last().copied();
        chain.push(i);
    }
    let mut keep = vec![false; tree.len()];
    for (i, p) in tree.iter().enumerate() {
        if i == 0 || !p.alerts.is_empty() || !p.exited || eventful.contains(&p.pid) {
            let mut at = Some(i);
            while let Some(k) = at {
                if keep[k] {
                    break;
                }
                keep[k] = true;
                at = parent[k];
            }
        }
    }
    let mut rows = Vec::new();
    let mut i = 0;
    while i < tree.len() {
        if keep[i] {
            rows.push(TreeRow::Process(&tree[i]));
            i += 1;
            continue;
        }
        // A run of folded processes under the same kept ancestor: every one up to the next
        // kept process or the end of that ancestor's subtree.
        let depth = tree[i].depth;
        let (mut count, mut names) = (0, Vec::new());
        while i < tree.len() && !keep[i] && tree[i].depth >= depth {
            count += 1;
            let name = tree[i]
                .exe
                .as_deref()
                .and_then(|e| e.rsplit('/').next())
                .unwrap_or("?")
                .to_owned();
            if names.len() < 4 && !names.contains(&name) {
                names.push(name);
            }
            i += 1;
        }
        rows.push(TreeRow::Folded {
            depth,
            count,
            names,
        });
    }
    rows
}

/// An incident for a person, its process tree folded ([`readable_tree`]).
pub fn render(inc: &Incident) -> String {
    render_with(inc, false)
}

/// An incident for a person; with `full`, every process of its tree.
pub fn render_with(inc: &Incident, full: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "INCIDENT {}  risk {}  {:?}  {}",
        inc.id, inc.risk, inc.severity, inc.host
    );
    let _ = writeln!(
        s,
        "  decision: {:?}: {} (policy v{}, {})",
        inc.decision.verdict, inc.decision.reason, inc.decision.policy_version, inc.decision.clause
    );
    if !inc.techniques.is_empty() {
        let _ = writeln!(s, "  techniques: {}", inc.techniques.join(", "));
    }
    if inc.more_alerts > 0 {
        let _ = writeln!(
            s,
            "  alerts: {} listed, {} more counted (vigil-sensor alerts has every one)",
            inc.alerts.len(),
            inc.more_alerts
        );
    }
    let rc = &inc.story.root_cause;
    let _ = writeln!(
        s,
        "  root cause: pid {} {} {}",
        rc.pid,
        rc.exe.as_deref().unwrap_or("?"),
        rc.cmdline
    );
    let _ = writeln!(s, "  process tree:");
    let rows = if full {
        inc.story.tree.iter().map(TreeRow::Process).collect()
    } else {
        readable_tree(&inc.story)
    };
    for row in rows {
        let p = match row {
            TreeRow::Process(p) => p,
            TreeRow::Folded {
                depth,
                count,
                names,
            } => {
                let _ = writeln!(
                    s,
                    "    {}└─ … {count} exited helper{} that did nothing of note ({}{}); --full shows them",
                    "  ".repeat(depth),
                    if count == 1 { "" } else { "s" },
                    names.join(", "),
                    if count > names.len() { ", …" } else { "" }
                );
                continue;
            }
        };
        let marks: Vec<String> = inc
            .alerts
            .iter()
            .filter(|m| p.alerts.contains(&m.alert))
            .map(|m| format!("[ALERT {}]", m.rule))
            .collect();
        let _ = writeln!(
            s,
            "    {}{}{} {}{} {}",
            "  ".repeat(p.depth),
            if p.depth > 0 { "└─ " } else { "" },
            p.pid,
            if p.cmdline.is_empty() {
                p.exe.as_deref().unwrap_or("?")
            } else {
                &p.cmdline
            },
            if p.exited { " (exited)" } else { "" },
            marks.join(" ")
        );
    }
    let _ = writeln!(s, "  timeline:");
    for m in &inc.story.timeline {
        let secs = m.time_ns / 1_000_000_000;
        let (h, mi, se, ms) = (
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            (m.time_ns / 1_000_000) % 1000,
        );
        let _ = writeln!(
            s,
            "    {h:02}:{mi:02}:{se:02}.{ms:03}Z  pid {:<7} {:<12} {}{}",
            m.pid,
            m.what,
            m.target,
            if m.ok { "" } else { " (failed)" }
        );
    }
    let b = &inc.story.blast_radius;
    let _ = writeln!(
        s,
        "  blast radius: {} processes, {} files written, {} endpoints, uids {:?}",
        b.processes, b.files_written, b.endpoints, b.users
    );
    s
}

#[cfg(test)]
mod tests {
    use sensor_common::decode::testing::task;

    use super::*;
    use crate::{
        detect::rules::behaviour::rule::Confidence,
        model::graph::{Graph, GraphLimits},
        model::process_table::TableLimits,
        triage::alerts::{AlertProcess, RuleRef, RuleSource},
    };

    fn finding(id: &str, pid: u32, start: u64, source: RuleSource, severity: Level) -> Finding {
        Finding {
            id: id.into(),
            time_ns: 1_800_000_000_000_000_000,
            host: "h".into(),
            rule: RuleRef {
                id: Some(format!("rule-{id}")),
                title: format!("Rule {id}"),
                technique: vec!["T1059".into()],
                severity,
                confidence: Confidence::High,
                source,
                author: None,
                tags: vec![],
                response: vec![],
                file: "t.yml".into(),
            },
            process: AlertProcess {
                pid,
                start,
                exe: Some("/usr/bin/bash".into()),
                cmdline: "bash x".into(),
                uid: 1000,
                euid: 1000,
                user: None,
                ancestry: vec![],
            },
            entities: vec!["/tmp/x".into()],
            evidence: vec![],
        }
    }

    /// A shell (pid 10) and its child (pid 11), both started at 1 s.
    fn world() -> (ProcessTable, Graph, ProcessKey, ProcessKey) {
        let mut t = ProcessTable::new(100, TableLimits::default());
        let sh = t.on_fork(&task(10, 1, 1, 0, "bash"));
        let child = t.on_fork(&task(11, 1, 10, 1, "bash"));
        (t, Graph::new("h".into(), GraphLimits::default()), sh, child)
    }

    fn book(policy: Policy) -> IncidentBook {
        IncidentBook::new("h".into(), 1, policy, None)
    }

    #[test]
    fn a_restart_reads_the_incidents_back_and_keeps_an_unreadable_file_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("incidents.json");
        let (mut t, g, _, child) = world();
        let policy = Policy::shipped().expect("policy");
        let first_id = {
            let mut b = IncidentBook::new("h".into(), 1, policy.clone(), Some(path.clone()));
            let f = finding("a", child.pid, child.start, RuleSource::Sigma, Level::High);
            b.triage(f, &mut t, &g, &BootClock::fixed(0));
            b.incidents()[0].id.clone()
        };
        let mut b = IncidentBook::new("h".into(), 2, policy.clone(), Some(path.clone()));
        assert!(
            b.get(&first_id).is_some(),
            "the earlier run's incident is back"
        );
        let f = finding("b", 99, 5, RuleSource::Sigma, Level::High);
        b.triage(f, &mut t, &g, &BootClock::fixed(0));
        drop(b);
        let saved = read(&path).expect("read");
        assert_eq!(
            saved.len(),
            2,
            "the new incident did not overwrite the earlier one"
        );

        std::fs::write(&path, b"[{\"id\": \"torn").expect("corrupt");
        let b = IncidentBook::new("h".into(), 3, policy, Some(path.clone()));
        assert!(b.incidents().is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("unreadable"))
            .collect();
        assert_eq!(
            aside.len(),
            1,
            "the unreadable file is kept aside, not overwritten"
        );
    }

    #[test]
    fn a_payload_retried_in_a_loop_keeps_an_incident_bounded() {
        let (mut t, g, sh, _) = world();
        let mut b = book(Policy::shipped().expect("policy"));
        let clock = BootClock::fixed(0);
        let started = std::time::Instant::now();
        // Each retry is a new child of the same shell: one incident, ever more alerts.
        for i in 0..2_000u32 {
            let child = t.on_fork(&task(100 + i, 1, sh.pid, 1, "payload"));
            let f = finding(
                &format!("a{i}"),
                child.pid,
                child.start,
                RuleSource::Sigma,
                Level::High,
            );
            b.triage(f, &mut t, &g, &clock);
        }
        assert_eq!(b.incidents().len(), 1);
        let inc = &b.incidents()[0];
        assert_eq!(inc.alerts.len(), MAX_MEMBERS);
        assert_eq!(inc.more_alerts, 2_000 - MAX_MEMBERS as u64);
        assert!(render(inc).contains("more counted"));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "triage stays bounded per alert: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn low_sigma_matches_are_signals_that_raise_a_later_alert_on_their_chain() {
        let (mut t, g, sh, child) = world();
        let mut b = book(Policy::shipped().expect("policy"));
        // A low match on the child itself, and one on its parent shell (above the alert's
        // root cause, which is the child: neither has a network edge or another finding).
        let low = finding("a", child.pid, child.start, RuleSource::Sigma, Level::Low);
        assert_eq!(b.screen(&low), Screen::Signal);
        b.signal(&low);
        assert!(b.incidents().is_empty(), "a signal opens no incident");
        let info = finding(
            "b",
            sh.pid,
            sh.start,
            RuleSource::Sigma,
            Level::Informational,
        );
        assert_eq!(b.screen(&info), Screen::Signal);
        b.signal(&info);
        let medium = finding(
            "c",
            child.pid,
            child.start,
            RuleSource::Sigma,
            Level::Medium,
        );
        assert_eq!(b.screen(&medium), Screen::Alert);
        let alert = b.triage(medium, &mut t, &g, &BootClock::fixed(0));
        assert!(
            alert
                .risk
                .factors
                .iter()
                .any(|f| f.name == "low-level signals on the chain" && f.points == 5),
            "only the child's own signal raises it: {:?}",
            alert.risk
        );
        assert_eq!(alert.risk.score, 55);
        assert_eq!(b.incidents()[0].signals.len(), 2, "both are in its story");
        // A later signal of a process on the incident's chain joins it and raises its risk.
        let later = finding("d", child.pid, child.start, RuleSource::Sigma, Level::Low);
        b.signal(&later);
        assert_eq!(b.incidents()[0].signals.len(), 3);
        assert_eq!(b.incidents()[0].risk, 60);
        assert_eq!(b.signals_seen(), 3);
    }

    #[test]
    fn siblings_under_a_long_lived_parent_do_not_raise_each_other() {
        let (mut t, g, sh, child) = world();
        let sibling = t.on_fork(&task(12, 1, 10, 1, "bash"));
        let mut b = book(Policy::shipped().expect("policy"));
        let clock = BootClock::fixed(0);
        let first = b.triage(
            finding(
                "a",
                child.pid,
                child.start,
                RuleSource::Sigma,
                Level::Medium,
            ),
            &mut t,
            &g,
            &clock,
        );
        let noisy = finding(
            "b",
            sibling.pid,
            sibling.start,
            RuleSource::Sigma,
            Level::Low,
        );
        b.signal(&noisy);
        let second = b.triage(
            finding(
                "c",
                sibling.pid,
                sibling.start,
                RuleSource::Sigma,
                Level::Medium,
            ),
            &mut t,
            &g,
            &clock,
        );
        assert_eq!(
            first.incident, second.incident,
            "one incident through the shell {sh:?}"
        );
        assert!(
            !second
                .risk
                .factors
                .iter()
                .any(|f| f.name == "spread to other processes"),
            "the other child is not this finding's spread: {:?}",
            second.risk
        );
        assert!(
            second
                .risk
                .factors
                .iter()
                .any(|f| f.name == "low-level signals on the chain"),
            "its own signal counts: {:?}",
            second.risk
        );
    }

    #[test]
    fn a_behaviour_rule_of_low_severity_still_alerts() {
        let mut b = book(Policy::shipped().expect("policy"));
        let f = finding("a", 10, 1, RuleSource::Behaviour, Level::Low);
        assert_eq!(b.screen(&f), Screen::Alert);
    }

    #[test]
    fn exceptions_suppress_and_count_only_what_they_name() {
        let policy = Policy::parse(
            &format!(
                "{}\n[[exceptions]]\nrule = \"rule-a\"\npath = \"/tmp/*\"\nreason = \"build dir\"\n",
                crate::policy::DEFAULT_POLICY
            ),
            "test",
        )
        .expect("policy");
        let mut b = book(policy);
        let hit = finding("a", 10, 1, RuleSource::Behaviour, Level::High);
        assert_eq!(b.screen(&hit), Screen::Suppressed(0));
        assert_eq!(b.screen(&hit), Screen::Suppressed(0));
        let other = finding("b", 10, 1, RuleSource::Behaviour, Level::High);
        assert_eq!(b.screen(&other), Screen::Alert);
        let mut elsewhere = finding("a", 10, 1, RuleSource::Behaviour, Level::High);
        elsewhere.entities = vec!["/etc/cron.d/x".into()];
        assert_eq!(b.screen(&elsewhere), Screen::Alert);
        let counts = b.exception_counts(0);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].suppressed, 2);
        assert_eq!(counts[0].reason, "build dir");
    }

    #[test]
    fn findings_on_one_chain_join_one_incident() {
        let (mut t, g, sh, child) = world();
        let mut b = book(Policy::shipped().expect("policy"));
        let clock = BootClock::fixed(0);
        let first = b.triage(
            finding("a", sh.pid, sh.start, RuleSource::Behaviour, Level::High),
            &mut t,
            &g,
            &clock,
        );
        let second = b.triage(
            finding(
                "b",
                child.pid,
                child.start,
                RuleSource::Behaviour,
                Level::High,
            ),
            &mut t,
            &g,
            &clock,
        );
        assert_eq!(first.incident, second.incident);
        assert_eq!(b.incidents().len(), 1);
        assert_eq!(b.incidents()[0].alerts.len(), 2);
        assert!(
            second
                .risk
                .factors
                .iter()
                .any(|f| f.name == "spread to other processes"),
            "{:?}",
            second.risk
        );
        let unrelated = b.triage(
            finding("c", 99, 9, RuleSource::Behaviour, Level::High),
            &mut t,
            &g,
            &clock,
        );
        assert_ne!(unrelated.incident, first.incident);
    }

    #[test]
    fn the_root_cause_moves_up_to_an_ancestor_with_a_finding_of_its_own() {
        let (mut t, g, sh, child) = world();
        let mut b = book(Policy::shipped().expect("policy"));
        let clock = BootClock::fixed(0);
        let low =
            |id, k: ProcessKey| finding(id, k.pid, k.start, RuleSource::Behaviour, Level::High);
        b.triage(low("a", child), &mut t, &g, &clock);
        assert_eq!(
            b.incidents()[0].root,
            child,
            "the first alert's process is the root"
        );
        b.triage(low("b", sh), &mut t, &g, &clock);
        let inc = &b.incidents()[0];
        assert_eq!(
            inc.root, sh,
            "the parent with its own finding becomes the root"
        );
        assert!(inc.chain.contains(&sh) && inc.chain.contains(&child));
        assert_eq!(
            inc.techniques,
            vec!["T1059".to_owned()],
            "a technique is kept once"
        );
        assert_eq!(inc.alerts.len(), 2);
    }

    #[test]
    fn exited_helpers_that_did_nothing_fold_into_a_count_and_the_chain_to_what_acted_stays() {
        let proc_ =
            |pid: u32, exe: &str, depth: usize, exited: bool, alerts: &[&str]| StoryProcess {
                pid,
                start: u64::from(pid),
                exe: Some(exe.into()),
                cmdline: exe.into(),
                euid: Some(1000),
                depth,
                exited,
                alerts: alerts.iter().map(|a| (*a).to_owned()).collect(),
            };
        let moment = |pid: u32, what: &str, target: &str| Moment {
            time_ns: 1,
            pid,
            what: what.into(),
            target: target.into(),
            ok: true,
        };
        // A login shell runs `python` through a pyenv shim: forty helpers, then python,
        // which connects out and runs curl.
        let mut tree = vec![
            proc_(100, "/usr/bin/bash", 0, false, &[]),
            proc_(101, "/usr/bin/bash", 1, true, &[]),
        ];
        let helpers = [
            "/usr/libexec/pyenv-exec",
            "/usr/libexec/pyenv-hooks",
            "/usr/bin/readlink",
        ];
        for i in 0..40u32 {
            tree.push(proc_(200 + i, helpers[i as usize % 3], 2, true, &[]));
        }
        tree.push(proc_(300, "/usr/bin/python3.12", 2, true, &["a1"]));
        tree.push(proc_(301, "/usr/bin/curl", 3, true, &[]));
        let mut timeline = vec![
            moment(300, "connected", "203.0.113.7:4444"),
            moment(301, "wrote", "/tmp/stage2"),
            moment(205, "wrote", "/dev/null"),
        ];
        timeline.extend((200..240).map(|p| moment(p, "executed", "/usr/bin/readlink")));
        let story = Story {
            root_cause: tree[0].clone(),
            tree,
            timeline,
            files_written: vec![],
            connections: vec![],
            children: 1,
            blast_radius: BlastRadius::default(),
        };
        let rows = readable_tree(&story);
        let shown: Vec<String> = rows
            .iter()
            .map(|r| match r {
                TreeRow::Process(p) => p.pid.to_string(),
                TreeRow::Folded { count, .. } => format!("+{count}"),
            })
            .collect();
        assert_eq!(shown, ["100", "101", "+40", "300", "301"]);
        let TreeRow::Folded { depth, names, .. } = &rows[2] else {
            panic!("{rows:?}");
        };
        assert_eq!(*depth, 2);
        assert_eq!(names, &["pyenv-exec", "pyenv-hooks", "readlink"]);
        // The full tree is still there for whoever opens it.
        assert_eq!(story.tree.len(), 44);
    }
}
