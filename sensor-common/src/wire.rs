//! The graph's entity and edge types as they cross the wire (snapshots and deltas to the
//! controller), in one place both sides import. No aya, no kernel: the controller builds
//! without either. Encoded with rmp-serde; every document carries [`GRAPH_SCHEMA_VERSION`].

use std::{string::String, vec::Vec};

use serde::{Deserialize, Serialize};

use crate::decode::FileId;

/// Bumped whenever a type below changes incompatibly.
pub const GRAPH_SCHEMA_VERSION: u16 = 1;

/// The identity of a process: pid and start time in clock ticks since boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start: u64,
}

/// A network endpoint: the far side of a connection, or a local listening address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Endpoint {
    Inet {
        /// `tcp`, `udp`, ...
        protocol: String,
        addr: core::net::SocketAddr,
    },
    Unix {
        path: String,
    },
}

/// A node's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeId {
    Host,
    User(u32),
    Process(ProcessId),
    /// Files are named by absolute path (as resolved when seen); their inode identities are
    /// attributes of the node.
    File(String),
    Endpoint(Endpoint),
}

/// What an edge records. Every edge goes from a process to what it acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    Spawned,
    Executed,
    Wrote,
    Created,
    ReadSensitive,
    Deleted,
    /// From the process to the old path; a second edge `RenamedTo` goes to the new one.
    Renamed,
    RenamedTo,
    Chmodded,
    Chowned,
    Connected,
    Accepted,
    Listened,
    Bound,
    ChangedCredentials,
    LoadedModule,
    LoadedBpf,
    Traced,
    Signalled,
    CreatedMemfd,
    Mounted,
    /// From a user to a process running as that user.
    RanAs,
    /// An extended attribute set or removed (file capabilities are `security.capability`).
    SetXattr,
    /// A file's timestamps set (touch -t/-r, utimensat).
    Touched,
    /// A file's inode flags set (chattr: immutable, append-only).
    SetFlags,
    /// Another process's memory or secrets read (process_vm_readv, /proc/PID/mem, environ).
    ReadMemory,
    /// Another process's memory written (process_vm_writev, /proc/PID/mem).
    WroteMemory,
}

/// One relation, timestamped and tied to the event that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// Monotonic per sensor run: the order edges were made in.
    pub seq: u64,
    /// CLOCK_BOOTTIME nanoseconds of the event.
    pub boot_ns: u64,
    pub kind: EdgeKind,
    pub from: NodeId,
    pub to: NodeId,
    /// Whether the call succeeded (failed attempts are edges too).
    pub ok: bool,
}

/// A process node's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessNode {
    pub id: ProcessId,
    pub parent: Option<ProcessId>,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub uid: u32,
    pub euid: u32,
    /// CLOCK_BOOTTIME nanoseconds of the exit, if it exited.
    pub exited_ns: Option<u64>,
}

/// A file node's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileNode {
    pub path: String,
    pub ids: Vec<FileId>,
    /// The first process seen writing or creating it.
    pub first_writer: Option<ProcessId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    Host { hostname: String },
    User { uid: u32 },
    Process(ProcessNode),
    File(FileNode),
    Endpoint(Endpoint),
}

/// The whole graph at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u16,
    pub hostname: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// What changed since the previous delta: nodes added or updated, nodes removed (aged out),
/// and new edges. Applying deltas in `seq` order to a snapshot gives the live graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub version: u16,
    pub seq: u64,
    pub upserted: Vec<Node>,
    pub removed: Vec<NodeId>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot encode the graph document: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode the graph document: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error(
        "graph document has schema version {found}; this build reads version {GRAPH_SCHEMA_VERSION}"
    )]
    Version { found: u16 },
}

/// A versioned graph document.
pub trait Versioned: Serialize + for<'de> Deserialize<'de> {
    fn version(&self) -> u16;

    fn encode(&self) -> Result<Vec<u8>, WireError> {
        Ok(rmp_serde::to_vec_named(self)?)
    }

    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let doc: Self = rmp_serde::from_slice(bytes)?;
        if doc.version() != GRAPH_SCHEMA_VERSION {
            return Err(WireError::Version {
                found: doc.version(),
            });
        }
        Ok(doc)
    }
}

impl Versioned for Snapshot {
    fn version(&self) -> u16 {
        self.version
    }
}

impl Versioned for Delta {
    fn version(&self) -> u16 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use std::vec;

    use super::*;

    #[test]
    fn delta_round_trips_and_versions_are_checked() {
        let p = ProcessId { pid: 7, start: 9 };
        let delta = Delta {
            version: GRAPH_SCHEMA_VERSION,
            seq: 3,
            upserted: vec![Node::File(FileNode {
                path: "/tmp/x".into(),
                ids: vec![FileId { dev: 1, ino: 2 }],
                first_writer: Some(p),
            })],
            removed: vec![NodeId::User(5)],
            edges: vec![Edge {
                seq: 1,
                boot_ns: 10,
                kind: EdgeKind::Wrote,
                from: NodeId::Process(p),
                to: NodeId::File("/tmp/x".into()),
                ok: true,
            }],
        };
        let bytes = delta.encode().expect("encode");
        assert_eq!(Delta::decode(&bytes).expect("decode"), delta);
        let mut future = delta.clone();
        future.version = GRAPH_SCHEMA_VERSION + 1;
        let err = Delta::decode(&future.encode().expect("encode")).expect_err("refused");
        assert!(matches!(err, WireError::Version { .. }), "{err}");
        assert!(matches!(
            Delta::decode(b"\xc1garbage"),
            Err(WireError::Decode(_))
        ));
    }
}
