//! An empty program, never attached by the sensor: `cargo xtask bench` attaches it where the
//! sensor's own programs go, to measure what the kernel charges for a hook with nothing in it
//! (the floor under any program there).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

#[tracepoint]
pub fn vigil_floor(_ctx: TracePointContext) -> u32 {
    0
}
