//! Harness for Vigil's end-to-end tests: start the real `vigil-sensor` binary against the real
//! kernel, make real processes, and read what it published.
//!
//! A loaded program sees the whole host, so every assertion filters by the pids the test itself
//! made; every wait has a deadline and fails with what it did see.
#![expect(
    clippy::expect_used,
    reason = "test helpers fail loudly, naming what failed, rather than return errors"
)]

use std::{
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub mod fleet;
pub mod http;
pub mod net;
pub mod postgres;
pub mod prometheus;
pub mod rules;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// How long a test waits for an event before it fails.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(15);

/// The `vigil-sensor` binary: `VIGIL_SENSOR_BIN`, or the one cargo built next to this test.
pub fn sensor_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_SENSOR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/vigil-sensor
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("vigil-sensor"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p sensor-userspace` (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// True when this process may load eBPF programs. Tests that need the kernel call it first.
/// Without root a kernel test fails, naming why, unless skipping was allowed
/// (`VIGIL_ALLOW_SKIP=1`, which `cargo xtask test --allow-skip` sets): then it is listed as
/// skipped, so a run that tested no kernel never passes unseen.
pub fn kernel_tests_enabled(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let why = "kernel tests load eBPF programs and must run as root";
        assert!(
            std::env::var_os("VIGIL_ALLOW_SKIP").is_some(),
            "{test}: {why} (run as root, or `cargo xtask test --allow-skip` to skip them visibly)"
        );
        skipped(test, why);
        return false;
    }
    true
}

/// True when the program at `path` (from Debian's package `package`) is installed. Without it
/// the test fails, unless skipping was allowed: then it is listed as skipped.
pub fn program_installed(test: &str, path: &str, package: &str) -> bool {
    if std::path::Path::new(path).exists() {
        return true;
    }
    assert!(
        std::env::var_os("VIGIL_ALLOW_SKIP").is_some(),
        "{test}: {path} is missing: `cargo xtask test` installs Debian's {package}"
    );
    skipped(test, &format!("no {package} at {path}"));
    false
}

/// Makes a real alert: a copy of /bin/true named `name` in `dir` with the setuid bit set
/// (rule `vigil-setuid-bit`); returns its path.
pub fn setuid_copy(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::copy("/bin/true", &path).expect("copy /bin/true");
    let st = Command::new("chmod")
        .arg("u+s")
        .arg(&path)
        .status()
        .expect("chmod runs");
    assert!(st.success(), "chmod u+s {}: {st}", path.display());
    path.to_string_lossy().into_owned()
}

/// A loopback TCP address free now, for a server a test starts (another test could take it
/// before that server binds it; a server that can bind port 0 and say its port is safer).
pub fn free_tcp_addr() -> std::net::SocketAddr {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback TCP port");
    std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

/// Runs 200 concurrent execs with 3 KiB argument vectors and waits for them: more than a
/// one-page ring buffer can hold.
pub fn exec_storm() {
    let script = "big=$(head -c 3000 /dev/zero | tr '\\0' x); for i in $(seq 200); do /bin/true \"$big\" & done; wait";
    let st = Command::new("/bin/sh")
        .args(["-c", script])
        .status()
        .expect("the exec storm runs");
    assert!(st.success(), "the exec storm failed: {st}");
}

/// Says that `test` was skipped and why: on standard error, and in the file
/// `VIGIL_SKIP_LOG` names, which `cargo xtask test` lists at the end of the run.
pub fn skipped(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    if let Some(log) = std::env::var_os("VIGIL_SKIP_LOG") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the skip log");
        writeln!(f, "{test}: {why}").expect("write the skip log");
    }
}

/// The JSON lines a command printed, asserting that it succeeded and that every line is
/// JSON: a failed command is never read as an empty answer.
pub fn json_lines(out: &Output, what: &str) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what} printed a line that is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The JSON array a command printed, asserting that it succeeded.
pub fn json_array(out: &Output, what: &str) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(Value::Array(items)) => items,
        other => panic!(
            "{what} did not print a JSON array ({other:?}): {}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

/// Runs `vigil-sensor ARGS` to completion.
pub fn sensor_cmd(args: &[&str]) -> Output {
    Command::new(sensor_bin())
        .args(args)
        .env("VIGIL_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run vigil-sensor")
}

/// Serializes the tests of one test binary that must not overlap: a containing sensor sees
/// the whole host and would act on another test's scenario; tests that build namespaces and
/// cgroups would collide. Held for the whole test.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running sensor with a private state directory and events file, stopped on drop.
pub struct Sensor {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    events_read: u64,
    pub events: Vec<Value>,
    /// Started on the observe policy by default ([`Sensor::start_with`]): restarts keep it.
    observing: bool,
}

impl Sensor {
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts the sensor with extra `run` arguments and waits until it answers `status`.
    ///
    /// Unless `extra` names a policy, the sensor runs the shipped policy in observe mode:
    /// tests run side by side and every sensor sees the whole host, so a containing sensor
    /// would act on its neighbours' processes. Tests of containment use
    /// [`Sensor::start_containing`], one at a time.
    pub fn start_with(extra: &[&str]) -> Result<Self> {
        Self::start_in(Self::new_dir()?, extra, true)
    }

    /// Starts the sensor as a user would: the shipped policy (contain mode) unless `extra`
    /// names another.
    pub fn start_containing(extra: &[&str]) -> Result<Self> {
        Self::start_in(Self::new_dir()?, extra, false)
    }

    fn new_dir() -> Result<tempfile::TempDir> {
        Ok(tempfile::Builder::new().prefix("vigil-e2e-").tempdir()?)
    }

    /// Stops this sensor (SIGTERM, waiting for it) and starts a new one on the same state
    /// directory, as a restart of the service would.
    pub fn restart(mut self, extra: &[&str]) -> Result<Self> {
        self.stop()?;
        self.resume(extra)
    }

    /// Stops the sensor (SIGTERM, waiting for it), keeping its state directory.
    pub fn stop(&mut self) -> Result<()> {
        let mut child = self.child.take().context("already stopped")?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the sensor did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts a stopped sensor again on its state directory. A sensor started on the observe
    /// policy by default comes back on it (unless `extra` names a policy): a containing one
    /// would act on the processes of the tests running beside it.
    pub fn resume(mut self, extra: &[&str]) -> Result<Self> {
        // Keep the directory: the old handle gets an empty stand-in to delete on drop.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir()?);
        Self::start_in(dir, extra, self.observing)
    }

    /// Starts the sensor on `dir` (its state in `dir/state`, which may be prepared, as a
    /// small filesystem, say) with `extra`; with `observe`, on the observe policy unless
    /// `extra` names a policy.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str], observe: bool) -> Result<Self> {
        let observing = observe && !extra.contains(&"--policy");
        let policy = if observing {
            vec![PathBuf::from("--policy"), observe_policy()?]
        } else {
            Vec::new()
        };
        let state = dir.path().join("state");
        let events = dir.path().join("events.jsonl");
        let log = std::fs::File::create(dir.path().join("sensor.log"))?;
        let pins = if extra.contains(&"--pin-dir") || extra.contains(&"--no-pins") {
            Vec::new()
        } else {
            vec![PathBuf::from("--pin-dir"), pin_dir_of(dir.path())]
        };
        let child = Command::new(sensor_bin())
            .arg("run")
            .arg("--state")
            .arg(&state)
            .arg("--events-out")
            .arg(&events)
            .args(&pins)
            .args(&policy)
            .args(extra)
            .env("VIGIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start vigil-sensor")?;
        let mut s = Self {
            child: Some(child),
            dir,
            events_read: 0,
            events: Vec::new(),
            observing,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if s.status().is_ok() {
                return Ok(s);
            }
            if let Some(st) = s.child_mut().try_wait()? {
                bail!("the sensor exited during start-up ({st}):\n{}", s.log());
            }
            if Instant::now() > deadline {
                bail!("the sensor did not answer status within 60 s:\n{}", s.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("sensor child present until drop")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Runs `vigil-sensor ARGS --state STATE` against this sensor.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let state = self.state();
        let st = state.to_string_lossy().into_owned();
        let mut v = args.to_vec();
        v.extend(["--state", &st]);
        sensor_cmd(&v)
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The bpffs directory this sensor pins its enforcement under (one per sensor: tests run
    /// several side by side), removed when the handle drops.
    pub fn pins(&self) -> PathBuf {
        pin_dir_of(self.dir.path())
    }

    /// Kills the sensor with SIGKILL, as a crash or the out-of-memory killer would, and waits
    /// for it to be gone, keeping its state directory and its pins for [`Sensor::resume`].
    pub fn crash(&mut self) -> Result<()> {
        let mut child = self.child.take().context("already stopped")?;
        child.kill().context("SIGKILL the sensor")?;
        child.wait().context("reap the sensor")?;
        Ok(())
    }

    /// What the sensor logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sensor.log")).unwrap_or_default()
    }

    /// `vigil-sensor status --json`.
    pub fn status(&self) -> Result<Value> {
        let state = self.state();
        let out = sensor_cmd(&["status", "--json", "--state", &state.to_string_lossy()]);
        if !out.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `vigil-sensor process PID --json`, or None when the sensor does not know it.
    pub fn process(&self, pid: u32) -> Result<Option<Value>> {
        let state = self.state();
        let out = sensor_cmd(&[
            "process",
            "--json",
            "--state",
            &state.to_string_lossy(),
            &pid.to_string(),
        ]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("knows no live process") {
                return Ok(None);
            }
            bail!("process failed: {err}");
        }
        Ok(Some(serde_json::from_slice(&out.stdout)?))
    }

    /// Reads events published since the last call into `self.events`.
    pub fn poll_events(&mut self) -> Result<()> {
        let path = self.dir.path().join("events.jsonl");
        let Ok(mut f) = std::fs::File::open(&path) else {
            return Ok(());
        };
        f.seek(SeekFrom::Start(self.events_read))?;
        let mut buf = String::new();
        f.read_to_string(&mut buf)?;
        // Only whole lines: a line being written is read next time.
        let whole = buf.rfind('\n').map_or(0, |i| i + 1);
        for line in BufReader::new(&buf.as_bytes()[..whole]).lines() {
            let line = line?;
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("published a line that is not JSON: {line}"))?;
            self.events.push(v);
        }
        self.events_read += whole as u64;
        Ok(())
    }

    /// Waits for the first event matching `pred`.
    pub fn wait_event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            self.poll_events()?;
            if let Some(e) = self.events.iter().find(|e| pred(e)) {
                return Ok(e.clone());
            }
            if Instant::now() > deadline {
                let tail: Vec<String> = self
                    .events
                    .iter()
                    .rev()
                    .take(10)
                    .map(Value::to_string)
                    .collect();
                bail!(
                    "no event {what} within {EVENT_DEADLINE:?}; saw {} events, the last ones:\n{}",
                    self.events.len(),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `vigil-sensor WHAT --json --state STATE`.
    fn json_cmd(&self, what: &str) -> Output {
        let state = self.state();
        sensor_cmd(&[what, "--json", "--state", &state.to_string_lossy()])
    }

    /// Every alert so far (`vigil-sensor alerts --json`).
    pub fn alerts(&self) -> Vec<Value> {
        json_lines(&self.json_cmd("alerts"), "vigil-sensor alerts")
    }

    /// Every journaled action so far (`vigil-sensor actions --json`).
    pub fn actions(&self) -> Vec<Value> {
        json_lines(&self.json_cmd("actions"), "vigil-sensor actions")
    }

    /// Waits for the first journaled action matching `pred`; fails with the journal, the
    /// alerts' rules and the sensor's log.
    pub fn wait_action(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            let all = self.actions();
            if let Some(a) = all.iter().find(|a| pred(a)) {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no action {what} within {EVENT_DEADLINE:?}; journal:\n{}\nalerts: {:?}\nsensor log:\n{}",
                all.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.alerts()
                    .iter()
                    .map(|a| a["rule"]["id"].to_string())
                    .collect::<Vec<_>>(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the first alert matching `pred`; fails with every alert seen.
    pub fn wait_alert(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            let all = self.alerts();
            if let Some(a) = all.iter().find(|a| pred(a)) {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no alert {what} within {EVENT_DEADLINE:?}; saw {} alerts:\n{}\nsensor log:\n{}",
                all.len(),
                all.iter()
                    .map(|a| format!(
                        "{} pid {} {}",
                        a["rule"]["id"], a["process"]["pid"], a["process"]["cmdline"]
                    ))
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `vigil-sensor incidents --json`.
    pub fn incidents(&self) -> Vec<Value> {
        json_array(&self.json_cmd("incidents"), "vigil-sensor incidents")
    }

    /// Sends `signal` and waits for the sensor to exit.
    pub fn stop_with(mut self, signal: i32) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the sensor did not stop within 20 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let pins = self.pins();
        let Some(mut child) = self.child.take() else {
            let _ = std::fs::remove_dir_all(&pins);
            return;
        };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        // Detaching ~70 tracepoints takes the kernel a few seconds: reap the sensor in the
        // background rather than hold the test up; kill it if it does not stop. Its pins go
        // once it is gone (what it left in force would outlive the test).
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&pins);
        });
    }
}

/// The pin directory of the sensor whose test directory is `dir`.
fn pin_dir_of(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().replace('.', "_"))
        .unwrap_or_default();
    PathBuf::from("/sys/fs/bpf/vigil-e2e").join(name)
}

/// `deploy/policy.toml` in observe mode, written once per test process (tests start sensors
/// side by side: rewriting it under a starting sensor would hand it an empty file).
pub fn observe_policy() -> Result<PathBuf> {
    static WRITTEN: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    WRITTEN
        .get_or_init(|| {
            let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.toml");
            let text = std::fs::read_to_string(&shipped)
                .map_err(|e| format!("read {}: {e}", shipped.display()))?;
            let observe = text.replace("mode = \"contain\"", "mode = \"observe\"");
            if observe == text {
                return Err("deploy/policy.toml no longer says mode = \"contain\"".into());
            }
            let path =
                std::env::temp_dir().join(format!("vigil-e2e-observe-{}.toml", std::process::id()));
            std::fs::write(&path, observe).map_err(|e| format!("write {}: {e}", path.display()))?;
            Ok(path)
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Field helpers for published events.
pub fn u(e: &Value, key: &str) -> u64 {
    e[key].as_u64().unwrap_or(u64::MAX)
}

pub fn s<'a>(e: &'a Value, key: &str) -> &'a str {
    e[key].as_str().unwrap_or("")
}

pub fn argv(e: &Value) -> Vec<String> {
    e["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether alert `a` is about process `root` or one of its descendants.
pub fn alert_below(a: &Value, root: u32) -> bool {
    a["process"]["pid"].as_u64() == Some(u64::from(root))
        || a["process"]["ancestry"].as_array().is_some_and(|anc| {
            anc.iter()
                .any(|p| p["pid"].as_u64() == Some(u64::from(root)))
        })
}

/// A loopback HTTP server (python's `http.server`) over `dir`, killed and reaped on drop.
pub struct HttpServer {
    pub child: Child,
    pub port: u16,
}

impl HttpServer {
    /// Serves `dir` (with `extra` arguments, such as `--cgi`) once it accepts connections.
    /// The server binds a port of its own choosing and says which (a port chosen here and
    /// handed over could be taken by a test beside this one in between).
    pub fn serve(dir: &str, extra: &[&str]) -> Self {
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server"])
            .args(extra)
            .args(["--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        let out = child.stdout.take().expect("http.server's stdout");
        let mut line = String::new();
        let read = BufReader::new(out).read_line(&mut line);
        // "Serving HTTP on 127.0.0.1 port 43123 (http://127.0.0.1:43123/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse::<u16>().ok());
        // Owned from here: dropped (killed and reaped) on every path.
        let server = Self {
            child,
            port: port.unwrap_or(0),
        };
        assert!(
            read.is_ok() && port.is_some(),
            "http.server did not say its port: {line:?} ({read:?})"
        );
        for _ in 0..150 {
            if std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("http.server did not listen on {}", server.port);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
