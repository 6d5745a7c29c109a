//! Benchmarks, each measured without and with the sensor side by side in one run, so the
//! figure that matters is a ratio, robust to how busy this shared machine happens to be.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use serde_json::Value;

use crate::util::target_dir;

#[derive(Subcommand, Clone, Copy)]
pub enum Which {
    /// Every benchmark below, with its default size.
    All,
    /// fork+exec of /bin/true, without and with the sensor.
    Exec {
        #[arg(long, default_value_t = 2000)]
        count: u32,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// openat(O_WRONLY)+close (every one an event) and openat(O_RDONLY)+close (filtered in
    /// the kernel) on a temp file, without and with the sensor.
    Open {
        #[arg(long, default_value_t = 1_000_000)]
        count: u32,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// TCP connect+close to a loopback listener, without and with the sensor.
    Connect {
        #[arg(long, default_value_t = 20_000)]
        count: u32,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Decode + process table + graph in userspace alone, events per second on one core.
    Pipeline,
    /// Simulated sensors over real QUIC against a real controller: how many it holds, memory
    /// per sensor, graph edges merged per second, hunt latency over the edges stored.
    Controller {
        #[arg(long, default_value_t = 1000)]
        sensors: u32,
        #[arg(long, default_value_t = 10)]
        deltas: u32,
        #[arg(long, default_value_t = 100)]
        edges: u32,
    },
    /// The controller's embedded store alone: edges merged per second (one commit per delta
    /// beside grouped commits), hunt latency over the history, a merge's wait during a hunt.
    Store {
        #[arg(long, default_value_t = 10_000_000)]
        edges: u64,
    },
    /// One host's alert to its payload block in force on every connected simulated sensor
    /// (real QUIC, each acknowledging it): p50 and p99 over the rounds.
    Fleet {
        #[arg(long, default_value_t = 1000)]
        sensors: u32,
        #[arg(long, default_value_t = 20)]
        rounds: u32,
    },
    /// The pipeline with every SigmaHQ Linux rule loaded (the directory `VIGIL_SIGMA_DIR`
    /// names), and with one rule.
    Rules,
    /// Write-opens paced at a fixed rate for a few seconds, each one delivered
    /// (`--coalesce-ms 0`): drops must be zero.
    Rate {
        #[arg(long, default_value_t = 100_000)]
        per_second: u32,
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// The sensor's memory with this many live processes.
    Rss {
        #[arg(long, default_value_t = 10_000)]
        processes: u32,
    },
    /// Detection-to-death: a fileless payload (a userspace rule) killed, over many runs,
    /// beside the same launch of a harmless program; and a payload on the in-kernel blocklist
    /// that must never run its first instruction.
    Response {
        #[arg(long, default_value_t = 200)]
        runs: u32,
    },
}

pub fn run(which: Option<Which>) -> Result<()> {
    match which.unwrap_or(Which::All) {
        Which::All => {
            pipeline()?;
            rules()?;
            exec(2000, 3)?;
            open(1_000_000, 3)?;
            connect(20_000, 3)?;
            rate(100_000, 5)?;
            rss(10_000)?;
            response(200)?;
            controller(1000, 10, 100)?;
            store(10_000_000)?;
            fleet(1000, 20)
        }
        Which::Store { edges } => store(edges),
        Which::Fleet { sensors, rounds } => fleet(sensors, rounds),
        Which::Exec { count, rounds } => exec(count, rounds),
        Which::Open { count, rounds } => open(count, rounds),
        Which::Connect { count, rounds } => connect(count, rounds),
        Which::Pipeline => pipeline(),
        Which::Rules => rules(),
        Which::Controller {
            sensors,
            deltas,
            edges,
        } => controller(sensors, deltas, edges),
        Which::Rate {
            per_second,
            seconds,
        } => rate(per_second, seconds),
        Which::Rss { processes } => rss(processes),
        Which::Response { runs } => response(runs),
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// Runs `sh -c script`, returns (seconds from spawn to reaped, killed by SIGKILL).
fn timed(script: &str) -> Result<(f64, bool)> {
    use std::os::unix::process::ExitStatusExt as _;
    let t = Instant::now();
    let st = Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok((
        t.elapsed().as_secs_f64(),
        st.signal() == Some(9) || st.code() == Some(137),
    ))
}

/// For every `action` the sensor carried out (done, or nothing left to do), the time from
/// the kernel's timestamp of the event that triggered its alert (the last of the alert's
/// evidence) to the record in the journal, in milliseconds. `detail` narrows the records.
fn event_to_action(state: &Path, action: &str, detail: &str) -> Vec<f64> {
    event_to(state, action, detail, "time_ns")
}

/// The same, to the moment the action took hold (`effective_ns`, for actions that hold their
/// target before they are journaled; else the journal's time).
fn event_to_effect(state: &Path, action: &str, detail: &str) -> Vec<f64> {
    event_to(state, action, detail, "effective_ns")
}

fn event_to(state: &Path, action: &str, detail: &str, when: &str) -> Vec<f64> {
    let read = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(state.join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let alerts = read("alerts.jsonl");
    read("actions.jsonl")
        .iter()
        .filter(|a| a["action"] == action && a["settles"].is_null())
        // A remediation's second pass runs when its writer is done, by design.
        .filter(|a| {
            !a["reason"]
                .as_str()
                .is_some_and(|r| r.contains("second pass"))
        })
        .filter(|a| a["status"] == "done" || a["status"] == "nothing_to_do")
        .filter(|a| a["detail"].as_str().is_some_and(|d| d.contains(detail)))
        .filter_map(|a| {
            let alert_id = a["evidence"][0].as_str()?;
            let alert = alerts.iter().find(|x| x["id"] == alert_id)?;
            let event_ns = alert["evidence"].as_array()?.last()?["time_ns"].as_u64()?;
            let acted_ns = a[when].as_u64().or_else(|| a["time_ns"].as_u64())?;
            Some(acted_ns.saturating_sub(event_ns) as f64 / 1e6)
        })
        .collect()
}

/// Prints one executor's latency line: `response: EXECUTOR (what): p50, p99 over N`.
fn print_executor(kind: &str, what: &str, mut ms: Vec<f64>) {
    print_latency(kind, what, "action journaled", &mut ms);
}

fn print_latency(kind: &str, what: &str, to: &str, ms: &mut [f64]) {
    println!(
        "response: {kind} ({what}), triggering event -> {to}, over {} actions: p50 {:.2} ms, p99 {:.2} ms",
        ms.len(),
        percentile(ms, 0.5),
        percentile(ms, 0.99)
    );
}

/// `bench response`: the time from the exec of a payload a userspace rule catches (a
/// deleted file executed through its descriptor: fileless execution) to its death, beside the
/// same launch running /bin/true to its end; then in-kernel blocked payloads that would write a
/// marker as their first act.
fn response(runs: u32) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-resp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all("/etc/cron.d")?;
    std::fs::write(
        format!("/etc/cron.d/vigil-bench-base-{}", std::process::id()),
        "# vigil bench baseline\n",
    )?;
    let sensor = Sensor::start(&dir, &[])?;
    let shm = format!("/dev/shm/vigil-bench-{}", std::process::id());
    let payload = |target: &str| {
        format!("cp {target} {shm} && exec 3<{shm} && rm -f {shm} && exec /proc/self/fd/3 10")
    };
    let (mut caught, mut baseline, mut missed) = (Vec::new(), Vec::new(), 0u32);
    for _ in 0..runs {
        let (t, killed) = timed(&payload("/bin/sleep"))?;
        if killed {
            caught.push(t * 1000.0);
        } else {
            missed += 1;
        }
        let (t, _) = timed(&format!("cp /bin/true {shm} && exec /bin/true"))?;
        baseline.push(t * 1000.0);
    }
    let _ = std::fs::remove_file(&shm);
    std::thread::sleep(Duration::from_millis(500));
    print_executor(
        "kill",
        "a fileless payload, from its exec",
        event_to_action(&dir.join("state"), "kill", "killed"),
    );
    // Quarantine: a setuid copy of a program (vigil-setuid-bit), from the chmod. Remediation:
    // a cron file dropped (moved aside whole) and a line appended to /etc/crontab (the line
    // removed), from the write.
    let quarantine_runs = runs.min(50);
    // A cron file of the benchmark's own, there before the sensor started: it is in the
    // baseline, so the lines appended to it are removed one by one.
    let crontab = PathBuf::from(format!(
        "/etc/cron.d/vigil-bench-base-{}",
        std::process::id()
    ));
    let crontab_before = Some(b"# vigil bench baseline\n".to_vec());
    for i in 0..quarantine_runs {
        let f = dir.join(format!("suid-{i}"));
        timed(&format!(
            "cp /bin/true {f} && chmod u+s {f}",
            f = f.display()
        ))?;
        let cron = format!("/etc/cron.d/vigil-bench-{}-{i}", std::process::id());
        timed(&format!(
            "mkdir -p /etc/cron.d && echo '# vigil bench {i}' > {cron}; sleep 0.05; rm -f {cron}"
        ))?;
        timed(&format!(
            "echo '# vigil bench {i}' >> {}",
            crontab.display()
        ))?;
    }
    std::thread::sleep(Duration::from_millis(2500));
    let state = dir.join("state");
    print_executor(
        "quarantine",
        "a setuid copy, from the chmod",
        event_to_action(&state, "quarantine", ""),
    );
    print_executor(
        "remediate",
        "a dropped cron file moved aside, from the write",
        event_to_action(&state, "remediate", "moved to"),
    );
    print_executor(
        "remediate",
        "a line appended to a known cron file removed, from the write",
        event_to_action(&state, "remediate", "line(s) the incident added"),
    );
    if std::fs::read(&crontab).ok() != crontab_before {
        println!("response: {} still held bench lines", crontab.display());
    }
    let _ = std::fs::remove_file(&crontab);
    println!(
        "response: the same, as the launcher sees it (spawn of sh, cp, exec -> reaped) over {runs} runs: p50 {:.2} ms, p99 {:.2} ms ({missed} not killed); the same launch of /bin/true: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&mut caught, 0.5),
        percentile(&mut caught, 0.99),
        percentile(&mut baseline, 0.5),
        percentile(&mut baseline, 0.99)
    );

    // In-kernel: a downloaded, chmod +x'd payload is quarantined (and blocked by path); the
    // same payload dropped again must die at exec without writing its marker.
    let srv = dir.join("srv");
    std::fs::create_dir_all(&srv)?;
    let marker = dir.join("marker");
    std::fs::write(
        srv.join("p.sh"),
        format!(
            "#!/bin/sh
echo ran >> {}
sleep 10
",
            marker.display()
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut http = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&srv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("python3 -m http.server")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = http.kill();
            bail!("http.server did not listen");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = dir.join("payload");
    let p = p.display();
    timed(&format!(
        "curl -s -o {p} http://127.0.0.1:{port}/p.sh && chmod +x {p} && {p}"
    ))?;
    let _ = http.kill();
    let _ = http.wait();
    std::thread::sleep(Duration::from_millis(500));
    let _ = std::fs::remove_file(&marker);
    let body = std::fs::read(srv.join("p.sh"))?;
    let (mut kernel, mut ran) = (Vec::new(), 0u32);
    let blocked_runs = runs.min(50);
    for _ in 0..blocked_runs {
        std::fs::write(dir.join("payload"), &body)?;
        std::fs::set_permissions(
            dir.join("payload"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let (t, killed) = timed(&p.to_string())?;
        if killed {
            kernel.push(t * 1000.0);
        }
        if marker.exists() {
            ran += 1;
            let _ = std::fs::remove_file(&marker);
        }
    }
    println!(
        "response: in-kernel blocked payload: {} of {blocked_runs} killed at exec, {ran} wrote their first-act marker (zero user instructions ran); exec -> death p50 {:.2} ms, p99 {:.2} ms",
        kernel.len(),
        percentile(&mut kernel, 0.5),
        percentile(&mut kernel, 0.99)
    );
    drop(sensor);
    freeze_latency(&dir, runs.min(30))?;
    network_latency(&dir, runs.min(30))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A rule of the benchmark's own: an exec of a program named `marker` triggers `response`.
fn marker_rule(response: &str, marker: &str) -> String {
    format!(
        r#"id: vigil-bench-{response}
title: The benchmark's {response} trigger
description: An exec of the benchmark's marker program, answered by {response}.
technique: [T1059]
severity: critical
confidence: high
response: [{response}]
match:
  kind: exec
  where:
    name: {marker}
tests:
  - name: the marker
    expect: match
    events:
      - {{kind: exec, pid: 5, exe: /tmp/{marker}}}
  - name: another program
    expect: no_match
    events:
      - {{kind: exec, pid: 6, exe: /usr/bin/true}}
"#
    )
}

/// The freeze executor: a rule of the benchmark's own asks to freeze a uniquely named copy of
/// sleep at its exec; each frozen tree is thawed by its undo, then killed.
fn freeze_latency(dir: &Path, runs: u32) -> Result<()> {
    let rules = dir.join("freeze-rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(
        rules.join("freeze.yml"),
        marker_rule("freeze", "vigil-bench-freeze-me"),
    )?;
    let work = dir.join("freeze");
    std::fs::create_dir_all(&work)?;
    let sensor = Sensor::start(&work, &["--rules", &rules.to_string_lossy()])?;
    let marker = work.join("vigil-bench-freeze-me");
    std::fs::copy("/usr/bin/sleep", &marker)?;
    let mut children = Vec::new();
    for _ in 0..runs {
        children.push(Command::new(&marker).arg("30").spawn()?);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let state = work.join("state");
    print_latency(
        "freeze",
        "a process tree, from its exec",
        "every member stopped (the freeze holds)",
        &mut event_to_effect(&state, "freeze", ""),
    );
    print_executor(
        "freeze",
        "the same tree moved into a frozen cgroup and journaled",
        event_to_action(&state, "freeze", ""),
    );
    let journal = std::fs::read_to_string(state.join("actions.jsonl")).unwrap_or_default();
    for line in journal.lines() {
        let Ok(rec) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if rec["action"] == "freeze" && rec["status"] == "done" {
            // Best effort: the children are killed next either way.
            let _ = sensor.undo(rec["id"].as_str().unwrap_or_default());
        }
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(sensor);
    Ok(())
}

/// A peer host in a network namespace of the benchmark's own, reached over a veth pair;
/// removed on drop.
struct NetnsPeer {
    ns: String,
    host_if: String,
    addr: String,
}

impl NetnsPeer {
    fn create() -> Result<Self> {
        let id = std::process::id() % 200 + 20;
        let (ns, host_if, peer_if) = (
            format!("vigil-b{id}"),
            format!("vb{id}h"),
            format!("vb{id}n"),
        );
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let script = format!(
            "ip netns add {ns} && ip link add {host_if} type veth peer name {peer_if} && \
             ip link set {peer_if} netns {ns} && ip addr add 10.{id}.1.1/30 dev {host_if} && \
             ip link set {host_if} up && ip -n {ns} addr add 10.{id}.1.2/30 dev {peer_if} && \
             ip -n {ns} link set {peer_if} up"
        );
        let out = Command::new("sh").args(["-c", &script]).output()?;
        if !out.status.success() {
            bail!(
                "cannot make the peer's network namespace: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Self {
            ns,
            host_if,
            addr: format!("10.{id}.1.2"),
        })
    }
}

impl Drop for NetnsPeer {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// The cgroup v2 mount, from /proc/self/mounts.
fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(dir))
        })
        .context("no cgroup2 mount in /proc/self/mounts")
}

/// Runs `command` in a new session whose first process has already left its launcher: its
/// causal chain starts at pid 1, so each run is an incident of its own (the sensor takes one
/// action per target per incident).
fn orphaned(command: &str) -> Result<()> {
    let st = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("setsid sh -c 'sleep 0.05; exec {command}' >/dev/null 2>&1 &"),
        ])
        .stdin(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("{command}: {st}");
    }
    Ok(())
}

/// Waits (at most 3 s) for a record of `action` in `state`'s journal with `status`, that was
/// not there before (`seen` of them were); returns its id.
fn wait_record(state: &Path, action: &str, status: &str, seen: usize) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let journal = std::fs::read_to_string(state.join("actions.jsonl")).unwrap_or_default();
        let recs: Vec<Value> = journal
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["action"] == action && r["status"] == status)
            .collect();
        if recs.len() > seen {
            return recs
                .last()
                .and_then(|r| r["id"].as_str())
                .map(str::to_owned);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The network executors, from the event: a host isolated when a marker program runs (each
/// isolation undone before the next), and a destination on a peer in a network namespace
/// blocked host-wide when something connects to it. The sensor's network programs attach to
/// a cgroup of the benchmark's own, so this machine's traffic is never cut.
fn network_latency(dir: &Path, runs: u32) -> Result<()> {
    let peer = NetnsPeer::create()?;
    let cg = cgroup2_mount()?.join(format!("vigil-bench-net-{}", std::process::id()));
    std::fs::create_dir_all(&cg)?;
    let rules = dir.join("net-rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(
        rules.join("isolate.yml"),
        marker_rule("isolate", "vigil-bench-isolate-me"),
    )?;
    std::fs::write(
        rules.join("block.yml"),
        format!(
            r#"id: vigil-bench-block
title: The benchmark's blocked destination
description: A connect to the benchmark's peer blocks it.
technique: [T1071]
severity: critical
confidence: high
response: [block_destination]
match:
  kind: connect
  where:
    remote_ip: "{addr}"
tests:
  - name: the peer
    expect: match
    events:
      - {{kind: connect, pid: 5, exe: /usr/bin/python3, remote: "{addr}:4000"}}
  - name: another host
    expect: no_match
    events:
      - {{kind: connect, pid: 6, exe: /usr/bin/python3, remote: "192.0.2.77:4000"}}
"#,
            addr = peer.addr
        ),
    )?;
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml"),
    )?;
    let policy = dir.join("net-policy.toml");
    std::fs::write(
        &policy,
        shipped.replace("without_approval = [", "without_approval = [\"isolate\", "),
    )?;
    let work = dir.join("net");
    std::fs::create_dir_all(&work)?;
    let args = [
        "--rules".to_owned(),
        rules.to_string_lossy().into_owned(),
        "--policy".to_owned(),
        policy.to_string_lossy().into_owned(),
        "--cgroup".to_owned(),
        cg.to_string_lossy().into_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let state = work.join("state");
    let marker = work.join("vigil-bench-isolate-me");
    std::fs::copy("/bin/true", &marker)?;
    // The sensor isolates once per incident, and the runs are all one causal chain (this
    // benchmark's): each run gets a sensor of its own, and ends its isolation before it stops.
    let mut unreached = 0u32;
    for i in 0..runs.min(10) as usize {
        let sensor = Sensor::start(&work, &args)?;
        orphaned(&marker.to_string_lossy())?;
        let Some(id) = wait_record(&state, "isolate", "done", i) else {
            unreached += 1;
            break;
        };
        sensor.undo(&id)?;
    }
    let sensor = Sensor::start(&work, &args)?;
    // UDP connects: the connect is the event, and no packet leaves.
    for i in 0..runs {
        orphaned(&format!(
            "python3 -c \"import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((sys.argv[1], int(sys.argv[2])))\" {} {}",
            peer.addr,
            41000 + i
        ))?;
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(500));
    print_executor(
        "isolate",
        "the host, from a marker's exec",
        event_to_action(&state, "isolate", ""),
    );
    print_executor(
        "block_destination",
        "a peer's address host-wide, from the connect",
        event_to_action(&state, "block_destination", ""),
    );
    if unreached > 0 {
        println!("response: an isolation was not journaled within 3 s; the run stopped there");
    }
    drop(sensor);
    let _ = std::fs::remove_dir(&cg);
    drop(peer);
    Ok(())
}

/// A running release sensor for the benchmark, stopped on drop.
struct Sensor {
    child: Child,
    state: PathBuf,
    bin: PathBuf,
    /// Its own pin directory, so what a run leaves in force is removed with it.
    pins: PathBuf,
}

impl Sensor {
    /// Starts the sensor with `extra` arguments, and those of `VIGIL_BENCH_SENSOR_ARGS`
    /// (split on whitespace; for experiments such as `--cgroup DIR`).
    fn start(dir: &Path, extra: &[&str]) -> Result<Self> {
        let bin = target_dir()?.join("release/vigil-sensor");
        let state = dir.join("state");
        let pins = PathBuf::from(format!("/sys/fs/bpf/vigil-bench-{}", std::process::id()));
        // No --events-out: the production default, where events feed the graph and the
        // detections; `bench pipeline` measures what the JSON feed adds.
        let child = Command::new(&bin)
            .args(["run", "--state"])
            .arg(&state)
            .arg("--pin-dir")
            .arg(&pins)
            .args(extra)
            .args(
                std::env::var("VIGIL_BENCH_SENSOR_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env("VIGIL_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut s = Self {
            child,
            state,
            bin,
            pins,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.status().is_err() {
            if Instant::now() > deadline {
                bail!("the sensor did not come up within 60 s");
            }
            if let Some(st) = s.child.try_wait()? {
                bail!("the sensor exited during start-up: {st}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    fn status(&self) -> Result<Value> {
        let out = Command::new(&self.bin)
            .args(["status", "--json", "--state"])
            .arg(&self.state)
            .stderr(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("status failed");
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Undoes action `id` through the sensor's CLI.
    fn undo(&self, id: &str) -> Result<()> {
        let st = Command::new(&self.bin)
            .args(["undo", id, "--state"])
            .arg(&self.state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("cannot undo action {id}: {st}");
        }
        Ok(())
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// Sum over kinds of one counter of a status document.
fn total(status: &Value, field: &str) -> u64 {
    status["events"]
        .as_object()
        .map(|kinds| kinds.values().filter_map(|k| k[field].as_u64()).sum())
        .unwrap_or(0)
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// A memory line (`VmHWM`, `VmRSS`...) of a process's /proc status, in MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM")
}

/// `count` sequential fork+exec+wait of /bin/true; wall seconds.
fn exec_storm(count: u32) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..count {
        let st = Command::new("/bin/true")
            .status()
            .context("spawning /bin/true")?;
        if !st.success() {
            bail!("/bin/true failed: {st}");
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// `count` open+close of `path` with `write` or read-only; wall seconds.
fn open_storm(path: &Path, count: u32, write: bool) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..count {
        let f = std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(path)?;
        drop(f);
    }
    Ok(t.elapsed().as_secs_f64())
}

/// `count` connect+accept+close on loopback; wall seconds. Accepting in the same loop keeps
/// the backlog from overflowing (an overflow means SYN retransmits: seconds of noise).
fn connect_storm(count: u32) -> Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let t = Instant::now();
    for _ in 0..count {
        let s = std::net::TcpStream::connect(addr)?;
        let (server_side, _) = listener.accept()?;
        reset_on_close(&s);
        drop(server_side);
    }
    Ok(t.elapsed().as_secs_f64())
}

/// SO_LINGER 0: close with a reset, leaving no TIME_WAIT, so ephemeral ports last the storm.
fn reset_on_close(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `workload` without and with the sensor, alternating, and reports the median ratio,
/// the events userspace handled per second of its CPU, drops and peak RSS.
fn compare(
    name: &str,
    rounds: u32,
    sensor_args: &[&str],
    mut workload: impl FnMut() -> Result<f64>,
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    workload()?; // warm caches
    let (mut ratios, mut per_core, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rss, mut drops) = (0.0f64, 0u64);
    for round in 1..=rounds.max(1) {
        let without = workload()?;
        let sensor = Sensor::start(&dir, sensor_args)?;
        let before = sensor.status()?;
        let cpu0 = cpu_secs(sensor.pid());
        let with = workload()?;
        std::thread::sleep(Duration::from_millis(300)); // let the sensor drain
        let after = sensor.status()?;
        let cpu = cpu_secs(sensor.pid()) - cpu0;
        let events = total(&after, "received") - total(&before, "received");
        drops += total(&after, "dropped") - total(&before, "dropped");
        rss = rss.max(peak_rss_mib(sensor.pid()));
        drop(sensor);
        let ratio = with / without;
        println!(
            "{name} round {round}: without {without:.3} s, with {with:.3} s, ratio {ratio:.3}, {events} events, sensor CPU {cpu:.2} s"
        );
        ratios.push(ratio);
        rates.push(events as f64 / with);
        if cpu > 0.0 {
            per_core.push(events as f64 / cpu);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("== {name}, {rounds} rounds");
    println!(
        "  wall-time ratio with/without sensor (median): {:.3}",
        median(ratios)
    );
    println!(
        "  events per second delivered (median): {:.0}",
        median(rates)
    );
    println!(
        "  events per second of sensor CPU, i.e. per core (median): {:.0}",
        median(per_core)
    );
    println!("  events dropped: {drops}");
    println!("  sensor peak RSS: {rss:.1} MiB");
    Ok(())
}

/// The empty program of `examples/hook_floor.rs`, attached to some tracepoints until dropped.
struct Floor(Child);

impl Floor {
    fn attach(targets: &[&str]) -> Result<Self> {
        use std::io::BufRead as _;
        let bin = target_dir()?.join("release/examples/hook_floor");
        let mut child = Command::new(&bin)
            .args(targets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut line = String::new();
        let out = child.stdout.take().context("hook_floor stdout")?;
        std::io::BufReader::new(out).read_line(&mut line)?;
        if line.trim() != "attached" {
            let _ = child.kill();
            bail!("hook_floor did not attach to {targets:?}");
        }
        Ok(Self(child))
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        drop(self.0.stdin.take()); // EOF: it detaches and exits
        let _ = self.0.wait();
    }
}

/// The floor under `workload`: without and with an empty program at `targets`, alternating.
fn floor(
    name: &str,
    targets: &[&str],
    rounds: u32,
    mut workload: impl FnMut() -> Result<f64>,
) -> Result<()> {
    let mut ratios = Vec::new();
    for _ in 0..rounds.max(1) {
        let without = workload()?;
        let hook = Floor::attach(targets)?;
        let with = workload()?;
        drop(hook);
        ratios.push(with / without);
    }
    println!(
        "== floor: {name}, an empty program at {}: wall-time ratio (median of {rounds}) {:.3}",
        targets.join(" + "),
        median(ratios)
    );
    Ok(())
}

fn exec(count: u32, rounds: u32) -> Result<()> {
    compare(
        &format!("exec-storm ({count} fork+exec of /bin/true)"),
        rounds,
        &[],
        || exec_storm(count),
    )
}

fn open(count: u32, rounds: u32) -> Result<()> {
    let file = tempfile_path("open-storm")?;
    std::fs::write(&file, b"x")?;
    compare(
        &format!("open-storm ({count} write-opens+close, repeats coalesced in the kernel)"),
        rounds,
        &[],
        || open_storm(&file, count, true),
    )?;
    compare(
        &format!("open-storm ({count} write-opens+close, --coalesce-ms 0: each one an event)"),
        rounds,
        &["--coalesce-ms", "0"],
        || open_storm(&file, count, true),
    )?;
    floor(
        "open-storm (write-opens+close)",
        &["syscalls/sys_exit_openat"],
        rounds,
        || open_storm(&file, count, true),
    )?;
    floor(
        "open-storm (write-opens+close), syscall tracing on but not for these calls",
        &["syscalls/sys_exit_kill"],
        rounds,
        || open_storm(&file, count, true),
    )?;
    compare(
        &format!("open-storm ({count} read-only opens+close, filtered in the kernel)"),
        rounds,
        &[],
        || open_storm(&file, count, false),
    )?;
    let _ = std::fs::remove_file(&file);
    Ok(())
}

fn connect(count: u32, rounds: u32) -> Result<()> {
    compare(
        &format!("connect-storm ({count} loopback connect+close, repeats coalesced in the kernel)"),
        rounds,
        &[],
        || connect_storm(count),
    )?;
    compare(
        &format!(
            "connect-storm ({count} loopback connect+close, --coalesce-ms 0: each one an event)"
        ),
        rounds,
        &["--coalesce-ms", "0"],
        || connect_storm(count),
    )?;
    floor(
        "connect-storm",
        &["syscalls/sys_exit_connect", "syscalls/sys_exit_accept4"],
        rounds,
        || connect_storm(count),
    )
}

fn tempfile_path(name: &str) -> Result<PathBuf> {
    Ok(std::env::temp_dir().join(format!("vigil-{name}-{}", std::process::id())))
}

fn pipeline() -> Result<()> {
    println!("== pipeline (userspace alone)");
    userspace_bench("pipeline")
}

fn rules() -> Result<()> {
    println!(
        "== rules (userspace alone; 1,000,000 events: 80% file writes, 15% connects, 5% process churn)"
    );
    userspace_bench("rules")
}

/// Simulated sensors against a real controller (`controller/benches/fleet.rs`).
fn controller(sensors: u32, deltas: u32, edges: u32) -> Result<()> {
    println!("== controller ({sensors} simulated sensors, {deltas} deltas of {edges} edges each)");
    let (sensors, deltas, edges) = (sensors.to_string(), deltas.to_string(), edges.to_string());
    controller_bench(&[&sensors, &deltas, &edges])?;
    // The same on PostgreSQL, a server of its own, for the figures side by side.
    let pg = postgres()?;
    let url = pg.database("vigil")?;
    controller_bench(&[&sensors, &deltas, &edges, "--store", &url])
}

/// The store bench (`controller/benches/store.rs`) over `edges` edges of history: the
/// embedded store, then PostgreSQL (a server of its own), their lines side by side.
fn store(edges: u64) -> Result<()> {
    let edges = edges.to_string();
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "--package", "controller", "--bench", "store", "--"];
        args.push(&edges);
        args.extend_from_slice(extra);
        crate::util::cargo(&args)
    };
    bench(&[])?;
    let pg = postgres()?;
    let url = pg.database("vigil")?;
    bench(&["--store", &url])
}

/// A PostgreSQL server of the benchmark's own (Debian's, installed first where missing),
/// stopped when dropped.
fn postgres() -> Result<vigil_tests::postgres::Postgres> {
    crate::apt::ensure(&[crate::apt::POSTGRES])?;
    vigil_tests::postgres::Postgres::start()
}

/// Fleet blocks to a fleet of simulated sensors (`controller/benches/fleet.rs fleet`).
fn fleet(sensors: u32, rounds: u32) -> Result<()> {
    println!("== fleet ({sensors} simulated sensors, {rounds} payloads blocked fleet-wide)");
    controller_bench(&["fleet", &sensors.to_string(), &rounds.to_string()])
}

/// The controller's bench binary with `args`, after a release build of the server it runs.
fn controller_bench(args: &[&str]) -> Result<()> {
    crate::util::cargo(&["build", "--release", "--package", "controller"])?;
    let mut cmd = vec!["bench", "--package", "controller", "--bench", "fleet", "--"];
    cmd.extend_from_slice(args);
    crate::util::cargo(&cmd)
}

/// The sensor-userspace bench binary, running the runs named `which`.
fn userspace_bench(which: &str) -> Result<()> {
    crate::util::cargo(&[
        "bench",
        "--package",
        "sensor-userspace",
        "--bench",
        "pipeline",
        "--",
        which,
    ])
}

/// Write-opens paced at `per_second` for `seconds`: every one is an event; none may drop.
fn rate(per_second: u32, seconds: u32) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("target");
    std::fs::write(&file, b"x")?;
    let sensor = Sensor::start(&dir, &["--coalesce-ms", "0"])?;
    let before = sensor.status()?;
    let start = Instant::now();
    let total_ops = u64::from(per_second) * u64::from(seconds);
    let mut done = 0u64;
    while done < total_ops {
        // Catch up to where the schedule says we should be, in small batches.
        let due = (start.elapsed().as_secs_f64() * f64::from(per_second)) as u64;
        let batch = due.saturating_sub(done).min(1000);
        for _ in 0..batch {
            drop(std::fs::OpenOptions::new().write(true).open(&file)?);
        }
        done += batch;
        if batch == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let achieved = done as f64 / start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let after = sensor.status()?;
    let dropped = total(&after, "dropped") - total(&before, "dropped");
    let received = total(&after, "received") - total(&before, "received");
    drop(sensor);
    let _ = std::fs::remove_dir_all(&dir);
    println!("== rate: {done} write-opens at {achieved:.0}/s for {seconds} s");
    println!("  events received: {received}, dropped: {dropped}");
    Ok(())
}

/// The sensor's resident memory with `processes` live processes on the host.
fn rss(processes: u32) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sensor = Sensor::start(&dir, &[])?;
    let idle = current_rss_mib(sensor.pid());
    // One parent forks `processes` children that wait on a pipe: no exec, little memory.
    let script = [
        "import os, sys",
        "n = int(sys.argv[1])",
        "r, w = os.pipe()",
        "kids = []",
        "for _ in range(n):",
        "    pid = os.fork()",
        "    if pid == 0:",
        "        os.close(w)",
        "        os.read(r, 1)",
        "        os._exit(0)",
        "    kids.append(pid)",
        "print('ready', flush=True)",
        "sys.stdin.read()",
        "os.close(w)",
        "for k in kids:",
        "    os.waitpid(k, 0)",
    ]
    .join("\n");
    let mut parent = Command::new("python3")
        .args(["-c", &script, &processes.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("python3 for the live processes")?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(parent.stdout.take().context("stdout")?),
        &mut line,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let st = sensor.status()?;
    let live = st["processes"]["live"].as_u64().unwrap_or(0);
    let loaded = current_rss_mib(sensor.pid());
    let peak = peak_rss_mib(sensor.pid());
    drop(parent.stdin.take());
    let _ = parent.wait();
    drop(sensor);
    let _ = std::fs::remove_dir_all(&dir);
    println!("== rss with {processes} extra live processes ({live} live in the process table)");
    println!("  sensor RSS idle {idle:.1} MiB, with them {loaded:.1} MiB, peak {peak:.1} MiB");
    Ok(())
}

/// Resident memory of a process now, in MiB.
fn current_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}
