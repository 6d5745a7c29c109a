//! The controller's web console: its front end built (npm, esbuild) into
//! `controller/console/dist`, which `vigil-controller` embeds.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util;

fn npm(dir: &Path, args: &[&str]) -> Result<()> {
    eprintln!("xtask console: npm {}", args.join(" "));
    let mut cmd = Command::new("npm");
    cmd.args(args).current_dir(dir);
    util::run(cmd).with_context(|| format!("npm {} in {} failed", args.join(" "), dir.display()))
}

/// Installs the console's packages (from its lock file) when they are missing or older than
/// the lock file, then builds it.
pub fn build() -> Result<()> {
    let dir = util::workspace_root()?.join("controller").join("console");
    if util::output("npm", &["--version"]).is_none() {
        bail!("xtask console: npm is not installed; the console is built with Node 20 and npm");
    }
    let modules = dir.join("node_modules").join(".package-lock.json");
    let stale = |a: &Path, b: &Path| -> bool {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        match (m(a), m(b)) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        }
    };
    if stale(&modules, &dir.join("package-lock.json")) {
        npm(&dir, &["ci", "--no-audit", "--no-fund"])?;
    }
    npm(&dir, &["run", "build"])
}
