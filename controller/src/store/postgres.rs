//! The controller's store in PostgreSQL, for several controller replicas sharing one
//! database (`vigil-controller serve --store postgres://...`).
//!
//! The same tables as the embedded store, and the same graph history: edges in typed
//! columns, the strings they name kept once in a dictionary. The history is one table
//! partitioned by merge time, with a BRIN index on time and B-tree indexes on the fields
//! hunts filter on; edges arrive by binary `COPY`. Retention drops whole partitions.
//!
//! The client is rust-postgres's blocking one. It runs its own small runtime, which must
//! not be entered from inside the controller's: a call made on a runtime thread runs on a
//! scoped thread of its own ([`off_runtime`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use postgres::{
    Client, GenericClient, NoTls,
    binary_copy::BinaryCopyInWriter,
    types::{ToSql, Type},
};
use sensor_common::{
    protocol::{FleetBlock, HostReport, Stream},
    wire::{Delta, Edge, EdgeKind, Node, ProcessId, ProcessNode},
};

use super::{
    Answer, ApiToken, AuditEntry, Closed, Desired, EdgeFilter, FleetStep, Host, HostRecord,
    HuntIncident, Operator, Pruned, Retention, Role, Standing, Store, StoreError, StoredBlock,
    Sweep, TextCond, TextOp, TokenRefusal,
    history::{self, RawNode, Text},
    i, u,
};

/// The schema version this controller brings a database to: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema's steps, in order: a database at version N has had the first N applied.
const MIGRATIONS: &[&str] = &[SCHEMA, ROUTING, REPLICAS];

/// Version 2: which replica holds each host's connection, and commands left for it.
const ROUTING: &str = "
CREATE TABLE connections (
    host TEXT PRIMARY KEY,
    replica TEXT NOT NULL,
    since_ns BIGINT NOT NULL
);
CREATE TABLE routed (
    id BIGSERIAL PRIMARY KEY,
    replica TEXT NOT NULL,
    host TEXT NOT NULL,
    command TEXT NOT NULL,
    taken BOOLEAN NOT NULL DEFAULT false,
    answer TEXT
);
CREATE INDEX routed_waiting ON routed (replica) WHERE NOT taken;
";

/// Which replicas are alive (their connections count), and when a routed command was left.
const REPLICAS: &str = "
CREATE TABLE replicas (
    name TEXT PRIMARY KEY,
    beat_ns BIGINT NOT NULL
);
ALTER TABLE routed ADD COLUMN at_ns BIGINT NOT NULL DEFAULT 0;
";

/// The history is partitioned by merge time into ranges this wide (one hour).
pub const PARTITION_NS: u64 = 3_600 * 1_000_000_000;

/// Dictionary ids a writer keeps at most between batches (it starts over past this).
const DICTIONARY_CACHE: usize = 500_000;

/// How long a lease's holder waits for the server to say its session is alive.
const LEASE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Reader connections kept for reuse.
const IDLE_READERS: usize = 8;

/// Rows a scan fetches at a time.
const SCAN_CHUNK: i32 = 10_000;

/// The key of the advisory lock that serializes migrations between replicas.
const MIGRATION_LOCK: i64 = 0x7669_6769_6c00;

