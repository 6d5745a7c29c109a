//! A real Prometheus server (Debian's `prometheus`) on loopback, scraping the targets a
//! test names every second, and its HTTP query API.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Where the tests look for Prometheus.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

/// One series of a query's answer: its labels, and its value now.
#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: Value,
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus scraping each `(job, address)` at `/metrics` every second; returns
    /// once it says it is ready.
    pub fn start(targets: &[(&str, SocketAddr)]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("vigil-prom-").tempdir()?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n",
        );
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config)?;
        let addr = crate::free_tcp_addr();
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {PROMETHEUS}"))?;
        let mut p = Self { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ureq::get(format!("http://{addr}/-/ready")).call().is_ok() {
                return Ok(p);
            }
            if let Some(st) = p.child.try_wait()? {
                bail!("prometheus exited during start-up ({st}):\n{}", p.log());
            }
            if Instant::now() > deadline {
                bail!("prometheus was not ready within 60 s:\n{}", p.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Evaluates the PromQL `expr` now; a refused query or a failed request is an error.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>> {
        let body = ureq::get(format!("http://{}/api/v1/query", self.addr))
            .query("query", expr)
            .call()
            .with_context(|| format!("query {expr:?}"))?
            .body_mut()
            .read_to_string()?;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("answer {body}"))?;
        if v["status"] != "success" {
            bail!("prometheus refused {expr:?}: {body}");
        }
        let results = v["data"]["result"]
            .as_array()
            .with_context(|| format!("no result vector for {expr:?}: {body}"))?;
        results
            .iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .with_context(|| format!("no value in {r}"))?;
                Ok(Sample {
                    labels: r["metric"].clone(),
                    value,
                })
            })
            .collect()
    }

    /// Waits (30 s at most) until `expr` has a series whose value passes `pred`; returns it,
    /// or fails with the last answer and Prometheus' view of its targets.
    pub fn wait(&self, expr: &str, pred: impl Fn(f64) -> bool) -> Sample {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let samples = self.query(expr).unwrap_or_else(|e| panic!("{e:#}"));
            if let Some(s) = samples.iter().find(|s| pred(s.value)) {
                return s.clone();
            }
            if Instant::now() > deadline {
                let targets = ureq::get(format!("http://{}/api/v1/targets", self.addr))
                    .call()
                    .ok()
                    .and_then(|mut r| r.body_mut().read_to_string().ok())
                    .unwrap_or_default();
                panic!("timed out waiting for {expr}: last answer {samples:?}\ntargets: {targets}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
