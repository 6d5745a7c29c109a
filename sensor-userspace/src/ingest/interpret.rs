//! Turning a raw syscall record into a typed event: which argument means what for each call,
//! and resolving relative paths against the process's cwd or dirfd.

use sensor_common::{
    decode::{FileId, SyscallEvent},
    syscall::{FS_IOC_FSSETXATTR, Syscall},
};

use crate::model::events::{FileRef, FileType, Net, What};

/// `AT_FDCWD`: a path relative to the current directory.
pub const AT_FDCWD: i32 = -100;
const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;

/// Resolves what a process's relative path or fd refers to.
pub trait Resolver {
    /// The absolute path of `dirfd` (or the cwd for AT_FDCWD) of process `pid`.
    fn dir(&self, pid: u32, dirfd: i32) -> Option<String>;
    /// The process a pidfd `fd` of process `pid` refers to.
    fn pidfd_target(&self, pid: u32, fd: i32) -> Option<u32>;
    /// The process (thread group) thread `tid` belongs to.
    fn thread_group(&self, tid: u32) -> Option<u32>;
}

/// Resolves through /proc while the process is alive.
pub struct ProcResolver;

/// The number after `key` on its line of a /proc status-like file.
fn proc_number(path: &str, key: &str) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

impl Resolver for ProcResolver {
    fn dir(&self, pid: u32, dirfd: i32) -> Option<String> {
        let link = if dirfd == AT_FDCWD {
            format!("/proc/{pid}/cwd")
        } else {
            format!("/proc/{pid}/fd/{dirfd}")
        };
        std::fs::read_link(link)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn pidfd_target(&self, pid: u32, fd: i32) -> Option<u32> {
        // A pidfd's fdinfo names its process ("Pid: -1" once it has been reaped).
        proc_number(&format!("/proc/{pid}/fdinfo/{fd}"), "Pid:").filter(|p| *p > 0)
    }

    fn thread_group(&self, tid: u32) -> Option<u32> {
        proc_number(&format!("/proc/{tid}/status"), "Tgid:")
    }
}

/// Resolves nothing: relative paths stay relative.
pub struct NoResolver;

impl Resolver for NoResolver {
    fn dir(&self, _: u32, _: i32) -> Option<String> {
        None
    }

    fn pidfd_target(&self, _: u32, _: i32) -> Option<u32> {
        None
    }

    fn thread_group(&self, _: u32) -> Option<u32> {
        None
    }
}

fn int(arg: u64) -> i32 {
    arg as u32 as i32
}

/// `uid_t`/`gid_t` argument, where -1 means "leave unchanged".
fn id_arg(arg: u64) -> Option<u32> {
    let v = arg as u32;
    (v != u32::MAX).then_some(v)
}

/// The file a path argument names, with the identity and type of the inode when known.
fn file(
    r: &dyn Resolver,
    pid: u32,
    dirfd: i32,
    path: Option<&str>,
    inode: Option<(FileId, u32)>,
) -> FileRef {
    let (id, file_type) = (
        inode.map(|i| i.0),
        inode.and_then(|i| FileType::from_mode(i.1)),
    );
    let (path, resolved) = match path {
        None => (None, false),
        Some(p) if p.starts_with('/') => (Some(p.to_owned()), true),
        Some(p) => match r.dir(pid, dirfd) {
            Some(dir) => (Some(join(&dir, p)), true),
            None => (Some(p.to_owned()), false),
        },
    };
    FileRef {
        path,
        resolved,
        id,
        file_type,
    }
}

/// `path` made absolute against `dirfd` (or the cwd) of process `pid` while it lives; false
/// when it was relative and could not be resolved.
pub fn resolve(r: &dyn Resolver, pid: u32, dirfd: i32, path: &str) -> (String, bool) {
    match file(r, pid, dirfd, Some(path), None) {
        FileRef {
            path: Some(p),
            resolved,
            ..
        } => (p, resolved),
        _ => (path.to_owned(), false),
    }
}

/// `dir/rel`, with `.` components dropped and `..` applied lexically.
fn join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The file an fd argument names: its path through /proc, and its identity from the kernel.
fn fd_file(r: &dyn Resolver, pid: u32, fd: i32, inode: Option<(FileId, u32)>) -> FileRef {
    let path = r.dir(pid, fd);
    FileRef {
        resolved: path.is_some(),
        path,
        id: inode.map(|i| i.0),
        file_type: inode.and_then(|i| FileType::from_mode(i.1)),
    }
}

fn family_name(family: u16) -> String {
    match family {
        1 => "unix".into(),
        2 => "inet".into(),
        10 => "inet6".into(),
        n => n.to_string(),
    }
}

fn protocol_name(sock_type: u16, protocol: u16) -> String {
    match (protocol, sock_type) {
        (6, _) => "tcp".into(),
        (17, _) => "udp".into(),
        (1, _) | (58, _) => "icmp".into(),
        (_, 1) => "stream".into(),
        (_, 2) => "datagram".into(),
        (_, 3) => "raw".into(),
        (p, _) => p.to_string(),
    }
}

fn net(e: &SyscallEvent) -> Net {
    match &e.socket {
        Some(s) => Net {
            family: family_name(s.family),
            protocol: protocol_name(s.sock_type, s.protocol),
            local: s.local,
            remote: s.remote,
            unix_path: (s.family == 1).then(|| e.path.clone()).flatten(),
        },
        None => Net {
            family: "unknown".into(),
            protocol: "unknown".into(),
            local: None,
            remote: None,
            unix_path: None,
        },
    }
}

fn ptrace_request(req: u64) -> Option<&'static str> {
    Some(match req {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        0x4206 => "PTRACE_SEIZE",
        0x4207 => "PTRACE_INTERRUPT",
        _ => return None,
    })
}

