//! Hunting: a small query language over the fleet's graphs and their history (everything the
//! hosts sent, aged-out processes included).
//!
//! ```text
//! query  := target [ "where" cond { "and" cond } ]
//! target := "processes" | "execs" | "writes" | "connections"
//! cond   := field op value
//! op     := "=" | "!=" | "contains" | "startswith" | "endswith"
//! value  := "quoted string" | bare-word
//! ```
//!
//! Fields: `host`, `pid`, `exe`, `cmdline`, `uid`, `euid` (the process; for an edge, the
//! process that acted), `parent.F` and `ancestor.F` (any ancestor) of those, and per target:
//! `path` (execs, writes), `addr`, `port` (connections), `ok` (`true`/`false`). Examples:
//!
//! ```text
//! processes where exe endswith "/nc" and ancestor.exe endswith "/nginx"
//! writes where path = "/etc/ld.so.preload"
//! connections where port = 4444
//! connections where addr = 203.0.113.7
//! ```
//!
//! A syntax error names the byte position and what was expected there.

use std::collections::HashMap;

use sensor_common::wire::{Edge, EdgeKind, Endpoint, NodeId, ProcessId, ProcessNode};
use serde::{Deserialize, Serialize};

use crate::store::{EdgeFilter, Hit, Step, Store, StoreError, TextCond, TextOp};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("at {at}: {reason}")]
pub struct HuntError {
    /// Byte offset in the query.
    pub at: usize,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Processes,
    Execs,
    Writes,
    Connections,
}

impl Target {
    /// The edges a target searches (none: processes).
    pub fn kinds(self) -> &'static [EdgeKind] {
        match self {
            Self::Processes => &[],
            Self::Execs => &[EdgeKind::Executed],
            Self::Writes => &[
                EdgeKind::Wrote,
                EdgeKind::Created,
                EdgeKind::RenamedTo,
                EdgeKind::Chmodded,
                EdgeKind::Deleted,
            ],
            Self::Connections => &[EdgeKind::Connected, EdgeKind::Accepted],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Contains,
    StartsWith,
    EndsWith,
}

/// Whose field a condition reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whose {
    /// The process (or the edge's own fields).
    Own,
    Parent,
    Ancestor,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub whose: Whose,
    pub field: String,
    pub op: Op,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub target: Target,
    pub conds: Vec<Cond>,
}

impl Query {
    /// What the store may skip for this query: its own conditions on the edge's host, target
    /// (path or address), port and outcome. Each is tested again on every edge the store
    /// hands over, so this only has to let through a superset; where several conditions name
    /// one field, an `=` narrows most.
    pub fn narrowing(&self) -> EdgeFilter {
        let mut f = EdgeFilter::default();
        let mut target_is_eq = false;
        for c in self.conds.iter().filter(|c| c.whose == Whose::Own) {
            match (c.field.as_str(), c.op) {
                ("host", Op::Eq) => f.host = Some(c.value.clone()),
                // Only a port written as the hunt prints it: `= 04444` matches nothing there.
                ("port", Op::Eq) => {
                    if let Ok(port) = c.value.parse::<u16>()
                        && port.to_string() == c.value
                    {
                        f.port = Some(port);
                    }
                }
                ("ok", Op::Eq) => f.ok = c.value.parse().ok(),
                ("path" | "addr", op) if !c.value.is_empty() && !target_is_eq => {
                    let op = match op {
                        Op::Eq => TextOp::Eq,
                        Op::Contains => TextOp::Contains,
                        Op::StartsWith => TextOp::StartsWith,
                        Op::EndsWith => TextOp::EndsWith,
                        Op::Ne => continue,
                    };
                    target_is_eq = op == TextOp::Eq;
                    f.target = Some(TextCond {
                        op,
                        value: c.value.clone(),
                    });
                }
                _ => {}
            }
        }
        f
    }
}

