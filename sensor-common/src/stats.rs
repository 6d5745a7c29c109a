//! Per-CPU counters the kernel keeps for userspace: every event it does not deliver is counted.

use crate::record::EventKind;

/// Why an event was counted instead of (or as well as) delivered.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// The ring buffer was full: the event is lost, and this says so.
    RingFull = 0,
    /// Filtered in the kernel on purpose (the sensor's own activity).
    Filtered = 1,
    /// A repeat of an event just delivered (same thread, same file or peer, same result),
    /// counted in the kernel instead of delivered; the next delivery carries the count.
    Coalesced = 2,
}

impl Counter {
    pub const COUNT: u32 = 3;
}

/// Number of slots in the `STATS` per-CPU array.
pub const STATS_SLOTS: u32 = EventKind::COUNT * Counter::COUNT;

/// The slot of a counter for a kind.
pub const fn slot(kind: EventKind, counter: Counter) -> u32 {
    kind as u32 * Counter::COUNT + counter as u32
}
