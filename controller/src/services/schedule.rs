//! Standing hunts: a query the controller runs on a schedule over the fleet graph. New hits
//! (a process acting on a thing, never reported before by this hunt) open an incident that
//! names every host they are on, or join the hunt's latest one while it is under an hour
//! old and no release closed it, so one finding across the fleet is one incident. A hunt may ask for a response: isolating each host hit, at once when it is
//! connected, else as soon as it reconnects.
//!
//! Hosts offline when a hunt runs answer when they come back: their graph deltas wait in
//! the sensor's buffer, arrive on reconnection, and the next run sees them.

use std::collections::BTreeSet;

use sensor_common::protocol::{Command, CommandReply};

use crate::{
    lock, now_ns,
    services::Fleet,
    services::hunt,
    store::{Hit, HostResponse, HuntIncident, Respond, Standing},
};

/// The shortest interval between runs.
pub const MIN_EVERY_SECS: u64 = 1;
/// How often the scheduler looks for hunts that are due.
const TICK: std::time::Duration = std::time::Duration::from_millis(500);
/// Who the sensors' journals and the audit log name for a hunt's response.
fn by(name: &str) -> String {
    format!("controller hunt {name}")
}

/// Why a standing hunt is refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("a hunt's name is 1 to 64 letters, digits, '-' or '_': {0:?}")]
    Name(String),
    #[error("syntax error {0}")]
    Query(hunt::HuntError),
    #[error("a hunt runs at most every {MIN_EVERY_SECS} s")]
    TooOften,
}

/// Why one run of a standing hunt did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("hunt {name}: {source}")]
    Query {
        name: String,
        source: hunt::HuntError,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the hunt's search stopped: {0}")]
    Search(#[from] tokio::task::JoinError),
}

impl Standing {
    pub fn new(
        name: &str,
        query: &str,
        every_secs: u64,
        respond: Respond,
    ) -> Result<Self, ScheduleError> {
        let plain = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Err(ScheduleError::Name(name.to_owned()));
        }
        hunt::parse(query).map_err(ScheduleError::Query)?;
        if every_secs < MIN_EVERY_SECS {
            return Err(ScheduleError::TooOften);
        }
        Ok(Self {
            name: name.to_owned(),
            query: query.to_owned(),
            every_secs,
            respond,
            created_ns: now_ns(),
            last_run_ns: None,
            runs: 0,
        })
    }

    fn due(&self, now: u64) -> bool {
        self.last_run_ns
            .is_none_or(|t| now.saturating_sub(t) >= self.every_secs.saturating_mul(1_000_000_000))
    }
}

/// The lease on running the standing hunts ([`crate::store::Store::lease`]).
pub const LEASE: &str = "standing hunts";

/// Runs the standing hunts as they fall due, for as long as the server runs (on the replica
/// holding [`LEASE`]).
pub async fn run(fleet: Fleet) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Replicas sharing a store run the standing hunts one at a time: the lease's holder.
        match lock(&fleet.store).lease(LEASE) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot ask for the standing hunts' lease");
                continue;
            }
        }
        let due: Vec<Standing> = match lock(&fleet.store).hunts() {
            Ok(h) => h.into_iter().filter(|h| h.due(now_ns())).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the standing hunts");
                continue;
            }
        };
        for h in due {
            if let Err(e) = run_once(&fleet, h).await {
                tracing::error!(error = %e, "a standing hunt failed");
            }
        }
    }
}

