//! Telemetry for what used to be invisible, against the real kernel: file capabilities and
//! other extended attributes, another process's memory and environment, a process renaming
//! itself, the environment an exec was given, the script an interpreter runs, timestamps set
//! by hand, inode flags (chattr) and sysctls written under /proc/sys. Each test does the real
//! thing and asserts the fields the sensor reported, and a near miss where there is one.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    os::unix::fs::MetadataExt,
    process::{Command, Stdio},
};

use serde_json::Value;
use vigil_tests::{Sensor, kernel_tests_enabled, s, u};

fn me() -> u64 {
    u64::from(std::process::id())
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.stdin(Stdio::null()).output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn path_of(e: &Value) -> Option<&str> {
    e["file"]["path"].as_str()
}

#[test]
fn file_capabilities_and_xattrs_are_seen_with_their_names() {
    if !kernel_tests_enabled("file_capabilities_and_xattrs_are_seen_with_their_names") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("helper");
    std::fs::copy("/bin/true", &bin).expect("copy");
    let bin_s = bin.to_str().expect("utf-8").to_owned();

    // setcap is a setxattr of security.capability, its value decoded into names.
    let setcap = Command::new("setcap")
        .args(["cap_setuid,cap_net_raw+ep", &bin_s])
        .stdin(Stdio::null())
        .spawn()
        .expect("setcap");
    let setcap_pid = u64::from(setcap.id());
    assert!(setcap.wait_with_output().expect("setcap").status.success());
    let set = sensor
        .wait_event("setxattr of security.capability", |e| {
            s(e, "kind") == "xattr" && u(e, "pid") == setcap_pid
        })
        .expect("xattr event");
    assert_eq!(path_of(&set), Some(bin_s.as_str()));
    assert_eq!(set["name"], "security.capability");
    assert_eq!(set["set"], true);
    assert_eq!(
        set["capabilities"],
        serde_json::json!(["cap_setuid", "cap_net_raw"])
    );
    assert_eq!(set["ret"], 0);

    // A user attribute set and removed by this process (no capabilities to name).
    let c = std::ffi::CString::new(bin_s.clone()).expect("path");
    let name = c"user.vigil-test";
    // SAFETY: valid NUL-terminated strings and a 2-byte value.
    let rc = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), c"hi".as_ptr().cast(), 2, 0) };
    let user_xattrs = rc == 0;
    if user_xattrs {
        // SAFETY: as above.
        assert_eq!(unsafe { libc::removexattr(c.as_ptr(), name.as_ptr()) }, 0);
        let removed = sensor
            .wait_event("removexattr of user.vigil-test", |e| {
                s(e, "kind") == "xattr" && u(e, "pid") == me() && e["set"] == false
            })
            .expect("removexattr event");
        assert_eq!(removed["name"], "user.vigil-test");
        assert_eq!(path_of(&removed), Some(bin_s.as_str()));
        assert!(removed.get("capabilities").is_none());
    } else {
        eprintln!("note: this file system refuses user xattrs; only setcap was tested");
    }
}

