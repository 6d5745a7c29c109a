//! Loading the kernel programs with their configuration, and attaching them.

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        CgroupSkb, CgroupSockAddr, ProgramError, RawTracePoint, TracePoint,
        links::{FdLink, PinnedLink},
        raw_trace_point::RawTracePointLink,
        trace_point::TracePointLink,
    },
};
use sensor_common::{
    config::KernelConfig,
    limits::{ENV_KEY_LEN, SENSITIVE_NAME_LEN},
    syscall::Syscall,
};
use serde::{Deserialize, Serialize};

use super::{
    EBPF_OBJECT,
    btf::{BtfError, KernelBtf},
    cgroup_link::{CgroupAttach, CgroupProgram},
    layout::{LayoutError, tracepoint_layout},
    pins::{PINNED_MAPS, PinError, PinStatus, Pins},
    probe::{HookSupport, ProbeError},
    tracefs::{TracefsError, ensure_mounted},
};

/// How a program hooks the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    Tracepoint,
    RawTracepoint,
    /// cgroup `connect4`/`connect6`: the target is the cgroup directory.
    CgroupSockAddr,
    /// cgroup `skb` ingress or egress: the target is the cgroup directory.
    CgroupSkb,
}

/// One program and where it attaches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSpec {
    pub program: String,
    pub kind: HookKind,
    /// `category/name` for a tracepoint, `name` for a raw tracepoint.
    pub target: String,
    /// Skipped, with a log line, when this kernel lacks the tracepoint (some syscalls exist
    /// only on some architectures: `open`, `rename`, `chmod`... are absent on arm64).
    pub optional: bool,
}

impl HookSpec {
    fn new(program: &str, kind: HookKind, target: &str) -> Self {
        Self {
            program: program.to_owned(),
            kind,
            target: target.to_owned(),
            optional: false,
        }
    }
}

/// Every program `vigil-sensor run` attaches: process lifecycle, then an exit program for each
/// monitored syscall (which reads the call's arguments from the registers saved at entry).
pub fn hooks() -> Vec<HookSpec> {
    let mut hooks = vec![
        HookSpec::new("vigil_fork", HookKind::RawTracepoint, "sched_process_fork"),
        HookSpec::new(
            "vigil_exec",
            HookKind::Tracepoint,
            "sched/sched_process_exec",
        ),
        HookSpec::new(
            "vigil_exit",
            HookKind::Tracepoint,
            "sched/sched_process_exit",
        ),
        HookSpec::new(
            "vigil_execve",
            HookKind::Tracepoint,
            "syscalls/sys_enter_execve",
        ),
        HookSpec::new(
            "vigil_execveat",
            HookKind::Tracepoint,
            "syscalls/sys_enter_execveat",
        ),
    ];
    for sys in Syscall::ALL {
        let name = sys.name();
        hooks.push(HookSpec {
            program: format!("vigil_exit_{name}"),
            kind: HookKind::Tracepoint,
            target: format!("syscalls/sys_exit_{name}"),
            optional: true,
        });
    }
    hooks
}

/// The network containment programs (`netguard`) and where each attaches in a cgroup.
const NETWORK_PROGRAMS: [(&str, HookKind, CgroupAttach); 4] = [
    (
        "vigil_connect4",
        HookKind::CgroupSockAddr,
        CgroupAttach::Connect4,
    ),
    (
        "vigil_connect6",
        HookKind::CgroupSockAddr,
        CgroupAttach::Connect6,
    ),
    ("vigil_egress", HookKind::CgroupSkb, CgroupAttach::Egress),
    ("vigil_ingress", HookKind::CgroupSkb, CgroupAttach::Ingress),
];

/// The program kept in the object to prove verifier rejections are reported well.
pub fn selftest_rejected() -> HookSpec {
    HookSpec::new(
        "vigil_selftest_rejected",
        HookKind::Tracepoint,
        "sched/sched_process_exec",
    )
}

