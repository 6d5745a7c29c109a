//! Process lifecycle records: fork, exec (image and argument vector) and exit.

use crate::{
    limits::{ARGS_BUF, COMM_LEN, ENV_CAP, ENV_VAR_CAP, FILENAME_LEN},
    record::RecordHeader,
};

/// Who did it: the task an event is about, read from its `task_struct`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TaskInfo {
    /// `task_struct.start_boottime`: with `tgid`, the identity of the process.
    pub start_boot_ns: u64,
    /// Start time of the real parent, so the parent is named by identity too.
    pub parent_start_boot_ns: u64,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// Thread id (`task_struct.pid`).
    pub pid: u32,
    /// Process id (`task_struct.tgid`).
    pub tgid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// A new process. The task is the child.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
}

/// A successful exec. The task is the process after the exec.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// The thread id that called exec (differs from `task.pid` when a non-leader thread execs).
    pub old_pid: u32,
    /// Bytes used in `filename`, without the NUL.
    pub filename_len: u32,
    /// The executed file (`mm->exe_file`): inode number and device (kernel `dev_t` encoding).
    pub exe_ino: u64,
    /// Inode numbers of fds 0, 1 and 2 after the exec: two processes whose stdout and stdin
    /// share a pipe inode are the two ends of one pipeline.
    pub stdio_ino: [u64; 3],
    pub exe_dev: u32,
    /// `i_mode` and `i_rdev` of fds 0, 1 and 2 after the exec (0 when closed).
    pub stdio_mode: [u32; 3],
    pub stdio_rdev: [u32; 3],
    pub filename: [u8; FILENAME_LEN],
}

/// The fixed part of an [`ExecArgsRecord`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecArgsHead {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// Number of arguments collected.
    pub argc: u32,
    /// Bytes of `args` in use: the arguments, each followed by a NUL.
    pub args_len: u32,
}

/// The argument vector of an exec call, emitted at syscall entry. Its size on the ring is the
/// head plus `args_len` bytes: the unused tail of `args` is not sent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecArgsRecord {
    pub head: ExecArgsHead,
    pub args: [u8; ARGS_BUF],
}

/// The fixed part of an [`ExecEnvRecord`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEnvHead {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// Number of variables captured.
    pub count: u32,
    /// Bytes of `env` in use: `NAME=value` strings, each followed by a NUL.
    pub env_len: u32,
}

/// The allow-listed environment variables of an exec call (`LD_PRELOAD`, `BASH_ENV`...),
/// emitted at syscall entry just before its [`ExecArgsRecord`], and only when there is one.
/// The kernel selects variables by the first [`crate::limits::ENV_KEY_LEN`] bytes of
/// `NAME=`; userspace checks the whole name.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEnvRecord {
    pub head: ExecEnvHead,
    pub env: [u8; ENV_CAP + ENV_VAR_CAP],
}

/// The end of a process (its last thread exited).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// `task_struct.exit_code`: a wait(2) status (`code << 8`, or the signal number).
    pub exit_code: u32,
    pub _pad: u32,
}
