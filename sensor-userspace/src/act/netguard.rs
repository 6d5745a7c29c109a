//! The userspace half of in-kernel network containment (`sensor_common::netguard`): host
//! isolation and destination blocks. Both are counted, like exec blocks: two actions holding
//! the same containment need two undos before it lifts.
//!
//! The programs are attached to the cgroup only while an isolation or a block is in force:
//! attached at the root they would run on every connect and every packet of the host, which
//! costs a loopback connect+accept+close ~10% on this project's VM. They are attached before
//! the first containment is written and detached after the last is lifted.

use std::{collections::HashMap, path::PathBuf};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray},
};
use sensor_common::netguard::{
    Allowed, DestKey, ISOLATION_ALLOW, NetGuard as GuardValue, net_slot,
};
use serde::{Deserialize, Serialize};

use super::blocklist::{BlocklistError, take_map as map};
use crate::kernel::{
    cgroup_link::{self, CgroupLinks, CgroupProgram},
    pins::LinkPinner,
};

pub use sensor_common::netguard::Endpoint;

/// Why a network containment could not be put in force or lifted.
#[derive(Debug, thiserror::Error)]
pub enum NetGuardError {
    #[error("the network containment programs are not loaded")]
    NotLoaded,
    #[error("cannot write the kernel's network guard: {0}")]
    Guard(aya::maps::MapError),
    #[error("{0} addresses allowed during isolation; the kernel holds {ISOLATION_ALLOW}")]
    TooManyAllowed(usize),
    #[error("network containment cannot start: {0}")]
    Attach(String),
    #[error("the host is not isolated")]
    NotIsolated,
    #[error("{0} is a loopback address: blocking it would cut the host's own services")]
    Loopback(Endpoint),
    #[error("cannot block {dest}: {source}")]
    Block {
        dest: Endpoint,
        source: aya::maps::MapError,
    },
    #[error("cannot remove a destination block left by an earlier run: {0}")]
    Settle(aya::maps::MapError),
    #[error("{0} is not blocked")]
    NotBlocked(Endpoint),
    #[error("cannot lift the block of {dest}: {source}")]
    Lift {
        dest: Endpoint,
        source: aya::maps::MapError,
    },
}

/// What the network programs have done, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    /// The cgroup the programs watch; None when they are not loaded.
    pub cgroup: Option<PathBuf>,
    /// Whether they are attached now (only while something is in force).
    #[serde(default)]
    pub attached: bool,
    pub isolated: bool,
    pub blocked_destinations: usize,
    pub connects_refused: u64,
    pub packets_dropped: u64,
}

/// The kernel's `NET_GUARD`, `DEST_BLOCKS` and `NET_STATS` maps.
pub struct KernelNetGuard {
    cgroup: PathBuf,
    programs: Vec<CgroupProgram>,
    links: Option<CgroupLinks>,
    /// Pins the links while attached, so containment outlives the process.
    pinner: Option<LinkPinner>,
    guard: Array<MapData, GuardValue>,
    blocks: BpfHashMap<MapData, DestKey, u32>,
    stats: PerCpuArray<MapData, u64>,
    counts: HashMap<DestKey, u32>,
    isolations: u32,
    allow: Vec<Endpoint>,
}

impl KernelNetGuard {
    /// Takes the maps of the loaded `programs`, which it attaches to `cgroup` while needed
    /// (pinning the links with `pinner`, when given).
    pub fn take(
        ebpf: &mut Ebpf,
        cgroup: PathBuf,
        programs: Vec<CgroupProgram>,
        pinner: Option<LinkPinner>,
    ) -> Result<Self, BlocklistError> {
        Ok(Self {
            cgroup,
            programs,
            links: None,
            pinner,
            guard: map(ebpf, "NET_GUARD", Array::try_from)?,
            blocks: map(ebpf, "DEST_BLOCKS", BpfHashMap::try_from)?,
            stats: map(ebpf, "NET_STATS", PerCpuArray::try_from)?,
            counts: HashMap::new(),
            isolations: 0,
            allow: Vec::new(),
        })
    }

    /// The cgroup the programs watch: process-tree groups go under it.
    pub fn cgroup(&self) -> &std::path::Path {
        &self.cgroup
    }

    fn write(&mut self) -> Result<(), NetGuardError> {
        let value = self.guard_value();
        self.guard.set(0, value, 0).map_err(NetGuardError::Guard)
    }

    /// What `NET_GUARD` holds when it says what this run holds.
    fn guard_value(&self) -> GuardValue {
        let mut value = GuardValue {
            isolated: u32::from(self.isolations > 0),
            allowed: 0,
            blocks: u32::try_from(self.counts.len()).unwrap_or(u32::MAX),
            _pad: 0,
            allow: [Allowed::default(); ISOLATION_ALLOW],
        };
        for (slot, e) in value.allow.iter_mut().zip(&self.allow) {
            *slot = Allowed::new(e.addr, e.port.unwrap_or(0));
            value.allowed += 1;
        }
        value
    }

    /// Sets what stays reachable while isolated (loopback always does). Applies at once to
    /// an isolation in force.
    pub fn set_allow(&mut self, allow: &[Endpoint]) -> Result<(), NetGuardError> {
        if allow.len() > ISOLATION_ALLOW {
            return Err(NetGuardError::TooManyAllowed(allow.len()));
        }
        self.allow = allow.to_vec();
        self.write()
    }

    pub fn allowed(&self) -> &[Endpoint] {
        &self.allow
    }

