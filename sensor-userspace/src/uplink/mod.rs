//! The controller uplink: enrollment, then one mutual-TLS QUIC connection that carries the
//! host's alerts and action records up and the controller's commands down. The sensor never
//! depends on it: detection and containment run the same with the link down.
//!
//! Store and forward: the records are the lines of `STATE/alerts.jsonl` and
//! `STATE/actions.jsonl`, already on disk and never dropped. On each connection the controller
//! says the last line it holds of each, and the uplink sends from the next one ([`tail`]).

pub mod graph;
pub mod identity;
pub mod tail;
pub mod tls;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use sensor_common::protocol::{
    Command, CommandReply, Downlink, EnrollToken, FrameIoError, HostReport, SERVER_NAME, Stream,
    Uplink, read_frame, write_frame,
};
use tokio::sync::{mpsc, oneshot};

use self::{graph::GraphBuffer, identity::Identity, tail::Tail};
use crate::control::{Envelope, Order, Request, Response, UplinkStatus};

/// How often new lines are looked for.
const POLL: Duration = Duration::from_millis(200);
/// How often the host's report goes up.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Reconnection waits grow to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The wait before trying the next of several replicas.
const NEXT_REPLICA: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct UplinkOptions {
    /// The controller's replicas, tried in turn (at least one).
    pub controllers: Vec<SocketAddr>,
    pub token: Option<EnrollToken>,
    pub state: PathBuf,
    /// Graph deltas (`wire::Delta`, encoded) from the sensor's loop.
    pub graph: mpsc::Receiver<Vec<u8>>,
    /// Deltas the sensor's loop could not hand over (the channel was full).
    pub graph_lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The addresses the host is known by (empty: its interfaces').
    pub addresses: Vec<std::net::IpAddr>,
    /// Where the task says how the link stands.
    pub gauges: std::sync::Arc<LinkGauges>,
}

/// How the link to the controller stands, kept by the uplink task and read by the sensor's
/// loop for `status` and `/metrics`.
#[derive(Debug, Default)]
pub struct LinkGauges {
    connected: std::sync::atomic::AtomicBool,
    sessions: AtomicU64,
    held_deltas: AtomicU64,
    held_bytes: AtomicU64,
    dropped: AtomicU64,
    /// Which of the controller's addresses the link is at.
    at: std::sync::atomic::AtomicUsize,
}

/// Graph deltas the controller will never get: past the buffer's bound, or never handed over
/// by a stuck loop.
fn deltas_dropped(graph: &GraphBuffer, lost: &AtomicU64) -> u64 {
    graph.dropped() + lost.load(Ordering::Relaxed)
}

impl LinkGauges {
    fn hold(&self, graph: &GraphBuffer, lost: &AtomicU64) {
        let (deltas, bytes) = graph.held();
        self.held_deltas.store(deltas as u64, Ordering::Relaxed);
        self.held_bytes.store(bytes as u64, Ordering::Relaxed);
        self.dropped
            .store(deltas_dropped(graph, lost), Ordering::Relaxed);
    }

    fn up(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        if up {
            self.sessions.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn status(&self, controllers: &[SocketAddr]) -> UplinkStatus {
        let at = self.at.load(Ordering::Relaxed);
        UplinkStatus {
            controller: controllers
                .get(at)
                .or(controllers.first())
                .copied()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            connected: self.connected.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
            spooled_deltas: self.held_deltas.load(Ordering::Relaxed),
            spooled_bytes: self.held_bytes.load(Ordering::Relaxed),
            graph_deltas_dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Asks the running sensor (through the control channel) and waits for its answer.
async fn ask(ctrl: &mpsc::Sender<Envelope>, req: Request) -> Option<Response> {
    let (tx, rx) = oneshot::channel();
    ctrl.send((req, tx)).await.ok()?;
    rx.await.ok()
}

/// The host's addresses, loopback aside.
fn addresses() -> Vec<std::net::IpAddr> {
    let Ok(ifs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<std::net::IpAddr> = ifs
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| std::net::IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
        })
        .filter(|ip| !ip.is_loopback())
        .collect();
    out.sort();
    out.dedup();
    out
}

async fn report(
    ctrl: &mpsc::Sender<Envelope>,
    graph_dropped: u64,
    known_as: &[std::net::IpAddr],
) -> HostReport {
    let addresses = if known_as.is_empty() {
        addresses()
    } else {
        known_as.to_vec()
    };
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    match ask(ctrl, Request::Status).await {
        Some(Response::Status(s)) => HostReport {
            hostname,
            sensor_version: s.version.clone(),
            policy_version: s.policy.version,
            rules_loaded: s.rules_loaded as u64,
            rules_version: s.rules_version.clone().unwrap_or_default(),
            isolated: s.actions.network.isolated,
            dropped: s.events.values().map(|k| k.dropped).sum(),
            graph_dropped,
            addresses: addresses.clone(),
        },
        _ => HostReport {
            hostname,
            sensor_version: env!("CARGO_PKG_VERSION").to_owned(),
            graph_dropped,
            addresses: addresses.clone(),
            ..HostReport::default()
        },
    }
}

/// The identity saved under the state directory, or one enrolled now with the token.
/// None when the sensor cannot enroll (no token, or the controller refused it).
async fn identity(opts: &UplinkOptions, endpoint: &quinn::Endpoint) -> Option<Identity> {
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0usize;
    loop {
        match Identity::load(&opts.state) {
            Ok(Some(id)) => return Some(id),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "the saved controller identity is unreadable; the uplink stays down");
                return None;
            }
        }
        let Some(token) = &opts.token else {
            tracing::error!(
                "not enrolled with the controller: run once with --enroll TOKEN (from `vigil-controller enroll-token`); the uplink stays down"
            );
            return None;
        };
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let addr = opts.controllers[attempt % opts.controllers.len()];
        attempt += 1;
        match identity::enroll(endpoint, addr, token, &hostname).await {
            Ok(id) => {
                if let Err(e) = id.save(&opts.state) {
                    tracing::error!(error = %e, "cannot save the identity; the uplink stays down");
                    return None;
                }
                tracing::info!(host = %id.host_id, controller = %addr, "enrolled with the controller");
                return Some(id);
            }
            Err(e @ identity::IdentityError::Unreachable { .. }) => {
                tracing::warn!(error = %e, "enrollment will be retried");
                // The next replica at once; after all of them, a wait that grows.
                if attempt.is_multiple_of(opts.controllers.len()) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "enrollment failed; the uplink stays down");
                return None;
            }
        }
    }
}

fn client_endpoint(controller: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let bind: SocketAddr = if controller.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    quinn::Endpoint::client(bind)
}

/// Enrolls now and saves the identity under `state` (refused when one is already there);
/// returns the host id.
pub async fn enroll_once(
    state: &Path,
    controller: SocketAddr,
    token: &EnrollToken,
) -> Result<String, identity::IdentityError> {
    if let Some(id) = Identity::load(state)? {
        return Err(identity::IdentityError::Refused(format!(
            "this state directory is already enrolled as host {}; remove {} to enroll again",
            id.host_id,
            state.join("identity").display()
        )));
    }
    let endpoint =
        client_endpoint(controller).map_err(|e| identity::IdentityError::Unreachable {
            addr: controller,
            why: e.to_string(),
        })?;
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let id = identity::enroll(&endpoint, controller, token, &hostname).await?;
    std::fs::create_dir_all(state).map_err(|source| identity::IdentityError::Io {
        path: state.to_owned(),
        source,
    })?;
    id.save(state)?;
    Ok(id.host_id)
}

/// Runs the uplink until the sensor stops: enroll if needed, then connect, and reconnect
/// whenever the link drops.
///
/// When `stop` fires, the link is closed with a goodbye, so the controller shows the host
/// offline at once rather than after an idle timeout.
pub async fn run(
    mut opts: UplinkOptions,
    ctrl: mpsc::Sender<Envelope>,
    stop: oneshot::Receiver<()>,
) {
    let Some(&first) = opts.controllers.first() else {
        tracing::error!("no controller address; the uplink stays down");
        return;
    };
    let endpoint = match client_endpoint(first) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot open a UDP socket; the uplink stays down");
            return;
        }
    };
    let mut graph = GraphBuffer::open(&opts.state.join("graph-spool"));
    tokio::select! {
        () = connected(&endpoint, &mut opts, &ctrl, &mut graph) => {}
        _ = stop => {}
    }
    // The last deltas (the sensor sends one as it stops) go to the spool for next time.
    while let Ok(d) = opts.graph.try_recv() {
        graph.push(d);
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"sensor stopping");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// Enrolls if need be, then keeps a link to the controller up, for ever.
async fn connected(
    endpoint: &quinn::Endpoint,
    opts: &mut UplinkOptions,
    ctrl: &mpsc::Sender<Envelope>,
    graph: &mut GraphBuffer,
) {
    let Some(id) = identity(opts, endpoint).await else {
        return;
    };
    let config = match id.client_config(&opts.state) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the uplink stays down");
            return;
        }
    };
    let mut backoff = Duration::from_millis(200);
    let mut at = 0usize;
    loop {
        let started = Instant::now();
        let addr = opts.controllers[at];
        opts.gauges.at.store(at, Ordering::Relaxed);
        match session(endpoint, &config, &id, addr, opts, ctrl, graph).await {
            Ok(()) => tracing::info!(controller = %addr, "the controller closed the link"),
            Err(e) => {
                tracing::warn!(controller = %addr, error = %e, "controller link down; records wait on disk")
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(200);
        }
        // The next replica, after a short wait: what this one held is in the shared store,
        // and the next resumes from what it says it holds. Once every replica was tried, the
        // wait grows.
        at = (at + 1) % opts.controllers.len();
        let wait = if at == 0 {
            let w = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            w
        } else {
            NEXT_REPLICA
        };
        // Deltas keep coming while the link is down: into the bounded buffer.
        opts.gauges.up(false);
        let wake = tokio::time::sleep(wait);
        tokio::pin!(wake);
        loop {
            opts.gauges.hold(graph, &opts.graph_lost);
            tokio::select! {
                () = &mut wake => break,
                Some(d) = opts.graph.recv() => graph.push(d),
            }
        }
    }
}