fn bpf_command(cmd: u64) -> Option<&'static str> {
    Some(match cmd {
        0 => "BPF_MAP_CREATE",
        1 => "BPF_MAP_LOOKUP_ELEM",
        2 => "BPF_MAP_UPDATE_ELEM",
        3 => "BPF_MAP_DELETE_ELEM",
        4 => "BPF_MAP_GET_NEXT_KEY",
        5 => "BPF_PROG_LOAD",
        6 => "BPF_OBJ_PIN",
        7 => "BPF_OBJ_GET",
        8 => "BPF_PROG_ATTACH",
        9 => "BPF_PROG_DETACH",
        13 => "BPF_PROG_GET_FD_BY_ID",
        14 => "BPF_MAP_GET_FD_BY_ID",
        17 => "BPF_RAW_TRACEPOINT_OPEN",
        18 => "BPF_BTF_LOAD",
        28 => "BPF_LINK_CREATE",
        30 => "BPF_LINK_GET_FD_BY_ID",
        34 => "BPF_LINK_DETACH",
        _ => return None,
    })
}

fn short_text(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    (end > 0).then(|| String::from_utf8_lossy(&bytes[..end]).into_owned())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// The typed event for a syscall record of process `pid`.
// Long by design: one arm per kernel record kind, each the mapping of that record to its event.
pub fn interpret(e: &SyscallEvent, pid: u32, r: &dyn Resolver) -> What {
    let a = e.args;
    let id = e.file;
    let path = e.path.as_deref();
    let cwd = AT_FDCWD;
    match e.call {
        Syscall::Open | Syscall::Openat | Syscall::Openat2 | Syscall::Creat => {
            let (dirfd, flags, mode) = match e.call {
                Syscall::Open => (cwd, a[1], a[2]),
                Syscall::Creat => (cwd, O_CREAT | O_WRONLY | O_TRUNC, a[1]),
                _ => (int(a[0]), a[2], a[3]),
            };
            let file = file(r, pid, dirfd, path, id);
            let proc_file = file.path.as_deref().and_then(|p| proc_pid_file(p, pid));
            let write = flags & (O_WRONLY | O_RDWR) != 0;
            // A process's look at its own /proc files is not a sensitive read, and neither is
            // a file that only shares a process file's name (a `maps` directory elsewhere).
            let own_proc_read = !write && matches!(proc_file, Some(ProcFile::Own));
            let namesake = proc_file.is_none()
                && file
                    .path
                    .as_deref()
                    .is_some_and(|p| PROC_FILE_NAMES.contains(&p.rsplit('/').next().unwrap_or(p)));
            What::Open {
                sysctl: file.path.as_deref().and_then(sysctl_name),
                target_pid: match proc_file {
                    Some(ProcFile::Other(t)) => Some(t),
                    _ => None,
                },
                file,
                flags,
                mode: mode as u32 & 0o7777,
                write,
                create: flags & O_CREAT != 0,
                truncate: flags & O_TRUNC != 0,
                sensitive_read: e.sensitive_read && !own_proc_read && !namesake,
            }
        }
        Syscall::Unlink => What::Unlink {
            file: file(r, pid, cwd, path, None),
        },
        Syscall::Unlinkat => What::Unlink {
            file: file(r, pid, int(a[0]), path, None),
        },
        Syscall::Rename => What::Rename {
            file: file(r, pid, cwd, path, None),
            to: file(r, pid, cwd, e.path2.as_deref(), None),
        },
        Syscall::Renameat | Syscall::Renameat2 => What::Rename {
            file: file(r, pid, int(a[0]), path, None),
            to: file(r, pid, int(a[2]), e.path2.as_deref(), None),
        },
        Syscall::Chmod | Syscall::Fchmod | Syscall::Fchmodat => {
            let (f, mode) = match e.call {
                Syscall::Chmod => (file(r, pid, cwd, path, id), a[1]),
                Syscall::Fchmod => (fd_file(r, pid, int(a[0]), id), a[1]),
                _ => (file(r, pid, int(a[0]), path, id), a[2]),
            };
            let mode = mode as u32 & 0o7777;
            What::Chmod {
                file: f,
                mode,
                setuid: mode & S_ISUID != 0,
                setgid: mode & S_ISGID != 0,
            }
        }
        Syscall::Chown | Syscall::Lchown => What::Chown {
            file: file(r, pid, cwd, path, id),
            owner: id_arg(a[1]),
            group: id_arg(a[2]),
        },
        Syscall::Fchown => What::Chown {
            file: fd_file(r, pid, int(a[0]), id),
            owner: id_arg(a[1]),
            group: id_arg(a[2]),
        },
        Syscall::Fchownat => What::Chown {
            file: file(r, pid, int(a[0]), path, id),
            owner: id_arg(a[2]),
            group: id_arg(a[3]),
        },
        Syscall::Connect => What::Connect { net: net(e) },
        Syscall::Accept | Syscall::Accept4 => What::Accept { net: net(e) },
        Syscall::Bind => What::Bind { net: net(e) },
        Syscall::Listen => What::Listen {
            net: net(e),
            backlog: a[1],
        },
        Syscall::Setuid => What::SetUid {
            new_ruid: None,
            new_euid: id_arg(a[0]),
            new_suid: None,
        },
        Syscall::Setreuid => What::SetUid {
            new_ruid: id_arg(a[0]),
            new_euid: id_arg(a[1]),
            new_suid: None,
        },
        Syscall::Setresuid => What::SetUid {
            new_ruid: id_arg(a[0]),
            new_euid: id_arg(a[1]),
            new_suid: id_arg(a[2]),
        },
        Syscall::Setgid => What::SetGid {
            new_rgid: None,
            new_egid: id_arg(a[0]),
            new_sgid: None,
        },
        Syscall::Setregid => What::SetGid {
            new_rgid: id_arg(a[0]),
            new_egid: id_arg(a[1]),
            new_sgid: None,
        },
        Syscall::Setresgid => What::SetGid {
            new_rgid: id_arg(a[0]),
            new_egid: id_arg(a[1]),
            new_sgid: id_arg(a[2]),
        },
        Syscall::Capset => What::Capset {
            effective: u32_at(&e.extra, 0),
            permitted: u32_at(&e.extra, 4),
            inheritable: u32_at(&e.extra, 8),
        },
        Syscall::Ptrace => What::Ptrace {
            request: a[0],
            request_name: ptrace_request(a[0]).map(str::to_owned),
            target_pid: i64::from(int(a[1])),
        },
        Syscall::InitModule => What::ModuleLoad {
            params: e.path.clone(),
            file: None,
        },
        Syscall::FinitModule => What::ModuleLoad {
            params: e.path.clone(),
            file: Some(fd_file(r, pid, int(a[0]), id)),
        },
        Syscall::Bpf => What::Bpf {
            command: a[0],
            command_name: bpf_command(a[0]).map(str::to_owned),
            prog_type: (a[0] == 5).then(|| u32_at(&e.extra, 0)),
            object_id: matches!(a[0], 13 | 14 | 30).then(|| u32_at(&e.extra, 0)),
        },
        Syscall::MemfdCreate => What::MemfdCreate {
            name: e.path.clone(),
            flags: a[1],
        },
        Syscall::Mount => What::Mount {
            source: e.path2.clone(),
            target: file(r, pid, cwd, path, None),
            fstype: short_text(&e.extra),
            flags: a[3],
        },
        Syscall::Kill => What::Kill {
            target_pid: i64::from(int(a[0])),
            signal: a[1],
        },
        Syscall::Tkill => {
            let tid = a[0] as u32;
            What::Kill {
                // A thread's process, while it lives; its own id otherwise (a process's
                // first thread has the process's id).
                target_pid: i64::from(r.thread_group(tid).unwrap_or(tid)),
                signal: a[1],
            }
        }
        Syscall::Tgkill => What::Kill {
            target_pid: i64::from(int(a[0])),
            signal: a[2],
        },
        Syscall::PidfdOpen => What::PidfdOpen {
            target_pid: i64::from(int(a[0])),
        },
        Syscall::PidfdSendSignal => match r.pidfd_target(pid, int(a[0])) {
            Some(target) => What::Kill {
                target_pid: i64::from(target),
                signal: a[1],
            },
            None => What::PidfdSignal { signal: a[1] },
        },
        Syscall::PidfdGetfd => What::PidfdGetfd {
            target_pid: r.pidfd_target(pid, int(a[0])).map(i64::from),
            target_fd: int(a[1]),
        },
        Syscall::Setxattr
        | Syscall::Lsetxattr
        | Syscall::Fsetxattr
        | Syscall::Removexattr
        | Syscall::Lremovexattr
        | Syscall::Fremovexattr => {
            let set = matches!(
                e.call,
                Syscall::Setxattr | Syscall::Lsetxattr | Syscall::Fsetxattr
            );
            let f = match e.call {
                Syscall::Fsetxattr | Syscall::Fremovexattr => {
                    fd_or_named(r, pid, int(a[0]), path, id)
                }
                _ => file(r, pid, cwd, path, id),
            };
            let name = e.path2.clone();
            let capabilities = if set && name.as_deref() == Some("security.capability") {
                file_capabilities(&e.extra, a[3])
            } else {
                Vec::new()
            };
            What::Xattr {
                file: f,
                name,
                set,
                capabilities,
            }
        }
        Syscall::ProcessVmReadv | Syscall::ProcessVmWritev => What::ProcessVm {
            target_pid: i64::from(int(a[0])),
            write: e.call == Syscall::ProcessVmWritev,
        },
        Syscall::Prctl => What::SetName {
            name: short_text(&e.extra).unwrap_or_default(),
        },
        Syscall::Utimensat | Syscall::Utimes | Syscall::Futimesat => {
            let (f, times, nanos) = match e.call {
                Syscall::Utimensat if a[1] == 0 => {
                    (fd_or_named(r, pid, int(a[0]), path, id), a[2], true)
                }
                Syscall::Utimensat => (file(r, pid, int(a[0]), path, id), a[2], true),
                Syscall::Utimes => (file(r, pid, cwd, path, id), a[1], false),
                _ => (file(r, pid, int(a[0]), path, id), a[2], false),
            };
            let (atime_ns, mtime_ns) = if times == 0 {
                (None, None)
            } else {
                (time_at(&e.extra, 0, nanos), time_at(&e.extra, 16, nanos))
            };
            What::Utimes {
                file: f,
                atime_ns,
                mtime_ns,
            }
        }
        Syscall::Ioctl => {
            let flags = u32_at(&e.extra, 0);
            let (immutable, append_only) = if a[1] & 0xffff_ffff == FS_IOC_FSSETXATTR {
                (
                    flags & FS_XFLAG_IMMUTABLE != 0,
                    flags & FS_XFLAG_APPEND != 0,
                )
            } else {
                (flags & FS_IMMUTABLE_FL != 0, flags & FS_APPEND_FL != 0)
            };
            What::SetFlags {
                file: fd_or_named(r, pid, int(a[0]), path, id),
                flags,
                immutable,
                append_only,
            }
        }
    }
}

const FS_IMMUTABLE_FL: u32 = 0x10;
const FS_APPEND_FL: u32 = 0x20;
const FS_XFLAG_IMMUTABLE: u32 = 0x8;
const FS_XFLAG_APPEND: u32 = 0x10;
/// `utimensat`'s special nanosecond values: set to now, leave as it is.
const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

/// The file an fd names: its whole path through /proc while the process lives, else the
/// dentry name the kernel read (`name`, the last component, marked unresolved).
fn fd_or_named(
    r: &dyn Resolver,
    pid: u32,
    fd: i32,
    name: Option<&str>,
    inode: Option<(FileId, u32)>,
) -> FileRef {
    let f = fd_file(r, pid, fd, inode);
    if f.path.is_some() {
        return f;
    }
    FileRef {
        path: name.map(str::to_owned),
        resolved: false,
        ..f
    }
}

/// A `timespec` (`nanos`) or `timeval` at `at` in `extra`, in nanoseconds since the epoch;
/// None for "now" or "leave it".
fn time_at(extra: &[u8], at: usize, nanos: bool) -> Option<i64> {
    let word = |o: usize| {
        extra
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_ne_bytes)
    };
    let (secs, frac) = (word(at)?, word(at + 8)?);
    if nanos && (frac == UTIME_NOW || frac == UTIME_OMIT) {
        return None;
    }
    let frac_ns = if nanos {
        frac
    } else {
        frac.saturating_mul(1000)
    };
    Some(secs.saturating_mul(1_000_000_000).saturating_add(frac_ns))
}

