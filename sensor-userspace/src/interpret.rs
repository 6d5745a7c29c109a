//! Turning a raw syscall record into a typed event: which argument means what for each call,
//! and resolving relative paths against the process's cwd or dirfd.

use sensor_common::{
    decode::{FileId, SyscallEvent},
    syscall::Syscall,
};

use crate::events::{FileRef, FileType, Net, What};

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
}

/// Resolves through /proc while the process is alive.
pub struct ProcResolver;

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
}

/// Resolves nothing: relative paths stay relative.
pub struct NoResolver;

impl Resolver for NoResolver {
    fn dir(&self, _: u32, _: i32) -> Option<String> {
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
        17 => "BPF_RAW_TRACEPOINT_OPEN",
        18 => "BPF_BTF_LOAD",
        28 => "BPF_LINK_CREATE",
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
            What::Open {
                file: file(r, pid, dirfd, path, id),
                flags,
                mode: mode as u32 & 0o7777,
                write: flags & (O_WRONLY | O_RDWR) != 0,
                create: flags & O_CREAT != 0,
                truncate: flags & O_TRUNC != 0,
                sensitive_read: e.sensitive_read,
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
    }
}

/// The name of a negative errno result (`ENOENT`), or None for success.
pub fn error_name(ret: i64) -> Option<String> {
    if !(-4095..0).contains(&ret) {
        return None;
    }
    Some(format!("{:?}", nix::errno::Errno::from_raw(-ret as i32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(&'static str);
    impl Resolver for Dir {
        fn dir(&self, _: u32, _: i32) -> Option<String> {
            Some(self.0.to_owned())
        }
    }

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
            extra: [0; 16],
            repeats: 0,
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_directory() {
        let e = event(
            Syscall::Openat,
            [(-100i64) as u64, 0, 0o1101, 0o644, 0, 0],
            "../etc/./cron.d/x",
        );
        match interpret(&e, 1, &Dir("/var/tmp")) {
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
    fn errno_names() {
        assert_eq!(error_name(-2).as_deref(), Some("ENOENT"));
        assert_eq!(error_name(-13).as_deref(), Some("EACCES"));
        assert_eq!(error_name(3), None);
    }
}
