//! The fields behaviour rules read: the event's own, its process's, and what the graph knows
//! around it (lineage, the file's first writer, the sensor's own pid and files).
//!
//! A field has zero or more values (an absent field has none; `ancestor.*` has one per
//! ancestor); a matcher holds when any value matches. Each field of an event is computed at
//! most once, however many rules read it.

use std::{borrow::Cow, cell::OnceCell, fmt};

use sensor_common::decode::StreamKind;

use crate::{
    model::events::{Event, What},
    model::process_table::ProcessKey,
    pattern::FieldValue,
};

/// What a process looks like to a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcFacts {
    pub key: ProcessKey,
    pub ppid: u32,
    pub parent: Option<ProcessKey>,
    pub exe: Option<String>,
    pub argv: Vec<String>,
}

/// What the sensor knows beyond the event itself: the process table and the graph when live,
/// the replayed events in a rule test.
pub trait Facts {
    fn process(&self, key: &ProcessKey) -> Option<ProcFacts>;
    /// The nearest `max` known ancestors, parent first.
    fn ancestors(&self, key: &ProcessKey, max: usize) -> Vec<ProcFacts>;
    /// The first process seen writing or creating `path`.
    fn first_writer(&self, path: &str) -> Option<ProcessKey>;
    /// Whether an execute bit was set on `path` by chmod since the sensor started.
    fn made_executable(&self, path: &str) -> bool;
    /// Whether `key` made (or tried) an inet connection or accepted one.
    fn networked(&self, key: &ProcessKey) -> bool;
    /// Whether `key` listened on or accepted from an inet socket.
    fn serving(&self, key: &ProcessKey) -> bool;
    /// The live process with this pid, by identity.
    fn live(&self, pid: u32) -> Option<ProcessKey>;
    /// Whether `pid` is the sensor.
    fn is_sensor(&self, pid: u32) -> bool;
    /// Whether `path` is one of the sensor's own files (binary, state, policy, rules).
    fn is_sensor_path(&self, path: &str) -> bool;
    /// Whether `path` has the SHA-256 of a quarantined file.
    fn hash_blocked(&self, path: &str) -> bool;
    /// Whether the object `BPF_*_GET_FD_BY_ID` (command `cmd`) asks for by `id` is one of
    /// the sensor's own programs, maps or links.
    fn is_sensor_bpf_object(&self, cmd: u64, id: u32) -> bool;
}

macro_rules! fields {
    ($($variant:ident = $name:literal: $doc:literal,)*) => {
        /// A field a rule can name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Field { $(#[doc = $doc] $variant,)* }

        impl Field {
            pub const ALL: &[Field] = &[$(Field::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }

            pub fn doc(self) -> &'static str {
                match self { $(Field::$variant => $doc,)* }
            }
        }
    };
}

