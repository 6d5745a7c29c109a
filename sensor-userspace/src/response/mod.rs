//! Response: the decisions of triage turned into actions, each journaled with its reason, its
//! evidence, the policy clause it rests on, its outcome and its undo.
//!
//! A rule names the containment it asks for (`response:` in a behaviour rule). For each alert
//! the responder plans those actions against concrete targets (the alert's process tree, the
//! executed or written file) and, by the incident's decision: contains at once with the
//! actions the policy allows without approval (the others wait for `vigil-sensor approve`),
//! records them as pending (escalate), or records what it would have done (observe mode).
//! [`guard`] refuses whatever is protected; [`kill`], [`vault`], [`persistence`] and
//! [`blocklist`] carry actions out; [`journal`] keeps them.

pub mod blocklist;
pub mod guard;
pub mod journal;
pub mod kill;
pub mod persistence;
pub mod vault;

use std::path::{Path, PathBuf};

use sensor_common::decode::FileId;

use self::{
    blocklist::Enforcer,
    journal::{Journal, JournalError, Record, Settle, State, Status, Target, Undo, Verb},
    persistence::Baseline,
    vault::Vault,
};
use crate::{
    alerts::Alert,
    detect::SensorSelf,
    events::What,
    graph::Graph,
    incidents::Incident,
    policy::{Action, Policy},
    process_table::ProcessKey,
    triage::Verdict,
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

/// What the responder needs to know about the world for one decision.
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub incident: &'a Incident,
    pub graph: &'a Graph,
}

/// A remediation waiting for its writer to finish: the alert comes from the open, and the
/// lines it will write may not be there yet.
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
    hashes: crate::detect::BlockedHashes,
    vault: Vault,
    baseline: Baseline,
    me: SensorSelf,
    prefix: String,
    next: u64,
    restored: usize,
}

/// Counters for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResponseStats {
    pub actions: usize,
    pub in_force: usize,
    pub pending: usize,
    /// Blocks re-armed from the journal at start.
    pub restored: usize,
    pub baseline_files: usize,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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
    let executed = ev.iter().rev().find_map(|e| match &e.what {
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
        What::Open { file, .. } | What::Chmod { file, .. } | What::Rename { to: file, .. } => {
            Some(Target::File {
                path: file.path.clone()?,
                id: file.id,
            })
        }
        _ => None,
    })
}

/// The inode and path blocks an in-force record holds.
/// The identity of the file now at `path`.
fn file_id(path: &str) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

fn blocks_of(r: &Record) -> Option<(Option<FileId>, Option<String>)> {
    match &r.undo {
        Undo::Unblock { inode, path } => Some((*inode, path.clone())),
        Undo::Restore { inode, path, .. } => Some((*inode, Some(path.clone()))),
        _ => None,
    }
}

impl Responder {
    /// Opens the journal and vault under `state`, scans the persistence baseline, and re-arms
    /// every block still in force: a restart never silently lifts a containment.
    pub fn open(
        state: &Path,
        enforcer: Box<dyn Enforcer>,
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
            hashes,
            vault,
            baseline: Baseline::scan(),
            me,
            prefix: format!("{started_ns:x}"),
            next,
            restored: 0,
        };
        let rearm: Vec<(String, Option<FileId>, Option<String>)> = r
            .journal
            .records()
            .iter()
            .filter(|rec| r.journal.state(&rec.id) == Some(State::InForce))
            .filter_map(|rec| blocks_of(rec).map(|(i, p)| (rec.id.clone(), i, p)))
            .collect();
        for rec in r.journal.records() {
            if let Undo::Restore { meta, .. } = &rec.undo
                && r.journal.state(&rec.id) == Some(State::InForce)
            {
                r.hashes.insert(&meta.sha256);
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
        if r.journal.unreadable > 0 {
            tracing::warn!(
                lines = r.journal.unreadable,
                "unreadable lines in the action journal were kept and skipped"
            );
        }
        Ok(r)
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
            baseline_files: self.baseline.len(),
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
            let mut rec = d.record;
            match (incident(&rec.incident), rec.action) {
                (Some(inc), Verb::Act(action)) => {
                    let ctx = Context {
                        policy,
                        incident: inc,
                        graph,
                    };
                    let (status, detail, undo) = self.execute(&rec.id, action, &rec.target, &ctx);
                    (rec.status, rec.detail, rec.undo) = (status, detail, undo);
                }
                _ => {
                    rec.status = Status::Failed;
                    rec.detail = "the incident is gone".into();
                }
            }
            rec.time_ns = now_ns();
            out.extend(self.append(rec));
        }
        // Tainted files keep their baseline; the rest take in an administrator's edits.
        self.baseline.refresh();
        out
    }

    fn next_id(&mut self) -> String {
        self.next += 1;
        format!("act-{}-{}", self.prefix, self.next)
    }

