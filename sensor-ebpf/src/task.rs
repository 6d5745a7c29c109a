//! Reading a task's identity from its `task_struct`, at offsets resolved from BTF at load time.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_probe_read_kernel,
};
use sensor_common::{limits::COMM_LEN, process::TaskInfo};

use crate::maps::config;

/// Reads a `T` at `base + off`, or `T::default()` when the read faults.
#[inline(always)]
pub unsafe fn field<T: Default>(base: *const u8, off: u32) -> T {
    // SAFETY: bpf_probe_read_kernel tolerates any address and reports a fault as an error.
    unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<T>()) }.unwrap_or_default()
}

/// The identity, lineage and credentials of `task` (a `struct task_struct *`).
///
/// A process is named by its thread-group leader's start time: the task may be any thread
/// (the last one to exit, or the thread that forked), and so may its `real_parent`.
#[inline(always)]
pub fn task_info(task: *const u8) -> TaskInfo {
    let l = &config().task;
    // SAFETY: `field` only probe-reads; a bad pointer yields zeros, never a fault.
    unsafe {
        let leader: *const u8 = field::<u64>(task, l.group_leader) as *const u8;
        let parent: *const u8 = field::<u64>(task, l.real_parent) as *const u8;
        let parent_leader: *const u8 = field::<u64>(parent, l.group_leader) as *const u8;
        let cred: *const u8 = field::<u64>(task, l.cred) as *const u8;
        TaskInfo {
            start_boot_ns: field(leader, l.start_boottime),
            parent_start_boot_ns: field(parent_leader, l.start_boottime),
            cgroup_id: bpf_get_current_cgroup_id(),
            pid: field(task, l.pid),
            tgid: field(task, l.tgid),
            ppid: field(parent, l.tgid),
            uid: field(cred, l.cred_uid),
            gid: field(cred, l.cred_gid),
            euid: field(cred, l.cred_euid),
            egid: field(cred, l.cred_egid),
            _pad: 0,
            comm: field::<[u8; COMM_LEN]>(task, l.comm),
        }
    }
}

/// The current task's identity and credentials with as few probe reads as possible (4), for
/// the high-rate syscall records: pid, uid and comm come from helpers, and the parent is left
/// out (`ppid` 0) since userspace knows it from the process's own fork or exec.
#[inline(always)]
pub fn current_task_lean(task: *const u8) -> TaskInfo {
    let l = &config().task;
    let id = bpf_get_current_pid_tgid();
    let ugid = bpf_get_current_uid_gid();
    // SAFETY: `field` only probe-reads; a bad pointer yields zeros, never a fault.
    unsafe {
        let leader: *const u8 = field::<u64>(task, l.group_leader) as *const u8;
        let cred: *const u8 = field::<u64>(task, l.cred) as *const u8;
        // euid and egid are adjacent in struct cred: one read for both when they are.
        let (euid, egid) = if l.cred_egid == l.cred_euid + 4 {
            let both: [u32; 2] = field(cred, l.cred_euid);
            (both[0], both[1])
        } else {
            (field(cred, l.cred_euid), field(cred, l.cred_egid))
        };
        TaskInfo {
            start_boot_ns: field(leader, l.start_boottime),
            parent_start_boot_ns: 0,
            cgroup_id: bpf_get_current_cgroup_id(),
            pid: id as u32,
            tgid: (id >> 32) as u32,
            ppid: 0,
            uid: ugid as u32,
            gid: (ugid >> 32) as u32,
            euid,
            egid,
            _pad: 0,
            comm: bpf_get_current_comm().unwrap_or_default(),
        }
    }
}
