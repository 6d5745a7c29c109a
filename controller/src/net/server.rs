//! The thin QUIC layer over the sans-IO protocol (`sensor_common::protocol`): TLS set-up,
//! enrollment, one telemetry session per connected host, and commands to hosts.
//!
//! Fails closed: a connection on the sensor ALPN without a certificate from this CA, or with
//! one the store does not know or has revoked, is closed before any stream is read; an
//! enrollment peer gets a certificate only for an unused, unexpired token.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use quinn::{
    Connection, Endpoint, VarInt,
    crypto::rustls::{HandshakeData, QuicServerConfig},
};
use rustls::{RootCertStore, server::WebPkiClientVerifier};
use sensor_common::protocol::{
    self, ALPN, ALPN_ENROLL, Command, CommandReply, EnrollReply, EnrollRequest, FrameIoError,
    ServerSession, Step, Uplink, read_frame, write_frame,
};

use crate::{
    ca::{Authority, fingerprint},
    lock, now_ns,
    services::{
        ChangeKind, Fleet, HostLink, LinkError,
        reconcile::{Events, HostEvent},
    },
    store::{Host, SharedStore, blocking},
};

/// How long an enrollment peer has to ask.
const ENROLL_WAIT: Duration = Duration::from_secs(10);
/// How long a host has to answer a command.
const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// Close codes, so a refused sensor can say why in its log.
pub mod close {
    pub const NO_CERTIFICATE: u32 = 1;
    pub const UNKNOWN_HOST: u32 = 2;
    pub const REVOKED: u32 = 3;
    pub const PROTOCOL: u32 = 4;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the server shares between connections.
#[derive(Clone)]
pub struct Shared {
    pub fleet: Fleet,
    pub ca: Arc<Authority>,
    pub hosts: Arc<Connections>,
    /// The console's operator sessions.
    pub sessions: Arc<crate::services::operators::Sessions>,
    /// Where every connection's graph deltas are committed, together.
    graph: crate::store::writer::GraphWriter,
    /// Where host events go (to [`crate::services::reconcile::run`]).
    events: Events,
}

impl Shared {
    /// The server's shared state, and the host events it will publish. Starts the graph
    /// writer: call it on the tokio runtime the server runs on.
    pub fn new(
        store: SharedStore,
        ca: Authority,
    ) -> (Self, tokio::sync::mpsc::UnboundedReceiver<HostEvent>) {
        let hosts = Arc::new(Connections::routed_through(store.clone()));
        let (events, rx) = crate::services::reconcile::channel();
        let graph = crate::store::writer::GraphWriter::start(store.clone());
        let shared = Self {
            fleet: Fleet {
                store,
                link: hosts.clone(),
                notifier: crate::services::notify::Notifier::default(),
                changes: crate::services::changes(),
            },
            ca: Arc::new(ca),
            hosts,
            sessions: Arc::default(),
            graph,
            events,
        };
        (shared, rx)
    }

    fn store(&self) -> &SharedStore {
        &self.fleet.store
    }
}

/// The connected hosts, by id: the services' [`HostLink`].
///
/// With a store other replicas share, a command for a host whose connection another replica
/// holds is left in the store for that replica ([`Self::serve_routed`] runs it there) and
/// its answer read back, so any replica can command any host.
pub struct Connections {
    by_host: Mutex<HashMap<String, Connection>>,
    /// The hosts other live replicas hold, as last read ([`BEAT`] ago at most): reachable
    /// through them.
    elsewhere: Mutex<std::collections::BTreeSet<String>>,
    /// Where connections and commands are routed between replicas: only a store others
    /// share. With none, nothing here touches the store.
    routes: Option<Routes>,
}

struct Routes {
    store: SharedStore,
    /// This replica's name in the store, unique to this process.
    me: String,
}

/// How often a replica looks for commands left for it, and for answers it waits for.
const ROUTE_POLL: Duration = Duration::from_millis(50);
/// How often a replica says it is alive and reads which hosts the others hold.
const BEAT: Duration = Duration::from_secs(1);

impl Connections {
    pub fn routed_through(store: SharedStore) -> Self {
        let shared = lock(&store).is_shared();
        let routes = shared.then(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            Routes {
                store,
                me: format!("{}/{}/{:x}", host.trim(), std::process::id(), now_ns()),
            }
        });
        Self {
            by_host: Mutex::default(),
            elsewhere: Mutex::default(),
            routes,
        }
    }

