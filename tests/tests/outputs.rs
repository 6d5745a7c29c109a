//! The outputs a SIEM reads, fed by real alerts:
//!
//! - `--alerts-out FILE --alerts-format ocsf`: an alert and its incident as OCSF records,
//!   checked against the attribute requirements of the schema version the README names
//!   (required attributes present and typed, enumerations in range, the type uid derived
//!   from the class and activity), and against the alert Vigil itself recorded;
//! - `--forward URL`: alerts POSTed in falcosidekick's input shape to a real HTTP receiver
//!   that fails the first attempts (retried), and to one that is not there (a one-alert
//!   queue, whose drops are counted).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test stops loudly at the first thing that fails"
)]

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;
use vigil_tests::{Sensor, http::Receiver, kernel_tests_enabled};

/// The OCSF version the README names ("OCSF schema version X.Y.Z").
fn readme_version() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let at = readme
        .find("OCSF schema version ")
        .expect("the README names the OCSF schema version");
    readme[at + "OCSF schema version ".len()..]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .expect("a version")
        .trim_end_matches('.')
        .to_owned()
}

/// Checks the type uid is derived from the class and activity, and the schema version is
/// the README's; returns the class.
fn header(r: &Value, what: &str, version: &str) -> u64 {
    let (class_uid, activity) = (
        r["class_uid"].as_u64().expect("class_uid"),
        r["activity_id"].as_u64().expect("activity_id"),
    );
    assert_eq!(
        r["type_uid"].as_u64(),
        Some(class_uid * 100 + activity),
        "{what}: type_uid"
    );
    assert_eq!(
        r["metadata"]["version"], version,
        "{what}: the README's schema version"
    );
    class_uid
}

/// What a JSON value must be.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Str,
    Obj,
    List,
    Bool,
}

fn is(v: &Value, k: Kind) -> bool {
    match k {
        Kind::Int => v.is_u64() || v.is_i64(),
        Kind::Str => v.is_string(),
        Kind::Obj => v.is_object(),
        Kind::List => v.is_array(),
        Kind::Bool => v.is_boolean(),
    }
}

/// One attribute's requirement: its path (dots into objects), its kind, and the values an
/// enumeration allows (empty: any).
struct Attr(&'static str, Kind, &'static [u64]);

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn check(record: &Value, attrs: &[Attr], what: &str) {
    for Attr(path, kind, allowed) in attrs {
        let v = at(record, path).unwrap_or_else(|| panic!("{what}: no {path} in {record}"));
        assert!(is(v, *kind), "{what}: {path} is not of its type: {v}");
        if !allowed.is_empty() {
            let n = v.as_u64().unwrap_or(u64::MAX);
            assert!(
                allowed.contains(&n),
                "{what}: {path} = {n} is not one of {allowed:?}"
            );
        }
    }
}

const SEVERITY: &[u64] = &[0, 1, 2, 3, 4, 5, 6, 99];
const ACTIVITY: &[u64] = &[1, 2, 3];

/// The base event's and the Finding's required attributes (OCSF 1.8.0).
const BASE: &[Attr] = &[
    Attr("class_uid", Kind::Int, &[]),
    Attr("category_uid", Kind::Int, &[]),
    Attr("activity_id", Kind::Int, &[]),
    Attr("severity_id", Kind::Int, SEVERITY),
    Attr("time", Kind::Int, &[]),
    Attr("type_uid", Kind::Int, &[]),
    Attr("metadata", Kind::Obj, &[]),
    Attr("metadata.version", Kind::Str, &[]),
    Attr("metadata.product", Kind::Obj, &[]),
];

/// The Findings category: its activities.
const FINDINGS: &[Attr] = &[
    Attr("category_uid", Kind::Int, &[2]),
    Attr("activity_id", Kind::Int, ACTIVITY),
];

/// Detection Finding: required, then the recommended ones Vigil fills.
const DETECTION: &[Attr] = &[
    Attr("class_uid", Kind::Int, &[2004]),
    Attr("finding_info", Kind::Obj, &[]),
    Attr("finding_info.uid", Kind::Str, &[]),
    Attr("finding_info.title", Kind::Str, &[]),
    Attr("finding_info.analytic", Kind::Obj, &[]),
    Attr(
        "finding_info.analytic.type_id",
        Kind::Int,
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 99],
    ),
    Attr("finding_info.analytic.uid", Kind::Str, &[]),
    Attr("finding_info.attacks", Kind::List, &[]),
    Attr("metadata.product.name", Kind::Str, &[]),
    Attr("metadata.product.version", Kind::Str, &[]),
    Attr("message", Kind::Str, &[]),
    Attr("status_id", Kind::Int, &[0, 1, 2, 3, 4, 5, 6, 99]),
    Attr("confidence_id", Kind::Int, &[0, 1, 2, 3, 99]),
    Attr("is_alert", Kind::Bool, &[]),
    Attr("evidences", Kind::List, &[]),
    Attr("resources", Kind::List, &[]),
];

