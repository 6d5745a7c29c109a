//! Evaluates behaviour rules over the stream of events: single-event rules at once,
//! sequences as partial matches waiting for their next step, thresholds as sliding windows of
//! distinct values. State is bounded per rule; a rule that fired for one process, tree or group
//! stays quiet for that key (and, for one-event rules, for that process's descendants) for its
//! window, so one attack is one alert, not a flood.

use std::collections::VecDeque;

use ahash::{HashMap, HashMapExt};

use super::{
    fields::{View, kind_name},
    rule::{BehaviourRule, Logic, Scope, Selector, Sequence, Threshold},
};
use crate::{model::events::Event, model::process_table::ProcessKey};

/// Most partial sequences kept per rule; the oldest go first.
const MAX_PARTIALS: usize = 512;
/// Most threshold groups kept per rule; the least recently used go first.
const MAX_GROUPS: usize = 4096;
/// How long a rule stays quiet for a key once it fired, at least.
const MIN_QUIET_NS: u64 = 60_000_000_000;
/// Most evidence events kept for one threshold hit.
const MAX_THRESHOLD_EVIDENCE: usize = 32;

/// A rule that matched, with the events that made it match.
#[derive(Clone, Debug)]
pub struct Hit {
    /// Index of the rule in the engine.
    pub rule: usize,
    /// The process of the last event that completed the match.
    pub actor: ProcessKey,
    pub evidence: Vec<Event>,
}

struct Partial {
    matched: u8,
    first_ns: u64,
    root: ProcessKey,
    bindings: Vec<(String, String)>,
    evidence: Vec<Event>,
}

#[derive(Default)]
struct Group {
    /// (time, distinct value, event), oldest first.
    seen: VecDeque<(u64, String, Event)>,
    last_ns: u64,
}

enum State {
    Single,
    Sequence(VecDeque<Partial>),
    Threshold(HashMap<Vec<String>, Group>),
}

/// Counters for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineStats {
    /// Matches not raised again because the rule already fired for that key.
    pub suppressed: u64,
    /// Partial sequences and threshold groups dropped to stay within bounds.
    pub evicted: u64,
}

pub struct Engine {
    rules: Vec<BehaviourRule>,
    by_kind: HashMap<&'static str, Vec<usize>>,
    state: Vec<State>,
    quiet: HashMap<(usize, String), u64>,
    stats: EngineStats,
}

fn key_of(e: &Event) -> ProcessKey {
    ProcessKey {
        pid: e.pid,
        start: e.start,
    }
}

