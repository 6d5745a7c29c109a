//! Every monitored syscall against the real kernel: the test does the real thing and asserts
//! the exact fields the sensor reported, including for failed attempts.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    os::unix::{fs::MetadataExt, fs::PermissionsExt, net::UnixListener, net::UnixStream},
    process::{Command, Stdio},
};

use serde_json::Value;
use vigil_tests::{Sensor, kernel_tests_enabled, s, u};

fn me() -> u64 {
    std::process::id() as u64
}

fn path_is(e: &Value, key: &str, path: &std::path::Path) -> bool {
    e[key]["path"].as_str() == Some(path.to_str().expect("utf-8 path"))
}

/// Runs a python snippet to completion; its stdout.
fn python(code: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn file_events_have_exact_paths_flags_modes_and_results() {
    if !kernel_tests_enabled("file_events_have_exact_paths_flags_modes_and_results") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");

    // Create for writing: path, flags, and the inode's identity.
    std::fs::File::create(&a)
        .expect("create")
        .write_all(b"x")
        .expect("write");
    let meta = std::fs::metadata(&a).expect("meta");
    let open = sensor
        .wait_event("create of a.txt", |e| {
            s(e, "kind") == "open" && path_is(e, "file", &a)
        })
        .expect("open event");
    assert_eq!(u(&open, "pid"), me());
    assert_eq!(open["write"], true);
    assert_eq!(open["create"], true);
    assert_eq!(open["truncate"], true);
    assert!(open["ret"].as_i64().unwrap_or(-1) >= 0);
    assert_eq!(open["file"]["id"]["ino"], meta.ino());
    assert_eq!(open["file"]["id"]["dev"], meta.dev());

    // A failed create is an event too.
    let missing = dir.path().join("no-such-dir/x");
    assert!(std::fs::File::create(&missing).is_err());
    let failed = sensor
        .wait_event("failed create", |e| {
            s(e, "kind") == "open" && path_is(e, "file", &missing)
        })
        .expect("failed open event");
    assert_eq!(failed["ret"], -2);
    assert_eq!(failed["error"], "ENOENT");

    // A read-only open of an ordinary file is filtered in the kernel; of a private key, kept.
    drop(std::fs::read(&a).expect("read"));
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, b"secret").expect("write key");
    drop(std::fs::read(&key).expect("read key"));
    let sensitive = sensor
        .wait_event("read of the key", |e| {
            s(e, "kind") == "open" && path_is(e, "file", &key) && e["write"] == false
        })
        .expect("sensitive read");
    assert_eq!(sensitive["sensitive_read"], true);

    // chmod with the setuid bit, then fchmod through an fd.
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    let chmod = sensor
        .wait_event("chmod", |e| {
            s(e, "kind") == "chmod" && path_is(e, "file", &a) && e["mode"] == 0o4755
        })
        .expect("chmod event");
    assert_eq!(chmod["setuid"], true);
    assert_eq!(chmod["setgid"], false);
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&a)
        .expect("open");
    f.set_permissions(std::fs::Permissions::from_mode(0o640))
        .expect("fchmod");
    let fchmod = sensor
        .wait_event("fchmod", |e| {
            s(e, "syscall") == "fchmod" && e["mode"] == 0o640 && u(e, "pid") == me()
        })
        .expect("fchmod event");
    assert!(
        path_is(&fchmod, "file", &a),
        "fchmod names the file behind the fd: {fchmod}"
    );
    assert_eq!(fchmod["file"]["id"]["ino"], meta.ino());
    drop(f);

    // chown leaving the group alone (-1).
    std::os::unix::fs::chown(&a, Some(4321), None).expect("chown");
    let chown = sensor
        .wait_event("chown", |e| {
            s(e, "kind") == "chown" && path_is(e, "file", &a)
        })
        .expect("chown event");
    assert_eq!(chown["owner"], 4321);
    assert_eq!(chown["group"], Value::Null);

    // rename, unlink, and a failed unlink.
    std::fs::rename(&a, &b).expect("rename");
    let rename = sensor
        .wait_event("rename", |e| {
            s(e, "kind") == "rename" && path_is(e, "file", &a)
        })
        .expect("rename event");
    assert!(path_is(&rename, "to", &b));
    assert_eq!(rename["ret"], 0);
    std::fs::remove_file(&b).expect("unlink");
    sensor
        .wait_event("unlink", |e| {
            s(e, "kind") == "unlink" && path_is(e, "file", &b) && e["ret"] == 0
        })
        .expect("unlink event");
    assert!(std::fs::remove_file(&b).is_err());
    sensor
        .wait_event("failed unlink", |e| {
            s(e, "kind") == "unlink" && path_is(e, "file", &b) && e["ret"] == -2
        })
        .expect("failed unlink event");

    // The ordinary read-only open above never showed up.
    sensor.poll_events().expect("poll");
    assert!(
        !sensor
            .events
            .iter()
            .any(|e| s(e, "kind") == "open" && path_is(e, "file", &a) && e["write"] == false),
        "a read-only open of an ordinary file was reported"
    );

    // A relative path is resolved against the process's working directory.
    let rel = dir.path().join("rel.txt");
    let st = Command::new("/bin/sh")
        .args(["-c", "cd \"$1\" && echo x > rel.txt && sleep 0.3", "sh"])
        .arg(dir.path())
        .status()
        .expect("sh");
    assert!(st.success());
    let relative = sensor
        .wait_event("relative create", |e| {
            s(e, "kind") == "open" && path_is(e, "file", &rel)
        })
        .expect("relative open event");
    assert_eq!(relative["file"]["resolved"], true);
}

