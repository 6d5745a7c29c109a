//! The event ABI shared by Vigil's kernel programs (`sensor-ebpf`) and the userspace sensor.
//!
//! Every record the kernel writes into the ring buffer starts with a [`record::RecordHeader`]
//! followed by a [`process::TaskInfo`] and a kind-specific body. All types are `#[repr(C)]`,
//! plain old data, and aligned to at most 8 bytes (a ring-buffer reservation requirement).
//!
//! Each topic is one module holding its kernel half (the record layouts) and, behind the
//! `user` feature, its user half (safe decoding into owned types).
#![no_std]

#[cfg(feature = "wire")]
extern crate std;

pub mod blocklist;
pub mod config;
pub mod limits;
pub mod netguard;
pub mod process;
pub mod record;
pub mod stats;
pub mod syscall;

#[cfg(feature = "wire")]
pub mod decode;
#[cfg(feature = "wire")]
pub mod protocol;
#[cfg(feature = "wire")]
pub mod wire;
