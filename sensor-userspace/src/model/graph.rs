//! The host entity graph: users, processes, files and endpoints, related by timestamped edges
//! tied to the events that made them.
//!
//! Process nodes and their lineage live in the [`ProcessTable`]; this adds every other node and
//! every edge. Nodes are interned in an arena and edges refer to them by index, so an edge costs
//! a few dozen bytes. Memory is bounded: edges beyond `max_edges` go oldest first (counted),
//! an aged-out process takes its edges with it, and a node with no edges left is removed.

use std::collections::VecDeque;

use ahash::{HashMap, HashMapExt, HashSet, HashSetExt};
use indexmap::IndexSet;

use sensor_common::{
    decode::FileId,
    wire::{
        Delta, Edge, EdgeKind, Endpoint, FileNode, GRAPH_SCHEMA_VERSION, Node, NodeId, ProcessNode,
        Snapshot,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    model::events::{FileRef, Net, What},
    model::process_table::{Process, ProcessKey, ProcessTable},
};

/// Limits of the graph.
#[derive(Clone, Copy, Debug)]
pub struct GraphLimits {
    pub max_edges: usize,
}

impl Default for GraphLimits {
    fn default() -> Self {
        Self { max_edges: 262_144 }
    }
}

/// Sizes and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphStats {
    pub nodes: usize,
    pub edges: usize,
    /// Edges dropped, oldest first, to stay under the cap.
    pub edges_evicted: u64,
}

type Ix = u32;

struct Slot {
    id: NodeId,
    ids: Vec<FileId>,
    first_writer: Option<ProcessKey>,
    /// chmod set an execute bit on it.
    made_executable: bool,
    /// Edges touching this node, oldest first.
    edges: VecDeque<u64>,
}

#[derive(Clone, Copy)]
struct StoredEdge {
    boot_ns: u64,
    kind: EdgeKind,
    from: Ix,
    to: Ix,
    ok: bool,
}

/// The edges by sequence number. Numbers only grow and eviction takes the oldest, so this is
/// a ring with a base rather than a tree: insertion, lookup and removal at the front are O(1);
/// an edge removed from the middle (a forgotten process's) leaves a hole until the front
/// reaches it.
#[derive(Default)]
struct EdgeLog {
    /// The sequence number of `slots[0]`.
    base: u64,
    /// Never starts with a hole.
    slots: VecDeque<Option<StoredEdge>>,
    live: usize,
}

impl EdgeLog {
    /// Appends the edge numbered `seq`, which is above every number held.
    fn insert(&mut self, seq: u64, e: StoredEdge) {
        if self.slots.is_empty() {
            self.base = seq;
        }
        let Ok(at) = usize::try_from(seq - self.base) else {
            return;
        };
        while self.slots.len() < at {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(e));
        self.live += 1;
    }

    fn index(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq.checked_sub(self.base)?).ok()
    }

    fn get(&self, seq: &u64) -> Option<&StoredEdge> {
        self.slots.get(self.index(*seq)?)?.as_ref()
    }

    fn remove(&mut self, seq: &u64) -> Option<StoredEdge> {
        let at = self.index(*seq)?;
        let e = self.slots.get_mut(at)?.take()?;
        self.live -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(e)
    }

    fn first_seq(&self) -> Option<u64> {
        (!self.slots.is_empty()).then_some(self.base)
    }

    fn len(&self) -> usize {
        self.live
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &StoredEdge)> {
        self.since(self.base)
    }

    /// The edges numbered `from` and above, in order.
    fn since(&self, from: u64) -> impl Iterator<Item = (u64, &StoredEdge)> {
        let skip = from.saturating_sub(self.base);
        self.slots
            .iter()
            .zip(self.base..)
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .filter_map(|(e, seq)| e.as_ref().map(|e| (seq, e)))
    }
}

/// At most this many inode identities are kept per path.
const MAX_IDS_PER_FILE: usize = 4;

