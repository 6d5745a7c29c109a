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

/// A rule suppressed where it is known to be wrong: for a process, a path or a command line,
/// with the reason, until an optional expiry. Every suppressed match is counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    /// The rule's id or title (`*` and `?` wildcards, case-insensitive).
    pub rule: String,
    /// The acting process's executable path (wildcards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// Its parent's executable path (wildcards): what a runner, a scheduler or a build tool
    /// starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// A file or endpoint the match names (wildcards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The acting process's command line (wildcards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// When it stops applying (a TOML date-time, `2027-01-31T00:00:00Z`, or a date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<toml::value::Datetime>,
    /// Why: shown with every count of what it suppressed.
    pub reason: String,
}

/// What an exception is tested against: one match of one rule.
#[derive(Clone, Debug, Default)]
pub struct ExceptionSubject<'a> {
    pub rule_id: Option<&'a str>,
    pub rule_title: &'a str,
    pub exe: Option<&'a str>,
    pub parent_exe: Option<&'a str>,
    pub cmdline: &'a str,
    pub paths: Vec<&'a str>,
}

/// Whole-value, case-insensitive wildcard match (`*`, `?`).
fn wildcard(pattern: &str, value: &str) -> bool {
    crate::pattern::Pattern::compile(pattern, crate::pattern::Mode::Exact)
        .is_ok_and(|p| p.matches(value))
}

/// Seconds since the Unix epoch of a TOML date-time (a bare date is its midnight UTC; a
/// local time without offset is taken as UTC).
fn datetime_unix(d: &toml::value::Datetime) -> Option<i64> {
    let date = d.date?;
    let (y, m, day) = (
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    // Days from civil (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = d.time.map_or(0, |t| {
        i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second.unwrap_or(0))
    });
    let offset = match d.offset {
        Some(toml::value::Offset::Custom { minutes }) => i64::from(minutes) * 60,
        _ => 0,
    };
    Some(days * 86_400 + secs - offset)
}

impl Exception {
    /// Seconds since the epoch when it expires, if it does.
    pub fn expires_unix(&self) -> Option<i64> {
        self.expires.as_ref().and_then(datetime_unix)
    }

    /// Whether it applies to `m` at `now_unix` (seconds).
    pub fn applies(&self, m: &ExceptionSubject<'_>, now_unix: i64) -> bool {
        if self.expires_unix().is_some_and(|t| now_unix >= t) {
            return false;
        }
        let rule = m.rule_id.is_some_and(|id| wildcard(&self.rule, id))
            || wildcard(&self.rule, m.rule_title);
        rule && self
            .process
            .as_deref()
            .is_none_or(|p| m.exe.is_some_and(|e| wildcard(p, e)))
            && self
                .parent
                .as_deref()
                .is_none_or(|p| m.parent_exe.is_some_and(|e| wildcard(p, e)))
            && self
                .path
                .as_deref()
                .is_none_or(|p| m.paths.iter().any(|x| wildcard(p, x)))
            && self
                .cmdline
                .as_deref()
                .is_none_or(|p| wildcard(p, m.cmdline))
    }
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
    /// Rules suppressed for a process, path or command line (see [`Exception`]).
    #[serde(default)]
    pub exceptions: Vec<Exception>,
}

