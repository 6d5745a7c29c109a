//! The fleet's incidents: those the sensors opened (read from the alerts they sent) and
//! those standing hunts opened (one per run, across every host hit), each shown per host
//! with whether a release closed it there and the indicators it left, which a release looks
//! for before it lets a host go. An incident on several hosts names them all (`spans`).

use std::collections::{BTreeMap, BTreeSet};

use sensor_common::protocol::{Indicator, Stream};
use sensor_userspace::triage::alerts::Alert;
use serde::{Deserialize, Serialize};

use crate::store::{Closed, Store, StoreError};

/// An incident on one host: (host, incident id).
type IncidentKey = (String, String);

/// A process by host and identity (pid, start).
type ProcessAt<'a> = (&'a str, u32, u64);

/// Who opened an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The host's sensor, from its alerts.
    Sensor,
    /// A standing hunt of the controller.
    Hunt,
}

/// One host's incident as the controller knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetIncident {
    pub host: String,
    pub id: String,
    pub source: Source,
    /// Every host the incident is on (this one included).
    pub spans: BTreeSet<String>,
    pub alerts: usize,
    /// Highest risk of its alerts.
    pub risk: u8,
    pub rules: BTreeSet<String>,
    pub first_ns: u64,
    pub last_ns: u64,
    /// None while open.
    pub closed: Option<Closed>,
    pub indicators: BTreeSet<Indicator>,
    /// Alert lines the controller could not read (a newer sensor's schema, a corrupt line).
    pub unreadable: usize,
    /// What the fleet did about it on its own: who was told, what was blocked where, which
    /// hosts were hunted and what matched, each with its clause of the fleet policy.
    #[serde(default)]
    pub fleet_steps: Vec<crate::store::FleetStep>,
}

/// Every incident of `host` (or of the fleet), oldest first, with `spans` joined across
/// hosts along lateral paths (which reads the fleet's whole connection history).
pub fn list(store: &dyn Store, host: Option<&str>) -> Result<Vec<FleetIncident>, StoreError> {
    collect(store, host, true)
}

/// The open incidents of `host` with their indicators, for a release. Their `spans` are not
/// joined across hosts: a release reads none, and the join reads the whole history.
pub fn open_on(store: &dyn Store, host: &str) -> Result<Vec<FleetIncident>, StoreError> {
    Ok(collect(store, Some(host), false)?
        .into_iter()
        .filter(|i| i.closed.is_none())
        .collect())
}

