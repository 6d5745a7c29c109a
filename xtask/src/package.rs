//! `cargo xtask package`: the Debian packages `vigil-sensor` and `vigil-controller`, built by
//! cargo-deb from the release binaries (stripped, the kernel programs and the console
//! embedded), into `target/debian/`. Their contents are in each crate's
//! `[package.metadata.deb]`; their install scripts in `deploy/debian/`.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// The cargo-deb release installed when it is missing.
const CARGO_DEB: &str = "3.8.0";

/// The crates packaged, and the package each becomes.
const PACKAGES: &[(&str, &str)] = &[
    ("sensor-userspace", "vigil-sensor"),
    ("controller", "vigil-controller"),
];

/// Where the packages are written.
pub fn out_dir() -> Result<PathBuf> {
    Ok(util::target_dir()?.join("debian"))
}

/// Installs cargo-deb when `cargo deb` is missing.
fn ensure_cargo_deb() -> Result<()> {
    let mut check = Command::new(util::cargo_bin());
    check.args(["deb", "--version"]);
    util::install_when_missing(check, "cargo-deb", CARGO_DEB)
}

/// Builds both packages from release binaries already built; returns their paths.
pub fn build() -> Result<Vec<PathBuf>> {
    ensure_cargo_deb()?;
    let out = out_dir()?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut built = Vec::new();
    for (krate, name) in PACKAGES {
        let before: Vec<PathBuf> = debs(&out, name)?;
        for old in &before {
            std::fs::remove_file(old)
                .with_context(|| format!("cannot remove {}", old.display()))?;
        }
        util::cargo(&[
            "deb",
            "--no-build",
            // The release profile keeps line tables for backtraces; what ships is stripped.
            "--strip",
            "--no-separate-debug-symbols",
            "--package",
            krate,
            "--output",
            &out.to_string_lossy(),
        ])
        .with_context(|| format!("cargo deb for {name} failed"))?;
        match debs(&out, name)?.as_slice() {
            [one] => {
                println!("package {name}: {}", one.display());
                built.push(one.clone());
            }
            other => bail!(
                "cargo deb left {} packages named {name} in {}",
                other.len(),
                out.display()
            ),
        }
    }
    Ok(built)
}

/// The `.deb` files of package `name` in `dir`.
fn debs(dir: &std::path::Path, name: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("{name}_");
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect())
}
