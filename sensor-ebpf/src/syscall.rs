//! Monitored system calls, each seen once, at `sys_exit_*`: the result from the tracepoint, so
//! failed attempts are events too, and the arguments from the registers the kernel saved at
//! entry (`struct pt_regs`, offsets from BTF), so nothing runs at entry. User strings and
//! addresses are read at exit, when the kernel has just read them and their pages are resident.
//!
//! Repeats are coalesced here (see [`repeat`]): a thread that opens the same file for writing,
//! connects to the same peer or accepts from the same address again, with the same result,
//! within `coalesce_ms` of the last one delivered, is counted rather than delivered.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        bpf_probe_read_user,
        generated::{
            bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user_str,
            bpf_task_pt_regs,
        },
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use sensor_common::{
    config::REGS_SPAN_MAX,
    limits::{EXTRA_LEN, PATH_CAP, SENSITIVE_NAME_LEN, SHORT_STR},
    record::{EventKind, flags},
    stats::Counter,
    syscall::{
        FS_IOC_FSSETXATTR, FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS, PR_SET_NAME, Syscall, SyscallHead,
        SyscallRecord,
    },
};

use crate::{
    files::{dentry_name_into, fd_file, file_inode, fill_socket, inode_id},
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
/// `BPF_PROG_GET_FD_BY_ID`, `BPF_MAP_GET_FD_BY_ID`, `BPF_LINK_GET_FD_BY_ID`: a handle on an
/// object another process made (the sensor's own, when someone tampers with it).
const BPF_PROG_GET_FD_BY_ID: u64 = 13;
const BPF_MAP_GET_FD_BY_ID: u64 = 14;
const BPF_LINK_GET_FD_BY_ID: u64 = 30;
/// Bytes of a path scanned for its file name when checking the sensitive set.
const NAME_SCAN: usize = 256;
const REGS_WORDS: usize = REGS_SPAN_MAX as usize / 8;

#[map]
static SYSCALL_SCRATCH: PerCpuArray<SyscallRecord> = PerCpuArray::with_max_entries(1, 0);

/// The saved argument registers, read in one go.
#[map]
static REGS_SCRATCH: PerCpuArray<[u64; REGS_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// What makes two calls the same for coalescing: the thread (its `task_struct` and pid, so a
/// reused pid is a new thread), its real ids, and what the call did (`what`, per call).
#[repr(C)]
#[derive(Clone, Copy)]
struct RepeatKey {
    task: u64,
    pid_tgid: u64,
    uid_gid: u64,
    what: [u64; 4],
}

/// When a call like it was last delivered, and how many were counted since.
#[repr(C)]
#[derive(Clone, Copy)]
struct RepeatSeen {
    delivered_ns: u64,
    since: u64,
}

/// LRU: an evicted entry only means its next repeat is delivered.
#[map]
static REPEATS: LruHashMap<RepeatKey, RepeatSeen> = LruHashMap::with_max_entries(16384, 0);

/// Scratch for building a [`RepeatKey`] off the stack.
#[map]
static REPEAT_KEY: PerCpuArray<RepeatKey> = PerCpuArray::with_max_entries(1, 0);

/// What to do with a call.
enum Repeat {
    /// Deliver it, with the number of repeats counted since the last one delivered.
    Deliver(u32),
    /// A repeat within the window: counted, not delivered.
    Coalesced,
}

/// Whether the current thread made a call the same as `what` (same result included) less than
/// `coalesce_ms` ago. The first of a run is delivered, then at most one per window, carrying the
/// number coalesced before it; every coalesced call is counted in `STATS` as well.
#[inline(always)]
fn repeat(what: [u64; 4]) -> Repeat {
    let window_ns = u64::from(config().coalesce_ms) * 1_000_000;
    if window_ns == 0 {
        return Repeat::Deliver(0);
    }
    let Some(key) = REPEAT_KEY.get_ptr_mut(0) else {
        return Repeat::Deliver(0);
    };
    // SAFETY: `key` is this CPU's scratch; the map entry is valid while this program runs.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "look the key up in place in scratch space, not as a copy on the 512-byte stack"
    )]
    unsafe {
        key.write(RepeatKey {
            task: bpf_get_current_task(),
            pid_tgid: bpf_get_current_pid_tgid(),
            uid_gid: bpf_get_current_uid_gid(),
            what,
        });
        let now = bpf_ktime_get_ns();
        if let Some(seen) = REPEATS.get_ptr_mut(&*key) {
            if now.wrapping_sub((*seen).delivered_ns) < window_ns {
                (*seen).since += 1;
                count(EventKind::Syscall, Counter::Coalesced);
                return Repeat::Coalesced;
            }
            let since = (*seen).since;
            (*seen).delivered_ns = now;
            (*seen).since = 0;
            return Repeat::Deliver(u32::try_from(since).unwrap_or(u32::MAX));
        }
        let _ = REPEATS.insert(
            &*key,
            RepeatSeen {
                delivered_ns: now,
                since: 0,
            },
            0,
        );
    }
    Repeat::Deliver(0)
}

