//! The operator socket (`STATE/control.sock`, mode 0600): the `vigil-controller` commands
//! other than `serve` talk to the running server through it, one JSON line each way. Every
//! command and its outcome goes to the audit log.

use std::{path::Path, time::Duration};

use sensor_common::protocol::{Command, CommandReply, Stream};
use sensor_userspace::host::rpc::{self, RpcError};
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};

use crate::{lock, net::server::Shared, now_ns, operator, services::operators};

/// A request carries at most a rule set, which must fit a frame to a host anyway.
const MAX_REQUEST: usize = sensor_common::protocol::MAX_FRAME;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpRequest {
    Hosts,
    EnrollToken {
        ttl_secs: u64,
    },
    Revoke {
        host: String,
    },
    Contain {
        host: String,
        reason: String,
    },
    Release {
        host: String,
        force: bool,
    },
    Kill {
        host: String,
        pid: u32,
        reason: String,
    },
    Quarantine {
        host: String,
        path: String,
        reason: String,
    },
    Undo {
        host: String,
        action: String,
    },
    /// Make this rule set the fleet's and push it.
    PushRules {
        set: sensor_common::protocol::RuleSet,
    },
    /// Make this policy (TOML) the fleet's and push it.
    PushPolicy {
        text: String,
    },
    Incidents {
        host: Option<String>,
    },
    /// Keep a standing hunt, run every `every_secs`.
    HuntAdd {
        name: String,
        query: String,
        every_secs: u64,
        respond: crate::store::Respond,
    },
    HuntRemove {
        name: String,
    },
    Hunts,
    /// Ask every host for files with this SHA-256.
    Sweep {
        sha256: String,
    },
    /// A sweep's answers so far.
    SweepResults {
        id: String,
    },
    Records {
        host: Option<String>,
        stream: Stream,
    },
    Hunt {
        query: String,
    },
    Audit,
    /// Set the fleet policy (TOML, checked whole), or with none, show the one in force.
    FleetPolicy {
        text: Option<String>,
    },
    /// Carry out, on `host`, the actions of `incident` that await approval.
    Approve {
        host: String,
        incident: String,
    },
    /// Drop them.
    Deny {
        host: String,
        incident: String,
    },
    /// Deliveries, failures and dead letters per escalation target.
    Notifications,
    /// The fleet blocks in force, with each host's answer.
    FleetBlocks,
    /// Make an operator of the console and the API; the answer carries a one-time password.
    OperatorAdd {
        name: String,
        role: crate::store::Role,
    },
    /// Remove an operator: their sessions end and their API tokens are revoked.
    OperatorRemove {
        name: String,
    },
    /// The operators and their API tokens.
    Operators,
    /// Issue an API token for a script acting as operator `name` (shown once).
    OperatorToken {
        name: String,
    },
    /// Revoke API token `id`.
    TokenRevoke {
        id: String,
    },
}

impl OpRequest {
    /// The least role that may make this request through the API (the local socket is
    /// root's, and may make every one).
    pub fn role(&self) -> crate::store::Role {
        use crate::store::Role;
        match self {
            Self::Hosts
            | Self::Incidents { .. }
            | Self::Records { .. }
            | Self::Audit
            | Self::Hunts
            | Self::SweepResults { .. }
            | Self::FleetPolicy { text: None }
            | Self::Notifications
            | Self::FleetBlocks => Role::Viewer,
            Self::Contain { .. }
            | Self::Release { .. }
            | Self::Kill { .. }
            | Self::Quarantine { .. }
            | Self::Undo { .. }
            | Self::Hunt { .. }
            | Self::HuntAdd { .. }
            | Self::HuntRemove { .. }
            | Self::Sweep { .. }
            | Self::Approve { .. }
            | Self::Deny { .. } => Role::Responder,
            Self::EnrollToken { .. }
            | Self::Revoke { .. }
            | Self::PushRules { .. }
            | Self::PushPolicy { .. }
            | Self::FleetPolicy { text: Some(_) }
            | Self::OperatorAdd { .. }
            | Self::OperatorRemove { .. }
            | Self::Operators
            | Self::OperatorToken { .. }
            | Self::TokenRevoke { .. } => Role::Admin,
        }
    }