pub struct Graph {
    hostname: String,
    slots: Vec<Option<Slot>>,
    free: Vec<Ix>,
    index: HashMap<NodeId, Ix>,
    edges: EdgeLog,
    next_seq: u64,
    /// Each process's children and each child's parent. A set per parent: a long-lived parent
    /// of many short-lived children (a shell loop, a service manager) costs O(1) per fork, and
    /// a child leaves its parent's set when it is forgotten.
    children: HashMap<ProcessKey, IndexSet<ProcessKey>>,
    parents: HashMap<ProcessKey, ProcessKey>,
    limits: GraphLimits,
    evicted: u64,
    // What changed since the last delta.
    delta_seq: u64,
    last_delta_edge: u64,
    touched: HashSet<Ix>,
    removed: Vec<NodeId>,
}

/// What one process tree did, for investigation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeView {
    pub root: Option<ProcessKey>,
    pub ancestors: Vec<ProcessKey>,
    pub descendants: Vec<ProcessKey>,
    pub files_written: Vec<String>,
    pub connections: Vec<Endpoint>,
}

fn endpoint(net: &Net, remote: bool) -> Option<Endpoint> {
    if let Some(path) = &net.unix_path {
        return Some(Endpoint::Unix { path: path.clone() });
    }
    let addr = if remote { net.remote } else { net.local }?;
    Some(Endpoint::Inet {
        protocol: net.protocol.clone(),
        addr,
    })
}

fn file_node(f: &FileRef) -> Option<(NodeId, Option<FileId>)> {
    f.path.as_ref().map(|p| (NodeId::File(p.clone()), f.id))
}

impl Graph {
    pub fn new(hostname: String, limits: GraphLimits) -> Self {
        Self {
            hostname,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            edges: EdgeLog::default(),
            next_seq: 1,
            children: HashMap::new(),
            parents: HashMap::new(),
            limits,
            evicted: 0,
            delta_seq: 0,
            last_delta_edge: 0,
            touched: HashSet::new(),
            removed: Vec::new(),
        }
    }

    fn intern(&mut self, id: NodeId) -> Ix {
        if let Some(&ix) = self.index.get(&id) {
            return ix;
        }
        let slot = Slot {
            id: id.clone(),
            ids: Vec::new(),
            first_writer: None,
            made_executable: false,
            edges: VecDeque::new(),
        };
        let ix = match self.free.pop() {
            Some(ix) => {
                self.slots[ix as usize] = Some(slot);
                ix
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as Ix
            }
        };
        self.index.insert(id, ix);
        self.touched.insert(ix);
        ix
    }

