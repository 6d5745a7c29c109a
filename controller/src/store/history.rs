//! The fleet's graph history in SQLite: every edge the hosts sent, in typed columns, with
//! the strings it names (paths, addresses, host ids, kinds) kept once in a dictionary and
//! referred to by id.
//!
//! A hunt's condition on a path or an address is evaluated on the dictionary first (a few
//! thousand strings where the history holds millions of edges), then the edges are looked up
//! by id through an index; a port is looked up through its own index. What the store cannot
//! narrow it hands over whole, oldest first, and the hunt's own test decides; the filter here
//! only ever passes a superset of what the hunt keeps.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _, Transaction, params};
use sensor_common::wire::{Edge, EdgeKind, Endpoint, NodeId, ProcessId};

use super::{StoreError, i, u};

/// The schema version [`migrate`] brings a store to (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS strings (
    id INTEGER PRIMARY KEY,
    s TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS partitions (
    id INTEGER PRIMARY KEY,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    edges INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// The history is cut into partitions of about this many edges, each a table with its own
/// indexes: an index insert lands in a tree that fits in memory however long the history
/// grows, and retention drops whole partitions, oldest first.
pub const PARTITION_EDGES: u64 = 1_000_000;

/// The table of partition `id` and its indexes (`id` is the store's own integer).
fn partition_ddl(id: i64) -> String {
    format!(
        "CREATE TABLE edges_{id} (
            id INTEGER PRIMARY KEY,
            at_ns INTEGER NOT NULL,
            host INTEGER NOT NULL,
            kind INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            boot_ns INTEGER NOT NULL,
            f_type INTEGER NOT NULL,
            f_num INTEGER,
            f_start INTEGER,
            f_str INTEGER,
            t_type INTEGER NOT NULL,
            t_num INTEGER,
            t_start INTEGER,
            t_str INTEGER,
            t_port INTEGER,
            t_proto INTEGER
        );
        CREATE INDEX edges_{id}_by_kind ON edges_{id} (kind);
        CREATE INDEX edges_{id}_by_target ON edges_{id} (t_str, kind);
        CREATE INDEX edges_{id}_by_port ON edges_{id} (t_port, kind) WHERE t_port IS NOT NULL;
        CREATE INDEX edges_{id}_by_host ON edges_{id} (host, kind);"
    )
}

/// A node's identity in columns: its type, and what names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NodeType {
    Host = 0,
    User = 1,
    Process = 2,
    File = 3,
    Inet = 4,
    Unix = 5,
}

impl NodeType {
    fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Host,
            1 => Self::User,
            2 => Self::Process,
            3 => Self::File,
            4 => Self::Inet,
            5 => Self::Unix,
            _ => return None,
        })
    }
}

/// How a text condition compares (`!=` is never narrowed: it matches nearly everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOp {
    Eq,
    Contains,
    StartsWith,
    EndsWith,
}

/// A condition on the text an edge points at: a file's or a Unix socket's path, or an
/// internet endpoint's address (canonical: an IPv4-mapped IPv6 address reads as IPv4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextCond {
    pub op: TextOp,
    pub value: String,
}

/// What a scan may skip: every field left `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeFilter {
    pub host: Option<String>,
    pub target: Option<TextCond>,
    pub port: Option<u16>,
    pub ok: Option<bool>,
}

/// How much history to keep: the oldest edges go first once either bound is passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Edges merged longer ago than this are dropped.
    pub max_age_ns: Option<u64>,
    /// At most this many edges are kept.
    pub max_edges: Option<u64>,
}

/// What a pass of [`Retention`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub dropped: u64,
    /// Every edge dropped since the store was made.
    pub dropped_total: u64,
    pub kept: u64,
}

/// What the writer keeps between transactions: the dictionary's ids it already knows (so
/// most strings cost no query; bounded, it starts over when full, and an id is looked up
/// again, never made twice) and the partition it appends to.
pub struct Writer {
    partition_edges: u64,
    /// The partition edges go to, and how many it holds.
    current: Option<(i64, u64)>,
    ids: HashMap<String, i64>,
    /// The same for the two things nearly every edge names, without making their text.
    kinds: HashMap<EdgeKind, i64>,
    addresses: HashMap<std::net::IpAddr, i64>,
}

