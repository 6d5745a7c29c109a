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

/// Byte offsets of the file, fd-table, inode and socket members the syscall programs follow
/// from a task to what an fd refers to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileLayout {
    pub task_files: u32,
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    /// `file.f_path.dentry`.
    pub file_dentry: u32,
    /// `dentry.d_name.name`.
    pub dentry_name: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub inode_rdev: u32,
    pub inode_nlink: u32,
    pub sb_dev: u32,
    pub socket_sk: u32,
    pub sk_family: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_type: u32,
    pub sk_protocol: u32,
}

/// The most bytes of `struct pt_regs` read at once for a syscall's arguments.
pub const REGS_SPAN_MAX: u32 = 128;

/// Where a syscall's six arguments sit in the `struct pt_regs` saved at entry, from BTF. The
/// exit programs read them there (one probe read of `span_len` bytes from `span_start`), so no
/// program runs at syscall entry. Argument `i` is the `arg_word[i]`-th u64 of that span.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegsLayout {
    pub span_start: u32,
    /// At most [`REGS_SPAN_MAX`], a multiple of 8.
    pub span_len: u32,
    pub arg_word: [u32; 6],
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
    /// `sys_enter_execve`: `const char *const *envp`.
    pub execve_envp: u32,
    /// `sys_enter_execveat`: `const char *const *envp`.
    pub execveat_envp: u32,
    /// `sys_exit_*`: `long ret`.
    pub syscall_ret: u32,
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
    /// Repeats of the same write-open, connect or accept by the same thread within this many
    /// milliseconds of the last one delivered are counted in the kernel, not delivered; the
    /// next one delivered carries their number. 0 delivers every one.
    pub coalesce_ms: u32,
    /// Bit `b` is set when a sensitive file name ends in byte `b`: a read-only open whose path
    /// ends otherwise is dropped without looking its name up.
    pub sensitive_last: [u32; 8],
    pub task: TaskLayout,
    pub files: FileLayout,
    pub tracepoints: TracepointLayout,
    pub regs: RegsLayout,
}

impl KernelConfig {
    /// An all-zero configuration: the value compiled into the object, always overridden.
    pub const fn zeroed() -> Self {
        Self {
            sensor_tgid: 0,
            wakeup_bytes: 0,
            coalesce_ms: 0,
            sensitive_last: [0; 8],
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
            files: FileLayout {
                task_files: 0,
                task_mm: 0,
                mm_exe_file: 0,
                files_fdt: 0,
                fdt_fd: 0,
                fdt_max_fds: 0,
                file_inode: 0,
                file_private_data: 0,
                file_dentry: 0,
                dentry_name: 0,
                inode_mode: 0,
                inode_ino: 0,
                inode_sb: 0,
                inode_rdev: 0,
                inode_nlink: 0,
                sb_dev: 0,
                socket_sk: 0,
                sk_family: 0,
                sk_daddr: 0,
                sk_rcv_saddr: 0,
                sk_dport: 0,
                sk_num: 0,
                sk_v6_daddr: 0,
                sk_v6_rcv_saddr: 0,
                sk_type: 0,
                sk_protocol: 0,
            },
            tracepoints: TracepointLayout {
                exec_filename: 0,
                exec_old_pid: 0,
                exit_group_dead: 0,
                execve_argv: 0,
                execveat_argv: 0,
                execve_envp: 0,
                execveat_envp: 0,
                syscall_ret: 0,
            },
            regs: RegsLayout {
                span_start: 0,
                span_len: 0,
                arg_word: [0; 6],
            },
        }
    }
}

// SAFETY: plain `#[repr(C)]` data made of u32s, no padding holes, valid for any bit pattern.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelConfig {}
