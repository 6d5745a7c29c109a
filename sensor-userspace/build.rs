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
