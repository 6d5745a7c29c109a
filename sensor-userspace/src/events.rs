//! The events the sensor publishes, one JSON object per line (schema in the README).

use sensor_common::decode::ExitStatus;
use serde::{Deserialize, Serialize};

use crate::process_table::{Process, ProcessKey};

/// How deep `ancestry` goes.
pub const ANCESTRY_DEPTH: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Fork,
    Exec,
    Exit,
}

/// A process as events name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    /// Start time, clock ticks since boot: with `pid`, the process identity.
    pub start: u64,
    pub exe: Option<String>,
}

impl From<&Process> for ProcessRef {
    fn from(p: &Process) -> Self {
        Self {
            pid: p.key.pid,
            start: p.key.start,
            exe: p.exe.clone(),
        }
    }
}

/// One published event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: Kind,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// CLOCK_BOOTTIME nanoseconds, as the kernel stamped it.
    pub boot_ns: u64,
    pub pid: u32,
    /// Thread that did it (for exec, the thread that called execve).
    pub tid: u32,
    pub start: u64,
    pub ppid: u32,
    pub parent: Option<ProcessKey>,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit: Option<ExitStatus>,
    /// Known ancestors, nearest first.
    pub ancestry: Vec<ProcessRef>,
}
