//! In-kernel enforcement: the exec blocklist. A blocklisted image is sent SIGKILL from
//! `sched_process_exec`, where the new image is mapped but has not run: the signal is taken on
//! the way back to user mode, before its first instruction.

use aya_ebpf::helpers::generated::{bpf_probe_read_kernel_str, bpf_send_signal};
use sensor_common::blocklist::{InodeKey, PATH_KEY_LEN};

use crate::maps::{BLOCK_INODES, BLOCK_PATHS, PATH_KEY_SCRATCH};

const SIGKILL: u32 = 9;

/// Whether the image (`ino` on kernel device `dev`, executed as `filename`, a kernel pointer
/// to a NUL-terminated string) is blocklisted.
#[inline(always)]
pub fn exec_blocked(ino: u64, dev: u32, filename: *const u8) -> bool {
    let key = InodeKey { ino, dev, _pad: 0 };
    // SAFETY: a map lookup; the value is never read.
    if unsafe { BLOCK_INODES.get(key) }.is_some() {
        return true;
    }
    let Some(scratch) = PATH_KEY_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `scratch` is this CPU's map value, 8-byte aligned and PATH_KEY_LEN bytes long;
    // the string read is a bounded probe read.
    unsafe {
        let bytes = (&raw mut (*scratch).bytes).cast::<u8>();
        let words = bytes.cast::<u64>();
        let mut i = 0;
        while i < PATH_KEY_LEN / 8 {
            words.add(i).write(0);
            i += 1;
        }
        let n = bpf_probe_read_kernel_str(bytes.cast(), PATH_KEY_LEN as u32, filename.cast());
        if n <= 0 || n as usize >= PATH_KEY_LEN {
            return false; // unreadable, or too long to have been blocked by path
        }
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "by value would copy the 256-byte key onto the 512-byte BPF stack"
        )]
        let hit = BLOCK_PATHS.get(&*scratch).is_some();
        hit
    }
}

/// Kills the current task: it dies before running a user instruction of the new image.
#[inline(always)]
pub fn kill_current() {
    // SAFETY: signals the current task only.
    unsafe {
        bpf_send_signal(SIGKILL);
    }
}
