//! The controller with real sensors over real QUIC on loopback: enrollment, refusal of every
//! peer that has no right to anything, store-and-forward across a controller restart, and
//! containment driven from the controller.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use sensor_common::protocol::{
    ALPN, Downlink, HostReport, SERVER_NAME, Uplink, read_frame, write_frame,
};
use serde_json::Value;
use vigil_tests::{
    Sensor,
    fleet::{Controller, mode},
    kernel_tests_enabled,
    net::{Cgroup, Peer, probe, reaches},
    observe_policy, sensor_cmd,
};

/// Makes a real alert: a setuid bit on a copy of /bin/true (rule `vigil-setuid-bit`).
fn setuid_alert(dir: &Path, name: &str) {
    vigil_tests::setuid_copy(dir, name);
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alert_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["body"]["id"].as_str().map(str::to_owned))
        .collect()
}

/// The controller holds the sensor's alerts, in order, each once. The host keeps working
/// (other tests run beside this one), so the sensor's log may grow meanwhile: what the
/// controller holds is a prefix of it, at least as long as the log was before.
fn same_alerts(c: &Controller, sensor: &Sensor) {
    let ids = |s: &Sensor| -> Vec<String> {
        s.alerts()
            .iter()
            .filter_map(|a| a["id"].as_str().map(str::to_owned))
            .collect()
    };
    let before = ids(sensor);
    let remote = wait("every alert at the controller", || {
        let r = alert_ids(&c.records("alerts"));
        (r.len() >= before.len()).then_some(r)
    });
    let after = ids(sensor);
    assert!(
        remote.len() <= after.len() && remote[..] == after[..remote.len()],
        "same alerts, same order, no duplicate:\ncontroller {remote:?}\nsensor {after:?}"
    );
}

#[test]
fn enrollment_and_telemetry_across_a_controller_restart_lose_nothing_and_duplicate_nothing() {
    if !kernel_tests_enabled("controller telemetry") {
        return;
    }
    let mut c = Controller::start().expect("controller");
    let token = c.token(600);
    let sensor = Sensor::start_with(&["--controller", &c.addr.to_string(), "--enroll", &token])
        .expect("sensor");
    let hosts = c.wait_hosts("the sensor online", |h| {
        h.len() == 1 && h[0]["connected"] == true
    });
    let host_id = hosts[0]["id"].as_str().expect("id").to_owned();
    let identity = sensor.state().join("identity");
    for f in ["key.pem", "cert.pem", "ca.pem", "host_id"] {
        assert_eq!(mode(&identity.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&identity), 0o700);

    let dir = tempfile::tempdir().expect("tempdir");
    setuid_alert(dir.path(), "first");
    let first = dir.path().join("first").to_string_lossy().into_owned();
    wait("the first alert at the controller", || {
        c.records("alerts")
            .iter()
            .any(|r| r["body"]["entities"].to_string().contains(&first))
            .then_some(())
    });

    // The controller goes away; the sensor keeps detecting and keeps the records on disk.
    c.stop().expect("stop");
    for n in 0..3 {
        setuid_alert(dir.path(), &format!("while-down-{n}"));
    }
    let mine = |s: &Sensor| {
        s.alerts()
            .iter()
            .filter(|a| a["entities"].to_string().contains("while-down-"))
            .count()
    };
    wait("the 3 alerts in the sensor's log", || {
        (mine(&sensor) == 3).then_some(())
    });
    c.restart().expect("restart");
    same_alerts(&c, &sensor);
    let remote = c.records("alerts");
    let seqs: Vec<u64> = remote.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=remote.len() as u64).collect::<Vec<_>>());
    assert!(remote.iter().all(|r| r["host"] == host_id.as_str()));
    // A restart of the sensor resends nothing (its own stop may add an alert: that one
    // comes up once).
    let sensor = sensor
        .restart(&["--controller", &c.addr.to_string()])
        .expect("sensor restart");
    c.wait_hosts("the sensor back", |h| h[0]["connected"] == true);
    std::thread::sleep(Duration::from_secs(1));
    same_alerts(&c, &sensor);
}

/// A QUIC client of the controller's sensor ALPN with the given identity.
fn client(ca_pem: &str, cert_pem: &str, key_pem: &str) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca"))
        .expect("root");
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key"),
        )
        .expect("client auth");
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    let mut ep = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("endpoint");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).expect("quic"),
    )));
    ep
}

