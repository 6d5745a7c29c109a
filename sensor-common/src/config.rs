//! Configuration the loader writes into the kernel programs before load (a read-only global):
//! the sensor's own pid and the kernel layout facts the programs need, resolved at start-up
//! from BTF and tracefs rather than compiled in, so one object runs on every kernel.

/// Byte offsets of `task_struct` and `cred` members, from `/sys/kernel/btf/vmlinux`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskLayout {
    pub pid: u32,
    pub tgid: u32,
    pub real_parent: u32,
    pub group_leader: u32,
    pub start_boottime: u32,
    pub exit_code: u32,
    pub cred: u32,
    pub comm: u32,
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
}

/// A tracepoint field offset that some kernels lack.
pub const FIELD_ABSENT: u32 = u32::MAX;

/// Byte offsets of the tracepoint fields the programs read, from
/// `/sys/kernel/tracing/events/*/*/format`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointLayout {
    /// `sched_process_exec`: `__data_loc char[] filename`.
    pub exec_filename: u32,
    /// `sched_process_exec`: `pid_t old_pid`.
    pub exec_old_pid: u32,
    /// `sched_process_exit`: `bool group_dead`, or [`FIELD_ABSENT`] on kernels before it existed.
    pub exit_group_dead: u32,
    /// `sys_enter_execve`: `const char *const *argv`.
    pub execve_argv: u32,
    /// `sys_enter_execveat`: `const char *const *argv`.
    pub execveat_argv: u32,
}

/// Everything the kernel programs are told at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// The sensor's own process id: its activity is filtered (and counted) in the kernel.
    pub sensor_tgid: u32,
    /// Records are written without waking userspace (it drains on a short timer), unless the
    /// ring holds at least this many unread bytes: then the writer wakes it, so a burst is
    /// drained before it overflows. A wake-up costs ~10 us in a VM; a silent write ~1 us.
    pub wakeup_bytes: u32,
    pub task: TaskLayout,
    pub tracepoints: TracepointLayout,
}

impl KernelConfig {
    /// An all-zero configuration: the value compiled into the object, always overridden.
    pub const fn zeroed() -> Self {
        Self {
            sensor_tgid: 0,
            wakeup_bytes: 0,
            task: TaskLayout {
                pid: 0,
                tgid: 0,
                real_parent: 0,
                group_leader: 0,
                start_boottime: 0,
                exit_code: 0,
                cred: 0,
                comm: 0,
                cred_uid: 0,
                cred_gid: 0,
                cred_euid: 0,
                cred_egid: 0,
            },
            tracepoints: TracepointLayout {
                exec_filename: 0,
                exec_old_pid: 0,
                exit_group_dead: 0,
                execve_argv: 0,
                execveat_argv: 0,
            },
        }
    }
}

// SAFETY: plain `#[repr(C)]` data made of u32s, no padding holes, valid for any bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelConfig {}
