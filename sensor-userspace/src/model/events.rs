//! The events the sensor publishes, one JSON object per line (schema in the README).
//!
//! An event is the acting process's context plus `kind` and that kind's own fields.

use std::net::SocketAddr;

use sensor_common::decode::{ExitStatus, FileId, StreamKind};
use serde::{Deserialize, Serialize};

use crate::model::process_table::{Process, ProcessKey};

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How deep `ancestry` goes.
pub const ANCESTRY_DEPTH: usize = 16;

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

/// A socket endpoint in an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    /// `unix`, `inet` or `inet6` (or the AF_ number).
    pub family: String,
    /// `tcp`, `udp`, `raw`... (or the IPPROTO_/SOCK_ number).
    pub protocol: String,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// For UNIX sockets: the socket's path.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unix_path: Option<String>,
}

/// A file named in an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Absolute when it could be resolved; as the call gave it otherwise.
    pub path: Option<String>,
    /// False when a relative path could not be resolved (the process was already gone).
    pub resolved: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<FileId>,
    /// What the inode is, when the kernel saw it: `file`, `directory`, `char_device`,
    /// `block_device`, `fifo`, `socket` or `symlink`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file_type: Option<FileType>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Directory,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Symlink,
}

impl FileType {
    /// From an inode's `i_mode`.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 => Self::File,
            0o040000 => Self::Directory,
            0o020000 => Self::CharDevice,
            0o060000 => Self::BlockDevice,
            0o010000 => Self::Fifo,
            0o140000 => Self::Socket,
            0o120000 => Self::Symlink,
            _ => return None,
        })
    }
}

