//! `cargo xtask fuzz [TARGET] [--seconds N]`: the libFuzzer targets of `tests/fuzz`, each run
//! for a bounded time. A crash fails the run and is kept under `tests/fuzz/artifacts/TARGET`.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// The cargo-fuzz release installed when it is missing.
const CARGO_FUZZ: &str = "0.13.2";

/// The targets, each with the directories of real inputs it starts from (beside its own
/// corpus), relative to the workspace root.
const TARGETS: &[(&str, &[&str])] = &[
    ("kernel_record", &[]),
    ("protocol", &[]),
    ("rule", &["deploy/rules", "tests/fixtures/sigma"]),
    ("sigma_condition", &[]),
    ("policy", &["deploy"]),
    ("hunt_query", &[]),
    ("btf", &[]),
    ("journal", &[]),
];

/// Runs `only` (or every target) for `seconds` each, printing `fuzz TARGET: N runs in S s`.
pub fn run(only: Option<&str>, seconds: u64) -> Result<()> {
    if let Some(t) = only
        && !TARGETS.iter().any(|(name, _)| *name == t)
    {
        let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
        bail!("no fuzz target {t:?}; the targets are {}", names.join(", "));
    }
    ensure_cargo_fuzz()?;
    let root = util::workspace_root()?;
    let fuzz_dir = root.join("tests/fuzz");
    cargo_fuzz(&root, &["build", "--fuzz-dir", &fuzz_dir.to_string_lossy()])
        .context("building the fuzz targets")?;
    for (target, seeds) in TARGETS.iter().filter(|(n, _)| only.is_none_or(|o| o == *n)) {
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot make {}", corpus.display()))?;
        let mut args = vec![
            "run".to_owned(),
            "--fuzz-dir".to_owned(),
            fuzz_dir.to_string_lossy().into_owned(),
            (*target).to_owned(),
            corpus.to_string_lossy().into_owned(),
        ];
        args.extend(
            seeds
                .iter()
                .map(|s| root.join(s))
                .filter(|p| p.is_dir())
                .map(|p| p.to_string_lossy().into_owned()),
        );
        args.extend([
            "--".to_owned(),
            format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048".to_owned(),
            "-timeout=10".to_owned(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = fuzz_command(&root, &refs)
            .output()
            .with_context(|| format!("cannot run fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            bail!(
                "fuzz target {target} failed ({}); the crash is kept under {}:\n{}",
                output.status,
                fuzz_dir.join("artifacts").join(target).display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let (runs, secs) = done_line(&log).unwrap_or((0, seconds));
        println!("fuzz {target}: {runs} runs in {secs} s, no crash");
    }
    Ok(())
}

/// libFuzzer's last words: `Done 123456 runs in 10 second(s)`.
fn done_line(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|l| l.starts_with("Done "))?;
    let mut words = line.split_whitespace();
    let runs = words.nth(1)?.parse().ok()?;
    let secs = words.nth(2)?.parse().ok()?;
    Some((runs, secs))
}

/// `cargo fuzz ARGS` on the nightly toolchain, with the kernel object left out (the fuzz
/// targets parse; they load nothing, and the eBPF build would take the sanitizer flags).
fn fuzz_command(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"])
        .args(args)
        .current_dir(root)
        .env("AYA_BUILD_SKIP", "1");
    cmd
}

fn cargo_fuzz(root: &Path, args: &[&str]) -> Result<()> {
    util::run(fuzz_command(root, args))
}

/// Installs cargo-fuzz when `cargo fuzz` is missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let mut check = Command::new("rustup");
    check.args(["run", "nightly", "cargo", "fuzz", "--version"]);
    util::install_when_missing(check, "cargo-fuzz", CARGO_FUZZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_done_line_gives_runs_and_seconds() {
        let log = "#1024 pulse\nDone 98765 runs in 10 second(s)\n";
        assert_eq!(done_line(log), Some((98765, 10)));
        assert_eq!(done_line("crashed"), None);
    }
}