impl Engine {
    pub fn new(rules: Vec<BehaviourRule>) -> Self {
        let mut by_kind: HashMap<&'static str, Vec<usize>> = HashMap::new();
        let state = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                for k in r.kinds() {
                    by_kind.entry(k).or_default().push(i);
                }
                match r.logic {
                    Logic::Single(_) => State::Single,
                    Logic::Sequence(_) => State::Sequence(VecDeque::new()),
                    Logic::Threshold(_) => State::Threshold(HashMap::new()),
                }
            })
            .collect();
        Self {
            rules,
            by_kind,
            state,
            quiet: HashMap::new(),
            stats: EngineStats::default(),
        }
    }

    pub fn rules(&self) -> &[BehaviourRule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Whether any rule looks at events of this kind (to skip building a view).
    pub fn wants(&self, event: &Event) -> bool {
        self.by_kind.contains_key(kind_name(&event.what))
    }

    /// Runs every rule that can act on `view`'s event kind.
    pub fn check(&mut self, view: &View<'_>) -> Vec<Hit> {
        let Some(ixs) = self.by_kind.get(kind_name(&view.event.what)) else {
            return Vec::new();
        };
        let mut hits = Vec::new();
        for &i in ixs {
            let found = match (&self.rules[i].logic, &mut self.state[i]) {
                (Logic::Single(sel), State::Single) => {
                    single(sel, view).then(|| (key_text(view.key()), vec![view.event.clone()]))
                }
                (Logic::Sequence(seq), State::Sequence(partials)) => {
                    sequence(seq, partials, view, &mut self.stats)
                }
                (Logic::Threshold(t), State::Threshold(groups)) => {
                    threshold(t, groups, view, &mut self.stats)
                }
                _ => None,
            };
            let Some((dedup, evidence)) = found else {
                continue;
            };
            let now = view.event.boot_ns;
            let quiet_ns = match &self.rules[i].logic {
                Logic::Single(_) => MIN_QUIET_NS,
                Logic::Sequence(s) => s.within_ns.max(MIN_QUIET_NS),
                Logic::Threshold(t) => t.within_ns.max(MIN_QUIET_NS),
            };
            // A one-event rule that already fired for an ancestor is the same activity
            // spreading down the tree (a reverse shell's children inherit its socket).
            let ancestor_fired = matches!(self.rules[i].logic, Logic::Single(_))
                && view.facts().ancestors(&view.key(), 16).iter().any(|a| {
                    self.quiet
                        .get(&(i, key_text(a.key)))
                        .is_some_and(|until| *until > now)
                });
            let slot = self.quiet.entry((i, dedup)).or_insert(0);
            if *slot > now || ancestor_fired {
                self.stats.suppressed += 1;
                continue;
            }
            *slot = now.saturating_add(quiet_ns);
            hits.push(Hit {
                rule: i,
                actor: view.key(),
                evidence,
            });
        }
        hits
    }

    /// Forgets expired partial matches, groups and quiet periods.
    pub fn expire(&mut self, now_ns: u64) {
        for (rule, state) in self.rules.iter().zip(self.state.iter_mut()) {
            match (&rule.logic, state) {
                (Logic::Sequence(seq), State::Sequence(partials)) => {
                    partials.retain(|p| now_ns.saturating_sub(p.first_ns) <= seq.within_ns);
                }
                (Logic::Threshold(t), State::Threshold(groups)) => {
                    groups.retain(|_, g| now_ns.saturating_sub(g.last_ns) <= t.within_ns);
                }
                _ => {}
            }
        }
        self.quiet.retain(|_, until| *until > now_ns);
    }
}

fn single(sel: &Selector, view: &View<'_>) -> bool {
    sel.kinds.contains(&kind_name(&view.event.what)) && sel.matches(view)
}

/// The values `step` binds, or None when one contradicts a binding already made.
fn bind(
    step: &Selector,
    view: &View<'_>,
    bound: &[(String, String)],
) -> Option<Vec<(String, String)>> {
    let mut out = bound.to_vec();
    for (var, field) in &step.bind {
        let values = view.get(*field);
        match out.iter().find(|(v, _)| v == var) {
            Some((_, want)) => {
                if !values.iter().any(|v| v.raw == want.as_str()) {
                    return None;
                }
            }
            None => out.push((var.clone(), values.first()?.raw.to_string())),
        }
    }
    Some(out)
}

fn in_scope(
    seq: &Sequence,
    root: &ProcessKey,
    first_actor: Option<ProcessKey>,
    view: &View<'_>,
) -> bool {
    let me = view.key();
    match seq.scope {
        Scope::Process => first_actor == Some(me),
        Scope::Tree => {
            me == *root
                || view
                    .facts()
                    .ancestors(&me, 32)
                    .iter()
                    .any(|a| a.key == *root)
        }
    }
}