    /// Whether it only reads (and so is left out of the audit log).
    fn reads_only(&self) -> bool {
        matches!(
            self,
            Self::Hosts
                | Self::Records { .. }
                | Self::Audit
                | Self::Incidents { .. }
                | Self::Hunts
                | Self::SweepResults { .. }
                | Self::Hunt { .. }
                | Self::FleetPolicy { text: None }
                | Self::Notifications
                | Self::FleetBlocks
                | Self::Operators
        )
    }

    /// How the audit log names it: a rule set by its version, not its every line.
    fn audit_text(&self) -> String {
        match self {
            Self::PushRules { set } => format!(
                "{{\"op\":\"push_rules\",\"version\":\"{}\",\"files\":{}}}",
                set.version,
                set.files.len()
            ),
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }
}

/// How far a long request has got: `done` of `of` (when known) `what`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub of: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.of {
            Some(of) => write!(f, "{} of {of} {}", self.done, self.what),
            None => write!(f, "{} {}", self.done, self.what),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OpResponse {
    /// A long request's progress: lines of these may come before its answer.
    Progress(Progress),
    Ok(OpReply),
    Error {
        message: String,
    },
}

/// A host as the operator sees it: what the store holds, and whether it is connected now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    #[serde(flatten)]
    pub host: crate::store::Host,
    pub connected: bool,
    /// Connected to another controller replica sharing the store, which commands go through.
    #[serde(default)]
    pub through_replica: bool,
}

/// What a request answers, one variant per kind of answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpReply {
    Hosts {
        hosts: Vec<HostRow>,
    },
    Token {
        token: String,
        expires_ns: u64,
    },
    /// The ids of the hosts revoked.
    Revoked {
        hosts: Vec<String>,
    },
    /// The action records a host's sensor produced (its journal's schema, as it sent them).
    Actions {
        records: Vec<serde_json::Value>,
    },
    /// A pushed rule set or policy a host put in force.
    Applied {
        detail: String,
    },
    Verified {
        present: Vec<sensor_common::protocol::Presence>,
    },
    Swept {
        found: Vec<String>,
        hashed: u64,
    },
    Released(crate::services::recovery::Released),
    RulesPushed {
        version: String,
        rules: usize,
        hosts: Vec<crate::services::push::HostAnswer>,
    },
    PolicyPushed {
        version: u64,
        hosts: Vec<crate::services::push::HostAnswer>,
    },
    Incidents {
        incidents: Vec<crate::services::incidents::FleetIncident>,
    },
    Records {
        records: Vec<crate::store::HostRecord>,
    },
    Hunt(crate::services::hunt::Outcome),
    Sweep(crate::services::sweep::Report),
    Standing(crate::store::Standing),
    StandingRemoved {
        name: String,
    },
    Hunts {
        hunts: Vec<crate::store::Standing>,
    },
    Audit {
        entries: Vec<crate::store::AuditEntry>,
    },
    FleetPolicy {
        policy: crate::services::fleet_policy::FleetPolicy,
        /// Whether it is the one an operator set (else the shipped one).
        set: bool,
    },
    Notifications {
        targets: std::collections::BTreeMap<String, crate::services::notify::Counts>,
    },
    FleetBlocks {
        blocks: Vec<crate::store::StoredBlock>,
    },
    OperatorAdded {
        operator: crate::store::Operator,
        /// Shown this once; the store keeps only its hash.
        password: String,
    },
    OperatorRemoved {
        name: String,
    },
    Operators {
        operators: Vec<crate::store::Operator>,
        tokens: Vec<crate::store::ApiToken>,
    },
    TokenIssued {
        token: crate::store::ApiToken,
        /// Shown this once; the store keeps only its hash.
        secret: String,
    },
    TokenRevoked {
        id: String,
    },
}

/// Binds the operator socket (mode 0600), replacing a stale one but never a live server's.
pub fn bind(path: &Path) -> Result<UnixListener, RpcError> {
    rpc::bind(path)
}

