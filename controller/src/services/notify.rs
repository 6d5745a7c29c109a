//! Reaching a person: the fleet policy's escalation targets, told once per incident when it
//! escalates (and, for PagerDuty, resolved when it closes). Each delivery is retried with
//! backoff; every delivery, failure and dead letter is in the audit log, and counted.
//!
//! The bodies are pure functions of the notice ([`body`]): falcosidekick's input shape for a
//! generic webhook (so an existing falcosidekick forwards Vigil's alerts unchanged), a Slack
//! incoming-webhook message, and a PagerDuty Events API v2 event whose `dedup_key` is the
//! incident id.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sensor_userspace::detect::rules::sigma::rule::Level;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    services::fleet_policy::{Kind, Target},
    store::SharedStore,
};

/// Attempts per delivery before it is a dead letter, and the wait before the second.
const ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// How long one HTTP request may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Who the audit log names for deliveries.
const WHO: &str = "controller (notifier)";

/// An incident that reached a person's threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub incident: String,
    pub host: String,
    pub hostname: String,
    /// The alert that escalated it.
    pub alert: String,
    pub rule: String,
    pub rule_id: Option<String>,
    pub severity: Level,
    pub risk: u8,
    pub time_ns: u64,
    pub output: String,
    pub tags: Vec<String>,
    pub fields: BTreeMap<String, Value>,
}

/// What a target is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Trigger(Notice),
    /// The incident closed (a verified release, or a forced one).
    Resolve {
        incident: String,
        hostname: String,
        how: String,
    },
}

impl Event {
    fn incident(&self) -> &str {
        match self {
            Self::Trigger(n) => &n.incident,
            Self::Resolve { incident, .. } => incident,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Trigger(_) => "trigger",
            Self::Resolve { .. } => "resolve",
        }
    }
}

use sensor_userspace::triage::forward::rfc3339;

/// A UUID-shaped id derived from what the event is, so a retried delivery carries the same
/// one and a receiver can drop the duplicate.
fn event_uuid(target: &str, event: &Event, alert: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(format!(
        "{target}|{}|{}|{alert}",
        event.incident(),
        event.name()
    ));
    let x = sensor_common::protocol::hex(&h[..16]);
    format!(
        "{}-{}-5{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        &x[16..20],
        &x[20..32]
    )
}

use sensor_userspace::triage::forward::falco_priority;

fn pagerduty_severity(l: Level) -> &'static str {
    match l {
        Level::Critical => "critical",
        Level::High => "error",
        Level::Medium => "warning",
        Level::Low | Level::Informational => "info",
    }
}

/// The body `target` is sent for `event`; None when that kind of target is not told of it
/// (a webhook or Slack hears of escalations; PagerDuty of escalations and closings).
pub fn body(target: &Target, event: &Event) -> Option<Value> {
    match (target.kind, event) {
        (Kind::Webhook, Event::Trigger(n)) => {
            let mut fields: serde_json::Map<String, Value> = n
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            fields.insert("vigil.incident".into(), json!(n.incident));
            fields.insert("vigil.risk".into(), json!(n.risk));
            fields.insert("vigil.host_id".into(), json!(n.host));
            if let Some(id) = &n.rule_id {
                fields.insert("vigil.rule_id".into(), json!(id));
            }
            Some(json!({
                "uuid": event_uuid(&target.name, event, &n.alert),
                "time": rfc3339(n.time_ns),
                "rule": n.rule,
                "priority": falco_priority(n.severity),
                "output": n.output,
                "source": "vigil",
                "hostname": n.hostname,
                "tags": n.tags,
                "output_fields": fields,
            }))
        }
        (Kind::Slack, Event::Trigger(n)) => Some(json!({
            "text": format!(
                ":rotating_light: *{}* ({:?}, risk {}) on *{}*: incident `{}`\n{}",
                n.rule, n.severity, n.risk, n.hostname, n.incident, n.output
            ),
        })),
        (Kind::Pagerduty, Event::Trigger(n)) => Some(json!({
            "routing_key": target.routing_key,
            "event_action": "trigger",
            "dedup_key": n.incident,
            "payload": {
                "summary": format!("{} on {} (risk {})", n.rule, n.hostname, n.risk),
                "source": n.hostname,
                "severity": pagerduty_severity(n.severity),
                "timestamp": rfc3339(n.time_ns),
                "component": "vigil-sensor",
                "custom_details": {
                    "incident": n.incident,
                    "output": n.output,
                    "rule_id": n.rule_id,
                    "fields": n.fields,
                },
            },
        })),
        (Kind::Pagerduty, Event::Resolve { incident, .. }) => Some(json!({
            "routing_key": target.routing_key,
            "event_action": "resolve",
            "dedup_key": incident,
        })),
        (
            Kind::Slack,
            Event::Resolve {
                incident,
                hostname,
                how,
            },
        ) => Some(json!({
            "text": format!(":white_check_mark: incident `{incident}` on *{hostname}* closed: {how}"),
        })),
        (Kind::Webhook, Event::Resolve { .. }) => None,
    }
}

/// Deliveries and failures per target, for the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub delivered: u64,
    /// Attempts that failed (each retry counts).
    pub failed: u64,
    /// Deliveries given up after every attempt failed.
    pub dead_letters: u64,
}

