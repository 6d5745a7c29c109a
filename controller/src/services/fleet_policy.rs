//! The fleet policy: what the controller may do across the fleet on its own after one host
//! is hit, and whom it tells. TOML, checked whole like the sensor's policy: an unknown key, a
//! bad value or a missing setting refuses the whole file and names the problem, and the
//! policy in force stays.
//!
//! ```toml
//! version = 1
//!
//! [autonomy]
//! min_severity = "high"        # alerts below this are left to their host and to people
//! block_payloads = true        # the incident's payload hashes onto every host's exec blocklist
//! block_endpoints = true       # its remote endpoints as destination blocks on every host
//! isolate_matches = false      # isolate a host a retro-hunt matches
//! block_ttl_secs = 86400       # fleet blocks expire (each host journals the expiry)
//!
//! [approval]
//! deadline_secs = 900          # how long a pending action waits for a person
//! on_timeout = "stay_pending"  # or "approve_critical": the policy approves critical incidents
//!
//! [[escalate]]
//! name = "siem"
//! kind = "webhook"             # webhook (falcosidekick's input), slack, pagerduty
//! url = "http://127.0.0.1:2801/"
//! min_severity = "high"
//! # routing_key = "..."        # pagerduty only
//! ```
//!
//! Retro-hunting every incident's indicators is always on: it changes nothing on a host.

use sensor_userspace::detect::rules::sigma::rule::Level;
use serde::{Deserialize, Serialize};

/// The fleet policy in force when none was set: retro-hunt and block payloads and endpoints
/// for a day, isolate nothing on its own, tell nobody (there is nobody to tell yet).
pub const DEFAULT: &str = "version = 0\n\n[autonomy]\nmin_severity = \"high\"\nblock_payloads = true\nblock_endpoints = true\nisolate_matches = false\nblock_ttl_secs = 86400\n\n[approval]\ndeadline_secs = 900\non_timeout = \"stay_pending\"\n";

/// Shortest and longest life of a fleet block.
const MIN_TTL_SECS: u64 = 5;
const MAX_TTL_SECS: u64 = 90 * 24 * 3600;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetPolicy {
    pub version: u64,
    pub autonomy: Autonomy,
    pub approval: Approval,
    #[serde(default)]
    pub escalate: Vec<Target>,
}

/// The fleet actions that run without a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autonomy {
    /// The least severity of an alert the fleet acts on by itself (blocks, retro-hunts).
    pub min_severity: Level,
    pub block_payloads: bool,
    pub block_endpoints: bool,
    pub isolate_matches: bool,
    pub block_ttl_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub deadline_secs: u64,
    pub on_timeout: OnTimeout,
}

/// What happens to an action nobody approved or denied within the deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// It keeps waiting for a person.
    StayPending,
    /// The policy approves it when its incident is critical, and says so in the journal.
    ApproveCritical,
}

/// Someone to tell, and from what severity on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
    pub url: String,
    pub min_severity: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// JSON in falcosidekick's input shape, so its deployments forward it unchanged.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2: trigger on escalation, resolve on close.
    Pagerduty,
}

/// What is wrong with a fleet policy.
#[derive(Debug, thiserror::Error)]
pub enum FleetPolicyError {
    #[error("the fleet policy is not valid TOML of its schema: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("autonomy.block_ttl_secs must be between {MIN_TTL_SECS} and {MAX_TTL_SECS}, not {0}")]
    Ttl(u64),
    #[error("approval.deadline_secs must be at least 5, not {0}")]
    Deadline(u64),
    #[error("escalation target {name:?}: {why}")]
    Target { name: String, why: String },
}

impl FleetPolicy {
    /// Parses and checks a whole fleet policy.
    pub fn parse(text: &str) -> Result<Self, FleetPolicyError> {
        let p: Self = toml::from_str(text)?;
        p.check()?;
        Ok(p)
    }

    /// The policy shipped with the controller.
    pub fn shipped() -> Self {
        // Checked by a unit test; a default that fails to parse is a build defect.
        toml::from_str(DEFAULT).unwrap_or_else(|_| Self {
            version: 0,
            autonomy: Autonomy {
                min_severity: Level::Critical,
                block_payloads: false,
                block_endpoints: false,
                isolate_matches: false,
                block_ttl_secs: 86_400,
            },
            approval: Approval {
                deadline_secs: 900,
                on_timeout: OnTimeout::StayPending,
            },
            escalate: Vec::new(),
        })
    }

    fn check(&self) -> Result<(), FleetPolicyError> {
        let ttl = self.autonomy.block_ttl_secs;
        if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&ttl) {
            return Err(FleetPolicyError::Ttl(ttl));
        }
        if self.approval.deadline_secs < 5 {
            return Err(FleetPolicyError::Deadline(self.approval.deadline_secs));
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.escalate {
            let bad = |why: &str| FleetPolicyError::Target {
                name: t.name.clone(),
                why: why.to_owned(),
            };
            if t.name.is_empty() || !names.insert(t.name.as_str()) {
                return Err(bad("names must be given and different"));
            }
            if !(t.url.starts_with("http://") || t.url.starts_with("https://")) {
                return Err(bad("url must start with http:// or https://"));
            }
            match (t.kind, &t.routing_key) {
                (Kind::Pagerduty, None) => return Err(bad("pagerduty needs a routing_key")),
                (Kind::Webhook | Kind::Slack, Some(_)) => {
                    return Err(bad("routing_key is for pagerduty only"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The targets to tell about an incident of `severity`.
    pub fn targets_for(&self, severity: Level) -> impl Iterator<Item = &Target> {
        self.escalate
            .iter()
            .filter(move |t| severity >= t.min_severity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_parses_and_a_bad_one_is_refused_with_its_reason() {
        let shipped = FleetPolicy::parse(DEFAULT).expect("the shipped fleet policy is valid");
        assert!(shipped.autonomy.block_payloads && !shipped.autonomy.isolate_matches);
        assert_eq!(FleetPolicy::shipped(), shipped);

        let unknown = format!("{DEFAULT}\n[autonomy2]\nx = 1\n");
        let e = FleetPolicy::parse(&unknown).expect_err("unknown table");
        assert!(e.to_string().contains("autonomy2"), "{e}");

        let short = DEFAULT.replace("block_ttl_secs = 86400", "block_ttl_secs = 4");
        assert!(matches!(
            FleetPolicy::parse(&short),
            Err(FleetPolicyError::Ttl(4))
        ));

        let pd = format!(
            "{DEFAULT}\n[[escalate]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"http://x/\"\nmin_severity = \"high\"\n"
        );
        let e = FleetPolicy::parse(&pd).expect_err("no routing key");
        assert!(e.to_string().contains("routing_key"), "{e}");
        let ok = format!("{pd}routing_key = \"k\"\n");
        let p = FleetPolicy::parse(&ok).expect("valid");
        assert_eq!(p.targets_for(Level::Critical).count(), 1);
        assert_eq!(p.targets_for(Level::Medium).count(), 0);
    }
}
