//! Helpers for the end-to-end tests of detection rules: a sensor on the shipped rules, a
//! technique run under its own shell, and the alert it must raise (and its near miss must
//! not).

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{Sensor, alert_below, kernel_tests_enabled};

/// A sensor on the shipped rules (no `--rules`: the built-in copy of deploy/rules), in
/// observe mode ([`Sensor::start`]): containment has its own tests (response.rs). None, said
/// on standard error, when kernel tests cannot run.
pub fn sensor(test: &str) -> Option<Sensor> {
    if !kernel_tests_enabled(test) {
        return None;
    }
    let s = Sensor::start().expect("sensor starts");
    let loaded = s.status().expect("status")["detection"]["behaviour_rules"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        loaded >= 15,
        "the shipped behaviour rules are loaded: {loaded}"
    );
    Some(s)
}

/// Runs `script` under `sh -c` to completion, printing what it said; the shell's pid and
/// how it ended.
fn sh(script: &str) -> (u32, std::process::Output) {
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait sh");
    eprintln!(
        "sh pid {pid} ({}): {script}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (pid, out)
}

/// Runs `script` under `sh -c` to completion; returns the shell's pid.
pub fn run(script: &str) -> u32 {
    sh(script).0
}

/// Runs a near miss under `sh -c` and asserts that it did what it was meant to (the shell
/// exited 0), so the silence asserted after it is about something that really ran; returns
/// the shell's pid.
pub fn run_ok(script: &str) -> u32 {
    let (pid, out) = sh(script);
    assert!(
        out.status.success(),
        "the near miss did not run ({}): {script}",
        out.status
    );
    pid
}

/// Waits for `rule`'s alert on `real`'s tree; asserts it is the only one there and that the
/// near miss (`near`, run before) raised none of it.
pub fn expect_rule(sensor: &Sensor, rule: &str, real: u32, near: Option<u32>) -> Value {
    let alert = sensor.wait_alert(&format!("{rule} below pid {real}"), |a| {
        a["rule"]["id"] == rule && alert_below(a, real)
    });
    let all = sensor.alerts();
    let of = |root: u32| {
        all.iter()
            .filter(|a| a["rule"]["id"] == rule && alert_below(a, root))
            .count()
    };
    assert_eq!(of(real), 1, "exactly one {rule} alert for the real thing");
    if let Some(near) = near {
        assert_eq!(of(near), 0, "the near miss raised {rule}");
    }
    assert_eq!(alert["rule"]["source"], "behaviour");
    assert!(alert["risk"]["score"].as_u64().is_some_and(|r| r > 0));
    assert!(
        alert["incident"]
            .as_str()
            .is_some_and(|i| i.starts_with("inc-"))
    );
    assert!(!alert["evidence"].as_array().is_none_or(Vec::is_empty));
    alert
}

/// A fresh temporary directory for one test's files.
pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vigil-e2e-r-")
        .tempdir()
        .expect("tempdir")
}

/// `name` inside `d`, as a string for a shell command.
pub fn path(d: &tempfile::TempDir, name: &str) -> String {
    d.path().join(name).to_string_lossy().into_owned()
}