/// Serves operators. Peers that are neither root nor the controller's own user are refused
/// before a byte is read (the socket's mode 0600 says the same; this holds if it is ever
/// loosened).
pub async fn serve(listener: UnixListener, shared: Shared) {
    loop {
        let (stream, uid) = rpc::accept(&listener).await;
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, uid, shared).await {
                tracing::debug!(error = %e, "operator connection failed");
            }
        });
    }
}

async fn handle(stream: UnixStream, uid: u32, shared: Shared) -> std::io::Result<()> {
    let who = format!("uid {uid}");
    let (read, mut write) = stream.into_split();
    let req = match rpc::read_request::<OpRequest>(read, MAX_REQUEST).await {
        Ok(req) => req,
        Err(e) => return rpc::write_line(&mut write, &err(e)).await,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let work = execute(&shared, &req, &who, tx);
    tokio::pin!(work);
    let resp = loop {
        tokio::select! {
            done = &mut work => break done,
            Some(p) = rx.recv() => rpc::write_line(&mut write, &OpResponse::Progress(p)).await?,
        }
    };
    rpc::write_line(&mut write, &resp).await
}

/// Carries out one operator request for `who` (the socket's peer, or an operator of the
/// API), keeping it and its outcome in the audit log unless it only reads. A long request's
/// progress goes to `progress` as it is made.
pub async fn execute(
    shared: &Shared,
    req: &OpRequest,
    who: &str,
    progress: tokio::sync::mpsc::UnboundedSender<Progress>,
) -> OpResponse {
    let resp = match req {
        OpRequest::Hunt { query } => hunt(shared, query, progress).await,
        OpRequest::Sweep { sha256 } => sweep(shared, sha256, progress).await,
        req => answer(shared, req, who).await,
    };
    if !req.reads_only() {
        audit(shared, who, &req.audit_text(), &resp);
        shared
            .fleet
            .changed(crate::services::ChangeKind::Audit, None);
    }
    resp
}

/// Keeps a command and its outcome in the audit log.
fn audit(shared: &Shared, who: &str, command: &str, resp: &OpResponse) {
    let outcome = match resp {
        OpResponse::Ok(_) | OpResponse::Progress(_) => "ok".to_owned(),
        OpResponse::Error { message } => format!("error: {message}"),
    };
    crate::services::audit(lock(&shared.fleet.store).as_mut(), who, command, &outcome);
}

fn ok(reply: OpReply) -> OpResponse {
    OpResponse::Ok(reply)
}

fn err(message: impl std::fmt::Display) -> OpResponse {
    OpResponse::Error {
        message: message.to_string(),
    }
}

/// Why an operator's host name names no single host.
#[derive(Debug, thiserror::Error)]
enum Unresolved {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("no host {0}")]
    NoHost(String),
    #[error("{count} hosts are named {name}: use the id")]
    Ambiguous { name: String, count: usize },
}

/// The id of the host named `name` (an id or a hostname), if exactly one.
fn resolve(shared: &Shared, name: &str) -> Result<String, Unresolved> {
    let hosts = lock(&shared.fleet.store).hosts()?;
    let found: Vec<_> = hosts
        .iter()
        .filter(|h| h.id == name || h.hostname == name)
        .collect();
    match found[..] {
        [h] => Ok(h.id.clone()),
        [] => Err(Unresolved::NoHost(name.to_owned())),
        _ => Err(Unresolved::Ambiguous {
            name: name.to_owned(),
            count: found.len(),
        }),
    }
}

// Long by design: one arm per operator request, each a call into a service and its reply.

