//! A rule's test cases replayed through the real engine, with the process and graph facts
//! learnt from the same events.

use ahash::{HashMap, HashMapExt};

use super::{
    case::{Expect, TEST_SENSOR_BPF_IDS, TEST_SENSOR_PATHS},
    engine::Engine,
    fields::{Facts, ProcFacts, View},
    rule::BehaviourRule,
};
use crate::{
    model::events::{Event, What},
    model::process_table::ProcessKey,
};

/// Process and graph facts learnt from replayed events.
#[derive(Default)]
pub struct ReplayFacts {
    processes: HashMap<u32, ProcFacts>,
    writers: HashMap<String, ProcessKey>,
    executable: Vec<String>,
    networked: Vec<ProcessKey>,
    serving: Vec<ProcessKey>,
    sensor_pid: u32,
    quarantined: Vec<String>,
}

impl ReplayFacts {
    pub fn new(sensor_pid: u32) -> Self {
        Self {
            processes: HashMap::new(),
            sensor_pid,
            ..Self::default()
        }
    }

    /// Takes in what `e` says about its process and the files and sockets it touched.
    pub fn learn(&mut self, e: &Event) {
        let key = ProcessKey {
            pid: e.pid,
            start: e.start,
        };
        let p = self.processes.entry(e.pid).or_insert_with(|| ProcFacts {
            key,
            ppid: e.ppid,
            parent: e.parent,
            exe: e.exe.clone(),
            argv: Vec::new(),
        });
        p.key = key;
        p.ppid = e.ppid;
        p.parent = e.parent;
        if e.exe.is_some() {
            p.exe.clone_from(&e.exe);
        }
        let ok = e.ret.is_none_or(|r| r >= 0);
        match &e.what {
            What::Exec { argv, .. } => p.argv.clone_from(argv),
            What::Open {
                file,
                write,
                create,
                ..
            } if ok && (*write || *create) => {
                if let Some(path) = &file.path {
                    self.writers.entry(path.clone()).or_insert(key);
                }
            }
            What::Chmod { file, mode, .. } if ok && mode & 0o111 != 0 => {
                self.executable.extend(file.path.clone());
            }
            What::Connect { net } if net.family.starts_with("inet") => {
                self.networked.push(key);
            }
            What::Accept { net } if net.family.starts_with("inet") => {
                self.networked.push(key);
                self.serving.push(key);
            }
            What::Listen { net, .. } if net.family.starts_with("inet") => {
                self.serving.push(key);
            }
            _ => {}
        }
    }
}

impl Facts for ReplayFacts {
    fn process(&self, key: &ProcessKey) -> Option<ProcFacts> {
        self.processes.get(&key.pid).cloned()
    }

    fn ancestors(&self, key: &ProcessKey, max: usize) -> Vec<ProcFacts> {
        let mut out = Vec::new();
        let mut pid = self.processes.get(&key.pid).map(|p| p.ppid);
        while let Some(pp) = pid {
            if out.len() >= max || pp == 0 {
                break;
            }
            match self.processes.get(&pp) {
                Some(p) => {
                    pid = (p.ppid != pp).then_some(p.ppid);
                    out.push(p.clone());
                }
                None => {
                    out.push(ProcFacts {
                        key: ProcessKey {
                            pid: pp,
                            start: pp.into(),
                        },
                        ppid: 0,
                        parent: None,
                        exe: None,
                        argv: Vec::new(),
                    });
                    break;
                }
            }
        }
        out
    }

    fn first_writer(&self, path: &str) -> Option<ProcessKey> {
        self.writers.get(path).copied()
    }

    fn made_executable(&self, path: &str) -> bool {
        self.executable.iter().any(|p| p == path)
    }

    fn networked(&self, key: &ProcessKey) -> bool {
        self.networked.contains(key)
    }

    fn serving(&self, key: &ProcessKey) -> bool {
        self.serving.contains(key)
    }

    fn live(&self, pid: u32) -> Option<ProcessKey> {
        self.processes.get(&pid).map(|p| p.key)
    }

    fn is_sensor(&self, pid: u32) -> bool {
        pid == self.sensor_pid
    }

    fn is_sensor_path(&self, path: &str) -> bool {
        TEST_SENSOR_PATHS.iter().any(|p| path.starts_with(p))
    }

    fn is_sensor_bpf_object(&self, _cmd: u64, id: u32) -> bool {
        TEST_SENSOR_BPF_IDS.contains(&id)
    }

    fn hash_blocked(&self, path: &str) -> bool {
        self.quarantined.iter().any(|p| p == path)
    }
}