fields! {
    Kind = "kind": "event kind: exec, open, unlink, rename, chmod, chown, connect, accept, bind, listen, setuid, setgid, capset, ptrace, module_load, bpf, memfd_create, mount, kill, xattr, process_vm, set_name, utimes, set_flags",
    Syscall = "syscall": "the system call's name (syscall events)",
    Success = "success": "true unless the system call failed",
    Error = "error": "the error's name when the call failed (EACCES, ...)",
    Process = "process": "the acting process's identity, pid:start (for bind)",
    Pid = "pid": "the acting process's pid",
    Exe = "exe": "the acting process's executable path",
    Name = "name": "the executable's file name",
    Comm = "comm": "the kernel's task name",
    Cmdline = "cmdline": "the argument vector joined by spaces",
    Uid = "uid": "real user id",
    Euid = "euid": "effective user id",
    Parent = "parent": "the parent's identity, pid:start",
    ParentExe = "parent.exe": "the parent's executable path",
    ParentName = "parent.name": "the parent's executable file name",
    ParentCmdline = "parent.cmdline": "the parent's argument vector",
    ParentPid = "parent.pid": "the parent's pid",
    ParentNetworked = "parent.networked": "whether the parent made or accepted an inet connection",
    KernelSpawned = "kernel_spawned": "the kernel started the process (a usermode helper such as modprobe)",
    AncestorExe = "ancestor.exe": "every known ancestor's executable path",
    AncestorName = "ancestor.name": "every known ancestor's executable file name",
    AncestorCmdline = "ancestor.cmdline": "every known ancestor's argument vector",
    AncestorServingCmdline = "ancestor.serving.cmdline": "argument vectors of the ancestors that listen on or accepted from an inet socket",
    Stdin = "stdin": "exec: what fd 0 is: file, directory, pipe, socket, tty, null, char_device, closed, other",
    Stdout = "stdout": "exec: what fd 1 is",
    Stderr = "stderr": "exec: what fd 2 is",
    StdinInode = "stdin.inode": "exec: fd 0's inode number (a pipe's identity, shared with the writer's stdout)",
    StdoutInode = "stdout.inode": "exec: fd 1's inode number",
    Fileless = "fileless": "exec: the image has no link on disk (deleted file or memfd)",
    Memfd = "memfd": "exec: the image is a memfd",
    Blocked = "blocked": "exec: the in-kernel blocklist killed it before its first instruction",
    HashBlocked = "hash_blocked": "exec: the executed file, written since the sensor started, has the SHA-256 of a quarantined file",
    Writer = "writer": "exec: identity of the first process that wrote the executed file",
    WriterExe = "writer.exe": "exec: executable of the first process that wrote the executed file; other events: of the named file",
    WriterName = "writer.name": "file name of writer.exe",
    WriterNetworked = "writer.networked": "whether that writer made or accepted an inet connection",
    MadeExecutable = "made_executable": "exec: whether chmod set an execute bit on the executed file",
    Path = "path": "the file acted on (for rename, the new name; for mount, the target)",
    From = "from": "rename: the old name",
    FileType = "file_type": "file, directory, char_device, block_device, fifo, socket, symlink",
    Write = "write": "open: for writing",
    Create = "create": "open: may create",
    Truncate = "truncate": "open: truncates",
    SensitiveRead = "sensitive_read": "open: a read-only open of a sensitive file (shadow, keys...)",
    Mode = "mode": "chmod: the new mode, octal (4755)",
    Setuid = "setuid": "chmod: sets the setuid bit",
    Setgid = "setgid": "chmod: sets the setgid bit",
    ExecBit = "exec_bit": "chmod: sets any execute bit",
    SensorFile = "sensor_file": "the file is one of the sensor's own",
    Family = "family": "socket family: inet, inet6, unix",
    Protocol = "protocol": "tcp, udp, ...",
    RemoteIp = "remote_ip": "connect/accept: the peer's address",
    RemotePort = "remote_port": "connect/accept: the peer's port",
    LocalPort = "local_port": "bind/listen/accept: the local port",
    Request = "request": "ptrace: the request's name (PTRACE_ATTACH, ...)",
    Signal = "signal": "kill: the signal number",
    TargetPid = "target.pid": "kill/ptrace/process_vm: the target pid; open: the process whose /proc/PID/mem, environ or maps it is",
    TargetSensor = "target.sensor": "kill/ptrace: the target is the sensor",
    TargetDescendant = "target.descendant": "kill/ptrace: the target descends from the actor",
    TargetSelf = "target.self": "kill/ptrace: the target is the actor itself",
    BpfCommand = "bpf_command": "bpf: the command's name (BPF_PROG_LOAD, ...)",
    ProgType = "prog_type": "bpf: the program type number",
    BpfObjectId = "bpf_object_id": "bpf: the program, map or link id a GET_FD_BY_ID command asks for",
    BpfSensorObject = "bpf_sensor_object": "bpf: the object asked for by id is one of the sensor's own programs, maps or links",
    MemfdName = "memfd_name": "memfd_create: the name",
    Env = "env": "exec: each captured environment variable, NAME=value (LD_PRELOAD, BASH_ENV, HISTFILE...)",
    EnvName = "env.name": "exec: each captured environment variable's name",
    EnvTruncated = "env_truncated": "exec: not every environment variable was looked at, or a value was cut",
    Script = "script": "exec of an interpreter with a script file (bash x.sh, python3 y.py): the script's path",
    ScriptWriterExe = "script.writer.exe": "exec: executable of the first process that wrote the script",
    ScriptWriterName = "script.writer.name": "file name of script.writer.exe",
    ScriptWriterNetworked = "script.writer.networked": "whether the script's first writer made or accepted an inet connection",
    ScriptMadeExecutable = "script.made_executable": "whether chmod set an execute bit on the script",
    Xattr = "xattr": "xattr: the attribute's name (security.capability, user.x...)",
    XattrSet = "xattr_set": "xattr: true when set, false when removed",
    Capabilities = "capabilities": "xattr: each capability a security.capability value grants (cap_setuid...)",
    TargetName = "target.name": "kill/ptrace/process_vm/open of /proc/PID/mem: the target's executable file name",
    TargetExe = "target.exe": "the target's executable path",
    TargetWrite = "target.write": "process_vm: true for process_vm_writev",
    Sysctl = "sysctl": "open: for a file under /proc/sys, the sysctl it is (kernel.randomize_va_space)",
    NewName = "new_name": "set_name: the name the process gave itself (prctl PR_SET_NAME)",
    TimesSet = "times_set": "utimes: explicit (times given, as touch -t/-r) or now",
    Immutable = "immutable": "set_flags: sets the immutable flag (chattr +i)",
    AppendOnly = "append_only": "set_flags: sets the append-only flag (chattr +a)",
    RenameSuffix = "rename_suffix": "rename: what the new name adds to the old one when it keeps it whole (x.doc to x.doc.locked: .locked)",
}

