//! The records the controller keeps, as the store reads and writes them: owned here, so the
//! store names no service, and the services build and read them.

use std::collections::{BTreeMap, BTreeSet};

use sensor_common::{
    protocol::{HostReport, Indicator},
    wire::EdgeKind,
};
use serde::{Deserialize, Serialize};

/// An enrolled host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub id: String,
    pub hostname: String,
    /// SHA-256 of its certificate.
    pub cert_fingerprint: String,
    pub enrolled_ns: u64,
    pub last_seen_ns: u64,
    pub revoked: bool,
    pub report: HostReport,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time_ns: u64,
    pub who: String,
    pub command: String,
    pub outcome: String,
}

impl AuditEntry {
    /// An entry for what `who` asked for now, and what came of it.
    pub fn now(
        who: impl Into<String>,
        command: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        Self {
            time_ns: crate::now_ns(),
            who: who.into(),
            command: command.into(),
            outcome: outcome.into(),
        }
    }
}

/// A record a sensor sent: a line of its alerts or actions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub host: String,
    pub seq: u64,
    pub body: serde_json::Value,
}

/// What the fleet should run, pushed to every host until it reports running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired {
    /// A `RuleSet` (rmp-serde).
    Rules,
    /// A policy's TOML text.
    Policy,
    /// The fleet policy's TOML text.
    FleetPolicy,
}

impl Desired {
    /// The key the store keeps it under.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Rules => "rules",
            Self::Policy => "policy",
            Self::FleetPolicy => "fleet_policy",
        }
    }
}

/// One step the fleet took on its own for an incident, and the clause it rests on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStep {
    pub incident: String,
    pub time_ns: u64,
    /// `told`, `blocked`, `hunted`, `approved`...
    pub step: String,
    pub detail: String,
    /// The fleet policy's clause it rests on.
    pub clause: String,
}

/// A fleet block as the controller keeps it: the block, and what each host answered (a host
/// without an answer gets it when it connects).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlock {
    pub id: u64,
    pub block: sensor_common::protocol::FleetBlock,
    pub hosts: std::collections::BTreeMap<String, String>,
}

/// An incident a release closed: when, and how (verified clean, or forced by whom).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    pub host: String,
    pub incident: String,
    pub closed_ns: u64,
    pub how: String,
}

/// One hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub host: String,
    pub pid: u32,
    pub start: u64,
    pub exe: Option<String>,
    pub cmdline: String,
    /// For edges: what was acted on (a path or an address), the kind, and the boot time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<EdgeKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_ns: Option<u64>,
    /// The path that led to the process, itself first, across hosts.
    pub path: Vec<Step>,
}

/// One process of the fleet as a path shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub host: String,
    pub pid: u32,
    /// With `pid`, the process's identity on its host.
    #[serde(default)]
    pub start: u64,
    pub exe: Option<String>,
    /// How it leads to the next step: `parent`, or `connected` (across hosts).
    pub via: String,
}

impl Hit {
    /// What identifies the hit across runs of a standing hunt: the same process acting on
    /// the same thing is the same hit.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{:?}|{}",
            self.host,
            self.pid,
            self.start,
            self.kind,
            self.target.as_deref().unwrap_or("")
        )
    }

    /// What a release looks for on the hit's host: the process, and the file it wrote or
    /// ran or the endpoint it talked to.
    pub fn indicators(&self) -> Vec<Indicator> {
        let mut out = vec![Indicator::Process {
            pid: self.pid,
            start: self.start,
            exe: self.exe.clone(),
        }];
        use sensor_userspace::triage::indicators::{Act, of_act};
        let act = match (self.kind, self.target.as_deref()) {
            (
                Some(
                    EdgeKind::Wrote | EdgeKind::Created | EdgeKind::RenamedTo | EdgeKind::Chmodded,
                ),
                Some(path),
            ) => Some(Act::Wrote(path)),
            (Some(EdgeKind::Executed), Some(path)) => Some(Act::Ran(path)),
            (Some(EdgeKind::Connected | EdgeKind::Accepted), Some(addr)) => {
                addr.parse().ok().map(Act::Talked)
            }
            _ => None,
        };
        out.extend(act.and_then(of_act));
        out
    }
}

