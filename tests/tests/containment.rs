//! Network containment and freezing on the real kernel: host isolation, destination blocks
//! and the cgroup freezer, with real sockets to a peer in a network namespace the test makes.
//!
//! The sensor's network programs attach to a cgroup the test creates (`--cgroup`), and the
//! "host" under test is the processes the test puts in it: isolating the real cgroup root would
//! cut this machine's own traffic. Every peer lives in a network namespace reached over a veth
//! pair, so the isolated side has a real route to reach or be refused.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_tests::{
    Sensor, kernel_tests_enabled,
    net::{Cgroup, Held, PROBE, Peer, probe, reaches, reverse_shell},
};

/// Runs an order and returns the id of the action it journaled.
fn order(s: &Sensor, args: &[&str]) -> String {
    let out = s.ctl(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace()
        .next()
        .expect("an action id")
        .to_owned()
}

fn journal(s: &Sensor) -> Vec<Value> {
    s.actions()
}

fn record(s: &Sensor, id: &str) -> Value {
    journal(s)
        .into_iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no record {id}"))
}

fn network_status(s: &Sensor) -> Value {
    s.status().expect("status")["actions"]["network"].clone()
}

/// The shipped policy in observe mode, with `allow` reachable during isolation.
fn policy_allowing(dir: &Path, allow: &str) -> PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml"),
    )
    .expect("shipped policy");
    let text = shipped
        .replace("mode = \"contain\"", "mode = \"observe\"")
        .replace("allow = []", &format!("allow = [\"{allow}\"]"));
    assert_ne!(text, shipped);
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).expect("write policy");
    path
}

#[test]
fn isolation_leaves_only_loopback_and_the_allowed_peer_survives_a_restart_and_undoes() {
    if !kernel_tests_enabled("isolation") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let (allowed, other) = (7101, 7102);
    let peer = Peer::new(&[allowed, other]);
    let cg = Cgroup::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_allowing(dir.path(), &format!("{}:{allowed}", peer.addr));
    let local = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let local_port = local.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in local.incoming().take(8).flatten() {
            let mut c = c;
            let mut b = [0u8; 1];
            if std::io::Read::read_exact(&mut c, &mut b).is_ok() {
                let _ = c.write_all(&b);
            }
        }
    });
    let sensor = Sensor::start_with(&[
        "--cgroup",
        cg.arg(),
        "--policy",
        policy.to_str().expect("utf-8"),
    ])
    .expect("sensor");

    let before = probe(&cg, &peer.addr, &[allowed, other]);
    assert!(
        reaches(&before, allowed) && reaches(&before, other),
        "{before:?}"
    );
    let mut held = Held::open(&cg, &peer.addr, other);
    // Nothing in force: the programs are loaded but attached nowhere, costing no packet.
    assert_eq!(network_status(&sensor)["attached"], false);

    let id = order(
        &sensor,
        &["isolate", "--reason", "test: intruder on the host"],
    );
    let rec = record(&sensor, &id);
    assert_eq!(rec["action"], "isolate");
    assert_eq!(rec["status"], "done", "{rec}");
    assert_eq!(rec["undo"]["how"], "end_isolation");
    assert!(rec["reason"].as_str().unwrap_or("").contains("intruder"));

    let during = probe(&cg, &peer.addr, &[allowed, other]);
    assert!(reaches(&during, allowed), "the allowed peer: {during:?}");
    assert!(
        during
            .iter()
            .any(|(p, r)| *p == other && r.contains("Operation not permitted")),
        "a new connection elsewhere is refused at connect: {during:?}"
    );
    assert!(
        reaches(&probe(&cg, "127.0.0.1", &[local_port]), local_port),
        "loopback stays reachable"
    );
    let cut = held.echo();
    assert!(cut.starts_with("cut"), "an open connection is cut: {cut}");
    // Only the watched cgroup is isolated: this test process, outside it, still reaches.
    let outside = std::net::TcpStream::connect_timeout(
        &format!("{}:{other}", peer.addr).parse().expect("addr"),
        Duration::from_secs(2),
    );
    assert!(outside.is_ok(), "outside the cgroup: {outside:?}");
    let net = network_status(&sensor);
    assert_eq!(net["isolated"], true);
    assert_eq!(net["attached"], true, "{net}");
    assert!(net["connects_refused"].as_u64().unwrap_or(0) >= 1, "{net}");
    assert!(net["packets_dropped"].as_u64().unwrap_or(0) >= 1, "{net}");

    // A restart never lifts the isolation.
    let sensor = sensor
        .restart(&[
            "--cgroup",
            cg.arg(),
            "--policy",
            policy.to_str().expect("utf-8"),
        ])
        .expect("restart");
    let after_restart = probe(&cg, &peer.addr, &[allowed, other]);
    assert!(
        reaches(&after_restart, allowed) && !reaches(&after_restart, other),
        "after a restart: {after_restart:?}\n{}",
        sensor.log()
    );
    assert_eq!(network_status(&sensor)["isolated"], true);
    assert!(sensor.status().expect("status")["actions"]["restored"].as_u64() >= Some(1));

    let undo = order(&sensor, &["undo", &id]);
    assert_eq!(record(&sensor, &undo)["status"], "done");
    let released = probe(&cg, &peer.addr, &[allowed, other]);
    assert!(
        reaches(&released, allowed) && reaches(&released, other),
        "full reach after the undo: {released:?}"
    );
    let net = network_status(&sensor);
    assert_eq!(net["isolated"], false);
    assert_eq!(
        net["attached"], false,
        "detached once nothing is in force: {net}"
    );
}