impl Field {
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of an event kind as rules write it.
pub fn kind_name(what: &What) -> &'static str {
    match what {
        What::Fork => "fork",
        What::Exec { .. } => "exec",
        What::Exit { .. } => "exit",
        What::Open { .. } => "open",
        What::Unlink { .. } => "unlink",
        What::Rename { .. } => "rename",
        What::Chmod { .. } => "chmod",
        What::Chown { .. } => "chown",
        What::Connect { .. } => "connect",
        What::Accept { .. } => "accept",
        What::Bind { .. } => "bind",
        What::Listen { .. } => "listen",
        What::SetUid { .. } => "setuid",
        What::SetGid { .. } => "setgid",
        What::Capset { .. } => "capset",
        What::Ptrace { .. } => "ptrace",
        What::ModuleLoad { .. } => "module_load",
        What::Bpf { .. } => "bpf",
        What::MemfdCreate { .. } => "memfd_create",
        What::Mount { .. } => "mount",
        What::Kill { .. } => "kill",
        What::PidfdOpen { .. } => "pidfd_open",
        What::PidfdGetfd { .. } => "pidfd_getfd",
        What::PidfdSignal { .. } => "pidfd_signal",
        What::Xattr { .. } => "xattr",
        What::ProcessVm { .. } => "process_vm",
        What::SetName { .. } => "set_name",
        What::Utimes { .. } => "utimes",
        What::SetFlags { .. } => "set_flags",
    }
}

/// Every kind a rule may name.
pub const KINDS: &[&str] = &[
    "fork",
    "exec",
    "exit",
    "open",
    "unlink",
    "rename",
    "chmod",
    "chown",
    "connect",
    "accept",
    "bind",
    "listen",
    "setuid",
    "setgid",
    "capset",
    "ptrace",
    "module_load",
    "bpf",
    "memfd_create",
    "mount",
    "kill",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_signal",
    "xattr",
    "process_vm",
    "set_name",
    "utimes",
    "set_flags",
];

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn key_text(k: ProcessKey) -> String {
    format!("{}:{}", k.pid, k.start)
}

fn stream(s: StreamKind) -> &'static str {
    match s {
        StreamKind::Closed => "closed",
        StreamKind::File => "file",
        StreamKind::Directory => "directory",
        StreamKind::Pipe => "pipe",
        StreamKind::Socket => "socket",
        StreamKind::Tty => "tty",
        StreamKind::Null => "null",
        StreamKind::CharDevice => "char_device",
        StreamKind::Other => "other",
    }
}

fn file_type(t: crate::model::events::FileType) -> &'static str {
    use crate::model::events::FileType as T;
    match t {
        T::File => "file",
        T::Directory => "directory",
        T::CharDevice => "char_device",
        T::BlockDevice => "block_device",
        T::Fifo => "fifo",
        T::Socket => "socket",
        T::Symlink => "symlink",
    }
}

