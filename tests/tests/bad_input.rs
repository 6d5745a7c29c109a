//! Bad input gives a clear error that names the problem, never a panic.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use vigil_tests::{kernel_tests_enabled, sensor_cmd};

fn stderr_of(args: &[&str]) -> (Option<i32>, String) {
    let out = sensor_cmd(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked"),
        "vigil-sensor panicked on {args:?}:\n{err}"
    );
    assert!(!out.status.success(), "vigil-sensor accepted {args:?}");
    (out.status.code(), err)
}

/// `vigil-sensor run --state TMP EXTRA...`, which must fail; its stderr.
fn run_fails(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let mut args = vec!["run", "--state", state.to_str().expect("utf-8 temp path")];
    args.extend_from_slice(extra);
    stderr_of(&args).1
}

#[test]
fn unknown_flag_is_named() {
    let (code, err) = stderr_of(&["run", "--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn unwritable_state_dir_is_named() {
    if !kernel_tests_enabled("unwritable_state_dir_is_named") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let state = file.join("state");
    let (_, err) = stderr_of(&["run", "--state", &state.to_string_lossy()]);
    assert!(
        err.contains("state directory") && err.contains(&*state.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn missing_btf_is_named() {
    if !kernel_tests_enabled("missing_btf_is_named") {
        return;
    }
    let err = run_fails(&["--btf", "/nonexistent/vmlinux"]);
    assert!(
        err.contains("/nonexistent/vmlinux") && err.contains("BTF"),
        "{err}"
    );
}

#[test]
fn bad_ring_size_is_named() {
    if !kernel_tests_enabled("bad_ring_size_is_named") {
        return;
    }
    let err = run_fails(&["--ring-buffer-bytes", "5000"]);
    assert!(err.contains("ring buffer size 5000"), "{err}");
}

#[test]
fn status_without_a_sensor_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, err) = stderr_of(&["status", "--state", &dir.path().to_string_lossy()]);
    assert!(
        err.contains("no sensor answers") && err.contains("control.sock"),
        "{err}"
    );
}