/// File names whose read-only opens are reported by default: credential stores and private
/// keys. Opens for writing are always reported.
pub const DEFAULT_SENSITIVE_NAMES: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "opasswd",
    "master.passwd",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "id_ecdsa_sk",
    "id_ed25519_sk",
    "ssh_host_rsa_key",
    "ssh_host_ecdsa_key",
    "ssh_host_ed25519_key",
    ".pgpass",
    ".netrc",
    "credentials",
    // Another process's memory and secrets, as /proc/PID/{mem,environ,maps}: userspace keeps
    // the reads of a process other than the caller and drops a process's look at itself.
    "mem",
    "environ",
    "maps",
];

/// Environment variables captured at exec by default: the ones that change what a program
/// loads or runs (the dynamic loader's, the shells' start-up files and hooks, Python's path)
/// and the ones that switch shell history off.
pub const DEFAULT_ENV_NAMES: &[&str] = &[
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "BASH_ENV",
    "ENV",
    "PROMPT_COMMAND",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PERL5OPT",
    "RUBYOPT",
    "NODE_OPTIONS",
    "HISTFILE",
    "HISTSIZE",
    "HISTFILESIZE",
    "HISTCONTROL",
];

/// Lines of the verifier log kept in an error: the end is where the reason is.
const VERIFIER_TAIL_LINES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this vigil-sensor carries no kernel programs (it was built with AYA_BUILD_SKIP=1); rebuild it after `cargo xtask setup`"
    )]
    NoObject,
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(
        "ring buffer size {0} bytes is invalid: it must be a power of two and a multiple of the 4096-byte page"
    )]
    RingBufferSize(u32),
    #[error("cannot load the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
    #[error("sensitive file name {0:?} is empty or longer than {SENSITIVE_NAME_LEN} bytes")]
    SensitiveName(String),
    #[error(
        "environment variable name {0:?} cannot be captured: it must be 1 to 128 bytes of letters, digits and '_'"
    )]
    EnvName(String),
    #[error("at most {max} environment variables can be captured, {given} were given")]
    TooManyEnvNames { given: usize, max: usize },
    #[error("cannot fill map {map}: {source}")]
    MapFill {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error(
        "the kernel verifier rejected program {program}: {reason}\n--- verifier log (last lines) ---\n{log_tail}"
    )]
    Verifier {
        program: String,
        reason: std::io::Error,
        log_tail: String,
    },
    #[error("cannot load program {program}: {source}")]
    Program {
        program: String,
        source: Box<ProgramError>,
    },
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error("cannot pin the link of {program}: {source}")]
    PinLink {
        program: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot attach program {program} to {target}: {source}")]
    Attach {
        program: String,
        target: String,
        source: Box<ProgramError>,
    },
}

/// What the loader needs to know.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub btf_path: PathBuf,
    pub ring_buffer_bytes: u32,
    /// Activity of this process is filtered in the kernel (and counted).
    pub sensor_tgid: u32,
    /// File names whose read-only opens are reported.
    pub sensitive_names: Vec<String>,
    /// See `KernelConfig::coalesce_ms`.
    pub coalesce_ms: u32,
    /// Environment variables captured at exec.
    pub env_names: Vec<String>,
    /// The bpffs directory enforcement is pinned under, so that it outlives the process;
    /// None runs without pins (enforcement then ends with the process).
    pub pin_dir: Option<PathBuf>,
}

/// The program that enforces the exec blocklist: its link is pinned.
const ENFORCING_PROGRAM: &str = "vigil_exec";

