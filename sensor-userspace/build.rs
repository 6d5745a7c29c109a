//! Builds the kernel programs (`sensor-ebpf`) with the nightly toolchain and bpf-linker, leaving
//! the object in OUT_DIR for `include_bytes_aligned!`. With AYA_BUILD_SKIP=1 an empty object is
//! written instead, and the sensor says at start that it has no kernel programs.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, Result};

fn main() -> Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().context("workspace root")?;
    let ebpf = root.join("sensor-ebpf");
    let common = root.join("sensor-common");
    println!("cargo:rerun-if-changed={}", common.display());
    let out = PathBuf::from(env::var("OUT_DIR").context("OUT_DIR")?);
    embed_rules(&root.join("deploy/rules"), &out)?;
    kernel_programs(&ebpf, &out)
}

/// Without the `kernel` feature (the rules-and-policy library the controller uses), there is
/// nothing to build for the kernel.
#[cfg(not(feature = "kernel"))]
fn kernel_programs(_ebpf: &std::path::Path, _out: &std::path::Path) -> Result<()> {
    Ok(())
}

#[cfg(feature = "kernel")]
fn kernel_programs(ebpf: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(out.join("sensor-ebpf"), b"").context("writing the empty eBPF stub")?;
    }
    let root_dir = ebpf.to_str().context("non-UTF-8 path to sensor-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sensor-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the eBPF programs (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}

/// Writes `shipped_rules.rs`: the list of `deploy/rules/*.yml` as (name, include_str!).
fn embed_rules(dir: &std::path::Path, out: &std::path::Path) -> Result<()> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .collect();
    names.sort();
    let mut code = String::from("&[\n");
    for n in names {
        let path = dir.join(&n);
        println!("cargo:rerun-if-changed={}", path.display());
        code.push_str(&format!(
            "    ({n:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("]\n");
    fs::write(out.join("shipped_rules.rs"), code).context("writing shipped_rules.rs")
}
