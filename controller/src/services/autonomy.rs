//! The fleet acting on its own once one host is hit, as the fleet policy allows: within
//! seconds of an alert reaching the controller it tells whom the policy names, blocks the
//! incident's payloads and endpoints on every host, and hunts the fleet for them (its
//! history, and each live host), with no operator. Every step is kept with the incident it
//! serves and the clause of the fleet policy it rests on ([`FleetStep`]), and audited.

use std::collections::BTreeSet;

use sensor_common::protocol::{Blocked, Command, CommandReply, FleetBlock, Indicator};
use sensor_userspace::triage::alerts::Alert;

use crate::{
    lock, now_ns,
    services::{
        Fleet,
        fleet_policy::{FleetPolicy, OnTimeout},
        notify::{Event, Notice},
    },
    store::{Desired, FleetStep, Respond, Standing},
};
use sensor_common::protocol::Stream;

// The fleet acts on an alert of at least `autonomy.min_severity`; people are told per their
// own `min_severity`.

/// Who the audit log and the hosts' journals name for the fleet's own steps.
pub const WHO: &str = "controller (fleet policy)";

/// Seconds between runs of an incident's retro-hunt over the fleet's history: hosts that
/// were offline are found once their graph arrives.
const RETRO_EVERY_SECS: u64 = 30;

/// What the names of the retro-hunts start with.
const RETRO_PREFIX: &str = "retro-";

/// The fleet policy in force: the one set, else the shipped one.
pub fn policy(fleet: &Fleet) -> FleetPolicy {
    let text = lock(&fleet.store)
        .desired(Desired::FleetPolicy)
        .ok()
        .flatten();
    match text.map(|t| FleetPolicy::parse(&String::from_utf8_lossy(&t))) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            tracing::error!(error = %e, "the stored fleet policy does not parse; acting on the shipped one");
            FleetPolicy::shipped()
        }
        None => FleetPolicy::shipped(),
    }
}

fn record(fleet: &Fleet, step: FleetStep) {
    let mut store = lock(&fleet.store);
    crate::services::audit(
        store.as_mut(),
        WHO,
        &format!("{} for incident {}", step.step, step.incident),
        &format!("{} [{}]", step.detail, step.clause),
    );
    if let Err(e) = store.add_fleet_step(&step) {
        tracing::error!(error = %e, "cannot keep a fleet step");
    }
}

/// What the fleet does about one new alert from `host`.
pub async fn on_alert(fleet: &Fleet, host: &str, alert: Alert) {
    let policy = policy(fleet);
    escalate(fleet, host, &alert, &policy);
    if alert.finding.rule.severity < policy.autonomy.min_severity {
        return;
    }
    let blocks = blocks_of(host, &alert, &policy, fleet);
    for block in blocks {
        put_block(fleet, block).await;
    }
    retro_hunt(fleet, host, &alert, &policy).await;
}