/// Most exceptions a policy may hold.
pub const MAX_EXCEPTIONS: usize = 256;

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

    // Long by design: one check per policy setting, in the file's order, so every problem is named at once.

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
        if self.exceptions.len() > MAX_EXCEPTIONS {
            return invalid(
                "exceptions",
                format!(
                    "{} exceptions; at most {MAX_EXCEPTIONS}",
                    self.exceptions.len()
                ),
            );
        }
        for (i, x) in self.exceptions.iter().enumerate() {
            if x.reason.trim().is_empty() {
                return invalid(
                    "exceptions.reason",
                    format!("exception {} has no reason", i + 1),
                );
            }
            if x.rule.trim().is_empty() || x.rule.trim_matches('*').is_empty() {
                return invalid(
                    "exceptions.rule",
                    format!(
                        "exception {} names no rule ({:?}): an exception for every rule would silence the sensor",
                        i + 1,
                        x.rule
                    ),
                );
            }
            if x.process.is_none() && x.parent.is_none() && x.path.is_none() && x.cmdline.is_none()
            {
                return invalid(
                    "exceptions",
                    format!(
                        "exception {} ({}) names no process, parent, path or cmdline: disable the rule instead of excepting it everywhere",
                        i + 1,
                        x.rule
                    ),
                );
            }
            for (key, pat) in [
                ("exceptions.process", &x.process),
                ("exceptions.parent", &x.parent),
                ("exceptions.path", &x.path),
                ("exceptions.cmdline", &x.cmdline),
            ] {
                if pat.as_deref().is_some_and(|p| p.trim().is_empty()) {
                    return invalid(key, format!("exception {} has an empty pattern", i + 1));
                }
            }
            if let Some(d) = &x.expires
                && datetime_unix(d).is_none()
            {
                return invalid(
                    "exceptions.expires",
                    format!("exception {}: {d} has no date", i + 1),
                );
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

    /// The first exception in force that applies to `m` at `now_unix`, by index.
    pub fn exception_for(&self, m: &ExceptionSubject<'_>, now_unix: i64) -> Option<usize> {
        self.exceptions.iter().position(|x| x.applies(m, now_unix))
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

    fn subject<'a>(rule: &'a str, exe: &'a str, path: &'a str) -> ExceptionSubject<'a> {
        ExceptionSubject {
            rule_id: Some(rule),
            rule_title: "A title",
            exe: Some(exe),
            parent_exe: Some("/usr/bin/make"),
            cmdline: "make all",
            paths: vec![path],
        }
    }

    #[test]
    fn exceptions_apply_by_rule_process_path_and_expiry() {
        let p = Policy::parse(
            &format!(
                "{DEFAULT_POLICY}\n[[exceptions]]\nrule = \"vigil-exec-from-temp\"\nprocess = \"/opt/ci/*\"\nreason = \"CI builds in /tmp\"\n\n[[exceptions]]\nrule = \"a title\"\npath = \"/srv/app/*\"\nexpires = 2020-01-01T00:00:00Z\nreason = \"expired\"\n"
            ),
            "test",
        )
        .expect("valid");
        let now = 1_800_000_000;
        assert_eq!(
            p.exception_for(
                &subject("vigil-exec-from-temp", "/opt/ci/runner", "/tmp/x"),
                now
            ),
            Some(0)
        );
        assert_eq!(
            p.exception_for(
                &subject("vigil-exec-from-temp", "/usr/bin/sh", "/tmp/x"),
                now
            ),
            None,
            "another process"
        );
        assert_eq!(
            p.exception_for(&subject("other", "/opt/ci/runner", "/srv/app/x"), now),
            None,
            "by title, but it expired"
        );
        assert_eq!(
            p.exception_for(&subject("other", "/x", "/srv/app/x"), 1_500_000_000),
            Some(1),
            "before its expiry"
        );
        assert_eq!(
            datetime_unix(&"2027-01-31T00:00:00Z".parse().expect("datetime")),
            Some(1_801_353_600)
        );
    }

    #[test]
    fn an_exception_must_be_narrow_and_explained() {
        let msg = |extra: &str| {
            Policy::parse(&format!("{DEFAULT_POLICY}\n{extra}"), "test")
                .expect_err("must be refused")
                .to_string()
        };
        assert!(
            msg("[[exceptions]]\nrule = \"x\"\nprocess = \"/a\"\nreason = \"\"\n")
                .contains("exceptions.reason")
        );
        assert!(
            msg("[[exceptions]]\nrule = \"*\"\nprocess = \"/a\"\nreason = \"r\"\n")
                .contains("exceptions.rule")
        );
        assert!(msg("[[exceptions]]\nrule = \"x\"\nreason = \"r\"\n").contains("names no process"));
        assert!(
            msg("[[exceptions]]\nrule = \"x\"\nprocess = \"/a\"\nreason = \"r\"\nwho = 1\n")
                .contains("who")
        );
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
