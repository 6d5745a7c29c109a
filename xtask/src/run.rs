//! `cargo xtask run`: a local controller on its embedded store, and the sensor enrolled with
//! it, both from the release build. The sensor runs in the foreground; the controller stops
//! when it does.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Stops the controller however `both` returns.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Makes the first operator (an admin named `admin`) when the controller has none, and
/// says their one-time password; later runs leave the operators as they are.
fn first_operator(ctl: &Path, controller_state: &str) -> Result<Option<String>> {
    let list = Command::new(ctl)
        .args(["operator", "list", "--state", controller_state])
        .output()?;
    if !list.status.success() || !list.stdout.is_empty() {
        return Ok(None);
    }
    let out = Command::new(ctl)
        .args([
            "operator",
            "add",
            "admin",
            "--role",
            "admin",
            "--state",
            controller_state,
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "cannot make the console's first operator: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(str::to_owned))
}

/// Where the local controller and sensor keep their state and serve.
#[derive(clap::Args)]
pub struct Local {
    /// State directory for the sensor.
    #[arg(long, default_value = "/var/lib/vigil")]
    state: String,
    /// State directory for the local controller.
    #[arg(long, default_value = "/var/lib/vigil-controller")]
    controller_state: String,
    /// Where the local controller listens (UDP).
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: String,
    /// Where the local controller serves its console and API (HTTPS).
    #[arg(long, default_value = "127.0.0.1:8443")]
    console: String,
    /// Where the sensor serves its Prometheus metrics.
    #[arg(long, default_value = "127.0.0.1:9101")]
    sensor_metrics: String,
    /// Where the controller serves its Prometheus metrics.
    #[arg(long, default_value = "127.0.0.1:9102")]
    controller_metrics: String,
    /// Extra arguments for `vigil-sensor run`.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn both(local: &Local) -> Result<()> {
    let Local {
        state,
        controller_state,
        listen,
        console,
        sensor_metrics,
        controller_metrics,
        args,
    } = local;
    let (state, controller_state, listen, console) = (
        state.as_str(),
        controller_state.as_str(),
        listen.as_str(),
        console.as_str(),
    );
    let release = util::target_dir()?.join("release");
    let ctl = release.join("vigil-controller");
    let controller = Command::new(&ctl)
        .args([
            "serve",
            "--state",
            controller_state,
            "--listen",
            listen,
            "--console",
            console,
            "--metrics",
            controller_metrics,
        ])
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", ctl.display()))?;
    let controller = Stop(controller);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Command::new(&ctl)
        .args(["hosts", "--state", controller_state])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success()
    {
        if Instant::now() > deadline {
            bail!("the local controller did not come up within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let password = first_operator(&ctl, controller_state)?;
    let mut sensor = Command::new(release.join("vigil-sensor"));
    sensor.args([
        "run",
        "--state",
        state,
        "--events-out",
        "-",
        "--controller",
        listen,
        "--metrics",
        sensor_metrics,
    ]);
    if !Path::new(state).join("identity/host_id").exists() {
        let out = Command::new(&ctl)
            .args(["enroll-token", "--state", controller_state])
            .output()?;
        let token = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        if !out.status.success() || token.is_empty() {
            bail!(
                "cannot get an enrollment token: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        sensor.args(["--enroll", &token]);
    }
    sensor.args(args);
    eprintln!(
        "xtask: console on https://{console}/ (its certificate is signed by {controller_state}/ca.pem){}",
        password.map_or(String::new(), |p| format!(
            "; log in as admin with the one-time password {p}"
        ))
    );
    eprintln!(
        "xtask: controller on {listen} (state {controller_state}), sensor enrolled with it (events on stdout; \
         `vigil-sensor status --state {state}` and `vigil-controller hosts --state {controller_state}` in another shell; Ctrl-C stops both)"
    );
    eprintln!(
        "xtask: metrics on http://{sensor_metrics}/metrics (sensor) and http://{controller_metrics}/metrics (controller)"
    );
    let status = sensor.status().context("cannot start vigil-sensor")?;
    drop(controller);
    std::process::exit(status.code().unwrap_or(1));
}
