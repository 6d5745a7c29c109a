//! A benign workload raises no alert with the shipped rules: compiling and running a C
//! program, git operations, tar, a python script writing files, a local HTTP fetch.
//! Alone in its test binary, so no other test's activity reaches this sensor.

use std::process::{Command, Stdio};

use vigil_tests::{HttpServer, Sensor, kernel_tests_enabled};

fn sh(dir: &std::path::Path, script: &str) {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_benign_workload_raises_no_alert() {
    if !kernel_tests_enabled("a_benign_workload_raises_no_alert") {
        return;
    }
    // As a user runs it: the shipped rules and policy, in contain mode.
    let sensor = Sensor::start_containing(&[]).expect("sensor starts");
    let d = tempfile::Builder::new()
        .prefix("vigil-benign-")
        .tempdir()
        .expect("tempdir");
    let dir = d.path();
    std::fs::write(
        dir.join("hello.c"),
        "#include <stdio.h>\nint main(void){puts(\"hello\");return 0;}\n",
    )
    .expect("write");
    sh(dir, "cc -O1 -o hello hello.c && ./hello");
    sh(
        dir,
        "git init -q repo && cd repo && echo one > a.txt && git add a.txt \
         && git -c user.email=dev@example.com -c user.name=dev commit -qm one \
         && git checkout -qb topic && echo two >> a.txt && git commit -qam two \
         && git checkout -q - && git merge -q topic && git log --oneline > ../log.txt \
         && cd .. && git clone -q repo clone && git -C clone status --short",
    );
    sh(
        dir,
        "tar czf repo.tgz repo && mkdir out && tar xzf repo.tgz -C out && tar tzf repo.tgz > list.txt",
    );
    sh(
        dir,
        "python3 -c \"import json,os\nos.makedirs('data', exist_ok=True)\nfor i in range(20):\n    open(f'data/{i}.json','w').write(json.dumps({'i': i}))\nos.rename('data/0.json', 'data/zero.json')\nos.chmod('data/1.json', 0o600)\"",
    );
    let http = HttpServer::serve(&dir.to_string_lossy(), &[]);
    sh(
        dir,
        &format!(
            "curl -s -o index.html http://127.0.0.1:{}/ && test -s index.html",
            http.port
        ),
    );
    drop(http);

    // Everything above has reached the sensor once a marker written after it has.
    let marker = dir.join("marker");
    std::fs::write(&marker, b"done").expect("marker");
    let mut s = sensor;
    s.wait_event("for the marker", |e| {
        e["kind"] == "open" && e["file"]["path"] == marker.to_string_lossy().as_ref()
    })
    .expect("marker seen");
    let alerts = s.alerts();
    assert!(
        alerts.is_empty(),
        "a benign workload raised {} alerts:\n{}",
        alerts.len(),
        alerts
            .iter()
            .map(|a| format!(
                "{} pid {} {} ({})",
                a["rule"]["id"], a["process"]["pid"], a["process"]["cmdline"], a["entities"]
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(s.incidents().is_empty());
}
