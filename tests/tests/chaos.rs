//! The controller killed with SIGKILL while a hundred sensors stream to it: after it starts
//! again, nothing it acknowledged is lost and nothing is stored twice.
//!
//! The sensors are simulated (the sensor's side of the protocol over real QUIC, with real
//! enrollment and certificates), because a hundred real sensors cannot share one kernel's
//! tracepoints in a test. Each streams alert records and graph deltas in turn and keeps what
//! the controller acknowledged, as the real sensor's spool does; when the link drops it
//! reconnects and sends what comes after what the controller says it holds.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use controller::store::{EdgeFilter, Sqlite, Store as _};
use sensor_common::{
    protocol::{
        ALPN, Downlink, EnrollToken, HostReport, SERVER_NAME, Stream, Uplink, read_frame,
        write_frame,
    },
    wire::{
        Delta, Edge, EdgeKind, Endpoint, GRAPH_SCHEMA_VERSION, Node, NodeId, ProcessId,
        ProcessNode, Versioned as _,
    },
};
use vigil_tests::fleet::Controller;

/// Simulated sensors streaming at once.
const SENSORS: usize = 100;
/// Alert records, and graph deltas, each sensor sends (one of each per round).
const ROUNDS: u64 = 60;
/// Edges in each delta.
const EDGES: u64 = 10;
/// How long the whole exchange may take.
const DEADLINE: Duration = Duration::from_secs(180);

#[path = "../../controller/benches/common/sim.rs"]
mod sim;

use sim::{Identity, Res, client_config};

/// What the controller has acknowledged to one simulated sensor.
#[derive(Clone, Copy, Default, Debug)]
struct Acked {
    alerts: u64,
    graph: u64,
}

/// Graph delta `round` of sensor `n`: `EDGES` connections, numbered so that every edge of
/// a host is told apart by its `seq`.
fn delta(n: usize, round: u64) -> Vec<u8> {
    let p = ProcessId {
        pid: 2000 + round as u32,
        start: 1,
    };
    let process = ProcessNode {
        id: p,
        parent: None,
        exe: Some("/usr/bin/chaos".into()),
        argv: vec!["chaos".into(), n.to_string()],
        uid: 0,
        euid: 0,
        exited_ns: None,
    };
    let edges = (0..EDGES)
        .map(|e| Edge {
            seq: round * EDGES + e,
            boot_ns: round * EDGES + e,
            kind: EdgeKind::Connected,
            from: NodeId::Process(p),
            to: NodeId::Endpoint(Endpoint::Inet {
                protocol: "tcp".into(),
                addr: SocketAddr::from(([10, 9, (n % 250) as u8, 1], 3000 + e as u16)),
            }),
            ok: true,
        })
        .collect();
    Delta {
        version: GRAPH_SCHEMA_VERSION,
        seq: round,
        upserted: vec![Node::Process(process)],
        removed: Vec::new(),
        edges,
    }
    .encode()
    .expect("encode a delta")
}

/// The sensor's side of the exchange, shared with the test's thread.
struct Sim {
    n: usize,
    id: Identity,
    acked: Mutex<Acked>,
    /// Each time the controller said it held less than it had acknowledged.
    lost: Mutex<Vec<String>>,
    sessions: AtomicU64,
}

/// One connection: hello, then a record and a delta a round from what the controller says
/// it holds, each waited for before the next. Ends with the last round acknowledged, or with
/// the link's error.
async fn session(sim: &Sim, ep: &quinn::Endpoint, addr: SocketAddr, ca: &str) -> Res<()> {
    let conn = ep
        .connect_with(client_config(ca, Some(&sim.id), ALPN)?, addr, SERVER_NAME)?
        .await?;
    sim.sessions.fetch_add(1, Ordering::Relaxed);
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Uplink::Hello {
        host_id: sim.id.host.clone(),
        report: HostReport::default(),
    };
    write_frame(&mut send, &hello).await?;
    let (held, graph) = match read_frame::<Downlink, _>(&mut recv).await? {
        Some(Downlink::Welcome { held, graph }) => (held, graph),
        other => return Err(format!("no welcome: {other:?}").into()),
    };
    let held_alerts = held.get(&Stream::Alerts).copied().unwrap_or(0);
    {
        let acked = *sim.acked.lock().expect("acked");
        if held_alerts < acked.alerts || graph < acked.graph {
            sim.lost.lock().expect("lost").push(format!(
                "{}: acknowledged alerts {} and deltas {}, but the controller holds {held_alerts} and {graph}",
                sim.id.host, acked.alerts, acked.graph
            ));
        }
    }
    let start = held_alerts.min(graph) + 1;
    for round in start..=ROUNDS {
        let mut frames = Vec::new();
        if round > held_alerts {
            frames.push(Uplink::Record {
                stream: Stream::Alerts,
                seq: round,
                body: format!(r#"{{"chaos":{},"round":{round}}}"#, sim.n).into_bytes(),
            });
        }
        if round > graph {
            frames.push(Uplink::Graph {
                seq: round,
                delta: delta(sim.n, round),
            });
        }
        let mut waiting = frames.len();
        for f in &frames {
            write_frame(&mut send, f).await?;
        }
        while waiting > 0 {
            match read_frame::<Downlink, _>(&mut recv).await? {
                Some(Downlink::Ack {
                    stream: Stream::Alerts,
                    seq,
                }) if seq == round => {
                    sim.acked.lock().expect("acked").alerts = seq;
                    waiting -= 1;
                }
                Some(Downlink::GraphAck { seq }) if seq == round => {
                    sim.acked.lock().expect("acked").graph = seq;
                    waiting -= 1;
                }
                Some(_) => {}
                None => return Err("the stream ended".into()),
            }
        }
    }
    Ok(())
}

/// Sessions until every round is acknowledged, reconnecting when the link drops.
async fn run(sim: Arc<Sim>, ep: quinn::Endpoint, addr: SocketAddr, ca: String) -> Res<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match session(&sim, &ep, addr, &ca).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("{}: gave up: {e}", sim.id.host).into()),
        }
    }
}

