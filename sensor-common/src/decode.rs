//! Safe decoding of ring-buffer records into owned events (user half of the ABI).
//!
//! A record is untrusted bytes: its length and every length field inside it are checked before
//! use, and anything malformed is a [`DecodeError`] naming the problem, never a panic.

use std::{borrow::ToOwned, string::String, vec::Vec};

use crate::{
    limits::{ARGS_BUF, ENV_CAP, ENV_VAR_CAP, FILENAME_LEN, PATH_CAP},
    process::{ExecArgsHead, ExecEnvHead, ExecRecord, ExitRecord, ForkRecord, TaskInfo},
    record::{ABI_VERSION, EventKind, RecordHeader, flags},
    syscall::{Syscall, SyscallHead},
};

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need} bytes its kind needs")]
    TooShort { len: usize, need: usize },
    #[error("record has unknown kind {0}")]
    UnknownKind(u16),
    #[error("syscall record names unknown syscall {0}")]
    UnknownSyscall(u16),
    #[error("record was written with ABI version {found}, this sensor reads version {ABI_VERSION}")]
    AbiMismatch { found: u16 },
    #[error("record field {field} says {value} bytes, more than the {max} available")]
    BadLength {
        field: &'static str,
        value: usize,
        max: usize,
    },
}

/// The task an event is about.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub cgroup_id: u64,
    pub start_boot_ns: u64,
    pub parent_start_boot_ns: u64,
    pub comm: String,
}

/// How a process ended, decoded from a wait(2) status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "how")]
pub enum ExitStatus {
    Exited { code: u8 },
    Signaled { signal: u8, core_dumped: bool },
}

impl ExitStatus {
    /// Decodes a kernel `exit_code` (wait status).
    pub fn from_wait_status(status: u32) -> Self {
        let signal = (status & 0x7f) as u8;
        if signal == 0 {
            Self::Exited {
                code: ((status >> 8) & 0xff) as u8,
            }
        } else {
            Self::Signaled {
                signal,
                core_dumped: status & 0x80 != 0,
            }
        }
    }
}

/// A file by identity: device (userspace `st_dev` encoding) and inode number.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// From the kernel's internal `dev_t` (major << 20 | minor) and an inode number.
    pub fn from_kernel(kdev: u32, ino: u64) -> Self {
        let (major, minor) = (u64::from(kdev >> 20), u64::from(kdev & 0xfffff));
        // glibc's makedev(), so the value compares equal to stat(2)'s st_dev.
        let dev = ((major & 0xffff_f000) << 32)
            | ((major & 0x0000_0fff) << 8)
            | ((minor & 0xffff_ff00) << 12)
            | (minor & 0x0000_00ff);
        Self { dev, ino }
    }

    /// The kernel's `dev_t` encoding of this device (the inverse of [`Self::from_kernel`]).
    pub fn kernel_dev(&self) -> u32 {
        let d = self.dev;
        let major = ((d >> 32) & 0xffff_f000) | ((d >> 8) & 0x0000_0fff);
        let minor = ((d >> 12) & 0xffff_ff00) | (d & 0x0000_00ff);
        ((major as u32) << 20) | (minor as u32 & 0xfffff)
    }
}

/// What a standard stream (fd 0, 1 or 2) of a new image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Closed,
    File,
    Directory,
    Pipe,
    Socket,
    Tty,
    Null,
    CharDevice,
    Other,
}

impl StreamKind {
    /// From an inode's `i_mode` and `i_rdev` (kernel `dev_t` encoding).
    pub fn from_inode(mode: u32, rdev: u32) -> Self {
        let major = rdev >> 20;
        let minor = rdev & 0xfffff;
        match mode & 0o170000 {
            0 => Self::Closed,
            0o100000 => Self::File,
            0o040000 => Self::Directory,
            0o010000 => Self::Pipe,
            0o140000 => Self::Socket,
            0o020000 if major == 1 && minor == 3 => Self::Null,
            // tty, console and ptmx (4, 5), pseudo-terminal slaves (136-143)
            0o020000 if major == 4 || major == 5 || (136..=143).contains(&major) => Self::Tty,
            0o020000 => Self::CharDevice,
            _ => Self::Other,
        }
    }
}

/// A socket as a syscall record describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketInfo {
    /// AF_* number: 1 unix, 2 inet, 10 inet6.
    pub family: u16,
    /// SOCK_* number: 1 stream, 2 datagram, 3 raw.
    pub sock_type: u16,
    /// IPPROTO_* number: 6 tcp, 17 udp.
    pub protocol: u16,
    pub local: Option<core::net::SocketAddr>,
    pub remote: Option<core::net::SocketAddr>,
}

