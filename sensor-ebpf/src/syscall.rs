//! Monitored system calls: arguments saved at `sys_enter_*`, the record built at `sys_exit_*`
//! with the result, so failed attempts are events too. User strings and addresses are read at
//! exit, when the kernel has just read them and their pages are resident.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_user,
        generated::bpf_probe_read_user_str,
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use sensor_common::{
    limits::{PATH_CAP, SENSITIVE_NAME_LEN, SHORT_STR},
    record::{EventKind, flags},
    stats::Counter,
    syscall::{PendingSyscall, Syscall, SyscallHead, SyscallRecord},
};

use crate::{
    files::{fd_file, fill_socket, inode_id},
    maps::{EVENTS, config, count, header, is_own, wakeup},
    task::current_task_lean,
};

const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const BPF_PROG_LOAD: u64 = 5;
/// Bytes of a path scanned for its file name when checking the sensitive set.
const NAME_SCAN: usize = 256;

/// Arguments of calls in flight, per thread. LRU, so a thread killed inside a call cannot
/// leak its entry.
#[map]
static PENDING: LruHashMap<u64, PendingSyscall> = LruHashMap::with_max_entries(16384, 0);

#[map]
static SYSCALL_SCRATCH: PerCpuArray<SyscallRecord> = PerCpuArray::with_max_entries(1, 0);

/// File names whose read-only opens are reported (shadow, sudoers, SSH private keys...):
/// zero-padded to [`SENSITIVE_NAME_LEN`]. Filled by the loader.
#[map]
static SENSITIVE_NAMES: HashMap<[u8; SENSITIVE_NAME_LEN], u8> = HashMap::with_max_entries(256, 0);

/// Scratch for the sensitive-name check: the path, then the zero-padded name.
#[map]
static NAME_SCRATCH: PerCpuArray<[u8; NAME_SCAN + SENSITIVE_NAME_LEN]> =
    PerCpuArray::with_max_entries(1, 0);

/// Whether the file name (last path component) of the user path `path` is in the set.
///
/// Names in the set are shorter than [`SENSITIVE_NAME_LEN`], so only the last
/// `SENSITIVE_NAME_LEN` bytes are searched (backwards) for the last `/`: a short loop that
/// stops at the first hit keeps the verifier's work small.
#[inline(always)]
fn is_sensitive(path: u64) -> bool {
    let Some(buf) = NAME_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `buf` is this CPU's scratch of NAME_SCAN + SENSITIVE_NAME_LEN bytes; every
    // index is masked below NAME_SCAN and every copy is at most SENSITIVE_NAME_LEN long.
    unsafe {
        let buf = buf.cast::<u8>();
        let n = bpf_probe_read_user_str(buf.cast(), NAME_SCAN as u32, path as *const _);
        if n <= 1 || n as usize >= NAME_SCAN {
            return false;
        }
        let len = (n - 1) as usize;
        let mut start = 0usize;
        let mut k = 1usize;
        while k <= SENSITIVE_NAME_LEN {
            if k > len {
                break;
            }
            let idx = len - k;
            if *buf.add(idx & (NAME_SCAN - 1)) == b'/' {
                start = idx + 1;
                break;
            }
            k += 1;
        }
        let name_len = len - start;
        if name_len == 0 || name_len >= SENSITIVE_NAME_LEN {
            return false;
        }
        let key = buf.add(NAME_SCAN);
        core::ptr::write_bytes(key, 0, SENSITIVE_NAME_LEN);
        let copied = aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            key.cast(),
            (name_len & (SENSITIVE_NAME_LEN - 1)) as u32,
            buf.add(start & (NAME_SCAN - 1)).cast(),
        );
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "look the key up in place in scratch space, not as a copy on the 512-byte stack"
        )]
        let hit = SENSITIVE_NAMES
            .get_ptr(&*key.cast::<[u8; SENSITIVE_NAME_LEN]>())
            .is_some();
        copied == 0 && hit
    }
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext, sys: Syscall) {
    if is_own(EventKind::Syscall) {
        return;
    }
    let base = config().tracepoints.syscall_args as usize;
    // SAFETY: bounded probe read of the tracepoint record.
    let Ok(mut args) = (unsafe { ctx.read_at::<[u64; 6]>(base) }) else {
        return;
    };
    let mut fl = 0u16;
    let open = match sys {
        Syscall::Open => Some((args[0], args[1])),
        Syscall::Openat => Some((args[1], args[2])),
        Syscall::Creat => Some((args[0], O_CREAT | O_WRONLY | O_TRUNC)),
        Syscall::Openat2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            // SAFETY: probe reads of user memory.
            let how = args[2] as *const u64;
            let oflags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
            let mode = unsafe { bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
            args[2] = oflags;
            args[3] = mode;
            Some((args[1], oflags))
        }
        _ => None,
    };
    if let Some((path, oflags)) = open
        && oflags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) == 0
    {
        if !is_sensitive(path) {
            count(EventKind::Syscall, Counter::Filtered);
            return;
        }
        fl |= flags::SENSITIVE_READ;
    }
    let pending = PendingSyscall {
        args,
        syscall: sys as u16,
        flags: fl,
        _pad: 0,
    };
    let _ = PENDING.insert(bpf_get_current_pid_tgid(), pending, 0);
}

