//! A rule's test cases as a rule file writes them: events that must, or must not, make it
//! fire, compiled into published events ([`testcase`](super::testcase) replays them).
//!
//! Test events are published events (README schema) with defaults for what a case does not
//! care about, and shorthands: `file: /path` for a resolved file, `remote: 1.2.3.4:80` and
//! `local:` for a socket's addresses, `at: 2s` for the time since the case began.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::model::events::Event;

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
pub(super) const TEST_SENSOR_PATHS: &[&str] =
    &["/var/lib/vigil/", "/etc/vigil/", "/usr/bin/vigil-sensor"];
/// The ids of the sensor's eBPF programs, maps and links in test cases.
pub(super) const TEST_SENSOR_BPF_IDS: std::ops::RangeInclusive<u32> = 40..=49;
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
        "pidfd_open" => "pidfd_open",
        "pidfd_getfd" => "pidfd_getfd",
        "pidfd_signal" => "pidfd_send_signal",
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

/// What is wrong with one event of a test case.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("not a map")]
    NotAMap,
    #[error("the event has no `kind`")]
    NoKind,
    #[error(transparent)]
    At(#[from] DurationError),
    #[error("`at` is not a whole number of milliseconds")]
    AtNotWhole,
    #[error("`at` is neither a duration nor milliseconds")]
    AtNeither,
    #[error("mode {0} is neither an octal string nor a number")]
    Mode(String),
    #[error("{0}")]
    Schema(#[from] serde_json::Error),
}

/// A test case's event that does not read, and where it is.
#[derive(Debug, thiserror::Error)]
#[error("test {test:?} (#{case}), event {event}: {source}")]
pub struct CaseError {
    pub test: String,
    /// 1-based, as a person counts.
    pub case: usize,
    pub event: usize,
    pub source: EventError,
}

/// A test event with every default filled in, as the published schema has it.
// Long by design: one default after another, in the order the published test-case schema lists them.
fn normalize(mut m: Map<String, Value>, index: usize) -> Result<Event, EventError> {
    let kind = m
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(EventError::NoKind)?
        .to_owned();
    let at = match m.remove("at") {
        Some(Value::String(w)) => parse_duration(&w)?,
        Some(Value::Number(n)) => n.as_u64().ok_or(EventError::AtNotWhole)? * 1_000_000,
        Some(_) => return Err(EventError::AtNeither),
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
                    u32::from_str_radix(s, 8).map_err(|_| EventError::Mode(format!("{s:?}")))?
                }
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| EventError::Mode(format!("{v}")))?,
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
            set(&mut m, "object_id", Value::Null);
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
        "pidfd_open" => set(&mut m, "target_pid", json!(1)),
        "pidfd_getfd" => {
            set(&mut m, "target_pid", json!(1));
            set(&mut m, "target_fd", json!(0));
        }
        "pidfd_signal" => set(&mut m, "signal", json!(9)),
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
    Ok(serde_json::from_value(Value::Object(m))?)
}

impl TestCase {
    pub(super) fn compile(doc: TestDoc, index: usize) -> Result<Self, CaseError> {
        let events = doc
            .events
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                match v {
                    Value::Object(m) => normalize(m, i),
                    _ => Err(EventError::NotAMap),
                }
                .map_err(|source| CaseError {
                    test: doc.name.clone(),
                    case: index + 1,
                    event: i + 1,
                    source,
                })
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

/// What is wrong with a duration (a rule's window, a test event's `at`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("window {0:?} does not start with a number")]
    NoNumber(String),
    #[error("window {0:?}: the unit must be ms, s, m or h")]
    Unit(String),
    #[error("window {0:?} is too long")]
    TooLong(String),
    #[error("window {0:?} is empty")]
    Empty(String),
}

/// A duration such as `0s`, `500ms`, `30s`, `5m` or `1h`, in nanoseconds.
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| DurationError::NoNumber(text.to_owned()))?;
    let mult: u64 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(DurationError::Unit(text.to_owned())),
    };
    n.checked_mul(mult)
        .ok_or_else(|| DurationError::TooLong(text.to_owned()))
}
