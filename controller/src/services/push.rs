//! Rules and policy for the fleet: validated here with the sensor's own parsers before
//! anything is sent, kept as the fleet's desired state, pushed to every connected host, and
//! pushed again to a host that reconnects running something else. A host that still finds a
//! push invalid keeps what it runs and says why; the answer goes to the audit log.

use sensor_common::protocol::{Command, HostReport, MAX_FRAME, RuleSet};
use serde::{Deserialize, Serialize};

use crate::{
    lock,
    services::{self, Fleet},
    store::Desired,
};

/// Who the controller says it is when it converges a host on its own.
const CONVERGE: &str = "controller (desired state)";

/// Why a push is refused before anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Rules(#[from] sensor_userspace::detect::rules::SetRefused),
    #[error(transparent)]
    Policy(#[from] sensor_userspace::policy::PolicyError),
    #[error("the push would be {size} bytes; a frame holds at most {MAX_FRAME}")]
    TooLarge { size: usize },
    #[error("cannot encode the push: {0}")]
    Encode(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What one host answered to a push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAnswer {
    pub host: String,
    pub outcome: String,
}

/// The version of a policy text, once it is valid.
fn policy_version(text: &str) -> Result<u64, PushError> {
    sensor_userspace::policy::Policy::parse(text, "the pushed policy")
        .map(|p| p.version)
        .map_err(PushError::from)
}

fn fits(cmd: &Command) -> Result<(), PushError> {
    let size = rmp_serde::to_vec(cmd)
        .map_err(|e| PushError::Encode(e.to_string()))?
        .len();
    if size + 64 > MAX_FRAME {
        return Err(PushError::TooLarge { size });
    }
    Ok(())
}

/// Checks a rule set whole (every file loads, every test case passes) and makes it the
/// fleet's; returns the number of rules.
pub fn set_rules(fleet: &Fleet, set: &RuleSet) -> Result<usize, PushError> {
    let report = sensor_userspace::detect::rules::validate_set(set)?;
    fits(&Command::PushRules {
        set: set.clone(),
        who: String::new(),
    })?;
    let body = rmp_serde::to_vec(set).map_err(|e| PushError::Encode(e.to_string()))?;
    lock(&fleet.store).set_desired(Desired::Rules, &body)?;
    Ok(report.loaded())
}

/// Checks a policy whole and makes it the fleet's; returns its version.
pub fn set_policy(fleet: &Fleet, text: &str) -> Result<u64, PushError> {
    let version = policy_version(text)?;
    fits(&Command::PushPolicy {
        text: text.to_owned(),
        who: String::new(),
    })?;
    lock(&fleet.store).set_desired(Desired::Policy, text.as_bytes())?;
    Ok(version)
}

/// Sends `cmd` to every connected host (or the ones named); hosts not connected get it when
/// they reconnect.
pub async fn fan_out(fleet: &Fleet, hosts: &[String], cmd: &Command) -> Vec<HostAnswer> {
    let mut out = Vec::new();
    for host in hosts {
        out.push(HostAnswer {
            host: host.clone(),
            outcome: services::outcome(&fleet.link.command(host, cmd).await),
        });
    }
    out
}

/// Brings a host that just said hello in line with the fleet's desired rules and policy.
pub async fn converge(fleet: &Fleet, host: &str, report: HostReport) {
    let (rules, policy) = crate::store::blocking(|| {
        let store = lock(&fleet.store);
        (
            store.desired(Desired::Rules).ok().flatten(),
            store.desired(Desired::Policy).ok().flatten(),
        )
    });
    let mut sends = Vec::new();
    if let Some(set) = rules.and_then(|b| rmp_serde::from_slice::<RuleSet>(&b).ok())
        && set.version != report.rules_version
    {
        sends.push(Command::PushRules {
            set,
            who: CONVERGE.into(),
        });
    }
    if let Some(text) = policy.and_then(|b| String::from_utf8(b).ok())
        && policy_version(&text).is_ok_and(|v| v != report.policy_version)
    {
        sends.push(Command::PushPolicy {
            text,
            who: CONVERGE.into(),
        });
    }
    for cmd in sends {
        let what = match &cmd {
            Command::PushRules { set, .. } => format!("push rules {}", set.version),
            _ => "push policy".to_owned(),
        };
        let outcome = services::outcome(&fleet.link.command(host, &cmd).await);
        tracing::info!(%host, %what, %outcome, "host converged on the fleet's desired state");
        services::audit(
            lock(&fleet.store).as_mut(),
            CONVERGE,
            &format!("{what} to {host}"),
            &outcome,
        );
    }
}