const PROCESS_FIELDS: &[&str] = &["host", "pid", "exe", "cmdline", "uid", "euid"];

fn target_fields(t: Target) -> &'static [&'static str] {
    match t {
        Target::Processes => &[],
        Target::Execs | Target::Writes => &["path", "ok"],
        Target::Connections => &["addr", "port", "ok"],
    }
}

/// Splits a query into words with their byte offsets; quoted strings are one word.
fn words(q: &str) -> Result<Vec<(usize, String, bool)>, HuntError> {
    let mut out = Vec::new();
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if b[i] == b'"' {
            i += 1;
            let mut text = String::new();
            loop {
                match q[i..].chars().next() {
                    None => {
                        return Err(HuntError {
                            at: start,
                            reason: "this quoted string is never closed".into(),
                        });
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') if q[i + 1..].starts_with(['"', '\\']) => {
                        text.push(q.as_bytes()[i + 1] as char);
                        i += 2;
                    }
                    Some(c) => {
                        text.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            out.push((start, text, true));
            continue;
        }
        // Operators stand alone even without spaces around them.
        if let Some(op) = ["!=", "="].iter().find(|op| q[i..].starts_with(**op)) {
            out.push((start, (*op).to_owned(), false));
            i += op.len();
            continue;
        }
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'!' {
            i += q[i..].chars().next().map_or(1, char::len_utf8);
        }
        if i == start {
            // A lone '!' not followed by '='.
            return Err(HuntError {
                at: start,
                reason: "expected `!=`".into(),
            });
        }
        out.push((start, q[start..i].to_owned(), false));
    }
    Ok(out)
}

/// Parses a query; an error names the position and the reason.
// Long by design: the hunt language's grammar in one place, target, conditions and their operators.
pub fn parse(q: &str) -> Result<Query, HuntError> {
    let w = words(q)?;
    let end = q.len();
    let mut it = w.into_iter().peekable();
    let err = |at: usize, reason: String| Err(HuntError { at, reason });
    let target = match it.next() {
        Some((at, t, false)) => match t.as_str() {
            "processes" => Target::Processes,
            "execs" => Target::Execs,
            "writes" => Target::Writes,
            "connections" => Target::Connections,
            other => {
                return err(
                    at,
                    format!(
                        "unknown target {other:?}: expected processes, execs, writes or connections"
                    ),
                );
            }
        },
        Some((at, _, true)) => {
            return err(at, "a query starts with its target, not a string".into());
        }
        None => {
            return err(
                0,
                "empty query: expected processes, execs, writes or connections".into(),
            );
        }
    };
    let mut conds = Vec::new();
    match it.next() {
        None => return Ok(Query { target, conds }),
        Some((_, word, false)) if word == "where" => {}
        Some((at, word, _)) => return err(at, format!("expected `where`, found {word:?}")),
    }
    loop {
        let Some((at, field, quoted)) = it.next() else {
            return err(end, "expected a field".into());
        };
        if quoted {
            return err(at, "expected a field, found a string".into());
        }
        let (whose, name) = match field.split_once('.') {
            Some(("parent", f)) => (Whose::Parent, f),
            Some(("ancestor", f)) => (Whose::Ancestor, f),
            Some((p, _)) => {
                return err(
                    at,
                    format!("unknown prefix {p:?}: expected parent. or ancestor."),
                );
            }
            None => (Whose::Own, field.as_str()),
        };
        let known = PROCESS_FIELDS.contains(&name)
            || (whose == Whose::Own && target_fields(target).contains(&name));
        if !known {
            let mut all: Vec<&str> = PROCESS_FIELDS.to_vec();
            if whose == Whose::Own {
                all.extend(target_fields(target));
            }
            return err(
                at,
                format!(
                    "unknown field {field:?} here: expected one of {}",
                    all.join(", ")
                ),
            );
        }
        let Some((at, op, false)) = it.next() else {
            return err(
                end,
                "expected an operator (=, !=, contains, startswith, endswith)".into(),
            );
        };
        let op = match op.as_str() {
            "=" => Op::Eq,
            "!=" => Op::Ne,
            "contains" => Op::Contains,
            "startswith" => Op::StartsWith,
            "endswith" => Op::EndsWith,
            other => {
                return err(
                    at,
                    format!(
                        "unknown operator {other:?}: expected =, !=, contains, startswith or endswith"
                    ),
                );
            }
        };
        let value = match it.next() {
            None => return err(end, "expected a value".into()),
            Some((at, v, false)) if v == "=" || v == "!=" => {
                return err(at, format!("expected a value, found `{v}`"));
            }
            Some((_, v, _)) => v,
        };
        conds.push(Cond {
            whose,
            field: name.to_owned(),
            op,
            value,
        });
        match it.next() {
            None => break,
            Some((_, w, false)) if w == "and" => {}
            Some((at, w, _)) => return err(at, format!("expected `and` or the end, found {w:?}")),
        }
    }
    Ok(Query { target, conds })
}

/// What a search found and how much it read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub hits: Vec<Hit>,
    pub edges_searched: usize,
    pub hosts: usize,
    pub millis: u64,
}

impl Fleet {
    /// The fleet's processes from the store, joined across hosts when `lateral` (which reads
    /// the connection edges of the whole history).
    pub fn load(store: &dyn Store, lateral: bool) -> Result<Self, StoreError> {
        let addresses = Self::addresses(store)?;
        let mut joins = Lateral::default();
        if lateral {
            store.scan_edges(Lateral::KINDS, &EdgeFilter::default(), &mut |h, e| {
                joins.add(h, &e);
            })?;
        }
        Ok(Self::new(store.processes()?).with_lateral(addresses, joins))
    }

    /// Each enrolled host's addresses.
    fn addresses(store: &dyn Store) -> Result<HashMap<String, Vec<std::net::IpAddr>>, StoreError> {
        Ok(store
            .hosts()?
            .iter()
            .map(|h| (h.id.clone(), h.report.addresses.clone()))
            .collect())
    }

    /// The processes `edges` were made by, and their ancestors on their own hosts: enough
    /// for every condition but `ancestor.` across hosts (which needs [`Fleet::load`]).
    pub fn load_for(store: &dyn Store, edges: &[(String, Edge)]) -> Result<Self, StoreError> {
        let addresses = Self::addresses(store)?;
        let mut wanted: HashMap<String, Vec<ProcessId>> = HashMap::new();
        for (host, e) in edges {
            if let NodeId::Process(p) = &e.from {
                wanted.entry(host.clone()).or_default().push(*p);
            }
        }
        let mut procs: HashMap<(String, ProcessId), ProcessNode> = HashMap::new();
        for _ in 0..=MAX_DEPTH {
            let mut next: HashMap<String, Vec<ProcessId>> = HashMap::new();
            for (host, mut ids) in wanted {
                ids.sort_unstable();
                ids.dedup();
                ids.retain(|id| !procs.contains_key(&(host.clone(), *id)));
                for node in store.processes_of(&host, &ids)? {
                    if let Some(parent) = node.parent {
                        next.entry(host.clone()).or_default().push(parent);
                    }
                    procs.insert((host.clone(), node.id), node);
                }
            }
            if next.is_empty() {
                break;
            }
            wanted = next;
        }
        Ok(Self {
            procs,
            addresses,
            lateral: Lateral::default(),
        })
    }

    /// How many hosts the fleet knows the addresses of (every enrolled one, once loaded).
    pub fn hosts(&self) -> usize {
        self.addresses.len()
    }
}

/// Edges a narrowed search holds at most before it reads the fleet whole instead.
const NARROWED_MAX: usize = 100_000;

/// How often a search reports its progress, in edges read.
pub const PROGRESS_EVERY: usize = 100_000;

/// Runs `q` over the store: the fleet's processes, or its edges of the target's kinds,
/// streamed; `progress` hears the count of edges read every [`PROGRESS_EVERY`].
///
/// When the store can narrow the edges (a port, a path, an address, a host named) and no
/// condition walks ancestors across hosts, only the processes the edges it hands over name
/// are loaded, with their ancestors: an indicator hunt over millions of edges reads a few
/// rows, not the fleet.
pub fn search(
    store: &dyn Store,
    q: &Query,
    progress: &mut dyn FnMut(usize),
) -> Result<Outcome, StoreError> {
    let started = std::time::Instant::now();
    let narrowing = q.narrowing();
    let (mut hits, mut searched) = (Vec::new(), 0usize);
    let fleet = match narrowed(store, q, &narrowing)? {
        Some(candidates) => {
            searched = candidates.len();
            let fleet = Fleet::load_for(store, &candidates)?;
            hits = candidates
                .iter()
                .filter_map(|(h, e)| fleet.edge_hit(q, h, e))
                .collect();
            fleet
        }
        None => {
            let fleet = Fleet::load(store, Fleet::needs_lateral(q))?;
            if q.target == Target::Processes {
                hits = fleet.processes(q);
            } else {
                store.scan_edges(q.target.kinds(), &narrowing, &mut |h, e| {
                    searched += 1;
                    if searched.is_multiple_of(PROGRESS_EVERY) {
                        progress(searched);
                    }
                    hits.extend(fleet.edge_hit(q, h, &e));
                })?;
            }
            fleet
        }
    };
    crate::metrics::live()
        .hunt_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(Outcome {
        hits,
        edges_searched: searched,
        hosts: fleet.hosts(),
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The edges the store narrowed `q` to, when it can narrow them (a host, port, path or
/// address named), no condition walks ancestors across hosts, and they are at most
/// [`NARROWED_MAX`]; `None` when the search must read the fleet whole.
fn narrowed(
    store: &dyn Store,
    q: &Query,
    narrowing: &EdgeFilter,
) -> Result<Option<Vec<(String, Edge)>>, StoreError> {
    let narrows =
        narrowing.host.is_some() || narrowing.port.is_some() || narrowing.target.is_some();
    if q.target == Target::Processes || !narrows || Fleet::needs_lateral(q) {
        return Ok(None);
    }
    let (mut candidates, mut overflow) = (Vec::new(), false);
    store.scan_edges(q.target.kinds(), narrowing, &mut |h, e| {
        if candidates.len() < NARROWED_MAX {
            candidates.push((h.to_owned(), e));
        } else {
            overflow = true;
        }
    })?;
    Ok((!overflow).then_some(candidates))
}

/// The edges that join hosts: who connected where, who accepted from whom, who listens.
#[derive(Default)]
pub struct Lateral {
    /// (remote ip, remote port) -> (host, connecting process), in edge order.
    connects: HashMap<(std::net::IpAddr, u16), Vec<(String, ProcessId)>>,
    /// (host, process) -> peers it accepted from.
    accepted: HashMap<(String, ProcessId), Vec<std::net::IpAddr>>,
    /// (host, process) -> local ports it listened on or bound.
    listens: HashMap<(String, ProcessId), Vec<u16>>,
}

impl Lateral {
    pub const KINDS: &'static [EdgeKind] = &[
        EdgeKind::Connected,
        EdgeKind::Accepted,
        EdgeKind::Listened,
        EdgeKind::Bound,
    ];

    /// From the edges of [`Lateral::KINDS`], of every host (the server streams them through
    /// [`Lateral::add`] instead).
    #[cfg(test)]
    pub fn new(edges: &[(String, Edge)]) -> Self {
        let mut l = Self::default();
        for (host, e) in edges {
            l.add(host, e);
        }
        l
    }

    /// Takes in one edge (those not of [`Lateral::KINDS`] are ignored).
    pub fn add(&mut self, host: &str, e: &Edge) {
        let (NodeId::Process(p), NodeId::Endpoint(Endpoint::Inet { addr, .. })) = (&e.from, &e.to)
        else {
            return;
        };
        let key = (host.to_owned(), *p);
        match e.kind {
            EdgeKind::Connected if e.ok => self
                .connects
                .entry((addr.ip().to_canonical(), addr.port()))
                .or_default()
                .push(key),
            EdgeKind::Accepted => self
                .accepted
                .entry(key)
                .or_default()
                .push(addr.ip().to_canonical()),
            EdgeKind::Listened | EdgeKind::Bound => {
                self.listens.entry(key).or_default().push(addr.port());
            }
            _ => {}
        }
    }
}

/// The processes of the fleet, by host and identity, for lineage, and what joins hosts.
pub struct Fleet {
    procs: HashMap<(String, ProcessId), ProcessNode>,
    /// Each host's addresses.
    addresses: HashMap<String, Vec<std::net::IpAddr>>,
    lateral: Lateral,
}

/// Ancestors walked at most (pid reuse cannot loop a walk by identity, but a bad record
/// could).
const MAX_DEPTH: usize = 64;

impl Fleet {
    pub fn new(processes: Vec<(String, ProcessNode)>) -> Self {
        Self {
            procs: processes.into_iter().map(|(h, p)| ((h, p.id), p)).collect(),
            addresses: HashMap::new(),
            lateral: Lateral::default(),
        }
    }

    /// Joins hosts: a process that accepted a connection from another host's address, on a
    /// port it listens on, descends from the process there that connected to this host's
    /// address and port (the latest such, when several did).
    pub fn with_lateral(
        mut self,
        addresses: HashMap<String, Vec<std::net::IpAddr>>,
        lateral: Lateral,
    ) -> Self {
        self.addresses = addresses;
        self.lateral = lateral;
        self
    }

    /// The process on another host whose connection `id` on `host` accepted.
    fn remote_parent(&self, host: &str, id: ProcessId) -> Option<(&str, &ProcessNode)> {
        let key = (host.to_owned(), id);
        let peers = self.lateral.accepted.get(&key)?;
        let ports = self.lateral.listens.get(&key)?;
        let mine = self.addresses.get(host)?;
        for peer in peers.iter().rev() {
            let Some((other, _)) = self
                .addresses
                .iter()
                .find(|(h, ips)| h.as_str() != host && ips.contains(peer))
            else {
                continue;
            };
            for ip in mine {
                for port in ports {
                    let found = self
                        .lateral
                        .connects
                        .get(&(*ip, *port))
                        .and_then(|v| v.iter().rev().find(|(h, _)| h == other));
                    if let Some((h, p)) = found
                        && let Some(node) = self.get(h, *p)
                    {
                        return Some((h.as_str(), node));
                    }
                }
            }
        }
        None
    }

    /// The next step up from `p` on `host`: across hosts when it accepted a connection made
    /// there, else its parent.
    fn up<'a>(
        &'a self,
        host: &'a str,
        p: &ProcessNode,
    ) -> Option<(&'a str, &'a ProcessNode, &'static str)> {
        if let Some((h, n)) = self.remote_parent(host, p.id) {
            return Some((h, n, "connected"));
        }
        let parent = p.parent.and_then(|id| self.get(host, id))?;
        Some((host, parent, "parent"))
    }

    /// The path that led to `p`, itself first, across hosts.
    pub fn lineage(&self, host: &str, p: &ProcessNode) -> Vec<Step> {
        let mut cur = self.up(host, p);
        let mut out = vec![Step {
            host: host.to_owned(),
            pid: p.id.pid,
            start: p.id.start,
            exe: p.exe.clone(),
            via: cur.map_or("", |c| c.2).to_owned(),
        }];
        for _ in 0..MAX_DEPTH {
            let Some((h, n, _)) = cur else { break };
            let next = self.up(h, n);
            out.push(Step {
                host: h.to_owned(),
                pid: n.id.pid,
                start: n.id.start,
                exe: n.exe.clone(),
                via: next.map_or("", |c| c.2).to_owned(),
            });
            cur = next;
        }
        out
    }

    pub fn get(&self, host: &str, id: ProcessId) -> Option<&ProcessNode> {
        self.procs.get(&(host.to_owned(), id))
    }

    fn process_field(host: &str, p: &ProcessNode, field: &str) -> Option<String> {
        Some(match field {
            "host" => host.to_owned(),
            "pid" => p.id.pid.to_string(),
            "exe" => p.exe.clone()?,
            "cmdline" => p.argv.join(" "),
            "uid" => p.uid.to_string(),
            "euid" => p.euid.to_string(),
            _ => return None,
        })
    }

    fn test(op: Op, have: Option<&str>, want: &str) -> bool {
        match (op, have) {
            (Op::Ne, None) => true,
            (_, None) => false,
            (Op::Eq, Some(h)) => h == want,
            (Op::Ne, Some(h)) => h != want,
            (Op::Contains, Some(h)) => h.contains(want),
            (Op::StartsWith, Some(h)) => h.starts_with(want),
            (Op::EndsWith, Some(h)) => h.ends_with(want),
        }
    }

    /// Whether process `p` of `host` (with the edge's own fields in `own`) meets `c`.
    fn meets(
        &self,
        host: &str,
        p: &ProcessNode,
        own: &dyn Fn(&str) -> Option<String>,
        c: &Cond,
    ) -> bool {
        match c.whose {
            Whose::Own => {
                let v = own(&c.field).or_else(|| Self::process_field(host, p, &c.field));
                Self::test(c.op, v.as_deref(), &c.value)
            }
            Whose::Parent => {
                let parent = p.parent.and_then(|id| self.get(host, id));
                let v = parent.and_then(|pp| Self::process_field(host, pp, &c.field));
                Self::test(c.op, v.as_deref(), &c.value)
            }
            Whose::Ancestor => {
                // Up the path, across hosts where a connection leads there.
                let mut cur = self.up(host, p);
                for _ in 0..MAX_DEPTH {
                    let Some((h, a, _)) = cur else { break };
                    let v = Self::process_field(h, a, &c.field);
                    if Self::test(c.op, v.as_deref(), &c.value) {
                        return true;
                    }
                    cur = self.up(h, a);
                }
                false
            }
        }
    }

    fn hit(&self, host: &str, p: &ProcessNode) -> Hit {
        Hit {
            host: host.to_owned(),
            pid: p.id.pid,
            start: p.id.start,
            exe: p.exe.clone(),
            cmdline: p.argv.join(" "),
            target: None,
            kind: None,
            boot_ns: None,
            path: self.lineage(host, p),
        }
    }

    /// Whether `q` walks ancestors (and so needs the edges that join hosts).
    pub fn needs_lateral(q: &Query) -> bool {
        q.conds.iter().any(|c| c.whose == Whose::Ancestor)
    }

    /// Runs `q` over the fleet's processes, or over `edges` (those of `q.target.kinds()`).
    /// The server streams edges through [`Fleet::edge_hit`] instead.
    pub fn run(&self, q: &Query, edges: &[(String, Edge)]) -> Vec<Hit> {
        if q.target == Target::Processes {
            return self.processes(q);
        }
        edges
            .iter()
            .filter_map(|(host, e)| self.edge_hit(q, host, e))
            .collect()
    }

    /// The processes that meet `q` (a `processes` query).
    pub fn processes(&self, q: &Query) -> Vec<Hit> {
        let none = |_: &str| None;
        let mut hits: Vec<Hit> = self
            .procs
            .iter()
            .filter(|((h, _), p)| q.conds.iter().all(|c| self.meets(h, p, &none, c)))
            .map(|((h, _), p)| self.hit(h, p))
            .collect();
        hits.sort_by(|a, b| (&a.host, a.start, a.pid).cmp(&(&b.host, b.start, b.pid)));
        hits
    }

    /// The hit an edge of `host` makes for `q`, if it meets it.
    pub fn edge_hit(&self, q: &Query, host: &str, e: &Edge) -> Option<Hit> {
        let NodeId::Process(actor) = &e.from else {
            return None;
        };
        let unknown = ProcessNode {
            id: *actor,
            parent: None,
            exe: None,
            argv: Vec::new(),
            uid: u32::MAX,
            euid: u32::MAX,
            exited_ns: None,
        };
        let p = self.get(host, *actor).unwrap_or(&unknown);
        let own = |field: &str| -> Option<String> {
            match (field, &e.to) {
                ("path", NodeId::File(path)) => Some(path.clone()),
                ("addr", NodeId::Endpoint(Endpoint::Inet { addr, .. })) => {
                    Some(addr.ip().to_canonical().to_string())
                }
                ("port", NodeId::Endpoint(Endpoint::Inet { addr, .. })) => {
                    Some(addr.port().to_string())
                }
                ("ok", _) => Some(e.ok.to_string()),
                _ => None,
            }
        };
        if !q.conds.iter().all(|c| self.meets(host, p, &own, c)) {
            return None;
        }
        let target = match &e.to {
            NodeId::File(path) => Some(path.clone()),
            NodeId::Endpoint(Endpoint::Inet { addr, .. }) => Some(addr.to_string()),
            NodeId::Endpoint(Endpoint::Unix { path }) => Some(path.clone()),
            _ => None,
        };
        Some(Hit {
            target,
            kind: Some(e.kind),
            boot_ns: Some(e.boot_ns),
            ..self.hit(host, p)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, parent: Option<u32>, exe: &str) -> (String, ProcessNode) {
        (
            "h1".into(),
            ProcessNode {
                id: ProcessId { pid, start: 1 },
                parent: parent.map(|p| ProcessId { pid: p, start: 1 }),
                exe: Some(exe.into()),
                argv: vec![exe.into(), "-x".into()],
                uid: 0,
                euid: 0,
                exited_ns: None,
            },
        )
    }

    #[test]
    fn queries_parse_and_errors_name_the_place() {
        let q = parse(r#"processes where exe endswith "/nc" and ancestor.exe = /usr/sbin/nginx"#)
            .expect("parses");
        assert_eq!(q.target, Target::Processes);
        assert_eq!(q.conds.len(), 2);
        assert_eq!(q.conds[1].whose, Whose::Ancestor);
        assert_eq!(
            parse("connections where port=4444").expect("parses").conds[0].value,
            "4444"
        );
        for (bad, at, says) in [
            ("", 0, "empty"),
            ("proceses", 0, "unknown target"),
            ("writes wher path = x", 7, "expected `where`"),
            ("writes where pth = x", 13, "unknown field"),
            ("writes where path == x", 19, "expected a value"),
            ("writes where path is x", 18, "unknown operator"),
            ("writes where path = \"x", 20, "never closed"),
            ("writes where path = x or y", 22, "expected `and`"),
            ("processes where port = 1", 16, "unknown field"),
            ("writes where path =", 19, "expected a value"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.at, at, "{bad}: {e}");
            assert!(e.reason.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_connection_accepted_from_another_host_continues_the_path_there() {
        let node = |host: &str, pid: u32, parent: Option<u32>, exe: &str, arg: &str| {
            (
                host.to_owned(),
                ProcessNode {
                    id: ProcessId { pid, start: 1 },
                    parent: parent.map(|p| ProcessId { pid: p, start: 1 }),
                    exe: Some(exe.into()),
                    argv: vec![exe.into(), arg.into()],
                    uid: 0,
                    euid: 0,
                    exited_ns: None,
                },
            )
        };
        let edge = |host: &str, pid: u32, kind, addr: &str| {
            (
                host.to_owned(),
                Edge {
                    seq: 1,
                    boot_ns: 1,
                    kind,
                    from: NodeId::Process(ProcessId { pid, start: 1 }),
                    to: NodeId::Endpoint(Endpoint::Inet {
                        protocol: "tcp".into(),
                        addr: addr.parse().expect("addr"),
                    }),
                    ok: true,
                },
            )
        };
        let procs = vec![
            node("a", 10, None, "/bin/bash", "mark-a"),
            node("a", 11, Some(10), "/usr/bin/curl", "x"),
            node("b", 20, None, "/usr/sbin/server", "x"),
            node("b", 21, Some(20), "/bin/sh", "x"),
            node("c", 30, None, "/bin/sh", "x"),
        ];
        let lateral = Lateral::new(&[
            edge("a", 11, EdgeKind::Connected, "10.0.0.2:8080"),
            edge("b", 20, EdgeKind::Listened, "0.0.0.0:8080"),
            edge("b", 20, EdgeKind::Accepted, "10.0.0.1:5555"),
        ]);
        let addresses = HashMap::from([
            ("a".to_owned(), vec!["10.0.0.1".parse().expect("ip")]),
            ("b".to_owned(), vec!["10.0.0.2".parse().expect("ip")]),
            ("c".to_owned(), vec!["10.0.0.3".parse().expect("ip")]),
        ]);
        let fleet = Fleet::new(procs).with_lateral(addresses, lateral);
        let q = parse("processes where exe = /bin/sh and ancestor.cmdline contains mark-a")
            .expect("parses");
        let hits = fleet.run(&q, &[]);
        assert_eq!(hits.len(), 1, "{hits:?}");
        let path: Vec<(&str, u32, &str)> = hits[0]
            .path
            .iter()
            .map(|s| (s.host.as_str(), s.pid, s.via.as_str()))
            .collect();
        assert_eq!(
            path,
            vec![
                ("b", 21, "parent"),
                ("b", 20, "connected"),
                ("a", 11, "parent"),
                ("a", 10, "")
            ]
        );
    }

    #[test]
    fn lineage_and_edges_are_searched() {
        let fleet = Fleet::new(vec![
            proc(1, None, "/usr/sbin/nginx"),
            proc(2, Some(1), "/bin/sh"),
            proc(3, Some(2), "/usr/bin/nc"),
            proc(4, None, "/usr/bin/nc"),
        ]);
        let q = parse(r#"processes where exe endswith "/nc" and ancestor.exe endswith nginx"#)
            .expect("parses");
        let hits = fleet.run(&q, &[]);
        assert_eq!(hits.iter().map(|h| h.pid).collect::<Vec<_>>(), vec![3]);
        let edge = |to: NodeId| {
            (
                "h1".to_owned(),
                Edge {
                    seq: 1,
                    boot_ns: 5,
                    kind: EdgeKind::Connected,
                    from: NodeId::Process(ProcessId { pid: 3, start: 1 }),
                    to,
                    ok: true,
                },
            )
        };
        let edges = vec![
            edge(NodeId::Endpoint(Endpoint::Inet {
                protocol: "tcp".into(),
                addr: "203.0.113.7:4444".parse().expect("addr"),
            })),
            edge(NodeId::Endpoint(Endpoint::Inet {
                protocol: "tcp".into(),
                addr: "203.0.113.7:443".parse().expect("addr"),
            })),
        ];
        let q = parse("connections where port = 4444 and parent.exe = /bin/sh").expect("parses");
        let hits = fleet.run(&q, &edges);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].target.as_deref(), Some("203.0.113.7:4444"));
        let q = parse("connections where addr = 203.0.113.7").expect("parses");
        assert_eq!(fleet.run(&q, &edges).len(), 2);
    }
}