#[test]
fn network_events_have_addresses_ports_and_results() {
    if !kernel_tests_enabled("network_events_have_addresses_ports_and_results") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let client = TcpStream::connect(server).expect("connect");
    let client_addr = client.local_addr().expect("client addr");
    let (_conn, peer) = listener.accept().expect("accept");
    assert_eq!(peer, client_addr);
    let server_s = server.to_string();
    let client_s = client_addr.to_string();

    let bind = sensor
        .wait_event("bind", |e| {
            s(e, "kind") == "bind" && e["net"]["local"] == server_s.as_str()
        })
        .expect("bind event");
    assert_eq!(bind["net"]["protocol"], "tcp");
    assert_eq!(bind["net"]["family"], "inet");
    let listen = sensor
        .wait_event("listen", |e| {
            s(e, "kind") == "listen" && e["net"]["local"] == server_s.as_str()
        })
        .expect("listen event");
    assert_eq!(listen["ret"], 0);
    let connect = sensor
        .wait_event("connect", |e| {
            s(e, "kind") == "connect" && e["net"]["remote"] == server_s.as_str()
        })
        .expect("connect event");
    assert_eq!(
        connect["net"]["local"],
        client_s.as_str(),
        "connect carries its local port"
    );
    assert_eq!(connect["ret"], 0);
    let accept = sensor
        .wait_event("accept", |e| {
            s(e, "kind") == "accept" && e["net"]["local"] == server_s.as_str()
        })
        .expect("accept event");
    assert_eq!(
        accept["net"]["remote"],
        client_s.as_str(),
        "accept carries the peer"
    );

    // A refused connection.
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    assert!(TcpStream::connect(closed).is_err());
    let closed_s = closed.to_string();
    let refused = sensor
        .wait_event("refused connect", |e| {
            s(e, "kind") == "connect" && e["net"]["remote"] == closed_s.as_str()
        })
        .expect("refused connect event");
    assert_eq!(refused["error"], "ECONNREFUSED");
    assert_eq!(refused["ret"], -111);

    // IPv6 and UNIX sockets.
    if let Ok(l6) = TcpListener::bind("[::1]:0") {
        let a6 = l6.local_addr().expect("addr").to_string();
        let _c6 = TcpStream::connect(l6.local_addr().expect("addr")).expect("connect v6");
        let c = sensor
            .wait_event("connect v6", |e| {
                s(e, "kind") == "connect" && e["net"]["remote"] == a6.as_str()
            })
            .expect("v6 connect");
        assert_eq!(c["net"]["family"], "inet6");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("s.sock");
    let _ul = UnixListener::bind(&sock).expect("unix bind");
    let _uc = UnixStream::connect(&sock).expect("unix connect");
    let sock_s = sock.to_str().expect("utf-8").to_owned();
    let unix = sensor
        .wait_event("unix connect", |e| {
            s(e, "kind") == "connect" && e["net"]["unix_path"] == sock_s.as_str()
        })
        .expect("unix connect event");
    assert_eq!(unix["net"]["family"], "unix");
}

#[test]
fn privilege_changes_and_their_failures() {
    if !kernel_tests_enabled("privilege_changes_and_their_failures") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let out = python(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)\n\
         data = (ctypes.c_uint32 * 6)()\n\
         assert libc.syscall(125, hdr, data) == 0\n\
         assert libc.syscall(126, hdr, data) == 0\n\
         print(os.getpid(), data[0])\n\
         os.setresgid(4242, 4242, 4242)\n\
         os.setresuid(4242, 4242, 4242)\n\
         try:\n    os.setuid(0)\nexcept PermissionError:\n    pass\n",
    );
    let mut parts = out.split_whitespace();
    let pid: u64 = parts.next().and_then(|p| p.parse().ok()).expect("pid");
    let effective: u64 = parts.next().and_then(|p| p.parse().ok()).expect("caps");
    let capset = sensor
        .wait_event("capset", |e| s(e, "kind") == "capset" && u(e, "pid") == pid)
        .expect("capset event");
    assert_eq!(capset["effective"], effective);
    assert_eq!(capset["ret"], 0);
    let gid = sensor
        .wait_event("setresgid", |e| {
            s(e, "syscall") == "setresgid" && u(e, "pid") == pid
        })
        .expect("setresgid event");
    assert_eq!(gid["new_egid"], 4242);
    assert_eq!(gid["ret"], 0);
    let uid = sensor
        .wait_event("setresuid", |e| {
            s(e, "syscall") == "setresuid" && u(e, "pid") == pid
        })
        .expect("setresuid event");
    assert_eq!(uid["new_ruid"], 4242);
    assert_eq!(uid["new_euid"], 4242);
    assert_eq!(uid["new_suid"], 4242);
    assert_eq!(
        uid["euid"], 4242,
        "the process runs as 4242 after the call: {uid}"
    );
    let denied = sensor
        .wait_event("setuid(0) denied", |e| {
            s(e, "syscall") == "setuid" && u(e, "pid") == pid
        })
        .expect("setuid event");
    assert_eq!(denied["error"], "EPERM");
    assert_eq!(denied["new_euid"], 0, "it asked for root");
    assert_eq!(denied["euid"], 4242, "and did not get it");
}

