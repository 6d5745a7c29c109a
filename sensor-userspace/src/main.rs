//! `vigil-sensor`: command-line edge of the sensor.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use sensor_userspace::{
    control::{self, GraphQuery, Order, ProcessView, Request, Response, Status},
    host::state::StateDir,
    kernel::{btf::VMLINUX_BTF, loader},
    model::process_table::TableLimits,
    run::{RunOptions, run},
};

const DEFAULT_STATE: &str = "/var/lib/vigil";

#[derive(Parser)]
#[command(
    name = "vigil-sensor",
    version,
    about = "Vigil host sensor: kernel telemetry, detection and response"
)]
struct Cli {
    /// The sensor's state directory (control socket, journals, identity).
    #[arg(long, global = true, env = "VIGIL_STATE", default_value = DEFAULT_STATE)]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing `run`'s options would only add noise"
)]
enum Command {
    /// Load the kernel programs and run the sensor until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Check that this host can run the sensor (root, BTF, the eBPF program and map types it
    /// needs, cgroup v2), naming what is missing; exits non-zero when anything is. The
    /// package's install scripts start the service only when it passes.
    Check {
        /// The kernel's BTF.
        #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
        btf: PathBuf,
    },
    /// Show a running sensor's uptime, hooks and per-kind event and drop counts.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the entity graph: `tree PID`, `executors PATH`, `first-writer PATH`, `snapshot`.
    Graph {
        #[command(subcommand)]
        query: GraphCmd,
    },
    /// Alerts raised so far (from STATE/alerts.jsonl), newest last.
    Alerts {
        /// Print the raw JSON lines.
        #[arg(long)]
        json: bool,
        /// Show only the last N.
        #[arg(long)]
        last: Option<usize>,
    },
    /// The policy: check a file, or make the running sensor re-read its own.
    Policy {
        #[command(subcommand)]
        action: PolicyCmd,
    },
    /// Incidents: alerts on one causal chain, with the story (root cause, process tree,
    /// timeline, blast radius) and the policy's decision.
    Incidents {
        /// Print JSON (one array).
        #[arg(long)]
        json: bool,
        /// Show every process of each story's tree (by default exited helpers that did
        /// nothing of note are folded into a count).
        #[arg(long)]
        full: bool,
        /// Only this incident.
        id: Option<String>,
    },
    /// The action journal (STATE/actions.jsonl): every action, its reason, result and undo.
    Actions {
        #[arg(long)]
        json: bool,
    },
    /// Reverse a journaled action (the undo of a kill is recorded as impossible).
    Undo { id: String },
    /// Carry out the actions of an incident that await approval.
    Approve { incident: String },
    /// Drop the actions of an incident that await approval.
    Deny { incident: String },
    /// Isolate this host's network now (loopback, the controller and the policy's
    /// isolation.allow stay reachable). Journaled; `vigil-sensor undo ID` ends it.
    Isolate {
        /// Why, for the journal.
        #[arg(long)]
        reason: String,
    },
    /// Refuse connections to a destination (ADDR, ADDR:PORT or [V6ADDR]:PORT) host-wide, or
    /// only for the process tree of --pid; traffic of open connections is dropped too.
    Block {
        dest: sensor_userspace::act::netguard::Endpoint,
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long)]
        reason: String,
    },
    /// Freeze a process tree for investigation (cgroup v2 freezer; SIGSTOP where none).
    Freeze {
        pid: u32,
        #[arg(long)]
        reason: String,
    },
    /// Enroll with a controller now (the identity is saved in the state directory), then
    /// exit: `run --controller ADDR` uses it from then on.
    Enroll {
        #[arg(long, value_name = "ADDR")]
        controller: std::net::SocketAddr,
        #[arg(long, value_name = "TOKEN", value_parser = sensor_common::protocol::EnrollToken::parse)]
        token: sensor_common::protocol::EnrollToken,
    },
    /// Detection rules.
    Rules {
        #[command(subcommand)]
        action: RulesCmd,
    },
    /// Show a live process as the sensor knows it, with its ancestry.
    Process {
        pid: u32,
        #[arg(long)]
        json: bool,
    },
}