/// A decoded syscall record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallEvent {
    pub call: Syscall,
    pub ret: i64,
    pub args: [u64; 6],
    pub path: Option<String>,
    pub path2: Option<String>,
    pub path_truncated: bool,
    pub sensitive_read: bool,
    /// The file an fd argument or result refers to, and its `i_mode`.
    pub file: Option<(FileId, u32)>,
    pub socket: Option<SocketInfo>,
    pub extra: [u8; crate::limits::EXTRA_LEN],
    /// Identical calls coalesced in the kernel since the last one delivered.
    pub repeats: u32,
}

/// One decoded kernel event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    Fork {
        boot_ns: u64,
        task: Task,
    },
    Exec {
        boot_ns: u64,
        task: Task,
        old_pid: u32,
        filename: String,
        filename_truncated: bool,
        exe: FileId,
        /// The executed inode has no links (deleted file or memfd).
        exe_unlinked: bool,
        exe_memfd: bool,
        /// The exec hit the in-kernel blocklist and was killed before it ran.
        blocked: bool,
        stdio: [StreamKind; 3],
        /// Inode numbers of fds 0, 1 and 2 (pipe and socket identities).
        stdio_ino: [u64; 3],
    },
    ExecArgs {
        boot_ns: u64,
        task: Task,
        argv: Vec<String>,
        /// More arguments or bytes existed than the record holds.
        truncated: bool,
        /// The user memory holding the arguments could not be read in full.
        unreadable: bool,
    },
    /// The allow-listed variables (as the kernel selected them: userspace checks the whole
    /// name) of an exec call's environment.
    ExecEnv {
        boot_ns: u64,
        task: Task,
        /// `NAME=value` strings.
        vars: Vec<String>,
        /// Not every variable was looked at, or not every selected one kept.
        truncated: bool,
    },
    Exit {
        boot_ns: u64,
        task: Task,
        status: ExitStatus,
    },
    Syscall {
        boot_ns: u64,
        task: Task,
        call: SyscallEvent,
    },
}

impl KernelEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Fork { .. } => EventKind::Fork,
            Self::Exec { .. } => EventKind::Exec,
            Self::ExecArgs { .. } => EventKind::ExecArgs,
            Self::ExecEnv { .. } => EventKind::ExecEnv,
            Self::Exit { .. } => EventKind::Exit,
            Self::Syscall { .. } => EventKind::Syscall,
        }
    }

    pub fn task(&self) -> &Task {
        match self {
            Self::Fork { task, .. }
            | Self::Exec { task, .. }
            | Self::ExecArgs { task, .. }
            | Self::ExecEnv { task, .. }
            | Self::Exit { task, .. }
            | Self::Syscall { task, .. } => task,
        }
    }

    pub fn boot_ns(&self) -> u64 {
        match self {
            Self::Fork { boot_ns, .. }
            | Self::Exec { boot_ns, .. }
            | Self::ExecArgs { boot_ns, .. }
            | Self::ExecEnv { boot_ns, .. }
            | Self::Exit { boot_ns, .. }
            | Self::Syscall { boot_ns, .. } => *boot_ns,
        }
    }
}

/// The NUL-separated strings in the `len` bytes that follow a head `H` (at most `cap`): what
/// an argument or environment record sends. A `len` past what arrived is `field`'s error.
fn strings_after<H>(
    bytes: &[u8],
    len: u32,
    cap: usize,
    field: &'static str,
) -> Result<Vec<String>, DecodeError> {
    let len = len as usize;
    let tail = bytes.get(core::mem::size_of::<H>()..).unwrap_or_default();
    let available = tail.len().min(cap);
    if len > available {
        return Err(DecodeError::BadLength {
            field,
            value: len,
            max: available,
        });
    }
    Ok(split_args(&tail[..len]))
}