#[test]
fn tampering_calls_are_reported() {
    if !kernel_tests_enabled("tampering_calls_are_reported") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");

    // ptrace attach to another process, then kill it; and a kill of a missing pid.
    let mut victim = Command::new("/bin/sleep").arg("30").spawn().expect("sleep");
    let vpid = victim.id();
    let tracer = python(&format!(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         assert libc.ptrace(16, {vpid}, 0, 0) == 0\nos.waitpid({vpid}, 0) if False else None\n\
         import time; time.sleep(0.1)\nlibc.ptrace(17, {vpid}, 0, 0)\nprint(os.getpid())"
    ));
    let tracer: u64 = tracer.parse().expect("tracer pid");
    let ptrace = sensor
        .wait_event("ptrace attach", |e| {
            s(e, "kind") == "ptrace" && u(e, "pid") == tracer && e["request"] == 16
        })
        .expect("ptrace event");
    assert_eq!(ptrace["request_name"], "PTRACE_ATTACH");
    assert_eq!(ptrace["target_pid"], vpid);
    assert_eq!(ptrace["ret"], 0);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(vpid as i32, libc::SIGTERM) };
    victim.wait().expect("wait");
    let kill = sensor
        .wait_event("kill", |e| {
            s(e, "kind") == "kill" && e["target_pid"] == vpid && u(e, "pid") == me()
        })
        .expect("kill event");
    assert_eq!(kill["signal"], 15);
    // SAFETY: signal 0 to a pid that does not exist only returns ESRCH.
    unsafe { libc::kill(0x3ffffe, 0) };
    let missing = sensor
        .wait_event("kill of a missing pid", |e| {
            s(e, "kind") == "kill" && e["target_pid"] == 0x3ffffe
        })
        .expect("failed kill event");
    assert_eq!(missing["error"], "ESRCH");

    // memfd_create, and fileless execution from it; exec of a deleted file.
    let out = python(
        "import os, sys\n\
         fd = os.memfd_create('vigil-test-memfd', 0)\n\
         os.write(fd, open('/bin/true','rb').read())\n\
         pid = os.fork()\n\
         if pid == 0:\n    os.execv('/proc/self/fd/%d' % fd, ['fileless'])\n\
         os.waitpid(pid, 0)\n\
         print(os.getpid(), pid)",
    );
    let pids: Vec<u64> = out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let memfd = sensor
        .wait_event("memfd_create", |e| {
            s(e, "kind") == "memfd_create" && u(e, "pid") == pids[0]
        })
        .expect("memfd_create event");
    assert_eq!(memfd["name"], "vigil-test-memfd");
    let exec = sensor
        .wait_event("fileless exec", |e| {
            s(e, "kind") == "exec" && u(e, "pid") == pids[1]
        })
        .expect("exec event");
    assert_eq!(exec["fileless"], true);
    assert_eq!(exec["memfd"], true);

    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("gone");
    std::fs::copy("/bin/true", &copy).expect("copy");
    let out = python(&format!(
        "import os\nfd = os.open('{}', os.O_RDONLY)\nos.unlink('{}')\npid = os.fork()\n\
         if pid == 0:\n    os.execv('/proc/self/fd/%d' % fd, ['gone'])\nos.waitpid(pid, 0)\nprint(pid)",
        copy.display(),
        copy.display()
    ));
    let child: u64 = out.parse().expect("pid");
    let exec = sensor
        .wait_event("exec of a deleted file", |e| {
            s(e, "kind") == "exec" && u(e, "pid") == child
        })
        .expect("exec event");
    assert_eq!(exec["fileless"], true);
    assert_eq!(exec["memfd"], false);

    // bpf(BPF_PROG_LOAD) of an empty program: refused, but reported with its type.
    let loader = python(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         attr = (ctypes.c_uint8 * 128)()\nattr[0] = 1\n\
         libc.syscall(321, 5, attr, 128)\nprint(os.getpid())",
    );
    let loader: u64 = loader.parse().expect("pid");
    let bpf = sensor
        .wait_event("bpf prog load", |e| {
            s(e, "kind") == "bpf" && u(e, "pid") == loader
        })
        .expect("bpf event");
    assert_eq!(bpf["command_name"], "BPF_PROG_LOAD");
    assert_eq!(bpf["prog_type"], 1);
    assert!(
        bpf["ret"].as_i64().unwrap_or(0) < 0,
        "an empty program is refused: {bpf}"
    );

    // mount a tmpfs.
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).expect("mkdir");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "vigil-test-src"])
        .arg(&target)
        .status()
        .expect("mount");
    assert!(st.success());
    let mount = sensor
        .wait_event("mount", |e| {
            s(e, "kind") == "mount" && path_is(e, "target", &target)
        })
        .expect("mount event");
    assert_eq!(mount["source"], "vigil-test-src");
    assert_eq!(mount["fstype"], "tmpfs");
    assert_eq!(mount["ret"], 0);
    let _ = Command::new("umount").arg(&target).status();

    // Module loading: attached where the kernel has it, listed as skipped where it does not.
    let st = sensor.status().expect("status");
    let named = |list: &Value, p: &str| {
        list.as_array()
            .is_some_and(|hooks| hooks.iter().any(|h| h["program"] == p))
    };
    for p in ["vigil_exit_init_module", "vigil_exit_finit_module"] {
        assert!(
            named(&st["hooks"], p) ^ named(&st["skipped_hooks"], p),
            "{p}: {st}"
        );
    }
}

