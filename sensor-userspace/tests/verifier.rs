//! A program the kernel verifier rejects is reported with its name and the verifier's reason.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use sensor_userspace::kernel::{
    btf::VMLINUX_BTF,
    loader::{self, DEFAULT_SENSITIVE_NAMES, LoadError, LoadOptions, selftest_rejected},
};

#[test]
fn verifier_rejection_names_the_program_and_quotes_the_log() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("VIGIL_ALLOW_SKIP").is_some(),
            "loading eBPF programs needs root (or `cargo xtask test --allow-skip` to skip visibly)"
        );
        eprintln!("SKIPPED: loading eBPF programs needs root");
        return;
    }
    let mut loaded = loader::open(&LoadOptions {
        btf_path: VMLINUX_BTF.into(),
        ring_buffer_bytes: 1 << 16,
        sensor_tgid: std::process::id(),
        sensitive_names: DEFAULT_SENSITIVE_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        coalesce_ms: 1000,
        env_names: sensor_userspace::kernel::loader::DEFAULT_ENV_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        pin_dir: None,
    })
    .expect("the object opens");
    let err = loaded
        .load_program(&selftest_rejected())
        .expect_err("the verifier must refuse the self-test program");
    assert!(matches!(err, LoadError::Verifier { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("vigil_selftest_rejected"), "{text}");
    assert!(
        text.contains("invalid mem access"),
        "the log tail holds the reason:\n{text}"
    );
    // The real programs still load in the same object.
    loaded
        .attach_all()
        .expect("the real programs load and attach");
}