    fn insert(&self, host: &str, conn: Connection) {
        lock(&self.by_host).insert(host.to_owned(), conn);
        if let Some(r) = &self.routes
            && let Err(e) = blocking(|| lock(&r.store).hold_connection(host, &r.me))
        {
            tracing::error!(host, error = %e, "cannot record which replica holds the host");
        }
    }

    /// Runs the commands other replicas left for the hosts this one holds, and keeps this
    /// replica known as alive, for as long as the server runs (at once done without a shared
    /// store).
    pub async fn serve_routed(self: Arc<Self>) {
        let Some(r) = &self.routes else { return };
        let mut last_beat: Option<tokio::time::Instant> = None;
        loop {
            if last_beat.is_none_or(|t| t.elapsed() >= BEAT) {
                last_beat = Some(tokio::time::Instant::now());
                self.beat(r);
            }
            tokio::time::sleep(ROUTE_POLL).await;
            let taken = blocking(|| lock(&r.store).take_routed(&r.me));
            let routed = match taken {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the commands routed here");
                    continue;
                }
            };
            for (id, host, body) in routed {
                let this = self.clone();
                tokio::spawn(async move {
                    let answer: Result<CommandReply, String> =
                        match serde_json::from_str::<Command>(&body) {
                            Ok(cmd) => this.local(&host, &cmd).await.map_err(|e| e.to_string()),
                            Err(e) => Err(format!("an unreadable routed command: {e}")),
                        };
                    let text = serde_json::to_string(&answer)
                        .unwrap_or_else(|e| format!("{{\"Err\":\"{e}\"}}"));
                    let Some(r) = &this.routes else { return };
                    if let Err(e) = blocking(|| lock(&r.store).answer_routed(id, &text)) {
                        tracing::error!(id, error = %e, "cannot answer a routed command");
                    }
                });
            }
        }
    }

    /// Says this replica is alive, reads which hosts the others hold, and cuts off the hosts
    /// held here that another replica revoked.
    fn beat(&self, r: &Routes) {
        let read = blocking(|| {
            let mut s = lock(&r.store);
            s.beat(&r.me)?;
            let revoked = s.revoked_hosts()?;
            Ok::<_, crate::store::StoreError>((s.held_elsewhere(&r.me)?, revoked))
        });
        match read {
            Ok((elsewhere, revoked)) => {
                *lock(&self.elsewhere) = elsewhere;
                for host in revoked {
                    if lock(&self.by_host).contains_key(&host) {
                        tracing::warn!(%host, "revoked through another replica; cutting it off");
                        self.disconnect(&host, "this host is revoked");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot tell the other replicas this one is alive")
            }
        }
    }

    /// `cmd` through this replica's own connection to `host`.
    async fn local(&self, host: &str, cmd: &Command) -> Result<CommandReply, LinkError> {
        let conn = lock(&self.by_host).get(host).cloned();
        let conn = conn.ok_or_else(|| LinkError::NotConnected(host.to_owned()))?;
        tokio::time::timeout(COMMAND_WAIT, Self::exchange(conn, host, cmd))
            .await
            .map_err(|_| LinkError::Timeout {
                host: host.to_owned(),
                secs: COMMAND_WAIT.as_secs(),
            })?
    }

    /// `cmd` through the replica holding `host`'s connection, if another one does.
    async fn through_holder(&self, host: &str, cmd: &Command) -> Result<CommandReply, LinkError> {
        let not_here = || LinkError::NotConnected(host.to_owned());
        let store_failed = |e: &dyn std::fmt::Display| LinkError::Stream {
            host: host.to_owned(),
            why: format!("the store: {e}"),
        };
        let Some(r) = &self.routes else {
            return Err(not_here());
        };
        let holder =
            blocking(|| lock(&r.store).connection_holder(host)).map_err(|e| store_failed(&e))?;
        let Some(holder) = holder.filter(|h| *h != r.me) else {
            return Err(not_here());
        };
        let body = serde_json::to_string(cmd).map_err(|e| store_failed(&e))?;
        let id = blocking(|| lock(&r.store).route_command(&holder, host, &body))
            .map_err(|e| store_failed(&e))?;
        tracing::info!(host, replica = %holder, "command routed to the replica holding the host");
        let deadline = tokio::time::Instant::now() + COMMAND_WAIT;
        loop {
            tokio::time::sleep(ROUTE_POLL).await;
            let answer = blocking(|| lock(&r.store).routed_answer(id));
            match answer {
                Ok(Some(text)) => {
                    return match serde_json::from_str::<Result<CommandReply, String>>(&text) {
                        Ok(Ok(reply)) => Ok(reply),
                        Ok(Err(why)) => Err(LinkError::Stream {
                            host: host.to_owned(),
                            why: format!("through replica {holder}: {why}"),
                        }),
                        Err(e) => Err(LinkError::Stream {
                            host: host.to_owned(),
                            why: format!("replica {holder} answered unreadably: {e}"),
                        }),
                    };
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {}
                Ok(None) => {
                    return Err(LinkError::Timeout {
                        host: host.to_owned(),
                        secs: COMMAND_WAIT.as_secs(),
                    });
                }
                Err(e) => return Err(store_failed(&e)),
            }
        }
    }

    /// Forgets `host`'s connection if it is still `conn` (a newer one may have replaced it).
    fn remove_if(&self, host: &str, conn: &Connection) {
        let mut by_host = lock(&self.by_host);
        if by_host
            .get(host)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            by_host.remove(host);
            drop(by_host);
            if let Some(r) = &self.routes
                && let Err(e) = blocking(|| lock(&r.store).drop_connection(host, &r.me))
            {
                tracing::error!(host, error = %e, "cannot record that this replica let the host go");
            }
        }
    }

    async fn exchange(
        conn: Connection,
        host: &str,
        cmd: &Command,
    ) -> Result<CommandReply, LinkError> {
        let stream = |e: &dyn std::fmt::Display| LinkError::Stream {
            host: host.to_owned(),
            why: e.to_string(),
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| stream(&e))?;
        write_frame(&mut send, cmd).await.map_err(|e| stream(&e))?;
        let _ = send.finish();
        read_frame::<CommandReply, _>(&mut recv)
            .await
            .map_err(|e| stream(&e))?
            .ok_or_else(|| LinkError::NoAnswer(host.to_owned()))
    }
}

impl HostLink for Connections {
    /// The hosts connected here or to another live replica (commands reach both).
    fn connected(&self) -> Vec<String> {
        let mut ids: std::collections::BTreeSet<String> = lock(&self.elsewhere).clone();
        ids.extend(lock(&self.by_host).keys().cloned());
        ids.into_iter().collect()
    }

    fn is_connected(&self, host: &str) -> bool {
        lock(&self.by_host).contains_key(host) || lock(&self.elsewhere).contains(host)
    }

    fn through_replica(&self, host: &str) -> bool {
        !lock(&self.by_host).contains_key(host) && lock(&self.elsewhere).contains(host)
    }

    fn command<'a>(&'a self, host: &'a str, cmd: &'a Command) -> crate::services::Answer<'a> {
        Box::pin(async move {
            match self.local(host, cmd).await {
                Err(LinkError::NotConnected(_)) => self.through_holder(host, cmd).await,
                other => other,
            }
        })
    }

    fn disconnect(&self, host: &str, why: &str) {
        let conn = lock(&self.by_host).get(host).cloned();
        if let Some(c) = conn {
            c.close(VarInt::from_u32(close::REVOKED), why.as_bytes());
            self.remove_if(host, &c);
        }
    }
}