/// The outcome of one test case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub rule: String,
    pub case: String,
    pub passed: bool,
    /// What happened, for a failure.
    pub detail: String,
}

/// Runs every test case of `rule`. A rule without a must-match and a must-not-match case fails.
pub fn run(rule: &BehaviourRule) -> Vec<CaseResult> {
    run_with(rule, None)
}

/// The exception of `policy` that suppresses `rule`'s match on `e`, by index.
fn suppressed_by(
    policy: &crate::policy::Policy,
    rule: &BehaviourRule,
    e: &Event,
    argv: &[String],
    facts: &ReplayFacts,
) -> Option<usize> {
    let cmdline = argv.join(" ");
    let parent_exe = facts.processes.get(&e.ppid).and_then(|p| p.exe.clone());
    // The same entities a live finding carries, so `rules test` suppresses what the sensor
    // would.
    let entities = crate::detect::entities_of(&e.what);
    let subject = crate::policy::ExceptionSubject {
        rule_id: Some(&rule.id),
        rule_title: &rule.title,
        exe: e.exe.as_deref(),
        parent_exe: parent_exe.as_deref(),
        cmdline: &cmdline,
        paths: entities.iter().map(String::as_str).collect(),
    };
    let now = i64::try_from(e.time_ns / 1_000_000_000).unwrap_or(i64::MAX);
    policy.exception_for(&subject, now)
}

/// [`run`], with the exceptions of `policy` applied to every match: a case that must match
/// fails when an exception suppresses it, and a case that expects `suppressed` needs one to.
pub fn run_with(rule: &BehaviourRule, policy: Option<&crate::policy::Policy>) -> Vec<CaseResult> {
    let mut out = Vec::new();
    for (expect, what) in [
        (Expect::Match, "must match"),
        (Expect::NoMatch, "must not match"),
    ] {
        if !rule.tests.iter().any(|t| t.expect == expect) {
            out.push(CaseResult {
                rule: rule.id.clone(),
                case: format!("(a case that {what})"),
                passed: false,
                detail: format!("the rule has no test case that {what}"),
            });
        }
    }
    for case in &rule.tests {
        let mut engine = Engine::new(vec![rule.clone()]);
        let mut facts = ReplayFacts::new(case.sensor_pid);
        facts.quarantined.clone_from(&case.quarantined);
        let mut fired = Vec::new();
        let mut suppressed = Vec::new();
        for (i, e) in case.events.iter().enumerate() {
            facts.learn(e);
            let argv: Vec<String> = match &e.what {
                What::Exec { argv, .. } => argv.clone(),
                _ => facts
                    .processes
                    .get(&e.pid)
                    .map(|p| p.argv.clone())
                    .unwrap_or_default(),
            };
            let view = View::new(e, &argv, &facts);
            if !engine.check(&view).is_empty() {
                match policy.and_then(|p| suppressed_by(p, rule, e, &argv, &facts)) {
                    Some(x) => suppressed.push((i + 1, x)),
                    None => fired.push(i + 1),
                }
            }
        }
        let exception = |x: usize| {
            policy
                .and_then(|p| p.exceptions.get(x))
                .map_or_else(String::new, |e| {
                    format!("exception {} ({})", x + 1, e.reason)
                })
        };
        let (passed, detail) = match (case.expect, fired.is_empty(), suppressed.first()) {
            (Expect::Match, false, _) | (Expect::NoMatch, true, None) => (true, String::new()),
            (Expect::Suppressed, true, Some(_)) => (true, String::new()),
            (Expect::Match, true, Some((ev, x))) => (
                false,
                format!(
                    "expected a match; the rule fired on event {ev} but {} suppressed it",
                    exception(*x)
                ),
            ),
            (Expect::Match, true, None) => {
                (false, "expected a match, the rule did not fire".into())
            }
            (Expect::NoMatch, _, _) => (
                false,
                format!(
                    "expected no match, the rule fired on event(s) {:?}",
                    fired
                        .iter()
                        .chain(suppressed.iter().map(|(i, _)| i))
                        .collect::<Vec<_>>()
                ),
            ),
            (Expect::Suppressed, _, _) if policy.is_none() => (
                false,
                "expects an exception to suppress the match: run `rules test` with --policy".into(),
            ),
            (Expect::Suppressed, false, _) => (
                false,
                format!(
                    "expected the match to be suppressed; it fired on event(s) {fired:?} and no exception applied"
                ),
            ),
            (Expect::Suppressed, true, None) => (
                false,
                "expected a suppressed match, the rule did not fire".into(),
            ),
        };
        out.push(CaseResult {
            rule: rule.id.clone(),
            case: case.name.clone(),
            passed,
            detail,
        });
    }
    out
}
