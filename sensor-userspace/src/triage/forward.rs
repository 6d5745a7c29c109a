//! `--forward URL`: every alert POSTed as JSON in falcosidekick's input shape (the JSON Falco
//! writes: `rule`, `priority`, `output`, `time`, `output_fields`...), so that whatever a
//! falcosidekick (or anything that reads Falco's output) sends on to takes Vigil's alerts.
//!
//! Delivery is off the event loop, on a thread of its own, from a bounded queue: a slow or
//! dead receiver never holds detection back. Each alert is tried [`ATTEMPTS`] times with
//! backoff; what the queue could not take, and what every attempt failed for, is counted.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{detect::rules::sigma::rule::Level, triage::alerts::Alert};

/// Attempts per alert, the first included.
pub const ATTEMPTS: u32 = 4;
/// The wait before the second attempt; doubled before each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The bound on one attempt.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Alerts waiting for delivery by default; past this, new ones are dropped and counted.
pub const DEFAULT_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the forward URL {0:?} is not an http:// or https:// URL")]
    Url(String),
    #[error("cannot start the forwarding thread: {0}")]
    Thread(std::io::Error),
}

/// What was forwarded, for `status` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardStats {
    pub url: String,
    pub delivered: u64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Alerts given up after every attempt failed.
    pub given_up: u64,
    /// Alerts the full queue could not take.
    pub dropped: u64,
    /// Alerts waiting now.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct Counts {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    given_up: AtomicU64,
    dropped: AtomicU64,
    queued: AtomicU64,
}

pub struct Forwarder {
    url: String,
    tx: SyncSender<Value>,
    counts: Arc<Counts>,
}

/// Falco's priorities for Vigil's severities (the controller's Falco notifier uses them too).
pub fn falco_priority(l: Level) -> &'static str {
    match l {
        Level::Critical => "Critical",
        Level::High => "Error",
        Level::Medium => "Warning",
        Level::Low => "Notice",
        Level::Informational => "Informational",
    }
}

/// RFC 3339 with nanoseconds, UTC, as Falco writes `time` (and PagerDuty reads it).
pub fn rfc3339(ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// An alert in falcosidekick's input shape.
pub fn falco_shape(a: &Alert) -> Value {
    let f = &a.finding;
    let p = &f.process;
    let mut tags = f.rule.tags.clone();
    tags.extend(f.rule.technique.iter().cloned());
    json!({
        "uuid": f.id,
        "time": rfc3339(f.time_ns),
        "hostname": f.host,
        "source": "vigil",
        "rule": f.rule.title,
        "priority": falco_priority(f.rule.severity),
        "tags": tags,
        "output": format!(
            "{} (pid={} exe={} cmdline={:?} user={} incident={} risk={})",
            f.rule.title,
            p.pid,
            p.exe.as_deref().unwrap_or("?"),
            p.cmdline,
            p.user.as_deref().unwrap_or("?"),
            a.incident,
            a.risk.score
        ),
        "output_fields": {
            "evt.time": f.time_ns,
            "proc.pid": p.pid,
            "proc.ppid": p.ancestry.first().map(|a| a.pid),
            "proc.exepath": p.exe,
            "proc.cmdline": p.cmdline,
            "user.uid": p.uid,
            "user.name": p.user,
            "vigil.rule_id": f.rule.id,
            "vigil.incident": a.incident,
            "vigil.risk": a.risk.score,
            "vigil.entities": f.entities,
        },
    })
}

impl Forwarder {
    /// Starts the delivery thread for `url`, with room for `queue` alerts.
    pub fn start(url: &str, queue: usize) -> Result<Self, ForwardError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ForwardError::Url(url.to_owned()));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(queue.max(1));
        let counts = Arc::new(Counts::default());
        let (u, c) = (url.to_owned(), counts.clone());
        std::thread::Builder::new()
            .name("vigil-forward".into())
            .spawn(move || deliver_all(&u, &rx, &c))
            .map_err(ForwardError::Thread)?;
        Ok(Self {
            url: url.to_owned(),
            tx,
            counts,
        })
    }

    /// Queues `alerts`; those the full queue cannot take are dropped and counted.
    pub fn send(&self, alerts: &[Alert]) {
        for a in alerts {
            match self.tx.try_send(falco_shape(a)) {
                Ok(()) => {
                    self.counts.queued.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %self.url, alert = %a.finding.id, "the forward queue is full: alert not forwarded");
                }
            }
        }
    }

    pub fn stats(&self) -> ForwardStats {
        let c = &self.counts;
        ForwardStats {
            url: self.url.clone(),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            given_up: c.given_up.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
        }
    }
}

/// Delivers what arrives, in order, until the sender is gone.
fn deliver_all(url: &str, rx: &Receiver<Value>, counts: &Counts) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    for body in rx {
        counts.queued.fetch_sub(1, Ordering::Relaxed);
        let mut wait = FIRST_BACKOFF;
        let mut delivered = false;
        for attempt in 1..=ATTEMPTS {
            let sent = agent
                .post(url)
                .header("content-type", "application/json")
                .send(body.to_string());
            match sent {
                Ok(_) => {
                    delivered = true;
                    break;
                }
                Err(e) => {
                    counts.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(url, attempt, error = %e, "forwarding an alert failed");
                }
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(wait);
                wait *= 2;
            }
        }
        if delivered {
            counts.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.given_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                url,
                attempts = ATTEMPTS,
                "an alert could not be forwarded: given up"
            );
        }
    }
}