    fn slot(&self, ix: Ix) -> Option<&Slot> {
        self.slots.get(ix as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, ix: Ix) -> Option<&mut Slot> {
        self.slots.get_mut(ix as usize).and_then(Option::as_mut)
    }

    fn add_edge(&mut self, boot_ns: u64, kind: EdgeKind, from: NodeId, to: NodeId, ok: bool) -> Ix {
        let (from, to) = (self.intern(from), self.intern(to));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.edges.insert(
            seq,
            StoredEdge {
                boot_ns,
                kind,
                from,
                to,
                ok,
            },
        );
        for ix in [from, to] {
            if let Some(s) = self.slot_mut(ix) {
                s.edges.push_back(seq);
            }
        }
        while self.edges.len() > self.limits.max_edges {
            if let Some(oldest) = self.edges.first_seq() {
                self.remove_edge(oldest);
                self.evicted += 1;
            }
        }
        to
    }

    fn remove_edge(&mut self, seq: u64) {
        let Some(e) = self.edges.remove(&seq) else {
            return;
        };
        for ix in [e.from, e.to] {
            let empty = match self.slot_mut(ix) {
                Some(s) => {
                    // Each node lists its edges in seq order and eviction takes the oldest
                    // edge overall, so it is at the front; a forgotten process's edges may
                    // be anywhere.
                    if s.edges.front() == Some(&seq) {
                        s.edges.pop_front();
                    } else {
                        s.edges.retain(|&x| x != seq);
                    }
                    s.edges.is_empty() && !matches!(s.id, NodeId::Process(_))
                }
                None => false,
            };
            if empty {
                self.remove_node(ix);
            }
        }
    }

    fn remove_node(&mut self, ix: Ix) {
        if let Some(slot) = self.slots.get_mut(ix as usize).and_then(Option::take) {
            self.index.remove(&slot.id);
            self.touched.remove(&ix);
            self.removed.push(slot.id);
            self.free.push(ix);
        }
    }

    fn add_file_id(&mut self, ix: Ix, id: Option<FileId>) {
        if let (Some(id), Some(s)) = (id, self.slot_mut(ix))
            && !s.ids.contains(&id)
        {
            if s.ids.len() >= MAX_IDS_PER_FILE {
                s.ids.remove(0);
            }
            s.ids.push(id);
        }
    }

    /// Records the parent-child link of a new process.
    pub fn spawned(&mut self, boot_ns: u64, parent: Option<ProcessKey>, child: ProcessKey) {
        let Some(parent) = parent else {
            self.intern(NodeId::Process(child));
            return;
        };
        self.children.entry(parent).or_default().insert(child);
        self.parents.insert(child, parent);
        self.add_edge(
            boot_ns,
            EdgeKind::Spawned,
            NodeId::Process(parent),
            NodeId::Process(child),
            true,
        );
    }

    /// Adds what /proc shows of a process that predates the sensor: its executable and its open
    /// sockets (listening; accepted when the local port is one it listens on; else connected).
    pub fn seed_process(&mut self, p: &Process, sockets: &[crate::host::procfs::NetSocket]) {
        let me = NodeId::Process(p.key);
        if let Some(exe) = &p.exe {
            self.add_edge(
                0,
                EdgeKind::Executed,
                me.clone(),
                NodeId::File(exe.clone()),
                true,
            );
        }
        let listening: Vec<u16> = sockets
            .iter()
            .filter(|s| s.listening)
            .map(|s| s.local.port())
            .collect();
        for s in sockets {
            let (kind, addr) = if s.listening {
                (EdgeKind::Listened, s.local)
            } else if listening.contains(&s.local.port()) {
                (EdgeKind::Accepted, s.remote)
            } else {
                (EdgeKind::Connected, s.remote)
            };
            let ep = Endpoint::Inet {
                protocol: s.protocol.to_owned(),
                addr,
            };
            self.add_edge(0, kind, me.clone(), NodeId::Endpoint(ep), true);
        }
    }

    /// Adds what `p` did to the graph.
    // Long by design: one arm per event kind, each the edges that event adds.
    pub fn record(
        &mut self,
        boot_ns: u64,
        p: &Process,
        what: &What,
        ok: bool,
        target: Option<ProcessKey>,
    ) {
        let me = NodeId::Process(p.key);
        let file = |g: &mut Self, kind: EdgeKind, f: &FileRef| {
            if let Some((id, fid)) = file_node(f) {
                let ix = g.add_edge(boot_ns, kind, me.clone(), id, ok);
                g.add_file_id(ix, fid);
                if ok
                    && matches!(kind, EdgeKind::Wrote | EdgeKind::Created)
                    && let Some(s) = g.slot_mut(ix)
                    && s.first_writer.is_none()
                {
                    s.first_writer = Some(p.key);
                }
            }
        };
        match what {
            What::Fork | What::Exit { .. } => {}
            What::Exec { exe_file, .. } => {
                if let Some(exe) = &p.exe {
                    let ix = self.add_edge(
                        boot_ns,
                        EdgeKind::Executed,
                        me.clone(),
                        NodeId::File(exe.clone()),
                        true,
                    );
                    if exe_file.ino != 0 {
                        self.add_file_id(ix, Some(*exe_file));
                    }
                }
                self.add_edge(
                    boot_ns,
                    EdgeKind::RanAs,
                    NodeId::User(p.euid),
                    me.clone(),
                    true,
                );
            }
            What::Open {
                file: f,
                write,
                create,
                truncate,
                sensitive_read,
                ..
            } => {
                // Writes to character devices (/dev/null, ttys) say nothing about the host's
                // state; block devices (disk wiping) do.
                if f.file_type == Some(crate::model::events::FileType::CharDevice) {
                    return;
                }
                if let Some(t) = target {
                    let kind = if *write {
                        EdgeKind::WroteMemory
                    } else {
                        EdgeKind::ReadMemory
                    };
                    self.add_edge(boot_ns, kind, me, NodeId::Process(t), ok);
                    return;
                }
                let kind = if *create {
                    EdgeKind::Created
                } else if *write || *truncate {
                    EdgeKind::Wrote
                } else if *sensitive_read {
                    EdgeKind::ReadSensitive
                } else {
                    return;
                };
                file(self, kind, f);
            }
            What::Unlink { file: f } => file(self, EdgeKind::Deleted, f),
            What::Rename { file: f, to } => {
                file(self, EdgeKind::Renamed, f);
                file(self, EdgeKind::RenamedTo, to);
            }
            What::Chmod { file: f, mode, .. } => {
                file(self, EdgeKind::Chmodded, f);
                if ok
                    && mode & 0o111 != 0
                    && let Some(path) = &f.path
                    && let Some(&ix) = self.index.get(&NodeId::File(path.clone()))
                    && let Some(s) = self.slot_mut(ix)
                {
                    s.made_executable = true;
                }
            }
            What::Chown { file: f, .. } => file(self, EdgeKind::Chowned, f),
            What::Mount { target, .. } => file(self, EdgeKind::Mounted, target),
            What::Connect { net }
            | What::Accept { net }
            | What::Bind { net }
            | What::Listen { net, .. } => {
                let (kind, remote) = match what {
                    What::Connect { .. } => (EdgeKind::Connected, true),
                    What::Accept { .. } => (EdgeKind::Accepted, true),
                    What::Bind { .. } => (EdgeKind::Bound, false),
                    _ => (EdgeKind::Listened, false),
                };
                if let Some(ep) = endpoint(net, remote) {
                    self.add_edge(boot_ns, kind, me, NodeId::Endpoint(ep), ok);
                }
            }
            What::SetUid { .. } | What::SetGid { .. } | What::Capset { .. } => {
                self.add_edge(
                    boot_ns,
                    EdgeKind::ChangedCredentials,
                    me,
                    NodeId::User(p.euid),
                    ok,
                );
            }
            // Taking another process's descriptors needs the rights ptrace needs, and gives
            // as much: the graph draws it as tracing.
            What::Ptrace { .. } | What::Kill { .. } | What::PidfdGetfd { .. } => {
                let kind = if matches!(what, What::Kill { .. }) {
                    EdgeKind::Signalled
                } else {
                    EdgeKind::Traced
                };
                if let Some(t) = target {
                    self.add_edge(boot_ns, kind, me, NodeId::Process(t), ok);
                }
            }
            // A handle alone, or a signal whose target is not known: nothing to draw.
            What::PidfdOpen { .. } | What::PidfdSignal { .. } => {}
            What::ModuleLoad { file: f, .. } => match f.as_ref().and_then(file_node) {
                Some((id, _)) => {
                    self.add_edge(boot_ns, EdgeKind::LoadedModule, me, id, ok);
                }
                None => {
                    self.add_edge(boot_ns, EdgeKind::LoadedModule, me, NodeId::Host, ok);
                }
            },
            What::Bpf { .. } => {
                self.add_edge(boot_ns, EdgeKind::LoadedBpf, me, NodeId::Host, ok);
            }
            What::MemfdCreate { name, .. } => {
                let path = format!("memfd:{}", name.as_deref().unwrap_or(""));
                self.add_edge(boot_ns, EdgeKind::CreatedMemfd, me, NodeId::File(path), ok);
            }
            What::Xattr { file: f, .. } => file(self, EdgeKind::SetXattr, f),
            What::Utimes { file: f, .. } => file(self, EdgeKind::Touched, f),
            What::SetFlags { file: f, .. } => file(self, EdgeKind::SetFlags, f),
            What::ProcessVm { write, .. } => {
                let kind = if *write {
                    EdgeKind::WroteMemory
                } else {
                    EdgeKind::ReadMemory
                };
                if let Some(t) = target {
                    self.add_edge(boot_ns, kind, me, NodeId::Process(t), ok);
                }
            }
            What::SetName { .. } => {}
        }
    }

    /// Forgets an aged-out process: its edges, its child links, and nodes left with no edges.
    pub fn forget_process(&mut self, key: &ProcessKey) {
        self.children.remove(key);
        if let Some(parent) = self.parents.remove(key)
            && let Some(kids) = self.children.get_mut(&parent)
        {
            kids.swap_remove(key);
            if kids.is_empty() {
                self.children.remove(&parent);
            }
        }
        let Some(&ix) = self.index.get(&NodeId::Process(*key)) else {
            return;
        };
        let seqs: Vec<u64> = self
            .slot(ix)
            .map(|s| s.edges.iter().copied().collect())
            .unwrap_or_default();
        for seq in seqs {
            self.remove_edge(seq);
        }
        self.remove_node(ix);
    }

    /// Every known descendant of `root`, breadth first.
    pub fn descendants(&self, root: &ProcessKey) -> Vec<ProcessKey> {
        let mut out = Vec::new();
        let mut queue: VecDeque<ProcessKey> = VecDeque::from([*root]);
        let mut seen = HashSet::new();
        seen.insert(*root);
        while let Some(k) = queue.pop_front() {
            for c in self.children.get(&k).into_iter().flatten() {
                if seen.insert(*c) {
                    out.push(*c);
                    queue.push_back(*c);
                }
            }
        }
        out
    }

    fn edges_of(&self, id: &NodeId) -> impl Iterator<Item = (&StoredEdge, Ix)> + '_ {
        let ix = self.index.get(id).copied();
        ix.and_then(|ix| self.slot(ix).map(|s| (ix, s)))
            .into_iter()
            .flat_map(move |(ix, s)| {
                s.edges
                    .iter()
                    .filter_map(move |seq| self.edges.get(seq).map(|e| (e, ix)))
            })
    }

