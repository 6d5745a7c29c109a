//! Monitored system calls: the catalogue, and the record each enter/exit pair produces.

use crate::{
    limits::{EXTRA_LEN, PATH_CAP},
    process::TaskInfo,
    record::RecordHeader,
};

/// What a syscall record's arguments and paths mean depends on the call.
macro_rules! syscalls {
    ($($(#[$doc:meta])* $variant:ident = $n:literal, $name:literal;)*) => {
        /// Every monitored system call.
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
        pub enum Syscall {
            $($(#[$doc])* $variant = $n,)*
        }

        impl Syscall {
            pub const ALL: &'static [Syscall] = &[$(Syscall::$variant,)*];

            pub const fn from_raw(raw: u16) -> Option<Self> {
                match raw {
                    $($n => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The kernel's name of the call (and of its tracepoints, `sys_enter_NAME`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

syscalls! {
    /// `open(path, flags, mode)`
    Open = 0, "open";
    /// `openat(dirfd, path, flags, mode)`
    Openat = 1, "openat";
    /// `openat2(dirfd, path, how, size)`: flags and mode are copied into args 2 and 3.
    Openat2 = 2, "openat2";
    /// `creat(path, mode)`
    Creat = 3, "creat";
    /// `unlink(path)`
    Unlink = 4, "unlink";
    /// `unlinkat(dirfd, path, flags)`
    Unlinkat = 5, "unlinkat";
    /// `rename(old, new)`
    Rename = 6, "rename";
    /// `renameat(olddirfd, old, newdirfd, new)`
    Renameat = 7, "renameat";
    /// `renameat2(olddirfd, old, newdirfd, new, flags)`
    Renameat2 = 8, "renameat2";
    /// `chmod(path, mode)`
    Chmod = 9, "chmod";
    /// `fchmod(fd, mode)`
    Fchmod = 10, "fchmod";
    /// `fchmodat(dirfd, path, mode)`
    Fchmodat = 11, "fchmodat";
    /// `chown(path, uid, gid)`
    Chown = 12, "chown";
    /// `lchown(path, uid, gid)`
    Lchown = 13, "lchown";
    /// `fchown(fd, uid, gid)`
    Fchown = 14, "fchown";
    /// `fchownat(dirfd, path, uid, gid, flags)`
    Fchownat = 15, "fchownat";
    /// `connect(fd, addr, len)`
    Connect = 16, "connect";
    /// `accept(fd, addr, len)`
    Accept = 17, "accept";
    /// `accept4(fd, addr, len, flags)`
    Accept4 = 18, "accept4";
    /// `bind(fd, addr, len)`
    Bind = 19, "bind";
    /// `listen(fd, backlog)`
    Listen = 20, "listen";
    /// `setuid(uid)`
    Setuid = 21, "setuid";
    /// `setgid(gid)`
    Setgid = 22, "setgid";
    /// `setreuid(ruid, euid)`
    Setreuid = 23, "setreuid";
    /// `setregid(rgid, egid)`
    Setregid = 24, "setregid";
    /// `setresuid(ruid, euid, suid)`
    Setresuid = 25, "setresuid";
    /// `setresgid(rgid, egid, sgid)`
    Setresgid = 26, "setresgid";
    /// `capset(header, data)`: effective/permitted/inheritable (low words) go to `extra`.
    Capset = 27, "capset";
    /// `ptrace(request, pid, addr, data)`
    Ptrace = 28, "ptrace";
    /// `init_module(image, len, params)`
    InitModule = 29, "init_module";
    /// `finit_module(fd, params, flags)`
    FinitModule = 30, "finit_module";
    /// `bpf(cmd, attr, size)`: for BPF_PROG_LOAD the program type goes to `extra`.
    Bpf = 31, "bpf";
    /// `memfd_create(name, flags)`
    MemfdCreate = 32, "memfd_create";
    /// `mount(source, target, fstype, flags, data)`: the fstype goes to `extra`.
    Mount = 33, "mount";
    /// `kill(pid, sig)`
    Kill = 34, "kill";
    /// `setxattr(path, name, value, size, flags)`: the name is `path2`, the value's first
    /// bytes go to `extra`.
    Setxattr = 35, "setxattr";
    /// `lsetxattr(path, name, value, size, flags)`
    Lsetxattr = 36, "lsetxattr";
    /// `fsetxattr(fd, name, value, size, flags)`: the fd's dentry name is `path1`.
    Fsetxattr = 37, "fsetxattr";
    /// `removexattr(path, name)`
    Removexattr = 38, "removexattr";
    /// `lremovexattr(path, name)`
    Lremovexattr = 39, "lremovexattr";
    /// `fremovexattr(fd, name)`
    Fremovexattr = 40, "fremovexattr";
    /// `process_vm_readv(pid, local_iov, liovcnt, remote_iov, riovcnt, flags)`
    ProcessVmReadv = 41, "process_vm_readv";
    /// `process_vm_writev(pid, local_iov, liovcnt, remote_iov, riovcnt, flags)`
    ProcessVmWritev = 42, "process_vm_writev";
    /// `prctl(option, ...)`: only `PR_SET_NAME` is delivered, the new name in `extra`.
    Prctl = 43, "prctl";
    /// `utimensat(dirfd, path, times, flags)`: the two `timespec`s in `extra`.
    Utimensat = 44, "utimensat";
    /// `utimes(path, times)`: the two `timeval`s in `extra`.
    Utimes = 45, "utimes";
    /// `futimesat(dirfd, path, times)`: the two `timeval`s in `extra`.
    Futimesat = 46, "futimesat";
    /// `ioctl(fd, cmd, arg)`: only the inode-flag setters (`FS_IOC_SETFLAGS`,
    /// `FS_IOC_FSSETXATTR`) are delivered, the flags in `extra`.
    Ioctl = 47, "ioctl";
    /// `tkill(tid, sig)`: a signal to one thread of another process (to the caller's own
    /// thread group it is not delivered).
    Tkill = 48, "tkill";
    /// `tgkill(tgid, tid, sig)`: as `tkill`, naming the thread group (to the caller's own it
    /// is not delivered: runtimes preempt and wake their own threads this way).
    Tgkill = 49, "tgkill";
    /// `pidfd_open(pid, flags)`: a handle on another process; the result is the pidfd.
    PidfdOpen = 50, "pidfd_open";
    /// `pidfd_send_signal(pidfd, sig, info, flags)`
    PidfdSendSignal = 51, "pidfd_send_signal";
    /// `pidfd_getfd(pidfd, targetfd, flags)`: a copy of another process's descriptor.
    PidfdGetfd = 52, "pidfd_getfd";
}

/// `prctl` option that renames the calling thread.
pub const PR_SET_NAME: u64 = 15;
/// `ioctl` requests that set an inode's flags (`chattr`): FS_IOC_SETFLAGS, its 32-bit form,
/// and FS_IOC_FSSETXATTR (whose `fsx_xflags` come first).
pub const FS_IOC_SETFLAGS: u64 = 0x4008_6602;
pub const FS_IOC32_SETFLAGS: u64 = 0x4004_6602;
pub const FS_IOC_FSSETXATTR: u64 = 0x401c_5820;

/// The fixed part of a syscall record. `data` follows: `path1` at 0 and, when present,
/// `path2` at [`PATH_CAP`]; only the bytes in use are sent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallHead {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// The raw return value (negative errno on failure).
    pub ret: i64,
    /// The raw arguments.
    pub args: [u64; 6],
    /// The file an fd argument or result refers to (open result, fchmod/fchown/finit_module fd).
    pub inode: u64,
    pub dev: u32,
    pub file_mode: u32,
    /// A [`Syscall`] discriminant.
    pub syscall: u16,
    /// Bytes of `path1`/`path2` in use (0: absent).
    pub path1_len: u16,
    pub path2_len: u16,
    /// Socket facts, from the socket itself and from the call's address argument.
    pub sock_family: u16,
    pub sock_type: u16,
    pub sock_protocol: u16,
    pub local_port: u16,
    pub remote_port: u16,
    /// Identical calls coalesced in the kernel since the last one delivered (see
    /// `KernelConfig::coalesce_ms`).
    pub repeats: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Call-specific bytes: a mount's fstype, a BPF program type, capset's sets, an xattr
    /// value's head, two timestamps, a new task name, inode flags.
    pub extra: [u8; EXTRA_LEN],
}

/// A whole syscall record as built in per-CPU scratch space.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRecord {
    pub head: SyscallHead,
    pub data: [u8; 2 * PATH_CAP],
}
