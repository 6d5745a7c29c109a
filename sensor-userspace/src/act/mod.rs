//! Response: the decisions of triage turned into actions, each journaled with its reason, its
//! evidence, the policy clause it rests on, its outcome and its undo.
//!
//! A rule names the containment it asks for (`response:` in a behaviour rule). For each alert
//! the responder plans those actions against concrete targets (the alert's process tree, the
//! executed or written file) and, by the incident's decision: contains at once with the
//! actions the policy allows without approval (the others wait for `vigil-sensor approve`),
//! records them as pending (escalate), or records what it would have done (observe mode).
//! [`guard`] refuses whatever is protected; [`kill`], [`vault`], [`persistence`],
//! [`blocklist`] and [`netguard`] carry actions out; [`journal`] keeps them.

pub mod blocklist;
pub mod guard;
pub mod journal;
pub mod kill;
pub mod netguard;
pub mod persistence;
pub mod vault;

use std::path::{Path, PathBuf};

use sensor_common::{
    decode::FileId,
    protocol::{Blocked, FleetBlock},
};

use self::{
    blocklist::Enforcer,
    journal::{
        Journal, JournalError, Record, Settle, State, Status, Target, TreeGroupRef, Undo, Verb,
    },
    netguard::{Endpoint, KernelNetGuard, NetStats},
    persistence::Baseline,
    vault::Vault,
};
use crate::{
    detect::SensorSelf,
    host::cgroup::TreeGroup,
    host::clock::unix_now_ns as now_ns,
    model::events::What,
    model::graph::Graph,
    model::process_table::ProcessKey,
    policy::{Action, Policy},
    triage::Verdict,
    triage::alerts::Alert,
    triage::incidents::Incident,
};

#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot prepare the quarantine vault in {path}: {source}")]
    Vault {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why an action a person asked for (or its undo) did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("no action {0} in the journal")]
    Unknown(String),
    #[error("{0} is itself an undo, approval or denial")]
    Settlement(String),
    #[error("action {id} is not in force ({state:?})")]
    NotInForce { id: String, state: Option<State> },
    #[error("cannot write the journal")]
    Unjournaled,
    /// Journaled, but not done: the record says why (refused, failed, nothing to do).
    #[error("{}", .0.detail)]
    NotDone(Box<Record>),
}

/// What the incident's verdict and the policy make of one planned action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Run,
    /// Observe mode: recorded as what would have been done.
    Observe,
    AwaitApproval,
}

/// The plan for `action` under `verdict`, with the clause of the policy that decided it.
fn plan(verdict: Verdict, action: Action, policy: &Policy) -> (Plan, String) {
    match verdict {
        Verdict::Observe => (Plan::Observe, "mode = observe".to_owned()),
        Verdict::Contain if policy.allows(action) => (
            Plan::Run,
            format!(
                "risk.contain_at {}; actions.without_approval has {}",
                policy.risk.contain_at,
                verb_name(action)
            ),
        ),
        Verdict::Contain => (
            Plan::AwaitApproval,
            format!(
                "risk.contain_at {}; {} is not in actions.without_approval",
                policy.risk.contain_at,
                verb_name(action)
            ),
        ),
        _ => (
            Plan::AwaitApproval,
            format!("risk.escalate_at {}", policy.risk.escalate_at),
        ),
    }
}

/// What the responder needs to know about the world for one decision.
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub incident: &'a Incident,
    pub graph: &'a Graph,
}

/// The second pass of a remediation, once its writer is done. The first runs at once, from
/// the event that raised the alert (an open for writing, a rename into place); a writer that
/// is still writing adds lines after it, or fills the file the first pass moved aside. The
/// second pass removes what was added since (a record of its own, with its own undo) and
/// takes the finished vault copy's hash into the blocked hashes.
struct Deferred {
    record: Record,
    writer: ProcessKey,
    since: std::time::Instant,
}

/// How long a remediation waits for a writer that does not exit.
const REMEDIATE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Responder {
    deferred: Vec<Deferred>,
    journal: Journal,
    enforcer: Box<dyn Enforcer>,
    /// Network containment; None when its programs could not be attached.
    net: Option<KernelNetGuard>,
    /// The cgroup v2 mount, for freezing trees.
    cgroups: Option<PathBuf>,
    /// The controller's addresses (one per replica), kept reachable during isolation.
    controllers: Vec<Endpoint>,
    host: String,
    hashes: crate::detect::BlockedHashes,
    vault: Vault,
    baseline: Baseline,
    me: SensorSelf,
    prefix: String,
    next: u64,
    restored: usize,
    /// Actions that could not be journaled.
    unjournaled: u64,
    /// Enforcement entries another process changed, put back.
    repaired: u64,
    /// When the action [`Responder::execute`] is carrying out took hold, if before its record
    /// (see [`Record::effective_ns`]); taken by the record.
    took_hold_ns: Option<u64>,
}

/// Counters for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResponseStats {
    pub actions: usize,
    pub in_force: usize,
    pub pending: usize,
    /// Blocks re-armed from the journal at start.
    pub restored: usize,
    pub baseline_files: usize,
    pub network: NetStats,
    /// Actions that could not be journaled (a full disk): each was rolled back where it
    /// could be, so nothing stays in force without a record.
    #[serde(default)]
    pub unjournaled: u64,
    /// Entries of the kernel's enforcement maps another process changed, put back.
    #[serde(default)]
    pub repaired: u64,
}

fn verb_name(a: Action) -> &'static str {
    match a {
        Action::Kill => "kill",
        Action::BlockExec => "block_exec",
        Action::Quarantine => "quarantine",
        Action::Remediate => "remediate",
        Action::BlockDestination => "block_destination",
        Action::Freeze => "freeze",
        Action::Isolate => "isolate",
    }
}

/// The file an alert's evidence acted on: the executed file, else the file written. The
/// inode is not taken from the exec event: for a script, the kernel's image is its
/// interpreter, and blocking that would block every script. It is read from the path when
/// the action runs.
fn file_target(alert: &Alert, executable: bool) -> Option<Target> {
    let ev = &alert.finding.evidence;
    // What ran: the script an interpreter was given, else the executable.
    let executed = ev.iter().rev().find_map(|e| match &e.what {
        What::Exec {
            script: Some(script),
            ..
        } => Some(script.path.clone()),
        What::Exec { .. } => e.exe.clone(),
        _ => None,
    });
    if executable && let Some(exe) = executed {
        return Some(Target::File {
            path: exe,
            id: None,
        });
    }
    ev.iter().rev().find_map(|e| match &e.what {
        What::Open { file, .. }
        | What::Chmod { file, .. }
        | What::Rename { to: file, .. }
        | What::Xattr { file, .. }
        | What::SetFlags { file, .. } => Some(Target::File {
            path: file.path.clone()?,
            id: file.id,
        }),
        _ => None,
    })
}

/// The name prefix of the cgroups the response makes for process trees.
const GROUP_PREFIX: &str = "vigil-";

/// The incident of actions a person asked for directly.
pub const MANUAL: &str = "manual";

/// The remote end the alert's processes talked to: the newest of [`remote_endpoints`].
fn destination_target(alert: &Alert, ctx: &Context<'_>) -> Option<Target> {
    let remote = remote_endpoints(alert, ctx).into_iter().next()?;
    Some(Target::Destination {
        dest: Endpoint::from(remote),
        tree: None,
    })
}

