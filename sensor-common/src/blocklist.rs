//! The in-kernel exec blocklist: files whose execution the kernel kills at
//! `sched_process_exec`, before the new image runs a single user instruction.
//!
//! Two maps, filled by userspace: one keyed by the executed inode (device and inode number),
//! one by the path as passed to execve (zero-padded to [`PATH_KEY_LEN`] bytes; longer paths can
//! only be blocked by inode).

/// Entries in each blocklist map.
pub const BLOCKLIST_ENTRIES: u32 = 4096;

/// Bytes of a path key, NUL and zero padding included.
pub const PATH_KEY_LEN: usize = 256;

/// An executable by identity: the kernel's `dev_t` encoding (major << 20 | minor) and inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// An executable by path, as given to execve.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PathKey {
    pub bytes: [u8; PATH_KEY_LEN],
}

impl PathKey {
    /// The key for `path`, or None when it does not fit.
    pub fn new(path: &[u8]) -> Option<Self> {
        if path.is_empty() || path.len() >= PATH_KEY_LEN {
            return None;
        }
        let mut bytes = [0u8; PATH_KEY_LEN];
        bytes[..path.len()].copy_from_slice(path);
        Some(Self { bytes })
    }
}

#[cfg(feature = "user")]
// SAFETY: plain integers, no padding beyond the explicit `_pad`.
unsafe impl aya::Pod for InodeKey {}
#[cfg(feature = "user")]
// SAFETY: a byte array.
unsafe impl aya::Pod for PathKey {}
