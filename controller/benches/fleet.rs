//! `cargo xtask bench controller`: simulated sensors against a real `vigil-controller serve`
//! over real QUIC on loopback. Each simulated sensor enrolls (a key, a signing request, a
//! certificate), connects with mutual TLS, says hello and sends graph deltas; the bench
//! reports how many the server held at once, its memory per connected sensor, graph edges
//! merged per second, and hunt latency over the edges stored.
//!
//! Arguments: `SENSORS DELTAS EDGES` (defaults 1000 sensors, 10 deltas of 100 edges each:
//! a million edges). With `fleet SENSORS ROUNDS` instead (`cargo xtask bench fleet`): the
//! time from one host's alert reaching the controller to its payload block being in force
//! on every connected host, each simulated sensor acknowledging it.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use controller::net::ops::{self, OpReply, OpRequest, OpResponse};
use sensor_common::{
    protocol::{
        ALPN, Downlink, EnrollToken, HostReport, SERVER_NAME, Uplink, read_frame, write_frame,
    },
    wire::{
        Delta, Edge, EdgeKind, Endpoint, GRAPH_SCHEMA_VERSION, Node, NodeId, ProcessId,
        ProcessNode, Versioned as _,
    },
};

#[path = "common/sim.rs"]
mod sim;

use sim::{Identity, Res, client_config};

fn bin() -> PathBuf {
    // target/release/deps/fleet-* -> target/release/vigil-controller
    let exe = std::env::current_exe().expect("bench path");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("vigil-controller"))
        .expect("target dir")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn ask(state: &Path, req: &OpRequest) -> Res<OpReply> {
    match ops::request(&state.join("control.sock"), req, &mut |_| {})? {
        OpResponse::Ok(reply) => Ok(reply),
        OpResponse::Error { message } => Err(message.into()),
        OpResponse::Progress(_) => Err("a progress line for an answer".into()),
    }
}

/// A delta of `edges` connections made by one process of host `n`.
fn delta(n: usize, d: usize, edges: usize) -> Vec<u8> {
    let p = ProcessId {
        pid: 1000 + d as u32,
        start: 1,
    };
    let proc_node = ProcessNode {
        id: p,
        parent: None,
        exe: Some("/usr/bin/worker".into()),
        argv: vec!["worker".into(), format!("{n}")],
        uid: 0,
        euid: 0,
        exited_ns: None,
    };
    let edges = (0..edges)
        .map(|e| Edge {
            seq: (d * edges + e) as u64,
            boot_ns: e as u64,
            kind: EdgeKind::Connected,
            from: NodeId::Process(p),
            to: NodeId::Endpoint(Endpoint::Inet {
                protocol: "tcp".into(),
                addr: SocketAddr::from((
                    [10, (n / 250) as u8, (n % 250) as u8, 1],
                    if e == 0 {
                        4444
                    } else {
                        1000 + (e % 5000) as u16
                    },
                )),
            }),
            ok: true,
        })
        .collect();
    Delta {
        version: GRAPH_SCHEMA_VERSION,
        seq: d as u64,
        upserted: vec![Node::Process(proc_node)],
        removed: Vec::new(),
        edges,
    }
    .encode()
    .expect("encode")
}

