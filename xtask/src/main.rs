//! `cargo xtask`: set up the eBPF toolchain, build, run, test and benchmark Vigil.

mod bench;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Vigil's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the eBPF build needs and is missing (idempotent).
    Setup,
    /// Set up, build in release, and run the sensor on this host (root).
    Run {
        /// State directory for the sensor.
        #[arg(long, default_value = "/var/lib/vigil")]
        state: String,
        /// Extra arguments for `vigil-sensor run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test of the workspace, kernel tests included (root).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks, each measured without and with the sensor in one run.
    Bench {
        #[command(subcommand)]
        which: Option<bench::Which>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Run { state, args } => {
            setup::run()?;
            util::cargo(&["build", "--release", "--package", "sensor-userspace"])?;
            util::require_root("cargo xtask run")?;
            let bin = util::target_dir()?.join("release/vigil-sensor");
            let mut cmd = std::process::Command::new(bin);
            cmd.args(["run", "--state", &state, "--events-out", "-"])
                .args(&args);
            eprintln!(
                "xtask: running the sensor (events on stdout; `vigil-sensor status --state {state}` in another shell; Ctrl-C stops it)"
            );
            util::exec(cmd)
        }
        Task::Test { args } => {
            setup::run()?;
            // The end-to-end tests run the real binary: build it first.
            util::cargo(&["build", "--package", "sensor-userspace"])?;
            let mut test = vec!["test", "--workspace", "--exclude", "sensor-ebpf"];
            if !args.is_empty() {
                test.push("--");
                test.extend(args.iter().map(String::as_str));
            }
            util::cargo(&test)
        }
        Task::Bench { which } => {
            setup::run()?;
            util::cargo(&["build", "--release", "--package", "sensor-userspace"])?;
            util::require_root("cargo xtask bench")?;
            bench::run(which)
        }
    }
}
