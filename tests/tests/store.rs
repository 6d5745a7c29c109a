//! One suite for both of the controller's stores: the embedded SQLite one and PostgreSQL (a
//! real server from Debian's packages, made for the test). Each scenario runs on both, and
//! both must give the same answers, which the scenario also checks on its own terms.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::collections::BTreeSet;

use controller::{
    services::hunt::{Fleet, parse, search},
    store::{
        Answer, ApiToken, AuditEntry, Closed, Desired, EdgeFilter, FleetStep, Host, Operator,
        Postgres, Retention, Role, Sqlite, Store, StoreError, Sweep, TokenRefusal,
    },
};
use sensor_common::{
    protocol::{Blocked, FleetBlock, HostReport, Stream},
    wire::{
        Delta, Edge, EdgeKind, Endpoint, GRAPH_SCHEMA_VERSION, Node, NodeId, ProcessId, ProcessNode,
    },
};
use vigil_tests::postgres::{self, Postgres as Server};

/// The server for this test, or None when this run may skip it (said, and listed).
fn server(test: &str) -> Option<Server> {
    if !postgres::enabled(test) {
        return None;
    }
    Some(Server::start().expect("a PostgreSQL server"))
}

/// A new store of each kind: `(name, store)`.
fn stores(pg: &Server, name: &str, dir: &tempfile::TempDir) -> Vec<(&'static str, Box<dyn Store>)> {
    let sqlite = Sqlite::open(&dir.path().join(format!("{name}.db"))).expect("open SQLite");
    let url = pg.database(name).expect("create a database");
    let pg = Postgres::open(&url).expect("open PostgreSQL");
    vec![("sqlite", Box::new(sqlite)), ("postgres", Box::new(pg))]
}

/// Runs `scenario` on both stores and checks they told the same story.
fn on_both(test: &str, scenario: impl Fn(&mut dyn Store) -> Vec<String>) {
    let Some(pg) = server(test) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut told = Vec::new();
    for (name, mut store) in stores(&pg, "suite", &dir) {
        told.push((name, scenario(store.as_mut())));
    }
    let (a, b) = (&told[0], &told[1]);
    assert!(!a.1.is_empty(), "the scenario told nothing");
    for (n, (x, y)) in a.1.iter().zip(&b.1).enumerate() {
        assert_eq!(x, y, "step {n}: {} and {} differ", a.0, b.0);
    }
    assert_eq!(
        a.1.len(),
        b.1.len(),
        "{} and {} told stories of different lengths",
        a.0,
        b.0
    );
}

fn host(id: &str, name: &str) -> Host {
    Host {
        id: id.into(),
        hostname: name.into(),
        cert_fingerprint: format!("fp-{id}"),
        enrolled_ns: 10,
        last_seen_ns: 10,
        revoked: false,
        report: HostReport::default(),
    }
}

