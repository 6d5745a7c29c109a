//! Releasing a host: verify first, then lift the containment, then close its incidents.
//!
//! Verification sends the host the indicators of its open incidents (the processes, the
//! files they wrote, the endpoints they talked to) and the host's sensor looks for each on
//! the host as it is now. While any is present the release is refused, naming each. `--force`
//! skips the look, and the closing records who forced it.

use sensor_common::protocol::{Command, CommandReply, Indicator, Presence};
use serde::{Deserialize, Serialize};

use crate::{lock, now_ns, services::Fleet, services::incidents, store::Closed};

/// What a release did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Released {
    pub host: String,
    /// False when forced.
    pub verified: bool,
    pub indicators_checked: usize,
    /// The sensor's action records for the containment it lifted.
    pub lifted: Vec<serde_json::Value>,
    /// Said when nothing was in force to lift.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub closed_incidents: Vec<String>,
}

/// Why a release did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "release of {host} refused: {} indicator(s) of its open incidents are still present:\n{}\nclean them up (or release with --force, which is recorded)",
        present.len(),
        present.iter().map(|p| format!("  - {}: {}", p.indicator, p.detail)).collect::<Vec<_>>().join("\n")
    )]
    StillPresent {
        host: String,
        present: Vec<Presence>,
    },
    #[error(
        "cannot verify {host}: {why} (release with --force to skip verification, which is recorded)"
    )]
    Unverified { host: String, why: String },
    #[error("{host} is not isolated and has no open incident: nothing to release")]
    Nothing { host: String },
    #[error("the host did not release: {0}")]
    Host(String),
    #[error("the host could not be asked: {0}")]
    Link(#[from] crate::services::LinkError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub async fn release(
    fleet: &Fleet,
    host: &str,
    force: bool,
    who: &str,
) -> Result<Released, ReleaseError> {
    let open = incidents::open_on(lock(&fleet.store).as_ref(), host)?;
    let indicators: Vec<Indicator> = open
        .iter()
        .flat_map(|i| i.indicators.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !force && !indicators.is_empty() {
        let cmd = Command::Verify {
            indicators: indicators.clone(),
        };
        match fleet.link.command(host, &cmd).await {
            Ok(CommandReply::Verified { present }) if present.is_empty() => {}
            Ok(CommandReply::Verified { present }) => {
                return Err(ReleaseError::StillPresent {
                    host: host.to_owned(),
                    present,
                });
            }
            Ok(other) => {
                return Err(ReleaseError::Unverified {
                    host: host.to_owned(),
                    why: format!("the host answered {other:?}"),
                });
            }
            Err(why) => {
                return Err(ReleaseError::Unverified {
                    host: host.to_owned(),
                    why: why.to_string(),
                });
            }
        }
    }
    let by = format!(
        "{}{}",
        crate::operator(who),
        if force {
            ", forced without verification"
        } else {
            ", verified clean"
        }
    );
    let (lifted, note) = match fleet
        .link
        .command(host, &Command::Release { who: by.clone() })
        .await
    {
        Ok(CommandReply::Done { records }) => (
            records
                .iter()
                .map(|b| serde_json::from_slice(b).unwrap_or(serde_json::Value::Null))
                .collect(),
            None,
        ),
        Ok(CommandReply::NotIsolated) => {
            if open.is_empty() {
                return Err(ReleaseError::Nothing {
                    host: host.to_owned(),
                });
            }
            (Vec::new(), Some("the host is not isolated".to_owned()))
        }
        Ok(CommandReply::Refused { reason }) => return Err(ReleaseError::Host(reason)),
        Ok(other) => return Err(ReleaseError::Host(format!("unexpected answer {other:?}"))),
        Err(e) => return Err(ReleaseError::Link(e)),
    };
    let now = now_ns();
    let closed: Vec<Closed> = open
        .iter()
        .map(|i| Closed {
            host: host.to_owned(),
            incident: i.id.clone(),
            closed_ns: now,
            how: format!("released by {by}"),
        })
        .collect();
    lock(&fleet.store).close_incidents(&closed)?;
    // Whoever was told of an incident hears that it closed (PagerDuty resolves it).
    let policy = crate::services::autonomy::policy(fleet);
    let hostname = crate::services::hostname(fleet, host).unwrap_or_else(|| host.to_owned());
    for c in &closed {
        for t in &policy.escalate {
            fleet.notifier.send(
                &fleet.store,
                t,
                crate::services::notify::Event::Resolve {
                    incident: c.incident.clone(),
                    hostname: hostname.clone(),
                    how: c.how.clone(),
                },
            );
        }
    }
    Ok(Released {
        host: host.to_owned(),
        verified: !force,
        indicators_checked: if force { 0 } else { indicators.len() },
        lifted,
        note,
        closed_incidents: closed.into_iter().map(|c| c.incident).collect(),
    })
}