/// The call's six arguments, from the registers saved at entry.
#[inline(always)]
fn syscall_args() -> Option<[u64; 6]> {
    let l = &config().regs;
    let regs_buf = REGS_SCRATCH.get_ptr_mut(0)?;
    let len = l.span_len;
    if len == 0 || len > REGS_SPAN_MAX {
        return None;
    }
    // SAFETY: the helper returns the current task's saved registers (never null for a task in
    // a syscall); the probe read copies at most REGS_SPAN_MAX bytes into the scratch, and every
    // word index is masked into it.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        let rc =
            bpf_probe_read_kernel(regs_buf.cast(), len, regs.add(l.span_start as usize).cast());
        if rc != 0 {
            return None;
        }
        let words = &*regs_buf;
        let w = |i: usize| words[l.arg_word[i] as usize & (REGS_WORDS - 1)];
        Some([w(0), w(1), w(2), w(3), w(4), w(5)])
    }
}

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
        // Most paths end in a byte no sensitive name ends in: dropped here, before the scan.
        let last = *buf.add((len - 1) & (NAME_SCAN - 1));
        if config().sensitive_last[usize::from(last / 32)] & (1 << (last % 32)) == 0 {
            return false;
        }
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

/// For an open: the user path and the flags it asked for. `args` becomes, for `openat2`, the
/// `open_how` flags and mode in place of its pointer and size, as userspace reads them.
#[inline(always)]
fn open_flags(sys: Syscall, args: &mut [u64; 6]) -> Option<(u64, u64)> {
    match sys {
        Syscall::Open => Some((args[0], args[1])),
        Syscall::Openat => Some((args[1], args[2])),
        Syscall::Creat => Some((args[0], O_CREAT | O_WRONLY | O_TRUNC)),
        Syscall::Openat2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how = args[2] as *const u64;
            // SAFETY: probe reads of user memory.
            let oflags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
            // SAFETY: as above.
            let mode = unsafe { bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
            args[2] = oflags;
            args[3] = mode;
            Some((args[1], oflags))
        }
        _ => None,
    }
}

