//! Maps and the load-time configuration shared by every program.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use sensor_common::{
    blocklist::{BLOCKLIST_ENTRIES, InodeKey, PathKey},
    config::KernelConfig,
    process::ExecArgsRecord,
    record::{ABI_VERSION, EventKind, RecordHeader},
    stats::{Counter, STATS_SLOTS, slot},
};

/// Every record for userspace. The loader sets the real size (`--ring-buffer-bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

const NO_WAKEUP: u64 = 1; // BPF_RB_NO_WAKEUP
const FORCE_WAKEUP: u64 = 2; // BPF_RB_FORCE_WAKEUP
const AVAIL_DATA: u64 = 0; // BPF_RB_AVAIL_DATA

/// Submit flags for a record: silent, unless the ring is past its wake-up watermark (see
/// `KernelConfig::wakeup_bytes`). Userspace drains on a short timer, so a silent record waits
/// at most one poll interval.
#[inline(always)]
pub fn wakeup() -> u64 {
    if EVENTS.query(AVAIL_DATA) >= u64::from(config().wakeup_bytes) {
        FORCE_WAKEUP
    } else {
        NO_WAKEUP
    }
}

/// When a record last woke userspace at once (CLOCK_MONOTONIC ns; one slot for the host:
/// a race between CPUs costs at most one extra wake-up).
#[map]
static LAST_FORCED_WAKE: Array<u64> = Array::with_max_entries(1, 0);

/// At most one forced wake-up per this many ns: a storm of execs wakes userspace at most
/// this often, and each wake-up drains everything written before it.
const FORCED_WAKE_GAP_NS: u64 = 1_000_000;

/// Submit flags for a record that can set off a response (an exec, a rare syscall): wake
/// userspace at once instead of waiting for its next poll, so containment starts within
/// about a millisecond of the event, unless another record did so less than
/// [`FORCED_WAKE_GAP_NS`] ago (then the poll, or the ring's watermark, picks it up: a storm
/// costs at most 1,000 wake-ups a second). The hot records (opens, connects, accepts) keep
/// [`wakeup`].
#[inline(always)]
pub fn wakeup_now() -> u64 {
    let Some(last) = LAST_FORCED_WAKE.get_ptr_mut(0) else {
        return wakeup();
    };
    // SAFETY: the array slot is valid while the program runs; a torn race only means one
    // wake-up more or less.
    unsafe {
        let now = bpf_ktime_get_ns();
        if now.wrapping_sub(*last) >= FORCED_WAKE_GAP_NS {
            *last = now;
            return FORCE_WAKEUP;
        }
    }
    wakeup()
}

/// Per-CPU counters: events lost to a full ring and events filtered on purpose, per kind.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

/// Per-CPU scratch space for building a variable-length argument record off the stack.
#[map]
pub static ARGS_SCRATCH: PerCpuArray<ExecArgsRecord> = PerCpuArray::with_max_entries(1, 0);

/// Executables killed at exec, by inode. Filled by userspace (the response executors).
#[map]
pub static BLOCK_INODES: HashMap<InodeKey, u32> = HashMap::with_max_entries(BLOCKLIST_ENTRIES, 0);

/// Executables killed at exec, by the path given to execve.
#[map]
pub static BLOCK_PATHS: HashMap<PathKey, u32> = HashMap::with_max_entries(BLOCKLIST_ENTRIES, 0);

/// Per-CPU scratch for building a zero-padded path key off the stack.
#[map]
pub static PATH_KEY_SCRATCH: PerCpuArray<PathKey> = PerCpuArray::with_max_entries(1, 0);

/// Filled in by the loader (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static CONFIG: KernelConfig = KernelConfig::zeroed();

/// The load-time configuration. Read through a volatile load of its address so the compiler
/// cannot fold the zeroed initializer into the code.
#[inline(always)]
pub fn config() -> &'static KernelConfig {
    // SAFETY: CONFIG is a static that lives for the whole program; the volatile read only hides
    // its (constant) address from the optimiser.
    unsafe { &*core::ptr::read_volatile(&&raw const CONFIG) }
}

#[inline(always)]
pub fn count(kind: EventKind, counter: Counter) {
    if let Some(p) = STATS.get_ptr_mut(slot(kind, counter)) {
        // SAFETY: per-CPU slot, valid for the program's run.
        unsafe { *p += 1 };
    }
}

/// True when the current task belongs to the sensor itself: counted and dropped.
#[inline(always)]
pub fn is_own(kind: EventKind) -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let own = tgid == config().sensor_tgid;
    if own {
        count(kind, Counter::Filtered);
    }
    own
}

#[inline(always)]
pub fn header(kind: EventKind, flags: u16) -> RecordHeader {
    RecordHeader {
        kind: kind as u16,
        abi: ABI_VERSION,
        flags,
        _pad: 0,
        // SAFETY: no preconditions.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
    }
}