/// Reads a user string into `dst` (at most PATH_CAP bytes); its length without the NUL.
#[inline(always)]
unsafe fn user_path(dst: *mut u8, src: u64, fl: &mut u16) -> u16 {
    if src == 0 {
        return 0;
    }
    // SAFETY: the caller passes PATH_CAP bytes of scratch at `dst`.
    let n = unsafe { bpf_probe_read_user_str(dst.cast(), PATH_CAP as u32, src as *const _) };
    if n <= 1 {
        return 0;
    }
    if n as usize >= PATH_CAP {
        *fl |= flags::PATH_TRUNCATED;
    }
    (n - 1) as u16
}

/// Reads a user `struct sockaddr`: family, port and address, into the local (`bind`) or
/// remote (`connect`) side. A UNIX socket's path goes to `path1` when that is free.
#[inline(always)]
unsafe fn user_sockaddr(rec: *mut SyscallRecord, addr: u64, local: bool, fl: &mut u16) {
    if addr == 0 {
        return;
    }
    // SAFETY: probe reads of user memory; writes into the caller's scratch record.
    unsafe {
        let head = &raw mut (*rec).head;
        let base = addr as *const u8;
        let family: u16 = bpf_probe_read_user(base.cast()).unwrap_or(0);
        let port = u16::from_be(bpf_probe_read_user(base.add(2).cast()).unwrap_or(0));
        let (addr_out, port_out) = if local {
            (&raw mut (*head).local_addr, &raw mut (*head).local_port)
        } else {
            (&raw mut (*head).remote_addr, &raw mut (*head).remote_port)
        };
        match family {
            AF_INET => {
                let a: [u8; 4] = bpf_probe_read_user(base.add(4).cast()).unwrap_or([0; 4]);
                addr_out.write([0; 16]);
                addr_out.cast::<[u8; 4]>().write(a);
                port_out.write(port);
                (*head).sock_family = family;
            }
            AF_INET6 => {
                addr_out.write(bpf_probe_read_user(base.add(8).cast()).unwrap_or([0; 16]));
                port_out.write(port);
                (*head).sock_family = family;
            }
            AF_UNIX if (*head).path1_len == 0 => {
                let data = (&raw mut (*rec).data).cast::<u8>();
                (*head).path1_len = user_path(data, addr + 2, fl);
                (*head).sock_family = family;
            }
            _ => {}
        }
    }
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, sys: Syscall) {
    let id = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING.get_ptr(id) else {
        return;
    };
    // SAFETY: the entry is valid until removed; copy it out first.
    let p = unsafe { *pending };
    let _ = PENDING.remove(id);
    if p.syscall != sys as u16 {
        return;
    }
    let Some(rec) = SYSCALL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `rec` is this CPU's scratch record; user memory is probe-read; path writes
    // stay within `data` (path1 at 0, path2 at PATH_CAP, each at most PATH_CAP bytes).
    unsafe {
        let ret: i64 = ctx
            .read_at(config().tracepoints.syscall_ret as usize)
            .unwrap_or(0);
        let task = bpf_get_current_task() as *const u8;
        let head = &raw mut (*rec).head;
        core::ptr::write_bytes(head.cast::<u8>(), 0, core::mem::size_of::<SyscallHead>());
        (*head).task = current_task_lean(task);
        (*head).ret = ret;
        (*head).args = p.args;
        (*head).syscall = sys as u16;
        let a = p.args;
        let mut fl = p.flags;
        let data = (&raw mut (*rec).data).cast::<u8>();

        let (path1, path2) = match sys {
            Syscall::Open
            | Syscall::Creat
            | Syscall::Unlink
            | Syscall::Chmod
            | Syscall::Chown
            | Syscall::Lchown
            | Syscall::MemfdCreate => (a[0], 0),
            Syscall::Openat
            | Syscall::Openat2
            | Syscall::Unlinkat
            | Syscall::Fchmodat
            | Syscall::Fchownat
            | Syscall::FinitModule => (a[1], 0),
            Syscall::Rename => (a[0], a[1]),
            Syscall::Renameat | Syscall::Renameat2 => (a[1], a[3]),
            Syscall::InitModule => (a[2], 0),
            Syscall::Mount => (a[1], a[0]),
            _ => (0, 0),
        };
        (*head).path1_len = user_path(data, path1, &mut fl);
        (*head).path2_len = user_path(data.add(PATH_CAP), path2, &mut fl);

        // The file behind an fd argument or result.
        let file_fd = match sys {
            Syscall::Open | Syscall::Openat | Syscall::Openat2 | Syscall::Creat if ret >= 0 => {
                ret as u64
            }
            Syscall::Fchmod | Syscall::Fchown | Syscall::FinitModule => a[0],
            _ => u64::MAX,
        };
        if file_fd != u64::MAX {
            let inode = inode_id(fd_file(task, file_fd));
            (*head).inode = inode.ino;
            (*head).dev = inode.dev;
            (*head).file_mode = inode.mode;
        }

        match sys {
            Syscall::Connect => {
                fill_socket(fd_file(task, a[0]), head);
                user_sockaddr(rec, a[1], false, &mut fl);
            }
            Syscall::Bind => {
                // What was asked for; on success the socket's state (the port the kernel
                // chose for port 0) wins.
                user_sockaddr(rec, a[1], true, &mut fl);
                if ret == 0 {
                    fill_socket(fd_file(task, a[0]), head);
                }
            }
            Syscall::Listen => fill_socket(fd_file(task, a[0]), head),
            Syscall::Accept | Syscall::Accept4 if ret >= 0 => {
                fill_socket(fd_file(task, ret as u64), head);
            }
            Syscall::Mount => {
                let _ = bpf_probe_read_user_str(
                    (&raw mut (*head).extra).cast(),
                    SHORT_STR as u32,
                    a[2] as *const _,
                );
            }
            Syscall::Bpf if a[0] == BPF_PROG_LOAD => {
                let prog_type: u32 = bpf_probe_read_user(a[1] as *const u32).unwrap_or(u32::MAX);
                (&raw mut (*head).extra)
                    .cast::<u32>()
                    .write_unaligned(prog_type);
            }
            Syscall::Capset => {
                // struct __user_cap_data_struct { effective, permitted, inheritable }
                let sets: [u8; 12] =
                    bpf_probe_read_user(a[1] as *const [u8; 12]).unwrap_or([0; 12]);
                (&raw mut (*head).extra).cast::<[u8; 12]>().write(sets);
            }
            _ => {}
        }
        (*head).header = header(EventKind::Syscall, fl);

        let p1 = (*head).path1_len as usize;
        let p2 = (*head).path2_len as usize;
        let data_len = if p2 > 0 { PATH_CAP + p2 } else { p1 };
        let data_len = if data_len > 2 * PATH_CAP {
            2 * PATH_CAP
        } else {
            data_len
        };
        let total = core::mem::size_of::<SyscallHead>() + data_len;
        let bytes = core::slice::from_raw_parts(rec.cast::<u8>(), total);
        if EVENTS.output::<[u8]>(bytes, wakeup()).is_err() {
            count(EventKind::Syscall, Counter::RingFull);
        }
    }
}

