//! Vigil's kernel programs.
//!
//! Data flows one way: each program reads what the kernel hands it, filters in place where it
//! can, writes a record into the `EVENTS` ring buffer, and counts every event it does not
//! deliver in `STATS`. Layout facts (struct offsets, tracepoint fields) come from `CONFIG`,
//! which the loader fills in from BTF and tracefs before load.
#![no_std]
#![no_main]

mod enforce;
mod files;
mod floor;
mod maps;
mod netguard;
mod process;
mod selftest;
mod syscall;
mod task;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The helpers used (probe reads, `bpf_send_signal`) are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
