//! Alerts and incidents in the Open Cybersecurity Schema Framework, for SIEMs that read it:
//! an alert is a Detection Finding (class 2004), an incident an Incident Finding (class
//! 2005) when it opens and each time it changes. [`SCHEMA_VERSION`] is the version followed.
//! The sensor's incidents do not close (the controller resolves them), so a sensor writes no
//! Close activity.
//!
//! Events (`--events-out FILE --events-format ocsf`) are OCSF activity records of the System
//! and Network categories: Process Activity, File System Activity, Network Activity.
//!
//! What OCSF has no attribute for (the incident an alert joined, the policy's verdict) goes
//! under `unmapped`, so nothing Vigil knows is lost on the way.

use serde_json::{Value, json};

use crate::{
    detect::rules::{behaviour::rule::Confidence, sigma::rule::Level},
    model::events::{Event, What},
    triage::{
        Verdict,
        alerts::{Alert, RuleSource},
        incidents::{Incident, Status},
    },
};

/// The OCSF schema version the records follow.
pub const SCHEMA_VERSION: &str = "1.8.0";

const CATEGORY_FINDINGS: u32 = 2;
pub const DETECTION_FINDING: u32 = 2004;
pub const INCIDENT_FINDING: u32 = 2005;

/// A finding's activity: the same three for both classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Create = 1,
    Update = 2,
    Close = 3,
}

impl Activity {
    fn name(self) -> &'static str {
        match self {
            Self::Create => "Create",
            Self::Update => "Update",
            Self::Close => "Close",
        }
    }
}

fn severity(l: Level) -> (u8, &'static str) {
    match l {
        Level::Informational => (1, "Informational"),
        Level::Low => (2, "Low"),
        Level::Medium => (3, "Medium"),
        Level::High => (4, "High"),
        Level::Critical => (5, "Critical"),
    }
}

fn confidence(c: Confidence) -> (u8, &'static str) {
    match c {
        Confidence::Low => (1, "Low"),
        Confidence::Medium => (2, "Medium"),
        Confidence::High => (3, "High"),
    }
}

fn millis(ns: u64) -> u64 {
    ns / 1_000_000
}

/// The header every record shares: its class, activity and product.
fn header(class_uid: u32, class_name: &str, activity: Activity, uid: &str, level: Level) -> Value {
    let (severity_id, severity) = severity(level);
    json!({
        "category_uid": CATEGORY_FINDINGS,
        "category_name": "Findings",
        "class_uid": class_uid,
        "class_name": class_name,
        "activity_id": activity as u8,
        "activity_name": activity.name(),
        "type_uid": class_uid * 100 + activity as u32,
        "type_name": format!("{class_name}: {}", activity.name()),
        "severity_id": severity_id,
        "severity": severity,
        "metadata": {
            "version": SCHEMA_VERSION,
            "uid": uid,
            "product": {
                "name": "Vigil",
                "vendor_name": "Vigil",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
    })
}

/// Adds `extra`'s fields to the object `base`.
fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// The file named by `path`, as an OCSF file object.
fn file(path: &str, sha256: Option<&str>) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut f = json!({ "name": name, "path": path, "type_id": 1, "type": "Regular File" });
    if let Some(h) = sha256 {
        f["hashes"] = json!([{ "algorithm_id": 3, "algorithm": "SHA-256", "value": h }]);
    }
    f
}

/// The alert's process, with its executable, user and parent.
fn process(a: &Alert) -> Value {
    let p = &a.finding.process;
    let mut v = json!({
        "pid": p.pid,
        "cmd_line": p.cmdline,
        "user": { "uid": p.uid.to_string(), "name": p.user },
    });
    if let Some(exe) = &p.exe {
        v["name"] = json!(exe.rsplit('/').next().unwrap_or(exe));
        v["file"] = file(exe, None);
    }
    if let Some(parent) = p.ancestry.first() {
        v["parent_process"] = json!({ "pid": parent.pid });
        if let Some(exe) = &parent.exe {
            v["parent_process"]["file"] = file(exe, None);
        }
    }
    v
}

/// What the alert names: its process, each payload written or run (with its hash), and each
/// remote endpoint its process and incident reached.
fn evidences(a: &Alert) -> Vec<Value> {
    let mut out = vec![json!({ "process": process(a) })];
    out.extend(
        a.payloads
            .iter()
            .map(|p| json!({ "file": file(&p.path, p.sha256.as_deref()) })),
    );
    out.extend(
        a.endpoints
            .iter()
            .map(|e| json!({ "dst_endpoint": { "ip": e.ip().to_string(), "port": e.port() } })),
    );
    out
}

/// The ATT&CK techniques a rule names (`T1059.004`), as OCSF attack objects.
fn attacks(techniques: &[String]) -> Vec<Value> {
    techniques
        .iter()
        .map(|t| {
            let uid = t.trim_start_matches("attack.").to_ascii_uppercase();
            match uid.split_once('.') {
                Some((technique, _)) => {
                    json!({ "technique": { "uid": technique }, "sub_technique": { "uid": uid } })
                }
                None => json!({ "technique": { "uid": uid } }),
            }
        })
        .collect()
}

fn host(name: &str) -> Value {
    json!({ "hostname": name, "type": "Server", "type_id": 1 })
}

/// An alert as a Detection Finding (activity Create).
pub fn detection_finding(a: &Alert) -> Value {
    let f = &a.finding;
    let (confidence_id, confidence) = confidence(f.rule.confidence);
    let rule_uid = f.rule.id.clone().unwrap_or_else(|| f.rule.title.clone());
    let mut analytic = json!({
        "uid": rule_uid,
        "name": f.rule.title,
        "type_id": 1,
        "type": "Rule",
        "category": match f.rule.source {
            RuleSource::Sigma => "sigma",
            RuleSource::Behaviour => "behaviour",
        },
    });
    if let Some(author) = &f.rule.author {
        analytic["desc"] = json!(format!("{} (rule by {author})", f.rule.title));
    }
    merged(
        header(
            DETECTION_FINDING,
            "Detection Finding",
            Activity::Create,
            &f.id,
            f.rule.severity,
        ),
        json!({
            "time": millis(f.time_ns),
            "message": f.rule.title,
            "status_id": 1,
            "status": "New",
            "confidence_id": confidence_id,
            "confidence": confidence,
            "risk_score": a.risk.score,
            "is_alert": true,
            "finding_info": {
                "uid": f.id,
                "title": f.rule.title,
                "analytic": analytic,
                "attacks": attacks(&f.rule.technique),
                "types": [analytic["category"]],
                "created_time": millis(f.time_ns),
            },
            "evidences": evidences(a),
            "resources": [{ "type": "host", "hostname": f.host, "uid": f.host }],
            "device": host(&f.host),
            "unmapped": {
                "incident": a.incident,
                "rule_author": f.rule.author,
                "rule_file": f.rule.file,
                "entities": f.entities,
            },
        }),
    )
}

fn incident_status(s: Status) -> (u8, &'static str) {
    match s {
        Status::Open => (1, "New"),
    }
}

/// One line of what the incident is: its root cause and what it did.
fn summary(i: &Incident) -> String {
    let root = &i.story.root_cause;
    format!(
        "{} incident rooted at {} (pid {}): {} alerts, {} processes, {} files written, {} connections",
        severity(i.severity).1,
        root.exe.as_deref().unwrap_or("?"),
        root.pid,
        i.alerts.len() as u64 + i.more_alerts,
        i.story.tree.len(),
        i.story.files_written.len(),
        i.story.connections.len()
    )
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Record => "record",
        Verdict::Observe => "observe",
        Verdict::Contain => "contain",
        Verdict::Escalate => "escalate",
    }
}