/// Every remote endpoint (loopback aside) the alert names or its process and its incident's
/// tree connected to, newest first: the incident's command and control as far as this host
/// saw it, for the controller to block fleet-wide.
pub fn remote_endpoints(alert: &Alert, ctx: &Context<'_>) -> Vec<std::net::SocketAddr> {
    use sensor_common::wire::{EdgeKind, Endpoint as GraphEndpoint, NodeId};
    let outside = |sa: &std::net::SocketAddr| !Endpoint::from(*sa).is_loopback();
    let mut out: Vec<std::net::SocketAddr> = alert
        .finding
        .evidence
        .iter()
        .rev()
        .filter_map(|e| match &e.what {
            What::Connect { net } => net.remote.filter(outside),
            _ => None,
        })
        .collect();
    let me = ProcessKey {
        pid: alert.finding.process.pid,
        start: alert.finding.process.start,
    };
    let tree = ctx.incident.story.tree.iter().map(|p| ProcessKey {
        pid: p.pid,
        start: p.start,
    });
    // The process, whoever first wrote what it runs (a dropper's downloader), its nearest
    // ancestors, and the incident's tree as last read.
    let writer = alert
        .finding
        .process
        .exe
        .as_deref()
        .and_then(|exe| ctx.graph.first_writer(exe));
    let ancestors = alert
        .finding
        .process
        .ancestry
        .iter()
        .take(4)
        .map(|p| ProcessKey {
            pid: p.pid,
            start: p.start,
        });
    for key in std::iter::once(me)
        .chain(writer)
        .chain(ancestors)
        .chain(tree)
    {
        for (_, kind, node, _) in ctx.graph.activity(&key).into_iter().rev() {
            if let (EdgeKind::Connected, NodeId::Endpoint(GraphEndpoint::Inet { addr, .. })) =
                (kind, node)
                && outside(&addr)
                && !out.contains(&addr)
            {
                out.push(addr);
            }
        }
    }
    out
}

/// The identity of the file now at `path`.
fn file_id(path: &str) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// The inode and path blocks an in-force record holds.
fn blocks_of(r: &Record) -> Option<(Option<FileId>, Option<String>)> {
    match &r.undo {
        Undo::Unblock { inode, path } => Some((*inode, path.clone())),
        Undo::Restore { inode, path, .. } => Some((*inode, Some(path.clone()))),
        _ => None,
    }
}

/// Who undoes an action whose time is up.
const EXPIRY: &str = "expiry";

/// Files written here that a fleet hash block looks at when it arrives, at most, and the
/// bytes it hashes in all (it runs on the event loop).
const MAX_PREARMED: usize = 4096;
const MAX_PREARM_BYTES: u64 = 32 << 20;

/// The outcome of an action whose file is already gone.
/// What an executor did, in words, and how to reverse it.
type Outcome = (Status, String, Undo);

fn gone(path: &str) -> Outcome {
    (
        Status::NothingToDo,
        format!("nothing left to do: {path} is gone"),
        Undo::NothingToUndo,
    )
}

