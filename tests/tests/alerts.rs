//! Sigma rules on live events: real activity raises an alert that credits the rule and names
//! the process and its lineage; a near miss raises none.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{net::TcpListener, path::PathBuf, process::Command};

use serde_json::Value;
use vigil_tests::{Sensor, kernel_tests_enabled};

fn alerts(sensor: &Sensor) -> Vec<Value> {
    sensor.alerts()
}

fn wait_alert(sensor: &Sensor, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    sensor.wait_alert(what, pred)
}

#[test]
fn sigma_rules_raise_attributed_alerts_on_real_activity() {
    if !kernel_tests_enabled("sigma_rules_raise_attributed_alerts_on_real_activity") {
        return;
    }
    let rules = tempfile::tempdir().expect("tempdir");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sigma/process_creation/base64_decode.yml");
    std::fs::copy(&fixture, rules.path().join("base64.yml")).expect("copy the Sigma fixture");
    let work = tempfile::tempdir().expect("tempdir");
    let marker = work.path().join("vigil-test-persistence-marker");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::fs::write(
        rules.path().join("local.yml"),
            "title: Test file rule\nid: vigil-test-file\nlevel: medium\nlogsource:\n  product: linux\n  category: file_event\n\
             detection:\n  selection:\n    TargetFilename|endswith: /vigil-test-persistence-marker\n  condition: selection\n",
    )
    .expect("write rule");
    std::fs::write(
        rules.path().join("net.yml"),
        format!(
            "title: Test network rule\nid: vigil-test-net\nlevel: high\nlogsource:\n  product: linux\n  category: network_connection\n\
             detection:\n  selection:\n    DestinationPort: {port}\n    Initiated: 'true'\n  condition: selection\n"
        ),
    )
    .expect("write rule");
    let sensor = Sensor::start_with(&["--rules", rules.path().to_str().expect("utf-8")])
        .expect("sensor starts");
    assert_eq!(sensor.status().expect("status")["rules_loaded"], 3);

    // The technique: decoding base64 on the command line. And a near miss: encoding.
    let near_miss = Command::new("base64")
        .arg("/etc/hostname")
        .output()
        .expect("base64");
    assert!(near_miss.status.success());
    let sh = Command::new("/bin/sh")
        .args(["-c", "echo aGVsbG8= | base64 -d; true"])
        .output()
        .expect("sh");
    assert_eq!(String::from_utf8_lossy(&sh.stdout), "hello");
    let alert = wait_alert(&sensor, "for base64 -d", |a| {
        a["rule"]["title"] == "Base64 decoding on the command line"
    });
    assert_eq!(
        alert["rule"]["author"], "Vigil tests",
        "the rule is credited"
    );
    assert_eq!(alert["rule"]["id"], "5d1f2b8e-0c37-4a61-9e0b-7f1c2a9d0001");
    assert_eq!(alert["rule"]["source"], "sigma");
    assert_eq!(alert["rule"]["technique"][0], "T1027");
    assert!(
        alert["process"]["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("/base64"))
    );
    assert_eq!(alert["process"]["cmdline"], "base64 -d");
    assert_eq!(
        alert["process"]["ancestry"][1]["pid"],
        std::process::id(),
        "the shell, then this test"
    );
    assert_eq!(alert["evidence"][0]["kind"], "exec");

    // File and network rules.
    std::fs::write(&marker, b"x").expect("write marker");
    let file_alert = wait_alert(&sensor, "for the marker file", |a| {
        a["rule"]["id"] == "vigil-test-file"
    });
    assert_eq!(file_alert["entities"][0], marker.to_str().expect("utf-8"));
    let _conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let net_alert = wait_alert(&sensor, "for the connection", |a| {
        a["rule"]["id"] == "vigil-test-net"
    });
    assert_eq!(net_alert["entities"][0], format!("127.0.0.1:{port}"));
    assert_eq!(net_alert["process"]["pid"], std::process::id());

    // Only the decode matched the base64 rule: the near miss raised nothing.
    let all = alerts(&sensor);
    let base64_alerts = all
        .iter()
        .filter(|a| a["rule"]["title"] == "Base64 decoding on the command line")
        .count();
    assert_eq!(base64_alerts, 1, "{all:?}");
    assert!(
        sensor.status().expect("status")["alerts_raised"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    );
}
