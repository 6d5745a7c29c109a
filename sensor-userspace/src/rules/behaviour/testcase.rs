//! A rule's test cases: events that must, or must not, make it fire, replayed through the
//! real engine with the process and graph facts learnt from the same events.
//!
//! Test events are published events (README schema) with defaults for what a case does not
//! care about, and shorthands: `file: /path` for a resolved file, `remote: 1.2.3.4:80` and
//! `local:` for a socket's addresses, `at: 2s` for the time since the case began.

use ahash::{HashMap, HashMapExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    engine::Engine,
    fields::{Facts, ProcFacts, View},
    rule::{BehaviourRule, parse_duration},
};
use crate::{
    events::{Event, What},
    process_table::ProcessKey,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Match,
    NoMatch,
    /// The rule matches, and an exception of the policy given to `rules test --policy`
    /// suppresses the match.
    Suppressed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestDoc {
    pub name: String,
    expect: Expect,
    events: Vec<Value>,
    #[serde(default)]
    sensor_pid: Option<u32>,
    /// Paths whose content is that of a quarantined file.
    #[serde(default)]
    quarantined: Vec<String>,
}

/// One compiled test case.
#[derive(Clone, Debug)]
pub struct TestCase {
    pub name: String,
    pub expect: Expect,
    pub events: Vec<Event>,
    pub sensor_pid: u32,
    pub quarantined: Vec<String>,
}

/// The sensor's pid in test cases that do not say.
const TEST_SENSOR_PID: u32 = 4242;
/// The sensor's files in test cases.
const TEST_SENSOR_PATHS: &[&str] = &["/var/lib/vigil/", "/etc/vigil/", "/usr/bin/vigil-sensor"];
const BASE_UNIX_NS: u64 = 1_790_000_000_000_000_000;
const BASE_BOOT_NS: u64 = 1_000_000_000_000;

fn file_ref(v: &Value) -> Value {
    match v {
        Value::String(p) => json!({"path": p, "resolved": true}),
        Value::Object(m) => {
            let mut m = m.clone();
            m.entry("resolved").or_insert(json!(true));
            Value::Object(m)
        }
        other => other.clone(),
    }
}

fn syscall_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "open" => "openat",
        "unlink" => "unlinkat",
        "rename" => "renameat2",
        "chmod" => "fchmodat",
        "chown" => "fchownat",
        "connect" => "connect",
        "accept" => "accept4",
        "bind" => "bind",
        "listen" => "listen",
        "setuid" => "setresuid",
        "setgid" => "setresgid",
        "capset" => "capset",
        "ptrace" => "ptrace",
        "module_load" => "finit_module",
        "bpf" => "bpf",
        "memfd_create" => "memfd_create",
        "mount" => "mount",
        "kill" => "kill",
        "xattr" => "setxattr",
        "process_vm" => "process_vm_readv",
        "set_name" => "prctl",
        "utimes" => "utimensat",
        "set_flags" => "ioctl",
        _ => return None,
    })
}

fn set(m: &mut Map<String, Value>, k: &str, v: Value) {
    m.entry(k.to_owned()).or_insert(v);
}