/// Incident Finding: required, then the recommended ones Vigil fills.
const INCIDENT: &[Attr] = &[
    Attr("class_uid", Kind::Int, &[2005]),
    Attr("finding_info_list", Kind::List, &[]),
    Attr("status_id", Kind::Int, &[1, 2, 3, 4, 5]),
    Attr("message", Kind::Str, &[]),
    Attr("desc", Kind::Str, &[]),
];

#[test]
fn alerts_and_incidents_come_out_as_ocsf_findings_that_meet_the_schema() {
    if !kernel_tests_enabled("alerts_and_incidents_come_out_as_ocsf_findings_that_meet_the_schema")
    {
        return;
    }
    let version = readme_version();
    let out = tempfile::tempdir().expect("tempdir");
    let file = out.path().join("findings.jsonl");
    let sensor = Sensor::start_with(&[
        "--alerts-out",
        &file.to_string_lossy(),
        "--alerts-format",
        "ocsf",
    ])
    .expect("sensor");
    let dir = tempfile::tempdir().expect("tempdir");
    let suid = vigil_tests::setuid_copy(dir.path(), "ocsf-suid-true");
    let alert = sensor.wait_alert("the setuid alert", |a| {
        a["rule"]["id"] == "vigil-setuid-bit" && a["entities"].to_string().contains(&suid)
    });
    let id = alert["id"].as_str().expect("alert id").to_owned();

    let records = |f: &Path| -> Vec<Value> {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (finding, incident, first) = loop {
        let all = records(&file);
        let finding = all
            .iter()
            .find(|r| r["class_uid"] == 2004 && r["finding_info"]["uid"] == id.as_str())
            .cloned();
        let incident = all
            .iter()
            .find(|r| {
                r["class_uid"] == 2005
                    && r["finding_info_list"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|f| f["uid"] == id.as_str()))
            })
            .cloned();
        // The incident's first record, which the alert may have joined later.
        let first = all
            .iter()
            .find(|r| r["class_uid"] == 2005 && r["unmapped"]["incident"] == alert["incident"])
            .cloned();
        if let (Some(f), Some(i), Some(first)) = (finding, incident, first) {
            break (f, i, first);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Detection and Incident Finding for alert {id} in {}:\n{all:#?}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    for (r, class, what) in [
        (&finding, DETECTION, "detection"),
        (&incident, INCIDENT, "incident"),
    ] {
        check(r, BASE, what);
        check(r, FINDINGS, what);
        check(r, class, what);
        header(r, what, &version);
    }
    assert_eq!(finding["activity_id"], 1, "an alert is a finding created");
    assert_eq!(
        first["activity_id"], 1,
        "the incident's first record is its creation"
    );
    check(&first, BASE, "the incident's creation");
    check(&first, FINDINGS, "the incident's creation");
    check(&first, INCIDENT, "the incident's creation");

    // What the finding says is what Vigil recorded.
    assert_eq!(
        finding["finding_info"]["analytic"]["uid"],
        "vigil-setuid-bit"
    );
    assert_eq!(finding["finding_info"]["title"], alert["rule"]["title"]);
    let time_ms = alert["time_ns"].as_u64().unwrap() / 1_000_000;
    assert_eq!(finding["time"].as_u64(), Some(time_ms));
    let techniques: Vec<&str> = alert["rule"]["technique"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !techniques.is_empty(),
        "the setuid rule names its technique"
    );
    for t in &techniques {
        assert!(
            finding["finding_info"]["attacks"].to_string().contains(t),
            "technique {t} in the attacks: {}",
            finding["finding_info"]["attacks"]
        );
    }
    let evidences = finding["evidences"].as_array().unwrap();
    assert!(
        evidences
            .iter()
            .any(|e| e["process"]["pid"] == alert["process"]["pid"]),
        "the alert's process is evidence: {evidences:?}"
    );
    for p in alert["payloads"].as_array().into_iter().flatten() {
        if let Some(h) = p["sha256"].as_str() {
            assert!(
                evidences
                    .iter()
                    .any(|e| e["file"]["hashes"][0]["value"] == h
                        && e["file"]["hashes"][0]["algorithm_id"] == 3),
                "payload {p} is evidence with its SHA-256: {evidences:?}"
            );
        }
    }
    assert_eq!(finding["unmapped"]["incident"], alert["incident"]);
    assert_eq!(incident["unmapped"]["incident"], alert["incident"]);
    // Vigil's own log keeps its own schema.
    assert!(sensor.alerts().iter().any(|a| a["id"] == id.as_str()));
}

/// Waits (bounded) until the sensor's `status` passes `pred`; returns that status.
fn wait_status(sensor: &Sensor, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = sensor.status().expect("status");
        if pred(&st) {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            st["forward"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn forwarded_alerts_arrive_in_falcos_shape_after_retries() {
    if !kernel_tests_enabled("forwarded_alerts_arrive_in_falcos_shape_after_retries") {
        return;
    }
    // The receiver answers 500 twice: the forwarder must retry, and deliver once.
    let receiver = Receiver::start(2);
    let sensor = Sensor::start_with(&["--forward", &receiver.url("/falco")]).expect("sensor");
    let dir = tempfile::tempdir().expect("tempdir");
    let suid = vigil_tests::setuid_copy(dir.path(), "forward-suid-true");
    let alert = sensor.wait_alert("the setuid alert", |a| {
        a["rule"]["id"] == "vigil-setuid-bit" && a["entities"].to_string().contains(&suid)
    });
    let id = alert["id"].as_str().expect("id").to_owned();
    let st = wait_status(&sensor, "the alert delivered", |_| {
        receiver
            .requests()
            .iter()
            .any(|r| r.status == 200 && r.body["uuid"] == id.as_str())
    });
    let got: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.body["uuid"] == id.as_str())
        .collect();
    let delivered: Vec<_> = got.iter().filter(|r| r.status == 200).collect();
    assert_eq!(delivered.len(), 1, "delivered once: {got:#?}");
    assert!(
        st["forward"]["failed_attempts"].as_u64() >= Some(1),
        "the failed attempts are counted: {}",
        st["forward"]
    );
    let body = &delivered[0].body;
    assert_eq!(delivered[0].path, "/falco");
    assert_eq!(body["rule"], alert["rule"]["title"]);
    assert_eq!(body["priority"], "Error", "high is Falco's Error");
    assert_eq!(body["hostname"], alert["host"]);
    assert_eq!(body["output_fields"]["proc.pid"], alert["process"]["pid"]);
    assert_eq!(body["output_fields"]["vigil.rule_id"], "vigil-setuid-bit");
    assert_eq!(body["output_fields"]["vigil.incident"], alert["incident"]);
    let time = body["time"].as_str().expect("time");
    assert!(
        time.len() > 20 && time.ends_with('Z') && time.contains('T'),
        "RFC 3339 time: {time}"
    );
    assert!(
        body["output"]
            .as_str()
            .is_some_and(|o| o.contains(&suid) || o.contains("chmod"))
    );
}

#[test]
fn a_forward_queue_that_is_full_drops_and_counts_instead_of_holding_detection_back() {
    if !kernel_tests_enabled(
        "a_forward_queue_that_is_full_drops_and_counts_instead_of_holding_detection_back",
    ) {
        return;
    }
    // Nothing listens there: each alert takes every attempt and its backoff (over a second),
    // while the queue holds one.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("its address");
    let url = format!("http://{closed}/falco");
    let sensor = Sensor::start_with(&["--forward", &url, "--forward-queue", "1"]).expect("sensor");
    let dir = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = (0..6).map(|i| format!("queue-suid-{i}")).collect();
    for n in &names {
        vigil_tests::setuid_copy(dir.path(), n);
    }
    for n in &names {
        sensor.wait_alert(&format!("the alert on {n}"), |a| {
            a["rule"]["id"] == "vigil-setuid-bit" && a["entities"].to_string().contains(n.as_str())
        });
    }
    let st = wait_status(&sensor, "drops and give-ups counted", |st| {
        st["forward"]["dropped"].as_u64() >= Some(1)
            && st["forward"]["given_up"].as_u64() >= Some(1)
    });
    let f = &st["forward"];
    assert_eq!(f["delivered"], 0, "nothing can be delivered there: {f}");
    assert!(
        f["failed_attempts"].as_u64() >= Some(4),
        "a given-up alert took every attempt: {f}"
    );
    // Detection went on regardless: every alert is in the sensor's own log.
    let logged = sensor
        .alerts()
        .iter()
        .filter(|a| {
            names
                .iter()
                .any(|n| a["entities"].to_string().contains(n.as_str()))
        })
        .count();
    assert!(
        logged >= names.len(),
        "{logged} of {} alerts logged",
        names.len()
    );
}

/// Process Activity (System category): required beyond the base event.
const PROCESS: &[Attr] = &[
    Attr("category_uid", Kind::Int, &[1]),
    Attr("actor", Kind::Obj, &[]),
    Attr("device", Kind::Obj, &[]),
    Attr("device.type_id", Kind::Int, &[]),
    Attr("process", Kind::Obj, &[]),
    Attr("process.pid", Kind::Int, &[]),
];

/// File System Activity (System category): required beyond the base event.
const FILE: &[Attr] = &[
    Attr("category_uid", Kind::Int, &[1]),
    Attr("actor", Kind::Obj, &[]),
    Attr("device", Kind::Obj, &[]),
    Attr("device.type_id", Kind::Int, &[]),
    Attr("file", Kind::Obj, &[]),
    Attr("file.name", Kind::Str, &[]),
    Attr("file.type_id", Kind::Int, &[]),
];

/// Network Activity: the Network category, and the recommended endpoint Vigil fills.
const NETWORK: &[Attr] = &[
    Attr("category_uid", Kind::Int, &[4]),
    Attr("src_endpoint", Kind::Obj, &[]),
];

/// What a test looks for among records.
type Wanted<'a> = Box<dyn Fn(&Value) -> bool + 'a>;

#[test]
fn events_come_out_as_ocsf_process_file_and_network_activity() {
    if !kernel_tests_enabled("events_come_out_as_ocsf_process_file_and_network_activity") {
        return;
    }
    let version = readme_version();
    let sensor = Sensor::start_with(&["--events-format", "ocsf"]).expect("sensor");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ocsf-events-file");
    // One process: it is exec'd, creates, renames and deletes a file, and connects.
    let script = format!(
        "echo x > {p}; mv {p} {p}.moved; rm {p}.moved; exec 3<>/dev/tcp/127.0.0.1/{port}",
        p = path.display()
    );
    let child = Command::new("bash")
        .args(["-c", &script])
        .status()
        .expect("bash");
    assert!(child.success());
    let events = sensor.dir.path().join("events.jsonl");
    let p = path.to_string_lossy().into_owned();
    let want: [(&str, Wanted); 5] = [
        (
            "an exec of bash",
            Box::new(|r: &Value| {
                r["class_uid"] == 1007
                    && r["activity_id"] == 1
                    && r["launch_type_id"] == 3
                    && r["process"]["cmd_line"]
                        .as_str()
                        .is_some_and(|c| c.contains("ocsf-events-file"))
            }),
        ),
        (
            "the file created",
            Box::new(|r: &Value| {
                r["class_uid"] == 1001 && r["activity_id"] == 1 && r["file"]["path"] == p.as_str()
            }),
        ),
        (
            "the file renamed",
            Box::new(|r: &Value| {
                r["class_uid"] == 1001 && r["activity_id"] == 5 && r["file"]["path"] == p.as_str()
            }),
        ),
        (
            "the file deleted",
            Box::new(|r: &Value| {
                r["class_uid"] == 1001
                    && r["activity_id"] == 4
                    && r["file"]["path"]
                        .as_str()
                        .is_some_and(|f| f.ends_with("ocsf-events-file.moved"))
            }),
        ),
        (
            "the connection",
            Box::new(|r: &Value| {
                r["class_uid"] == 4001
                    && r["activity_id"] == 1
                    && r["dst_endpoint"]["port"] == port
                    && r["connection_info"]["direction_id"] == 2
            }),
        ),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let found = loop {
        let lines: Vec<Value> = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let found: Vec<Option<Value>> = want
            .iter()
            .map(|(_, pred)| lines.iter().find(|r| pred(r)).cloned())
            .collect();
        if found.iter().all(Option::is_some) {
            break found.into_iter().flatten().collect::<Vec<_>>();
        }
        let missing: Vec<&str> = want
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|((w, _), _)| *w)
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "no OCSF record for {missing:?} among {} records",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(listener);
    for r in &found {
        let what = format!("class {}", r["class_uid"]);
        check(r, BASE, &what);
        check(
            r,
            &[Attr(
                "activity_id",
                Kind::Int,
                &[1, 2, 3, 4, 5, 6, 7, 8, 99],
            )],
            &what,
        );
        let class_uid = header(r, &what, &version);
        let class: &[Attr] = match class_uid {
            1007 => PROCESS,
            1001 => FILE,
            4001 => NETWORK,
            other => panic!("unexpected class {other}"),
        };
        check(r, class, &what);
        assert!(
            r["unmapped"]["vigil"].is_object(),
            "the sensor's own event is kept: {r}"
        );
    }
}
