//! The sensor-controller protocol, free of I/O: message types, the frame codec, and the
//! controller's session state machine. The QUIC layers on both sides only move bytes.
//!
//! A frame is a 4-byte big-endian length then an rmp-serde [`Frame`] carrying the protocol
//! version. A connection has three kinds of bidirectional streams, each opened by the sensor:
//! - telemetry: [`Uplink`] frames up, [`Downlink`] frames down (a welcome, then acks);
//! - commands: the sensor opens it and waits; each [`Command`] down gets a [`CommandReply`];
//! - enrollment, on its own ALPN and the only one that needs no client certificate: one
//!   [`EnrollRequest`], one [`EnrollReply`].
//!
//! Telemetry is store-and-forward: the sensor's alerts and action records are already on disk
//! (`alerts.jsonl`, `actions.jsonl`), each line numbered from 1 in its [`Stream`]. On every
//! connection the controller says the last line it holds of each stream, and the sensor sends
//! from the next one; the controller keeps a line only when it is the next in sequence, so a
//! reconnect or a controller restart loses nothing and duplicates nothing.

use std::{
    borrow::ToOwned,
    collections::BTreeMap,
    string::{String, ToString},
    vec::Vec,
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Bumped on any incompatible change to the types below.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest frame accepted, length prefix excluded.
pub const MAX_FRAME: usize = 4 << 20;

/// ALPN of an enrolled sensor's connection (mutual TLS).
pub const ALPN: &[u8] = b"vigil/1";

/// ALPN of an enrollment (server-authenticated only: the token authenticates the sensor).
pub const ALPN_ENROLL: &[u8] = b"vigil-enroll/1";

/// The name the controller's certificate carries and sensors verify, whatever its address.
pub const SERVER_NAME: &str = "vigil-controller";

#[derive(Debug, Serialize, Deserialize)]
pub struct Frame<T> {
    pub version: u16,
    pub body: T,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("frame speaks protocol version {0}; this side speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("cannot encode a frame: {0}")]
    Encode(String),
}

/// Encodes `body` as one frame, length prefix included.
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>, FrameError> {
    let bytes = rmp_serde::to_vec_named(&Frame {
        version: PROTOCOL_VERSION,
        body,
    })
    .map_err(|e| FrameError::Encode(e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    let len = u32::try_from(bytes.len()).map_err(|_| FrameError::TooLarge(bytes.len()))?;
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// Checks a length prefix before its body is read.
pub fn check_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        Err(FrameError::TooLarge(len))
    } else {
        Ok(len)
    }
}

/// Decodes a frame body (after its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    #[derive(Deserialize)]
    struct Version {
        version: u16,
    }
    let v: Version =
        rmp_serde::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if v.version != PROTOCOL_VERSION {
        return Err(FrameError::Version(v.version));
    }
    let f: Frame<T> =
        rmp_serde::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(f.body)
}

/// Writes key material (a private key, a certificate, a host id) the way both sides keep it:
/// mode 0600 from its creation, synced, then renamed into place so a crash never leaves half
/// a key.
pub fn save_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes one frame.
pub async fn write_frame<T: Serialize, W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    body: &T,
) -> Result<(), FrameIoError> {
    use tokio::io::AsyncWriteExt as _;
    w.write_all(&encode(body)?).await?;
    Ok(())
}

/// Reads one frame; None when the stream ended cleanly between frames. The length is checked
/// before the body is read, so an oversized frame costs nothing.
pub async fn read_frame<T: DeserializeOwned, R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<T>, FrameIoError> {
    use tokio::io::AsyncReadExt as _;
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Malformed("the stream ended inside a length prefix".into()).into())
            };
        }
        got += n;
    }
    let len = check_len(prefix)?;
    let mut body = std::vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(decode(&body)?))
}

/// A sensor's numbered record streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Alerts,
    Actions,
}

impl Stream {
    pub const ALL: [Stream; 2] = [Stream::Alerts, Stream::Actions];

    pub fn name(self) -> &'static str {
        match self {
            Self::Alerts => "alerts",
            Self::Actions => "actions",
        }
    }
}

/// What a sensor says about itself at the start of a connection and now and then after.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    pub hostname: String,
    pub sensor_version: String,
    pub policy_version: u64,
    pub rules_loaded: u64,
    /// The version of a pushed rule set in force; empty for the installed or shipped rules.
    #[serde(default)]
    pub rules_version: String,
    pub isolated: bool,
    /// Events lost to a full ring buffer, all kinds.
    pub dropped: u64,
    /// Graph deltas dropped (oldest first) while the link was down and the buffer full.
    #[serde(default)]
    pub graph_dropped: u64,
    /// The host's IP addresses, to join its connections to other hosts' in the fleet graph.
    #[serde(default)]
    pub addresses: Vec<core::net::IpAddr>,
}

