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
        ops::{self, OpRequest, OpResponse},
        server::{self, Shared},
    },
    services::reconcile,
    store::{Sqlite, Store},
};
use sensor_common::protocol::Stream;

const DEFAULT_STATE: &str = "/var/lib/vigil-controller";

#[derive(Parser)]
#[command(name = "vigil-controller", version, about = "Vigil fleet controller")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server on its embedded store in the state directory.
    Serve {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        /// UDP address to listen on (QUIC).
        #[arg(long, default_value = "0.0.0.0:4433")]
        listen: SocketAddr,
    },
    /// Issue a one-time enrollment token (printed as the last line).
    EnrollToken {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Enrolled hosts: id, hostname, last seen, versions, isolation, drops.
    Hosts {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a host (by id or hostname): its certificate gets nothing from now on.
    Revoke {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        host: String,
    },
    /// Isolate a host's network now (its sensor journals the action).
    Contain {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        host: String,
        #[arg(long, default_value = "contained by the controller's operator")]
        reason: String,
    },
    /// End a host's isolation.
    Release {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        host: String,
        /// Release without verifying the host first; recorded with who asked.
        #[arg(long)]
        force: bool,
    },
    /// Kill a process tree on a host (its sensor journals the action; a kill has no undo).
    Kill {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        host: String,
        pid: u32,
        #[arg(long, default_value = "killed by the controller's operator")]
        reason: String,
    },
    /// Move a file on a host into its sensor's vault (undo puts it back).
    Quarantine {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        host: String,
        path: String,
        #[arg(long, default_value = "quarantined by the controller's operator")]
        reason: String,
    },
    /// Reverse one journaled action on a host.
    Undo {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        host: String,
        action: String,
    },
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
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        #[arg(long)]
        host: Option<String>,
    },
    /// Action records the hosts sent, as JSON lines.
    Actions {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        #[arg(long)]
        host: Option<String>,
    },
    /// Incidents across the fleet, from the hosts' alerts: open or closed, with the
    /// indicators a release looks for.
    Incidents {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
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
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
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
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        /// The SHA-256 to look for.
        #[arg(required_unless_present = "results")]
        sha256: Option<String>,
        /// Show the answers so far of sweep ID instead.
        #[arg(long, conflicts_with = "sha256")]
        results: Option<String>,
    },
    /// The standing hunts: name, query, interval, response, runs; `--remove NAME` drops one.
    Hunts {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        #[arg(long)]
        remove: Option<String>,
    },
    /// Every operator command and its outcome.
    Audit {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Validate every rule file under DIR (each loads, every test case passes), make the set
    /// the fleet's, and push it to every connected host; hosts offline get it when they
    /// reconnect. An invalid set is refused with each problem and nothing is sent.
    Push {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate the policy FILE, make it the fleet's, and push it like `rules push`.
    Push {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        file: PathBuf,
    },
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

fn print_push(v: &serde_json::Value) {
    for h in v["hosts"].as_array().into_iter().flatten() {
        println!(
            "{}: {}",
            h["host"].as_str().unwrap_or("?"),
            h["outcome"].as_str().unwrap_or("?")
        );
    }
}

fn ask(state: &Path, req: &OpRequest) -> Result<serde_json::Value> {
    ask_with_progress(state, req, &mut |_| {})
}

fn ask_with_progress(
    state: &Path,
    req: &OpRequest,
    progress: &mut dyn FnMut(&ops::Progress),
) -> Result<serde_json::Value> {
    let socket = state.join("control.sock");
    let resp = ops::request(&socket, req, progress).with_context(|| {
        format!(
            "no controller answers on {}; is `vigil-controller serve --state {}` running?",
            socket.display(),
            state.display()
        )
    })?;
    match resp {
        OpResponse::Ok { value } => Ok(value),
        OpResponse::Error { message } => bail!("{message}"),
        OpResponse::Progress(_) => bail!("the controller answered with a progress line"),
    }
}

async fn serve(state: &Path, listen: SocketAddr) -> Result<()> {
    std::fs::create_dir_all(state)
        .with_context(|| format!("cannot create the state directory {}", state.display()))?;
    std::fs::set_permissions(state, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let ca = Authority::open(state)?;
    let store: Box<dyn Store> = Box::new(Sqlite::open(&state.join("controller.db"))?);
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
    tokio::spawn(reconcile::run(shared.fleet.clone(), host_events));
    tokio::spawn(controller::services::schedule::run(shared.fleet.clone()));
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

fn ns_ago(ns: u64) -> String {
    format!(
        "{}s ago",
        controller::now_ns().saturating_sub(ns) / 1_000_000_000
    )
}

fn print_lines(v: &serde_json::Value) -> Result<()> {
    for item in v.as_array().into_iter().flatten() {
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
    match cli.command {
        Cmd::Serve { state, listen } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(serve(&state, listen))?;
        }
        Cmd::EnrollToken { state, ttl_secs } => {
            let v = ask(&state, &OpRequest::EnrollToken { ttl_secs })?;
            println!("one-time enrollment token, valid {ttl_secs} s:");
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        Cmd::Hosts { state, json } => {
            let v = ask(&state, &OpRequest::Hosts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<20} {:<10} {:<12} {:<8} {:<7} {:<22} {:<8} dropped",
                "id", "hostname", "state", "last seen", "sensor", "policy", "rules", "isolated"
            );
            for h in v.as_array().into_iter().flatten() {
                let r = &h["report"];
                let state = if h["revoked"] == true {
                    "revoked"
                } else if h["connected"] == true {
                    "online"
                } else {
                    "offline"
                };
                let rules = match r["rules_version"].as_str().filter(|v| !v.is_empty()) {
                    Some(v) => format!("{} ({v})", r["rules_loaded"]),
                    None => r["rules_loaded"].to_string(),
                };
                println!(
                    "{:<20} {:<20} {:<10} {:<12} {:<8} {:<7} {:<22} {:<8} {}",
                    h["id"].as_str().unwrap_or("?"),
                    h["hostname"].as_str().unwrap_or("?"),
                    state,
                    ns_ago(h["last_seen_ns"].as_u64().unwrap_or(0)),
                    r["sensor_version"].as_str().unwrap_or("?"),
                    r["policy_version"],
                    rules,
                    r["isolated"],
                    r["dropped"],
                );
            }
        }
        Cmd::Revoke { state, host } => {
            let v = ask(&state, &OpRequest::Revoke { host })?;
            println!("revoked: {v}");
        }
        Cmd::Contain {
            state,
            host,
            reason,
        } => print_lines(&ask(&state, &OpRequest::Contain { host, reason })?)?,
        Cmd::Release { state, host, force } => {
            let v = ask(&state, &OpRequest::Release { host, force })?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::Alerts { state, host } => print_lines(&ask(
            &state,
            &OpRequest::Records {
                host,
                stream: Stream::Alerts,
            },
        )?)?,
        Cmd::Actions { state, host } => print_lines(&ask(
            &state,
            &OpRequest::Records {
                host,
                stream: Stream::Actions,
            },
        )?)?,
        Cmd::Incidents { state, host, json } => {
            let v = ask(&state, &OpRequest::Incidents { host })?;
            if json {
                print_lines(&v)?;
                return Ok(());
            }
            for i in v.as_array().into_iter().flatten() {
                let status = match i["closed"].as_object() {
                    Some(c) => format!(
                        "closed {} ({})",
                        ns_ago(c["closed_ns"].as_u64().unwrap_or(0)),
                        c["how"].as_str().unwrap_or("?")
                    ),
                    None => "open".to_owned(),
                };
                let rules: Vec<&str> = i["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str())
                    .collect();
                let spans: Vec<&str> = i["spans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h.as_str())
                    .collect();
                println!(
                    "{} {} ({}) risk {}, {} {}, {}: {}",
                    i["host"].as_str().unwrap_or("?"),
                    i["id"].as_str().unwrap_or("?"),
                    i["source"].as_str().unwrap_or("?"),
                    i["risk"],
                    i["alerts"],
                    if i["source"] == "hunt" {
                        "hits"
                    } else {
                        "alerts"
                    },
                    status,
                    rules.join(", ")
                );
                if spans.len() > 1 {
                    println!("    spans hosts {}", spans.join(", "));
                }
                for ind in i["indicators"].as_array().into_iter().flatten() {
                    println!("    indicator {ind}");
                }
            }
        }
        Cmd::Kill {
            state,
            host,
            pid,
            reason,
        } => print_lines(&ask(&state, &OpRequest::Kill { host, pid, reason })?)?,
        Cmd::Quarantine {
            state,
            host,
            path,
            reason,
        } => print_lines(&ask(&state, &OpRequest::Quarantine { host, path, reason })?)?,
        Cmd::Undo {
            state,
            host,
            action,
        } => print_lines(&ask(&state, &OpRequest::Undo { host, action })?)?,
        Cmd::Rules {
            action: RulesCmd::Push { state, dir },
        } => {
            let set = sensor_userspace::detect::rules::read_set(&dir)
                .with_context(|| format!("cannot read the rule directory {}", dir.display()))?;
            let v = ask(&state, &OpRequest::PushRules { set })?;
            print_push(&v);
            println!(
                "rule set {} ({} rules) is the fleet's",
                v["version"].as_str().unwrap_or("?"),
                v["rules"]
            );
        }
        Cmd::Policy {
            action: PolicyCmd::Push { state, file },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the policy {}", file.display()))?;
            let v = ask(&state, &OpRequest::PushPolicy { text })?;
            print_push(&v);
            println!("policy version {} is the fleet's", v["version"]);
        }
        Cmd::Audit { state } => print_lines(&ask(&state, &OpRequest::Audit)?)?,
        Cmd::Hunt {
            state,
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
            let v = ask(
                &state,
                &OpRequest::HuntAdd {
                    name,
                    query,
                    every_secs,
                    respond,
                },
            )?;
            println!("{}", serde_json::to_string(&v)?);
        }
        Cmd::Sweep {
            state,
            sha256,
            results,
        } => {
            let v = match (sha256, results) {
                (_, Some(id)) => ask(&state, &OpRequest::SweepResults { id })?,
                (Some(sha256), None) => {
                    let v = ask_with_progress(
                        &state,
                        &OpRequest::Sweep { sha256 },
                        &mut show_progress,
                    )?;
                    end_progress();
                    v
                }
                (None, None) => bail!("give a SHA-256, or --results ID"),
            };
            for a in v["answers"].as_array().into_iter().flatten() {
                let host = a["host"].as_str().unwrap_or("?");
                match a["error"].as_str() {
                    Some(e) => println!("{host}: could not sweep: {e}"),
                    None => {
                        for f in a["found"].as_array().into_iter().flatten() {
                            println!("{host}: {}", f.as_str().unwrap_or("?"));
                        }
                    }
                }
            }
            eprintln!(
                "sweep {}: {} of {} hosts answered; waiting for {}",
                v["sweep"]["id"].as_str().unwrap_or("?"),
                v["answers"].as_array().map_or(0, Vec::len),
                v["hosts"],
                v["waiting"]
            );
        }
        Cmd::Hunts {
            state,
            remove: Some(name),
        } => {
            ask(&state, &OpRequest::HuntRemove { name: name.clone() })?;
            println!("standing hunt {name} removed");
        }
        Cmd::Hunts {
            state,
            remove: None,
        } => print_lines(&ask(&state, &OpRequest::Hunts)?)?,
        Cmd::Hunt { state, query, .. } => {
            let v = ask_with_progress(&state, &OpRequest::Hunt { query }, &mut show_progress)?;
            end_progress();
            print_lines(&v["hits"])?;
            eprintln!(
                "{} hits; {} edges searched across {} hosts in {} ms",
                v["hits"].as_array().map_or(0, Vec::len),
                v["edges_searched"],
                v["hosts"],
                v["millis"]
            );
        }
    }
    Ok(())
}
