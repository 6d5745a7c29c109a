//! The header every ring-buffer record starts with, and the kinds of record.

/// What a record is. The discriminant is written by the kernel into [`RecordHeader::kind`].
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum EventKind {
    /// A new process (not a thread) was created: `sched_process_fork`.
    Fork = 0,
    /// A process replaced its image: `sched_process_exec`.
    Exec = 1,
    /// The argument vector of an `execve`/`execveat` call: `sys_enter_execve{,at}`.
    ExecArgs = 2,
    /// The last thread of a process exited: `sched_process_exit` with `group_dead`.
    Exit = 3,
    /// A monitored system call and its result, seen at `sys_exit_*` with the arguments it had.
    Syscall = 4,
    /// The allow-listed environment variables of an `execve`/`execveat` call, at syscall
    /// entry: sent only when the call's environment holds one of them.
    ExecEnv = 5,
}

impl EventKind {
    /// Every kind, in discriminant order.
    pub const ALL: [EventKind; 6] = [
        Self::Fork,
        Self::Exec,
        Self::ExecArgs,
        Self::Exit,
        Self::Syscall,
        Self::ExecEnv,
    ];
    /// Number of kinds: the stride of the per-kind counters.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The kind for a raw discriminant read from a record, if it is one.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            0 => Some(Self::Fork),
            1 => Some(Self::Exec),
            2 => Some(Self::ExecArgs),
            3 => Some(Self::Exit),
            4 => Some(Self::Syscall),
            5 => Some(Self::ExecEnv),
            _ => None,
        }
    }

    /// A stable lower-case name, used in logs, status and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fork => "fork",
            Self::Exec => "exec",
            Self::ExecArgs => "exec_args",
            Self::Exit => "exit",
            Self::Syscall => "syscall",
            Self::ExecEnv => "exec_env",
        }
    }
}

/// Flags a record may carry in [`RecordHeader::flags`].
pub mod flags {
    /// The argument vector had more arguments, or more bytes, than the record holds.
    pub const ARGV_TRUNCATED: u16 = 1 << 0;
    /// At least one argument was cut at the per-argument limit.
    pub const ARG_TRUNCATED: u16 = 1 << 1;
    /// Reading the argument vector from user memory failed part-way (page not resident).
    pub const ARGV_UNREADABLE: u16 = 1 << 2;
    /// The file name was longer than [`crate::limits::FILENAME_LEN`].
    pub const FILENAME_TRUNCATED: u16 = 1 << 3;
    /// A path of a syscall record was longer than [`crate::limits::PATH_CAP`].
    pub const PATH_TRUNCATED: u16 = 1 << 4;
    /// The executed file's inode has no links: a deleted file or a memfd (fileless exec).
    pub const EXE_UNLINKED: u16 = 1 << 5;
    /// The executed file is a memfd (its dentry is named `memfd:...`).
    pub const EXE_MEMFD: u16 = 1 << 6;
    /// A read-only open kept because its file name is in the sensitive set.
    pub const SENSITIVE_READ: u16 = 1 << 7;
    /// The exec hit the in-kernel blocklist: the process was sent SIGKILL before its first
    /// user instruction.
    pub const EXEC_BLOCKED: u16 = 1 << 8;
    /// The environment had more variables than [`crate::limits::ENV_SCAN`], or the
    /// allow-listed ones more bytes than [`crate::limits::ENV_CAP`]: some were not looked at.
    pub const ENV_TRUNCATED: u16 = 1 << 9;
}

/// Version of this ABI; bumped whenever a record layout changes.
pub const ABI_VERSION: u16 = 5;

/// The first bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// An [`EventKind`] discriminant.
    pub kind: u16,
    /// [`ABI_VERSION`] of the writer.
    pub abi: u16,
    /// Bit set of [`flags`].
    pub flags: u16,
    pub _pad: u16,
    /// CLOCK_BOOTTIME nanoseconds when the kernel saw the event.
    pub boot_ns: u64,
}