/// Sensor to controller, on the telemetry stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Uplink {
    Hello {
        host_id: String,
        report: HostReport,
    },
    Report(HostReport),
    /// Line `seq` (from 1) of `stream`: a JSON document in the schema the README documents.
    Record {
        stream: Stream,
        seq: u64,
        body: Vec<u8>,
    },
    /// A graph delta (`wire::Delta`, rmp-serde). Numbered increasingly but not contiguously:
    /// deltas buffered while the link was down may have been dropped, oldest first.
    Graph {
        seq: u64,
        delta: Vec<u8>,
    },
}

/// Controller to sensor, on the telemetry stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Downlink {
    /// The last line the controller holds of each stream, and the last graph delta: send
    /// what comes after.
    Welcome {
        held: BTreeMap<Stream, u64>,
        graph: u64,
    },
    /// Everything up to `seq` of `stream` is stored.
    Ack { stream: Stream, seq: u64 },
    /// Graph deltas up to `seq` are stored.
    GraphAck { seq: u64 },
}

/// An order from the controller, run by the sensor's response executors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Isolate {
        reason: String,
        who: String,
    },
    /// Undo every isolation in force.
    Release {
        who: String,
    },
    /// Undo one journaled action.
    Undo {
        id: String,
        who: String,
    },
    /// Kill the process tree of the live process `pid`.
    Kill {
        pid: u32,
        reason: String,
        who: String,
    },
    /// Move a file into the sensor's vault (undo puts it back).
    Quarantine {
        path: String,
        reason: String,
        who: String,
    },
    /// Look for what an incident left on the host: answered with [`CommandReply::Verified`].
    Verify {
        indicators: Vec<Indicator>,
    },
    /// Look for files with this SHA-256 (lower-case hex) among those the host's graph knows
    /// (executed, written, created, renamed into place) and the live processes' executables:
    /// answered with [`CommandReply::Swept`].
    Sweep {
        sha256: String,
        /// More files to look at: those the controller's history says the host wrote or ran,
        /// which a restarted sensor's graph no longer holds.
        #[serde(default)]
        paths: Vec<String>,
        /// The file's size when known: only files of that size are hashed.
        #[serde(default)]
        size: Option<u64>,
    },
    /// Replace the sensor's rules with this set, whole, or keep the ones in force.
    PushRules {
        set: RuleSet,
        who: String,
    },
    /// Replace the sensor's policy (TOML), or keep the one in force.
    PushPolicy {
        text: String,
        who: String,
    },
    /// A preventive block from an incident on another host (variants from here on are
    /// newer: a sensor that does not know one refuses it, and the controller says so).
    FleetBlock {
        block: FleetBlock,
        who: String,
    },
    /// Carry out the actions of an incident that await approval.
    Approve {
        incident: String,
        who: String,
    },
    /// Drop the actions of an incident that await approval.
    Deny {
        incident: String,
        who: String,
    },
}

/// A block the controller puts on every host after an incident on one of them: journaled on
/// each host with the incident that caused it, lifted by its undo or when it expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetBlock {
    /// The incident it comes from, and the host that incident is on.
    pub incident: String,
    pub origin_host: String,
    pub reason: String,
    /// The clause of the fleet policy that let it run without a person.
    pub clause: String,
    /// When it lapses (Unix time, ns).
    pub expires_ns: u64,
    pub what: Blocked,
}

/// What a fleet block refuses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Blocked {
    /// Executing any file with this SHA-256 (lower-case hex), under any name; `size` (when
    /// known) spares a host hashing files that cannot be it.
    Hash {
        sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// Connecting to this endpoint, host-wide (as text: see [`Indicator::Endpoint`]).
    Destination {
        #[serde(with = "addr_text")]
        addr: core::net::SocketAddr,
    },
}

