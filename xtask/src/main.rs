//! `cargo xtask`: set up the eBPF toolchain, build, run, test and benchmark Vigil.

mod apt;
mod bench;
mod console;
mod docs;
mod fuzz;
mod package;
mod run;
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
    /// Build the controller's web console (npm, esbuild) into controller/console/dist,
    /// which the next build of vigil-controller embeds.
    Console,
    /// Set up, build in release, and run on this host (root): a local controller on its
    /// embedded store, and the sensor enrolled with it.
    Run(run::Local),
    /// Set up, then run every test of the workspace, kernel tests included (root).
    Test {
        /// Without root, run what does not need the kernel and list every kernel test as
        /// skipped (without it, `test` refuses to run unless it is root).
        #[arg(long)]
        allow_skip: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Regenerate the command-line reference (docs/src/reference/cli.md) from the binaries'
    /// help, and build the book (mdBook, installed when missing) into docs/book/.
    Docs,
    /// Build the Debian packages vigil-sensor and vigil-controller (cargo-deb, installed when
    /// missing) into target/debian/: stripped release binaries, units, conffiles.
    Package,
    /// Run the fuzz targets (tests/fuzz: everything that parses outside input), each for a
    /// bounded time; installs cargo-fuzz when it is missing. A crash fails the run.
    Fuzz {
        /// One target (default: every one).
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
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
        Task::Console => console::build(),
        Task::Run(local) => {
            setup::run()?;
            console::build()?;
            release_binaries()?;
            util::require_root("cargo xtask run")?;
            run::both(&local)
        }
        Task::Test { allow_skip, args } => {
            if !util::is_root() && !allow_skip {
                anyhow::bail!(
                    "cargo xtask test runs the kernel tests, which load eBPF programs and need root: run it as root (sudo -E cargo xtask test), or pass --allow-skip to run the rest and list each kernel test as skipped"
                );
            }
            setup::run()?;
            console::build()?;
            if util::is_root() {
                apt::ensure(apt::FOR_TESTS)?;
            }
            // The end-to-end tests run the real binary: build it first; the package tests
            // install the real packages.
            debug_binaries()?;
            release_binaries()?;
            package::build()?;
            docs::mdbook()?;
            let mut test = vec!["test", "--workspace", "--exclude", "sensor-ebpf"];
            if !args.is_empty() {
                test.push("--");
                test.extend(args.iter().map(String::as_str));
            }
            util::run_tests(&test, allow_skip)
        }
        Task::Docs => {
            setup::run()?;
            docs::mdbook()?;
            debug_binaries()?;
            docs::build()
        }
        Task::Package => {
            setup::run()?;
            console::build()?;
            release_binaries()?;
            package::build().map(drop)
        }
        Task::Fuzz { target, seconds } => {
            setup::run()?;
            fuzz::run(target.as_deref(), seconds)
        }
        Task::Bench { which } => {
            setup::run()?;
            util::cargo(&["build", "--release", "--package", "sensor-userspace"])?;
            // The empty program the storms' floors are measured with.
            util::cargo(&[
                "build",
                "--release",
                "--package",
                "sensor-userspace",
                "--example",
                "hook_floor",
            ])?;
            util::require_root("cargo xtask bench")?;
            bench::run(which)
        }
    }
}

/// The release binaries `run` starts and the packages carry.
fn release_binaries() -> Result<()> {
    util::cargo(&[
        "build",
        "--release",
        "--package",
        "sensor-userspace",
        "--package",
        "controller",
    ])
}

/// The debug binaries the end-to-end tests run and the CLI reference is read from.
fn debug_binaries() -> Result<()> {
    util::cargo(&[
        "build",
        "--package",
        "sensor-userspace",
        "--package",
        "controller",
    ])
}