async fn answer(shared: &Shared, req: &OpRequest, who: &str) -> OpResponse {
    match req {
        OpRequest::Hosts => match lock(&shared.fleet.store).hosts() {
            Ok(hosts) => {
                let link = &shared.fleet.link;
                let hosts = hosts
                    .into_iter()
                    .map(|host| HostRow {
                        connected: link.is_connected(&host.id),
                        through_replica: link.through_replica(&host.id),
                        host,
                    })
                    .collect();
                ok(OpReply::Hosts { hosts })
            }
            Err(e) => err(e),
        },
        OpRequest::EnrollToken { ttl_secs } => {
            let token = match crate::token::generate(&shared.ca.fingerprint()) {
                Ok(t) => t,
                Err(e) => return err(e),
            };
            let expires = now_ns().saturating_add(ttl_secs.saturating_mul(1_000_000_000));
            match lock(&shared.fleet.store).add_token(
                &token.id,
                &crate::token::secret_hash(&token.secret),
                expires,
            ) {
                Ok(()) => ok(OpReply::Token {
                    token: token.to_string(),
                    expires_ns: expires,
                }),
                Err(e) => err(e),
            }
        }
        OpRequest::Revoke { host } => {
            let ids = match lock(&shared.fleet.store).revoke(host) {
                Ok(ids) if ids.is_empty() => return err(format!("no host {host}")),
                Ok(ids) => ids,
                Err(e) => return err(e),
            };
            for id in &ids {
                shared.fleet.link.disconnect(id, "this host is revoked");
            }
            ok(OpReply::Revoked { hosts: ids })
        }
        OpRequest::Contain { host, reason } => {
            let cmd = Command::Isolate {
                reason: reason.clone(),
                who: operator(who),
            };
            order(shared, host, &cmd).await
        }
        OpRequest::Release { host, force } => {
            let id = match resolve(shared, host) {
                Ok(id) => id,
                Err(e) => return err(e),
            };
            match crate::services::recovery::release(&shared.fleet, &id, *force, who).await {
                Ok(r) => ok(OpReply::Released(r)),
                Err(e) => err(e),
            }
        }
        OpRequest::Kill { host, pid, reason } => {
            let cmd = Command::Kill {
                pid: *pid,
                reason: reason.clone(),
                who: operator(who),
            };
            order(shared, host, &cmd).await
        }
        OpRequest::Quarantine { host, path, reason } => {
            let cmd = Command::Quarantine {
                path: path.clone(),
                reason: reason.clone(),
                who: operator(who),
            };
            order(shared, host, &cmd).await
        }
        OpRequest::Undo { host, action } => {
            let cmd = Command::Undo {
                id: action.clone(),
                who: operator(who),
            };
            order(shared, host, &cmd).await
        }
        OpRequest::PushRules { set } => {
            // Loading and testing every rule is CPU work: off the runtime that serves the
            // hosts, so a hostile set delays no one's telemetry.
            let (fleet, checked) = (shared.fleet.clone(), set.clone());
            let rules = match tokio::task::spawn_blocking(move || {
                crate::services::push::set_rules(&fleet, &checked)
            })
            .await
            {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return err(e),
                Err(e) => return err(format!("the rule set check did not finish: {e}")),
            };
            let cmd = Command::PushRules {
                set: set.clone(),
                who: operator(who),
            };
            let hosts =
                crate::services::push::fan_out(&shared.fleet, &shared.fleet.link.connected(), &cmd)
                    .await;
            ok(OpReply::RulesPushed {
                version: set.version.clone(),
                rules,
                hosts,
            })
        }
        OpRequest::PushPolicy { text } => {
            let version = match crate::services::push::set_policy(&shared.fleet, text) {
                Ok(v) => v,
                Err(e) => return err(e),
            };
            let cmd = Command::PushPolicy {
                text: text.clone(),
                who: operator(who),
            };
            let hosts =
                crate::services::push::fan_out(&shared.fleet, &shared.fleet.link.connected(), &cmd)
                    .await;
            ok(OpReply::PolicyPushed { version, hosts })
        }
        OpRequest::Incidents { host } => {
            let id = match host.as_deref().map(|h| resolve(shared, h)).transpose() {
                Ok(id) => id,
                Err(e) => return err(e),
            };
            let listed = crate::services::reader(&shared.fleet.store)
                .and_then(|r| crate::services::incidents::list(r.as_ref(), id.as_deref()));
            match listed {
                Ok(incidents) => ok(OpReply::Incidents { incidents }),
                Err(e) => err(e),
            }
        }
        OpRequest::Records { host, stream } => {
            let id = match host.as_deref().map(|h| resolve(shared, h)).transpose() {
                Ok(id) => id,
                Err(e) => return err(e),
            };
            match lock(&shared.fleet.store).records(id.as_deref(), *stream) {
                Ok(records) => ok(OpReply::Records { records }),
                Err(e) => err(e),
            }
        }
        OpRequest::Hunt { .. } | OpRequest::Sweep { .. } => {
            err("this request is answered with its progress")
        }
        OpRequest::SweepResults { id } => {
            match crate::services::sweep::results(&shared.fleet, id) {
                Ok(r) => ok(OpReply::Sweep(r)),
                Err(e) => err(e),
            }
        }
        OpRequest::HuntAdd {
            name,
            query,
            every_secs,
            respond,
        } => match crate::store::Standing::new(name, query, *every_secs, *respond) {
            Ok(h) => match lock(&shared.fleet.store).put_hunt(&h) {
                Ok(()) => ok(OpReply::Standing(h)),
                Err(e) => err(e),
            },
            Err(crate::services::schedule::ScheduleError::Query(e)) => syntax_error(query, &e),
            Err(e) => err(e),
        },
        OpRequest::HuntRemove { name } => match lock(&shared.fleet.store).remove_hunt(name) {
            Ok(true) => ok(OpReply::StandingRemoved { name: name.clone() }),
            Ok(false) => err(format!("no standing hunt {name}")),
            Err(e) => err(e),
        },
        OpRequest::Hunts => match lock(&shared.fleet.store).hunts() {
            Ok(hunts) => ok(OpReply::Hunts { hunts }),
            Err(e) => err(e),
        },
        OpRequest::FleetPolicy { text: Some(text) } => {
            match crate::services::fleet_policy::FleetPolicy::parse(text) {
                Ok(policy) => match lock(&shared.fleet.store)
                    .set_desired(crate::store::Desired::FleetPolicy, text.as_bytes())
                {
                    Ok(()) => ok(OpReply::FleetPolicy { policy, set: true }),
                    Err(e) => err(e),
                },
                Err(e) => err(e),
            }
        }
        OpRequest::FleetPolicy { text: None } => {
            let set = lock(&shared.fleet.store)
                .desired(crate::store::Desired::FleetPolicy)
                .ok()
                .flatten()
                .is_some();
            ok(OpReply::FleetPolicy {
                policy: crate::services::autonomy::policy(&shared.fleet),
                set,
            })
        }
        OpRequest::Approve { host, incident } => {
            let cmd = Command::Approve {
                incident: incident.clone(),
                who: operator(who),
            };
            order(shared, host, &cmd).await
        }
        OpRequest::Deny { host, incident } => {
            let cmd = Command::Deny {
                incident: incident.clone(),
                who: operator(who),
            };
            order(shared, host, &cmd).await
        }
        OpRequest::Notifications => ok(OpReply::Notifications {
            targets: shared.fleet.notifier.counts(),
        }),
        OpRequest::FleetBlocks => match lock(&shared.fleet.store).fleet_blocks(now_ns()) {
            Ok(blocks) => ok(OpReply::FleetBlocks { blocks }),
            Err(e) => err(e),
        },
        OpRequest::Audit => match lock(&shared.fleet.store).audit_log() {
            Ok(entries) => ok(OpReply::Audit { entries }),
            Err(e) => err(e),
        },
        OpRequest::OperatorAdd { name, role } => {
            // The password hash is slow by design: off the runtime.
            let (store, name, role) = (shared.fleet.store.clone(), name.clone(), *role);
            match tokio::task::spawn_blocking(move || {
                operators::add(lock(&store).as_mut(), &name, role)
            })
            .await
            {
                Ok(Ok((operator, password))) => ok(OpReply::OperatorAdded { operator, password }),
                Ok(Err(e)) => err(e),
                Err(e) => err(format!("the operator was not made: {e}")),
            }
        }
        OpRequest::OperatorRemove { name } => {
            match lock(&shared.fleet.store).remove_operator(name) {
                Ok(true) => {
                    shared.sessions.end_all(name);
                    ok(OpReply::OperatorRemoved { name: name.clone() })
                }
                Ok(false) => err(format!("no operator {name}")),
                Err(e) => err(e),
            }
        }
        OpRequest::Operators => {
            let s = lock(&shared.fleet.store);
            match (s.operators(), s.api_tokens()) {
                (Ok(operators), Ok(tokens)) => ok(OpReply::Operators { operators, tokens }),
                (Err(e), _) | (_, Err(e)) => err(e),
            }
        }
        OpRequest::OperatorToken { name } => {
            match operators::issue_token(lock(&shared.fleet.store).as_mut(), name) {
                Ok((token, secret)) => ok(OpReply::TokenIssued { token, secret }),
                Err(e) => err(e),
            }
        }
        OpRequest::TokenRevoke { id } => match lock(&shared.fleet.store).revoke_api_token(id) {
            Ok(true) => ok(OpReply::TokenRevoked { id: id.clone() }),
            Ok(false) => err(format!("no API token {id}")),
            Err(e) => err(e),
        },
    }
}