/// What makes a connect or accept the same as an earlier one: the peer's family and address
/// (and, for connect, its port), read from the call's `sockaddr`. None for other families or
/// when there is no address to read (then the call is always delivered).
#[inline(always)]
fn peer_identity(addr: u64, with_port: bool) -> Option<[u64; 3]> {
    if addr == 0 {
        return None;
    }
    let base = addr as *const u8;
    // SAFETY: probe reads of user memory.
    unsafe {
        let head: [u16; 2] = bpf_probe_read_user(base.cast()).ok()?;
        let (family, port) = (head[0], if with_port { head[1] } else { 0 });
        let tag = u64::from(family) | (u64::from(port) << 16);
        match family {
            AF_INET => {
                let a: u32 = bpf_probe_read_user(base.add(4).cast()).ok()?;
                Some([tag, u64::from(a), 0])
            }
            AF_INET6 => {
                let a: [u64; 2] = bpf_probe_read_user(base.add(8).cast()).ok()?;
                Some([tag, a[0], a[1]])
            }
            _ => None,
        }
    }
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, sys: Syscall) {
    if is_own(EventKind::Syscall) {
        return;
    }
    let Some(mut args) = syscall_args() else {
        return;
    };
    // Of prctl and ioctl, only what is monitored: a process (its leader thread) renaming
    // itself, and inode flags set (chattr). Other calls are not events at all, not drops.
    match sys {
        Syscall::Prctl if args[0] != PR_SET_NAME || !is_leader() => return,
        Syscall::Ioctl
            if !matches!(
                args[1] & 0xffff_ffff,
                FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS | FS_IOC_FSSETXATTR
            ) =>
        {
            return;
        }
        // Signals inside the caller's own thread group (a runtime preempting or waking its
        // threads, `raise`, `abort`) are not events.
        Syscall::Tgkill if args[0] as u32 == (bpf_get_current_pid_tgid() >> 32) as u32 => {
            return;
        }
        Syscall::Tkill if args[0] as u32 == bpf_get_current_pid_tgid() as u32 => return,
        _ => {}
    }
    // SAFETY: bounded probe read of the tracepoint record.
    let ret: i64 = unsafe { ctx.read_at(config().tracepoints.syscall_ret as usize) }.unwrap_or(0);
    let mut fl = 0u16;

    // Read-only opens are dropped unless the file is sensitive; repeats of an open of the same
    // inode with the same flags by the same thread are coalesced.
    if let Some((path, oflags)) = open_flags(sys, &mut args) {
        if oflags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) == 0 {
            if !is_sensitive(path) {
                count(EventKind::Syscall, Counter::Filtered);
                return;
            }
            fl |= flags::SENSITIVE_READ;
        }
        let mut inode: *const u8 = core::ptr::null();
        let mut repeats = 0;
        if ret >= 0 {
            // SAFETY: the current task pointer is valid while this program runs.
            let task = unsafe { bpf_get_current_task() } as *const u8;
            inode = file_inode(fd_file(task, ret as u64));
            if !inode.is_null() {
                match repeat([sys as u64, oflags, inode as u64, 0]) {
                    Repeat::Coalesced => return,
                    Repeat::Deliver(n) => repeats = n,
                }
            }
        }
        deliver(sys, ret, args, fl, inode, repeats);
        return;
    }

    // Connects to the same peer, accepts from the same address on the same listening fd, and
    // failed accepts on it (a non-blocking server's EAGAIN), each with the same result.
    let tag = sys as u64 | ((ret as u64) << 16);
    let accept = matches!(sys, Syscall::Accept | Syscall::Accept4);
    let seen = match sys {
        Syscall::Connect => peer_identity(args[1], true).map(|p| repeat([tag, p[0], p[1], p[2]])),
        _ if accept && ret < 0 => Some(repeat([tag, args[0], 0, 0])),
        _ if accept => peer_identity(args[1], false)
            .map(|p| repeat([sys as u64 | (args[0] << 16), p[0], p[1], p[2]])),
        _ => None,
    };
    match seen {
        Some(Repeat::Coalesced) => {}
        Some(Repeat::Deliver(n)) => deliver(sys, ret, args, fl, core::ptr::null(), n),
        None => deliver(sys, ret, args, fl, core::ptr::null(), 0),
    }
}

/// The calling thread is its process's leader (its rename is the process's name in `ps`).
#[inline(always)]
fn is_leader() -> bool {
    let id = bpf_get_current_pid_tgid();
    id as u32 == (id >> 32) as u32
}

/// Copies `len` (at most [`EXTRA_LEN`]) bytes of user memory at `src` into `extra`.
#[inline(always)]
unsafe fn user_extra(head: *mut SyscallHead, src: u64, len: u64) {
    if src == 0 || len == 0 {
        return;
    }
    let n = if len > EXTRA_LEN as u64 {
        EXTRA_LEN as u32
    } else {
        len as u32
    };
    // SAFETY: probe read of at most EXTRA_LEN bytes into the record's `extra`.
    unsafe {
        let _ = aya_ebpf::helpers::generated::bpf_probe_read_user(
            (&raw mut (*head).extra).cast(),
            n & (EXTRA_LEN as u32 * 2 - 1),
            src as *const _,
        );
    }
}