/// One enter and one exit program per call.
macro_rules! hooks {
    ($($sys:ident => $enter:ident, $exit:ident;)*) => {$(
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            on_enter(&ctx, Syscall::$sys);
            0
        }
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            on_exit(&ctx, Syscall::$sys);
            0
        }
    )*};
}

hooks! {
    Open => vigil_enter_open, vigil_exit_open;
    Openat => vigil_enter_openat, vigil_exit_openat;
    Openat2 => vigil_enter_openat2, vigil_exit_openat2;
    Creat => vigil_enter_creat, vigil_exit_creat;
    Unlink => vigil_enter_unlink, vigil_exit_unlink;
    Unlinkat => vigil_enter_unlinkat, vigil_exit_unlinkat;
    Rename => vigil_enter_rename, vigil_exit_rename;
    Renameat => vigil_enter_renameat, vigil_exit_renameat;
    Renameat2 => vigil_enter_renameat2, vigil_exit_renameat2;
    Chmod => vigil_enter_chmod, vigil_exit_chmod;
    Fchmod => vigil_enter_fchmod, vigil_exit_fchmod;
    Fchmodat => vigil_enter_fchmodat, vigil_exit_fchmodat;
    Chown => vigil_enter_chown, vigil_exit_chown;
    Lchown => vigil_enter_lchown, vigil_exit_lchown;
    Fchown => vigil_enter_fchown, vigil_exit_fchown;
    Fchownat => vigil_enter_fchownat, vigil_exit_fchownat;
    Connect => vigil_enter_connect, vigil_exit_connect;
    Accept => vigil_enter_accept, vigil_exit_accept;
    Accept4 => vigil_enter_accept4, vigil_exit_accept4;
    Bind => vigil_enter_bind, vigil_exit_bind;
    Listen => vigil_enter_listen, vigil_exit_listen;
    Setuid => vigil_enter_setuid, vigil_exit_setuid;
    Setgid => vigil_enter_setgid, vigil_exit_setgid;
    Setreuid => vigil_enter_setreuid, vigil_exit_setreuid;
    Setregid => vigil_enter_setregid, vigil_exit_setregid;
    Setresuid => vigil_enter_setresuid, vigil_exit_setresuid;
    Setresgid => vigil_enter_setresgid, vigil_exit_setresgid;
    Capset => vigil_enter_capset, vigil_exit_capset;
    Ptrace => vigil_enter_ptrace, vigil_exit_ptrace;
    InitModule => vigil_enter_init_module, vigil_exit_init_module;
    FinitModule => vigil_enter_finit_module, vigil_exit_finit_module;
    Bpf => vigil_enter_bpf, vigil_exit_bpf;
    MemfdCreate => vigil_enter_memfd_create, vigil_exit_memfd_create;
    Mount => vigil_enter_mount, vigil_exit_mount;
    Kill => vigil_enter_kill, vigil_exit_kill;
}