/// What a hunt's hits trigger beyond the incident.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Respond {
    /// Open the incident; people decide.
    #[default]
    Record,
    /// Also isolate every host hit (the sensor journals it; `release` verifies and ends it).
    Isolate,
}

/// A hunt the controller runs on a schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    pub name: String,
    pub query: String,
    pub every_secs: u64,
    pub respond: Respond,
    pub created_ns: u64,
    /// None until it first runs.
    pub last_run_ns: Option<u64>,
    #[serde(default)]
    pub runs: u64,
}

/// An incident a hunt opened: the new hits of one run, across every host they are on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntIncident {
    pub id: String,
    pub hunt: String,
    pub query: String,
    pub opened_ns: u64,
    pub hosts: BTreeSet<String>,
    pub hits: Vec<Hit>,
    /// The response asked for, per host: what came of it (pending until the host is
    /// reached).
    #[serde(default)]
    pub responses: BTreeMap<String, HostResponse>,
}

/// Where a hunt's response stands on one host. Kept (and shown) as its text, the same as the
/// store held before the type: "pending: the host was not connected", or the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum HostResponse {
    /// The host was not connected: asked when it is.
    Pending,
    /// What came of it: `isolated`, or why not.
    Done(String),
}

impl HostResponse {
    const PENDING: &str = "pending: the host was not connected";

    pub fn is_pending(&self) -> bool {
        matches!(self, Self::Pending)
    }
}

impl From<String> for HostResponse {
    fn from(s: String) -> Self {
        if s == Self::PENDING {
            Self::Pending
        } else {
            Self::Done(s)
        }
    }
}

impl From<HostResponse> for String {
    fn from(r: HostResponse) -> Self {
        match r {
            HostResponse::Pending => HostResponse::PENDING.to_owned(),
            HostResponse::Done(s) => s,
        }
    }
}

impl HuntIncident {
    /// What a release of `host` looks for there.
    pub fn indicators(&self, host: &str) -> BTreeSet<Indicator> {
        self.hits
            .iter()
            .filter(|h| h.host == host)
            .flat_map(Hit::indicators)
            .collect()
    }
}

/// A hash sweep across the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    pub id: String,
    pub sha256: String,
    pub created_ns: u64,
    /// The file's size when known (an incident's payload): hosts hash only files of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// One host's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub host: String,
    pub answered_ns: u64,
    /// Paths on the host with the hash.
    pub found: Vec<String>,
    pub hashed: u64,
    /// Why the host could not sweep, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_response_is_kept_as_the_text_stored_before_it_was_typed() {
        let stored = r#"{"a":"pending: the host was not connected","b":"isolated"}"#;
        let read: BTreeMap<String, HostResponse> = serde_json::from_str(stored).expect("read");
        assert_eq!(read["a"], HostResponse::Pending);
        assert_eq!(read["b"], HostResponse::Done("isolated".into()));
        assert_eq!(serde_json::to_string(&read).expect("write"), stored);
    }
}

/// What an operator may do. Ordered: each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also contains, releases, approves, denies, kills, quarantines, undoes and hunts.
    Responder,
    /// Also pushes rules and policy, manages operators and revokes hosts.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Responder => "responder",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "responder" => Ok(Self::Responder),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "no role {other:?}: the roles are viewer, responder and admin"
            )),
        }
    }
}

/// A person who operates the fleet through the console or the API. The password itself is
/// never kept: only its argon2 hash (a PHC string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    pub created_ns: u64,
    #[serde(skip_serializing, default)]
    pub password_hash: String,
}

/// An API token of an operator, for scripts: it acts with its operator's role. The secret is
/// kept as its SHA-256 only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub operator: String,
    pub created_ns: u64,
    pub revoked: bool,
    #[serde(skip_serializing, default)]
    pub secret_hash: String,
}