#[test]
fn exec_reports_what_the_standard_streams_are() {
    if !kernel_tests_enabled("exec_reports_what_the_standard_streams_are") {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let sock = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let child = Command::new("/bin/sh")
        .args(["-c", "exec /bin/sleep 0.2"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(sock)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as u64;
    child.wait_with_output().expect("wait");
    let exec = sensor
        .wait_event("exec of sleep", |e| {
            s(e, "kind") == "exec" && u(e, "pid") == pid && s(e, "exe") == "/bin/sleep"
        })
        .expect("exec event");
    assert_eq!(exec["stdio"], serde_json::json!(["socket", "pipe", "null"]));
    assert_eq!(exec["fileless"], false);
}

#[test]
fn repeats_are_coalesced_in_the_kernel_and_counted_but_distinct_calls_are_not() {
    if !kernel_tests_enabled(
        "repeats_are_coalesced_in_the_kernel_and_counted_but_distinct_calls_are_not",
    ) {
        return;
    }
    let mut sensor = Sensor::start().expect("sensor starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    let done = dir.path().join("done");
    let before = sensor.status().expect("status")["events"]["syscall"]["coalesced"]
        .as_u64()
        .unwrap_or(0);
    // One process: 200 write-opens of one file, then a different file, then the first with
    // other flags; 50 connections to one listener; then, past the window, the first again.
    let out = python(&format!(
        "import os, socket, time
a, b = {a:?}, {b:?}
for _ in range(200): os.close(os.open(a, os.O_WRONLY | os.O_CREAT, 0o600))
os.close(os.open(b, os.O_WRONLY | os.O_CREAT, 0o600))
os.close(os.open(a, os.O_RDWR))
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(64)
port = srv.getsockname()[1]
for _ in range(50):
    c = socket.socket(); c.connect(('127.0.0.1', port)); s, _ = srv.accept(); c.close(); s.close()
time.sleep(1.5)
os.close(os.open(a, os.O_WRONLY | os.O_CREAT, 0o600))
os.close(os.open({done:?}, os.O_WRONLY | os.O_CREAT, 0o600))
print(os.getpid(), port)",
        a = a.display().to_string(),
        b = b.display().to_string(),
        done = done.display().to_string(),
    ));
    let mut fields = out
        .split_whitespace()
        .map(|v| v.parse::<u64>().expect("number"));
    let (pid, port) = (fields.next().expect("pid"), fields.next().expect("port"));
    sensor
        .wait_event("the last open", |e| {
            s(e, "kind") == "open" && path_is(e, "file", &done)
        })
        .expect("last open");
    let events = sensor.events.clone();
    let mine = |kind: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| s(e, "kind") == kind && u(e, "pid") == pid)
            .collect()
    };
    let opens_of_a: Vec<&Value> = mine("open")
        .into_iter()
        .filter(|e| path_is(e, "file", &a))
        .collect();
    // The first of the 200, the one with other flags, and the one past the window, which
    // carries the 199 counted before it.
    assert_eq!(opens_of_a.len(), 3, "opens of a.log: {opens_of_a:#?}");
    let repeats: Vec<u64> = opens_of_a
        .iter()
        .map(|e| e["repeats"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(repeats, [0, 0, 199], "{opens_of_a:#?}");
    assert_eq!(
        mine("open")
            .iter()
            .filter(|e| path_is(e, "file", &b))
            .count(),
        1
    );
    let remote = format!("127.0.0.1:{port}");
    let connects = mine("connect")
        .into_iter()
        .filter(|e| e["net"]["remote"] == remote.as_str())
        .count();
    let accepts = mine("accept")
        .into_iter()
        .filter(|e| e["net"]["local"] == remote.as_str())
        .count();
    assert_eq!(
        (connects, accepts),
        (1, 1),
        "50 connections, one of each delivered"
    );
    let coalesced = sensor.status().expect("status")["events"]["syscall"]["coalesced"]
        .as_u64()
        .unwrap_or(0)
        - before;
    assert!(
        coalesced >= 199 + 49 + 49,
        "the kernel counted {coalesced} coalesced calls"
    );

    // With coalescing off, every call is delivered.
    let mut sensor = sensor.restart(&["--coalesce-ms", "0"]).expect("restart");
    let c = dir.path().join("c.log");
    let out = python(&format!(
        "import os
for _ in range(20): os.close(os.open({c:?}, os.O_WRONLY | os.O_CREAT, 0o600))
os.close(os.open({done:?}, os.O_WRONLY | os.O_CREAT, 0o600))
print(os.getpid())",
        c = c.display().to_string(),
        done = done.display().to_string(),
    ));
    let pid: u64 = out.parse().expect("pid");
    sensor
        .wait_event("the last open", |e| {
            s(e, "kind") == "open" && path_is(e, "file", &done) && u(e, "pid") == pid
        })
        .expect("last open");
    let opens_of_c = sensor
        .events
        .iter()
        .filter(|e| s(e, "kind") == "open" && u(e, "pid") == pid && path_is(e, "file", &c))
        .count();
    assert_eq!(opens_of_c, 20);
}
