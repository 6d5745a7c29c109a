//! A behaviour rule file: parsed, checked and compiled in one step (format in
//! `deploy/rules/README.md`). A rule that names an unknown field, kind or modifier, or has
//! a bad pattern, window or test event, is refused with the file, the line and the problem.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{
    case::{DurationError, TestCase, TestDoc, parse_duration},
    fields::{Field, KINDS},
};
use crate::{
    detect::rules::{RuleError, sigma::rule::Level},
    pattern::{FieldValue, Mode, Pattern},
};

/// How sure a rule is that a match is malicious.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// What a sequence's steps must share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every step by the same process.
    Process,
    /// Every step by the first step's parent or one of its descendants.
    Tree,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(t) => vec![t],
            Self::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Text(s) => s,
        }
    }
}

type MatchMap = BTreeMap<String, OneOrMany<Scalar>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorDoc {
    kind: OneOrMany<String>,
    #[serde(default, rename = "where")]
    all: MatchMap,
    #[serde(default)]
    any: Vec<MatchMap>,
    #[serde(default)]
    unless: Option<OneOrMany<MatchMap>>,
    #[serde(default)]
    bind: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceDoc {
    within: String,
    scope: Scope,
    #[serde(default = "yes")]
    ordered: bool,
    steps: Vec<SelectorDoc>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdDoc {
    #[serde(rename = "match")]
    select: SelectorDoc,
    group_by: Vec<String>,
    distinct: String,
    count: usize,
    within: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    id: String,
    title: String,
    description: String,
    technique: OneOrMany<String>,
    severity: Level,
    confidence: Confidence,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default, rename = "match")]
    single: Option<SelectorDoc>,
    #[serde(default)]
    sequence: Option<SequenceDoc>,
    #[serde(default)]
    threshold: Option<ThresholdDoc>,
    #[serde(default)]
    response: Vec<crate::policy::Action>,
    #[serde(default)]
    tests: Vec<TestDoc>,
}

/// One field test: any value of the field matches any pattern (or, with `|all`, every
/// pattern).
#[derive(Clone, Debug)]
pub struct Matcher {
    pub field: Field,
    patterns: Vec<Pattern>,
    all: bool,
}

impl Matcher {
    pub fn matches(&self, values: &[FieldValue]) -> bool {
        values.iter().any(|v| {
            if self.all {
                self.patterns.iter().all(|p| p.matches_value(v))
            } else {
                self.patterns.iter().any(|p| p.matches_value(v))
            }
        })
    }
}

/// Which events a rule (or a step) looks at, and what must hold of them.
#[derive(Clone, Debug)]
pub struct Selector {
    pub kinds: Vec<&'static str>,
    all: Vec<Matcher>,
    any: Vec<Vec<Matcher>>,
    unless: Vec<Vec<Matcher>>,
    /// Sequence variables: bound by the first step that names one, compared by later ones.
    pub bind: Vec<(String, Field)>,
}

impl Selector {
    pub fn matches(&self, view: &super::fields::View<'_>) -> bool {
        let holds = |ms: &[Matcher]| ms.iter().all(|m| m.matches(view.get(m.field)));
        holds(&self.all)
            && (self.any.is_empty() || self.any.iter().any(|alt| holds(alt)))
            && !self.unless.iter().any(|alt| holds(alt))
    }
}

#[derive(Clone, Debug)]
pub struct Sequence {
    pub within_ns: u64,
    pub scope: Scope,
    pub ordered: bool,
    pub steps: Vec<Selector>,
}

#[derive(Clone, Debug)]
pub struct Threshold {
    pub selector: Selector,
    pub group_by: Vec<Field>,
    pub distinct: Field,
    pub count: usize,
    pub within_ns: u64,
}

/// What a rule looks for.
#[derive(Clone, Debug)]
pub enum Logic {
    /// One event.
    Single(Selector),
    /// Several events in one process or tree within a window.
    Sequence(Sequence),
    /// At least `count` distinct values of a field in a group within a window.
    Threshold(Threshold),
}

/// A loaded behaviour rule.
#[derive(Clone, Debug)]
pub struct BehaviourRule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub techniques: Vec<String>,
    pub severity: Level,
    pub confidence: Confidence,
    /// Free tags; triage reads `persistence`.
    pub tags: Vec<String>,
    pub author: Option<String>,
    pub file: PathBuf,
    pub logic: Logic,
    /// What containment the rule asks for when its incident is contained (the policy says
    /// whether each may run without approval).
    pub response: Vec<crate::policy::Action>,
    pub tests: Vec<TestCase>,
}