/// Reads a `T` from the front of `bytes` after checking the length.
fn read_pod<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = core::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::TooShort {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: the length is checked above, `read_unaligned` has no alignment requirement, and
    // every `T` used here is `#[repr(C)]` integers and byte arrays, valid for any bit pattern.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Text up to the first NUL (or the whole slice), with invalid UTF-8 replaced.
fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn task(raw: &TaskInfo) -> Task {
    let TaskInfo {
        start_boot_ns,
        parent_start_boot_ns,
        cgroup_id,
        pid,
        tgid,
        ppid,
        uid,
        gid,
        euid,
        egid,
        _pad,
        comm,
    } = *raw;
    Task {
        pid,
        tgid,
        ppid,
        uid,
        gid,
        euid,
        egid,
        cgroup_id,
        start_boot_ns,
        parent_start_boot_ns,
        comm: c_text(&comm),
    }
}

/// Splits NUL-terminated arguments.
fn split_args(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    let header: RecordHeader = read_pod(bytes)?;
    let kind = EventKind::from_raw(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    if header.abi != ABI_VERSION {
        return Err(DecodeError::AbiMismatch { found: header.abi });
    }
    let boot_ns = header.boot_ns;
    let has = |flag: u16| header.flags & flag != 0;
    Ok(match kind {
        EventKind::Fork => {
            let r: ForkRecord = read_pod(bytes)?;
            KernelEvent::Fork {
                boot_ns,
                task: task(&r.task),
            }
        }
        EventKind::Exec => {
            let r: ExecRecord = read_pod(bytes)?;
            let len = r.filename_len as usize;
            if len > FILENAME_LEN {
                return Err(DecodeError::BadLength {
                    field: "filename_len",
                    value: len,
                    max: FILENAME_LEN,
                });
            }
            KernelEvent::Exec {
                boot_ns,
                task: task(&r.task),
                old_pid: r.old_pid,
                filename: c_text(&r.filename[..len]),
                filename_truncated: has(flags::FILENAME_TRUNCATED),
                exe: FileId::from_kernel(r.exe_dev, r.exe_ino),
                exe_unlinked: has(flags::EXE_UNLINKED),
                exe_memfd: has(flags::EXE_MEMFD),
                blocked: has(flags::EXEC_BLOCKED),
                stdio: core::array::from_fn(|i| {
                    StreamKind::from_inode(r.stdio_mode[i], r.stdio_rdev[i])
                }),
                stdio_ino: r.stdio_ino,
            }
        }
        EventKind::ExecArgs => {
            // Only the head and `args_len` bytes are on the ring, not the whole buffer.
            let head: ExecArgsHead = read_pod(bytes)?;
            KernelEvent::ExecArgs {
                boot_ns,
                task: task(&head.task),
                argv: strings_after::<ExecArgsHead>(bytes, head.args_len, ARGS_BUF, "args_len")?,
                truncated: has(flags::ARGV_TRUNCATED) || has(flags::ARG_TRUNCATED),
                unreadable: has(flags::ARGV_UNREADABLE),
            }
        }
        EventKind::ExecEnv => {
            let head: ExecEnvHead = read_pod(bytes)?;
            KernelEvent::ExecEnv {
                boot_ns,
                task: task(&head.task),
                vars: strings_after::<ExecEnvHead>(
                    bytes,
                    head.env_len,
                    ENV_CAP + ENV_VAR_CAP,
                    "env_len",
                )?,
                truncated: has(flags::ENV_TRUNCATED),
            }
        }
        EventKind::Syscall => KernelEvent::Syscall {
            boot_ns,
            task: task(&read_pod::<SyscallHead>(bytes)?.task),
            call: syscall(
                bytes,
                has(flags::PATH_TRUNCATED),
                has(flags::SENSITIVE_READ),
            )?,
        },
        EventKind::Exit => {
            let r: ExitRecord = read_pod(bytes)?;
            KernelEvent::Exit {
                boot_ns,
                task: task(&r.task),
                status: ExitStatus::from_wait_status(r.exit_code),
            }
        }
    })
}

fn socket_addr(family: u16, addr: [u8; 16], port: u16) -> Option<core::net::SocketAddr> {
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        10 => IpAddr::V6(Ipv6Addr::from(addr)),
        _ => return None,
    };
    (!ip.is_unspecified() || port != 0).then_some(SocketAddr::new(ip, port))
}

fn syscall(
    bytes: &[u8],
    path_truncated: bool,
    sensitive_read: bool,
) -> Result<SyscallEvent, DecodeError> {
    let h: SyscallHead = read_pod(bytes)?;
    let call = Syscall::from_raw(h.syscall).ok_or(DecodeError::UnknownSyscall(h.syscall))?;
    let data = &bytes[core::mem::size_of::<SyscallHead>()..];
    let take = |field: &'static str, at: usize, len: u16| -> Result<Option<String>, DecodeError> {
        let len = usize::from(len);
        if len == 0 {
            return Ok(None);
        }
        if len > PATH_CAP || at + len > data.len() {
            return Err(DecodeError::BadLength {
                field,
                value: len,
                max: data.len().saturating_sub(at).min(PATH_CAP),
            });
        }
        Ok(Some(c_text(&data[at..at + len])))
    };
    let path = take("path1_len", 0, h.path1_len)?;
    let path2 = take("path2_len", PATH_CAP, h.path2_len)?;
    let socket = (h.sock_family != 0).then(|| SocketInfo {
        family: h.sock_family,
        sock_type: h.sock_type,
        protocol: h.sock_protocol,
        local: socket_addr(h.sock_family, h.local_addr, h.local_port),
        remote: socket_addr(h.sock_family, h.remote_addr, h.remote_port),
    });
    Ok(SyscallEvent {
        call,
        ret: h.ret,
        args: h.args,
        path,
        path2,
        path_truncated,
        sensitive_read,
        file: (h.inode != 0).then(|| (FileId::from_kernel(h.dev, h.inode), h.file_mode)),
        socket,
        extra: h.extra,
        repeats: h.repeats,
    })
}