#[test]
fn reads_of_another_process_memory_and_environment_name_the_target() {
    if !kernel_tests_enabled("reads_of_another_process_memory_and_environment_name_the_target") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let mut victim = Command::new("sleep").arg("30").spawn().expect("sleep");
    let victim_pid = victim.id();

    // /proc/PID/environ of another process: a sensitive read naming the target.
    let environ = format!("/proc/{victim_pid}/environ");
    drop(std::fs::read(&environ).expect("read environ"));
    let ev = sensor
        .wait_event("open of the victim's environ", |e| {
            s(e, "kind") == "open" && u(e, "pid") == me() && path_of(e) == Some(environ.as_str())
        })
        .expect("environ open");
    assert_eq!(ev["sensitive_read"], true);
    assert_eq!(ev["target_pid"], victim_pid);

    // The near miss: a process reading its own maps is not a sensitive read.
    let own = Command::new("cat")
        .arg("/proc/self/maps")
        .stdout(Stdio::null())
        .spawn()
        .expect("cat");
    let own_pid = u64::from(own.id());
    assert!(own.wait_with_output().expect("cat").status.success());
    let own_ev = sensor
        .wait_event("cat's open of its own maps", |e| {
            s(e, "kind") == "open"
                && u(e, "pid") == own_pid
                && path_of(e) == Some("/proc/self/maps")
        })
        .expect("own maps open");
    assert_eq!(own_ev["sensitive_read"], false);
    assert!(own_ev.get("target_pid").is_none());

    // process_vm_readv of the victim's memory (it fails on an unmapped address: still an event).
    let mut local = [0u8; 8];
    let liov = libc::iovec {
        iov_base: local.as_mut_ptr().cast(),
        iov_len: local.len(),
    };
    let riov = libc::iovec {
        iov_base: 0x1000 as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: both iovecs describe 8 bytes; the kernel checks the remote one.
    let n = unsafe { libc::process_vm_readv(victim_pid as i32, &liov, 1, &riov, 1, 0) };
    // The raw result the kernel returned: the count, or the negative errno.
    let raw = if n < 0 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        n as i64
    };
    let vm = sensor
        .wait_event("process_vm_readv of the victim", |e| {
            s(e, "kind") == "process_vm" && u(e, "pid") == me()
        })
        .expect("process_vm event");
    assert_eq!(vm["target_pid"], victim_pid);
    assert_eq!(vm["write"], false);
    assert_eq!(vm["ret"].as_i64(), Some(raw));
    victim.kill().expect("kill sleep");
    let _ = victim.wait();
}

#[test]
fn a_process_renaming_itself_is_seen_and_a_thread_naming_is_not() {
    if !kernel_tests_enabled("a_process_renaming_itself_is_seen_and_a_thread_naming_is_not") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    // A thread of this process names itself (as thread pools do): not delivered.
    std::thread::Builder::new()
        .name("vigil-pool-thr".into())
        .spawn(|| {})
        .expect("thread")
        .join()
        .expect("join");
    // A child renames its leader thread to look like a kernel worker.
    let child = Command::new("python3")
        .args([
            "-c",
            "import ctypes,time; ctypes.CDLL(None).prctl(15, b'kworker/0:2', 0, 0, 0); time.sleep(0.2)",
        ])
        .spawn()
        .expect("python3");
    let pid = u64::from(child.id());
    assert!(child.wait_with_output().expect("python").status.success());
    let renamed = sensor
        .wait_event("prctl(PR_SET_NAME)", |e| {
            s(e, "kind") == "set_name" && u(e, "pid") == pid
        })
        .expect("set_name event");
    assert_eq!(renamed["name"], "kworker/0:2");
    assert_eq!(renamed["comm"], "kworker/0:2");
    sensor.poll_events().expect("poll");
    assert!(
        !sensor
            .events
            .iter()
            .any(|e| s(e, "kind") == "set_name" && s(e, "name") == "vigil-pool-thr"),
        "a thread naming itself is not a process rename"
    );
}

