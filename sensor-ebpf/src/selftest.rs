//! A program the verifier must refuse. It is never attached: the loader's tests load it to prove
//! that a rejected program is reported with its name and the verifier's words, not a panic.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

#[tracepoint]
pub fn vigil_selftest_rejected(_ctx: TracePointContext) -> u32 {
    // A plain load from an arbitrary address (no probe-read helper): "invalid mem access".
    // SAFETY: never executed; the verifier refuses the program before it can run.
    unsafe { core::ptr::read_volatile(0x1000 as *const u32) }
}
