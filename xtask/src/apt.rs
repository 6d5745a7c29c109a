//! Debian packages the tests drive for real, installed when missing: Chromium for the
//! console's browser tests, Prometheus for the metrics test, lintian for the packages,
//! PostgreSQL for the controller's shared store.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// The PostgreSQL server the store tests and the store benchmarks start.
pub const POSTGRES: (&str, &str) = ("postgresql-15", "/usr/lib/postgresql/15/bin/initdb");

/// What the tests need: the Debian package, and the file that says it is installed.
pub const FOR_TESTS: &[(&str, &str)] = &[
    ("chromium", "/usr/bin/chromium"),
    ("prometheus", "/usr/bin/prometheus"),
    ("lintian", "/usr/bin/lintian"),
    POSTGRES,
];

/// Installs those of `packages` whose file is missing, in one `apt-get install` (root).
pub fn ensure(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    util::require_root(&format!("installing {}", missing.join(", ")))?;
    eprintln!("xtask: installing {} (apt-get, once)", missing.join(" "));
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    util::run(update).context("apt-get update failed")?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    util::run(install).with_context(|| format!("apt-get install {} failed", missing.join(" ")))?;
    for (p, file) in packages {
        if !Path::new(file).exists() {
            bail!("xtask: {p} was installed but {file} is missing");
        }
    }
    Ok(())
}
