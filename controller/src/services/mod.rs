//! What the controller does for the fleet, each service over the store and a narrow link to
//! the connected hosts ([`HostLink`]); none knows the QUIC server.
//!
//! - [`hunt`]: the query language over the fleet's graphs and their history;
//! - [`incidents`]: the fleet's incidents, read from the hosts' alerts, with their indicators;
//! - [`push`]: rules and policy, validated, kept as the fleet's desired state, pushed;
//! - [`recovery`]: release after verifying the host is clean of its incidents' indicators;
//! - [`schedule`]: standing hunts, whose new hits open incidents and may isolate hosts;
//! - [`sweep`]: hash sweeps, answered by each host's sensor, offline ones on reconnect;
//! - [`reconcile`]: what a host's connection sets going (converge, catch-up), and each alert;
//! - [`autonomy`]: the fleet's own steps after an alert (fleet blocks, retro-hunts, approval
//!   deadlines), each kept with its clause of the [`fleet_policy`];
//! - [`notify`]: telling people (webhook, Slack, PagerDuty), retried and audited;
//! - [`operators`]: the people who operate the fleet, their API tokens and console sessions.

use std::{future::Future, pin::Pin, sync::Arc};

use sensor_common::protocol::{Command, CommandReply};

use crate::store::SharedStore;

pub mod autonomy;
pub mod fleet_policy;
pub mod hunt;
pub mod incidents;
pub mod notify;
pub mod operators;
pub mod push;
pub mod reconcile;
pub mod recovery;
pub mod retention;
pub mod schedule;
pub mod sweep;

/// Why a command did not get an answer from a host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("host {0} is not connected")]
    NotConnected(String),
    #[error("host {host} did not answer within {secs} s")]
    Timeout { host: String, secs: u64 },
    #[error("the command stream to {host} failed: {why}")]
    Stream { host: String, why: String },
    #[error("host {0} closed the command stream without an answer")]
    NoAnswer(String),
}

/// The text of a command's fate for the audit log and the operator: the reply's own text,
/// or why none came.
pub fn outcome(r: &Result<CommandReply, LinkError>) -> String {
    match r {
        Ok(reply) => reply.to_string(),
        Err(e) => format!("not delivered: {e}"),
    }
}

/// The hostname of host `id`, as it enrolled; None for an unknown host.
pub fn hostname(fleet: &Fleet, id: &str) -> Option<String> {
    crate::lock(&fleet.store)
        .hosts()
        .ok()?
        .into_iter()
        .find(|h| h.id == id)
        .map(|h| h.hostname)
}

/// A read-only connection of the store's own for a long read, taken under the lock for an
/// instant: the read itself holds no lock (see [`crate::store::Store::reader`]).
pub fn reader(
    store: &SharedStore,
) -> Result<Box<dyn crate::store::Store>, crate::store::StoreError> {
    crate::lock(store).reader()
}

/// Keeps `who` asked for `command` and its `outcome` in the audit log; a log that cannot be
/// written is logged, and the command's outcome stands.
pub fn audit(store: &mut dyn crate::store::Store, who: &str, command: &str, outcome: &str) {
    if let Err(e) = store.audit(&crate::store::AuditEntry::now(who, command, outcome)) {
        tracing::error!(error = %e, command, "cannot write the audit log");
    }
}

/// A command's answer, once it has been awaited.
pub type Answer<'a> = Pin<Box<dyn Future<Output = Result<CommandReply, LinkError>> + Send + 'a>>;

/// The services' view of the connected hosts: who is connected, a command to one of them,
/// and cutting one off. The QUIC server implements it.
pub trait HostLink: Send + Sync {
    /// Ids of the connected hosts, sorted: here or through another controller replica.
    fn connected(&self) -> Vec<String>;
    fn is_connected(&self, host: &str) -> bool;
    /// Whether `host`'s connection is held by another controller replica (commands to it go
    /// through that replica).
    fn through_replica(&self, host: &str) -> bool;
    /// Sends `cmd` to `host` and waits (bounded) for its reply.
    fn command<'a>(&'a self, host: &'a str, cmd: &'a Command) -> Answer<'a>;
    /// Closes `host`'s connection, if it has one, saying `why`.
    fn disconnect(&self, host: &str, why: &str);
}

/// What every service works with: the store, the link to the hosts, the notifier, and where
/// changes are announced (to the console's live view).
#[derive(Clone)]
pub struct Fleet {
    pub store: SharedStore,
    pub link: Arc<dyn HostLink>,
    pub notifier: notify::Notifier,
    pub changes: Changes,
}

/// What kind of thing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A host connected, disconnected, reported or was revoked.
    Hosts,
    Alerts,
    Actions,
    /// An operator's command (or the fleet's own step) was audited.
    Audit,
}

/// One change, for whoever watches (a console's event stream). Nobody watching is fine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub what: ChangeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Where changes are announced; a watcher that falls behind is told it missed some.
pub type Changes = tokio::sync::broadcast::Sender<Change>;

/// A new announcer of changes.
pub fn changes() -> Changes {
    tokio::sync::broadcast::channel(1024).0
}

impl Fleet {
    /// Announces a change; nobody listening is not an error.
    pub fn changed(&self, what: ChangeKind, host: Option<&str>) {
        let _ = self.changes.send(Change {
            what,
            host: host.map(str::to_owned),
        });
    }
}