/// Sends one command to the host named `host` and turns its answer into the operator's.
async fn order(shared: &Shared, host: &str, cmd: &Command) -> OpResponse {
    match resolve(shared, host) {
        Ok(id) => reply(shared.fleet.link.command(&id, cmd).await),
        Err(e) => err(e),
    }
}

/// A query refused, with a caret under the place.
fn syntax_error(query: &str, e: &crate::services::hunt::HuntError) -> OpResponse {
    err(format!(
        "syntax error {e}\n  {query}\n  {}^",
        " ".repeat(e.at)
    ))
}

/// Runs a hunt on a blocking thread (it scans the store), telling its progress as it goes.
async fn hunt(
    shared: &Shared,
    query: &str,
    progress: tokio::sync::mpsc::UnboundedSender<Progress>,
) -> OpResponse {
    let q = match crate::services::hunt::parse(query) {
        Ok(q) => q,
        Err(e) => return syntax_error(query, &e),
    };
    let store = shared.fleet.store.clone();
    let task = tokio::task::spawn_blocking(move || {
        let reader = crate::services::reader(&store)?;
        crate::services::hunt::search(reader.as_ref(), &q, &mut |n| {
            let _ = progress.send(Progress {
                done: n as u64,
                of: None,
                what: "edges read".into(),
            });
        })
    });
    match task.await {
        Ok(Ok(o)) => ok(OpReply::Hunt(o)),
        Ok(Err(e)) => err(e),
        Err(e) => err(format!("the hunt failed: {e}")),
    }
}

