//! The fleet's incidents, read from the alerts the hosts sent: each host's incidents with
//! their alerts, whether a release closed them, and the indicators they left, which a
//! release looks for before it lets a host go.

use std::collections::{BTreeMap, BTreeSet};

use sensor_common::protocol::{Indicator, Stream};
use sensor_userspace::alerts::Alert;
use serde::Serialize;

use crate::store::{Closed, Store, StoreError};

/// One host's incident as the controller knows it.
#[derive(Clone, Debug, Serialize)]
pub struct FleetIncident {
    pub host: String,
    pub id: String,
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
}

/// Every incident of `host` (or of the fleet), oldest first.
pub fn incidents(store: &dyn Store, host: Option<&str>) -> Result<Vec<FleetIncident>, StoreError> {
    let closed: BTreeMap<(String, String), Closed> = store
        .closed_incidents()?
        .into_iter()
        .map(|c| ((c.host.clone(), c.incident.clone()), c))
        .collect();
    let mut by_key: BTreeMap<(String, String), FleetIncident> = BTreeMap::new();
    let mut unreadable: BTreeMap<String, usize> = BTreeMap::new();
    for r in store.records(host, Stream::Alerts)? {
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
            alerts: 0,
            risk: 0,
            rules: BTreeSet::new(),
            first_ns: alert.finding.time_ns,
            last_ns: alert.finding.time_ns,
            closed: closed.get(&key).cloned(),
            indicators: BTreeSet::new(),
            unreadable: 0,
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
            .extend(sensor_userspace::indicators::of_alert(&alert));
    }
    let mut out: Vec<FleetIncident> = by_key.into_values().collect();
    for inc in &mut out {
        inc.unreadable = unreadable.get(&inc.host).copied().unwrap_or(0);
    }
    out.sort_by_key(|i| i.first_ns);
    Ok(out)
}