/// Tells each escalation target whose threshold the alert's severity reaches, once per
/// incident.
fn escalate(fleet: &Fleet, host: &str, alert: &Alert, policy: &FleetPolicy) {
    let f = &alert.finding;
    let hostname = crate::services::hostname(fleet, host).unwrap_or_else(|| f.host.clone());
    let notice = Notice {
        incident: alert.incident.clone(),
        host: host.to_owned(),
        hostname,
        alert: f.id.clone(),
        rule: f.rule.title.clone(),
        rule_id: f.rule.id.clone(),
        severity: f.rule.severity,
        risk: alert.risk.score,
        time_ns: f.time_ns,
        output: format!(
            "{} by {} (pid {}): {}",
            f.rule.title,
            f.process.exe.as_deref().unwrap_or("?"),
            f.process.pid,
            f.process.cmdline
        ),
        tags: f.rule.technique.clone(),
        fields: [
            ("proc.pid", serde_json::json!(f.process.pid)),
            ("proc.exe", serde_json::json!(f.process.exe)),
            ("proc.cmdline", serde_json::json!(f.process.cmdline)),
            ("user.uid", serde_json::json!(f.process.uid)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    };
    for t in policy.targets_for(f.rule.severity) {
        if fleet
            .notifier
            .send(&fleet.store, t, Event::Trigger(notice.clone()))
        {
            record(
                fleet,
                FleetStep {
                    incident: alert.incident.clone(),
                    time_ns: now_ns(),
                    step: "told".into(),
                    detail: format!("{} ({:?}) of {}", t.name, t.kind, f.rule.title),
                    clause: format!("escalate {:?}: min_severity {:?}", t.name, t.min_severity),
                },
            );
        }
    }
}

/// The blocks the policy allows for an alert: its payloads' hashes and its remote endpoints
/// (the fleet's own hosts' addresses aside: a connection between two of them is lateral
/// movement to hunt, not a destination to refuse everywhere).
fn blocks_of(host: &str, alert: &Alert, policy: &FleetPolicy, fleet: &Fleet) -> Vec<FleetBlock> {
    let expires_ns = now_ns().saturating_add(policy.autonomy.block_ttl_secs * 1_000_000_000);
    let block = |what: Blocked, clause: &str| FleetBlock {
        incident: alert.incident.clone(),
        origin_host: host.to_owned(),
        reason: format!("{} (risk {})", alert.finding.rule.title, alert.risk.score),
        clause: clause.to_owned(),
        expires_ns,
        what,
    };
    let mut out = Vec::new();
    if policy.autonomy.block_payloads {
        let hashes: BTreeSet<(&String, Option<u64>)> = alert
            .payloads
            .iter()
            .filter_map(|p| Some((p.sha256.as_ref()?, p.size)))
            .collect();
        for (sha256, size) in hashes {
            out.push(block(
                Blocked::Hash {
                    sha256: sha256.clone(),
                    size,
                },
                "fleet policy: autonomy.block_payloads = true",
            ));
        }
    }
    if policy.autonomy.block_endpoints {
        let own: BTreeSet<std::net::IpAddr> = lock(&fleet.store)
            .hosts()
            .unwrap_or_default()
            .iter()
            .flat_map(|h| h.report.addresses.clone())
            .collect();
        for addr in endpoints(alert) {
            if !own.contains(&addr.ip()) && !addr.ip().is_unspecified() {
                out.push(block(
                    Blocked::Destination { addr },
                    "fleet policy: autonomy.block_endpoints = true",
                ));
            }
        }
    }
    out
}

/// Keeps a block and puts it on every connected host; hosts offline now get it when they
/// connect ([`catch_up`]). A block already kept is not sent again.
async fn put_block(fleet: &Fleet, block: FleetBlock) {
    let (id, new) = match lock(&fleet.store).add_fleet_block(&block) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "cannot keep a fleet block; not sent");
            return;
        }
    };
    if !new {
        return;
    }
    // The host it happened on has its own response, as its policy says.
    let hosts: Vec<String> = fleet
        .link
        .connected()
        .into_iter()
        .filter(|h| *h != block.origin_host)
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for host in hosts.clone() {
        let (fleet, block) = (fleet.clone(), block.clone());
        set.spawn(async move { deliver(&fleet, id, &host, block).await });
    }
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        done += usize::from(r.unwrap_or(false));
    }
    record(
        fleet,
        FleetStep {
            incident: block.incident.clone(),
            time_ns: now_ns(),
            step: "blocked".into(),
            detail: format!(
                "{} on {done} of {} connected host(s) until {} (others when they connect)",
                block.what,
                hosts.len(),
                block.expires_ns
            ),
            clause: block.clause.clone(),
        },
    );
}

/// Sends block `id` to `host` and keeps its answer; true when it is in force there.
async fn deliver(fleet: &Fleet, id: u64, host: &str, block: FleetBlock) -> bool {
    let cmd = Command::FleetBlock {
        block,
        who: WHO.into(),
    };
    let reply = fleet.link.command(host, &cmd).await;
    let in_force = matches!(reply, Ok(CommandReply::Done { .. }));
    // A host that could not be reached has no answer kept: it is asked again.
    if reply.is_ok()
        && let Err(e) =
            lock(&fleet.store).set_block_outcome(id, host, &crate::services::outcome(&reply))
    {
        tracing::error!(error = %e, "cannot keep a host's answer to a fleet block");
    }
    in_force
}

/// Gives a host that just connected the fleet blocks still in force it has not answered.
pub async fn catch_up(fleet: &Fleet, host: &str) {
    let missed: Vec<_> = crate::store::blocking(|| lock(&fleet.store).fleet_blocks(now_ns()))
        .unwrap_or_default()
        .into_iter()
        .filter(|b| !b.hosts.contains_key(host) && b.block.origin_host != host)
        .collect();
    for b in missed {
        let (incident, what) = (b.block.incident.clone(), b.block.what.clone());
        if deliver(fleet, b.id, host, b.block).await {
            record(
                fleet,
                FleetStep {
                    incident,
                    time_ns: now_ns(),
                    step: "blocked".into(),
                    detail: format!("{what} on {host}, which was offline when it was decided"),
                    clause: "fleet blocks reach hosts when they connect".into(),
                },
            );
        }
    }
}