    fn append(&mut self, r: Record) -> Option<Record> {
        match self.journal.append(r) {
            Ok(r) => Some(r.clone()),
            Err(e) => {
                tracing::error!(error = %e, "cannot journal an action");
                None
            }
        }
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
        let f = &alert.finding;
        for &action in &f.rule.response {
            let target = match action {
                Action::Kill | Action::Freeze => Some(Target::ProcessTree {
                    pid: f.process.pid,
                    start: f.process.start,
                    exe: f.process.exe.clone(),
                }),
                Action::BlockExec | Action::Quarantine => file_target(alert, true),
                Action::Remediate => file_target(alert, false),
                Action::Isolate | Action::BlockDestination => None,
            };
            let Some(target) = target else {
                continue;
            };
            // One action per target per incident.
            let same = |r: &Record| {
                r.incident == ctx.incident.id
                    && r.action == Verb::Act(action)
                    && r.target == target
                    && r.settles.is_none()
            };
            let seen = self.journal.records().iter().any(same)
                || self.deferred.iter().any(|d| same(&d.record));
            if seen {
                continue;
            }
            let allowed = ctx.policy.allows(action);
            let (clause, run) = match verdict {
                Verdict::Observe => ("mode = observe".to_owned(), false),
                Verdict::Contain if allowed => (
                    format!(
                        "risk.contain_at {}; actions.without_approval has {}",
                        ctx.policy.risk.contain_at,
                        verb_name(action)
                    ),
                    true,
                ),
                Verdict::Contain => (
                    format!(
                        "risk.contain_at {}; {} is not in actions.without_approval",
                        ctx.policy.risk.contain_at,
                        verb_name(action)
                    ),
                    false,
                ),
                _ => (
                    format!("risk.escalate_at {}", ctx.policy.risk.escalate_at),
                    false,
                ),
            };
            let id = self.next_id();
            let reason = format!(
                "{} (rule {}, risk {}): {}",
                f.rule.title,
                f.rule.id.as_deref().unwrap_or("?"),
                alert.risk.score,
                ctx.incident.decision.reason
            );
            let (status, detail, undo) = if run && action == Action::Remediate {
                // Deferred to the tick once the writer is done: see `Deferred`.
                (Status::Done, String::new(), Undo::NothingToUndo)
            } else if run {
                self.execute(&id, action, &target, ctx)
            } else if verdict == Verdict::Observe {
                (
                    Status::Observed,
                    format!("would {} {target}", verb_name(action)),
                    Undo::NothingToUndo,
                )
            } else {
                (
                    Status::Pending,
                    format!("awaits approval: vigil-sensor approve {}", ctx.incident.id),
                    Undo::NothingToUndo,
                )
            };
            let record = Record {
                id,
                time_ns: now_ns(),
                incident: ctx.incident.id.clone(),
                action: Verb::Act(action),
                target,
                reason,
                evidence: vec![f.id.clone()],
                policy_clause: clause,
                status,
                detail,
                undo,
                settles: None,
                requested_by: None,
            };
            if run && action == Action::Remediate {
                self.deferred.push(Deferred {
                    record,
                    writer: ProcessKey {
                        pid: f.process.pid,
                        start: f.process.start,
                    },
                    since: std::time::Instant::now(),
                });
                continue;
            }
            out.extend(self.append(record));
        }
        if verdict == Verdict::Contain {
            out.extend(self.contain_pending(ctx));
        }
        out
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
            let (status, detail, undo) = self.execute(&id, action, &p.target, ctx);
            let rec = Record {
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
            };
            out.extend(self.append(rec));
        }
        out
    }

    /// Carries out one action; returns its outcome and how to reverse it.
    fn execute(
        &mut self,
        id: &str,
        action: Action,
        target: &Target,
        ctx: &Context<'_>,
    ) -> (Status, String, Undo) {
        let refused = |r: guard::Refusal| (Status::Refused, r.to_string(), Undo::NothingToUndo);
        let failed = |d: String| (Status::Failed, d, Undo::NothingToUndo);
        match (action, target) {
            (Action::Kill | Action::Freeze, Target::ProcessTree { pid, start, .. }) => {
                if let Err(r) = guard::process(*pid, ctx.policy, &self.me) {
                    return refused(r);
                }
                let key = ProcessKey {
                    pid: *pid,
                    start: *start,
                };
                let (policy, me) = (ctx.policy, &self.me);
                let skip = |p: u32| guard::process(p, policy, me).is_err();
                let members = kill::stop_tree(&key, &skip);
                if members.is_empty() {
                    return (
                        Status::Done,
                        format!("pid {pid} had already exited"),
                        Undo::NothingToUndo,
                    );
                }
                if action == Action::Freeze {
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
            (Action::BlockExec, Target::File { path, id }) => {
                if let Err(r) = guard::path(path, ctx.policy, &self.me) {
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
                    Err(e) => failed(e),
                }
            }
            (Action::Quarantine, Target::File { path, .. }) => {
                if let Err(r) = guard::path(path, ctx.policy, &self.me) {
                    return refused(r);
                }
                self.quarantine(id, path, file_id(path))
            }
            (Action::Remediate, Target::File { path, .. }) => {
                if let Err(r) = guard::path(path, ctx.policy, &self.me) {
                    return refused(r);
                }
                match self.baseline.strip(path) {
                    Some(Ok(removed)) if removed.is_empty() => (
                        Status::Done,
                        "nothing the incident added remains".into(),
                        Undo::NothingToUndo,
                    ),
                    Some(Ok(removed)) => (
                        Status::Done,
                        format!("removed {} line(s) the incident added", removed.len()),
                        Undo::PutBack {
                            path: path.clone(),
                            lines: removed,
                        },
                    ),
                    Some(Err(e)) => failed(format!("cannot rewrite {path}: {e}")),
                    None => {
                        let created = ctx.graph.first_writer(path).is_some_and(|w| {
                            ctx.incident
                                .story
                                .tree
                                .iter()
                                .any(|p| p.pid == w.pid && p.start == w.start)
                                || ctx.incident.alerts.iter().any(|a| a.pid == w.pid)
                        });
                        if created {
                            self.quarantine(id, path, file_id(path))
                        } else {
                            failed(format!(
                                "no record of what {path} held before, and the incident did not create it: left to a person"
                            ))
                        }
                    }
                }
            }
            (a, _) => failed(format!("{} is not available in this build", verb_name(a))),
        }
    }

    fn quarantine(
        &mut self,
        id: &str,
        path: &str,
        inode: Option<FileId>,
    ) -> (Status, String, Undo) {
        match self.vault.put(Path::new(path), id) {
            Ok((to, meta)) => {
                self.hashes.insert(&meta.sha256);
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

    /// Reverses action `id`. A kill cannot be reversed: that is recorded, and said.
    pub fn undo(&mut self, id: &str, who: &str) -> Result<Record, String> {
        let Some(r) = self.journal.get(id).cloned() else {
            return Err(format!("no action {id} in the journal"));
        };
        let state = self.journal.state(id);
        if matches!(r.action, Verb::Settle(_)) {
            return Err(format!("{id} is itself an undo, approval or denial"));
        }
        if state != Some(State::InForce) {
            return Err(format!("action {id} is not in force ({state:?})"));
        }
        let (status, detail) = match &r.undo {
            Undo::NothingToUndo => (Status::Done, "nothing was changed".to_owned()),
            Undo::Impossible { why } => (Status::Failed, format!("impossible: {why}")),
            Undo::Resume { processes } => {
                let resumed = kill::resume(processes);
                (Status::Done, format!("resumed {resumed:?}"))
            }
            Undo::Unblock { inode, path } => match self.enforcer.unblock(*inode, path.as_deref()) {
                Ok(()) => (Status::Done, "exec block lifted".to_owned()),
                Err(e) => (Status::Failed, e),
            },
            Undo::Restore {
                vault,
                path,
                meta,
                inode,
            } => match Vault::restore(vault, Path::new(path), meta) {
                Ok(()) => {
                    self.hashes.remove(&meta.sha256);
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
            },
            Undo::PutBack { path, lines } => match persistence::put_back(Path::new(path), lines) {
                Ok(()) => (
                    Status::Done,
                    format!("put {} line(s) back into {path}", lines.len()),
                ),
                Err(e) => (Status::Failed, format!("cannot rewrite {path}: {e}")),
            },
        };
        let rec = Record {
            id: self.next_id(),
            time_ns: now_ns(),
            incident: r.incident.clone(),
            action: Verb::Settle(Settle::Undo),
            target: r.target.clone(),
            reason: format!("undo of {id} asked by {who}"),
            evidence: vec![id.to_owned()],
            policy_clause: String::new(),
            status,
            detail: detail.clone(),
            undo: Undo::NothingToUndo,
            settles: Some(id.to_owned()),
            requested_by: Some(who.to_owned()),
        };
        let rec = self.append(rec).ok_or("cannot write the journal")?;
        if status == Status::Done {
            Ok(rec)
        } else {
            Err(detail)
        }
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
        let ctx = Context {
            policy,
            incident,
            graph,
        };
        let mut out = Vec::new();
        for p in pending {
            let id = self.next_id();
            let (action, status, detail, undo) = match (approve, p.action) {
                (true, Verb::Act(a)) => {
                    let (s, d, u) = self.execute(&id, a, &p.target, &ctx);
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
                policy_clause: "approved by a person".into(),
                status,
                detail,
                undo,
                settles: Some(p.id.clone()),
                requested_by: Some(who.to_owned()),
            };
            out.extend(self.append(rec));
        }
        out
    }
}
