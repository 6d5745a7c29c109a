//! A real `vigil-controller serve` for end-to-end tests: its own state directory, a free
//! loopback UDP port (and TCP port for its console), stopped on drop; and sensors enrolled
//! with it, each contained to a cgroup standing for its host.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{Sensor, net::Cgroup};

/// The `vigil-controller` binary next to this test's (cargo builds it with the workspace).
pub fn controller_bin() -> PathBuf {
    let bin = crate::sensor_bin().with_file_name("vigil-controller");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p controller`",
        bin.display()
    );
    bin
}

pub struct Controller {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// Where it serves its console and API (HTTPS), when it does.
    pub console: Option<SocketAddr>,
    /// More arguments to `serve`, kept across restarts.
    extra: Vec<String>,
    /// The network namespace it runs in, when not this one.
    netns: Option<String>,
}

fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Controller {
    pub fn start() -> Result<Self> {
        Self::start_serving(false, &[])
    }

    /// A controller that also serves its console and API on a free loopback TCP port.
    pub fn start_with_console() -> Result<Self> {
        Self::start_serving(true, &[])
    }

    /// A controller whose `serve` is also given `extra`.
    pub fn start_with(extra: &[&str]) -> Result<Self> {
        Self::start_serving(false, extra)
    }

    fn start_serving(console: bool, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("vigil-ctl-").tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
        let console = console.then(crate::free_tcp_addr);
        let mut c = Self {
            child: None,
            dir,
            addr,
            console,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            netns: None,
        };
        c.spawn()?;
        Ok(c)
    }

    /// A controller run inside `peer`'s network namespace, listening on the peer's address:
    /// sensors on this host reach it over the veth pair, which [`crate::net::Peer::cut`]
    /// cuts. Its operator socket is a file in its state directory, so `ctl` works as ever.
    pub fn start_behind(peer: &crate::net::Peer) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("vigil-ctl-").tempdir()?;
        let ip: std::net::IpAddr = peer.addr.parse().context("the peer's address")?;
        let mut c = Self {
            child: None,
            dir,
            addr: SocketAddr::new(ip, 4433),
            console: None,
            extra: Vec::new(),
            netns: Some(peer.ns().to_owned()),
        };
        c.spawn()?;
        Ok(c)
    }

    /// `https://127.0.0.1:PORT` of its console.
    pub fn console_url(&self) -> String {
        let addr = self.console.expect("a controller started with its console");
        format!("https://{addr}")
    }

    /// Makes an operator with `role` and returns their one-time password.
    pub fn operator(&self, name: &str, role: &str) -> String {
        self.ctl_last_line(&["operator", "add", name, "--role", role])
    }

    /// Runs `vigil-controller ARGS`, which must succeed, and returns the last line it
    /// printed (where a token or password is).
    pub fn ctl_last_line(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "vigil-controller {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_else(|| panic!("vigil-controller {args:?} printed nothing"))
            .to_owned()
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("controller.log"))?;
        let mut cmd = match &self.netns {
            None => Command::new(controller_bin()),
            Some(ns) => {
                // `ip netns exec` execs the binary: the child is the controller itself.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(controller_bin());
                c
            }
        };
        cmd.args(["serve", "--listen", &self.addr.to_string(), "--state"])
            .arg(self.state());
        if let Some(console) = self.console {
            cmd.args(["--console", &console.to_string()]);
        }
        cmd.args(&self.extra);
        let child = cmd
            .env("VIGIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start vigil-controller")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ctl(&["hosts", "--json"]).status.success() {
                return Ok(());
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "the controller exited during start-up ({st}):\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!("the controller did not answer within 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGTERM) and waits for it.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the controller did not stop within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills the server with SIGKILL, as a crash or the OOM killer would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the controller");
            child.wait().expect("reap the controller");
        }
    }

    /// Starts it again on the same state directory and port, after [`Self::kill`] too.
    pub fn start_again(&mut self) -> Result<()> {
        self.spawn()
    }

    /// Starts it again on the same state directory and port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    /// Runs `vigil-controller ARGS --state STATE`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(controller_bin())
            .args(args)
            .arg("--state")
            .arg(self.state())
            .stdin(Stdio::null())
            .output()
            .expect("run vigil-controller")
    }

    /// A fresh one-time enrollment token valid `ttl_secs`.
    pub fn token(&self, ttl_secs: u64) -> String {
        self.ctl_last_line(&["enroll-token", "--ttl-secs", &ttl_secs.to_string()])
    }

    pub fn hosts(&self) -> Vec<Value> {
        crate::json_array(&self.ctl(&["hosts", "--json"]), "vigil-controller hosts")
    }

    /// What the hosts sent of `kind` (`alerts` or `actions`), in order.
    pub fn records(&self, kind: &str) -> Vec<Value> {
        crate::json_lines(&self.ctl(&[kind]), &format!("vigil-controller {kind}"))
    }

    /// The ids of the alerts it holds, in the order it stored them.
    pub fn alert_ids(&self) -> Vec<String> {
        self.records("alerts")
            .iter()
            .filter_map(|r| r["body"]["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// `vigil-controller hunt QUERY`, which must succeed: the hits.
    pub fn hunt(&self, query: &str) -> Vec<Value> {
        crate::json_lines(&self.ctl(&["hunt", query]), &format!("hunt {query}"))
    }

    /// Waits until `pred` holds of the hosts list.
    pub fn wait_hosts(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + crate::EVENT_DEADLINE;
        loop {
            let hosts = self.hosts();
            if pred(&hosts) {
                return hosts;
            }
            assert!(
                Instant::now() < deadline,
                "hosts never showed {what}: {hosts:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.state().join("ca.pem")).expect("ca.pem")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The mode bits of a file.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777)
}

/// A cgroup of its own under the test's (`parent`, which outlives it), standing for one host.
pub fn host_group(parent: &Cgroup, name: &str) -> Cgroup {
    let path = parent.path.join(name);
    std::fs::create_dir_all(&path).expect("a host's cgroup");
    Cgroup { path }
}

/// A sensor contained to `cg` and enrolled with `c`; returns it and its host id.
pub fn enrolled(c: &Controller, cg: &Cgroup, policy: Option<&Path>) -> (Sensor, String) {
    let ids = |hosts: &[Value]| -> Vec<String> {
        hosts
            .iter()
            .filter_map(|h| h["id"].as_str().map(str::to_owned))
            .collect()
    };
    let before = ids(&c.hosts());
    let (addr, token) = (c.addr.to_string(), c.token(600));
    let p = policy.map(|p| p.to_string_lossy().into_owned());
    let mut args = vec![
        "--cgroup",
        cg.arg(),
        "--scope-cgroup",
        cg.arg(),
        "--controller",
        &addr,
        "--enroll",
        &token,
    ];
    if let Some(p) = &p {
        args.extend(["--policy", p.as_str()]);
    }
    let sensor = Sensor::start_containing(&args).expect("sensor");
    let hosts = c.wait_hosts("the new sensor online", |h| {
        h.len() == before.len() + 1 && h.iter().all(|x| x["connected"] == true)
    });
    let id = ids(&hosts)
        .into_iter()
        .find(|id| !before.contains(id))
        .expect("the new host's id");
    (sensor, id)
}
