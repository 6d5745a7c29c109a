//! Loading the kernel programs with their configuration, and attaching them.

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, RawTracePoint, TracePoint},
};
use sensor_common::config::KernelConfig;
use serde::{Deserialize, Serialize};

use super::{
    EBPF_OBJECT,
    btf::{BtfError, KernelBtf},
    layout::{LayoutError, tracepoint_layout},
    probe::{HookSupport, ProbeError},
    tracefs::{TracefsError, ensure_mounted},
};

/// How a program hooks the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    Tracepoint,
    RawTracepoint,
}

/// One program and where it attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSpec {
    pub program: &'static str,
    pub kind: HookKind,
    /// `category/name` for a tracepoint, `name` for a raw tracepoint.
    pub target: &'static str,
}

/// Every program `vigil-sensor run` attaches.
pub const HOOKS: &[HookSpec] = &[
    HookSpec {
        program: "vigil_fork",
        kind: HookKind::RawTracepoint,
        target: "sched_process_fork",
    },
    HookSpec {
        program: "vigil_exec",
        kind: HookKind::Tracepoint,
        target: "sched/sched_process_exec",
    },
    HookSpec {
        program: "vigil_exit",
        kind: HookKind::Tracepoint,
        target: "sched/sched_process_exit",
    },
    HookSpec {
        program: "vigil_execve",
        kind: HookKind::Tracepoint,
        target: "syscalls/sys_enter_execve",
    },
    HookSpec {
        program: "vigil_execveat",
        kind: HookKind::Tracepoint,
        target: "syscalls/sys_enter_execveat",
    },
];

/// The program kept in the object to prove verifier rejections are reported well.
pub const SELFTEST_REJECTED: HookSpec = HookSpec {
    program: "vigil_selftest_rejected",
    kind: HookKind::Tracepoint,
    target: "sched/sched_process_exec",
};

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
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error(
        "the kernel verifier rejected program {program}: {reason}\n--- verifier log (last lines) ---\n{log_tail}"
    )]
    Verifier {
        program: &'static str,
        reason: std::io::Error,
        log_tail: String,
    },
    #[error("cannot load program {program}: {source}")]
    Program {
        program: &'static str,
        source: ProgramError,
    },
    #[error("cannot attach program {program} to {target}: {source}")]
    Attach {
        program: &'static str,
        target: &'static str,
        source: ProgramError,
    },
}

/// What the loader needs to know.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub btf_path: PathBuf,
    pub ring_buffer_bytes: u32,
    /// Activity of this process is filtered in the kernel (and counted).
    pub sensor_tgid: u32,
}

/// The loaded object. Dropping it detaches every program.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub support: HookSupport,
    pub tracefs: PathBuf,
    pub attached: Vec<HookSpec>,
}

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

fn program_error(program: &'static str, e: ProgramError) -> LoadError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => LoadError::Verifier {
            program,
            reason: io_error,
            log_tail: tail(&format!("{verifier_log:?}"), VERIFIER_TAIL_LINES),
        },
        source => LoadError::Program { program, source },
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
    let task_layout = KernelBtf::open(&opts.btf_path)?.task_layout()?;
    let config = KernelConfig {
        sensor_tgid: opts.sensor_tgid,
        wakeup_bytes: opts.ring_buffer_bytes / 4,
        task: task_layout,
        tracepoints: tracepoint_layout(&tracefs)?,
    };
    tracing::debug!(?config, "kernel layout resolved");
    // The programs carry no CO-RE relocations (offsets come in through CONFIG), so aya's own
    // parse of the kernel BTF is not needed: drop it rather than hold it during the load.
    let ebpf = EbpfLoader::new()
        .btf(None)
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    Ok(Loaded {
        ebpf,
        support,
        tracefs,
        attached: Vec::new(),
    })
}

impl Loaded {
    /// Loads one program into the kernel (the verifier runs here).
    pub fn load_program(&mut self, spec: HookSpec) -> Result<(), LoadError> {
        let prog = self
            .ebpf
            .program_mut(spec.program)
            .ok_or(LoadError::MissingProgram(spec.program))?;
        let result = match spec.kind {
            HookKind::Tracepoint => {
                let p: &mut TracePoint = prog
                    .try_into()
                    .map_err(|e| program_error(spec.program, e))?;
                p.load()
            }
            HookKind::RawTracepoint => {
                let p: &mut RawTracePoint = prog
                    .try_into()
                    .map_err(|e| program_error(spec.program, e))?;
                p.load()
            }
        };
        result.map_err(|e| program_error(spec.program, e))
    }

    fn attach(&mut self, spec: HookSpec) -> Result<(), LoadError> {
        let attach_err = |source| LoadError::Attach {
            program: spec.program,
            target: spec.target,
            source,
        };
        let prog = self
            .ebpf
            .program_mut(spec.program)
            .ok_or(LoadError::MissingProgram(spec.program))?;
        match spec.kind {
            HookKind::Tracepoint => {
                let (category, name) = spec.target.split_once('/').unwrap_or(("", spec.target));
                let p: &mut TracePoint = prog.try_into().map_err(attach_err)?;
                p.attach(category, name).map_err(attach_err)?;
            }
            HookKind::RawTracepoint => {
                let p: &mut RawTracePoint = prog.try_into().map_err(attach_err)?;
                p.attach(spec.target).map_err(attach_err)?;
            }
        }
        self.attached.push(spec);
        Ok(())
    }

    /// Loads and attaches every hook in [`HOOKS`], stopping at the first failure (what was
    /// attached is detached when `self` drops).
    pub fn attach_all(&mut self) -> Result<(), LoadError> {
        for spec in HOOKS {
            self.load_program(*spec)?;
            self.attach(*spec)?;
            tracing::info!(program = spec.program, kind = ?spec.kind, target = spec.target, "attached");
        }
        Ok(())
    }
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
}