    fn node_id(&self, ix: Ix) -> Option<&NodeId> {
        self.slot(ix).map(|s| &s.id)
    }

    /// What a process tree did: its ancestors, descendants, files written and connections.
    pub fn tree(&self, table: &ProcessTable, root: &ProcessKey) -> TreeView {
        let descendants = self.descendants(root);
        let mut files = Vec::new();
        let mut conns = Vec::new();
        for k in std::iter::once(root).chain(descendants.iter()) {
            for (e, ix) in self.edges_of(&NodeId::Process(*k)) {
                if e.from != ix || !e.ok {
                    continue;
                }
                match (e.kind, self.node_id(e.to)) {
                    (EdgeKind::Wrote | EdgeKind::Created, Some(NodeId::File(p)))
                        if !files.contains(p) =>
                    {
                        files.push(p.clone());
                    }
                    (EdgeKind::Connected | EdgeKind::Accepted, Some(NodeId::Endpoint(ep)))
                        if !conns.contains(ep) =>
                    {
                        conns.push(ep.clone());
                    }
                    _ => {}
                }
            }
        }
        TreeView {
            root: Some(*root),
            ancestors: table
                .ancestors(root, usize::MAX)
                .iter()
                .map(|p| p.key)
                .collect(),
            descendants,
            files_written: files,
            connections: conns,
        }
    }