/// Builds record bytes the way the kernel does, for tests of the decoder and of the pipeline.
pub mod testing {
    use super::*;

    pub fn header(kind: EventKind, flags: u16, boot_ns: u64) -> RecordHeader {
        RecordHeader {
            kind: kind as u16,
            abi: ABI_VERSION,
            flags,
            _pad: 0,
            boot_ns,
        }
    }

    pub fn task_info(pid: u32, tgid: u32, ppid: u32, comm: &str) -> TaskInfo {
        let mut c = [0u8; crate::limits::COMM_LEN];
        let n = comm.len().min(c.len() - 1);
        c[..n].copy_from_slice(&comm.as_bytes()[..n]);
        TaskInfo {
            start_boot_ns: 1_000_000_000,
            parent_start_boot_ns: 500_000_000,
            cgroup_id: 1,
            pid,
            tgid,
            ppid,
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
            _pad: 0,
            comm: c,
        }
    }

    /// A decoded task: process `pid` started `start_s` seconds after boot, child of `ppid`
    /// started at `pstart_s`.
    pub fn task(pid: u32, start_s: u64, ppid: u32, pstart_s: u64, comm: &str) -> Task {
        Task {
            pid,
            tgid: pid,
            ppid,
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
            cgroup_id: 1,
            start_boot_ns: start_s * 1_000_000_000,
            parent_start_boot_ns: pstart_s * 1_000_000_000,
            comm: comm.into(),
        }
    }

