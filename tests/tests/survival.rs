//! Enforcement that outlives the sensor: what is in force (an exec block, a destination
//! block) stays in force while no sensor runs, after `kill -9` and across restarts, with no
//! moment in between when a blocked payload runs or a blocked connection goes through.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test stops loudly at the first thing that fails"
)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_tests::{
    HttpServer, Sensor, kernel_tests_enabled,
    net::{Cgroup, Peer},
};

/// Tries, every few milliseconds until told to stop on stdin (or for 120 s at most), to
/// connect to ADDR:PORT and to run PAYLOAD; prints one line per try: the CLOCK_MONOTONIC
/// time, whether the connection went through and whether the payload ran (its MARKER file
/// appeared).
const ATTEMPTS: &str = r#"
import os, select, socket, subprocess, sys, time
addr, port, payload, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
print("started", flush=True)
end = time.monotonic() + 120
while time.monotonic() < end:
    if select.select([sys.stdin], [], [], 0)[0]:
        break
    connected = False
    try:
        s = socket.create_connection((addr, port), timeout=0.3)
        connected = True
        s.close()
    except OSError:
        pass
    try:
        subprocess.run([payload], timeout=0.5, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        pass
    ran = os.path.exists(marker)
    print(time.monotonic_ns(), int(connected), int(ran), flush=True)
    time.sleep(0.01)
print("done", flush=True)
"#;

/// Execs and file writes as fast as one process makes them, until told to stop on stdin
/// (or for 120 s at most), in the directory given.
const STORM: &str = r#"
import os, select, subprocess, sys, time
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
end = time.monotonic() + 120
i = 0
while time.monotonic() < end and not select.select([sys.stdin], [], [], 0)[0]:
    subprocess.run(["true"])
    with open(os.path.join(d, "f%d" % (i % 50)), "w") as f:
        f.write("x")
    i += 1
"#;

/// One line of ATTEMPTS: when (CLOCK_MONOTONIC ns), whether the connection went through,
/// whether the payload ran.
fn a_try(line: &str) -> (u64, bool, bool) {
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    assert_eq!(f.len(), 3, "a try: {line:?}");
    (f[0], f[1] == 1, f[2] == 1)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn ctl_ok(s: &Sensor, args: &[&str]) -> String {
    let out = s.ctl(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Downloads a payload over loopback HTTP and runs it: the shipped policy kills it,
/// quarantines it and blocks it at exec. Returns the quarantine record.
fn quarantined_payload(s: &Sensor, dir: &Path, body: &str) -> Value {
    let srv = dir.join("srv");
    std::fs::create_dir(&srv).expect("mkdir");
    std::fs::write(srv.join("p.sh"), body).expect("write");
    let http = HttpServer::serve(&srv.to_string_lossy(), &[]);
    let payload = dir.join("payload");
    let p = payload.display();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "curl -s -o {p} http://127.0.0.1:{}/p.sh && chmod +x {p} && {p}",
            http.port
        ))
        .status()
        .expect("run the download");
    assert!(!st.success(), "the payload was stopped: {st}");
    drop(http);
    // Its process is gone too: nothing of the first run writes anything after this.
    s.wait_action("killing the payload", |r| {
        r["action"] == "kill" && r["status"] == "done"
    });
    s.wait_action("quarantining the payload", |r| {
        r["action"] == "quarantine" && r["status"] == "done"
    })
}

#[test]
fn enforcement_never_lapses_through_kill_9_and_restarts() {
    if !kernel_tests_enabled("enforcement_never_lapses_through_kill_9_and_restarts") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let port = 7301;
    let peer = Peer::new(&[port]);
    let cg = Cgroup::create();
    let dir = tempfile::Builder::new()
        .prefix("vigil-e2e-survive-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut s = Sensor::start_containing(&["--cgroup", cg.arg()]).expect("sensor");

    // In force: the payload blocked at exec, and the peer's port refused.
    let marker = dir.path().join("ran");
    let body = format!("#!/bin/sh\necho ran > {}\nsleep 10\n", marker.display());
    let q = quarantined_payload(&s, dir.path(), &body);
    let dest = format!("{}:{port}", peer.addr);
    let block = ctl_ok(&s, &["block", "--reason", "test: C2", &dest]);
    let block_id = block
        .split_whitespace()
        .next()
        .expect("an action id")
        .to_owned();
    let _ = std::fs::remove_file(&marker);
    let payload = dir.path().join("payload");
    std::fs::write(&payload, &body).expect("re-drop the payload");
    std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pinned = s.status().expect("status")["pins"].clone();
    assert!(pinned["dir"].is_string(), "enforcement is pinned: {pinned}");

    // A crash in the middle of an exec and open storm: nothing runs in userspace any more.
    let journal_before = s.actions();
    let mut storm = Command::new("python3")
        .args(["-c", STORM, &dir.path().join("storm").to_string_lossy()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the storm");
    std::thread::sleep(Duration::from_millis(500));
    s.crash().expect("kill -9");
    let _ = std::fs::remove_file(&marker);
    let mut attempts = cg.python(
        ATTEMPTS,
        &[
            &peer.addr,
            &port.to_string(),
            &payload.to_string_lossy(),
            &marker.to_string_lossy(),
        ],
    );
    let mut out = BufReader::new(attempts.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "started");
    // The window with no sensor lasts until the loop has tried ten times (however loaded
    // the machine is), and at least a second.
    let down_since = Instant::now();
    let mut tries = Vec::new();
    while tries.len() < 10 || down_since.elapsed() < Duration::from_secs(1) {
        line.clear();
        out.read_line(&mut line).expect("read a try");
        tries.push(a_try(&line));
    }
    let down_until = monotonic_ns();

    // Back on the observe policy (what is in force comes from the journal, not the policy;
    // observing, it does not act on the test's own loop), then a clean stop and a start.
    let observe = vigil_tests::observe_policy().expect("observe policy");
    let observe = observe.to_str().expect("utf-8");
    let s = s
        .resume(&["--cgroup", cg.arg(), "--policy", observe])
        .expect("restart after the crash");
    let adopted = s.status().expect("status")["pins"].clone();
    assert!(
        adopted["adopted_maps"] == true && adopted["adopted_links"].as_u64() >= Some(2),
        "the restarted sensor took over what the crashed one left pinned: {adopted}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let s = s
        .restart(&["--cgroup", cg.arg(), "--policy", observe])
        .expect("a clean restart");
    std::thread::sleep(Duration::from_millis(500));

    let stdin = attempts.stdin.as_mut().expect("stdin");
    stdin.write_all(b"stop\n").expect("stop the attempts");
    if let Some(mut i) = storm.stdin.take() {
        let _ = i.write_all(b"stop\n");
    }
    let _ = storm.wait();

    // The journal came through whole: what was there before the crash is there, in order,
    // and no action ran twice.
    let journal_after = s.actions();
    assert_eq!(
        journal_after[..journal_before.len()],
        journal_before[..],
        "the records before the crash are intact"
    );
    let mut ids: Vec<&str> = journal_after
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "every record is there once");
    for action in ["quarantine", "block_destination"] {
        let done = journal_after
            .iter()
            .filter(|r| r["action"] == action && r["status"] == "done" && r["settles"].is_null())
            .count();
        assert_eq!(done, 1, "{action} ran once");
    }
    for l in out.lines() {
        let l = l.expect("read");
        if l == "done" {
            break;
        }
        tries.push(a_try(&l));
    }
    let _ = attempts.wait();
    let while_down = tries.iter().filter(|(t, ..)| *t < down_until).count();
    let connected = tries.iter().filter(|(_, c, _)| *c).count();
    let ran = tries.iter().filter(|(.., r)| *r).count();
    eprintln!(
        "restart gap: {connected} connections and {ran} runs of the blocked payload got through in {} tries ({while_down} with no sensor running)",
        tries.len()
    );
    assert!(
        while_down >= 10,
        "the attempts spanned the time with no sensor: {while_down} tries"
    );
    assert_eq!(connected, 0, "a blocked connection went through");
    assert_eq!(ran, 0, "the blocked payload ran");

    // Nothing in force any more: a clean stop removes every pin.
    let pins = s.pins();
    ctl_ok(&s, &["undo", &block_id]);
    std::fs::remove_file(&payload).expect("make room for the quarantined original");
    ctl_ok(&s, &["undo", q["id"].as_str().expect("id")]);
    let mut s = s;
    s.stop().expect("stop");
    let left: Vec<_> = walk(&pins);
    assert!(left.is_empty(), "pins left with nothing in force: {left:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() {
                let mut v = walk(&p);
                v.push(p);
                v
            } else {
                vec![p]
            }
        })
        .collect()
}

/// A tmpfs mounted for the test, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount a tmpfs at {}", at.display());
        Self(at.to_owned())
    }

    /// Fills it to the last byte.
    fn fill(&self) -> std::path::PathBuf {
        let f = self.0.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", f.display()))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run dd");
        f
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk under the state directory: an action that cannot be journaled is refused and
/// rolled back (the tree is not left frozen with no record and no undo), alerts wait in
/// memory and are counted in `status`, and everything is written once space returns.
#[test]
fn a_full_disk_refuses_unjournaled_actions_and_keeps_alerts_until_space_returns() {
    if !kernel_tests_enabled("a_full_disk_refuses_unjournaled_actions") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let cg = Cgroup::create();
    let dir = tempfile::Builder::new()
        .prefix("vigil-e2e-full-")
        .tempdir()
        .expect("tempdir");
    let disk = SmallDisk::mount(&dir.path().join("state"), "4m");
    let s = Sensor::start_in(dir, &["--cgroup", cg.arg()], true).expect("sensor");
    let out = tempfile::tempdir().expect("tempdir");
    let marks = out.path().join("marks");
    let code = format!(
        "import time\nfor i in range(3000):\n    open({:?}, 'a').write('x')\n    time.sleep(0.02)\n",
        marks.to_string_lossy()
    );
    let mut writer = cg.python(&code, &[]);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while size(&marks) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never wrote ({:?}):\n{}",
            writer.try_wait(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The journal must hold nothing yet: a record appended to a file whose last page has
    // room needs no new block, and is journaled even on a full disk. (Another sensor's
    // test running at the same time can make this one act on its events.)
    let before = s.actions().len();
    assert_eq!(
        before,
        0,
        "the journal is empty before the disk fills: {:?}",
        s.actions()
    );
    let filler = disk.fill();
    let refused = s.ctl(&["freeze", &writer.id().to_string(), "--reason", "test"]);
    assert!(
        !refused.status.success(),
        "a freeze that cannot be journaled is refused"
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("journal"), "{said}");
    let grown = size(&marks);
    std::thread::sleep(Duration::from_millis(400));
    assert!(size(&marks) > grown, "the refused freeze was rolled back");
    assert_eq!(s.actions().len(), before, "no record was half written");
    let st = s.status().expect("status");
    assert!(
        st["actions"]["unjournaled"].as_u64() >= Some(1),
        "{}",
        st["actions"]
    );

    // An alert raised meanwhile waits, counted.
    let read = Command::new("cat")
        .arg("/etc/shadow")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cat");
    assert!(read.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while s.status().expect("status")["alert_log"]["unwritten"].as_u64() < Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the unwritten alert is counted: {}",
            s.status().expect("status")["alert_log"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Space returns: the alert is written, and actions are journaled again.
    std::fs::remove_file(&filler).expect("free the disk");
    s.wait_alert("the alert kept while the disk was full", |a| {
        a["rule"]["id"] == "vigil-credential-read"
            && a["process"]["exe"]
                .as_str()
                .is_some_and(|e| e.ends_with("/cat"))
    });
    assert_eq!(s.status().expect("status")["alert_log"]["unwritten"], 0);
    let id = ctl_ok(
        &s,
        &["freeze", &writer.id().to_string(), "--reason", "test"],
    );
    let id = id
        .split_whitespace()
        .next()
        .expect("an action id")
        .to_owned();
    ctl_ok(&s, &["undo", &id]);
    let _ = writer.kill();
    let _ = writer.wait();
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
}

/// Takes a handle, by id, on the eBPF map `MAP_ID` (`bpf(BPF_MAP_GET_FD_BY_ID)`), as any tool
/// that means to rewrite a map it did not make must.
const MAP_BY_ID: &str = r#"
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
attr = ctypes.create_string_buffer(struct.pack("I", int(sys.argv[1])) + bytes(124))
fd = libc.syscall(321, 14, attr, 128)
print("fd", fd, ctypes.get_errno(), flush=True)
"#;

/// The ids of the eBPF objects of one kind a process holds (`key`: `map_id` or `link_id`),
/// from its /proc/PID/fdinfo.
fn object_ids_of(pid: u32, key: &str) -> Vec<u32> {
    let prefix = format!("{key}:");
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

fn map_ids_of(pid: u32) -> Vec<u32> {
    object_ids_of(pid, "map_id")
}

/// A process that takes a handle on one of the sensor's maps by id raises a critical alert
/// naming the sensor's object; a handle on a map that is not the sensor's raises none.
#[test]
fn a_handle_taken_on_the_sensors_maps_is_a_critical_alert() {
    if !kernel_tests_enabled("a_handle_taken_on_the_sensors_maps_is_a_critical_alert") {
        return;
    }
    let s = Sensor::start().expect("sensor");
    let ids = map_ids_of(s.pid());
    assert!(!ids.is_empty(), "the sensor holds maps");
    let run = |id: u32| {
        let out = Command::new("python3")
            .args(["-c", MAP_BY_ID, &id.to_string()])
            .output()
            .expect("run python");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    };
    let target = ids[0];
    let said = run(target);
    assert!(!said.starts_with("fd -1"), "the handle was taken: {said}");
    let alert = s.wait_alert("for the handle on the sensor's map", |a| {
        a["rule"]["id"] == "vigil-sensor-tampering-bpf"
    });
    assert_eq!(alert["rule"]["severity"], "critical", "{alert}");
    // A handle on a map of the test's own making (alive while it is taken) is seen, and is
    // not the sensor's: no alert for it.
    let mine = Command::new("python3")
        .args([
            "-c",
            r#"
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
# BPF_MAP_CREATE: an array of one u32.
attr = ctypes.create_string_buffer(struct.pack("IIII", 2, 4, 4, 1) + bytes(112))
fd = libc.syscall(321, 0, attr, 128)
info = open("/proc/self/fdinfo/%d" % fd).read()
mid = int([l.split()[1] for l in info.splitlines() if l.startswith("map_id:")][0])
get = ctypes.create_string_buffer(struct.pack("I", mid) + bytes(124))
print(mid, libc.syscall(321, 14, get, 128), flush=True)
"#,
        ])
        .output()
        .expect("make a map and take a handle on it");
    let said = String::from_utf8_lossy(&mine.stdout).into_owned();
    assert!(
        mine.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&mine.stderr)
    );
    let mut words = said.split_whitespace();
    let foreign: u64 = words.next().and_then(|w| w.parse().ok()).expect("a map id");
    let fd: i64 = words.next().and_then(|w| w.parse().ok()).expect("an fd");
    assert!(fd >= 0, "the handle on its own map was taken: {said}");
    let mut s = s;
    s.wait_event("for the handle on the test's own map", |e| {
        e["kind"] == "bpf" && e["object_id"].as_u64() == Some(foreign)
    })
    .expect("the near miss was seen");
    std::thread::sleep(Duration::from_millis(300));
    let tamper = s
        .alerts()
        .iter()
        .filter(|a| a["rule"]["id"] == "vigil-sensor-tampering-bpf")
        .count();
    assert_eq!(
        tamper, 1,
        "only the handle on the sensor's map raised the alert"
    );
}

/// Deletes the first entry of the sensor's destination-block map (found by its name among
/// the maps the sensor holds, MAP_IDS), as a tamperer with root would.
const DELETE_FIRST_BLOCK: &str = r#"
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr + bytes(128 - len(attr)))
    return libc.syscall(321, cmd, buf, 128)
for mid in map(int, sys.argv[1:]):
    fd = bpf(14, struct.pack("I", mid))
    if fd < 0:
        continue
    # BPF_OBJ_GET_INFO_BY_FD: struct bpf_map_info, its name at byte 24.
    info = ctypes.create_string_buffer(128)
    if bpf(15, struct.pack("IIQ", fd, 128, ctypes.addressof(info))) != 0:
        continue
    if info.raw[24:40].split(b"\0")[0] != b"DEST_BLOCKS":
        continue
    key = ctypes.create_string_buffer(32)
    # BPF_MAP_GET_NEXT_KEY with no key: the first one; then BPF_MAP_DELETE_ELEM.
    if bpf(4, struct.pack("IIQQ", fd, 0, 0, ctypes.addressof(key))) != 0:
        print("empty", flush=True)
        sys.exit(0)
    rc = bpf(3, struct.pack("IIQ", fd, 0, ctypes.addressof(key)))
    print("deleted" if rc == 0 else "kept", flush=True)
    sys.exit(0)
print("none", flush=True)
"#;

/// A sensor watching a cgroup of its own, with a peer on `port` blocked as a C2 endpoint.
struct BlockedPeer {
    // Dropped in this order: the sensor, the group, the peer, and last the lock that keeps
    // the other tests that contain out of the way.
    s: Sensor,
    cg: Cgroup,
    peer: Peer,
    port: u16,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl BlockedPeer {
    fn new(port: u16) -> Self {
        let one = vigil_tests::one_at_a_time();
        let peer = Peer::new(&[port]);
        let cg = Cgroup::create();
        let s = Sensor::start_with(&["--cgroup", cg.arg()]).expect("sensor");
        let b = Self {
            s,
            cg,
            peer,
            port,
            _one: one,
        };
        assert!(b.reaches(), "the peer answers before anything is blocked");
        let dest = format!("{}:{port}", b.peer.addr);
        ctl_ok(&b.s, &["block", "--reason", "test: C2", &dest]);
        assert!(!b.reaches(), "blocked");
        b
    }

    fn reaches(&self) -> bool {
        vigil_tests::net::reaches(
            &vigil_tests::net::probe(&self.cg, &self.peer.addr, &[self.port]),
            self.port,
        )
    }

    fn repaired(&self) -> u64 {
        self.s.status().expect("status")["actions"]["repaired"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Runs the tamperer `script` on the ids given, as root; what it printed.
    fn tamper(&self, script: &str, ids: &[u32]) -> String {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        let out = Command::new("python3")
            .args(["-c", script])
            .args(&ids)
            .output()
            .expect("run the tamperer");
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success(),
            "the tamperer failed: {said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    }

    /// Waits for the sensor to count a repair past `before`, then checks the block holds
    /// again and the tamperer's handles were a critical alert.
    fn repaired_past(&self, before: u64, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.repaired() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the sensor did not repair {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!self.reaches(), "blocked again once {what} is repaired");
        let alert = self.s.wait_alert("for the handles the tamperer took", |a| {
            a["rule"]["id"] == "vigil-sensor-tampering-bpf"
        });
        assert_eq!(alert["rule"]["severity"], "critical", "{alert}");
    }
}

/// Another process deleting a destination block from the kernel's map does not lift it: the
/// sensor finds the map no longer says what its journal holds, puts the block back, and
/// counts the repair.
#[test]
fn a_block_deleted_from_the_kernel_by_another_process_is_put_back() {
    if !kernel_tests_enabled("a_block_deleted_from_the_kernel_by_another_process_is_put_back") {
        return;
    }
    let b = BlockedPeer::new(7302);
    let before = b.repaired();
    let said = b.tamper(DELETE_FIRST_BLOCK, &map_ids_of(b.s.pid()));
    assert_eq!(
        said, "deleted",
        "the tamperer deleted the block from the kernel's map"
    );
    b.repaired_past(before, "the map");
}

/// Detaches every cgroup link among the link ids given (BPF_LINK_GET_FD_BY_ID, then
/// BPF_LINK_DETACH), as a tamperer with root would: the links stay, held by the sensor, but
/// run nothing. Prints how many it detached.
const DETACH_LINKS: &str = r#"
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr + bytes(128 - len(attr)))
    return libc.syscall(321, cmd, buf, 128)
detached = 0
for lid in map(int, sys.argv[1:]):
    fd = bpf(30, struct.pack("I", lid))
    if fd >= 0 and bpf(34, struct.pack("I", fd)) == 0:
        detached += 1
print("detached", detached, flush=True)
"#;

/// Another process detaching the network containment programs from their cgroup does not
/// lift a destination block for long: the sensor finds its links running nothing, attaches
/// the programs again, counts the repair, and the handles taken on its links are a critical
/// alert.
#[test]
fn containment_programs_detached_by_another_process_are_attached_again() {
    if !kernel_tests_enabled("containment_programs_detached_by_another_process_are_attached_again")
    {
        return;
    }
    let b = BlockedPeer::new(7303);
    let before = b.repaired();
    let links = object_ids_of(b.s.pid(), "link_id");
    assert!(!links.is_empty(), "the sensor holds its containment links");
    let said = b.tamper(DETACH_LINKS, &links);
    assert!(
        said.starts_with("detached ") && said != "detached 0",
        "the tamperer detached the sensor's links: {said}"
    );
    b.repaired_past(before, "the links");
    assert!(
        b.s.log()
            .contains("detached by another process: attached again"),
        "the repair says what happened:\n{}",
        b.s.log()
    );
}
