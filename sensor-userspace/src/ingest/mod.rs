//! From the kernel's records to published events: [`pipeline`] decodes and joins them,
//! [`interpret`] turns syscall records into typed events (with [`pidfds`] telling which
//! process a pidfd names), [`output`] is where they go.

pub mod interpret;
pub mod output;
pub mod pidfds;
pub mod pipeline;