fn server_config(ca: &Authority) -> Result<quinn::ServerConfig, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der.clone()).map_err(|e| tls(&e))?;
    // Without a certificate a peer may only enroll: checked per ALPN after the handshake.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(ca.server_chain.clone(), ca.server_key.clone_key())
        .map_err(|e| tls(&e))?;
    cfg.alpn_protocols = vec![ALPN.to_vec(), ALPN_ENROLL.to_vec()];
    let quic = QuicServerConfig::try_from(cfg).map_err(|e| tls(&e))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// Binds the QUIC endpoint.
pub fn listen(shared: &Shared, addr: SocketAddr) -> Result<Endpoint, ServerError> {
    Endpoint::server(server_config(&shared.ca)?, addr)
        .map_err(|source| ServerError::Listen { addr, source })
}

/// Accepts connections until the endpoint closes.
pub async fn serve(endpoint: Endpoint, shared: Shared) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            match incoming.await {
                Ok(conn) => handle(conn, shared).await,
                Err(e) => tracing::info!(%peer, error = %e, "handshake failed; nothing given"),
            }
        });
    }
}

async fn handle(conn: Connection, shared: Shared) {
    let peer = conn.remote_address();
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<HandshakeData>().ok())
        .and_then(|h| h.protocol);
    if alpn.as_deref() == Some(ALPN_ENROLL) {
        if let Err(e) = enroll(&conn, &shared).await {
            tracing::warn!(%peer, error = %e, "enrollment stream failed");
        }
        conn.close(VarInt::from_u32(0), b"done");
        return;
    }
    let Some(host) = authenticate(&conn, &shared) else {
        return;
    };
    tracing::info!(%peer, host = %host.id, hostname = %host.hostname, "sensor connected");
    shared.hosts.insert(&host.id, conn.clone());
    let result = telemetry(&conn, &shared, &host.id).await;
    shared.hosts.remove_if(&host.id, &conn);
    shared.fleet.changed(ChangeKind::Hosts, Some(&host.id));
    let _ = shared.events.send(HostEvent::Disconnected {
        host: host.id.clone(),
    });
    match result {
        Ok(()) => tracing::info!(host = %host.id, "sensor disconnected"),
        Err(why) => {
            tracing::warn!(host = %host.id, %why, "telemetry stream closed");
            conn.close(
                VarInt::from_u32(close::PROTOCOL),
                why.to_string().as_bytes(),
            );
        }
    }
}