/// One attachment. Dropping it detaches the program.
enum Link {
    // Held only to be dropped.
    Tracepoint(#[expect(dead_code, reason = "held for its Drop")] TracePointLink),
    Raw(#[expect(dead_code, reason = "held for its Drop")] RawTracePointLink),
    /// An enforcing link, pinned: dropping it closes this process's reference only.
    Pinned(#[expect(dead_code, reason = "held for its Drop")] PinnedLink),
}

/// Threads used to detach. Each tracepoint detach waits out an RCU grace period, mostly under
/// a kernel mutex; on several threads part of the waits overlap (measured when each syscall had
/// two programs, 71 detaches: 5.0 s one after another, 2.8 s on this 2-core VM in parallel).
const DETACH_THREADS: usize = 16;

/// Every attachment, detached in parallel when dropped.
#[derive(Default)]
struct Links(Vec<Link>);

impl Drop for Links {
    fn drop(&mut self) {
        let mut links = std::mem::take(&mut self.0);
        let per_thread = links.len().div_ceil(DETACH_THREADS).max(1);
        let mut batches = Vec::new();
        while !links.is_empty() {
            let rest = links.split_off(links.len().min(per_thread));
            batches.push(std::mem::replace(&mut links, rest));
        }
        std::thread::scope(|scope| {
            for batch in batches {
                scope.spawn(move || drop(batch));
            }
        });
    }
}

/// The loaded object. Dropping it detaches every program.
pub struct Loaded {
    /// Declared first: links are detached before the programs are unloaded.
    links: Links,
    pub ebpf: Ebpf,
    pub support: HookSupport,
    pub tracefs: PathBuf,
    pub attached: Vec<HookSpec>,
    /// Optional hooks this kernel lacks.
    pub skipped: Vec<HookSpec>,
    /// Where enforcement is pinned, when it is.
    pub pins: Option<Pins>,
    /// What was found pinned at start.
    pub pin_status: Option<PinStatus>,
}

pub use crate::host::bpf_objects::{ObjectKind, own_objects};

fn check_ring_size(bytes: u32) -> Result<(), LoadError> {
    if bytes.is_power_of_two() && bytes >= 4096 {
        Ok(())
    } else {
        Err(LoadError::RingBufferSize(bytes))
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn program_error(program: &str, e: ProgramError) -> LoadError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => LoadError::Verifier {
            program: program.to_owned(),
            reason: io_error,
            log_tail: tail(&format!("{verifier_log:?}"), VERIFIER_TAIL_LINES),
        },
        source => LoadError::Program {
            program: program.to_owned(),
            source: Box::new(source),
        },
    }
}

/// Loads the object (maps and configuration) without loading or attaching any program.
pub fn open(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    check_ring_size(opts.ring_buffer_bytes)?;
    let (tracefs, _mounted) = ensure_mounted()?;
    let support = HookSupport::probe();
    tracing::info!(
        tracepoint = support.tracepoint,
        raw_tracepoint = support.raw_tracepoint,
        ring_buffer = support.ring_buffer,
        fentry = support.fentry,
        lsm = support.lsm,
        "probed kernel hook support"
    );
    support.require_baseline()?;
    let (task_layout, file_layout, regs) = {
        let btf = KernelBtf::open(&opts.btf_path)?;
        (btf.task_layout()?, btf.file_layout()?, btf.regs_layout()?)
    };
    let config = KernelConfig {
        sensor_tgid: opts.sensor_tgid,
        wakeup_bytes: opts.ring_buffer_bytes / 4,
        coalesce_ms: opts.coalesce_ms,
        sensitive_last: last_bytes(&opts.sensitive_names),
        regs,
        task: task_layout,
        files: file_layout,
        tracepoints: tracepoint_layout(&tracefs)?,
    };
    tracing::debug!(?config, "kernel layout resolved");
    let pins = match &opts.pin_dir {
        Some(dir) => Some(Pins::open(
            dir,
            &super::pins::version_of(EBPF_OBJECT),
            &format!("{:x}", opts.sensor_tgid),
        )?),
        None => None,
    };
    let pin_status = pins.as_ref().map(|p| PinStatus {
        dir: p.dir().to_owned(),
        adopted_links: p.previous().len(),
        other_versions: 0,
        adopted_maps: PINNED_MAPS.iter().all(|m| p.map_pinned(m)),
    });
    let map_paths: Vec<(&str, PathBuf)> = pins
        .as_ref()
        .map(|p| PINNED_MAPS.iter().map(|m| (*m, p.map_path(m))).collect())
        .unwrap_or_default();
    // The programs carry no CO-RE relocations (offsets come in through CONFIG), so aya's own
    // parse of the kernel BTF is not needed: drop it rather than hold it during the load.
    let mut loader = EbpfLoader::new();
    loader
        .btf(None)
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes);
    // A pinned map is opened, not created: what is in force carries over from the last run.
    for (name, path) in &map_paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Object)?;
    fill_sensitive_names(&mut ebpf, &opts.sensitive_names)?;
    fill_env_names(&mut ebpf, &opts.env_names)?;
    Ok(Loaded {
        links: Links::default(),
        ebpf,
        support,
        tracefs,
        attached: Vec::new(),
        skipped: Vec::new(),
        pins,
        pin_status,
    })
}

/// The set of the names' last bytes, as `KernelConfig::sensitive_last` holds it.
fn last_bytes(names: &[String]) -> [u32; 8] {
    let mut set = [0u32; 8];
    for b in names.iter().filter_map(|n| n.as_bytes().last()) {
        set[usize::from(*b / 32)] |= 1 << (b % 32);
    }
    set
}

/// Writes the sensitive file names, zero-padded, into the kernel's set.
fn fill_sensitive_names(ebpf: &mut Ebpf, names: &[String]) -> Result<(), LoadError> {
    const MAP: &str = "SENSITIVE_NAMES";
    let map = ebpf.map_mut(MAP).ok_or(LoadError::MissingMap(MAP))?;
    let mut set: aya::maps::HashMap<_, [u8; SENSITIVE_NAME_LEN], u8> =
        aya::maps::HashMap::try_from(map)
            .map_err(|source| LoadError::MapFill { map: MAP, source })?;
    for name in names {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= SENSITIVE_NAME_LEN || bytes.contains(&b'/') {
            return Err(LoadError::SensitiveName(name.clone()));
        }
        let mut key = [0u8; SENSITIVE_NAME_LEN];
        key[..bytes.len()].copy_from_slice(bytes);
        set.insert(key, 1, 0)
            .map_err(|source| LoadError::MapFill { map: MAP, source })?;
    }
    Ok(())
}

/// Most environment variable names the kernel selects by (the size of its map).
pub const ENV_NAMES_MAX: usize = 64;

/// The kernel's key for an environment variable name: the first
/// [`sensor_common::limits::ENV_KEY_LEN`] bytes of `NAME=`, zero-padded.
pub fn env_key(name: &str) -> Result<[u8; ENV_KEY_LEN], LoadError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(LoadError::EnvName(name.to_owned()));
    }
    let mut key = [0u8; ENV_KEY_LEN];
    for (k, b) in key
        .iter_mut()
        .zip(name.bytes().chain(std::iter::once(b'=')))
    {
        *k = b;
    }
    Ok(key)
}

