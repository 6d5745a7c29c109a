//! Enforcement that outlives the process: the maps that hold what is in force (the exec
//! blocklist, the isolation switch, destination blocks) and the links that enforce them
//! (the exec tracepoint, the network containment programs on their cgroup) are pinned in
//! bpffs, so a `kill -9`, a crash, an out-of-memory kill or an upgrade leaves them attached.
//!
//! The layout, under the pin directory (`/sys/fs/bpf/vigil` by default):
//!
//! ```text
//! <version>/maps/<MAP>         one per map of PINNED_MAPS, shared by successive runs
//! <version>/links/<run>-<name> one per enforcing link of a run
//! ```
//!
//! `<version>` is a digest of the kernel object: a sensor adopts the maps of its own object
//! only (their layout is that object's), and a sensor of another version starts fresh maps,
//! re-arms them from the journal and only then retires the older version's pins, so there is
//! no moment with nothing attached. A starting sensor lists the links pinned before it
//! ([`Pins::previous`]), attaches and pins its own, folds its journal over the maps, and then
//! retires the previous ones ([`Pins::retire_previous`]). It removes its pins at a clean stop
//! only when nothing is in force ([`Pins::remove_all`]).

use std::{
    ffi::CString,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use sha2::{Digest as _, Sha256};

/// Where pins go by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/vigil";

/// Where bpffs is mounted when the host boots without it.
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

/// The maps whose content is what is in force, shared by successive runs of one version.
pub const PINNED_MAPS: [&str; 4] = ["BLOCK_INODES", "BLOCK_PATHS", "NET_GUARD", "DEST_BLOCKS"];

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{path} is not on a bpffs mount (mount one with `mount -t bpf bpf /sys/fs/bpf`, or give --pin-dir a directory under one)"
    )]
    NotBpffs { path: PathBuf },
    #[error("bpffs is not mounted and mounting it at {path} failed: {source}")]
    Mount { path: PathBuf, source: nix::Error },
    #[error("cannot prepare the pin directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot pin {path}: {source}")]
    Pin {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The pin directory of this sensor's object version, and what earlier runs left in it.
#[derive(Debug)]
pub struct Pins {
    base: PathBuf,
    own: PathBuf,
    /// Links pinned before this run, in this version's directory.
    previous_links: Vec<PathBuf>,
    /// Directories of other object versions.
    other_versions: Vec<PathBuf>,
    /// Distinguishes this run's link names from a previous run's.
    run: String,
}

/// What a sensor found pinned at start and what it retired, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinStatus {
    pub dir: PathBuf,
    /// Links an earlier run left in force, retired once this run's were attached.
    pub adopted_links: usize,
    /// Pin directories of other versions, retired the same way.
    pub other_versions: usize,
    /// Whether this run found the maps pinned (their content carried over).
    pub adopted_maps: bool,
}

/// The version directory's name: a digest of the kernel object.
pub fn version_of(object: &[u8]) -> String {
    let digest = Sha256::digest(object);
    sensor_common::protocol::hex(&digest[..8])
}

impl Pins {
    /// Prepares `base/<version>/{maps,links}` (mounting bpffs at /sys/fs/bpf when `base` is
    /// under it and nothing is mounted there), and lists what earlier runs pinned.
    pub fn open(base: &Path, version: &str, run: &str) -> Result<Self, PinError> {
        ensure_bpffs(base)?;
        let own = base.join(version);
        for dir in [own.join("maps"), own.join("links")] {
            std::fs::create_dir_all(&dir).map_err(|source| PinError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        let list = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        let mut previous_links = list(&own.join("links"));
        previous_links.sort();
        let mut other_versions: Vec<PathBuf> =
            list(base).into_iter().filter(|p| *p != own).collect();
        other_versions.sort();
        Ok(Self {
            base: base.to_owned(),
            own,
            previous_links,
            other_versions,
            run: run.to_owned(),
        })
    }

    /// Where map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.own.join("maps").join(name)
    }

    /// Whether map `name` was pinned before this run opened the directory.
    pub fn map_pinned(&self, name: &str) -> bool {
        self.map_path(name).exists()
    }

    /// Where this run pins link `name`.
    pub fn link_path(&self, name: &str) -> PathBuf {
        self.pinner().path(name)
    }

    /// A handle that pins this run's links, for the parts that attach them later (network
    /// containment attaches its programs only while something is in force).
    pub fn pinner(&self) -> LinkPinner {
        LinkPinner {
            dir: self.own.join("links"),
            run: self.run.clone(),
        }
    }

    /// Links an earlier run left pinned.
    pub fn previous(&self) -> &[PathBuf] {
        &self.previous_links
    }

    /// Removes what earlier runs pinned (their links, and other versions' directories), once
    /// this run's own links are attached and its journal is folded over the maps: each
    /// program detaches as its last pin goes. Returns how many links were retired.
    pub fn retire_previous(&mut self) -> usize {
        let mut retired = 0;
        for link in std::mem::take(&mut self.previous_links) {
            match std::fs::remove_file(&link) {
                Ok(()) => retired += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(path = %link.display(), error = %e, "cannot retire a pinned link")
                }
            }
        }
        for dir in std::mem::take(&mut self.other_versions) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::error!(path = %dir.display(), error = %e, "cannot retire another version's pins");
            } else {
                tracing::info!(path = %dir.display(), "another version's pins retired");
            }
        }
        retired
    }

    /// Removes every pin of this version: called at a clean stop with nothing in force.
    pub fn remove_all(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.own)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %self.own.display(), error = %e, "cannot remove the pins");
        }
        // The base goes too when nothing else is in it.
        let _ = std::fs::remove_dir(&self.base);
    }

    /// The directory of this version's pins.
    pub fn dir(&self) -> &Path {
        &self.own
    }
}