    /// Processes that executed `path`.
    pub fn executors(&self, path: &str) -> Vec<ProcessKey> {
        self.edges_of(&NodeId::File(path.to_owned()))
            .filter(|(e, ix)| e.kind == EdgeKind::Executed && e.to == *ix)
            .filter_map(|(e, _)| match self.node_id(e.from) {
                Some(NodeId::Process(k)) => Some(*k),
                _ => None,
            })
            .collect()
    }

    /// The first process seen writing or creating `path`.
    pub fn first_writer(&self, path: &str) -> Option<ProcessKey> {
        let ix = *self.index.get(&NodeId::File(path.to_owned()))?;
        self.slot(ix)?.first_writer
    }

    /// What `key` did: its outgoing edges, oldest first, as (time, kind, target, success).
    pub fn activity(&self, key: &ProcessKey) -> Vec<(u64, EdgeKind, NodeId, bool)> {
        self.edges_of(&NodeId::Process(*key))
            .filter(|(e, ix)| e.from == *ix)
            .filter_map(|(e, _)| Some((e.boot_ns, e.kind, self.node_id(e.to)?.clone(), e.ok)))
            .collect()
    }

    /// Where `key` renamed `from` to, if it did (a file written aside and renamed over its
    /// target, as `sed -i` and editors do): the latest such rename.
    pub fn renamed_to(&self, key: &ProcessKey, from: &str) -> Option<String> {
        let acts = self.activity(key);
        acts.windows(2).rev().find_map(|w| match (&w[0], &w[1]) {
            (
                (_, EdgeKind::Renamed, NodeId::File(f), true),
                (_, EdgeKind::RenamedTo, NodeId::File(to), true),
            ) if f == from => Some(to.clone()),
            _ => None,
        })
    }