fn stream_path(state: &Path, s: Stream) -> PathBuf {
    state.join(format!("{}.jsonl", s.name()))
}

/// Why a session with the controller ended.
#[derive(Debug, thiserror::Error)]
enum LinkDown {
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    #[error("the controller closed the connection: {0}")]
    Closed(String),
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    #[error("the controller ended the stream")]
    Ended,
    #[error("expected {expected} from the controller, got {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error("cannot open the record streams: {0}")]
    Spool(std::io::Error),
    #[error("the acknowledgement reader stopped: {0}")]
    Reader(#[from] tokio::task::JoinError),
}

// Long by design: the session's steps in order (connect, hello, welcome, stream); each is a few lines.

async fn session(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    id: &Identity,
    addr: SocketAddr,
    opts: &mut UplinkOptions,
    ctrl: &mpsc::Sender<Envelope>,
    graph: &mut GraphBuffer,
) -> Result<(), LinkDown> {
    let conn = endpoint
        .connect_with(config.clone(), addr, SERVER_NAME)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Uplink::Hello {
        host_id: id.host_id.clone(),
        report: report(
            ctrl,
            deltas_dropped(graph, &opts.graph_lost),
            &opts.addresses,
        )
        .await,
    };
    write_frame(&mut send, &hello).await?;
    let held = match read_frame::<Downlink, _>(&mut recv).await {
        Ok(Some(Downlink::Welcome {
            held,
            graph: applied,
        })) => {
            graph.relink();
            graph.acked(applied);
            held
        }
        Ok(Some(other)) => {
            return Err(LinkDown::Unexpected {
                expected: "a welcome",
                got: format!("{other:?}"),
            });
        }
        Ok(None) => return Err(close_reason(&conn, LinkDown::Ended)),
        Err(e) => return Err(close_reason(&conn, e.into())),
    };
    tracing::info!(controller = %addr, ?held, "connected to the controller");
    opts.gauges.up(true);
    let mut tails: Vec<Tail> = Stream::ALL
        .iter()
        .map(|&s| {
            Tail::open(
                s,
                stream_path(&opts.state, s),
                held.get(&s).copied().unwrap_or(0),
            )
        })
        .collect::<Result<_, _>>()
        .map_err(LinkDown::Spool)?;
    // Acks are read on their own task: a frame read is not cancel-safe inside a select.
    let (graph_acks, mut graph_acked) = tokio::sync::watch::channel(0u64);
    let mut acks = tokio::spawn(async move {
        loop {
            match read_frame::<Downlink, _>(&mut recv).await {
                Ok(Some(Downlink::Ack { stream, seq })) => {
                    tracing::trace!(stream = stream.name(), seq, "acked");
                }
                Ok(Some(Downlink::GraphAck { seq })) => {
                    let _ = graph_acks.send(seq);
                }
                Ok(Some(other)) => {
                    return LinkDown::Unexpected {
                        expected: "an acknowledgement",
                        got: format!("{other:?}"),
                    };
                }
                Ok(None) => return LinkDown::Ended,
                Err(e) => return e.into(),
            }
        }
    });
    let commands = tokio::spawn(serve_commands(conn.clone(), ctrl.clone()));
    let mut poll = tokio::time::interval(POLL);
    let mut reports = tokio::time::interval(REPORT_EVERY);
    reports.tick().await;
    let result = 'session: loop {
        opts.gauges.hold(graph, &opts.graph_lost);
        tokio::select! {
            ended = &mut acks => break Err(close_reason(&conn, ended.unwrap_or_else(LinkDown::from))),
            Some(d) = opts.graph.recv() => graph.push(d),
            Ok(()) = graph_acked.changed() => {
                let seq = *graph_acked.borrow_and_update();
                graph.acked(seq);
            }
            _ = poll.tick() => {
                if let Err(e) = send_new(&mut tails, &mut send).await {
                    break Err(close_reason(&conn, e.into()));
                }
                for (seq, delta) in graph.unsent() {
                    if let Err(e) = write_frame(&mut send, &Uplink::Graph { seq, delta }).await {
                        break 'session Err(close_reason(&conn, e.into()));
                    }
                }
            }
            _ = reports.tick() => {
                let r = Uplink::Report(report(ctrl, deltas_dropped(graph, &opts.graph_lost), &opts.addresses).await);
                if let Err(e) = write_frame(&mut send, &r).await {
                    break Err(close_reason(&conn, e.into()));
                }
            }
        }
    };
    commands.abort();
    acks.abort();
    result
}