fn acked_total(sims: &[Arc<Sim>]) -> u64 {
    sims.iter()
        .map(|s| {
            let a = *s.acked.lock().expect("acked");
            a.alerts + a.graph
        })
        .sum()
}

#[test]
fn a_controller_killed_while_a_hundred_sensors_stream_loses_nothing_acknowledged_and_stores_nothing_twice()
 {
    let mut c = Controller::start().expect("controller");
    let (addr, ca) = (c.addr, c.ca_pem());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let eps: Vec<quinn::Endpoint> = (0..4)
        .map(|_| quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("endpoint"))
        .collect();
    let tokens: Vec<String> = (0..SENSORS).map(|_| c.token(600)).collect();
    let ids: Vec<Identity> = rt.block_on(async {
        let mut ids = Vec::new();
        for (n, t) in tokens.iter().enumerate() {
            let token = EnrollToken::parse(t).expect("a token");
            ids.push(
                sim::enroll(
                    &eps[n % eps.len()],
                    addr,
                    &ca,
                    &token,
                    &format!("chaos-{n}"),
                )
                .await
                .expect("enroll"),
            );
        }
        ids
    });
    let sims: Vec<Arc<Sim>> = ids
        .into_iter()
        .enumerate()
        .map(|(n, id)| {
            Arc::new(Sim {
                n,
                id,
                acked: Mutex::default(),
                lost: Mutex::default(),
                sessions: AtomicU64::new(0),
            })
        })
        .collect();
    let tasks: Vec<_> = sims
        .iter()
        .map(|s| {
            rt.spawn(run(
                s.clone(),
                eps[s.n % eps.len()].clone(),
                addr,
                ca.clone(),
            ))
        })
        .collect();

    // SIGKILL once a third of everything is acknowledged: mid-stream for every sensor.
    let all = SENSORS as u64 * ROUNDS * 2;
    let deadline = Instant::now() + DEADLINE;
    while acked_total(&sims) < all / 3 {
        assert!(
            Instant::now() < deadline,
            "the sensors never got a third of the way: {} of {all} acknowledged\n{}",
            acked_total(&sims),
            c.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill();
    let at_kill = acked_total(&sims);
    std::thread::sleep(Duration::from_secs(1));
    c.start_again().expect("the controller starts again");

    for t in tasks {
        rt.block_on(t)
            .expect("a sensor task")
            .expect("a sensor finishes");
    }
    let reconnected = sims
        .iter()
        .filter(|s| s.sessions.load(Ordering::Relaxed) > 1)
        .count();
    println!(
        "{at_kill} of {all} records and deltas acknowledged at the SIGKILL; {reconnected} of {SENSORS} sensors reconnected"
    );
    assert!(
        at_kill < all,
        "the kill came after the sensors had finished: it tested nothing"
    );
    assert_eq!(
        reconnected, SENSORS,
        "every sensor was cut off by the kill and came back"
    );
    let lost: Vec<String> = sims
        .iter()
        .flat_map(|s| s.lost.lock().expect("lost").clone())
        .collect();
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:#?}");

    // What the store holds, read from its file once the controller has stopped.
    c.stop().expect("stop");
    let store = Sqlite::open(&c.state().join("controller.db")).expect("open the store");
    let mut edges: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    store
        .scan_edges(
            &[EdgeKind::Connected],
            &EdgeFilter::default(),
            &mut |h, e| edges.entry(h.to_owned()).or_default().push(e.seq),
        )
        .expect("scan the history");
    let every_edge: Vec<u64> = (EDGES..(ROUNDS + 1) * EDGES).collect();
    for s in &sims {
        let host = &s.id.host;
        let alerts: Vec<u64> = store
            .records(Some(host), Stream::Alerts)
            .expect("records")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(
            alerts,
            (1..=ROUNDS).collect::<Vec<_>>(),
            "{host}: every alert, in order, once"
        );
        let mut seqs = edges.remove(host).unwrap_or_default();
        let stored = seqs.len();
        seqs.sort_unstable();
        let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            stored,
            "{host}: an edge was stored twice ({stored} stored, {} distinct)",
            distinct.len()
        );
        assert_eq!(seqs, every_edge, "{host}: every edge of every delta");
    }
    assert!(
        edges.is_empty(),
        "edges of hosts that never were: {edges:?}"
    );
}
