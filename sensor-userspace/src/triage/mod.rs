//! Triage at once, with no queue: a risk score for each finding, explained factor by factor,
//! and the policy's decision for the incident it joins.

pub mod alerts;
pub mod detection;
pub mod export;
pub mod forward;
pub mod incidents;
pub mod indicators;
pub mod ocsf;

use serde::{Deserialize, Serialize};

use crate::{
    detect::rules::{behaviour::rule::Confidence, sigma::rule::Level},
    policy::{Criticality, Mode, Policy},
    triage::alerts::RuleRef,
};

/// One contribution to a risk score.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Factor {
    pub name: String,
    pub points: i16,
}

/// A risk score from 0 to 100 and the factors that make it up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Risk {
    pub score: u8,
    pub factors: Vec<Factor>,
}

/// What the graph and the incident say around a finding.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// The acting process runs with effective uid 0.
    pub privileged: bool,
    /// The process or an ancestor listens on or accepted from the network.
    pub network_facing: bool,
    /// The incident includes persistence or a change of privilege.
    pub persistence: bool,
    /// Other processes in the incident with findings of their own.
    pub spread: usize,
    /// Low-level signals (informational and low Sigma matches) on the finding's chain or in
    /// its incident.
    pub signals: usize,
}

/// What a rule's severity alone is worth. Calibrated against the shipped thresholds
/// (escalate_at 50, contain_at 80): a medium finding of high confidence reaches a person; a
/// high one reaches a person and, with persistence or a privilege change by root (+10, +5),
/// containment; a critical one of high confidence is contained on its own.
fn severity_points(l: Level) -> i16 {
    match l {
        Level::Informational => 10,
        Level::Low => 25,
        Level::Medium => 50,
        Level::High => 65,
        Level::Critical => 80,
    }
}

/// What each low-level signal on the chain adds, and the most they add together.
const SIGNAL_POINTS: i16 = 5;
const SIGNALS_MAX_POINTS: i16 = 15;

/// The share of the severity a rule's confidence keeps, in percent.
fn confidence_percent(c: Confidence) -> i16 {
    match c {
        Confidence::Low => 70,
        Confidence::Medium => 85,
        Confidence::High => 100,
    }
}

fn criticality_points(c: Criticality) -> i16 {
    match c {
        Criticality::Low => -10,
        Criticality::Medium => 0,
        Criticality::High => 10,
        Criticality::Critical => 15,
    }
}

/// Scores a finding of `rule` on a host of `criticality`.
pub fn score(rule: &RuleRef, criticality: Criticality, ctx: &Context) -> Risk {
    let sev = severity_points(rule.severity);
    let mut factors = vec![Factor {
        name: format!("severity {:?}", rule.severity).to_lowercase(),
        points: sev,
    }];
    let kept = sev * confidence_percent(rule.confidence) / 100;
    if kept != sev {
        factors.push(Factor {
            name: format!("confidence {:?}", rule.confidence).to_lowercase(),
            points: kept - sev,
        });
    }
    let crit = criticality_points(criticality);
    if crit != 0 {
        factors.push(Factor {
            name: format!("asset criticality {criticality:?}").to_lowercase(),
            points: crit,
        });
    }
    let mut add = |on: bool, name: &str, points: i16| {
        if on {
            factors.push(Factor {
                name: name.to_owned(),
                points,
            });
        }
    };
    add(ctx.privileged, "privileged user", 5);
    add(ctx.network_facing, "network-facing ancestor", 10);
    add(
        ctx.persistence,
        "persistence or privilege change in the incident",
        10,
    );
    let signals = (i16::try_from(ctx.signals).unwrap_or(i16::MAX))
        .saturating_mul(SIGNAL_POINTS)
        .min(SIGNALS_MAX_POINTS);
    add(signals > 0, "low-level signals on the chain", signals);
    let spread = i16::try_from(ctx.spread.min(3)).unwrap_or(3) * 5;
    add(spread > 0, "spread to other processes", spread);
    let total: i16 = factors.iter().map(|f| f.points).sum();
    Risk {
        score: u8::try_from(total.clamp(0, 100)).unwrap_or(100),
        factors,
    }
}

/// What the policy says to do about an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Below the escalation threshold: recorded only.
    Record,
    /// Observe mode: nothing is done, what would have been done is recorded.
    Observe,
    /// Contained within the actions the policy allows without approval.
    Contain,
    /// Waits for a person's approval.
    Escalate,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
    /// The policy key the decision rests on.
    pub clause: String,
    pub policy_version: u64,
}