impl core::fmt::Display for Blocked {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Hash { sha256, .. } => write!(f, "exec of SHA-256 {sha256}"),
            Self::Destination { addr } => write!(f, "connections to {addr}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandReply {
    /// The action records it produced (JSON, the journal's schema).
    Done {
        records: Vec<Vec<u8>>,
    },
    Refused {
        reason: String,
    },
    /// The indicators still present on the host (none: the host is clean of them).
    Verified {
        present: Vec<Presence>,
    },
    /// A pushed rule set or policy is in force.
    Applied {
        detail: String,
    },
    /// The files found with a sweep's hash, and how many files were hashed.
    Swept {
        found: Vec<String>,
        hashed: u64,
    },
    /// The answer to a [`Command::Release`] when nothing is isolated: not a failure. Last, so
    /// the variants before it keep their numbers on the wire.
    NotIsolated,
}

/// The one text for a reply, as the audit log and the operator read it.
impl core::fmt::Display for CommandReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Done { records } => write!(f, "done: {} action record(s)", records.len()),
            Self::Refused { reason } => write!(f, "refused by the host: {reason}"),
            Self::Verified { present } if present.is_empty() => {
                f.write_str("verified: no indicator present")
            }
            Self::Verified { present } => {
                write!(f, "verified: {} indicator(s) still present", present.len())
            }
            Self::Applied { detail } => write!(f, "applied: {detail}"),
            Self::Swept { found, hashed } => {
                write!(f, "swept: {} found among {hashed} hashed", found.len())
            }
            Self::NotIsolated => f.write_str("the host is not isolated"),
        }
    }
}

/// Whether `s` is a SHA-256 as sweeps take it: 64 lower-case hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Something an incident left that verification looks for on the host as it is now.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Indicator {
    /// A file the incident wrote, created, renamed into place or made executable. Present
    /// while the path exists, or, for a persistence file the sensor knows from before, while
    /// it still holds lines the sensor's baseline lacks.
    File { path: String },
    /// A process of the incident, by identity (pid and start time): present while it runs.
    Process {
        pid: u32,
        start: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exe: Option<String>,
    },
    /// A remote endpoint the incident talked to: present while a connection to it is open.
    /// Written as text (`203.0.113.7:4444`): an internally tagged enum is read through
    /// serde's buffered content, which would take a binary `SocketAddr` for text and refuse it.
    Endpoint {
        #[serde(with = "addr_text")]
        addr: core::net::SocketAddr,
    },
}

/// A socket address as its text, in every format.
mod addr_text {
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(a: &core::net::SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<core::net::SocketAddr, D::Error> {
        let text = std::string::String::deserialize(d)?;
        text.parse()
            .map_err(|_| D::Error::custom(std::format!("{text:?} is not a socket address")))
    }
}

impl core::fmt::Display for Indicator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::File { path } => write!(f, "file {path}"),
            Self::Process { pid, exe, .. } => {
                write!(f, "process {pid} ({})", exe.as_deref().unwrap_or("?"))
            }
            Self::Endpoint { addr } => write!(f, "connection to {addr}"),
        }
    }
}

/// An indicator found on the host, with what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub indicator: Indicator,
    pub detail: String,
}

/// Why a pushed rule set is not the set it says it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSetError {
    #[error("{0:?} is not a plain relative rule file path")]
    NotPlain(String),
    #[error("the rule set's version {said} does not match its contents ({actual})")]
    Forged { said: String, actual: String },
}

/// A rule set as pushed: every file, by name, and a version derived from the contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    pub version: String,
    pub files: Vec<RuleFile>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFile {
    /// The file's path relative to the set's directory (`*.yml`, `/`-separated, no `..`, no
    /// hidden component).
    pub name: String,
    pub text: String,
}

impl RuleSet {
    /// The set of `files`, sorted by name; its version is the first 16 hex digits of the
    /// SHA-256 over names and texts, so the same rules have the same version everywhere.
    pub fn new(mut files: Vec<RuleFile>) -> Self {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            version: Self::digest(&files),
            files,
        }
    }

    /// The version of `files` in their order.
    fn digest(files: &[RuleFile]) -> String {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        for f in files {
            h.update((f.name.len() as u64).to_le_bytes());
            h.update(f.name.as_bytes());
            h.update((f.text.len() as u64).to_le_bytes());
            h.update(f.text.as_bytes());
        }
        hex(&h.finalize()[..8])
    }

    /// Whether the version matches the contents and every name is a plain relative rule file path.
    pub fn check(&self) -> Result<(), RuleSetError> {
        for f in &self.files {
            let plain = f
                .name
                .split('/')
                .all(|c| !c.is_empty() && !c.starts_with('.') && !c.contains(['\\', '\0']))
                && (f.name.ends_with(".yml") || f.name.ends_with(".yaml"));
            if !plain {
                return Err(RuleSetError::NotPlain(f.name.clone()));
            }
        }
        // A set is sorted by name when made: out of order, it is not the set it says.
        let sorted = self.files.is_sorted_by(|a, b| a.name <= b.name);
        let version = Self::digest(&self.files);
        if !sorted || version != self.version {
            return Err(RuleSetError::Forged {
                said: self.version.clone(),
                actual: version,
            });
        }
        Ok(())
    }
}

