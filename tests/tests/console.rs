//! The console in a real headless browser (Debian's Chromium, driven by playwright-core),
//! against a real controller and a real sensor enrolled with it: an operator logs in, sees
//! the host, watches a real attack's incident appear live with its story drawn, approves the
//! isolation that waits for a person, sees it journaled on the host, and undoes it.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_tests::{
    fleet::{Controller, enrolled},
    kernel_tests_enabled,
    net::{Cgroup, Peer, probe, reaches, reverse_shell},
};

const CHROMIUM: &str = "/usr/bin/chromium";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// The browser script's lines, one at a time, each within `EVERY`.
struct Script {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

const EVERY: Duration = Duration::from_secs(120);

impl Script {
    /// Waits for the script's `STEP name` line; returns what follows the name.
    fn step(&mut self, name: &str) -> String {
        let deadline = Instant::now() + EVERY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("the browser never reached {name}; it said {:#?}", self.seen)
            });
            self.seen.push(line.clone());
            if let Some(why) = line.strip_prefix("FAIL ") {
                panic!(
                    "in the browser, before {name}: {why}; it said {:#?}",
                    self.seen
                );
            }
            if let Some(rest) = line.strip_prefix(&format!("STEP {name}")) {
                return rest.trim().to_owned();
            }
        }
    }

    fn go_on(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("the script's stdin");
        stdin.write_all(b"go\n").expect("tell the browser to go on");
        stdin.flush().expect("flush");
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn journal(sensor: &vigil_tests::Sensor) -> Vec<Value> {
    sensor.actions()
}

fn wait_journal(sensor: &vigil_tests::Sensor, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = journal(sensor);
        if let Some(r) = all.iter().find(|r| pred(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in the journal {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_attack_appears_live_in_the_console_and_its_isolation_is_approved_and_undone_there() {
    const TEST: &str =
        "an_attack_appears_live_in_the_console_and_its_isolation_is_approved_and_undone_there";
    if !kernel_tests_enabled(TEST) {
        return;
    }
    if !vigil_tests::program_installed(TEST, CHROMIUM, "chromium") {
        return;
    }
    let script = workspace().join("controller/console/tests/e2e.mjs");
    assert!(
        workspace()
            .join("controller/console/node_modules/playwright-core")
            .exists(),
        "the console's packages are missing: `cargo xtask console` installs them"
    );
    let _one = vigil_tests::one_at_a_time();
    let c = Controller::start_with_console().expect("controller");
    let password = c.operator("ana", "responder");
    let cg = Cgroup::create();
    // The shipped policy, as a user runs it: the reverse shell is killed and its C2 blocked
    // on the host's own; isolating the host waits for a person.
    let (sensor, host) = enrolled(&c, &cg, None);
    let (kept, c2) = (7131, 7132);
    let peer = Peer::with(&[kept], &[c2]);

    let shots = workspace().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let mut child = Command::new("node")
        .arg(&script)
        .env("VIGIL_URL", c.console_url())
        .env("VIGIL_NAME", "ana")
        .env("VIGIL_PASSWORD", &password)
        .env("VIGIL_HOST", &host)
        .env("VIGIL_CHROMIUM", CHROMIUM)
        .env("VIGIL_SHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node with the browser script");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut browser = Script {
        child,
        lines: rx,
        seen: Vec::new(),
    };

    browser.step("fleet");
    browser.step("watching");
    // The attack, while the operator watches the incidents page.
    let shell = reverse_shell(&cg, &peer.addr, c2);
    assert!(!shell.success(), "the sensor killed the shell: {shell:?}");
    browser.go_on();
    browser.step("incident-listed");
    let graph: Value = serde_json::from_str(&browser.step("graph")).expect("graph JSON");
    assert!(
        graph["nodes"].as_u64() >= Some(2),
        "the story is drawn: {graph}"
    );

    // Approved in the browser: carried out on the host and journaled with who approved.
    browser.step("approved");
    let isolation = wait_journal(&sensor, "the isolation", |r| {
        r["action"] == "isolate" && r["status"] == "done"
    });
    let by = isolation.to_string();
    assert!(
        by.contains("ana (console)"),
        "the journal names the approver: {isolation}"
    );
    assert!(
        !reaches(&probe(&cg, &peer.addr, &[kept]), kept),
        "the host is isolated once approved"
    );
    browser.go_on();

    // Undone in the browser: the host is released and the journal says so.
    browser.step("undone");
    let id = isolation["id"].as_str().expect("id").to_owned();
    wait_journal(&sensor, "the undo of the isolation", |r| {
        r["action"] == "undo" && r["settles"] == id.as_str() && r["status"] == "done"
    });
    assert!(
        reaches(&probe(&cg, &peer.addr, &[kept]), kept),
        "the host reaches the network again"
    );
    browser.step("done");
    let status = browser.child.wait().expect("the browser script");
    assert!(status.success(), "{:#?}", browser.seen);
    for page in [
        "fleet",
        "incidents",
        "incident",
        "approved",
        "undone",
        "audit",
    ] {
        let png = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "{} is a real screenshot ({size} bytes)",
            png.display()
        );
    }
    // The operator's clicks are in the controller's audit log, by name, with their outcome.
    let audit: Vec<Value> = String::from_utf8_lossy(&c.ctl(&["audit"]).stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line"))
        .collect();
    for op in ["approve", "undo"] {
        assert!(
            audit.iter().any(|e| e["who"] == "ana (console)"
                && e["outcome"] == "ok"
                && e["command"]
                    .as_str()
                    .is_some_and(|c| c.contains(&format!("\"op\":\"{op}\"")))),
            "{op} by ana in the audit: {audit:#?}"
        );
    }
}