const DICTIONARY_CACHE: usize = 500_000;

impl Writer {
    /// A writer cutting partitions of `partition_edges` (at least 1).
    pub fn new(partition_edges: u64) -> Self {
        Self {
            partition_edges: partition_edges.max(1),
            current: None,
            ids: HashMap::new(),
            kinds: HashMap::new(),
            addresses: HashMap::new(),
        }
    }

    /// Forgets what it knows: after a rolled-back transaction some of the ids and the
    /// partition were never stored, and after a prune the partition may be gone.
    pub fn forget(&mut self) {
        self.current = None;
        self.ids.clear();
        self.kinds.clear();
        self.addresses.clear();
    }

    /// The partition to append to: the newest, or a new one once the newest is full.
    fn partition(&mut self, tx: &Transaction<'_>, at_ns: u64) -> Result<i64, StoreError> {
        if self.current.is_none() {
            self.current = tx
                .query_row(
                    "SELECT id, edges FROM partitions ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, u(r.get(1)?))),
                )
                .optional()?;
        }
        match self.current {
            Some((id, held)) if held < self.partition_edges => Ok(id),
            _ => {
                tx.execute(
                    "INSERT INTO partitions (first_ns, last_ns, edges) VALUES (?1, ?1, 0)",
                    [i(at_ns)],
                )?;
                let id = tx.last_insert_rowid();
                tx.execute_batch(&partition_ddl(id))?;
                self.current = Some((id, 0));
                Ok(id)
            }
        }
    }

    fn kind(&mut self, tx: &Transaction<'_>, kind: EdgeKind) -> Result<i64, StoreError> {
        if let Some(&id) = self.kinds.get(&kind) {
            return Ok(id);
        }
        let id = self.id(tx, &kind_name(kind)?)?;
        self.kinds.insert(kind, id);
        Ok(id)
    }

    fn address(&mut self, tx: &Transaction<'_>, ip: std::net::IpAddr) -> Result<i64, StoreError> {
        if let Some(&id) = self.addresses.get(&ip) {
            return Ok(id);
        }
        let id = self.id(tx, &ip.to_string())?;
        if self.addresses.len() >= DICTIONARY_CACHE {
            self.addresses.clear();
        }
        self.addresses.insert(ip, id);
        Ok(id)
    }

    fn id(&mut self, tx: &Transaction<'_>, s: &str) -> Result<i64, StoreError> {
        if let Some(&id) = self.ids.get(s) {
            return Ok(id);
        }
        let id = match string_id(tx, s)? {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO strings (s) VALUES (?1)")?
                    .execute([s])?;
                tx.last_insert_rowid()
            }
        };
        if self.ids.len() >= DICTIONARY_CACHE {
            self.ids.clear();
        }
        self.ids.insert(s.to_owned(), id);
        Ok(id)
    }
}

