//! `vigil-controller`: the fleet server (`serve`) and the operator commands, which talk to
//! the running server over `STATE/control.sock`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use controller::{
    ca::Authority,
    net::{
        api,
        ops::{self, OpReply, OpRequest, OpResponse},
        server::{self, Shared},
    },
    services::reconcile,
    store::{Backend, Postgres, Sqlite, Store},
};
use sensor_common::protocol::Stream;

const DEFAULT_STATE: &str = "/var/lib/vigil-controller";

#[derive(Parser)]
#[command(name = "vigil-controller", version, about = "Vigil fleet controller")]
struct Cli {
    /// The server's state directory (its store, CA, operator socket).
    #[arg(long, global = true, default_value = DEFAULT_STATE)]
    state: PathBuf,
    /// Drive a controller elsewhere through its API (`https://HOST:PORT`) instead of the
    /// local socket; needs `--token`.
    #[arg(long, global = true, requires = "token", env = "VIGIL_CONTROLLER_URL")]
    controller_url: Option<String>,
    /// An API token (`vigil-controller operator token NAME`).
    #[arg(long, global = true, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA that signed the console's certificate (the controller's `ca.pem`).
    #[arg(long, global = true, env = "VIGIL_CA")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server on its embedded store in the state directory.
    Serve {
        /// UDP address to listen on (QUIC).
        #[arg(long, default_value = "0.0.0.0:4433")]
        listen: SocketAddr,
        /// Also serve the console and its API over HTTPS on this TCP address.
        #[arg(long)]
        console: Option<SocketAddr>,
        /// The console's certificate chain (PEM); by default the controller's CA issues one.
        #[arg(long, requires = "console_key")]
        console_cert: Option<PathBuf>,
        #[arg(long, requires = "console_cert")]
        console_key: Option<PathBuf>,
        /// Keep the graph history this many days (by default, all of it); older
        /// partitions are dropped, oldest first, and counted.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=36_500))]
        history_days: Option<u64>,
        /// Keep at most about this many edges of graph history (to within one partition
        /// of a million).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        history_max_edges: Option<u64>,
        /// Serve Prometheus metrics at http://ADDR/metrics: a PORT alone listens on
        /// loopback, IP:PORT where named. Off by default.
        #[arg(long, value_name = "ADDR", value_parser = |s: &str| sensor_userspace::host::listen::loopback_unless_named(s).map_err(|e| e.to_string()))]
        metrics: Option<SocketAddr>,
        /// Where the fleet's state is kept: `embedded` (the default: one SQLite file in the
        /// state directory), or a PostgreSQL database, postgres://USER@HOST:PORT/DB, which
        /// several controllers can share (the CA and the enrollment tokens with it).
        #[arg(long, value_name = "STORE", default_value = "embedded")]
        store: controller::store::Backend,
    },
    /// The people who operate the fleet through the console and the API.
    Operator {
        #[command(subcommand)]
        action: OperatorCmd,
    },
    /// Issue a one-time enrollment token (printed as the last line).
    EnrollToken {
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Enrolled hosts: id, hostname, last seen, versions, isolation, drops.
    Hosts {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a host (by id or hostname): its certificate gets nothing from now on.
    Revoke { host: String },
    /// Isolate a host's network now (its sensor journals the action).
    Contain {
        host: String,
        #[arg(long, default_value = "contained by the controller's operator")]
        reason: String,
    },
    /// End a host's isolation.
    Release {
        host: String,
        /// Release without verifying the host first; recorded with who asked.
        #[arg(long)]
        force: bool,
    },
    /// Kill a process tree on a host (its sensor journals the action; a kill has no undo).
    Kill {
        host: String,
        pid: u32,
        #[arg(long, default_value = "killed by the controller's operator")]
        reason: String,
    },
    /// Move a file on a host into its sensor's vault (undo puts it back).
    Quarantine {
        host: String,
        path: String,
        #[arg(long, default_value = "quarantined by the controller's operator")]
        reason: String,
    },
    /// Reverse one journaled action on a host.
    Undo { host: String, action: String },
    /// The fleet's rules.
    Rules {
        #[command(subcommand)]
        action: RulesCmd,
    },
    /// The fleet's policy.
    Policy {
        #[command(subcommand)]
        action: PolicyCmd,
    },
    /// Alerts the hosts sent, as JSON lines.
    Alerts {
        #[arg(long)]
        host: Option<String>,
    },
    /// Action records the hosts sent, as JSON lines.
    Actions {
        #[arg(long)]
        host: Option<String>,
    },
    /// Incidents across the fleet, from the hosts' alerts: open or closed, with the
    /// indicators a release looks for.
    Incidents {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Search the fleet's graphs and their history, e.g.
    /// `processes where exe endswith "/nc" and ancestor.exe endswith "/nginx"`,
    /// `writes where path = "/etc/ld.so.preload"`, `connections where port = 4444`.
    /// Hits print as JSON lines, then a summary.
    ///
    /// With `--name` and `--every`, the hunt is kept and run on that schedule instead: each
    /// run's new hits open one incident across the hosts they are on, and `--isolate` also
    /// isolates each of those hosts (at once, or when it reconnects).
    Hunt {
        query: String,
        #[arg(long, requires = "every")]
        name: Option<String>,
        /// Seconds between runs of a standing hunt.
        #[arg(long, requires = "name")]
        every: Option<u64>,
        #[arg(long, requires = "name")]
        isolate: bool,
    },
    /// Ask every host's sensor for files with this SHA-256 among those it knows (executed,
    /// written, created, renamed, and running executables); shows hosts answering, then the
    /// answers. Hosts offline now answer when they reconnect: `sweep --results ID`.
    Sweep {
        /// The SHA-256 to look for.
        #[arg(required_unless_present = "results")]
        sha256: Option<String>,
        /// Show the answers so far of sweep ID instead.
        #[arg(long, conflicts_with = "sha256")]
        results: Option<String>,
    },
    /// The standing hunts: name, query, interval, response, runs; `--remove NAME` drops one.
    Hunts {
        #[arg(long)]
        remove: Option<String>,
    },
    /// Every operator command and its outcome, and every step the fleet took on its own.
    Audit,
    /// The fleet policy: what the controller does across the fleet on its own after an
    /// incident (retro-hunts, fleet blocks, isolating matches), approval deadlines, and the
    /// escalation targets (webhook, Slack, PagerDuty).
    FleetPolicy {
        #[command(subcommand)]
        action: FleetPolicyCmd,
    },
    /// Carry out, on HOST, the actions of INCIDENT that await approval.
    Approve { host: String, incident: String },
    /// Drop, on HOST, the actions of INCIDENT that await approval.
    Deny { host: String, incident: String },
    /// Deliveries, failed attempts and dead letters per escalation target.
    Notifications,
    /// The fleet blocks in force (payload hashes, endpoints), with each host's answer.
    Blocks {
        /// One JSON line per block.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OperatorCmd {
    /// Make an operator; their one-time password is the last line printed.
    Add {
        name: String,
        #[arg(long, value_parser = ["viewer", "responder", "admin"])]
        role: String,
    },
    /// Remove an operator: their sessions end and their API tokens are revoked.
    Remove { name: String },
    /// The operators and their API tokens.
    List,
    /// Issue an API token for a script acting as NAME (the last line printed).
    Token { name: String },
    /// Revoke an API token by its id.
    RevokeToken { id: String },
}

#[derive(Subcommand)]
enum FleetPolicyCmd {
    /// Check FILE whole, without a server.
    Check { file: PathBuf },
    /// Check FILE whole and make it the fleet's.
    Set { file: PathBuf },
    /// The fleet policy in force.
    Show,
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Validate every rule file under DIR (each loads, every test case passes), make the set
    /// the fleet's, and push it to every connected host; hosts offline get it when they
    /// reconnect. An invalid set is refused with each problem and nothing is sent.
    Push { dir: PathBuf },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate the policy FILE, make it the fleet's, and push it like `rules push`.
    Push { file: PathBuf },
}

/// Shows a long request's progress on stderr: one line updated in place on a terminal.
fn show_progress(p: &ops::Progress) {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K{p}");
    } else {
        eprintln!("{p}");
    }
}

fn end_progress() {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
}

/// Where the operator commands go: the local socket, or a controller's API.
enum Target {
    Socket(PathBuf),
    Api {
        url: String,
        token: String,
        ca: Option<PathBuf>,
    },
}

fn ask(target: &Target, req: &OpRequest) -> Result<OpReply> {
    ask_with_progress(target, req, &mut |_| {})
}

/// Makes `req` through the API's `/api/v1/op` (one answer, no progress lines).
fn ask_remote(url: &str, token: &str, ca: Option<&Path>, req: &OpRequest) -> Result<OpReply> {
    let url = format!("{}/api/v1/op", url.trim_end_matches('/'));
    let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
    if let Some(ca) = ca {
        let pem =
            std::fs::read(ca).with_context(|| format!("cannot read the CA {}", ca.display()))?;
        let cert = ureq::tls::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&[cert.to_owned()]));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .build()
        .into();
    let mut resp = agent
        .post(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/json")
        .send(serde_json::to_vec(req)?)
        .with_context(|| format!("no controller answers at {url}"))?;
    let status = resp.status();
    let text = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("{url} answered {status} without a readable body"))?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        let why = body["error"].as_str().unwrap_or("no reason given");
        bail!("{url} refused the request ({status}): {why}");
    }
    serde_json::from_value(body).with_context(|| format!("{url} answered with an unknown reply"))
}

fn ask_with_progress(
    target: &Target,
    req: &OpRequest,
    progress: &mut dyn FnMut(&ops::Progress),
) -> Result<OpReply> {
    let socket = match target {
        Target::Socket(socket) => socket,
        Target::Api { url, token, ca } => return ask_remote(url, token, ca.as_deref(), req),
    };
    let state = socket.parent().unwrap_or(Path::new("."));
    let resp = ops::request(socket, req, progress).with_context(|| {
        format!(
            "no controller answers on {}; is `vigil-controller serve --state {}` running?",
            socket.display(),
            state.display()
        )
    })?;
    match resp {
        OpResponse::Ok(reply) => Ok(reply),
        OpResponse::Error { message } => bail!("{message}"),
        OpResponse::Progress(_) => bail!("the controller answered with a progress line"),
    }
}

/// Where the console listens, and with what certificate.
struct ConsoleOpts {
    listen: SocketAddr,
    cert_key: Option<(PathBuf, PathBuf)>,
}

async fn serve(
    state: &Path,
    listen: SocketAddr,
    console: Option<ConsoleOpts>,
    keep: controller::store::Retention,
    metrics: Option<SocketAddr>,
    backend: Backend,
) -> Result<()> {
    std::fs::create_dir_all(state)
        .with_context(|| format!("cannot create the state directory {}", state.display()))?;
    std::fs::set_permissions(state, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let (store, ca) = open_store(state, &backend)?;
    let (shared, host_events) = Shared::new(Arc::new(Mutex::new(store)), ca);
    let endpoint = server::listen(&shared, listen)?;
    let listener = ops::bind(&state.join("control.sock"))
        .with_context(|| format!("cannot bind {}", state.join("control.sock").display()))?;
    tracing::info!(
        listen = %endpoint.local_addr()?,
        ca = %shared.ca.fingerprint(),
        state = %state.display(),
        "vigil-controller serving"
    );
    tokio::spawn(ops::serve(listener, shared.clone()));
    tokio::spawn(controller::services::retention::run(
        shared.fleet.store.clone(),
        keep,
    ));
    if let Some(c) = console {
        let pair = c.cert_key.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let tls = api::tls_config(&shared, c.listen, pair)?;
        let l = api::bind(c.listen).await?;
        tracing::info!(console = %format!("https://{}/", l.local_addr()?), "console serving");
        tokio::spawn(api::serve(l, tls, shared.clone()));
    }
    if let Some(addr) = metrics {
        let l = controller::net::metrics::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(%addr, "serving /metrics");
        tokio::spawn(controller::net::metrics::serve(l, shared.clone()));
    }
    tokio::spawn(reconcile::run(shared.fleet.clone(), host_events));
    tokio::spawn(shared.hosts.clone().serve_routed());
    tokio::spawn(controller::services::schedule::run(shared.fleet.clone()));
    tokio::spawn(controller::services::autonomy::run(shared.fleet.clone()));
    let server = tokio::spawn(server::serve(endpoint.clone(), shared));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = server => {}
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"controller stopping");
    endpoint.wait_idle().await;
    let _ = std::fs::remove_file(state.join("control.sock"));
    tracing::info!("vigil-controller stopped");
    Ok(())
}

/// The store and the CA. With PostgreSQL the CA is the database's, so that every replica
/// enrolls and serves with the same one; its certificate is also written to the state
/// directory.
fn open_store(state: &Path, backend: &Backend) -> Result<(Box<dyn Store>, Authority)> {
    match backend {
        Backend::Embedded => {
            let db = state.join("controller.db");
            let store: Box<dyn Store> = Box::new(Sqlite::open(&db)?);
            Ok((store, Authority::open(state)?))
        }
        Backend::Postgres(url) => {
            let mut pg = Postgres::open(url)
                .with_context(|| format!("cannot open the PostgreSQL store {url}"))?;
            let (cert, key) = match pg.authority()? {
                Some(kept) => kept,
                None => {
                    let (cert, key) = Authority::generate()?;
                    pg.keep_authority(&cert, &key)?
                }
            };
            let ca = Authority::from_pem(&cert, &key)?;
            sensor_common::protocol::save_private(&state.join("ca.pem"), &cert)
                .with_context(|| format!("cannot write {}", state.join("ca.pem").display()))?;
            Ok((Box::new(pg), ca))
        }
    }
}

fn ns_ago(ns: u64) -> String {
    format!(
        "{}s ago",
        controller::now_ns().saturating_sub(ns) / 1_000_000_000
    )
}

/// One JSON line per item.
fn print_lines<T: serde::Serialize>(items: &[T]) -> Result<()> {
    for item in items {
        println!("{}", serde_json::to_string(item)?);
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let state = cli.state;
    let (req, json) = match cli.command {
        Cmd::Serve {
            listen,
            console,
            console_cert,
            console_key,
            history_days,
            history_max_edges,
            metrics,
            store,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let console = console.map(|listen| ConsoleOpts {
                listen,
                cert_key: console_cert.zip(console_key),
            });
            let keep = controller::store::Retention {
                max_age_ns: history_days.map(|d| d.saturating_mul(86_400 * 1_000_000_000)),
                max_edges: history_max_edges,
            };
            return rt.block_on(serve(&state, listen, console, keep, metrics, store));
        }
        Cmd::FleetPolicy {
            action: FleetPolicyCmd::Check { file },
        } => return check_fleet_policy(&file),
        other => request_of(other)?,
    };
    let target = match (cli.controller_url, cli.token) {
        (Some(url), Some(token)) => Target::Api {
            url,
            token,
            ca: cli.ca,
        },
        (Some(_), None) => bail!("--controller-url needs --token (or VIGIL_TOKEN)"),
        (None, _) => Target::Socket(state.join("control.sock")),
    };
    let long = matches!(req, OpRequest::Hunt { .. } | OpRequest::Sweep { .. });
    let reply = if long {
        let r = ask_with_progress(&target, &req, &mut show_progress);
        end_progress();
        r?
    } else {
        ask(&target, &req)?
    };
    print_reply(reply, json)
}

/// Checks a fleet policy file whole, without a server.
fn check_fleet_policy(file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the fleet policy {}", file.display()))?;
    let p = controller::services::fleet_policy::FleetPolicy::parse(&text)
        .with_context(|| format!("{} is refused", file.display()))?;
    println!(
        "{}: fleet policy version {} is valid ({} escalation target(s))",
        file.display(),
        p.version,
        p.escalate.len()
    );
    Ok(())
}

/// The request an operator command makes, and whether its answer is wanted as JSON.
fn request_of(cmd: Cmd) -> Result<(OpRequest, bool)> {
    Ok(match cmd {
        Cmd::Serve { .. } => bail!("`serve` runs the server; it asks nothing of one"),
        Cmd::EnrollToken { ttl_secs } => (OpRequest::EnrollToken { ttl_secs }, false),
        Cmd::Hosts { json } => (OpRequest::Hosts, json),
        Cmd::Revoke { host } => (OpRequest::Revoke { host }, false),
        Cmd::Contain { host, reason } => (OpRequest::Contain { host, reason }, false),
        Cmd::Release { host, force } => (OpRequest::Release { host, force }, false),
        Cmd::Kill { host, pid, reason } => (OpRequest::Kill { host, pid, reason }, false),
        Cmd::Quarantine { host, path, reason } => {
            (OpRequest::Quarantine { host, path, reason }, false)
        }
        Cmd::Undo { host, action } => (OpRequest::Undo { host, action }, false),
        Cmd::Rules {
            action: RulesCmd::Push { dir },
        } => {
            let set = sensor_userspace::detect::rules::read_set(&dir)
                .with_context(|| format!("cannot read the rule directory {}", dir.display()))?;
            (OpRequest::PushRules { set }, false)
        }
        Cmd::Policy {
            action: PolicyCmd::Push { file },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the policy {}", file.display()))?;
            (OpRequest::PushPolicy { text }, false)
        }
        Cmd::Alerts { host } => (
            OpRequest::Records {
                host,
                stream: Stream::Alerts,
            },
            true,
        ),
        Cmd::Actions { host } => (
            OpRequest::Records {
                host,
                stream: Stream::Actions,
            },
            true,
        ),
        Cmd::Incidents { host, json } => (OpRequest::Incidents { host }, json),
        Cmd::Hunt {
            query,
            name: Some(name),
            every: Some(every_secs),
            isolate,
        } => {
            let respond = if isolate {
                controller::store::Respond::Isolate
            } else {
                controller::store::Respond::Record
            };
            let add = OpRequest::HuntAdd {
                name,
                query,
                every_secs,
                respond,
            };
            (add, true)
        }
        Cmd::Hunt { query, .. } => (OpRequest::Hunt { query }, true),
        Cmd::Sweep {
            results: Some(id), ..
        } => (OpRequest::SweepResults { id }, false),
        Cmd::Sweep {
            sha256: Some(sha256),
            results: None,
        } => (OpRequest::Sweep { sha256 }, false),
        Cmd::Sweep { .. } => bail!("give a SHA-256, or --results ID"),
        Cmd::Hunts { remove: Some(name) } => (OpRequest::HuntRemove { name }, false),
        Cmd::Hunts { remove: None } => (OpRequest::Hunts, true),
        Cmd::Audit => (OpRequest::Audit, true),
        Cmd::FleetPolicy {
            action: FleetPolicyCmd::Check { .. },
        } => bail!("`fleet-policy check` needs no server"),
        Cmd::FleetPolicy {
            action: FleetPolicyCmd::Set { file },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the fleet policy {}", file.display()))?;
            (OpRequest::FleetPolicy { text: Some(text) }, false)
        }
        Cmd::FleetPolicy {
            action: FleetPolicyCmd::Show,
        } => (OpRequest::FleetPolicy { text: None }, false),
        Cmd::Approve { host, incident } => (OpRequest::Approve { host, incident }, false),
        Cmd::Deny { host, incident } => (OpRequest::Deny { host, incident }, false),
        Cmd::Notifications => (OpRequest::Notifications, false),
        Cmd::Blocks { json } => (OpRequest::FleetBlocks, json),
        Cmd::Operator { action } => match action {
            OperatorCmd::Add { name, role } => {
                let role = role.parse().map_err(anyhow::Error::msg)?;
                (OpRequest::OperatorAdd { name, role }, false)
            }
            OperatorCmd::Remove { name } => (OpRequest::OperatorRemove { name }, false),
            OperatorCmd::List => (OpRequest::Operators, false),
            OperatorCmd::Token { name } => (OpRequest::OperatorToken { name }, false),
            OperatorCmd::RevokeToken { id } => (OpRequest::TokenRevoke { id }, false),
        },
    })
}

/// What an operator reads of a reply: tables and sentences, or JSON when asked (lists as
/// one JSON line per item).
fn print_reply(reply: OpReply, json: bool) -> Result<()> {
    match reply {
        OpReply::Hosts { hosts } if json => println!("{}", serde_json::to_string_pretty(&hosts)?),
        OpReply::Hosts { hosts } => print_hosts(&hosts),
        OpReply::Token { token, expires_ns } => {
            let secs = expires_ns.saturating_sub(controller::now_ns()) / 1_000_000_000;
            println!("one-time enrollment token, valid {secs} s:");
            println!("{token}");
        }
        OpReply::Revoked { hosts } => println!("revoked: {}", serde_json::to_string(&hosts)?),
        OpReply::Actions { records } => print_lines(&records)?,
        OpReply::Applied { detail } => println!("{detail}"),
        OpReply::Verified { present } => print_lines(&present)?,
        OpReply::Swept { found, hashed } => {
            for f in &found {
                println!("{f}");
            }
            eprintln!("{} found among {hashed} files hashed", found.len());
        }
        OpReply::Released(r) => println!("{}", serde_json::to_string_pretty(&r)?),
        OpReply::RulesPushed {
            version,
            rules,
            hosts,
        } => {
            print_answers(&hosts);
            println!("rule set {version} ({rules} rules) is the fleet's");
        }
        OpReply::PolicyPushed { version, hosts } => {
            print_answers(&hosts);
            println!("policy version {version} is the fleet's");
        }
        OpReply::Incidents { incidents } if json => print_lines(&incidents)?,
        OpReply::Incidents { incidents } => print_incidents(&incidents),
        OpReply::Records { records } => print_lines(&records)?,
        OpReply::Hunt(o) => {
            print_lines(&o.hits)?;
            eprintln!(
                "{} hits; {} edges searched across {} hosts in {} ms",
                o.hits.len(),
                o.edges_searched,
                o.hosts,
                o.millis
            );
        }
        OpReply::Sweep(r) => print_sweep(&r),
        OpReply::Standing(h) => println!("{}", serde_json::to_string(&h)?),
        OpReply::StandingRemoved { name } => println!("standing hunt {name} removed"),
        OpReply::Hunts { hunts } => print_lines(&hunts)?,
        OpReply::Audit { entries } => print_lines(&entries)?,
        OpReply::FleetPolicy { policy, set } => {
            let origin = if set { "set by an operator" } else { "shipped" };
            println!("# fleet policy version {} ({origin})", policy.version);
            println!(
                "{}",
                toml::to_string_pretty(&policy).context("cannot show the fleet policy")?
            );
        }
        OpReply::Notifications { targets } => {
            for (name, c) in &targets {
                println!(
                    "{name}: {} delivered, {} failed attempt(s), {} dead letter(s)",
                    c.delivered, c.failed, c.dead_letters
                );
            }
        }
        OpReply::OperatorAdded { operator, password } => {
            println!(
                "operator {} ({}) made; their one-time password:",
                operator.name, operator.role
            );
            println!("{password}");
        }
        OpReply::OperatorRemoved { name } => println!("operator {name} removed"),
        OpReply::Operators { operators, tokens } => {
            for o in &operators {
                let theirs: Vec<String> = tokens
                    .iter()
                    .filter(|t| t.operator == o.name)
                    .map(|t| format!("{}{}", t.id, if t.revoked { " (revoked)" } else { "" }))
                    .collect();
                println!(
                    "{:<24} {:<10} tokens: {}",
                    o.name,
                    o.role.name(),
                    if theirs.is_empty() {
                        "none".to_owned()
                    } else {
                        theirs.join(", ")
                    }
                );
            }
        }
        OpReply::TokenIssued { token, secret } => {
            println!("API token {} for {}:", token.id, token.operator);
            println!("{secret}");
        }
        OpReply::TokenRevoked { id } => println!("API token {id} revoked"),
        OpReply::FleetBlocks { blocks } if json => print_lines(&blocks)?,
        OpReply::FleetBlocks { blocks } => {
            for b in &blocks {
                println!(
                    "{} {} (incident {} on {}, until {}): {} host(s) answered",
                    b.id,
                    b.block.what,
                    b.block.incident,
                    b.block.origin_host,
                    b.block.expires_ns,
                    b.hosts.len()
                );
            }
        }
    }
    Ok(())
}

fn print_answers(hosts: &[controller::services::push::HostAnswer]) {
    for h in hosts {
        println!("{}: {}", h.host, h.outcome);
    }
}

fn print_hosts(hosts: &[ops::HostRow]) {
    println!(
        "{:<20} {:<20} {:<10} {:<12} {:<8} {:<7} {:<22} {:<8} dropped",
        "id", "hostname", "state", "last seen", "sensor", "policy", "rules", "isolated"
    );
    for row in hosts {
        let (h, r) = (&row.host, &row.host.report);
        let state = if h.revoked {
            "revoked"
        } else if row.through_replica {
            "online*"
        } else if row.connected {
            "online"
        } else {
            "offline"
        };
        let rules = if r.rules_version.is_empty() {
            r.rules_loaded.to_string()
        } else {
            format!("{} ({})", r.rules_loaded, r.rules_version)
        };
        println!(
            "{:<20} {:<20} {:<10} {:<12} {:<8} {:<7} {:<22} {:<8} {}",
            h.id,
            h.hostname,
            state,
            ns_ago(h.last_seen_ns),
            r.sensor_version,
            r.policy_version,
            rules,
            r.isolated,
            r.dropped,
        );
    }
    if hosts.iter().any(|r| r.through_replica) {
        println!("* online through another controller replica sharing the store");
    }
}

fn print_incidents(incidents: &[controller::services::incidents::FleetIncident]) {
    use controller::services::incidents::Source;
    for i in incidents {
        let status = match &i.closed {
            Some(c) => format!("closed {} ({})", ns_ago(c.closed_ns), c.how),
            None => "open".to_owned(),
        };
        let (source, counted) = match i.source {
            Source::Sensor => ("sensor", "alerts"),
            Source::Hunt => ("hunt", "hits"),
        };
        let rules: Vec<&str> = i.rules.iter().map(String::as_str).collect();
        println!(
            "{} {} ({source}) risk {}, {} {counted}, {status}: {}",
            i.host,
            i.id,
            i.risk,
            i.alerts,
            rules.join(", ")
        );
        if i.spans.len() > 1 {
            let spans: Vec<&str> = i.spans.iter().map(String::as_str).collect();
            println!("    spans hosts {}", spans.join(", "));
        }
        for ind in &i.indicators {
            println!(
                "    indicator {}",
                serde_json::to_string(ind).unwrap_or_default()
            );
        }
        for s in &i.fleet_steps {
            println!("    fleet {}: {} [{}]", s.step, s.detail, s.clause);
        }
    }
}

fn print_sweep(r: &controller::services::sweep::Report) {
    for a in &r.answers {
        match &a.error {
            Some(e) => println!("{}: could not sweep: {e}", a.host),
            None => {
                for f in &a.found {
                    println!("{}: {f}", a.host);
                }
            }
        }
    }
    eprintln!(
        "sweep {}: {} of {} hosts answered; waiting for {:?}",
        r.sweep.id,
        r.answers.len(),
        r.hosts,
        r.waiting
    );
}