/// The SHA-256 of a certificate's DER, in lower-case hex: what an enrollment token pins and
/// what the controller knows a host's certificate by. One function, so both sides agree.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    hex(&Sha256::digest(der))
}

/// Bytes in lower-case hex: the one encoder of hashes, fingerprints and random ids.
pub fn hex(bytes: &[u8]) -> String {
    use core::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An enrollment token as the operator hands it to a sensor:
/// `vigil1.<id>.<secret>.<CA SHA-256>`, all hex. The controller keeps the id, the secret's
/// hash and the expiry; the fingerprint lets the sensor pin the controller's CA from its first
/// connection on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollToken {
    pub id: String,
    pub secret: String,
    pub ca_fingerprint: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("an enrollment token has four dot-separated parts starting with `vigil1.`")]
    Shape,
    #[error("the token's {0} is not hex of the right length")]
    Part(&'static str),
}

const TOKEN_PREFIX: &str = "vigil1";

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl EnrollToken {
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        let [TOKEN_PREFIX, id, secret, fp] = parts[..] else {
            return Err(TokenError::Shape);
        };
        if !is_hex(id, 16) {
            return Err(TokenError::Part("id"));
        }
        if !is_hex(secret, 48) {
            return Err(TokenError::Part("secret"));
        }
        if !is_hex(fp, 64) {
            return Err(TokenError::Part("CA fingerprint"));
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }
}

impl core::fmt::Display for EnrollToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.id, self.secret, self.ca_fingerprint
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub token_id: String,
    pub secret: String,
    pub hostname: String,
    /// A PKCS#10 certificate signing request (DER) for the key the sensor keeps.
    pub csr_der: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollReply {
    Enrolled {
        host_id: String,
        cert_pem: String,
        ca_pem: String,
    },
    Refused {
        reason: String,
    },
}

/// What the controller's I/O layer must do after a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep a line: it is the next of its stream.
    Store {
        stream: Stream,
        seq: u64,
        body: Vec<u8>,
    },
    /// Apply a graph delta.
    Graph {
        seq: u64,
        delta: Vec<u8>,
    },
    /// The host's report changed.
    Report(HostReport),
    Send(Downlink),
    /// End this stream with the reason (logged); the rest of the server carries on.
    Close(Violation),
}

/// How a sensor broke the telemetry protocol: the stream ends, the server carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("stream already closed")]
    AlreadyClosed,
    #[error("hello names host {said} but the certificate was issued to {certified}")]
    WrongHost { said: String, certified: String },
    #[error("a frame before the hello")]
    BeforeHello,
    #[error("a second hello")]
    SecondHello,
    #[error("{} line {seq} arrived where {expected} was due", .stream.name())]
    OutOfOrder {
        stream: Stream,
        seq: u64,
        expected: u64,
    },
}

/// The controller's side of one telemetry stream, as a state machine: a hello naming the
/// host the certificate was issued to, then records in sequence.
#[derive(Debug)]
pub struct ServerSession {
    host_id: String,
    state: SessionState,
}

#[derive(Debug, PartialEq, Eq)]
enum SessionState {
    AwaitHello,
    Streaming {
        held: BTreeMap<Stream, u64>,
        graph: u64,
    },
    Closed,
}

impl ServerSession {
    /// A session for the host whose certificate the connection presented.
    pub fn new(host_id: String) -> Self {
        Self {
            host_id,
            state: SessionState::AwaitHello,
        }
    }