/// Builds and sends the record of a call. `opened` is the inode of the file an open returned
/// (null when it failed or the call is not an open).
#[inline(always)]
fn deliver(sys: Syscall, ret: i64, a: [u64; 6], mut fl: u16, opened: *const u8, repeats: u32) {
    let Some(rec) = SYSCALL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `rec` is this CPU's scratch record; user memory is probe-read; path writes
    // stay within `data` (path1 at 0, path2 at PATH_CAP, each at most PATH_CAP bytes).
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let head = &raw mut (*rec).head;
        core::ptr::write_bytes(head.cast::<u8>(), 0, core::mem::size_of::<SyscallHead>());
        (*head).task = current_task_lean(task);
        (*head).ret = ret;
        (*head).args = a;
        (*head).syscall = sys as u16;
        (*head).repeats = repeats;
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
            Syscall::Rename
            | Syscall::Setxattr
            | Syscall::Lsetxattr
            | Syscall::Removexattr
            | Syscall::Lremovexattr => (a[0], a[1]),
            Syscall::Fsetxattr | Syscall::Fremovexattr => (0, a[1]),
            Syscall::Utimes => (a[0], 0),
            Syscall::Utimensat | Syscall::Futimesat => (a[1], 0),
            Syscall::Renameat | Syscall::Renameat2 => (a[1], a[3]),
            Syscall::InitModule => (a[2], 0),
            Syscall::Mount => (a[1], a[0]),
            _ => (0, 0),
        };
        (*head).path1_len = user_path(data, path1, &mut fl);
        (*head).path2_len = user_path(data.add(PATH_CAP), path2, &mut fl);

        // The file behind an fd argument or result; for the fd-only calls below, its name
        // (the last component) too, in case the process is gone before userspace can ask
        // /proc for the whole path.
        let fd_only = match sys {
            Syscall::Fsetxattr | Syscall::Fremovexattr | Syscall::Ioctl => true,
            Syscall::Utimensat => a[1] == 0,
            _ => false,
        };
        let inode = match sys {
            Syscall::Open | Syscall::Openat | Syscall::Openat2 | Syscall::Creat => opened,
            Syscall::Fchmod | Syscall::Fchown | Syscall::FinitModule => {
                file_inode(fd_file(task, a[0]))
            }
            _ if fd_only => {
                let f = fd_file(task, a[0]);
                (*head).path1_len = dentry_name_into(f, data, PATH_CAP as u32);
                file_inode(f)
            }
            _ => core::ptr::null(),
        };
        if !inode.is_null() {
            let inode = inode_id(inode);
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
            Syscall::Bpf
                if matches!(
                    a[0],
                    BPF_PROG_GET_FD_BY_ID | BPF_MAP_GET_FD_BY_ID | BPF_LINK_GET_FD_BY_ID
                ) =>
            {
                // The id asked for: the first u32 of the attr for each of these commands.
                let id: u32 = bpf_probe_read_user(a[1] as *const u32).unwrap_or(0);
                (&raw mut (*head).extra).cast::<u32>().write_unaligned(id);
            }
            Syscall::Bpf if a[0] == BPF_PROG_LOAD => {
                let prog_type: u32 = bpf_probe_read_user(a[1] as *const u32).unwrap_or(u32::MAX);
                (&raw mut (*head).extra)
                    .cast::<u32>()
                    .write_unaligned(prog_type);
            }
            Syscall::Setxattr | Syscall::Lsetxattr | Syscall::Fsetxattr => {
                user_extra(head, a[2], a[3]);
            }
            Syscall::Utimensat | Syscall::Futimesat => user_extra(head, a[2], 32),
            Syscall::Utimes => user_extra(head, a[1], 32),
            Syscall::Ioctl => user_extra(head, a[2], 4),
            Syscall::Prctl => {
                let _ = bpf_probe_read_user_str(
                    (&raw mut (*head).extra).cast(),
                    SHORT_STR as u32,
                    a[1] as *const _,
                );
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
        // The hot calls wait for userspace's poll; the rare ones wake it at once.
        let hot = matches!(
            sys,
            Syscall::Open
                | Syscall::Openat
                | Syscall::Openat2
                | Syscall::Creat
                | Syscall::Connect
                | Syscall::Accept
                | Syscall::Accept4
                | Syscall::Bind
                | Syscall::Listen
                | Syscall::Unlink
                | Syscall::Unlinkat
                | Syscall::Utimensat
                | Syscall::Kill
                | Syscall::Tkill
                | Syscall::Tgkill
                | Syscall::PidfdOpen
                | Syscall::PidfdSendSignal
        );
        let flags = if hot {
            wakeup()
        } else {
            crate::maps::wakeup_now()
        };
        if EVENTS.output::<[u8]>(bytes, flags).is_err() {
            count(EventKind::Syscall, Counter::RingFull);
        }
    }
}