#[test]
fn tokens_hosts_and_records_read_back_alike() {
    on_both("tokens_hosts_and_records_read_back_alike", |s| {
        let mut told = Vec::new();
        s.add_token("t1", "h", 100).expect("add token");
        let tries = [
            ("t1", "x", 10),
            ("t1", "h", 100),
            ("t1", "h", 10),
            ("t1", "h", 11),
            ("t2", "h", 11),
        ];
        let verdicts: Vec<Result<(), TokenRefusal>> = tries
            .iter()
            .map(|(id, h, now)| s.redeem_token(id, h, *now).expect("redeem"))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                Err(TokenRefusal::Secret),
                Err(TokenRefusal::Expired),
                Ok(()),
                Err(TokenRefusal::Used),
                Err(TokenRefusal::Unknown)
            ]
        );
        told.push(format!("{verdicts:?}"));

        s.add_host(&host("a", "web-1")).expect("add host");
        s.add_host(&host("b", "db-1")).expect("add host");
        assert!(
            s.add_host(&host("a", "again")).is_err(),
            "a host id is kept once"
        );
        let report = HostReport {
            hostname: "web-1b".into(),
            dropped: 3,
            ..HostReport::default()
        };
        s.seen("a", &report, 50).expect("seen");
        let hosts = s.hosts().expect("hosts");
        assert_eq!(hosts.len(), 2);
        assert_eq!(
            hosts[1].hostname, "web-1b",
            "seen renames, and hosts sort by name"
        );
        assert_eq!(hosts[1].report.dropped, 3);
        told.push(format!("{hosts:?}"));
        told.push(format!(
            "{:?}",
            s.host_by_fingerprint("fp-b").expect("by fingerprint")
        ));
        assert!(
            s.revoked_hosts().expect("revoked").is_empty(),
            "nobody is revoked yet"
        );
        assert_eq!(s.revoke("db-1").expect("revoke"), vec!["b".to_owned()]);
        assert!(
            s.hosts()
                .expect("hosts")
                .iter()
                .any(|h| h.id == "b" && h.revoked)
        );
        assert_eq!(
            s.revoked_hosts().expect("revoked"),
            vec!["b".to_owned()],
            "the heartbeat's read names the revoked host alone"
        );

        s.put_record("a", Stream::Alerts, 1, br#"{"n":1}"#)
            .expect("put");
        s.put_record("a", Stream::Alerts, 1, br#"{"n":2}"#)
            .expect("put again");
        s.put_record("a", Stream::Alerts, 2, b"not json")
            .expect("put");
        s.put_record("b", Stream::Actions, 7, b"{}").expect("put");
        let held = s.held("a").expect("held");
        assert_eq!((held[&Stream::Alerts], held[&Stream::Actions]), (2, 0));
        let alerts = s.records(None, Stream::Alerts).expect("records");
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].body["n"], 1, "the first copy of a line is kept");
        assert_eq!(alerts[1].body, "(unreadable)");
        told.push(format!("{alerts:?}"));
        told.push(format!(
            "{:?}",
            s.records(Some("b"), Stream::Actions).expect("records")
        ));

        s.set_desired(Desired::Policy, b"v1").expect("desired");
        s.set_desired(Desired::Policy, b"v2").expect("desired");
        assert_eq!(
            s.desired(Desired::Policy).expect("desired"),
            Some(b"v2".to_vec())
        );
        assert_eq!(s.desired(Desired::Rules).expect("desired"), None);
        s.audit(&AuditEntry {
            time_ns: 5,
            who: "root".into(),
            command: "contain a".into(),
            outcome: "ok".into(),
        })
        .expect("audit");
        told.push(format!("{:?}", s.audit_log().expect("audit log")));
        told
    });
}

