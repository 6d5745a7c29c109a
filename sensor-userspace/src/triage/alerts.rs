//! Alerts: what a rule matched, with the process, its lineage and the evidence, appended as
//! JSON lines to `STATE/alerts.jsonl` (synced off the event loop) for people and log shippers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    detect::rules::{
        BehaviourRule,
        behaviour::rule::Confidence,
        sigma::{SigmaRule, rule::Level},
    },
    model::events::{Event, ProcessRef},
    triage::Risk,
};

/// Where a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    Sigma,
    Behaviour,
}

/// The rule that fired. For Sigma rules, `author` and `id` are kept: the Detection Rule
/// License asks that matches credit the rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub id: Option<String>,
    pub title: String,
    pub technique: Vec<String>,
    pub severity: Level,
    pub confidence: Confidence,
    pub source: RuleSource,
    pub author: Option<String>,
    /// Tactic and free tags (`persistence`, `attack.persistence`...), which triage reads.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The containment the rule asks for.
    #[serde(default)]
    pub response: Vec<crate::policy::Action>,
    pub file: String,
}

impl RuleRef {
    /// Whether the rule is about persistence.
    pub fn is_persistence(&self) -> bool {
        self.tags
            .iter()
            .any(|t| t == "persistence" || t == "attack.persistence")
    }

    /// Persistence, or a change of privilege (`privilege_escalation`): what outlives the
    /// moment or widens what the attacker can do, and so raises an incident's risk.
    pub fn is_persistence_or_privilege(&self) -> bool {
        self.is_persistence()
            || self.tags.iter().any(|t| {
                t == "privilege_escalation"
                    || t == "attack.privilege-escalation"
                    || t == "attack.privilege_escalation"
            })
    }

    /// A Sigma rule of level informational or low: its matches are signals that raise the
    /// risk of the incident they join, never alerts of their own.
    pub fn is_signal_only(&self) -> bool {
        self.source == RuleSource::Sigma
            && matches!(
                self.severity,
                crate::detect::rules::sigma::rule::Level::Informational
                    | crate::detect::rules::sigma::rule::Level::Low
            )
    }
}

impl From<&SigmaRule> for RuleRef {
    fn from(r: &SigmaRule) -> Self {
        Self {
            id: r.id.clone(),
            title: r.title.clone(),
            technique: r.techniques(),
            severity: r.level,
            // Public rules are written for many environments: a match is a lead, not proof.
            confidence: Confidence::Medium,
            source: RuleSource::Sigma,
            author: r.author.clone(),
            tags: r
                .tags
                .iter()
                .filter(|t| !t.starts_with("attack.t"))
                .cloned()
                .collect(),
            // Public rules ask for nothing: their incidents escalate or are recorded.
            response: Vec::new(),
            file: r.file.display().to_string(),
        }
    }
}

impl From<&BehaviourRule> for RuleRef {
    fn from(r: &BehaviourRule) -> Self {
        Self {
            id: Some(r.id.clone()),
            title: r.title.clone(),
            technique: r.techniques.clone(),
            severity: r.severity,
            confidence: r.confidence,
            source: RuleSource::Behaviour,
            author: r.author.clone(),
            tags: r.tags.clone(),
            response: r.response.clone(),
            file: r.file.display().to_string(),
        }
    }
}

/// The process an alert is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertProcess {
    pub pid: u32,
    pub start: u64,
    pub exe: Option<String>,
    pub cmdline: String,
    pub uid: u32,
    pub euid: u32,
    pub user: Option<String>,
    /// Nearest first.
    pub ancestry: Vec<ProcessRef>,
}

/// What a rule found, before triage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Unique on this host: the sensor's start time and a sequence number.
    pub id: String,
    pub time_ns: u64,
    pub host: String,
    pub rule: RuleRef,
    pub process: AlertProcess,
    /// Files and endpoints the evidence names.
    pub entities: Vec<String>,
    /// The event(s) that matched.
    pub evidence: Vec<Event>,
}

/// A triaged finding: scored and joined to an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(flatten)]
    pub finding: Finding,
    pub risk: Risk,
    /// The incident this alert belongs to.
    pub incident: String,
    /// The files the alert names as written or run, with the hash of their content: what
    /// the controller blocks fleet-wide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payloads: Vec<Payload>,
    /// The remote endpoints its process and incident connected to (loopback aside).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<std::net::SocketAddr>,
}

/// A file an alert names as written or run, and the SHA-256 of its content when it could
/// be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Its size in bytes, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Why there is no hash: too large, gone, unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhashed: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertLogError {
    #[error("cannot open the alert log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `STATE/alerts.jsonl`, append-only, mode 0600. Alerts that cannot be written (a full
/// disk) are kept and written with the next ones or at the next retry, up to
/// [`UNWRITTEN_MAX`]; beyond that the oldest are dropped, and counted.
pub struct AlertLog {
    path: PathBuf,
    file: crate::host::durable::SyncedFile,
    /// Serialized alerts not yet written, oldest first, one line each.
    unwritten: std::collections::VecDeque<Vec<u8>>,
    dropped: u64,
}

/// Most alerts kept in memory while the log cannot be written.
pub const UNWRITTEN_MAX: usize = 10_000;

/// What the alert log could not write, for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertLogStats {
    /// Alerts waiting to be written (retried on every tick).
    pub unwritten: usize,
    /// Alerts dropped because too many waited.
    pub dropped: u64,
}

impl AlertLog {
    pub fn open(path: &Path) -> Result<Self, AlertLogError> {
        let file = crate::host::durable::SyncedFile::open_log(path).map_err(|source| {
            AlertLogError::Open {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            path: path.to_owned(),
            file,
            unwritten: std::collections::VecDeque::new(),
            dropped: 0,
        })
    }

    /// Appends alerts: an alert written is an alert kept (synced within one sync, off the
    /// event loop). When the write fails they wait, with any written before, for the next.
    pub fn append(&mut self, alerts: &[Alert]) -> std::io::Result<()> {
        for a in alerts {
            let mut line = serde_json::to_vec(a)?;
            line.push(b'\n');
            if self.unwritten.len() >= UNWRITTEN_MAX {
                self.unwritten.pop_front();
                self.dropped += 1;
            }
            self.unwritten.push_back(line);
        }
        self.retry()
    }

    /// Writes what waits, in order, all at once or not at all.
    pub fn retry(&mut self) -> std::io::Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let buf: Vec<u8> = self.unwritten.iter().flatten().copied().collect();
        self.file.append(&buf)?;
        self.unwritten.clear();
        Ok(())
    }

    pub fn stats(&self) -> AlertLogStats {
        AlertLogStats {
            unwritten: self.unwritten.len(),
            dropped: self.dropped,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads an alert log; lines that do not parse are counted, not fatal.
pub fn read(path: &Path) -> std::io::Result<(Vec<Alert>, usize)> {
    let read = crate::host::jsonl::read(path)?;
    Ok((read.records, read.unreadable))
}