    /// Whether chmod set an execute bit on `path`.
    pub fn made_executable(&self, path: &str) -> bool {
        self.index
            .get(&NodeId::File(path.to_owned()))
            .and_then(|&ix| self.slot(ix))
            .is_some_and(|s| s.made_executable)
    }

    /// Whether `key` has an edge of one of `kinds` to an inet endpoint.
    fn has_inet_edge(&self, key: &ProcessKey, kinds: &[EdgeKind]) -> bool {
        self.has_inet_edge_where(key, kinds, |_| true)
    }

    fn has_inet_edge_where(
        &self,
        key: &ProcessKey,
        kinds: &[EdgeKind],
        addr: impl Fn(&std::net::SocketAddr) -> bool,
    ) -> bool {
        self.edges_of(&NodeId::Process(*key)).any(|(e, ix)| {
            e.from == ix
                && kinds.contains(&e.kind)
                && matches!(
                    self.node_id(e.to),
                    Some(NodeId::Endpoint(Endpoint::Inet { addr: a, .. })) if addr(a)
                )
        })
    }

    /// Whether `key` made (or tried) an inet connection or accepted one.
    pub fn networked(&self, key: &ProcessKey) -> bool {
        self.has_inet_edge(key, &[EdgeKind::Connected, EdgeKind::Accepted])
    }

    /// Whether `key` listened on or accepted from an inet socket: it faces the network.
    /// Whether `key` connected to or accepted from another host, or listens where another
    /// host can reach it: loopback traffic stays on the host.
    pub fn off_host(&self, key: &ProcessKey) -> bool {
        self.has_inet_edge_where(key, &[EdgeKind::Connected, EdgeKind::Accepted], |a| {
            !a.ip().is_loopback()
        }) || self.network_facing(key)
    }

    /// Whether `key` listened on or accepted from an inet socket, loopback included: it
    /// serves (a local application server behind a proxy serves the network too).
    pub fn serving(&self, key: &ProcessKey) -> bool {
        self.has_inet_edge(key, &[EdgeKind::Listened, EdgeKind::Accepted])
    }

    /// Whether `key` can be reached from outside the host: as [`Self::serving`], but a
    /// listener bound only to loopback, and connections accepted from loopback, do not count.
    pub fn network_facing(&self, key: &ProcessKey) -> bool {
        self.has_inet_edge_where(key, &[EdgeKind::Listened, EdgeKind::Accepted], |a| {
            !a.ip().is_loopback()
        })
    }

    pub fn stats(&self) -> GraphStats {
        GraphStats {
            nodes: self.index.len(),
            edges: self.edges.len(),
            edges_evicted: self.evicted,
        }
    }

    fn wire_edge(&self, seq: u64, e: &StoredEdge) -> Option<Edge> {
        Some(Edge {
            seq,
            boot_ns: e.boot_ns,
            kind: e.kind,
            from: self.node_id(e.from)?.clone(),
            to: self.node_id(e.to)?.clone(),
            ok: e.ok,
        })
    }

    fn wire_node(&self, table: &ProcessTable, slot: &Slot) -> Node {
        match &slot.id {
            NodeId::Host => Node::Host {
                hostname: self.hostname.clone(),
            },
            NodeId::User(uid) => Node::User { uid: *uid },
            NodeId::Process(k) => Node::Process(process_node(*k, table.get(k))),
            NodeId::File(path) => Node::File(FileNode {
                path: path.clone(),
                ids: slot.ids.clone(),
                first_writer: slot.first_writer,
            }),
            NodeId::Endpoint(ep) => Node::Endpoint(ep.clone()),
        }
    }