/// The notifier: cheap to clone, shared by the services.
#[derive(Clone, Default)]
pub struct Notifier {
    counts: Arc<Mutex<BTreeMap<String, Counts>>>,
}

impl Notifier {
    /// Each target's counts so far.
    pub fn counts(&self) -> BTreeMap<String, Counts> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn count(&self, target: &str, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(c.entry(target.to_owned()).or_default());
        }
    }

    /// Tells `target` of `event` once (per incident and kind of event), on a task of its own:
    /// retried with backoff, each attempt audited, a dead letter after the last. False when
    /// it was told already, or is not told of such events.
    pub fn send(&self, store: &SharedStore, target: &Target, event: Event) -> bool {
        let Some(body) = body(target, &event) else {
            return false;
        };
        // A closing is told only where the opening was.
        if matches!(event, Event::Resolve { .. })
            && !crate::lock(store)
                .noticed(&target.name, event.incident(), "trigger")
                .unwrap_or(false)
        {
            return false;
        }
        let first = crate::lock(store).first_notice(&target.name, event.incident(), event.name());
        match first {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::error!(error = %e, "cannot record a notification; sending it anyway");
            }
        }
        let (me, store, target) = (self.clone(), store.clone(), target.clone());
        let command = format!(
            "notify {} ({:?}) {} {}",
            target.name,
            target.kind,
            event.name(),
            event.incident()
        );
        tokio::spawn(async move {
            let mut wait = FIRST_RETRY;
            for attempt in 1..=ATTEMPTS {
                let (url, payload) = (target.url.clone(), body.to_string());
                let sent = tokio::task::spawn_blocking(move || post(&url, &payload)).await;
                let outcome = match sent {
                    Ok(Ok(status)) => {
                        me.count(&target.name, |c| c.delivered += 1);
                        crate::services::audit(
                            crate::lock(&store).as_mut(),
                            WHO,
                            &command,
                            &format!("delivered (HTTP {status}, attempt {attempt} of {ATTEMPTS})"),
                        );
                        return;
                    }
                    Ok(Err(e)) => e,
                    Err(e) => e.to_string(),
                };
                me.count(&target.name, |c| c.failed += 1);
                tracing::warn!(target = %target.name, attempt, error = %outcome, "notification not delivered");
                crate::services::audit(
                    crate::lock(&store).as_mut(),
                    WHO,
                    &command,
                    &format!("failed (attempt {attempt} of {ATTEMPTS}): {outcome}"),
                );
                if attempt < ATTEMPTS {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
            me.count(&target.name, |c| c.dead_letters += 1);
            crate::services::audit(
                crate::lock(&store).as_mut(),
                WHO,
                &command,
                &format!("dead letter: not delivered after {ATTEMPTS} attempts"),
            );
        });
        true
    }
}

/// One POST of a JSON body; the HTTP status when it is a success.
fn post(url: &str, body: &str) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            incident: "inc-1".into(),
            host: "h-1".into(),
            hostname: "web-1".into(),
            alert: "a-1".into(),
            rule: "Reverse shell".into(),
            rule_id: Some("vigil-reverse-shell".into()),
            severity: Level::Critical,
            risk: 95,
            time_ns: 1_800_000_000_123_456_789,
            output: "bash connected to 203.0.113.7:4444".into(),
            tags: vec!["T1059".into()],
            fields: BTreeMap::from([("proc.exe".to_owned(), json!("/usr/bin/bash"))]),
        }
    }

    fn target(kind: Kind) -> Target {
        Target {
            name: "t".into(),
            kind,
            url: "http://127.0.0.1:1/".into(),
            min_severity: Level::High,
            routing_key: (kind == Kind::Pagerduty).then(|| "key".into()),
        }
    }

    #[test]
    fn each_format_has_the_fields_its_receiver_reads() {
        let ev = Event::Trigger(notice());
        let w = body(&target(Kind::Webhook), &ev).expect("webhook");
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
            assert!(w.get(k).is_some(), "falcosidekick reads {k}: {w}");
        }
        assert_eq!(w["priority"], "Critical");
        assert_eq!(w["time"], "2027-01-15T08:00:00.123456789Z");
        assert_eq!(w["output_fields"]["vigil.incident"], "inc-1");
        let again = body(&target(Kind::Webhook), &ev).expect("webhook");
        assert_eq!(w["uuid"], again["uuid"], "a retry carries the same uuid");

        let p = body(&target(Kind::Pagerduty), &ev).expect("pagerduty");
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], "inc-1");
        assert_eq!(p["routing_key"], "key");
        assert_eq!(p["payload"]["severity"], "critical");
        let resolve = Event::Resolve {
            incident: "inc-1".into(),
            hostname: "web-1".into(),
            how: "verified clean".into(),
        };
        let r = body(&target(Kind::Pagerduty), &resolve).expect("resolve");
        assert_eq!(
            (r["event_action"].as_str(), r["dedup_key"].as_str()),
            (Some("resolve"), Some("inc-1"))
        );

        let s = body(&target(Kind::Slack), &ev).expect("slack");
        assert!(
            s["text"]
                .as_str()
                .is_some_and(|t| t.contains("web-1") && t.contains("inc-1"))
        );
        assert!(
            body(&target(Kind::Webhook), &resolve).is_none(),
            "falcosidekick takes alerts only"
        );
    }
}