/// The policy's decision for an incident of risk `risk`.
pub fn decide(policy: &Policy, risk: u8) -> Decision {
    let (c, e) = (policy.risk.contain_at, policy.risk.escalate_at);
    let (verdict, reason, clause) = if risk >= c {
        match policy.mode {
            Mode::Observe => (
                Verdict::Observe,
                format!(
                    "risk {risk} reached risk.contain_at {c}, but mode is observe: would contain"
                ),
                "mode",
            ),
            Mode::Contain => (
                Verdict::Contain,
                format!("risk {risk} reached risk.contain_at {c}"),
                "risk.contain_at",
            ),
        }
    } else if risk >= e {
        (
            Verdict::Escalate,
            format!(
                "risk {risk} reached risk.escalate_at {e} (below contain_at {c}): awaits approval"
            ),
            "risk.escalate_at",
        )
    } else {
        (
            Verdict::Record,
            format!("risk {risk} is below risk.escalate_at {e}: recorded only"),
            "risk.escalate_at",
        )
    };
    Decision {
        verdict,
        reason,
        clause: clause.to_owned(),
        policy_version: policy.version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::alerts::RuleSource;

    fn rule(severity: Level, confidence: Confidence) -> RuleRef {
        RuleRef {
            id: Some("t".into()),
            title: "t".into(),
            technique: vec![],
            severity,
            confidence,
            source: RuleSource::Behaviour,
            author: None,
            tags: vec![],
            response: vec![],
            file: "t".into(),
        }
    }

    #[test]
    fn context_raises_the_score_and_each_factor_is_named() {
        let r = rule(Level::High, Confidence::High);
        let plain = score(&r, Criticality::Medium, &Context::default());
        assert_eq!(plain.score, 65);
        let hot = score(
            &r,
            Criticality::Critical,
            &Context {
                privileged: true,
                network_facing: true,
                persistence: true,
                spread: 9,
                signals: 1,
            },
        );
        assert_eq!(hot.score, 100, "clamped: {hot:?}");
        assert!(
            hot.factors
                .iter()
                .any(|f| f.name == "network-facing ancestor")
        );
        let doubtful = score(
            &rule(Level::High, Confidence::Low),
            Criticality::Low,
            &Context::default(),
        );
        assert_eq!(doubtful.score, 35, "65 kept at 70 %, less 10: {doubtful:?}");
    }

    #[test]
    fn the_shipped_thresholds_separate_what_a_person_sees_from_what_is_contained() {
        let p = Policy::shipped().expect("shipped policy");
        let verdict = |sev, conf, ctx: Context| {
            decide(&p, score(&rule(sev, conf), Criticality::Medium, &ctx).score).verdict
        };
        let root_persistence = Context {
            privileged: true,
            persistence: true,
            ..Context::default()
        };
        assert_eq!(
            verdict(Level::High, Confidence::High, root_persistence),
            Verdict::Contain,
            "one high-confidence persistence write by root is contained"
        );
        assert_eq!(
            verdict(
                Level::High,
                Confidence::High,
                Context {
                    persistence: true,
                    ..Context::default()
                }
            ),
            Verdict::Escalate,
            "by an unprivileged user it waits for a person"
        );
        assert_eq!(
            verdict(Level::Medium, Confidence::High, Context::default()),
            Verdict::Escalate
        );
        assert_eq!(
            verdict(Level::Medium, Confidence::Low, Context::default()),
            Verdict::Record
        );
        assert_eq!(
            verdict(Level::Critical, Confidence::High, Context::default()),
            Verdict::Contain
        );
        let signals = |n| {
            score(
                &rule(Level::Medium, Confidence::Medium),
                Criticality::Medium,
                &Context {
                    signals: n,
                    ..Context::default()
                },
            )
            .score
        };
        assert_eq!(signals(0), 42);
        assert_eq!(
            signals(2),
            52,
            "two signals on the chain lift it to a person"
        );
        assert_eq!(signals(9), 57, "signals add at most 15");
    }

    #[test]
    fn the_policy_decides_by_threshold_and_mode() {
        let p = Policy::shipped().expect("shipped policy");
        assert_eq!(decide(&p, 85).verdict, Verdict::Contain);
        assert_eq!(decide(&p, 60).verdict, Verdict::Escalate);
        assert_eq!(decide(&p, 10).verdict, Verdict::Record);
        let mut observe = p.clone();
        observe.mode = Mode::Observe;
        let d = decide(&observe, 85);
        assert_eq!(d.verdict, Verdict::Observe);
        assert!(d.reason.contains("would contain"));
    }
}
