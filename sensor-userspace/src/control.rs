//! The local control socket (`STATE/control.sock`, mode 0600, root or the sensor's own user
//! only): one JSON request line in, one JSON response line out.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::AsyncWriteExt as _,
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::{
    host::rpc::{self, RpcError},
    kernel::{loader::HookKind, probe::HookSupport},
    model::process_table::{Process, TableStats},
};

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// The live process holding `pid`, with its known ancestry.
    Process {
        pid: u32,
    },
    /// A question to the entity graph.
    Graph {
        query: GraphQuery,
    },
    /// Re-read the policy file; the one in force stays if the new one is invalid.
    ReloadPolicy,
    /// Every incident, with its story read from the graph now.
    Incidents,
    /// Reverse the journaled action `id`.
    Undo {
        id: String,
        /// Who asked, for the journal (the local operator when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// End every isolation in force.
    Release {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Carry out the pending actions of an incident.
    Approve {
        incident: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Drop the pending actions of an incident.
    Deny {
        incident: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Put a preventive block from an incident elsewhere in force (from the controller).
    FleetBlock {
        block: sensor_common::protocol::FleetBlock,
        by: String,
    },
    /// The files a hash sweep looks at: every file the graph holds and the live processes'
    /// executables (the hashing itself runs off the sensor's loop).
    SweepCandidates,
    /// Which of these indicators are on the host now.
    Verify {
        indicators: Vec<sensor_common::protocol::Indicator>,
    },
    /// Validate, install and put in force a rule set (from the controller); the rules in
    /// force stay when it is invalid.
    PushRules {
        set: sensor_common::protocol::RuleSet,
        by: String,
    },
    /// Validate, install and put in force a policy (TOML); the one in force stays when it is
    /// invalid.
    PushPolicy {
        text: String,
        by: String,
    },
    /// Carry out a containment a person asks for: isolate the host, block a destination,
    /// freeze a process tree. Journaled like the sensor's own; undone with `Undo`.
    Contain {
        order: Order,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
}

/// A containment a person orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum Order {
    Isolate,
    /// Block a destination host-wide, or for the process tree of `pid`.
    Block {
        dest: crate::act::netguard::Endpoint,
        pid: Option<u32>,
    },
    Freeze {
        pid: u32,
    },
    /// Kill the process tree of `pid`.
    Kill {
        pid: u32,
    },
    /// Move a file into the vault.
    Quarantine {
        path: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum GraphQuery {
    /// Ancestors, descendants, files written and connections of the tree rooted at the
    /// live process `pid`.
    Tree { pid: u32 },
    /// Processes that executed `path`.
    Executors { path: String },
    /// The first process seen writing `path`.
    FirstWriter { path: String },
    /// Writes a snapshot (rmp-serde) into the state directory.
    Snapshot,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum GraphAnswer {
    Tree(crate::model::graph::TreeView),
    Processes {
        processes: Vec<crate::model::process_table::ProcessKey>,
    },
    Snapshot {
        path: String,
        nodes: usize,
        edges: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    pub program: String,
    pub kind: HookKind,
    pub target: String,
}

impl From<&crate::kernel::loader::HookSpec> for HookStatus {
    fn from(h: &crate::kernel::loader::HookSpec) -> Self {
        Self {
            program: h.program.clone(),
            kind: h.kind,
            target: h.target.clone(),
        }
    }
}

/// Per-kind counts: what userspace received, what the kernel lost to a full ring buffer, and
/// what it filtered on purpose, and the repeats it coalesced into the records delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStatus {
    pub received: u64,
    pub dropped: u64,
    pub filtered: u64,
    #[serde(default)]
    pub coalesced: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub hooks: Vec<HookStatus>,
    /// Optional hooks this kernel lacks (a syscall absent on this architecture or build).
    pub skipped_hooks: Vec<HookStatus>,
    pub support: HookSupport,
    pub ring_buffer_bytes: u32,
    pub events: BTreeMap<String, KindStatus>,
    pub decode_errors: u64,
    pub processes: TableStats,
    pub graph: crate::model::graph::GraphStats,
    pub rules_loaded: usize,
    /// The version of the rule set the controller pushed, when that is what runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_version: Option<String>,
    pub alerts_raised: u64,
    /// Low-level matches (informational and low Sigma rules) recorded as signals.
    #[serde(default)]
    pub signals: u64,
    /// What each of the policy's exceptions suppressed.
    #[serde(default)]
    pub exceptions: Vec<crate::triage::incidents::ExceptionCount>,
    pub incidents: usize,
    pub detection: crate::detect::DetectStats,
    /// The action journal: counts, and blocks re-armed at start.
    pub actions: crate::act::ResponseStats,
    pub policy: crate::policy::PolicySummary,
    /// Where enforcement is pinned, and what this run adopted; None without pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<crate::kernel::pins::PinStatus>,
    /// Alerts the log could not write yet (a full disk), and any dropped.
    #[serde(default)]
    pub alert_log: crate::triage::alerts::AlertLogStats,
    /// How full the ring buffer was when it was last drained, and at most.
    #[serde(default)]
    pub ring: crate::kernel::ringbuf::RingFill,
    /// Alerts raised since start, by rule, severity and the verdict on their incident.
    #[serde(default)]
    pub alert_counts: Vec<AlertCount>,
    /// The incidents held now, by severity, verdict and status.
    #[serde(default)]
    pub incident_counts: Vec<IncidentCount>,
    /// The journal's actions, by action and status.
    #[serde(default)]
    pub action_counts: Vec<ActionCount>,
    /// Rule sets and policies refused since start (pushed, or reloaded on SIGHUP).
    #[serde(default)]
    pub load_failures: LoadFailures,
    /// The link to the controller, when the sensor reports to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkStatus>,
    /// `--forward`: alerts delivered, failed, given up and dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<crate::triage::forward::ForwardStats>,
}

/// The link to the controller, as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkStatus {
    pub controller: std::net::SocketAddr,
    pub connected: bool,
    /// Sessions the controller welcomed since start.
    pub sessions: u64,
    /// Graph deltas waiting for the controller's acknowledgement (spooled on disk), and
    /// their size.
    pub spooled_deltas: u64,
    pub spooled_bytes: u64,
    /// Graph deltas dropped: past the spool's bound, or not handed over by a stuck loop.
    pub graph_deltas_dropped: u64,
}

/// Alerts of one rule at one severity whose incident had one verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCount {
    /// The rule's id, or its title when it has none.
    pub rule: String,
    pub severity: crate::detect::rules::sigma::rule::Level,
    pub verdict: crate::triage::Verdict,
    pub count: u64,
}

/// Incidents of one severity, verdict and status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentCount {
    pub severity: crate::detect::rules::sigma::rule::Level,
    pub verdict: crate::triage::Verdict,
    pub status: crate::triage::incidents::Status,
    pub count: u64,
}

/// Journal records of one action (or settlement) and status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCount {
    pub action: crate::act::journal::Verb,
    pub status: crate::act::journal::Status,
    pub count: u64,
}

/// What the sensor refused to load since it started; what was in force stayed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFailures {
    pub rules: u64,
    pub policy: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessView {
    pub process: Process,
    /// Nearest first.
    pub ancestry: Vec<Process>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    Process {
        found: Option<ProcessView>,
    },
    Graph(GraphAnswer),
    Policy(crate::policy::PolicySummary),
    Incidents {
        incidents: Vec<crate::triage::incidents::Incident>,
    },
    /// Journal records written for a request (an undo, approvals, denials).
    Actions {
        records: Vec<crate::act::journal::Record>,
    },
    /// The indicators found on the host.
    Verified {
        present: Vec<sensor_common::protocol::Presence>,
    },
    /// A pushed rule set or policy is in force.
    Applied {
        detail: String,
    },
    Paths {
        paths: Vec<String>,
    },
    /// A release found nothing isolated.
    NotIsolated,
    Error {
        message: String,
    },
}

/// A request with the way back to its connection.
pub type Envelope = (Request, oneshot::Sender<Response>);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the control socket: {0}")]
    Bind(crate::host::rpc::RpcError),
    #[error(
        "no sensor answers on {} ({source}); is `vigil-sensor run` running with this --state?", .path.display()
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Rpc(crate::host::rpc::RpcError),
}

/// Binds the socket (replacing a stale one, never a live sensor's) with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    rpc::bind(path).map_err(ControlError::Bind)
}

/// Accepts connections until the channel closes. Peers that are neither root nor the
/// sensor's own user are refused before a byte is read.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Envelope>) {
    loop {
        let (stream, _) = rpc::accept(&listener).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, tx).await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
        });
    }
}

async fn handle(stream: UnixStream, tx: mpsc::Sender<Envelope>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let response = match rpc::read_request::<Request>(read, MAX_REQUEST).await {
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            if tx.send((request, reply)).await.is_err() {
                Response::Error {
                    message: "the sensor is shutting down".into(),
                }
            } else {
                answer.await.unwrap_or(Response::Error {
                    message: "the sensor dropped the request".into(),
                })
            }
        }
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    };
    rpc::write_line(&mut write, &response).await?;
    write.shutdown().await
}

/// Sends one request to a running sensor and waits for its response.
pub fn request(socket: &Path, req: &Request) -> Result<Response, ControlError> {
    rpc::call(socket, req, Duration::from_secs(10), |_: &Response| false).map_err(|e| match e {
        RpcError::Connect { path, source } => ControlError::Connect { path, source },
        other => ControlError::Rpc(other),
    })
}