/// What happened, with its own fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    Fork,
    Exec {
        argv: Vec<String>,
        argv_truncated: bool,
        /// The executed file by identity.
        exe_file: FileId,
        /// The executed inode had no links (a deleted file or a memfd): fileless execution.
        fileless: bool,
        memfd: bool,
        /// The in-kernel exec blocklist killed it before its first instruction.
        #[serde(default)]
        blocked: bool,
        /// What fds 0, 1 and 2 are in the new image.
        stdio: [StreamKind; 3],
        /// Their inode numbers: a pipe's or socket's identity, shared by both ends.
        #[serde(default)]
        stdio_inodes: [u64; 3],
        /// The allow-listed environment variables the exec was given (`NAME=value`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        env: Vec<String>,
        /// Not every variable of the environment was looked at (see `ENV_SCAN`), or a value
        /// was cut.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        env_truncated: bool,
        /// For an interpreter given a script file (`bash file.sh`, `python3 x.py`): that file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        script: Option<Script>,
    },
    Exit {
        exit: ExitStatus,
    },
    Open {
        file: FileRef,
        flags: u64,
        mode: u32,
        write: bool,
        create: bool,
        truncate: bool,
        /// A read-only open kept because the file name is in the sensitive set.
        sensitive_read: bool,
        /// For `/proc/PID/{mem,environ,maps,...}` of a process other than the caller: its pid.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_pid: Option<u32>,
        /// For a file under /proc/sys: the sysctl it is (`kernel.randomize_va_space`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sysctl: Option<String>,
    },
    Unlink {
        file: FileRef,
    },
    Rename {
        file: FileRef,
        to: FileRef,
    },
    Chmod {
        file: FileRef,
        mode: u32,
        setuid: bool,
        setgid: bool,
    },
    Chown {
        file: FileRef,
        /// None: left unchanged (-1).
        owner: Option<u32>,
        group: Option<u32>,
    },
    Connect {
        net: Net,
    },
    Accept {
        net: Net,
    },
    Bind {
        net: Net,
    },
    Listen {
        net: Net,
        backlog: u64,
    },
    /// setuid, setreuid, setresuid: the ids asked for (None: unchanged). The event's own
    /// `uid`/`euid` are the process's credentials after the call.
    SetUid {
        new_ruid: Option<u32>,
        new_euid: Option<u32>,
        new_suid: Option<u32>,
    },
    SetGid {
        new_rgid: Option<u32>,
        new_egid: Option<u32>,
        new_sgid: Option<u32>,
    },
    Capset {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    },
    Ptrace {
        request: u64,
        request_name: Option<String>,
        target_pid: i64,
    },
    ModuleLoad {
        params: Option<String>,
        file: Option<FileRef>,
    },
    Bpf {
        command: u64,
        command_name: Option<String>,
        /// For BPF_PROG_LOAD: the BPF_PROG_TYPE_* number.
        prog_type: Option<u32>,
        /// For BPF_{PROG,MAP,LINK}_GET_FD_BY_ID: the id of the object asked for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object_id: Option<u32>,
    },
    MemfdCreate {
        name: Option<String>,
        flags: u64,
    },
    Mount {
        source: Option<String>,
        target: FileRef,
        fstype: Option<String>,
        flags: u64,
    },
    /// A signal to another process: `kill`, `tkill` and `tgkill` (the target is the thread's
    /// process), and `pidfd_send_signal` when the pidfd's process is known.
    Kill {
        target_pid: i64,
        signal: u64,
    },
    /// A pidfd taken on a process (`pidfd_open`).
    PidfdOpen {
        target_pid: i64,
    },
    /// One of another process's descriptors copied out through a pidfd (`pidfd_getfd`): its
    /// open files, sockets and eBPF links become the caller's. `target_pid` is None when the
    /// pidfd's process could not be told (the pidfd closed before it was read, and its
    /// `pidfd_open` was not seen).
    PidfdGetfd {
        target_pid: Option<i64>,
        target_fd: i32,
    },
    /// A signal sent through a pidfd whose process could not be told (one that could is a
    /// [`What::Kill`]).
    PidfdSignal {
        signal: u64,
    },
    /// setxattr/removexattr and their l- and f- forms.
    Xattr {
        file: FileRef,
        /// The attribute's name (`security.capability`, `user.x`...).
        name: Option<String>,
        /// False for a removal.
        set: bool,
        /// For `security.capability`: the capabilities granted (`cap_setuid`...).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        capabilities: Vec<String>,
    },
    /// process_vm_readv/process_vm_writev on another process.
    ProcessVm {
        target_pid: i64,
        write: bool,
    },
    /// prctl(PR_SET_NAME) by a process's leader thread: its name in `ps` changed.
    SetName {
        name: String,
    },
    /// utimensat/utimes/futimesat: a file's access and modification times set.
    Utimes {
        file: FileRef,
        /// Nanoseconds since the epoch; None: set to now (or left as it was).
        atime_ns: Option<i64>,
        mtime_ns: Option<i64>,
    },
    /// ioctl FS_IOC_SETFLAGS / FS_IOC_FSSETXATTR: a file's inode flags (chattr).
    SetFlags {
        file: FileRef,
        flags: u32,
        immutable: bool,
        append_only: bool,
    },
}

impl What {
    /// The other process the call acts on: traced, signalled, its memory or descriptors
    /// reached, a pidfd taken on it, or its /proc files read.
    pub fn target_pid(&self) -> Option<i64> {
        match self {
            What::Ptrace { target_pid, .. }
            | What::Kill { target_pid, .. }
            | What::PidfdOpen { target_pid }
            | What::PidfdGetfd {
                target_pid: Some(target_pid),
                ..
            }
            | What::ProcessVm { target_pid, .. } => Some(*target_pid),
            What::Open {
                target_pid: Some(t),
                ..
            } => Some(i64::from(*t)),
            _ => None,
        }
    }
}

/// The script file an interpreter was started on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    pub path: String,
    /// Its identity when it could be read at the exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<FileId>,
    /// The first process the sensor saw write it, and whether that process touched the
    /// network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<ProcessRef>,
    #[serde(default)]
    pub writer_networked: bool,
}

/// One published event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(flatten)]
    pub what: What,
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
    /// For syscall events: the call's name, its raw result and the error's name on failure.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub syscall: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ret: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Identical calls by the same thread (same file or peer, same result) since the last one
    /// delivered, counted in the kernel instead of delivered one by one.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub repeats: u32,
    /// Known ancestors, nearest first (on exec events).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ancestry: Vec<ProcessRef>,
}