/// `vigil-sensor run`'s options, as given on the command line.
#[derive(clap::Args)]
struct RunArgs {
    /// Write every event as a JSON line to FILE (appended), or to standard output with `-`.
    #[arg(long, value_name = "FILE|-")]
    events_out: Option<PathBuf>,
    /// The schema of --events-out: Vigil's own, or OCSF (Process Activity, File System
    /// Activity and Network Activity records).
    #[arg(long, value_enum, default_value_t, requires = "events_out")]
    events_format: sensor_userspace::triage::export::Format,
    /// Size of the kernel ring buffer in bytes (a power of two, at least 4096).
    #[arg(long, default_value_t = 8 << 20)]
    ring_buffer_bytes: u32,
    /// Milliseconds between drains of the ring when the kernel has not woken the sensor:
    /// the bound on how late an event is seen.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    poll_interval_ms: u64,
    /// Repeats of the same write-open, connect or accept by one thread within this many
    /// milliseconds of the last one delivered are counted in the kernel (`status`,
    /// "coalesced") and not delivered; the next delivery carries their number. 0 delivers
    /// every one.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=60_000))]
    coalesce_ms: u32,
    /// Kernel BTF to resolve struct layouts from.
    #[arg(long, default_value = VMLINUX_BTF)]
    btf: PathBuf,
    /// Seconds an exited process stays in the process table.
    #[arg(long, default_value_t = 300)]
    retention_secs: u64,
    /// Most exited processes kept in the process table.
    #[arg(long, default_value_t = 65_536)]
    max_exited: usize,
    /// Most edges kept in the entity graph (the oldest go first).
    #[arg(long, default_value_t = 262_144)]
    max_edges: usize,
    /// The policy (TOML); without it, the policy shipped in deploy/policy.toml. Reloaded
    /// on SIGHUP and by `vigil-sensor policy reload`.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// A directory of Sigma and behaviour rules to run (repeatable); alerts go to
    /// STATE/alerts.jsonl. Without it: /etc/vigil/rules when it exists, else the rules
    /// shipped in deploy/rules (built in).
    #[arg(long = "rules", value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// A file name whose read-only opens are reported (repeatable; replaces the default
    /// set of credential and private-key names).
    #[arg(long = "sensitive-name", value_name = "NAME")]
    sensitive_names: Vec<String>,
    /// An environment variable captured at exec (repeatable; replaces the default set:
    /// LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, BASH_ENV, ENV, PROMPT_COMMAND, PYTHONPATH,
    /// HISTFILE, HISTSIZE and others). At most 64.
    #[arg(long = "capture-env", value_name = "NAME")]
    env_names: Vec<String>,
    /// The cgroup v2 directory whose processes network containment (isolation,
    /// destination blocks) applies to. Default: the root of the cgroup v2 mount, found in
    /// /proc/self/mounts, which is the whole host.
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,
    /// The controller (IP:PORT, UDP) to send alerts and action records to and take
    /// commands from; it stays reachable while the host is isolated. Repeat it for the
    /// replicas of one controller sharing a store: they are tried in turn. The sensor runs
    /// the same without it.
    #[arg(long, value_name = "ADDR")]
    controller: Vec<std::net::SocketAddr>,
    /// A one-time enrollment token from `vigil-controller enroll-token`, used when the
    /// state directory holds no identity yet.
    #[arg(long, value_name = "TOKEN", requires = "controller", value_parser = sensor_common::protocol::EnrollToken::parse)]
    enroll: Option<sensor_common::protocol::EnrollToken>,
    /// Watch only the processes of this cgroup v2 subtree, as a sensor for one container
    /// (or one simulated host in tests) rather than the whole machine.
    #[arg(long, value_name = "DIR")]
    scope_cgroup: Option<PathBuf>,
    /// An address this host is known by to its peers (repeatable; default: its
    /// interfaces'). The controller joins hosts' connections by them.
    #[arg(long = "address", value_name = "IP")]
    addresses: Vec<std::net::IpAddr>,
    /// The bpffs directory the enforcing programs and maps (exec blocklist, isolation,
    /// destination blocks) are pinned under, so they stay in force while no sensor runs:
    /// after a crash, `kill -9` or an upgrade. bpffs is mounted at /sys/fs/bpf when missing.
    #[arg(long, value_name = "DIR", default_value = sensor_userspace::kernel::pins::DEFAULT_PIN_DIR, conflicts_with = "no_pins")]
    pin_dir: PathBuf,
    /// Run without pins: enforcement ends with the process.
    #[arg(long)]
    no_pins: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics: a PORT alone listens on loopback,
    /// IP:PORT where named. Off by default.
    #[arg(long, value_name = "ADDR", value_parser = |s: &str| sensor_userspace::host::listen::loopback_unless_named(s).map_err(|e| e.to_string()))]
    metrics: Option<std::net::SocketAddr>,
    /// Also write every alert to FILE (appended; `-` for standard output), as JSON lines in
    /// --alerts-format: for a SIEM or a log shipper.
    #[arg(long, value_name = "FILE")]
    alerts_out: Option<PathBuf>,
    /// The schema of --alerts-out: Vigil's own, or OCSF (Detection Findings for alerts,
    /// Incident Findings as incidents open and change).
    #[arg(long, value_enum, default_value_t, requires = "alerts_out")]
    alerts_format: sensor_userspace::triage::export::Format,
    /// POST every alert to URL as JSON in falcosidekick's input shape (Falco's JSON output),
    /// retried with backoff; see --forward-queue.
    #[arg(long, value_name = "URL")]
    forward: Option<String>,
    /// Alerts that may wait for --forward; past this, new ones are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = sensor_userspace::triage::forward::DEFAULT_QUEUE, requires = "forward", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    forward_queue: usize,
}

