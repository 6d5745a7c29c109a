//! A store on its own, without the network: how fast graph deltas are merged (one
//! transaction each, and grouped the way the server's writer commits them), how long hunts
//! take over the history, and how long a delta waits to be merged while a hunt reads.
//!
//! `cargo bench -p controller --bench store -- [EDGES] [--store postgres://...]` (default
//! 10,000,000 edges, the embedded store). Each figure is printed as one line
//! `name: value unit`, its name prefixed `store_` for the embedded store and `postgres_` for
//! PostgreSQL, so `cargo xtask bench store` prints both side by side.

use std::{
    net::SocketAddr,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use controller::{
    services::hunt,
    store::{Host, Postgres, Sqlite, Store},
};
use sensor_common::{
    protocol::HostReport,
    wire::{
        Delta, Edge, EdgeKind, Endpoint, GRAPH_SCHEMA_VERSION, Node, NodeId, ProcessId, ProcessNode,
    },
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Hosts the history is spread over.
const HOSTS: usize = 1000;
/// Edges per delta: a sensor's batch.
const PER_DELTA: usize = 100;
/// Deltas per grouped commit (the server's writer takes what has arrived, up to its bound).
const GROUP: usize = 500;

/// A small, fixed pseudo-random sequence, so every run stores the same history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Delta `d`: one process, and [`PER_DELTA`] edges of a realistic mix (six in ten
/// connections, two execs, two writes), with port 4444 and `/tmp/.x/` payloads rare.
fn delta(rng: &mut Rng, d: usize) -> Delta {
    let p = ProcessId {
        pid: 1000 + (d % 30_000) as u32,
        start: d as u64,
    };
    let process = ProcessNode {
        id: p,
        parent: None,
        exe: Some(format!("/usr/bin/worker{}", d % 50)),
        argv: vec![
            format!("worker{}", d % 50),
            format!("--job={}", rng.below(100_000)),
        ],
        uid: 0,
        euid: 0,
        exited_ns: None,
    };
    let edges = (0..PER_DELTA)
        .map(|e| {
            let roll = rng.below(10);
            let (kind, to) = if roll < 6 {
                let port = if rng.below(100_000) == 0 {
                    4444
                } else {
                    1024 + rng.below(20_000) as u16
                };
                let ip = [10, rng.below(40) as u8, rng.below(250) as u8, 1];
                (
                    EdgeKind::Connected,
                    NodeId::Endpoint(Endpoint::Inet {
                        protocol: "tcp".into(),
                        addr: SocketAddr::from((ip, port)),
                    }),
                )
            } else if roll < 8 {
                let path = if rng.below(100_000) == 0 {
                    format!("/tmp/.x/payload{}", rng.below(10))
                } else {
                    format!("/usr/lib/tools/bin{}", rng.below(5_000))
                };
                (EdgeKind::Executed, NodeId::File(path))
            } else {
                (
                    EdgeKind::Wrote,
                    NodeId::File(format!("/var/lib/app/data/{}.db", rng.below(50_000))),
                )
            };
            Edge {
                seq: (d * PER_DELTA + e) as u64,
                boot_ns: (d * PER_DELTA + e) as u64 * 1000,
                kind,
                from: NodeId::Process(p),
                to,
                ok: true,
            }
        })
        .collect();
    Delta {
        version: GRAPH_SCHEMA_VERSION,
        seq: d as u64,
        upserted: vec![Node::Process(process)],
        removed: Vec::new(),
        edges,
    }
}

fn host(n: usize) -> Host {
    Host {
        id: format!("host{n:05}"),
        hostname: format!("h{n}"),
        cert_fingerprint: format!("fp{n}"),
        enrolled_ns: 1,
        last_seen_ns: 1,
        revoked: false,
        report: HostReport {
            hostname: format!("h{n}"),
            sensor_version: "bench".into(),
            policy_version: 1,
            rules_loaded: 0,
            rules_version: String::new(),
            isolated: false,
            dropped: 0,
            graph_dropped: 0,
            addresses: vec![std::net::IpAddr::from([
                10,
                (n / 250) as u8,
                (n % 250) as u8,
                1,
            ])],
        },
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let url = args
        .iter()
        .position(|a| a == "--store")
        .and_then(|i| args.get(i + 1));
    // On the target's disk, not a tmpfs: commits are fsynced, and that is what is measured.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let path = dir.path().join("controller.db");
    let (store, label): (Box<dyn Store>, &str) = match url {
        Some(url) => (Box::new(Postgres::open(url)?), "postgres"),
        None => (Box::new(Sqlite::open(&path)?), "store"),
    };
    measure(store, label, total)
}

fn measure(mut store: Box<dyn Store>, label: &str, total: usize) -> Res<()> {
    for n in 0..HOSTS {
        store.add_host(&host(n))?;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let deltas = total / PER_DELTA;
    println!("== {label} ({total} edges in {deltas} deltas of {PER_DELTA} over {HOSTS} hosts)");

    // One transaction per delta, as each sensor's stream used to commit: a small sample.
    let single = 200.min(deltas);
    let t = Instant::now();
    for d in 0..single {
        let h = d % HOSTS;
        store.apply_delta(&host(h).id, d as u64 + 1, &delta(&mut rng, d))?;
    }
    let per_delta = t.elapsed();
    println!(
        "{label}_merge_one_commit_per_delta: {:.0} edges/s",
        (single * PER_DELTA) as f64 / per_delta.as_secs_f64()
    );

    // The rest grouped, as the server's writer commits them.
    let t = Instant::now();
    let mut d = single;
    while d < deltas {
        let end = (d + GROUP).min(deltas);
        let batch: Vec<(String, u64, Delta)> = (d..end)
            .map(|d| {
                let h = d % HOSTS;
                (host(h).id, d as u64 + 1, delta(&mut rng, d))
            })
            .collect();
        let refs: Vec<(&str, u64, &Delta)> =
            batch.iter().map(|(h, s, d)| (h.as_str(), *s, d)).collect();
        store.apply_deltas(&refs)?;
        d = end;
    }
    let grouped = t.elapsed();
    println!(
        "{label}_merge_grouped: {:.0} edges/s",
        ((deltas - single) * PER_DELTA) as f64 / grouped.as_secs_f64()
    );
    let bytes = store.size_bytes()?;
    println!(
        "{label}_size: {:.0} MiB ({:.0} bytes per edge)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / total as f64
    );

    for q in [
        "connections where port = 4444",
        "execs where path startswith \"/tmp/.x/\"",
        "execs where path contains \"payload7\"",
        "writes where path endswith \"/777.db\"",
        "connections where addr = 10.3.7.1 and port = 5000",
        "processes where cmdline contains \"--job=999\"",
    ] {
        let query = hunt::parse(q)?;
        let reader = store.reader()?;
        let t = Instant::now();
        let out = hunt::search(reader.as_ref(), &query, &mut |_| {})?;
        let name = q
            .split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
            })
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        println!(
            "{label}_hunt_{name}: {:.1} ms ({} hits, {} edges read)",
            ms(t.elapsed()),
            out.hits.len(),
            out.edges_searched
        );
    }

    // A delta merged while a long hunt reads on its own connection.
    let reader = store.reader()?;
    let start = Arc::new(Barrier::new(2));
    let go = start.clone();
    let hunting = std::thread::spawn(move || -> Res<Duration> {
        let query = hunt::parse("writes where path contains \"data/1\"")?;
        go.wait();
        let t = Instant::now();
        hunt::search(reader.as_ref(), &query, &mut |_| {})?;
        Ok(t.elapsed())
    });
    start.wait();
    std::thread::sleep(Duration::from_millis(20));
    let mut waits = Vec::new();
    for n in 0..20 {
        let h = n % HOSTS;
        let d = delta(&mut rng, deltas + n);
        let t = Instant::now();
        store.apply_deltas(&[(&host(h).id, (deltas + n) as u64 + 1, &d)])?;
        waits.push(t.elapsed());
    }
    let hunt_took = hunting.join().map_err(|_| "the hunt thread panicked")??;
    waits.sort();
    println!(
        "{label}_merge_during_hunt_p50: {:.1} ms (the hunt took {:.0} ms)",
        ms(waits[waits.len() / 2]),
        ms(hunt_took)
    );
    println!(
        "{label}_merge_during_hunt_max: {:.1} ms",
        ms(waits[waits.len() - 1])
    );
    Ok(())
}