/// The capability names, lowest first.
const CAPABILITIES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

/// The permitted capabilities of a `security.capability` value (`struct vfs_cap_data`:
/// `magic_etc`, then permitted/inheritable pairs, low word first); `size` is the value's
/// length as the call gave it.
pub fn file_capabilities(value: &[u8], size: u64) -> Vec<String> {
    if size < 12 {
        return Vec::new();
    }
    let low = u64::from(u32_at(value, 4));
    let high = if size >= 20 {
        u64::from(u32_at(value, 12))
    } else {
        0
    };
    let set = low | (high << 32);
    (0..64)
        .filter(|b| set & (1 << b) != 0)
        .map(|b| {
            CAPABILITIES
                .get(b)
                .map_or_else(|| format!("cap_{b}"), |n| (*n).to_owned())
        })
        .collect()
}

/// For a file under /proc/sys: its sysctl name, dotted.
pub fn sysctl_name(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/proc/sys/")?;
    (!rest.is_empty()).then(|| rest.trim_end_matches('/').replace('/', "."))
}

/// Whose `/proc/PID/...` process file a path is, when it is one of the files that hold a
/// process's memory, environment or mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProcFile {
    /// The caller's own (`self`, its pid, or one of its threads).
    Own,
    Other(u32),
}

/// The files of `/proc/PID/` that hold a process's memory, environment or mappings.
const PROC_FILE_NAMES: [&str; 5] = ["mem", "environ", "maps", "smaps", "pagemap"];