/// Sends the lines written since the last poll, stream by stream.
async fn send_new(tails: &mut [Tail], send: &mut quinn::SendStream) -> Result<(), FrameIoError> {
    for t in tails {
        let lines = match t.poll() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(stream = t.stream().name(), error = %e, "cannot read new records");
                continue;
            }
        };
        for (seq, body) in lines {
            let rec = Uplink::Record {
                stream: t.stream(),
                seq,
                body,
            };
            write_frame(send, &rec).await?;
        }
    }
    Ok(())
}

/// What the controller said when it closed the connection, else `fallback`.
fn close_reason(conn: &quinn::Connection, fallback: LinkDown) -> LinkDown {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            LinkDown::Closed(String::from_utf8_lossy(&c.reason).into_owned())
        }
        Some(other) => LinkDown::Connection(other),
        None => fallback,
    }
}

/// Answers the controller's commands, each on a stream it opens, through the sensor's own
/// control channel: the same journaled actions as a local operator's.
async fn serve_commands(conn: quinn::Connection, ctrl: mpsc::Sender<Envelope>) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let ctrl = ctrl.clone();
        tokio::spawn(async move {
            let reply = match read_frame::<Command, _>(&mut recv).await {
                Ok(Some(cmd)) => run_command(cmd, &ctrl).await,
                Ok(None) => return,
                Err(e) => CommandReply::Refused {
                    reason: e.to_string(),
                },
            };
            if let Err(e) = write_frame(&mut send, &reply).await {
                tracing::warn!(error = %e, "cannot answer the controller");
            }
            let _ = send.finish();
        });
    }
}

