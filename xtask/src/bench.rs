//! Benchmarks, each measured without and with the sensor side by side in one run, so the
//! figure that matters is a ratio, robust to how busy this shared machine happens to be.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use serde_json::Value;

use crate::util::target_dir;

#[derive(Subcommand, Clone, Copy)]
pub enum Which {
    /// fork+exec of /bin/true, without and with the sensor.
    Exec {
        /// Execs per measurement.
        #[arg(long, default_value_t = 2000)]
        count: u32,
        /// Alternating without/with rounds; the median ratio is reported.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
}

pub fn run(which: Option<Which>) -> Result<()> {
    match which.unwrap_or(Which::Exec {
        count: 2000,
        rounds: 3,
    }) {
        Which::Exec { count, rounds } => exec(count, rounds),
    }
}

/// A running release sensor for the benchmark, stopped on drop.
struct Sensor {
    child: Child,
    state: PathBuf,
    bin: PathBuf,
}

impl Sensor {
    fn start(dir: &Path) -> Result<Self> {
        let bin = target_dir()?.join("release/vigil-sensor");
        let state = dir.join("state");
        let child = Command::new(&bin)
            .args(["run", "--state"])
            .arg(&state)
            .arg("--events-out")
            .arg(dir.join("events.jsonl"))
            .env("VIGIL_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut s = Self { child, state, bin };
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.status().is_err() {
            if Instant::now() > deadline {
                bail!("the sensor did not come up within 60 s");
            }
            if let Some(st) = s.child.try_wait()? {
                bail!("the sensor exited during start-up: {st}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    fn status(&self) -> Result<Value> {
        let out = Command::new(&self.bin)
            .args(["status", "--json", "--state"])
            .arg(&self.state)
            .stderr(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("status failed");
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Sum over kinds of one counter of a status document.
fn total(status: &Value, field: &str) -> u64 {
    status["events"]
        .as_object()
        .map(|kinds| kinds.values().filter_map(|k| k[field].as_u64()).sum())
        .unwrap_or(0)
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// Peak resident memory of a process, in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// `count` sequential fork+exec+wait of /bin/true; wall seconds.
fn exec_storm(count: u32) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..count {
        let st = Command::new("/bin/true")
            .status()
            .context("spawning /bin/true")?;
        if !st.success() {
            bail!("/bin/true failed: {st}");
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn exec(count: u32, rounds: u32) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    exec_storm(200)?; // warm the page cache
    let mut ratios = Vec::new();
    let mut rates = Vec::new();
    let mut cpu_per_event_us = Vec::new();
    let (mut rss, mut drops) = (0.0f64, 0u64);
    for round in 1..=rounds.max(1) {
        let without = exec_storm(count)?;
        let sensor = Sensor::start(&dir)?;
        let before = sensor.status()?;
        let cpu0 = cpu_secs(sensor.pid());
        let with = exec_storm(count)?;
        std::thread::sleep(Duration::from_millis(300)); // let the sensor drain
        let after = sensor.status()?;
        let cpu = cpu_secs(sensor.pid()) - cpu0;
        let events = total(&after, "received") - total(&before, "received");
        drops += total(&after, "dropped");
        rss = rss.max(peak_rss_mib(sensor.pid()));
        drop(sensor);
        let ratio = with / without;
        println!(
            "round {round}: without {without:.3} s, with {with:.3} s, ratio {ratio:.3}, {events} events, sensor CPU {cpu:.2} s"
        );
        ratios.push(ratio);
        rates.push(events as f64 / with);
        if events > 0 {
            cpu_per_event_us.push(cpu * 1e6 / events as f64);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("exec bench: {count} fork+exec of /bin/true, {rounds} rounds");
    println!(
        "  wall-time ratio with/without sensor (median): {:.3}",
        median(ratios)
    );
    println!(
        "  events per second delivered to userspace (median): {:.0}",
        median(rates)
    );
    if !cpu_per_event_us.is_empty() {
        println!(
            "  sensor CPU per event (median): {:.2} us",
            median(cpu_per_event_us)
        );
    }
    println!("  events dropped: {drops}");
    println!("  sensor peak RSS: {rss:.1} MiB");
    Ok(())
}