fn proc_pid_file(path: &str, caller: u32) -> Option<ProcFile> {
    let rest = path.strip_prefix("/proc/")?;
    let mut parts = rest.split('/');
    let who = parts.next()?;
    let mut last = parts.next()?;
    if last == "task" {
        parts.next()?;
        last = parts.next()?;
    }
    if parts.next().is_some() || !PROC_FILE_NAMES.contains(&last) {
        return None;
    }
    if who == "self" || who == "thread-self" {
        return Some(ProcFile::Own);
    }
    let n: u32 = who.parse().ok()?;
    if n == caller || crate::host::procfs::tgid_of(n) == Some(caller) {
        return Some(ProcFile::Own);
    }
    Some(ProcFile::Other(n))
}

/// For the exec of a script interpreter (sh, bash, dash, zsh, ksh, python*, perl, ruby, node,
/// php...) given a script file, that file's argument as written: the first argument after
/// the options, unless an option says the program comes from the command line (`-c`, `-e`,
/// `-m`, `-r`) or standard input (`-s`, `-`).
pub fn script_of(exe: &str, argv: &[String]) -> Option<String> {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    let family = interpreter_family(name)?;
    // Options that take a value (skipped with it), per family.
    let with_value: &[&str] = match family {
        Interp::Shell => &["-o", "-O", "+o", "+O"],
        Interp::Python => &["-W", "-X", "-Q"],
        Interp::Perl => &["-I", "-M", "-m"],
        Interp::Ruby => &["-I", "-r", "-C", "-E"],
        Interp::Node => &["-r", "--require", "--import", "--loader"],
        Interp::Php => &["-c", "-d", "-z"],
    };
    let inline: &[&str] = match family {
        Interp::Shell => &["-c", "-s", "-i"],
        Interp::Python => &["-c", "-m"],
        Interp::Perl | Interp::Ruby => &["-e", "-E"],
        Interp::Node => &["-e", "--eval", "-p", "--print"],
        Interp::Php => &["-r", "-a"],
    };
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        if a == "--" {
            return args.next().filter(|s| !s.is_empty()).cloned();
        }
        if a == "-" || inline.contains(&a.as_str()) {
            return None;
        }
        // Bundled shell flags (`-xc`) that include `c`.
        if family == Interp::Shell && a.starts_with('-') && a.len() > 2 && a[1..].contains('c') {
            return None;
        }
        if with_value.contains(&a.as_str()) {
            args.next();
            continue;
        }
        if a.starts_with('-') || a.starts_with('+') {
            continue;
        }
        return Some(a.clone());
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interp {
    Shell,
    Python,
    Perl,
    Ruby,
    Node,
    Php,
}

fn interpreter_family(name: &str) -> Option<Interp> {
    let versioned = |base: &str| {
        name.strip_prefix(base)
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    Some(match name {
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" => Interp::Shell,
        "node" | "nodejs" => Interp::Node,
        _ if versioned("python") => Interp::Python,
        _ if versioned("perl") => Interp::Perl,
        _ if versioned("ruby") => Interp::Ruby,
        _ if versioned("php") => Interp::Php,
        _ => return None,
    })
}

/// The name of a negative errno result (`ENOENT`), or None for success.
pub fn error_name(ret: i64) -> Option<String> {
    if !(-4095..0).contains(&ret) {
        return None;
    }
    Some(format!("{:?}", nix::errno::Errno::from_raw(-ret as i32)))
}

/// A resolver that knows what it is told: every directory is `dir`, one pidfd and one thread
/// have the process given.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Fixed {
    pub dir: Option<&'static str>,
    /// (descriptor, the process it names)
    pub pidfd: Option<(i32, u32)>,
    /// (thread, its process)
    pub thread: Option<(u32, u32)>,
}

#[cfg(test)]
impl Resolver for Fixed {
    fn dir(&self, _: u32, _: i32) -> Option<String> {
        self.dir.map(str::to_owned)
    }

    fn pidfd_target(&self, _: u32, fd: i32) -> Option<u32> {
        self.pidfd.filter(|(f, _)| *f == fd).map(|(_, p)| p)
    }

    fn thread_group(&self, tid: u32) -> Option<u32> {
        self.thread.filter(|(t, _)| *t == tid).map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(call: Syscall, args: [u64; 6], path: &str) -> SyscallEvent {
        SyscallEvent {
            call,
            ret: 0,
            args,
            path: Some(path.to_owned()),
            path2: None,
            path_truncated: false,
            sensitive_read: false,
            file: None,
            socket: None,
            extra: [0; sensor_common::limits::EXTRA_LEN],
            repeats: 0,
        }
    }

    #[test]
    fn every_way_to_signal_another_process_is_a_kill_of_that_process() {
        let known = Fixed {
            pidfd: Some((5, 4242)),
            thread: Some((4250, 4242)),
            ..Fixed::default()
        };
        let call = |c: Syscall, args: [u64; 6]| interpret(&event(c, args, ""), 1, &known);
        let stop = 19;
        let kill = |target_pid| What::Kill {
            target_pid,
            signal: stop,
        };
        assert_eq!(call(Syscall::Kill, [4242, stop, 0, 0, 0, 0]), kill(4242));
        assert_eq!(
            call(Syscall::Tkill, [4250, stop, 0, 0, 0, 0]),
            kill(4242),
            "a thread's signal is its process's"
        );
        assert_eq!(
            call(Syscall::Tgkill, [4242, 4250, stop, 0, 0, 0]),
            kill(4242)
        );
        assert_eq!(
            call(Syscall::PidfdSendSignal, [5, stop, 0, 0, 0, 0]),
            kill(4242)
        );
        assert_eq!(
            call(Syscall::PidfdSendSignal, [6, stop, 0, 0, 0, 0]),
            What::PidfdSignal { signal: stop },
            "an unknown pidfd is said to be one, not taken for a process"
        );
        assert_eq!(
            call(Syscall::PidfdGetfd, [5, 7, 0, 0, 0, 0]),
            What::PidfdGetfd {
                target_pid: Some(4242),
                target_fd: 7
            }
        );
        assert_eq!(
            call(Syscall::PidfdOpen, [4242, 0, 0, 0, 0, 0]),
            What::PidfdOpen { target_pid: 4242 }
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_directory() {
        let e = event(
            Syscall::Openat,
            [(-100i64) as u64, 0, 0o1101, 0o644, 0, 0],
            "../etc/./cron.d/x",
        );
        let var_tmp = Fixed {
            dir: Some("/var/tmp"),
            ..Fixed::default()
        };
        match interpret(&e, 1, &var_tmp) {
            What::Open {
                file,
                write,
                create,
                truncate,
                mode,
                ..
            } => {
                assert_eq!(file.path.as_deref(), Some("/var/etc/cron.d/x"));
                assert!(file.resolved && write && create && truncate);
                assert_eq!(mode, 0o644);
            }
            other => panic!("{other:?}"),
        }
        match interpret(&e, 1, &NoResolver) {
            What::Open { file, .. } => assert!(!file.resolved),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chmod_flags_setuid_and_chown_keeps_minus_one() {
        let e = event(
            Syscall::Fchmodat,
            [(-100i64) as u64, 0, 0o4755, 0, 0, 0],
            "/tmp/x",
        );
        assert!(matches!(
            interpret(&e, 1, &NoResolver),
            What::Chmod {
                setuid: true,
                setgid: false,
                mode: 0o4755,
                ..
            }
        ));
        let e = event(
            Syscall::Chown,
            [0, 1000, u32::MAX as u64, 0, 0, 0],
            "/tmp/x",
        );
        assert!(matches!(
            interpret(&e, 1, &NoResolver),
            What::Chown {
                owner: Some(1000),
                group: None,
                ..
            }
        ));
    }

    #[test]
    fn file_capabilities_are_named() {
        // VFS_CAP_REVISION_2 | effective; permitted cap_setuid (7) and cap_net_raw (13).
        let mut v = [0u8; 32];
        v[0..4].copy_from_slice(&0x0200_0001u32.to_ne_bytes());
        v[4..8].copy_from_slice(&((1u32 << 7) | (1 << 13)).to_ne_bytes());
        v[12..16].copy_from_slice(&(1u32 << 6).to_ne_bytes()); // cap 38: perfmon
        assert_eq!(
            file_capabilities(&v, 20),
            ["cap_setuid", "cap_net_raw", "cap_perfmon"]
        );
        assert!(
            file_capabilities(&v, 4).is_empty(),
            "too short to hold a set"
        );
    }

    #[test]
    fn a_process_files_namesake_outside_proc_is_not_a_sensitive_read() {
        let sensitive = |path: &str| {
            let mut e = event(Syscall::Openat, [(-100i64) as u64, 0, 0, 0, 0, 0], path);
            e.sensitive_read = true;
            match interpret(&e, 1, &NoResolver) {
                What::Open { sensitive_read, .. } => sensitive_read,
                other => panic!("{other:?}"),
            }
        };
        assert!(sensitive("/proc/4242/maps"), "another process's mappings");
        assert!(sensitive("/proc/4242/environ"));
        assert!(
            !sensitive("/sys/fs/bpf/vigil/maps"),
            "a directory named maps"
        );
        assert!(!sensitive("/home/u/src/game/maps"));
        assert!(!sensitive("/proc/self/environ"), "its own environment");
        assert!(
            sensitive("/etc/shadow"),
            "other names keep what the kernel said"
        );
    }

    #[test]
    fn sysctls_and_proc_files_are_named() {
        assert_eq!(
            sysctl_name("/proc/sys/kernel/randomize_va_space").as_deref(),
            Some("kernel.randomize_va_space")
        );
        assert_eq!(sysctl_name("/proc/sysrq-trigger"), None);
        assert_eq!(proc_pid_file("/proc/self/mem", 10), Some(ProcFile::Own));
        assert_eq!(proc_pid_file("/proc/10/environ", 10), Some(ProcFile::Own));
        assert_eq!(
            proc_pid_file("/proc/4000000/task/4000001/mem", 10),
            Some(ProcFile::Other(4_000_000))
        );
        assert_eq!(proc_pid_file("/proc/12/status", 10), None);
        assert_eq!(proc_pid_file("/proc/net/tcp", 10), None);
    }

    #[test]
    fn timestamps_now_and_explicit() {
        let mut t = [0u8; 32];
        t[0..8].copy_from_slice(&1_577_836_800i64.to_ne_bytes());
        t[8..16].copy_from_slice(&5i64.to_ne_bytes());
        t[16..24].copy_from_slice(&0i64.to_ne_bytes());
        t[24..32].copy_from_slice(&UTIME_NOW.to_ne_bytes());
        assert_eq!(time_at(&t, 0, true), Some(1_577_836_800_000_000_005));
        assert_eq!(time_at(&t, 16, true), None, "UTIME_NOW");
        assert_eq!(
            time_at(&t, 0, false),
            Some(1_577_836_800_000_005_000),
            "timeval"
        );
    }

    #[test]
    fn the_script_an_interpreter_runs() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            script_of("/usr/bin/bash", &v(&["bash", "-x", "/tmp/s.sh", "a"])).as_deref(),
            Some("/tmp/s.sh")
        );
        assert_eq!(script_of("/usr/bin/bash", &v(&["bash", "-c", "id"])), None);
        assert_eq!(script_of("/usr/bin/sh", &v(&["sh", "-ec", "id"])), None);
        assert_eq!(script_of("/usr/bin/sh", &v(&["sh"])), None, "stdin");
        assert_eq!(
            script_of("/usr/bin/python3.11", &v(&["python3", "-u", "x.py"])).as_deref(),
            Some("x.py")
        );
        assert_eq!(
            script_of("/usr/bin/python3", &v(&["python3", "-m", "http.server"])),
            None
        );
        assert_eq!(
            script_of("/usr/bin/perl", &v(&["perl", "-I", "lib", "run.pl"])).as_deref(),
            Some("run.pl")
        );
        assert_eq!(
            script_of("/usr/bin/perl", &v(&["perl", "-e", "print 1"])),
            None
        );
        assert_eq!(
            script_of("/usr/bin/cat", &v(&["cat", "x.sh"])),
            None,
            "not an interpreter"
        );
        assert_eq!(script_of("/usr/bin/pythonista", &v(&["p", "x.py"])), None);
    }

    #[test]
    fn errno_names() {
        assert_eq!(error_name(-2).as_deref(), Some("ENOENT"));
        assert_eq!(error_name(-13).as_deref(), Some("EACCES"));
        assert_eq!(error_name(3), None);
    }
}
