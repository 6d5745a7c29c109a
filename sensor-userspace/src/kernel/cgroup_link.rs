//! Attaching loaded cgroup programs to a cgroup as BPF links, from their program fds, so that
//! network containment can attach its programs only while something is in force and detach
//! them after: a cgroup_skb program at the root runs on every packet of the host.
//!
//! aya attaches a program only through its program object, which the loader's `Ebpf` owns;
//! this holds a clone of each loaded program's fd instead, and makes the same `BPF_LINK_CREATE`
//! call aya makes (Linux 5.7+). Closing a link's fd detaches it.

use std::{
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::ProgramFd;

use super::{
    bpf_call::{Cmd, bpf},
    pins::LinkPinner,
};

/// Where a cgroup program runs (`enum bpf_attach_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CgroupAttach {
    Ingress = 0,
    Egress = 1,
    Connect4 = 10,
    Connect6 = 11,
}

/// A loaded program, ready to attach.
#[derive(Debug)]
pub struct CgroupProgram {
    pub name: String,
    pub fd: ProgramFd,
    pub attach: CgroupAttach,
}

/// Attachments of a set of programs to one cgroup. Dropping it detaches them, unless they
/// are pinned: then they stay in force until [`CgroupLinks::release`] removes the pins (or a
/// later run retires them), so a sensor that dies leaves its containment in place.
#[derive(Debug)]
pub struct CgroupLinks {
    /// One link per program, in the programs' order: closing one detaches it.
    fds: Vec<OwnedFd>,
    /// Each link's pin, when pinned.
    pins: Vec<Option<PathBuf>>,
}

impl CgroupLinks {
    /// Detaches the links: removes their pins, then closes them.
    pub fn release(self) {
        for pin in self.pins.iter().flatten() {
            if let Err(e) = std::fs::remove_file(pin) {
                tracing::error!(path = %pin.display(), error = %e, "cannot remove a link's pin");
            }
        }
    }

    /// The kernel's ids of the links, from this process's fdinfo.
    pub fn ids(&self) -> Vec<u32> {
        self.fds
            .iter()
            .filter_map(|fd| {
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()
            })
            .filter_map(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("link_id:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .collect()
    }

    /// Attaches again each program whose link another process detached (`BPF_LINK_DETACH`
    /// on it, by id: the link stays, held by this process, but runs nothing), pinning the new
    /// link in the old one's place. `programs` and `cgroup` are those [`attach_all`] was given.
    /// Returns the names of the programs attached again.
    pub fn reattach_detached(
        &mut self,
        programs: &[CgroupProgram],
        cgroup: &Path,
        pinner: Option<&LinkPinner>,
    ) -> Result<Vec<String>, LinkError> {
        let mut again = Vec::new();
        for (i, p) in programs.iter().enumerate() {
            let Some(fd) = self.fds.get(i) else { break };
            match attached(fd) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(program = %p.name, error = %e, "cannot tell whether a containment program is still attached");
                    continue;
                }
            }
            let dir = open_cgroup(cgroup)?;
            let fd = create_link(p, &dir, cgroup)?;
            if let (Some(pinner), Some(slot)) = (pinner, self.pins.get_mut(i)) {
                match pinner.pin(&p.name, &fd) {
                    Ok(path) => *slot = Some(path),
                    Err(e) => {
                        tracing::error!(error = %e, "network containment will not outlive this sensor");
                    }
                }
            }
            self.fds[i] = fd;
            again.push(p.name.clone());
        }
        Ok(again)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open the cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot attach {program} to {path}: {source}")]
    Attach {
        program: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `union bpf_attr` as `BPF_LINK_CREATE` reads it; the rest stays zero.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 12],
}

/// Attaches every program to `cgroup`, all or none, pinning each link with `pinner` when
/// given.
pub fn attach_all(
    programs: &[CgroupProgram],
    cgroup: &Path,
    pinner: Option<&LinkPinner>,
) -> Result<CgroupLinks, LinkError> {
    let dir = open_cgroup(cgroup)?;
    let mut links = Vec::with_capacity(programs.len());
    for p in programs {
        // On an error `links` drops: what was attached is detached.
        links.push(create_link(p, &dir, cgroup)?);
    }
    let pins = programs
        .iter()
        .zip(&links)
        .map(
            |(p, fd)| match pinner.map(|pinner| pinner.pin(&p.name, fd)) {
                Some(Ok(path)) => Some(path),
                Some(Err(e)) => {
                    // Unpinned, the link still holds while this process runs.
                    tracing::error!(error = %e, "network containment will not outlive this sensor");
                    None
                }
                None => None,
            },
        )
        .collect();
    Ok(CgroupLinks { fds: links, pins })
}

fn open_cgroup(cgroup: &Path) -> Result<File, LinkError> {
    File::open(cgroup).map_err(|source| LinkError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })
}

/// A new link of `p` to the cgroup open as `dir` (`cgroup`, for the error).
fn create_link(p: &CgroupProgram, dir: &File, cgroup: &Path) -> Result<OwnedFd, LinkError> {
    let attr = LinkCreateAttr {
        prog_fd: p.fd.as_fd().as_raw_fd() as u32,
        target_fd: dir.as_raw_fd() as u32,
        attach_type: p.attach as u32,
        flags: 0,
        _rest: [0; 12],
    };
    // SAFETY: a zero-padded `LINK_CREATE` attr; the kernel only reads it.
    let fd = unsafe { bpf(Cmd::LinkCreate, &attr) }.map_err(|source| LinkError::Attach {
        program: p.name.clone(),
        path: cgroup.to_owned(),
        source,
    })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `union bpf_attr` as `BPF_OBJ_GET_INFO_BY_FD` reads it.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
    _rest: [u64; 12],
}

/// The head of `struct bpf_link_info` for a cgroup link: its union starts at byte 16.
#[repr(C)]
#[derive(Default)]
struct CgroupLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _pad2: u32,
}

/// Whether the cgroup link `fd` still runs its program: a link another process detached
/// names no cgroup (the kernel reports cgroup id 0).
fn attached(fd: &OwnedFd) -> std::io::Result<bool> {
    let mut info = CgroupLinkInfo::default();
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<CgroupLinkInfo>() as u32,
        info: (&raw mut info) as u64,
        _rest: [0; 12],
    };
    // SAFETY: the kernel writes at most `info_len` bytes at `info`, which points at `info`,
    // alive and not otherwise borrowed until the call returns.
    unsafe { bpf(Cmd::ObjGetInfoByFd, &attr) }?;
    Ok(info.cgroup_id != 0)
}