#[test]
fn operators_hunts_blocks_and_notices_read_back_alike() {
    on_both("operators_hunts_blocks_and_notices_read_back_alike", |s| {
        let mut told = Vec::new();
        let op = |name: &str, role| Operator {
            name: name.into(),
            role,
            created_ns: 1,
            password_hash: "argon2...".into(),
        };
        s.add_operator(&op("ana", Role::Admin)).expect("add");
        assert!(matches!(
            s.add_operator(&op("ana", Role::Viewer)),
            Err(StoreError::OperatorExists(_))
        ));
        s.add_api_token(&ApiToken {
            id: "k1".into(),
            operator: "ana".into(),
            created_ns: 2,
            revoked: false,
            secret_hash: "s".into(),
        })
        .expect("token");
        assert!(s.remove_operator("ana").expect("remove"));
        assert!(!s.remove_operator("ana").expect("remove again"));
        assert!(
            s.api_token("k1").expect("token").is_some_and(|t| t.revoked),
            "removing an operator revokes their tokens"
        );
        told.push(format!(
            "{:?} {:?}",
            s.operators().expect("operators"),
            s.api_tokens().expect("tokens")
        ));

        let hunt = controller::store::Standing {
            name: "c2".into(),
            query: "connections where port = 4444".into(),
            every_secs: 30,
            respond: controller::store::Respond::Record,
            created_ns: 3,
            last_run_ns: None,
            runs: 0,
        };
        s.put_hunt(&hunt).expect("put hunt");
        s.put_hunt(&controller::store::Standing {
            runs: 2,
            ..hunt.clone()
        })
        .expect("replace hunt");
        assert_eq!(s.hunts().expect("hunts")[0].runs, 2);
        let keys = |k: &[&str]| k.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            s.new_hits("c2", &keys(&["x", "y"])).expect("hits"),
            vec![true, true]
        );
        assert_eq!(
            s.new_hits("c2", &keys(&["y", "z"])).expect("hits"),
            vec![false, true]
        );
        assert!(s.remove_hunt("c2").expect("remove"));
        assert_eq!(
            s.new_hits("c2", &keys(&["x"])).expect("hits"),
            vec![true],
            "its hits went with it"
        );

        let block = |incident: &str, expires_ns| FleetBlock {
            incident: incident.into(),
            origin_host: "a".into(),
            reason: "payload".into(),
            clause: "block_payloads".into(),
            expires_ns,
            what: Blocked::Hash {
                sha256: "ab".repeat(32),
                size: Some(10),
            },
        };
        let (id1, new1) = s.add_fleet_block(&block("i1", 1_000)).expect("block");
        let (id2, new2) = s.add_fleet_block(&block("i1", 1_000)).expect("block again");
        let (id3, _) = s.add_fleet_block(&block("i2", 100)).expect("block");
        assert!(
            new1 && !new2 && id1 == id2 && id3 != id1,
            "one block per incident and indicator"
        );
        s.set_block_outcome(id1, "b", "pending").expect("outcome");
        s.set_block_outcome(id1, "b", "in force").expect("outcome");
        let live = s.fleet_blocks(500).expect("blocks");
        assert_eq!(live.len(), 1, "the expired block is left out");
        assert_eq!(live[0].hosts.get("b").map(String::as_str), Some("in force"));
        told.push(format!("{live:?}"));

        assert!(s.first_notice("slack", "i1", "escalated").expect("notice"));
        assert!(
            !s.first_notice("slack", "i1", "escalated")
                .expect("notice again")
        );
        assert!(s.noticed("slack", "i1", "escalated").expect("noticed"));
        assert!(!s.noticed("pd", "i1", "escalated").expect("noticed"));
        for (n, step) in ["told", "blocked"].iter().enumerate() {
            s.add_fleet_step(&FleetStep {
                incident: "i1".into(),
                time_ns: n as u64,
                step: (*step).into(),
                detail: "d".into(),
                clause: "c".into(),
            })
            .expect("step");
        }
        told.push(format!("{:?}", s.fleet_steps("i1").expect("steps")));
        s.close_incidents(&[Closed {
            host: "a".into(),
            incident: "i1".into(),
            closed_ns: 9,
            how: "released".into(),
        }])
        .expect("close");
        s.close_incidents(&[Closed {
            host: "a".into(),
            incident: "i1".into(),
            closed_ns: 10,
            how: "again".into(),
        }])
        .expect("close again");
        let closed = s.closed_incidents().expect("closed");
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].how, "released", "the first closing stays");
        told.push(format!("{closed:?}"));

        s.add_sweep(&Sweep {
            id: "s1".into(),
            sha256: "cd".repeat(32),
            created_ns: 1,
            size: None,
        })
        .expect("sweep");
        let answer = |found: &[&str]| Answer {
            host: "a".into(),
            answered_ns: 2,
            found: found.iter().map(|s| (*s).to_owned()).collect(),
            hashed: 4,
            error: None,
        };
        s.put_sweep_answer("s1", &answer(&["/tmp/x"]))
            .expect("answer");
        s.put_sweep_answer("s1", &answer(&[]))
            .expect("answer again");
        let answers = s.sweep_answers("s1").expect("answers");
        assert_eq!(
            answers[0].found,
            vec!["/tmp/x".to_owned()],
            "a host's first answer stays"
        );
        told.push(format!("{:?} {answers:?}", s.sweeps().expect("sweeps")));
        told
    });
}

fn delta(seq: u64, upserted: Vec<Node>, edges: Vec<Edge>) -> Delta {
    Delta {
        version: GRAPH_SCHEMA_VERSION,
        seq,
        upserted,
        removed: Vec::new(),
        edges,
    }
}