/// The host a sensor connection's certificate names, or None after closing it.
fn authenticate(conn: &Connection, shared: &Shared) -> Option<Host> {
    let refuse = |code: u32, why: &str| {
        tracing::warn!(peer = %conn.remote_address(), why, "sensor refused");
        conn.close(VarInt::from_u32(code), why.as_bytes());
        None
    };
    let certs = conn.peer_identity().and_then(|p| {
        p.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let Some(first) = certs.as_ref().and_then(|c| c.first()) else {
        return refuse(close::NO_CERTIFICATE, "a client certificate is required");
    };
    let fp = fingerprint(first);
    match blocking(|| lock(shared.store()).host_by_fingerprint(&fp)) {
        Ok(Some(h)) if h.revoked => refuse(close::REVOKED, "this host is revoked"),
        Ok(Some(h)) => Some(h),
        Ok(None) => refuse(close::UNKNOWN_HOST, "no host holds this certificate"),
        Err(e) => {
            tracing::error!(error = %e, "store unavailable");
            refuse(close::UNKNOWN_HOST, "store unavailable")
        }
    }
}

async fn enroll(conn: &Connection, shared: &Shared) -> Result<(), FrameIoError> {
    let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(ENROLL_WAIT, conn.accept_bi()).await
    else {
        return Ok(());
    };
    let Ok(req) =
        tokio::time::timeout(ENROLL_WAIT, read_frame::<EnrollRequest, _>(&mut recv)).await
    else {
        return Ok(());
    };
    let reply = match req? {
        Some(req) => blocking(|| decide_enrollment(shared, &req)),
        None => return Ok(()),
    };
    write_frame(&mut send, &reply).await?;
    let _ = send.finish();
    // Let the reply reach the peer before the connection closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    Ok(())
}

fn decide_enrollment(shared: &Shared, req: &EnrollRequest) -> EnrollReply {
    let refused = |reason: String| {
        tracing::warn!(token = %req.token_id, hostname = %req.hostname, %reason, "enrollment refused");
        // The peer learns no more than that it was refused.
        EnrollReply::Refused {
            reason: "enrollment refused".into(),
        }
    };
    let now = now_ns();
    let redeemed = lock(shared.store()).redeem_token(
        &req.token_id,
        &crate::token::secret_hash(&req.secret),
        now,
    );
    match redeemed {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return refused(why.to_string()),
        Err(e) => return refused(e.to_string()),
    }
    let Ok(id) = crate::token::random_hex::<8>().map(|id| format!("h-{id}")) else {
        return refused("no randomness".into());
    };
    let hostname: String = req
        .hostname
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._".contains(*c))
        .take(64)
        .collect();
    let cert_pem = match shared.ca.issue(&id, &hostname, &req.csr_der) {
        Ok(c) => c,
        Err(e) => return refused(format!("bad signing request: {e}")),
    };
    let Ok(der) = crate::ca::pem_to_der(&cert_pem) else {
        return refused("issued an unreadable certificate".into());
    };
    let host = Host {
        id: id.clone(),
        hostname: hostname.clone(),
        cert_fingerprint: fingerprint(&der),
        enrolled_ns: now,
        last_seen_ns: now,
        revoked: false,
        report: protocol::HostReport {
            hostname,
            ..Default::default()
        },
    };
    if let Err(e) = lock(shared.store()).add_host(&host) {
        return refused(e.to_string());
    }
    tracing::info!(host = %id, hostname = %host.hostname, "host enrolled");
    EnrollReply::Enrolled {
        host_id: id,
        cert_pem,
        ca_pem: shared.ca.cert_pem.clone(),
    }
}

/// Why a host's telemetry stream was closed by the server.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    #[error(transparent)]
    Protocol(#[from] protocol::Violation),
    #[error("graph delta {seq}: {source}")]
    BadDelta {
        seq: u64,
        source: sensor_common::wire::WireError,
    },
    #[error("cannot store graph delta {seq}: {source}")]
    Merge {
        seq: u64,
        source: crate::store::writer::MergeError,
    },
    #[error("cannot store {what}: {source}")]
    Store {
        what: String,
        source: crate::store::StoreError,
    },
}

/// Runs the telemetry stream of an authenticated host until it ends.
async fn telemetry(conn: &Connection, shared: &Shared, host: &str) -> Result<(), StreamEnd> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut session = ServerSession::new(host.to_owned());
    let mut converging = false;
    loop {
        let frame = match read_frame::<Uplink, _>(&mut recv).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(FrameIoError::Io(e)) => {
                tracing::info!(host, error = %e, "stream ended");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let store = shared.store();
        let steps = session.on_frame(frame, || {
            blocking(|| {
                let s = lock(store);
                let held = s.held(host).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read what the store holds");
                    Default::default()
                });
                (held, s.graph_head(host).unwrap_or(0))
            })
        });
        for step in steps {
            match step {
                Step::Store { stream, seq, body } => {
                    let put = blocking(|| lock(store).put_record(host, stream, seq, &body));
                    if let Err(source) = put {
                        // Not acked: the sensor resends on its next connection.
                        return Err(StreamEnd::Store {
                            what: format!("{} {seq}", stream.name()),
                            source,
                        });
                    }
                    crate::metrics::record_stored(stream.name());
                    shared.fleet.changed(
                        match stream {
                            sensor_common::protocol::Stream::Alerts => ChangeKind::Alerts,
                            sensor_common::protocol::Stream::Actions => ChangeKind::Actions,
                        },
                        Some(host),
                    );
                    // A new alert: the fleet's own steps start from here.
                    if stream == sensor_common::protocol::Stream::Alerts
                        && let Ok(alert) = serde_json::from_slice(&body)
                    {
                        let _ = shared.events.send(HostEvent::Alert {
                            host: host.to_owned(),
                            alert: Box::new(alert),
                        });
                    }
                }
                Step::Graph { seq, delta } => {
                    use sensor_common::wire::Versioned as _;
                    let delta = sensor_common::wire::Delta::decode(&delta)
                        .map_err(|source| StreamEnd::BadDelta { seq, source })?;
                    // Acknowledged (the next step) only once its group is committed.
                    if let Err(source) = shared.graph.merge(host, seq, delta).await {
                        return Err(StreamEnd::Merge { seq, source });
                    }
                }
                Step::Report(r) => {
                    if let Err(e) = blocking(|| lock(store).seen(host, &r, now_ns())) {
                        tracing::error!(error = %e, "cannot record a host report");
                    }
                    shared.fleet.changed(ChangeKind::Hosts, Some(host));
                    // Once per connection: the services reconcile the host from here.
                    if !converging {
                        converging = true;
                        let _ = shared.events.send(HostEvent::Connected {
                            host: host.to_owned(),
                            report: r,
                        });
                    }
                }
                Step::Send(d) => write_frame(&mut send, &d).await?,
                Step::Close(why) => return Err(why.into()),
            }
        }
    }
}