/// An incident as an Incident Finding: `activity` says whether it opened, changed or closed.
pub fn incident_finding(i: &Incident, activity: Activity) -> Value {
    let (status_id, status) = incident_status(i.status);
    let findings: Vec<Value> = i
        .alerts
        .iter()
        .map(|m| json!({ "uid": m.alert, "title": m.rule }))
        .collect();
    merged(
        header(
            INCIDENT_FINDING,
            "Incident Finding",
            activity,
            &format!("{}-{}", i.id, i.updated_ns),
            i.severity,
        ),
        json!({
            "time": millis(i.updated_ns),
            "start_time": millis(i.opened_ns),
            "message": summary(i),
            "desc": summary(i),
            "status_id": status_id,
            "status": status,
            "finding_info_list": findings,
            "risk_score": i.risk,
            "device": host(&i.host),
            "unmapped": {
                "incident": i.id,
                "verdict": verdict_name(i.decision.verdict),
                "decision": i.decision.reason,
                "techniques": i.techniques,
            },
        }),
    )
}

/// An event's class in OCSF: Process Activity, File System Activity or Network Activity.
/// Events of no file or network kind (a setgid, a mount, a BPF load) are Process Activity
/// `Other` with their own name, so that nothing the sensor saw is left out.
pub const PROCESS_ACTIVITY: u32 = 1007;
pub const FILE_ACTIVITY: u32 = 1001;
pub const NETWORK_ACTIVITY: u32 = 4001;

/// The class, category, activity id and activity name of `what`.
fn event_class(what: &What) -> (u32, &'static str, u32, u8, &'static str) {
    const P: (u32, &str, u32) = (PROCESS_ACTIVITY, "Process Activity", 1);
    const F: (u32, &str, u32) = (FILE_ACTIVITY, "File System Activity", 1);
    const N: (u32, &str, u32) = (NETWORK_ACTIVITY, "Network Activity", 4);
    let (c, a, n) = match what {
        What::Fork | What::Exec { .. } => (P, 1, "Launch"),
        What::Exit { .. } => (P, 2, "Terminate"),
        What::Ptrace { .. } | What::ProcessVm { .. } => (P, 4, "Inject"),
        What::SetUid { .. } => (P, 5, "Set User ID"),
        What::Open { create: true, .. } => (F, 1, "Create"),
        What::Open { write: true, .. } => (F, 3, "Update"),
        What::Open { .. } => (F, 2, "Read"),
        What::Unlink { .. } => (F, 4, "Delete"),
        What::Rename { .. } => (F, 5, "Rename"),
        What::Xattr { .. } | What::Utimes { .. } | What::SetFlags { .. } => {
            (F, 6, "Set Attributes")
        }
        What::Chmod { .. } | What::Chown { .. } => (F, 7, "Set Security"),
        What::Connect { .. } | What::Accept { .. } => (N, 1, "Open"),
        What::Listen { .. } => (N, 7, "Listen"),
        _ => (P, 99, "Other"),
    };
    (c.0, c.1, c.2, a, n)
}