fn pid(pid: u32) -> ProcessId {
    ProcessId { pid, start: 1 }
}

fn inet(addr: &str) -> NodeId {
    NodeId::Endpoint(Endpoint::Inet {
        protocol: "tcp".into(),
        addr: addr.parse().expect("address"),
    })
}

/// What each host has: processes, or graph deltas.
type PerHost<T> = Vec<(String, T)>;

/// Two hosts' processes and edges of every kind of node: the history a hunt reads.
fn history() -> (PerHost<ProcessNode>, PerHost<Delta>) {
    let exes = ["/usr/sbin/nginx", "/bin/sh", "/usr/bin/curl", "/tmp/.x/nc"];
    let paths = [
        "/etc/passwd",
        "/tmp/.x/nc",
        "/var/www/index.html",
        "/tmp/ünï cödé",
    ];
    let addrs = [
        "10.0.0.1:4444",
        "10.0.0.2:443",
        "[::ffff:10.0.0.1]:80",
        "[2001:db8::9]:4444",
    ];
    let (mut procs, mut deltas) = (Vec::new(), Vec::new());
    for (h, host) in ["h1", "h2"].iter().enumerate() {
        let mut upserted = Vec::new();
        for p in 1..=6u32 {
            let node = ProcessNode {
                id: pid(p),
                parent: (p > 1).then_some(pid(p - 1)),
                exe: Some(exes[(p as usize + h) % exes.len()].into()),
                argv: vec![exes[p as usize % exes.len()].into(), format!("-{p}")],
                uid: p % 2,
                euid: 0,
                exited_ns: None,
            };
            procs.push(((*host).to_owned(), node.clone()));
            upserted.push(Node::Process(node));
        }
        // Three deltas per host, so the history spans several commits (and partitions).
        for part in 0..3u64 {
            let mut edges = Vec::new();
            for n in part * 20..(part + 1) * 20 {
                let from = NodeId::Process(pid(1 + (n as u32 * 7 + h as u32) % 6));
                let (kind, to) = match n % 6 {
                    0 => (
                        EdgeKind::Executed,
                        NodeId::File(paths[n as usize % 4].into()),
                    ),
                    1 => (
                        EdgeKind::Wrote,
                        NodeId::File(paths[(n as usize / 4) % 4].into()),
                    ),
                    2 => (EdgeKind::Spawned, NodeId::Process(pid(1 + n as u32 % 6))),
                    3 => (EdgeKind::RanAs, NodeId::User(1000)),
                    4 => (
                        EdgeKind::Connected,
                        NodeId::Endpoint(Endpoint::Unix {
                            path: "/run/nscd/socket".into(),
                        }),
                    ),
                    _ => (EdgeKind::Connected, inet(addrs[(n as usize / 2) % 4])),
                };
                edges.push(Edge {
                    seq: n,
                    boot_ns: n * 10,
                    kind,
                    from,
                    to,
                    ok: !n.is_multiple_of(5),
                });
            }
            let up = if part == 0 {
                upserted.clone()
            } else {
                Vec::new()
            };
            deltas.push(((*host).to_owned(), delta(part + 1, up, edges)));
        }
    }
    (procs, deltas)
}

const ALL_KINDS: &[EdgeKind] = &[
    EdgeKind::Executed,
    EdgeKind::Wrote,
    EdgeKind::Spawned,
    EdgeKind::RanAs,
    EdgeKind::Connected,
];

/// Every edge a scan hands over, in its order.
fn scanned(s: &dyn Store, kinds: &[EdgeKind], f: &EdgeFilter) -> Vec<(String, Edge)> {
    let mut out = Vec::new();
    s.scan_edges(kinds, f, &mut |h, e| out.push((h.to_owned(), e)))
        .expect("scan");
    out
}

