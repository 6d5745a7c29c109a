//! Converting the kernel's CLOCK_BOOTTIME stamps into wall-clock time.

use nix::time::{ClockId, clock_gettime};

/// Wall-clock time now, in nanoseconds since the Unix epoch (journal records, delta numbers).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The offset between CLOCK_REALTIME and CLOCK_BOOTTIME, taken once at start.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    realtime_minus_boot_ns: i128,
}

fn now_ns(id: ClockId) -> i128 {
    match clock_gettime(id) {
        Ok(ts) => ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128,
        Err(_) => 0,
    }
}

impl BootClock {
    pub fn now() -> Self {
        let boot = now_ns(ClockId::CLOCK_BOOTTIME);
        let real = now_ns(ClockId::CLOCK_REALTIME);
        Self {
            realtime_minus_boot_ns: real - boot,
        }
    }

    /// A clock with a fixed offset, for tests.
    pub fn fixed(realtime_minus_boot_ns: i128) -> Self {
        Self {
            realtime_minus_boot_ns,
        }
    }

    pub fn to_unix_ns(&self, boot_ns: u64) -> u64 {
        (boot_ns as i128 + self.realtime_minus_boot_ns).clamp(0, u64::MAX as i128) as u64
    }

    /// CLOCK_BOOTTIME now, in nanoseconds.
    pub fn boot_now_ns() -> u64 {
        now_ns(ClockId::CLOCK_BOOTTIME).max(0) as u64
    }
}
