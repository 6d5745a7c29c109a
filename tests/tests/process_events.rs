//! Process telemetry against the real kernel: exec with its exact argument vector and lineage,
//! exit codes and signals, processes older than the sensor, drops counted, clean shutdown.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::process::{Command, Stdio};

use vigil_tests::{Sensor, argv, kernel_tests_enabled, s, u};

#[test]
fn exec_has_exact_argv_filename_and_lineage() {
    if !kernel_tests_enabled("exec_has_exact_argv_filename_and_lineage") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let me = std::process::id() as u64;

    // The shell execs echo in place: the same process, first /bin/sh then /bin/echo.
    let status = Command::new("/bin/sh")
        .args(["-c", "exec /bin/echo alpha \"beta gamma\""])
        .stdout(Stdio::null())
        .status()
        .expect("run sh");
    assert!(status.success());
    let exec = sensor
        .wait_event("exec of /bin/echo with our marker", |e| {
            s(e, "kind") == "exec"
                && s(e, "exe") == "/bin/echo"
                && argv(e).get(1).map(String::as_str) == Some("alpha")
        })
        .expect("echo exec");
    assert_eq!(argv(&exec), ["/bin/echo", "alpha", "beta gamma"]);
    assert_eq!(exec["argv_truncated"], false);
    let pid = u(&exec, "pid");
    let shell = sensor
        .wait_event("the shell's own exec", |e| {
            s(e, "kind") == "exec" && u(e, "pid") == pid && s(e, "exe") == "/bin/sh"
        })
        .expect("shell exec");
    assert_eq!(
        argv(&shell),
        ["/bin/sh", "-c", "exec /bin/echo alpha \"beta gamma\""]
    );
    assert_eq!(
        u(&exec, "ppid"),
        me,
        "the parent of the process is this test"
    );
    assert_eq!(u(&exec["ancestry"][0], "pid"), me);

    // A shell that runs echo as a child: echo's parent is the shell, and the lineage goes on
    // to this test.
    let child = Command::new("/bin/sh")
        .args(["-c", "/bin/echo alpha \"beta gamma\" child; exit 0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let sh_pid = child.id() as u64;
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let exec = sensor
        .wait_event("echo run by the shell", |e| {
            s(e, "kind") == "exec" && s(e, "exe") == "/bin/echo" && u(e, "ppid") == sh_pid
        })
        .expect("child echo exec");
    assert_eq!(argv(&exec), ["/bin/echo", "alpha", "beta gamma", "child"]);
    let ancestry = exec["ancestry"].as_array().expect("ancestry");
    assert_eq!(u(&ancestry[0], "pid"), sh_pid);
    assert_eq!(s(&ancestry[0], "exe"), "/bin/sh", "the parent is the shell");
    assert_eq!(u(&ancestry[1], "pid"), me, "the lineage reaches this test");
    assert_eq!(exec["parent"]["pid"], ancestry[0]["pid"]);
    assert_eq!(exec["parent"]["start"], ancestry[0]["start"]);
}

#[test]
fn exit_codes_and_signals() {
    if !kernel_tests_enabled("exit_codes_and_signals") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let child = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .spawn()
        .expect("spawn");
    let pid = child.id() as u64;
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(3));
    let exit = sensor
        .wait_event("exit of the shell", |e| {
            s(e, "kind") == "exit" && u(e, "pid") == pid
        })
        .expect("exit event");
    assert_eq!(exit["exit"]["how"], "exited");
    assert_eq!(exit["exit"]["code"], 3);

    let mut sleeper = Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = sleeper.id() as u64;
    sleeper.kill().expect("kill");
    sleeper.wait().expect("wait");
    let exit = sensor
        .wait_event("exit of the killed sleep", |e| {
            s(e, "kind") == "exit" && u(e, "pid") == pid
        })
        .expect("exit event");
    assert_eq!(exit["exit"]["how"], "signaled");
    assert_eq!(exit["exit"]["signal"], 9);
}

#[test]
fn processes_older_than_the_sensor_have_their_parents() {
    if !kernel_tests_enabled("processes_older_than_the_sensor_have_their_parents") {
        return;
    }
    let mut old = Command::new("/bin/sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let sensor = Sensor::start().expect("sensor starts");
    let view = sensor
        .process(old.id())
        .expect("query")
        .expect("the old process is known");
    assert_eq!(view["process"]["origin"], "procfs");
    let sleep = std::fs::canonicalize("/bin/sleep").expect("sleep path");
    assert_eq!(view["process"]["exe"], sleep.to_string_lossy().as_ref());
    assert_eq!(view["process"]["argv"][1], "60");
    let me = std::process::id() as u64;
    assert_eq!(view["process"]["ppid"], me);
    assert_eq!(
        view["ancestry"][0]["key"]["pid"], me,
        "its parent, this test, is linked by identity"
    );
    old.kill().expect("kill");
    old.wait().expect("wait");
}

#[test]
fn idle_status_reports_hooks_and_zero_drops() {
    if !kernel_tests_enabled("idle_status_reports_hooks_and_zero_drops") {
        return;
    }
    let sensor = Sensor::start().expect("sensor starts");
    for _ in 0..20 {
        Command::new("/bin/true").status().expect("true");
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let st = sensor.status().expect("status");
    let hooks: Vec<&str> = st["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .filter_map(|h| h["program"].as_str())
        .collect();
    assert_eq!(
        hooks[..5],
        [
            "vigil_fork",
            "vigil_exec",
            "vigil_exit",
            "vigil_execve",
            "vigil_execveat"
        ]
    );
    for call in [
        "openat", "connect", "accept4", "setuid", "ptrace", "bpf", "kill",
    ] {
        let program = format!("vigil_exit_{call}");
        assert!(
            hooks.contains(&program.as_str()),
            "{program} not attached: {hooks:?}"
        );
    }
    // The arguments are read from the registers at exit: nothing runs at syscall entry but
    // the two execve argument readers.
    let at_entry: Vec<_> = st["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .filter_map(|h| h["target"].as_str())
        .filter(|t| t.starts_with("syscalls/sys_enter_"))
        .collect();
    assert_eq!(
        at_entry,
        ["syscalls/sys_enter_execve", "syscalls/sys_enter_execveat"]
    );
    for kind in ["fork", "exec", "exec_args", "exit", "syscall"] {
        let k = &st["events"][kind];
        assert_eq!(k["dropped"], 0, "{kind} dropped events at idle: {st}");
        if kind != "syscall" {
            assert!(
                k["received"].as_u64().unwrap_or(0) >= 20,
                "{kind} saw too few events: {st}"
            );
        }
    }
    assert_eq!(st["decode_errors"], 0);
    assert!(st["uptime_secs"].is_u64());
}

#[test]
fn a_tiny_ring_buffer_counts_its_drops() {
    if !kernel_tests_enabled("a_tiny_ring_buffer_counts_its_drops") {
        return;
    }
    // One page of ring and 200 concurrent execs with 3 KiB argument vectors: the ring cannot
    // hold them, and every record that did not fit must be counted.
    let sensor = Sensor::start_with(&["--ring-buffer-bytes", "4096"]).expect("sensor starts");
    let before = sensor.status().expect("status");
    vigil_tests::exec_storm();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = sensor.status().expect("status");
    let k = |v: &serde_json::Value, f: &str| v["events"]["exec_args"][f].as_u64().unwrap_or(0);
    let dropped = k(&after, "dropped") - k(&before, "dropped");
    let received = k(&after, "received") - k(&before, "received");
    assert!(dropped > 0, "a one-page ring dropped nothing: {after}");
    assert!(
        dropped + received >= 200,
        "{dropped} dropped + {received} received argument vectors do not account for 200 execs"
    );
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    if !kernel_tests_enabled("sigterm_and_sigint_stop_cleanly") {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let sensor = Sensor::start().expect("sensor starts");
        let socket = sensor.state().join("control.sock");
        assert!(socket.exists());
        let dir = sensor.dir.path().to_owned();
        let status = sensor.stop_with(signal).expect("stops");
        assert!(status.success(), "signal {signal}: exit {status}");
        assert!(!socket.exists(), "the control socket is removed on exit");
        let _ = dir;
    }
}

#[test]
fn a_child_forked_by_a_thread_names_the_process_as_parent() {
    if !kernel_tests_enabled("a_child_forked_by_a_thread_names_the_process_as_parent") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    // A thread started a while after the process: its own start time differs from the
    // process's, and the child's lineage must name the process, not the thread.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let pid = std::thread::spawn(|| {
        let mut c = Command::new("/bin/true").spawn().expect("spawn");
        let pid = c.id();
        c.wait().expect("wait");
        pid
    })
    .join()
    .expect("thread") as u64;
    let exec = sensor
        .wait_event("exec of the thread's child", |e| {
            s(e, "kind") == "exec" && u(e, "pid") == pid
        })
        .expect("exec");
    let me = sensor
        .process(std::process::id())
        .expect("query")
        .expect("this test is known");
    assert_eq!(exec["parent"]["pid"], me["process"]["key"]["pid"]);
    assert_eq!(
        exec["parent"]["start"], me["process"]["key"]["start"],
        "parent named by the process's identity"
    );
    assert_eq!(u(&exec["ancestry"][0], "pid"), std::process::id() as u64);
}
