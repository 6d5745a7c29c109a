//! Everything that talks to the kernel: finding tracefs and BTF, resolving the layout facts the
//! programs need, probing which hooks exist, loading and attaching, and reading the ring buffer.

mod bpf_call;
pub mod btf;
pub mod cgroup_link;
pub mod layout;
pub mod loader;
pub mod pins;
pub mod probe;
pub mod ringbuf;
pub mod tracefs;

/// The compiled kernel programs, embedded at build time (empty when built with AYA_BUILD_SKIP).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));
