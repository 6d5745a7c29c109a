//! The BTF reader, and the layout lookups the loader makes of what it read.
#![no_main]

use sensor_userspace::kernel::btf::KernelBtf;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = KernelBtf::parse(data) {
        let _ = btf.task_layout();
        let _ = btf.file_layout();
        let _ = btf.regs_layout();
    }
});
