//! Small helpers for running commands.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The cargo that runs us (falls back to `cargo` on PATH).
pub fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(PathBuf::from)
        .context("xtask has no parent directory")
}

pub fn target_dir() -> Result<PathBuf> {
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(workspace_root()?.join("target")))
}

/// Runs `cargo ARGS` in the workspace root, failing when it fails.
pub fn cargo(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(cargo_bin());
    cmd.args(args).current_dir(workspace_root()?);
    run(cmd)
}

pub fn run(mut cmd: Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Output of a command that must succeed, or `None` when it cannot start or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cargo ARGS` (the tests) with a skip log, then lists what was skipped and why; with
/// `allow_skip`, kernel tests without root are skipped (and listed) rather than failed.
/// Pins a test sensor left in bpffs are removed before and after.
pub fn run_tests(args: &[&str], allow_skip: bool) -> Result<()> {
    let root = workspace_root()?;
    let log = target_dir()?.join("vigil-skipped.txt");
    let _ = std::fs::remove_file(&log);
    remove_test_pins();
    let status = Command::new(cargo_bin())
        .args(args)
        .current_dir(&root)
        .env("VIGIL_SKIP_LOG", &log)
        .envs(allow_skip.then_some(("VIGIL_ALLOW_SKIP", "1")))
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    remove_test_pins();
    let skipped = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = skipped.lines().filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        println!("== no test was skipped");
    } else {
        println!("== {} tests skipped:", lines.len());
        for l in &lines {
            println!("   SKIPPED {l}");
        }
    }
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// What test sensors pinned under bpffs (each removes its own when it stops; a test
/// process that exits first leaves them).
fn remove_test_pins() {
    for dir in ["/sys/fs/bpf/vigil-e2e"] {
        if let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cannot remove the test sensors' pins {dir}: {e}");
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} loads eBPF programs into the kernel and must run as root (try: sudo -E {what})"
        );
    }
    Ok(())
}

/// Installs `krate` at `version` from crates.io (`cargo install --locked`) unless `check`
/// runs and succeeds.
pub fn install_when_missing(mut check: Command, krate: &str, version: &str) -> Result<()> {
    if check.output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    println!("== installing {krate} {version}");
    let mut cmd = Command::new(cargo_bin());
    cmd.args(["install", krate, "--locked", "--version", version]);
    run(cmd)
}