struct Sim {
    host: String,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

async fn connect(ep: &quinn::Endpoint, addr: SocketAddr, ca: &str, id: Identity) -> Res<Sim> {
    let conn = ep
        .connect_with(client_config(ca, Some(&id), ALPN)?, addr, SERVER_NAME)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Uplink::Hello {
        host_id: id.host.clone(),
        report: HostReport::default(),
    };
    write_frame(&mut send, &hello).await?;
    match read_frame::<Downlink, _>(&mut recv).await? {
        Some(Downlink::Welcome { .. }) => Ok(Sim {
            host: id.host,
            conn,
            send,
            recv,
        }),
        other => Err(format!("no welcome: {other:?}").into()),
    }
}

/// Tries a simulated sensor makes to connect before it counts as failed.
const CONNECT_ATTEMPTS: u32 = 5;

/// Connects as a sensor does: an attempt that fails (a handshake timed out while the server
/// was busy with thousands of others) is made again after a wait that grows from 200 ms,
/// spread by sensor so that a fleet does not retry in step. Returns the tries it took.
async fn connect_as_sensor(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    ca: &str,
    id: Identity,
    n: usize,
) -> Res<(Sim, u32)> {
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=CONNECT_ATTEMPTS {
        match connect(ep, addr, ca, id.clone()).await {
            Ok(sim) => return Ok((sim, attempt)),
            Err(e) if attempt == CONNECT_ATTEMPTS => return Err(e),
            Err(_) => {
                let spread = Duration::from_millis((n as u64 * 7919) % 1000);
                tokio::time::sleep(wait + spread).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    Err("no attempt was made".into())
}

/// Sends `deltas` deltas and waits for the last ack.
async fn stream(sim: &mut Sim, n: usize, deltas: usize, edges: usize) -> Res<()> {
    for d in 1..=deltas {
        write_frame(
            &mut sim.send,
            &Uplink::Graph {
                seq: d as u64,
                delta: delta(n, d, edges),
            },
        )
        .await?;
    }
    loop {
        match read_frame::<Downlink, _>(&mut sim.recv).await? {
            Some(Downlink::GraphAck { seq }) if seq == deltas as u64 => return Ok(()),
            Some(_) => {}
            None => return Err(format!("host {} stream ended", sim.host).into()),
        }
    }
}

/// A real `vigil-controller serve` on a free loopback port, in its own state directory,
/// answering its operator socket.
struct Server {
    _dir: tempfile::TempDir,
    state: PathBuf,
    addr: SocketAddr,
    child: Child,
}

impl Server {
    /// A controller on the embedded store, or on the PostgreSQL database `store` names.
    fn start(store: Option<&str>) -> Res<Self> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(bin())
            .args(["serve", "--listen", &addr.to_string(), "--state"])
            .arg(&state)
            .args(store.map(|url| ["--store", url]).into_iter().flatten())
            .env("VIGIL_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()?;
        let server = Self {
            _dir: dir,
            state,
            addr,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while ask(&server.state, &OpRequest::Hosts).is_err() {
            if Instant::now() > deadline {
                return Err("the controller did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ca(&self) -> Res<String> {
        Ok(std::fs::read_to_string(self.state.join("ca.pem"))?)
    }

    /// Enrolls `n` simulated hosts, spread over `eps`, each with a token of its own.
    async fn enroll_all(&self, eps: &[quinn::Endpoint], n: usize) -> Res<Vec<Identity>> {
        let ca = self.ca()?;
        let mut ids = Vec::new();
        for i in 0..n {
            let token = EnrollToken::parse(&match ask(
                &self.state,
                &OpRequest::EnrollToken { ttl_secs: 600 },
            )? {
                OpReply::Token { token, .. } => token,
                other => return Err(format!("a token was asked for: {other:?}").into()),
            })?;
            ids.push(
                sim::enroll(
                    &eps[i % eps.len()],
                    self.addr,
                    &ca,
                    &token,
                    &format!("sim-{i}"),
                )
                .await?,
            );
        }
        Ok(ids)
    }

    /// How many hosts are connected now.
    fn held(&self) -> Res<usize> {
        match ask(&self.state, &OpRequest::Hosts)? {
            OpReply::Hosts { hosts } => Ok(hosts.iter().filter(|h| h.connected).count()),
            other => Err(format!("hosts were asked for: {other:?}").into()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A handful of client endpoints (UDP sockets), each carrying many connections.
fn client_endpoints() -> Res<Vec<quinn::Endpoint>> {
    Ok((0..8)
        .map(|_| quinn::Endpoint::client(([127, 0, 0, 1], 0).into()))
        .collect::<Result<_, _>>()?)
}

fn main() -> Res<()> {
    let fleet = std::env::args().nth(1).as_deref() == Some("fleet");
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if fleet {
        return fleet_bench(
            args.first().copied().unwrap_or(1000),
            args.get(1).copied().unwrap_or(20),
        );
    }
    let sensors = args.first().copied().unwrap_or(1000);
    let deltas = args.get(1).copied().unwrap_or(10);
    let edges = args.get(2).copied().unwrap_or(100);
    let raw: Vec<String> = std::env::args().collect();
    let store = raw
        .iter()
        .position(|a| a == "--store")
        .and_then(|i| raw.get(i + 1))
        .map(String::as_str);
    if let Some(url) = store {
        println!("controller: on PostgreSQL ({url})");
    } else {
        println!("controller: on the embedded store");
    }
    let server = Server::start(store)?;
    let (state, addr, pid) = (server.state.clone(), server.addr, server.pid());
    let result = (|| -> Res<()> {
        let idle_kib = rss_kib(pid);
        let ca = server.ca()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async {
            let eps = client_endpoints()?;
            let t = Instant::now();
            let ids = server.enroll_all(&eps, sensors).await?;
            println!(
                "controller: {sensors} sensors enrolled in {:.1} s ({:.1} ms each)",
                t.elapsed().as_secs_f64(),
                t.elapsed().as_secs_f64() * 1000.0 / sensors as f64
            );
            let t = Instant::now();
            let mut sims = Vec::new();
            let mut tasks = tokio::task::JoinSet::new();
            for (n, id) in ids.into_iter().enumerate() {
                let ep = eps[n % eps.len()].clone();
                let ca = ca.clone();
                tasks.spawn(async move { (n, connect_as_sensor(&ep, addr, &ca, id, n).await) });
            }
            let (mut failed, mut retried) = (0, 0);
            while let Some(r) = tasks.join_next().await {
                match r? {
                    (n, Ok((s, attempts))) => {
                        retried += usize::from(attempts > 1);
                        sims.push((n, s));
                    }
                    (n, Err(e)) => {
                        failed += 1;
                        if failed <= 3 {
                            eprintln!("sensor {n}: {e}");
                        }
                    }
                }
            }
            let held = server.held()?;
            let rss = rss_kib(pid);
            println!(
                "controller: {held} of {sensors} simulated sensors connected at once ({failed} failed after {CONNECT_ATTEMPTS} tries, {retried} needed more than one) in {:.1} s; server RSS {:.1} MiB idle, {:.1} MiB with them: {:.1} KiB per connected sensor",
                t.elapsed().as_secs_f64(),
                idle_kib as f64 / 1024.0,
                rss as f64 / 1024.0,
                rss.saturating_sub(idle_kib) as f64 / held.max(1) as f64
            );
            let t = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for (n, mut s) in sims {
                tasks.spawn(async move {
                    let r = stream(&mut s, n, deltas, edges).await;
                    (s, r)
                });
            }
            // A link lost mid-stream (on a saturated machine a keep-alive can come too late)
            // is counted, as a sensor would reconnect and resend; the rate counts what the
            // streams that finished had acknowledged.
            let (mut kept, mut lost) = (Vec::new(), 0);
            while let Some(r) = tasks.join_next().await {
                match r? {
                    (s, Ok(())) => kept.push(s),
                    (s, Err(e)) => {
                        lost += 1;
                        if lost <= 3 {
                            eprintln!("host {}: {e}", s.host);
                        }
                    }
                }
            }
            let secs = t.elapsed().as_secs_f64();
            let merged = kept.len() * deltas;
            let total = merged * edges;
            println!(
                "controller: {merged} deltas ({total} edges) merged and stored in {secs:.1} s: {:.0} deltas/s, {:.0} edges/s ({lost} streams lost their link); server RSS {:.1} MiB",
                merged as f64 / secs,
                total as f64 / secs,
                rss_kib(pid) as f64 / 1024.0
            );
            for q in [
                "connections where port = 4444",
                "connections where addr = 10.1.7.1 and exe endswith /worker",
                "processes where cmdline contains \"worker 999\"",
            ] {
                let t = Instant::now();
                let OpReply::Hunt(v) = ask(&state, &OpRequest::Hunt { query: q.into() })? else {
                    return Err("a hunt answered with something else".into());
                };
                println!(
                    "controller: hunt {q:?} over {} edges: {} hits in {:.0} ms (server says {} ms)",
                    v.edges_searched,
                    v.hits.len(),
                    t.elapsed().as_secs_f64() * 1000.0,
                    v.millis
                );
            }
            println!("controller: server peak RSS after the hunts {:.1} MiB", rss_kib(pid) as f64 / 1024.0);
            for s in kept {
                s.conn.close(0u32.into(), b"done");
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
    })();
    drop(server);
    result
}

/// A simulated sensor's command stream: it answers what the controller asks at once (a
/// fleet block is "in force" when it arrives) and notes when each block arrived.
async fn answer_commands(
    conn: quinn::Connection,
    arrived: Arc<std::sync::Mutex<Vec<(String, Instant)>>>,
) {
    use sensor_common::protocol::{Blocked, Command, CommandReply};
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let arrived = arrived.clone();
        tokio::spawn(async move {
            let reply = match read_frame::<Command, _>(&mut recv).await {
                Ok(Some(Command::FleetBlock { block, .. })) => {
                    if let Blocked::Hash { sha256, .. } = block.what
                        && let Ok(mut a) = arrived.lock()
                    {
                        a.push((sha256, Instant::now()));
                    }
                    CommandReply::Done {
                        records: Vec::new(),
                    }
                }
                Ok(Some(Command::Sweep { .. })) => CommandReply::Swept {
                    found: Vec::new(),
                    hashed: 0,
                },
                _ => CommandReply::Refused {
                    reason: "not simulated".into(),
                },
            };
            let _ = write_frame(&mut send, &reply).await;
            let _ = send.finish();
        });
    }
}

/// An alert of a critical rule whose payload has `sha256`, as a sensor sends it.
fn payload_alert(host: &str, round: usize, sha256: &str) -> Vec<u8> {
    use sensor_userspace::{
        detect::rules::{behaviour::rule::Confidence, sigma::rule::Level},
        triage::{
            Risk,
            alerts::{Alert, AlertProcess, Finding, Payload, RuleRef, RuleSource},
        },
    };
    let alert = Alert {
        finding: Finding {
            id: format!("bench-{round}"),
            time_ns: controller::now_ns(),
            host: host.to_owned(),
            rule: RuleRef {
                id: Some("vigil-download-chmod-exec".into()),
                title: "Downloaded file made executable and run".into(),
                technique: vec!["T1105".into()],
                severity: Level::Critical,
                confidence: Confidence::High,
                source: RuleSource::Behaviour,
                author: None,
                tags: Vec::new(),
                response: Vec::new(),
                file: "bench.yml".into(),
            },
            process: AlertProcess {
                pid: 4242,
                start: round as u64 + 1,
                exe: Some(format!("/tmp/payload-{round}")),
                cmdline: "payload".into(),
                uid: 0,
                euid: 0,
                user: None,
                ancestry: Vec::new(),
            },
            entities: Vec::new(),
            evidence: Vec::new(),
        },
        risk: Risk {
            score: 95,
            factors: Vec::new(),
        },
        incident: format!("inc-bench-{round}"),
        payloads: vec![Payload {
            path: format!("/tmp/payload-{round}"),
            sha256: Some(sha256.to_owned()),
            size: Some(1234),
            unhashed: None,
        }],
        endpoints: Vec::new(),
    };
    serde_json::to_vec(&alert).expect("alert JSON")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// `fleet SENSORS ROUNDS`: the time from one host's alert reaching the controller to the
/// payload block being in force on every connected host, each round a new payload.
fn fleet_bench(sensors: usize, rounds: usize) -> Res<()> {
    let server = Server::start(None)?;
    let addr = server.addr;
    (|| -> Res<()> {
        let ca = server.ca()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async {
            let eps = client_endpoints()?;
            let ids = server.enroll_all(&eps, sensors).await?;
            let arrived = Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut sims = Vec::new();
            for (n, id) in ids.into_iter().enumerate() {
                let s = connect(&eps[n % eps.len()], addr, &ca, id).await?;
                tokio::spawn(answer_commands(s.conn.clone(), arrived.clone()));
                sims.push(s);
            }
            let held = server.held()?;
            println!("fleet: {held} simulated sensors connected over QUIC");
            let mut every_host = Vec::new();
            let mut per_host = Vec::new();
            for round in 0..rounds {
                let sha256 = format!("{round:064x}");
                let first = &mut sims[0];
                let body = payload_alert(&first.host, round, &sha256);
                let t0 = Instant::now();
                write_frame(
                    &mut first.send,
                    &Uplink::Record {
                        stream: sensor_common::protocol::Stream::Alerts,
                        seq: round as u64 + 1,
                        body,
                    },
                )
                .await?;
                let deadline = t0 + Duration::from_secs(60);
                let times = loop {
                    let times: Vec<Duration> = arrived
                        .lock()
                        .map_err(|_| "poisoned")?
                        .iter()
                        .filter(|(h, _)| *h == sha256)
                        .map(|(_, at)| at.duration_since(t0))
                        .collect();
                    // Every host but the one the alert came from (its own response is its
                    // policy's).
                    if times.len() + 1 >= held {
                        break times;
                    }
                    if Instant::now() > deadline {
                        return Err(format!("round {round}: the block reached {} of {held} hosts in 60 s", times.len()).into());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                let all = times.iter().max().copied().unwrap_or_default();
                println!("fleet: round {round}: block in force on all {} other hosts {:.0} ms after the alert was sent", held - 1, all.as_secs_f64() * 1000.0);
                every_host.push(all);
                per_host.extend(times);
            }
            every_host.sort();
            per_host.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!("fleet_block_all_hosts_p50: {:.0} ms", ms(percentile(&every_host, 0.5)));
            println!("fleet_block_all_hosts_p99: {:.0} ms", ms(percentile(&every_host, 0.99)));
            println!("fleet_block_per_host_p50: {:.0} ms", ms(percentile(&per_host, 0.5)));
            println!("fleet_block_per_host_p99: {:.0} ms", ms(percentile(&per_host, 0.99)));
            for s in sims {
                s.conn.close(0u32.into(), b"done");
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
    })()
}