/// One exit program per call.
macro_rules! hooks {
    ($($sys:ident => $exit:ident;)*) => {$(
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            on_exit(&ctx, Syscall::$sys);
            0
        }
    )*};
}

hooks! {
    Open => vigil_exit_open;
    Openat => vigil_exit_openat;
    Openat2 => vigil_exit_openat2;
    Creat => vigil_exit_creat;
    Unlink => vigil_exit_unlink;
    Unlinkat => vigil_exit_unlinkat;
    Rename => vigil_exit_rename;
    Renameat => vigil_exit_renameat;
    Renameat2 => vigil_exit_renameat2;
    Chmod => vigil_exit_chmod;
    Fchmod => vigil_exit_fchmod;
    Fchmodat => vigil_exit_fchmodat;
    Chown => vigil_exit_chown;
    Lchown => vigil_exit_lchown;
    Fchown => vigil_exit_fchown;
    Fchownat => vigil_exit_fchownat;
    Connect => vigil_exit_connect;
    Accept => vigil_exit_accept;
    Accept4 => vigil_exit_accept4;
    Bind => vigil_exit_bind;
    Listen => vigil_exit_listen;
    Setuid => vigil_exit_setuid;
    Setgid => vigil_exit_setgid;
    Setreuid => vigil_exit_setreuid;
    Setregid => vigil_exit_setregid;
    Setresuid => vigil_exit_setresuid;
    Setresgid => vigil_exit_setresgid;
    Capset => vigil_exit_capset;
    Ptrace => vigil_exit_ptrace;
    InitModule => vigil_exit_init_module;
    FinitModule => vigil_exit_finit_module;
    Bpf => vigil_exit_bpf;
    MemfdCreate => vigil_exit_memfd_create;
    Mount => vigil_exit_mount;
    Kill => vigil_exit_kill;
    Setxattr => vigil_exit_setxattr;
    Lsetxattr => vigil_exit_lsetxattr;
    Fsetxattr => vigil_exit_fsetxattr;
    Removexattr => vigil_exit_removexattr;
    Lremovexattr => vigil_exit_lremovexattr;
    Fremovexattr => vigil_exit_fremovexattr;
    ProcessVmReadv => vigil_exit_process_vm_readv;
    ProcessVmWritev => vigil_exit_process_vm_writev;
    Prctl => vigil_exit_prctl;
    Utimensat => vigil_exit_utimensat;
    Utimes => vigil_exit_utimes;
    Futimesat => vigil_exit_futimesat;
    Ioctl => vigil_exit_ioctl;
    Tkill => vigil_exit_tkill;
    Tgkill => vigil_exit_tgkill;
    PidfdOpen => vigil_exit_pidfd_open;
    PidfdSendSignal => vigil_exit_pidfd_send_signal;
    PidfdGetfd => vigil_exit_pidfd_getfd;
}