/// A test event with every default filled in, as the published schema has it.
fn normalize(mut m: Map<String, Value>, index: usize) -> Result<Event, String> {
    let kind = m
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("the event has no `kind`")?
        .to_owned();
    let at = match m.remove("at") {
        Some(Value::String(w)) => parse_duration(&w)?,
        Some(Value::Number(n)) => n.as_u64().ok_or("`at` is not a whole number")? * 1_000_000,
        Some(_) => return Err("`at` is neither a duration nor milliseconds".into()),
        None => index as u64 * 1_000_000,
    };
    set(&mut m, "time_ns", json!(BASE_UNIX_NS + at));
    set(&mut m, "boot_ns", json!(BASE_BOOT_NS + at));
    set(&mut m, "pid", json!(1000));
    let pid = m.get("pid").cloned().unwrap_or(json!(1000));
    set(&mut m, "tid", pid.clone());
    set(&mut m, "start", pid);
    set(&mut m, "ppid", json!(1));
    let ppid = m.get("ppid").cloned().unwrap_or(json!(1));
    set(&mut m, "parent", json!({"pid": ppid, "start": ppid}));
    set(&mut m, "uid", json!(0));
    let uid = m.get("uid").cloned().unwrap_or(json!(0));
    set(&mut m, "euid", uid.clone());
    set(&mut m, "gid", uid.clone());
    set(&mut m, "egid", uid);
    let comm = m
        .get("exe")
        .and_then(Value::as_str)
        .map(|e| e.rsplit('/').next().unwrap_or(e).chars().take(15).collect())
        .unwrap_or_else(|| "test".to_owned());
    set(&mut m, "comm", json!(comm));
    set(&mut m, "cgroup_id", json!(0));
    if let Some(sc) = syscall_of(&kind) {
        set(&mut m, "syscall", json!(sc));
        let failed = m.get("error").is_some_and(|e| !e.is_null());
        set(&mut m, "ret", json!(if failed { -1 } else { 0 }));
    }
    for key in ["file", "to", "target"] {
        if let Some(v) = m.get(key).map(file_ref) {
            m.insert(key.to_owned(), v);
        }
    }
    match kind.as_str() {
        "exec" => {
            let exe = m.get("exe").cloned().unwrap_or(Value::Null);
            set(&mut m, "argv", json!([exe]));
            set(&mut m, "argv_truncated", json!(false));
            set(&mut m, "exe_file", json!({"dev": 0, "ino": 0}));
            set(&mut m, "fileless", json!(false));
            set(&mut m, "memfd", json!(false));
            set(&mut m, "stdio", json!(["tty", "tty", "tty"]));
        }
        "open" => {
            set(&mut m, "flags", json!(0));
            set(&mut m, "mode", json!(0));
            for f in ["write", "create", "truncate", "sensitive_read"] {
                set(&mut m, f, json!(false));
            }
        }
        "chmod" => {
            let mode = match m.get("mode") {
                Some(Value::String(s)) => {
                    u32::from_str_radix(s, 8).map_err(|_| format!("mode {s:?} is not octal"))?
                }
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or("mode is not a number")?,
                None => 0o644,
            };
            m.insert("mode".into(), json!(mode));
            m.entry("setuid".to_owned())
                .or_insert(json!(mode & 0o4000 != 0));
            m.entry("setgid".to_owned())
                .or_insert(json!(mode & 0o2000 != 0));
        }
        "chown" => {
            set(&mut m, "owner", Value::Null);
            set(&mut m, "group", Value::Null);
        }
        "connect" | "accept" | "bind" | "listen" => {
            if !m.contains_key("net") {
                let family = m.remove("family").unwrap_or(json!("inet"));
                let protocol = m.remove("protocol").unwrap_or(json!("tcp"));
                let remote = m.remove("remote").unwrap_or(Value::Null);
                let local = m.remove("local").unwrap_or(Value::Null);
                m.insert(
                    "net".into(),
                    json!({"family": family, "protocol": protocol, "remote": remote, "local": local}),
                );
            }
            if kind == "listen" {
                m.entry("backlog".to_owned()).or_insert(json!(128));
            }
        }
        "setuid" => {
            set(&mut m, "new_ruid", Value::Null);
            set(&mut m, "new_euid", Value::Null);
            set(&mut m, "new_suid", Value::Null);
        }
        "setgid" => {
            set(&mut m, "new_rgid", Value::Null);
            set(&mut m, "new_egid", Value::Null);
            set(&mut m, "new_sgid", Value::Null);
        }
        "ptrace" => {
            set(&mut m, "request", json!(16));
            set(&mut m, "request_name", json!("PTRACE_ATTACH"));
            set(&mut m, "target_pid", json!(1));
        }
        "module_load" => {
            set(&mut m, "params", Value::Null);
            set(&mut m, "file", Value::Null);
        }
        "bpf" => {
            set(&mut m, "command", json!(5));
            set(&mut m, "command_name", json!("BPF_PROG_LOAD"));
            set(&mut m, "prog_type", Value::Null);
        }
        "memfd_create" => {
            set(&mut m, "name", Value::Null);
            set(&mut m, "flags", json!(0));
        }
        "mount" => {
            set(&mut m, "source", Value::Null);
            set(&mut m, "fstype", Value::Null);
            set(&mut m, "flags", json!(0));
        }
        "kill" => {
            set(&mut m, "signal", json!(9));
            set(&mut m, "target_pid", json!(1));
        }
        "xattr" => {
            set(&mut m, "name", json!("user.test"));
            set(&mut m, "set", json!(true));
        }
        "process_vm" => {
            set(&mut m, "target_pid", json!(1));
            set(&mut m, "write", json!(false));
        }
        "set_name" => {
            let name = m.get("name").cloned().unwrap_or(json!("test"));
            m.insert("comm".into(), name.clone());
            set(&mut m, "name", name);
        }
        "utimes" => {
            set(&mut m, "atime_ns", Value::Null);
            set(&mut m, "mtime_ns", Value::Null);
        }
        "set_flags" => {
            let immutable = m.get("immutable").and_then(Value::as_bool).unwrap_or(false);
            let append = m
                .get("append_only")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            set(&mut m, "immutable", json!(immutable));
            set(&mut m, "append_only", json!(append));
            set(
                &mut m,
                "flags",
                json!((u32::from(immutable) * 0x10) | (u32::from(append) * 0x20)),
            );
        }
        _ => {}
    }
    serde_json::from_value(Value::Object(m)).map_err(|e| e.to_string())
}

impl TestCase {
    pub(super) fn compile(doc: TestDoc, index: usize) -> Result<Self, String> {
        let events = doc
            .events
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(m) => normalize(m, i).map_err(|e| {
                    format!("test {:?} (#{}), event {}: {e}", doc.name, index + 1, i + 1)
                }),
                _ => Err(format!(
                    "test {:?} (#{}), event {}: not a map",
                    doc.name,
                    index + 1,
                    i + 1
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: doc.name,
            expect: doc.expect,
            events,
            sensor_pid: doc.sensor_pid.unwrap_or(TEST_SENSOR_PID),
            quarantined: doc.quarantined,
        })
    }
}

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