pub(super) fn kind_name(kind: EdgeKind) -> Result<String, StoreError> {
    match serde_json::to_value(kind)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

/// The dictionary's id of `s`, if it holds it.
fn string_id(db: &Connection, s: &str) -> Result<Option<i64>, StoreError> {
    Ok(db
        .prepare_cached("SELECT id FROM strings WHERE s = ?1")?
        .query_row([s], |r| r.get(0))
        .optional()?)
}

/// A node in columns: (type, number, start, string id, port, protocol id).
pub(super) type NodeCols = (
    NodeType,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<u16>,
    Option<i64>,
);

/// A string a node names, as the dictionary is asked for it (an address is kept apart so a
/// writer can cache it without making its text).
pub(super) enum Text<'a> {
    Str(&'a str),
    Ip(std::net::IpAddr),
}

/// `n` in columns, its strings turned into dictionary ids by `id`. One mapping for every
/// backend.
pub(super) fn encode_node(
    n: &NodeId,
    id: &mut dyn FnMut(Text<'_>) -> Result<i64, StoreError>,
) -> Result<NodeCols, StoreError> {
    Ok(match n {
        NodeId::Host => (NodeType::Host, None, None, None, None, None),
        NodeId::User(uid) => (
            NodeType::User,
            Some(i64::from(*uid)),
            None,
            None,
            None,
            None,
        ),
        NodeId::Process(p) => (
            NodeType::Process,
            Some(i64::from(p.pid)),
            Some(i(p.start)),
            None,
            None,
            None,
        ),
        NodeId::File(path) => (
            NodeType::File,
            None,
            None,
            Some(id(Text::Str(path))?),
            None,
            None,
        ),
        NodeId::Endpoint(Endpoint::Inet { protocol, addr }) => {
            let ip = addr.ip();
            let canonical = ip.to_canonical();
            // 1: the sensor sent an IPv4-mapped IPv6 address, kept as such on the way out.
            let mapped = (canonical != ip).then_some(1);
            (
                NodeType::Inet,
                mapped,
                None,
                Some(id(Text::Ip(canonical))?),
                Some(addr.port()),
                Some(id(Text::Str(protocol))?),
            )
        }
        NodeId::Endpoint(Endpoint::Unix { path }) => (
            NodeType::Unix,
            None,
            None,
            Some(id(Text::Str(path))?),
            None,
            None,
        ),
    })
}

fn node_cols(dict: &mut Writer, tx: &Transaction<'_>, n: &NodeId) -> Result<NodeCols, StoreError> {
    encode_node(n, &mut |t| match t {
        Text::Str(s) => dict.id(tx, s),
        Text::Ip(ip) => dict.address(tx, ip),
    })
}

/// Appends `edges` of `host`, merged at `at_ns`, inside the caller's transaction.
pub fn append(
    dict: &mut Writer,
    tx: &Transaction<'_>,
    host: &str,
    at_ns: u64,
    edges: &[Edge],
) -> Result<(), StoreError> {
    if edges.is_empty() {
        return Ok(());
    }
    let host_id = dict.id(tx, host)?;
    let partition = dict.partition(tx, at_ns)?;
    // One row to a statement: a many-row insert would keep a statement journal to undo
    // itself, and that costs more than the steps it saves.
    let mut put = tx.prepare_cached(&insert_sql(partition))?;
    for e in edges {
        let kind = dict.kind(tx, e.kind)?;
        let f = node_cols(dict, tx, &e.from)?;
        let t = node_cols(dict, tx, &e.to)?;
        put.execute(params![
            i(at_ns),
            host_id,
            kind,
            e.ok,
            i(e.seq),
            i(e.boot_ns),
            f.0 as i64,
            f.1,
            f.2,
            f.3,
            t.0 as i64,
            t.1,
            t.2,
            t.3,
            t.4,
            t.5,
        ])?;
    }
    let added = edges.len() as u64;
    tx.prepare_cached("UPDATE partitions SET last_ns = ?1, edges = edges + ?2 WHERE id = ?3")?
        .execute(params![i(at_ns), i(added), partition])?;
    if let Some((_, held)) = &mut dict.current {
        *held += added;
    }
    Ok(())
}

fn insert_sql(partition: i64) -> String {
    format!(
        "INSERT INTO edges_{partition} (at_ns, host, kind, ok, seq, boot_ns,
             f_type, f_num, f_start, f_str, t_type, t_num, t_start, t_str, t_port, t_proto)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    )
}

/// The strings a scan names, read once each.
struct Names<'a> {
    db: &'a Connection,
    by_id: HashMap<i64, String>,
}

impl Names<'_> {
    fn get(&mut self, id: i64) -> Result<&str, StoreError> {
        if !self.by_id.contains_key(&id) {
            let s: String = self
                .db
                .prepare_cached("SELECT s FROM strings WHERE id = ?1")?
                .query_row([id], |r| r.get(0))?;
            self.by_id.insert(id, s);
        }
        Ok(self.by_id.get(&id).map_or("", String::as_str))
    }
}

/// A malformed row: a store written by something else, or damaged.
pub(super) fn bad(what: &str) -> StoreError {
    StoreError::Corrupt(format!("an edge row with {what}"))
}