impl Responder {
    /// Opens the journal and vault under `state`, scans the persistence baseline, and re-arms
    /// every block still in force: a restart never silently lifts a containment.
    pub fn open(
        state: &Path,
        enforcer: Box<dyn Enforcer>,
        net: Option<KernelNetGuard>,
        hashes: crate::detect::BlockedHashes,
        me: SensorSelf,
        started_ns: u64,
    ) -> Result<Self, ResponseError> {
        let journal = Journal::open(&state.join("actions.jsonl"))?;
        let vault = Vault::open(state).map_err(|source| ResponseError::Vault {
            path: state.join("vault"),
            source,
        })?;
        let next = journal.last_seq();
        let mut r = Self {
            deferred: Vec::new(),
            journal,
            enforcer,
            net,
            cgroups: crate::host::cgroup::mount(),
            controllers: Vec::new(),
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into()),
            hashes,
            vault,
            baseline: Baseline::scan(),
            me,
            prefix: format!("{started_ns:x}"),
            next,
            restored: 0,
            unjournaled: 0,
            repaired: 0,
            took_hold_ns: None,
        };
        let rearm: Vec<(String, Option<FileId>, Option<String>)> = r
            .journal
            .records()
            .iter()
            .filter(|rec| r.journal.state(&rec.id) == Some(State::InForce))
            .filter_map(|rec| blocks_of(rec).map(|(i, p)| (rec.id.clone(), i, p)))
            .collect();
        for rec in r.journal.records() {
            if let Undo::Restore {
                meta,
                vault,
                growing,
                ..
            } = &rec.undo
                && r.journal.state(&rec.id) == Some(State::InForce)
            {
                match growing {
                    // Moved aside while still written: the copy's own hash, as it is now.
                    true => {
                        if let Ok(h) = crate::host::hash::sha256(vault) {
                            r.hashes.insert(&h);
                        }
                    }
                    false => r.hashes.insert(&meta.sha256),
                }
            }
        }
        for rec in r.journal.records() {
            if let Undo::ForgetHash { sha256, files } = &rec.undo
                && r.journal.state(&rec.id) == Some(State::InForce)
            {
                r.hashes.insert(sha256);
                for (inode, path) in files {
                    if r.enforcer.block(Some(*inode), Some(path)).is_ok() {
                        r.restored += 1;
                    }
                }
            }
        }
        for (id, inode, path) in rearm {
            match r.enforcer.block(inode, path.as_deref()) {
                Ok(()) => {
                    r.restored += 1;
                    tracing::info!(action = %id, path = path.as_deref().unwrap_or("?"), "exec block re-armed from the journal");
                }
                Err(e) => tracing::error!(action = %id, error = %e, "cannot re-arm an exec block"),
            }
        }
        r.rearm_network();
        if r.journal.unreadable > 0 {
            tracing::warn!(
                lines = r.journal.unreadable,
                "unreadable lines in the action journal were kept and skipped"
            );
        }
        Ok(r)
    }

    /// Whether anything enforced in the kernel is in force: an exec block, an isolation or a
    /// destination block. While it is, the pins stay when the sensor stops.
    pub fn holds_enforcement(&self) -> bool {
        self.enforcer.holds_any() || self.net.as_ref().is_some_and(KernelNetGuard::in_force)
    }

    /// Compares what is in force in the kernel's maps with what the journal holds, and puts
    /// it right: a block deleted by another process is put back, an entry no action holds is
    /// removed, the isolation switch is rewritten. Each repair is logged as tampering and
    /// counted (`status` actions.repaired).
    pub fn repair_enforcement(&mut self) -> usize {
        let exec = self
            .enforcer
            .restore_missing()
            .and_then(|m| Ok(m + self.enforcer.settle_adopted()?))
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot check the exec blocklist");
                0
            });
        let net = match self.net.as_mut().map(KernelNetGuard::repair) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot check the network guard");
                0
            }
            None => 0,
        };
        // Links made since start (containment attaches its programs only while something is
        // in force) are the sensor's own too: a handle taken on one by id is tampering.
        if let Some(n) = self.net.as_ref() {
            self.me.add_bpf_objects(
                n.link_ids()
                    .into_iter()
                    .map(|id| (crate::host::bpf_objects::ObjectKind::Link, id)),
            );
        }
        if exec + net > 0 {
            tracing::error!(
                exec_blocklist = exec,
                network = net,
                "the kernel's enforcement maps were changed by another process: put back as the journal holds them"
            );
            self.repaired += (exec + net) as u64;
        }
        exec + net
    }

    /// Once the journal is folded over maps adopted from an earlier run, removes from them
    /// what no action holds (a block undone by hand, say, while maps were shared). Returns
    /// how many entries went.
    pub fn settle_adopted(&mut self) -> usize {
        let exec = self.enforcer.settle_adopted().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot settle the adopted exec blocklist");
            0
        });
        let net = match self.net.as_mut().map(KernelNetGuard::settle_adopted) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot settle the adopted network guard");
                0
            }
            None => 0,
        };
        exec + net
    }

    /// The network containment maps, or why there are none.
    fn net(&mut self) -> Result<&mut KernelNetGuard, netguard::NetGuardError> {
        self.net.as_mut().ok_or(netguard::NetGuardError::NotLoaded)
    }

    /// Network containments still in force after a restart: isolation and destination blocks.
    fn rearm_network(&mut self) {
        let held: Vec<(String, Undo)> = self
            .journal
            .records()
            .iter()
            .filter(|rec| self.journal.state(&rec.id) == Some(State::InForce))
            .filter(|rec| matches!(rec.undo, Undo::EndIsolation | Undo::LiftBlock { .. }))
            .map(|rec| (rec.id.clone(), rec.undo.clone()))
            .collect();
        for (id, undo) in held {
            let Some(net) = self.net.as_mut() else {
                tracing::error!(action = %id, "a network containment is in force but the network programs are not loaded: it is NOT enforced");
                continue;
            };
            let done = match &undo {
                Undo::EndIsolation => net.isolate(),
                Undo::LiftBlock { dest, group } => {
                    net.block(dest, group.as_ref().map_or(0, |g| g.id))
                }
                _ => continue,
            };
            match done {
                Ok(()) => {
                    self.restored += 1;
                    tracing::info!(action = %id, "network containment re-armed from the journal");
                }
                Err(e) => {
                    tracing::error!(action = %id, error = %e, "cannot re-arm a network containment")
                }
            }
        }
    }

    /// The controller's replicas stay reachable while the host is isolated.
    pub fn set_controllers(&mut self, addrs: &[std::net::SocketAddr]) {
        self.controllers = addrs.iter().copied().map(Endpoint::from).collect();
    }

    /// Takes a new policy's isolation allow list (loopback and the controller always pass).
    pub fn apply_policy(&mut self, policy: &Policy) {
        let allow: Vec<Endpoint> = self
            .controllers
            .iter()
            .copied()
            .chain(policy.isolation_allow())
            .collect();
        if let Some(net) = self.net.as_mut()
            && let Err(e) = net.set_allow(&allow)
        {
            tracing::error!(error = %e, "cannot set the isolation allow list");
        }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn stats(&self) -> ResponseStats {
        let recs = self.journal.records();
        let count = |s: State| {
            recs.iter()
                .filter(|r| matches!(r.action, Verb::Act(_)) && r.settles.is_none())
                .filter(|r| self.journal.state(&r.id) == Some(s))
                .count()
        };
        ResponseStats {
            actions: recs.len(),
            in_force: count(State::InForce),
            pending: count(State::Pending),
            restored: self.restored,
            unjournaled: self.unjournaled,
            repaired: self.repaired,
            baseline_files: self.baseline.len(),
            network: self
                .net
                .as_ref()
                .map(KernelNetGuard::stats)
                .unwrap_or_default(),
        }
    }

    /// Periodic upkeep: remediations whose writer has finished (or waited long enough) run;
    /// the persistence baseline takes in changes made without an alert.
    /// With `all` (at shutdown), every waiting remediation runs now.
    pub fn tick<'a>(
        &mut self,
        all: bool,
        policy: &Policy,
        incident: impl Fn(&str) -> Option<&'a Incident>,
        graph: &Graph,
    ) -> Vec<Record> {
        let (ready, waiting): (Vec<Deferred>, Vec<Deferred>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|d| all || !kill::alive(&d.writer) || d.since.elapsed() >= REMEDIATE_WAIT);
        self.deferred = waiting;
        let mut out = Vec::new();
        for d in ready {
            out.extend(self.second_pass(d, policy, &incident, graph));
        }
        out.extend(self.expire());
        self.repair_enforcement();
        // Tainted files keep their baseline; the rest take in an administrator's edits.
        self.baseline.refresh();
        out
    }

    fn next_id(&mut self) -> String {
        self.next += 1;
        format!("act-{}-{}", self.prefix, self.next)
    }

    /// Journals an action a person asked for: the record when it was done, else its detail.
    fn append_outcome(&mut self, r: Record) -> Result<Record, ActError> {
        let rec = self.append(r).ok_or(ActError::Unjournaled)?;
        if rec.status == Status::Done {
            Ok(rec)
        } else {
            Err(ActError::NotDone(Box::new(rec)))
        }
    }

    /// Journals `r`. An action that was carried out but cannot be journaled (a full disk) is
    /// rolled back by its undo, so that nothing is in force that the journal does not hold
    /// and no one could undo; one whose undo is impossible (a kill) stands, and the log says
    /// so. Either way it counts in `status` (`unjournaled`).
    fn append(&mut self, r: Record) -> Option<Record> {
        let done_act = matches!(r.action, Verb::Act(_))
            && r.status == Status::Done
            && r.settles.is_none()
            && !matches!(r.undo, Undo::Impossible { .. } | Undo::NothingToUndo);
        let (id, undo) = (r.id.clone(), r.undo.clone());
        match self.journal.append(r) {
            Ok(r) => Some(r.clone()),
            Err(e) => {
                self.unjournaled += 1;
                if done_act {
                    let (status, detail) = self.reverse(&id, &undo);
                    tracing::error!(action = %id, error = %e, rolled_back = ?status, %detail, "cannot journal an action: it was rolled back, so nothing is in force without a record");
                } else {
                    tracing::error!(action = %id, error = %e, "cannot journal an action");
                }
                None
            }
        }
    }

    /// The second pass of a remediation (see [`Deferred`]): a record only when it found
    /// something to do.
    fn second_pass<'a>(
        &mut self,
        d: Deferred,
        policy: &Policy,
        incident: &impl Fn(&str) -> Option<&'a Incident>,
        graph: &Graph,
    ) -> Option<Record> {
        let first = d.record;
        if let Undo::Restore {
            vault,
            growing: true,
            ..
        } = &first.undo
        {
            // The copy the first pass moved aside is complete now: block its hash.
            if let Ok(h) = crate::host::hash::sha256(vault) {
                self.hashes.insert(&h);
            }
        }
        let (Some(inc), Verb::Act(action)) = (incident(&first.incident), first.action) else {
            return None;
        };
        let id = self.next_id();
        let (status, detail, undo) =
            self.execute(&id, action, &first.target, policy, graph, Some(inc));
        let acted = status == Status::Failed || !matches!(undo, Undo::NothingToUndo);
        if !acted {
            return None;
        }
        let rec = Record {
            id,
            time_ns: now_ns(),
            effective_ns: self.took_hold_ns.take(),
            reason: format!("{}; second pass, once its writer was done", first.reason),
            status,
            detail,
            undo,
            ..first
        };
        self.append(rec)
    }

    /// Plans and, as the incident's decision says, carries out what `alert`'s rule asks for.
    pub fn on_alert(&mut self, alert: &Alert, ctx: &Context<'_>) -> Vec<Record> {
        if alert.finding.rule.is_persistence() {
            for e in &alert.finding.entities {
                self.baseline.taint(e);
            }
        }
        let verdict = ctx.incident.decision.verdict;
        let mut out = Vec::new();
        if verdict == Verdict::Record {
            return out;
        }
        for &action in &alert.finding.rule.response {
            let Some(target) = self.target_of(action, alert, ctx) else {
                continue;
            };
            if self.already_planned(&ctx.incident.id, action, &target) {
                continue;
            }
            let (plan, clause) = plan(verdict, action, ctx.policy);
            let record = self.carry_out(plan, clause, action, target, alert, ctx);
            out.extend(self.append(record));
        }
        if verdict == Verdict::Contain {
            out.extend(self.contain_pending(ctx));
        }
        out
    }

    /// What `action` acts on for this alert, if the alert names one.
    fn target_of(&self, action: Action, alert: &Alert, ctx: &Context<'_>) -> Option<Target> {
        let p = &alert.finding.process;
        match action {
            Action::Kill | Action::Freeze => Some(Target::ProcessTree {
                pid: p.pid,
                start: p.start,
                exe: p.exe.clone(),
            }),
            Action::BlockExec | Action::Quarantine => file_target(alert, true),
            Action::Remediate => file_target(alert, false),
            Action::Isolate => Some(Target::Host {
                name: self.host.clone(),
            }),
            Action::BlockDestination => destination_target(alert, ctx),
        }
    }

    /// Whether the incident already has this action on this target: one per target per
    /// incident. A remediation is worth repeating (each one takes out what is there now, and a
    /// later write to the same file is new persistence); one already waiting for approval is
    /// not.
    fn already_planned(&self, incident: &str, action: Action, target: &Target) -> bool {
        let same = |r: &Record| {
            r.incident == incident
                && r.action == Verb::Act(action)
                && r.target == *target
                && r.settles.is_none()
        };
        if action == Action::Remediate {
            self.journal
                .records()
                .iter()
                .any(|r| same(r) && self.journal.state(&r.id) == Some(State::Pending))
        } else {
            self.journal.records().iter().any(same) || self.deferred.iter().any(|d| same(&d.record))
        }
    }

    /// The record of `action` on `target` as `plan` has it: executed, observed, or left
    /// pending approval. A remediation that ran is also deferred for its second pass.
    fn carry_out(
        &mut self,
        plan: Plan,
        policy_clause: String,
        action: Action,
        target: Target,
        alert: &Alert,
        ctx: &Context<'_>,
    ) -> Record {
        let f = &alert.finding;
        let id = self.next_id();
        let (status, detail, undo) = match plan {
            Plan::Run => self.execute(
                &id,
                action,
                &target,
                ctx.policy,
                ctx.graph,
                Some(ctx.incident),
            ),
            Plan::Observe => (
                Status::Observed,
                format!("would {} {target}", verb_name(action)),
                Undo::NothingToUndo,
            ),
            Plan::AwaitApproval => (
                Status::Pending,
                format!("awaits approval: vigil-sensor approve {}", ctx.incident.id),
                Undo::NothingToUndo,
            ),
        };
        let record = Record {
            effective_ns: self.took_hold_ns.take(),
            id,
            time_ns: now_ns(),
            incident: ctx.incident.id.clone(),
            action: Verb::Act(action),
            target,
            reason: format!(
                "{} (rule {}, risk {}): {}",
                f.rule.title,
                f.rule.id.as_deref().unwrap_or("?"),
                alert.risk.score,
                ctx.incident.decision.reason
            ),
            evidence: vec![f.id.clone()],
            policy_clause,
            status,
            detail,
            undo,
            settles: None,
            requested_by: None,
            expires_ns: None,
        };
        if plan == Plan::Run && action == Action::Remediate {
            self.defer_second_pass(&record, alert);
        }
        record
    }

    /// A remediation is done at once, from the event; the writer may still be writing, so a
    /// second pass runs when it is done (see [`Deferred`]). Until then, what the writer adds
    /// is the incident's, not a change for the baseline to take in.
    fn defer_second_pass(&mut self, record: &Record, alert: &Alert) {
        self.deferred.push(Deferred {
            record: record.clone(),
            writer: ProcessKey {
                pid: alert.finding.process.pid,
                start: alert.finding.process.start,
            },
            since: std::time::Instant::now(),
        });
        if let Target::File { path, .. } = &record.target {
            self.baseline.taint(path);
        }
    }

    /// Once an incident is contained, the actions its earlier alerts left pending (when its
    /// risk was lower) run too, as far as the policy allows them without approval.
    fn contain_pending(&mut self, ctx: &Context<'_>) -> Vec<Record> {
        let pending: Vec<Record> = self
            .journal
            .records()
            .iter()
            .filter(|r| r.incident == ctx.incident.id)
            .filter(|r| matches!(r.action, Verb::Act(a) if ctx.policy.allows(a)))
            .filter(|r| self.journal.state(&r.id) == Some(State::Pending))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for p in pending {
            let Verb::Act(action) = p.action else {
                continue;
            };
            let id = self.next_id();
            let (status, detail, undo) = self.execute(
                &id,
                action,
                &p.target,
                ctx.policy,
                ctx.graph,
                Some(ctx.incident),
            );
            let rec = Record {
                effective_ns: self.took_hold_ns.take(),
                id,
                time_ns: now_ns(),
                incident: p.incident.clone(),
                action: p.action,
                target: p.target.clone(),
                reason: format!("{}; the incident is now contained", p.reason),
                evidence: p.evidence.clone(),
                policy_clause: format!(
                    "risk.contain_at {}; actions.without_approval has {}",
                    ctx.policy.risk.contain_at,
                    verb_name(action)
                ),
                status,
                detail,
                undo,
                settles: Some(p.id.clone()),
                requested_by: None,
                expires_ns: None,
            };
            out.extend(self.append(rec));
        }
        out
    }

    /// Carries out one action; returns its outcome and how to reverse it. `incident` is None
    /// for an action a person asked for directly. One executor per action.
    fn execute(
        &mut self,
        id: &str,
        action: Action,
        target: &Target,
        policy: &Policy,
        graph: &Graph,
        incident: Option<&Incident>,
    ) -> Outcome {
        self.took_hold_ns = None;
        match (action, target) {
            (Action::Kill | Action::Freeze, Target::ProcessTree { pid, start, .. }) => {
                self.kill_or_freeze(id, action, (pid, start), policy)
            }
            (Action::BlockExec, Target::File { path, id }) => self.block_exec(path, id, policy),
            (Action::Quarantine, Target::File { path, .. }) => {
                if let Err(r) = guard::path(path, policy, &self.me) {
                    return (Status::Refused, r.to_string(), Undo::NothingToUndo);
                }
                self.quarantine(id, path, file_id(path), false)
            }
            (Action::Remediate, Target::File { path, .. }) => {
                self.remediate(id, path, policy, graph, incident)
            }
            (Action::Isolate, Target::Host { .. }) => self.isolate(),
            (Action::BlockDestination, Target::Destination { dest, tree }) => {
                self.block_destination(id, dest, *tree, policy)
            }
            (a, t) => (
                Status::Failed,
                format!("{} does not apply to {t}", verb_name(a)),
                Undo::NothingToUndo,
            ),
        }
    }

    /// Kill or freeze: the tree is stopped first (SIGSTOP, walking down until no new
    /// member appears), so no child slips out, then killed, or held in a frozen cgroup.
    fn kill_or_freeze(
        &mut self,
        id: &str,
        action: Action,
        (pid, start): (&u32, &u64),
        policy: &Policy,
    ) -> Outcome {
        let refused = |r: guard::Refusal| (Status::Refused, r.to_string(), Undo::NothingToUndo);
        if let Err(r) = guard::process(*pid, policy, &self.me) {
            return refused(r);
        }
        let key = ProcessKey {
            pid: *pid,
            start: *start,
        };
        let me = &self.me;
        let skip = |p: u32| guard::process(p, policy, me).is_err();
        let members = kill::stop_tree(&key, &skip);
        if members.is_empty() {
            return (
                Status::NothingToDo,
                format!("nothing left to do: pid {pid} had already exited"),
                Undo::NothingToUndo,
            );
        }
        if action == Action::Freeze {
            // Held from here: stopped, no member runs or forks.
            self.took_hold_ns = Some(now_ns());
            if let Some(out) = self.freeze_in_cgroup(id, &members) {
                return out;
            }
            let pids: Vec<u32> = members.iter().map(|(p, _)| *p).collect();
            return (
                Status::Done,
                format!("stopped {} processes: {pids:?}", pids.len()),
                Undo::Resume { processes: members },
            );
        }
        let killed = kill::kill_members(&members);
        (
            Status::Done,
            format!(
                "stopped, then killed {} processes: {killed:?}",
                killed.len()
            ),
            Undo::Impossible {
                why: "a killed process cannot be brought back".into(),
            },
        )
    }

    /// Blocks exec of the file (by inode and path) in the kernel.
    fn block_exec(&mut self, path: &String, id: &Option<FileId>, policy: &Policy) -> Outcome {
        let refused = |r: guard::Refusal| (Status::Refused, r.to_string(), Undo::NothingToUndo);
        let failed = |d: String| (Status::Failed, d, Undo::NothingToUndo);
        if let Err(r) = guard::path(path, policy, &self.me) {
            return refused(r);
        }
        let inode = &id.or_else(|| file_id(path));
        if !self.enforcer.enforced() {
            return failed("no kernel programs are loaded to enforce it".into());
        }
        match self.enforcer.block(*inode, Some(path)) {
            Ok(()) => (
                Status::Done,
                format!("exec of {path} is killed in the kernel"),
                Undo::Unblock {
                    inode: *inode,
                    path: Some(path.clone()),
                },
            ),
            Err(e) => failed(e.to_string()),
        }
    }

    /// Takes out what an incident wrote into a persistence file: the lines it added, the
    /// content it changed back to the baseline, or (a file it created) the whole file into
    /// the vault; a write renamed over its target (`sed -i`, editors) remediates the target.
    fn remediate(
        &mut self,
        id: &str,
        path: &String,
        policy: &Policy,
        graph: &Graph,
        incident: Option<&Incident>,
    ) -> Outcome {
        let refused = |r: guard::Refusal| (Status::Refused, r.to_string(), Undo::NothingToUndo);
        let failed = |d: String| (Status::Failed, d, Undo::NothingToUndo);
        if let Err(r) = guard::path(path, policy, &self.me) {
            return refused(r);
        }
        if std::fs::symlink_metadata(path).is_err() {
            // Written aside and renamed over its target (`sed -i`, an editor): the
            // target is what to give back.
            let moved = graph
                .first_writer(path)
                .and_then(|w| graph.renamed_to(&w, path))
                .filter(|to| to != path && std::fs::symlink_metadata(to).is_ok());
            return match moved {
                Some(to) => {
                    let (status, detail, undo) = self.remediate(id, &to, policy, graph, incident);
                    (
                        status,
                        format!("{path} was renamed over {to}: {detail}"),
                        undo,
                    )
                }
                None => gone(path),
            };
        }
        match self.baseline.remedy(path) {
            Some(Ok(persistence::Remedy::Unchanged)) => (
                Status::Done,
                "nothing the incident added remains".into(),
                Undo::NothingToUndo,
            ),
            Some(Ok(persistence::Remedy::Removed(removed))) => (
                Status::Done,
                format!("removed {} line(s) the incident added", removed.len()),
                Undo::PutBack {
                    path: path.clone(),
                    lines: removed,
                },
            ),
            Some(Ok(persistence::Remedy::Reverted {
                previous,
                added,
                missing,
            })) => (
                Status::Done,
                format!(
                    "reverted {path} to what it held before: {added} line(s) the incident wrote out, {missing} it changed or removed back"
                ),
                Undo::WriteBack {
                    path: path.clone(),
                    content: previous,
                },
            ),
            Some(Err(e)) => failed(format!("cannot rewrite {path}: {e}")),
            None => {
                let writer = graph.first_writer(path);
                let created = incident.is_some_and(|inc| {
                    writer.is_some_and(|w| {
                        inc.story
                            .tree
                            .iter()
                            .any(|p| p.pid == w.pid && p.start == w.start)
                            || inc.alerts.iter().any(|a| a.pid == w.pid)
                    })
                });
                if created {
                    let growing = writer.is_some_and(|w| kill::alive(&w));
                    self.quarantine(id, path, file_id(path), growing)
                } else {
                    failed(format!(
                        "no record of what {path} held before, and the incident did not create it: left to a person"
                    ))
                }
            }
        }
    }

    /// Isolates the host: only loopback, the controller and the policy's allowed
    /// destinations stay reachable.
    fn isolate(&mut self) -> Outcome {
        let failed = |d: String| (Status::Failed, d, Undo::NothingToUndo);
        let net = match self.net() {
            Ok(n) => n,
            Err(e) => return failed(e.to_string()),
        };
        match net.isolate() {
            Ok(()) => {
                let allowed: Vec<String> = net.allowed().iter().map(ToString::to_string).collect();
                (
                    Status::Done,
                    format!(
                        "host isolated: only loopback{} is reachable",
                        if allowed.is_empty() {
                            String::new()
                        } else {
                            format!(" and {}", allowed.join(", "))
                        }
                    ),
                    Undo::EndIsolation,
                )
            }
            Err(e) => failed(e.to_string()),
        }
    }

    /// Blocks `dest` host-wide, or for one process tree: the tree moves into a cgroup of its
    /// own (its later children are born there) and the block is scoped to that cgroup.
    fn block_destination(
        &mut self,
        id: &str,
        dest: &Endpoint,
        tree: Option<(u32, u64)>,
        policy: &Policy,
    ) -> (Status, String, Undo) {
        let failed = |d: String| (Status::Failed, d, Undo::NothingToUndo);
        let parent = match self.net() {
            Ok(n) => n.cgroup().to_owned(),
            Err(e) => return failed(e.to_string()),
        };
        let Some((pid, start)) = tree else {
            return match self.net().and_then(|n| n.block(dest, 0)) {
                Ok(()) => (
                    Status::Done,
                    format!("connections to {dest} are refused host-wide"),
                    Undo::LiftBlock {
                        dest: *dest,
                        group: None,
                    },
                ),
                Err(e) => failed(e.to_string()),
            };
        };
        if let Err(r) = guard::process(pid, policy, &self.me) {
            return (Status::Refused, r.to_string(), Undo::NothingToUndo);
        }
        let me = &self.me;
        let skip = |p: u32| guard::process(p, policy, me).is_err();
        let members = kill::stop_tree(&ProcessKey { pid, start }, &skip);
        if members.is_empty() {
            return (
                Status::NothingToDo,
                format!("nothing left to do: pid {pid} had already exited"),
                Undo::NothingToUndo,
            );
        }
        let grouped = self.tree_group(id, &parent, &members);
        kill::resume(&members);
        let group = match grouped {
            Ok(g) => g,
            Err(e) => return failed(format!("cannot make a cgroup for the tree: {e}")),
        };
        match self.net().and_then(|n| n.block(dest, group.id)) {
            Ok(()) => (
                Status::Done,
                format!(
                    "connections to {dest} are refused for the {} processes of the tree (cgroup {})",
                    group.origins.len(),
                    group.path.display()
                ),
                Undo::LiftBlock {
                    dest: *dest,
                    group: Some(group),
                },
            ),
            Err(e) => {
                let _ = self.release_group(id, &group, false);
                failed(e.to_string())
            }
        }
    }

    /// Freezes stopped `members` in a cgroup of their own (cgroup v2 freezer), then lets
    /// their SIGSTOP go: they stay frozen, and children cannot slip out. None when no cgroup
    /// can be made: the caller keeps them stopped instead.
    fn freeze_in_cgroup(&self, id: &str, members: &[(u32, u64)]) -> Option<(Status, String, Undo)> {
        let mount = self.cgroups.as_ref()?;
        let parent = self
            .net
            .as_ref()
            .map_or(mount.to_owned(), |n| n.cgroup().to_owned());
        let group = match self.tree_group(id, &parent, members) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a freezer cgroup; stopping with SIGSTOP instead");
                return None;
            }
        };
        if let Err(e) = TreeGroup::open(group.path.clone()).freeze() {
            tracing::warn!(error = %e, "the cgroup freezer failed; stopping with SIGSTOP instead");
            if group.created {
                let _ = TreeGroup::open(group.path.clone()).dissolve(mount, &group.origins);
            }
            return None;
        }
        kill::resume(members);
        let pids: Vec<u32> = members.iter().map(|(p, _)| *p).collect();
        Some((
            Status::Done,
            format!(
                "froze {} processes in {}: {pids:?}",
                pids.len(),
                group.path.display()
            ),
            Undo::Thaw { group },
        ))
    }

    /// The cgroup that holds the (stopped) tree `members` for action `id`: the response's
    /// group the tree's root is already in, or a new one under `parent` that they move into.
    fn tree_group(
        &self,
        id: &str,
        parent: &Path,
        members: &[(u32, u64)],
    ) -> std::io::Result<TreeGroupRef> {
        let mount = self
            .cgroups
            .as_deref()
            .ok_or_else(|| std::io::Error::other("no cgroup v2 mount"))?;
        let root = members.first().map_or(0, |(p, _)| *p);
        // Only a group one of our own records holds is ours: a foreign `vigil-*` is not.
        let ours: Vec<&Path> = self
            .journal
            .records()
            .iter()
            .filter(|r| self.journal.state(&r.id) == Some(State::InForce))
            .filter_map(|r| match &r.undo {
                Undo::Thaw { group }
                | Undo::LiftBlock {
                    group: Some(group), ..
                } => Some(group.path.as_path()),
                _ => None,
            })
            .collect();
        let (group, created) = match TreeGroup::holding(root, mount, &ours) {
            Some(g) => (g, false),
            None => (
                TreeGroup::create(parent, &format!("{GROUP_PREFIX}{id}"))?,
                true,
            ),
        };
        let pids: Vec<u32> = members.iter().map(|(p, _)| *p).collect();
        let origins = group.adopt(&pids);
        let gid = crate::host::cgroup::id(&group.path)?;
        Ok(TreeGroupRef {
            path: group.path,
            id: gid,
            origins,
            created,
        })
    }

    /// Lets go of the group of action `undone` (a freeze when `thaw`): dissolved when no other
    /// action in force holds it; else thawed only if this was a freeze and no other freeze
    /// holds it; else left as it is (a block's undo never thaws a tree another action froze).
    fn release_group(&self, undone: &str, group: &TreeGroupRef, thaw: bool) -> std::io::Result<()> {
        let g = TreeGroup::open(group.path.clone());
        let others: Vec<&Undo> = self
            .journal
            .records()
            .iter()
            .filter(|r| r.id != undone && self.journal.state(&r.id) == Some(State::InForce))
            .map(|r| &r.undo)
            .filter(|u| match u {
                Undo::Thaw { group: o } | Undo::LiftBlock { group: Some(o), .. } => {
                    o.path == group.path
                }
                _ => false,
            })
            .collect();
        match &self.cgroups {
            Some(mount) if others.is_empty() => g.dissolve(mount, &group.origins),
            _ if thaw && !others.iter().any(|u| matches!(u, Undo::Thaw { .. })) => g.thaw(),
            _ => Ok(()),
        }
    }

    /// Moves `path` into the vault and blocks its exec. `growing`: its writer still holds it
    /// open, so its hash joins the blocked hashes only when the writer is done (see
    /// `Deferred`).
    fn quarantine(
        &mut self,
        id: &str,
        path: &str,
        inode: Option<FileId>,
        growing: bool,
    ) -> (Status, String, Undo) {
        if std::fs::symlink_metadata(path).is_err() {
            return gone(path);
        }
        match self.vault.put(Path::new(path), id) {
            Ok((to, meta)) => {
                if !growing {
                    self.hashes.insert(&meta.sha256);
                }
                let blocked = self.enforcer.block(inode, Some(path));
                let detail = format!(
                    "moved to {} (sha256 {}){}",
                    to.display(),
                    meta.sha256,
                    match blocked {
                        Ok(()) => String::new(),
                        Err(e) => format!("; exec block failed: {e}"),
                    }
                );
                (
                    Status::Done,
                    detail,
                    Undo::Restore {
                        vault: to,
                        path: path.to_owned(),
                        meta,
                        inode,
                        growing,
                    },
                )
            }
            Err(e) => (
                Status::Failed,
                format!("cannot quarantine {path}: {e}"),
                Undo::NothingToUndo,
            ),
        }
    }

    /// Carries out an action a person asked for (`vigil-sensor isolate`, `block`, `freeze`,
    /// or the controller): no approval is needed, the guards still apply.
    pub fn manual(
        &mut self,
        action: Action,
        target: Target,
        who: &str,
        reason: &str,
        policy: &Policy,
        graph: &Graph,
    ) -> Result<Record, ActError> {
        let id = self.next_id();
        let (status, detail, undo) = self.execute(&id, action, &target, policy, graph, None);
        let rec = Record {
            effective_ns: self.took_hold_ns.take(),
            id,
            time_ns: now_ns(),
            incident: MANUAL.into(),
            action: Verb::Act(action),
            target,
            reason: format!("asked by {who}: {reason}"),
            evidence: Vec::new(),
            policy_clause: "asked by a person".into(),
            status,
            detail,
            undo,
            settles: None,
            requested_by: Some(who.to_owned()),
            expires_ns: None,
        };
        self.append_outcome(rec)
    }

    /// For a persistence file the baseline knows: the lines it holds now that it did not
    /// then. None for any other file.
    pub fn persistence_residue(&self, path: &str) -> Option<std::io::Result<Vec<String>>> {
        self.baseline.added(path)
    }

    /// The ids of the actions of kind `action` in force now.
    pub fn in_force(&self, action: Action) -> Vec<String> {
        self.journal
            .records()
            .iter()
            .filter(|r| r.action == Verb::Act(action))
            .filter(|r| self.journal.state(&r.id) == Some(State::InForce))
            .map(|r| r.id.clone())
            .collect()
    }

    /// Target for an isolation of this host.
    pub fn host_target(&self) -> Target {
        Target::Host {
            name: self.host.clone(),
        }
    }

    /// Reverses action `id`. A kill cannot be reversed: that is recorded, and said.
    pub fn undo(&mut self, id: &str, who: &str) -> Result<Record, ActError> {
        let Some(r) = self.journal.get(id).cloned() else {
            return Err(ActError::Unknown(id.to_owned()));
        };
        let state = self.journal.state(id);
        if matches!(r.action, Verb::Settle(_)) {
            return Err(ActError::Settlement(id.to_owned()));
        }
        if state != Some(State::InForce) {
            return Err(ActError::NotInForce {
                id: id.to_owned(),
                state,
            });
        }
        let (status, detail) = self.reverse(id, &r.undo);
        // The operator's word stands: the second pass of what they undid must not redo it.
        self.deferred.retain(|d| d.record.id != id);
        let rec = Record {
            effective_ns: None,
            id: self.next_id(),
            time_ns: now_ns(),
            incident: r.incident.clone(),
            action: Verb::Settle(Settle::Undo),
            target: r.target.clone(),
            reason: format!("undo of {id} asked by {who}"),
            evidence: vec![id.to_owned()],
            policy_clause: String::new(),
            status,
            detail,
            undo: Undo::NothingToUndo,
            settles: Some(id.to_owned()),
            requested_by: Some(who.to_owned()),
            expires_ns: None,
        };
        self.append_outcome(rec)
    }

    /// Carries out one undo, saying how it went. One arm per kind of undo: each reverses
    /// what its action changed, and says what it could not.
    fn reverse(&mut self, id: &str, undo: &Undo) -> (Status, String) {
        match undo {
            Undo::NothingToUndo => (Status::Done, "nothing was changed".to_owned()),
            Undo::Impossible { why } => (Status::Failed, format!("impossible: {why}")),
            Undo::Resume { processes } => {
                let resumed = kill::resume(processes);
                (Status::Done, format!("resumed {resumed:?}"))
            }
            Undo::Unblock { inode, path } => match self.enforcer.unblock(*inode, path.as_deref()) {
                Ok(()) => (Status::Done, "exec block lifted".to_owned()),
                Err(e) => (Status::Failed, e.to_string()),
            },
            Undo::Restore {
                vault,
                path,
                meta,
                inode,
                growing,
            } => {
                let held = if *growing {
                    crate::host::hash::sha256(vault).unwrap_or_else(|_| meta.sha256.clone())
                } else {
                    meta.sha256.clone()
                };
                match Vault::restore(vault, Path::new(path), meta, *growing) {
                    Ok(()) => {
                        self.hashes.remove(&held);
                        let lifted = self.enforcer.unblock(*inode, Some(path));
                        (
                            Status::Done,
                            format!(
                                "{path} restored with its content, owner, mode and times{}",
                                lifted.err().map(|e| format!("; {e}")).unwrap_or_default()
                            ),
                        )
                    }
                    Err(e) => (Status::Failed, format!("cannot restore {path}: {e}")),
                }
            }
            Undo::Thaw { group } => match self.release_group(id, group, true) {
                Ok(()) => (
                    Status::Done,
                    format!("thawed {} processes", group.origins.len()),
                ),
                Err(e) => (
                    Status::Failed,
                    format!("cannot thaw {}: {e}", group.path.display()),
                ),
            },
            Undo::EndIsolation => match self.net().and_then(KernelNetGuard::end_isolation) {
                Ok(()) => (Status::Done, "isolation ended".to_owned()),
                Err(e) => (Status::Failed, e.to_string()),
            },
            Undo::LiftBlock { dest, group } => {
                let scope = group.as_ref().map_or(0, |g| g.id);
                match (self.net().and_then(|n| n.unblock(dest, scope)), group) {
                    (Err(e), _) => (Status::Failed, e.to_string()),
                    (Ok(()), Some(g)) => {
                        let moved = self.release_group(id, g, false);
                        (
                            Status::Done,
                            format!(
                                "block of {dest} lifted{}",
                                moved
                                    .err()
                                    .map(|e| format!("; the tree's cgroup stays: {e}"))
                                    .unwrap_or_default()
                            ),
                        )
                    }
                    (Ok(()), ..) => (Status::Done, format!("block of {dest} lifted")),
                }
            }
            Undo::WriteBack { path, content } => {
                match persistence::write_back(Path::new(path), content) {
                    Ok(()) => {
                        self.baseline.accept(path);
                        (
                            Status::Done,
                            format!("wrote back what {path} held before the remediation"),
                        )
                    }
                    Err(e) => (Status::Failed, format!("cannot rewrite {path}: {e}")),
                }
            }
            Undo::ForgetHash { sha256, files } => {
                self.hashes.remove(sha256);
                let kept: Vec<String> = files
                    .iter()
                    .filter_map(|(inode, path)| {
                        self.enforcer
                            .unblock(Some(*inode), Some(path))
                            .err()
                            .map(|e| format!("{path}: {e}"))
                    })
                    .collect();
                if kept.is_empty() {
                    (
                        Status::Done,
                        format!(
                            "files with SHA-256 {sha256} run again ({} kernel block(s) lifted)",
                            files.len()
                        ),
                    )
                } else {
                    (
                        Status::Failed,
                        format!("the hash is forgotten but blocks stay: {}", kept.join("; ")),
                    )
                }
            }
            Undo::PutBack { path, lines } => match persistence::put_back(Path::new(path), lines) {
                Ok(()) => {
                    self.baseline.accept(path);
                    (
                        Status::Done,
                        format!("put {} line(s) back into {path}", lines.len()),
                    )
                }
                Err(e) => (Status::Failed, format!("cannot rewrite {path}: {e}")),
            },
        }
    }

    /// Puts a fleet block in force (a payload's hash or an endpoint, from an incident on
    /// another host): journaled with that incident, the fleet policy's clause and its expiry,
    /// undone by its undo or when it lapses. The same block of the same incident twice is one
    /// (a resend after a lost answer).
    pub fn fleet_block(
        &mut self,
        block: &FleetBlock,
        who: &str,
        graph: &Graph,
    ) -> Result<Record, ActError> {
        let (action, target) = match &block.what {
            Blocked::Hash { sha256, .. } => (
                Action::BlockExec,
                Target::Hash {
                    sha256: sha256.clone(),
                },
            ),
            Blocked::Destination { addr } => (
                Action::BlockDestination,
                Target::Destination {
                    dest: Endpoint::from(*addr),
                    tree: None,
                },
            ),
        };
        if let Some(held) = self.journal.records().iter().find(|r| {
            r.incident == block.incident
                && r.target == target
                && r.settles.is_none()
                && self.journal.state(&r.id) == Some(State::InForce)
        }) {
            return Ok(held.clone());
        }
        let (status, detail, undo) = match &block.what {
            Blocked::Hash { sha256, size } => self.block_hash(sha256, *size, graph),
            Blocked::Destination { addr } => {
                let dest = Endpoint::from(*addr);
                match self.net().and_then(|n| n.block(&dest, 0)) {
                    Ok(()) => (
                        Status::Done,
                        format!("connections to {dest} are refused host-wide"),
                        Undo::LiftBlock { dest, group: None },
                    ),
                    Err(e) => (Status::Failed, e.to_string(), Undo::NothingToUndo),
                }
            }
        };
        let rec = Record {
            effective_ns: None,
            id: self.next_id(),
            time_ns: now_ns(),
            incident: block.incident.clone(),
            action: Verb::Act(action),
            target,
            reason: format!(
                "fleet block from incident {} on {}: {}",
                block.incident, block.origin_host, block.reason
            ),
            evidence: vec![block.incident.clone()],
            policy_clause: block.clause.clone(),
            status,
            detail,
            undo,
            settles: None,
            requested_by: Some(who.to_owned()),
            expires_ns: Some(block.expires_ns),
        };
        self.append_outcome(rec)
    }

    /// Blocks every file with `sha256`: the files the graph saw written since the sensor
    /// started that have it now are blocked in the kernel (killed at exec before their first
    /// instruction); a copy written later is killed at its exec by the blocklist rule. A file
    /// written before the sensor started is not hashed at exec: the hash sweep finds those.
    fn block_hash(&mut self, sha256: &str, size: Option<u64>, graph: &Graph) -> Outcome {
        if !sensor_common::protocol::is_sha256(sha256) {
            return (
                Status::Refused,
                format!("{sha256:?} is not a SHA-256 (64 lower-case hex digits)"),
                Undo::NothingToUndo,
            );
        }
        self.hashes.insert(sha256);
        let mut files = Vec::new();
        let written = graph
            .file_paths()
            .into_iter()
            .filter(|p| graph.first_writer(p).is_some() && !self.me.owns(p))
            .take(MAX_PREARMED);
        // Bounded: this runs on the event loop. A file of another size cannot be the
        // payload, and no more than MAX_PREARM_BYTES are read in all.
        let mut budget = MAX_PREARM_BYTES;
        for path in written {
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            if !m.is_file() || size.is_some_and(|s| s != m.len()) || m.len() > budget {
                continue;
            }
            budget -= m.len();
            let same = crate::host::hash::sha256(Path::new(&path)).is_ok_and(|h| h == sha256);
            if let (true, Some(inode)) = (same, file_id(&path))
                && self.enforcer.block(Some(inode), Some(&path)).is_ok()
            {
                files.push((inode, path));
            }
        }
        (
            Status::Done,
            format!(
                "exec of any file with SHA-256 {sha256} is killed; {} file(s) written here with it blocked in the kernel",
                files.len()
            ),
            Undo::ForgetHash {
                sha256: sha256.to_owned(),
                files,
            },
        )
    }

    /// Undoes the actions whose time is up (fleet blocks), journaled as undone by expiry.
    fn expire(&mut self) -> Vec<Record> {
        let now = now_ns();
        let due: Vec<String> = self
            .journal
            .records()
            .iter()
            .filter(|r| r.expires_ns.is_some_and(|e| e <= now))
            .filter(|r| self.journal.state(&r.id) == Some(State::InForce))
            .map(|r| r.id.clone())
            .collect();
        due.into_iter()
            .filter_map(|id| match self.undo(&id, EXPIRY) {
                Ok(r) => Some(r),
                Err(ActError::NotDone(r)) => Some(*r),
                Err(e) => {
                    tracing::error!(action = %id, error = %e, "cannot lift an expired block");
                    None
                }
            })
            .collect()
    }

    /// Carries out (approve) or drops (deny) every pending action of `incident`.
    pub fn settle(
        &mut self,
        incident: &Incident,
        approve: bool,
        who: &str,
        policy: &Policy,
        graph: &Graph,
    ) -> Vec<Record> {
        let pending: Vec<Record> = self
            .journal
            .records()
            .iter()
            .filter(|r| r.incident == incident.id)
            .filter(|r| self.journal.state(&r.id) == Some(State::Pending))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for p in pending {
            let id = self.next_id();
            let (action, status, detail, undo) = match (approve, p.action) {
                (true, Verb::Act(a)) => {
                    let (s, d, u) = self.execute(&id, a, &p.target, policy, graph, Some(incident));
                    (Verb::Act(a), s, d, u)
                }
                _ => (
                    Verb::Settle(Settle::Deny),
                    Status::Done,
                    "denied: nothing done".to_owned(),
                    Undo::NothingToUndo,
                ),
            };
            let rec = Record {
                effective_ns: None,
                id,
                time_ns: now_ns(),
                incident: incident.id.clone(),
                action,
                target: p.target.clone(),
                reason: format!(
                    "{} of {} by {who}",
                    if approve { "approval" } else { "denial" },
                    p.id
                ),
                evidence: p.evidence.clone(),
                policy_clause: format!("{} by {who}", if approve { "approved" } else { "denied" }),
                status,
                detail,
                undo,
                settles: Some(p.id.clone()),
                requested_by: Some(who.to_owned()),
                expires_ns: None,
            };
            out.extend(self.append(rec));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::GraphLimits;

    struct Bench {
        dir: tempfile::TempDir,
        responder: Responder,
        policy: Policy,
        graph: Graph,
    }

    /// A responder on a state directory of its own, with the kernel-free enforcer and no
    /// network programs.
    fn bench() -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let responder = Responder::open(
            dir.path(),
            Box::new(blocklist::NoKernel),
            None,
            crate::detect::BlockedHashes::default(),
            SensorSelf::default(),
            1,
        )
        .expect("responder");
        Bench {
            dir,
            responder,
            policy: Policy::shipped().expect("policy"),
            graph: Graph::new("test".into(), GraphLimits::default()),
        }
    }

    impl Bench {
        fn order(&mut self, action: Action, target: Target) -> Result<Record, ActError> {
            self.responder.manual(
                action,
                target,
                "test",
                "a unit test",
                &self.policy,
                &self.graph,
            )
        }
    }

    #[test]
    fn a_quarantined_file_is_in_the_vault_and_its_undo_puts_it_back_as_it_was() {
        use std::os::unix::fs::PermissionsExt as _;
        let mut b = bench();
        let f = b.dir.path().join("payload");
        std::fs::write(&f, b"#!/bin/sh\necho pwned\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        let path = f.to_string_lossy().into_owned();
        let rec = b
            .order(Action::Quarantine, Target::File { path, id: None })
            .expect("quarantined");
        assert_eq!(rec.status, Status::Done);
        assert!(!f.exists(), "the file is gone from where it was");
        let Undo::Restore { vault, .. } = &rec.undo else {
            panic!("a quarantine's undo is a restore: {:?}", rec.undo);
        };
        assert_eq!(
            std::fs::read(vault).expect("vault copy"),
            b"#!/bin/sh\necho pwned\n"
        );

        let undone = b.responder.undo(&rec.id, "test").expect("undo");
        assert_eq!(undone.settles.as_deref(), Some(rec.id.as_str()));
        assert_eq!(std::fs::read(&f).expect("back"), b"#!/bin/sh\necho pwned\n");
        let mode = std::fs::metadata(&f).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o4755, "owner, mode and times come back with it");
        assert_eq!(b.responder.journal().state(&rec.id), Some(State::Undone));
    }

    #[test]
    fn a_killed_tree_is_journaled_as_impossible_to_undo() {
        let mut b = bench();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let start = crate::host::procfs::scan(Path::new("/proc"))
            .into_iter()
            .find(|p| p.pid == pid)
            .map(|p| p.start_ticks)
            .expect("the child in /proc");
        let rec = b
            .order(
                Action::Kill,
                Target::ProcessTree {
                    pid,
                    start,
                    exe: None,
                },
            )
            .expect("killed");
        let status = child.wait().expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(
            matches!(rec.undo, Undo::Impossible { .. }),
            "{:?}",
            rec.undo
        );
        let refused = b.responder.undo(&rec.id, "test");
        assert!(
            matches!(&refused, Err(ActError::NotDone(r)) if r.status == Status::Failed),
            "a kill cannot be undone: {refused:?}"
        );
    }

    #[test]
    fn a_target_already_gone_is_nothing_to_do_and_a_protected_one_is_refused() {
        let mut b = bench();
        let gone = b
            .dir
            .path()
            .join("never-there")
            .to_string_lossy()
            .into_owned();
        let err = b
            .order(
                Action::Remediate,
                Target::File {
                    path: gone,
                    id: None,
                },
            )
            .expect_err("nothing to do is not done");
        assert!(err.to_string().contains("nothing left to do"), "{err}");
        let last = b.responder.journal().records().last().expect("journaled");
        assert_eq!(last.status, Status::NothingToDo);

        let err = b
            .order(
                Action::Quarantine,
                Target::File {
                    path: "/boot/vmlinuz".into(),
                    id: None,
                },
            )
            .expect_err("refused");
        assert!(
            err.to_string().contains("/boot/"),
            "names what protects it: {err}"
        );
        let last = b.responder.journal().records().last().expect("journaled");
        assert_eq!(last.status, Status::Refused);
    }

    #[test]
    fn isolation_without_the_network_programs_fails_and_says_why() {
        let mut b = bench();
        let err = b
            .order(
                Action::Isolate,
                Target::Host {
                    name: "test".into(),
                },
            )
            .expect_err("no programs");
        assert!(err.to_string().contains("not loaded"), "{err}");
    }

    #[test]
    fn the_plan_follows_the_verdict_and_what_runs_without_approval() {
        let policy = Policy::shipped().expect("policy");
        // The shipped policy contains a kill on its own; an isolation waits for a person.
        assert!(policy.allows(Action::Kill) && !policy.allows(Action::Isolate));
        assert_eq!(
            plan(Verdict::Observe, Action::Kill, &policy).0,
            Plan::Observe
        );
        let (run, clause) = plan(Verdict::Contain, Action::Kill, &policy);
        assert_eq!(run, Plan::Run);
        assert!(
            clause.contains("actions.without_approval has kill"),
            "{clause}"
        );
        let (wait, clause) = plan(Verdict::Contain, Action::Isolate, &policy);
        assert_eq!(wait, Plan::AwaitApproval);
        assert!(
            clause.contains("isolate is not in actions.without_approval"),
            "{clause}"
        );
        let (wait, clause) = plan(Verdict::Escalate, Action::Kill, &policy);
        assert_eq!(
            wait,
            Plan::AwaitApproval,
            "an escalation waits for a person"
        );
        assert!(clause.starts_with("risk.escalate_at"), "{clause}");
    }

    #[test]
    fn a_fleet_block_is_journaled_with_its_incident_lapses_at_its_expiry_and_is_one_when_resent() {
        let mut b = bench();
        let sha = "ab".repeat(32);
        let block = FleetBlock {
            incident: "inc-elsewhere-1".into(),
            origin_host: "web-1".into(),
            reason: "a payload seen on web-1".into(),
            clause: "fleet policy: autonomy.block_payloads = true".into(),
            expires_ns: now_ns() + 60_000_000_000,
            what: Blocked::Hash {
                sha256: sha.clone(),
                size: None,
            },
        };
        let rec = b
            .responder
            .fleet_block(&block, "controller", &b.graph)
            .expect("in force");
        assert_eq!(rec.incident, "inc-elsewhere-1");
        assert_eq!(rec.policy_clause, block.clause);
        assert_eq!(
            rec.target,
            Target::Hash {
                sha256: sha.clone()
            }
        );
        assert!(
            b.responder.hashes.contains(&sha),
            "exec of the hash is blocked"
        );
        let again = b
            .responder
            .fleet_block(&block, "controller", &b.graph)
            .expect("a resend");
        assert_eq!(again.id, rec.id, "a resent block is the same record");

        // Its time comes: the next tick lifts it, journaled as undone by expiry.
        let lapsed = FleetBlock {
            incident: "inc-elsewhere-2".into(),
            expires_ns: now_ns().saturating_sub(1),
            what: Blocked::Hash {
                sha256: "cd".repeat(32),
                size: Some(3),
            },
            ..block
        };
        let rec2 = b
            .responder
            .fleet_block(&lapsed, "controller", &b.graph)
            .expect("in force");
        let undone = b.responder.tick(false, &b.policy, |_| None, &b.graph);
        assert!(
            undone
                .iter()
                .any(|r| r.settles.as_deref() == Some(rec2.id.as_str())
                    && r.requested_by.as_deref() == Some(EXPIRY)),
            "{undone:?}"
        );
        assert!(!b.responder.hashes.contains(&"cd".repeat(32)));
        assert!(b.responder.hashes.contains(&sha), "the other one stays");

        let bad = FleetBlock {
            what: Blocked::Hash {
                sha256: "not a hash".into(),
                size: None,
            },
            incident: "inc-3".into(),
            ..lapsed
        };
        assert!(
            b.responder
                .fleet_block(&bad, "controller", &b.graph)
                .is_err()
        );
    }
}