fn sequence(
    seq: &Sequence,
    partials: &mut VecDeque<Partial>,
    view: &View<'_>,
    stats: &mut EngineStats,
) -> Option<(String, Vec<Event>)> {
    let now = view.event.boot_ns;
    let kind = kind_name(&view.event.what);
    let all = (1u8 << seq.steps.len()) - 1;
    let step_matches: Vec<bool> = seq
        .steps
        .iter()
        .map(|s| s.kinds.contains(&kind) && s.matches(view))
        .collect();
    if !step_matches.iter().any(|m| *m) {
        return None;
    }
    // Advance the partial matches this event continues.
    let mut advanced = Vec::new();
    for p in partials.iter() {
        if now.saturating_sub(p.first_ns) > seq.within_ns {
            continue;
        }
        let first_actor = p.evidence.first().map(key_of);
        if !in_scope(seq, &p.root, first_actor, view) {
            continue;
        }
        for (i, step) in seq.steps.iter().enumerate() {
            let bit = 1u8 << i;
            let next_in_order = !seq.ordered || p.matched == bit - 1;
            if p.matched & bit != 0 || !next_in_order || !step_matches[i] {
                continue;
            }
            if let Some(bindings) = bind(step, view, &p.bindings) {
                let mut evidence = p.evidence.clone();
                evidence.push(view.event.clone());
                advanced.push(Partial {
                    matched: p.matched | bit,
                    first_ns: p.first_ns,
                    root: p.root,
                    bindings,
                    evidence,
                });
                break;
            }
        }
    }
    if let Some(done) = advanced.iter().position(|p| p.matched == all) {
        let p = advanced.swap_remove(done);
        // The tree (or process) fired: drop its other partial matches.
        partials.retain(|q| q.root != p.root);
        return Some((key_text(p.root), p.evidence));
    }
    // Start new partial matches from this event.
    let me = view.key();
    let root = match seq.scope {
        Scope::Process => me,
        Scope::Tree => view.event.parent.unwrap_or(me),
    };
    for (i, step) in seq.steps.iter().enumerate() {
        if !step_matches[i] || (seq.ordered && i != 0) {
            continue;
        }
        if let Some(bindings) = bind(step, view, &[]) {
            advanced.push(Partial {
                matched: 1 << i,
                first_ns: now,
                root,
                bindings,
                evidence: vec![view.event.clone()],
            });
        }
    }
    for p in advanced {
        if partials.len() >= MAX_PARTIALS {
            partials.pop_front();
            stats.evicted += 1;
        }
        partials.push_back(p);
    }
    None
}

fn threshold(
    t: &Threshold,
    groups: &mut HashMap<Vec<String>, Group>,
    view: &View<'_>,
    stats: &mut EngineStats,
) -> Option<(String, Vec<Event>)> {
    if !single(&t.selector, view) {
        return None;
    }
    let key: Vec<String> = t
        .group_by
        .iter()
        .map(|f| view.text(*f).map(str::to_owned))
        .collect::<Option<_>>()?;
    let value = view.text(t.distinct)?.to_owned();
    let now = view.event.boot_ns;
    if !groups.contains_key(&key)
        && groups.len() >= MAX_GROUPS
        && let Some(oldest) = groups
            .iter()
            .min_by_key(|(_, g)| g.last_ns)
            .map(|(k, _)| k.clone())
    {
        groups.remove(&oldest);
        stats.evicted += 1;
    }
    let g = groups.entry(key.clone()).or_default();
    g.last_ns = now;
    while g
        .seen
        .front()
        .is_some_and(|(ts, _, _)| now.saturating_sub(*ts) > t.within_ns)
    {
        g.seen.pop_front();
    }
    if g.seen.iter().any(|(_, v, _)| *v == value) {
        return None;
    }
    g.seen.push_back((now, value, view.event.clone()));
    if g.seen.len() < t.count {
        return None;
    }
    let evidence: Vec<Event> = g
        .seen
        .drain(..)
        .map(|(_, _, e)| e)
        .take(MAX_THRESHOLD_EVIDENCE)
        .collect();
    Some((key.join("|"), evidence))
}

