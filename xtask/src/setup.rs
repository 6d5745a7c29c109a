//! Installs what the eBPF build needs, once: the nightly toolchain's rust-src and bpf-linker.

use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{self, cargo_bin, output};

/// The bpf-linker release that loads nightly's own LLVM (see shared/notes/toolchain.md).
const BPF_LINKER_VERSION: &str = "0.10.4";

fn run_step(what: &str, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask setup: {what}: {program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args);
    util::run(cmd).map_err(|e| anyhow::anyhow!("xtask setup: {what} failed: {e:#}"))
}

pub fn run() -> Result<()> {
    if output("rustup", &["--version"]).is_none() {
        bail!(
            "xtask setup: rustup is not installed; the eBPF programs need rustup's nightly toolchain (https://rustup.rs)"
        );
    }
    let toolchains = output("rustup", &["toolchain", "list"]).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        run_step(
            "installing the nightly toolchain",
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run_step(
            "adding rust-src to nightly",
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }
    let linker = output("bpf-linker", &["--version"]).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        let cargo = cargo_bin();
        let spec = format!("bpf-linker@{BPF_LINKER_VERSION}");
        run_step(
            "installing bpf-linker (about 2 minutes, once)",
            &cargo,
            &["install", "--locked", &spec],
        )?;
        if output("bpf-linker", &["--version"]).is_none() {
            bail!(
                "xtask setup: bpf-linker was installed but is not on PATH; add ~/.cargo/bin to PATH"
            );
        }
    }
    Ok(())
}