fn truth(b: bool) -> Cow<'static, str> {
    Cow::Borrowed(if b { "true" } else { "false" })
}

const FIELD_COUNT: usize = Field::ALL.len();

/// A field's values as computed: most fields have none or one, kept without a heap list.
type Computed = smallvec::SmallVec<[Cow<'static, str>; 1]>;

/// A field's values, prepared for matching.
type Values = smallvec::SmallVec<[FieldValue; 1]>;

/// One event as rules see it, with every field computed on first use.
pub struct View<'a> {
    pub event: &'a Event,
    /// The acting process's argument vector.
    pub argv: &'a [String],
    facts: &'a dyn Facts,
    cache: [OnceCell<Values>; FIELD_COUNT],
    ancestors: OnceCell<Vec<ProcFacts>>,
    parent: OnceCell<Option<ProcFacts>>,
}

/// How far up the lineage `ancestor.*` looks.
const ANCESTOR_DEPTH: usize = 16;

impl<'a> View<'a> {
    pub fn new(event: &'a Event, argv: &'a [String], facts: &'a dyn Facts) -> Self {
        Self {
            event,
            argv,
            facts,
            cache: std::array::from_fn(|_| OnceCell::new()),
            ancestors: OnceCell::new(),
            parent: OnceCell::new(),
        }
    }

    pub fn key(&self) -> ProcessKey {
        ProcessKey {
            pid: self.event.pid,
            start: self.event.start,
        }
    }

    pub fn facts(&self) -> &dyn Facts {
        self.facts
    }

    fn ancestors(&self) -> &[ProcFacts] {
        self.ancestors
            .get_or_init(|| self.facts.ancestors(&self.key(), ANCESTOR_DEPTH))
    }

    fn parent(&self) -> Option<&ProcFacts> {
        self.parent
            .get_or_init(|| match self.event.parent {
                Some(k) => self.facts.process(&k),
                None => None,
            })
            .as_ref()
    }

    /// The values of `field` for this event.
    pub fn get(&self, field: Field) -> &[FieldValue] {
        let ix = field as usize;
        self.cache[ix].get_or_init(|| {
            self.compute(field)
                .into_iter()
                .map(FieldValue::new)
                .collect()
        })
    }

    /// The first value of `field`, as text.
    pub fn text(&self, field: Field) -> Option<&str> {
        self.get(field).first().map(|v| v.raw.as_ref())
    }

    fn path(&self) -> Option<&str> {
        match &self.event.what {
            What::Open { file, .. }
            | What::Unlink { file }
            | What::Chmod { file, .. }
            | What::Chown { file, .. }
            | What::Rename { to: file, .. }
            | What::Mount { target: file, .. }
            | What::Xattr { file, .. }
            | What::Utimes { file, .. }
            | What::SetFlags { file, .. } => file.path.as_deref(),
            What::ModuleLoad { file, .. } => file.as_ref().and_then(|f| f.path.as_deref()),
            What::Exec { .. } => self.event.exe.as_deref(),
            _ => None,
        }
    }

    fn target_pid(&self) -> Option<i64> {
        self.event.what.target_pid()
    }

    // Long by design: one arm per field of the rule language, each a line or two; splitting it would scatter the table.