    /// Feeds one frame; `held` gives what the store holds of each stream for this host, and
    /// its last graph delta (asked once, at the hello).
    pub fn on_frame(
        &mut self,
        frame: Uplink,
        held: impl FnOnce() -> (BTreeMap<Stream, u64>, u64),
    ) -> Vec<Step> {
        let close = |state: &mut SessionState, why: Violation| {
            *state = SessionState::Closed;
            std::vec![Step::Close(why)]
        };
        match (&mut self.state, frame) {
            (SessionState::Closed, _) => std::vec![Step::Close(Violation::AlreadyClosed)],
            (SessionState::AwaitHello, Uplink::Hello { host_id, report }) => {
                if host_id != self.host_id {
                    return close(
                        &mut self.state,
                        Violation::WrongHost {
                            said: host_id,
                            certified: self.host_id.clone(),
                        },
                    );
                }
                let (held, graph) = held();
                self.state = SessionState::Streaming {
                    held: held.clone(),
                    graph,
                };
                std::vec![
                    Step::Report(report),
                    Step::Send(Downlink::Welcome { held, graph })
                ]
            }
            (SessionState::AwaitHello, _) => close(&mut self.state, Violation::BeforeHello),
            (SessionState::Streaming { .. }, Uplink::Hello { .. }) => {
                close(&mut self.state, Violation::SecondHello)
            }
            (SessionState::Streaming { .. }, Uplink::Report(r)) => std::vec![Step::Report(r)],
            (SessionState::Streaming { graph, .. }, Uplink::Graph { seq, delta }) => {
                if seq <= *graph {
                    std::vec![Step::Send(Downlink::GraphAck { seq: *graph })]
                } else {
                    *graph = seq;
                    std::vec![
                        Step::Graph { seq, delta },
                        Step::Send(Downlink::GraphAck { seq }),
                    ]
                }
            }
            (SessionState::Streaming { held, .. }, Uplink::Record { stream, seq, body }) => {
                let last = held.entry(stream).or_insert(0);
                if seq <= *last {
                    // Already held (a resend after a lost ack): ack again, keep nothing.
                    std::vec![Step::Send(Downlink::Ack { stream, seq: *last })]
                } else if seq == *last + 1 {
                    *last = seq;
                    std::vec![
                        Step::Store { stream, seq, body },
                        Step::Send(Downlink::Ack { stream, seq }),
                    ]
                } else {
                    let expected = *last + 1;
                    close(
                        &mut self.state,
                        Violation::OutOfOrder {
                            stream,
                            seq,
                            expected,
                        },
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endpoint_indicator_survives_the_wire() {
        let i = Indicator::Endpoint {
            addr: "203.0.113.7:4444".parse().expect("addr"),
        };
        let bytes = rmp_serde::to_vec_named(&i).expect("encode");
        assert_eq!(
            rmp_serde::from_slice::<Indicator>(&bytes).expect("decode"),
            i
        );
        let compact = rmp_serde::to_vec(&vec![i.clone()]).expect("encode");
        assert_eq!(
            rmp_serde::from_slice::<Vec<Indicator>>(&compact).expect("decode"),
            vec![i.clone()]
        );
    }

    use std::vec;

    use super::*;

    fn file(name: &str, text: &str) -> RuleFile {
        RuleFile {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn a_rule_set_is_versioned_by_its_contents_whatever_the_order() {
        let a = RuleSet::new(vec![file("a.yml", "x"), file("b/c.yml", "y")]);
        let b = RuleSet::new(vec![file("b/c.yml", "y"), file("a.yml", "x")]);
        assert_eq!(a, b);
        assert_eq!(a.check(), Ok(()));
        let c = RuleSet::new(vec![file("a.yml", "x"), file("b/c.yml", "z")]);
        assert_ne!(a.version, c.version);
        // Name and text boundaries count: "ab"+"c" is not "a"+"bc".
        let d = RuleSet::new(vec![file("a.yml", "xy")]);
        let e = RuleSet::new(vec![file("a.ymlx", "y")]);
        assert_ne!(d.version, e.version);
    }

    #[test]
    fn a_rule_set_with_a_forged_version_or_a_path_outside_its_directory_is_refused() {
        let mut forged = RuleSet::new(vec![file("a.yml", "x")]);
        forged.files[0].text = "changed".into();
        assert!(matches!(forged.check(), Err(RuleSetError::Forged { .. })));
        for bad in [
            "../a.yml",
            "/etc/a.yml",
            ".hidden/a.yml",
            "a.txt",
            "a//b.yml",
            "",
        ] {
            let set = RuleSet::new(vec![file(bad, "x")]);
            let err = set.check().unwrap_err();
            assert_eq!(err, RuleSetError::NotPlain(bad.into()), "{bad}");
        }
    }

    fn hello(id: &str) -> Uplink {
        Uplink::Hello {
            host_id: id.to_owned(),
            report: HostReport::default(),
        }
    }

    fn none() -> (BTreeMap<Stream, u64>, u64) {
        (BTreeMap::new(), 0)
    }

    fn rec(seq: u64) -> Uplink {
        Uplink::Record {
            stream: Stream::Alerts,
            seq,
            body: vec![b'{', b'}'],
        }
    }

    #[test]
    fn tokens_parse_and_bad_ones_are_named() {
        let t = EnrollToken {
            id: "0123456789abcdef".into(),
            secret: "ab".repeat(24),
            ca_fingerprint: "cd".repeat(32),
        };
        assert_eq!(EnrollToken::parse(&t.to_string()), Ok(t.clone()));
        assert_eq!(EnrollToken::parse("hello"), Err(TokenError::Shape));
        let s = t.to_string();
        assert_eq!(
            EnrollToken::parse(&s.replacen("vigil1", "vigil2", 1)),
            Err(TokenError::Shape)
        );
        let short = std::format!("vigil1.{}.{}.{}", t.id, &t.secret[2..], t.ca_fingerprint);
        assert_eq!(EnrollToken::parse(&short), Err(TokenError::Part("secret")));
    }

    #[test]
    fn frames_round_trip_and_bad_ones_are_named() {
        let bytes = encode(&rec(7)).expect("encode");
        let len = check_len(bytes[..4].try_into().expect("prefix")).expect("len");
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode::<Uplink>(&bytes[4..]), Ok(rec(7)));
        assert_eq!(
            check_len(u32::MAX.to_be_bytes()),
            Err(FrameError::TooLarge(u32::MAX as usize))
        );
        assert!(matches!(
            decode::<Uplink>(&bytes[4..bytes.len() - 3]),
            Err(FrameError::Malformed(_))
        ));
        let future = rmp_serde::to_vec_named(&Frame {
            version: PROTOCOL_VERSION + 1,
            body: rec(1),
        })
        .expect("encode");
        assert_eq!(
            decode::<Uplink>(&future),
            Err(FrameError::Version(PROTOCOL_VERSION + 1))
        );
        assert!(matches!(
            decode::<Uplink>(b"\xc1garbage"),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_session_wants_the_hello_of_its_certificate_first() {
        let mut s = ServerSession::new("h1".into());
        assert!(matches!(s.on_frame(rec(1), none)[..], [Step::Close(_)]));
        let mut s = ServerSession::new("h1".into());
        let steps = s.on_frame(hello("h2"), none);
        assert!(
            matches!(&steps[..], [Step::Close(Violation::WrongHost { said, .. })] if said == "h2")
        );
        let mut s = ServerSession::new("h1".into());
        let steps = s.on_frame(hello("h1"), || (BTreeMap::from([(Stream::Alerts, 4)]), 9));
        assert_eq!(
            steps[1],
            Step::Send(Downlink::Welcome {
                held: BTreeMap::from([(Stream::Alerts, 4)]),
                graph: 9
            })
        );
        assert!(matches!(
            s.on_frame(hello("h1"), none)[..],
            [Step::Close(_)]
        ));
    }

    #[test]
    fn graph_deltas_may_skip_but_never_go_back() {
        let mut s = ServerSession::new("h1".into());
        s.on_frame(hello("h1"), || (BTreeMap::new(), 10));
        let g = |seq| Uplink::Graph {
            seq,
            delta: vec![1],
        };
        assert_eq!(
            s.on_frame(g(10), none),
            vec![Step::Send(Downlink::GraphAck { seq: 10 })]
        );
        let steps = s.on_frame(g(15), none);
        assert!(
            matches!(steps[0], Step::Graph { seq: 15, .. }),
            "a gap is fine"
        );
        assert!(
            matches!(s.on_frame(g(12), none)[..], [Step::Send(_)]),
            "an old one is not kept"
        );
    }

    #[test]
    fn records_are_kept_once_and_in_order() {
        let mut s = ServerSession::new("h1".into());
        s.on_frame(hello("h1"), || (BTreeMap::from([(Stream::Alerts, 2)]), 0));
        // A resend of what is held: acked, not stored.
        assert_eq!(
            s.on_frame(rec(2), none),
            vec![Step::Send(Downlink::Ack {
                stream: Stream::Alerts,
                seq: 2
            })]
        );
        let steps = s.on_frame(rec(3), none);
        assert!(matches!(steps[0], Step::Store { seq: 3, .. }));
        // A gap closes the stream: the sensor reconnects and resends from the welcome.
        assert!(matches!(s.on_frame(rec(5), none)[..], [Step::Close(_)]));
        assert!(matches!(s.on_frame(rec(4), none)[..], [Step::Close(_)]));
    }
}
