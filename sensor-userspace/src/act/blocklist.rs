//! The userspace half of the in-kernel exec blocklist (`sensor_common::blocklist`): entries
//! are counted, so two actions blocking one file need two undos before it runs again.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
};
use sensor_common::{
    blocklist::{InodeKey, PathKey},
    decode::FileId,
};

/// Why an exec block could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{0} is too long to block by path (it stays blocked by inode)")]
    PathTooLong(String),
    #[error("cannot add to the kernel blocklist: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// Where exec blocks go.
pub trait Enforcer: Send {
    fn block(&mut self, inode: Option<FileId>, path: Option<&str>) -> Result<(), BlockError>;
    fn unblock(&mut self, inode: Option<FileId>, path: Option<&str>) -> Result<(), BlockError>;
    /// Whether blocks reach the kernel (false without kernel programs).
    fn enforced(&self) -> bool;
    /// Whether any block is in force.
    fn holds_any(&self) -> bool;
    /// Removes from the kernel every block no action holds: what an earlier run left in
    /// adopted maps that the journal, folded over them, does not hold. Returns how many.
    fn settle_adopted(&mut self) -> Result<usize, BlockError> {
        Ok(0)
    }
    /// Puts back every block held that is missing from the kernel (deleted by another
    /// process). Returns how many. Entries no action holds go with [`Self::settle_adopted`].
    fn restore_missing(&mut self) -> Result<usize, BlockError> {
        Ok(0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[expect(
    clippy::large_enum_variant,
    reason = "a handful of keys live at once; boxing would only add allocations"
)]
enum Key {
    Inode(InodeKey),
    Path(PathKey),
}

fn keys(inode: Option<FileId>, path: Option<&str>) -> Result<Vec<Key>, BlockError> {
    let mut out = Vec::new();
    if let Some(id) = inode.filter(|i| i.ino != 0) {
        out.push(Key::Inode(InodeKey {
            ino: id.ino,
            dev: id.kernel_dev(),
            _pad: 0,
        }));
    }
    if let Some(p) = path {
        out.push(Key::Path(
            PathKey::new(p.as_bytes()).ok_or_else(|| BlockError::PathTooLong(p.to_owned()))?,
        ));
    }
    Ok(out)
}

/// The kernel's `BLOCK_INODES` and `BLOCK_PATHS` maps.
pub struct KernelBlocklist {
    inodes: BpfHashMap<MapData, InodeKey, u32>,
    paths: BpfHashMap<MapData, PathKey, u32>,
    counts: HashMap<Key, u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    #[error("the kernel programs have no map {0}")]
    MissingMap(&'static str),
    #[error("map {name} has an unexpected type: {source}")]
    MapType {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// Takes map `name` out of the loaded object, as the type `convert` makes of it.
pub(super) fn take_map<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, BlocklistError> {
    let m = ebpf
        .take_map(name)
        .ok_or(BlocklistError::MissingMap(name))?;
    convert(m).map_err(|source| BlocklistError::MapType { name, source })
}

impl KernelBlocklist {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, BlocklistError> {
        Ok(Self {
            inodes: take_map(ebpf, "BLOCK_INODES", BpfHashMap::try_from)?,
            paths: take_map(ebpf, "BLOCK_PATHS", BpfHashMap::try_from)?,
            counts: HashMap::new(),
        })
    }
}

impl Enforcer for KernelBlocklist {
    fn block(&mut self, inode: Option<FileId>, path: Option<&str>) -> Result<(), BlockError> {
        for k in keys(inode, path)? {
            let n = self.counts.entry(k).or_default();
            if *n == 0 {
                let r = match &k {
                    Key::Inode(i) => self.inodes.insert(i, 1, 0),
                    Key::Path(p) => self.paths.insert(p, 1, 0),
                };
                r?;
            }
            *n += 1;
        }
        Ok(())
    }

    fn unblock(&mut self, inode: Option<FileId>, path: Option<&str>) -> Result<(), BlockError> {
        for k in keys(inode, path)? {
            let n = self.counts.entry(k).or_default();
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.counts.remove(&k);
                let r = match &k {
                    Key::Inode(i) => self.inodes.remove(i),
                    Key::Path(p) => self.paths.remove(p),
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "blocklist entry already gone");
                }
            }
        }
        Ok(())
    }

    fn enforced(&self) -> bool {
        true
    }

    fn holds_any(&self) -> bool {
        !self.counts.is_empty()
    }

    fn settle_adopted(&mut self) -> Result<usize, BlockError> {
        let inodes: Vec<InodeKey> = self
            .inodes
            .keys()
            .flatten()
            .filter(|k| !self.counts.contains_key(&Key::Inode(*k)))
            .collect();
        let paths: Vec<PathKey> = self
            .paths
            .keys()
            .flatten()
            .filter(|k| !self.counts.contains_key(&Key::Path(*k)))
            .collect();
        for k in &inodes {
            self.inodes.remove(k)?;
        }
        for k in &paths {
            self.paths.remove(k)?;
        }
        Ok(inodes.len() + paths.len())
    }

    fn restore_missing(&mut self) -> Result<usize, BlockError> {
        let mut restored = 0;
        for key in self.counts.keys() {
            let present = match key {
                Key::Inode(i) => self.inodes.get(i, 0).is_ok(),
                Key::Path(p) => self.paths.get(p, 0).is_ok(),
            };
            if !present {
                match key {
                    Key::Inode(i) => self.inodes.insert(i, 1, 0)?,
                    Key::Path(p) => self.paths.insert(p, 1, 0)?,
                }
                restored += 1;
            }
        }
        Ok(restored)
    }
}

/// No kernel: blocks are recorded, and reported as not enforced.
#[derive(Default)]
pub struct NoKernel;

impl Enforcer for NoKernel {
    fn block(&mut self, inode: Option<FileId>, path: Option<&str>) -> Result<(), BlockError> {
        keys(inode, path).map(|_| ())
    }
    fn unblock(&mut self, _: Option<FileId>, _: Option<&str>) -> Result<(), BlockError> {
        Ok(())
    }
    fn enforced(&self) -> bool {
        false
    }
    fn holds_any(&self) -> bool {
        false
    }
}