    fn compute(&self, field: Field) -> Computed {
        let e = self.event;
        let one = |s: Option<String>| s.into_iter().map(Cow::Owned).collect::<Computed>();
        let flag = |b: Option<bool>| b.map(truth).into_iter().collect::<Computed>();
        let net = match &e.what {
            What::Connect { net } | What::Accept { net } | What::Bind { net } => Some(net),
            What::Listen { net, .. } => Some(net),
            _ => None,
        };
        match field {
            Field::Kind => smallvec::smallvec![Cow::Borrowed(kind_name(&e.what))],
            Field::Syscall => one(e.syscall.clone()),
            Field::Success => smallvec::smallvec![truth(e.ret.is_none_or(|r| r >= 0))],
            Field::Error => one(e.error.clone()),
            Field::Process => smallvec::smallvec![key_text(self.key()).into()],
            Field::Pid => smallvec::smallvec![e.pid.to_string().into()],
            Field::Exe => one(e.exe.clone()),
            Field::Name => one(e.exe.as_deref().map(|x| basename(x).to_owned())),
            Field::Comm => smallvec::smallvec![e.comm.clone().into()],
            Field::Cmdline => smallvec::smallvec![self.argv.join(" ").into()],
            Field::Uid => smallvec::smallvec![e.uid.to_string().into()],
            Field::Euid => smallvec::smallvec![e.euid.to_string().into()],
            Field::Parent => one(e.parent.map(key_text)),
            Field::ParentExe => one(self.parent().and_then(|p| p.exe.clone())),
            Field::ParentName => one(self
                .parent()
                .and_then(|p| p.exe.as_deref().map(|x| basename(x).to_owned()))),
            Field::ParentCmdline => one(self.parent().map(|p| p.argv.join(" "))),
            Field::ParentPid => smallvec::smallvec![e.ppid.to_string().into()],
            Field::ParentNetworked => flag(e.parent.map(|k| self.facts.networked(&k))),
            Field::KernelSpawned => smallvec::smallvec![truth(
                e.ppid == 2
                    || self
                        .parent()
                        .is_some_and(|p| p.exe.is_none() && p.ppid == 2),
            )],
            Field::AncestorExe => self
                .ancestors()
                .iter()
                .filter_map(|a| a.exe.clone())
                .map(Cow::Owned)
                .collect(),
            Field::AncestorName => self
                .ancestors()
                .iter()
                .filter_map(|a| a.exe.as_deref().map(|x| basename(x).to_owned()))
                .map(Cow::Owned)
                .collect(),
            Field::AncestorCmdline => self
                .ancestors()
                .iter()
                .map(|a| a.argv.join(" "))
                .map(Cow::Owned)
                .collect(),
            Field::AncestorServingCmdline => self
                .ancestors()
                .iter()
                .filter(|a| self.facts.serving(&a.key))
                .map(|a| a.argv.join(" "))
                .map(Cow::Owned)
                .collect(),
            Field::Stdin | Field::Stdout | Field::Stderr => match &e.what {
                What::Exec { stdio, .. } => {
                    let i = match field {
                        Field::Stdin => 0,
                        Field::Stdout => 1,
                        _ => 2,
                    };
                    smallvec::smallvec![Cow::Borrowed(stream(stdio[i]))]
                }
                _ => Computed::new(),
            },
            Field::StdinInode | Field::StdoutInode => match &e.what {
                What::Exec { stdio_inodes, .. } => {
                    let i = usize::from(field == Field::StdoutInode);
                    one((stdio_inodes[i] != 0).then(|| stdio_inodes[i].to_string()))
                }
                _ => Computed::new(),
            },
            Field::Fileless => flag(match &e.what {
                What::Exec { fileless, .. } => Some(*fileless),
                _ => None,
            }),
            Field::HashBlocked => match &e.what {
                What::Exec { .. } => flag(self.path().map(|p| self.facts.hash_blocked(p))),
                _ => Computed::new(),
            },
            Field::Blocked => flag(match &e.what {
                What::Exec { blocked, .. } => Some(*blocked),
                _ => None,
            }),
            Field::Memfd => flag(match &e.what {
                What::Exec { memfd, .. } => Some(*memfd),
                _ => None,
            }),
            Field::Writer | Field::WriterExe | Field::WriterName | Field::WriterNetworked => {
                let Some(w) = self.path().and_then(|p| self.facts.first_writer(p)) else {
                    return Computed::new();
                };
                match field {
                    Field::Writer => smallvec::smallvec![key_text(w).into()],
                    Field::WriterNetworked => {
                        smallvec::smallvec![self.facts.networked(&w).to_string().into()]
                    }
                    _ => {
                        let exe = self.facts.process(&w).and_then(|p| p.exe);
                        one(if field == Field::WriterName {
                            exe.map(|x| basename(&x).to_owned())
                        } else {
                            exe
                        })
                    }
                }
            }
            Field::MadeExecutable => match &e.what {
                What::Exec { .. } => flag(self.path().map(|p| self.facts.made_executable(p))),
                _ => Computed::new(),
            },
            Field::Path => one(self.path().map(str::to_owned)),
            Field::From => match &e.what {
                What::Rename { file, .. } => one(file.path.clone()),
                _ => Computed::new(),
            },
            Field::FileType => match &e.what {
                What::Open { file, .. }
                | What::Unlink { file }
                | What::Chmod { file, .. }
                | What::Chown { file, .. }
                | What::Rename { file, .. } => one(file.file_type.map(|t| file_type(t).to_owned())),
                _ => Computed::new(),
            },
            Field::Write | Field::Create | Field::Truncate | Field::SensitiveRead => {
                match &e.what {
                    What::Open {
                        write,
                        create,
                        truncate,
                        sensitive_read,
                        ..
                    } => smallvec::smallvec![truth(match field {
                        Field::Write => *write,
                        Field::Create => *create,
                        Field::Truncate => *truncate,
                        _ => *sensitive_read,
                    })],
                    _ => Computed::new(),
                }
            }
            Field::Mode | Field::Setuid | Field::Setgid | Field::ExecBit => match &e.what {
                What::Chmod {
                    mode,
                    setuid,
                    setgid,
                    ..
                } => smallvec::smallvec![match field {
                    Field::Mode => format!("{mode:o}").into(),
                    Field::Setuid => truth(*setuid),
                    Field::Setgid => truth(*setgid),
                    _ => truth(mode & 0o111 != 0),
                }],
                _ => Computed::new(),
            },
            Field::SensorFile => flag(self.path().map(|p| self.facts.is_sensor_path(p))),
            Field::Family => one(net.map(|n| n.family.clone())),
            Field::Protocol => one(net.map(|n| n.protocol.clone())),
            Field::RemoteIp => one(net.and_then(|n| n.remote).map(|a| a.ip().to_string())),
            Field::RemotePort => one(net.and_then(|n| n.remote).map(|a| a.port().to_string())),
            Field::LocalPort => one(net.and_then(|n| n.local).map(|a| a.port().to_string())),
            Field::Request => match &e.what {
                What::Ptrace {
                    request,
                    request_name,
                    ..
                } => smallvec::smallvec![
                    request_name
                        .clone()
                        .unwrap_or_else(|| request.to_string())
                        .into(),
                ],
                _ => Computed::new(),
            },
            Field::Signal => match &e.what {
                What::Kill { signal, .. } => smallvec::smallvec![signal.to_string().into()],
                _ => Computed::new(),
            },
            Field::TargetPid => one(self.target_pid().map(|t| t.to_string())),
            Field::TargetSensor => flag(
                self.target_pid()
                    .map(|t| u32::try_from(t).is_ok_and(|t| self.facts.is_sensor(t))),
            ),
            Field::TargetSelf => flag(self.target_pid().map(|t| t == i64::from(e.pid))),
            Field::TargetDescendant => flag(self.target_pid().map(|t| {
                let me = self.key();
                u32::try_from(t)
                    .ok()
                    .and_then(|t| self.facts.live(t))
                    .is_some_and(|target| {
                        self.facts
                            .ancestors(&target, ANCESTOR_DEPTH)
                            .iter()
                            .any(|a| a.key == me)
                    })
            })),
            Field::BpfCommand => match &e.what {
                What::Bpf {
                    command,
                    command_name,
                    ..
                } => smallvec::smallvec![
                    command_name
                        .clone()
                        .unwrap_or_else(|| command.to_string())
                        .into(),
                ],
                _ => Computed::new(),
            },
            Field::ProgType => match &e.what {
                What::Bpf { prog_type, .. } => one(prog_type.map(|t| t.to_string())),
                _ => Computed::new(),
            },
            Field::BpfObjectId => match &e.what {
                What::Bpf { object_id, .. } => one(object_id.map(|t| t.to_string())),
                _ => Computed::new(),
            },
            Field::BpfSensorObject => flag(match &e.what {
                What::Bpf {
                    command,
                    object_id: Some(id),
                    ..
                } => Some(self.facts.is_sensor_bpf_object(*command, *id)),
                _ => None,
            }),
            Field::MemfdName => match &e.what {
                What::MemfdCreate { name, .. } => one(name.clone()),
                _ => Computed::new(),
            },
            Field::Env | Field::EnvName | Field::EnvTruncated => match &e.what {
                What::Exec {
                    env, env_truncated, ..
                } => match field {
                    Field::Env => env.iter().cloned().map(Cow::Owned).collect(),
                    Field::EnvName => env
                        .iter()
                        .map(|v| v.split_once('=').map_or(v.as_str(), |(n, _)| n))
                        .map(|n| Cow::Owned(n.to_owned()))
                        .collect(),
                    _ => smallvec::smallvec![truth(*env_truncated)],
                },
                _ => Computed::new(),
            },
            Field::Script
            | Field::ScriptWriterExe
            | Field::ScriptWriterName
            | Field::ScriptWriterNetworked
            | Field::ScriptMadeExecutable => {
                let What::Exec {
                    script: Some(script),
                    ..
                } = &e.what
                else {
                    return Computed::new();
                };
                match field {
                    Field::Script => smallvec::smallvec![script.path.clone().into()],
                    Field::ScriptMadeExecutable => {
                        smallvec::smallvec![truth(self.facts.made_executable(&script.path))]
                    }
                    _ => {
                        let Some(w) = self.facts.first_writer(&script.path) else {
                            return Computed::new();
                        };
                        match field {
                            Field::ScriptWriterNetworked => {
                                smallvec::smallvec![truth(self.facts.networked(&w))]
                            }
                            _ => {
                                let exe = self.facts.process(&w).and_then(|p| p.exe);
                                one(if field == Field::ScriptWriterName {
                                    exe.map(|x| basename(&x).to_owned())
                                } else {
                                    exe
                                })
                            }
                        }
                    }
                }
            }
            Field::Xattr | Field::XattrSet | Field::Capabilities => match &e.what {
                What::Xattr {
                    name,
                    set,
                    capabilities,
                    ..
                } => match field {
                    Field::Xattr => one(name.clone()),
                    Field::XattrSet => smallvec::smallvec![truth(*set)],
                    _ => capabilities.iter().cloned().map(Cow::Owned).collect(),
                },
                _ => Computed::new(),
            },
            Field::TargetName | Field::TargetExe => {
                let exe = self
                    .target_pid()
                    .and_then(|t| u32::try_from(t).ok())
                    .and_then(|t| self.facts.live(t))
                    .and_then(|k| self.facts.process(&k))
                    .and_then(|p| p.exe);
                one(if field == Field::TargetName {
                    exe.map(|x| basename(&x).to_owned())
                } else {
                    exe
                })
            }
            Field::TargetWrite => match &e.what {
                What::ProcessVm { write, .. } => smallvec::smallvec![truth(*write)],
                _ => Computed::new(),
            },
            Field::Sysctl => match &e.what {
                What::Open { sysctl, .. } => one(sysctl.clone()),
                _ => Computed::new(),
            },
            Field::NewName => match &e.what {
                What::SetName { name } => one(Some(name.clone())),
                _ => Computed::new(),
            },
            Field::TimesSet => match &e.what {
                What::Utimes {
                    atime_ns, mtime_ns, ..
                } => smallvec::smallvec![Cow::Borrowed(
                    if atime_ns.is_some() || mtime_ns.is_some() {
                        "explicit"
                    } else {
                        "now"
                    }
                )],
                _ => Computed::new(),
            },
            Field::RenameSuffix => match &e.what {
                What::Rename { file, to } => one(file
                    .path
                    .as_deref()
                    .zip(to.path.as_deref())
                    .and_then(|(from, to)| to.strip_prefix(from))
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)),
                _ => Computed::new(),
            },
            Field::Immutable | Field::AppendOnly => match &e.what {
                What::SetFlags {
                    immutable,
                    append_only,
                    ..
                } => smallvec::smallvec![truth(if field == Field::Immutable {
                    *immutable
                } else {
                    *append_only
                })],
                _ => Computed::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_documented_for_rule_authors() {
        let doc = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/rules/README.md"
        ));
        for f in Field::ALL {
            assert!(
                doc.contains(&format!("| `{}` |", f.name())),
                "deploy/rules/README.md does not document the field `{}`",
                f.name()
            );
            assert_eq!(Field::parse(f.name()), Some(*f));
        }
    }
}
