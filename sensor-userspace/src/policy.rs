//! The policy: what humans set. A TOML file, validated as a whole before it replaces the one
//! in force; an invalid policy is refused with the key and the reason.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The policy that ships in `deploy/policy.toml`, used when no `--policy` is given.
pub const DEFAULT_POLICY: &str = include_str!("../../deploy/policy.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Act on nothing; record what would have been done.
    Observe,
    /// Act within the policy.
    Contain,
}

/// A response the sensor can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Kill,
    BlockExec,
    Quarantine,
    Remediate,
    BlockDestination,
    Freeze,
    Isolate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationTarget {
    Controller,
    Log,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Risk {
    pub contain_at: u8,
    pub escalate_at: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    pub without_approval: Vec<Action>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protected {
    #[serde(default)]
    pub processes: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    pub criticality: Criticality,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub targets: Vec<EscalationTarget>,
}

/// What stays reachable while the host is isolated, besides loopback and the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isolation {
    /// `ADDR`, `ADDR:PORT` or `[V6ADDR]:PORT`.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// Addresses the isolation allow list may hold from the policy: the kernel's list holds
/// `ISOLATION_ALLOW`, and one is kept for the controller.
pub const POLICY_ISOLATION_ALLOW: usize = sensor_common::netguard::ISOLATION_ALLOW - 1;

/// A validated policy. The only way to get one is [`Policy::parse`], so a `Policy` in hand
/// has passed every check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: u64,
    pub mode: Mode,
    pub risk: Risk,
    pub actions: Actions,
    #[serde(default)]
    pub protected: Protected,
    pub asset: Asset,
    pub escalation: Escalation,
    #[serde(default)]
    pub isolation: Isolation,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("policy {origin}: key `{key}`: {reason}")]
    Invalid {
        origin: String,
        key: &'static str,
        reason: String,
    },
}

impl Policy {
    /// Parses and validates a whole policy; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        policy.validate(origin)?;
        Ok(policy)
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The policy shipped with the sensor.
    pub fn shipped() -> Result<Self, PolicyError> {
        Self::parse(DEFAULT_POLICY, "deploy/policy.toml (built in)")
    }

    fn validate(&self, origin: &str) -> Result<(), PolicyError> {
        let invalid = |key: &'static str, reason: String| {
            Err(PolicyError::Invalid {
                origin: origin.to_owned(),
                key,
                reason,
            })
        };
        if self.risk.contain_at > 100 {
            return invalid(
                "risk.contain_at",
                format!("{} is above 100", self.risk.contain_at),
            );
        }
        if self.risk.escalate_at > self.risk.contain_at {
            return invalid(
                "risk.escalate_at",
                format!(
                    "{} is above risk.contain_at ({}): incidents would be contained before they could be escalated",
                    self.risk.escalate_at, self.risk.contain_at
                ),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for a in &self.actions.without_approval {
            if !seen.insert(a) {
                return invalid("actions.without_approval", format!("{a:?} is listed twice"));
            }
        }
        for p in &self.protected.processes {
            if !p.starts_with('/') {
                return invalid(
                    "protected.processes",
                    format!("{p:?} is not an absolute executable path"),
                );
            }
        }
        for p in &self.protected.paths {
            if !p.starts_with('/') {
                return invalid("protected.paths", format!("{p:?} is not an absolute path"));
            }
            if p == "/" {
                return invalid(
                    "protected.paths",
                    "\"/\" would protect every file: name directories instead".into(),
                );
            }
        }
        if self.isolation.allow.len() > POLICY_ISOLATION_ALLOW {
            return invalid(
                "isolation.allow",
                format!(
                    "{} entries; at most {POLICY_ISOLATION_ALLOW} (the kernel's list keeps one for the controller)",
                    self.isolation.allow.len()
                ),
            );
        }
        for a in &self.isolation.allow {
            if let Err(reason) = a.parse::<sensor_common::netguard::Endpoint>() {
                return invalid("isolation.allow", reason);
            }
        }
        if self.escalation.targets.is_empty() {
            return invalid(
                "escalation.targets",
                "at least one target is needed, or escalations reach no one".into(),
            );
        }
        Ok(())
    }

    /// Whether `action` may run without a person's approval.
    pub fn allows(&self, action: Action) -> bool {
        self.actions.without_approval.contains(&action)
    }

    /// What stays reachable while the host is isolated (validated on load).
    pub fn isolation_allow(&self) -> Vec<sensor_common::netguard::Endpoint> {
        self.isolation
            .allow
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// Whether the executable `exe` is protected.
    pub fn protects_process(&self, exe: &str) -> bool {
        self.protected.processes.iter().any(|p| p == exe)
    }

    /// Whether `path` is protected: listed exactly, or under a listed directory ("/boot/").
    pub fn protects_path(&self, path: &str) -> bool {
        self.protected
            .paths
            .iter()
            .any(|p| p == path || (p.ends_with('/') && path.starts_with(p.as_str())))
    }
}

/// A short summary for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub version: u64,
    pub mode: Mode,
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(replace: &str, by: &str) -> Result<Policy, PolicyError> {
        assert!(DEFAULT_POLICY.contains(replace), "{replace}");
        Policy::parse(&DEFAULT_POLICY.replacen(replace, by, 1), "test")
    }

    #[test]
    fn the_shipped_policy_is_valid_and_contains_without_isolating() {
        let p = Policy::shipped().expect("valid");
        assert_eq!(p.mode, Mode::Contain);
        assert!(p.allows(Action::Kill));
        assert!(
            !p.allows(Action::Isolate),
            "isolation waits for approval by default"
        );
        assert!(p.protects_path("/boot/vmlinuz"));
        assert!(!p.protects_path("/bootleg"));
        assert!(p.protects_process("/usr/sbin/sshd"));
        let observe =
            with("mode = \"contain\"", "mode = \"observe\"").expect("observe is one line away");
        assert_eq!(observe.mode, Mode::Observe);
    }

    #[test]
    fn every_problem_names_its_key() {
        let msg = |r: Result<Policy, PolicyError>| r.expect_err("must be refused").to_string();
        assert!(msg(with("mode = \"contain\"", "mode = \"panic\"")).contains("mode"));
        assert!(msg(with("contain_at = 80", "contain_at = 180")).contains("risk.contain_at"));
        assert!(msg(with("escalate_at = 50", "escalate_at = 90")).contains("risk.escalate_at"));
        assert!(
            msg(with("\"kill\", ", "\"kill\", \"kill\", ")).contains("actions.without_approval")
        );
        assert!(msg(with("\"freeze\"]", "\"freeze\", \"nuke\"]")).contains("nuke"));
        assert!(msg(with("paths = [\"/boot/\"", "paths = [\"boot/\"")).contains("protected.paths"));
        assert!(msg(with("[risk]", "[risk]\nsurprise = 1")).contains("surprise"));
        assert!(
            msg(with("targets = [\"controller\", \"log\"]", "targets = []"))
                .contains("escalation.targets")
        );
        assert!(
            msg(with("allow = []", "allow = [\"10.0.0.1:99999\"]")).contains("isolation.allow")
        );
        let syntax = msg(Policy::parse("mode = ", "test"));
        assert!(syntax.contains("line 1"), "{syntax}");
    }
}
