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

/// A kernel test run without root fails, naming why, unless skipping was allowed: then it
/// passes as skipped and is listed in the skip log. So a run as an ordinary user never passes
/// without testing the kernel, unseen.
#[test]
fn a_kernel_test_without_root_fails_unless_a_skip_is_allowed_and_listed() {
    if !kernel_tests_enabled("a_kernel_test_without_root_fails_unless_a_skip_is_allowed") {
        return;
    }
    use std::os::unix::process::CommandExt as _;
    let me = std::env::current_exe().expect("this test binary");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let log = dir.path().join("skipped.txt");
    let as_nobody = |allow: bool| {
        let mut cmd = std::process::Command::new(&me);
        cmd.args(["--exact", "bad_ring_size_is_named", "--test-threads", "1"])
            .env_remove("VIGIL_ALLOW_SKIP")
            .env("VIGIL_SKIP_LOG", &log)
            .uid(65534)
            .gid(65534);
        if allow {
            cmd.env("VIGIL_ALLOW_SKIP", "1");
        }
        cmd.output().expect("run the test binary as nobody")
    };
    let refused = as_nobody(false);
    let said = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "passed without root: {said}");
    assert!(
        said.contains("must run as root") && said.contains("--allow-skip"),
        "{said}"
    );
    let allowed = as_nobody(true);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let listed = std::fs::read_to_string(&log).expect("the skip log");
    assert!(listed.contains("bad_ring_size_is_named"), "{listed}");
}