/// One run of one hunt: search, keep the new hits, open their incident, respond.
pub async fn run_once(fleet: &Fleet, mut h: Standing) -> Result<Option<HuntIncident>, RunError> {
    let q = hunt::parse(&h.query).map_err(|source| RunError::Query {
        name: h.name.clone(),
        source,
    })?;
    let store = fleet.store.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        crate::services::reader(&store).and_then(|r| hunt::search(r.as_ref(), &q, &mut |_| {}))
    })
    .await??;
    let now = now_ns();
    h.last_run_ns = Some(now);
    h.runs += 1;
    let keys: Vec<String> = outcome.hits.iter().map(Hit::key).collect();
    let incident = {
        let mut store = lock(&fleet.store);
        // A hunt removed while it ran stays removed.
        if !store.hunts()?.iter().any(|s| s.name == h.name) {
            return Ok(None);
        }
        store.put_hunt(&h)?;
        let fresh = store.new_hits(&h.name, &keys)?;
        let hits: Vec<Hit> = outcome
            .hits
            .into_iter()
            .zip(fresh)
            .filter_map(|(hit, new)| new.then_some(hit))
            .collect();
        if hits.is_empty() {
            return Ok(None);
        }
        let hosts: BTreeSet<String> = hits.iter().map(|x| x.host.clone()).collect();
        let pending =
            |hosts: &BTreeSet<String>| -> std::collections::BTreeMap<String, HostResponse> {
                match h.respond {
                    Respond::Record => Default::default(),
                    Respond::Isolate => hosts
                        .iter()
                        .map(|x| (x.clone(), HostResponse::Pending))
                        .collect(),
                }
            };
        // Hits that trickle in over several runs (hosts' deltas arrive a second apart, an
        // offline host later) join the hunt's latest incident while it is recent and no
        // release has closed it anywhere.
        let closed: BTreeSet<String> = store
            .closed_incidents()?
            .into_iter()
            .map(|c| c.incident)
            .collect();
        let latest = store
            .hunt_incidents()?
            .into_iter()
            .rfind(|i| i.hunt == h.name)
            .filter(|i| {
                now.saturating_sub(i.opened_ns) < JOIN_WINDOW_NS && !closed.contains(&i.id)
            });
        let inc = match latest {
            Some(mut inc) => {
                for (host, r) in pending(&hosts) {
                    inc.responses.entry(host).or_insert(r);
                }
                inc.hosts.extend(hosts);
                inc.hits.extend(hits);
                inc
            }
            None => HuntIncident {
                id: format!("hunt-{}-{now:x}", h.name),
                hunt: h.name.clone(),
                query: h.query.clone(),
                opened_ns: now,
                responses: pending(&hosts),
                hosts,
                hits,
            },
        };
        store.put_hunt_incident(&inc)?;
        inc
    };
    tracing::warn!(
        hunt = %h.name,
        incident = %incident.id,
        hits = incident.hits.len(),
        hosts = ?incident.hosts,
        "a standing hunt found something new"
    );
    let incident = respond(fleet, incident).await;
    Ok(Some(incident))
}

/// How long a hunt's new hits join its latest open incident rather than open another.
const JOIN_WINDOW_NS: u64 = 3600 * 1_000_000_000;

/// Carries out the pending responses of `inc` on the hosts connected now, and keeps what
/// came of each.
pub async fn respond(fleet: &Fleet, mut inc: HuntIncident) -> HuntIncident {
    let pending: Vec<String> = inc
        .responses
        .iter()
        .filter(|(_, r)| r.is_pending())
        .map(|(h, _)| h.clone())
        .collect();
    if pending.is_empty() {
        return inc;
    }
    for host in pending {
        if !fleet.link.is_connected(&host) {
            continue;
        }
        let n = inc.hits.iter().filter(|x| x.host == host).count();
        let cmd = Command::Isolate {
            reason: format!(
                "hunt {} found {n} hit(s) for `{}` (incident {})",
                inc.hunt, inc.query, inc.id
            ),
            who: by(&inc.hunt),
        };
        let outcome = match fleet.link.command(&host, &cmd).await {
            Ok(CommandReply::Done { .. }) => "isolated".to_owned(),
            Ok(other) => other.to_string(),
            // Still pending: tried again when the host reconnects.
            Err(e) => {
                tracing::warn!(%host, error = %e, "hunt response not delivered");
                continue;
            }
        };
        let mut store = lock(&fleet.store);
        crate::services::audit(
            store.as_mut(),
            &by(&inc.hunt),
            &format!("isolate {host} (incident {})", inc.id),
            &outcome,
        );
        inc.responses.insert(host, HostResponse::Done(outcome));
        if let Err(e) = store.put_hunt_incident(&inc) {
            tracing::error!(error = %e, "cannot keep a hunt incident");
        }
    }
    inc
}

/// Carries out the responses still pending for `host` (it just connected).
pub async fn catch_up(fleet: &Fleet, host: &str) {
    let waiting: Vec<HuntIncident> =
        match crate::store::blocking(|| lock(&fleet.store).hunt_incidents()) {
            Ok(all) => all
                .into_iter()
                .filter(|i| i.responses.get(host).is_some_and(HostResponse::is_pending))
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the hunt incidents");
                return;
            }
        };
    for inc in waiting {
        respond(fleet, inc).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standing_hunt_is_refused_for_a_bad_name_query_or_interval() {
        assert!(matches!(
            Standing::new("a b", "processes", 60, Respond::Record),
            Err(ScheduleError::Name(_))
        ));
        let e = Standing::new("x", "processes where exe ~ 1", 60, Respond::Record).unwrap_err();
        assert!(e.to_string().contains("at 20"), "{e}");
        assert!(matches!(
            Standing::new("x", "processes", 0, Respond::Record),
            Err(ScheduleError::TooOften)
        ));
        let ok = Standing::new("nc-under-web", "processes", 60, Respond::Isolate).expect("valid");
        assert!(ok.due(now_ns()), "a new hunt runs at once");
        let ran = Standing {
            last_run_ns: Some(now_ns()),
            ..ok
        };
        assert!(!ran.due(now_ns()), "and then waits its interval");
    }
}
