//! Metrics as a security engineer reads them: a real Prometheus scrapes a real sensor enrolled
//! with a real controller, the controller, and a second sensor with a one-page ring (so that
//! it drops), and the values are read back through Prometheus' query API, then held against
//! what `status` says.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test stops loudly at the first thing that fails"
)]

use std::{process::Command, time::Duration};

use vigil_tests::{
    Sensor,
    fleet::Controller,
    kernel_tests_enabled,
    prometheus::{PROMETHEUS, Prometheus},
};

#[test]
fn prometheus_reads_the_sensors_drops_and_alerts_and_the_controllers_hosts_and_hunts() {
    const TEST: &str =
        "prometheus_reads_the_sensors_drops_and_alerts_and_the_controllers_hosts_and_hunts";
    if !kernel_tests_enabled(TEST) {
        return;
    }
    if !vigil_tests::program_installed(TEST, PROMETHEUS, "prometheus") {
        return;
    }
    let (ctl_metrics, sensor_metrics, tiny_metrics) = (
        vigil_tests::free_tcp_addr(),
        vigil_tests::free_tcp_addr(),
        vigil_tests::free_tcp_addr(),
    );
    let c = Controller::start_with(&["--metrics", &ctl_metrics.to_string()]).expect("controller");
    let token = c.token(600);
    let sensor = Sensor::start_with(&[
        "--controller",
        &c.addr.to_string(),
        "--enroll",
        &token,
        "--metrics",
        &sensor_metrics.to_string(),
    ])
    .expect("sensor");
    // Alone, a one-page ring drops under any load: its own sensor, for the drop counter.
    let tiny = Sensor::start_with(&[
        "--metrics",
        &tiny_metrics.to_string(),
        "--ring-buffer-bytes",
        "4096",
    ])
    .expect("the one-page sensor");
    c.wait_hosts("the sensor online", |h| {
        h.len() == 1 && h[0]["connected"] == true
    });
    let prom = Prometheus::start(&[
        ("sensor", sensor_metrics),
        ("controller", ctl_metrics),
        ("tiny", tiny_metrics),
    ])
    .expect("prometheus");

    // Every exposition parses: Prometheus says each target is up.
    for job in ["sensor", "controller", "tiny"] {
        prom.wait(&format!("up{{job=\"{job}\"}}"), |v| v == 1.0);
    }
    prom.wait("vigil_uplink_connected{job=\"sensor\"}", |v| v == 1.0);
    prom.wait("vigil_hosts{job=\"controller\",state=\"connected\"}", |v| {
        v == 1.0
    });

    // An alert, counted by rule and severity on the sensor, and merged on the controller.
    let dir = tempfile::tempdir().expect("tempdir");
    let suid = vigil_tests::setuid_copy(dir.path(), "suid-true");
    sensor.wait_alert("the setuid alert", |a| {
        a["rule"]["id"] == "vigil-setuid-bit" && a["entities"].to_string().contains(&suid)
    });
    let matched = prom.wait(
        "vigil_rule_matches_total{job=\"sensor\",rule=\"vigil-setuid-bit\"}",
        |v| v >= 1.0,
    );
    assert!(
        matched.labels["severity"].is_string(),
        "a rule's matches carry its severity: {:?}",
        matched.labels
    );
    prom.wait(
        &format!(
            "sum(vigil_alerts_total{{job=\"sensor\",severity=\"{}\"}})",
            matched.labels["severity"].as_str().unwrap_or_default()
        ),
        |v| v >= 1.0,
    );
    prom.wait(
        "vigil_records_merged_total{job=\"controller\",stream=\"alerts\"}",
        |v| v >= 1.0,
    );
    prom.wait("vigil_graph_edges_merged_total{job=\"controller\"}", |v| {
        v > 0.0
    });

    // A storm the one-page ring cannot hold: the drops reach Prometheus, and never more than
    // the sensor itself counted.
    vigil_tests::exec_storm();
    let dropped = prom.wait(
        "vigil_events_dropped_total{job=\"tiny\",kind=\"exec_args\"}",
        |v| v > 0.0,
    );
    std::thread::sleep(Duration::from_millis(300));
    let status = tiny.status().expect("status");
    let counted = status["events"]["exec_args"]["dropped"]
        .as_u64()
        .expect("the sensor's own drop count");
    assert!(
        dropped.value <= counted as f64 && dropped.value > 0.0,
        "Prometheus read {} dropped, the sensor counts {counted}",
        dropped.value
    );
    prom.wait("vigil_ring_buffer_fill_peak_bytes{job=\"tiny\"}", |v| {
        v > 0.0
    });

    // A hunt, timed by the controller's histogram.
    let hunt = c.ctl(&["hunt", "connections where port = 4444"]);
    assert!(
        hunt.status.success(),
        "hunt: {}",
        String::from_utf8_lossy(&hunt.stderr)
    );
    prom.wait(
        "vigil_hunt_duration_seconds_count{job=\"controller\"}",
        |v| v >= 1.0,
    );
    prom.wait("vigil_store_size_bytes{job=\"controller\"}", |v| v > 0.0);
}

#[test]
fn a_metrics_address_that_is_not_one_is_refused_at_start() {
    for bin in [
        vigil_tests::sensor_bin(),
        vigil_tests::fleet::controller_bin(),
    ] {
        let sub = if bin.ends_with("vigil-sensor") {
            "run"
        } else {
            "serve"
        };
        let out = Command::new(&bin)
            .args([sub, "--metrics", "localhost"])
            .output()
            .expect("run");
        assert!(
            !out.status.success(),
            "{} accepted --metrics localhost",
            bin.display()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("localhost") && err.contains("--metrics"),
            "{} says why: {err}",
            bin.display()
        );
    }
}