/// The process an event is about, as OCSF's process object.
fn event_process(e: &Event) -> Value {
    let mut p = json!({
        "pid": e.pid,
        "name": e.comm,
        "user": { "uid": e.uid.to_string() },
        "parent_process": { "pid": e.ppid },
    });
    if let Some(exe) = &e.exe {
        p["file"] = file(exe, None);
    }
    if let What::Exec { argv, .. } = &e.what {
        p["cmd_line"] = json!(argv.join(" "));
    }
    p
}

fn endpoint(a: &std::net::SocketAddr) -> Value {
    json!({ "ip": a.ip().to_string(), "port": a.port() })
}

/// An event as an OCSF activity record of its class, from the host `hostname`.
pub fn event_activity(e: &Event, hostname: &str) -> Value {
    let (class_uid, class_name, category_uid, activity, activity_name) = event_class(&e.what);
    let process = event_process(e);
    let mut v = json!({
        "category_uid": category_uid,
        "class_uid": class_uid,
        "class_name": class_name,
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + u32::from(activity),
        "severity_id": 1,
        "severity": "Informational",
        "time": millis(e.time_ns),
        "status_id": if e.error.is_some() { 2 } else { 1 },
        "status": if e.error.is_some() { "Failure" } else { "Success" },
        "metadata": {
            "version": SCHEMA_VERSION,
            "product": { "name": "Vigil", "vendor_name": "Vigil", "version": env!("CARGO_PKG_VERSION") },
            "event_code": crate::detect::rules::behaviour::fields::kind_name(&e.what),
        },
        "actor": { "process": process, "user": { "uid": e.uid.to_string() } },
        "device": host(hostname),
        "unmapped": { "vigil": e },
    });
    if let Some(err) = &e.error {
        v["status_detail"] = json!(err);
    }
    match &e.what {
        What::Fork => {
            v["process"] = json!({ "pid": e.pid, "parent_process": { "pid": e.ppid } });
            v["launch_type_id"] = json!(2);
            v["launch_type"] = json!("Fork");
        }
        What::Exec { .. } => {
            v["process"] = process;
            v["launch_type_id"] = json!(3);
            v["launch_type"] = json!("Exec");
        }
        What::Exit { .. } | What::SetUid { .. } | What::Ptrace { .. } | What::ProcessVm { .. } => {
            v["process"] = process;
        }
        What::Open { file: f, .. }
        | What::Unlink { file: f }
        | What::Chmod { file: f, .. }
        | What::Chown { file: f, .. }
        | What::Xattr { file: f, .. }
        | What::Utimes { file: f, .. }
        | What::SetFlags { file: f, .. } => {
            v["file"] = file(f.path.as_deref().unwrap_or("?"), None);
        }
        What::Rename { file: f, to } => {
            v["file"] = file(f.path.as_deref().unwrap_or("?"), None);
            v["file_result"] = file(to.path.as_deref().unwrap_or("?"), None);
        }
        What::Connect { net } | What::Accept { net } | What::Listen { net, .. } => {
            let outbound = matches!(e.what, What::Connect { .. });
            v["connection_info"] = json!({
                "protocol_name": net.protocol,
                "direction_id": if outbound { 2 } else { 1 },
                "direction": if outbound { "Outbound" } else { "Inbound" },
            });
            let (local, remote) = (
                net.local.as_ref().map(endpoint),
                net.remote.as_ref().map(endpoint),
            );
            let (src, dst) = if outbound {
                (local, remote)
            } else {
                (remote, local)
            };
            if let Some(s) = src {
                v["src_endpoint"] = s;
            }
            if let Some(d) = dst {
                v["dst_endpoint"] = d;
            }
        }
        _ => {
            v["process"] = process;
        }
    }
    if v.get("process").is_none() && class_uid == PROCESS_ACTIVITY {
        v["process"] = event_process(e);
    }
    v
}

/// `--events-out FILE --events-format ocsf`: events as OCSF activity records.
pub struct OcsfEvents {
    out: crate::ingest::output::JsonLines,
    hostname: String,
}

impl OcsfEvents {
    pub fn new(out: crate::ingest::output::JsonLines) -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        Self { out, hostname }
    }
}

impl crate::ingest::pipeline::Sink for OcsfEvents {
    fn publish(&mut self, event: &Event) {
        self.out.write(&event_activity(event, &self.hostname));
    }

    fn flush(&mut self) {
        crate::ingest::pipeline::Sink::flush(&mut self.out);
    }
}