/// Hunts the fleet for the alert's indicators: its endpoints in every host's history (a
/// standing hunt per endpoint, so hosts offline now are found when their graph
/// arrives; it isolates what it finds when the policy says so), and its payloads' hashes on
/// every live host (a sweep; offline hosts answer when they connect).
async fn retro_hunt(fleet: &Fleet, host: &str, alert: &Alert, policy: &FleetPolicy) {
    let respond = if policy.autonomy.isolate_matches {
        Respond::Isolate
    } else {
        Respond::Record
    };
    for addr in endpoints(alert) {
        let name = retro_name(&addr.to_string());
        let query = format!(
            "connections where addr = {} and port = {}",
            addr.ip(),
            addr.port()
        );
        let standing = match Standing::new(&name, &query, RETRO_EVERY_SECS, respond) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, %query, "cannot make a retro-hunt");
                continue;
            }
        };
        let known = lock(&fleet.store)
            .hunts()
            .unwrap_or_default()
            .iter()
            .any(|h| h.name == name);
        if known {
            // One standing hunt per indicator, whatever number of incidents share it: the
            // fleet's history is scanned once per run, not once per incident.
            hunted(
                fleet,
                &alert.incident,
                format!("`{query}` is hunted already, as {name}"),
                "retro-hunt always".into(),
            );
            continue;
        }
        if let Err(e) = lock(&fleet.store).put_hunt(&standing) {
            tracing::error!(error = %e, "cannot keep a retro-hunt");
            continue;
        }
        let found = crate::services::schedule::run_once(fleet, standing).await;
        let detail = match found {
            Ok(Some(inc)) => format!(
                "`{query}` over the fleet's history: {} hit(s) on {:?}, incident {} (from {host})",
                inc.hits.len(),
                inc.hosts,
                inc.id
            ),
            Ok(None) => format!(
                "`{query}` over the fleet's history: nothing yet; hunted again every {RETRO_EVERY_SECS} s as {name}"
            ),
            Err(e) => format!("`{query}` failed: {e}"),
        };
        let clause = format!(
            "retro-hunt always; on a match: {respond:?} (autonomy.isolate_matches = {})",
            policy.autonomy.isolate_matches
        );
        hunted(fleet, &alert.incident, detail, clause);
    }
    let hashes: BTreeSet<(String, Option<u64>)> = alert
        .payloads
        .iter()
        .filter_map(|p| Some((p.sha256.clone()?, p.size)))
        .collect();
    for (sha256, size) in hashes {
        let swept = crate::services::sweep::start(fleet, &sha256, size, &mut |_, _| {}).await;
        let detail = match swept {
            Ok(r) => {
                let found: Vec<String> = r
                    .answers
                    .iter()
                    .filter(|a| !a.found.is_empty())
                    .map(|a| format!("{}: {}", a.host, a.found.join(", ")))
                    .collect();
                format!(
                    "sweep {} for {sha256}: {} of {} host(s) answered; found on [{}]; offline hosts answer when they connect",
                    r.sweep.id,
                    r.answers.len(),
                    r.hosts,
                    found.join("; ")
                )
            }
            Err(e) => format!("sweep for {sha256} failed: {e}"),
        };
        hunted(
            fleet,
            &alert.incident,
            detail,
            "retro-hunt always (hash sweep)".into(),
        );
    }
}

fn hunted(fleet: &Fleet, incident: &str, detail: String, clause: String) {
    record(
        fleet,
        FleetStep {
            incident: incident.to_owned(),
            time_ns: now_ns(),
            step: "hunted".into(),
            detail,
            clause,
        },
    );
}

/// The remote endpoints of an alert: those its evidence names, and those its sensor found
/// its process and incident connected to.
fn endpoints(alert: &Alert) -> BTreeSet<std::net::SocketAddr> {
    sensor_userspace::triage::indicators::of_alert(alert)
        .into_iter()
        .filter_map(|i| match i {
            Indicator::Endpoint { addr } => Some(addr),
            _ => None,
        })
        .chain(alert.endpoints.iter().copied())
        .filter(|a| !a.ip().to_canonical().is_loopback())
        .collect()
}