    /// The raw bytes of a `#[repr(C)]` record.
    pub fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: reading `size_of::<T>()` bytes of a live, initialised `Copy` value; the
        // records used here have explicit padding fields, so every byte is initialised.
        unsafe {
            core::slice::from_raw_parts((value as *const T).cast::<u8>(), core::mem::size_of::<T>())
        }
        .to_owned()
    }

    /// An exec record for `path`.
    pub fn exec_record(task: TaskInfo, path: &str) -> ExecRecord {
        let mut filename = [0u8; FILENAME_LEN];
        let n = path.len().min(FILENAME_LEN - 1);
        filename[..n].copy_from_slice(&path.as_bytes()[..n]);
        ExecRecord {
            header: header(EventKind::Exec, 0, 2),
            task,
            old_pid: task.pid,
            filename_len: n as u32,
            exe_ino: 0,
            stdio_ino: [0; 3],
            exe_dev: 0,
            stdio_mode: [0; 3],
            stdio_rdev: [0; 3],
            filename,
        }
    }

    /// A syscall record as the kernel sends it (head plus used path bytes).
    pub fn syscall_record(task: TaskInfo, call: Syscall, ret: i64, path: Option<&str>) -> Vec<u8> {
        // SAFETY: SyscallHead is plain integers and byte arrays; all-zero is valid.
        let mut head: SyscallHead = unsafe { core::mem::zeroed() };
        head.header = header(EventKind::Syscall, 0, 5);
        head.task = task;
        head.ret = ret;
        head.syscall = call as u16;
        let p = path.unwrap_or("").as_bytes();
        head.path1_len = p.len() as u16;
        let mut out = bytes_of(&head);
        out.extend_from_slice(p);
        out
    }

    /// An exec-args record as the kernel sends it: fixed part plus the used argument bytes.
    pub fn exec_args(task: TaskInfo, args: &[&str], flags: u16) -> Vec<u8> {
        let mut body = Vec::new();
        for a in args {
            body.extend_from_slice(a.as_bytes());
            body.push(0);
        }
        let head = ExecArgsHead {
            header: header(EventKind::ExecArgs, flags, 7),
            task,
            argc: args.len() as u32,
            args_len: body.len() as u32,
        };
        let mut out = bytes_of(&head);
        out.extend_from_slice(&body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    #[test]
    fn exec_args_round_trip() {
        let t = task_info(10, 10, 1, "sh");
        let raw = exec_args(t, &["echo", "alpha", "beta gamma"], 0);
        let ev = decode(&raw).expect("decodes");
        match ev {
            KernelEvent::ExecArgs {
                argv, truncated, ..
            } => {
                assert_eq!(argv, ["echo", "alpha", "beta gamma"]);
                assert!(!truncated);
            }
            other => panic!("wrong event {other:?}"),
        }
    }

    #[test]
    fn empty_argv_is_empty() {
        let raw = exec_args(task_info(1, 1, 0, "x"), &[], 0);
        match decode(&raw).expect("decodes") {
            KernelEvent::ExecArgs { argv, .. } => assert!(argv.is_empty()),
            other => panic!("wrong event {other:?}"),
        }
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let t = task_info(10, 10, 1, "sh");
        let raw = exec_args(t, &["echo", "alpha"], 0);
        for cut in 0..raw.len() {
            // Every prefix either decodes to a shorter-but-valid record or is an error.
            let _ = decode(&raw[..cut]);
        }
        assert!(matches!(
            decode(&raw[..raw.len() - 1]),
            Err(DecodeError::BadLength {
                field: "args_len",
                ..
            })
        ));
        assert!(matches!(
            decode(&[1, 2, 3]),
            Err(DecodeError::TooShort { .. })
        ));
    }

    #[test]
    fn unknown_kind_and_abi_are_named() {
        let mut h = header(EventKind::Fork, 0, 1);
        h.kind = 99;
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
        let mut h = header(EventKind::Fork, 0, 1);
        h.abi = 42;
        assert_eq!(
            decode(&bytes_of(&h)),
            Err(DecodeError::AbiMismatch { found: 42 })
        );
    }

    #[test]
    fn lying_filename_len_is_rejected() {
        let mut rec = testing::exec_record(task_info(5, 5, 1, "true"), "");
        rec.filename_len = 10_000;
        assert!(matches!(
            decode(&bytes_of(&rec)),
            Err(DecodeError::BadLength {
                field: "filename_len",
                ..
            })
        ));
        let rec = testing::exec_record(task_info(5, 5, 1, "true"), "/bin/true");
        match decode(&bytes_of(&rec)).expect("decodes") {
            KernelEvent::Exec { filename, .. } => assert_eq!(filename, "/bin/true"),
            other => panic!("wrong event {other:?}"),
        }
    }

    #[test]
    fn syscall_paths_are_bounded_by_the_record() {
        let raw = syscall_record(
            task_info(9, 9, 1, "cat"),
            Syscall::Openat,
            -2,
            Some("/etc/shadow"),
        );
        match decode(&raw).expect("decodes") {
            KernelEvent::Syscall { call, .. } => {
                assert_eq!(call.call, Syscall::Openat);
                assert_eq!(call.ret, -2);
                assert_eq!(call.path.as_deref(), Some("/etc/shadow"));
            }
            other => panic!("wrong event {other:?}"),
        }
        assert!(matches!(
            decode(&raw[..raw.len() - 3]),
            Err(DecodeError::BadLength {
                field: "path1_len",
                ..
            })
        ));
        let mut bad = raw.clone();
        let at = core::mem::offset_of!(SyscallHead, syscall);
        bad[at..at + 2].copy_from_slice(&999u16.to_ne_bytes());
        assert_eq!(decode(&bad), Err(DecodeError::UnknownSyscall(999)));
    }

    #[test]
    fn stream_kinds_and_devices() {
        assert_eq!(StreamKind::from_inode(0o140777, 0), StreamKind::Socket);
        assert_eq!(StreamKind::from_inode(0o010600, 0), StreamKind::Pipe);
        assert_eq!(
            StreamKind::from_inode(0o020620, 136 << 20 | 3),
            StreamKind::Tty
        );
        assert_eq!(
            StreamKind::from_inode(0o020666, 1 << 20 | 3),
            StreamKind::Null
        );
        assert_eq!(StreamKind::from_inode(0, 0), StreamKind::Closed);
        // /dev/vda1 (254:1) as the kernel and as stat(2) encode it
        assert_eq!(FileId::from_kernel(254 << 20 | 1, 7).dev, (254 << 8) | 1);
    }

    #[test]
    fn wait_status_decoding() {
        assert_eq!(
            ExitStatus::from_wait_status(3 << 8),
            ExitStatus::Exited { code: 3 }
        );
        assert_eq!(
            ExitStatus::from_wait_status(9),
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            ExitStatus::from_wait_status(11 | 0x80),
            ExitStatus::Signaled {
                signal: 11,
                core_dumped: true
            }
        );
    }
}
