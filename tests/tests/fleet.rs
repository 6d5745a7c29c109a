//! The fleet acting on its own, with real sensors over real QUIC, a real command-and-control
//! peer in a network namespace and real HTTP receivers: an incident on one host blocks its
//! payload and its C2 on every other host, hunts the fleet for them (a host offline at the
//! time included), and reaches people in three formats.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_tests::{
    fleet::{Controller, enrolled, host_group},
    http::Receiver,
    kernel_tests_enabled,
    net::{Cgroup, Peer, probe, reaches},
};

fn wait<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_or(what, &String::new, f)
}

/// Waits (bounded) for `f`; fails with `why()` when it never comes.
fn wait_or<T>(what: &str, why: &dyn Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            why()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `vigil-controller ARGS`, which must succeed; its stdout.
fn ctl_ok(c: &Controller, args: &[&str]) -> String {
    let out = c.ctl(args);
    assert!(
        out.status.success(),
        "vigil-controller {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The payload every host sees: a script that works for a while, then leaves a mark.
fn payload_text(marker: &Path) -> String {
    format!("#!/bin/sh\nsleep 2\necho ran >> {}\n", marker.display())
}

/// Fetches from the C2 (`addr`, `port`), writes the payload to `path`, makes it executable
/// and runs it; prints its exit code.
const DROPPER: &str = r#"
import os, socket, subprocess, sys
addr, port, path, text = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    socket.create_connection((addr, port), timeout=2).close()
except OSError:
    pass
with open(path, "w") as f:
    f.write(text)
os.chmod(path, 0o755)
print(subprocess.call([path]), flush=True)
"#;

fn run_dropper(cg: &Cgroup, c2: &str, port: u16, path: &Path, text: &str) -> i32 {
    let out = cg
        .python(
            DROPPER,
            &[c2, &port.to_string(), path.to_str().expect("utf-8"), text],
        )
        .wait_with_output()
        .expect("dropper");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(i32::MIN)
}

#[test]
fn an_incident_on_one_host_blocks_its_payload_and_c2_everywhere_hunts_the_fleet_and_reaches_people()
{
    if !kernel_tests_enabled("fleet autonomy") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let c = Controller::start().expect("controller");
    let (hook, chat, pager) = (Receiver::start(0), Receiver::start(2), Receiver::start(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet_policy = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet_policy,
        format!(
            "version = 7\n\n[autonomy]\nmin_severity = \"high\"\nblock_payloads = true\n\
             block_endpoints = true\nisolate_matches = false\nblock_ttl_secs = 3600\n\n\
             [approval]\ndeadline_secs = 600\non_timeout = \"stay_pending\"\n\n\
             [[escalate]]\nname = \"siem\"\nkind = \"webhook\"\nurl = \"{}\"\nmin_severity = \"high\"\n\n\
             [[escalate]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\nmin_severity = \"high\"\n\n\
             [[escalate]]\nname = \"oncall\"\nkind = \"pagerduty\"\nurl = \"{}\"\n\
             min_severity = \"critical\"\nrouting_key = \"r-key\"\n",
            hook.url("/falco"),
            chat.url("/slack"),
            pager.url("/v2/enqueue")
        ),
    )
    .expect("fleet policy");
    let shown = ctl_ok(
        &c,
        &["fleet-policy", "set", fleet_policy.to_str().expect("utf-8")],
    );
    assert!(shown.contains("version 7"), "{shown}");
    // A bad fleet policy is refused whole, and the one in force stays.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 8\n[autonomy]\nblock_everything = true\n").expect("bad");
    let refused = c.ctl(&["fleet-policy", "set", bad.to_str().expect("utf-8")]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("block_everything"));
    assert!(ctl_ok(&c, &["fleet-policy", "show"]).contains("version 7"));

    // Host A asks a person before it kills or quarantines (only destination blocks run on
    // their own): the pending actions are approved from the controller below.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml"),
    )
    .expect("shipped policy");
    let ask_first = dir.path().join("ask-first.toml");
    let line = shipped
        .lines()
        .find(|l| l.starts_with("without_approval"))
        .expect("without_approval in the shipped policy");
    std::fs::write(
        &ask_first,
        shipped.replace(line, "without_approval = [\"block_destination\"]"),
    )
    .expect("policy");

    let port = 8080; // a common port: the C2's traffic alone raises nothing
    let c2 = Peer::new(&[port]);
    let parent = Cgroup::create();
    let (cg_a, cg_b, cg_c) = (
        host_group(&parent, "a"),
        host_group(&parent, "b"),
        host_group(&parent, "c"),
    );
    let (sensor_a, a) = enrolled(&c, &cg_a, Some(&ask_first));
    let (sensor_b, b) = enrolled(&c, &cg_b, None);
    let (mut sensor_c, host_c) = enrolled(&c, &cg_c, None);
    assert!(a != b && b != host_c && a != host_c);

    // Host C talked to the C2 last week (here: before it went offline); its history holds it.
    assert!(reaches(&probe(&cg_c, &c2.addr, &[port]), port));
    let query = format!("connections where addr = {} and port = {port}", c2.addr);
    wait("C's connection in the fleet's history", || {
        json_lines(&ctl_ok(&c, &["hunt", &query]))
            .iter()
            .any(|h| h["host"] == host_c.as_str())
            .then_some(())
    });
    sensor_c.stop().expect("host C goes offline");
    assert!(
        reaches(&probe(&cg_b, &c2.addr, &[port]), port),
        "B reaches the C2 before"
    );

    // The attack on A: fetch from the C2, drop, chmod, run.
    let stage = dir.path().join("stage");
    std::fs::create_dir_all(&stage).expect("stage");
    let marker = dir.path().join("marker");
    let text = payload_text(&marker);
    let started = Instant::now();
    run_dropper(&cg_a, &c2.addr, port, &stage.join("payload-a"), &text);
    let alert = sensor_a.wait_alert("the download-and-run on A", |a| {
        a["rule"]["id"] == "vigil-download-chmod-exec"
    });
    let incident = alert["incident"].as_str().expect("incident").to_owned();
    assert!(
        alert["payloads"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["sha256"].is_string())),
        "the alert carries the payload's hash: {alert}"
    );

    // Within seconds, every connected host holds both blocks, each naming A's incident.
    let blocks = wait_or(
        "both fleet blocks in force on B",
        &|| format!("{}\n{}", ctl_ok(&c, &["blocks", "--json"]), c.log()),
        || {
            let blocks = json_lines(&ctl_ok(&c, &["blocks", "--json"]));
            let on_b = |kind: &str| {
                blocks.iter().any(|x| {
                    x["block"]["incident"] == incident.as_str()
                        && x["block"]["what"]["kind"] == kind
                        && x["hosts"][&b]
                            .as_str()
                            .is_some_and(|o| o.starts_with("done"))
                })
            };
            (on_b("hash") && on_b("destination")).then_some(blocks)
        },
    );
    eprintln!(
        "fleet blocks in force on B {:?} after the attack",
        started.elapsed()
    );
    assert!(
        blocks
            .iter()
            .any(|x| x["block"]["what"]["addr"] == format!("{}:{port}", c2.addr)),
        "the C2 endpoint is blocked: {blocks:?}"
    );
    let b_actions: Vec<Value> = c
        .records("actions")
        .into_iter()
        .filter(|r| r["host"] == b.as_str() && r["body"]["incident"] == incident.as_str())
        .map(|r| r["body"].clone())
        .collect();
    assert!(
        b_actions.len() >= 2
            && b_actions.iter().all(|r| r["expires_ns"].as_u64().is_some()
                && r["reason"].as_str().is_some_and(|t| t.contains(&a))
                && r["policy_clause"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("fleet policy"))),
        "B journals each block with A's incident, its clause and its expiry: {b_actions:?}"
    );

    // B refuses the C2, and kills a renamed copy of the payload at its exec.
    assert!(
        !reaches(&probe(&cg_b, &c2.addr, &[port]), port),
        "B refuses the C2"
    );
    let code = run_dropper(&cg_b, &c2.addr, port, &stage.join("renamed-on-b"), &text);
    assert_eq!(
        code,
        -9,
        "the copy on B is killed (SIGKILL)\n{}",
        sensor_b.log()
    );
    let killed = sensor_b.wait_alert("the blocked copy on B", |a| {
        a["rule"]["id"] == "vigil-exec-blocked"
    });
    assert!(
        killed["process"]["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("renamed-on-b"))
    );

    // Host C comes back: it gets the blocks it missed, and the retro-hunt has found its
    // history and opened an incident on it joined to A's.
    let addr = c.addr.to_string();
    let sensor_c = sensor_c
        .resume(&[
            "--cgroup",
            cg_c.arg(),
            "--scope-cgroup",
            cg_c.arg(),
            "--controller",
            &addr,
        ])
        .expect("host C back");
    wait("the blocks on C after it reconnects", || {
        let blocks = json_lines(&ctl_ok(&c, &["blocks", "--json"]));
        blocks
            .iter()
            .filter(|x| x["block"]["incident"] == incident.as_str())
            .all(|x| {
                x["hosts"][&host_c]
                    .as_str()
                    .is_some_and(|o| o.starts_with("done"))
            })
            .then_some(())
    });
    assert!(
        !reaches(&probe(&cg_c, &c2.addr, &[port]), port),
        "C refuses the C2 too"
    );
    let incidents = json_lines(&ctl_ok(&c, &["incidents", "--json"]));
    let on_c = incidents
        .iter()
        .find(|i| i["host"] == host_c.as_str() && i["source"] == "hunt")
        .unwrap_or_else(|| panic!("a hunt incident on C: {incidents:?}"));
    assert!(on_c["rules"].to_string().contains(&c2.addr), "{on_c}");
    let on_a = incidents
        .iter()
        .find(|i| i["id"] == incident.as_str())
        .expect("A's incident at the controller");
    let steps = on_a["fleet_steps"].as_array().expect("fleet steps");
    let step = |s: &str| steps.iter().filter(|x| x["step"] == s).count();
    assert!(
        step("told") >= 3 && step("blocked") >= 2 && step("hunted") >= 2,
        "A's incident explains what the fleet did: {steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|x| x["step"] == "hunted"
                && x["detail"].as_str().is_some_and(|d| d.contains(&host_c))),
        "the retro-hunt names the host it found: {steps:?}"
    );

    // People were told, each in their receiver's own format; the failing one was retried.
    let siem = wait("the webhook delivery", || hook.requests().first().cloned());
    assert_eq!(siem.path, "/falco");
    for k in [
        "uuid",
        "time",
        "rule",
        "priority",
        "output",
        "source",
        "hostname",
        "tags",
        "output_fields",
    ] {
        assert!(
            siem.body.get(k).is_some(),
            "falcosidekick reads {k}: {}",
            siem.body
        );
    }
    assert_eq!(siem.body["priority"], "Critical");
    assert_eq!(
        siem.body["output_fields"]["vigil.incident"],
        incident.as_str()
    );
    let page = wait("the PagerDuty trigger", || {
        pager.requests().first().cloned()
    });
    assert_eq!(page.body["event_action"], "trigger");
    assert_eq!(page.body["dedup_key"], incident.as_str());
    assert_eq!(page.body["routing_key"], "r-key");
    let slack = wait("the Slack message after two failures", || {
        let r = chat.requests();
        (r.len() >= 3).then_some(r)
    });
    assert_eq!(
        slack.iter().map(|r| r.status).collect::<Vec<_>>()[..3],
        [500, 500, 200]
    );
    assert!(
        slack[2].body["text"]
            .as_str()
            .is_some_and(|t| t.contains(&incident))
    );
    let audit = ctl_ok(&c, &["audit"]);
    assert!(
        audit.contains("failed (attempt 1 of 5)")
            && audit.contains("delivered (HTTP 200, attempt 3 of 5)"),
        "deliveries and failures are audited: {audit}"
    );
    let counts = ctl_ok(&c, &["notifications"]);
    // (B's own incident, the blocked copy, is told too.)
    assert!(
        counts.lines().any(|l| l.starts_with("chat: ")
            && l.ends_with(" delivered, 2 failed attempt(s), 0 dead letter(s)")),
        "{counts}"
    );

    // A's kill and quarantine waited for a person: approved from the controller, they run
    // on A and are journaled there with who approved them.
    let approved = json_lines(&ctl_ok(&c, &["approve", &a, &incident]));
    assert!(
        approved
            .iter()
            .any(|r| r["action"] == "quarantine" && r["status"] == "done"),
        "{approved:?}"
    );
    assert!(
        approved.iter().all(|r| r["requested_by"]
            .as_str()
            .is_some_and(|w| w.contains("controller"))),
        "{approved:?}"
    );
    assert!(
        !stage.join("payload-a").exists(),
        "the payload on A is in the vault"
    );

    // Each block has an undo: B's destination block undone from the controller, B reaches
    // the C2 again.
    let dest = b_actions
        .iter()
        .find(|r| r["action"] == "block_destination")
        .and_then(|r| r["id"].as_str())
        .expect("B's destination block");
    let undone = json_lines(&ctl_ok(&c, &["undo", &b, dest]));
    assert_eq!(undone[0]["settles"], dest);
    assert_eq!(undone[0]["status"], "done", "{undone:?}");
    // B's own incident (the copy it killed) blocked the same C2 for itself: undone too, B
    // reaches it again.
    let journal = vigil_tests::sensor_cmd(&[
        "actions",
        "--json",
        "--state",
        &sensor_b.state().to_string_lossy(),
    ]);
    assert!(journal.status.success());
    let journal = json_lines(&String::from_utf8_lossy(&journal.stdout));
    let settled: Vec<&str> = journal
        .iter()
        .filter_map(|r| r["settles"].as_str())
        .collect();
    for r in journal.iter().filter(|r| {
        r["action"] == "block_destination"
            && r["status"] == "done"
            && r["id"].as_str().is_some_and(|id| !settled.contains(&id))
    }) {
        ctl_ok(&c, &["undo", &b, r["id"].as_str().expect("id")]);
    }
    assert!(
        reaches(&probe(&cg_b, &c2.addr, &[port]), port),
        "B reaches the C2 once its blocks are undone"
    );
    drop((sensor_a, sensor_b, sensor_c));
}