#[test]
fn destination_blocks_host_wide_and_for_one_tree() {
    if !kernel_tests_enabled("destination block") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let (kept, blocked) = (7111, 7112);
    let peer = Peer::new(&[kept, blocked]);
    let cg = Cgroup::create();
    let sensor = Sensor::start_with(&["--cgroup", cg.arg()]).expect("sensor");

    let mut held = Held::open(&cg, &peer.addr, blocked);
    let id = order(
        &sensor,
        &[
            "block",
            &format!("{}:{blocked}", peer.addr),
            "--reason",
            "test: C2 endpoint",
        ],
    );
    let rec = record(&sensor, &id);
    assert_eq!(rec["action"], "block_destination");
    assert_eq!(rec["target"]["type"], "destination");
    assert_eq!(rec["undo"]["how"], "lift_block");
    let during = probe(&cg, &peer.addr, &[kept, blocked]);
    assert!(
        reaches(&during, kept) && !reaches(&during, blocked),
        "{during:?}"
    );
    assert!(held.echo().starts_with("cut"), "the open connection is cut");
    // Loopback is never blocked: refused and said.
    let lo = sensor.ctl(&["block", "127.0.0.1:22", "--reason", "test"]);
    assert!(!lo.status.success());
    assert!(String::from_utf8_lossy(&lo.stderr).contains("loopback"));
    order(&sensor, &["undo", &id]);
    let lifted = probe(&cg, &peer.addr, &[kept, blocked]);
    assert!(reaches(&lifted, blocked), "{lifted:?}");

    // For one tree: a process that probes when told, and its child born after the block.
    let tree_code = format!(
        "import subprocess, sys\n\
         sys.stdin.readline()\n\
         print(subprocess.run([sys.executable, '-c', {PROBE:?}, {addr:?}, '{kept}'], \
         capture_output=True, text=True).stdout.strip(), flush=True)\n",
        addr = peer.addr,
    );
    let mut tree = cg.python(&tree_code, &[]);
    let tree_pid = tree.id().to_string();
    // Give sh time to exec python (the pid is the same; the sensor sees the live process).
    std::thread::sleep(Duration::from_millis(300));
    let id = order(
        &sensor,
        &[
            "block",
            &format!("{}:{kept}", peer.addr),
            "--pid",
            &tree_pid,
            "--reason",
            "test: this tree only",
        ],
    );
    let rec = record(&sensor, &id);
    assert_eq!(rec["status"], "done", "{rec}");
    let group = rec["undo"]["group"]["path"]
        .as_str()
        .expect("a group")
        .to_owned();
    assert!(group.starts_with(cg.arg()), "{group}");
    let stdin = tree.stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("write");
    let out = tree.wait_with_output().expect("tree output");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("{kept} fail")),
        "the tree's child is refused: {said}"
    );
    let others = probe(&cg, &peer.addr, &[kept]);
    assert!(
        reaches(&others, kept),
        "the rest of the host is not: {others:?}"
    );
    order(&sensor, &["undo", &id]);
    assert!(!Path::new(&group).exists(), "the tree's cgroup is removed");
}

