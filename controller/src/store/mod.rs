//! The controller's store, behind one narrow interface ([`Store`]) with two backends:
//!
//! - [`Sqlite`], the embedded default (rusqlite, bundled): one file in the state directory,
//!   no server to run, and transactions that are on disk before a record is acknowledged to
//!   its sensor;
//! - [`Postgres`], one database shared by several controller replicas.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use rusqlite::{Connection, OptionalExtension as _, params};
use sensor_common::{
    protocol::{FleetBlock, HostReport, Stream},
    wire::{Delta, Edge, EdgeKind, Node, ProcessNode},
};
pub mod history;
pub mod model;
pub mod postgres;
pub mod writer;

pub use history::{EdgeFilter, Pruned, Retention, TextCond, TextOp};
pub use postgres::Postgres;

pub use model::{
    Answer, ApiToken, AuditEntry, Closed, Desired, FleetStep, Hit, Host, HostRecord, HostResponse,
    HuntIncident, Operator, Respond, Role, Standing, Step, StoredBlock, Sweep,
};

/// Which store a controller keeps its state in (`serve --store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, one file in the state directory.
    Embedded,
    /// A PostgreSQL database, by its connection URL.
    Postgres(String),
}

/// A `--store` that is neither `embedded` nor a PostgreSQL URL.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a store: give `embedded` (one SQLite file in the state directory) or a PostgreSQL URL, postgres://USER@HOST:PORT/DATABASE"
)]
pub struct BadBackend(String);

impl std::str::FromStr for Backend {
    type Err = BadBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "embedded" {
            return Ok(Self::Embedded);
        }
        let url = s
            .strip_prefix("postgres://")
            .or(s.strip_prefix("postgresql://"));
        match url {
            Some(rest) if !rest.is_empty() => Ok(Self::Postgres(s.to_owned())),
            _ => Err(BadBackend(s.to_owned())),
        }
    }
}

/// The store as the controller's tasks share it.
/// How long a replica counts as alive after its last [`Store::beat`]: a replica killed
/// outright stops holding its hosts' connections this long after.
pub const REPLICA_ALIVE_NS: u64 = 10_000_000_000;

pub type SharedStore = std::sync::Arc<std::sync::Mutex<Box<dyn Store>>>;

/// Runs `f`, which waits for the store (its lock, or its server's answer), without holding
/// up the other tasks of the runtime thread it is called on: on a multi-threaded runtime the
/// thread hands its tasks to another first. A thousand sensors connecting while a group
/// commit holds the store then still finish their QUIC handshakes.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store (PostgreSQL): {}", postgres::detail(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("this connection of the store is read-only")]
    ReadOnly,
    #[error("no other controller shares this store")]
    NotShared,
    #[error("there is already an operator {0}")]
    OperatorExists(String),
    #[error("the store is damaged: {0}")]
    Corrupt(String),
    #[error("the store's file {}: {source}", .path.display())]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the store has schema version {found}, newer than this controller's {known}: run the newer controller, or restore a backup made by this one"
    )]
    Newer { found: i64, known: i64 },
}

/// Why a token was not accepted. Said to the operator's log, never to the peer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("unknown token")]
    Unknown,
    #[error("the token's secret does not match")]
    Secret,
    #[error("the token expired")]
    Expired,
    #[error("the token was already used")]
    Used,
}

