//! Helpers over the host itself, below every stage: [`procfs`], [`cgroup`] (the v2 mount and
//! the groups that hold a process tree), [`hash`], [`peer`] (who may use a command socket) and [`rpc`] (one JSON line each way over one), the [`state`] directory, [`clock`]s, and
//! [`durable`] writes and [`jsonl`] reads, and where a side server [`listen`]s.

pub mod bpf_objects;
pub mod cgroup;
pub mod clock;
pub mod durable;
pub mod hash;
pub mod jsonl;
pub mod listen;
pub mod peer;
pub mod procfs;
pub mod rpc;
pub mod state;