const SCHEMA: &str = r#"
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    expires_ns BIGINT NOT NULL,
    used_ns BIGINT
);
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL UNIQUE,
    enrolled_ns BIGINT NOT NULL,
    last_seen_ns BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT false,
    report TEXT NOT NULL
);
CREATE TABLE records (
    host TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (host, stream, seq)
);
CREATE TABLE processes (
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    start BIGINT NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (host, pid, start)
);
CREATE TABLE graph_heads (host TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE desired (kind TEXT PRIMARY KEY, body BYTEA NOT NULL);
CREATE TABLE closed_incidents (
    host TEXT NOT NULL,
    incident TEXT NOT NULL,
    closed_ns BIGINT NOT NULL,
    how TEXT NOT NULL,
    PRIMARY KEY (host, incident)
);
CREATE TABLE hunts (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE hunt_hits (name TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (name, key));
CREATE TABLE hunt_incidents (id TEXT PRIMARY KEY, ord BIGSERIAL, body TEXT NOT NULL);
CREATE TABLE sweeps (id TEXT PRIMARY KEY, ord BIGSERIAL, body TEXT NOT NULL);
CREATE TABLE sweep_answers (
    id TEXT NOT NULL,
    host TEXT NOT NULL,
    ord BIGSERIAL,
    body TEXT NOT NULL,
    PRIMARY KEY (id, host)
);
CREATE TABLE fleet_blocks (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    expires_ns BIGINT NOT NULL
);
CREATE TABLE fleet_block_hosts (
    block BIGINT NOT NULL,
    host TEXT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (block, host)
);
CREATE TABLE notifications (
    target TEXT NOT NULL,
    incident TEXT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (target, incident, event)
);
CREATE TABLE fleet_steps (
    ord BIGSERIAL PRIMARY KEY,
    incident TEXT NOT NULL,
    time_ns BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX fleet_steps_by_incident ON fleet_steps (incident);
CREATE TABLE operators (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    password_hash TEXT NOT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    operator TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT false,
    secret_hash TEXT NOT NULL
);
CREATE TABLE audit (
    ord BIGSERIAL PRIMARY KEY,
    time_ns BIGINT NOT NULL,
    who TEXT NOT NULL,
    command TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TABLE strings (id BIGSERIAL PRIMARY KEY, s TEXT COLLATE "C" NOT NULL UNIQUE);
CREATE TABLE edge_partitions (
    lo BIGINT PRIMARY KEY,
    last_ns BIGINT NOT NULL,
    edges BIGINT NOT NULL
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE SEQUENCE edges_id;
CREATE TABLE edges (
    id BIGINT NOT NULL DEFAULT nextval('edges_id'),
    at_ns BIGINT NOT NULL,
    host BIGINT NOT NULL,
    kind BIGINT NOT NULL,
    ok BOOLEAN NOT NULL,
    seq BIGINT NOT NULL,
    boot_ns BIGINT NOT NULL,
    f_type BIGINT NOT NULL,
    f_num BIGINT,
    f_start BIGINT,
    f_str BIGINT,
    t_type BIGINT NOT NULL,
    t_num BIGINT,
    t_start BIGINT,
    t_str BIGINT,
    t_port BIGINT,
    t_proto BIGINT
) PARTITION BY RANGE (at_ns);
CREATE INDEX edges_by_time ON edges USING brin (at_ns);
CREATE INDEX edges_by_target ON edges (t_str, kind);
CREATE INDEX edges_by_port ON edges (t_port, kind) WHERE t_port IS NOT NULL;
CREATE INDEX edges_by_host ON edges (host, kind);
CREATE TABLE authority (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL
);
"#;

/// The columns `COPY` fills, in order, and their types.
const EDGE_COLUMNS: &str = "at_ns, host, kind, ok, seq, boot_ns, f_type, f_num, f_start, f_str, t_type, t_num, \
     t_start, t_str, t_port, t_proto";
const EDGE_TYPES: [Type; 16] = [
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::BOOL,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
];

/// What went wrong, in the server's words where it said any (the client's own `Display` says
/// only "db error").
pub fn detail(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} ({})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!(": {d}"));
        }
        return s;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Runs `f` where the blocking client may block: here, or on a scoped thread when this
/// thread drives the controller's runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Idle reader connections, shared by a store and its readers.
type Idle = Arc<Mutex<IdleClients>>;

/// The idle reader connections; closed off the runtime when the last store goes.
#[derive(Default)]
struct IdleClients(Vec<Client>);

impl Drop for IdleClients {
    fn drop(&mut self) {
        let clients = std::mem::take(&mut self.0);
        off_runtime(move || drop(clients));
    }
}

impl std::ops::Deref for IdleClients {
    type Target = Vec<Client>;
    fn deref(&self) -> &Vec<Client> {
        &self.0
    }
}

impl std::ops::DerefMut for IdleClients {
    fn deref_mut(&mut self) -> &mut Vec<Client> {
        &mut self.0
    }
}

pub struct Postgres {
    url: String,
    /// `None` only while a reader hands its connection back.
    db: Mutex<Option<Client>>,
    idle: Idle,
    read_only: bool,
    /// Dictionary ids this store already knows. Strings are committed on their own before
    /// the edges that name them, so an id here is never one a rollback took back.
    ids: HashMap<String, i64>,
    /// Partitions known to exist.
    partitions: BTreeSet<i64>,
    partition_ns: u64,
    /// The leases this connection holds (session advisory locks).
    leases: BTreeSet<String>,
    /// Set when the connection was lost and made again: the session's leases went with it.
    reconnected: AtomicBool,
}

impl Drop for Postgres {
    /// Hands a reader's connection back to the idle ones, or closes it. Closing talks to
    /// the server on the client's own runtime, so it too runs off the controller's.
    fn drop(&mut self) {
        let Some(client) = crate::lock(&self.db).take() else {
            return;
        };
        if self.read_only && !client.is_closed() {
            let mut idle = crate::lock(&self.idle);
            if idle.len() < IDLE_READERS {
                idle.push(client);
                return;
            }
        }
        off_runtime(move || drop(client));
    }
}

fn connect(url: &str) -> Result<Client, StoreError> {
    let url = url.to_owned();
    Ok(off_runtime(move || Client::connect(&url, NoTls))?)
}

impl Postgres {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, or the key=value
    /// form) and brings its schema to [`SCHEMA_VERSION`]. Replicas starting together
    /// migrate one at a time.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url)?;
        off_runtime(|| migrate(&mut client))?;
        Ok(Self {
            url: url.to_owned(),
            db: Mutex::new(Some(client)),
            idle: Idle::default(),
            read_only: false,
            ids: HashMap::new(),
            partitions: BTreeSet::new(),
            partition_ns: PARTITION_NS,
            leases: BTreeSet::new(),
            reconnected: AtomicBool::new(false),
        })
    }

    /// Partitions the history by ranges of `ns` (tests make them short, to see them cut
    /// and dropped).
    pub fn with_partition_ns(mut self, ns: u64) -> Self {
        self.partition_ns = ns.max(1);
        self
    }

    /// Runs `f` on the connection, off the runtime. A connection the server closed (a
    /// restart, a failover) is made again first, so the store outlives the server's restart;
    /// the call that finds it lost fails, the next one runs on the new connection.
    fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut guard = crate::lock(&self.db);
        let client = guard
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt("the connection was handed back".into()))?;
        if client.is_closed() {
            *client = self.connect_again()?;
        }
        off_runtime(move || f(client))
    }

    /// A new connection in place of a lost one, in this store's mode.
    fn connect_again(&self) -> Result<Client, StoreError> {
        let mut c = connect(&self.url)?;
        if self.read_only {
            off_runtime(|| {
                c.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            })?;
        }
        self.reconnected.store(true, Ordering::Release);
        tracing::warn!("the PostgreSQL connection was lost; connected again");
        Ok(c)
    }

    /// A store of its own connection, sharing this one's idle readers.
    fn sibling(&self, client: Client, read_only: bool) -> Self {
        Self {
            url: self.url.clone(),
            db: Mutex::new(Some(client)),
            idle: self.idle.clone(),
            read_only,
            ids: HashMap::new(),
            partitions: BTreeSet::new(),
            partition_ns: self.partition_ns,
            leases: BTreeSet::new(),
            reconnected: AtomicBool::new(false),
        }
    }

    fn json_rows<T: serde::de::DeserializeOwned + Send>(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>, StoreError> {
        self.with(|c| {
            c.query(sql, args)?
                .iter()
                .map(|r| Ok(serde_json::from_str(r.try_get::<_, &str>(0)?)?))
                .collect()
        })
    }

    fn execute(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.with(|c| Ok(c.execute(sql, args)?))
    }

    /// A write that the next report or connection writes again (when a host was last seen,
    /// which replica holds it): committed without waiting for the log's flush, so a thousand
    /// sensors connecting at once do not queue behind a thousand fsyncs. A crash of the
    /// database can lose the last few of them, never a record a sensor was told is kept.
    fn execute_relaxed(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit TO OFF")?;
            let n = tx.execute(sql, args)?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn hosts_where(&self, clause: &str, arg: &str) -> Result<Vec<Host>, StoreError> {
        let sql = format!(
            "SELECT id, hostname, cert_fingerprint, enrolled_ns, last_seen_ns, revoked, report \
             FROM hosts {clause} ORDER BY hostname, id"
        );
        self.with(|c| {
            let rows = rows_where(c, &sql, clause, arg)?;
            rows.iter()
                .map(|r| {
                    Ok(Host {
                        id: r.try_get(0)?,
                        hostname: r.try_get(1)?,
                        cert_fingerprint: r.try_get(2)?,
                        enrolled_ns: u(r.try_get(3)?),
                        last_seen_ns: u(r.try_get(4)?),
                        revoked: r.try_get(5)?,
                        report: serde_json::from_str(r.try_get::<_, &str>(6)?)?,
                    })
                })
                .collect()
        })
    }

    fn operators_where(&self, clause: &str, arg: &str) -> Result<Vec<Operator>, StoreError> {
        let sql = format!(
            "SELECT name, role, created_ns, password_hash FROM operators {clause} ORDER BY name"
        );
        self.with(|c| {
            let rows = rows_where(c, &sql, clause, arg)?;
            rows.iter()
                .map(|r| {
                    Ok(Operator {
                        name: r.try_get(0)?,
                        // An unknown role reads as a viewer: the least it could be.
                        role: r.try_get::<_, &str>(1)?.parse().unwrap_or(Role::Viewer),
                        created_ns: u(r.try_get(2)?),
                        password_hash: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    fn tokens_where(&self, clause: &str, arg: &str) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!(
            "SELECT id, operator, created_ns, revoked, secret_hash FROM api_tokens {clause} \
             ORDER BY created_ns, id"
        );
        self.with(|c| {
            let rows = rows_where(c, &sql, clause, arg)?;
            rows.iter()
                .map(|r| {
                    Ok(ApiToken {
                        id: r.try_get(0)?,
                        operator: r.try_get(1)?,
                        created_ns: u(r.try_get(2)?),
                        revoked: r.try_get(3)?,
                        secret_hash: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    /// The CA kept in the database, `(certificate PEM, key PEM)`, if a replica kept one.
    pub fn authority(&self) -> Result<Option<(String, String)>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt("SELECT cert_pem, key_pem FROM authority", &[])?
                .map(|r| Ok::<_, postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()?)
        })
    }

    /// Keeps this CA unless a replica kept one first; returns the one kept, which every
    /// replica then signs with.
    pub fn keep_authority(
        &mut self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(String, String), StoreError> {
        self.execute(
            "INSERT INTO authority (cert_pem, key_pem) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&cert_pem, &key_pem],
        )?;
        self.authority()?
            .ok_or_else(|| StoreError::Corrupt("the authority was not kept".into()))
    }

    /// Ids for every string in `wanted` the cache lacks, committed on their own: afterwards
    /// the cache holds every string of `wanted`.
    fn resolve(&mut self, wanted: BTreeSet<String>) -> Result<(), StoreError> {
        // A full cache starts over before the lookup, never after it: what this batch needs
        // is all in it afterwards.
        if self.ids.len() > DICTIONARY_CACHE {
            self.ids.clear();
        }
        let missing: Vec<String> = wanted
            .into_iter()
            .filter(|s| !self.ids.contains_key(s))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let found: Vec<(String, i64)> = self.with(|c| {
            // Sorted, so two replicas adding the same strings wait on each other in one order.
            c.execute(
                "INSERT INTO strings (s) SELECT x FROM unnest($1::text[]) AS x ORDER BY x \
                 ON CONFLICT (s) DO NOTHING",
                &[&missing],
            )?;
            Ok(
                c.query("SELECT s, id FROM strings WHERE s = ANY($1)", &[&missing])?
                    .iter()
                    .map(|r| Ok::<_, postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, _>>()?,
            )
        })?;
        self.ids.extend(found);
        Ok(())
    }

    /// The partition merge time `at_ns` falls in, made if it is missing.
    fn partition(&mut self, at_ns: u64) -> Result<i64, StoreError> {
        let lo = at_ns - at_ns % self.partition_ns;
        let (lo, hi) = (i(lo), i(lo.saturating_add(self.partition_ns)));
        if self.partitions.contains(&lo) {
            return Ok(lo);
        }
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS edges_{lo} PARTITION OF edges FOR VALUES FROM ({lo}) TO ({hi})"
        );
        self.with(|c| {
            // Two replicas making the same partition at once: the loser sees it made.
            let mut made = c.batch_execute(&ddl);
            if made.is_err() {
                made = c.batch_execute(&ddl);
            }
            made?;
            c.execute(
                "INSERT INTO edge_partitions (lo, last_ns, edges) VALUES ($1, $1, 0) \
                 ON CONFLICT (lo) DO NOTHING",
                &[&lo],
            )?;
            Ok(())
        })?;
        self.partitions.insert(lo);
        Ok(lo)
    }

    fn merge(&mut self, batch: &[(&str, u64, &Delta)], at_ns: u64) -> Result<(), StoreError> {
        // Every string the batch names, then their ids. Kinds are named once each.
        let mut wanted = BTreeSet::new();
        let mut kinds: HashMap<EdgeKind, String> = HashMap::new();
        for &(host, _, delta) in batch {
            if delta.edges.is_empty() {
                continue;
            }
            wanted.insert(host.to_owned());
            for e in &delta.edges {
                if let std::collections::hash_map::Entry::Vacant(v) = kinds.entry(e.kind) {
                    v.insert(history::kind_name(e.kind)?);
                }
                for n in [&e.from, &e.to] {
                    history::encode_node(n, &mut |t| {
                        wanted.insert(text(&t));
                        Ok(0)
                    })?;
                }
            }
        }
        wanted.extend(kinds.values().cloned());
        self.resolve(wanted)?;
        let partition = if batch.iter().any(|(_, _, d)| !d.edges.is_empty()) {
            Some(self.partition(at_ns)?)
        } else {
            None
        };
        // The rows, in columns.
        let ids = &self.ids;
        let id = |s: &str| {
            ids.get(s)
                .copied()
                .ok_or_else(|| StoreError::Corrupt(format!("no dictionary id for {s:?}")))
        };
        let kind_ids = kinds
            .iter()
            .map(|(k, name)| Ok((*k, id(name)?)))
            .collect::<Result<HashMap<EdgeKind, i64>, StoreError>>()?;
        let mut rows: Vec<[Option<i64>; 15]> = Vec::new();
        let mut oks: Vec<bool> = Vec::new();
        let mut procs: BTreeMap<(&str, i64, i64), String> = BTreeMap::new();
        let mut heads: BTreeMap<&str, i64> = BTreeMap::new();
        for &(host, seq, delta) in batch {
            for node in &delta.upserted {
                if let Node::Process(p) = node {
                    procs.insert(
                        (host, i64::from(p.id.pid), i(p.id.start)),
                        serde_json::to_string(p)?,
                    );
                }
            }
            if !delta.edges.is_empty() {
                let host_id = id(host)?;
                for e in &delta.edges {
                    let mut col = |t: Text<'_>| id(&text(&t));
                    let f = history::encode_node(&e.from, &mut col)?;
                    let t = history::encode_node(&e.to, &mut col)?;
                    rows.push([
                        Some(i(at_ns)),
                        Some(host_id),
                        kind_ids.get(&e.kind).copied(),
                        Some(i(e.seq)),
                        Some(i(e.boot_ns)),
                        Some(f.0 as i64),
                        f.1,
                        f.2,
                        f.3,
                        Some(t.0 as i64),
                        t.1,
                        t.2,
                        t.3,
                        t.4.map(i64::from),
                        t.5,
                    ]);
                    oks.push(e.ok);
                }
            }
            heads.insert(host, i(seq));
        }
        let added = i(rows.len() as u64);
        let at = i(at_ns);
        self.with(move |c| {
            let mut tx = c.transaction()?;
            if !procs.is_empty() {
                let (mut hs, mut pids, mut starts, mut nodes) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for ((h, pid, start), node) in procs {
                    hs.push(h);
                    pids.push(pid);
                    starts.push(start);
                    nodes.push(node);
                }
                tx.execute(
                    "INSERT INTO processes (host, pid, start, node) \
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[]) \
                     ON CONFLICT (host, pid, start) DO UPDATE SET node = EXCLUDED.node",
                    &[&hs, &pids, &starts, &nodes],
                )?;
            }
            if let Some(lo) = partition {
                let sink = tx.copy_in(&format!(
                    "COPY edges ({EDGE_COLUMNS}) FROM STDIN (FORMAT binary)"
                ))?;
                let mut w = BinaryCopyInWriter::new(sink, &EDGE_TYPES);
                for (r, ok) in rows.iter().zip(&oks) {
                    w.write(&[
                        &r[0], &r[1], &r[2], ok, &r[3], &r[4], &r[5], &r[6], &r[7], &r[8], &r[9],
                        &r[10], &r[11], &r[12], &r[13], &r[14],
                    ])?;
                }
                w.finish()?;
                tx.execute(
                    "UPDATE edge_partitions SET edges = edges + $2, last_ns = GREATEST(last_ns, $3) \
                     WHERE lo = $1",
                    &[&lo, &added, &at],
                )?;
            }
            let (hosts, seqs): (Vec<&str>, Vec<i64>) = heads.into_iter().unzip();
            tx.execute(
                "INSERT INTO graph_heads (host, seq) SELECT * FROM unnest($1::text[], $2::int8[]) \
                 ON CONFLICT (host) DO UPDATE SET seq = EXCLUDED.seq",
                &[&hosts, &seqs],
            )?;
            tx.commit()?;
            Ok(())
        })
    }
}

/// The rows of `sql`, whose `clause` takes `arg` as its one parameter (no clause: none).
fn rows_where(
    c: &mut Client,
    sql: &str,
    clause: &str,
    arg: &str,
) -> Result<Vec<postgres::Row>, postgres::Error> {
    if clause.is_empty() {
        c.query(sql, &[])
    } else {
        c.query(sql, &[&arg])
    }
}

/// A dictionary string as text.
fn text(t: &Text<'_>) -> String {
    match t {
        Text::Str(s) => (*s).to_owned(),
        Text::Ip(ip) => ip.to_string(),
    }
}

fn migrate(c: &mut Client) -> Result<(), StoreError> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let found: i64 = tx
        .query_opt("SELECT version FROM schema_version", &[])?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
    if found < 0 {
        return Err(StoreError::Corrupt(format!(
            "schema_version holds {found}; a version is never negative"
        )));
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found < SCHEMA_VERSION {
        for step in &MIGRATIONS[usize::try_from(found).unwrap_or(0)..] {
            tx.batch_execute(step)?;
        }
        tx.execute("DELETE FROM schema_version", &[])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )?;
        tracing::info!(
            from = found,
            to = SCHEMA_VERSION,
            "PostgreSQL store migrated"
        );
    }
    tx.commit()?;
    Ok(())
}

/// The SQL that picks the dictionary's strings meeting `c`: compared character for
/// character, as the hunt does.
fn dictionary_match(c: &TextCond) -> &'static str {
    match c.op {
        TextOp::Eq => "SELECT id FROM strings WHERE s = $1",
        TextOp::Contains => "SELECT id FROM strings WHERE strpos(s, $1) > 0",
        TextOp::StartsWith => "SELECT id FROM strings WHERE starts_with(s, $1)",
        TextOp::EndsWith => "SELECT id FROM strings WHERE right(s, char_length($1)) = $1",
    }
}

/// The strings a scan names, read in bulk and kept.
struct Names(HashMap<i64, String>);

impl Names {
    fn fetch(&mut self, c: &mut impl GenericClient, ids: BTreeSet<i64>) -> Result<(), StoreError> {
        let missing: Vec<i64> = ids
            .into_iter()
            .filter(|id| !self.0.contains_key(id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for r in c.query("SELECT id, s FROM strings WHERE id = ANY($1)", &[&missing])? {
            self.0.insert(r.try_get(0)?, r.try_get(1)?);
        }
        Ok(())
    }

    fn get(&self, id: i64) -> Result<String, StoreError> {
        self.0
            .get(&id)
            .cloned()
            .ok_or_else(|| history::bad("a string the dictionary lacks"))
    }
}

fn raw(r: &postgres::Row, at: usize) -> Result<RawNode, StoreError> {
    Ok(RawNode {
        ty: r.try_get(at)?,
        num: r.try_get(at + 1)?,
        start: r.try_get(at + 2)?,
        s: r.try_get(at + 3)?,
        port: r.try_get(at + 4)?,
        proto: r.try_get(at + 5)?,
    })
}

/// Every edge of `kinds` meeting `filter`, oldest first, in chunks handed to `send` (false:
/// stop), from one snapshot.
fn scan(
    c: &mut Client,
    kinds: &[EdgeKind],
    filter: &EdgeFilter,
    send: &mut dyn FnMut(Vec<(String, Edge)>) -> bool,
) -> Result<(), StoreError> {
    let mut tx = c
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let ids_of =
        |tx: &mut postgres::Transaction<'_>, names: &[String]| -> Result<Vec<i64>, StoreError> {
            Ok(tx
                .query("SELECT id FROM strings WHERE s = ANY($1)", &[&names])?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?)
        };
    let kind_names = kinds
        .iter()
        .map(|k| history::kind_name(*k))
        .collect::<Result<Vec<_>, _>>()?;
    // Kinds, hosts and strings the dictionary lacks were never stored: nothing can match.
    let kind_ids = ids_of(&mut tx, &kind_names)?;
    if kind_ids.is_empty() {
        return Ok(());
    }
    let mut conds = String::from("kind = ANY($1)");
    let mut args: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(kind_ids)];
    if let Some(host) = &filter.host {
        let Some(&id) = ids_of(&mut tx, std::slice::from_ref(host))?.first() else {
            return Ok(());
        };
        args.push(Box::new(id));
        conds.push_str(&format!(" AND host = ${}", args.len()));
    }
    if let Some(port) = filter.port {
        args.push(Box::new(i64::from(port)));
        conds.push_str(&format!(" AND t_port = ${}", args.len()));
    }
    if let Some(ok) = filter.ok {
        args.push(Box::new(ok));
        conds.push_str(&format!(" AND ok = ${}", args.len()));
    }
    if let Some(cond) = &filter.target {
        let ids: Vec<i64> = tx
            .query(dictionary_match(cond), &[&cond.value])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(());
        }
        args.push(Box::new(ids));
        conds.push_str(&format!(" AND t_str = ANY(${})", args.len()));
    }
    let sql = format!(
        "SELECT host, kind, ok, seq, boot_ns, f_type, f_num, f_start, f_str, 0::int8, 0::int8,
                t_type, t_num, t_start, t_str, t_port, t_proto
         FROM edges WHERE {conds} ORDER BY id"
    );
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
    let portal = tx.bind(&sql, &params)?;
    let mut names = Names(HashMap::new());
    let mut kinds_by_id: HashMap<i64, EdgeKind> = HashMap::new();
    loop {
        let rows = tx.query_portal(&portal, SCAN_CHUNK)?;
        if rows.is_empty() {
            break;
        }
        let mut wanted = BTreeSet::new();
        for r in &rows {
            for col in [0, 1, 8, 14, 16] {
                if let Some(id) = r.try_get::<_, Option<i64>>(col)? {
                    wanted.insert(id);
                }
            }
        }
        names.fetch(&mut tx, wanted)?;
        let mut chunk = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind_id: i64 = r.try_get(1)?;
            let kind = match kinds_by_id.get(&kind_id) {
                Some(k) => *k,
                None => {
                    let k: EdgeKind =
                        serde_json::from_value(serde_json::Value::String(names.get(kind_id)?))?;
                    kinds_by_id.insert(kind_id, k);
                    k
                }
            };
            let mut name = |id| names.get(id);
            let edge = Edge {
                seq: u(r.try_get(3)?),
                boot_ns: u(r.try_get(4)?),
                kind,
                from: history::decode_node(&raw(r, 5)?, &mut name)?,
                to: history::decode_node(&raw(r, 11)?, &mut name)?,
                ok: r.try_get(2)?,
            };
            chunk.push((names.get(r.try_get(0)?)?, edge));
        }
        if !send(chunk) {
            break;
        }
    }
    tx.commit()?;
    Ok(())
}

fn prune(c: &mut Client, keep: Retention, now_ns: u64) -> Result<Pruned, StoreError> {
    let mut tx = c.transaction()?;
    let partitions: Vec<(i64, u64, u64)> = tx
        .query(
            "SELECT lo, last_ns, edges FROM edge_partitions ORDER BY lo",
            &[],
        )?
        .iter()
        .map(|r| Ok::<_, postgres::Error>((r.try_get(0)?, u(r.try_get(1)?), u(r.try_get(2)?))))
        .collect::<Result<_, _>>()?;
    let (gone, held) = history::past_bounds(&partitions, keep, now_ns);
    let mut dropped = 0u64;
    for (lo, edges) in gone {
        tx.batch_execute(&format!("DROP TABLE IF EXISTS edges_{lo}"))?;
        tx.execute("DELETE FROM edge_partitions WHERE lo = $1", &[&lo])?;
        dropped += edges;
    }
    let total: i64 = tx
        .query_one(
            "INSERT INTO counters (name, value) VALUES ('history_edges_dropped', $1) \
             ON CONFLICT (name) DO UPDATE SET value = counters.value + EXCLUDED.value \
             RETURNING value",
            &[&i(dropped)],
        )?
        .try_get(0)?;
    tx.commit()?;
    Ok(Pruned {
        dropped,
        dropped_total: u(total),
        kept: held,
    })
}

impl Store for Postgres {
    fn reader(&self) -> Result<Box<dyn Store>, StoreError> {
        let reused = crate::lock(&self.idle).pop();
        let client = match reused {
            Some(c) => c,
            None => {
                let mut c = connect(&self.url)?;
                off_runtime(|| {
                    c.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                })?;
                c
            }
        };
        Ok(Box::new(self.sibling(client, true)))
    }

    fn writer(&self) -> Result<Option<Box<dyn Store>>, StoreError> {
        Ok(Some(Box::new(self.sibling(connect(&self.url)?, false))))
    }

    fn add_token(
        &mut self,
        id: &str,
        secret_hash: &str,
        expires_ns: u64,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO tokens (id, secret_hash, expires_ns) VALUES ($1, $2, $3)",
            &[&id, &secret_hash, &i(expires_ns)],
        )?;
        Ok(())
    }

    fn redeem_token(
        &mut self,
        id: &str,
        secret_hash: &str,
        now_ns: u64,
    ) -> Result<Result<(), TokenRefusal>, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            // FOR UPDATE: two replicas redeeming one token at once, one wins.
            let row = tx.query_opt(
                "SELECT secret_hash, expires_ns, used_ns FROM tokens WHERE id = $1 FOR UPDATE",
                &[&id],
            )?;
            let row: Option<(String, i64, Option<i64>)> = row
                .map(|r| Ok::<_, postgres::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .transpose()?;
            let verdict = match row {
                None => Err(TokenRefusal::Unknown),
                Some((hash, _, _)) if hash != secret_hash => Err(TokenRefusal::Secret),
                Some((_, _, Some(_))) => Err(TokenRefusal::Used),
                Some((_, expires, None)) if u(expires) <= now_ns => Err(TokenRefusal::Expired),
                Some(_) => Ok(()),
            };
            if verdict.is_ok() {
                tx.execute(
                    "UPDATE tokens SET used_ns = $2 WHERE id = $1",
                    &[&id, &i(now_ns)],
                )?;
            }
            tx.commit()?;
            Ok(verdict)
        })
    }

    fn add_host(&mut self, host: &Host) -> Result<(), StoreError> {
        let report = serde_json::to_string(&host.report)?;
        self.execute(
            "INSERT INTO hosts (id, hostname, cert_fingerprint, enrolled_ns, last_seen_ns, revoked, report) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &host.id,
                &host.hostname,
                &host.cert_fingerprint,
                &i(host.enrolled_ns),
                &i(host.last_seen_ns),
                &host.revoked,
                &report,
            ],
        )?;
        Ok(())
    }

    fn host_by_fingerprint(&self, fingerprint: &str) -> Result<Option<Host>, StoreError> {
        Ok(self
            .hosts_where("WHERE cert_fingerprint = $1", fingerprint)?
            .into_iter()
            .next())
    }

    fn hosts(&self) -> Result<Vec<Host>, StoreError> {
        self.hosts_where("", "")
    }

    fn revoked_hosts(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            c.query("SELECT id FROM hosts WHERE revoked ORDER BY id", &[])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            let bytes: i64 = c
                .query_one("SELECT pg_database_size(current_database())", &[])?
                .try_get(0)?;
            Ok(u(bytes))
        })
    }

    fn revoke(&mut self, id_or_name: &str) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                "UPDATE hosts SET revoked = true WHERE id = $1 OR hostname = $1 RETURNING id",
                &[&id_or_name],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
        })
    }

    fn seen(&mut self, id: &str, report: &HostReport, now_ns: u64) -> Result<(), StoreError> {
        let body = serde_json::to_string(report)?;
        self.execute_relaxed(
            "UPDATE hosts SET last_seen_ns = $2, report = $3, hostname = $4 WHERE id = $1",
            &[&id, &i(now_ns), &body, &report.hostname],
        )?;
        Ok(())
    }

    fn held(&self, host: &str) -> Result<BTreeMap<Stream, u64>, StoreError> {
        self.with(|c| {
            let mut out = BTreeMap::new();
            for s in Stream::ALL {
                let last: Option<i64> = c
                    .query_one(
                        "SELECT MAX(seq) FROM records WHERE host = $1 AND stream = $2",
                        &[&host, &s.name()],
                    )?
                    .try_get(0)?;
                out.insert(s, last.map_or(0, u));
            }
            Ok(out)
        })
    }

    fn put_record(
        &mut self,
        host: &str,
        stream: Stream,
        seq: u64,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO records (host, stream, seq, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[&host, &stream.name(), &i(seq), &body],
        )?;
        Ok(())
    }

    fn records(&self, host: Option<&str>, stream: Stream) -> Result<Vec<HostRecord>, StoreError> {
        self.with(|c| {
            let rows = c.query(
                "SELECT host, seq, body FROM records \
                 WHERE stream = $1 AND ($2::text IS NULL OR host = $2) ORDER BY host, seq",
                &[&stream.name(), &host],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(HostRecord {
                        host: r.try_get(0)?,
                        seq: u(r.try_get(1)?),
                        body: serde_json::from_slice(r.try_get::<_, &[u8]>(2)?)
                            .unwrap_or_else(|_| serde_json::Value::String("(unreadable)".into())),
                    })
                })
                .collect()
        })
    }

    fn audit(&mut self, e: &AuditEntry) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO audit (time_ns, who, command, outcome) VALUES ($1, $2, $3, $4)",
            &[&i(e.time_ns), &e.who, &e.command, &e.outcome],
        )?;
        Ok(())
    }

    fn set_desired(&mut self, what: Desired, body: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO desired (kind, body) VALUES ($1, $2) \
             ON CONFLICT (kind) DO UPDATE SET body = EXCLUDED.body",
            &[&what.key(), &body],
        )?;
        Ok(())
    }

    fn desired(&self, what: Desired) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| {
            Ok(
                c.query_opt("SELECT body FROM desired WHERE kind = $1", &[&what.key()])?
                    .map(|r| r.try_get(0))
                    .transpose()?,
            )
        })
    }

    fn close_incidents(&mut self, closed: &[Closed]) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            for cl in closed {
                tx.execute(
                    "INSERT INTO closed_incidents (host, incident, closed_ns, how) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&cl.host, &cl.incident, &i(cl.closed_ns), &cl.how],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn closed_incidents(&self) -> Result<Vec<Closed>, StoreError> {
        self.with(|c| {
            c.query(
                "SELECT host, incident, closed_ns, how FROM closed_incidents ORDER BY closed_ns",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Closed {
                    host: r.try_get(0)?,
                    incident: r.try_get(1)?,
                    closed_ns: u(r.try_get(2)?),
                    how: r.try_get(3)?,
                })
            })
            .collect()
        })
    }

    fn put_hunt(&mut self, hunt: &Standing) -> Result<(), StoreError> {
        let body = serde_json::to_string(hunt)?;
        self.execute(
            "INSERT INTO hunts (name, body) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body",
            &[&hunt.name, &body],
        )?;
        Ok(())
    }

    fn remove_hunt(&mut self, name: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let n = tx.execute("DELETE FROM hunts WHERE name = $1", &[&name])?;
            tx.execute("DELETE FROM hunt_hits WHERE name = $1", &[&name])?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn hunts(&self) -> Result<Vec<Standing>, StoreError> {
        self.json_rows("SELECT body FROM hunts ORDER BY name", &[])
    }

    fn new_hits(&mut self, name: &str, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let mut fresh = Vec::with_capacity(keys.len());
            for k in keys {
                fresh.push(
                    tx.execute(
                        "INSERT INTO hunt_hits (name, key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&name, k],
                    )? > 0,
                );
            }
            tx.commit()?;
            Ok(fresh)
        })
    }

    fn put_hunt_incident(&mut self, incident: &HuntIncident) -> Result<(), StoreError> {
        let body = serde_json::to_string(incident)?;
        self.execute(
            "INSERT INTO hunt_incidents (id, body) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            &[&incident.id, &body],
        )?;
        Ok(())
    }

    fn hunt_incidents(&self) -> Result<Vec<HuntIncident>, StoreError> {
        self.json_rows("SELECT body FROM hunt_incidents ORDER BY ord", &[])
    }

    fn add_sweep(&mut self, sweep: &Sweep) -> Result<(), StoreError> {
        let body = serde_json::to_string(sweep)?;
        self.execute(
            "INSERT INTO sweeps (id, body) VALUES ($1, $2)",
            &[&sweep.id, &body],
        )?;
        Ok(())
    }

    fn sweeps(&self) -> Result<Vec<Sweep>, StoreError> {
        self.json_rows("SELECT body FROM sweeps ORDER BY ord", &[])
    }

    fn put_sweep_answer(&mut self, id: &str, answer: &Answer) -> Result<(), StoreError> {
        let body = serde_json::to_string(answer)?;
        self.execute(
            "INSERT INTO sweep_answers (id, host, body) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&id, &answer.host, &body],
        )?;
        Ok(())
    }

    fn sweep_answers(&self, id: &str) -> Result<Vec<Answer>, StoreError> {
        self.json_rows(
            "SELECT body FROM sweep_answers WHERE id = $1 ORDER BY ord",
            &[&id],
        )
    }

    fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.with(|c| {
            c.query(
                "SELECT time_ns, who, command, outcome FROM audit ORDER BY ord",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    time_ns: u(r.try_get(0)?),
                    who: r.try_get(1)?,
                    command: r.try_get(2)?,
                    outcome: r.try_get(3)?,
                })
            })
            .collect()
        })
    }

    fn add_operator(&mut self, o: &Operator) -> Result<(), StoreError> {
        let added = self.execute(
            "INSERT INTO operators (name, role, created_ns, password_hash) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&o.name, &o.role.name(), &i(o.created_ns), &o.password_hash],
        )?;
        if added == 0 {
            return Err(StoreError::OperatorExists(o.name.clone()));
        }
        Ok(())
    }

    fn remove_operator(&mut self, name: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let removed = tx.execute("DELETE FROM operators WHERE name = $1", &[&name])?;
            tx.execute(
                "UPDATE api_tokens SET revoked = true WHERE operator = $1",
                &[&name],
            )?;
            tx.commit()?;
            Ok(removed == 1)
        })
    }

    fn operator(&self, name: &str) -> Result<Option<Operator>, StoreError> {
        Ok(self
            .operators_where("WHERE name = $1", name)?
            .into_iter()
            .next())
    }

    fn operators(&self) -> Result<Vec<Operator>, StoreError> {
        self.operators_where("", "")
    }

    fn add_api_token(&mut self, t: &ApiToken) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO api_tokens (id, operator, created_ns, revoked, secret_hash) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &t.id,
                &t.operator,
                &i(t.created_ns),
                &t.revoked,
                &t.secret_hash,
            ],
        )?;
        Ok(())
    }

    fn api_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError> {
        Ok(self.tokens_where("WHERE id = $1", id)?.into_iter().next())
    }

    fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.tokens_where("", "")
    }

    fn revoke_api_token(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.execute("UPDATE api_tokens SET revoked = true WHERE id = $1", &[&id])? == 1)
    }

    fn add_fleet_block(&mut self, block: &FleetBlock) -> Result<(u64, bool), StoreError> {
        let key = format!("{}|{}", block.incident, serde_json::to_string(&block.what)?);
        let body = serde_json::to_string(block)?;
        self.with(|c| {
            let added = c.execute(
                "INSERT INTO fleet_blocks (key, body, expires_ns) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO NOTHING",
                &[&key, &body, &i(block.expires_ns)],
            )?;
            let id: i64 = c
                .query_one("SELECT id FROM fleet_blocks WHERE key = $1", &[&key])?
                .try_get(0)?;
            Ok((u(id), added == 1))
        })
    }

    fn fleet_blocks(&self, now_ns: u64) -> Result<Vec<StoredBlock>, StoreError> {
        self.with(|c| {
            let blocks = c.query(
                "SELECT id, body FROM fleet_blocks WHERE expires_ns > $1 ORDER BY id",
                &[&i(now_ns)],
            )?;
            let mut out = Vec::with_capacity(blocks.len());
            for r in blocks {
                let id: i64 = r.try_get(0)?;
                let hosts = c
                    .query(
                        "SELECT host, outcome FROM fleet_block_hosts WHERE block = $1",
                        &[&id],
                    )?
                    .iter()
                    .map(|h| Ok::<_, postgres::Error>((h.try_get(0)?, h.try_get(1)?)))
                    .collect::<Result<_, _>>()?;
                out.push(StoredBlock {
                    id: u(id),
                    block: serde_json::from_str(r.try_get::<_, &str>(1)?)?,
                    hosts,
                });
            }
            Ok(out)
        })
    }

    fn set_block_outcome(&mut self, id: u64, host: &str, outcome: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO fleet_block_hosts (block, host, outcome) VALUES ($1, $2, $3) \
             ON CONFLICT (block, host) DO UPDATE SET outcome = EXCLUDED.outcome",
            &[&i(id), &host, &outcome],
        )?;
        Ok(())
    }

    fn noticed(&self, target: &str, incident: &str, event: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT 1 FROM notifications WHERE target = $1 AND incident = $2 AND event = $3",
                &[&target, &incident, &event],
            )?
            .is_some())
        })
    }

    fn add_fleet_step(&mut self, step: &FleetStep) -> Result<(), StoreError> {
        let body = serde_json::to_string(step)?;
        self.execute(
            "INSERT INTO fleet_steps (incident, time_ns, body) VALUES ($1, $2, $3)",
            &[&step.incident, &i(step.time_ns), &body],
        )?;
        Ok(())
    }

    fn fleet_steps(&self, incident: &str) -> Result<Vec<FleetStep>, StoreError> {
        self.json_rows(
            "SELECT body FROM fleet_steps WHERE incident = $1 ORDER BY ord",
            &[&incident],
        )
    }

    fn first_notice(
        &mut self,
        target: &str,
        incident: &str,
        event: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.execute(
            "INSERT INTO notifications (target, incident, event) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&target, &incident, &event],
        )? == 1)
    }

    fn apply_deltas(&mut self, batch: &[(&str, u64, &Delta)]) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let merged = self.merge(batch, crate::now_ns());
        if merged.is_err() {
            // A partition another replica dropped, or one this one never saw made.
            self.partitions.clear();
        }
        merged
    }

    fn graph_head(&self, host: &str) -> Result<u64, StoreError> {
        self.with(|c| {
            Ok(
                c.query_opt("SELECT seq FROM graph_heads WHERE host = $1", &[&host])?
                    .map(|r| r.try_get::<_, i64>(0))
                    .transpose()?
                    .map_or(0, u),
            )
        })
    }

    fn processes(&self) -> Result<Vec<(String, ProcessNode)>, StoreError> {
        self.with(|c| {
            c.query("SELECT host, node FROM processes", &[])?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get(0)?,
                        serde_json::from_str(r.try_get::<_, &str>(1)?)?,
                    ))
                })
                .collect()
        })
    }

    fn processes_of(&self, host: &str, ids: &[ProcessId]) -> Result<Vec<ProcessNode>, StoreError> {
        let pids: Vec<i64> = ids.iter().map(|p| i64::from(p.pid)).collect();
        let starts: Vec<i64> = ids.iter().map(|p| i(p.start)).collect();
        self.with(|c| {
            c.query(
                "SELECT p.node FROM unnest($2::int8[], $3::int8[]) WITH ORDINALITY AS q(pid, start, n) \
                 JOIN processes p ON p.host = $1 AND p.pid = q.pid AND p.start = q.start \
                 ORDER BY q.n",
                &[&host, &pids, &starts],
            )?
            .iter()
            .map(|r| Ok(serde_json::from_str(r.try_get::<_, &str>(0)?)?))
            .collect()
        })
    }

    fn scan_edges(
        &self,
        kinds: &[EdgeKind],
        filter: &EdgeFilter,
        visit: &mut dyn FnMut(&str, Edge),
    ) -> Result<(), StoreError> {
        let mut guard = crate::lock(&self.db);
        let client = guard
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt("the connection was handed back".into()))?;
        // The rows are read on a thread of their own and visited here, a chunk at a time.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(String, Edge)>>(2);
        std::thread::scope(|s| {
            let reader =
                s.spawn(move || scan(client, kinds, filter, &mut |chunk| tx.send(chunk).is_ok()));
            for chunk in rx {
                for (host, edge) in chunk {
                    visit(&host, edge);
                }
            }
            match reader.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn prune_history(&mut self, keep: Retention, now_ns: u64) -> Result<Pruned, StoreError> {
        self.partitions.clear();
        self.with(|c| prune(c, keep, now_ns))
    }

    /// A session advisory lock: held until this connection ends (the replica stopped or
    /// died), then free for the next replica that asks.
    fn lease(&mut self, name: &str) -> Result<bool, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        // A lease is the session's lock: asking the server now finds a session lost since
        // (and the lease with it), rather than a later write finding it while another
        // replica holds the lease too.
        let alive = self.with(|c| Ok(c.is_valid(LEASE_CHECK)))?;
        if self.reconnected.swap(false, Ordering::AcqRel) || alive.is_err() {
            self.leases.clear();
        }
        alive?;
        if self.leases.contains(name) {
            return Ok(true);
        }
        let key = lease_key(name);
        let held: bool = self.with(|c| {
            Ok(c.query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
                .try_get(0)?)
        })?;
        if held {
            tracing::info!(lease = name, "this controller holds the lease");
            self.leases.insert(name.to_owned());
        }
        Ok(held)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn hold_connection(&mut self, host: &str, replica: &str) -> Result<(), StoreError> {
        self.execute_relaxed(
            "INSERT INTO connections (host, replica, since_ns) VALUES ($1, $2, $3) \
             ON CONFLICT (host) DO UPDATE SET replica = EXCLUDED.replica, since_ns = EXCLUDED.since_ns",
            &[&host, &replica, &i(crate::now_ns())],
        )?;
        Ok(())
    }

    fn drop_connection(&mut self, host: &str, replica: &str) -> Result<(), StoreError> {
        self.execute_relaxed(
            "DELETE FROM connections WHERE host = $1 AND replica = $2",
            &[&host, &replica],
        )?;
        Ok(())
    }

    fn connection_holder(&self, host: &str) -> Result<Option<String>, StoreError> {
        let alive = i(crate::now_ns().saturating_sub(super::REPLICA_ALIVE_NS));
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT c.replica FROM connections c JOIN replicas r ON r.name = c.replica \
                 WHERE c.host = $1 AND r.beat_ns > $2",
                &[&host, &alive],
            )?
            .map(|r| r.try_get(0))
            .transpose()?)
        })
    }

    fn beat(&mut self, replica: &str) -> Result<(), StoreError> {
        let now = crate::now_ns();
        let stale = i(now.saturating_sub(super::REPLICA_ALIVE_NS));
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO replicas (name, beat_ns) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET beat_ns = EXCLUDED.beat_ns",
                &[&replica, &i(now)],
            )?;
            tx.execute("DELETE FROM routed WHERE at_ns < $1", &[&stale])?;
            tx.execute("DELETE FROM replicas WHERE beat_ns < $1", &[&stale])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn held_elsewhere(&self, replica: &str) -> Result<BTreeSet<String>, StoreError> {
        let alive = i(crate::now_ns().saturating_sub(super::REPLICA_ALIVE_NS));
        self.with(|c| {
            c.query(
                "SELECT c.host FROM connections c JOIN replicas r ON r.name = c.replica \
                 WHERE c.replica <> $1 AND r.beat_ns > $2",
                &[&replica, &alive],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
        })
    }

    fn route_command(
        &mut self,
        replica: &str,
        host: &str,
        command: &str,
    ) -> Result<u64, StoreError> {
        self.with(|c| {
            let id: i64 = c
                .query_one(
                    "INSERT INTO routed (replica, host, command, at_ns) VALUES ($1, $2, $3, $4) \
                     RETURNING id",
                    &[&replica, &host, &command, &i(crate::now_ns())],
                )?
                .try_get(0)?;
            Ok(u(id))
        })
    }

    fn take_routed(&mut self, replica: &str) -> Result<Vec<super::Routed>, StoreError> {
        self.answer_rows(
            "UPDATE routed SET taken = true WHERE replica = $1 AND NOT taken \
             RETURNING id, host, command",
            &[&replica],
        )
    }

    fn answer_routed(&mut self, id: u64, answer: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE routed SET answer = $2 WHERE id = $1",
            &[&i(id), &answer],
        )?;
        Ok(())
    }

    fn routed_answer(&mut self, id: u64) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(
                "DELETE FROM routed WHERE id = $1 AND answer IS NOT NULL RETURNING answer",
                &[&i(id)],
            )?
            .map(|r| r.try_get(0))
            .transpose()?)
        })
    }
}

impl Postgres {
    fn answer_rows(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<super::Routed>, StoreError> {
        self.with(|c| {
            c.query(sql, args)?
                .iter()
                .map(|r| Ok((u(r.try_get(0)?), r.try_get(1)?, r.try_get(2)?)))
                .collect()
        })
    }
}

/// The advisory lock key of lease `name`: the first 8 bytes of its SHA-256.
fn lease_key(name: &str) -> i64 {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(format!("vigil lease {name}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}
