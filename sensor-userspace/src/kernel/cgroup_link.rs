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

use super::pins::LinkPinner;

/// `BPF_LINK_CREATE` in `enum bpf_cmd`.
const BPF_LINK_CREATE: libc::c_long = 28;

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
    #[expect(dead_code, reason = "held for its close, which detaches")]
    fds: Vec<OwnedFd>,
    pins: Vec<PathBuf>,
}

impl CgroupLinks {
    /// Detaches the links: removes their pins, then closes them.
    pub fn release(self) {
        for pin in &self.pins {
            if let Err(e) = std::fs::remove_file(pin) {
                tracing::error!(path = %pin.display(), error = %e, "cannot remove a link's pin");
            }
        }
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
    let dir = File::open(cgroup).map_err(|source| LinkError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    let mut links = Vec::with_capacity(programs.len());
    for p in programs {
        let attr = LinkCreateAttr {
            prog_fd: p.fd.as_fd().as_raw_fd() as u32,
            target_fd: dir.as_raw_fd() as u32,
            attach_type: p.attach as u32,
            flags: 0,
            _rest: [0; 12],
        };
        // SAFETY: bpf(2) with a zero-padded attr of the size passed; the kernel only reads it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_LINK_CREATE,
                &raw const attr,
                std::mem::size_of::<LinkCreateAttr>() as u32,
            )
        };
        if fd < 0 {
            // `links` drops here: what was attached is detached.
            return Err(LinkError::Attach {
                program: p.name.clone(),
                path: cgroup.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: the kernel returned a new fd that nothing else owns.
        links.push(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let mut pins = Vec::new();
    for (p, fd) in programs.iter().zip(&links) {
        let Some(pinner) = pinner else { break };
        match pinner.pin(&p.name, fd) {
            Ok(path) => pins.push(path),
            Err(e) => {
                // Unpinned, the link still holds while this process runs.
                tracing::error!(error = %e, "network containment will not outlive this sensor");
            }
        }
    }
    Ok(CgroupLinks { fds: links, pins })
}