/// Says hello as `host_id` and returns what the controller answers (or why there is none).
async fn hello(ep: &quinn::Endpoint, addr: SocketAddr, host_id: &str) -> Result<Downlink, String> {
    let conn = ep
        .connect(addr, SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = Uplink::Hello {
        host_id: host_id.to_owned(),
        report: HostReport::default(),
    };
    write_frame(&mut send, &hello)
        .await
        .map_err(|e| e.to_string())?;
    match read_frame::<Downlink, _>(&mut recv).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err("stream ended".into()),
        Err(e) => Err(conn
            .close_reason()
            .map_or_else(|| e.to_string(), |r| r.to_string())),
    }
}

#[test]
fn reused_and_expired_tokens_forged_certificates_revoked_hosts_and_garbage_get_nothing() {
    let c = Controller::start().expect("controller");
    let token = c.token(600);
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let enroll = |dir: &Path, token: &str| {
        sensor_cmd(&[
            "enroll",
            "--state",
            dir.to_str().expect("utf-8"),
            "--controller",
            &c.addr.to_string(),
            "--token",
            token,
        ])
    };
    let first = enroll(a.path(), &token);
    assert!(
        first.status.success(),
        "{}{}",
        String::from_utf8_lossy(&first.stderr),
        c.log()
    );
    let reused = enroll(b.path(), &token);
    assert!(!reused.status.success(), "a token works once");
    assert!(String::from_utf8_lossy(&reused.stderr).contains("refused"));
    let expired = enroll(b.path(), &c.token(0));
    assert!(!expired.status.success(), "an expired token gets nothing");
    // A token naming another CA: the sensor refuses the controller.
    let mut other = c.token(600);
    other.replace_range(other.len() - 4.., "0000");
    let pinned = enroll(b.path(), &other);
    assert!(!pinned.status.success(), "the CA is pinned by the token");
    assert!(!b.path().join("identity").exists(), "{pinned:?}");
    assert_eq!(c.hosts().len(), 1, "one host enrolled: {:?}", c.hosts());

    let read =
        |name: &str| std::fs::read_to_string(a.path().join("identity").join(name)).expect(name);
    let host_id = read("host_id");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // The real identity is welcome.
        let ep = client(&c.ca_pem(), &read("cert.pem"), &read("key.pem"));
        let welcome = hello(&ep, c.addr, &host_id).await;
        assert!(
            matches!(welcome, Ok(Downlink::Welcome { .. })),
            "{welcome:?}"
        );
        // A hello naming another host on that certificate is refused.
        let lying = hello(&ep, c.addr, "h-0000000000000000").await;
        assert!(lying.is_err(), "{lying:?}");

        // A certificate from another CA, claiming the same host.
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, host_id.as_str());
        let forged = params.self_signed(&key).expect("forge");
        let ep = client(&c.ca_pem(), &forged.pem(), &key.serialize_pem());
        let answer = hello(&ep, c.addr, &host_id).await;
        assert!(
            answer.is_err(),
            "a forged certificate gets nothing: {answer:?}"
        );

        // Garbage on the telemetry stream closes that peer only.
        let ep = client(&c.ca_pem(), &read("cert.pem"), &read("key.pem"));
        let conn = ep
            .connect(c.addr, SERVER_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        tokio::io::AsyncWriteExt::write_all(&mut send, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
            .await
            .expect("write");
        let got = read_frame::<Downlink, _>(&mut recv).await;
        assert!(!matches!(got, Ok(Some(_))), "{got:?}");
        let again = hello(&ep, c.addr, &host_id).await;
        assert!(
            matches!(again, Ok(Downlink::Welcome { .. })),
            "the server carries on: {again:?}"
        );

        // Revoked: the same certificate gets nothing from now on.
        let out = c.ctl(&["revoke", &host_id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let revoked = hello(&ep, c.addr, &host_id).await;
        assert!(
            revoked.as_ref().is_err_and(|e| e.contains("revoked")),
            "{revoked:?}"
        );
    });
    assert!(
        c.log().contains("bytes is over the"),
        "the oversized frame is logged:\n{}",
        c.log()
    );
}

/// A sensor enrolled with `c` that watches the processes of `cg` and contains only them
/// (so isolating "the host" cuts the test group, not the machine), and its hostname.
fn watched_host(c: &Controller, cg: &Cgroup) -> (Sensor, String) {
    let sensor = Sensor::start_with(&[
        "--cgroup",
        cg.arg(),
        "--scope-cgroup",
        cg.arg(),
        "--controller",
        &c.addr.to_string(),
        "--enroll",
        &c.token(600),
    ])
    .expect("sensor");
    let hosts = c.wait_hosts("the sensor online", |h| {
        h.len() == 1 && h[0]["connected"] == true
    });
    let hostname = hosts[0]["hostname"].as_str().expect("hostname").to_owned();
    (sensor, hostname)
}

#[test]
fn contain_then_release_after_verifying_the_host_is_clean() {
    if !kernel_tests_enabled("controller containment") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let (c, port) = (Controller::start().expect("controller"), 7131);
    let (peer, cg) = (Peer::new(&[port]), Cgroup::create());
    let (sensor, hostname) = watched_host(&c, &cg);
    assert!(reaches(&probe(&cg, &peer.addr, &[port]), port));

    let out = c.ctl(&["contain", &hostname, "--reason", "lateral movement seen"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    let record: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap_or_default())
            .expect("the action record");
    assert_eq!(record["action"], "isolate");
    assert_eq!(record["status"], "done");
    assert!(
        record["requested_by"]
            .as_str()
            .unwrap_or("")
            .contains("controller")
    );
    assert!(!reaches(&probe(&cg, &peer.addr, &[port]), port), "isolated");
    // The controller itself stays reachable: the host reports its isolation.
    c.wait_hosts("the isolation reported", |h| {
        h[0]["report"]["isolated"] == true
    });

    // What the attacker left: a setuid copy of a binary, made inside the watched group.
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = dir.path().join("suid-left-behind");
    let code = "import os, shutil, sys\n\
        shutil.copy('/bin/true', sys.argv[1]); os.chmod(sys.argv[1], 0o4755)\n";
    let st = cg
        .python(code, &[payload.to_str().expect("utf-8")])
        .wait()
        .expect("python");
    assert!(st.success());
    wait("the setuid alert at the controller", || {
        c.records("alerts")
            .iter()
            .any(|r| r["body"]["rule"]["id"] == "vigil-setuid-bit")
            .then_some(())
    });

    let refused = c.ctl(&["release", &hostname]);
    let why = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success(),
        "released with the payload there: {}\nalerts: {:?}\n{}",
        String::from_utf8_lossy(&refused.stdout),
        c.records("alerts"),
        c.log()
    );
    assert!(
        why.contains("still present") && why.contains(payload.to_str().expect("utf-8")),
        "the refusal names the indicator: {why}"
    );
    assert!(
        !reaches(&probe(&cg, &peer.addr, &[port]), port),
        "still isolated after the refusal"
    );

    std::fs::remove_file(&payload).expect("clean up the payload");
    // What happens after the release (the probe below is an interpreter connecting to an
    // unusual port off the host, which the shipped rules flag) opens incidents of its own.
    let released_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let out = c.ctl(&["release", &hostname]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let released: Value = serde_json::from_slice(&out.stdout).expect("release JSON");
    assert_eq!(released["verified"], true);
    assert!(released["indicators_checked"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(released["lifted"][0]["action"], "undo");
    let closed = released["closed_incidents"].as_array().expect("closed");
    assert!(!closed.is_empty());
    assert!(reaches(&probe(&cg, &peer.addr, &[port]), port), "released");

    let incidents = vigil_tests::json_lines(
        &c.ctl(&["incidents", "--json"]),
        "vigil-controller incidents",
    );
    // The incident of what the attacker left is closed by the verified release, and so is
    // every incident the release says it closed. (The probes' own incidents reach the
    // controller asynchronously: one raised just before the release may land after it.)
    let verified = |i: &Value| {
        i["closed"]["how"]
            .as_str()
            .is_some_and(|h| h.contains("verified clean"))
    };
    let setuid = incidents
        .iter()
        .find(|i| {
            i["rules"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == "vigil-setuid-bit"))
        })
        .unwrap_or_else(|| panic!("the setuid incident is listed: {incidents:?}"));
    assert!(verified(setuid), "{setuid}");
    for id in closed {
        let i = incidents
            .iter()
            .find(|i| &i["id"] == id)
            .unwrap_or_else(|| panic!("closed incident {id} is listed: {incidents:?}"));
        assert!(verified(i), "{i}");
    }
    assert!(
        incidents
            .iter()
            .filter(|i| i["first_ns"]
                .as_u64()
                .is_some_and(|t| u128::from(t) < released_at))
            .all(|i| i["closed"].is_null() || verified(i)),
        "nothing was closed otherwise: {incidents:?}"
    );
    // Nothing is left to lift: a second release is refused, or (when the probes above have
    // opened incidents of their own since) verifies and closes those, lifting nothing.
    let again = c.ctl(&["release", &hostname]);
    if again.status.success() {
        let second: Value = serde_json::from_slice(&again.stdout).expect("release JSON");
        assert!(
            second["lifted"].as_array().is_none_or(Vec::is_empty),
            "a second release lifted something: {second}"
        );
    }
    let audit = String::from_utf8_lossy(&c.ctl(&["audit"]).stdout).into_owned();
    assert!(
        audit.contains("contain")
            && audit.contains("still present")
            && audit.contains("release")
            && audit.contains("uid 0"),
        "{audit}"
    );
    // The journal records came up the uplink too.
    wait("the action records at the controller", || {
        let a = c.records("actions");
        (a.iter()
            .filter(|r| r["body"]["action"] == "isolate")
            .count()
            >= 1)
            .then_some(())
    });
    drop(sensor);
}

#[test]
fn a_hunt_finds_an_indicator_with_its_lineage_and_a_bad_query_is_refused_with_the_place() {
    if !kernel_tests_enabled("hunting") {
        return;
    }
    let c = Controller::start().expect("controller");
    let sensor = Sensor::start_with(&[
        "--controller",
        &c.addr.to_string(),
        "--enroll",
        &c.token(600),
    ])
    .expect("sensor");
    c.wait_hosts("the sensor online", |h| {
        h.len() == 1 && h[0]["connected"] == true
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("hunted");
    let mark = format!("vigil-hunt-{}", std::process::id());
    // A shell (the lineage to find) whose python child connects and writes.
    let script = format!(
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port})); open(\"{}\", \"w\").write(\"x\")' # {mark}",
        marker.display()
    );
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .expect("run");
    assert!(st.success());
    drop(listener);

    let hunt = |q: &str| c.ctl(&["hunt", q]);
    let lines = |o: &std::process::Output| -> Vec<Value> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let q = format!("connections where port = {port} and ancestor.cmdline contains \"{mark}\"");
    let hits = wait("the connection in the fleet graph", || {
        let out = hunt(&q);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hits = lines(&out);
        (!hits.is_empty()).then_some(hits)
    });
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(
        hits[0]["exe"].as_str().unwrap_or("").contains("python"),
        "{hits:?}"
    );
    assert_eq!(hits[0]["target"], format!("127.0.0.1:{port}"));
    let w = format!("writes where path = \"{}\"", marker.display());
    let writes = wait("the write in the fleet graph", || {
        let h = lines(&hunt(&w));
        (!h.is_empty()).then_some(h)
    });
    assert_eq!(
        writes[0]["pid"], hits[0]["pid"],
        "the same process wrote it"
    );
    // A near miss finds nothing.
    let other = format!(
        "connections where port = {} and ancestor.cmdline contains \"{mark}\"",
        port.wrapping_add(1)
    );
    assert!(lines(&hunt(&other)).is_empty());

    let bad = hunt("connections wher port = 1");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("at 12") && err.contains("expected `where`"),
        "{err}"
    );
    drop(sensor);
}

/// Two simulated hosts: a network namespace and a cgroup each, joined by a veth pair, with a
/// sensor scoped to each cgroup. Torn down on drop.
struct TwoHosts {
    ns: [String; 2],
    cg: [std::path::PathBuf; 2],
    ip: [String; 2],
}

impl TwoHosts {
    fn new() -> Self {
        let id = std::process::id() % 200 + 20;
        let ns = [format!("vigil-a{id}"), format!("vigil-b{id}")];
        let ip = [format!("10.{id}.7.1"), format!("10.{id}.7.2")];
        for n in &ns {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .output();
        }
        vigil_tests::net::sh(&format!(
            "ip netns add {a} && ip netns add {b} && ip link add va{id} type veth peer name vb{id} && \
             ip link set va{id} netns {a} && ip link set vb{id} netns {b} && \
             ip -n {a} addr add {ipa}/24 dev va{id} && ip -n {b} addr add {ipb}/24 dev vb{id} && \
             ip -n {a} link set va{id} up && ip -n {b} link set vb{id} up && \
             ip -n {a} link set lo up && ip -n {b} link set lo up",
            a = ns[0],
            b = ns[1],
            ipa = ip[0],
            ipb = ip[1],
        ));
        let mount = Cgroup::create().path.parent().expect("mount").to_owned();
        let cg = [
            mount.join(format!("vigil-host-a-{id}")),
            mount.join(format!("vigil-host-b-{id}")),
        ];
        for c in &cg {
            let _ = std::fs::create_dir(c);
        }
        Self { ns, cg, ip }
    }

    /// Runs python `code` with `args` as a process of host `i`.
    fn python(&self, i: usize, code: &str, args: &[&str]) -> std::process::Child {
        self.run(i, "python3", code, args)
    }

    /// Runs `interpreter -c code args` as a process of host `i`.
    fn run(&self, i: usize, interpreter: &str, code: &str, args: &[&str]) -> std::process::Child {
        // Into the cgroup first: `ip netns exec` mounts a sysfs of the namespace's own, where
        // the cgroup hierarchy is not.
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec ip netns exec {} {interpreter} -c \"$0\" \"$@\"",
                self.cg[i].display(),
                self.ns[i]
            ))
            .arg(code)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for c in &self.cg {
            let _ = std::fs::write(c.join("cgroup.kill"), "1");
            for _ in 0..100 {
                if std::fs::remove_dir(c).is_ok() || !c.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for n in &self.ns {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .output();
        }
    }
}

#[test]
fn lateral_movement_is_one_path_across_two_hosts() {
    if !kernel_tests_enabled("lateral movement path") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let c = Controller::start().expect("controller");
    let hosts = TwoHosts::new();
    let sensor = |i: usize| {
        Sensor::start_with(&[
            "--controller",
            &c.addr.to_string(),
            "--enroll",
            &c.token(600),
            "--scope-cgroup",
            hosts.cg[i].to_str().expect("utf-8"),
            "--address",
            &hosts.ip[i],
        ])
        .expect("sensor")
    };
    let (a, b) = (sensor(0), sensor(1));
    c.wait_hosts("both sensors online", |h| {
        h.len() == 2 && h.iter().all(|x| x["connected"] == true)
    });
    let mark = format!("lateral-{}", std::process::id());
    // A standing hunt for the mark, run every second from before anything happens.
    let hunt_name = format!("mark-{}", std::process::id());
    let mark_query = format!("processes where cmdline contains \"{mark}\"");
    ctl_ok(
        &c,
        &["hunt", &mark_query, "--name", &hunt_name, "--every", "1"],
    );
    // Host B: a server that gives the first connection it accepts a shell on the socket (a
    // bind shell: the `reverse-shell` rule fires there).
    let server = "import socket, subprocess, sys\n\
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind(('0.0.0.0', 7141)); s.listen(1); print('up', flush=True)\n\
        c, _ = s.accept()\n\
        subprocess.run(['/bin/sh', '-c', 'exit 0', sys.argv[1]], stdin=c, stdout=c)\n\
        c.close()\n";
    let mut srv = hosts.python(1, server, &[&format!("shell-{mark}")]);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(srv.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("read");
    assert_eq!(line.trim(), "up");
    // Host A: a client run from /tmp (the `exec-from-temp` rule fires there) connects to it.
    let staged = tempfile::Builder::new()
        .prefix("vigil-lateral-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let py = staged.path().join("py");
    std::fs::copy("/usr/bin/python3", &py).expect("stage an interpreter in /tmp");
    let client = "import socket, sys\n\
        socket.create_connection((sys.argv[1], 7141), timeout=5).close()\n";
    let st = hosts
        .run(
            0,
            py.to_str().expect("utf-8"),
            client,
            &[&hosts.ip[1], &format!("client-{mark}")],
        )
        .wait()
        .expect("client");
    assert!(st.success());
    assert!(srv.wait().expect("server").success());

    let q = format!(
        "processes where cmdline contains \"shell-{mark}\" and ancestor.cmdline contains \"client-{mark}\""
    );
    let hits = wait("the shell on B with the client on A in its path", || {
        let out = c.ctl(&["hunt", &q]);
        let hits: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (!hits.is_empty()).then_some(hits)
    });
    let path = hits[0]["path"].as_array().expect("path").clone();
    let host_of = |name: usize| {
        c.hosts()
            .iter()
            .find(|h| h["report"]["addresses"][0] == hosts.ip[name].as_str())
            .and_then(|h| h["id"].as_str().map(str::to_owned))
            .expect("host id")
    };
    let (ha, hb) = (host_of(0), host_of(1));
    assert_eq!(hits[0]["host"], hb.as_str());
    assert!(
        path.iter()
            .any(|s| s["via"] == "connected" && s["host"] == hb.as_str()),
        "the server on B leads across: {path:?}"
    );
    assert!(
        path.iter().any(|s| s["host"] == ha.as_str()),
        "the path reaches host A: {path:?}"
    );
    // Each sensor kept to its own host: B's sensor never saw A's client.
    let a_only = format!("processes where cmdline contains \"client-{mark}\" and host = {hb}");
    let out = c.ctl(&["hunt", &a_only]);
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    // The standing hunt found the mark on both hosts: one incident across both.
    let incidents = |c: &Controller| -> Vec<Value> {
        vigil_tests::json_lines(
            &c.ctl(&["incidents", "--json"]),
            "vigil-controller incidents",
        )
    };
    // `spans` lists hosts in order.
    let both: Value = [ha.as_str(), hb.as_str()]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    wait("the hunt's incident on both hosts", || {
        let found = incidents(&c);
        let of_hunt: Vec<&Value> = found.iter().filter(|i| i["source"] == "hunt").collect();
        (of_hunt.len() == 2
            && of_hunt.iter().all(|i| i["spans"] == both)
            && of_hunt[0]["id"] == of_hunt[1]["id"])
            .then_some(())
    });
    // The sensors' own incidents (exec from /tmp on A, a shell on a socket on B) are joined
    // by the path between them.
    let found = wait("the sensors' incidents joined across hosts", || {
        let found = incidents(&c);
        let sensor: Vec<Value> = found
            .into_iter()
            .filter(|i| i["source"] == "sensor" && i["spans"] == both)
            .collect();
        (sensor.len() >= 2).then_some(sensor)
    });
    let rules: Vec<String> = found
        .iter()
        .flat_map(|i| i["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    assert!(
        rules.iter().any(|r| r == "vigil-exec-from-temp")
            && rules.iter().any(|r| r == "vigil-reverse-shell"),
        "{rules:?}"
    );
    // Hits already reported are not reported again by later runs.
    let hits = |c: &Controller| -> Vec<u64> {
        incidents(c)
            .iter()
            .filter(|i| i["source"] == "hunt")
            .map(|i| i["alerts"].as_u64().unwrap_or(0))
            .collect()
    };
    let before = hits(&c);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(hits(&c), before, "later runs added nothing");
    ctl_ok(&c, &["hunts", "--remove", &hunt_name]);
    drop((a, b));
}

/// The sensor's view of its rules: (rules loaded, pushed version).
fn rules_in_force(sensor: &Sensor) -> (u64, String) {
    let st = sensor.status().expect("status");
    (
        st["rules_loaded"].as_u64().unwrap_or(0),
        st["rules_version"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The id of the only host.
fn hosts_id(c: &Controller) -> String {
    c.hosts()[0]["id"].as_str().expect("host id").to_owned()
}

fn ctl_ok(c: &Controller, args: &[&str]) -> String {
    let out = c.ctl(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ctl_refused(c: &Controller, args: &[&str]) -> String {
    let out = c.ctl(args);
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rules_and_policy_are_checked_before_they_are_pushed_kept_and_caught_up_on_reconnect() {
    if !kernel_tests_enabled("rules and policy push") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let c = Controller::start().expect("controller");
    let cg = Cgroup::create();
    let observe = observe_policy().expect("policy");
    let addr = c.addr.to_string();
    let args = [
        "--policy",
        observe.to_str().expect("utf-8"),
        "--scope-cgroup",
        cg.arg(),
        "--controller",
        &addr,
    ];
    let token = c.token(600);
    let first: Vec<&str> = args.iter().copied().chain(["--enroll", &token]).collect();
    let mut sensor = Sensor::start_with(&first).expect("sensor");
    c.wait_hosts("the sensor online", |h| {
        h.len() == 1 && h[0]["connected"] == true
    });
    let shipped = rules_in_force(&sensor);
    assert!(shipped.0 >= 15 && shipped.1.is_empty(), "{shipped:?}");

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules");
    let dir = tempfile::tempdir().expect("tempdir");
    let set = |name: &str, files: &[&str]| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        for f in files {
            std::fs::copy(rules.join(f), d.join(f)).expect("copy rule");
        }
        d
    };

    // A set with one malformed file is refused whole, naming it; nothing is sent.
    let bad = set("bad", &["setuid-bit.yml"]);
    std::fs::write(bad.join("broken.yml"), "id: x\ntitle: [unclosed\n").expect("write");
    let why = ctl_refused(&c, &["rules", "push", bad.to_str().expect("utf-8")]);
    assert!(
        why.contains("broken.yml") && why.contains("line 2"),
        "{why}"
    );
    // A rule whose own test case fails is refused too.
    let failing = set("failing", &[]);
    let text = std::fs::read_to_string(rules.join("setuid-bit.yml")).expect("read");
    let (head, _) = text.split_once("tests:").expect("the rule has test cases");
    let wrong = format!(
        "{head}tests:\n  - name: a plain chmod said to match\n    expect: match\n    events:\n      - {{kind: chmod, pid: 1402, exe: /usr/bin/chmod, file: /tmp/x, mode: \"644\"}}\n"
    );
    std::fs::write(failing.join("setuid-bit.yml"), wrong).expect("write");
    let why = ctl_refused(&c, &["rules", "push", failing.to_str().expect("utf-8")]);
    assert!(
        why.contains("vigil-setuid-bit") && why.contains("a plain chmod said to match"),
        "{why}"
    );
    assert_eq!(rules_in_force(&sensor), shipped, "the rules in force stay");

    // Hostile sets: a Sigma condition nested 5,000 deep and YAML nested 100,000 deep are
    // refused at once, naming the file, and the controller goes on serving.
    let deep = set("deep", &[]);
    let condition = format!("{}selection{}", "(".repeat(5_000), ")".repeat(5_000));
    std::fs::write(
        deep.join("deep-condition.yml"),
        format!(
            "title: deep\nid: 5e1f0000-0000-4000-8000-000000000001\nlogsource:\n  product: linux\n  category: process_creation\ndetection:\n  selection:\n    Image|endswith: /x\n  condition: {condition}\nlevel: high\n"
        ),
    )
    .expect("write");
    let why = ctl_refused(&c, &["rules", "push", deep.to_str().expect("utf-8")]);
    assert!(
        why.contains("deep-condition.yml") && why.contains("nested"),
        "{why}"
    );
    let yaml = set("yaml", &[]);
    std::fs::write(
        yaml.join("deep-yaml.yml"),
        format!(
            "id: x\nmatch:\n  where: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .expect("write");
    let started = Instant::now();
    let why = ctl_refused(&c, &["rules", "push", yaml.to_str().expect("utf-8")]);
    assert!(
        why.contains("deep-yaml.yml") && why.contains("nested"),
        "{why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once: {:?}",
        started.elapsed()
    );
    assert_eq!(c.hosts().len(), 1, "the controller still serves");
    assert_eq!(rules_in_force(&sensor), shipped, "the rules in force stay");

    // A good set is put in force on the connected host.
    let one = set("one", &["setuid-bit.yml"]);
    let out = ctl_ok(&c, &["rules", "push", one.to_str().expect("utf-8")]);
    assert!(out.contains("applied"), "{out}");
    let (n, version) = rules_in_force(&sensor);
    assert_eq!(n, 1);
    assert!(!version.is_empty());
    c.wait_hosts("the new rules reported", |h| {
        h[0]["report"]["rules_version"] == version.as_str()
    });

    // Policies: an invalid one is refused naming the key; a good one is put in force.
    let policy = std::fs::read_to_string(observe_policy().expect("policy")).expect("read");
    let bad_policy = dir.path().join("bad.toml");
    std::fs::write(
        &bad_policy,
        policy.replace("mode = \"observe\"", "mode = \"destroy\""),
    )
    .expect("write");
    let why = ctl_refused(&c, &["policy", "push", bad_policy.to_str().expect("utf-8")]);
    assert!(why.contains("mode"), "{why}");
    let good_policy = dir.path().join("good.toml");
    std::fs::write(&good_policy, policy.replace("version = 1", "version = 42")).expect("write");
    ctl_ok(
        &c,
        &["policy", "push", good_policy.to_str().expect("utf-8")],
    );
    let st = sensor.status().expect("status");
    assert_eq!(st["policy"]["version"], 42);

    // A hash sweep finds a file the host's processes wrote, by its content.
    let payload = dir.path().join("dropper.bin");
    let code =
        "import sys\nopen(sys.argv[1], 'wb').write(b'vigil sweep test ' + sys.argv[2].encode())\n";
    let st = cg
        .python(
            code,
            &[
                payload.to_str().expect("utf-8"),
                &std::process::id().to_string(),
            ],
        )
        .wait()
        .expect("python");
    assert!(st.success());
    let sum = std::process::Command::new("sha256sum")
        .arg(&payload)
        .output()
        .expect("sha256sum");
    let sha = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_owned();
    let found = wait("the sweep to find the payload", || {
        let out = ctl_ok(&c, &["sweep", &sha]);
        out.contains(payload.to_str().expect("utf-8"))
            .then_some(out)
    });
    assert!(found.contains(&hosts_id(&c)), "{found}");
    let why = ctl_refused(&c, &["sweep", "not-a-hash"]);
    assert!(why.contains("not a SHA-256"), "{why}");
    // The write is in the controller's history before the host goes away: a restarted
    // sensor's graph no longer holds it, and the controller tells it where to look.
    let q = format!("writes where path = \"{}\"", payload.display());
    wait("the write in the fleet graph", || {
        (!ctl_ok(&c, &["hunt", &q]).trim().is_empty()).then_some(())
    });

    // Offline, the host misses a new set; on reconnect it keeps what it had, then catches up.
    sensor.stop().expect("stop");
    c.wait_hosts("the sensor offline", |h| h[0]["connected"] == false);
    let two = set("two", &["setuid-bit.yml", "module-load.yml"]);
    ctl_ok(&c, &["rules", "push", two.to_str().expect("utf-8")]);
    // A sweep while it is away: nobody answers yet; the host does once back.
    let out = c.ctl(&["sweep", &sha]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && said.contains("0 of 1 hosts answered"),
        "{said}"
    );
    let sweep_id = said
        .split_whitespace()
        .find(|w| w.starts_with("sweep-"))
        .map(|w| w.trim_end_matches(':').to_owned())
        .expect("the sweep's id");
    let sensor = sensor.resume(&args).expect("sensor restarts");
    let caught_up = wait("the pushed set caught up", || {
        let r = rules_in_force(&sensor);
        (r.0 == 2).then_some(r)
    });
    assert_ne!(caught_up.1, version);
    assert_eq!(
        sensor.status().expect("status")["policy"]["version"],
        42,
        "kept"
    );
    wait("the host's answer to the sweep it missed", || {
        ctl_ok(&c, &["sweep", "--results", &sweep_id])
            .contains(payload.to_str().expect("utf-8"))
            .then_some(())
    });
    let audit = ctl_ok(&c, &["audit"]);
    assert!(
        audit.contains("desired state") && audit.contains("applied") && audit.contains(&sha),
        "{audit}"
    );
    drop(sensor);
}

#[test]
fn a_standing_hunt_isolates_the_host_it_finds_and_release_waits_for_it_to_be_clean() {
    if !kernel_tests_enabled("standing hunt response") {
        return;
    }
    let _one = vigil_tests::one_at_a_time();
    let (c, port) = (Controller::start().expect("controller"), 7132);
    let (peer, cg) = (Peer::new(&[port]), Cgroup::create());
    let (sensor, hostname) = watched_host(&c, &cg);
    let dir = tempfile::tempdir().expect("tempdir");
    let dropped = dir.path().join("implant.bin");
    let query = format!("writes where path = \"{}\"", dropped.display());
    let why = ctl_refused(
        &c,
        &[
            "hunt",
            "writes where path ~ x",
            "--name",
            "bad",
            "--every",
            "1",
        ],
    );
    assert!(why.contains("syntax error at 18"), "{why}");
    ctl_ok(
        &c,
        &[
            "hunt",
            &query,
            "--name",
            "implant",
            "--every",
            "1",
            "--isolate",
        ],
    );
    assert!(reaches(&probe(&cg, &peer.addr, &[port]), port));

    let code = "import sys\nopen(sys.argv[1], 'wb').write(b'\\x7fELF implant')\n";
    let st = cg
        .python(code, &[dropped.to_str().expect("utf-8")])
        .wait()
        .expect("python");
    assert!(st.success());
    c.wait_hosts("the host isolated by the hunt", |h| {
        h[0]["report"]["isolated"] == true
    });
    assert!(!reaches(&probe(&cg, &peer.addr, &[port]), port), "isolated");
    let actions = c.records("actions");
    assert!(
        actions.iter().any(|r| r["body"]["action"] == "isolate"
            && r["body"]["requested_by"] == "controller hunt implant"),
        "the sensor journaled who isolated it: {actions:?}"
    );

    let why = ctl_refused(&c, &["release", &hostname]);
    assert!(
        why.contains(dropped.to_str().expect("utf-8")),
        "the refusal names the file: {why}"
    );
    std::fs::remove_file(&dropped).expect("remove the implant");
    let out = ctl_ok(&c, &["release", &hostname]);
    assert!(out.contains("\"verified\": true"), "{out}");
    assert!(reaches(&probe(&cg, &peer.addr, &[port]), port), "released");
    ctl_ok(&c, &["hunts", "--remove", "implant"]);
    drop(sensor);
}