/// The incidents of `host` (or of the fleet), oldest first; `join` joins the sensors'
/// incidents across hosts, which needs every host's alerts.
fn collect(
    store: &dyn Store,
    host: Option<&str>,
    join: bool,
) -> Result<Vec<FleetIncident>, StoreError> {
    let closed: BTreeMap<IncidentKey, Closed> = store
        .closed_incidents()?
        .into_iter()
        .map(|c| ((c.host.clone(), c.incident.clone()), c))
        .collect();
    let mut by_key: BTreeMap<IncidentKey, FleetIncident> = BTreeMap::new();
    let mut unreadable: BTreeMap<String, usize> = BTreeMap::new();
    // The processes of each sensor incident (alert processes and their ancestry), to join
    // incidents one lateral path runs through.
    let mut members: BTreeMap<IncidentKey, BTreeSet<(u32, u64)>> = BTreeMap::new();
    let of = if join { None } else { host };
    for r in store.records(of, Stream::Alerts)? {
        let alert: Alert = match serde_json::from_value(r.body) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(host = %r.host, seq = r.seq, error = %e, "unreadable alert");
                *unreadable.entry(r.host.clone()).or_default() += 1;
                continue;
            }
        };
        let key = (r.host.clone(), alert.incident.clone());
        let inc = by_key.entry(key.clone()).or_insert_with(|| FleetIncident {
            host: r.host.clone(),
            id: alert.incident.clone(),
            source: Source::Sensor,
            spans: BTreeSet::from([r.host.clone()]),
            alerts: 0,
            risk: 0,
            rules: BTreeSet::new(),
            first_ns: alert.finding.time_ns,
            last_ns: alert.finding.time_ns,
            closed: closed.get(&key).cloned(),
            indicators: BTreeSet::new(),
            unreadable: 0,
            fleet_steps: Vec::new(),
        });
        inc.alerts += 1;
        inc.risk = inc.risk.max(alert.risk.score);
        inc.rules.extend(
            alert
                .finding
                .rule
                .id
                .clone()
                .or_else(|| Some(alert.finding.rule.title.clone())),
        );
        inc.first_ns = inc.first_ns.min(alert.finding.time_ns);
        inc.last_ns = inc.last_ns.max(alert.finding.time_ns);
        inc.indicators
            .extend(sensor_userspace::triage::indicators::of_alert(&alert));
        let p = &alert.finding.process;
        members.entry(key).or_default().extend(
            std::iter::once((p.pid, p.start)).chain(p.ancestry.iter().map(|a| (a.pid, a.start))),
        );
    }
    if join {
        join_across_hosts(store, &mut by_key, &members)?;
    }
    for h in store.hunt_incidents()? {
        for on in h
            .hosts
            .iter()
            .filter(|x| host.is_none_or(|want| want == x.as_str()))
        {
            let key = (on.clone(), h.id.clone());
            by_key.insert(
                key.clone(),
                FleetIncident {
                    host: on.clone(),
                    id: h.id.clone(),
                    source: Source::Hunt,
                    spans: h.hosts.clone(),
                    alerts: h.hits.iter().filter(|x| &x.host == on).count(),
                    risk: 0,
                    rules: BTreeSet::from([format!("hunt {}: {}", h.hunt, h.query)]),
                    first_ns: h.opened_ns,
                    last_ns: h.opened_ns,
                    closed: closed.get(&key).cloned(),
                    indicators: h.indicators(on),
                    unreadable: 0,
                    fleet_steps: Vec::new(),
                },
            );
        }
    }
    let mut out: Vec<FleetIncident> = by_key
        .into_values()
        .filter(|i| host.is_none_or(|h| h == i.host))
        .collect();
    for inc in &mut out {
        inc.unreadable = unreadable.get(&inc.host).copied().unwrap_or(0);
        inc.fleet_steps = store.fleet_steps(&inc.id)?;
    }
    out.sort_by_key(|i| i.first_ns);
    Ok(out)
}

/// Gives sensor incidents on different hosts that one lateral path runs through the same
/// `spans`: an alert's process on one host descends, across a connection it accepted, from
/// a process of another host's incident (the attacker's foothold there).
fn join_across_hosts(
    store: &dyn Store,
    incidents: &mut BTreeMap<IncidentKey, FleetIncident>,
    members: &BTreeMap<IncidentKey, BTreeSet<(u32, u64)>>,
) -> Result<(), StoreError> {
    let hosts: BTreeSet<&String> = members.keys().map(|(h, _)| h).collect();
    if hosts.len() < 2 {
        return Ok(());
    }
    let fleet = crate::services::hunt::Fleet::load(store, true)?;
    let mut owner: BTreeMap<ProcessAt<'_>, Vec<&IncidentKey>> = BTreeMap::new();
    for (key, procs) in members {
        for &(pid, start) in procs {
            owner
                .entry((key.0.as_str(), pid, start))
                .or_default()
                .push(key);
        }
    }
    // Union-find over the incidents, by index.
    let keys: Vec<&IncidentKey> = members.keys().collect();
    let index: BTreeMap<&IncidentKey, usize> =
        keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut parent: Vec<usize> = (0..keys.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (key, procs) in members {
        for &(pid, start) in procs {
            let id = sensor_common::wire::ProcessId { pid, start };
            let Some(node) = fleet.get(&key.0, id) else {
                continue;
            };
            for step in fleet.lineage(&key.0, node) {
                if step.host == key.0 {
                    continue;
                }
                for other in owner
                    .get(&(step.host.as_str(), step.pid, step.start))
                    .into_iter()
                    .flatten()
                {
                    let (a, b) = (
                        root(&mut parent, index[key]),
                        root(&mut parent, index[*other]),
                    );
                    parent[a] = b;
                }
            }
        }
    }
    let mut spans: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        spans
            .entry(root(&mut parent, i))
            .or_default()
            .insert(k.0.clone());
    }
    for (i, k) in keys.iter().enumerate() {
        if let Some(inc) = incidents.get_mut(*k)
            && let Some(s) = spans.get(&root(&mut parent, i))
        {
            inc.spans = s.clone();
        }
    }
    Ok(())
}