/// Writes the keys of the captured environment variables into the kernel's set.
fn fill_env_names(ebpf: &mut Ebpf, names: &[String]) -> Result<(), LoadError> {
    const MAP: &str = "ENV_NAMES";
    if names.len() > ENV_NAMES_MAX {
        return Err(LoadError::TooManyEnvNames {
            given: names.len(),
            max: ENV_NAMES_MAX,
        });
    }
    let keys = names
        .iter()
        .map(|n| env_key(n))
        .collect::<Result<Vec<_>, _>>()?;
    let map = ebpf.map_mut(MAP).ok_or(LoadError::MissingMap(MAP))?;
    let mut set: aya::maps::HashMap<_, [u8; ENV_KEY_LEN], u8> =
        aya::maps::HashMap::try_from(map)
            .map_err(|source| LoadError::MapFill { map: MAP, source })?;
    for key in keys {
        set.insert(key, 1, 0)
            .map_err(|source| LoadError::MapFill { map: MAP, source })?;
    }
    Ok(())
}

impl Loaded {
    /// Loads one program into the kernel (the verifier runs here).
    pub fn load_program(&mut self, spec: &HookSpec) -> Result<(), LoadError> {
        let name = spec.program.as_str();
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::MissingProgram(name.to_owned()))?;
        let result = match spec.kind {
            HookKind::Tracepoint => {
                let p: &mut TracePoint = prog.try_into().map_err(|e| program_error(name, e))?;
                p.load()
            }
            HookKind::RawTracepoint => {
                let p: &mut RawTracePoint = prog.try_into().map_err(|e| program_error(name, e))?;
                p.load()
            }
            HookKind::CgroupSockAddr => {
                let p: &mut CgroupSockAddr = prog.try_into().map_err(|e| program_error(name, e))?;
                p.load()
            }
            HookKind::CgroupSkb => {
                let p: &mut CgroupSkb = prog.try_into().map_err(|e| program_error(name, e))?;
                p.load()
            }
        };
        result.map_err(|e| program_error(name, e))
    }

    fn attach(&mut self, spec: &HookSpec) -> Result<(), LoadError> {
        let attach_err = |source| LoadError::Attach {
            program: spec.program.clone(),
            target: spec.target.clone(),
            source: Box::new(source),
        };
        let prog = self
            .ebpf
            .program_mut(&spec.program)
            .ok_or_else(|| LoadError::MissingProgram(spec.program.clone()))?;
        match spec.kind {
            HookKind::Tracepoint => {
                let (category, name) = spec.target.split_once('/').unwrap_or(("", &spec.target));
                let p: &mut TracePoint = prog.try_into().map_err(attach_err)?;
                let id = p.attach(category, name).map_err(attach_err)?;
                let link = p.take_link(id).map_err(attach_err)?;
                match (&self.pins, spec.program == ENFORCING_PROGRAM) {
                    (Some(pins), true) => match pin_link(pins, &spec.program, link) {
                        Ok(pinned) => self.links.0.push(Link::Pinned(pinned)),
                        Err(e) => {
                            tracing::error!(error = %e, "exec enforcement will not outlive this sensor");
                        }
                    },
                    _ => self.links.0.push(Link::Tracepoint(link)),
                }
            }
            HookKind::RawTracepoint => {
                let p: &mut RawTracePoint = prog.try_into().map_err(attach_err)?;
                let id = p.attach(&spec.target).map_err(attach_err)?;
                let link = p.take_link(id).map_err(attach_err)?;
                self.links.0.push(Link::Raw(link));
            }
            HookKind::CgroupSockAddr | HookKind::CgroupSkb => {
                // Attached only while containment is in force, through `cgroup_link`.
                return Err(attach_err(ProgramError::IOError(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "cgroup programs are attached by network containment",
                ))));
            }
        }
        Ok(())
    }

    /// Loads the network containment programs (the verifier runs here, at start-up) without
    /// attaching them: containment attaches them, as BPF links beside any other programs, only
    /// while an isolation or a block is in force (`cgroup_link`).
    pub fn load_network(
        &mut self,
        cgroup: &std::path::Path,
    ) -> Result<Vec<CgroupProgram>, LoadError> {
        let mut programs = Vec::new();
        for (name, kind, attach) in NETWORK_PROGRAMS {
            let spec = HookSpec::new(name, kind, &cgroup.display().to_string());
            self.load_program(&spec)?;
            let prog = self
                .ebpf
                .program(name)
                .ok_or_else(|| LoadError::MissingProgram(name.to_owned()))?;
            let fd = prog
                .fd()
                .and_then(|fd| fd.try_clone().map_err(ProgramError::IOError))
                .map_err(|e| program_error(name, e))?;
            programs.push(CgroupProgram {
                name: name.to_owned(),
                fd,
                attach,
            });
        }
        tracing::info!(cgroup = %cgroup.display(), "network containment programs loaded; attached while containment is in force");
        Ok(programs)
    }

    /// Loads and attaches every hook of [`hooks`], stopping at the first failure (what was
    /// attached is detached when `self` drops). Optional hooks whose tracepoint this kernel
    /// lacks are skipped and listed.
    pub fn attach_all(&mut self) -> Result<(), LoadError> {
        for spec in hooks() {
            let exists = match spec.kind {
                HookKind::Tracepoint => self.tracefs.join("events").join(&spec.target).is_dir(),
                HookKind::RawTracepoint | HookKind::CgroupSockAddr | HookKind::CgroupSkb => true,
            };
            if spec.optional && !exists {
                tracing::info!(program = %spec.program, target = %spec.target, "not on this kernel; skipped");
                self.skipped.push(spec);
                continue;
            }
            self.load_program(&spec)?;
            self.attach(&spec)?;
            tracing::debug!(program = %spec.program, kind = ?spec.kind, target = %spec.target, "attached");
            self.attached.push(spec);
        }
        tracing::info!(
            attached = self.attached.len(),
            skipped = self.skipped.len(),
            "kernel programs attached"
        );
        Ok(())
    }
}