/// What the controller keeps. One implementation per backend.
pub trait Store: Send {
    /// A connection of its own for a long read (a hunt, a sweep's file list, an incident
    /// listing), so the read holds no lock the writers need: telemetry is merged while it
    /// runs. It refuses every write.
    fn reader(&self) -> Result<Box<dyn Store>, StoreError>;
    /// A connection of its own for the graph writer, where the store takes several writers at
    /// once (PostgreSQL): a group commit then holds no lock the connections' own calls need.
    /// None: the writer shares this store (SQLite has one writer).
    fn writer(&self) -> Result<Option<Box<dyn Store>>, StoreError> {
        Ok(None)
    }
    fn add_token(&mut self, id: &str, secret_hash: &str, expires_ns: u64)
    -> Result<(), StoreError>;
    /// Marks the token used, if it may be: known, matching, unexpired and unused.
    fn redeem_token(
        &mut self,
        id: &str,
        secret_hash: &str,
        now_ns: u64,
    ) -> Result<Result<(), TokenRefusal>, StoreError>;
    fn add_host(&mut self, host: &Host) -> Result<(), StoreError>;
    fn host_by_fingerprint(&self, fingerprint: &str) -> Result<Option<Host>, StoreError>;
    fn hosts(&self) -> Result<Vec<Host>, StoreError>;
    /// The ids of the revoked hosts alone: what every replica's heartbeat reads, so a fleet
    /// of thousands is not read whole each beat.
    fn revoked_hosts(&self) -> Result<Vec<String>, StoreError>;
    /// The bytes the store holds on disk, for `/metrics` and the benchmarks: the database
    /// file and its write-ahead log, or the database's size as PostgreSQL counts it.
    fn size_bytes(&self) -> Result<u64, StoreError>;
    /// Revokes every host with this id or hostname; returns their ids.
    fn revoke(&mut self, id_or_name: &str) -> Result<Vec<String>, StoreError>;
    fn seen(&mut self, id: &str, report: &HostReport, now_ns: u64) -> Result<(), StoreError>;
    /// The last line held of each stream of `host`.
    fn held(&self, host: &str) -> Result<BTreeMap<Stream, u64>, StoreError>;
    /// Keeps line `seq` of a host's stream (a line already held is left as it is).
    fn put_record(
        &mut self,
        host: &str,
        stream: Stream,
        seq: u64,
        body: &[u8],
    ) -> Result<(), StoreError>;
    /// Every line of `stream`, of one host or all, in order.
    fn records(&self, host: Option<&str>, stream: Stream) -> Result<Vec<HostRecord>, StoreError>;
    fn audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError>;
    fn set_desired(&mut self, what: Desired, body: &[u8]) -> Result<(), StoreError>;
    fn desired(&self, what: Desired) -> Result<Option<Vec<u8>>, StoreError>;
    /// Marks incidents of `host` closed (an incident already closed keeps its first closing).
    fn close_incidents(&mut self, closed: &[Closed]) -> Result<(), StoreError>;
    fn closed_incidents(&self) -> Result<Vec<Closed>, StoreError>;
    /// Keeps a standing hunt (replacing one of the same name).
    fn put_hunt(&mut self, hunt: &Standing) -> Result<(), StoreError>;
    /// Forgets a standing hunt; false when there was none of that name.
    fn remove_hunt(&mut self, name: &str) -> Result<bool, StoreError>;
    fn hunts(&self) -> Result<Vec<Standing>, StoreError>;
    /// Of these hits of hunt `name`, keeps and returns the ones never seen before.
    fn new_hits(&mut self, name: &str, keys: &[String]) -> Result<Vec<bool>, StoreError>;
    /// Keeps (or updates) an incident a hunt opened.
    fn put_hunt_incident(&mut self, incident: &HuntIncident) -> Result<(), StoreError>;
    fn hunt_incidents(&self) -> Result<Vec<HuntIncident>, StoreError>;
    fn add_sweep(&mut self, sweep: &Sweep) -> Result<(), StoreError>;
    fn sweeps(&self) -> Result<Vec<Sweep>, StoreError>;
    /// Keeps a host's answer to a sweep (its first answer stays).
    fn put_sweep_answer(&mut self, id: &str, answer: &Answer) -> Result<(), StoreError>;
    fn sweep_answers(&self, id: &str) -> Result<Vec<Answer>, StoreError>;
    fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError>;
    /// Keeps a new operator; one of the same name is refused, never replaced.
    fn add_operator(&mut self, operator: &Operator) -> Result<(), StoreError>;
    /// Forgets an operator and revokes their API tokens; false when there was none.
    fn remove_operator(&mut self, name: &str) -> Result<bool, StoreError>;
    fn operator(&self, name: &str) -> Result<Option<Operator>, StoreError>;
    fn operators(&self) -> Result<Vec<Operator>, StoreError>;
    fn add_api_token(&mut self, token: &ApiToken) -> Result<(), StoreError>;
    fn api_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError>;
    fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;
    /// Revokes API token `id`; false when there is none.
    fn revoke_api_token(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Keeps a fleet block; the same block of the same incident is kept once. Its id, and
    /// whether it is new.
    fn add_fleet_block(&mut self, block: &FleetBlock) -> Result<(u64, bool), StoreError>;
    /// The fleet blocks that have not expired at `now_ns`, with what each host answered.
    fn fleet_blocks(&self, now_ns: u64) -> Result<Vec<StoredBlock>, StoreError>;
    /// What `host` answered to fleet block `id`.
    fn set_block_outcome(&mut self, id: u64, host: &str, outcome: &str) -> Result<(), StoreError>;
    /// Whether `event` of `incident` was told to `target`.
    fn noticed(&self, target: &str, incident: &str, event: &str) -> Result<bool, StoreError>;
    /// Keeps a step the fleet took on its own for an incident.
    fn add_fleet_step(&mut self, step: &FleetStep) -> Result<(), StoreError>;
    /// The steps taken for `incident`, oldest first.
    fn fleet_steps(&self, incident: &str) -> Result<Vec<FleetStep>, StoreError>;
    /// Marks `event` of `incident` as told to `target`: true the first time, false after,
    /// so a person is told once however many alerts the incident gathers.
    fn first_notice(
        &mut self,
        target: &str,
        incident: &str,
        event: &str,
    ) -> Result<bool, StoreError>;
    /// Applies a host's graph delta: processes are upserted, edges appended. Nodes aged out
    /// on the host stay: hunts search the history too.
    fn apply_delta(&mut self, host: &str, seq: u64, delta: &Delta) -> Result<(), StoreError> {
        self.apply_deltas(&[(host, seq, delta)])
    }
    /// Several hosts' deltas in one transaction: all of them are durable, or none.
    fn apply_deltas(&mut self, batch: &[(&str, u64, &Delta)]) -> Result<(), StoreError>;
    /// The last graph delta applied for `host` (0 for none).
    fn graph_head(&self, host: &str) -> Result<u64, StoreError>;
    /// Every process of every host.
    fn processes(&self) -> Result<Vec<(String, ProcessNode)>, StoreError>;
    /// The processes of `host` with these identities (those the store has).
    fn processes_of(
        &self,
        host: &str,
        ids: &[sensor_common::wire::ProcessId],
    ) -> Result<Vec<ProcessNode>, StoreError>;
    /// Hands every edge of these kinds meeting `filter`, of every host, oldest first, to
    /// `visit`: a hunt over millions of edges never holds them all. The filter may pass more
    /// than it names (never less); the caller tests what it keeps.
    fn scan_edges(
        &self,
        kinds: &[EdgeKind],
        filter: &EdgeFilter,
        visit: &mut dyn FnMut(&str, Edge),
    ) -> Result<(), StoreError>;
    /// Drops the oldest history past `keep` and counts what went.
    fn prune_history(&mut self, keep: Retention, now_ns: u64) -> Result<Pruned, StoreError>;
    /// Whether this controller holds the lease on singleton work `name` (standing hunts,
    /// retention), taking it when no other holds it. A lease is held for as long as the
    /// controller's store is open, and falls to another replica when it ends. A store no
    /// other controller shares always holds it.
    fn lease(&mut self, name: &str) -> Result<bool, StoreError> {
        let _ = name;
        Ok(true)
    }

    // Commands across replicas sharing the store: the replica holding a host's connection
    // is kept in the store; a command given to another replica is left there for the holder,
    // which runs it and leaves the answer. A store no other controller shares keeps none of
    // it, and every command goes to the local connection or to none.

    /// Whether other controllers may share this store (then connections and commands are
    /// routed through it).
    fn is_shared(&self) -> bool {
        false
    }

    /// `replica` is alive now: its connections count, and commands are routed to it, until
    /// [`REPLICA_ALIVE_NS`] after its last beat. Also forgets routed commands left longer
    /// than that without an answer.
    fn beat(&mut self, replica: &str) -> Result<(), StoreError> {
        let _ = replica;
        Ok(())
    }
    /// The hosts whose connection a live replica other than `replica` holds.
    fn held_elsewhere(&self, replica: &str) -> Result<BTreeSet<String>, StoreError> {
        let _ = replica;
        Ok(BTreeSet::new())
    }
    /// `replica` holds `host`'s connection now.
    fn hold_connection(&mut self, host: &str, replica: &str) -> Result<(), StoreError> {
        let _ = (host, replica);
        Ok(())
    }
    /// `replica` no longer holds `host`'s connection (if another holds it now, it stays).
    fn drop_connection(&mut self, host: &str, replica: &str) -> Result<(), StoreError> {
        let _ = (host, replica);
        Ok(())
    }
    /// The live replica holding `host`'s connection, as last said.
    fn connection_holder(&self, host: &str) -> Result<Option<String>, StoreError> {
        let _ = host;
        Ok(None)
    }
    /// Leaves `command` (JSON) for `replica` to run on `host`; its id.
    fn route_command(
        &mut self,
        replica: &str,
        host: &str,
        command: &str,
    ) -> Result<u64, StoreError> {
        let _ = (replica, host, command);
        Err(StoreError::NotShared)
    }
    /// Takes the commands left for `replica`: (id, host, command JSON).
    fn take_routed(&mut self, replica: &str) -> Result<Vec<Routed>, StoreError> {
        let _ = replica;
        Ok(Vec::new())
    }
    /// Leaves the answer (JSON) to routed command `id`.
    fn answer_routed(&mut self, id: u64, answer: &str) -> Result<(), StoreError> {
        let _ = (id, answer);
        Ok(())
    }
    /// The answer to routed command `id` once there is one (the command is then forgotten).
    fn routed_answer(&mut self, id: u64) -> Result<Option<String>, StoreError> {
        let _ = id;
        Ok(None)
    }
}

/// A command routed to this replica: its id, the host, the command as JSON.
pub type Routed = (u64, String, String);

pub struct Sqlite {
    db: Connection,
    path: std::path::PathBuf,
    /// What the history's writer knows between transactions.
    history: history::Writer,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    expires_ns INTEGER NOT NULL,
    used_ns INTEGER
);
CREATE TABLE IF NOT EXISTS hosts (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL UNIQUE,
    enrolled_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    report TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    host TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (host, stream, seq)
);
CREATE TABLE IF NOT EXISTS processes (
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start INTEGER NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (host, pid, start)
);
CREATE TABLE IF NOT EXISTS graph_heads (
    host TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS desired (
    kind TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS closed_incidents (
    host TEXT NOT NULL,
    incident TEXT NOT NULL,
    closed_ns INTEGER NOT NULL,
    how TEXT NOT NULL,
    PRIMARY KEY (host, incident)
);
CREATE TABLE IF NOT EXISTS hunts (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hunt_hits (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (name, key)
);
CREATE TABLE IF NOT EXISTS hunt_incidents (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_answers (
    id TEXT NOT NULL,
    host TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (id, host)
);
CREATE TABLE IF NOT EXISTS fleet_blocks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    expires_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_block_hosts (
    block INTEGER NOT NULL,
    host TEXT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (block, host)
);
CREATE TABLE IF NOT EXISTS notifications (
    target TEXT NOT NULL,
    incident TEXT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (target, incident, event)
);
CREATE TABLE IF NOT EXISTS fleet_steps (
    incident TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fleet_steps_by_incident ON fleet_steps (incident);
CREATE TABLE IF NOT EXISTS operators (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    password_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    operator TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    secret_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    time_ns INTEGER NOT NULL,
    who TEXT NOT NULL,
    command TEXT NOT NULL,
    outcome TEXT NOT NULL
);
";

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Sqlite {
    /// Every row of a one-column query of JSON documents, decoded.
    /// Writes `body` as JSON under `key` with `sql` (`... (key, body) VALUES (?1, ?2)`).
    fn put_json(
        &self,
        sql: &str,
        key: &str,
        body: &impl serde::Serialize,
    ) -> Result<(), StoreError> {
        self.db
            .execute(sql, params![key, serde_json::to_string(body)?])?;
        Ok(())
    }

    fn json_rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<T>, StoreError> {
        let mut st = self.db.prepare(sql)?;
        let bodies = st
            .query_map(args, |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(bodies
            .iter()
            .map(|b| serde_json::from_str(b))
            .collect::<Result<_, _>>()?)
    }

    /// Opens (or creates) the store file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        // The history's indexes take inserts all over: a larger page cache keeps them in
        // memory (64 MiB, the writer's only).
        db.pragma_update(None, "cache_size", -65_536)?;
        // Statement journals and the sorts of long reads in memory, not in temporary files
        // written page by page.
        db.pragma_update(None, "temp_store", "MEMORY")?;
        // Index pages are rewritten by nearly every commit: copy them back from the log
        // less often (every 64 MiB of log rather than 4 MiB).
        db.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        db.execute_batch(SCHEMA)?;
        history::migrate(&mut db, crate::now_ns())?;
        Ok(Self {
            db,
            path: path.to_owned(),
            history: history::Writer::new(history::PARTITION_EDGES),
        })
    }

    /// Cuts the history into partitions of `edges` (tests make them small, to see them cut
    /// and dropped).
    pub fn with_partition_edges(mut self, edges: u64) -> Self {
        self.history = history::Writer::new(edges);
        self
    }

    /// Every delta of `batch` inside `tx`: processes upserted, edges appended, heads moved.
    fn merge(
        dictionary: &mut history::Writer,
        tx: &rusqlite::Transaction<'_>,
        batch: &[(&str, u64, &Delta)],
        at_ns: u64,
    ) -> Result<(), StoreError> {
        let mut put_proc = tx.prepare_cached(
            "INSERT OR REPLACE INTO processes (host, pid, start, node) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut put_head =
            tx.prepare_cached("INSERT OR REPLACE INTO graph_heads (host, seq) VALUES (?1, ?2)")?;
        for &(host, seq, delta) in batch {
            for node in &delta.upserted {
                if let Node::Process(p) = node {
                    put_proc.execute(params![
                        host,
                        p.id.pid,
                        i(p.id.start),
                        serde_json::to_string(p)?
                    ])?;
                }
            }
            history::append(dictionary, tx, host, at_ns, &delta.edges)?;
            put_head.execute(params![host, i(seq)])?;
        }
        Ok(())
    }

    fn host_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Host, String)> {
        Ok((
            Host {
                id: row.get(0)?,
                hostname: row.get(1)?,
                cert_fingerprint: row.get(2)?,
                enrolled_ns: u(row.get(3)?),
                last_seen_ns: u(row.get(4)?),
                revoked: row.get::<_, i64>(5)? != 0,
                report: HostReport::default(),
            },
            row.get(6)?,
        ))
    }

    fn hosts_where(&self, clause: &str, arg: &str) -> Result<Vec<Host>, StoreError> {
        let sql = format!(
            "SELECT id, hostname, cert_fingerprint, enrolled_ns, last_seen_ns, revoked, report \
             FROM hosts {clause} ORDER BY hostname, id"
        );
        let mut st = self.db.prepare(&sql)?;
        let rows = if clause.is_empty() {
            st.query_map([], Self::host_from_row)?
                .collect::<Result<Vec<_>, _>>()?
        } else {
            st.query_map([arg], Self::host_from_row)?
                .collect::<Result<Vec<_>, _>>()?
        };
        rows.into_iter()
            .map(|(mut h, report)| {
                h.report = serde_json::from_str(&report)?;
                Ok(h)
            })
            .collect()
    }
}

impl Store for Sqlite {
    fn add_fleet_block(&mut self, block: &FleetBlock) -> Result<(u64, bool), StoreError> {
        let key = format!("{}|{}", block.incident, serde_json::to_string(&block.what)?);
        let added = self.db.execute(
            "INSERT OR IGNORE INTO fleet_blocks (key, body, expires_ns) VALUES (?1, ?2, ?3)",
            params![key, serde_json::to_string(block)?, i(block.expires_ns)],
        )?;
        let id: i64 = self.db.query_row(
            "SELECT id FROM fleet_blocks WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )?;
        Ok((u(id), added == 1))
    }

    fn fleet_blocks(&self, now_ns: u64) -> Result<Vec<StoredBlock>, StoreError> {
        let mut st = self
            .db
            .prepare("SELECT id, body FROM fleet_blocks WHERE expires_ns > ?1 ORDER BY id")?;
        let rows = st
            .query_map(params![i(now_ns)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut hosts = self
            .db
            .prepare("SELECT host, outcome FROM fleet_block_hosts WHERE block = ?1")?;
        rows.into_iter()
            .map(|(id, body)| {
                let answers = hosts
                    .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                Ok(StoredBlock {
                    id: u(id),
                    block: serde_json::from_str(&body)?,
                    hosts: answers,
                })
            })
            .collect()
    }

    fn set_block_outcome(&mut self, id: u64, host: &str, outcome: &str) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR REPLACE INTO fleet_block_hosts (block, host, outcome) VALUES (?1, ?2, ?3)",
            params![i(id), host, outcome],
        )?;
        Ok(())
    }

    fn noticed(&self, target: &str, incident: &str, event: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT 1 FROM notifications WHERE target = ?1 AND incident = ?2 AND event = ?3",
                params![target, incident, event],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn add_fleet_step(&mut self, step: &FleetStep) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO fleet_steps (incident, time_ns, body) VALUES (?1, ?2, ?3)",
            params![step.incident, i(step.time_ns), serde_json::to_string(step)?],
        )?;
        Ok(())
    }

    fn fleet_steps(&self, incident: &str) -> Result<Vec<FleetStep>, StoreError> {
        self.json_rows(
            "SELECT body FROM fleet_steps WHERE incident = ?1 ORDER BY rowid",
            params![incident],
        )
    }

    fn first_notice(
        &mut self,
        target: &str,
        incident: &str,
        event: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.db.execute(
            "INSERT OR IGNORE INTO notifications (target, incident, event) VALUES (?1, ?2, ?3)",
            params![target, incident, event],
        )? == 1)
    }

    fn reader(&self) -> Result<Box<dyn Store>, StoreError> {
        use rusqlite::OpenFlags;
        let db = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Box::new(Self {
            db,
            path: self.path.clone(),
            history: history::Writer::new(history::PARTITION_EDGES),
        }))
    }

    fn add_token(
        &mut self,
        id: &str,
        secret_hash: &str,
        expires_ns: u64,
    ) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO tokens (id, secret_hash, expires_ns) VALUES (?1, ?2, ?3)",
            params![id, secret_hash, i(expires_ns)],
        )?;
        Ok(())
    }

    fn redeem_token(
        &mut self,
        id: &str,
        secret_hash: &str,
        now_ns: u64,
    ) -> Result<Result<(), TokenRefusal>, StoreError> {
        let tx = self.db.transaction()?;
        let row: Option<(String, i64, Option<i64>)> = tx
            .query_row(
                "SELECT secret_hash, expires_ns, used_ns FROM tokens WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let verdict = match row {
            None => Err(TokenRefusal::Unknown),
            Some((hash, _, _)) if hash != secret_hash => Err(TokenRefusal::Secret),
            Some((_, _, Some(_))) => Err(TokenRefusal::Used),
            Some((_, expires, None)) if u(expires) <= now_ns => Err(TokenRefusal::Expired),
            Some(_) => Ok(()),
        };
        if verdict.is_ok() {
            tx.execute(
                "UPDATE tokens SET used_ns = ?2 WHERE id = ?1",
                params![id, i(now_ns)],
            )?;
        }
        tx.commit()?;
        Ok(verdict)
    }

    fn add_host(&mut self, host: &Host) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO hosts (id, hostname, cert_fingerprint, enrolled_ns, last_seen_ns, revoked, report) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                host.id,
                host.hostname,
                host.cert_fingerprint,
                i(host.enrolled_ns),
                i(host.last_seen_ns),
                i64::from(host.revoked),
                serde_json::to_string(&host.report)?
            ],
        )?;
        Ok(())
    }

    fn host_by_fingerprint(&self, fingerprint: &str) -> Result<Option<Host>, StoreError> {
        Ok(self
            .hosts_where("WHERE cert_fingerprint = ?1", fingerprint)?
            .into_iter()
            .next())
    }

    fn hosts(&self) -> Result<Vec<Host>, StoreError> {
        self.hosts_where("", "")
    }

    fn revoked_hosts(&self) -> Result<Vec<String>, StoreError> {
        let mut st = self
            .db
            .prepare_cached("SELECT id FROM hosts WHERE revoked <> 0 ORDER BY id")?;
        Ok(st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let mut total = 0;
        for (path, needed) in [(self.path.clone(), true), (wal.into(), false)] {
            match std::fs::metadata(&path) {
                Ok(m) => total += m.len(),
                // The log exists only while the database is open for writing.
                Err(e) if !needed && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::File { path, source }),
            }
        }
        Ok(total)
    }

    fn revoke(&mut self, id_or_name: &str) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = self
            .hosts_where("WHERE id = ?1 OR hostname = ?1", id_or_name)?
            .into_iter()
            .map(|h| h.id)
            .collect();
        for id in &ids {
            self.db
                .execute("UPDATE hosts SET revoked = 1 WHERE id = ?1", [id])?;
        }
        Ok(ids)
    }

    fn seen(&mut self, id: &str, report: &HostReport, now_ns: u64) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE hosts SET last_seen_ns = ?2, report = ?3, hostname = ?4 WHERE id = ?1",
            params![
                id,
                i(now_ns),
                serde_json::to_string(report)?,
                report.hostname
            ],
        )?;
        Ok(())
    }

    fn held(&self, host: &str) -> Result<BTreeMap<Stream, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for s in Stream::ALL {
            let last: Option<i64> = self.db.query_row(
                "SELECT MAX(seq) FROM records WHERE host = ?1 AND stream = ?2",
                params![host, s.name()],
                |r| r.get(0),
            )?;
            out.insert(s, last.map_or(0, u));
        }
        Ok(out)
    }

    fn put_record(
        &mut self,
        host: &str,
        stream: Stream,
        seq: u64,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR IGNORE INTO records (host, stream, seq, body) VALUES (?1, ?2, ?3, ?4)",
            params![host, stream.name(), i(seq), body],
        )?;
        Ok(())
    }

    fn records(&self, host: Option<&str>, stream: Stream) -> Result<Vec<HostRecord>, StoreError> {
        let mut st = self.db.prepare(
            "SELECT host, seq, body FROM records WHERE stream = ?1 AND (?2 IS NULL OR host = ?2) \
             ORDER BY host, seq",
        )?;
        let rows = st.query_map(params![stream.name(), host], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (host, seq, body) = row?;
            out.push(HostRecord {
                host,
                seq: u(seq),
                body: serde_json::from_slice(&body)
                    .unwrap_or_else(|_| serde_json::Value::String("(unreadable)".into())),
            });
        }
        Ok(out)
    }

    fn audit(&mut self, e: &AuditEntry) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO audit (time_ns, who, command, outcome) VALUES (?1, ?2, ?3, ?4)",
            params![i(e.time_ns), e.who, e.command, e.outcome],
        )?;
        Ok(())
    }

    fn apply_deltas(&mut self, batch: &[(&str, u64, &Delta)]) -> Result<(), StoreError> {
        let at_ns = crate::now_ns();
        let tx = self.db.transaction()?;
        let merged = Self::merge(&mut self.history, &tx, batch, at_ns).and_then(|()| {
            tx.commit()?;
            Ok(())
        });
        if merged.is_err() {
            // Rolled back: ids the dictionary handed out in it were never stored.
            self.history.forget();
        }
        merged
    }

    fn graph_head(&self, host: &str) -> Result<u64, StoreError> {
        let seq: Option<i64> = self
            .db
            .query_row("SELECT seq FROM graph_heads WHERE host = ?1", [host], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(seq.map_or(0, u))
    }

    fn processes_of(
        &self,
        host: &str,
        ids: &[sensor_common::wire::ProcessId],
    ) -> Result<Vec<ProcessNode>, StoreError> {
        let mut st = self.db.prepare_cached(
            "SELECT node FROM processes WHERE host = ?1 AND pid = ?2 AND start = ?3",
        )?;
        let mut out = Vec::new();
        for id in ids {
            let node: Option<String> = st
                .query_row(params![host, id.pid, i(id.start)], |r| r.get(0))
                .optional()?;
            if let Some(node) = node {
                out.push(serde_json::from_str(&node)?);
            }
        }
        Ok(out)
    }

    fn processes(&self) -> Result<Vec<(String, ProcessNode)>, StoreError> {
        let mut st = self.db.prepare("SELECT host, node FROM processes")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (host, node) = row?;
            out.push((host, serde_json::from_str(&node)?));
        }
        Ok(out)
    }

    fn scan_edges(
        &self,
        kinds: &[EdgeKind],
        filter: &EdgeFilter,
        visit: &mut dyn FnMut(&str, Edge),
    ) -> Result<(), StoreError> {
        history::scan(&self.db, kinds, filter, visit)
    }

    fn prune_history(&mut self, keep: Retention, now_ns: u64) -> Result<Pruned, StoreError> {
        // The partition appended to may be gone: the writer looks again.
        self.history.forget();
        history::prune(&mut self.db, keep, now_ns)
    }

    fn set_desired(&mut self, what: Desired, body: &[u8]) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR REPLACE INTO desired (kind, body) VALUES (?1, ?2)",
            params![what.key(), body],
        )?;
        Ok(())
    }

    fn desired(&self, what: Desired) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT body FROM desired WHERE kind = ?1",
                params![what.key()],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn close_incidents(&mut self, closed: &[Closed]) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        for c in closed {
            tx.execute(
                "INSERT OR IGNORE INTO closed_incidents (host, incident, closed_ns, how) VALUES (?1, ?2, ?3, ?4)",
                params![c.host, c.incident, i(c.closed_ns), c.how],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn closed_incidents(&self) -> Result<Vec<Closed>, StoreError> {
        let mut st = self.db.prepare(
            "SELECT host, incident, closed_ns, how FROM closed_incidents ORDER BY closed_ns",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Closed {
                host: r.get(0)?,
                incident: r.get(1)?,
                closed_ns: u(r.get(2)?),
                how: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_hunt(&mut self, hunt: &Standing) -> Result<(), StoreError> {
        self.put_json(
            "INSERT OR REPLACE INTO hunts (name, body) VALUES (?1, ?2)",
            &hunt.name,
            hunt,
        )
    }

    fn remove_hunt(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self.db.transaction()?;
        let n = tx.execute("DELETE FROM hunts WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM hunt_hits WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn hunts(&self) -> Result<Vec<Standing>, StoreError> {
        self.json_rows("SELECT body FROM hunts ORDER BY name", [])
    }

    fn new_hits(&mut self, name: &str, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        let tx = self.db.transaction()?;
        let mut fresh = Vec::with_capacity(keys.len());
        for k in keys {
            fresh.push(
                tx.execute(
                    "INSERT OR IGNORE INTO hunt_hits (name, key) VALUES (?1, ?2)",
                    params![name, k],
                )? > 0,
            );
        }
        tx.commit()?;
        Ok(fresh)
    }

    fn put_hunt_incident(&mut self, incident: &HuntIncident) -> Result<(), StoreError> {
        self.put_json(
            "INSERT OR REPLACE INTO hunt_incidents (id, body) VALUES (?1, ?2)",
            &incident.id,
            incident,
        )
    }

    fn hunt_incidents(&self) -> Result<Vec<HuntIncident>, StoreError> {
        self.json_rows("SELECT body FROM hunt_incidents ORDER BY rowid", [])
    }

    fn add_sweep(&mut self, sweep: &Sweep) -> Result<(), StoreError> {
        self.put_json(
            "INSERT INTO sweeps (id, body) VALUES (?1, ?2)",
            &sweep.id,
            sweep,
        )
    }

    fn sweeps(&self) -> Result<Vec<Sweep>, StoreError> {
        self.json_rows("SELECT body FROM sweeps ORDER BY rowid", [])
    }

    fn put_sweep_answer(&mut self, id: &str, answer: &Answer) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR IGNORE INTO sweep_answers (id, host, body) VALUES (?1, ?2, ?3)",
            params![id, answer.host, serde_json::to_string(answer)?],
        )?;
        Ok(())
    }

    fn sweep_answers(&self, id: &str) -> Result<Vec<Answer>, StoreError> {
        self.json_rows(
            "SELECT body FROM sweep_answers WHERE id = ?1 ORDER BY rowid",
            params![id],
        )
    }

    fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let mut st = self
            .db
            .prepare("SELECT time_ns, who, command, outcome FROM audit ORDER BY rowid")?;
        let rows = st.query_map([], |r| {
            Ok(AuditEntry {
                time_ns: u(r.get(0)?),
                who: r.get(1)?,
                command: r.get(2)?,
                outcome: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_operator(&mut self, o: &Operator) -> Result<(), StoreError> {
        let added = self.db.execute(
            "INSERT OR IGNORE INTO operators (name, role, created_ns, password_hash) \
             VALUES (?1, ?2, ?3, ?4)",
            params![o.name, o.role.name(), i(o.created_ns), o.password_hash],
        )?;
        if added == 0 {
            return Err(StoreError::OperatorExists(o.name.clone()));
        }
        Ok(())
    }

    fn remove_operator(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self.db.transaction()?;
        let removed = tx.execute("DELETE FROM operators WHERE name = ?1", [name])?;
        tx.execute(
            "UPDATE api_tokens SET revoked = 1 WHERE operator = ?1",
            [name],
        )?;
        tx.commit()?;
        Ok(removed == 1)
    }

    fn operator(&self, name: &str) -> Result<Option<Operator>, StoreError> {
        Ok(self
            .operators_where("WHERE name = ?1", name)?
            .into_iter()
            .next())
    }

    fn operators(&self) -> Result<Vec<Operator>, StoreError> {
        self.operators_where("", "")
    }

    fn add_api_token(&mut self, t: &ApiToken) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO api_tokens (id, operator, created_ns, revoked, secret_hash) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![t.id, t.operator, i(t.created_ns), t.revoked, t.secret_hash],
        )?;
        Ok(())
    }

    fn api_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError> {
        Ok(self.tokens_where("WHERE id = ?1", id)?.into_iter().next())
    }

    fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.tokens_where("", "")
    }

    fn revoke_api_token(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .execute("UPDATE api_tokens SET revoked = 1 WHERE id = ?1", [id])?
            == 1)
    }
}

impl Sqlite {
    /// Operators, all or those a one-argument `clause` selects (an unknown role reads as a
    /// viewer: the least it could be).
    fn operators_where(&self, clause: &str, arg: &str) -> Result<Vec<Operator>, StoreError> {
        let sql = format!(
            "SELECT name, role, created_ns, password_hash FROM operators {clause} ORDER BY name"
        );
        let mut st = self.db.prepare(&sql)?;
        let row = |r: &rusqlite::Row<'_>| {
            Ok(Operator {
                name: r.get(0)?,
                role: r.get::<_, String>(1)?.parse().unwrap_or(Role::Viewer),
                created_ns: u(r.get(2)?),
                password_hash: r.get(3)?,
            })
        };
        let rows = if clause.is_empty() {
            st.query_map([], row)?.collect::<Result<Vec<_>, _>>()?
        } else {
            st.query_map([arg], row)?.collect::<Result<Vec<_>, _>>()?
        };
        Ok(rows)
    }

    fn tokens_where(&self, clause: &str, arg: &str) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!(
            "SELECT id, operator, created_ns, revoked, secret_hash FROM api_tokens {clause} \
             ORDER BY created_ns, id"
        );
        let mut st = self.db.prepare(&sql)?;
        let row = |r: &rusqlite::Row<'_>| {
            Ok(ApiToken {
                id: r.get(0)?,
                operator: r.get(1)?,
                created_ns: u(r.get(2)?),
                revoked: r.get::<_, i64>(3)? != 0,
                secret_hash: r.get(4)?,
            })
        };
        let rows = if clause.is_empty() {
            st.query_map([], row)?.collect::<Result<Vec<_>, _>>()?
        } else {
            st.query_map([arg], row)?.collect::<Result<Vec<_>, _>>()?
        };
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_redeemed_once_and_only_in_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Sqlite::open(&dir.path().join("c.db")).expect("open");
        s.add_token("t1", "h", 100).expect("add");
        assert_eq!(
            s.redeem_token("t1", "x", 10).expect("db"),
            Err(TokenRefusal::Secret)
        );
        assert_eq!(
            s.redeem_token("t1", "h", 100).expect("db"),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(s.redeem_token("t1", "h", 10).expect("db"), Ok(()));
        assert_eq!(
            s.redeem_token("t1", "h", 11).expect("db"),
            Err(TokenRefusal::Used)
        );
        assert_eq!(
            s.redeem_token("t2", "h", 11).expect("db"),
            Err(TokenRefusal::Unknown)
        );
    }

    #[test]
    fn records_are_kept_once_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        {
            let mut s = Sqlite::open(&path).expect("open");
            s.put_record("h", Stream::Alerts, 1, b"{\"a\":1}")
                .expect("put");
            s.put_record("h", Stream::Alerts, 1, b"{\"a\":2}")
                .expect("put");
            s.put_record("h", Stream::Alerts, 2, b"{}").expect("put");
        }
        let s = Sqlite::open(&path).expect("reopen");
        assert_eq!(s.held("h").expect("held")[&Stream::Alerts], 2);
        assert_eq!(s.held("h").expect("held")[&Stream::Actions], 0);
        let r = s.records(Some("h"), Stream::Alerts).expect("records");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].body["a"], 1, "the first copy is kept");
    }

    #[test]
    fn a_reader_reads_beside_the_writer_and_refuses_to_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Sqlite::open(&dir.path().join("c.db")).expect("open");
        w.put_record("h", Stream::Alerts, 1, b"{}").expect("put");
        let mut r = w.reader().expect("reader");
        // A read in progress on the reader (a statement stepped, not finished)...
        let reading = r.records(None, Stream::Alerts).expect("read");
        assert_eq!(reading.len(), 1);
        // ...does not hold up the writer, and the reader sees the commit after it.
        w.put_record("h", Stream::Alerts, 2, b"{}")
            .expect("a write while a reader is open");
        assert_eq!(r.records(None, Stream::Alerts).expect("read").len(), 2);
        assert!(
            r.put_record("h", Stream::Alerts, 3, b"{}").is_err(),
            "the reader refuses writes"
        );
    }
}
