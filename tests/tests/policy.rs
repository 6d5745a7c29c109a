//! The policy: refused whole with the key and the reason, the running sensor keeping the one
//! in force; reloaded on SIGHUP and on request.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{path::PathBuf, time::Duration};

use vigil_tests::{Sensor, kernel_tests_enabled, sensor_cmd};

fn shipped() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml"))
        .expect("deploy/policy.toml")
}

fn policy_version(sensor: &Sensor) -> (u64, String) {
    let st = sensor.status().expect("status");
    (
        st["policy"]["version"].as_u64().expect("version"),
        st["policy"]["mode"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn an_invalid_policy_is_refused_and_the_one_in_force_stays() {
    if !kernel_tests_enabled("an_invalid_policy_is_refused_and_the_one_in_force_stays") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, shipped().replace("version = 1", "version = 7")).expect("write");
    let sensor =
        Sensor::start_with(&["--policy", file.to_str().expect("utf-8")]).expect("sensor starts");
    assert_eq!(policy_version(&sensor), (7, "contain".into()));

    // Escalating above the containment threshold makes no sense: refused, naming the key.
    std::fs::write(
        &file,
        shipped()
            .replace("version = 1", "version = 8")
            .replace("escalate_at = 50", "escalate_at = 95"),
    )
    .expect("write");
    let state = sensor.state();
    let out = sensor_cmd(&[
        "policy",
        "reload",
        "--state",
        state.to_str().expect("utf-8"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an invalid policy was accepted");
    assert!(err.contains("risk.escalate_at"), "{err}");
    assert_eq!(
        policy_version(&sensor),
        (7, "contain".into()),
        "the policy in force stays"
    );

    // A valid one, on SIGHUP: observe mode is one line away.
    std::fs::write(
        &file,
        shipped()
            .replace("version = 1", "version = 9")
            .replace("mode = \"contain\"", "mode = \"observe\""),
    )
    .expect("write");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(sensor.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while policy_version(&sensor) != (9, "observe".into()) {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload the policy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_sensor_does_not_start_on_an_invalid_policy_and_check_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        shipped().replace("paths = [\"/boot/\"", "paths = [\"boot/\""),
    )
    .expect("write");
    let out = sensor_cmd(&["policy", "check", bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("protected.paths"));
    let good = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml");
    let out = sensor_cmd(&["policy", "check", good.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if !kernel_tests_enabled("a_sensor_does_not_start_on_an_invalid_policy") {
        return;
    }
    let state = dir.path().join("state");
    let out = sensor_cmd(&[
        "run",
        "--state",
        state.to_str().expect("utf-8"),
        "--policy",
        bad.to_str().expect("utf-8"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refusing to start with an invalid policy") && err.contains("protected.paths"),
        "{err}"
    );
}

#[test]
fn an_exception_suppresses_only_what_it_names_and_counts_it() {
    if !kernel_tests_enabled("an_exception_suppresses_only_what_it_names_and_counts_it") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("vigil-e2e-x-")
        .tempdir()
        .expect("tempdir");
    let ci = dir.path().join("ci");
    let other = dir.path().join("other");
    for d in [&ci, &other] {
        std::fs::create_dir(d).expect("mkdir");
        std::fs::copy("/bin/true", d.join("job")).expect("copy");
    }
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        format!(
            "{}\n[[exceptions]]\nrule = \"vigil-exec-from-temp\"\nprocess = \"{}/*\"\nreason = \"the CI runner's jobs\"\n",
            shipped().replace("mode = \"contain\"", "mode = \"observe\""),
            ci.display()
        ),
    )
    .expect("write");
    let sensor =
        Sensor::start_with(&["--policy", file.to_str().expect("utf-8")]).expect("sensor starts");
    let run = |bin: &std::path::Path| {
        let child = std::process::Command::new(bin).spawn().expect("run job");
        let pid = child.id();
        assert!(child.wait_with_output().expect("wait").status.success());
        pid
    };
    let excepted = run(&ci.join("job"));
    let flagged = run(&other.join("job"));
    sensor.wait_alert("exec from temp for the other job", |a| {
        a["rule"]["id"] == "vigil-exec-from-temp" && a["process"]["pid"] == flagged
    });
    assert!(
        !sensor
            .alerts()
            .iter()
            .any(|a| a["process"]["pid"] == excepted),
        "the excepted job raised an alert"
    );
    let status = sensor.status().expect("status");
    let counts = status["exceptions"].as_array().expect("exception counts");
    assert_eq!(counts.len(), 1, "{status}");
    assert_eq!(counts[0]["reason"], "the CI runner's jobs");
    assert!(
        counts[0]["suppressed"].as_u64().is_some_and(|n| n >= 1),
        "{status}"
    );
    assert_eq!(counts[0]["expired"], false);
}