/// The store narrows a hunt before the hunt tests what is left: for every field, operator and
/// value drawn from the data, the hits through the store are those of testing every edge in
/// memory. The story told is every query's hits, so both stores must find the same.
#[test]
fn hunts_through_either_store_find_what_testing_every_edge_finds() {
    on_both(
        "hunts_through_either_store_find_what_testing_every_edge_finds",
        |s| {
            let (procs, deltas) = history();
            let mut everything = Vec::new();
            for (i, (host, d)) in deltas.iter().enumerate() {
                if i % 2 == 0 {
                    s.apply_delta(host, d.seq, d).expect("merge");
                } else {
                    // Some as a group of two hosts, as the writer commits them.
                    s.apply_deltas(&[(host.as_str(), d.seq, d)]).expect("merge");
                }
                everything.extend(d.edges.iter().map(|e| (host.clone(), e.clone())));
            }
            assert_eq!(s.graph_head("h1").expect("head"), 3);
            assert_eq!(s.graph_head("h3").expect("head"), 0);
            // Edges come back whole and in order, every kind of node included.
            assert_eq!(scanned(s, ALL_KINDS, &EdgeFilter::default()), everything);
            let procs_back: BTreeSet<String> = s
                .processes()
                .expect("processes")
                .iter()
                .map(|(h, p)| format!("{h} {p:?}"))
                .collect();
            assert_eq!(
                procs_back,
                procs.iter().map(|(h, p)| format!("{h} {p:?}")).collect()
            );
            let some = s
                .processes_of("h2", &[pid(3), pid(99), pid(1)])
                .expect("processes of");
            assert_eq!(
                some.iter().map(|p| p.id.pid).collect::<Vec<_>>(),
                vec![3, 1]
            );

            let fleet = Fleet::new(procs.clone());
            let mut values: Vec<String> = [
                "h1",
                "4444",
                "04444",
                "10.0.0.1",
                "true",
                "false",
                "/tmp/",
                ".x/nc",
                "nc",
                "",
                "/",
                "ö",
                "/run/nscd/socket",
            ]
            .iter()
            .map(|v| (*v).to_owned())
            .collect();
            values.extend(
                ["/etc/passwd", "/tmp/.x/nc", "/usr/sbin/nginx", "/bin/sh"].map(String::from),
            );
            let key = |hits: &[controller::store::Hit]| {
                let mut k: Vec<String> = hits
                    .iter()
                    .map(|h| serde_json::to_string(h).expect("json"))
                    .collect();
                k.sort();
                k
            };
            let mut told = Vec::new();
            for target in ["execs", "writes", "connections"] {
                for field in ["host", "path", "addr", "port", "ok", "exe", "parent.exe"] {
                    for op in ["=", "!=", "contains", "startswith", "endswith"] {
                        for value in &values {
                            let text = format!("{target} where {field} {op} \"{value}\"");
                            let Ok(q) = parse(&text) else { continue };
                            let through = key(&search(s, &q, &mut |_| {}).expect("search").hits);
                            let of_kinds: Vec<(String, Edge)> = everything
                                .iter()
                                .filter(|(_, e)| q.target.kinds().contains(&e.kind))
                                .cloned()
                                .collect();
                            let in_memory = key(&fleet.run(&q, &of_kinds));
                            assert!(
                                through == in_memory,
                                "{text}: {} hits through the store, {} in memory",
                                through.len(),
                                in_memory.len()
                            );
                            told.push(format!("{text}: {through:?}"));
                        }
                    }
                }
            }
            assert!(told.len() > 500, "{} queries checked", told.len());
            assert!(
                told.iter().filter(|t| !t.ends_with(": []")).count() > 100,
                "most queries find something"
            );
            told
        },
    );
}

