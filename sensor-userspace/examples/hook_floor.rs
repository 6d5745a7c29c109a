//! Attaches an empty program to each tracepoint named on the command line (`category/name`),
//! says `attached` on standard output, and detaches when standard input closes. `cargo xtask
//! bench` runs its storms beside it to measure the floor: what the kernel charges for a hook
//! with nothing in it, under which no program at that hook can go.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::io::{BufRead as _, Write as _};

use anyhow::{Context as _, Result, bail};
use aya::programs::TracePoint;
use sensor_userspace::kernel::loader::{self, LoadOptions};

fn main() -> Result<()> {
    let targets: Vec<String> = std::env::args().skip(1).collect();
    if targets.is_empty() {
        bail!("usage: hook_floor CATEGORY/NAME...");
    }
    let mut loaded = loader::open(&LoadOptions {
        btf_path: "/sys/kernel/btf/vmlinux".into(),
        ring_buffer_bytes: 1 << 12,
        sensor_tgid: std::process::id(),
        sensitive_names: Vec::new(),
        coalesce_ms: 0,
        env_names: Vec::new(),
        pin_dir: None,
    })?;
    let prog: &mut TracePoint = loaded
        .ebpf
        .program_mut("vigil_floor")
        .context("no vigil_floor program in the object")?
        .try_into()?;
    prog.load()?;
    let mut links = Vec::new();
    for target in &targets {
        let (category, name) = target
            .split_once('/')
            .with_context(|| format!("{target}: expected category/name"))?;
        let id = prog
            .attach(category, name)
            .with_context(|| format!("attach to {target}"))?;
        links.push(prog.take_link(id)?);
    }
    println!("attached");
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        line?;
    }
    drop(links);
    Ok(())
}