/// A node as an edge row holds it: type, number, start, string id, port, protocol id.
pub(super) struct RawNode {
    pub ty: i64,
    pub num: Option<i64>,
    pub start: Option<i64>,
    pub s: Option<i64>,
    pub port: Option<i64>,
    pub proto: Option<i64>,
}

/// The node `raw` names, its strings read through `name`. The inverse of [`encode_node`].
pub(super) fn decode_node(
    raw: &RawNode,
    name: &mut dyn FnMut(i64) -> Result<String, StoreError>,
) -> Result<NodeId, StoreError> {
    let mut text =
        || -> Result<String, StoreError> { name(raw.s.ok_or_else(|| bad("no string"))?) };
    Ok(
        match NodeType::from_code(raw.ty).ok_or_else(|| bad("an unknown node type"))? {
            NodeType::Host => NodeId::Host,
            NodeType::User => NodeId::User(
                u32::try_from(raw.num.ok_or_else(|| bad("no uid"))?)
                    .map_err(|_| bad("a bad uid"))?,
            ),
            NodeType::Process => NodeId::Process(ProcessId {
                pid: u32::try_from(raw.num.ok_or_else(|| bad("no pid"))?)
                    .map_err(|_| bad("a bad pid"))?,
                start: u(raw.start.ok_or_else(|| bad("no start"))?),
            }),
            NodeType::File => NodeId::File(text()?),
            NodeType::Unix => NodeId::Endpoint(Endpoint::Unix { path: text()? }),
            NodeType::Inet => {
                let ip: std::net::IpAddr = text()?.parse().map_err(|_| bad("a bad address"))?;
                let ip = match (ip, raw.num) {
                    (std::net::IpAddr::V4(v4), Some(1)) => {
                        std::net::IpAddr::V6(v4.to_ipv6_mapped())
                    }
                    (ip, _) => ip,
                };
                NodeId::Endpoint(Endpoint::Inet {
                    protocol: name(raw.proto.ok_or_else(|| bad("no protocol"))?)?,
                    addr: std::net::SocketAddr::new(
                        ip,
                        u16::try_from(raw.port.ok_or_else(|| bad("no port"))?)
                            .map_err(|_| bad("a bad port"))?,
                    ),
                })
            }
        },
    )
}

fn node_from(
    names: &mut Names<'_>,
    row: &rusqlite::Row<'_>,
    at: usize,
) -> Result<NodeId, StoreError> {
    let raw = RawNode {
        ty: row.get(at)?,
        num: row.get(at + 1)?,
        start: row.get(at + 2)?,
        s: row.get(at + 3)?,
        port: row.get(at + 4)?,
        proto: row.get(at + 5)?,
    };
    decode_node(&raw, &mut |id| Ok(names.get(id)?.to_owned()))
}

/// The SQL that picks the dictionary's strings meeting `c`, with its one argument.
fn dictionary_match(c: &TextCond) -> &'static str {
    // Compared as text, character for character, as the hunt does: no LIKE (it folds case).
    match c.op {
        TextOp::Eq => "SELECT id FROM strings WHERE s = ?",
        TextOp::Contains => "SELECT id FROM strings WHERE instr(s, ?) > 0",
        // `?2` is the prefix followed by the highest character: the range the unique index
        // on the text can walk.
        TextOp::StartsWith => {
            "SELECT id FROM strings WHERE s >= ?1 AND s < ?2 AND substr(s, 1, length(?1)) = ?1"
        }
        TextOp::EndsWith => "SELECT id FROM strings WHERE substr(s, -length(?1)) = ?1",
    }
}

/// The arguments of [`dictionary_match`]'s query for `c`.
fn dictionary_args(c: &TextCond) -> Vec<String> {
    match c.op {
        TextOp::StartsWith => vec![c.value.clone(), format!("{}{}", c.value, char::MAX)],
        _ => vec![c.value.clone()],
    }
}