    /// The whole graph, every process of the table included.
    pub fn snapshot(&self, table: &ProcessTable) -> Snapshot {
        let mut nodes: Vec<Node> = self
            .slots
            .iter()
            .flatten()
            .filter(|s| !matches!(s.id, NodeId::Process(_)))
            .map(|s| self.wire_node(table, s))
            .collect();
        nodes.extend(
            table
                .iter()
                .map(|p| Node::Process(process_node(p.key, Some(p)))),
        );
        Snapshot {
            version: GRAPH_SCHEMA_VERSION,
            hostname: self.hostname.clone(),
            nodes,
            edges: self
                .edges
                .iter()
                .filter_map(|(seq, e)| self.wire_edge(seq, e))
                .collect(),
        }
    }

    /// The path of every file the graph holds (executed, written, created, renamed...).
    pub fn file_paths(&self) -> Vec<String> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| match &s.id {
                NodeId::File(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// What changed since the previous call.
    pub fn take_delta(&mut self, table: &ProcessTable) -> Delta {
        let touched: Vec<Ix> = self.touched.drain().collect();
        let upserted = touched
            .into_iter()
            .filter_map(|ix| self.slot(ix).map(|s| self.wire_node(table, s)))
            .collect();
        let edges = self
            .edges
            .since(self.last_delta_edge + 1)
            .filter_map(|(seq, e)| self.wire_edge(seq, e))
            .collect();
        self.last_delta_edge = self.next_seq - 1;
        self.delta_seq += 1;
        Delta {
            version: GRAPH_SCHEMA_VERSION,
            seq: self.delta_seq,
            upserted,
            removed: std::mem::take(&mut self.removed),
            edges,
        }
    }
}

fn process_node(key: ProcessKey, p: Option<&Process>) -> ProcessNode {
    ProcessNode {
        id: key,
        parent: p.and_then(|p| p.parent),
        exe: p.and_then(|p| p.exe.clone()),
        argv: p.map(|p| p.argv.clone()).unwrap_or_default(),
        uid: p.map_or(u32::MAX, |p| p.uid),
        euid: p.map_or(u32::MAX, |p| p.euid),
        exited_ns: p.and_then(|p| p.exit.map(|e| e.boot_ns)),
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::decode::{ExitStatus, Task, testing};

    use super::*;
    use crate::model::process_table::TableLimits;

    fn edge(boot_ns: u64) -> StoredEdge {
        StoredEdge {
            boot_ns,
            kind: EdgeKind::Wrote,
            from: 0,
            to: 1,
            ok: true,
        }
    }

    #[test]
    fn the_edge_log_keeps_order_and_skips_holes() {
        let mut log = EdgeLog::default();
        for seq in 10..15 {
            log.insert(seq, edge(seq));
        }
        assert_eq!((log.len(), log.first_seq()), (5, Some(10)));
        assert!(log.remove(&12).is_some(), "a hole in the middle");
        assert!(log.remove(&12).is_none(), "removed once");
        assert_eq!(log.first_seq(), Some(10));
        assert!(log.remove(&10).is_some());
        assert!(log.remove(&11).is_some());
        assert_eq!(log.first_seq(), Some(13), "the front skips the hole");
        let seqs: Vec<u64> = log.iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![13, 14]);
        let since: Vec<u64> = log
            .since(14)
            .map(|(s, e)| {
                assert_eq!(e.boot_ns, s);
                s
            })
            .collect();
        assert_eq!(since, vec![14]);
        assert!(log.get(&14).is_some() && log.get(&9).is_none() && log.get(&99).is_none());
        log.remove(&13);
        log.remove(&14);
        assert_eq!((log.len(), log.first_seq()), (0, None));
        log.insert(20, edge(20));
        assert_eq!(
            log.first_seq(),
            Some(20),
            "an empty log starts again anywhere"
        );
    }

    fn task(pid: u32, ppid: u32) -> Task {
        testing::task(pid, u64::from(pid), ppid, u64::from(ppid), "t")
    }

    fn write(path: &str) -> What {
        What::Open {
            file: FileRef {
                path: Some(path.into()),
                resolved: true,
                id: None,
                file_type: None,
            },
            flags: 0o101,
            mode: 0o644,
            write: true,
            create: true,
            truncate: false,
            sensitive_read: false,
            target_pid: None,
            sysctl: None,
        }
    }

    #[test]
    fn edges_are_capped_oldest_first_and_orphan_nodes_go() {
        let mut table = ProcessTable::new(1, TableLimits::default());
        let mut g = Graph::new("h".into(), GraphLimits { max_edges: 10 });
        let k = table.on_fork(&task(10, 1));
        for i in 0..50 {
            let p = table.get(&k).cloned().expect("process");
            g.record(i, &p, &write(&format!("/tmp/f{i}")), true, None);
        }
        assert_eq!(g.stats().edges, 10);
        assert_eq!(g.stats().edges_evicted, 40);
        assert!(
            g.first_writer("/tmp/f0").is_none(),
            "an evicted file node is gone"
        );
        assert_eq!(g.first_writer("/tmp/f49"), Some(k));
    }

    /// A table that forgets exited processes at once, an empty graph, and process 10.
    fn forgetful() -> (ProcessTable, Graph, ProcessKey) {
        let mut table = ProcessTable::new(
            1,
            TableLimits {
                retention_ns: 0,
                max_exited: 0,
            },
        );
        let parent = table.on_fork(&task(10, 1));
        (
            table,
            Graph::new("h".into(), GraphLimits::default()),
            parent,
        )
    }

    #[test]
    fn a_long_lived_parent_keeps_only_the_children_not_yet_forgotten() {
        let (mut table, mut g, parent) = forgetful();
        let mut last = None;
        for pid in 100..5100 {
            let child = table.on_fork(&task(pid, 10));
            g.spawned(u64::from(pid), Some(parent), child);
            // The same fork seen twice (a /proc seed racing its event) is one child.
            g.spawned(u64::from(pid), Some(parent), child);
            if let Some(done) = last.replace(pid) {
                table.on_exit(&task(done, 10), 1, ExitStatus::Exited { code: 0 });
                for gone in table.age_out(u64::MAX) {
                    g.forget_process(&gone);
                }
            }
        }
        let kids = g.descendants(&parent);
        assert_eq!(kids.len(), 1, "{kids:?}");
        assert_eq!(kids[0].pid, 5099);
        assert_eq!(g.children.len(), 1);
        assert_eq!(g.parents.len(), 1);
    }

    #[test]
    fn an_aged_out_process_takes_its_edges_and_a_delta_says_so() {
        let (mut table, mut g, parent) = forgetful();
        let child = table.on_fork(&task(11, 10));
        g.spawned(1, Some(parent), child);
        let p = table.get(&child).cloned().expect("child");
        g.record(2, &p, &write("/tmp/x"), true, None);
        assert_eq!(g.descendants(&parent), vec![child]);
        let first = g.take_delta(&table);
        assert_eq!(first.edges.len(), 2);
        table.on_exit(&task(11, 10), 3, ExitStatus::Exited { code: 0 });
        for gone in table.age_out(10) {
            g.forget_process(&gone);
        }
        assert!(g.first_writer("/tmp/x").is_none());
        let second = g.take_delta(&table);
        assert!(second.edges.is_empty());
        assert!(second.removed.contains(&NodeId::Process(child)));
        assert!(second.removed.contains(&NodeId::File("/tmp/x".into())));
        assert_eq!(second.seq, first.seq + 1);
    }
}

#[cfg(test)]
mod facing {
    use sensor_common::decode::testing::task;

    use super::*;
    use crate::{model::events::Net, model::process_table::TableLimits};

    #[test]
    fn a_loopback_listener_serves_but_does_not_face_the_network() {
        let mut t = ProcessTable::new(100, TableLimits::default());
        let local = t.on_fork(&task(10, 1, 1, 0, "app"));
        let public = t.on_fork(&task(11, 1, 1, 0, "web"));
        let mut g = Graph::new("h".into(), GraphLimits::default());
        let listen = |addr: &str| What::Listen {
            net: Net {
                family: "inet".into(),
                protocol: "tcp".into(),
                local: Some(addr.parse().expect("addr")),
                remote: None,
                unix_path: None,
            },
            backlog: 128,
        };
        let p = t.get(&local).expect("app").clone();
        g.record(1, &p, &listen("127.0.0.1:8000"), true, None);
        let p = t.get(&public).expect("web").clone();
        g.record(2, &p, &listen("0.0.0.0:80"), true, None);
        assert!(g.serving(&local) && !g.network_facing(&local));
        assert!(g.serving(&public) && g.network_facing(&public));
    }
}