#[test]
fn freeze_stops_a_tree_and_its_later_children_and_undo_thaws_it() {
    if !kernel_tests_enabled("freeze") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let cg = Cgroup::create();
    let sensor = Sensor::start_with(&["--cgroup", cg.arg()]).expect("sensor");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("parent"), dir.path().join("child"));
    // A parent and a child, each appending a line every 20 ms.
    let code = format!(
        "import os, time\n\
         path = {b:?} if os.fork() == 0 else {a:?}\n\
         for i in range(3000):\n\
         \x20   open(path, 'a').write('x')\n\
         \x20   time.sleep(0.02)\n",
        a = a.to_string_lossy(),
        b = b.to_string_lossy(),
    );
    let mut tree = cg.python(&code, &[]);
    let pid = tree.id().to_string();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while size(&a) < 3 || size(&b) < 3 {
        assert!(Instant::now() < deadline, "the tree did not start writing");
        std::thread::sleep(Duration::from_millis(20));
    }

    let id = order(&sensor, &["freeze", &pid, "--reason", "test: investigate"]);
    let rec = record(&sensor, &id);
    assert_eq!(rec["status"], "done", "{rec}");
    assert_eq!(
        rec["undo"]["how"], "thaw",
        "the cgroup freezer was used: {rec}"
    );
    let group = PathBuf::from(rec["undo"]["group"]["path"].as_str().expect("group"));
    let events = std::fs::read_to_string(group.join("cgroup.events")).expect("events");
    assert!(events.contains("frozen 1"), "{events}");
    let (sa, sb) = (size(&a), size(&b));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (size(&a), size(&b)),
        (sa, sb),
        "neither the process nor its child runs while frozen"
    );

    // A block for the same tree joins its group; lifting the block leaves the freeze alone.
    let block = order(
        &sensor,
        &[
            "block",
            "192.0.2.1:9",
            "--pid",
            &pid,
            "--reason",
            "test: and cut",
        ],
    );
    assert_eq!(
        record(&sensor, &block)["undo"]["group"]["path"],
        rec["undo"]["group"]["path"]
    );
    order(&sensor, &["undo", &block]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (size(&a), size(&b)),
        (sa, sb),
        "still frozen after the block that shared its group is lifted"
    );
    assert!(group.exists(), "the freeze still holds its group");

    order(&sensor, &["undo", &id]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while size(&a) <= sa || size(&b) <= sb {
        assert!(Instant::now() < deadline, "the tree did not resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!group.exists(), "the freezer group is removed");
    let _ = tree.kill();
    let _ = tree.wait();
}

/// A cgroup that only looks like one of the sensor's (named `vigil-*`) is not taken for one:
/// freezing a process in it freezes that process's tree alone, in a group of the sensor's
/// own, and the undo leaves the foreign group where it was.
#[test]
fn a_foreign_vigil_named_cgroup_is_never_taken_for_the_sensors_own() {
    if !kernel_tests_enabled("a_foreign_vigil_named_cgroup_is_never_taken_for_the_sensors_own") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let cg = Cgroup::create();
    let foreign = cg.path.join("vigil-foreign");
    std::fs::create_dir(&foreign).expect("make the foreign group");
    let sensor = Sensor::start_with(&["--cgroup", cg.arg()]).expect("sensor");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = |path: &Path| {
        let code = format!(
            "import time\nfor i in range(3000):\n    open({:?}, 'a').write('x')\n    time.sleep(0.02)\n",
            path.to_string_lossy()
        );
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec python3 -c \"$0\"",
                foreign.display()
            ))
            .arg(code)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn a writer in the foreign group")
    };
    let (target, bystander) = (dir.path().join("target"), dir.path().join("bystander"));
    let mut t = writer(&target);
    let mut b = writer(&bystander);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while size(&target) < 3 || size(&bystander) < 3 {
        assert!(Instant::now() < deadline, "the writers did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let id = order(
        &sensor,
        &["freeze", &t.id().to_string(), "--reason", "test"],
    );
    let rec = record(&sensor, &id);
    assert_eq!(rec["status"], "done", "{rec}");
    let group = PathBuf::from(rec["undo"]["group"]["path"].as_str().expect("group"));
    assert_ne!(
        group, foreign,
        "the foreign group was taken for the sensor's: {rec}"
    );
    assert_eq!(rec["undo"]["group"]["created"], true, "{rec}");
    let (st, sb) = (size(&target), size(&bystander));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(size(&target), st, "the target is frozen");
    assert!(
        size(&bystander) > sb,
        "the bystander in the foreign group runs on"
    );
    let foreign_events =
        std::fs::read_to_string(foreign.join("cgroup.events")).expect("foreign events");
    assert!(foreign_events.contains("frozen 0"), "{foreign_events}");

    order(&sensor, &["undo", &id]);
    assert!(foreign.is_dir(), "the undo left the foreign group alone");
    let procs = std::fs::read_to_string(foreign.join("cgroup.procs")).expect("procs");
    assert!(
        procs.lines().any(|p| p == t.id().to_string()),
        "the thawed target is back in its own group: {procs}"
    );
    for c in [&mut t, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn a_reverse_shell_to_a_remote_peer_gets_its_destination_blocked_and_isolation_waits_for_approval()
{
    if !kernel_tests_enabled("reverse shell containment") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let (kept, c2) = (7121, 7122);
    let peer = Peer::with(&[kept], &[c2]);
    let cg = Cgroup::create();
    // The shipped policy, as a user runs it: contain, isolation only with approval.
    let sensor = Sensor::start_containing(&["--cgroup", cg.arg()]).expect("sensor");

    let status = reverse_shell(&cg, &peer.addr, c2);
    let deadline = Instant::now() + Duration::from_secs(15);
    let block = loop {
        let all = journal(&sensor);
        if let Some(b) = all
            .iter()
            .find(|r| r["action"] == "block_destination" && r["status"] == "done")
        {
            break b.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no destination block; journal: {all:?}; alerts: {:?}",
            sensor.alerts()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "the shell was killed: {status:?}");
    assert_eq!(block["target"]["addr"], peer.addr.as_str(), "{block}");
    assert_eq!(block["target"]["port"], c2, "{block}");
    let during = probe(&cg, &peer.addr, &[kept, c2]);
    assert!(
        reaches(&during, kept) && !reaches(&during, c2),
        "only the C2 endpoint is refused: {during:?}"
    );

    let incident = block["incident"].as_str().expect("incident").to_owned();
    let all = journal(&sensor);
    let pending = all
        .iter()
        .find(|r| r["action"] == "isolate" && r["incident"] == incident.as_str())
        .unwrap_or_else(|| panic!("an isolation is planned: {all:?}"));
    assert_eq!(pending["status"], "pending", "{pending}");
    assert!(
        reaches(&probe(&cg, &peer.addr, &[kept]), kept),
        "not isolated before approval"
    );

    let approved = sensor.ctl(&["approve", &incident]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let isolation = journal(&sensor)
        .into_iter()
        .find(|r| r["action"] == "isolate" && r["status"] == "done")
        .expect("isolated once approved");
    assert!(
        !reaches(&probe(&cg, &peer.addr, &[kept]), kept),
        "isolated once approved"
    );
    for id in [&isolation["id"], &block["id"]] {
        order(&sensor, &["undo", id.as_str().expect("id")]);
    }
    let released = probe(&cg, &peer.addr, &[kept]);
    assert!(reaches(&released, kept), "{released:?}");
}