/// Runs a hash sweep, telling how many hosts have answered as they do.
async fn sweep(
    shared: &Shared,
    sha256: &str,
    progress: tokio::sync::mpsc::UnboundedSender<Progress>,
) -> OpResponse {
    let swept = crate::services::sweep::start(&shared.fleet, sha256, None, &mut |done, of| {
        let _ = progress.send(Progress {
            done: done as u64,
            of: Some(of as u64),
            what: "hosts answered".into(),
        });
    })
    .await;
    match swept {
        Ok(r) => ok(OpReply::Sweep(r)),
        Err(e) => err(e),
    }
}

fn reply(r: Result<CommandReply, crate::services::LinkError>) -> OpResponse {
    match r {
        Ok(CommandReply::Done { records }) => ok(OpReply::Actions {
            records: records
                .iter()
                .map(|b| serde_json::from_slice(b).unwrap_or(serde_json::Value::Null))
                .collect(),
        }),
        Ok(r @ (CommandReply::Refused { .. } | CommandReply::NotIsolated)) => err(r),
        Ok(CommandReply::Applied { detail }) => ok(OpReply::Applied { detail }),
        Ok(CommandReply::Verified { present }) => ok(OpReply::Verified { present }),
        Ok(CommandReply::Swept { found, hashed }) => ok(OpReply::Swept { found, hashed }),
        Err(e) => err(e),
    }
}

/// Sends one request to the running server (for the CLI) and returns its answer;
/// `progress` hears the progress lines that come before it.
pub fn request(
    socket: &Path,
    req: &OpRequest,
    progress: &mut dyn FnMut(&Progress),
) -> Result<OpResponse, RpcError> {
    rpc::call(socket, req, Duration::from_secs(60), |r: &OpResponse| {
        if let OpResponse::Progress(p) = r {
            progress(p);
            true
        } else {
            false
        }
    })
}