    /// Makes the kernel say what this run holds again after another process changed it: a
    /// program detached from the cgroup attached again, a held destination block put back,
    /// one no action holds removed, the guard rewritten when it differs. Returns how many
    /// things were wrong.
    pub fn repair(&mut self) -> Result<usize, NetGuardError> {
        let mut wrong = 0;
        if let Some(links) = self.links.as_mut() {
            let again = links
                .reattach_detached(&self.programs, &self.cgroup, self.pinner.as_ref())
                .map_err(|e| NetGuardError::Attach(e.to_string()))?;
            for program in &again {
                tracing::error!(%program, cgroup = %self.cgroup.display(), "a network containment program was detached by another process: attached again");
            }
            wrong += again.len();
        }
        for key in self.counts.keys() {
            if self.blocks.get(key, 0).is_err() {
                self.blocks
                    .insert(key, 1, 0)
                    .map_err(NetGuardError::Settle)?;
                wrong += 1;
            }
        }
        let expected = self.guard_value();
        if self.guard.get(&0, 0).ok() != Some(expected) {
            wrong += 1;
        }
        wrong += self.settle_adopted()?;
        Ok(wrong)
    }

    /// The kernel's ids of the links attached now (none while nothing is in force).
    pub fn link_ids(&self) -> Vec<u32> {
        self.links
            .as_ref()
            .map(CgroupLinks::ids)
            .unwrap_or_default()
    }

    /// Whether an isolation or a destination block is in force.
    pub fn in_force(&self) -> bool {
        self.isolations > 0 || !self.counts.is_empty()
    }

    /// Makes the kernel's maps say exactly what this run holds, once the journal has been
    /// folded over maps adopted from an earlier run: the guard is rewritten, and a
    /// destination block no action holds is removed. Returns how many were removed.
    pub fn settle_adopted(&mut self) -> Result<usize, NetGuardError> {
        let stale: Vec<DestKey> = self
            .blocks
            .keys()
            .flatten()
            .filter(|k| !self.counts.contains_key(k))
            .collect();
        for key in &stale {
            self.blocks.remove(key).map_err(NetGuardError::Settle)?;
        }
        self.write()?;
        Ok(stale.len())
    }

    /// Attaches the programs, if they are not, before something is put in force.
    fn arm(&mut self) -> Result<(), NetGuardError> {
        if self.links.is_none() {
            let links = cgroup_link::attach_all(&self.programs, &self.cgroup, self.pinner.as_ref())
                .map_err(|e| NetGuardError::Attach(e.to_string()))?;
            self.links = Some(links);
            tracing::info!(cgroup = %self.cgroup.display(), "network containment programs attached");
        }
        Ok(())
    }

    /// Detaches the programs once nothing is in force.
    fn disarm_if_idle(&mut self) {
        if !self.in_force()
            && let Some(links) = self.links.take()
        {
            links.release();
            tracing::info!(cgroup = %self.cgroup.display(), "nothing in force: network containment programs detached");
        }
    }

    pub fn isolate(&mut self) -> Result<(), NetGuardError> {
        self.arm()?;
        self.isolations += 1;
        self.write().inspect_err(|_| {
            self.isolations -= 1;
            self.disarm_if_idle();
        })
    }

    pub fn end_isolation(&mut self) -> Result<(), NetGuardError> {
        if self.isolations == 0 {
            return Err(NetGuardError::NotIsolated);
        }
        self.isolations -= 1;
        let written = self.write();
        self.disarm_if_idle();
        written
    }

    pub fn isolated(&self) -> bool {
        self.isolations > 0
    }

    fn key(dest: &Endpoint, scope: u64) -> DestKey {
        DestKey::new(dest.addr, dest.port.unwrap_or(0), scope)
    }

    /// Blocks `dest` host-wide (`scope` 0) or for the processes of the cgroup with id `scope`.
    pub fn block(&mut self, dest: &Endpoint, scope: u64) -> Result<(), NetGuardError> {
        if dest.is_loopback() {
            return Err(NetGuardError::Loopback(*dest));
        }
        self.arm()?;
        let key = Self::key(dest, scope);
        let n = self.counts.get(&key).copied().unwrap_or(0);
        if n == 0
            && let Err(e) = self.blocks.insert(key, 1, 0)
        {
            self.disarm_if_idle();
            return Err(NetGuardError::Block {
                dest: *dest,
                source: e,
            });
        }
        self.counts.insert(key, n + 1);
        self.write()
    }

    pub fn unblock(&mut self, dest: &Endpoint, scope: u64) -> Result<(), NetGuardError> {
        let key = Self::key(dest, scope);
        let Some(n) = self.counts.get_mut(&key) else {
            return Err(NetGuardError::NotBlocked(*dest));
        };
        *n -= 1;
        if *n == 0 {
            self.counts.remove(&key);
            self.blocks
                .remove(&key)
                .map_err(|source| NetGuardError::Lift {
                    dest: *dest,
                    source,
                })?;
        }
        let written = self.write();
        self.disarm_if_idle();
        written
    }

    pub fn stats(&self) -> NetStats {
        let sum = |slot: u32| {
            self.stats
                .get(&slot, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        NetStats {
            cgroup: Some(self.cgroup.clone()),
            attached: self.links.is_some(),
            isolated: self.isolated(),
            blocked_destinations: self.counts.len(),
            connects_refused: sum(net_slot::CONNECT_REFUSED),
            packets_dropped: sum(net_slot::PACKET_DROPPED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        for (text, shown) in [
            ("10.0.0.1", "10.0.0.1"),
            ("10.0.0.1:443", "10.0.0.1:443"),
            ("[2001:db8::1]:4433", "[2001:db8::1]:4433"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            let e: Endpoint = text.parse().expect(text);
            assert_eq!(e.to_string(), shown);
        }
        for bad in ["10.0.0.1:0", "example.com:80", "10.0.0.300", ""] {
            let err = bad.parse::<Endpoint>().expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }
}