fn key_text(k: ProcessKey) -> String {
    format!("{}:{}", k.pid, k.start)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::detect::rules::behaviour::testcase::ReplayFacts;

    fn rule(text: &str) -> BehaviourRule {
        let head =
            "id: t\ntitle: T\ndescription: d\ntechnique: T1\nseverity: high\nconfidence: high\n";
        BehaviourRule::parse(&format!("{head}{text}"), Path::new("t.yml")).expect("rule")
    }

    /// Events from a rule test's shorthand, through the test-case normaliser.
    fn events(yaml: &str) -> Vec<Event> {
        let r = rule(&format!(
            "match:\n  kind: exec\ntests:\n  - name: x\n    expect: match\n    events:\n{yaml}"
        ));
        r.tests[0].events.clone()
    }

    fn fire(engine: &mut Engine, evs: &[Event]) -> Vec<usize> {
        let mut facts = ReplayFacts::new(1);
        let mut out = Vec::new();
        for (i, e) in evs.iter().enumerate() {
            facts.learn(e);
            let view = View::new(e, &[], &facts);
            if !engine.check(&view).is_empty() {
                out.push(i);
            }
        }
        out
    }

    #[test]
    fn a_sequence_must_complete_within_its_window() {
        let r = rule(
            "sequence:\n  within: 2s\n  scope: process\n  steps:\n    - kind: open\n      where: {write: true}\n      bind: {f: path}\n    - kind: chmod\n      bind: {f: path}\n",
        );
        let mut e = Engine::new(vec![r.clone()]);
        let quick = events(
            "      - {kind: open, pid: 5, file: /a, write: true, at: 0s}\n      - {kind: chmod, pid: 5, file: /a, mode: '755', at: 1s}\n",
        );
        assert_eq!(fire(&mut e, &quick), vec![1]);
        let mut e = Engine::new(vec![r.clone()]);
        let slow = events(
            "      - {kind: open, pid: 5, file: /a, write: true, at: 0s}\n      - {kind: chmod, pid: 5, file: /a, mode: '755', at: 3s}\n",
        );
        assert!(fire(&mut e, &slow).is_empty(), "outside the window");
        let mut e = Engine::new(vec![r.clone()]);
        let other_file = events(
            "      - {kind: open, pid: 5, file: /a, write: true}\n      - {kind: chmod, pid: 5, file: /b, mode: '755'}\n",
        );
        assert!(
            fire(&mut e, &other_file).is_empty(),
            "bound to the same file"
        );
        let mut e = Engine::new(vec![r]);
        let other_process = events(
            "      - {kind: open, pid: 5, file: /a, write: true}\n      - {kind: chmod, pid: 6, file: /a, mode: '755'}\n",
        );
        assert!(fire(&mut e, &other_process).is_empty(), "scope: process");
    }

    #[test]
    fn an_ordered_sequence_needs_its_order() {
        let r = rule(
            "sequence:\n  within: 5s\n  scope: tree\n  steps:\n    - kind: exec\n      where: {name: a}\n    - kind: exec\n      where: {name: b}\n",
        );
        let mut e = Engine::new(vec![r]);
        let reversed = events(
            "      - {kind: exec, pid: 11, ppid: 10, exe: /b}\n      - {kind: exec, pid: 12, ppid: 10, exe: /a}\n",
        );
        assert!(fire(&mut e, &reversed).is_empty());
    }

    #[test]
    fn one_attack_is_one_alert() {
        let r = rule("match:\n  kind: exec\n  where: {name: sh}\n");
        let mut e = Engine::new(vec![r]);
        let evs = events(
            "      - {kind: exec, pid: 20, ppid: 1, exe: /bin/sh}\n      - {kind: exec, pid: 20, ppid: 1, exe: /bin/sh}\n      - {kind: exec, pid: 21, ppid: 20, exe: /bin/sh}\n      - {kind: exec, pid: 30, ppid: 1, exe: /bin/sh}\n",
        );
        assert_eq!(
            fire(&mut e, &evs),
            vec![0, 3],
            "the same process and its descendants are quiet; an unrelated one is not"
        );
        assert_eq!(e.stats().suppressed, 2);
    }

    #[test]
    fn thresholds_count_distinct_values_per_group() {
        let r = rule(
            "threshold:\n  match: {kind: connect}\n  group_by: [parent, remote_ip]\n  distinct: remote_port\n  count: 3\n  within: 10s\n",
        );
        let mut e = Engine::new(vec![r]);
        let evs = events(
            "      - {kind: connect, pid: 40, ppid: 39, remote: '10.0.0.1:1'}\n      - {kind: connect, pid: 40, ppid: 39, remote: '10.0.0.1:1'}\n      - {kind: connect, pid: 41, ppid: 39, remote: '10.0.0.2:2'}\n      - {kind: connect, pid: 40, ppid: 39, remote: '10.0.0.1:2'}\n      - {kind: connect, pid: 42, ppid: 39, remote: '10.0.0.1:3'}\n",
        );
        assert_eq!(fire(&mut e, &evs), vec![4]);
    }
}