/// The first line of `text` holding `needle`, to point an error at.
pub(crate) fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// A window such as `500ms`, `30s`, `5m` or `1h`, in nanoseconds; never empty.
pub fn parse_window(text: &str) -> Result<u64, DurationError> {
    match parse_duration(text)? {
        0 => Err(DurationError::Empty(text.to_owned())),
        n => Ok(n),
    }
}

fn compile_matchers(map: MatchMap) -> Result<Vec<Matcher>, (String, String)> {
    map.into_iter()
        .map(|(key, values)| {
            let mut parts = key.split('|');
            let name = parts.next().unwrap_or_default();
            let field = Field::parse(name)
                .ok_or_else(|| (key.clone(), format!("unknown field {name:?}")))?;
            let (mut mode, mut all) = (Mode::Exact, false);
            for m in parts {
                mode = match m {
                    "contains" => Mode::Contains,
                    "startswith" => Mode::StartsWith,
                    "endswith" => Mode::EndsWith,
                    "re" => Mode::Regex,
                    "cidr" => Mode::Cidr,
                    "all" => {
                        all = true;
                        mode
                    }
                    other => return Err((key.clone(), format!("unknown modifier {other:?}"))),
                };
            }
            let patterns = values
                .into_vec()
                .into_iter()
                .map(|v| {
                    Pattern::compile(&v.text(), mode).map_err(|e| (key.clone(), e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if patterns.is_empty() {
                return Err((key.clone(), format!("{key:?} has no value")));
            }
            Ok(Matcher {
                field,
                patterns,
                all,
            })
        })
        .collect()
}

fn compile_selector(doc: SelectorDoc, in_sequence: bool) -> Result<Selector, (String, String)> {
    let kinds = doc
        .kind
        .into_vec()
        .into_iter()
        .map(|k| {
            KINDS
                .iter()
                .copied()
                .find(|known| *known == k)
                .ok_or_else(|| ("kind".to_owned(), format!("unknown event kind {k:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if kinds.is_empty() {
        return Err(("kind".into(), "no event kind".into()));
    }
    if !doc.bind.is_empty() && !in_sequence {
        return Err((
            "bind".into(),
            "`bind` is only meaningful in a sequence".into(),
        ));
    }
    let bind = doc
        .bind
        .into_iter()
        .map(|(var, f)| {
            Field::parse(&f)
                .map(|field| (var.clone(), field))
                .ok_or_else(|| (f.clone(), format!("bind {var:?}: unknown field {f:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Selector {
        kinds,
        all: compile_matchers(doc.all)?,
        any: doc
            .any
            .into_iter()
            .map(compile_matchers)
            .collect::<Result<_, _>>()?,
        unless: doc
            .unless
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .map(compile_matchers)
            .collect::<Result<_, _>>()?,
        bind,
    })
}

impl BehaviourRule {
    pub fn parse(text: &str, file: &Path) -> Result<Self, RuleError> {
        crate::detect::rules::sigma::rule::check_shape(text, file)?;
        let doc: RuleDoc =
            serde_norway::from_str(text).map_err(|e| RuleError::from_yaml(file, &e))?;
        let invalid = |needle: &str, reason: String| RuleError::Invalid {
            file: file.to_owned(),
            line: line_of(text, needle),
            reason,
        };
        if doc.id.trim().is_empty() {
            return Err(invalid("id:", "the rule's id is empty".into()));
        }
        let window =
            |w: &str| parse_window(w).map_err(|r| invalid("within", format!("within: {r}")));
        let logic = match (doc.single, doc.sequence, doc.threshold) {
            (Some(s), None, None) => {
                Logic::Single(compile_selector(s, false).map_err(|(n, r)| invalid(&n, r))?)
            }
            (None, Some(seq), None) => {
                if seq.steps.len() < 2 || seq.steps.len() > 8 {
                    return Err(invalid("steps", "a sequence has 2 to 8 steps".into()));
                }
                Logic::Sequence(Sequence {
                    within_ns: window(&seq.within)?,
                    scope: seq.scope,
                    ordered: seq.ordered,
                    steps: seq
                        .steps
                        .into_iter()
                        .map(|s| compile_selector(s, true))
                        .collect::<Result<_, _>>()
                        .map_err(|(n, r)| invalid(&n, r))?,
                })
            }
            (None, None, Some(t)) => {
                let field = |name: &str| {
                    Field::parse(name)
                        .ok_or_else(|| invalid(name, format!("unknown field {name:?}")))
                };
                if t.count < 2 {
                    return Err(invalid("count", "a threshold's count is at least 2".into()));
                }
                Logic::Threshold(Threshold {
                    group_by: t
                        .group_by
                        .iter()
                        .map(|g| field(g))
                        .collect::<Result<_, _>>()?,
                    distinct: field(&t.distinct)?,
                    count: t.count,
                    within_ns: window(&t.within)?,
                    selector: compile_selector(t.select, false).map_err(|(n, r)| invalid(&n, r))?,
                })
            }
            _ => {
                return Err(invalid(
                    "id:",
                    "a rule has exactly one of `match`, `sequence` or `threshold`".into(),
                ));
            }
        };
        let tests = doc
            .tests
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let name = t.name.clone();
                TestCase::compile(t, i).map_err(|r| invalid(&name, r.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: doc.id,
            title: doc.title,
            description: doc.description,
            techniques: doc.technique.into_vec(),
            severity: doc.severity,
            confidence: doc.confidence,
            tags: doc.tags,
            author: doc.author,
            file: file.to_owned(),
            logic,
            response: doc.response,
            tests,
        })
    }

    /// Every event kind the rule can act on.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k: Vec<&'static str> = match &self.logic {
            Logic::Single(s) => s.kinds.clone(),
            Logic::Sequence(seq) => seq.steps.iter().flat_map(|s| s.kinds.clone()).collect(),
            Logic::Threshold(t) => t.selector.kinds.clone(),
        };
        k.sort_unstable();
        k.dedup();
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "id: t-1\ntitle: T\ndescription: d\ntechnique: T1059\nseverity: high\nconfidence: high\nmatch:\n  kind: exec\n  where:\n    name: [sh, bash]\n";

    fn err(text: &str) -> String {
        BehaviourRule::parse(text, Path::new("r.yml"))
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn a_good_rule_loads() {
        let r = BehaviourRule::parse(GOOD, Path::new("r.yml")).expect("loads");
        assert_eq!(r.kinds(), vec!["exec"]);
        assert_eq!(r.techniques, vec!["T1059"]);
    }

    #[test]
    fn every_problem_names_file_line_and_reason() {
        let e = err(&GOOD.replace("    name: [sh, bash]", "    nmae: [sh]"));
        assert!(e.starts_with("r.yml:10:"), "{e}");
        assert!(e.contains("unknown field \"nmae\""), "{e}");
        let e = err(&GOOD.replace("kind: exec", "kind: exce"));
        assert!(e.contains("unknown event kind \"exce\""), "{e}");
        let e = err(&GOOD.replace("name: [sh, bash]", "name|re: '(['"));
        assert!(e.contains("regular expression"), "{e}");
        let e = err(&GOOD.replace("name: [sh, bash]", "name|sideways: x"));
        assert!(e.contains("unknown modifier \"sideways\""), "{e}");
        let e = err(&GOOD.replace("severity: high", "severity: apocalyptic"));
        assert!(e.starts_with("r.yml:5:"), "{e}");
        let e = err(&GOOD.replace("match:", "tests: 3\nmatch:"));
        assert!(e.contains("r.yml:7"), "{e}");
        let e = err(&format!(
            "{GOOD}sequence:\n  within: 5s\n  scope: tree\n  steps: []\n"
        ));
        assert!(e.contains("exactly one of"), "{e}");
        let e = err(&GOOD.replace(
            "match:\n  kind: exec\n  where:\n    name: [sh, bash]\n",
            "threshold:\n  match: {kind: connect}\n  group_by: [parent]\n  distinct: remote_port\n  count: 5\n  within: 10 s\n",
        ));
        assert!(e.contains("within") && e.contains("unit"), "{e}");
        let e = err("id: [\n");
        assert!(e.contains("invalid YAML"), "{e}");
    }

    #[test]
    fn a_bad_test_event_is_named() {
        let e = err(&format!(
            "{GOOD}tests:\n  - name: broken\n    expect: match\n    events:\n      - {{kind: exec, pid: lots}}\n"
        ));
        assert!(e.contains("test \"broken\" (#1), event 1"), "{e}");
    }

    #[test]
    fn windows_parse_with_their_unit() {
        assert_eq!(parse_window("500ms"), Ok(500_000_000));
        assert_eq!(parse_window("2m"), Ok(120_000_000_000));
        assert!(parse_window("0s").is_err());
        assert!(parse_window("5").is_err());
        assert_eq!(parse_duration("0s"), Ok(0));
    }
}