#[test]
fn a_reader_reads_beside_the_writer_and_refuses_to_write() {
    on_both(
        "a_reader_reads_beside_the_writer_and_refuses_to_write",
        |w| {
            w.put_record("h", Stream::Alerts, 1, b"{}").expect("put");
            let mut r = w.reader().expect("reader");
            assert_eq!(r.records(None, Stream::Alerts).expect("read").len(), 1);
            w.put_record("h", Stream::Alerts, 2, b"{}")
                .expect("a write while a reader is open");
            assert_eq!(
                r.records(None, Stream::Alerts).expect("read").len(),
                2,
                "the reader sees the commit"
            );
            assert!(
                r.put_record("h", Stream::Alerts, 3, b"{}").is_err(),
                "the reader refuses writes"
            );
            let (_, deltas) = history();
            let (host, d) = &deltas[0];
            assert!(
                r.apply_delta(host, 1, d).is_err(),
                "the reader refuses graph writes"
            );
            assert_eq!(w.records(None, Stream::Alerts).expect("read").len(), 2);
            drop(r);
            // A reader handed back and taken again still reads, and still refuses.
            let mut again = w.reader().expect("reader");
            assert!(again.put_record("h", Stream::Alerts, 4, b"{}").is_err());
            vec![format!(
                "{:?}",
                again.records(None, Stream::Alerts).expect("read")
            )]
        },
    );
}

#[test]
fn retention_drops_the_oldest_history_first_on_both_stores() {
    let Some(pg) = server("retention_drops_the_oldest_history_first_on_both_stores") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = pg.database("retention").expect("database");
    // Small partitions: by edges for SQLite, by time (1 ms) for PostgreSQL.
    let sqlite = Sqlite::open(&dir.path().join("r.db"))
        .expect("open")
        .with_partition_edges(20);
    let postgres = Postgres::open(&url)
        .expect("open")
        .with_partition_ns(1_000_000);
    for (name, mut s) in [
        ("sqlite", Box::new(sqlite) as Box<dyn Store>),
        ("postgres", Box::new(postgres)),
    ] {
        let (_, deltas) = history();
        for (host, d) in &deltas {
            s.apply_delta(host, d.seq, d).expect("merge");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let before = scanned(s.as_ref(), ALL_KINDS, &EdgeFilter::default());
        assert_eq!(before.len(), 120, "{name}");
        let pruned = s
            .prune_history(
                Retention {
                    max_age_ns: None,
                    max_edges: Some(50),
                },
                controller::now_ns(),
            )
            .expect("prune");
        let after = scanned(s.as_ref(), ALL_KINDS, &EdgeFilter::default());
        assert!(pruned.dropped >= 60, "{name}: {pruned:?}");
        assert_eq!(pruned.kept, after.len() as u64, "{name}: {pruned:?}");
        assert!(
            after.len() as u64 <= 50 + 20,
            "{name}: kept to within one partition: {pruned:?}"
        );
        assert_eq!(
            &before[before.len() - after.len()..],
            after.as_slice(),
            "{name}: the newest stay"
        );
        let by_age = s
            .prune_history(
                Retention {
                    max_age_ns: Some(1),
                    max_edges: None,
                },
                controller::now_ns() + 1_000_000_000,
            )
            .expect("prune by age");
        assert_eq!(
            by_age.dropped_total,
            pruned.dropped + by_age.dropped,
            "{name}: counted in all"
        );
        assert!(
            !scanned(s.as_ref(), ALL_KINDS, &EdgeFilter::default()).is_empty(),
            "{name}: the newest partition stays"
        );
    }
}

/// `/metrics` and the benchmarks read the store's size from the store itself: on both it is
/// more than nothing once opened, and grows as history is merged.
#[test]
fn both_stores_tell_their_size_and_it_grows_with_history() {
    let Some(pg) = server("both_stores_tell_their_size_and_it_grows_with_history") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, mut s) in stores(&pg, "size", &dir) {
        let empty = s.size_bytes().expect("size");
        assert!(
            empty > 0,
            "{name}: an open store holds its schema ({empty} bytes)"
        );
        // Ten rounds of the scenario's history, each under new sequence numbers.
        let (_, deltas) = history();
        for round in 0..10 {
            for (host, d) in &deltas {
                s.apply_delta(host, round * 1_000 + d.seq, d)
                    .expect("merge");
            }
        }
        let full = s.size_bytes().expect("size");
        assert!(
            full > empty,
            "{name}: {empty} bytes before 1,200 edges and {full} after"
        );
    }
}