#[test]
fn the_exec_environment_and_the_script_an_interpreter_runs_are_in_the_exec() {
    if !kernel_tests_enabled(
        "the_exec_environment_and_the_script_an_interpreter_runs_are_in_the_exec",
    ) {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let child = Command::new("/bin/true")
        .env("LD_PRELOAD", "/nonexistent/vigil-test.so")
        .env("HISTFILE", "/dev/null")
        .env("VIGIL_NOT_CAPTURED", "x")
        .stderr(Stdio::null())
        .spawn()
        .expect("true");
    let pid = u64::from(child.id());
    let _ = child.wait_with_output();
    let exec = sensor
        .wait_event("exec with LD_PRELOAD", |e| {
            s(e, "kind") == "exec" && u(e, "pid") == pid
        })
        .expect("exec event");
    let env: Vec<&str> = exec["env"]
        .as_array()
        .expect("env captured")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        env.contains(&"LD_PRELOAD=/nonexistent/vigil-test.so"),
        "{env:?}"
    );
    assert!(env.contains(&"HISTFILE=/dev/null"), "{env:?}");
    assert!(!env.iter().any(|v| v.starts_with("VIGIL_NOT")), "{env:?}");

    // A script run by an interpreter: the file, its identity and its first writer.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "exit 0\n").expect("write script");
    let ino = std::fs::metadata(&script).expect("meta").ino();
    let child = Command::new("bash").arg(&script).spawn().expect("bash");
    let pid = u64::from(child.id());
    assert!(child.wait_with_output().expect("bash").status.success());
    let exec = sensor
        .wait_event("bash job.sh", |e| {
            s(e, "kind") == "exec" && u(e, "pid") == pid
        })
        .expect("exec event");
    assert_eq!(exec["script"]["path"], script.to_str().expect("utf-8"));
    assert_eq!(exec["script"]["id"]["ino"], ino);
    assert_eq!(exec["script"]["writer"]["pid"], me());
    assert_eq!(exec["script"]["writer_networked"], false);

    // The near miss: `bash -c` names no script.
    let child = Command::new("bash")
        .args(["-c", "exit 0"])
        .spawn()
        .expect("bash");
    let pid = u64::from(child.id());
    assert!(child.wait_with_output().expect("bash").status.success());
    let exec = sensor
        .wait_event("bash -c", |e| s(e, "kind") == "exec" && u(e, "pid") == pid)
        .expect("exec event");
    assert!(exec.get("script").is_none(), "{exec}");
}

#[test]
fn timestamps_inode_flags_and_sysctls_are_named() {
    if !kernel_tests_enabled("timestamps_inode_flags_and_sysctls_are_named") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("stamped");
    let fs = f.to_str().expect("utf-8").to_owned();
    std::fs::write(&f, b"x").expect("write");

    // touch -t sets explicit times (timestomping); plain touch sets now.
    let stomp = run(Command::new("touch").args(["-t", "202001010000", &fs]));
    drop(stomp);
    let ev = sensor
        .wait_event("touch -t", |e| {
            s(e, "kind") == "utimes" && path_of(e) == Some(fs.as_str()) && !e["mtime_ns"].is_null()
        })
        .expect("utimes event");
    let mtime = std::fs::metadata(&f).expect("meta").mtime();
    assert_eq!(ev["mtime_ns"].as_i64(), Some(mtime * 1_000_000_000));
    run(Command::new("touch").arg(&fs));
    sensor
        .wait_event("plain touch", |e| {
            s(e, "kind") == "utimes" && path_of(e) == Some(fs.as_str()) && e["mtime_ns"].is_null()
        })
        .expect("utimes event (now)");

    // chattr +i and -i: inode flags, the file named although chattr opened it read-only.
    let plus = Command::new("chattr")
        .args(["+i", &fs])
        .stdin(Stdio::null())
        .output()
        .expect("chattr");
    if plus.status.success() {
        run(Command::new("chattr").args(["-i", &fs]));
        let ev = sensor
            .wait_event("chattr +i", |e| {
                s(e, "kind") == "set_flags" && e["immutable"] == true
            })
            .expect("set_flags event");
        assert_eq!(path_of(&ev), Some(fs.as_str()));
        sensor
            .wait_event("chattr -i", |e| {
                s(e, "kind") == "set_flags"
                    && e["immutable"] == false
                    && path_of(e) == Some(fs.as_str())
            })
            .expect("set_flags event (-i)");
    } else {
        eprintln!(
            "note: the temp file system has no inode flags: {}",
            String::from_utf8_lossy(&plus.stderr)
        );
    }

    // A sysctl written under /proc/sys (its current value again: nothing changes).
    let knob = "/proc/sys/kernel/randomize_va_space";
    let value = std::fs::read_to_string(knob).expect("read sysctl");
    std::fs::write(knob, value.trim()).expect("write sysctl");
    let ev = sensor
        .wait_event("sysctl write", |e| {
            s(e, "kind") == "open" && u(e, "pid") == me() && path_of(e) == Some(knob)
        })
        .expect("open of the sysctl");
    assert_eq!(ev["sysctl"], "kernel.randomize_va_space");
    assert_eq!(ev["write"], true);
}