impl RunArgs {
    /// The daemon's options: the defaults filled in where a list was left empty.
    fn into_options(self, state: PathBuf) -> RunOptions {
        let or_default = |given: Vec<String>, default: &[&str]| {
            if given.is_empty() {
                default.iter().map(|s| s.to_string()).collect()
            } else {
                given
            }
        };
        RunOptions {
            state,
            events_out: self.events_out,
            events_format: self.events_format,
            ring_buffer_bytes: self.ring_buffer_bytes,
            poll_interval: std::time::Duration::from_millis(self.poll_interval_ms),
            coalesce_ms: self.coalesce_ms,
            btf: self.btf,
            limits: TableLimits {
                retention_ns: self.retention_secs.saturating_mul(1_000_000_000),
                max_exited: self.max_exited,
            },
            sensitive_names: or_default(self.sensitive_names, loader::DEFAULT_SENSITIVE_NAMES),
            env_names: or_default(self.env_names, loader::DEFAULT_ENV_NAMES),
            graph_limits: sensor_userspace::model::graph::GraphLimits {
                max_edges: self.max_edges,
            },
            rules: self.rules,
            policy: self.policy,
            cgroup: self.cgroup,
            controllers: self.controller,
            enroll: self.enroll,
            scope: self.scope_cgroup,
            addresses: self.addresses,
            pin_dir: (!self.no_pins).then_some(self.pin_dir),
            metrics: self.metrics,
            alerts_out: self.alerts_out.map(|p| (p, self.alerts_format)),
            forward: self.forward.map(|u| (u, self.forward_queue)),
        }
    }
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate a policy file without a sensor.
    Check { file: PathBuf },
    /// Make the running sensor re-read its policy (it keeps the one in force if the new one
    /// is invalid, and says why).
    Reload,
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Load every rule under DIR (Sigma and behaviour), name each one skipped with the
    /// reason, and end with `loaded N of M rules`.
    Check { dir: PathBuf },
    /// Run the test cases of every behaviour rule under DIR; exits non-zero when any fails
    /// or any rule is missing a must-match or a must-not-match case, or fails to load.
    Test {
        dir: PathBuf,
        /// Apply this policy's exceptions to every match: a case that expects a match fails
        /// when an exception suppresses it; a case may expect `suppressed`.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum GraphCmd {
    /// Ancestors, descendants, files written and connections of a process tree.
    Tree { pid: u32 },
    /// Processes that executed a file.
    Executors { path: String },
    /// The first process seen writing a file.
    FirstWriter { path: String },
    /// Write a snapshot of the graph (rmp-serde) into the state directory.
    Snapshot,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn ask(state: &Path, req: &Request) -> Result<Response> {
    let socket = StateDir::existing(state).control_socket();
    let resp = control::request(&socket, req)?;
    match &resp {
        Response::Error { message } => bail!("the sensor refused the request: {message}"),
        Response::NotIsolated => bail!("the sensor refused the request: the host is not isolated"),
        _ => {}
    }
    Ok(resp)
}

fn print_status(s: &Status) {
    println!(
        "vigil-sensor {} (pid {}), up {}s",
        s.version, s.pid, s.uptime_secs
    );
    // Process hooks by name; the syscall enter/exit pairs as a count (`--json` lists them).
    let syscall_hooks = s
        .hooks
        .iter()
        .filter(|h| h.target.starts_with("syscalls/sys_exit_"))
        .count();
    println!(
        "hooks attached: {} (syscalls monitored, each at its exit: {syscall_hooks})",
        s.hooks.len()
    );
    for h in s
        .hooks
        .iter()
        .filter(|h| !h.program.starts_with("vigil_exit_"))
    {
        println!("  {:<16} {:?} {}", h.program, h.kind, h.target);
    }
    for h in &s.skipped_hooks {
        println!("  skipped {}: this kernel has no {}", h.program, h.target);
    }
    let sup = &s.support;
    println!(
        "kernel support: tracepoint={} raw_tracepoint={} ring_buffer={} fentry={} lsm={}",
        sup.tracepoint, sup.raw_tracepoint, sup.ring_buffer, sup.fentry, sup.lsm
    );
    println!("ring buffer: {} bytes", s.ring_buffer_bytes);
    println!(
        "{:<10} {:>12} {:>10} {:>10} {:>10}",
        "events", "received", "dropped", "filtered", "coalesced"
    );
    for (kind, c) in &s.events {
        println!(
            "{kind:<10} {:>12} {:>10} {:>10} {:>10}",
            c.received, c.dropped, c.filtered, c.coalesced
        );
    }
    println!("malformed records skipped: {}", s.decode_errors);
    println!(
        "rules loaded: {}, alerts raised: {}, low-level signals: {}, incidents: {}",
        s.rules_loaded, s.alerts_raised, s.signals, s.incidents
    );
    for x in &s.exceptions {
        println!(
            "exception for {}: {} suppressed{} ({})",
            x.rule,
            x.suppressed,
            if x.expired { ", expired" } else { "" },
            x.reason
        );
    }
    println!(
        "graph: {} nodes, {} edges, {} edges evicted at the cap",
        s.graph.nodes, s.graph.edges, s.graph.edges_evicted
    );
    let p = &s.processes;
    println!(
        "processes: {} live, {} exited kept, {} seeded from /proc, {} aged out",
        p.live, p.exited, p.seeded, p.aged_out
    );
    let a = &s.actions;
    println!(
        "actions: {} journaled, {} in force, {} awaiting approval, {} re-armed at start",
        a.actions, a.in_force, a.pending, a.restored
    );
    let n = &a.network;
    match &n.cgroup {
        Some(cg) => println!(
            "network containment on {}: {}, {} destinations blocked; {} connects refused, {} packets dropped; programs {}",
            cg.display(),
            if n.isolated {
                "HOST ISOLATED"
            } else {
                "not isolated"
            },
            n.blocked_destinations,
            n.connects_refused,
            n.packets_dropped,
            if n.attached {
                "attached"
            } else {
                "loaded, attached when something is in force"
            }
        ),
        None => println!("network containment: unavailable (see the sensor's log)"),
    }
}

/// Sends `req` and prints the journal records it produced.
fn print_actions(state: &Path, req: &Request) -> Result<()> {
    match ask(state, req)? {
        Response::Actions { records } => {
            for r in &records {
                println!("{}", action_line(r));
            }
            Ok(())
        }
        other => bail!("unexpected response: {other:?}"),
    }
}

fn action_line(r: &sensor_userspace::act::journal::Record) -> String {
    format!(
        "{} {} {:?} {} -> {:?}: {} [{}] ({}){}",
        r.id,
        r.incident,
        r.action,
        r.target,
        r.status,
        r.detail,
        r.policy_clause,
        r.reason,
        r.settles
            .as_deref()
            .map(|s| format!(" settles {s}"))
            .unwrap_or_default()
    )
}

fn print_process(v: &ProcessView) {
    let line = |p: &sensor_userspace::model::process_table::Process| {
        format!(
            "pid {} start {} uid {} {} {}",
            p.key.pid,
            p.key.start,
            p.uid,
            p.exe.as_deref().unwrap_or("?"),
            p.argv.join(" ")
        )
    };
    println!("{}", line(&v.process));
    for (depth, a) in v.ancestry.iter().enumerate() {
        println!("{}└ {}", "  ".repeat(depth), line(a));
    }
}

/// Restores the default SIGPIPE action, so `vigil-sensor status | head` ends quietly instead of
/// panicking on a closed pipe. Not for `run`: a sensor must not die with its stdout reader.
fn default_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

// Long by design: one arm per subcommand, each a request and its printing.

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        default_sigpipe();
    }
    init_logging();
    let state = cli.state;
    match cli.command {
        Command::Run(args) => {
            let opts = args.into_options(state);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let ran = rt.block_on(run(opts));
            // A hash sweep still reading files on a blocking thread must not hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            ran?;
        }
        Command::Status { json } => match ask(&state, &Request::Status)? {
            Response::Status(s) if json => println!("{}", serde_json::to_string_pretty(&s)?),
            Response::Status(s) => print_status(&s),
            other => bail!("unexpected response: {other:?}"),
        },
        Command::Alerts { json, last } => {
            let path = state.join("alerts.jsonl");
            let (alerts, bad) = sensor_userspace::triage::alerts::read(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let skip = last.map_or(0, |n| alerts.len().saturating_sub(n));
            for a in &alerts[skip..] {
                if json {
                    println!("{}", serde_json::to_string(a)?);
                } else {
                    let f = &a.finding;
                    println!(
                        "{} {:?} risk {} {} [{}] pid {} {} | {} ({}){}",
                        f.id,
                        f.rule.severity,
                        a.risk.score,
                        f.rule.title,
                        f.rule.technique.join(","),
                        f.process.pid,
                        f.process.exe.as_deref().unwrap_or("?"),
                        f.process.cmdline.escape_debug(),
                        a.incident,
                        f.rule
                            .author
                            .as_deref()
                            .map(|au| format!(" (rule by {au})"))
                            .unwrap_or_default()
                    );
                }
            }
            if bad > 0 {
                eprintln!("{bad} lines of {} could not be read", path.display());
            }
        }
        Command::Check { btf } => {
            let missing = host_check(&btf);
            if !missing.is_empty() {
                bail!("this host cannot run vigil-sensor: {}", missing.join("; "));
            }
            println!("this host can run vigil-sensor");
        }
        Command::Policy {
            action: PolicyCmd::Check { file },
        } => {
            let p = sensor_userspace::policy::Policy::load(&file)?;
            println!(
                "{}: valid (version {}, mode {:?})",
                file.display(),
                p.version,
                p.mode
            );
        }
        Command::Policy {
            action: PolicyCmd::Reload,
        } => match ask(&state, &Request::ReloadPolicy)? {
            Response::Policy(s) => println!(
                "policy version {} ({:?}) in force, from {}",
                s.version, s.mode, s.source
            ),
            other => bail!("unexpected response: {other:?}"),
        },
        Command::Rules {
            action: RulesCmd::Check { dir },
        } => {
            let report = sensor_userspace::detect::rules::load_dir(&dir)
                .with_context(|| format!("cannot read the rule directory {}", dir.display()))?;
            for e in &report.skipped {
                println!("{e}");
            }
            println!("loaded {} of {} rules", report.loaded(), report.total);
        }
        Command::Rules {
            action: RulesCmd::Test { dir, policy },
        } => {
            let policy = policy
                .map(|p| sensor_userspace::policy::Policy::load(&p))
                .transpose()?;
            let report = sensor_userspace::detect::rules::load_dir(&dir)
                .with_context(|| format!("cannot read the rule directory {}", dir.display()))?;
            let mut failed = 0;
            for e in &report.skipped {
                println!("FAIL {e}");
                failed += 1;
            }
            let mut cases = 0;
            for rule in &report.behaviour {
                for r in sensor_userspace::detect::rules::behaviour::testcase::run_with(
                    rule,
                    policy.as_ref(),
                ) {
                    cases += 1;
                    if r.passed {
                        println!("ok   {}: {}", r.rule, r.case);
                    } else {
                        failed += 1;
                        println!("FAIL {}: {}: {}", r.rule, r.case, r.detail);
                    }
                }
            }
            println!(
                "{} behaviour rules, {cases} test cases, {failed} failures",
                report.behaviour.len()
            );
            if failed > 0 {
                std::process::exit(1);
            }
        }
        Command::Actions { json } => {
            let path = state.join("actions.jsonl");
            let (records, bad) = sensor_userspace::act::journal::read(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            for r in &records {
                if json {
                    println!("{}", serde_json::to_string(r)?);
                } else {
                    println!("{}", action_line(r));
                }
            }
            if bad > 0 {
                eprintln!("{bad} lines of {} could not be read", path.display());
            }
        }
        Command::Undo { id } => print_actions(&state, &Request::Undo { id, by: None })?,
        Command::Approve { incident } => {
            print_actions(&state, &Request::Approve { incident, by: None })?;
        }
        Command::Deny { incident } => print_actions(&state, &Request::Deny { incident, by: None })?,
        Command::Enroll { controller, token } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let id = rt.block_on(sensor_userspace::uplink::enroll_once(
                &state, controller, &token,
            ))?;
            println!(
                "enrolled as host {id}; identity saved in {}",
                state.join("identity").display()
            );
        }
        Command::Isolate { reason } => print_actions(
            &state,
            &Request::Contain {
                order: Order::Isolate,
                reason,
                by: None,
            },
        )?,
        Command::Block { dest, pid, reason } => print_actions(
            &state,
            &Request::Contain {
                order: Order::Block { dest, pid },
                reason,
                by: None,
            },
        )?,
        Command::Freeze { pid, reason } => print_actions(
            &state,
            &Request::Contain {
                order: Order::Freeze { pid },
                reason,
                by: None,
            },
        )?,
        Command::Incidents { json, full, id } => {
            let incidents = match ask(&state, &Request::Incidents) {
                Ok(Response::Incidents { incidents }) => incidents,
                Ok(other) => bail!("unexpected response: {other:?}"),
                // No sensor running: what it last saved.
                Err(_) => {
                    let path = state.join("incidents.json");
                    sensor_userspace::triage::incidents::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?
                }
            };
            let chosen: Vec<_> = incidents
                .iter()
                .filter(|i| id.as_ref().is_none_or(|want| &i.id == want))
                .collect();
            if let Some(want) = &id
                && chosen.is_empty()
            {
                bail!("no incident {want}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&chosen)?);
            } else {
                for i in chosen {
                    println!(
                        "{}",
                        sensor_userspace::triage::incidents::render_with(i, full)
                    );
                }
            }
        }
        Command::Graph { query } => {
            let query = match query {
                GraphCmd::Tree { pid } => GraphQuery::Tree { pid },
                GraphCmd::Executors { path } => GraphQuery::Executors { path },
                GraphCmd::FirstWriter { path } => GraphQuery::FirstWriter { path },
                GraphCmd::Snapshot => GraphQuery::Snapshot,
            };
            match ask(&state, &Request::Graph { query })? {
                Response::Graph(answer) => println!("{}", serde_json::to_string_pretty(&answer)?),
                other => bail!("unexpected response: {other:?}"),
            }
        }
        Command::Process { pid, json } => match ask(&state, &Request::Process { pid })? {
            Response::Process { found: Some(v) } if json => {
                println!("{}", serde_json::to_string_pretty(&v)?)
            }
            Response::Process { found: Some(v) } => print_process(&v),
            Response::Process { found: None } => bail!("the sensor knows no live process {pid}"),
            other => bail!("unexpected response: {other:?}"),
        },
    }
    Ok(())
}

/// What this host lacks to run the sensor, each with its reason; empty when it has it all.
fn host_check(btf: &std::path::Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (the sensor loads eBPF programs)".to_owned());
    }
    if !btf.is_file() {
        missing.push(format!(
            "the kernel's BTF at {} (CONFIG_DEBUG_INFO_BTF)",
            btf.display()
        ));
    }
    // The probe loads tiny programs: only root can, so without root it says nothing new.
    if nix::unistd::geteuid().is_root()
        && let Err(e) = sensor_userspace::kernel::probe::HookSupport::probe().require_baseline()
    {
        missing.push(e.to_string());
    }
    if sensor_userspace::host::cgroup::mount().is_none() {
        missing.push("a cgroup v2 mount (containment and scoping use it)".to_owned());
    }
    missing
}