/// Two controller replicas on one database: their merges and enrollments interleave, and
/// nothing is lost, doubled or granted twice.
#[test]
fn two_replicas_share_one_postgres_database() {
    let Some(pg) = server("two_replicas_share_one_postgres_database") else {
        return;
    };
    let url = pg.database("replicas").expect("database");
    let (_, deltas) = history();
    let deltas = std::sync::Arc::new(deltas);
    let replicas: Vec<_> = (0..2)
        .map(|r| {
            let (url, deltas) = (url.clone(), deltas.clone());
            std::thread::spawn(move || {
                let mut s = Postgres::open(&url).expect("open");
                let mut won = 0;
                for round in 0..20u64 {
                    // The same strings from both at once: the dictionary keeps each once.
                    let (host, d) = &deltas[(round as usize + r) % deltas.len()];
                    let host = format!("{host}-r{r}");
                    s.apply_delta(&host, round + 1, d).expect("merge");
                    s.add_token(&format!("t{r}-{round}"), "h", u64::MAX / 2)
                        .expect("token");
                    if s.redeem_token(&format!("t0-{round}"), "h", 1)
                        .expect("redeem")
                        .is_ok()
                    {
                        won += 1;
                    }
                }
                won
            })
        })
        .collect();
    let won: u32 = replicas
        .into_iter()
        .map(|t| t.join().expect("replica"))
        .sum();
    let s = Postgres::open(&url).expect("open");
    let edges = scanned(&s, ALL_KINDS, &EdgeFilter::default());
    assert_eq!(
        edges.len(),
        2 * 20 * 20,
        "every edge of both replicas, once"
    );
    let strings = pg
        .psql(
            "replicas",
            "SELECT count(*) - count(DISTINCT s) FROM strings",
        )
        .expect("count strings");
    assert_eq!(strings.trim(), "0", "no string is kept twice");
    // Replica 0's tokens exist by the time either redeems them only sometimes; each is
    // redeemed at most once, and a replica that waited finds them all spent.
    let s2 = &mut Postgres::open(&url).expect("open");
    let again = (0..20)
        .filter(|r| {
            s2.redeem_token(&format!("t0-{r}"), "h", 1)
                .expect("redeem")
                .is_ok()
        })
        .count() as u32;
    assert_eq!(
        won + again,
        20,
        "each token redeemed exactly once ({won} during, {again} after)"
    );
    // The CA: the first kept wins, and every replica reads it back.
    let (cert, key) = controller::ca::Authority::generate().expect("a CA");
    let (other, _) = controller::ca::Authority::generate().expect("another CA");
    let mut a = Postgres::open(&url).expect("open");
    let mut b = Postgres::open(&url).expect("open");
    assert_eq!(a.keep_authority(&cert, &key).expect("keep").0, cert);
    assert_eq!(
        b.keep_authority(&other, &key).expect("keep").0,
        cert,
        "the first CA stays"
    );
    assert_eq!(b.authority().expect("read").map(|(c, _)| c), Some(cert));

    // Singleton work: one replica holds the lease until its connection ends.
    assert!(a.lease("standing hunts").expect("lease"));
    assert!(!b.lease("standing hunts").expect("lease"), "A holds it");
    assert!(
        a.lease("standing hunts").expect("lease"),
        "A still holds it"
    );
    assert!(
        b.lease("retention").expect("lease"),
        "another lease is another lock"
    );
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.lease("standing hunts").expect("lease") {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never fell to B"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sqlite_dir = tempfile::tempdir().expect("tempdir");
    let mut alone = Sqlite::open(&sqlite_dir.path().join("l.db")).expect("open");
    assert!(
        alone.lease("standing hunts").expect("lease"),
        "an unshared store holds every lease"
    );
}

#[test]
fn a_replica_that_stops_beating_stops_holding_its_hosts_and_a_lost_session_its_leases() {
    let test = "a_replica_that_stops_beating_stops_holding_its_hosts_and_a_lost_session_its_leases";
    let Some(pg) = server(test) else { return };
    let url = pg.database("liveness").expect("database");
    let mut a = Postgres::open(&url).expect("open");
    let mut b = Postgres::open(&url).expect("open");
    a.beat("A").expect("beat");
    b.beat("B").expect("beat");
    a.hold_connection("h-1", "A").expect("hold");
    b.hold_connection("h-2", "B").expect("hold");
    let held = |s: &Postgres, me: &str| -> Vec<String> {
        s.held_elsewhere(me).expect("read").into_iter().collect()
    };
    assert_eq!(held(&b, "B"), ["h-1"], "B reaches h-1 through A");
    assert_eq!(held(&a, "A"), ["h-2"]);
    assert_eq!(
        b.connection_holder("h-1").expect("read").as_deref(),
        Some("A")
    );
    let left = b.route_command("A", "h-1", "{}").expect("route");

    // A stops beating (killed): past the liveness window its hosts count as offline, and
    // commands left for it are forgotten at the next beat of any replica.
    pg.psql(
        "liveness",
        &format!(
            "UPDATE replicas SET beat_ns = beat_ns - {} WHERE name = 'A'",
            controller::store::REPLICA_ALIVE_NS + 1
        ),
    )
    .expect("age A's beat");
    pg.psql("liveness", "UPDATE routed SET at_ns = 0")
        .expect("age the command");
    assert!(held(&b, "B").is_empty(), "{:?}", held(&b, "B"));
    assert_eq!(b.connection_holder("h-1").expect("read"), None);
    b.beat("B").expect("beat");
    let routed = pg
        .psql(
            "liveness",
            &format!("SELECT count(*) FROM routed WHERE id = {left}"),
        )
        .expect("count");
    assert_eq!(routed.trim(), "0", "the unanswered command is forgotten");
    // A beats again: its hosts are back.
    a.beat("A").expect("beat");
    assert_eq!(held(&b, "B"), ["h-1"]);

    // A lease ends with its session: when the server cuts A's session, A no longer claims
    // the lease (its next check fails, the one after runs on a new session), and B takes it.
    assert!(a.lease("standing hunts").expect("lease"));
    assert!(!b.lease("standing hunts").expect("lease"));
    pg.psql(
        "liveness",
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'",
    )
    .expect("cut the lease holder's session");
    assert!(
        a.lease("standing hunts").is_err(),
        "a lost session is not taken for a held lease"
    );
    assert!(
        b.lease("standing hunts").expect("lease"),
        "the lease falls to B"
    );
    assert!(
        !a.lease("standing hunts").expect("A connects again"),
        "A, on its new session, does not hold it"
    );
    a.hold_connection("h-3", "A").expect("A writes again");
}

#[test]
fn a_newer_postgres_schema_is_refused_with_the_reason() {
    let Some(pg) = server("a_newer_postgres_schema_is_refused_with_the_reason") else {
        return;
    };
    let url = pg.database("newer").expect("database");
    drop(Postgres::open(&url).expect("open makes the schema"));
    drop(Postgres::open(&url).expect("a second open finds it made"));
    pg.psql("newer", "UPDATE schema_version SET version = version + 1")
        .expect("bump");
    let err = Postgres::open(&url)
        .err()
        .expect("a newer schema is refused");
    assert!(
        err.to_string().contains("newer than this controller"),
        "{err}"
    );
    pg.psql("newer", "UPDATE schema_version SET version = -1")
        .expect("damage");
    let err = Postgres::open(&url)
        .err()
        .expect("a negative schema version is refused, not migrated again");
    assert!(err.to_string().contains("never negative"), "{err}");
    let bad = Postgres::open(&pg.url("no_such_db"))
        .err()
        .expect("a missing database is refused");
    assert!(bad.to_string().contains("no_such_db"), "{bad}");
}

#[test]
fn a_store_that_is_neither_embedded_nor_postgres_is_refused_at_start() {
    for bad in ["mysql://db/vigil", "postgres://", "sqlite"] {
        let out = std::process::Command::new(vigil_tests::fleet::controller_bin())
            .args(["serve", "--store", bad, "--state", "/nonexistent/vigil"])
            .output()
            .expect("run vigil-controller");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was taken");
        assert!(
            err.contains("is not a store") && err.contains(bad),
            "{bad}: {err}"
        );
    }
}