/// Pins this run's links in its version's `links` directory.
#[derive(Clone, Debug)]
pub struct LinkPinner {
    dir: PathBuf,
    run: String,
}

impl LinkPinner {
    fn path(&self, name: &str) -> PathBuf {
        // bpffs refuses names with a dot (EPERM): they are reserved.
        self.dir.join(format!("{}-{name}", self.run))
    }

    /// Pins the BPF link `fd` as this run's link `name`, replacing a pin of that name.
    pub fn pin(&self, name: &str, fd: &impl std::os::fd::AsFd) -> Result<PathBuf, PinError> {
        let path = self.path(name);
        let _ = std::fs::remove_file(&path);
        obj_pin(fd, &path)?;
        Ok(path)
    }
}

/// Pins the BPF object `fd` (a link) at `path`.
pub fn obj_pin(fd: &impl std::os::fd::AsFd, path: &Path) -> Result<(), PinError> {
    /// `union bpf_attr` as `BPF_OBJ_PIN` reads it; the rest stays zero.
    #[repr(C)]
    struct ObjPinAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let err = |source| PinError::Pin {
        path: path.to_owned(),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path holds a NUL byte",
        ))
    })?;
    let attr = ObjPinAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: a zero-padded `OBJ_PIN` attr; the kernel only reads it and the path it points
    // to, which lives until the call returns.
    unsafe { super::bpf_call::bpf(super::bpf_call::Cmd::ObjPin, &attr) }.map_err(err)?;
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// Makes sure `base` is (or will be created) on bpffs, mounting bpffs at /sys/fs/bpf when
/// `base` is under it and nothing is mounted there.
fn ensure_bpffs(base: &Path) -> Result<(), PinError> {
    let mount = Path::new(BPFFS_MOUNT);
    if base.starts_with(mount) && !is_bpffs(mount) {
        std::fs::create_dir_all(mount).map_err(|source| PinError::Dir {
            path: mount.to_owned(),
            source,
        })?;
        nix::mount::mount(
            Some("bpf"),
            mount,
            Some("bpf"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .map_err(|source| PinError::Mount {
            path: mount.to_owned(),
            source,
        })?;
        tracing::info!(path = BPFFS_MOUNT, "bpffs mounted");
    }
    // The nearest existing ancestor says which filesystem `base` is (or will be) on.
    let existing = base.ancestors().find(|p| p.exists()).unwrap_or(mount);
    if !is_bpffs(existing) {
        return Err(PinError::NotBpffs {
            path: base.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_a_digest_of_the_object() {
        let a = version_of(b"object one");
        assert_eq!(a.len(), 16);
        assert_eq!(a, version_of(b"object one"));
        assert_ne!(a, version_of(b"object two"));
    }

    #[test]
    fn a_directory_off_bpffs_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = dir.path().join("pins");
        match Pins::open(&base, "v", "r") {
            Err(PinError::NotBpffs { path }) => assert_eq!(path, base),
            other => panic!("expected NotBpffs, got {other:?}"),
        }
        assert!(!base.exists(), "nothing is created off bpffs");
    }
}
