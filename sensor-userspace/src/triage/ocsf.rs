//! Alerts and incidents in the Open Cybersecurity Schema Framework, for SIEMs that read it:
//! an alert is a Detection Finding (class 2004), an incident an Incident Finding (class
//! 2005) when it opens and each time it changes. [`SCHEMA_VERSION`] is the version followed.
//! The sensor's incidents do not close (the controller resolves them), so a sensor writes no
//! Close activity.
//!
//! What OCSF has no attribute for (the incident an alert joined, the policy's verdict) goes
//! under `unmapped`, so nothing Vigil knows is lost on the way.

use serde_json::{Value, json};

use crate::{
    detect::rules::{behaviour::rule::Confidence, sigma::rule::Level},
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