/// A standing hunt's name for an indicator: within the 64 characters a name may have, and
/// the same for the same indicator whichever incident found it.
fn retro_name(indicator: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(indicator);
    format!("{RETRO_PREFIX}{}", sensor_common::protocol::hex(&h[..8]))
}

/// Pending actions older than the fleet policy's deadline: approved by the policy when it
/// says so for critical incidents, else left waiting for a person. Each is decided once.
pub async fn approval_deadlines(fleet: &Fleet) {
    let policy = policy(fleet);
    if policy.approval.on_timeout == OnTimeout::StayPending {
        return;
    }
    let deadline_ns = policy.approval.deadline_secs.saturating_mul(1_000_000_000);
    let now = now_ns();
    let (actions, alerts) = {
        let Ok(reader) = crate::services::reader(&fleet.store) else {
            return;
        };
        (
            reader.records(None, Stream::Actions).unwrap_or_default(),
            reader.records(None, Stream::Alerts).unwrap_or_default(),
        )
    };
    let settled: BTreeSet<String> = actions
        .iter()
        .filter_map(|r| r.body["settles"].as_str().map(str::to_owned))
        .collect();
    let critical: BTreeSet<(String, String)> = alerts
        .iter()
        .filter(|r| r.body["rule"]["severity"] == "critical")
        .filter_map(|r| Some((r.host.clone(), r.body["incident"].as_str()?.to_owned())))
        .collect();
    let due: BTreeSet<(String, String)> = actions
        .iter()
        .filter(|r| r.body["status"] == "pending")
        .filter(|r| {
            r.body["id"]
                .as_str()
                .is_some_and(|id| !settled.contains(id))
        })
        .filter(|r| {
            r.body["time_ns"]
                .as_u64()
                .is_some_and(|t| now.saturating_sub(t) >= deadline_ns)
        })
        .filter_map(|r| Some((r.host.clone(), r.body["incident"].as_str()?.to_owned())))
        .filter(|k| critical.contains(k))
        .collect();
    for (host, incident) in due {
        let first = lock(&fleet.store).first_notice(
            "approval-deadline",
            &format!("{host}|{incident}"),
            "approve",
        );
        if !matches!(first, Ok(true)) || !fleet.link.is_connected(&host) {
            continue;
        }
        let who = format!(
            "{WHO}: approval.on_timeout = approve_critical after {} s",
            policy.approval.deadline_secs
        );
        let reply = fleet
            .link
            .command(
                &host,
                &Command::Approve {
                    incident: incident.clone(),
                    who: who.clone(),
                },
            )
            .await;
        record(
            fleet,
            FleetStep {
                incident,
                time_ns: now_ns(),
                step: "approved".into(),
                detail: format!(
                    "the pending actions on {host}: {}",
                    crate::services::outcome(&reply)
                ),
                clause: format!(
                    "approval.deadline_secs = {}, approval.on_timeout = approve_critical",
                    policy.approval.deadline_secs
                ),
            },
        );
    }
}

/// Drops the retro-hunts that have outlived the blocks of their incident: they hunt for
/// hosts that reconnect within the fleet blocks' lifetime.
fn retire_retro_hunts(fleet: &Fleet) {
    let ttl_ns = policy(fleet)
        .autonomy
        .block_ttl_secs
        .saturating_mul(1_000_000_000);
    let now = now_ns();
    let mut store = lock(&fleet.store);
    let old: Vec<String> = store
        .hunts()
        .unwrap_or_default()
        .into_iter()
        .filter(|h| h.name.starts_with(RETRO_PREFIX) && now.saturating_sub(h.created_ns) > ttl_ns)
        .map(|h| h.name)
        .collect();
    for name in old {
        match store.remove_hunt(&name) {
            Ok(_) => {
                tracing::info!(hunt = %name, "a retro-hunt outlived its blocks and was dropped")
            }
            Err(e) => tracing::error!(error = %e, "cannot drop a retro-hunt"),
        }
    }
}

/// Runs the approval deadlines and retires old retro-hunts every few seconds until the
/// server stops.
pub async fn run(fleet: Fleet) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        every.tick().await;
        approval_deadlines(&fleet).await;
        retire_retro_hunts(&fleet);
    }
}
