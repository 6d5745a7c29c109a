//! Which hook types this kernel offers. Tracepoints are the baseline; richer hooks are
//! upgrades used only when the probe finds them.

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};
use serde::{Deserialize, Serialize};

/// What the start-up probe found.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookSupport {
    pub tracepoint: bool,
    pub raw_tracepoint: bool,
    pub ring_buffer: bool,
    /// fentry/fexit (BPF_PROG_TYPE_TRACING): faster hooks, not required.
    pub fentry: bool,
    /// BPF LSM: in-kernel denial, not required.
    pub lsm: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this kernel lacks {0}, which the sensor requires (Linux 5.8+ with BPF ring buffers)")]
    Missing(&'static str),
}

fn prog(t: ProgramType) -> bool {
    match is_program_supported(t) {
        Ok(yes) => yes,
        Err(e) => {
            tracing::debug!(program_type = ?t, error = %e, "probe failed; treating as unsupported");
            false
        }
    }
}

impl HookSupport {
    pub fn probe() -> Self {
        Self {
            tracepoint: prog(ProgramType::TracePoint),
            raw_tracepoint: prog(ProgramType::RawTracePoint),
            ring_buffer: is_map_supported(MapType::RingBuf).unwrap_or(false),
            fentry: prog(ProgramType::Tracing),
            lsm: prog(ProgramType::Lsm(aya::programs::LsmAttachType::Mac)),
        }
    }

    /// Fails when a baseline hook is missing.
    pub fn require_baseline(&self) -> Result<(), ProbeError> {
        if !self.ring_buffer {
            return Err(ProbeError::Missing("BPF ring buffers"));
        }
        if !self.tracepoint {
            return Err(ProbeError::Missing("tracepoint programs"));
        }
        if !self.raw_tracepoint {
            return Err(ProbeError::Missing("raw tracepoint programs"));
        }
        Ok(())
    }
}
