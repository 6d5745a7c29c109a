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
    ops::{self, OpRequest, OpResponse},
    server::{self, Shared},
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
    /// Incidents across the fleet, from the hosts' alerts.
    Incidents {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
    },
    /// Search the fleet's graphs and their history, e.g.
    /// `processes where exe endswith "/nc" and ancestor.exe endswith "/nginx"`,
    /// `writes where path = "/etc/ld.so.preload"`, `connections where port = 4444`.
    /// Hits print as JSON lines, then a summary.
    Hunt {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
        query: String,
    },
    /// Every operator command and its outcome.
    Audit {
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
    },
}

fn ask(state: &Path, req: &OpRequest) -> Result<serde_json::Value> {
    let socket = state.join("control.sock");
    let resp = ops::request(&socket, req).with_context(|| {
        format!(
            "no controller answers on {}; is `vigil-controller serve --state {}` running?",
            socket.display(),
            state.display()
        )
    })?;
    match resp {
        OpResponse::Ok { value } => Ok(value),
        OpResponse::Error { message } => bail!("{message}"),
    }
}

async fn serve(state: &Path, listen: SocketAddr) -> Result<()> {
    std::fs::create_dir_all(state)
        .with_context(|| format!("cannot create the state directory {}", state.display()))?;
    std::fs::set_permissions(state, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let ca = Authority::open(state)?;
    let store: Box<dyn Store> = Box::new(Sqlite::open(&state.join("controller.db"))?);
    let shared = Shared {
        store: Arc::new(Mutex::new(store)),
        ca: Arc::new(ca),
        connected: Arc::default(),
    };
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
                "{:<20} {:<20} {:<10} {:<12} {:<8} {:<7} {:<9} {:<8} dropped",
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
                println!(
                    "{:<20} {:<20} {:<10} {:<12} {:<8} {:<7} {:<9} {:<8} {}",
                    h["id"].as_str().unwrap_or("?"),
                    h["hostname"].as_str().unwrap_or("?"),
                    state,
                    ns_ago(h["last_seen_ns"].as_u64().unwrap_or(0)),
                    r["sensor_version"].as_str().unwrap_or("?"),
                    r["policy_version"],
                    r["rules_loaded"],
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
            print_lines(&ask(&state, &OpRequest::Release { host, force })?)?;
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
        Cmd::Incidents { state } => {
            let v = ask(
                &state,
                &OpRequest::Records {
                    host: None,
                    stream: Stream::Alerts,
                },
            )?;
            let mut incidents: std::collections::BTreeMap<
                (String, String),
                Vec<&serde_json::Value>,
            > = Default::default();
            for r in v.as_array().into_iter().flatten() {
                let key = (
                    r["host"].as_str().unwrap_or("?").to_owned(),
                    r["body"]["incident"].as_str().unwrap_or("?").to_owned(),
                );
                incidents.entry(key).or_default().push(&r["body"]);
            }
            for ((host, id), alerts) in incidents {
                let risk = alerts
                    .iter()
                    .filter_map(|a| a["risk"]["score"].as_u64())
                    .max()
                    .unwrap_or(0);
                let rules: std::collections::BTreeSet<&str> = alerts
                    .iter()
                    .filter_map(|a| a["rule"]["id"].as_str())
                    .collect();
                println!(
                    "{host} {id} risk {risk}, {} alerts: {}",
                    alerts.len(),
                    rules.into_iter().collect::<Vec<_>>().join(", ")
                );
            }
        }
        Cmd::Audit { state } => print_lines(&ask(&state, &OpRequest::Audit)?)?,
        Cmd::Hunt { state, query } => {
            let v = ask(&state, &OpRequest::Hunt { query })?;
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