/// Hands every edge of `kinds` meeting `filter` to `visit`, oldest first, from one
/// snapshot of the store (a partition dropped meanwhile is still read whole).
pub fn scan(
    db: &Connection,
    kinds: &[EdgeKind],
    filter: &EdgeFilter,
    visit: &mut dyn FnMut(&str, Edge),
) -> Result<(), StoreError> {
    let snapshot = db.unchecked_transaction()?;
    let mut names = Names {
        db,
        by_id: HashMap::new(),
    };
    // Kinds, hosts and strings the dictionary lacks were never stored: nothing can match.
    let lookup = |s: &str| string_id(db, s);
    let mut kind_ids = Vec::new();
    for k in kinds {
        if let Some(id) = lookup(&kind_name(*k)?)? {
            kind_ids.push(id);
        }
    }
    if kind_ids.is_empty() {
        return Ok(());
    }
    let mut conds = format!("kind IN ({})", vec!["?"; kind_ids.len()].join(", "));
    let mut args: Vec<rusqlite::types::Value> = kind_ids.iter().map(|&k| k.into()).collect();
    if let Some(host) = &filter.host {
        let Some(id) = lookup(host)? else {
            return Ok(());
        };
        conds.push_str(" AND host = ?");
        args.push(id.into());
    }
    if let Some(port) = filter.port {
        conds.push_str(" AND t_port = ?");
        args.push(i64::from(port).into());
    }
    if let Some(ok) = filter.ok {
        conds.push_str(" AND ok = ?");
        args.push(i64::from(ok).into());
    }
    if let Some(c) = &filter.target {
        let mut ids: Vec<i64> = db
            .prepare(dictionary_match(c))?
            .query_map(rusqlite::params_from_iter(dictionary_args(c)), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        conds.push_str(&format!(
            " AND t_str IN ({})",
            vec!["?"; ids.len()].join(", ")
        ));
        args.extend(ids.into_iter().map(rusqlite::types::Value::from));
    }
    let partitions: Vec<i64> = db
        .prepare("SELECT id FROM partitions ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    // The index the narrowest condition names. Left to itself the planner may walk the whole
    // partition in id order to save sorting the few rows an index finds.
    let index = if filter.target.is_some() {
        "by_target"
    } else if filter.port.is_some() {
        "by_port"
    } else if filter.host.is_some() {
        "by_host"
    } else {
        "by_kind"
    };
    let mut kinds_by_id: HashMap<i64, EdgeKind> = HashMap::new();
    for partition in partitions {
        let sql = format!(
            "SELECT host, kind, ok, seq, boot_ns, f_type, f_num, f_start, f_str, 0, 0,
                    t_type, t_num, t_start, t_str, t_port, t_proto
             FROM edges_{partition} INDEXED BY edges_{partition}_{index}
             WHERE {conds} ORDER BY id"
        );
        let mut st = db.prepare(&sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
        while let Some(row) = rows.next()? {
            let host = names.get(row.get(0)?)?.to_owned();
            let kind_id: i64 = row.get(1)?;
            let kind = match kinds_by_id.get(&kind_id) {
                Some(k) => *k,
                None => {
                    let name = names.get(kind_id)?.to_owned();
                    let k: EdgeKind = serde_json::from_value(serde_json::Value::String(name))?;
                    kinds_by_id.insert(kind_id, k);
                    k
                }
            };
            let edge = Edge {
                seq: u(row.get(3)?),
                boot_ns: u(row.get(4)?),
                kind,
                from: node_from(&mut names, row, 5)?,
                to: node_from(&mut names, row, 11)?,
                ok: row.get(2)?,
            };
            visit(&host, edge);
        }
    }
    snapshot.finish()?;
    Ok(())
}

/// Brings the store's history to [`SCHEMA_VERSION`]: a store made before the typed schema
/// (version 0, edges as JSON text) has its edges rewritten once, in one transaction.
pub fn migrate(db: &mut Connection, now_ns: u64) -> Result<(), StoreError> {
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = db.transaction()?;
    let json_edges: bool = tx
        .prepare("SELECT 1 FROM pragma_table_info('edges') WHERE name = 'edge'")?
        .exists([])?;
    tx.execute_batch(SCHEMA)?;
    if json_edges {
        let mut writer = Writer::new(PARTITION_EDGES);
        let mut moved = 0u64;
        {
            let mut st = tx.prepare("SELECT host, edge FROM edges ORDER BY rowid")?;
            let mut rows = st.query([])?;
            while let Some(row) = rows.next()? {
                let host: String = row.get(0)?;
                let edge: Edge = serde_json::from_str(&row.get::<_, String>(1)?)?;
                append(&mut writer, &tx, &host, now_ns, std::slice::from_ref(&edge))?;
                moved += 1;
            }
        }
        tx.execute_batch("DROP TABLE edges")?;
        tracing::info!(edges = moved, "graph history moved to the typed schema");
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Of `partitions` (id, last merge time, edges; oldest first), those past `keep` at
/// `now_ns` as (id, edges), and the edges the rest hold. The newest always stays: it is
/// where edges are appended, and the cap is kept to within one partition.
pub(super) fn past_bounds(
    partitions: &[(i64, u64, u64)],
    keep: Retention,
    now_ns: u64,
) -> (Vec<(i64, u64)>, u64) {
    let mut held: u64 = partitions.iter().map(|p| p.2).sum();
    let cutoff = keep.max_age_ns.map(|age| now_ns.saturating_sub(age));
    let mut gone = Vec::new();
    for &(id, last_ns, edges) in partitions.iter().rev().skip(1).rev() {
        let too_old = cutoff.is_some_and(|c| last_ns < c);
        let too_many = keep.max_edges.is_some_and(|max| held > max);
        if !too_old && !too_many {
            break;
        }
        held -= edges;
        gone.push((id, edges));
    }
    (gone, held)
}

/// Drops the oldest partitions past `keep`, and counts the edges that went. The newest
/// partition always stays: it is where edges are appended, and the cap is kept to within
/// one partition.
pub fn prune(db: &mut Connection, keep: Retention, now_ns: u64) -> Result<Pruned, StoreError> {
    let tx = db.transaction()?;
    let partitions: Vec<(i64, u64, u64)> = tx
        .prepare("SELECT id, last_ns, edges FROM partitions ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, u(r.get(1)?), u(r.get(2)?))))?
        .collect::<Result<_, _>>()?;
    let (gone, held) = past_bounds(&partitions, keep, now_ns);
    let mut dropped = 0u64;
    for (id, edges) in gone {
        tx.execute_batch(&format!("DROP TABLE edges_{id}"))?;
        tx.execute("DELETE FROM partitions WHERE id = ?1", [id])?;
        dropped += edges;
    }
    tx.execute(
        "INSERT INTO counters (name, value) VALUES ('history_edges_dropped', ?1)
         ON CONFLICT (name) DO UPDATE SET value = value + ?1",
        [i(dropped)],
    )?;
    let dropped_total: i64 = tx.query_row(
        "SELECT value FROM counters WHERE name = 'history_edges_dropped'",
        [],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(Pruned {
        dropped,
        dropped_total: u(dropped_total),
        kept: held,
    })
}

#[cfg(test)]
mod tests {
    use sensor_common::wire::{Delta, GRAPH_SCHEMA_VERSION};

    use super::*;
    use crate::store::{Sqlite, Store};

    fn p(pid: u32) -> NodeId {
        NodeId::Process(ProcessId { pid, start: 7 })
    }

    fn edge(seq: u64, kind: EdgeKind, to: NodeId) -> Edge {
        Edge {
            seq,
            boot_ns: seq * 10,
            kind,
            from: p(100 + seq as u32 % 3),
            to,
            ok: !seq.is_multiple_of(4),
        }
    }

    fn inet(addr: &str) -> NodeId {
        NodeId::Endpoint(Endpoint::Inet {
            protocol: "tcp".into(),
            addr: addr.parse().expect("address"),
        })
    }

    /// One edge to every kind of node, the awkward ones included.
    fn every_node() -> Vec<Edge> {
        vec![
            edge(1, EdgeKind::Executed, NodeId::File("/usr/bin/curl".into())),
            edge(2, EdgeKind::Connected, inet("10.0.0.9:4444")),
            edge(3, EdgeKind::Connected, inet("[::ffff:10.0.0.9]:443")),
            edge(4, EdgeKind::Connected, inet("[2001:db8::1]:53")),
            edge(
                5,
                EdgeKind::Connected,
                NodeId::Endpoint(Endpoint::Unix {
                    path: "/run/dbus/system_bus_socket".into(),
                }),
            ),
            edge(6, EdgeKind::Spawned, p(200)),
            edge(7, EdgeKind::RanAs, NodeId::User(1000)),
            edge(8, EdgeKind::LoadedBpf, NodeId::Host),
            edge(9, EdgeKind::Wrote, NodeId::File("/tmp/ünïcode päth".into())),
        ]
    }

    fn delta(seq: u64, edges: Vec<Edge>) -> Delta {
        Delta {
            version: GRAPH_SCHEMA_VERSION,
            seq,
            upserted: Vec::new(),
            removed: Vec::new(),
            edges,
        }
    }

    fn all(store: &dyn Store, kinds: &[EdgeKind], f: &EdgeFilter) -> Vec<(String, Edge)> {
        let mut out = Vec::new();
        store
            .scan_edges(kinds, f, &mut |h, e| out.push((h.to_owned(), e)))
            .expect("scan");
        out
    }

    const KINDS: &[EdgeKind] = &[
        EdgeKind::Executed,
        EdgeKind::Connected,
        EdgeKind::Spawned,
        EdgeKind::RanAs,
        EdgeKind::LoadedBpf,
        EdgeKind::Wrote,
    ];

    #[test]
    fn every_edge_comes_back_as_it_was_sent_across_partitions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Sqlite::open(&dir.path().join("c.db"))
            .expect("open")
            .with_partition_edges(4);
        let sent = every_node();
        for (n, chunk) in sent.chunks(2).enumerate() {
            s.apply_delta("h1", n as u64 + 1, &delta(n as u64 + 1, chunk.to_vec()))
                .expect("merge");
        }
        let partitions: i64 =
            s.db.query_row("SELECT count(*) FROM partitions", [], |r| r.get(0))
                .expect("count");
        assert!(partitions >= 2, "{partitions} partitions for 9 edges of 4");
        let mut back: Vec<Edge> = all(&*s.reader().expect("reader"), KINDS, &EdgeFilter::default())
            .into_iter()
            .map(|(h, e)| {
                assert_eq!(h, "h1");
                e
            })
            .collect();
        back.sort_by_key(|e| e.seq);
        assert_eq!(back, sent);
        // Reopened, the writer appends to the partition it left.
        drop(s);
        let mut s = Sqlite::open(&dir.path().join("c.db"))
            .expect("reopen")
            .with_partition_edges(4);
        s.apply_delta(
            "h2",
            1,
            &delta(
                1,
                vec![edge(10, EdgeKind::Executed, NodeId::File("/x".into()))],
            ),
        )
        .expect("merge after reopen");
        assert_eq!(all(&s, KINDS, &EdgeFilter::default()).len(), 10);
    }

    #[test]
    fn filters_narrow_to_what_they_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Sqlite::open(&dir.path().join("c.db")).expect("open");
        s.apply_delta("h1", 1, &delta(1, every_node()))
            .expect("merge");
        s.apply_delta("h2", 1, &delta(1, every_node()))
            .expect("merge");
        let seqs = |f: EdgeFilter| -> Vec<(String, u64)> {
            all(&s, KINDS, &f)
                .into_iter()
                .map(|(h, e)| (h, e.seq))
                .collect()
        };
        let text = |op, value: &str| EdgeFilter {
            target: Some(TextCond {
                op,
                value: value.into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            seqs(EdgeFilter {
                port: Some(4444),
                ..Default::default()
            }),
            [("h1".into(), 2), ("h2".into(), 2)]
        );
        // The mapped address reads as IPv4, as the hunt prints it.
        assert_eq!(
            seqs(EdgeFilter {
                host: Some("h2".into()),
                ..text(TextOp::Eq, "10.0.0.9")
            }),
            [("h2".into(), 2), ("h2".into(), 3)]
        );
        assert_eq!(seqs(text(TextOp::EndsWith, "päth")).len(), 2);
        assert_eq!(seqs(text(TextOp::StartsWith, "/usr/")).len(), 2);
        assert_eq!(seqs(text(TextOp::Contains, "dbus")).len(), 2);
        // Text is compared as the hunt compares it: case matters.
        assert!(seqs(text(TextOp::Contains, "DBUS")).is_empty());
        assert!(seqs(text(TextOp::Eq, "/nowhere")).is_empty());
        assert!(
            seqs(EdgeFilter {
                host: Some("h3".into()),
                ..Default::default()
            })
            .is_empty()
        );
        assert_eq!(
            seqs(EdgeFilter {
                ok: Some(false),
                ..Default::default()
            }),
            [
                ("h1".into(), 4),
                ("h1".into(), 8),
                ("h2".into(), 4),
                ("h2".into(), 8)
            ]
        );
    }

    #[test]
    fn retention_drops_the_oldest_partitions_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Sqlite::open(&dir.path().join("c.db"))
            .expect("open")
            .with_partition_edges(10);
        for d in 0..5u64 {
            let edges = (0..10)
                .map(|e| {
                    edge(
                        d * 10 + e,
                        EdgeKind::Executed,
                        NodeId::File(format!("/p{d}")),
                    )
                })
                .collect();
            s.apply_delta("h1", d + 1, &delta(d + 1, edges))
                .expect("merge");
        }
        let kept = |s: &Sqlite| -> Vec<String> {
            let mut paths: Vec<String> = all(s, KINDS, &EdgeFilter::default())
                .into_iter()
                .filter_map(|(_, e)| match e.to {
                    NodeId::File(p) => Some(p),
                    _ => None,
                })
                .collect();
            paths.dedup();
            paths
        };
        let p = s
            .prune_history(
                Retention {
                    max_edges: Some(25),
                    ..Default::default()
                },
                crate::now_ns(),
            )
            .expect("prune");
        assert_eq!((p.dropped, p.dropped_total, p.kept), (30, 30, 20));
        assert_eq!(kept(&s), ["/p3", "/p4"]);
        // Everything is older than a nanosecond's window, but the newest partition stays.
        let p = s
            .prune_history(
                Retention {
                    max_age_ns: Some(1),
                    ..Default::default()
                },
                crate::now_ns() + 10,
            )
            .expect("prune");
        assert_eq!((p.dropped, p.dropped_total, p.kept), (10, 40, 10));
        assert_eq!(kept(&s), ["/p4"]);
        // The writer goes on where the prune left it.
        s.apply_delta(
            "h1",
            9,
            &delta(
                9,
                vec![edge(99, EdgeKind::Executed, NodeId::File("/p9".into()))],
            ),
        )
        .expect("merge after a prune");
        assert_eq!(kept(&s), ["/p4", "/p9"]);
    }

    #[test]
    fn a_store_of_json_edges_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        {
            // The store as the controller before the typed history made it.
            let db = Connection::open(&path).expect("open");
            db.execute_batch(
                "CREATE TABLE edges (host TEXT NOT NULL, kind TEXT NOT NULL, edge TEXT NOT NULL);
                 CREATE INDEX edges_by_kind ON edges (kind);",
            )
            .expect("old schema");
            for e in every_node() {
                let kind = kind_name(e.kind).expect("kind");
                db.execute(
                    "INSERT INTO edges (host, kind, edge) VALUES ('h1', ?1, ?2)",
                    params![kind, serde_json::to_string(&e).expect("json")],
                )
                .expect("old edge");
            }
        }
        let s = Sqlite::open(&path).expect("open migrates");
        let mut back: Vec<Edge> = all(&s, KINDS, &EdgeFilter::default())
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        back.sort_by_key(|e| e.seq);
        assert_eq!(back, every_node());
        let version: i64 =
            s.db.pragma_query_value(None, "user_version", |r| r.get(0))
                .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        drop(s);
        let db = Connection::open(&path).expect("open");
        db.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("set");
        drop(db);
        let err = Sqlite::open(&path).err().expect("a newer store is refused");
        assert!(
            err.to_string().contains("newer than this controller"),
            "{err}"
        );
    }
}