/// Hashes the files the sensor knows and `more`, off its loop, looking for `sha256`.
async fn sweep(
    sha256: String,
    more: Vec<String>,
    size: Option<u64>,
    ctrl: &mpsc::Sender<Envelope>,
) -> CommandReply {
    if !sensor_common::protocol::is_sha256(&sha256) {
        return CommandReply::Refused {
            reason: format!("{sha256:?} is not a SHA-256 (64 lower-case hex digits)"),
        };
    }
    let mut paths = match ask(ctrl, Request::SweepCandidates).await {
        Some(Response::Paths { paths }) => paths,
        _ => {
            return CommandReply::Refused {
                reason: "the sensor is stopping".into(),
            };
        }
    };
    paths.extend(more.into_iter().filter(|p| p.starts_with('/')));
    paths.sort_unstable();
    paths.dedup();
    let looked_at = paths.len();
    match tokio::task::spawn_blocking(move || crate::host::hash::sweep(&paths, &sha256, size)).await
    {
        Ok((found, hashed)) => {
            tracing::info!(looked_at, hashed, found = found.len(), "hash sweep done");
            CommandReply::Swept { found, hashed }
        }
        Err(e) => CommandReply::Refused {
            reason: format!("the sweep failed: {e}"),
        },
    }
}

async fn run_command(cmd: Command, ctrl: &mpsc::Sender<Envelope>) -> CommandReply {
    tracing::info!(?cmd, "command from the controller");
    let req = match cmd {
        Command::Sweep {
            sha256,
            paths,
            size,
        } => return sweep(sha256, paths, size, ctrl).await,
        Command::Isolate { reason, who } => Request::Contain {
            order: Order::Isolate,
            reason,
            by: Some(who),
        },
        Command::Release { who } => Request::Release { by: Some(who) },
        Command::Undo { id, who } => Request::Undo { id, by: Some(who) },
        Command::Kill { pid, reason, who } => Request::Contain {
            order: Order::Kill { pid },
            reason,
            by: Some(who),
        },
        Command::Quarantine { path, reason, who } => Request::Contain {
            order: Order::Quarantine { path },
            reason,
            by: Some(who),
        },
        Command::Verify { indicators } => Request::Verify { indicators },
        Command::PushRules { set, who } => Request::PushRules { set, by: who },
        Command::PushPolicy { text, who } => Request::PushPolicy { text, by: who },
        Command::FleetBlock { block, who } => Request::FleetBlock { block, by: who },
        Command::Approve { incident, who } => Request::Approve {
            incident,
            by: Some(who),
        },
        Command::Deny { incident, who } => Request::Deny {
            incident,
            by: Some(who),
        },
    };
    match ask(ctrl, req).await {
        Some(Response::Actions { records }) => CommandReply::Done {
            records: records
                .iter()
                .filter_map(|r| serde_json::to_vec(r).ok())
                .collect(),
        },
        Some(Response::Verified { present }) => CommandReply::Verified { present },
        Some(Response::Applied { detail }) => CommandReply::Applied { detail },
        Some(Response::NotIsolated) => CommandReply::NotIsolated,
        Some(Response::Error { message }) => CommandReply::Refused { reason: message },
        Some(other) => CommandReply::Refused {
            reason: format!("unexpected answer {other:?}"),
        },
        None => CommandReply::Refused {
            reason: "the sensor is stopping".into(),
        },
    }
}
