//! Reading the `EVENTS` ring buffer from tokio, and the kernel's per-CPU counters.

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use sensor_common::{
    record::EventKind,
    stats::{Counter, slot},
};
use tokio::io::{Interest, unix::AsyncFd};

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("map {name} has the wrong type: {source}")]
    MapType {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("cannot register the ring buffer with the event loop: {0}")]
    Register(std::io::Error),
}

/// The ring buffer, registered for readiness with tokio.
pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
    fill: RingFill,
}

/// How much the ring held when it was drained: the bytes one drain took (records and their
/// 8-byte headers), last time and at most since start. A drain that takes the whole ring's
/// size means the kernel was about to drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RingFill {
    pub last_bytes: u64,
    pub peak_bytes: u64,
}

/// The room one record takes in the ring: its 8-byte header and its body, rounded up to 8.
fn footprint(len: usize) -> u64 {
    (8 + len as u64).div_ceil(8) * 8
}

impl RingReader {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, RingError> {
        let map = ebpf
            .take_map("EVENTS")
            .ok_or(RingError::MissingMap("EVENTS"))?;
        let ring = RingBuf::try_from(map).map_err(|source| RingError::MapType {
            name: "EVENTS",
            source,
        })?;
        // SAFETY: the AsyncFd owns the ring buffer, so the fd stays open for as long as it is
        // registered.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| RingError::Register(e.into()))?;
        Ok(Self {
            fd,
            fill: RingFill::default(),
        })
    }

    /// Waits until the kernel says records are ready. Readiness is cleared here, *before* the
    /// caller drains with [`Self::drain_now`], so a record committed during the drain re-arms
    /// it and is never left waiting for a wake-up that already happened.
    pub async fn wait_ready(&mut self) -> std::io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands every record available now to `f`, without waiting.
    pub fn drain_now(&mut self, f: impl FnMut(&[u8])) -> usize {
        let (n, bytes) = drain(self.fd.get_mut(), f);
        if n > 0 {
            self.fill.last_bytes = bytes;
            self.fill.peak_bytes = self.fill.peak_bytes.max(bytes);
        }
        n
    }

    pub fn fill(&self) -> RingFill {
        self.fill
    }
}

/// Hands each record to `f`; returns how many there were and the room they took.
fn drain(ring: &mut RingBuf<MapData>, mut f: impl FnMut(&[u8])) -> (usize, u64) {
    let (mut n, mut bytes) = (0, 0);
    while let Some(item) = ring.next() {
        bytes += footprint(item.len());
        f(&item);
        n += 1;
    }
    (n, bytes)
}

/// The kernel's per-CPU counters, summed over CPUs.
pub struct KernelStats {
    map: PerCpuArray<MapData, u64>,
}

/// Counts the kernel keeps for one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounts {
    pub ring_full: u64,
    pub filtered: u64,
    pub coalesced: u64,
}

impl KernelStats {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, RingError> {
        let map = ebpf
            .take_map("STATS")
            .ok_or(RingError::MissingMap("STATS"))?;
        let map = PerCpuArray::try_from(map).map_err(|source| RingError::MapType {
            name: "STATS",
            source,
        })?;
        Ok(Self { map })
    }

    fn sum(&self, index: u32) -> u64 {
        match self.map.get(&index, 0) {
            Ok(values) => values.iter().sum(),
            Err(e) => {
                tracing::warn!(index, error = %e, "cannot read kernel counter");
                0
            }
        }
    }

    pub fn read(&self, kind: EventKind) -> KernelCounts {
        KernelCounts {
            ring_full: self.sum(slot(kind, Counter::RingFull)),
            filtered: self.sum(slot(kind, Counter::Filtered)),
            coalesced: self.sum(slot(kind, Counter::Coalesced)),
        }
    }
}
