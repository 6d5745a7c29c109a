//! The raw `bpf(2)` call, for the few commands aya 0.14 does not offer on a descriptor the
//! sensor already holds: creating a cgroup link, reading a link's info, pinning an object.

/// `bpf(2)` command numbers (`enum bpf_cmd` in `include/uapi/linux/bpf.h`).
#[derive(Debug, Clone, Copy)]
#[repr(i64)]
pub(super) enum Cmd {
    ObjPin = 6,
    ObjGetInfoByFd = 15,
    LinkCreate = 28,
}

/// Calls `bpf(cmd, attr, size_of::<A>())` and returns what the kernel answered (a new
/// descriptor, or 0), or the error it set.
///
/// # Safety
/// `A` must be `#[repr(C)]` and laid out as the part of `union bpf_attr` that `cmd` reads,
/// with every byte the kernel checks zeroed, and every address in it must stay valid (and
/// writable, where the kernel writes) until the call returns.
pub(super) unsafe fn bpf<A>(cmd: Cmd, attr: &A) -> std::io::Result<i64> {
    // SAFETY: the caller vouches for the attr, which lives across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as i64,
            std::ptr::from_ref(attr),
            std::mem::size_of::<A>() as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