/// Pins an enforcing tracepoint link as this run's, so that it stays attached without us.
fn pin_link(pins: &Pins, program: &str, link: TracePointLink) -> Result<PinnedLink, LoadError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| LoadError::PinLink {
        program: program.to_owned(),
        source,
    };
    let fd = FdLink::try_from(link).map_err(|e| err(Box::new(e)))?;
    let path = pins.link_path(program);
    let pinned = fd.pin(&path).map_err(|e| {
        let detail = std::iter::successors(std::error::Error::source(&e), |e| e.source())
            .map(ToString::to_string)
            .fold(e.to_string(), |all, s| format!("{all}: {s}"));
        err(format!("{}: {detail}", path.display()).into())
    })?;
    tracing::info!(path = %path.display(), "exec enforcement pinned");
    Ok(pinned)
}

/// Loads and attaches everything: the one call `vigil-sensor run` makes.
pub fn load_and_attach(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let mut loaded = open(opts)?;
    loaded.attach_all()?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_rules() {
        assert!(check_ring_size(4096).is_ok());
        assert!(check_ring_size(1 << 23).is_ok());
        assert!(check_ring_size(5000).is_err());
        assert!(check_ring_size(2048).is_err());
    }

    #[test]
    fn verifier_tail_keeps_the_end() {
        let log = (1..=30)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let t = tail(&log, 3);
        assert_eq!(t, "line 28\nline 29\nline 30");
    }

    #[test]
    fn env_keys_are_the_first_eight_bytes_of_name_and_equals() {
        assert_eq!(&env_key("ENV").expect("valid"), b"ENV=\0\0\0\0");
        assert_eq!(&env_key("HISTFIL").expect("valid"), b"HISTFIL=");
        assert_eq!(&env_key("LD_PRELOAD").expect("valid"), b"LD_PRELO");
        for bad in ["", "A=B", "LD PRELOAD", &"X".repeat(129)] {
            assert!(
                matches!(env_key(bad), Err(LoadError::EnvName(_))),
                "{bad:?}"
            );
        }
        for n in DEFAULT_ENV_NAMES {
            assert!(env_key(n).is_ok(), "{n}");
        }
        assert!(DEFAULT_ENV_NAMES.len() <= ENV_NAMES_MAX);
    }

    #[test]
    fn the_last_byte_set_holds_every_sensitive_name_and_nothing_else() {
        let names: Vec<String> = DEFAULT_SENSITIVE_NAMES
            .iter()
            .map(|n| n.to_string())
            .collect();
        let set = last_bytes(&names);
        let has = |b: u8| set[usize::from(b / 32)] & (1 << (b % 32)) != 0;
        for n in &names {
            assert!(has(*n.as_bytes().last().expect("non-empty")), "{n}");
        }
        // Shared objects, scripts and most data files end otherwise (`n` is in: `environ`).
        for b in [b'o', b'6', b'h', b'l', b'f'] {
            assert!(!has(b), "{}", b as char);
        }
    }
}
